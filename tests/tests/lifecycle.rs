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

/// A failure inside the running daemon, injected from outside without a backdoor: the
/// answer maps are frozen (`bpftool map freeze`), so the kernel refuses the next update,
/// as it would refuse one for lack of memory. The next health change cannot be written:
/// the controller saves its state (as not cleanly stopped), honours `on_stop` and exits
/// with a failure status for its supervisor.
fn a_failed_map_write_stops_in_order(on_stop: &str) -> primwatch_tests::world::World {
    let body = format!("{SITE_GROUPS}[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n");
    let keys = format!("on_stop = \"{on_stop}\"");
    let mut w = world_options(&body, &Options { server_keys: &keys, ..Options::default() });
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    for map in ["names", "name_answers", "rrsets", "set_versions"] {
        let pin = w.controller.pin_dir.join(map);
        let out = std::process::Command::new("bpftool").args(["map", "freeze", "pinned"]).arg(&pin).output().unwrap();
        assert!(out.status.success(), "freezing {}: {}", pin.display(), String::from_utf8_lossy(&out.stderr));
    }
    w.backends[1].stop();
    let exit = w.controller.wait_exit(SOON).unwrap();
    assert!(!exit.success(), "a failure exit: {exit}");
    let log = w.controller.log();
    assert!(log.contains("writing the answers after a health change"), "the reason is logged:\n{log}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&w.controller.state_file).unwrap()).unwrap();
    assert_eq!(saved["stopped_cleanly"], false, "{saved}");
    assert_eq!(saved["last_known"]["web2"]["healthy"], false, "web2's fall was saved: {saved}");
    w
}

fn xdp_on_server_link(w: &primwatch_tests::world::World) -> bool {
    let link = std::process::Command::new("ip")
        .args(["-n", &w.lab.server_ns, "link", "show", primwatch_tests::lab::SERVER_IF])
        .output()
        .unwrap();
    String::from_utf8_lossy(&link.stdout).contains("xdp")
}

#[test]
fn a_failure_while_running_detaches_when_on_stop_says_detach() {
    let w = a_failed_map_write_stops_in_order("detach");
    assert!(!w.controller.pin_dir.join("names").exists() && !w.controller.pin_dir.join("link_pws0").exists());
    assert!(!xdp_on_server_link(&w), "XDP detached");
}

#[test]
fn a_failure_while_running_keeps_answering_when_on_stop_says_keep() {
    let mut w = a_failed_map_write_stops_in_order("keep");
    // Fail static: the last answers written stay in XDP with nobody checking.
    assert!(xdp_on_server_link(&w) && w.controller.pin_dir.join("link_pws0").exists());
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    // The next start adopts the link with fresh maps and says how the last run ended.
    w.controller.start_again().unwrap();
    w.expect("www.example.test", &[WEB1], SOON);
    let status = w.controller.ctl(&["status"]).unwrap();
    let note = status["status"]["dataplane"].as_str().unwrap_or_default().to_string();
    assert!(note.contains("did not stop cleanly") && note.contains("adopted"), "{status}");
}

/// Under systemd (`Type=notify`, `WatchdogSec=`): READY=1 once serving, WATCHDOG=1 every
/// second from the controller's loop, STOPPING=1 on SIGTERM — read from a datagram
/// socket standing in for systemd's NOTIFY_SOCKET.
#[test]
fn systemd_hears_ready_then_the_watchdog_then_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = primwatch_tests::TempDir::new("pw-notify").unwrap();
    let path = dir.0.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let lab = primwatch_tests::lab::Lab::new().unwrap();
    let config = format!(
        "[server]\ninterfaces = [\"{}\"]\npin_dir = \"{{pin_dir}}\"\n[names.\"www.example.test\"]\na = [\"192.0.2.1\"]\n",
        primwatch_tests::lab::SERVER_IF
    );
    let mut controller = primwatch_tests::controller::Controller::start_with_env(
        &lab.server_ns,
        &config,
        &[("NOTIFY_SOCKET", path.to_str().unwrap())],
    )
    .unwrap();
    let mut heard = Vec::new();
    let mut buf = [0u8; 256];
    let until = std::time::Instant::now() + Duration::from_millis(3500);
    while std::time::Instant::now() < until {
        if let Ok(n) = socket.recv(&mut buf) {
            heard.push(String::from_utf8_lossy(&buf[..n]).trim().to_string());
        }
    }
    assert_eq!(heard.first().map(String::as_str), Some("READY=1"), "{heard:?}");
    let pings = heard.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(pings >= 2, "{pings} watchdog pings in 3.5 s: {heard:?}");
    let exit = controller.stop().unwrap();
    assert!(exit.success(), "{exit}");
    let mut last = String::new();
    while let Ok(n) = socket.recv(&mut buf) {
        last = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        if last == "STOPPING=1" {
            break;
        }
    }
    assert_eq!(last, "STOPPING=1");
}
