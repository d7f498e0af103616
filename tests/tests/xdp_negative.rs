//! Negative answers for unsigned zones in the XDP program (RFC 2308): NXDOMAIN for a
//! name that exists nowhere in the zone, NODATA for a name without the type, each with
//! the zone's SOA in the authority section; everything the DNS server must decide
//! (delegations, wildcards, CNAMEs, DNAMEs, child zones, meta types, DS at an apex,
//! managed names) passed untouched. The zone data goes through the real publish path
//! (`NegativeMapWriter`), from a zone file parsed by hickory-proto.

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{
        rdata::opt::{EdnsCode, EdnsOption},
        RData, RecordType,
    },
};
use primwatch_common::Verdict;
use primwatch_tests::{
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_DROP, XDP_PASS, XDP_TX},
    packet::{udp_frame, verify_checksums, Flow},
};

/// Managed names: an exact one and a wildcard.
const CONFIG: &str = r#"
[zones."example.test"]
[zones."child.example.test"]
[names."www.example.test"]
a = ["10.1.1.1"]
[names."*.apps.example.test"]
a = ["10.5.5.5"]
"#;

const ZONE: &str = "$TTL 300
@ IN SOA ns1 hostmaster 7 3600 600 86400 60
@ IN NS ns1
ns1 IN A 192.0.2.53
mail IN MX 10 mx.elsewhere.test.
txt.deep IN TXT \"hello\"
alias IN CNAME www
sub IN NS ns.sub
ns.sub IN A 192.0.2.54
*.wild IN A 192.0.2.9
";

fn harness() -> Harness {
    let mut h = Harness::new(53, CONFIG).unwrap();
    let names = h.publish_zones(&[("example.test", ZONE)]).unwrap();
    // apex, ns1, mail, txt.deep, deep, alias, sub, wild, *.wild, www, apps, *.apps,
    // child.
    assert_eq!(names, 13);
    h
}

/// Runs a query and returns (verdict, the frame out, the query's frame).
fn ask(h: &Harness, flow: &Flow, name: &str, qtype: RecordType, edns: Option<EdnsQuery>) -> (u32, Vec<u8>, Vec<u8>) {
    let query = dns::query(0x4242, name, qtype, edns).unwrap();
    let frame = udp_frame(flow, 64, &query);
    let out = h.run(&frame).unwrap();
    (out.verdict, out.frame, frame)
}

/// Checks a negative answer to `name`: RCODE, AA and RD, the question as asked, no
/// answers, the SOA of example.test in the authority section with the negative TTL
/// (min(300, MINIMUM 60)), checksums right.
#[track_caller]
fn assert_denied(out: &[u8], name: &str, qtype: RecordType, rcode: ResponseCode) -> Message {
    let msg = dns::parse(&verify_checksums(out).unwrap()).unwrap();
    assert_eq!(msg.id(), 0x4242);
    assert_eq!(msg.response_code(), rcode, "{name} {qtype}");
    assert!(msg.authoritative() && msg.recursion_desired() && !msg.truncated());
    assert_eq!(msg.queries()[0].name().to_string(), format!("{name}."), "the question as asked");
    assert_eq!(msg.queries()[0].query_type(), qtype);
    assert!(msg.answers().is_empty());
    assert_eq!(msg.name_servers().len(), 1, "one SOA in the authority section");
    let soa = &msg.name_servers()[0];
    assert_eq!(soa.name().to_lowercase().to_string(), "example.test.");
    assert_eq!(soa.ttl(), 60);
    let Some(RData::SOA(data)) = soa.data() else { panic!("not an SOA: {soa:?}") };
    assert_eq!(data.mname().to_string(), "ns1.example.test.");
    assert_eq!(data.rname().to_string(), "hostmaster.example.test.");
    assert_eq!((data.serial(), data.refresh(), data.retry(), data.expire(), data.minimum()), (7, 3600, 600, 86400, 60));
    msg
}

#[test]
fn names_that_exist_nowhere_get_nxdomain_with_the_soa() {
    let h = harness();
    for v6 in [false, true] {
        let flow = Flow::client_to_server(v6);
        for (name, qtype) in [
            ("nothing.example.test", RecordType::A),
            ("Random-7f3a.Example.TEST", RecordType::AAAA),
            ("a.b.c.example.test", RecordType::TXT),
            // Below a name that exists, with or without records.
            ("x.ns1.example.test", RecordType::A),
            ("x.deep.example.test", RecordType::MX),
            ("x.txt.deep.example.test", RecordType::A),
            // Below a managed name (not a wildcard): nothing there.
            ("x.www.example.test", RecordType::A),
            ("x.alias.example.test", RecordType::A),
            ("x.mail.example.test", RecordType::DS),
        ] {
            let before = h.counters().unwrap();
            let (verdict, out, _) = ask(&h, &flow, name, qtype, None);
            assert_eq!(verdict, XDP_TX, "{name} {qtype}");
            let msg = assert_denied(&out, name, qtype, ResponseCode::NXDomain);
            assert!(msg.extensions().is_none(), "no OPT without one in the query");
            assert_eq!(h.counters().unwrap().negative_nxdomain, before.negative_nxdomain + 1);
        }
    }
}

#[test]
fn names_without_the_type_get_nodata_with_the_soa() {
    let h = harness();
    let flow = Flow::client_to_server(false);
    for (name, qtype) in [
        ("mail.example.test", RecordType::A),
        ("mail.example.test", RecordType::AAAA),
        ("ns1.example.test", RecordType::AAAA),
        ("ns1.example.test", RecordType::TXT),
        ("example.test", RecordType::A),
        ("example.test", RecordType::TXT),
        // Empty non-terminals: they exist, with no records.
        ("deep.example.test", RecordType::A),
        ("wild.example.test", RecordType::AAAA),
        ("apps.example.test", RecordType::A),
        // DS below the apex is this zone's to deny.
        ("mail.example.test", RecordType::DS),
    ] {
        let before = h.counters().unwrap();
        let (verdict, out, _) = ask(&h, &flow, name, qtype, Some(EdnsQuery::default()));
        assert_eq!(verdict, XDP_TX, "{name} {qtype}");
        let msg = assert_denied(&out, name, qtype, ResponseCode::NoError);
        let edns = msg.extensions().as_ref().expect("an OPT record, as the query had one");
        assert_eq!(edns.max_payload(), 1232);
        assert_eq!(h.counters().unwrap().negative_nodata, before.negative_nodata + 1);
    }
}

#[test]
fn what_the_dns_server_decides_is_passed_untouched() {
    let h = harness();
    let flow = Flow::client_to_server(false);
    for (name, qtype) in [
        // The type exists: the DNS server has the records.
        ("ns1.example.test", RecordType::A),
        ("mail.example.test", RecordType::MX),
        ("txt.deep.example.test", RecordType::TXT),
        ("example.test", RecordType::NS),
        ("example.test", RecordType::SOA),
        // A CNAME answers every type.
        ("alias.example.test", RecordType::A),
        // At and below a delegation: a referral; glue too.
        ("sub.example.test", RecordType::A),
        ("x.sub.example.test", RecordType::A),
        ("ns.sub.example.test", RecordType::A),
        // Covered by a wildcard, the zone file's or a managed one.
        ("x.wild.example.test", RecordType::A),
        ("y.x.wild.example.test", RecordType::A),
        ("x.y.apps.example.test", RecordType::A),
        // A declared child zone without negative data.
        ("child.example.test", RecordType::A),
        ("x.child.example.test", RecordType::A),
        // DS at the apex is the parent's; meta types are never denied.
        ("example.test", RecordType::DS),
        ("nothing.example.test", RecordType::ANY),
        ("nothing.example.test", RecordType::AXFR),
        // A managed name's other types are the DNS server's (the remote backend).
        ("www.example.test", RecordType::MX),
        // Outside every zone with negative data.
        ("nothing.example.org", RecordType::A),
        ("test", RecordType::A),
    ] {
        let (verdict, out, frame) = ask(&h, &flow, name, qtype, None);
        assert_eq!(verdict, XDP_PASS, "{name} {qtype} should be passed");
        assert_eq!(out, frame, "{name} {qtype}: a passed frame is unmodified");
    }
    // A name deeper than the walk goes (12 labels) is passed, not guessed at.
    let deep = format!("{}example.test", "l.".repeat(12));
    let (verdict, _, _) = ask(&h, &flow, &deep, RecordType::A, None);
    assert_eq!(verdict, XDP_PASS);
    let (verdict, _, _) = ask(&h, &flow, &format!("{}example.test", "l.".repeat(11)), RecordType::A, None);
    assert_eq!(verdict, XDP_TX, "11 labels below the apex: the walk reaches it");
    // Managed names are still answered by the answering program.
    let (verdict, out, _) = ask(&h, &flow, "www.example.test", RecordType::A, None);
    assert_eq!(verdict, XDP_TX);
    assert_eq!(dns::parse(&verify_checksums(&out).unwrap()).unwrap().answers().len(), 1);
    let (verdict, _, _) = ask(&h, &flow, "x.apps.example.test", RecordType::A, None);
    assert_eq!(verdict, XDP_TX);
}

#[test]
fn without_published_zones_nothing_is_denied() {
    let h = Harness::new(53, CONFIG).unwrap();
    let flow = Flow::client_to_server(false);
    let (verdict, out, frame) = ask(&h, &flow, "nothing.example.test", RecordType::A, None);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, frame);
    assert_eq!(h.counters().unwrap().as_array()[Verdict::NameNotFound as usize], 1);
}

#[test]
fn denials_carry_cookies_and_ecs_as_answers_do_and_are_rate_limited_per_zone() {
    let config = format!("{CONFIG}\n[rrl]\nresponses_per_second = 5\nslip = 2\n");
    let mut h = Harness::new(53, &config).unwrap();
    h.publish_zones(&[("example.test", ZONE)]).unwrap();
    let flow = Flow::client_to_server(false);
    // A client cookie gets a server cookie back, as from the answering program.
    let client_cookie = vec![1, 2, 3, 4, 5, 6, 7, 8];
    let edns = EdnsQuery { options: vec![(10, client_cookie.clone())], ..EdnsQuery::default() };
    let (verdict, out, _) = ask(&h, &flow, "cookie.example.test", RecordType::A, Some(edns));
    assert_eq!(verdict, XDP_TX);
    let msg = assert_denied(&out, "cookie.example.test", RecordType::A, ResponseCode::NXDomain);
    let cookie = msg.extensions().as_ref().unwrap().option(EdnsCode::Cookie).expect("a COOKIE option");
    let EdnsOption::Unknown(_, bytes) = cookie else { panic!("{cookie:?}") };
    assert_eq!(&bytes[..8], &client_cookie[..], "the client cookie echoed");
    assert_eq!(bytes.len(), 24, "client cookie and a 16-byte server cookie");
    // ECS: echoed with scope 0 (the denial is the same for every client).
    let ecs = (8u16, vec![0, 1, 24, 0, 198, 51, 100]);
    let (verdict, out, _) = ask(
        &h,
        &flow,
        "ecs.example.test",
        RecordType::A,
        Some(EdnsQuery { options: vec![ecs], ..EdnsQuery::default() }),
    );
    assert_eq!(verdict, XDP_TX);
    let msg = assert_denied(&out, "ecs.example.test", RecordType::A, ResponseCode::NXDomain);
    assert_eq!(dns::ecs_scope(&msg), Some(0), "ECS echoed with scope 0");
    // RRL: random names from one prefix share the zone's NXDOMAIN account (5 a second,
    // two spent above): past the rate they are limited, half slipped as TC, half dropped …
    let mut outcomes = std::collections::BTreeMap::new();
    for i in 0..40 {
        let (verdict, out, _) = ask(&h, &flow, &format!("r{i}.example.test"), RecordType::A, None);
        let kind = match verdict {
            XDP_TX if dns::parse(&verify_checksums(&out).unwrap()).unwrap().truncated() => "slipped",
            XDP_TX => "denied",
            XDP_DROP => "dropped",
            _ => "passed",
        };
        *outcomes.entry(kind).or_insert(0) += 1;
    }
    assert!(outcomes.get("denied").is_some_and(|n| (3..=5).contains(n)), "{outcomes:?}");
    assert!(outcomes.get("slipped").is_some_and(|n| *n >= 10), "{outcomes:?}");
    assert!(outcomes.get("dropped").is_some_and(|n| *n >= 10), "{outcomes:?}");
    assert_eq!(outcomes.get("passed"), None, "{outcomes:?}");
    // … while NODATA is another account, and another prefix its own.
    let (verdict, out, _) = ask(&h, &flow, "mail.example.test", RecordType::A, None);
    assert_eq!((verdict, dns::parse(&verify_checksums(&out).unwrap()).unwrap().truncated()), (XDP_TX, false));
    let other = Flow { src: "198.51.100.77".parse().unwrap(), ..Flow::client_to_server(false) };
    let (verdict, out, _) = ask(&h, &other, "r0.example.test", RecordType::A, None);
    assert_eq!(verdict, XDP_TX);
    assert_denied(&out, "r0.example.test", RecordType::A, ResponseCode::NXDomain);
}

#[test]
fn each_response_class_has_its_own_rate() {
    // NXDOMAIN unlimited (0), NODATA at 2 a second, answers at 5.
    let config = format!(
        "{CONFIG}\n[rrl]\nresponses_per_second = 5\nnodata_per_second = 2\nnxdomains_per_second = 0\nslip = 0\n"
    );
    let mut h = Harness::new(53, &config).unwrap();
    h.publish_zones(&[("example.test", ZONE)]).unwrap();
    let flow = Flow::client_to_server(false);
    let count = |name: &dyn Fn(u32) -> String, qtype| {
        (0..30).filter(|i| ask(&h, &flow, &name(*i), qtype, None).0 == XDP_TX).count()
    };
    assert_eq!(count(&|i| format!("r{i}.example.test"), RecordType::A), 30, "NXDOMAIN not limited");
    let nodata = count(&|_| "mail.example.test".into(), RecordType::A);
    assert!((2..=3).contains(&nodata), "NODATA at 2/s: {nodata} of 30");
    let answers = count(&|_| "www.example.test".into(), RecordType::A);
    assert!((5..=6).contains(&answers), "answers at 5/s: {answers} of 30");
}
