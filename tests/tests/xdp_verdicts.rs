//! The XDP program on crafted frames through BPF_PROG_TEST_RUN: exact verdicts, exact
//! reply bytes (against a reply built independently in packet.rs), and byte-for-byte
//! unchanged frames for everything passed.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::RecordType;
use primwatch_common::Verdict;
use primwatch_tests::{
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_PASS, XDP_TX},
    packet::{expected_reply, udp_frame, Flow},
};

const NAMES: &str = r#"
[names."www.example.test"]
ttl = 30
a = ["10.0.0.1", "10.0.0.2"]
aaaa = ["2001:db8::1"]

[names."v4only.example.test"]
ttl = 7
a = ["192.0.2.7"]

[names."eight.example.test"]
ttl = 60
a = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.1.0.7", "10.1.0.8"]
"#;

fn harness() -> Harness {
    Harness::new(53, NAMES).expect("load the XDP program (root and `cargo xtask setup` needed)")
}

fn a(addr: &str) -> (u16, u32, Vec<u8>) {
    (1, 30, addr.parse::<Ipv4Addr>().unwrap().octets().to_vec())
}

fn aaaa(addr: &str, ttl: u32) -> (u16, u32, Vec<u8>) {
    (28, ttl, addr.parse::<Ipv6Addr>().unwrap().octets().to_vec())
}

fn q(name: &str, qtype: RecordType, edns: Option<EdnsQuery>) -> Vec<u8> {
    dns::query(0x4242, name, qtype, edns).unwrap()
}

#[test]
fn answers_a_over_ipv4_without_edns() {
    let h = harness();
    let query = q("www.example.test", RecordType::A, None);
    h.assert_answers(Flow::client_to_server(false), &query, &[a("10.0.0.1"), a("10.0.0.2")]);
    assert_eq!(h.counters().unwrap().answered, 1);
}

#[test]
fn answers_aaaa_over_ipv6_with_edns_and_cookie() {
    let h = harness();
    let edns = EdnsQuery { options: vec![(10, vec![1, 2, 3, 4, 5, 6, 7, 8])], payload: 4096, ..Default::default() };
    let query = q("www.example.test", RecordType::AAAA, Some(edns));
    h.assert_answers(Flow::client_to_server(true), &query, &[aaaa("2001:db8::1", 30)]);
}

#[test]
fn keeps_the_clients_case_and_matches_case_insensitively() {
    let h = harness();
    for name in ["WWW.EXAMPLE.TEST", "wWw.ExAmPlE.tEsT"] {
        let query = q(name, RecordType::A, Some(EdnsQuery::default()));
        h.assert_answers(Flow::client_to_server(false), &query, &[a("10.0.0.1"), a("10.0.0.2")]);
    }
}

#[test]
fn answers_on_a_vlan() {
    let h = harness();
    let mut flow = Flow::client_to_server(false);
    flow.vlan = Some(100);
    let query = q("v4only.example.test", RecordType::A, None);
    h.assert_answers(flow, &query, &[(1, 7, vec![192, 0, 2, 7])]);
    let mut flow6 = Flow::client_to_server(true);
    flow6.vlan = Some(4000);
    h.assert_answers(flow6, &q("www.example.test", RecordType::AAAA, None), &[aaaa("2001:db8::1", 30)]);
}

#[test]
fn answers_eight_records_and_copies_rd_and_cd() {
    let h = harness();
    let mut query = q("eight.example.test", RecordType::A, Some(EdnsQuery::default()));
    query[3] |= 0x10; // CD
    let rrs: Vec<_> = (1..=8).map(|i| (1, 60, vec![10, 1, 0, i])).collect();
    h.assert_answers(Flow::client_to_server(false), &query, &rrs);
    query[2] &= !0x01; // RD off
    h.assert_answers(Flow::client_to_server(true), &query, &rrs);
}

#[test]
fn answers_despite_ethernet_padding() {
    let h = harness();
    let query = q("v4only.example.test", RecordType::A, None);
    let flow = Flow::client_to_server(false);
    let mut frame = udp_frame(&flow, 61, &query);
    frame.extend_from_slice(&[0xee; 18]); // trailer beyond the IP datagram
    let out = h.run(&frame).unwrap();
    assert_eq!(out.verdict, XDP_TX);
    let expected = udp_frame(&flow.reversed(), 64, &expected_reply(&query, &[(1, 7, vec![192, 0, 2, 7])]).unwrap());
    assert_eq!(out.frame, expected);
}

#[test]
fn passes_what_it_does_not_serve() {
    let h = harness();
    let v4 = Flow::client_to_server(false);
    let frame = |payload: &[u8]| udp_frame(&v4, 64, payload);
    h.assert_passed(&frame(&q("nope.example.test", RecordType::A, None)), Verdict::NameNotFound);
    h.assert_passed(&frame(&q("example.test", RecordType::A, None)), Verdict::NameNotFound);
    h.assert_passed(&frame(&q("www.example.test.other", RecordType::A, None)), Verdict::NameNotFound);
    h.assert_passed(&frame(&q("v4only.example.test", RecordType::AAAA, None)), Verdict::TypeNotPresent);
    h.assert_passed(&frame(&q("www.example.test", RecordType::MX, None)), Verdict::TypeNotPresent);
    h.assert_passed(&frame(&q("www.example.test", RecordType::ANY, None)), Verdict::TypeNotPresent);
}

#[test]
fn passes_edns_it_does_not_handle() {
    let h = harness();
    let v6 = Flow::client_to_server(true);
    let edns = |f: &dyn Fn(&mut EdnsQuery)| {
        let mut e = EdnsQuery::default();
        f(&mut e);
        udp_frame(&v6, 64, &q("www.example.test", RecordType::AAAA, Some(e)))
    };
    // DO=1 with no [zones] declared: nothing is known to be unsigned.
    h.assert_passed(&edns(&|e| e.dnssec_ok = true), Verdict::Dnssec);
    h.assert_passed(&edns(&|e| e.version = 1), Verdict::UnsupportedEdns);
    // An option we do not know (DAU, 5), and ECS with an unknown family.
    h.assert_passed(&edns(&|e| e.options = vec![(5, vec![8, 13])]), Verdict::UnsupportedEdns);
    h.assert_passed(&edns(&|e| e.options = vec![(8, vec![0, 3, 8, 0, 1])]), Verdict::UnsupportedEdns);
    h.assert_passed(&edns(&|e| e.options = vec![(10, vec![1; 8]), (15, vec![])]), Verdict::UnsupportedEdns);
}

#[test]
fn passes_responses_and_other_opcodes() {
    let h = harness();
    let v4 = Flow::client_to_server(false);
    let base = q("www.example.test", RecordType::A, None);
    let mut response = base.clone();
    response[2] |= 0x80;
    h.assert_passed(&udp_frame(&v4, 64, &response), Verdict::NotPlainQuery);
    let mut notify = base.clone();
    notify[2] |= 4 << 3;
    h.assert_passed(&udp_frame(&v4, 64, &notify), Verdict::NotPlainQuery);
    let mut truncated_flag = base.clone();
    truncated_flag[2] |= 0x02;
    h.assert_passed(&udp_frame(&v4, 64, &truncated_flag), Verdict::NotPlainQuery);
    let mut two_questions = base.clone();
    two_questions[5] = 2;
    h.assert_passed(&udp_frame(&v4, 64, &two_questions), Verdict::NotPlainQuery);
    let mut chaos = base.clone();
    let n = chaos.len();
    chaos[n - 1] = 3; // QCLASS CH
    h.assert_passed(&udp_frame(&v4, 64, &chaos), Verdict::NotPlainQuery);
}

#[test]
fn passes_malformed_and_truncated_queries() {
    let h = harness();
    let v4 = Flow::client_to_server(false);
    let base = q("www.example.test", RecordType::A, None);
    // Cut inside the question.
    h.assert_passed(&udp_frame(&v4, 64, &base[..20]), Verdict::Malformed);
    // Header only.
    h.assert_passed(&udp_frame(&v4, 64, &base[..12]), Verdict::Malformed);
    // Trailing garbage after the question.
    let mut trailing = base.clone();
    trailing.extend_from_slice(&[0, 0]);
    h.assert_passed(&udp_frame(&v4, 64, &trailing), Verdict::Malformed);
    // A compression pointer in the question.
    let mut pointer = base[..12].to_vec();
    pointer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    h.assert_passed(&udp_frame(&v4, 64, &pointer), Verdict::Malformed);
    // A label length of 64.
    let mut long_label = base[..12].to_vec();
    long_label.push(64);
    long_label.extend_from_slice(&[b'a'; 64]);
    long_label.extend_from_slice(&[0, 0, 1, 0, 1]);
    h.assert_passed(&udp_frame(&v4, 64, &long_label), Verdict::Malformed);
    // A name longer than 255 bytes (5 labels of 60).
    let mut too_long = base[..12].to_vec();
    for _ in 0..5 {
        too_long.push(60);
        too_long.extend_from_slice(&[b'b'; 60]);
    }
    too_long.extend_from_slice(&[0, 0, 1, 0, 1]);
    h.assert_passed(&udp_frame(&v4, 64, &too_long), Verdict::Malformed);
    // IP and UDP lengths that promise more than the frame holds.
    let mut frame = udp_frame(&v4, 64, &base);
    frame.truncate(frame.len() - 6);
    h.assert_passed(&frame, Verdict::Malformed);
    // UDP length disagreeing with the IP length.
    let mut frame = udp_frame(&v4, 64, &base);
    frame[39] -= 1;
    h.assert_passed(&frame, Verdict::Malformed);
    // An OPT record whose options overrun its RDLENGTH.
    let mut opt =
        q("www.example.test", RecordType::A, Some(EdnsQuery { options: vec![(10, vec![9; 8])], ..Default::default() }));
    let n = opt.len();
    opt[n - 10] = 20; // cookie option length 20 > remaining 8
    h.assert_passed(&udp_frame(&v4, 64, &opt), Verdict::Malformed);
}

#[test]
fn passes_non_dns_traffic() {
    let h = harness();
    let mut other_port = Flow::client_to_server(false);
    other_port.dst_port = 5353;
    let query = q("www.example.test", RecordType::A, None);
    h.assert_passed(&udp_frame(&other_port, 64, &query), Verdict::NotDns);
    // An IPv4 fragment (MF set).
    let mut fragment = udp_frame(&Flow::client_to_server(false), 64, &query);
    fragment[20] |= 0x20;
    h.assert_passed(&fragment, Verdict::NotDns);
    // IPv6 with a hop-by-hop extension header in front of UDP.
    let mut ext = udp_frame(&Flow::client_to_server(true), 64, &query);
    ext[20] = 0;
    h.assert_passed(&ext, Verdict::NotDns);
    // TCP to port 53 (protocol 6).
    let mut tcp = udp_frame(&Flow::client_to_server(false), 64, &query);
    tcp[23] = 6;
    h.assert_passed(&tcp, Verdict::NotDns);
    // ARP and a runt frame.
    let mut arp = vec![0xff; 12];
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0; 28]);
    h.assert_passed(&arp, Verdict::NotDns);
    // A bare Ethernet header (BPF_PROG_TEST_RUN refuses anything shorter).
    h.assert_passed(&[0u8; 14], Verdict::NotDns);
}

#[test]
fn configured_port_is_the_only_one_answered() {
    let h = Harness::new(5353, NAMES).unwrap();
    let query = q("www.example.test", RecordType::A, None);
    h.assert_passed(&udp_frame(&Flow::client_to_server(false), 64, &query), Verdict::NotDns);
    let mut flow = Flow::client_to_server(false);
    flow.dst_port = 5353;
    h.assert_answers(flow, &query, &[a("10.0.0.1"), a("10.0.0.2")]);
}

#[test]
fn a_hash_match_with_another_name_is_not_an_answer() {
    // Plant www's entry under the hash of "evil.example.test": the program finds the
    // entry by hash, but the stored name differs, so it must pass the query up.
    use primwatch::dns::name::DnsName;
    let mut h = harness();
    let evil = DnsName::parse("evil.example.test").unwrap();
    let www = DnsName::parse("www.example.test").unwrap();
    let forged = h.entry(www.hash()).expect("www's entry");
    h.insert_entry(evil.hash(), forged).unwrap();
    let frame = udp_frame(&Flow::client_to_server(false), 64, &q("evil.example.test", RecordType::A, None));
    h.assert_passed(&frame, Verdict::NameNotFound);
}

#[test]
fn replies_too_large_for_the_client_are_passed() {
    let long_name = format!("{}.{}.{}.example.test", "a".repeat(63), "b".repeat(63), "c".repeat(50));
    let addrs: Vec<String> = (1..=16).map(|i| format!("\"2001:db8::{i:x}\"")).collect();
    let names = format!("[names.\"{long_name}\"]\naaaa = [{}]\n", addrs.join(", "));
    let h = Harness::new(53, &names).unwrap();
    let flow = Flow::client_to_server(true);
    // 12 + 197 + 4 + 16 × 28 = 661 bytes: more than 512 without EDNS.
    h.assert_passed(&udp_frame(&flow, 64, &q(&long_name, RecordType::AAAA, None)), Verdict::TooLarge);
    let small_edns = EdnsQuery { payload: 600, ..Default::default() };
    h.assert_passed(&udp_frame(&flow, 64, &q(&long_name, RecordType::AAAA, Some(small_edns))), Verdict::TooLarge);
    let query = q(&long_name, RecordType::AAAA, Some(EdnsQuery::default()));
    let rrs: Vec<_> = (1..=16).map(|i| aaaa(&format!("2001:db8::{i:x}"), 30)).collect();
    h.assert_answers(flow, &query, &rrs);
}

#[test]
fn every_single_byte_truncation_is_passed_unmodified() {
    // A miniature fuzz pass: each prefix of a valid query frame must be passed intact.
    let h = harness();
    let query = q("www.example.test", RecordType::A, Some(EdnsQuery::default()));
    let frame = udp_frame(&Flow::client_to_server(false), 64, &query);
    // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
    for len in 14..frame.len() {
        let out = h.run(&frame[..len]).unwrap();
        assert_eq!(out.verdict, XDP_PASS, "prefix of {len} bytes");
        assert_eq!(out.frame, &frame[..len]);
    }
}
