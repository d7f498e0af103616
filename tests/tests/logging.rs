//! The binary's log lines as a log shipper or the journal sees them: no colour codes
//! when stderr is not a terminal, one JSON object per line with `--log-format json`,
//! no timestamp of our own under systemd (JOURNAL_STREAM set).

use std::process::Command;

use primwatch_tests::controller::binary;

/// Runs a command that fails with one error log line (counters of a pin directory that
/// does not exist) and returns its stderr.
fn failing_run(extra_args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(binary());
    cmd.args(extra_args).args(["counters", "--pin-dir", "/nonexistent/primwatch-logging-test"]);
    cmd.env_remove("NO_COLOR").env_remove("JOURNAL_STREAM").env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run primwatch");
    assert!(!out.status.success(), "the command should fail");
    let stderr = String::from_utf8(out.stderr).expect("UTF-8 log");
    assert!(stderr.contains("nonexistent"), "the error names the path: {stderr}");
    stderr
}

#[test]
fn text_logs_to_a_pipe_carry_no_colour_codes() {
    let stderr = failing_run(&[], &[]);
    assert!(!stderr.contains('\u{1b}'), "escape sequences in a piped log: {stderr:?}");
    assert!(stderr.contains("ERROR"), "{stderr}");
    // Outside systemd each line starts with a timestamp (the year).
    assert!(stderr.starts_with("20"), "timestamp expected: {stderr}");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let stderr = failing_run(&["--log-format", "json"], &[]);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty());
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert_eq!(value["level"], "ERROR", "{line}");
        assert!(value["fields"]["message"].as_str().is_some_and(|m| m.contains("nonexistent")), "{line}");
    }
}

#[test]
fn under_systemd_the_journal_stamps_the_time() {
    let stderr = failing_run(&[], &[("JOURNAL_STREAM", "8:12345")]);
    assert!(stderr.trim_start().starts_with("ERROR"), "no timestamp of our own: {stderr}");
    assert!(!stderr.contains('\u{1b}'));
}

/// A normal start (XDP attached, PowerDNS asking through the remote backend, checks
/// passing, names served) logs nothing at WARN or ERROR: what is informational is
/// INFO or DEBUG, so a warning in the journal always means something is wrong.
#[test]
fn a_normal_start_logs_no_warnings() {
    use primwatch_tests::world::{world_with, SITE_GROUPS, WEB1, WEB2};
    let names = "[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\nttl = 10\n";
    let w = world_with(&format!("{SITE_GROUPS}{names}"), true);
    w.expect("www.example.test", &[WEB1, WEB2], std::time::Duration::from_secs(10));
    let log = w.controller.log();
    assert!(log.contains(" INFO "), "the start logs at INFO: {log}");
    let loud: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert!(loud.is_empty(), "a normal start logged warnings or errors:\n{}", loud.join("\n"));
}
