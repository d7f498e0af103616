//! Wildcard names (`*.parent`) in the XDP program: one label in front of the parent,
//! exact names first, the client's question echoed as asked.

use hickory_proto::rr::RecordType;
use primwatch_common::Verdict;
use primwatch_tests::{
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_PASS, XDP_TX},
    packet::{expected_reply, udp_frame, verify_checksums, Flow},
};

const CONFIG: &str = r#"
[names."*.example.test"]
a = ["10.5.5.5"]
[names."www.example.test"]
a = ["10.1.1.1"]
[names."*.cdn.example.test"]
aaaa = ["2001:db8::c"]
"#;

#[test]
fn wildcards_answer_one_label_in_front_of_their_parent() {
    let h = Harness::new(53, CONFIG).unwrap();
    let flow = Flow::client_to_server(false);
    let ask = |name: &str, qtype| {
        let query = dns::query(5, name, qtype, Some(EdnsQuery::default())).unwrap();
        (query.clone(), h.run(&udp_frame(&flow, 64, &query)).unwrap())
    };
    // A name under the wildcard: answered, question echoed exactly (case kept).
    let (query, out) = ask("Tenant-42.Example.TEST", RecordType::A);
    assert_eq!(out.verdict, XDP_TX);
    assert_eq!(
        out.frame,
        udp_frame(&flow.reversed(), 64, &expected_reply(&query, &[(1, 30, vec![10, 5, 5, 5])]).unwrap())
    );
    let msg = dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap();
    assert_eq!(msg.answers()[0].name().to_string(), "Tenant-42.Example.TEST.", "owner is the name asked");
    // An exact name wins over the wildcard.
    let (_, out) = ask("www.example.test", RecordType::A);
    assert_eq!(
        dns::addresses(&dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap()),
        vec!["10.1.1.1".parse::<std::net::IpAddr>().unwrap()]
    );
    // The closest wildcard: x.cdn.example.test is *.cdn, which has only AAAA.
    let (_, out) = ask("x.cdn.example.test", RecordType::AAAA);
    assert_eq!(out.verdict, XDP_TX);
    let before = h.counters().unwrap().as_array();
    let (_, out) = ask("x.cdn.example.test", RecordType::A);
    assert_eq!(out.verdict, XDP_PASS, "type not present at the closest wildcard");
    assert_eq!(
        h.counters().unwrap().as_array()[Verdict::TypeNotPresent as usize],
        before[Verdict::TypeNotPresent as usize] + 1
    );
    // Two labels in front of example.test: not this wildcard's (one level only).
    let (_, out) = ask("a.b.example.test", RecordType::A);
    assert_eq!(out.verdict, XDP_PASS);
    // The parent itself and other zones: not matched.
    assert_eq!(ask("example.test", RecordType::A).1.verdict, XDP_PASS);
    assert_eq!(ask("x.example.org", RecordType::A).1.verdict, XDP_PASS);
}

#[test]
fn without_wildcards_configured_a_miss_is_passed() {
    // No wildcard names: the settings entry says so and the miss is a plain miss.
    let h = Harness::new(53, "[names.\"www.example.test\"]\na = [\"10.1.1.1\"]\n").unwrap();
    let query = dns::query(5, "x.example.test", RecordType::A, None).unwrap();
    let out = h.run(&udp_frame(&Flow::client_to_server(false), 64, &query)).unwrap();
    assert_eq!(out.verdict, XDP_PASS);
    assert_eq!(h.counters().unwrap().pass_name_not_found, 1);
}
