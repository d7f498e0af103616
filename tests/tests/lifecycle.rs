//! Ways of ending and of not ending: a daemon whose log reader goes away keeps checking
//! and answering, counts the lost lines, and still honours `on_stop` when stopped.

use std::time::Duration;

use primwatch_tests::world::{world_options, Options, SITE_GROUPS, WEB1, WEB2};

const SOON: Duration = Duration::from_secs(3);

#[test]
fn the_daemon_outlives_its_log_reader_and_still_detaches_on_stop() {
    let body = format!("{SITE_GROUPS}[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n");
    let mut w = world_options(
        &body,
        &Options { server_keys: "on_stop = \"detach\"", log_reader_quits: true, ..Options::default() },
    );
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    // Log lines keep coming (a backend going down and up logs each change); by now the
    // reader has closed its end, so they fail with EPIPE.
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB1], SOON);
    let status = w.controller.ctl(&["status"]).unwrap();
    let web2 = status["status"]["targets"].as_array().unwrap().iter().find(|t| t["name"] == "web2").unwrap().clone();
    assert_eq!(web2["state"], "down", "{web2}");
    w.backends[1].resume().unwrap();
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    assert_eq!(w.controller.ctl(&["reload"]).unwrap()["ok"], true);
    let stats = w.controller.ctl(&["stats"]).unwrap();
    assert!(stats["stats"]["log_lines_lost"].as_u64().unwrap() > 0, "lost lines are counted: {}", stats["stats"]);

    // Stopped, it still does what on_stop says: XDP off, pins gone.
    let pin_dir = w.controller.pin_dir.clone();
    let exit = w.controller.stop().unwrap();
    assert!(exit.success(), "{exit}");
    assert!(!pin_dir.join("names").exists() && !pin_dir.join("link_pws0").exists(), "pins removed");
    let link = std::process::Command::new("ip")
        .args(["-n", &w.lab.server_ns, "link", "show", primwatch_tests::lab::SERVER_IF])
        .output()
        .unwrap();
    let link = String::from_utf8_lossy(&link.stdout);
    assert!(!link.contains("xdp"), "XDP detached: {link}");
}

#[test]
fn setup_leaves_a_running_powerdns_alone() {
    let lab = primwatch_tests::lab::Lab::new().unwrap();
    let server = lab.server_addr(false);
    let zone = primwatch_tests::pdns::zone("example.test", server, &[]);
    let pdns = primwatch_tests::pdns::PowerDns::start(&lab.server_ns, &[server], "example.test", &zone).unwrap();
    let before = pdns.stat("uptime").expect("PowerDNS runs");
    // The xtask binary `cargo xtask test` itself runs from.
    let xtask = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/xtask");
    assert!(xtask.exists(), "{} is missing: run the tests with `cargo xtask test`", xtask.display());
    let out = std::process::Command::new(&xtask)
        .arg("setup")
        .current_dir(std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(300));
    let after = pdns.stat("uptime").expect("the operator's PowerDNS still runs after setup");
    assert!(after >= before);
}
