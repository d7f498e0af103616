//! What operators see: Prometheus metrics (answers per name and view from the XDP
//! per-CPU counters, verdicts, checks, states, map updates, reloads) and `ctl stats`.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use hickory_proto::rr::RecordType;
use primwatch_tests::{
    dns, netns,
    world::{world, World, WEB1, WEB2, WEB3},
};

const CONFIG: &str = r#"
[metrics]
listen = "127.0.0.1:9153"

[groups.web]
members = ["web1", "web2", "web3"]
policy = "all"
[names."www.example.test"]
groups = ["web"]
[names."static.example.test"]
a = ["192.0.2.7"]
"#;

/// Scrapes until `ready` holds (scrapes read a snapshot taken once a second), at most
/// three seconds; returns the last scrape.
fn scrape_until(w: &World, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let text = try_get(w, "/metrics").map(|(_, text)| text).unwrap_or_default();
        if ready(&text) || std::time::Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn get(w: &World, path: &str) -> (String, String) {
    try_get(w, path).expect("a reply from the metrics listener")
}

/// GET `path` from the metrics listener: the status line and the body; None if it
/// cannot be reached (not bound yet).
fn try_get(w: &World, path: &str) -> Option<(String, String)> {
    let path = path.to_string();
    let mut stream = netns::run_in(&w.lab.server_ns, || {
        TcpStream::connect_timeout(&"127.0.0.1:9153".parse().unwrap(), Duration::from_secs(2))
    })
    .ok()?
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// The value of one sample line, e.g. `metric{labels}`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn metrics_and_ctl_stats_show_answers_checks_states_and_updates() {
    let mut w = world(CONFIG);
    w.expect("www.example.test", &[WEB1, WEB2, WEB3], Duration::from_secs(3));
    // A snapshot taken after every answer so far.
    std::thread::sleep(Duration::from_millis(1300));
    let (status, before) = get(&w, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let www_a = "primwatch_xdp_answers_total{name=\"www.example.test\",view=\"default\",type=\"A\"}";
    let static_a = "primwatch_xdp_answers_total{name=\"static.example.test\",view=\"default\",type=\"A\"}";

    // Seven answers for www and three for static: counted per name, exactly.
    let sock = dns::udp_socket(&w.lab.client_ns, false).unwrap();
    let server = SocketAddr::new(w.lab.server_addr(false), 53);
    for (i, name) in ["www.example.test"; 7].iter().chain(&["static.example.test"; 3]).enumerate() {
        dns::exchange_udp(&sock, server, &dns::query(i as u16, name, RecordType::A, None).unwrap()).unwrap();
    }
    let after = scrape_until(&w, |t| sample(t, static_a) - sample(&before, static_a) >= 3.0);
    assert_eq!(sample(&after, www_a) - sample(&before, www_a), 7.0);
    assert_eq!(sample(&after, static_a) - sample(&before, static_a), 3.0);
    assert!(sample(&after, "primwatch_xdp_packets_total{verdict=\"answered\"}") >= 10.0);
    assert!(after.contains("primwatch_xdp_packets_total{verdict=\"pass_name_not_found\"}"));

    // Checks: results and a latency histogram per target.
    assert!(sample(&after, "primwatch_check_results_total{target=\"web1\",check=\"http\",result=\"ok\"}") >= 1.0);
    assert!(sample(&after, "primwatch_check_latency_seconds_count{target=\"web1\",check=\"http\"}") >= 1.0);
    assert!(sample(&after, "primwatch_map_syncs_total") >= 1.0);

    // A backend down: its state, the time of the change, failed checks, a map write.
    let writes = sample(&after, "primwatch_map_entry_updates_total{op=\"write\"}");
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB1, WEB3], Duration::from_secs(3));
    let down = scrape_until(&w, |t| sample(t, "primwatch_target_up{target=\"web2\"}") == 0.0);
    assert_eq!(sample(&down, "primwatch_target_up{target=\"web2\"}"), 0.0);
    assert_eq!(sample(&down, "primwatch_target_up{target=\"web1\"}"), 1.0);
    let changed = sample(&down, "primwatch_target_last_change_timestamp_seconds{target=\"web2\"}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(now - changed < 5.0, "changed {changed}, now {now}");
    assert!(sample(&down, "primwatch_check_results_total{target=\"web2\",check=\"http\",result=\"fail\"}") >= 1.0);
    assert!(sample(&down, "primwatch_map_entry_updates_total{op=\"write\"}") > writes);
    assert_eq!(sample(&down, "primwatch_group_up{group=\"web\"}"), 1.0);

    // Reloads are counted by result.
    w.controller.ctl(&["reload"]).unwrap();
    let applied = "primwatch_reloads_total{result=\"applied\"}";
    let reloaded = scrape_until(&w, |t| t.contains(applied) && sample(t, applied) >= 1.0);
    assert_eq!(sample(&reloaded, applied), 1.0);
    assert_eq!(get(&w, "/other").0, "HTTP/1.1 404 Not Found");

    // ctl stats: the same numbers, as JSON and as tables.
    let stats = w.controller.ctl(&["stats"]).unwrap();
    let www = stats["stats"]["names"].as_array().unwrap().iter().find(|n| n["name"] == "www.example.test").unwrap();
    assert_eq!(www["a_answers"].as_f64().unwrap(), sample(&reloaded, www_a));
    let out = std::process::Command::new(primwatch_tests::controller::binary())
        .args(["ctl", "--socket"])
        .arg(&w.controller.control_socket)
        .arg("stats")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ANSWERS")
            && text.contains("www.example.test")
            && text.contains("CHECKS")
            && text.contains("RELOADS  1 applied"),
        "{text}"
    );
}

/// Every `expr` in a Grafana dashboard (panels and nested rows).
fn dashboard_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            map.values().for_each(|v| dashboard_queries(v, out));
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_queries_only_series_a_live_scrape_has() {
    let w = world(CONFIG);
    w.expect("www.example.test", &[WEB1, WEB2, WEB3], Duration::from_secs(3));
    assert_eq!(w.controller.ctl(&["reload"]).unwrap()["ok"], true);
    let scrape = scrape_until(&w, |t| t.contains("primwatch_reloads_total{result=\"applied\"} 1"));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/grafana/primwatch.json");
    let dashboard: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    let metric = regex::Regex::new(r"primwatch_[a-z0-9_]+").unwrap();
    let by = regex::Regex::new(r"by \(([^)]*)\)").unwrap();
    let selector = regex::Regex::new(r#"([a-z_]+)="#).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for query in &queries {
        let names: Vec<&str> = metric.find_iter(query).map(|m| m.as_str()).collect();
        assert!(!names.is_empty(), "a query over no primwatch metric: {query}");
        // Labels the query groups or filters by must be on the series it reads.
        let mut labels: Vec<String> = by
            .captures_iter(query)
            .flat_map(|c| c[1].split(',').map(|l| l.trim().to_string()).collect::<Vec<_>>())
            .collect();
        labels.extend(selector.captures_iter(query).map(|c| c[1].to_string()));
        for name in names {
            let samples: Vec<&str> = scrape
                .lines()
                .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
                .collect();
            assert!(!samples.is_empty(), "the dashboard queries {name} ({query}); the scrape has no such series");
            for label in &labels {
                assert!(
                    samples.iter().any(|s| s.contains(&format!("{label}=\""))),
                    "{query}: no {name} series has the label {label}"
                );
            }
            seen.insert(name.to_string());
        }
    }
    // What the dashboard promises to show.
    for wanted in [
        "primwatch_xdp_answers_total",
        "primwatch_xdp_packets_total",
        "primwatch_target_up",
        "primwatch_group_up",
        "primwatch_check_latency_seconds_bucket",
        "primwatch_map_syncs_total",
    ] {
        assert!(seen.contains(wanted), "the dashboard shows {wanted}");
    }
}

/// A local user who binds the metrics address while primwatch restarts cannot keep it
/// from starting: it serves and fails over without /metrics, says why, and takes the
/// address once it is free. Connections beyond the cap are closed, never queued as
/// tasks, and the scrape after them works.
#[test]
fn a_taken_metrics_address_does_not_keep_the_controller_from_starting() {
    let mut w = world(CONFIG);
    w.expect("www.example.test", &[WEB1, WEB2, WEB3], Duration::from_secs(3));
    w.controller.kill().unwrap();
    let squatter = netns::run_in(&w.lab.server_ns, || std::net::TcpListener::bind("127.0.0.1:9153")).unwrap().unwrap();
    w.controller.start_again().unwrap();
    w.backends[2].stop();
    w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(5));
    let log = w.controller.log();
    assert!(log.contains("metrics listener cannot be bound"), "{log}");
    drop(squatter);
    let scrape = scrape_until(&w, |t| t.contains("primwatch_target_up{target=\"web3\"} 0"));
    assert!(scrape.contains("primwatch_target_up{target=\"web3\"} 0"), "{scrape}");

    // Idle connections, far more than the cap: each beyond it is closed at once.
    let idle: Vec<TcpStream> = (0..200)
        .filter_map(|_| {
            netns::run_in(&w.lab.server_ns, || {
                TcpStream::connect_timeout(&"127.0.0.1:9153".parse().unwrap(), Duration::from_secs(2))
            })
            .ok()?
            .ok()
        })
        .collect();
    let closed = idle
        .iter()
        .filter(|s| {
            let mut s: &TcpStream = s;
            s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            matches!(s.read(&mut [0u8; 1]), Ok(0))
        })
        .count();
    assert!(closed >= 200 - 32 - 1, "{closed} of {} idle connections closed at once", idle.len());
    w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(1));
    drop(idle);
    let scrape = scrape_until(&w, |t| t.contains("primwatch_target_up"));
    assert!(scrape.contains("primwatch_target_up{target=\"web1\"} 1"), "{scrape}");
}
