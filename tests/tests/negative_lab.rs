//! Negative answers from XDP against the DNS server they stand in for: a real PowerDNS
//! (bind backend for the zone file, remote backend for the managed names) transfers
//! the zone to primwatch (AXFR), and for every name and type a query over UDP (which
//! XDP answers when it can deny) and the same query over TCP (which only PowerDNS
//! answers) must give the same RCODE, flags, records and authority SOA. A zone change
//! reaches XDP within the refresh; a random-name flood never reaches PowerDNS.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};
use primwatch_tests::{
    dns::{self, EdnsQuery},
    lab::SERVER_V4,
    pdns, wait_for,
    world::{world_options, Options, World, SITE_GROUPS},
};

/// The zone as a transfer must bring it: a delegation with glue, a zone-file wildcard,
/// a CNAME, a DNAME, a name with MX only, an empty non-terminal.
fn zone_text(serial: u32, extra: &[&str]) -> String {
    let mut records = vec![
        "mail 300 IN MX 10 mx.elsewhere.test.",
        "txt.deep 300 IN TXT \"hello\"",
        "alias 300 IN CNAME pass",
        "sub 300 IN NS ns.sub",
        "ns.sub 300 IN A 192.0.2.54",
        "*.wild 300 IN A 192.0.2.9",
        "old 300 IN DNAME new.example.test.",
        "pass 30 IN A 10.99.9.9",
    ];
    records.extend(extra);
    pdns::zone("example.test", SERVER_V4.into(), &records)
        .replace(" 1 3600 600 86400 60", &format!(" {serial} 3600 600 86400 60"))
}

fn config() -> String {
    format!(
        r#"
{SITE_GROUPS}
[zones."example.test"]
negative_answers = true
transfer_from = "{SERVER_V4}:53"
refresh = "1s"

[names."www.example.test"]
groups = ["tokyo", "osaka"]
[names."*.apps.example.test"]
groups = ["tokyo"]
"#
    )
}

fn lab() -> World {
    let conf = format!("allow-axfr-ips={SERVER_V4}/32\n");
    let w = world_options(&config(), &Options { remote_backend: true, pdns_conf: &conf, ..Options::default() });
    w.pdns.replace_zone("example.test", &zone_text(2, &[])).unwrap();
    w
}

fn server(w: &World) -> SocketAddr {
    SocketAddr::new(w.lab.server_addr(false), 53)
}

fn udp(w: &World, name: &str, qtype: RecordType, edns: Option<EdnsQuery>) -> Message {
    let sock = dns::udp_socket(&w.lab.client_ns, false).unwrap();
    dns::parse(&dns::exchange_udp(&sock, server(w), &dns::query(9, name, qtype, edns).unwrap()).unwrap()).unwrap()
}

fn tcp(w: &World, name: &str, qtype: RecordType, edns: Option<EdnsQuery>) -> Message {
    dns::parse(&dns::exchange_tcp(&w.lab.client_ns, server(w), &dns::query(9, name, qtype, edns).unwrap()).unwrap())
        .unwrap()
}

/// What two replies must agree on: RCODE, AA, RD, TC, answers and authority records
/// (owner lowercased, type, TTL, data), and whether each has an OPT record.
fn essence(msg: &Message) -> String {
    let records = |rrs: &[hickory_proto::rr::Record]| -> BTreeSet<String> {
        rrs.iter()
            .map(|r| {
                // PowerDNS compresses the SOA's names against the question, in its case:
                // names compare case-insensitively.
                let data = r.data().map(|d| d.to_string().to_lowercase()).unwrap_or_default();
                format!("{} {} {} {data}", r.name().to_lowercase(), r.record_type(), r.ttl())
            })
            .collect()
    };
    format!(
        "{:?} aa={} rd={} tc={} edns={} answers={:?} authority={:?}",
        msg.response_code(),
        msg.authoritative(),
        msg.recursion_desired(),
        msg.truncated(),
        msg.extensions().is_some(),
        records(msg.answers()),
        records(msg.name_servers()),
    )
}

/// Waits until XDP denies `name` (its NXDOMAIN counter rises on a query for it).
fn wait_until_denied(w: &World, name: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let denied = wait_for(within, || {
        let before = w.controller.counters().ok()?.negative_nxdomain;
        let sock = dns::udp_socket(&w.lab.client_ns, false).ok()?;
        let reply = dns::exchange_udp(&sock, server(w), &dns::query(9, name, RecordType::A, None).ok()?);
        let counters = w.controller.counters().ok()?;
        let Ok(reply) = reply else {
            eprintln!("no reply to {name}: {:?}", primwatch::dataplane::counters_table(&counters));
            return None;
        };
        let reply = dns::parse(&reply).ok()?;
        let after = counters.negative_nxdomain;
        (reply.response_code() == ResponseCode::NXDomain && after > before).then_some(())
    });
    assert!(denied.is_some(), "XDP never denied {name}; controller log:\n{}", w.controller.log());
    start.elapsed()
}

#[test]
fn xdp_denies_what_powerdns_denies_and_passes_the_rest() {
    let w = lab();
    let took = wait_until_denied(&w, "nothing.example.test", Duration::from_secs(15));
    eprintln!("negative answers from XDP {took:?} after the zone changed");
    let do_edns = EdnsQuery { dnssec_ok: true, ..EdnsQuery::default() };
    let cases: &[(&str, RecordType, bool)] = &[
        // (name, type, XDP answers it)
        ("nothing.example.test", RecordType::A, true),
        ("Random-7F3A.Example.TEST", RecordType::AAAA, true),
        ("a.b.c.example.test", RecordType::TXT, true),
        ("x.ns1.example.test", RecordType::A, true),
        ("x.deep.example.test", RecordType::MX, true),
        ("x.www.example.test", RecordType::A, true),
        ("mail.example.test", RecordType::A, true),
        ("mail.example.test", RecordType::AAAA, true),
        ("ns1.example.test", RecordType::TXT, true),
        ("example.test", RecordType::A, true),
        ("deep.example.test", RecordType::A, true),
        ("wild.example.test", RecordType::AAAA, true),
        ("apps.example.test", RecordType::A, true),
        ("mail.example.test", RecordType::DS, true),
        // The DNS server's: records, referrals, CNAME, DNAME, wildcards, DS at the apex.
        ("mail.example.test", RecordType::MX, false),
        ("ns1.example.test", RecordType::A, false),
        ("example.test", RecordType::SOA, false),
        ("alias.example.test", RecordType::A, false),
        ("x.sub.example.test", RecordType::A, false),
        ("x.old.example.test", RecordType::A, false),
        ("x.wild.example.test", RecordType::A, false),
        ("y.x.wild.example.test", RecordType::TXT, false),
        ("x.y.apps.example.test", RecordType::A, false),
        ("example.test", RecordType::DS, false),
        ("www.example.test", RecordType::MX, false),
    ];
    for (name, qtype, by_xdp) in cases {
        for edns in [None, Some(EdnsQuery::default()), Some(do_edns.clone())] {
            let before = w.controller.counters().unwrap();
            let over_udp = udp(&w, name, *qtype, edns.clone());
            let after = w.controller.counters().unwrap();
            let denied_by_xdp =
                (after.negative_nxdomain + after.negative_nodata) - (before.negative_nxdomain + before.negative_nodata);
            assert_eq!(denied_by_xdp, *by_xdp as u64, "{name} {qtype} {edns:?}: answered by XDP?");
            let over_tcp = tcp(&w, name, *qtype, edns.clone());
            assert_eq!(essence(&over_udp), essence(&over_tcp), "{name} {qtype} {edns:?}: XDP (UDP) and PowerDNS (TCP)");
        }
    }
}

#[test]
fn a_zone_change_reaches_xdp_and_a_random_name_flood_never_reaches_powerdns() {
    let w = lab();
    wait_until_denied(&w, "new1.example.test", Duration::from_secs(15));
    // A new name and a removed one: within the refresh (1 s) and a transfer.
    w.pdns
        .replace_zone(
            "example.test",
            &zone_text(3, &["new1 300 IN A 192.0.2.77"]).replace("mail 300 IN MX 10 mx.elsewhere.test.\n", ""),
        )
        .unwrap();
    let start = Instant::now();
    let answered = wait_for(Duration::from_secs(10), || {
        let new1 = udp(&w, "new1.example.test", RecordType::A, None);
        let mail = udp(&w, "mail.example.test", RecordType::MX, None);
        (dns::addresses(&new1).len() == 1 && mail.response_code() == ResponseCode::NXDomain).then_some(())
    });
    assert!(answered.is_some(), "the new zone never reached XDP:\n{}", w.controller.log());
    eprintln!("zone change reached XDP in {:?}", start.elapsed());
    assert_eq!(
        essence(&udp(&w, "mail.example.test", RecordType::MX, None)),
        essence(&tcp(&w, "mail.example.test", RecordType::MX, None))
    );

    // 3,000 random names (a random-subdomain attack, as a client would send them):
    // every one denied, none reaching PowerDNS.
    let pdns_before = w.pdns.stat("udp-queries").unwrap();
    let denied_before = w.controller.counters().unwrap().negative_nxdomain;
    let sock = dns::udp_socket(&w.lab.client_ns, false).unwrap();
    for i in 0..3000u32 {
        let name = format!("{:08x}.example.test", i.wrapping_mul(2654435761));
        let reply =
            dns::exchange_udp(&sock, server(&w), &dns::query(i as u16, &name, RecordType::A, None).unwrap()).unwrap();
        assert_eq!(dns::parse(&reply).unwrap().response_code(), ResponseCode::NXDomain, "{name}");
    }
    assert_eq!(w.controller.counters().unwrap().negative_nxdomain - denied_before, 3000);
    let reached = w.pdns.stat("udp-queries").unwrap() - pdns_before;
    assert!(reached <= 5, "{reached} of the flood's queries reached PowerDNS");

    // `ctl stats` (and /metrics) say what XDP holds.
    let stats = w.controller.ctl(&["stats"]).unwrap();
    let zone = &stats["stats"]["zones"][0];
    assert_eq!(
        (zone["zone"].as_str(), zone["serial"].as_u64(), zone["failures"].as_u64()),
        (Some("example.test."), Some(3), Some(0)),
        "{zone}"
    );
    // apex, ns1, deep, txt.deep, alias, sub, wild, *.wild, old, pass, new1; www, apps,
    // *.apps.
    assert_eq!(zone["names"].as_u64(), Some(14), "{zone}");
    assert_eq!(zone["last_error"].as_str(), Some(""), "{zone}");
}

#[test]
fn when_the_zone_cannot_be_checked_its_denials_go_back_to_the_dns_server() {
    let mut w = lab();
    wait_until_denied(&w, "gone.example.test", Duration::from_secs(15));
    // PowerDNS stops: the data stays for the first failed checks, then goes (three
    // failures at a 1 s refresh), and XDP denies nothing from then on.
    w.pdns.stop();
    let dropped = wait_for(Duration::from_secs(10), || {
        let stats = w.controller.ctl(&["stats"]).ok()?;
        let zone = &stats["stats"]["zones"][0];
        (zone["serial"].is_null() && zone["names"].as_u64() == Some(0)).then(|| zone.clone())
    });
    let zone = dropped.expect("the zone's data was never dropped");
    assert!(zone["failures"].as_u64().unwrap() >= 3, "{zone}");
    assert!(zone["last_error"].as_str().unwrap().contains("connecting to"), "{zone}");
    let before = w.controller.counters().unwrap().negative_nxdomain;
    let sock = dns::udp_socket(&w.lab.client_ns, false).unwrap();
    let query = dns::query(5, "gone.example.test", RecordType::A, None).unwrap();
    dns::expect_no_udp_reply(&sock, server(&w), &query, Duration::from_millis(500)).unwrap();
    assert_eq!(w.controller.counters().unwrap().negative_nxdomain, before, "passed, not denied");
    assert!(w.controller.log().contains("go back to the DNS server"), "{}", w.controller.log());
}
