//! Every number and duration in the config has a range: a property test. Each key of a
//! valid config that covers every table gets random values, extreme ones included
//! (0, 1, -1, 2^31, 2^32, 2^53, i64::MAX; "1ns", "68y", "296000000000y", …). For each,
//! `check-config` either refuses it at a line of the file (exit 2, FILE:LINE:COL with
//! LINE > 0) or accepts it; a sample of the accepted ones is then run for real in a
//! netns, and must serve for some seconds without a panic and stop cleanly.
//! `PRIMWATCH_RANGES_SEED` repeats a run (the seed is printed).

use std::{
    process::Command,
    time::{Duration, SystemTime},
};

use primwatch_tests::{
    controller::{binary, Controller},
    dnssec::ZoneKey,
    lab::{Lab, SERVER_IF},
    TempDir, XorShift,
};

/// A config with every table that has numbers or durations. `{dir}` is a scratch
/// directory (the zone key, the PowerDNS socket).
const BASE: &str = r#"
[server]
interfaces = ["{iface}"]
pin_dir = "{pin_dir}"
port = 53
default_ttl = 30
control_max_connections = 8
max_checks_in_flight = 64
max_names = 1000
max_record_sets = 1000
max_signatures = 1000
max_zone_names = 1000

[powerdns]
socket = "{dir}/pdns.sock"
max_connections = 4
idle_timeout = "60s"

[rrl]
responses_per_second = 20
nodata_per_second = 10
nxdomains_per_second = 5
window = "15s"
slip = 2
ipv4_prefix_len = 24
ipv6_prefix_len = 56
table_size = 4096

[slow_path]
queries_per_second = 10000
prefix_queries_per_second = 1000
burst_seconds = 2
ipv4_prefix_len = 24
ipv6_prefix_len = 56

[cookies]
secret_rotation = "1d"

[resolver]
min_ttl = "5s"
max_ttl = "1h"
grace = "5m"

[hooks]
timeout = "5s"

[checks.tcp]
type = "tcp"
port = 9
interval = "1s"
retry_interval = "500ms"
timeout = "200ms"
jitter = "100ms"
rise = 2
fall = 2

[checks.web]
type = "http"
port = 8080
path = "/health"
interval = "2s"
timeout = "1s"
rise = 1
fall = 3

[checks.ping]
type = "icmp"
interval = "1s"
timeout = "500ms"
fall = 3

[targets.a]
address = "127.0.0.1"
weight = 10
checks = ["tcp", "web"]
[targets.b]
address = "127.0.0.2"
weight = 1
checks = ["tcp", "ping"]

[groups.main]
members = ["a", "b"]
priority = 100
policy = "weighted"
max_answers = 2
min_healthy = 1

[names."www.example.test"]
groups = ["main"]
ttl = 20

[zones."example.test"]
dnssec = "sign"
key = "{key}"
signature_validity = "14d"

[feeds.inventory]
file = "{dir}/feed.jsonl"
kinds = ["health", "weights"]
timeout = "5s"
stale_after = "1m"
first_batch_wait = "1s"
max_bytes = 65536

[feeds.poll]
command = ["/bin/true"]
interval = "10s"
kinds = ["health"]

[dnstap]
file = "{dir}/xdp.dnstap"
sample = 10
max_per_second = 1000
file_max_bytes = 1048576
file_keep = 5

[zones."unsigned.test"]
negative_answers = true
transfer_from = "127.0.0.1:5399"
refresh = "5s"
"#;

#[derive(Debug, Clone)]
enum Leaf {
    Integer,
    Duration,
}

/// Paths (`table.key`, with array indices as numbers) of the number and duration leaves.
fn leaves(value: &toml::Value, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Leaf)>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                path.push(k.clone());
                leaves(v, path, out);
                path.pop();
            }
        }
        toml::Value::Integer(_) => out.push((path.clone(), Leaf::Integer)),
        toml::Value::String(s) if is_duration(s) => out.push((path.clone(), Leaf::Duration)),
        _ => {}
    }
}

/// "60s", "500ms", "14d": a duration as the config spells them.
fn is_duration(text: &str) -> bool {
    regex::Regex::new(r"^[0-9]+(ns|ms|s|m|h|d|y)$").unwrap().is_match(text)
}

fn set(value: &mut toml::Value, path: &[String], new: toml::Value) {
    let mut at = value;
    for key in &path[..path.len() - 1] {
        at = at.get_mut(key.as_str()).expect("path exists");
    }
    at.as_table_mut().unwrap().insert(path[path.len() - 1].clone(), new);
}

fn integer(rng: &mut XorShift) -> i64 {
    const EXTREMES: [i64; 12] =
        [0, 1, -1, 255, 256, 65_535, 65_536, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 53, i64::MAX];
    match rng.next_u64() % 3 {
        0 => EXTREMES[(rng.next_u64() % EXTREMES.len() as u64) as usize],
        1 => i64::MIN + (rng.next_u64() % 2) as i64,
        _ => (rng.next_u64() >> (rng.next_u64() % 64)) as i64,
    }
}

fn duration(rng: &mut XorShift) -> String {
    const EXTREMES: [&str; 12] = [
        "0s",
        "1ns",
        "1ms",
        "99ms",
        "1s",
        "59m",
        "3601s",
        "91d",
        "68y",
        "296000000000y",
        "18446744073709551615s",
        "1y 1ns",
    ];
    const UNITS: [&str; 7] = ["ns", "ms", "s", "m", "h", "d", "y"];
    if rng.next_u64().is_multiple_of(2) {
        EXTREMES[(rng.next_u64() % EXTREMES.len() as u64) as usize].to_string()
    } else {
        let n = rng.next_u64() >> (rng.next_u64() % 64);
        format!("{n}{}", UNITS[(rng.next_u64() % UNITS.len() as u64) as usize])
    }
}

#[test]
fn every_number_and_duration_is_refused_at_its_line_or_survives_run() {
    let seed = std::env::var("PRIMWATCH_RANGES_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
    eprintln!("PRIMWATCH_RANGES_SEED={seed}");
    let mut rng = XorShift(seed);
    let dir = TempDir::new("pw-ranges").unwrap();
    let key = ZoneKey::generate(&dir.0, "example.test", 13).unwrap();
    let template = BASE
        .replace("{dir}", &dir.0.display().to_string())
        .replace("{key}", &key.private_file().display().to_string())
        .replace("{iface}", SERVER_IF);
    let base: toml::Value = toml::from_str(&template.replace("{pin_dir}", "/sys/fs/bpf/x")).unwrap();
    let mut paths = Vec::new();
    leaves(&base, &mut Vec::new(), &mut paths);
    assert!(paths.len() >= 40, "the base config covers the tables: {} leaves", paths.len());

    let file = dir.0.join("mutant.toml");
    let check = |text: &str| {
        std::fs::write(&file, text).unwrap();
        let out = Command::new(binary()).arg("check-config").arg(&file).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = check(&template.replace("{pin_dir}", "/sys/fs/bpf/x"));
    assert_eq!(code, Some(0), "the base config is valid: {err}");

    // Every leaf, five values each: refused at a line, or accepted.
    let mut accepted = Vec::new();
    let (mut refused, mut tried) = (0, 0);
    for (path, kind) in &paths {
        for _ in 0..5 {
            let mut mutant = base.clone();
            let (shown, new) = match kind {
                Leaf::Integer => {
                    let n = integer(&mut rng);
                    (n.to_string(), toml::Value::Integer(n))
                }
                Leaf::Duration => {
                    let d = duration(&mut rng);
                    (format!("{d:?}"), toml::Value::String(d))
                }
            };
            set(&mut mutant, path, new);
            let text = toml::to_string(&mutant).unwrap();
            tried += 1;
            match check(&text) {
                (Some(0), _) => accepted.push((format!("{} = {shown}", path.join(".")), text)),
                (Some(2), err) => {
                    refused += 1;
                    let at = format!("{}:", file.display());
                    let line: usize = err
                        .split(&at)
                        .nth(1)
                        .and_then(|rest| rest.split(':').next())
                        .and_then(|l| l.parse().ok())
                        .unwrap_or_else(|| panic!("{} = {shown}: refused without a line: {err}", path.join(".")));
                    let key = path.last().unwrap();
                    let named = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
                    assert!(line > 0, "{} = {shown}: {err}", path.join("."));
                    assert!(
                        named.contains(key.as_str()) || err.contains(key.as_str()),
                        "{} = {shown}: refused at line {line} ({named:?}), which is not the key's: {err}",
                        path.join(".")
                    );
                }
                (code, err) => panic!("{} = {shown}: check-config exited {code:?} (a crash?): {err}", path.join(".")),
            }
        }
    }
    eprintln!("{tried} values: {refused} refused at their line, {} accepted", accepted.len());

    // A sample of the accepted ones, run for real: serving, no panic, a clean stop.
    let lab = Lab::new().unwrap();
    // The extreme ones first (a year or more, a millisecond or less, 2^31 or more: where
    // arithmetic overflows), then some others.
    let extreme = |what: &str| {
        let value = what.split(" = ").nth(1).unwrap_or("").trim_matches('"');
        value.parse::<i128>().is_ok_and(|n| !(0..1 << 31).contains(&n))
            || value.ends_with('y')
            || value.ends_with("ns")
            || value.split_whitespace().count() > 1
            || value.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len() > 9
    };
    let mut sample: Vec<(String, String)> = Vec::new();
    while let Some(i) = accepted.iter().position(|(what, _)| extreme(what)) {
        if sample.len() >= 12 {
            break;
        }
        sample.push(accepted.swap_remove(i));
    }
    let extremes = sample.len();
    while sample.len() < extremes + 4 && !accepted.is_empty() {
        let i = (rng.next_u64() % accepted.len() as u64) as usize;
        sample.push(accepted.swap_remove(i));
    }
    for (what, text) in sample {
        let template = text.replace("/sys/fs/bpf/x", "{pin_dir}");
        let mut controller = Controller::start(&lab.server_ns, &template)
            .unwrap_or_else(|e| panic!("{what}: accepted by check-config, but run did not serve: {e:#}"));
        std::thread::sleep(Duration::from_secs(3));
        let status = controller.ctl(&["status"]).unwrap_or_else(|e| panic!("{what}: ctl status: {e:#}"));
        assert_eq!(status["ok"], true, "{what}: {status}");
        let log = controller.log();
        assert!(!log.contains("panic"), "{what}: {log}");
        let exit = controller.stop().unwrap();
        assert!(exit.success(), "{what}: exited {exit}:\n{}", controller.log());
        eprintln!("ran: {what}");
    }
}
