//! The fleet on etcd: how long an override made on one node takes to change the
//! answers of the other two (three full nodes, a three-member etcd cluster, as in
//! `tests/tests/fleet.rs`), over 100 overrides.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use primwatch_tests::{
    fleet::{Etcd, FleetNet},
    unique,
    world::{set, world_with, World, SITE_GROUPS, WEB1, WEB2},
};

const OVERRIDES: usize = 100;

pub fn run() -> Result<()> {
    let prefix = format!("/pw/{}", unique("bench"));
    let endpoints: Vec<String> = (0..3).map(|i| format!("\"http://{}:2379\"", FleetNet::address(i))).collect();
    let body = |node: &str| {
        format!(
            "{SITE_GROUPS}\n[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n\n\
             [fleet]\netcd = [{}]\nprefix = \"{prefix}\"\nnode = \"{node}\"\n",
            endpoints.join(", ")
        )
    };
    let worlds: Vec<World> = ["a", "b", "c"].iter().map(|n| world_with(&body(n), false)).collect();
    let namespaces: Vec<&str> = worlds.iter().map(|w| w.lab.server_ns.as_str()).collect();
    let net = FleetNet::new(&namespaces)?;
    let _etcd = Etcd::start(&net)?;
    let connected =
        |w: &World| w.controller.ctl(&["status"]).ok().is_some_and(|s| s["status"]["fleet"]["connected"] == true);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !worlds.iter().all(connected) {
        ensure!(Instant::now() < deadline, "nodes did not connect to etcd");
        std::thread::sleep(Duration::from_millis(200));
    }
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
