//! Health checks while PowerDNS is flooded with queries it asks primwatch about: the
//! remote backend must not starve the checks (it runs on its own thread, and views are
//! matched by prefix length, not by scanning every prefix).
//!
//! Setup: three HTTP backends checked every 100 ms; a view of 200,000 prefixes
//! (`source_files`); PowerDNS with `launch=bind,remote`, caches off; the zone declared
//! `dnssec = "pass"`, so DO=1 queries go to PowerDNS, which asks primwatch for each
//! random name. Check latency (connect to response) is read from `ctl stats` as the
//! histogram's growth over each window, idle and flooded, in the same run.

use std::{net::IpAddr, time::Duration};

use anyhow::Result;
use primwatch_tests::{
    backend::BackendNet,
    controller::Controller,
    lab::{Lab, SERVER_IF},
    pdns::{self, PowerDns},
    TempDir,
};

use crate::{kxdpgun, Generator};

const PREFIXES: u32 = 200_000;
const FLOOD_QPS: u32 = 20_000;

/// Summed bucket counts, sum and count of every check's latency histogram.
fn check_latencies(controller: &Controller) -> Result<(Vec<f64>, Vec<u64>, f64, u64)> {
    let stats = controller.ctl(&["stats"])?;
    let mut bounds = Vec::new();
    let mut counts: Vec<u64> = Vec::new();
    let (mut sum, mut count) = (0.0, 0);
    for check in stats["stats"]["checks"].as_array().cloned().unwrap_or_default() {
        let h = &check["latency_seconds"];
        bounds = h["bounds"].as_array().unwrap().iter().map(|b| b.as_f64().unwrap()).collect();
        let these: Vec<u64> = h["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
        counts.resize(these.len(), 0);
        for (total, c) in counts.iter_mut().zip(these) {
            *total += c;
        }
        sum += h["sum"].as_f64().unwrap();
        count += h["count"].as_u64().unwrap();
    }
    Ok((bounds, counts, sum, count))
}

/// (checks, mean ms, the bucket bound holding p50 and p99, in ms) between two snapshots.
fn window(
    before: &(Vec<f64>, Vec<u64>, f64, u64),
    after: &(Vec<f64>, Vec<u64>, f64, u64),
) -> (u64, f64, String, String) {
    let deltas: Vec<u64> =
        after.1.iter().zip(before.1.iter().chain(std::iter::repeat(&0))).map(|(a, b)| a - b).collect();
    let n = after.3 - before.3;
    let mean_ms = if n > 0 { 1000.0 * (after.2 - before.2) / n as f64 } else { f64::NAN };
    let quantile = |q: f64| {
        let rank = (q * n as f64).ceil() as u64;
        let mut seen = 0;
        for (i, c) in deltas.iter().enumerate() {
            seen += c;
            if seen >= rank.max(1) {
                return match after.0.get(i) {
                    Some(bound) => format!("≤ {}", bound * 1000.0),
                    None => format!("> {}", after.0.last().unwrap_or(&0.0) * 1000.0),
                };
            }
        }
        "-".into()
    };
    (n, mean_ms, quantile(0.5), quantile(0.99))
}

pub fn run(seconds: u64) -> Result<()> {
    let lab = Lab::new()?;
    let net = BackendNet::new(&lab)?;
    let webs: Vec<IpAddr> = ["10.99.1.11", "10.99.1.12", "10.99.1.13"].iter().map(|a| a.parse().unwrap()).collect();
    let _backends = net.serve_http(webs.clone())?;
    let dir = TempDir::new("flood")?;
    // Distinct /28s from 10.0.0.0 upwards: a country-sized list.
    let prefixes: String =
        (0..PREFIXES).map(|i| format!("{}/28\n", std::net::Ipv4Addr::from(0x0a00_0000 + i * 16))).collect();
    let cidr = dir.0.join("big.cidr");
    std::fs::write(&cidr, prefixes)?;
    let socket = std::env::temp_dir().join(format!("{}.sock", primwatch_tests::unique("pw-bench-flood")));
    let targets: String = webs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("[targets.web{i}]\naddress = \"{a}\"\nchecks = [\"http\"]\n"))
        .collect();
    let config = format!(
        r#"[server]
interfaces = ["{SERVER_IF}"]
xdp_mode = "native"
pin_dir = "{{pin_dir}}"
[powerdns]
socket = "{}"
[zones."example.test"]
dnssec = "pass"
# The remote backend's load is the point: the slow-path guard would hold it to 5,000/s.
[slow_path]
queries_per_second = 0
prefix_queries_per_second = 0
[checks.http]
type = "http"
path = "/health"
interval = "100ms"
timeout = "100ms"
{targets}
[groups.all]
members = ["web0", "web1", "web2"]
policy = "all"
[names."www.example.test"]
groups = ["all"]
[views.big]
source_files = ["{}"]
[views.big.names."www.example.test"]
groups = ["all"]
"#,
        socket.display(),
        cidr.display()
    );
    let controller = Controller::start(&lab.server_ns, &config)?;
    let server = lab.server_addr(false);
    let zone = pdns::zone("example.test", server, &[]);
    let remote = format!(
        "launch=bind,remote\nremote-connection-string=unix:path={}\ncache-ttl=0\nquery-cache-ttl=0\nnegquery-cache-ttl=0\n\
         max-queue-length=10000000\n",
        socket.display()
    );
    let _pdns = PowerDns::start_with(&lab.server_ns, &[server], "example.test", &zone, &remote)?;
    // Random names PowerDNS does not have: each is a remote-backend lookup.
    let queries: Vec<String> =
        (0..2000).map(|i| format!("r{i:x}{:08x}.example.test A D", rand::random::<u32>())).collect();
    let flood = queries.join("\n");
    let one = vec![Generator { ns: lab.client_ns.clone(), server, cpu: 1, local: None }];

    println!(
        "\n== Checks under a PowerDNS-path flood: 3 HTTP checks every 100 ms, a {PREFIXES}-prefix view, \
         {seconds} s per row =="
    );
    println!(
        "{:<44} {:>8} {:>10} {:>10} {:>10} {:>14}",
        "condition", "checks", "mean ms", "p50 ms", "p99 ms", "PowerDNS ans/s"
    );
    std::thread::sleep(Duration::from_secs(1));
    let before = check_latencies(&controller)?;
    std::thread::sleep(Duration::from_secs(seconds));
    let idle = check_latencies(&controller)?;
    let (n, mean, p50, p99) = window(&before, &idle);
    println!("{:<44} {n:>8} {mean:>10.2} {p50:>10} {p99:>10} {:>14}", "idle", "-");
    let (_, answered) = kxdpgun(&one, &flood, FLOOD_QPS, seconds)?;
    let flooded = check_latencies(&controller)?;
    let (n, mean, p50, p99) = window(&idle, &flooded);
    println!(
        "{:<44} {n:>8} {mean:>10.2} {p50:>10} {p99:>10} {answered:>14.0}",
        format!("flood: {FLOOD_QPS}/s random names, DO=1")
    );
    println!(
        "(latency of each HTTP check, connect to response, from `ctl stats`; p50/p99 are the\n\
         histogram bucket holding them; the flood row includes the checks that ran during it)"
    );
    Ok(())
}
