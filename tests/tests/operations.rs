//! The operator's controls against a running controller: `primwatch ctl` status,
//! forcing targets and groups, priorities, preempt off with fail back, overrides
//! across a restart, and reloads (ctl and SIGHUP) that reject bad configs.

use std::time::Duration;

use primwatch_tests::world::{set, world, World, SITE_GROUPS, WEB1, WEB2, WEB3};

/// Tokyo primary, Osaka backup for www.
fn sites() -> String {
    format!("{SITE_GROUPS}\n[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n")
}

const SECOND: Duration = Duration::from_secs(1);
const SOON: Duration = Duration::from_secs(3);

fn ok(w: &World, args: &[&str]) -> serde_json::Value {
    let reply = w.controller.ctl(args).unwrap();
    assert_eq!(reply["ok"], true, "ctl {args:?}: {reply}");
    reply
}

fn target<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["status"]["targets"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()
}

#[test]
fn status_shows_targets_groups_and_names() {
    let mut w = world(&sites());
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB1], SOON);
    let status = ok(&w, &["status"]);
    let web2 = target(&status, "web2");
    assert_eq!(web2["state"], "down");
    assert_eq!(web2["in_answers"], false);
    assert!(web2["reason"].as_str().unwrap().contains("check http"), "{web2}");
    assert!(web2["since"].as_str().unwrap().ends_with('Z'));
    let web1 = target(&status, "web1");
    assert_eq!(web1["state"], "up");
    let check = &web1["checks"][0];
    assert!(check["runs"].as_u64().unwrap() >= 1 && check["latency_ms"].as_f64().unwrap() > 0.0, "{check}");
    let groups = status["status"]["groups"].as_array().unwrap();
    let tokyo = groups.iter().find(|g| g["name"] == "tokyo").unwrap();
    assert_eq!((tokyo["eligible"].as_u64(), tokyo["members"].as_u64()), (Some(1), Some(2)));
    let name = &status["status"]["names"][0];
    assert_eq!(name["a"], serde_json::json!([WEB1]));
    assert_eq!(name["a_from"], "group tokyo");

    // Only root may talk to the controller.
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let meta = std::fs::metadata(&w.controller.control_socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), 0);

    // The human-readable form.
    let out = std::process::Command::new(primwatch_tests::controller::binary())
        .args(["ctl", "--socket"])
        .arg(&w.controller.control_socket)
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("TARGETS") && text.contains("GROUPS") && text.contains("NAMES"), "{text}");
    assert!(text.contains("web2") && text.contains("down"), "{text}");
}

#[test]
fn forcing_targets_and_groups() {
    let mut w = world(&sites());
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    ok(&w, &["target", "web2", "down"]);
    w.expect("www.example.test", &[WEB1], SECOND);
    ok(&w, &["target", "web1", "drain"]);
    w.expect("www.example.test", &[WEB3], SECOND); // tokyo has no eligible member left
    ok(&w, &["target", "web1", "auto"]);
    ok(&w, &["target", "web2", "auto"]);
    w.expect("www.example.test", &[WEB1, WEB2], SECOND);

    // A dead backend forced up is served anyway.
    w.backends[0].stop();
    w.expect("www.example.test", &[WEB2], SOON);
    ok(&w, &["target", "web1", "up"]);
    w.expect("www.example.test", &[WEB1, WEB2], SECOND);
    ok(&w, &["target", "web1", "auto"]);
    w.expect("www.example.test", &[WEB2], SECOND);

    // Groups: priority, down, up.
    ok(&w, &["group", "osaka", "priority", "200"]);
    w.expect("www.example.test", &[WEB3], SECOND);
    ok(&w, &["group", "osaka", "down"]);
    w.expect("www.example.test", &[WEB2], SECOND);
    ok(&w, &["group", "osaka", "auto"]);
    ok(&w, &["group", "osaka", "priority", "50"]);
    w.expect("www.example.test", &[WEB2], SECOND);

    // Unknown names and misapplied actions are errors.
    let reply = w.controller.ctl(&["target", "web9", "down"]).unwrap();
    assert_eq!(reply["ok"], false);
    assert!(reply["message"].as_str().unwrap().contains("no target 'web9'"));
    // Priority is a group's: ctl has no such target action (a usage error, no request sent).
    assert!(w.controller.ctl(&["target", "web1", "priority", "3"]).is_err());
}

#[test]
fn preempt_off_holds_a_recovered_target_until_failback() {
    let body = sites()
        + r#"
[names."single.example.test"]
groups = ["tokyo"]
"#;
    let mut w = world(&body);
    ok(&w, &["target", "web2", "preempt", "off"]);
    w.expect("single.example.test", &[WEB1, WEB2], SOON);
    w.backends[1].stop();
    w.expect("single.example.test", &[WEB1], SOON);
    w.backends[1].resume().unwrap();
    // Healthy again, but held out.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(w.answers("single.example.test"), [WEB1.to_string()].into());
    let status = ok(&w, &["status"]);
    assert_eq!(target(&status, "web2")["state"], "held");
    assert_eq!(target(&status, "web2")["healthy"], true);
    ok(&w, &["target", "web2", "failback"]);
    w.expect("single.example.test", &[WEB1, WEB2], SECOND);
    let reply = w.controller.ctl(&["target", "web2", "failback"]).unwrap();
    assert_eq!(reply["ok"], false, "not held any more");
}

#[test]
fn preempt_off_keeps_the_backup_site_until_failback() {
    let body = sites().replace("priority = 100\npolicy = \"all\"", "priority = 100\npolicy = \"all\"\npreempt = false");
    let mut w = world(&body);
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    w.backends[0].stop();
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB3], SOON);
    w.backends[0].resume().unwrap();
    w.backends[1].resume().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(w.answers("www.example.test"), [WEB3.to_string()].into(), "Osaka keeps serving");
    ok(&w, &["group", "tokyo", "failback"]);
    w.expect("www.example.test", &[WEB1, WEB2], SECOND);
}

#[test]
fn overrides_and_holds_survive_a_restart() {
    let mut w = world(&sites());
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    ok(&w, &["target", "web2", "down"]);
    ok(&w, &["group", "osaka", "priority", "300"]);
    w.expect("www.example.test", &[WEB3], SECOND);
    w.controller.restart().unwrap();
    // From the first answer on: no window where the overrides are forgotten.
    assert_eq!(w.answers("www.example.test"), [WEB3.to_string()].into());
    ok(&w, &["group", "osaka", "auto"]);
    ok(&w, &["group", "osaka", "priority", "50"]);
    w.expect("www.example.test", &[WEB1], SECOND);
    let status = ok(&w, &["status"]);
    assert_eq!(target(&status, "web2")["state"], "forced-down");
}

#[test]
fn reload_applies_a_valid_config_and_rejects_a_bad_one() {
    let mut w = world(&sites());
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let template = std::fs::read_to_string(w.controller_config_path()).unwrap();

    // A bad config: rejected with file, line and reason; answers unchanged.
    let bad = template.replace("members = [\"web3\"]", "members = [\"web4\"]");
    std::fs::write(w.controller_config_path(), &bad).unwrap();
    let reply = w.controller.ctl(&["reload"]).unwrap();
    assert_eq!(reply["ok"], false);
    let message = reply["message"].as_str().unwrap();
    assert!(message.contains("primwatch.toml:") && message.contains("unknown target 'web4'"), "{message}");
    assert_eq!(w.answers("www.example.test"), [WEB1.to_string(), WEB2.to_string()].into());

    // A good one: Osaka joins Tokyo's group.
    let good = template.replace("members = [\"web1\", \"web2\"]", "members = [\"web1\", \"web2\", \"web3\"]");
    std::fs::write(w.controller_config_path(), &good).unwrap();
    ok(&w, &["reload"]);
    w.expect("www.example.test", &[WEB1, WEB2, WEB3], SECOND);

    // SIGHUP does the same.
    std::fs::write(w.controller_config_path(), &template).unwrap();
    w.controller.signal(libc::SIGHUP);
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    assert!(w.controller.log().contains("SIGHUP: reloading"));
    w.backends[0].stop();
    w.expect("www.example.test", &[WEB2], SOON);
}

#[test]
fn answers_stay_whole_while_targets_flap_under_load() {
    let w = world(
        r#"
[groups.web]
members = ["web1", "web2", "web3"]
policy = "all"
[names."www.example.test"]
groups = ["web"]
"#,
    );
    w.expect("www.example.test", &[WEB1, WEB2, WEB3], SOON);
    let load = w.steady_load("www.example.test", vec![set(&[WEB1, WEB2, WEB3]), set(&[WEB1, WEB3])]);
    // Flap web2 through the operator's override: each change is one map update.
    let started = std::time::Instant::now();
    let mut flips = 0;
    while started.elapsed() < Duration::from_secs(4) {
        ok(&w, &["target", "web2", if flips % 2 == 0 { "down" } else { "auto" }]);
        flips += 1;
    }
    let result = load.finish();
    result.assert_clean();
    assert!(flips > 100, "only {flips} map updates");
    let (full, partial) = (result.per_set[0], result.per_set[1]);
    assert!(full > 50 && partial > 50, "both sets served: {full} / {partial} of {}", result.sent);
    println!("{} queries, {flips} map updates, 0 lost, 0 mixed", result.sent);
}

#[test]
fn twenty_reloads_under_load_lose_nothing_and_never_mix() {
    let w = world(&sites());
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let tokyo = std::fs::read_to_string(w.controller_config_path()).unwrap();
    // The other config moves the name to Osaka and gives it a second, fixed name.
    let osaka = tokyo.replace("groups = [\"tokyo\", \"osaka\"]", "groups = [\"osaka\"]")
        + "\n[names.\"static.example.test\"]\na = [\"192.0.2.7\"]\n";
    let load = w.steady_load("www.example.test", vec![set(&[WEB1, WEB2]), set(&[WEB3])]);
    for i in 0..20 {
        std::fs::write(w.controller_config_path(), if i % 2 == 0 { &osaka } else { &tokyo }).unwrap();
        ok(&w, &["reload"]);
        std::thread::sleep(Duration::from_millis(150));
    }
    let result = load.finish();
    result.assert_clean();
    assert!(result.per_set[0] > 20 && result.per_set[1] > 20, "both configs served: {result:?}");
    assert_eq!(w.controller.log().matches("config reloaded").count(), 20);
    println!("{} queries across 20 reloads: 0 lost, 0 mixed", result.sent);
}

#[test]
fn restart_and_kill_9_lose_no_query_and_keep_last_known_health() {
    let mut w = world(&sites());
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB1], SOON);
    std::thread::sleep(Duration::from_millis(1500)); // the health change reaches the state file
    let load = w.steady_load("www.example.test", vec![set(&[WEB1])]);

    // A clean restart (SIGTERM, start): XDP stays attached and is adopted.
    w.controller.restart().unwrap();
    let status = ok(&w, &["status"]);
    let note = status["status"]["dataplane"].as_str().unwrap();
    assert!(note.contains("stopped cleanly") && note.contains("adopted"), "{note}");
    assert_eq!(target(&status, "web2")["state"], "down", "last-known health, not 'initially up'");
    std::thread::sleep(Duration::from_millis(300));

    // kill -9: nothing runs the checks, XDP keeps answering what it last knew.
    let dead_from = w.controller.log().len();
    w.controller.kill().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    w.controller.start_again().unwrap();
    let status = ok(&w, &["status"]);
    let note = status["status"]["dataplane"].as_str().unwrap();
    assert!(
        note.contains("did not stop cleanly") && note.contains("fail static") && note.contains("adopted"),
        "{note}"
    );
    assert!(w.controller.log()[dead_from..].contains("did not stop cleanly"), "the log says so too");
    assert_eq!(target(&status, "web2")["state"], "down");
    std::thread::sleep(Duration::from_millis(300));
    let result = load.finish();
    result.assert_clean();
    assert!(result.sent > 100, "{result:?}");
    println!("{} queries across a restart and a kill -9: 0 lost", result.sent);

    // And the adopted program follows the new controller's checks.
    w.backends[1].resume().unwrap();
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
}
