//! Views by source prefix inside the XDP program (LPM tries, IPv4 and IPv6), through
//! BPF_PROG_TEST_RUN.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use primwatch_tests::{
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_TX},
    packet::{udp_frame, verify_checksums, Flow},
    TempDir,
};

fn config(country_file: &str) -> String {
    format!(
        r#"
[targets.tokyo]
address = "10.0.0.1"
[targets.osaka]
address = "10.0.0.2"
[targets.tokyo6]
address = "2001:db8::1"
[targets.osaka6]
address = "2001:db8::2"

[groups.tokyo]
members = ["tokyo", "tokyo6"]
priority = 100
[groups.osaka]
members = ["osaka", "osaka6"]
priority = 50
# The west's own order: Osaka first, Tokyo as its backup (priorities are per group).
[groups.osaka-first]
members = ["osaka", "osaka6"]
priority = 100
[groups.tokyo-backup]
members = ["tokyo", "tokyo6"]
priority = 50

[names."www.example.test"]
groups = ["tokyo", "osaka"]
[names."other.example.test"]
groups = ["tokyo"]

[views.west]
sources = ["192.0.2.0/24", "fd99::/16"]
source_files = ["{country_file}"]
[views.west.names."www.example.test"]
groups = ["osaka-first", "tokyo-backup"]
[views.west.names."other.example.test"]
groups = ["osaka"]

[views.tokyo-office]
sources = ["192.0.2.128/25", "203.0.113.0/26"]
[views.tokyo-office.names."www.example.test"]
groups = ["tokyo"]
"#
    )
}

fn ask(h: &Harness, src: &str, name: &str, qtype: RecordType) -> Vec<IpAddr> {
    let mut flow = Flow::client_to_server(src.contains(':'));
    flow.src = src.parse().unwrap();
    let query = dns::query(9, name, qtype, None).unwrap();
    let out = h.run(&udp_frame(&flow, 64, &query)).unwrap();
    assert_eq!(out.verdict, XDP_TX, "{src} {name}");
    dns::addresses(&dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap())
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn the_longest_matching_prefix_picks_the_view() {
    let dir = TempDir::new("views").unwrap();
    let file = dir.0.join("west.cidr");
    std::fs::write(&file, "# a country's prefixes\n198.51.100.0/24\n\n2001:db8:77::/48  # and IPv6\n").unwrap();
    let h = Harness::new(53, &config(file.to_str().unwrap())).unwrap();
    // Default view: Tokyo has the higher priority.
    assert_eq!(ask(&h, "10.77.0.2", "www.example.test", RecordType::A), ips(&["10.0.0.1"]));
    assert_eq!(ask(&h, "fd77::2", "www.example.test", RecordType::AAAA), ips(&["2001:db8::1"]));
    // The west view prefers Osaka: inline prefix, prefixes from the file, IPv4 and IPv6.
    assert_eq!(ask(&h, "192.0.2.7", "www.example.test", RecordType::A), ips(&["10.0.0.2"]));
    assert_eq!(ask(&h, "198.51.100.200", "www.example.test", RecordType::A), ips(&["10.0.0.2"]));
    assert_eq!(ask(&h, "fd99::5", "www.example.test", RecordType::AAAA), ips(&["2001:db8::2"]));
    assert_eq!(ask(&h, "2001:db8:77::9", "www.example.test", RecordType::AAAA), ips(&["2001:db8::2"]));
    assert_eq!(ask(&h, "2001:db8:78::9", "www.example.test", RecordType::AAAA), ips(&["2001:db8::1"]));
    // A more specific prefix inside west is its own view.
    assert_eq!(ask(&h, "192.0.2.200", "www.example.test", RecordType::A), ips(&["10.0.0.1"]));
    // Names a view does not map fall back to the default view.
    assert_eq!(ask(&h, "192.0.2.200", "other.example.test", RecordType::A), ips(&["10.0.0.1"]));
    assert_eq!(ask(&h, "192.0.2.7", "other.example.test", RecordType::A), ips(&["10.0.0.2"]));
}

/// A query with an EDNS Client Subnet option; returns (answers, the reply's ECS option
/// body: family, source, scope, address).
fn ask_ecs(h: &Harness, family: u16, source_len: u8, address: &[u8], qtype: RecordType) -> (Vec<IpAddr>, Vec<u8>) {
    let mut body = family.to_be_bytes().to_vec();
    body.extend_from_slice(&[source_len, 0]);
    body.extend_from_slice(address);
    let edns = EdnsQuery { options: vec![(8, body)], ..Default::default() };
    let query = dns::query(3, "www.example.test", qtype, Some(edns)).unwrap();
    let out = h.run(&udp_frame(&Flow::client_to_server(false), 64, &query)).unwrap();
    assert_eq!(out.verdict, XDP_TX);
    let payload = verify_checksums(&out.frame).unwrap();
    let msg = dns::parse(&payload).unwrap();
    // Our OPT is the last record; its one option is the ECS echo.
    let opt_rdlen = (4 + address.len()) + 4;
    let tail = &payload[payload.len() - opt_rdlen..];
    assert_eq!(&tail[..4], &[0, 8, 0, (4 + address.len()) as u8], "ECS option header");
    (dns::addresses(&msg), tail[4..].to_vec())
}

#[test]
fn edns_client_subnet_picks_the_view_and_is_echoed_with_its_scope() {
    let dir = TempDir::new("views").unwrap();
    let file = dir.0.join("west.cidr");
    std::fs::write(&file, "198.51.100.0/24\n").unwrap();
    let h = Harness::new(53, &config(file.to_str().unwrap())).unwrap();
    // The packet comes from 10.77.0.2 (default view); the subnet says 198.51.100.0/24 (west).
    let (answers, echo) = ask_ecs(&h, 1, 24, &[198, 51, 100], RecordType::A);
    assert_eq!(answers, ips(&["10.0.0.2"]));
    assert_eq!(echo, vec![0, 1, 24, 24, 198, 51, 100], "scope = the matched /24");
    // A /28 inside it: the view's /24 covers it.
    let (answers, echo) = ask_ecs(&h, 1, 28, &[198, 51, 100, 16], RecordType::A);
    assert_eq!(answers, ips(&["10.0.0.2"]));
    assert_eq!(echo, vec![0, 1, 28, 24, 198, 51, 100, 16]);
    // 192.0.2.0/24 has tokyo-office's /25 inside it: the west answer holds for /25
    // blocks, whatever the source length (RFC 7871 §7.2.1: the scope may exceed it).
    for source_len in [26, 24, 23] {
        let address = &[192, 0, 2, 0][..(source_len as usize).div_ceil(8)];
        let (answers, echo) = ask_ecs(&h, 1, source_len, address, RecordType::A);
        assert_eq!(answers, ips(&["10.0.0.2"]));
        assert_eq!(echo[2..4], [source_len, 25], "source /{source_len}");
    }
    // A view more specific than the subnet decides, and the scope says so: a /24
    // whose first /26 is tokyo-office's.
    let (answers, echo) = ask_ecs(&h, 1, 24, &[203, 0, 113], RecordType::A);
    assert_eq!(answers, ips(&["10.0.0.1"]));
    assert_eq!(echo[2..4], [24, 26]);
    // IPv6 subnet in an IPv4 packet.
    let (answers, echo) = ask_ecs(&h, 2, 56, &[0xfd, 0x99, 0, 0, 0, 0, 0], RecordType::AAAA);
    assert_eq!(answers, ips(&["2001:db8::2"]));
    assert_eq!(echo[2..4], [56, 16]);
    // Unknown subnet: default view; its answer holds for blocks as long as the longest
    // IPv4 view prefix (/26), whatever the source length.
    for source_len in [24, 28] {
        let (answers, echo) =
            ask_ecs(&h, 1, source_len, &[198, 18, 0, 0][..(source_len as usize).div_ceil(8)], RecordType::A);
        assert_eq!(answers, ips(&["10.0.0.1"]));
        assert_eq!(echo[2..4], [source_len, 26]);
    }
    // Source length 0: the client opts out; the packet's address decides, scope 0.
    let (answers, echo) = ask_ecs(&h, 1, 0, &[], RecordType::A);
    assert_eq!(answers, ips(&["10.0.0.1"]));
    assert_eq!(echo, vec![0, 1, 0, 0]);
}

#[test]
fn malformed_client_subnets_are_passed() {
    let h = Harness::new(
        53,
        "[names.\"www.example.test\"]\na = [\"10.1.1.1\"]\n[names.\"ww.example.test\"]\na = [\"10.1.1.2\"]\n",
    )
    .unwrap();
    let flow = Flow::client_to_server(false);
    // An odd-length name puts the OPT and ECS bytes at odd offsets: checksums still hold.
    for (source_len, address) in [(24u8, vec![10u8, 9, 8]), (17, vec![10, 9, 128])] {
        let mut body = vec![0, 1, source_len, 0];
        body.extend_from_slice(&address);
        let edns = EdnsQuery { options: vec![(8, body)], ..Default::default() };
        let frame = udp_frame(&flow, 64, &dns::query(2, "ww.example.test", RecordType::A, Some(edns)).unwrap());
        let out = h.run(&frame).unwrap();
        assert_eq!(out.verdict, XDP_TX);
        let msg = dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap();
        assert_eq!(dns::addresses(&msg), ips(&["10.1.1.2"]));
    }
    for body in [
        vec![0, 1, 24, 8, 10, 0, 0],      // a scope in a query
        vec![0, 1, 24, 0, 10, 0],         // address shorter than the source length says
        vec![0, 1, 33, 0, 1, 2, 3, 4, 5], // IPv4 source over 32
    ] {
        let edns = EdnsQuery { options: vec![(8, body.clone())], ..Default::default() };
        let frame = udp_frame(&flow, 64, &dns::query(1, "www.example.test", RecordType::A, Some(edns)).unwrap());
        let out = h.run(&frame).unwrap();
        assert_eq!(out.verdict, primwatch_tests::harness::XDP_PASS, "{body:?}");
        assert_eq!(out.frame, frame);
    }
    // Address bits beyond the source prefix (RFC 7871 §6: FORMERR): every source
    // length of both families, every stray bit position of the last byte.
    let mut cases = 0;
    for (family, max) in [(1u16, 32u8), (2, 128)] {
        for source_len in 1..=max {
            let bytes = (source_len as usize).div_ceil(8);
            for stray in source_len as usize..bytes * 8 {
                let mut address = vec![0u8; bytes];
                address[stray / 8] |= 0x80 >> (stray % 8);
                let mut body = family.to_be_bytes().to_vec();
                body.extend_from_slice(&[source_len, 0]);
                body.extend_from_slice(&address);
                let edns = EdnsQuery { options: vec![(8, body.clone())], ..Default::default() };
                let frame =
                    udp_frame(&flow, 64, &dns::query(3, "www.example.test", RecordType::A, Some(edns)).unwrap());
                let out = h.run(&frame).unwrap();
                assert_eq!(out.verdict, primwatch_tests::harness::XDP_PASS, "{body:?}");
                assert_eq!(out.frame, frame);
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 4 * 28 + 16 * 28, "every stray bit of every source length");
    // Without views the answer holds for everyone: scope 0.
    let (answers, echo) = ask_ecs(&h, 1, 24, &[10, 9, 8], RecordType::A);
    assert_eq!(answers, ips(&["10.1.1.1"]));
    assert_eq!(echo, vec![0, 1, 24, 0, 10, 9, 8]);
}
