//! A fleet on etcd: three primwatch nodes, each with its own XDP interface, PowerDNS
//! and backends, sharing operator overrides through a real three-member etcd cluster
//! (one member per node, on a bridge between the nodes' namespaces).

use std::time::{Duration, Instant};

use primwatch_tests::{
    controller::binary,
    fleet::{connected, fleet_table, three_nodes, wait_all_disconnected, FleetCertificates, TlsEtcd},
    netns, unique,
    world::{shared_tables, world_with, World, SITE_GROUPS, WEB1, WEB2, WEB3},
    TempDir,
};

/// Propagation must be within a second (the bound); the check is a little
/// looser than that only by the time `expect` itself takes to ask.
const PROPAGATION: Duration = Duration::from_secs(1);

fn fleet_body(prefix: &str, node: &str) -> String {
    format!(
        "{SITE_GROUPS}\n[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n\n{}",
        fleet_table(prefix, node)
    )
}

#[test]
fn an_override_on_one_node_answers_on_every_node_within_a_second() {
    let prefix = format!("/pw/{}", unique("fleet"));
    let (worlds, _net, mut etcd) = three_nodes(|node| fleet_body(&prefix, node)).unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(5));
    }

    // Forced down on A: B and C drop it too, within a second.
    let reply = worlds[0].controller.ctl(&["target", "web1", "down"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    for w in &worlds {
        let took = w.expect("www.example.test", &[WEB2], PROPAGATION);
        eprintln!("web1 down on A seen after {took:?}");
    }
    // Who set it, from which node, when: in every node's status and in etcd.
    let status = worlds[2].controller.ctl(&["status"]).unwrap();
    let overrides = &status["status"]["fleet"]["overrides"];
    let web1 = overrides.as_array().unwrap().iter().find(|o| o["name"] == "web1").expect("web1's override listed");
    assert_eq!((web1["node"].as_str(), web1["kind"].as_str()), (Some("a"), Some("target")), "{web1}");
    assert_eq!(web1["action"]["action"], "force", "{web1}");
    let stored = etcd.get_prefix(&format!("{prefix}/overrides/target/web1/")).unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].1.contains("\"node\":\"a\""), "{stored:?}");

    // Data in etcd that does not parse is ignored, listed, never applied.
    etcd.put(&format!("{prefix}/overrides/target/web2/force"), "{not json").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for w in &worlds {
        w.expect("www.example.test", &[WEB2], Duration::from_millis(100));
        let status = w.controller.ctl(&["status"]).unwrap();
        let invalid = status["status"]["fleet"]["invalid"].to_string();
        assert!(invalid.contains("web2/force"), "{invalid}");
    }

    // One etcd member killed: nothing changes, and overrides still travel (2 of 3).
    // Every node starts on the first member, so every node must move to another one:
    // within a few seconds (its stream breaks, or a request times out after 2 s).
    etcd.kill(0);
    let reply = worlds[2].controller.ctl(&["group", "tokyo", "down"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    for w in &worlds {
        w.expect("www.example.test", &[WEB3], Duration::from_secs(6));
    }
    let reply = worlds[1].controller.ctl(&["group", "tokyo", "auto"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    let reply = worlds[1].controller.ctl(&["target", "web1", "auto"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    for w in &worlds {
        w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(6));
    }

    // A second member killed: the one left has no quorum (no lease renews, no read
    // completes). Every node notices, says so, and keeps answering.
    etcd.kill(1);
    wait_all_disconnected(&worlds, "to an etcd without quorum");
    for w in &worlds {
        w.expect("www.example.test", &[WEB1, WEB2], Duration::from_millis(100));
    }
    // Quorum back: every node reconnects.
    etcd.restart(0).unwrap();
    etcd.restart(1).unwrap();
    assert!(primwatch_tests::wait_for(Duration::from_secs(20), || worlds.iter().all(connected).then_some(())).is_some());
}

#[test]
fn with_etcd_gone_nodes_keep_serving_and_a_local_override_wins_when_it_returns() {
    let prefix = format!("/pw/{}", unique("fleet"));
    let (worlds, _net, mut etcd) = three_nodes(|node| fleet_body(&prefix, node)).unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(5));
    }
    for i in 0..3 {
        etcd.kill(i);
    }
    // Every node keeps answering, and says it is cut off.
    wait_all_disconnected(&worlds, "with etcd gone");
    for w in &worlds {
        w.expect("www.example.test", &[WEB1, WEB2], Duration::from_millis(100));
        let stats = w.controller.ctl(&["stats"]).unwrap();
        assert_eq!(stats["stats"]["fleet"]["connected"], false, "{stats}");
    }
    // An override made on B meanwhile applies on B at once, and waits to be written.
    let reply = worlds[1].controller.ctl(&["target", "web2", "down"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    worlds[1].expect("www.example.test", &[WEB1], Duration::from_secs(1));
    worlds[0].expect("www.example.test", &[WEB1, WEB2], Duration::from_millis(100));
    let status = worlds[1].controller.ctl(&["status"]).unwrap();
    assert_eq!(status["status"]["fleet"]["pending"], 1, "{status}");
    let stats = worlds[1].controller.ctl(&["stats"]).unwrap();
    assert_eq!(stats["stats"]["fleet"]["pending_writes"], 1, "{stats}");

    // etcd returns: B writes it (the later write wins), and A and C apply it.
    for i in 0..3 {
        etcd.restart(i).unwrap();
    }
    etcd.wait_healthy(Duration::from_secs(20)).unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB1], Duration::from_secs(15));
    }
    let stored = etcd.get_prefix(&format!("{prefix}/overrides/target/web2/")).unwrap();
    assert!(stored.len() == 1 && stored[0].1.contains("\"node\":\"b\""), "{stored:?}");
}

#[test]
fn a_hold_failed_back_on_one_node_is_released_on_every_node() {
    let prefix = format!("/pw/{}", unique("fleet"));
    let body = |node: &str| {
        format!(
            "[groups.tokyo]\nmembers = [\"web1\", \"web2\"]\npriority = 100\npolicy = \"all\"\npreempt = false\n\
             [groups.osaka]\nmembers = [\"web3\"]\npriority = 50\npolicy = \"all\"\n\
             [names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n\n{}",
            fleet_table(&prefix, node)
        )
    };
    let (mut worlds, _net, _etcd) = three_nodes(body).unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(5));
    }
    // Tokyo's backends fail on every node's checks, then recover: with preempt off,
    // each node holds Tokyo out and keeps answering Osaka.
    for w in worlds.iter_mut() {
        w.backends[0].stop();
        w.backends[1].stop();
    }
    for w in &worlds {
        w.expect("www.example.test", &[WEB3], Duration::from_secs(5));
    }
    for w in worlds.iter_mut() {
        w.backends[0].resume().unwrap();
        w.backends[1].resume().unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    for w in &worlds {
        w.expect("www.example.test", &[WEB3], Duration::from_millis(100));
    }
    // Failed back on C: released on A and B too, within a second.
    let reply = worlds[2].controller.ctl(&["group", "tokyo", "failback"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    for w in &worlds {
        w.expect("www.example.test", &[WEB1, WEB2], PROPAGATION);
    }
}

#[test]
fn under_a_quorum_a_target_only_one_node_sees_up_is_down_everywhere() {
    let prefix = format!("/pw/{}", unique("fleet"));
    // q1 is web1's address under `quorum = 2`; Osaka (web3) backs it up.
    let body = |node: &str| {
        format!(
            "[targets.q1]\naddress = \"{WEB1}\"\nchecks = [\"http\"]\nquorum = 2\n\
             [targets.h]\naddress = \"{WEB2}\"\nchecks = [\"http\"]\nquorum = \"1/2\"\n\
             [groups.main]\nmembers = [\"q1\"]\npriority = 100\n\
             [groups.half]\nmembers = [\"h\"]\npriority = 100\n\
             [groups.backup]\nmembers = [\"web3\"]\npriority = 50\n\
             [names.\"www.example.test\"]\ngroups = [\"main\", \"backup\"]\n\
             [names.\"half.example.test\"]\ngroups = [\"half\", \"backup\"]\n\n{}",
            fleet_table(&prefix, node)
        )
    };
    let (mut worlds, _net, _etcd) = three_nodes(body).unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB1], Duration::from_secs(5));
        w.expect("half.example.test", &[WEB2], Duration::from_secs(5));
    }
    // web1 answers on A only: one vote of the two needed, so it is down on all three
    // (A included), and Osaka answers. h (web2, quorum "1/2") answers on B only: one
    // of three live nodes is less than half, so it is down too.
    for w in worlds[1..].iter_mut() {
        w.backends[0].stop();
    }
    worlds[0].backends[1].stop();
    worlds[2].backends[1].stop();
    for w in &worlds {
        w.expect("www.example.test", &[WEB3], Duration::from_secs(5));
        w.expect("half.example.test", &[WEB3], Duration::from_secs(5));
    }
    // Back on B: two votes, up on all three (C included, which still sees it down).
    worlds[1].backends[0].resume().unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB1], Duration::from_secs(5));
    }
    // A is killed (-9): its vote goes with its lease (3 s), B's alone is not enough.
    worlds[0].controller.kill().unwrap();
    let started = Instant::now();
    for w in &worlds[1..] {
        w.expect("www.example.test", &[WEB3], Duration::from_secs(8));
    }
    eprintln!("A's vote expired after {:?}", started.elapsed());
    // Two live nodes are left: B's vote for h is half of them, so h is up on B and C
    // (C still sees it down), where a count of two would keep it down.
    for w in &worlds[1..] {
        w.expect("half.example.test", &[WEB2], Duration::from_secs(1));
    }
    worlds[2].backends[0].resume().unwrap();
}

/// Junk under the prefix — values larger than a gRPC message (six of 1 MiB: more than
/// tonic's 4 MiB in one read), hundreds of keys, views written without a lease by
/// nodes that do not exist — never keeps a node from (re)connecting: it reads the
/// prefix in pages, ignores and lists (escaped) what it cannot use, and views without
/// a lease do not count toward a quorum.
#[test]
fn junk_under_the_prefix_is_ignored_and_nodes_still_reconnect() {
    let prefix = format!("/pw/{}", unique("fleet"));
    let body = |node: &str| {
        format!(
            "[targets.q1]\naddress = \"{WEB1}\"\nchecks = [\"http\"]\nquorum = \"1/2\"\n\
             [groups.main]\nmembers = [\"q1\"]\npriority = 100\n\
             [groups.backup]\nmembers = [\"web3\"]\npriority = 50\n\
             [names.\"www.example.test\"]\ngroups = [\"main\", \"backup\"]\n\n{}",
            fleet_table(&prefix, node)
        )
    };
    let (mut worlds, _net, etcd) = three_nodes(body).unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB1], Duration::from_secs(5));
    }
    // web1 answers on A only: one of three live nodes is less than half: down.
    for w in worlds[1..].iter_mut() {
        w.backends[0].stop();
    }
    for w in &worlds {
        w.expect("www.example.test", &[WEB3], Duration::from_secs(5));
    }
    // Five fake nodes say "up" without a lease: counted, they would make q1 up.
    let fake: Vec<(String, String)> =
        (0..5).map(|i| (format!("{prefix}/health/fake{i}/q1"), "up".to_string())).collect();
    etcd.put_many(&fake).unwrap();
    // Hundreds of junk keys, and six values of 1 MiB (one with a terminal escape in
    // its key).
    let junk: Vec<(String, String)> =
        (0..400).map(|i| (format!("{prefix}/overrides/target/junk{i}/force"), "x".repeat(20))).collect();
    etcd.put_many(&junk).unwrap();
    let big = vec![b'{'; 1 << 20];
    for i in 0..6 {
        etcd.put_bytes(&format!("{prefix}/overrides/target/big{i}\x1b[31m/force"), &big).unwrap();
    }
    // Strings from etcd are shown escaped: an override whose node name carries a
    // terminal escape and a fake line, and a "node" report without a lease (no member).
    let record = serde_json::json!({
        "kind": "target", "name": "web9", "action": {"action": "auto"}, "node": "evil\u{1b}[2J\nFAKE LINE", "at_ms": 1
    });
    etcd.put(&format!("{prefix}/overrides/target/web9/auto"), &record.to_string()).unwrap();
    let report = serde_json::json!({ "revision": 99, "error": "\u{1b}[2J" }).to_string();
    etcd.put(&format!("{prefix}/nodes/ghost"), &report).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    for w in &worlds {
        w.expect("www.example.test", &[WEB3], Duration::from_millis(100));
        let fleet = w.controller.ctl(&["status"]).unwrap()["status"]["fleet"].clone();
        let overrides = fleet["overrides"].as_array().unwrap();
        let web9 = overrides.iter().find(|o| o["name"] == "web9").expect("listed");
        let node = web9["node"].as_str().unwrap();
        assert!(!node.contains('\u{1b}') && !node.contains('\n') && node.contains("FAKE LINE"), "{node:?}");
        assert!(!fleet["nodes"].to_string().contains("ghost"), "{fleet}");
    }
    // B restarts: it reads the whole prefix (more than one gRPC message) and connects.
    worlds[1].controller.restart().unwrap();
    let connected_again = primwatch_tests::wait_for(Duration::from_secs(10), || connected(&worlds[1]).then_some(()));
    assert!(connected_again.is_some(), "{}", worlds[1].controller.log());
    worlds[1].expect("www.example.test", &[WEB3], Duration::from_secs(5));
    let status = worlds[1].controller.ctl(&["status"]).unwrap();
    let fleet = &status["status"]["fleet"];
    let invalid = fleet["invalid"].as_array().unwrap();
    let listed = fleet["invalid"].to_string();
    assert!(invalid.len() <= 100 && fleet["invalid_more"].as_u64().unwrap() > 0, "{fleet}");
    assert!(listed.contains("fake0/q1"), "a view without a lease is listed: {listed}");
    assert!(listed.contains("big") && !listed.contains('\u{1b}'), "large values listed, escaped: {listed}");
    // This run's log (the file holds the run before the restart too).
    let log = worlds[1].controller.log();
    let this_run = log.rsplit("fleet: sharing overrides through etcd").next().unwrap();
    let warnings = this_run.lines().filter(|l| l.contains("an entry under the prefix is ignored")).count();
    assert!(warnings <= 10, "{warnings} warnings for the junk");
    // And a node that was connected all along still sees q1 down (no fake votes).
    worlds[2].expect("www.example.test", &[WEB3], Duration::from_millis(100));
    // A real second vote still counts: web1 back on B, two of three see it up.
    worlds[1].backends[0].resume().unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB1], Duration::from_secs(5));
    }
}

/// `primwatch fleet push FILE` from node `w` (its own config names etcd): exit code,
/// stdout, stderr.
fn push(w: &World, file: &std::path::Path) -> (i32, String, String) {
    push_with(w, file, w.controller.config_path())
}

/// As `push`, with `local` as the node's own file.
fn push_with(w: &World, file: &std::path::Path, local: &std::path::Path) -> (i32, String, String) {
    let out = netns::command(&w.lab.server_ns, binary().to_str().unwrap())
        .args(["fleet", "push"])
        .arg(file)
        .arg("--config")
        .arg(local)
        .args(["--wait", "10"])
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// This node's report on the pushed config, from `ctl status`.
fn config_report(w: &World) -> serde_json::Value {
    w.controller.ctl(&["status"]).unwrap()["status"]["fleet"]["config"].clone()
}

#[test]
fn a_pushed_config_runs_on_every_node_and_a_bad_one_changes_nothing() {
    let prefix = format!("/pw/{}", unique("fleet"));
    let (mut worlds, _net, mut etcd) = three_nodes(|node| fleet_body(&prefix, node)).unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(5));
    }
    let dir = TempDir::new("pw-push").unwrap();
    let file = |name: &str, text: &str| {
        let path = dir.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };

    // Pushed from A: www from Osaka only, a name no node's file has, and web2 gone.
    // Every node runs it with its own [server] and [fleet], and says so.
    let web2 = format!("[targets.web2]\naddress = \"{WEB2}\"\nchecks = [\"http\"]\n");
    assert!(shared_tables().contains(&web2));
    let good = format!(
        "{}{}\n[names.\"www.example.test\"]\ngroups = [\"osaka\"]\n\
         [names.\"new.example.test\"]\ngroups = [\"tokyo\"]\n",
        shared_tables().replace(&web2, ""),
        SITE_GROUPS.replace("[\"web1\", \"web2\"]", "[\"web1\"]")
    );
    let views = |node: &str| etcd.get_prefix(&format!("{prefix}/health/{node}/")).unwrap();
    assert!(views("b").iter().any(|(k, _)| k.ends_with("/web2")), "{:?}", views("b"));
    let (code, out, err) = push(&worlds[0], &file("good.toml", &good));
    assert_eq!(code, 0, "{out}{err}");
    for node in ["a", "b", "c"] {
        assert!(out.contains(&format!("  {node}: runs it")), "{out}");
    }
    let revision: i64 =
        out.split("as revision ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse().unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB3], Duration::from_secs(1));
        w.expect("new.example.test", &[WEB1], Duration::from_secs(1));
        assert_eq!(config_report(w)["revision"], revision);
        let stats = w.controller.ctl(&["stats"]).unwrap();
        let fleet = &stats["stats"]["fleet"];
        assert!(fleet["connected"] == true && fleet["config_revision"] == revision && fleet["nodes"] == 2, "{stats}");
    }
    let reports = etcd.get_prefix(&format!("{prefix}/nodes/")).unwrap();
    assert_eq!(reports.len(), 3, "{reports:?}");
    assert!(reports.iter().all(|(_, r)| r.contains(&format!("\"revision\":{revision}"))), "{reports:?}");
    // A target gone from the config takes its views with it.
    for node in ["a", "b", "c"] {
        let views = views(node);
        assert!(views.len() == 2 && !views.iter().any(|(k, _)| k.ends_with("/web2")), "{node}: {views:?}");
    }
    let stored = etcd.get_prefix(&format!("{prefix}/config")).unwrap();

    // A push with an error is refused before it is stored, with the file and line.
    let typo = good.replace("groups = [\"osaka\"]", "groups = [\"osaka\", \"nagoya\"]");
    let line = typo.lines().position(|l| l.contains("nagoya")).unwrap() + 1;
    let (code, out, err) = push(&worlds[0], &file("typo.toml", &typo));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains(&format!("typo.toml:{line}:")) && err.contains("nagoya") && err.contains("not pushed"),
        "{err}"
    );
    // So is a node-local table.
    let (code, _, err) = push(&worlds[0], &file("local.toml", &format!("{good}[metrics]\nlisten = \"127.0.0.1:9\"\n")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("[metrics] is node-local"), "{err}");
    // So is a target no node allows: the cloud's metadata address, loopback, the
    // node's own address (default [fleet] pushed_targets), at the target's line.
    for (address, why) in [("169.254.169.254", "link-local"), ("127.0.0.1", "loopback"), ("10.77.0.1", "own address")] {
        let aimed = format!("{good}[targets.inside]\naddress = \"{address}\"\nchecks = [\"http\"]\n");
        let line = aimed.lines().position(|l| l == "[targets.inside]").unwrap() + 1;
        let (code, _, err) = push(&worlds[0], &file("aimed.toml", &aimed));
        assert_eq!(code, 2, "{address}: {err}");
        assert!(err.contains(&format!("aimed.toml:{line}:")) && err.contains(why), "{address}: {err}");
        assert!(err.contains("pushed_targets"), "{err}");
    }
    assert_eq!(etcd.get_prefix(&format!("{prefix}/config")).unwrap(), stored, "nothing was stored");

    // One that reaches etcd anyway (written by hand, or by a tool that skips the
    // check) is refused by every node: each keeps serving what it ran, and reports why
    // in etcd and `ctl status`.
    let document = serde_json::json!({ "toml": typo, "pushed_by": "by-hand", "at_ms": 0 }).to_string();
    etcd.put(&format!("{prefix}/config"), &document).unwrap();
    for w in &worlds {
        let deadline = Instant::now() + Duration::from_secs(2);
        let report = loop {
            let report = config_report(w);
            if report["refused"].as_i64().unwrap_or(0) > revision || Instant::now() > deadline {
                break report;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_eq!(report["revision"], revision, "{report}");
        assert!(report["error"].as_str().unwrap().contains("nagoya"), "{report}");
        w.expect("www.example.test", &[WEB3], Duration::from_millis(100));
    }
    let reports = etcd.get_prefix(&format!("{prefix}/nodes/")).unwrap();
    assert!(reports.iter().all(|(_, r)| r.contains("nagoya")), "{reports:?}");
    // Written by hand, a target at the metadata address is refused by every node.
    let aimed = format!("{good}[targets.meta]\naddress = \"169.254.169.254\"\nchecks = [\"http\"]\n");
    let document = serde_json::json!({ "toml": aimed, "pushed_by": "by-hand", "at_ms": 0 }).to_string();
    etcd.put(&format!("{prefix}/config"), &document).unwrap();
    for w in &worlds {
        let refused = primwatch_tests::wait_for(Duration::from_secs(2), || {
            let report = config_report(w);
            report["error"].as_str().unwrap_or("").contains("169.254.169.254").then_some(report)
        });
        assert!(refused.is_some(), "{}", config_report(w));
        w.expect("www.example.test", &[WEB3], Duration::from_millis(100));
    }
    // A push may name files only inside each node's config directory; and an error in
    // such a file reaches etcd without the file's text (it could be a key's).
    let (code, _, err) = push(&worlds[0], &file("shadow.toml", &format!("name_files = [\"/etc/shadow\"]\n{good}")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("relative to each node's config directory"), "{err}");
    for w in &worlds {
        let dir = w.controller.config_path().parent().unwrap();
        std::fs::write(dir.join("bad.names"), "SECRET-LINE-123 nosuchgroup\n").unwrap();
    }
    let document = serde_json::json!({
        "toml": format!("name_files = [\"bad.names\"]\n{good}"), "pushed_by": "by-hand", "at_ms": 0
    });
    etcd.put(&format!("{prefix}/config"), &document.to_string()).unwrap();
    for w in &worlds {
        let deadline = Instant::now() + Duration::from_secs(2);
        let report = loop {
            let report = config_report(w);
            if report["error"].as_str().unwrap_or("").contains("bad.names") || Instant::now() > deadline {
                break report;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let error = report["error"].as_str().unwrap();
        assert!(error.contains("bad.names") && error.contains("the reason is in this node's log"), "{report}");
        assert!(!error.contains("SECRET-LINE-123"), "{report}");
        // The log says why, at the file's line, without quoting the line (a pushed
        // config may name a secret: its first line would be quoted otherwise).
        let log = w.controller.log();
        assert!(log.contains("bad.names:1: unknown group '…'"), "the log says why: {log}");
        assert!(!log.contains("SECRET-LINE-123") && !log.contains("nosuchgroup"), "{log}");
    }
    let reports = etcd.get_prefix(&format!("{prefix}/nodes/")).unwrap();
    assert!(reports.iter().all(|(_, r)| !r.contains("SECRET-LINE-123")), "{reports:?}");

    // Not JSON at all: listed as ignored, never applied.
    etcd.put(&format!("{prefix}/config"), "{not json").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for w in &worlds {
        let status = w.controller.ctl(&["status"]).unwrap();
        assert!(status["status"]["fleet"]["invalid"].to_string().contains("/config"), "{status}");
        w.expect("www.example.test", &[WEB3], Duration::from_millis(100));
    }

    // Fail static: with etcd gone, a restarted node starts on the pushed config it ran.
    for i in 0..3 {
        etcd.kill(i);
    }
    worlds[1].controller.restart().unwrap();
    worlds[1].expect("www.example.test", &[WEB3], Duration::from_secs(5));
    worlds[1].expect("new.example.test", &[WEB1], Duration::from_millis(100));
    assert_eq!(config_report(&worlds[1])["revision"], revision);
}

/// A node that stops while applying a pushed revision (killed -9 within its probation,
/// as a panic or a crash while applying would leave it) does not apply that revision
/// again, at its next start nor when etcd hands it over again: it starts on the last
/// revision it ran successfully and reports this one as refused, in etcd and `ctl
/// status`. The other nodes keep it; a newer push is applied as usual.
#[test]
fn a_node_that_stops_while_applying_a_push_does_not_apply_it_again() {
    let prefix = format!("/pw/{}", unique("fleet"));
    let (mut worlds, _net, etcd) = three_nodes(|node| fleet_body(&prefix, node)).unwrap();
    for w in &worlds {
        w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(5));
    }
    let dir = TempDir::new("pw-push").unwrap();
    let push_names = |from: &World, name: &str, names: &str| {
        let path = dir.0.join(name);
        std::fs::write(&path, format!("{}{SITE_GROUPS}{names}", shared_tables())).unwrap();
        let (code, out, err) = push(from, &path);
        assert_eq!(code, 0, "{out}{err}");
        out.split("as revision ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap().parse::<i64>().unwrap()
    };
    let osaka = push_names(&worlds[1], "osaka.toml", "[names.\"www.example.test\"]\ngroups = [\"osaka\"]\n");
    for w in &worlds {
        w.expect("www.example.test", &[WEB3], Duration::from_secs(2));
    }
    // Past its probation on every node: the revision each starts on from now.
    std::thread::sleep(Duration::from_secs(12));
    let tokyo = push_names(&worlds[1], "tokyo.toml", "[names.\"www.example.test\"]\ngroups = [\"tokyo\"]\n");
    worlds[0].expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(2));
    worlds[0].controller.kill().unwrap();
    worlds[0].controller.start_again().unwrap();
    // Back on the revision it ran successfully, with etcd offering the new one.
    std::thread::sleep(Duration::from_secs(2));
    worlds[0].expect("www.example.test", &[WEB3], Duration::from_secs(5));
    let report = config_report(&worlds[0]);
    assert_eq!((report["revision"].as_i64(), report["refused"].as_i64()), (Some(osaka), Some(tokyo)), "{report}");
    assert!(report["error"].as_str().unwrap().contains("stopped within"), "{report}");
    let stored = etcd.get_prefix(&format!("{prefix}/nodes/a")).unwrap();
    assert!(stored.iter().any(|(_, r)| r.contains(&format!("\"refused\":{tokyo}"))), "{stored:?}");
    assert!(worlds[0].controller.log().contains("a pushed revision is refused"));
    for w in &worlds[1..] {
        w.expect("www.example.test", &[WEB1, WEB2], Duration::from_millis(100));
    }
    // Stopped and started again in order: still refused (kept beside the state file).
    worlds[0].controller.restart().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    worlds[0].expect("www.example.test", &[WEB3], Duration::from_secs(5));
    assert_eq!(config_report(&worlds[0])["refused"].as_i64(), Some(tokyo));
    // A newer push is applied as usual, and the refusal goes.
    let newer = push_names(&worlds[1], "web3.toml", "[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n");
    worlds[0].expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(2));
    let report = config_report(&worlds[0]);
    assert_eq!((report["revision"].as_i64(), report["refused"].as_i64()), (Some(newer), Some(0)), "{report}");
}

/// Node "a"'s config body with etcd at `TlsEtcd::ENDPOINT`, the fleet's CA and the
/// `[fleet]` lines `extra`.
fn tls_node_body(prefix: &str, certs: &FleetCertificates, extra: &str) -> String {
    format!(
        "{SITE_GROUPS}\n[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n\n\
         [fleet]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nnode = \"a\"\nca = \"{}\"\n{extra}",
        TlsEtcd::ENDPOINT,
        certs.path("ca.pem"),
    )
}

#[test]
fn over_tls_only_a_node_with_the_fleets_certificates_reaches_etcd() {
    let prefix = format!("/pw/{}", unique("fleet"));
    let certs = FleetCertificates::generate().unwrap();
    let pair = format!("cert = \"{}\"\nkey = \"{}\"\n", certs.path("node.pem"), certs.path("node-key.pem"));
    let body = tls_node_body(&prefix, &certs, &pair);
    // The node starts before etcd does, serving, and connects once etcd is up.
    let w = world_with(&body, false);
    w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(5));
    assert!(!connected(&w));
    let etcd = TlsEtcd::start(&w.lab.server_ns, &certs, true).unwrap();
    assert!(primwatch_tests::wait_for(Duration::from_secs(10), || connected(&w).then_some(())).is_some());
    let reply = w.controller.ctl(&["target", "web1", "down"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    w.expect("www.example.test", &[WEB2], Duration::from_secs(1));
    let stored = etcd.etcdctl(&certs, &["get", "--prefix", &format!("{prefix}/overrides/target/web1/")]).unwrap();
    assert!(stored.contains("\"node\":\"a\""), "{stored}");

    // The same node's file with another CA, or without the client certificate, does
    // not get in: the push is refused, and nothing is stored.
    let dir = TempDir::new("pw-push-tls").unwrap();
    let own = std::fs::read_to_string(w.controller.config_path()).unwrap();
    let variant = |name: &str, text: String| {
        let path = dir.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let other_ca = variant("other-ca.toml", own.replace(&certs.path("ca.pem"), &certs.path("other-ca.pem")));
    let key_line = format!("key = \"{}\"\n", certs.path("node-key.pem"));
    let cert_line = format!("cert = \"{}\"\n", certs.path("node.pem"));
    let no_cert = variant("no-cert.toml", own.replace(&key_line, "").replace(&cert_line, ""));
    let pushed = variant(
        "pushed.toml",
        format!("{}{SITE_GROUPS}\n[names.\"www.example.test\"]\ngroups = [\"osaka\"]\n", shared_tables()),
    );
    for local in [&other_ca, &no_cert] {
        let (code, out, err) = push_with(&w, &pushed, local);
        assert_eq!(code, 2, "{}: {out}{err}", local.display());
        assert!(err.contains("no etcd endpoint answers"), "{}: {err}", local.display());
    }
    assert_eq!(etcd.etcdctl(&certs, &["get", &format!("{prefix}/config")]).unwrap(), "");
    // With the fleet's certificates it is stored and run.
    let (code, out, err) = push(&w, &pushed);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("  a: runs it"), "{out}");
    w.expect("www.example.test", &[WEB3], Duration::from_secs(1));
}

#[test]
fn a_target_checked_by_one_node_is_checked_once_and_taken_over_when_that_node_dies() {
    let prefix = format!("/pw/{}", unique("fleet"));
    // s1 is web2's address, checked by one live node only; Osaka (web3) backs it up.
    let body = |node: &str| {
        format!(
            "[targets.s1]\naddress = \"{WEB2}\"\nchecks = [\"http\"]\nquorum = 1\nchecked_by = 1\n\
             [groups.shard]\nmembers = [\"s1\"]\npriority = 100\n\
             [groups.backup]\nmembers = [\"web3\"]\npriority = 50\n\
             [names.\"shard.example.test\"]\ngroups = [\"shard\", \"backup\"]\n\n{}",
            fleet_table(&prefix, node)
        )
    };
    let (mut worlds, _net, mut etcd) = three_nodes(body).unwrap();
    // Exactly one node publishes a view of s1: the one that checks it.
    let checkers = |etcd: &primwatch_tests::fleet::Etcd| {
        let views = etcd.get_prefix(&format!("{prefix}/health/")).unwrap();
        views
            .iter()
            .filter(|(k, _)| k.ends_with("/s1"))
            .map(|(k, _)| k.split('/').nth_back(1).unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let checker = loop {
        let who = checkers(&etcd);
        if who.len() == 1 {
            break who[0].clone();
        }
        assert!(Instant::now() < deadline, "s1 is checked by {who:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let x = ["a", "b", "c"].iter().position(|n| *n == checker).unwrap();
    for w in &worlds {
        w.expect("shard.example.test", &[WEB2], Duration::from_secs(5));
        let status = w.controller.ctl(&["status"]).unwrap();
        let fleet = &status["status"]["fleet"];
        assert_eq!(fleet["sharded"], 1, "{fleet}");
        assert_eq!(
            fleet["checked_here"].as_array().unwrap().len(),
            usize::from(w.controller.config_path() == worlds[x].controller.config_path()),
            "{fleet}"
        );
    }
    // web2 fails where it is checked only: down on every node, although the other
    // nodes' own web2 answers (they do not check it).
    worlds[x].backends[1].stop();
    for w in &worlds {
        w.expect("shard.example.test", &[WEB3], Duration::from_secs(5));
    }
    // The checker dies (-9): when its lease expires, another node takes s1 over, finds
    // its web2 up, and the survivors answer it again.
    worlds[x].controller.kill().unwrap();
    let started = Instant::now();
    for (i, w) in worlds.iter().enumerate().filter(|(i, _)| *i != x) {
        w.expect("shard.example.test", &[WEB2], Duration::from_secs(10));
        eprintln!("node {i} answers web2 again after {:?}", started.elapsed());
    }
    let who = checkers(&etcd);
    assert!(who.len() == 1 && who[0] != checker, "s1 is now checked by {who:?}");

    // etcd gone for longer than a lease: each survivor checks s1 itself, and its own
    // checks decide it there (not the other's frozen view).
    for i in 0..3 {
        etcd.kill(i);
    }
    let survivors: Vec<usize> = (0..3).filter(|i| *i != x).collect();
    let checks_s1 = |w: &World| {
        let status = w.controller.ctl(&["status"]).unwrap();
        status["status"]["fleet"]["checked_here"].as_array().is_some_and(|a| a.len() == 1)
    };
    let all_check = primwatch_tests::wait_for(Duration::from_secs(15), || {
        survivors.iter().all(|i| checks_s1(&worlds[*i])).then_some(())
    });
    assert!(all_check.is_some(), "cut off, every survivor checks s1");
    let (s1, s2) = (survivors[0], survivors[1]);
    worlds[s1].backends[1].stop();
    worlds[s1].expect("shard.example.test", &[WEB3], Duration::from_secs(5));
    worlds[s2].expect("shard.example.test", &[WEB2], Duration::from_millis(100));
    worlds[s1].backends[1].resume().unwrap();
    worlds[x].backends[1].resume().unwrap();
}

#[test]
fn with_etcd_authentication_a_node_needs_its_password_and_a_wrong_one_still_serves() {
    let prefix = format!("/pw/{}", unique("fleet"));
    let certs = FleetCertificates::generate().unwrap();
    let body = tls_node_body(&prefix, &certs, "user = \"primwatch\"\npassword = \"right\"\n");
    let mut w = world_with(&body, false);
    // etcd with authentication on: a root user, and a primwatch user whose role may
    // read and write the fleet's prefix only.
    let etcd = TlsEtcd::start(&w.lab.server_ns, &certs, false).unwrap();
    let root = ["--user", "root:rootpw"];
    etcd.etcdctl(&certs, &["user", "add", "root:rootpw"]).unwrap();
    etcd.etcdctl(&certs, &["auth", "enable"]).unwrap();
    etcd.etcdctl(&certs, &[&root[..], &["user", "add", "primwatch:right"]].concat()).unwrap();
    etcd.etcdctl(&certs, &[&root[..], &["role", "add", "fleet"]].concat()).unwrap();
    let grant = ["role", "grant-permission", "--prefix=true", "fleet", "readwrite", &format!("{prefix}/")];
    etcd.etcdctl(&certs, &[&root[..], &grant[..]].concat()).unwrap();
    etcd.etcdctl(&certs, &[&root[..], &["user", "grant-role", "primwatch", "fleet"]].concat()).unwrap();
    if primwatch_tests::wait_for(Duration::from_secs(10), || connected(&w).then_some(())).is_none() {
        panic!("not connected: {}", w.controller.ctl(&["status"]).unwrap()["status"]["fleet"]);
    }
    let reply = w.controller.ctl(&["target", "web1", "down"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    let key = format!("{prefix}/overrides/target/web1/force");
    let got = |etcd: &TlsEtcd| etcd.etcdctl(&certs, &[&root[..], &["get", &key]].concat()).unwrap();
    assert!(primwatch_tests::wait_for(Duration::from_secs(2), || got(&etcd).contains("\"node\":\"a\"").then_some(()))
        .is_some());

    // The wrong password: the node starts anyway, serves from its state file (web1
    // still down), says why it is not connected, and writes nothing.
    let path = w.controller.config_path().to_path_buf();
    let own = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, own.replace("password = \"right\"", "password = \"wrong\"")).unwrap();
    w.controller.restart().unwrap();
    w.expect("www.example.test", &[WEB2], Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(2));
    let status = w.controller.ctl(&["status"]).unwrap();
    let fleet = &status["status"]["fleet"];
    assert_eq!(fleet["connected"], false, "{fleet}");
    assert!(fleet["error"].as_str().unwrap().contains("authentication failed"), "{fleet}");
    let reply = w.controller.ctl(&["target", "web1", "auto"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(500));
    assert!(got(&etcd).contains("\"action\":\"force\""), "nothing written with the wrong password: {}", got(&etcd));
}
