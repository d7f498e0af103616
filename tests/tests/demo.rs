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

/// Starts the demo in its own process group; returns once it says it is ready.
fn start_demo() -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pw-demo"))
        .stdin(Stdio::piped()) // kept open: EOF on stdin is not a signal to stop
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting the demo");
    let stdout = child.stdout.take().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Drain everything, so the demo never blocks on a full pipe.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("Press Enter") {
                let _ = ready_tx.send(());
            }
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(90)).expect("the demo got ready");
    child
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
        let pid = demo.id() as i32;
        unsafe { libc::kill(if whole_group { -pid } else { pid }, signal) };
        wait_exit(&mut demo);
        let left = leftovers();
        assert!(left.is_empty(), "signal {signal} (group: {whole_group}) left {left:?}");
    }
}

#[test]
fn a_start_removes_what_a_killed_demo_left() {
    let mut demo = start_demo();
    demo.kill().unwrap(); // SIGKILL: no clean-up runs
    demo.wait().unwrap();
    assert!(leftovers().iter().any(|l| l.starts_with("netns pwdemo-")), "a killed demo leaves its lab");
    let mut demo = start_demo();
    unsafe { libc::kill(demo.id() as i32, libc::SIGTERM) };
    wait_exit(&mut demo);
    let left = leftovers();
    assert!(left.is_empty(), "{left:?}");
}
