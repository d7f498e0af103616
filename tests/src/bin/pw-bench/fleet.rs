//! The fleet on etcd (three full nodes, a three-member etcd cluster, as in
//! `tests/tests/fleet.rs`): how long an override made on one node takes to change the
//! answers of the other two, over 100 overrides; and what 1,000 targets under
//! `quorum = 2` cost each node's controller in CPU, against the same targets checked
//! by nodes without a fleet.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use primwatch_tests::{
    fleet::{fleet_table, three_nodes},
    unique,
    world::{set, world_with, World, SITE_GROUPS, WEB1, WEB2, WEB3},
};

const OVERRIDES: usize = 100;

pub fn run() -> Result<()> {
    propagation()?;
    quorum_cpu()
}

fn propagation() -> Result<()> {
    let prefix = format!("/pw/{}", unique("bench"));
    let body = |node: &str| {
        format!(
            "{SITE_GROUPS}\n[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n\n{}",
            fleet_table(&prefix, node)
        )
    };
    let (worlds, _net, _etcd) = three_nodes(body)?;
    let both = set(&[WEB1, WEB2]);
    let one = set(&[WEB2]);
    let mut seen: Vec<Duration> = Vec::with_capacity(2 * OVERRIDES);
    for i in 0..OVERRIDES {
        let (action, want) = if i % 2 == 0 { ("down", &one) } else { ("auto", &both) };
        let reply = worlds[0].controller.ctl(&["target", "web1", action])?;
        ensure!(reply["ok"] == true, "{reply}");
        let made = Instant::now();
        for w in &worlds[1..] {
            while w.answers("www.example.test") != *want {
                ensure!(made.elapsed() < Duration::from_secs(5), "override {i} not seen within 5 s");
            }
            seen.push(made.elapsed());
        }
    }
    seen.sort();
    let pct = |p: usize| seen[(seen.len() * p / 100).min(seen.len() - 1)];
    println!("\n== Fleet: an override on node A seen in the answers of B and C (3 nodes, 3 etcd members) ==");
    println!(
        "{OVERRIDES} overrides, {} observations: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        seen.len(),
        pct(50).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3,
        seen[seen.len() - 1].as_secs_f64() * 1e3
    );
    Ok(())
}

/// Targets in the CPU comparison, and how long each run is measured.
const TARGETS: usize = 1000;
const MEASURED: Duration = Duration::from_secs(20);
/// web1's address goes away and comes back this often on every node: a third of the
/// targets change state, each node writes a third of its views and reads the others'.
const FLAP_EVERY: Duration = Duration::from_secs(4);

/// `TARGETS` targets over web1..web3 (ICMP, every second), each with the `extra` keys.
fn many_targets(extra: &str) -> String {
    let mut body =
        String::from("[checks.ping]\ntype = \"icmp\"\ninterval = \"1s\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n");
    for i in 0..TARGETS {
        let address = [WEB1, WEB2, WEB3][i % 3];
        body.push_str(&format!("[targets.t{i}]\naddress = \"{address}\"\nchecks = [\"ping\"]\n"));
        body.push_str(extra);
    }
    body
}

/// The controller's CPU time so far (user + system, from /proc/PID/stat).
fn cpu_time(w: &World) -> Result<Duration> {
    let pid = w.controller.pid().ok_or_else(|| anyhow::anyhow!("controller not running"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz.max(1)))
}

/// Each node's controller CPU, in percent of one core, over `MEASURED` with web1
/// flapping on every node.
fn measure(worlds: &[World]) -> Result<Vec<f64>> {
    std::thread::sleep(Duration::from_secs(3)); // past the start's first round of checks
    let before: Vec<Duration> = worlds.iter().map(cpu_time).collect::<Result<_>>()?;
    let started = Instant::now();
    let mut up = true;
    while started.elapsed() < MEASURED {
        std::thread::sleep(FLAP_EVERY / 2);
        for w in worlds {
            let address = WEB1.parse()?;
            if up {
                w.net.remove_address(address)?;
            } else {
                w.net.add_address(address)?;
            }
        }
        up = !up;
    }
    if !up {
        for w in worlds {
            w.net.add_address(WEB1.parse()?)?;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    worlds.iter().zip(before).map(|(w, b)| Ok((cpu_time(w)? - b).as_secs_f64() * 100.0 / elapsed)).collect()
}

fn quorum_cpu() -> Result<()> {
    let base = format!("{SITE_GROUPS}\n[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n");
    let alone = {
        let worlds: Vec<World> = (0..3).map(|_| world_with(&format!("{base}{}", many_targets("")), false)).collect();
        measure(&worlds)?
    };
    let in_fleet = |extra: &str| -> Result<Vec<f64>> {
        let prefix = format!("/pw/{}", unique("bench"));
        let body = |node: &str| format!("{base}{}\n{}", many_targets(extra), fleet_table(&prefix, node));
        let (worlds, _net, etcd) = three_nodes(body)?;
        std::thread::sleep(Duration::from_secs(2)); // the shards settle once every node is known
        let before = etcd.revision()?;
        let cpu = measure(&worlds)?;
        // The flaps must have gone through etcd: a third of each node's views per flap.
        let writes = etcd.revision()? - before;
        ensure!(writes > 0, "no view was written to etcd during the run");
        println!("(etcd revisions during the run with {:?}: {writes})", extra.trim());
        Ok(cpu)
    };
    let fleet = in_fleet("quorum = 2\n")?;
    let sharded = in_fleet("quorum = 1\nchecked_by = 1\n")?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    println!("\n== Fleet: controller CPU per node, {TARGETS} ICMP targets checked every second, web1's third flapping every {} s ==", FLAP_EVERY.as_secs());
    println!("no fleet:                    {:.1} % of a core (nodes: {:.1?})", mean(&alone), alone);
    println!("fleet, quorum = 2 on all:    {:.1} % of a core (nodes: {:.1?})", mean(&fleet), fleet);
    println!("extra for the fleet:         {:+.1} % of a core per node", mean(&fleet) - mean(&alone));
    println!("fleet, checked_by = 1:       {:.1} % of a core (nodes: {:.1?})", mean(&sharded), sharded);
    Ok(())
}
