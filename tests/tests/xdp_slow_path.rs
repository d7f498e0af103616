//! The slow-path guard in the XDP program (BPF_PROG_TEST_RUN): the queries XDP passes
//! to the DNS server are held to a total and a per-prefix budget; exempt sources and
//! queries with a verified server cookie go through over budget; what is not a query
//! for the DNS server is never held; answers are not charged.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use primwatch_tests::{
    cookie::cookie_option,
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_DROP, XDP_PASS, XDP_TX},
    packet::{udp_frame, verify_checksums, Flow},
};

const NAMES: &str = r#"
[names."www.example.test"]
a = ["10.1.1.1"]
"#;

fn harness(slow_path: &str) -> Harness {
    Harness::new(53, &format!("{NAMES}\n{slow_path}\n")).unwrap()
}

fn flow_from(src: &str) -> Flow {
    let src: IpAddr = src.parse().unwrap();
    Flow { src, ..Flow::client_to_server(src.is_ipv6()) }
}

/// A query XDP passes (a name it does not serve), from `flow`.
fn miss(flow: &Flow, edns: Option<EdnsQuery>) -> Vec<u8> {
    udp_frame(flow, 64, &dns::query(9, "nx.example.test", RecordType::A, edns).unwrap())
}

/// The verdicts of `n` passed queries from `flow`; every passed frame is unchanged.
fn verdicts(h: &Harness, flow: &Flow, n: usize) -> Vec<u32> {
    let frame = miss(flow, None);
    (0..n)
        .map(|_| {
            let out = h.run(&frame).unwrap();
            if out.verdict == XDP_PASS {
                assert_eq!(out.frame, frame);
            }
            out.verdict
        })
        .collect()
}

fn count(verdicts: &[u32], verdict: u32) -> usize {
    verdicts.iter().filter(|v| **v == verdict).count()
}

#[test]
fn passed_queries_are_held_to_the_total_budget_from_any_source() {
    let h =
        harness("[slow_path]\nqueries_per_second = 5\nprefix_queries_per_second = 0\nburst_seconds = 1\nslip = 0\n");
    // Twenty queries from twenty /24s, IPv4 and IPv6: the budget is one second's five
    // (a few µs pass between runs, so a sixth at most), the rest dropped.
    let mut all = Vec::new();
    for i in 0..20 {
        let src = if i % 2 == 0 { format!("10.9.{i}.1") } else { format!("fd77:{i}::2") };
        all.extend(verdicts(&h, &flow_from(&src), 1));
    }
    let passed = count(&all, XDP_PASS);
    assert!((5..=6).contains(&passed), "{all:?}");
    assert_eq!(count(&all, XDP_DROP), 20 - passed, "{all:?}");
    assert_eq!(&all[..5], &[XDP_PASS; 5], "the budget is spent first come, first served");
    let c = h.counters().unwrap();
    assert_eq!((c.slow_path_passed, c.slow_path_dropped), (passed as u64, 20 - passed as u64), "{c:?}");
    assert_eq!(c.pass_name_not_found, 20, "each query counted once by why XDP passed it");
    // Answers are not charged, and are not held.
    let answered =
        h.run(&udp_frame(&flow_from("10.9.0.1"), 64, &dns::query(1, "www.example.test", RecordType::A, None).unwrap()));
    assert_eq!(answered.unwrap().verdict, XDP_TX);
    // Refilled at five a second.
    std::thread::sleep(std::time::Duration::from_millis(450));
    let later = verdicts(&h, &flow_from("10.9.99.1"), 4);
    assert!(count(&later, XDP_PASS) >= 2 && count(&later, XDP_DROP) >= 1, "{later:?}");
}

#[test]
fn each_client_prefix_has_its_own_budget() {
    let h =
        harness("[slow_path]\nqueries_per_second = 0\nprefix_queries_per_second = 3\nburst_seconds = 1\nslip = 0\n");
    for (first, second, other) in
        [("10.9.1.1", "10.9.1.200", "10.9.2.1"), ("fd77:0:0:100::1", "fd77:0:0:1ff::9", "fd77:0:0:200::1")]
    {
        // Two addresses of one /24 (or /56) share three; the next prefix has its own.
        let mut shared = verdicts(&h, &flow_from(first), 2);
        shared.extend(verdicts(&h, &flow_from(second), 4));
        assert_eq!(&shared[..3], &[XDP_PASS; 3], "{first}: {shared:?}");
        assert!(count(&shared[3..], XDP_DROP) >= 2, "{first}: {shared:?}");
        assert_eq!(&verdicts(&h, &flow_from(other), 3), &[XDP_PASS; 3], "{other}");
    }
}

#[test]
fn exempt_sources_are_never_held_and_default_to_rrl_exempt() {
    for config in [
        "[slow_path]\nqueries_per_second = 1\nexempt = [\"10.9.3.0/24\", \"fd77:3::/48\"]\n",
        // Without its own list, the guard spares [rrl]'s.
        "[rrl]\nexempt = [\"10.9.3.0/24\", \"fd77:3::/48\"]\n[slow_path]\nqueries_per_second = 1\n",
    ] {
        let h = harness(config);
        for src in ["10.9.3.7", "fd77:3::7"] {
            assert_eq!(verdicts(&h, &flow_from(src), 10), vec![XDP_PASS; 10], "{config}: {src}");
        }
        assert_eq!(h.counters().unwrap().slow_path_exempt, 20, "{config}");
        assert!(verdicts(&h, &flow_from("10.9.4.7"), 10).contains(&XDP_DROP), "{config}: others are held");
    }
}

#[test]
fn over_budget_a_verified_server_cookie_goes_through_and_a_forged_one_does_not() {
    let h =
        harness("[slow_path]\nqueries_per_second = 1\nprefix_queries_per_second = 0\nburst_seconds = 1\nslip = 0\n");
    let flow = flow_from("10.9.5.5");
    // A server cookie from an answer XDP gives (cookies are on by default).
    let client = [0x42u8; 8];
    let ask_www = EdnsQuery { options: vec![(10, client.to_vec())], ..Default::default() };
    let out = h.run(&udp_frame(&flow, 64, &dns::query(2, "www.example.test", RecordType::A, Some(ask_www)).unwrap()));
    let reply = verify_checksums(&out.unwrap().frame).unwrap();
    let (_, server) = cookie_option(&reply).expect("a server cookie");
    let cookie = [client.to_vec(), server.clone()].concat();
    // The budget spent.
    while verdicts(&h, &flow_from("10.9.6.6"), 1) == [XDP_PASS] {}
    let before = h.counters().unwrap();
    let with = |cookie: Vec<u8>| miss(&flow, Some(EdnsQuery { options: vec![(10, cookie)], ..Default::default() }));
    for _ in 0..5 {
        let frame = with(cookie.clone());
        let out = h.run(&frame).unwrap();
        assert_eq!(out.verdict, XDP_PASS, "a verified cookie proves the source");
        assert_eq!(out.frame, frame, "passed unchanged");
    }
    let mut forged = cookie.clone();
    forged[20] ^= 1;
    for bad in [forged, client.to_vec()] {
        assert_eq!(h.run(&with(bad.clone())).unwrap().verdict, XDP_DROP, "{bad:02x?}");
    }
    let after = h.counters().unwrap();
    assert_eq!(after.slow_path_cookie - before.slow_path_cookie, 5, "{after:?}");
    assert_eq!(after.slow_path_dropped - before.slow_path_dropped, 2, "{after:?}");
    assert_eq!(after.pass_name_not_found - before.pass_name_not_found, 7, "counted once, not again when resumed");
}

#[test]
fn only_queries_for_the_dns_server_are_held() {
    let h = harness("[slow_path]\nqueries_per_second = 1\nprefix_queries_per_second = 0\nburst_seconds = 1\n");
    while verdicts(&h, &flow_from("10.9.7.7"), 1) == [XDP_PASS] {}
    // Another UDP port, and a query to another host's address: the kernel's, not ours.
    let other_port = Flow { dst_port: 5353, ..flow_from("10.9.7.7") };
    let frame = miss(&other_port, None);
    for _ in 0..5 {
        assert_eq!(h.run(&frame).unwrap().verdict, XDP_PASS);
    }
    let elsewhere = Flow { dst: "10.77.9.9".parse().unwrap(), ..flow_from("10.9.7.7") };
    let frame = miss(&elsewhere, None);
    for _ in 0..5 {
        assert_eq!(h.run(&frame).unwrap().verdict, XDP_PASS);
    }
}

#[test]
fn zero_rates_turn_the_guard_off() {
    let h = harness("[slow_path]\nqueries_per_second = 0\nprefix_queries_per_second = 0\n");
    assert_eq!(verdicts(&h, &flow_from("10.9.8.8"), 50), vec![XDP_PASS; 50]);
    let c = h.counters().unwrap();
    assert_eq!((c.slow_path_passed, c.slow_path_dropped), (0, 0));
}

#[test]
fn check_config_refuses_out_of_range_budgets_at_their_line() {
    for (bad, want) in [
        ("queries_per_second = 10000001", "slow_path.queries_per_second = 10000001 is out of range"),
        ("prefix_queries_per_second = -1", "t.toml:8:29: invalid value: integer `-1`"),
        ("burst_seconds = 0", "slow_path.burst_seconds = 0 is out of range: 1..=60"),
        ("slip = 11", "slow_path.slip = 11 is out of range: 0..=10"),
        ("ipv4_prefix_len = 33", "slow_path.ipv4_prefix_len = 33 is out of range"),
        ("exempt = [\"10.9.0.0/33\"]", "slow_path.exempt: '10.9.0.0/33' is not an address or prefix"),
        ("budget = 5", "unknown field"),
    ] {
        let text = format!("[server]\ninterfaces = [\"eth0\"]\n{NAMES}\n[slow_path]\n{bad}\n");
        let e = primwatch::config::Config::parse(std::path::Path::new("t.toml"), &text).unwrap_err().to_string();
        assert!(e.contains(want) && e.starts_with("t.toml:"), "{bad}: {e}");
    }
}

/// A query the answering program sends through the cookie program and then passes
/// (its reply would not fit) is counted once, by why it was passed: only a second
/// pass the guard asked for goes uncounted.
#[test]
fn a_query_passed_after_its_cookie_was_made_is_counted_once() {
    let sixteen: Vec<String> = (1..=16).map(|i| format!("\"2001:db8::{i:x}\"")).collect();
    let h = harness(&format!("[names.\"big.example.test\"]\naaaa = [{}]\n", sixteen.join(", ")));
    let edns = EdnsQuery { payload: 512, options: vec![(10, vec![0x33; 8])], ..Default::default() };
    let frame = udp_frame(
        &flow_from("10.9.9.9"),
        64,
        &dns::query(4, "big.example.test", RecordType::AAAA, Some(edns)).unwrap(),
    );
    let before = h.counters().unwrap();
    let out = h.run(&frame).unwrap();
    assert_eq!((out.verdict, out.frame == frame), (XDP_PASS, true), "too large for 512 bytes: passed intact");
    let after = h.counters().unwrap();
    assert_eq!(after.pass_too_large - before.pass_too_large, 1);
    assert_eq!(after.slow_path_passed - before.slow_path_passed, 1);
}

/// Over budget, every `slip`-th query gets an empty TC=1 reply, compared byte for byte
/// with one built here from the query: the question kept (odd and even name lengths:
/// the checksum's alignment), QR and TC set, RD copied, no records, no OPT; checksums
/// verified. IPv4 and IPv6, with and without EDNS.
#[test]
fn over_budget_every_slipth_query_gets_an_empty_truncated_reply() {
    let h = harness("[slow_path]\nqueries_per_second = 1\nprefix_queries_per_second = 0\nburst_seconds = 1\n");
    while verdicts(&h, &flow_from("10.9.10.10"), 1) == [XDP_PASS] {}
    let before = h.counters().unwrap();
    let mut held = Vec::new();
    for (src, name, edns) in [
        ("10.9.11.1", "nx.example.test", None),
        ("10.9.11.2", "nxx.example.test", Some(EdnsQuery::default())),
        ("fd77:11::3", "nx.example.test", Some(EdnsQuery { options: vec![(10, vec![7; 8])], ..Default::default() })),
        ("fd77:11::4", "nxx.example.test", None),
    ] {
        let flow = flow_from(src);
        let mut query = dns::query(0x4242, name, RecordType::A, edns).unwrap();
        query[2] |= 0x01; // RD
        for _ in 0..2 {
            let frame = udp_frame(&flow, 64, &query);
            let out = h.run(&frame).unwrap();
            held.push(out.verdict);
            if out.verdict == XDP_TX {
                // 12 header bytes and the question: the name, QTYPE and QCLASS.
                let question_end = 12 + name.len() + 2 + 4;
                let mut expected = query[..question_end].to_vec();
                expected[2] |= 0x82; // QR, TC (RD kept)
                expected[10..12].copy_from_slice(&[0, 0]); // ARCOUNT: no OPT
                assert_eq!(out.frame, udp_frame(&flow.reversed(), 64, &expected), "{src} {name}");
                verify_checksums(&out.frame).unwrap();
            }
        }
    }
    // The query that ended the loop above was the first held (dropped): these are the
    // 2nd, 3rd, … — every 2nd of them a TC reply.
    assert_eq!(held, [XDP_TX, XDP_DROP].repeat(4), "every 2nd held query");
    let after = h.counters().unwrap();
    assert_eq!(after.slow_path_slipped - before.slow_path_slipped, 4);
    assert_eq!(after.slow_path_dropped - before.slow_path_dropped, 4);
}
