//! Traffic policies end to end, with real backends dying and coming back, answers from
//! XDP over UDP and from PowerDNS (remote backend) over TCP for the same client:
//! checks on another address than the one answered, calculated targets (at least N
//! of M, and the inverse for a maintenance page), and weights set at run time with
//! `ctl target NAME weight`, kept across a restart.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use hickory_proto::rr::RecordType;
use primwatch_tests::{
    dns,
    world::{world_with, World, WEB1, WEB2, WEB3},
};

const SOON: Duration = Duration::from_secs(5);

/// The A set PowerDNS answers over TCP (XDP answers only UDP), from the same client.
fn tcp_set(w: &World, name: &str) -> BTreeSet<String> {
    let server = SocketAddr::new(w.lab.server_addr(false), 53);
    let reply =
        dns::exchange_tcp(&w.lab.client_ns, server, &dns::query(7, name, RecordType::A, None).unwrap()).unwrap();
    dns::addresses(&dns::parse(&reply).unwrap()).iter().map(|a| a.to_string()).collect()
}

/// Both paths answer `want` for `name` (within `SOON`).
fn both_paths(w: &World, name: &str, want: &[&str]) {
    w.expect(name, want, SOON);
    let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
    let agreed = primwatch_tests::wait_for(SOON, || (tcp_set(w, name) == want).then_some(()));
    assert!(agreed.is_some(), "{name}: PowerDNS answers {:?}, XDP {want:?}", tcp_set(w, name));
}

const SITE: &str = "192.0.2.10";
const SORRY: &str = "192.0.2.99";

#[test]
fn checks_on_another_address_and_calculated_targets_through_both_paths() {
    let mut w = world_with(
        &format!(
            r#"
# Answers carry WEB1's address; its checks probe WEB2's backend.
[targets.public]
address = "{WEB1}"
check_address = "{WEB2}"
checks = ["http"]
[groups.front]
members = ["public", "web3"]
policy = "all"
[names."front.example.test"]
groups = ["front"]

# The site is up while 2 of its 3 web servers are; the sorry page while it is not.
[targets.site]
address = "{SITE}"
calculated = {{ at_least = 2, of = ["web1", "web2", "web3"] }}
[targets.sorry]
address = "{SORRY}"
calculated = {{ inverse_of = "site" }}
[groups.main]
members = ["site"]
priority = 100
[groups.maintenance]
members = ["sorry"]
priority = 10
[names."site.example.test"]
groups = ["main", "maintenance"]
all_down = "nodata"

# Sticky: this client's prefix gets one member, the same on both paths.
[groups.sticky]
members = ["web1", "web2", "web3"]
policy = "sticky"
[names."sticky.example.test"]
groups = ["sticky"]
"#
        ),
        true,
    );
    both_paths(&w, "front.example.test", &[WEB1, WEB3]);
    both_paths(&w, "site.example.test", &[SITE]);
    let sticky = w.answers("sticky.example.test");
    assert_eq!(sticky.len(), 1, "{sticky:?}");
    for _ in 0..20 {
        assert_eq!(w.answers("sticky.example.test"), sticky, "XDP: one member for this client");
        assert_eq!(tcp_set(&w, "sticky.example.test"), sticky, "PowerDNS: the same member");
    }
    let status = w.controller.ctl(&["status"]).unwrap()["status"]["targets"].to_string();
    assert!(status.contains(&format!("\"check_address\":\"{WEB2}\"")), "{status}");

    // WEB2's backend dies: `public` (answered as WEB1) leaves, though WEB1's is fine;
    // the site keeps 2 of 3.
    w.backends[1].stop();
    both_paths(&w, "front.example.test", &[WEB3]);
    both_paths(&w, "site.example.test", &[SITE]);
    let explained = w.controller.ctl(&["explain", "--from", "203.0.113.1", "front.example.test"]).unwrap().to_string();
    assert!(explained.contains(&format!("checked at {WEB2}")), "{explained}");

    // A second web server dies: the site is down, the sorry page up, in one publish.
    w.backends[2].stop();
    both_paths(&w, "site.example.test", &[SORRY]);
    let explained = w.controller.ctl(&["explain", "--from", "203.0.113.1", "site.example.test"]).unwrap().to_string();
    assert!(explained.contains("1 of 3 eligible (web1), at least 2"), "{explained}");
    let log = w.controller.log();
    assert!(log.contains("name=site") && log.contains("name=sorry"), "{log}");

    // Back.
    w.backends[1].resume().unwrap();
    w.backends[2].resume().unwrap();
    both_paths(&w, "site.example.test", &[SITE]);
    both_paths(&w, "front.example.test", &[WEB1, WEB3]);
}

fn weight_of(w: &World, target: &str) -> u64 {
    let status = w.controller.ctl(&["status"]).unwrap();
    let targets = status["status"]["targets"].as_array().cloned().unwrap_or_default();
    targets.iter().find(|t| t["name"] == target).and_then(|t| t["weight"].as_u64()).unwrap_or(0)
}

#[test]
fn a_weight_set_at_run_time_is_kept_across_a_restart_and_undone_by_auto() {
    let mut w = world_with(
        r#"
[groups.web]
members = ["web1", "web2", "web3"]
policy = "weighted"
[names."www.example.test"]
groups = ["web"]
"#,
        false,
    );
    assert_eq!(weight_of(&w, "web1"), 1);
    let reply = w.controller.ctl(&["target", "web1", "weight", "70"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(weight_of(&w, "web1"), 70);
    // Replies start with web1 about 70 times in 72 (a reply carries one record).
    let mut web1 = 0;
    for _ in 0..200 {
        web1 += usize::from(w.answers("www.example.test").contains(WEB1));
    }
    assert!(web1 > 170, "web1 in {web1} of 200 replies");
    w.controller.restart().unwrap();
    assert_eq!(weight_of(&w, "web1"), 70, "kept across the restart");
    let reply = w.controller.ctl(&["target", "web1", "weight", "auto"]).unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(weight_of(&w, "web1"), 1);
    // Refused: out of range, on a group, and priority on a target (not a target action).
    for args in
        [&["target", "web1", "weight", "0"][..], &["group", "web", "weight", "3"], &["target", "web1", "priority", "3"]]
    {
        let out = std::process::Command::new(primwatch_tests::controller::binary())
            .args(["ctl", "--socket"])
            .arg(&w.controller.control_socket)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} accepted");
    }
}
