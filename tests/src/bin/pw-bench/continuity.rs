//! Changing primwatch under load: a client sends queries back to back (each waits for
//! its reply, 1.5 s timeout) while the controller is reloaded 20 times with configs that
//! move the name between two groups, restarted cleanly (SIGTERM, start) and killed
//! (SIGKILL, start). A lost query is one without a reply; a wrong one has neither set
//! (mixed, or PowerDNS's own record because XDP was gone).

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use primwatch_tests::world::{set, world, LoadResult, SITE_GROUPS, WEB1, WEB2, WEB3};

fn row(what: &str, result: &LoadResult, took: Duration) {
    println!("| {what} | {} | {} | {} | {:.1} |", result.sent, result.lost, result.wrong, took.as_secs_f64());
}

pub fn run() -> Result<()> {
    println!("\n## Reloads, restarts and kill -9 under a steady query load\n");
    println!("| event | queries | lost | wrong or mixed | seconds |");
    println!("|---|---|---|---|---|");
    let mut w = world(&format!("{SITE_GROUPS}\n[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n"));
    w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(3));
    let tokyo = std::fs::read_to_string(w.controller_config_path())?;
    let osaka = tokyo.replace("groups = [\"tokyo\", \"osaka\"]", "groups = [\"osaka\"]");
    let accepted = || vec![set(&[WEB1, WEB2]), set(&[WEB3])];

    let started = Instant::now();
    let load = w.steady_load("www.example.test", accepted());
    for i in 0..20 {
        std::fs::write(w.controller_config_path(), if i % 2 == 0 { &osaka } else { &tokyo })?;
        let reply = w.controller.ctl(&["reload"])?;
        ensure!(reply["ok"] == true, "reload refused: {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let result = load.finish();
    ensure!(result.per_set.iter().all(|n| *n > 0), "both configs served: {result:?}");
    row("20 reloads changing the records", &result, started.elapsed());

    let started = Instant::now();
    let load = w.steady_load("www.example.test", accepted());
    for _ in 0..5 {
        w.controller.restart()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    row("5 restarts (SIGTERM, start: adopts the pinned link)", &load.finish(), started.elapsed());

    let started = Instant::now();
    let load = w.steady_load("www.example.test", accepted());
    for _ in 0..5 {
        w.controller.kill()?;
        std::thread::sleep(Duration::from_millis(500)); // nothing runs the checks meanwhile
        w.controller.start_again()?;
        std::thread::sleep(Duration::from_millis(200));
    }
    row("5 × kill -9, 0.5 s dead, start", &load.finish(), started.elapsed());

    // For contrast, the old way: detach on stop, attach on start. The queries in
    // between reach PowerDNS, which does not know the name here.
    std::fs::write(w.controller_config_path(), tokyo.replacen("[server]\n", "[server]\non_stop = \"detach\"\n", 1))?;
    ensure!(w.controller.ctl(&["reload"])?["ok"] == true, "reload with on_stop = detach");
    let started = Instant::now();
    let load = w.steady_load("www.example.test", accepted());
    std::thread::sleep(Duration::from_millis(200));
    w.controller.restart()?;
    std::thread::sleep(Duration::from_millis(200));
    row("contrast: 1 restart with on_stop = \"detach\"", &load.finish(), started.elapsed());
    Ok(())
}
