//! Many names through the writer: a new name plan (a reload) writes only the entries
//! that differ, deletes the ones gone, and keeps each kept entry's counters; what XDP
//! answers afterwards is checked query by query against the new config.

use std::fmt::Write as _;

use hickory_proto::{op::ResponseCode, rr::RecordType};
use primwatch::dns::name::DnsName;
use primwatch_common::NameKey;
use primwatch_tests::{
    dns,
    harness::{Harness, XDP_PASS, XDP_TX},
    packet::{udp_frame, verify_checksums, Flow},
};

const GROUPS: &str = r#"
[targets.a1]
address = "10.0.0.1"
[targets.a2]
address = "10.0.0.2"
[groups.one]
members = ["a1"]
[groups.two]
members = ["a2"]
"#;

/// `names` as `[names]` tables, each with its group.
fn config(names: &[(String, &str)]) -> String {
    let mut text = GROUPS.to_string();
    for (name, group) in names {
        let _ = write!(text, "[names.\"{name}\"]\ngroups = [\"{group}\"]\n");
    }
    text
}

/// XDP's answer for `name`: Some(addresses) if answered, None if passed.
fn answer(h: &Harness, name: &str) -> Option<Vec<String>> {
    let query = dns::query(7, name, RecordType::A, None).unwrap();
    let out = h.run(&udp_frame(&Flow::client_to_server(false), 64, &query)).unwrap();
    if out.verdict == XDP_PASS {
        return None;
    }
    assert_eq!(out.verdict, XDP_TX);
    let reply = dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap();
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    Some(dns::addresses(&reply).iter().map(ToString::to_string).collect())
}

fn key(name: &str) -> NameKey {
    NameKey::new(DnsName::parse(name).unwrap().hash(), 0)
}

#[test]
fn a_new_plan_writes_only_what_changed() {
    // 300 names: n0..n299, even ones in group one, odd ones in group two.
    let before: Vec<(String, &str)> =
        (0..300).map(|i| (format!("n{i}.example.test"), if i % 2 == 0 { "one" } else { "two" })).collect();
    let mut h = Harness::new(53, &config(&before)).unwrap();
    for i in [0, 1, 150, 299] {
        let want = if i % 2 == 0 { "10.0.0.1" } else { "10.0.0.2" };
        assert_eq!(answer(&h, &format!("n{i}.example.test")), Some(vec![want.to_string()]));
    }
    // Count answers on a name that stays unchanged.
    for _ in 0..5 {
        answer(&h, "n10.example.test");
    }
    assert_eq!(h.answer_counts()[&key("n10.example.test")], (5, 0));

    // The reload: n0..n19 gone, m0..m9 new, n20..n29 moved to the other group.
    let mut after: Vec<(String, &str)> = before[20..].to_vec();
    for (i, (_, group)) in after.iter_mut().enumerate().take(10) {
        *group = if i % 2 == 0 { "two" } else { "one" };
    }
    after.extend((0..10).map(|i| (format!("m{i}.example.test"), "one")));
    let stats = h.reload_names(53, &config(&after)).unwrap();
    assert_eq!((stats.written, stats.deleted, stats.unchanged), (20, 20, 270), "{stats:?}");

    for i in 0..20 {
        assert_eq!(answer(&h, &format!("n{i}.example.test")), None, "n{i} deleted");
    }
    for i in 20..30 {
        let want = if i % 2 == 0 { "10.0.0.2" } else { "10.0.0.1" };
        assert_eq!(answer(&h, &format!("n{i}.example.test")), Some(vec![want.to_string()]), "n{i} moved");
    }
    for i in 0..10 {
        assert_eq!(answer(&h, &format!("m{i}.example.test")), Some(vec!["10.0.0.1".to_string()]), "m{i} added");
    }
    // A kept entry keeps its counters; a new one starts from zero on a slot of its own.
    let counts = h.answer_counts();
    assert_eq!(counts.len(), 290);
    assert!(!counts.contains_key(&key("n10.example.test")), "n10 was deleted");
    assert_eq!(counts[&key("m0.example.test")], (1, 0));
    answer(&h, "n150.example.test");
    assert_eq!(h.answer_counts()[&key("n150.example.test")], (2, 0), "asked once before the reload, once after");

    // The same plan again: nothing to write.
    let stats = h.reload_names(53, &config(&after)).unwrap();
    assert_eq!((stats.written, stats.deleted, stats.unchanged), (0, 0, 290), "{stats:?}");
}

#[test]
fn a_reused_counter_slot_starts_from_zero() {
    let names = |prefix: &str| -> Vec<(String, &'static str)> {
        (0..50).map(|i| (format!("{prefix}{i}.example.test"), "one")).collect()
    };
    let mut h = Harness::new(53, &config(&names("old"))).unwrap();
    for i in 0..50 {
        answer(&h, &format!("old{i}.example.test"));
    }
    // Every slot freed, then taken by new names: none inherits the old counts.
    h.reload_names(53, &config(&names("new"))).unwrap();
    let counts = h.answer_counts();
    assert_eq!(counts.len(), 50);
    assert!(counts.values().all(|&c| c == (0, 0)), "{counts:?}");
}

#[test]
fn an_entry_written_outside_the_plan_is_removed_by_the_next_sync() {
    let names: Vec<(String, &str)> = (0..20).map(|i| (format!("n{i}.example.test"), "one")).collect();
    let mut h = Harness::new(53, &config(&names)).unwrap();
    // A stray entry (as a failed write would leave the map unknown to the writer).
    let mut stray = h.entry(key("n0.example.test").name_hash).unwrap();
    let other = DnsName::parse("stray.example.test").unwrap();
    stray.name = other.padded();
    stray.name_len = other.wire().len() as u32;
    h.insert_entry(other.hash(), stray).unwrap();
    assert_eq!(answer(&h, "stray.example.test"), Some(vec!["10.0.0.1".to_string()]));
    let stats = h.reload_names(53, &config(&names)).unwrap();
    assert_eq!((stats.written, stats.deleted), (20, 1), "every entry rewritten, the stray deleted");
    assert_eq!(answer(&h, "stray.example.test"), None);
    assert_eq!(answer(&h, "n5.example.test"), Some(vec!["10.0.0.1".to_string()]));
}
