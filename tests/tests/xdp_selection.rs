//! Per-query selection inside the XDP program (round-robin, weighted, random, max
//! answers, NODATA), through BPF_PROG_TEST_RUN with real replies parsed by hickory.

use std::{collections::BTreeMap, net::IpAddr};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use primwatch_tests::{
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_TX},
    packet::{expected_reply, udp_frame, verify_checksums, Flow},
};

const CONFIG: &str = r#"
[targets.a1]
address = "10.0.0.1"
weight = 1
[targets.a2]
address = "10.0.0.2"
weight = 3
[targets.a3]
address = "10.0.0.3"
weight = 6
[targets.a4]
address = "10.0.0.4"

[groups.rr]
members = ["a1", "a2", "a3"]
policy = "round-robin"
max_answers = 2
[groups.weighted]
members = ["a1", "a2", "a3"]
policy = "weighted"
[groups.random]
members = ["a1", "a2", "a3", "a4"]
policy = "random"
[groups.first]
members = ["a3", "a1"]
policy = "first"
[groups.v4only]
members = ["a1"]
[groups.sticky]
members = ["a1", "a2", "a3"]
policy = "sticky"

[names."rr.example.test"]
groups = ["rr"]
[names."weighted.example.test"]
groups = ["weighted"]
[names."random.example.test"]
groups = ["random"]
[names."first.example.test"]
groups = ["first"]
[names."sticky.example.test"]
groups = ["sticky"]
[names."nodata.example.test"]
groups = ["v4only"]
all_down = "nodata"
"#;

/// Sends `n` queries; returns the replies' answer lists.
fn ask(h: &Harness, name: &str, qtype: RecordType, n: usize) -> Vec<Vec<IpAddr>> {
    let flow = Flow::client_to_server(false);
    (0..n)
        .map(|i| {
            let query = dns::query(i as u16, name, qtype, None).unwrap();
            let out = h.run(&udp_frame(&flow, 64, &query)).unwrap();
            assert_eq!(out.verdict, XDP_TX);
            let payload = verify_checksums(&out.frame).unwrap();
            dns::addresses(&dns::parse(&payload).unwrap())
        })
        .collect()
}

fn first_counts(replies: &[Vec<IpAddr>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in replies {
        *counts.entry(r[0].to_string()).or_default() += 1;
    }
    counts
}

#[test]
fn round_robin_rotates_and_caps_answers() {
    let h = Harness::new(53, CONFIG).unwrap();
    let replies = ask(&h, "rr.example.test", RecordType::A, 3000);
    for r in &replies {
        assert_eq!(r.len(), 2, "max_answers = 2");
        // Consecutive members in rotation order.
        let last = |a: &IpAddr| a.to_string().rsplit('.').next().unwrap().parse::<u8>().unwrap();
        assert_eq!(last(&r[1]), last(&r[0]) % 3 + 1, "{r:?}");
    }
    for (address, n) in first_counts(&replies) {
        assert!((950..=1050).contains(&n), "{address} led {n} of 3000 replies");
    }
}

/// XDP and PowerDNS pick weighted records from the same table: 100,000 draws on each
/// path give every record the same share within 1 % (absolute), and the weights' share
/// within 5 % of itself.
#[test]
fn weighted_shares_follow_weights_on_both_paths() {
    let h = Harness::new(53, CONFIG).unwrap();
    let n = 100_000;
    let xdp = first_counts(&ask(&h, "weighted.example.test", RecordType::A, n));
    let config = primwatch::config::Config::parse(
        std::path::Path::new("t.toml"),
        &format!("[server]\ninterfaces = [\"none\"]\n{CONFIG}"),
    )
    .unwrap();
    let table = primwatch::answers::pdns_backend::AnswerTable::build(&config, &primwatch::health::AllUp);
    let request = serde_json::json!({"method": "lookup", "parameters":
        {"qname": "weighted.example.test.", "qtype": "A", "remote": "192.0.2.1"}});
    let mut powerdns: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..n {
        let reply = primwatch::answers::pdns_backend::answer(&request, &table);
        let first = reply["result"][0]["content"].as_str().unwrap().to_string();
        *powerdns.entry(first).or_default() += 1;
    }
    for (address, weight) in [("10.0.0.1", 1.0), ("10.0.0.2", 3.0), ("10.0.0.3", 6.0)] {
        let (from_xdp, from_powerdns) = (xdp[address] as f64 / n as f64, powerdns[address] as f64 / n as f64);
        let expected = weight / 10.0;
        assert!(
            (from_xdp - expected).abs() <= expected * 0.05,
            "{address}: XDP share {from_xdp:.4}, expected {expected}"
        );
        assert!((from_xdp - from_powerdns).abs() <= 0.01, "{address}: XDP {from_xdp:.4}, PowerDNS {from_powerdns:.4}");
    }
}

/// The first record XDP answers `query` with, from `src`; and the reply's ECS scope.
fn first_from(h: &Harness, src: IpAddr, query: &[u8]) -> (IpAddr, Option<u8>) {
    let flow = Flow { src, ..Flow::client_to_server(src.is_ipv6()) };
    let out = h.run(&udp_frame(&flow, 64, query)).unwrap();
    assert_eq!(out.verdict, XDP_TX, "from {src}");
    let reply = dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap();
    (dns::addresses(&reply)[0], dns::ecs_scope(&reply))
}

/// Sticky: every client /24 gets one first record, the one the PowerDNS backend gives
/// the same client, with shares following the weights over 2,000 prefixes; an ECS
/// subnet decides in place of the source address, and the reply's scope says /24.
#[test]
fn sticky_answers_follow_the_client_prefix_on_both_paths() {
    let h = Harness::new(53, CONFIG).unwrap();
    let config = primwatch::config::Config::parse(
        std::path::Path::new("t.toml"),
        &format!("[server]\ninterfaces = [\"none\"]\n{CONFIG}"),
    )
    .unwrap();
    let table = primwatch::answers::pdns_backend::AnswerTable::build(&config, &primwatch::health::AllUp);
    let powerdns_first = |remote: &str, real_remote: &str| {
        let request = serde_json::json!({"method": "lookup", "parameters":
            {"qname": "sticky.example.test.", "qtype": "A", "remote": remote, "real-remote": real_remote}});
        let reply = primwatch::answers::pdns_backend::answer(&request, &table);
        let first = reply["result"][0]["content"].as_str().unwrap().parse::<IpAddr>().unwrap();
        (first, reply["result"][0]["scopeMask"].as_u64().unwrap() as u8)
    };
    let query = dns::query(1, "sticky.example.test", RecordType::A, None).unwrap();
    let mut counts: BTreeMap<IpAddr, usize> = BTreeMap::new();
    let prefixes = 2000;
    for i in 0..prefixes {
        let [_, _, b, c] = (i as u32).to_be_bytes();
        let host = |d: u8| IpAddr::from([10, 100 + b, c, d]);
        let (first, _) = first_from(&h, host(7), &query);
        for d in [1, 99, 254] {
            assert_eq!(first_from(&h, host(d), &query).0, first, "one answer for {}/24", host(0));
        }
        let (from_powerdns, _) = powerdns_first(&host(7).to_string(), &format!("{}/32", host(7)));
        assert_eq!(from_powerdns, first, "PowerDNS and XDP agree for {}", host(7));
        *counts.entry(first).or_default() += 1;
    }
    for (address, weight) in [("10.0.0.1", 1.0), ("10.0.0.2", 3.0), ("10.0.0.3", 6.0)] {
        let share = counts[&address.parse::<IpAddr>().unwrap()] as f64 / prefixes as f64;
        assert!((share - weight / 10.0).abs() < 0.05, "{address}: {share:.3} of client prefixes, weight {weight}/10");
    }
    // ECS: the subnet decides, whoever forwards it; scope /24 (the sticky length).
    for i in 0..50u8 {
        let subnet = [198, 51, i, 0];
        let mut data = vec![0, 1, 24, 0];
        data.extend_from_slice(&subnet[..3]);
        let edns = EdnsQuery { options: vec![(8, data)], ..EdnsQuery::default() };
        let query = dns::query(2, "sticky.example.test", RecordType::A, Some(edns)).unwrap();
        let (first, scope) = first_from(&h, "10.77.0.2".parse().unwrap(), &query);
        let real_remote = format!("198.51.{i}.0/24");
        let (from_powerdns, powerdns_scope) = powerdns_first("10.77.0.2", &real_remote);
        assert_eq!((first, scope), (from_powerdns, Some(24)), "{real_remote}");
        assert_eq!(powerdns_scope, 24);
    }
}

#[test]
fn random_is_uniform() {
    let h = Harness::new(53, CONFIG).unwrap();
    let n = 20_000;
    let counts = first_counts(&ask(&h, "random.example.test", RecordType::A, n));
    assert_eq!(counts.len(), 4);
    for (address, c) in counts {
        let share = c as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.02, "{address}: {share}");
    }
}

#[test]
fn first_answers_the_first_listed_member() {
    let h = Harness::new(53, CONFIG).unwrap();
    for r in ask(&h, "first.example.test", RecordType::A, 50) {
        assert_eq!(r, vec!["10.0.0.3".parse::<IpAddr>().unwrap()]);
    }
}

#[test]
fn nodata_when_all_down_answers_noerror_without_records() {
    struct Down;
    impl primwatch::health::Health for Down {
        fn target_eligible(&self, _: &str) -> bool {
            false
        }
    }
    let h = Harness::with_health(53, CONFIG, &Down).unwrap();
    let flow = Flow::client_to_server(true);
    let query = dns::query(77, "nodata.example.test", RecordType::A, Some(EdnsQuery::default())).unwrap();
    let out = h.run(&udp_frame(&flow, 64, &query)).unwrap();
    assert_eq!(out.verdict, XDP_TX);
    assert_eq!(out.frame, udp_frame(&flow.reversed(), 64, &expected_reply(&query, &[]).unwrap()));
    let msg = dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap();
    assert_eq!(msg.response_code(), ResponseCode::NoError);
    assert!(msg.answers().is_empty());
    // The name has no IPv6 members at all: AAAA is not served, so it is passed.
    let query = dns::query(78, "nodata.example.test", RecordType::AAAA, None).unwrap();
    assert_eq!(h.run(&udp_frame(&flow, 64, &query)).unwrap().verdict, primwatch_tests::harness::XDP_PASS);
}

#[test]
fn rotated_replies_are_byte_exact() {
    let h = Harness::new(53, CONFIG).unwrap();
    let flow = Flow::client_to_server(false);
    for i in 0..6u16 {
        let query = dns::query(i, "rr.example.test", RecordType::A, Some(EdnsQuery::default())).unwrap();
        let out = h.run(&udp_frame(&flow, 64, &query)).unwrap();
        let got = dns::addresses(&dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap());
        let rrs: Vec<_> = got
            .iter()
            .map(|a| match a {
                IpAddr::V4(v4) => (1u16, 30u32, v4.octets().to_vec()),
                IpAddr::V6(_) => unreachable!(),
            })
            .collect();
        assert_eq!(out.frame, udp_frame(&flow.reversed(), 64, &expected_reply(&query, &rrs).unwrap()));
    }
}
