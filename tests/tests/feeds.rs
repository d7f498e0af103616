//! Feeds end to end: data from the operator's own programs — a file replaced by rename
//! and rewritten in place, a Python program run every interval, an HTTP push with and
//! without its token — deciding health, weights, names and views that XDP answers a
//! real client with; refused batches keep the last good one, a silent feed falls back,
//! and a batch applies whole under load.

use std::{path::Path, time::Duration};

use primwatch_tests::{
    netns, wait_for,
    world::{set, world, World, WEB1, WEB2, WEB3},
};

const SOON: Duration = Duration::from_secs(5);

/// Two fed targets on the lab's backends (f1 judged by the feed alone, f2 by the feed
/// and its HTTP check), a group of them, a name from the config and a view for the
/// client's prefix that the feed fills.
fn fed_tables(feed: &str, policy: &str) -> String {
    format!(
        r#"
{feed}
[checks.cmdb]
type = "feed"
feed = "cmdb"

[targets.f1]
address = "{WEB1}"
checks = ["cmdb"]
[targets.f2]
address = "{WEB2}"
checks = ["cmdb", "http"]
[targets.f3]
address = "{WEB3}"

[groups.fed]
members = ["f1", "f2"]
policy = "{policy}"
[groups.spare]
members = ["f3"]
policy = "all"

[names."www.example.test"]
groups = ["fed"]

[views.clients]
sources = ["198.51.100.0/24"]
"#
    )
}

/// Writes `text` to `path` by a temp file renamed over it (how deploy tools replace files).
fn replace(path: &Path, text: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn status_feed(w: &World, feed: &str) -> serde_json::Value {
    let status = w.controller.ctl(&["status"]).unwrap();
    let feeds = status["status"]["feeds"].as_array().cloned().unwrap_or_default();
    feeds.into_iter().find(|f| f[0] == feed).map(|f| f[1].clone()).unwrap_or_default()
}

#[test]
fn a_file_feed_decides_health_names_and_views_and_a_bad_batch_keeps_the_last_good() {
    let dir = primwatch_tests::TempDir::new("pw-feed-file").unwrap();
    let path = dir.0.join("cmdb.jsonl");
    let header = "{\"primwatch_feed\": 1}\n";
    replace(
        &path,
        &format!(
            "{header}{{\"target\": \"f1\", \"health\": \"up\"}}\n{{\"target\": \"f2\", \"health\": \"up\"}}\n\
             {{\"name\": \"tenant1.example.test\", \"groups\": [\"fed\"]}}\n"
        ),
    );
    let feed = format!("[feeds.cmdb]\nfile = \"{}\"\nkinds = [\"health\", \"names\", \"views\"]\n", path.display());
    let w = world(&fed_tables(&feed, "all"));
    // The first batch was awaited before the first answers.
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    w.expect("tenant1.example.test", &[WEB1, WEB2], SOON);

    // Replaced by rename: f1 to maintenance, tenant1 gone, tenant2 new, and the client's
    // prefix put into a view that answers tenant2 from the spare group.
    let client = w.lab.client_addr(false);
    replace(
        &path,
        &format!(
            "{header}{{\"target\": \"f1\", \"health\": \"draining\", \"reason\": \"kernel upgrade\"}}\n\
             {{\"target\": \"f2\", \"health\": \"up\"}}\n\
             {{\"name\": \"tenant2.example.test\", \"groups\": [\"fed\"]}}\n\
             {{\"name\": \"tenant2.example.test\", \"view\": \"clients\", \"groups\": [\"spare\"]}}\n\
             {{\"prefix\": \"{client}/32\", \"view\": \"clients\"}}\n"
        ),
    );
    w.expect("www.example.test", &[WEB2], SOON);
    w.expect("tenant1.example.test", &[], SOON);
    w.expect("tenant2.example.test", &[WEB3], SOON);
    let explained = w.controller.ctl(&["explain", "--from", "203.0.113.1", "www.example.test"]).unwrap().to_string();
    assert!(explained.contains("feed cmdb") && explained.contains("kernel upgrade"), "{explained}");

    // Written in place with a bad third line: refused whole, the last good one serves.
    std::fs::write(
        &path,
        format!("{header}{{\"target\": \"f1\", \"health\": \"up\"}}\n{{\"target\": \"f9\", \"health\": \"up\"}}\n"),
    )
    .unwrap();
    let refused = wait_for(SOON, || {
        let f = status_feed(&w, "cmdb");
        f["result"].as_str().filter(|r| r.starts_with("refused")).map(str::to_string)
    });
    let refused = refused.expect("the bad batch is reported");
    assert!(refused.contains("line 3") && refused.contains("no target 'f9'"), "{refused}");
    std::thread::sleep(Duration::from_millis(500));
    w.expect("www.example.test", &[WEB2], Duration::from_millis(100));
    w.expect("tenant2.example.test", &[WEB3], Duration::from_millis(100));
    let log = w.controller.log();
    assert!(log.contains("feed batch refused whole") && log.contains("line 3"), "{log}");
    let stats = w.controller.ctl(&["stats"]).unwrap().to_string();
    assert!(stats.contains("\"refused\":1"), "{stats}");

    // A name the config serves cannot be taken over by a feed: refused the same way.
    replace(&path, &format!("{header}{{\"name\": \"www.example.test\", \"groups\": [\"spare\"]}}\n"));
    let refused = wait_for(SOON, || {
        let f = status_feed(&w, "cmdb");
        f["result"].as_str().filter(|r| r.contains("already served")).map(str::to_string)
    });
    assert!(refused.is_some(), "{:?}", status_feed(&w, "cmdb"));
    w.expect("tenant2.example.test", &[WEB3], Duration::from_millis(100));
}

/// A scratch directory with a feed program and its inventory file, readable by the
/// exec user the program runs as: (the directory, the program, the inventory).
fn feed_program(
    prefix: &str,
    text: &str,
    inventory_text: &str,
) -> (primwatch_tests::TempDir, std::path::PathBuf, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = primwatch_tests::TempDir::new(prefix).unwrap();
    let (program, inventory) = (dir.0.join("feed.py"), dir.0.join("inventory"));
    std::fs::write(&program, text).unwrap();
    std::fs::write(&inventory, inventory_text).unwrap();
    for (path, mode) in [(&dir.0, 0o755), (&program, 0o644), (&inventory, 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    (dir, program, inventory)
}

/// A feed program as operators write them: asks its "inventory" (a file here) and
/// prints a batch; fails (exit 1) while the inventory says so.
const PROGRAM: &str = r#"
import json, sys
state = open(sys.argv[1]).read().split()
if state[0] == "fail":
    sys.stderr.write("inventory unreachable\n")
    sys.exit(1)
print(json.dumps({"primwatch_feed": 1}))
for target, health, weight in zip(state[0::3], state[1::3], state[2::3]):
    print(json.dumps({"target": target, "health": health, "weight": int(weight), "reason": "from the inventory"}))
"#;

#[test]
fn a_command_feed_sets_health_and_weights_and_falls_back_when_stale() {
    let (_dir, program, inventory) = feed_program("pw-feed-cmd", PROGRAM, "f1 up 1 f2 up 1");
    let feed = format!(
        "[feeds.cmdb]\ncommand = [\"/usr/bin/python3\", \"{}\", \"{}\"]\ninterval = \"1s\"\ntimeout = \"5s\"\n\
         stale_after = \"3s\"\non_stale = \"down\"\nkinds = [\"health\", \"weights\"]\n",
        program.display(),
        inventory.display()
    );
    let w = world(&fed_tables(&feed, "weighted"));
    // Weighted: a reply carries one member, drawn by weight; both are drawn in turn.
    let drawn = |tries: usize| {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..tries {
            seen.extend(w.answers("www.example.test"));
        }
        seen
    };
    let both = wait_for(SOON, || (drawn(40) == set(&[WEB1, WEB2])).then_some(()));
    assert!(both.is_some(), "{}", w.controller.log());
    std::fs::write(&inventory, "f1 down 1 f2 up 7").unwrap();
    // The next run's verdict and weight, as explain shows them.
    let explain = || w.controller.ctl(&["explain", "--from", "203.0.113.1", "www.example.test"]).unwrap().to_string();
    let applied = wait_for(SOON, || {
        let e = explain();
        (e.contains("weight 7") && e.contains("from the inventory")).then_some(e)
    });
    assert!(applied.is_some(), "{}\n{}", explain(), w.controller.log());
    assert_eq!(drawn(40), set(&[WEB2]), "f1 is down");
    let status = status_feed(&w, "cmdb");
    assert!(status["source"].as_str().unwrap().contains("every 1s"), "{status}");

    // The inventory goes away: the program fails, the feed goes stale after 3 s, and
    // on_stale = "down" takes its targets out (the name falls back to serve-all).
    std::fs::write(&inventory, "fail").unwrap();
    let stale = wait_for(Duration::from_secs(10), || status_feed(&w, "cmdb")["stale"].as_bool().filter(|s| *s));
    assert!(stale.is_some(), "{}", w.controller.log());
    let status = status_feed(&w, "cmdb");
    assert!(status["result"].as_str().unwrap().contains("inventory unreachable"), "{status}");
    let targets = w.controller.ctl(&["status"]).unwrap()["status"]["targets"].to_string();
    assert!(targets.contains("feed cmdb stale"), "{targets}");
    // Back: fresh again.
    std::fs::write(&inventory, "f1 up 1 f2 up 1").unwrap();
    let fresh = wait_for(SOON, || status_feed(&w, "cmdb")["stale"].as_bool().filter(|s| !*s));
    assert!(fresh.is_some(), "{}", w.controller.log());
    assert!(w.controller.log().contains("feed is fresh again"));
}

/// POSTs `body` to the push listener from inside the server's namespace with Python's
/// own HTTP client; returns (status, reply).
fn push(w: &World, port: u16, token: Option<&str>, body: &str) -> (u16, String) {
    let script = r#"
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[1], data=sys.stdin.buffer.read(), method="POST")
if sys.argv[2]:
    req.add_header("Authorization", "Bearer " + sys.argv[2])
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(r.status, r.read().decode().strip())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode().strip())
"#;
    use std::io::Write as _;
    let mut child = netns::command(&w.lab.server_ns, "/usr/bin/python3")
        .args(["-c", script, &format!("http://127.0.0.1:{port}/feeds/cmdb"), token.unwrap_or("")])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (status, reply) = text.split_once(' ').unwrap_or((&text, ""));
    (status.parse().unwrap_or(0), reply.to_string())
}

#[test]
fn an_http_push_needs_its_token_and_applies_whole_under_load() {
    let dir = primwatch_tests::TempDir::new("pw-feed-push").unwrap();
    let token_file = dir.0.join("token");
    let token = "3f9c2a7e51b04d8e9a6c1f2b7d3e8a90";
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let port = 9300 + (std::process::id() % 500) as u16;
    let feed = format!(
        "[feeds.cmdb]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\nfirst_batch_wait = \"0s\"\n\
         kinds = [\"health\", \"names\"]\n",
        token_file.display()
    );
    let w = world(&fed_tables(&feed, "all"));
    // No batch yet: the feed's targets are down, the name serves all (fail open).
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let header = "{\"primwatch_feed\": 1}\n";
    let batch = |f1: &str, names: &str| {
        format!(
            "{header}{{\"target\": \"f1\", \"health\": \"{f1}\"}}\n{{\"target\": \"f2\", \"health\": \"up\"}}\n{names}"
        )
    };
    let (status, reply) = push(&w, port, None, &batch("down", ""));
    assert_eq!(status, 401, "{reply}");
    let (status, reply) = push(&w, port, Some("0000000000000000deadbeefdeadbeef"), &batch("down", ""));
    assert_eq!(status, 401, "{reply}");
    let (status, reply) = push(&w, port, Some(token), &format!("{header}{{\"target\": \"f1\"}}\n"));
    assert_eq!(status, 422, "{reply}");
    assert!(reply.contains("line 2"), "{reply}");
    let (status, reply) = push(&w, port, Some(token), &batch("down", ""));
    assert_eq!((status, reply.as_str()), (200, "applied 2 items"));
    w.expect("www.example.test", &[WEB2], SOON);

    // Under load: each batch flips f1 and moves a fed name; every reply is one batch's
    // answer or the other's, never a mix.
    let tenant = "{\"name\": \"tenant.example.test\", \"groups\": [\"fed\"]}\n";
    let load = w.steady_load("www.example.test", vec![set(&[WEB2]), set(&[WEB1, WEB2])]);
    for i in 0..40 {
        let (status, reply) = push(&w, port, Some(token), &batch(if i % 2 == 0 { "up" } else { "down" }, tenant));
        assert_eq!(status, 200, "{reply}");
    }
    let result = load.finish();
    result.assert_clean();
    assert!(result.per_set[0] > 0 && result.per_set[1] > 0, "both batches served: {:?}", result.per_set);
    w.expect("tenant.example.test", &[WEB2], SOON);
    let stats = w.controller.ctl(&["stats"]).unwrap().to_string();
    assert!(stats.contains("\"applied\":41"), "{stats}");
}

/// A long-running feed program: a batch (ended by an empty line) whenever its
/// inventory changes; says nothing while the inventory says "quiet".
const STREAM: &str = r#"
import json, sys, time
last = None
while True:
    state = open(sys.argv[1]).read().split()
    if state and state[0] != "quiet" and state != last:
        print(json.dumps({"primwatch_feed": 1}))
        for target, health in zip(state[0::2], state[1::2]):
            print(json.dumps({"target": target, "health": health}))
        print("", flush=True)
        last = state
    time.sleep(0.2)
"#;

#[test]
fn a_streaming_feed_applies_each_batch_and_a_persisted_batch_survives_a_restart() {
    let (_dir, program, inventory) = feed_program("pw-feed-stream", STREAM, "f1 up f2 up");
    let feed = format!(
        "[feeds.cmdb]\ncommand = [\"/usr/bin/python3\", \"{}\", \"{}\"]\nstream = true\npersist = true\n\
         first_batch_wait = \"2s\"\nkinds = [\"health\"]\n",
        program.display(),
        inventory.display()
    );
    let mut w = world(&fed_tables(&feed, "all"));
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    std::fs::write(&inventory, "f1 down f2 up").unwrap();
    w.expect("www.example.test", &[WEB2], SOON);
    std::fs::write(&inventory, "f1 up f2 down").unwrap();
    w.expect("www.example.test", &[WEB1], SOON);

    // Restarted while the program says nothing: the saved batch serves (f2 still down),
    // marked as restored, not the "no batch yet" of a feed without persist.
    std::fs::write(&inventory, "quiet").unwrap();
    w.controller.restart().unwrap();
    w.expect("www.example.test", &[WEB1], SOON);
    let status = status_feed(&w, "cmdb");
    assert_eq!(status["restored"], true, "{status}");
    assert!(status["source"].as_str().unwrap().starts_with("stream from"), "{status}");
    // The stream speaks again: fresh data replaces the restored batch.
    std::fs::write(&inventory, "f1 up f2 up").unwrap();
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    assert_eq!(status_feed(&w, "cmdb")["restored"], false);
}
