//! Many names: N exact names spread over 100 groups (two health-checked targets each),
//! the config generated here (the names in a `name_files` file). Per N: start to serving, kernel memory of the name and
//! record-set maps (bpftool's memlock), controller RSS, and one target going down —
//! how long the publish took and how many map writes it made (record sets, not names).
//! Then the A-hit cost through BPF_PROG_TEST_RUN with the names loaded.

use std::{fmt::Write as _, time::Duration, time::Instant};

use anyhow::{Context as _, Result};
use hickory_proto::rr::RecordType;
use primwatch_tests::{
    controller::Controller,
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_TX},
    netns,
    packet::{udp_frame, Flow},
};

use crate::time_single;

const GROUPS: usize = 100;

struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::ip(&["netns", "del", &self.0]);
    }
}

/// Targets and groups, and `n` names over them: the config's tables and name files —
/// the names, then one per view: with `views`, that many views
/// (each a /16 of sources, its names in its own name file) answer every name from
/// another group.
fn names_config(n: usize, views: usize, dir: &std::path::Path) -> (String, Vec<String>) {
    let mut config = String::from(
        "[checks.tcp]\ntype = \"tcp\"\nport = 8080\ninterval = \"500ms\"\ntimeout = \"400ms\"\nrise = 1\nfall = 1\n",
    );
    for t in 0..2 * GROUPS {
        let _ = write!(config, "[targets.t{t}]\naddress = \"10.9.{}.{}\"\nchecks = [\"tcp\"]\n", t / 200, t % 200 + 1);
    }
    for g in 0..GROUPS {
        let _ = write!(config, "[groups.g{g}]\nmembers = [\"t{}\", \"t{}\"]\npolicy = \"all\"\n", 2 * g, 2 * g + 1);
    }
    let mut files = vec![String::new(); views + 1];
    for i in 0..n {
        for (v, file) in files.iter_mut().enumerate() {
            let _ = writeln!(file, "n{i}.example.test g{}", (i + v) % GROUPS);
        }
    }
    for v in 0..views {
        let file = dir.join(format!("v{v}.names"));
        let _ = write!(
            config,
            "[views.v{v}]\nsources = [\"10.{}.0.0/16\"]\nname_files = [{:?}]\n",
            100 + v,
            file.display().to_string()
        );
    }
    (config, files)
}

/// A pinned map's kernel memory as bpftool reports it (`memlock`), bytes.
pub fn memlock(pin: &std::path::Path) -> u64 {
    let out = std::process::Command::new("bpftool").args(["map", "show", "pinned"]).arg(pin).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).to_string()).unwrap_or_default();
    text.split_whitespace()
        .skip_while(|w| *w != "memlock")
        .nth(1)
        .and_then(|v| v.trim_end_matches('B').parse().ok())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

pub fn run() -> Result<()> {
    println!("\n== Many names over {GROUPS} groups (two TCP-checked targets each, 500 ms interval) ==");
    println!(
        "{:>16} {:>12} {:>10} {:>16} {:>14} {:>16} {:>12} {:>14} {:>12}",
        "names",
        "check-config s",
        "start s",
        "kernel B/name",
        "RSS B/name",
        "flip to map ms",
        "publish ms",
        "flip writes",
        "A hit ns"
    );
    for (n, views) in [(10_000usize, 0usize), (100_000, 0), (1_000_000, 0), (100_000, 4)] {
        match measure(n, views) {
            Ok(row) => println!("{row}"),
            Err(e) => println!("{n:>10} failed: {e:#}"),
        }
    }
    println!(
        "(start: spawn to serving, config parsed and every map written; kernel: memlock of names, \n\
         name_answers, rrsets and set_versions over names; flip: one target's address removed,\n\
         the time until the publish that followed (check interval 500 ms included), the\n\
         publish itself (health change decided to maps written) and the map writes it made; A hit: BPF_PROG_TEST_RUN median with the names loaded, floor\n\
         not subtracted; per name: per configured name, its view entries included)"
    );
    Ok(())
}

fn measure(n: usize, views: usize) -> Result<String> {
    let ns = Ns(primwatch_tests::unique("pwnames"));
    netns::ip(&["netns", "add", &ns.0])?;
    netns::ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
    for t in 0..2 * GROUPS {
        netns::ip(&["-n", &ns.0, "addr", "add", &format!("10.9.{}.{}/32", t / 200, t % 200 + 1), "dev", "lo"])?;
    }
    let listener = netns::run_in(&ns.0, || std::net::TcpListener::bind("0.0.0.0:8080"))??;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    // The names in name files (TOML takes about 5 s per million [names] tables).
    let dir = primwatch_tests::TempDir::new("pwnames")?;
    let (body, files) = names_config(n, views, &dir.0);
    let names_file = dir.0.join("bench.names");
    std::fs::write(&names_file, &files[0])?;
    for (v, file) in files[1..].iter().enumerate() {
        std::fs::write(dir.0.join(format!("v{v}.names")), file)?;
    }
    let config = format!(
        "name_files = [\"{}\"]\n[server]\ninterfaces = [\"lo\"]\nxdp_mode = \"skb\"\npin_dir = \"{{pin_dir}}\"\nmax_names = {}\n{body}",
        names_file.display(),
        (n * (views + 1)).next_power_of_two().max(65_536)
    );
    // check-config alone (parsing and validating the config is most of a start).
    let file = dir.0.join("primwatch.toml");
    std::fs::write(&file, config.replace("{pin_dir}", "/sys/fs/bpf/pwnames-check"))?;
    let checked = Instant::now();
    let out =
        std::process::Command::new(primwatch_tests::controller::binary()).arg("check-config").arg(&file).output()?;
    anyhow::ensure!(out.status.success(), "check-config: {}", String::from_utf8_lossy(&out.stderr));
    let check_s = checked.elapsed().as_secs_f64();
    let started = Instant::now();
    let controller = Controller::start(&ns.0, &config)
        .with_context(|| format!("check-config took {check_s:.1} s; the lab waits 20 s for serving"))?;
    let start_s = started.elapsed().as_secs_f64();
    let pid = controller.pid().context("pid")?;
    // Settled: every target checked up, no publish for a second (at most 15 s). Read
    // from the log, not `ctl stats`: with a million names, the per-name counters make
    // each stats call heavy enough to disturb the checks being measured.
    let publishes = |c: &Controller| c.log().matches("answers updated").count();
    let settle = Instant::now();
    let mut last = (usize::MAX, Instant::now());
    while settle.elapsed() < Duration::from_secs(15) {
        let seen = publishes(&controller);
        if seen != last.0 {
            last = (seen, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(1) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let kernel: u64 =
        ["names", "name_answers", "rrsets", "set_versions"].iter().map(|m| memlock(&controller.pin_dir.join(m))).sum();
    let rss = rss_kb(pid) * 1024;

    let log_before = controller.log().len();
    let removed = std::time::SystemTime::now();
    netns::ip(&["-n", &ns.0, "addr", "del", "10.9.0.1/32", "dev", "lo"])?;
    let line = primwatch_tests::wait_for(Duration::from_secs(5), || {
        controller.log().get(log_before..)?.lines().find(|l| l.contains("answers updated")).map(str::to_string)
    })
    .context("no publish after the flip")?;
    // "2026-11-29T23:38:57.895042Z  INFO … record_sets=1 names_written=0 names_deleted=0"
    let field =
        |key: &str| -> u64 { line.split_whitespace().find_map(|w| w.strip_prefix(key)?.parse().ok()).unwrap_or(0) };
    let writes = field("record_sets=") + field("names_written=");
    let publish_ms = field("publish_us=") as f64 / 1000.0;
    let stamp = line.split_whitespace().next().unwrap_or("");
    let of_day = |hms: &str| -> Option<f64> {
        let mut parts = hms.split(':');
        let (h, m, s): (f64, f64, f64) = (
            parts.next()?.parse().ok()?,
            parts.next()?.parse().ok()?,
            parts.next()?.trim_end_matches('Z').parse().ok()?,
        );
        Some(h * 3600.0 + m * 60.0 + s)
    };
    let removed_s = removed.duration_since(std::time::UNIX_EPOCH)?.as_secs_f64() % 86_400.0;
    let flip_ms = stamp.split('T').nth(1).and_then(of_day).map_or(f64::NAN, |t| (t - removed_s) * 1000.0);
    drop(controller);

    // The A-hit cost with the same names (and views) loaded in the maps.
    let h = Harness::with_name_files(
        53,
        &[&names_file],
        &format!("max_names = {}\n{body}", (n * (views + 1)).next_power_of_two().max(65_536)),
    )?;
    let query = dns::query(1, "n7.example.test", RecordType::A, Some(EdnsQuery::default()))?;
    let (hit, _) = time_single(
        &h,
        primwatch::dataplane::ANSWER_PROGRAM,
        &udp_frame(&Flow::client_to_server(false), 64, &query),
        XDP_TX,
    )?;
    drop(h);
    let label = if views > 0 { format!("{n} × {} views", views) } else { n.to_string() };
    Ok(format!(
        "{label:>16} {check_s:>12.1} {start_s:>10.1} {:>16.0} {:>14.0} {flip_ms:>16.0} {publish_ms:>12.2} {writes:>14} {hit:>12}",
        kernel as f64 / n as f64,
        rss as f64 / n as f64,
    ))
}
