//! Views by source prefix inside the XDP program (LPM tries, IPv4 and IPv6), through
//! BPF_PROG_TEST_RUN.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use primwatch_tests::{
    dns,
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
sources = ["192.0.2.128/25"]
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

