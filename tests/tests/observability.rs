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

fn get(w: &World, path: &str) -> (String, String) {
    let path = path.to_string();
    let mut stream = netns::run_in(&w.lab.server_ns, || {
        TcpStream::connect_timeout(&"127.0.0.1:9153".parse().unwrap(), Duration::from_secs(2))
    })
    .unwrap()
    .unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
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
    let (_, after) = get(&w, "/metrics");
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
    let (_, down) = get(&w, "/metrics");
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
    let (_, reloaded) = get(&w, "/metrics");
    assert_eq!(sample(&reloaded, "primwatch_reloads_total{result=\"applied\"}"), 1.0);
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
