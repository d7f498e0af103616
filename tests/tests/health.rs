//! Health-checked answers end to end: real HTTP backends in their own namespace that
//! stop (connections refused), come back, lose their address (SYNs time out), return
//! wrong status codes or bodies; primwatch checking them and XDP answering a real
//! client in another namespace.

use std::time::Duration;

use primwatch_tests::world::{set, world, World, SITE_GROUPS, WEB1, WEB2, WEB3};

const GROUP_ALL: &str = r#"
[groups.web]
members = ["web1", "web2", "web3"]
policy = "all"

[names."www.example.test"]
groups = ["web"]
"#;

#[test]
fn a_dead_backend_leaves_the_answers_and_comes_back() {
    let mut w = world(GROUP_ALL);
    let all = [WEB1, WEB2, WEB3];
    w.expect("www.example.test", &all, Duration::from_secs(3));

    // Connection refused.
    w.backends[1].stop();
    let dropped = w.expect("www.example.test", &[WEB1, WEB3], Duration::from_secs(3));
    w.backends[1].resume().unwrap();
    let restored = w.expect("www.example.test", &all, Duration::from_secs(3));
    // fall × interval + timeout + slack, rise × interval + slack.
    assert!(dropped < Duration::from_millis(1200), "dropped after {dropped:?}");
    assert!(restored < Duration::from_millis(1200), "restored after {restored:?}");

    // Address gone: SYNs time out.
    w.net.remove_address(WEB3.parse().unwrap()).unwrap();
    w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(3));
    w.net.add_address(WEB3.parse().unwrap()).unwrap();
    w.expect("www.example.test", &all, Duration::from_secs(3));

    // Wrong status code.
    w.backends[0].set_status(503);
    w.expect("www.example.test", &[WEB2, WEB3], Duration::from_secs(3));
    w.backends[0].set_status(200);
    w.expect("www.example.test", &all, Duration::from_secs(3));
    let log = w.controller.log();
    assert!(log.contains("target down") && log.contains("status 503 is not in [200]"), "{log}");
}

#[test]
fn priority_failover_from_tokyo_to_osaka_and_back() {
    // Listed Osaka first: priority, not the order, decides.
    let mut w = world(&format!("{SITE_GROUPS}\n[names.\"www.example.test\"]\ngroups = [\"osaka\", \"tokyo\"]\n"));
    w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(3));
    w.backends[0].stop();
    w.expect("www.example.test", &[WEB2], Duration::from_secs(3));
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB3], Duration::from_secs(3));
    w.backends[1].resume().unwrap();
    w.expect("www.example.test", &[WEB2], Duration::from_secs(3));
}

#[test]
fn all_down_policies_in_the_lab() {
    let mut w = world(
        r#"
[groups.one]
members = ["web1"]

[names."www.example.test"]
groups = ["one"]

[names."backup.example.test"]
groups = ["one"]
all_down = "backup:sorry"

[names."pass.example.test"]
groups = ["one"]
all_down = "pass"

[groups.sorry]
members = ["web3"]
"#,
    );
    w.expect("pass.example.test", &[WEB1], Duration::from_secs(3));
    w.backends[0].stop();
    // Fail open: the dead member is still served.
    w.expect("backup.example.test", &[WEB3], Duration::from_secs(3));
    w.expect("www.example.test", &[WEB1], Duration::from_secs(1));
    // Passed to PowerDNS, which answers from its zone.
    w.expect("pass.example.test", &["192.0.2.250"], Duration::from_secs(1));
}

#[test]
fn body_regex_and_check_types_against_real_servers() {
    let w = world(
        r#"
[checks.body]
type = "http"
body = "^healthy$"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
[checks.tcp]
type = "tcp"
port = 80
send = "GET / HTTP/1.0\r\n\r\n"
expect = "^HTTP/1\\.1 200"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
[checks.ping]
type = "icmp"
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1
[checks.script]
type = "exec"
command = ["sh", "-c", "test -e /tmp/primwatch-test-$2-down && exit 1; exit 0", "check"]
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1

[targets.b1]
address = "10.99.1.11"
checks = ["body"]
[targets.t2]
address = "10.99.1.12"
checks = ["tcp", "ping"]
[targets.x3]
address = "10.99.1.13"
checks = ["script"]

[groups.mixed]
members = ["b1", "t2", "x3"]
policy = "all"
[names."mixed.example.test"]
groups = ["mixed"]
"#,
    );
    let flag = "/tmp/primwatch-test-x3-down";
    let _ = std::fs::remove_file(flag);
    w.backends[0].set_body("healthy");
    w.expect("mixed.example.test", &[WEB1, WEB2, WEB3], Duration::from_secs(3));
    // Body regex mismatch.
    w.backends[0].set_body("degraded");
    w.expect("mixed.example.test", &[WEB2, WEB3], Duration::from_secs(3));
    // TCP expect mismatch (the server now answers 500).
    w.backends[1].set_status(500);
    w.expect("mixed.example.test", &[WEB3], Duration::from_secs(3));
    w.backends[1].set_status(200);
    w.expect("mixed.example.test", &[WEB2, WEB3], Duration::from_secs(3));
    // ICMP: remove the address, echo requests go unanswered (TCP fails too).
    w.net.remove_address(WEB2.parse().unwrap()).unwrap();
    w.expect("mixed.example.test", &[WEB3], Duration::from_secs(3));
    w.net.add_address(WEB2.parse().unwrap()).unwrap();
    w.expect("mixed.example.test", &[WEB2, WEB3], Duration::from_secs(3));
    // The script says down.
    std::fs::write(flag, "").unwrap();
    let all_down_fail_open = [WEB1, WEB2, WEB3];
    w.expect("mixed.example.test", &[WEB2], Duration::from_secs(3));
    std::fs::remove_file(flag).unwrap();
    w.backends[0].set_body("healthy");
    w.expect("mixed.example.test", &all_down_fail_open, Duration::from_secs(3));
    let log = w.controller.log();
    assert!(log.contains("does not match"), "{log}");
}

#[test]
fn views_by_source_address_over_ipv4_and_ipv6() {
    let mut w = world(
        r#"
[groups.tokyo]
members = ["web1"]
priority = 100
[groups.osaka]
members = ["web3"]
priority = 50
[groups.osaka-first]
members = ["web3"]
priority = 100
[groups.tokyo-backup]
members = ["web1"]
priority = 50

[names."www.example.test"]
groups = ["tokyo", "osaka"]

[views.west]
sources = ["10.77.0.3/32", "fd77::3/128"]
[views.west.names."www.example.test"]
groups = ["osaka-first", "tokyo-backup"]
"#,
    );
    let ns = w.lab.client_ns.clone();
    primwatch_tests::netns::ip(&["-n", &ns, "addr", "add", "10.77.0.3/24", "dev", "pwc0"]).unwrap();
    primwatch_tests::netns::ip(&["-n", &ns, "addr", "add", "fd77::3/64", "dev", "pwc0", "nodad"]).unwrap();
    let set = |a: &str| [a.to_string()].into_iter().collect::<std::collections::BTreeSet<_>>();
    let east_v4: std::net::IpAddr = "10.77.0.2".parse().unwrap();
    let west_v4: std::net::IpAddr = "10.77.0.3".parse().unwrap();
    let east_v6: std::net::IpAddr = "fd77::2".parse().unwrap();
    let west_v6: std::net::IpAddr = "fd77::3".parse().unwrap();
    w.expect("www.example.test", &[WEB1], Duration::from_secs(3));
    assert_eq!(w.answers_from("www.example.test", east_v4), set(WEB1));
    assert_eq!(w.answers_from("www.example.test", east_v6), set(WEB1));
    assert_eq!(w.answers_from("www.example.test", west_v4), set(WEB3));
    assert_eq!(w.answers_from("www.example.test", west_v6), set(WEB3));
    let status = w.controller.ctl(&["status"]).unwrap();
    let view = &status["status"]["views"][0];
    assert_eq!((view["name"].as_str(), view["prefixes"].as_u64()), (Some("west"), Some(2)), "{view}");
    assert_eq!(view["names"][0]["a"], serde_json::json!([WEB3]));
    // EDNS Client Subnet from a resolver in the east speaking for a west client.
    let sock = primwatch_tests::dns::udp_socket_from(&ns, east_v4).unwrap();
    let edns =
        primwatch_tests::dns::EdnsQuery { options: vec![(8, vec![0, 1, 32, 0, 10, 77, 0, 3])], ..Default::default() };
    let query =
        primwatch_tests::dns::query(9, "www.example.test", hickory_proto::rr::RecordType::A, Some(edns)).unwrap();
    let reply =
        primwatch_tests::dns::exchange_udp(&sock, std::net::SocketAddr::new(w.lab.server_addr(false), 53), &query)
            .unwrap();
    let got: Vec<String> = primwatch_tests::dns::addresses(&primwatch_tests::dns::parse(&reply).unwrap())
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(got, vec![WEB3.to_string()]);
    assert_eq!(&reply[reply.len() - 4..], &[10, 77, 0, 3], "subnet echoed");
    // explain: the view, the groups in order, the answer.
    let e = w.controller.ctl(&["explain", "WWW.example.test", "--from", "10.77.0.3"]).unwrap();
    let e = &e["explain"];
    assert!(e["view"].as_str().unwrap().starts_with("west (source address 10.77.0.3 in 10.77.0.3/32)"), "{e}");
    assert_eq!(e["groups"][0]["name"], "osaka-first");
    assert_eq!(e["answer"], serde_json::json!([WEB3]));
    let e = w
        .controller
        .ctl(&["explain", "www.example.test", "--from", "10.77.0.2", "--ecs", "fd77::3/128", "--type", "AAAA"])
        .unwrap();
    assert!(e["explain"]["view"].as_str().unwrap().contains("client subnet fd77::3/128"), "{e}");
    let e = w.controller.ctl(&["explain", "nope.example.test", "--from", "10.77.0.2"]).unwrap();
    assert_eq!(e["ok"], false);
    // Failover inside the view: Osaka down, the west gets its backup.
    w.backends[2].stop();
    let ok = primwatch_tests::wait_for(Duration::from_secs(3), || {
        (w.answers_from("www.example.test", west_v4) == set(WEB1)).then_some(())
    });
    assert!(ok.is_some(), "west fails over to Tokyo");
    assert_eq!(w.answers_from("www.example.test", west_v6), set(WEB1));
    assert_eq!(w.answers_from("www.example.test", east_v4), set(WEB1));
    let e = w.controller.ctl(&["explain", "www.example.test", "--from", "10.77.0.3"]).unwrap();
    let osaka = &e["explain"]["groups"][0]["members"][0];
    assert_eq!((osaka[0].as_str(), osaka[2].as_bool()), (Some("web3"), Some(false)), "{e}");
    assert!(osaka[3].as_str().unwrap().contains("refused"), "{e}");
    assert!(e["explain"]["why"].as_str().unwrap().contains("group tokyo-backup"), "{e}");
}

/// A real TLS server (openssl s_server -www, self-signed for www.example.test):
/// an HTTPS check without verification passes, one with verification fails on the
/// certificate (and says so), and stopping the server takes the target out.
#[test]
fn https_check_against_a_real_tls_server() {
    let w = world(
        r#"
[checks.tls]
type = "https"
host = "www.example.test"
tls_verify = false
interval = "500ms"
timeout = "400ms"
rise = 1
fall = 1
[checks.tls-verified]
type = "https"
host = "www.example.test"
interval = "500ms"
timeout = "400ms"
rise = 1
fall = 1
[targets.tls1]
address = "10.99.1.14"
checks = ["tls"]
[targets.tls2]
address = "10.99.1.14"
checks = ["tls-verified"]
[groups.tls]
members = ["tls1"]
[names."tls.example.test"]
groups = ["tls"]
all_down = "nodata"
"#,
    );
    let dir = primwatch_tests::TempDir::new("tls").unwrap();
    let (cert, key) = primwatch_tests::backend::self_signed(&dir.0, "www.example.test").unwrap();
    w.net.add_address("10.99.1.14".parse().unwrap()).unwrap();
    let mut server = primwatch_tests::backend::tls_server(&w.net.ns, "10.99.1.14:443", &cert, &key).unwrap();
    w.expect("tls.example.test", &["10.99.1.14"], Duration::from_secs(5));
    // The verified check fails on the self-signed certificate, and the reason says so
    // (not an earlier failure from before the server was up).
    let reason = primwatch_tests::wait_for(Duration::from_secs(3), || {
        let status = w.controller.ctl(&["status"]).ok()?;
        let tls2 = status["status"]["targets"].as_array()?.iter().find(|t| t["name"] == "tls2")?.clone();
        let reason = tls2["reason"].as_str()?.to_string();
        (tls2["state"] == "down" && reason.contains("certificate")).then_some(reason)
    });
    assert!(reason.is_some(), "tls2 down for its certificate:\n{}", w.controller.log());
    let _ = server.kill();
    let _ = server.wait();
    w.expect("tls.example.test", &[], Duration::from_secs(3));
}

#[test]
fn state_changes_run_the_hook_without_waiting_for_it() {
    let dir = primwatch_tests::TempDir::new("hook").unwrap();
    let file = dir.0.join("changes");
    // The hook runs as the unprivileged exec user: give it a file it may append to.
    std::fs::write(&file, "").unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let mut w = world(&format!(
        r#"
[hooks]
# Records the change, then hangs: it is killed at its timeout and blocks nothing.
on_change = ["sh", "-c", "echo \"$PRIMWATCH_KIND $PRIMWATCH_NAME $PRIMWATCH_OLD_STATE $PRIMWATCH_NEW_STATE $PRIMWATCH_REASON\" >> {}; sleep 5"]
timeout = "300ms"

[groups.one]
members = ["web1"]
[groups.all]
members = ["web1", "web2", "web3"]
policy = "all"
[names."www.example.test"]
groups = ["one", "all"]
"#,
        file.display()
    ));
    w.expect("www.example.test", &[WEB1], Duration::from_secs(3));
    w.backends[0].stop();
    w.expect("www.example.test", &[WEB2, WEB3], Duration::from_secs(3));
    w.backends[0].resume().unwrap();
    w.expect("www.example.test", &[WEB1], Duration::from_secs(3));
    let lines = primwatch_tests::wait_for(Duration::from_secs(3), || {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        (text.lines().count() >= 4).then_some(text)
    })
    .expect("four hook runs");
    assert!(lines.contains("target web1 up down check http: "), "{lines}");
    assert!(lines.contains("group one up down 0 of 1 members eligible, minimum 1"), "{lines}");
    assert!(lines.contains("target web1 down up all checks pass"), "{lines}");
    assert!(lines.contains("group one down up"), "{lines}");
    let killed = primwatch_tests::wait_for(Duration::from_secs(3), || {
        w.controller.log().contains("on_change hook timed out and was killed").then_some(())
    });
    assert!(killed.is_some(), "{}", w.controller.log());
}

/// A zone on a PowerDNS in the backend namespace (10.99.1.53) that the controller uses
/// as its resolver (`[resolver] nameservers`), with the records of app.example.net.
fn resolver_zone(records: &[&str]) -> String {
    primwatch_tests::pdns::zone("example.net", "10.99.1.53".parse().unwrap(), records)
}

/// A world whose target `app` is given by host (app.example.net, resolved through the
/// PowerDNS of `resolver_zone` with `records`, caches off) and answered for
/// app.example.test; `resolver_keys` are more `[resolver]` lines.
fn resolver_world(resolver_keys: &str, records: &[&str]) -> (World, primwatch_tests::pdns::PowerDns) {
    let body = format!(
        "[resolver]\nnameservers = [\"10.99.1.53\"]\nmin_ttl = \"1s\"\nmax_ttl = \"2s\"\n{resolver_keys}{}",
        r#"[targets.app]
host = "app.example.net"
checks = ["http"]
[groups.app]
members = ["app"]
policy = "all"
[names."app.example.test"]
groups = ["app"]
all_down = "nodata"
"#
    );
    let w = world(&body);
    w.net.add_address("10.99.1.53".parse().unwrap()).unwrap();
    let resolver = primwatch_tests::pdns::PowerDns::start_with(
        &w.net.ns,
        &["10.99.1.53".parse().unwrap()],
        "example.net",
        &resolver_zone(records),
        "cache-ttl=0\nquery-cache-ttl=0\nnegquery-cache-ttl=0",
    )
    .unwrap();
    (w, resolver)
}

#[test]
fn a_target_given_by_host_follows_its_dns_records() {
    let (mut w, resolver) =
        resolver_world("grace = \"2s\"\n", &[&format!("app 1 IN A {WEB1}"), &format!("app 1 IN A {WEB2}")]);
    // Each address is a member of its own, checked and answered.
    w.expect("app.example.test", &[WEB1, WEB2], Duration::from_secs(5));
    let status = w.controller.ctl(&["status"]).unwrap();
    let resolved = &status["status"]["resolved"][0];
    assert_eq!(resolved["host"], "app.example.net");
    assert_eq!(resolved["addresses"], serde_json::json!([WEB1, WEB2]), "{resolved}");
    let targets = status["status"]["targets"].as_array().unwrap();
    assert!(targets.iter().any(|t| t["name"] == format!("app@{WEB1}") && t["state"] == "up"), "{targets:?}");

    // The records change: the members follow within the TTL (1 s) and a check.
    resolver
        .replace_zone("example.net", &resolver_zone(&[&format!("app 1 IN A {WEB2}"), &format!("app 1 IN A {WEB3}")]))
        .unwrap();
    w.expect("app.example.test", &[WEB2, WEB3], Duration::from_secs(5));
    // Health still decides among them.
    w.backends[2].stop();
    w.expect("app.example.test", &[WEB2], Duration::from_secs(3));
    w.backends[2].resume().unwrap();
    w.expect("app.example.test", &[WEB2, WEB3], Duration::from_secs(3));

    // The name stops resolving (NXDOMAIN): the last addresses stay for the grace (2 s),
    // then are gone, with the reason in `ctl status`.
    resolver.replace_zone("example.net", &resolver_zone(&[])).unwrap();
    let failing = primwatch_tests::wait_for(Duration::from_secs(5), || {
        let status = w.controller.ctl(&["status"]).ok()?;
        let r = status["status"]["resolved"][0].clone();
        (r["error"] != "").then_some(r)
    })
    .expect("the failure shows in ctl status");
    assert_eq!(failing["addresses"], serde_json::json!([WEB2, WEB3]), "kept during the grace: {failing}");
    assert_eq!(w.answers("app.example.test"), set(&[WEB2, WEB3]));
    w.expect("app.example.test", &[], Duration::from_secs(5));
    let status = w.controller.ctl(&["status"]).unwrap();
    let gone = &status["status"]["resolved"][0];
    assert_eq!(gone["addresses"], serde_json::json!([]), "{gone}");
    assert!(gone["error"].as_str().unwrap().contains("app.example.net"), "{gone}");
    let log = w.controller.log();
    assert!(log.contains("target resolves to new addresses") && log.contains("its addresses are gone"), "{log}");

    // And it comes back when the record does.
    resolver.replace_zone("example.net", &resolver_zone(&[&format!("app 1 IN A {WEB1}")])).unwrap();
    w.expect("app.example.test", &[WEB1], Duration::from_secs(5));
}

/// A resolver's answer is input: special-purpose addresses (loopback, the metadata
/// address, unspecified, multicast) never become targets, nor more than
/// `max_addresses` of the rest; what is left out is logged and shown in `ctl status`,
/// and the targets follow a changing answer.
#[test]
fn a_resolvers_answer_cannot_aim_the_checks_anywhere() {
    let mut records: Vec<String> = ["127.0.0.1", "169.254.169.254", "0.0.0.0", "224.0.0.1", WEB1, WEB2, WEB3]
        .iter()
        .map(|a| format!("app 1 IN A {a}"))
        .collect();
    records.extend((20..60).map(|i| format!("app 1 IN A 10.99.1.{i}")));
    records.extend(["::1", "fe80::1"].iter().map(|a| format!("app 1 IN AAAA {a}")));
    let records: Vec<&str> = records.iter().map(String::as_str).collect();
    let (w, resolver) = resolver_world("max_addresses = 3\n", &records);
    w.expect("app.example.test", &[WEB1, WEB2, WEB3], Duration::from_secs(5));
    let status = w.controller.ctl(&["status"]).unwrap();
    let resolved = &status["status"]["resolved"][0];
    assert_eq!(resolved["addresses"], serde_json::json!([WEB1, WEB2, WEB3]), "{resolved}");
    let left_out = resolved["left_out"].as_str().unwrap();
    assert!(left_out.contains("0.0.0.0") && left_out.contains("more"), "{left_out}");
    let targets = status["status"]["targets"].to_string();
    for special in ["127.0.0.1", "169.254.169.254", "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "10.99.1.20"] {
        assert!(!targets.contains(&format!("@{special}\"")), "{special} is a target: {targets}");
    }
    let log = w.controller.log();
    assert!(log.contains("resolved addresses left out of the targets"), "{log}");

    // The answer changes: the targets follow, the special ones still out.
    resolver
        .replace_zone("example.net", &resolver_zone(&["app 1 IN A 169.254.169.254", &format!("app 1 IN A {WEB2}")]))
        .unwrap();
    w.expect("app.example.test", &[WEB2], Duration::from_secs(5));
    let status = w.controller.ctl(&["status"]).unwrap();
    let targets = status["status"]["targets"].as_array().unwrap();
    let app: Vec<&str> = targets.iter().filter_map(|t| t["name"].as_str()).filter(|n| n.starts_with("app@")).collect();
    assert_eq!(app, [format!("app@{WEB2}")], "{targets:?}");
}

/// 500 names on one group share its record sets: a backend going down rewrites the
/// group's A set (the AAAA set, empty, is unchanged) — one or two map writes, not one
/// per name — and every name answers without it at once.
#[test]
fn a_health_change_rewrites_the_shared_record_set_not_every_name() {
    let names: String = (0..500).map(|i| format!("[names.\"t{i}.example.test\"]\ngroups = [\"tokyo\"]\n")).collect();
    let mut w = world(&format!("{SITE_GROUPS}{names}"));
    let written =
        |w: &World| w.controller.ctl(&["stats"]).unwrap()["stats"]["map"]["entries_written"].as_u64().unwrap();
    w.expect("t0.example.test", &[WEB1, WEB2], Duration::from_secs(5));
    let before = written(&w);
    w.backends[1].stop();
    w.expect("t499.example.test", &[WEB1], Duration::from_secs(3));
    for name in ["t0.example.test", "t250.example.test"] {
        w.expect(name, &[WEB1], Duration::from_millis(200));
    }
    let writes = written(&w) - before;
    assert!((1..=2).contains(&writes), "{writes} map writes for a health change shared by 500 names");
}

/// 12,000 names: `ctl status` summarises them by answer set instead of listing them
/// (`--names` lists all, `--name PATTERN` some), and `ctl stats` lists the busiest 100
/// with their XDP answer counts; both follow a backend going down.
#[test]
fn many_names_are_summarised_by_status_and_stats() {
    const N: usize = 12_000;
    let names: String = (0..N).map(|i| format!("[names.\"t{i}.example.test\"]\ngroups = [\"tokyo\"]\n")).collect();
    let mut w = world(&format!("{SITE_GROUPS}{names}"));
    w.expect("t0.example.test", &[WEB1, WEB2], Duration::from_secs(5));

    let status = w.controller.ctl(&["status"]).unwrap();
    let status = &status["status"];
    assert_eq!(status["names"].as_array().unwrap().len(), 0, "not listed above 1,000 entries");
    assert_eq!(status["name_entries"], N);
    let sets = status["answer_sets"].as_array().unwrap();
    let tokyo = sets.iter().find(|s| s["source"] == "groups tokyo").unwrap();
    assert_eq!(tokyo["names"], N);
    assert_eq!(tokyo["a"], serde_json::json!([WEB1, WEB2]));

    let some = w.controller.ctl(&["status", "--name", "t1199*"]).unwrap();
    let listed: Vec<&str> =
        some["status"]["names"].as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 11, "t1199 and t11990..t11999: {listed:?}");
    assert!(listed.contains(&"t11995.example.test."), "{listed:?}");
    let all = w.controller.ctl(&["status", "--names"]).unwrap();
    assert_eq!(all["status"]["names"].as_array().unwrap().len(), N);

    // Answers through XDP, counted per name: t7 is the busiest.
    for _ in 0..20 {
        assert_eq!(w.answers("t7.example.test"), set(&[WEB1, WEB2]));
    }
    w.answers("t8.example.test");
    let stats = w.controller.ctl(&["stats"]).unwrap();
    let listed = stats["stats"]["names"].as_array().unwrap();
    assert_eq!(listed.len(), 100, "the busiest 100 of {N}");
    assert_eq!(stats["stats"]["name_entries"], N);
    assert_eq!(listed[0]["name"], "t7.example.test");
    assert_eq!(listed[0]["a_answers"], 20);
    assert_eq!(listed[1]["name"], "t8.example.test");
    assert_eq!(listed[1]["a_answers"], 1);
    let text = String::from_utf8(
        std::process::Command::new(primwatch_tests::controller::binary())
            .args(["ctl", "--socket"])
            .arg(&w.controller.control_socket)
            .arg("stats")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(text.contains(&format!("the 100 busiest of {N} name entries")), "{text}");

    w.backends[1].stop();
    w.expect("t11999.example.test", &[WEB1], Duration::from_secs(3));
    let status = w.controller.ctl(&["status"]).unwrap();
    let sets = status["status"]["answer_sets"].as_array().unwrap();
    let tokyo = sets.iter().find(|s| s["source"] == "groups tokyo").unwrap();
    assert_eq!(tokyo["a"], serde_json::json!([WEB1]));
}
