//! Feeds at scale, with the real daemon in a namespace of its own: a names feed of
//! 1,000,000 names and a views feed of 1,000,000 prefixes (each a file replaced by
//! rename; timed from the rename to `ctl status` saying the batch was applied, which
//! is after its one publish), and a health feed of 10,000 targets rewritten every
//! second (the controller's CPU over 10 s, from /proc).

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use primwatch_tests::{controller::Controller, netns, wait_for, TempDir};

use super::scale::Ns;

const NAMES: usize = 1_000_000;
const PREFIXES: usize = 1_000_000;
const TARGETS: usize = 10_000;
const MEASURE: Duration = Duration::from_secs(10);

fn replace(path: &Path, text: &str) -> Result<()> {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)?;
    Ok(())
}

/// (applied batches, items in use) of `feed`, from `ctl status`.
fn applied(controller: &Controller, feed: &str) -> Option<(u64, u64)> {
    let status = controller.ctl(&["status"]).ok()?;
    let feeds = status["status"]["feeds"].as_array()?;
    let f = &feeds.iter().find(|f| f[0] == feed)?[1];
    Some((f["applied"].as_u64()?, f["items"].as_u64()?))
}

/// Replaces `path` with `text` and waits until `feed` applied one more batch of `items`.
fn time_batch(controller: &Controller, feed: &str, path: &Path, text: &str, items: u64) -> Result<Duration> {
    let before = applied(controller, feed).map_or(0, |(n, _)| n);
    let started = Instant::now();
    replace(path, text)?;
    let done = wait_for(Duration::from_secs(120), || {
        std::thread::sleep(Duration::from_millis(100));
        applied(controller, feed).filter(|(n, i)| *n > before && *i == items)
    });
    if done.is_none() {
        bail!("feed {feed}: the batch was not applied within 120 s:\n{}", controller.log());
    }
    Ok(started.elapsed())
}

fn rss_mib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

pub fn run() -> Result<()> {
    names_and_views()?;
    health()
}

fn names_and_views() -> Result<()> {
    println!("\n== feeds: {NAMES} names and {PREFIXES} view prefixes, each a file replaced by rename ==");
    let ns = Ns(primwatch_tests::unique("pwfeeds"));
    netns::ip(&["netns", "add", &ns.0])?;
    netns::ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
    let dir = TempDir::new("pw-bench-feeds")?;
    let (names_file, views_file) = (dir.0.join("names.jsonl"), dir.0.join("views.jsonl"));
    let header = "{\"primwatch_feed\": 1}\n";
    replace(&names_file, header)?;
    replace(&views_file, header)?;
    let config = format!(
        "[server]\ninterfaces = [\"lo\"]\nxdp_mode = \"skb\"\npin_dir = \"{{pin_dir}}\"\nmax_names = 2000000\n\
         [feeds.tenants]\nfile = \"{}\"\nkinds = [\"names\"]\n\
         [feeds.regions]\nfile = \"{}\"\nkinds = [\"views\"]\n\
         [targets.a]\naddress = \"127.1.0.1\"\n[targets.b]\naddress = \"127.1.0.2\"\n\
         [groups.web]\nmembers = [\"a\", \"b\"]\n[names.\"www.example.test\"]\ngroups = [\"web\"]\n\
         [views.fed]\n",
        names_file.display(),
        views_file.display()
    );
    let controller = Controller::start(&ns.0, &config)?;
    let pid = controller.pid().context("controller pid")?;
    let rss_before = rss_mib(pid);

    let mut names = String::from(header);
    for i in 0..NAMES {
        let _ = writeln!(names, "{{\"name\": \"tenant{i}.example.test\", \"groups\": [\"web\"]}}");
    }
    let took = time_batch(&controller, "tenants", &names_file, &names, NAMES as u64)?;
    println!(
        "names feed: {NAMES} names ({} MB of JSON lines) applied in {:.1} s; controller RSS {rss_before} → {} MiB",
        names.len() / 1_000_000,
        took.as_secs_f64(),
        rss_mib(pid)
    );
    // The same names again but one: a batch that changes little still rebuilds the names.
    let one_fewer = &names[..names[..names.len() - 1].rfind('\n').map_or(0, |i| i + 1)];
    let took = time_batch(&controller, "tenants", &names_file, one_fewer, NAMES as u64 - 1)?;
    println!("names feed, next batch (one name fewer): {:.1} s", took.as_secs_f64());
    drop(names);

    let mut prefixes = String::from(header);
    for i in 0..PREFIXES as u32 {
        let network = std::net::Ipv4Addr::from(0x0a00_0000u32 + (i << 8));
        let _ = writeln!(prefixes, "{{\"prefix\": \"{network}/24\", \"view\": \"fed\"}}");
    }
    let took = time_batch(&controller, "regions", &views_file, &prefixes, PREFIXES as u64)?;
    println!(
        "views feed: {PREFIXES} prefixes applied in {:.1} s; controller RSS {} MiB",
        took.as_secs_f64(),
        rss_mib(pid)
    );
    drop(controller);
    Ok(())
}

fn health() -> Result<()> {
    println!("\n== feeds: a health feed of {TARGETS} targets, rewritten every second, {} s ==", MEASURE.as_secs());
    let ns = Ns(primwatch_tests::unique("pwfeedh"));
    netns::ip(&["netns", "add", &ns.0])?;
    netns::ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
    let dir = TempDir::new("pw-bench-feedh")?;
    let file = dir.0.join("health.jsonl");
    let batch = |round: usize| {
        let mut text = String::from("{\"primwatch_feed\": 1}\n");
        for i in 0..TARGETS {
            // A hundred targets change every round.
            let up = if i % 100 == round % 100 { "down" } else { "up" };
            let _ = writeln!(text, "{{\"target\": \"t{i}\", \"health\": \"{up}\", \"reason\": \"round {round}\"}}");
        }
        text
    };
    replace(&file, &batch(0))?;
    let mut config = format!(
        "[server]\ninterfaces = [\"lo\"]\nxdp_mode = \"skb\"\npin_dir = \"{{pin_dir}}\"\n\
         [feeds.monitoring]\nfile = \"{}\"\nkinds = [\"health\"]\n[checks.monitoring]\ntype = \"feed\"\nfeed = \"monitoring\"\n",
        file.display()
    );
    for i in 0..TARGETS {
        let _ = write!(
            config,
            "[targets.t{i}]\naddress = \"127.1.{}.{}\"\nchecks = [\"monitoring\"]\n",
            i / 250,
            i % 250 + 1
        );
    }
    let _ = write!(
        config,
        "[groups.web]\nmembers = [{}]\npolicy = \"all\"\n",
        (0..16).map(|i| format!("\"t{i}\"")).collect::<Vec<_>>().join(", ")
    );
    config.push_str("[names.\"www.example.test\"]\ngroups = [\"web\"]\n");
    let controller = Controller::start(&ns.0, &config)?;
    let pid = controller.pid().context("controller pid")?;
    std::thread::sleep(Duration::from_secs(2));
    let before = applied(&controller, "monitoring").map_or(0, |(n, _)| n);
    let (cpu0, t0) = (super::scale::cpu_of(pid)?, Instant::now());
    let mut round = 1;
    while t0.elapsed() < MEASURE {
        replace(&file, &batch(round))?;
        round += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    let (cpu1, elapsed) = (super::scale::cpu_of(pid)?, t0.elapsed().as_secs_f64());
    let after = applied(&controller, "monitoring").map_or(0, |(n, _)| n);
    println!(
        "{} batches of {TARGETS} verdicts applied ({} written); controller CPU {:.3} cores (goal: under 0.1)",
        after - before,
        round - 1,
        (cpu1 - cpu0) / elapsed
    );
    drop(controller);
    Ok(())
}
