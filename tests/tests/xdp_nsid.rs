//! NSID (RFC 5001) on the fast path. In the XDP program (BPF_PROG_TEST_RUN): with
//! `server.nsid` set, a query carrying an empty NSID option is answered with the id
//! in the reply's OPT record, byte for byte as an independent builder makes the reply
//! (after an ECS echo and a COOKIE option, at odd and even offsets); without it, or
//! for a non-empty request, the query is passed unmodified; an id that would push the
//! reply past the client's payload size passes the query. Then in a netns lab, dig
//! and kdig (`+nsid`) read the id from XDP's answer, and PowerDNS, set up as README
//! says (`server-id`), gives the same id for what XDP passes.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use primwatch_common::Verdict;
use primwatch_tests::{
    controller::Controller,
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_TX},
    lab::{Lab, SERVER_IF},
    netns,
    packet::{expected_reply_with_options, udp_frame, verify_checksums, Flow},
    pdns::{self, PowerDns},
};

const NAMES: &str = r#"
[names."www.example.test"]
ttl = 30
a = ["10.0.0.1"]
aaaa = ["2001:db8::1"]

[names."many.example.test"]
ttl = 30
aaaa = ["2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::4", "2001:db8::5", "2001:db8::6",
        "2001:db8::7", "2001:db8::8", "2001:db8::9", "2001:db8::a", "2001:db8::b", "2001:db8::c",
        "2001:db8::d", "2001:db8::e", "2001:db8::f", "2001:db8::10"]
"#;

fn harness(nsid: Option<&str>) -> Harness {
    let server = nsid.map(|id| format!("nsid = {id:?}")).unwrap_or_default();
    Harness::with_server(53, &server, NAMES).expect("harness")
}

/// The NSID option a reply carries: code 3, the length, the id (RFC 5001 §2.3).
fn nsid_option(id: &[u8]) -> Vec<u8> {
    [&3u16.to_be_bytes()[..], &(id.len() as u16).to_be_bytes(), id].concat()
}

fn query_with(name: &str, qtype: RecordType, payload: u16, options: Vec<(u16, Vec<u8>)>) -> Vec<u8> {
    dns::query(9, name, qtype, Some(EdnsQuery { payload, options, ..Default::default() })).unwrap()
}

fn www_record(v6: bool) -> (u16, u32, Vec<u8>) {
    if v6 {
        (28, 30, "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec())
    } else {
        (1, 30, vec![10, 0, 0, 1])
    }
}

/// Runs `query` from `flow` and checks the reply is exactly the independent builder's
/// with `options_before` (ECS echo, in query order) then the oracle's COOKIE option
/// (when the query has one) then `nsid` in its OPT record, checksums included.
#[track_caller]
fn assert_answered_with(
    h: &Harness,
    flow: Flow,
    query: &[u8],
    rrs: &[(u16, u32, Vec<u8>)],
    before: &[u8],
    nsid: &[u8],
) {
    let frame = udp_frame(&flow, 61, query);
    let (first, out, last) = (h.cookie_now(), h.run(&frame).unwrap(), h.cookie_now());
    assert_eq!(out.verdict, XDP_TX, "the query should be answered in XDP");
    let expected: Vec<Vec<u8>> = (first..=last)
        .map(|now| {
            let cookie = h.expected_cookie(query, flow.src, now).map(|(_, o)| o).unwrap_or_default();
            let options = [before, &cookie, &nsid_option(nsid)].concat();
            udp_frame(&flow.reversed(), 64, &expected_reply_with_options(query, rrs, &options).unwrap())
        })
        .collect();
    assert!(expected.contains(&out.frame), "reply:\n{:02x?}\nexpected one of\n{:02x?}", out.frame, expected);
    let payload = verify_checksums(&out.frame).unwrap();
    let msg = dns::parse(&payload).unwrap();
    assert!(dns::has_option(&msg, 3), "hickory finds the NSID option");
}

fn flow(v6: bool) -> Flow {
    Flow::client_to_server(v6)
}

#[test]
fn xdp_answers_an_nsid_request_with_the_configured_id() {
    // An odd-length id, so what follows it (nothing) and what precedes it are summed at
    // both parities across the cases below.
    let h = harness(Some("pw-node-1"));
    for v6 in [false, true] {
        let qtype = if v6 { RecordType::AAAA } else { RecordType::A };
        let q = query_with("www.example.test", qtype, 1232, vec![(3, vec![])]);
        assert_answered_with(&h, flow(v6), &q, &[www_record(v6)], &[], b"pw-node-1");
        // After a COOKIE option (28 bytes in the reply), and after PADDING (skipped).
        let q = query_with("www.example.test", qtype, 1232, vec![(3, vec![]), (10, vec![5; 8]), (12, vec![0; 7])]);
        assert_answered_with(&h, flow(v6), &q, &[www_record(v6)], &[], b"pw-node-1");
        // After an ECS echo (RFC 7871: scope 0, no view), odd-length source address.
        let ecs = if v6 { vec![0, 2, 40, 0, 0x20, 1, 0x0d, 0xb8, 0x12] } else { vec![0, 1, 24, 0, 198, 51, 100] };
        let q = query_with("www.example.test", qtype, 1232, vec![(8, ecs.clone()), (3, vec![])]);
        let echo = [&8u16.to_be_bytes()[..], &(ecs.len() as u16).to_be_bytes(), &ecs].concat();
        assert_answered_with(&h, flow(v6), &q, &[www_record(v6)], &echo, b"pw-node-1");
    }
    // A query without the option gets no NSID (RFC 5001 §2.1: only on request).
    let q = query_with("www.example.test", RecordType::A, 1232, vec![]);
    let reply = h.assert_answers(flow(false), &q, &[www_record(false)]);
    assert!(!dns::has_option(&dns::parse(&reply).unwrap(), 3));
}

#[test]
fn hex_ids_of_any_bytes_and_even_length_are_carried_exactly() {
    let h = harness(Some("0x00ff7f10"));
    let q = query_with("www.example.test", RecordType::A, 1232, vec![(3, vec![]), (10, vec![1; 8])]);
    assert_answered_with(&h, flow(false), &q, &[www_record(false)], &[], &[0x00, 0xff, 0x7f, 0x10]);
    let longest = "n".repeat(primwatch_common::MAX_NSID_LEN);
    let h = harness(Some(&longest));
    let q = query_with("www.example.test", RecordType::AAAA, 1232, vec![(3, vec![])]);
    assert_answered_with(&h, flow(true), &q, &[www_record(true)], &[], longest.as_bytes());
}

#[test]
fn without_an_id_or_for_a_bad_request_the_query_is_passed_unmodified() {
    // server.nsid unset: the DNS server answers NSID with its own id, as before.
    let h = harness(None);
    let q = query_with("www.example.test", RecordType::A, 1232, vec![(3, vec![])]);
    h.assert_passed(&udp_frame(&flow(false), 61, &q), Verdict::UnsupportedEdns);
    // A request with data (RFC 5001 §2.3: it must be empty) is malformed, with an id or not.
    let h = harness(Some("pw-node-1"));
    let q = query_with("www.example.test", RecordType::A, 1232, vec![(3, vec![1, 2])]);
    h.assert_passed(&udp_frame(&flow(false), 61, &q), Verdict::Malformed);
    // Two NSID options, one with data, in either order (the fuzzer found an empty one
    // after a non-empty one answered). hickory keeps one option per code, so the
    // options are written raw over a PADDING option of the same length.
    for raw in [&[0, 3, 0, 0, 0, 3, 0, 1, 9][..], &[0, 3, 0, 3, 0, 1, 24, 0, 3, 0, 0]] {
        let mut q = query_with("www.example.test", RecordType::A, 1232, vec![(12, vec![0; raw.len() - 4])]);
        let at = q.len() - raw.len();
        q[at..].copy_from_slice(raw);
        assert_eq!(primwatch_tests::cookie::opt_options(&q, 3).unwrap().len(), 2, "{q:02x?}");
        h.assert_passed(&udp_frame(&flow(false), 61, &q), Verdict::Malformed);
    }
    // Codes that share NSID's or PADDING's low bits (the fuzzer found 131 taken for
    // NSID once) are options XDP does not handle: passed.
    for code in [3 + 64, 3 + 128, 3 + 0x4000, 12 + 64, 12 + 0x8000, 0xffff] {
        let q = query_with("www.example.test", RecordType::A, 1232, vec![(code, vec![])]);
        h.assert_passed(&udp_frame(&flow(false), 61, &q), Verdict::UnsupportedEdns);
    }
}

#[test]
fn an_id_that_does_not_fit_the_payload_size_passes_the_query() {
    let longest = "n".repeat(primwatch_common::MAX_NSID_LEN);
    let h = harness(Some(&longest));
    let many: Vec<(u16, u32, Vec<u8>)> = (1..=16u16)
        .map(|i| (28, 30, format!("2001:db8::{i:x}").parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec()))
        .collect();
    // 16 AAAA records fit 512 bytes, with the 132-byte NSID option they do not.
    let q = query_with("many.example.test", RecordType::AAAA, 512, vec![]);
    h.assert_answers(flow(true), &q, &many);
    let q = query_with("many.example.test", RecordType::AAAA, 512, vec![(3, vec![])]);
    h.assert_passed(&udp_frame(&flow(true), 61, &q), Verdict::TooLarge);
    // With room (1232), the same query is answered with the id.
    let q = query_with("many.example.test", RecordType::AAAA, 1232, vec![(3, vec![])]);
    assert_answered_with(&h, flow(true), &q, &many, &[], longest.as_bytes());
}

#[test]
fn check_config_refuses_bad_ids_with_the_line() {
    for (value, why) in [
        ("\"\"", "1 to 128 bytes"),
        (&format!("{:?}", "x".repeat(129)), "1 to 128 bytes"),
        ("\"tab\\there\"", "printable ASCII"),
        ("\"0x123\"", "even number of hex digits"),
        ("\"0xzz\"", "even number of hex digits"),
        (&format!("\"0x{}\"", "00".repeat(129)), "1 to 128 bytes"),
    ] {
        let text = format!("[server]\ninterfaces = [\"none\"]\nnsid = {value}\n{NAMES}");
        let err = primwatch::config::Config::parse(std::path::Path::new("t.toml"), &text).expect_err(value);
        assert_eq!(err.line, 3, "{value}: {err}");
        assert!(err.reason.contains(why), "{value}: {err}");
    }
}

/// The lab: XDP on a veth, PowerDNS behind it with `server-id` set to the same id (as
/// README says), queried by dig and kdig from the client namespace.
#[test]
fn dig_and_kdig_read_the_id_from_xdp_and_powerdns_gives_the_same() {
    let lab = Lab::new().expect("lab");
    let server_v4 = lab.server_addr(false);
    let zone = pdns::zone("example.test", server_v4, &["www 30 IN A 192.0.2.250", "other 30 IN TXT \"from powerdns\""]);
    let _pdns = PowerDns::start_with(
        &lab.server_ns,
        &[server_v4, lab.server_addr(true)],
        "example.test",
        &zone,
        "server-id=pw-lab-7",
    )
    .expect("PowerDNS");
    let config = format!(
        "[server]\ninterfaces = [\"{SERVER_IF}\"]\nxdp_mode = \"skb\"\npin_dir = \"{{pin_dir}}\"\nnsid = \"pw-lab-7\"\n{NAMES}"
    );
    let controller = Controller::start(&lab.server_ns, &config).expect("primwatch");
    let before = controller.counters().unwrap();
    let run = |program: &str, args: &[&str]| -> String {
        let out: std::process::Output =
            netns::command(&lab.client_ns, program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let at = |addr: IpAddr| format!("@{addr}");
    // dig prints the id as hex bytes and, printable, in quotes.
    let dig = run("dig", &[&at(server_v4), "+nsid", "+norec", "www.example.test", "A"]);
    assert!(dig.contains("NSID: 70 77 2d 6c 61 62 2d 37 (\"pw-lab-7\")"), "{dig}");
    assert!(dig.contains("10.0.0.1"), "XDP's record, not PowerDNS's: {dig}");
    let kdig = run("kdig", &[&at(lab.server_addr(true)), "+nsid", "+norec", "www.example.test", "AAAA"]);
    assert!(kdig.contains("NSID: 70772D6C61622D37 \"pw-lab-7\""), "{kdig}");
    assert!(kdig.contains("2001:db8::1"), "{kdig}");
    let after = controller.counters().unwrap();
    assert_eq!(after.answered - before.answered, 2, "both answered by XDP");
    // What XDP passes (a TXT query), PowerDNS answers with the same id.
    let dig = run("dig", &[&at(server_v4), "+nsid", "+norec", "other.example.test", "TXT"]);
    assert!(dig.contains("from powerdns"), "{dig}");
    assert!(dig.contains("NSID: 70 77 2d 6c 61 62 2d 37 (\"pw-lab-7\")"), "{dig}");
}
