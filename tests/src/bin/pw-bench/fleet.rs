//! The fleet on etcd: how long an override made on one node takes to change the
//! answers of the other two (three full nodes, a three-member etcd cluster, as in
//! `tests/tests/fleet.rs`), over 100 overrides.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use primwatch_tests::{
    fleet::{fleet_table, three_nodes},
    unique,
    world::{set, SITE_GROUPS, WEB1, WEB2},
};

const OVERRIDES: usize = 100;

pub fn run() -> Result<()> {
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
