//! Views by country at full size: a synthetic country database as large as a real one
//! (300,000 IPv4 and 100,000 IPv6 networks over 50 countries and the 7 continents,
//! written with the tests' MMDB writer), every network taken by one of 7 continent
//! views. Reports check-config's time (reading and walking the database), spawn to
//! serving, the tries' kernel memory (bpftool's memlock) and the A-hit cost through
//! BPF_PROG_TEST_RUN with the tries loaded, next to the same names without views.

use std::{fmt::Write as _, net::IpAddr, time::Instant};

use anyhow::{Context as _, Result};
use hickory_proto::rr::RecordType;
use primwatch_tests::{
    controller::Controller,
    dns,
    harness::{Harness, XDP_TX},
    mmdb::{self, Writer},
    netns,
    packet::{udp_frame, Flow},
};

use crate::{names::memlock, time_single};

const V4_NETWORKS: u32 = 300_000;
const V6_NETWORKS: u32 = 100_000;
const COUNTRIES: [&str; 50] = [
    "JP", "CN", "KR", "TW", "IN", "ID", "TH", "VN", "SG", "MY", "DE", "FR", "GB", "IT", "ES", "NL", "SE", "PL", "CH",
    "AT", "US", "CA", "MX", "CU", "GT", "BR", "AR", "CL", "CO", "PE", "AU", "NZ", "FJ", "PG", "WS", "ZA", "NG", "EG",
    "KE", "MA", "AQ", "BV", "HM", "TF", "GS", "RU", "TR", "SA", "IR", "IL",
];
const CONTINENTS: [&str; 7] = ["AS", "EU", "NA", "SA", "OC", "AF", "AN"];

fn database(path: &std::path::Path) -> Result<()> {
    let mut w = Writer::new("GeoLite2-Country", 1_764_460_800);
    for i in 0..V4_NETWORKS {
        // /24s from 11.0.0.0 upwards.
        let address = IpAddr::V4((0x0b00_0000u32 + (i << 8)).into());
        let c = (i % 50) as usize;
        w.insert(address, 24, mmdb::country(COUNTRIES[c], CONTINENTS[c / 5 % 7]));
    }
    for i in 0..V6_NETWORKS {
        // /48s in 2400::/12.
        let address = IpAddr::V6((0x2400u128 << 112 | (i as u128) << 80).into());
        let c = (i % 50) as usize;
        w.insert(address, 48, mmdb::country(COUNTRIES[c], CONTINENTS[c / 5 % 7]));
    }
    w.write(path).context("writing the database")
}

/// The names; with `with_views` the 7 continent views; with neither, one hand-written
/// view holding 11.0.0.0/8 (`small_view`).
fn config_with(database: &std::path::Path, with_views: bool, small_view: bool) -> String {
    let mut text = config(database, with_views);
    if small_view {
        text.push_str(
            "[views.small]\nsources = [\"11.0.0.0/8\"]\n[views.small.names.\"www.example.test\"]\ngroups = [\"g1\"]\n",
        );
    }
    text
}

fn config(database: &std::path::Path, with_views: bool) -> String {
    let mut text = String::from(
        "[targets.t0]\naddress = \"10.9.0.1\"\n[targets.t1]\naddress = \"10.9.0.2\"\n\
         [groups.g0]\nmembers = [\"t0\"]\n[groups.g1]\nmembers = [\"t1\"]\n\
         [names.\"www.example.test\"]\ngroups = [\"g0\"]\n",
    );
    if with_views {
        let _ = write!(text, "[geoip]\ndatabase = \"{}\"\n", database.display());
        for c in CONTINENTS {
            let _ = write!(
                text,
                "[views.{c}]\ncontinents = [\"{c}\"]\n[views.{c}.names.\"www.example.test\"]\ngroups = [\"g1\"]\n"
            );
        }
    }
    text
}

pub fn run() -> Result<()> {
    println!(
        "\n== Views by country: {V4_NETWORKS} IPv4 + {V6_NETWORKS} IPv6 database networks into 7 continent views =="
    );
    let dir = primwatch_tests::TempDir::new("pwgeo")?;
    let path = dir.0.join("country.mmdb");
    let written = Instant::now();
    database(&path)?;
    let size = std::fs::metadata(&path)?.len();
    println!(
        "database: {:.1} MB, written in {:.1} s (tests/src/mmdb.rs)",
        size as f64 / 1e6,
        written.elapsed().as_secs_f64()
    );

    let file = dir.0.join("primwatch.toml");
    std::fs::write(&file, format!("[server]\ninterfaces = [\"lo\"]\n{}", config(&path, true)))?;
    let checked = Instant::now();
    let out =
        std::process::Command::new(primwatch_tests::controller::binary()).arg("check-config").arg(&file).output()?;
    anyhow::ensure!(out.status.success(), "check-config: {}", String::from_utf8_lossy(&out.stderr));
    let check_s = checked.elapsed().as_secs_f64();

    let ns = primwatch_tests::unique("pwgeo");
    netns::ip(&["netns", "add", &ns])?;
    netns::ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    let started = Instant::now();
    let result = Controller::start(
        &ns,
        &format!(
            "[server]\ninterfaces = [\"lo\"]\nxdp_mode = \"skb\"\npin_dir = \"{{pin_dir}}\"\n{}",
            config(&path, true)
        ),
    );
    let start_s = started.elapsed().as_secs_f64();
    let tries = match &result {
        Ok(c) => Ok(memlock(&c.pin_dir.join("views_v4")) + memlock(&c.pin_dir.join("views_v6"))),
        Err(e) => Err(anyhow::anyhow!("starting the controller: {e:#}")),
    };
    drop(result);
    let _ = netns::ip(&["netns", "del", &ns]);
    let tries = tries?;

    let hit = |with_views: bool, small_view: bool, src: &str| -> Result<u64> {
        let h = Harness::new(53, &config_with(&path, with_views, small_view))?;
        let mut flow = Flow::client_to_server(false);
        flow.src = src.parse()?;
        let query = dns::query(1, "www.example.test", RecordType::A, None)?;
        Ok(time_single(&h, primwatch::dataplane::ANSWER_PROGRAM, &udp_frame(&flow, 64, &query), XDP_TX)?.0)
    };
    let plain = hit(false, false, "11.2.3.4")?;
    let small = hit(false, true, "11.2.3.4")?;
    let in_view = hit(true, false, "11.2.3.4")?;
    let outside = hit(true, false, "10.77.0.2")?;
    println!(
        "{:>16} {:>10} {:>16} {:>10} {:>12} {:>16} {:>22}",
        "check-config s",
        "start s",
        "tries kernel MB",
        "B/prefix",
        "A hit: none",
        "one-prefix view",
        "400k tries: in / none"
    );
    println!(
        "{check_s:>16.2} {start_s:>10.2} {:>16.1} {:>10.0} {plain:>12} {small:>16} {:>22}",
        tries as f64 / 1e6,
        tries as f64 / (V4_NETWORKS + V6_NETWORKS) as f64,
        format!("{in_view} / {outside}")
    );
    println!(
        "(check-config: parse, read and walk the database; start: spawn to serving, the tries\n\
         written; tries: memlock of views_v4 and views_v6; A hit: BPF_PROG_TEST_RUN median,\n\
         floor not subtracted: no views; one hand-written /8 view answering; the database's\n\
         views, from a source inside one and from one in none)"
    );
    Ok(())
}
