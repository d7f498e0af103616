//! The demo cleans up whatever ends it: SIGINT, SIGTERM, SIGHUP — to the demo alone or
//! to its whole process group, as Ctrl-C in a terminal, tmux or a dropped SSH session
//! send them — and a demo killed with SIGKILL is cleaned up by the next start.

use std::os::unix::process::CommandExt as _;
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

/// A running demo; stopped (SIGTERM, then waited for) if a test ends early.
struct Demo(Child);

impl Drop for Demo {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            wait_exit(&mut self.0);
        }
    }
}

/// Starts the demo in its own process group; returns once it says it is ready.
fn start_demo() -> Demo {
    start_demo_printing().0
}

/// As `start_demo`, with what it printed up to "ready".
fn start_demo_printing() -> (Demo, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pw-demo"))
        .stdin(Stdio::piped()) // kept open: EOF on stdin is not a signal to stop
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create("/tmp/primwatch-demo-test.stderr").map(Stdio::from).unwrap_or(Stdio::null()))
        .process_group(0)
        .spawn()
        .expect("starting the demo");
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Drain everything, so the demo never blocks on a full pipe.
        let mut printed = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let ready = line.contains("Press Enter");
            printed.push(line);
            if ready {
                let _ = ready_tx.send(std::mem::take(&mut printed));
            }
        }
    });
    let printed = ready_rx.recv_timeout(Duration::from_secs(90)).unwrap_or_else(|e| {
        let stderr = std::fs::read_to_string("/tmp/primwatch-demo-test.stderr").unwrap_or_default();
        panic!("the demo did not get ready ({e}):\n{stderr}")
    });
    (Demo(child), printed)
}

/// An XDP counter ("answered", "negative_nxdomain", …), as `primwatch counters
/// --json` prints it.
fn xdp_counter(name: &str) -> u64 {
    let out = Command::new(primwatch_tests::controller::binary()).args(["counters", "--json"]).output().unwrap();
    let counters: serde_json::Value = serde_json::from_slice(&out.stdout).expect("counters as JSON");
    counters[name].as_u64().unwrap()
}

#[test]
fn every_printed_dig_line_answers_from_the_path_its_comment_names() {
    let (mut demo, printed) = start_demo_printing();
    let digs: Vec<&String> =
        printed.iter().filter(|l| l.trim_start().starts_with("ip netns exec") && l.contains(" dig ")).collect();
    assert!(digs.len() >= 5, "the demo prints its dig lines: {printed:?}");
    for line in digs {
        let (command, comment) = line.split_once('#').expect("each dig line says which path answers");
        let comment = comment.trim();
        // A denial: XDP's once the zone is transferred (PowerDNS starts after primwatch:
        // the first transfer comes with the next refresh, 5 s).
        let denial = if comment.starts_with("XDP: NXDOMAIN") {
            Some(("negative_nxdomain", "status: NXDOMAIN"))
        } else if comment.starts_with("XDP: NODATA") {
            Some(("negative_nodata", "status: NOERROR"))
        } else {
            None
        };
        if let Some((counter, status)) = denial {
            let denied = primwatch_tests::wait_for(std::time::Duration::from_secs(15), || {
                let before = xdp_counter(counter);
                let out =
                    Command::new("sh").arg("-c").arg(format!("{} +time=2 +tries=1", command.trim())).output().ok()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                (xdp_counter(counter) > before).then_some(text)
            });
            let text = denied.unwrap_or_else(|| panic!("XDP never denied: {line}"));
            assert!(
                text.contains(status) && text.contains("ANSWER: 0,") && text.contains("AUTHORITY: 1,"),
                "{line}\n{text}"
            );
            assert!(text.contains("SOA"), "{line}\n{text}");
            continue;
        }
        let before = xdp_counter("answered");
        let out = Command::new("sh").arg("-c").arg(format!("{} +time=2 +tries=1", command.trim())).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("status: NOERROR") && !text.contains("ANSWER: 0,"), "{line}\n{text}");
        let by_xdp = xdp_counter("answered") > before;
        if comment.starts_with("XDP") {
            assert!(by_xdp, "the comment says XDP: {line}\n{text}");
        } else {
            assert!(comment.starts_with("PowerDNS") && !by_xdp, "the comment says PowerDNS: {line}\n{text}");
        }
    }
    unsafe { libc::kill(demo.0.id() as i32, libc::SIGTERM) };
    wait_exit(&mut demo.0);
    assert!(leftovers().is_empty());
}

/// What a demo could leave behind: its namespaces, its pins, its processes.
fn leftovers() -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    found.extend(
        String::from_utf8_lossy(&netns.stdout)
            .lines()
            .filter(|l| l.starts_with("pwdemo-"))
            .map(|l| format!("netns {l}")),
    );
    if let Ok(pins) = std::fs::read_dir("/sys/fs/bpf/primwatch") {
        found.extend(pins.filter_map(|e| e.ok()).map(|e| format!("pin {}", e.path().display())));
    }
    let procs = Command::new("pgrep").args(["-f", "examples/demo.toml"]).output().unwrap();
    found.extend(String::from_utf8_lossy(&procs.stdout).lines().map(|p| format!("process {p}")));
    found
}

fn wait_exit(child: &mut Child) {
    let status = primwatch_tests::wait_for(Duration::from_secs(40), || child.try_wait().ok().flatten());
    assert!(status.is_some(), "the demo did not exit");
}

#[test]
fn every_signal_leaves_nothing_behind() {
    for (signal, whole_group) in [
        (libc::SIGINT, false),
        (libc::SIGTERM, false),
        (libc::SIGHUP, false),
        (libc::SIGINT, true),
        (libc::SIGHUP, true),
    ] {
        let mut demo = start_demo();
        let pid = demo.0.id() as i32;
        unsafe { libc::kill(if whole_group { -pid } else { pid }, signal) };
        wait_exit(&mut demo.0);
        let left = leftovers();
        assert!(left.is_empty(), "signal {signal} (group: {whole_group}) left {left:?}");
    }
}

#[test]
fn a_start_removes_what_a_killed_demo_left() {
    let mut demo = start_demo();
    demo.0.kill().unwrap(); // SIGKILL: no clean-up runs
    demo.0.wait().unwrap();
    assert!(leftovers().iter().any(|l| l.starts_with("netns pwdemo-")), "a killed demo leaves its lab");
    let mut demo = start_demo();
    unsafe { libc::kill(demo.0.id() as i32, libc::SIGTERM) };
    wait_exit(&mut demo.0);
    let left = leftovers();
    assert!(left.is_empty(), "{left:?}");
}
