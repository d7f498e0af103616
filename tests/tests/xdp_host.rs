//! XDP answers only for this host: each case is a plain `A` (or `AAAA`) query for a
//! served name that the program answers, changed in one place so that the kernel's
//! stack would drop it or not answer it — it must be passed unmodified and counted by
//! reason. And a query marked with ECN gets a reply that is not.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use primwatch_common::Verdict;
use primwatch_tests::{
    dns,
    harness::{Harness, XDP_TX},
    packet::{expected_reply, udp_frame, verify_checksums, Flow},
};

const NAMES: &str = r#"
[names."www.example.test"]
ttl = 30
a = ["10.0.0.1"]
aaaa = ["2001:db8::1"]
"#;

fn harness() -> Harness {
    Harness::new(53, NAMES).expect("load the XDP program (root and `cargo xtask setup` needed)")
}

fn query(v6: bool) -> Vec<u8> {
    dns::query(0x5151, "www.example.test", if v6 { RecordType::AAAA } else { RecordType::A }, None).unwrap()
}

/// The query from `flow`, after `change` (checksums are computed after the change).
fn frame(flow: Flow) -> Vec<u8> {
    udp_frame(&flow, 61, &query(flow.dst.is_ipv6()))
}

fn with(v6: bool, change: impl FnOnce(&mut Flow)) -> Vec<u8> {
    let mut flow = Flow::client_to_server(v6);
    change(&mut flow);
    frame(flow)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn the_unchanged_queries_are_answered() {
    let h = harness();
    for v6 in [false, true] {
        let out = h.run(&frame(Flow::client_to_server(v6))).unwrap();
        assert_eq!(out.verdict, XDP_TX, "the baseline of every case below (v6: {v6})");
    }
}

#[test]
fn martian_and_own_sources_are_passed() {
    let h = harness();
    for source in ["224.0.0.1", "255.255.255.255", "127.0.0.1", "0.0.0.0", "10.77.0.1", "240.1.2.3"] {
        h.assert_passed(&with(false, |f| f.src = ip(source)), Verdict::BadSource);
    }
    for source in ["ff02::1", "::1", "::", "::ffff:10.77.0.2", "fd77::1"] {
        h.assert_passed(&with(true, |f| f.src = ip(source)), Verdict::BadSource);
    }
    // A group source MAC is no one to reply to.
    h.assert_passed(&with(false, |f| f.src_mac = [0x01, 0, 0x5e, 0, 0, 1]), Verdict::BadSource);
}

/// One change to a flow.
type Change = Box<dyn Fn(&mut Flow)>;

#[test]
fn destinations_other_than_this_host_are_passed() {
    let h = harness();
    let broadcast_mac = [0xff; 6];
    let cases: Vec<(bool, Change)> = vec![
        (
            false,
            Box::new(move |f| {
                f.dst = ip("255.255.255.255");
                f.dst_mac = broadcast_mac;
            }),
        ),
        (false, Box::new(|f| f.dst = ip("224.0.0.251"))),
        (false, Box::new(|f| f.dst = ip("10.77.0.255"))), // the subnet's broadcast
        (false, Box::new(|f| f.dst = ip("10.77.0.9"))),   // another host on the link
        (true, Box::new(|f| f.dst = ip("fd77::9"))),
        (true, Box::new(|f| f.dst = ip("ff02::1"))),
        // Our unicast address inside a broadcast or multicast frame, or another MAC.
        (false, Box::new(move |f| f.dst_mac = broadcast_mac)),
        (false, Box::new(|f| f.dst_mac = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01])),
        (true, Box::new(|f| f.dst_mac = [0x33, 0x33, 0, 0, 0, 1])),
        (false, Box::new(|f| f.dst_mac = [0x02, 0, 0, 0, 0, 0x09])),
    ];
    for (v6, change) in cases {
        h.assert_passed(&with(v6, change), Verdict::NotForHost);
    }
}

/// Inserts IPv4 `options` (a multiple of 4 bytes) and fixes IHL, length and checksums.
fn with_ipv4_options(options: &[u8]) -> Vec<u8> {
    let plain = frame(Flow::client_to_server(false));
    let mut out = plain[..34].to_vec();
    out.extend_from_slice(options);
    out.extend_from_slice(&plain[34..]);
    out[14] = 0x45 + (options.len() / 4) as u8;
    let total = u16::from_be_bytes([out[16], out[17]]) + options.len() as u16;
    out[16..18].copy_from_slice(&total.to_be_bytes());
    out[24..26].copy_from_slice(&[0, 0]);
    let header = &out[14..34 + options.len()];
    let mut sum: u32 = header.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    out[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    out
}

#[test]
fn ipv4_options_go_to_the_kernel() {
    let h = harness();
    // NOPs; loose and strict source routes (type 131, 137) via 10.77.0.9; record route.
    for options in
        [&[1u8, 1, 1, 1][..], &[131, 7, 4, 10, 77, 0, 9, 0], &[137, 7, 4, 10, 77, 0, 9, 0], &[7, 7, 4, 0, 0, 0, 0, 0]]
    {
        let frame = with_ipv4_options(options);
        verify_checksums(&frame).unwrap();
        h.assert_passed(&frame, Verdict::IpOptions);
    }
}

#[test]
fn a_congestion_mark_on_the_query_is_not_copied_to_the_reply() {
    let h = harness();
    let rr_a = (1, 30, vec![10, 0, 0, 1]);
    let rr_aaaa = (28, 30, ip("2001:db8::1").to_string().parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec());
    for v6 in [false, true] {
        let flow = Flow::client_to_server(v6);
        let mut marked = frame(flow);
        // CE (both ECN bits) plus a DSCP value, which the reply keeps.
        if v6 {
            marked[14] |= 0x0b; // traffic class high nibble: DSCP bits
            marked[15] |= 0x30; // traffic class low nibble: ECN = CE
        } else {
            marked[15] = 0xb8 | 0x03; // DSCP EF, ECN CE
            marked[24..26].copy_from_slice(&[0, 0]);
            let sum: u32 = marked[14..34].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
            let sum = (sum & 0xffff) + (sum >> 16);
            marked[24..26].copy_from_slice(&(!(((sum & 0xffff) + (sum >> 16)) as u16)).to_be_bytes());
        }
        let out = h.run(&marked).unwrap();
        assert_eq!(out.verdict, XDP_TX, "a marked query is still answered (v6: {v6})");
        verify_checksums(&out.frame).unwrap();
        let mut expected = udp_frame(
            &flow.reversed(),
            64,
            &expected_reply(&query(v6), &[if v6 { &rr_aaaa } else { &rr_a }.clone()]).unwrap(),
        );
        if v6 {
            expected[14] |= 0x0b;
            assert_eq!(out.frame[15] & 0x30, 0, "ECN cleared");
        } else {
            assert_eq!(out.frame[15], 0xb8, "DSCP kept, ECN cleared");
            expected[15] = 0xb8;
            expected[24..26].copy_from_slice(&out.frame[24..26]); // checked by verify_checksums
        }
        assert_eq!(out.frame, expected);
    }
}
