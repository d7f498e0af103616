//! Response rate limiting in the XDP program (BPF_PROG_TEST_RUN): answers counted per
//! client prefix; over the rate dropped, every `slip`-th sent empty with TC=1; exempt
//! prefixes and log-only mode; other prefixes unaffected.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use primwatch_tests::{
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_DROP, XDP_PASS, XDP_TX},
    packet::{expected_reply, udp_frame, verify_checksums, Flow},
};

const NAME: &str = r#"
[names."www.example.test"]
a = ["10.1.1.1"]
aaaa = ["2001:db8::1"]
"#;

fn harness(rrl: &str) -> Harness {
    Harness::new(53, &format!("{NAME}\n[rrl]\n{rrl}\n")).unwrap()
}

fn flow_from(src: &str) -> Flow {
    let src: IpAddr = src.parse().unwrap();
    Flow { src, ..Flow::client_to_server(src.is_ipv6()) }
}

/// The verdicts of `n` A (or AAAA) queries from `flow`, and the TC replies among them
/// checked byte for byte against a reply built independently.
fn ask(h: &Harness, flow: &Flow, n: usize) -> Vec<u32> {
    let qtype = if flow.src.is_ipv6() { RecordType::AAAA } else { RecordType::A };
    let query = dns::query(7, "www.example.test", qtype, Some(EdnsQuery::default())).unwrap();
    let frame = udp_frame(flow, 64, &query);
    (0..n)
        .map(|_| {
            let out = h.run(&frame).unwrap();
            if out.verdict == XDP_TX {
                let reply = dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap();
                if reply.truncated() {
                    // RFC 1035 §4.1.1 TC, no records: the question and our OPT only.
                    let mut expected = expected_reply(&query, &[]).unwrap();
                    expected[2] |= 0x02;
                    assert_eq!(out.frame, udp_frame(&flow.reversed(), 64, &expected));
                } else {
                    assert_eq!(reply.answers().len(), 1);
                }
            }
            out.verdict
        })
        .collect()
}

fn truncated(h: &Harness, flow: &Flow) -> bool {
    let qtype = if flow.src.is_ipv6() { RecordType::AAAA } else { RecordType::A };
    let query = dns::query(7, "www.example.test", qtype, Some(EdnsQuery::default())).unwrap();
    let out = h.run(&udp_frame(flow, 64, &query)).unwrap();
    out.verdict == XDP_TX && dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap().truncated()
}

#[test]
fn over_the_rate_answers_are_dropped_and_every_slipth_is_truncated() {
    let h = harness("responses_per_second = 5\nslip = 2\nwindow = \"5s\"");
    let client = flow_from("198.51.100.7");
    let before = h.counters().unwrap();
    let verdicts = ask(&h, &client, 15);
    // A full second's credit, then limited: drop, slip, drop, slip…
    assert_eq!(&verdicts[..5], &[XDP_TX; 5], "{verdicts:?}");
    for (i, verdict) in verdicts[5..].iter().enumerate() {
        let want = if (i + 1) % 2 == 0 { XDP_TX } else { XDP_DROP };
        assert_eq!(*verdict, want, "limited response {}: {verdicts:?}", i + 1);
    }
    let after = h.counters().unwrap();
    assert_eq!(after.answered - before.answered, 5);
    assert_eq!(after.rrl_dropped - before.rrl_dropped, 5);
    assert_eq!(after.rrl_slipped - before.rrl_slipped, 5);
    // The whole /24 shares the account (in debt: nothing answered in full, the slip
    // count goes on); another /24 has its own.
    let verdicts = ask(&h, &flow_from("198.51.100.200"), 4);
    assert_eq!(verdicts, vec![XDP_DROP, XDP_TX, XDP_DROP, XDP_TX]);
    assert_eq!(h.counters().unwrap().answered, after.answered, "only TC replies");
    assert_eq!(ask(&h, &flow_from("198.51.101.7"), 5), vec![XDP_TX; 5]);
    assert_eq!(h.counters().unwrap().answered - after.answered, 5);
}

#[test]
fn slip_zero_drops_all_and_slip_one_truncates_all() {
    let h = harness("responses_per_second = 2\nslip = 0");
    let verdicts = ask(&h, &flow_from("203.0.113.1"), 8);
    assert_eq!(verdicts, [&[XDP_TX; 2][..], &[XDP_DROP; 6]].concat());
    let h = harness("responses_per_second = 2\nslip = 1");
    let client = flow_from("203.0.113.1");
    assert_eq!(ask(&h, &client, 8), vec![XDP_TX; 8]);
    assert!(truncated(&h, &client), "over the rate, every answer is truncated");
}

#[test]
fn ipv6_clients_are_counted_per_56() {
    let h = harness("responses_per_second = 3\nslip = 0");
    assert_eq!(ask(&h, &flow_from("2001:db8:aa:bb01::1"), 5), [&[XDP_TX; 3][..], &[XDP_DROP; 2]].concat());
    // Same /56, another /64: the same account, in debt.
    assert_eq!(ask(&h, &flow_from("2001:db8:aa:bbff::2"), 2), vec![XDP_DROP; 2]);
    // Another /56.
    assert_eq!(ask(&h, &flow_from("2001:db8:aa:cc00::1"), 3), vec![XDP_TX; 3]);
}

#[test]
fn exempt_prefixes_and_log_only_limit_nothing_and_count() {
    let h = harness("responses_per_second = 1\nslip = 0\nexempt = [\"192.0.2.0/24\", \"2001:db8:e::/48\"]");
    let before = h.counters().unwrap();
    assert_eq!(ask(&h, &flow_from("192.0.2.53"), 6), vec![XDP_TX; 6]);
    assert_eq!(ask(&h, &flow_from("2001:db8:e:1::53"), 6), vec![XDP_TX; 6]);
    assert_eq!(h.counters().unwrap().rrl_exempt - before.rrl_exempt, 12);
    // Next to an exempt prefix, limited as usual.
    assert_eq!(ask(&h, &flow_from("192.0.3.53"), 3), vec![XDP_TX, XDP_DROP, XDP_DROP]);

    let h = harness("responses_per_second = 2\nlog_only = true");
    let before = h.counters().unwrap();
    assert_eq!(ask(&h, &flow_from("198.51.100.1"), 10), vec![XDP_TX; 10]);
    let after = h.counters().unwrap();
    assert_eq!(after.rrl_log_only - before.rrl_log_only, 8, "what would have been limited is counted");
    assert_eq!(after.answered - before.answered, 10);
}

#[test]
fn without_rrl_nothing_is_limited_and_passes_are_never_limited() {
    let h = Harness::new(53, NAME).unwrap();
    assert_eq!(ask(&h, &flow_from("198.51.100.7"), 50), vec![XDP_TX; 50]);
    // A name XDP does not serve goes to the DNS server, however often: RRL counts
    // answers only.
    let h = harness("responses_per_second = 1\nslip = 0");
    let query = dns::query(7, "other.example.test", RecordType::A, None).unwrap();
    let frame = udp_frame(&flow_from("198.51.100.7"), 64, &query);
    for _ in 0..5 {
        assert_eq!(h.run(&frame).unwrap().verdict, XDP_PASS);
    }
}
