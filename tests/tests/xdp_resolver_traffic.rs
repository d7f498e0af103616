//! What recursive resolvers send (DO=1, cookies, ECS) answered in XDP for unsigned
//! zones, and only frames the kernel's own stack would accept: checksums and lengths
//! (BPF_PROG_TEST_RUN, exact reply bytes against packet.rs's independent reply).

use std::net::Ipv4Addr;

use hickory_proto::rr::RecordType;
use primwatch_common::Verdict;
use primwatch_tests::{
    dns::{self, EdnsQuery},
    fuzz,
    harness::{Harness, XDP_PASS, XDP_TX},
    packet::{udp_frame, Flow},
};

/// An unsigned zone (www, a wildcard) and a signed one, as the fuzzer uses them.
const ZONES: &str = fuzz::CONFIG;

/// The same names without `[zones]`: nothing is known to be unsigned.
const NO_ZONES: &str = r#"
[names."www.example.test"]
ttl = 30
a = ["10.0.0.1", "10.0.0.2"]
"#;

fn harness(names: &str) -> Harness {
    Harness::new(53, names).expect("load the XDP program (root and `cargo xtask setup` needed)")
}

fn a(addr: &str) -> (u16, u32, Vec<u8>) {
    a_ttl(addr, 30)
}

fn a_ttl(addr: &str, ttl: u32) -> (u16, u32, Vec<u8>) {
    (1, ttl, addr.parse::<Ipv4Addr>().unwrap().octets().to_vec())
}

fn q(name: &str, qtype: RecordType, edns: Option<EdnsQuery>) -> Vec<u8> {
    dns::query(0x5151, name, qtype, edns).unwrap()
}

/// What unbound and a validating kresd send: EDNS 1232, DO=1 (and CD, RD per resolver).
fn resolver_edns(options: Vec<(u16, Vec<u8>)>) -> EdnsQuery {
    EdnsQuery { payload: 1232, dnssec_ok: true, version: 0, options }
}

#[test]
fn do_bit_is_answered_for_unsigned_zones_and_copied() {
    let h = harness(ZONES);
    for v6 in [false, true] {
        let flow = Flow::client_to_server(v6);
        // unbound: DO=1, no options.
        let query = q("www.example.test", RecordType::A, Some(resolver_edns(vec![])));
        let payload = h.assert_answers(flow, &query, &[a("10.0.0.1"), a("10.0.0.2")]);
        let reply = dns::parse(&payload).unwrap();
        assert!(reply.extensions().as_ref().unwrap().dnssec_ok(), "DO copied (RFC 3225 §3)");
        // BIND: DO=1 and a client cookie; the reply carries our server cookie (checked
        // byte for byte against the RFC 9018 oracle by assert_answers).
        let cookie = resolver_edns(vec![(10, vec![7; 8])]);
        let payload = h.assert_answers(
            flow,
            &q("WWW.example.TEST", RecordType::A, Some(cookie)),
            &[a("10.0.0.1"), a("10.0.0.2")],
        );
        assert!(dns::has_option(&dns::parse(&payload).unwrap(), 10));
        // DO=1 with padding and with a client subnet (/0 opts out of views).
        let padded = resolver_edns(vec![(12, vec![0; 13])]);
        h.assert_answers(
            flow,
            &q("www.example.test", RecordType::AAAA, Some(padded)),
            &[(28, 30, "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec())],
        );
    }
    // A wildcard's zone is its parent's.
    h.assert_answers(
        Flow::client_to_server(false),
        &q("x.wild.example.test", RecordType::A, Some(resolver_edns(vec![]))),
        &[a_ttl("10.0.0.9", 40)],
    );
    // Without DO the reply's OPT has DO clear.
    let payload = h.assert_answers(
        Flow::client_to_server(false),
        &q("www.example.test", RecordType::A, Some(EdnsQuery::default())),
        &[a("10.0.0.1"), a("10.0.0.2")],
    );
    assert!(!dns::parse(&payload).unwrap().extensions().as_ref().unwrap().dnssec_ok());
}

#[test]
fn do_bit_goes_to_the_dns_server_for_signed_zones_and_without_zones() {
    let h = harness(ZONES);
    let flow = Flow::client_to_server(false);
    let signed = q("www.signed.test", RecordType::A, Some(resolver_edns(vec![])));
    h.assert_passed(&udp_frame(&flow, 64, &signed), Verdict::Dnssec);
    // The same name without DO stays on the fast path.
    h.assert_answers(flow, &q("www.signed.test", RecordType::A, Some(EdnsQuery::default())), &[a_ttl("10.0.0.3", 50)]);

    let h = harness(NO_ZONES);
    let query = q("www.example.test", RecordType::A, Some(resolver_edns(vec![(10, vec![1; 8])])));
    h.assert_passed(&udp_frame(&flow, 64, &query), Verdict::Dnssec);
    h.assert_answers(flow, &q("www.example.test", RecordType::A, None), &[a("10.0.0.1"), a("10.0.0.2")]);
}

/// Offsets in an untagged frame built by `udp_frame`.
const V4_IP_CHECKSUM: usize = 14 + 10;
const V4_UDP: usize = 14 + 20;
const V6_UDP: usize = 14 + 40;
const UDP_CHECKSUM: usize = 6;

#[test]
fn wrong_checksums_are_passed_and_counted() {
    let h = harness(ZONES);
    for edns in [None, Some(EdnsQuery::default()), Some(resolver_edns(vec![(10, vec![3; 8]), (12, vec![0; 5])]))] {
        let query = q("www.example.test", RecordType::A, edns.clone());
        for v6 in [false, true] {
            let good = udp_frame(&Flow::client_to_server(v6), 64, &query);
            assert_eq!(h.run(&good).unwrap().verdict, XDP_TX, "the unmodified frame is answered");
            let udp = if v6 { V6_UDP } else { V4_UDP };
            // Any single flipped bit in the datagram breaks the UDP checksum.
            for (byte, bit) in [(udp, 0), (udp + 8, 3), (udp + 8 + 13, 5), (good.len() - 1, 7), (good.len() - 4, 1)] {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                let out = h.run(&bad).unwrap();
                assert_eq!(out.verdict, XDP_PASS, "bit {bit} of byte {byte} flipped (v6 {v6}, {edns:?})");
                assert_eq!(out.frame, bad);
            }
            let mut bad = good.clone();
            bad[udp + UDP_CHECKSUM] ^= 0x40;
            h.assert_passed(&bad, Verdict::BadChecksum);
            // A checksum of 0: "none" is allowed over IPv4 only (RFC 768, RFC 8200 §8.1).
            let mut none = good.clone();
            none[udp + UDP_CHECKSUM..udp + UDP_CHECKSUM + 2].copy_from_slice(&[0, 0]);
            if v6 {
                h.assert_passed(&none, Verdict::BadChecksum);
            } else {
                assert_eq!(h.run(&none).unwrap().verdict, XDP_TX, "IPv4 without a UDP checksum");
            }
        }
        // A datagram over 512 bytes (heavy padding) is not checksummed here: passed.
        let padded = q("www.example.test", RecordType::A, Some(resolver_edns(vec![(12, vec![0; 480])])));
        h.assert_passed(&udp_frame(&Flow::client_to_server(false), 64, &padded), Verdict::UnsupportedEdns);
        // A wrong IPv4 header checksum.
        let mut bad = udp_frame(&Flow::client_to_server(false), 64, &query);
        bad[V4_IP_CHECKSUM + 1] ^= 0x01;
        h.assert_passed(&bad, Verdict::BadChecksum);
    }
}

/// The IP lengths grown by `extra` bytes the frame does not hold, with the UDP length
/// and both checksums made consistent with the claim, as a forger would.
fn claiming_more(frame: &[u8], v6: bool, extra: u16) -> Vec<u8> {
    let mut out = frame.to_vec();
    let udp = if v6 { V6_UDP } else { V4_UDP };
    let grow = |out: &mut Vec<u8>, at: usize| {
        let n = u16::from_be_bytes([out[at], out[at + 1]]) + extra;
        out[at..at + 2].copy_from_slice(&n.to_be_bytes());
    };
    if v6 {
        grow(&mut out, 14 + 4);
    } else {
        grow(&mut out, 14 + 2);
        out[V4_IP_CHECKSUM..V4_IP_CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let sum: u32 = out[14..34].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
        let check = !(((sum & 0xffff) + (sum >> 16)) as u16);
        out[V4_IP_CHECKSUM..V4_IP_CHECKSUM + 2].copy_from_slice(&check.to_be_bytes());
    }
    grow(&mut out, udp + 4);
    out
}

#[test]
fn lengths_beyond_the_frame_are_passed_even_when_inside_a_skipped_option() {
    let h = harness(ZONES);
    for v6 in [false, true] {
        let flow = Flow::client_to_server(v6);
        for extra in [1u16, 2, 7, 100] {
            // The missing bytes would fall inside the PADDING option if it claimed them.
            let mut query = q("www.example.test", RecordType::A, Some(resolver_edns(vec![(12, vec![0; 4])])));
            let n = query.len();
            let rdlen = u16::from_be_bytes([query[n - 10], query[n - 9]]) + extra;
            query[n - 10..n - 8].copy_from_slice(&rdlen.to_be_bytes());
            let padding_len = u16::from_be_bytes([query[n - 6], query[n - 5]]) + extra;
            query[n - 6..n - 4].copy_from_slice(&padding_len.to_be_bytes());
            let frame = claiming_more(&udp_frame(&flow, 64, &query), v6, extra);
            h.assert_passed(&frame, Verdict::Malformed);
        }
    }
}
