//! DNSSEC end to end: a validating resolver (unbound, trusting the zone's key) in front
//! of XDP and PowerDNS, both signing with one BIND-format key. Real backends go down.

use std::time::{Duration, Instant};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};
use primwatch_tests::{
    dns::{self, EdnsQuery},
    dnssec::{validate, ZoneKey},
    resolver,
    world::{set, world_options, Options, PDNS_PASS, SITE_GROUPS, WEB1, WEB2, WEB3},
};

const SOON: Duration = Duration::from_secs(5);

fn addresses(m: &Message) -> std::collections::BTreeSet<String> {
    dns::addresses(m).iter().map(|a| a.to_string()).collect()
}

#[test]
fn a_validating_resolver_gets_secure_answers_from_xdp_and_powerdns() {
    let dir = std::env::temp_dir().join(format!("pw-dnssec-lab-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key = ZoneKey::generate(&dir, "example.test", 13).unwrap();
    let body = format!(
        "{SITE_GROUPS}\n[zones.\"example.test\"]\ndnssec = \"sign\"\nkey = \"{}\"\n\n\
         [names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\nttl = 30\n\
         [names.\"*.t.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n\
         [names.\"a.deep.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n",
        key.base.display()
    );
    let private = key.private_file();
    let mut w =
        world_options(&body, &Options { remote_backend: true, pdns_dnssec_key: Some(&private), ..Options::default() });
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let unbound =
        resolver::unbound(&w.lab.client_ns, "example.test", w.lab.server_addr(false), &key.public_file()).unwrap();
    let secure = |name: &str, qtype: RecordType| -> Message {
        let reply = unbound.ask(name, qtype).unwrap();
        assert_eq!(reply.response_code(), ResponseCode::NoError, "{name} {qtype}: {}", unbound.log());
        assert!(reply.authentic_data(), "{name} {qtype} should validate (AD=1): {reply:?}\n{}", unbound.log());
        reply
    };

    // Straight from PowerDNS, with DO=1 over TCP: NOERROR with the SOA and the NSEC3
    // that matches the name with an empty type bitmap.
    let server = std::net::SocketAddr::new(w.lab.server_addr(false), 53);
    let dnssec_query = |id: u16, name: &str, qtype: RecordType| {
        dns::query(id, name, qtype, Some(EdnsQuery { dnssec_ok: true, ..EdnsQuery::default() })).unwrap()
    };
    let reply = dns::parse(
        &dns::exchange_tcp(&w.lab.client_ns, server, &dnssec_query(7, "t.example.test", RecordType::A)).unwrap(),
    )
    .unwrap();
    assert_eq!(reply.response_code(), ResponseCode::NoError, "{reply:?}\n{}", w.pdns.log());
    let authority: Vec<RecordType> = reply.name_servers().iter().map(|r| r.record_type()).collect();
    assert!(
        authority.contains(&RecordType::SOA) && authority.contains(&RecordType::NSEC3),
        "a signed NODATA: {authority:?}"
    );

    // Names below empty non-terminals, asked first: unbound minimises QNAMEs (it asks
    // t.example.test before x1.t.example.test) and, with harden-below-nxdomain (both
    // stock defaults), a signed NXDOMAIN for the empty non-terminal would deny every
    // name below it. The non-terminals themselves are a signed NODATA (RFC 8020).
    for name in ["x1.t.example.test", "x2.t.example.test", "a.deep.example.test"] {
        assert_eq!(addresses(&secure(name, RecordType::A)), set(&[WEB1, WEB2]), "{name}");
    }
    for name in ["t.example.test", "deep.example.test"] {
        let reply = secure(name, RecordType::A);
        assert!(reply.answers().is_empty(), "{name}: NODATA, not {reply:?}");
    }
    // A managed name: unbound asks with DO=1, XDP answers with the RRSIG, it validates.
    let before = w.controller.counters().unwrap();
    let reply = secure("www.example.test", RecordType::A);
    assert_eq!(addresses(&reply), set(&[WEB1, WEB2]));
    let after = w.controller.counters().unwrap();
    assert!(after.answered > before.answered, "XDP answered unbound's DO=1 query: {before:?} → {after:?}");
    // ctl status and stats say who signs, with which key, and how many signatures.
    let status = w.controller.ctl(&["status"]).unwrap();
    let zone = &status["status"]["zones"][0];
    assert_eq!((zone["apex"].as_str(), zone["dnssec"].as_str()), (Some("example.test."), Some("sign")), "{zone}");
    let tag = key.base.to_string_lossy().rsplit('+').next().unwrap().parse::<u64>().unwrap();
    assert_eq!(zone["signing"]["key_tag"].as_u64(), Some(tag), "{zone}");
    assert_eq!(zone["signing"]["algorithm"].as_u64(), Some(13), "{zone}");
    assert!(zone["signing"]["signatures"].as_u64() >= Some(1), "{zone}");
    let stats = w.controller.ctl(&["stats"]).unwrap();
    let dnssec = &stats["stats"]["dnssec"];
    assert!(dnssec["signed"].as_u64() >= Some(1) && dnssec["failed"].as_u64() == Some(0), "{dnssec}");
    assert!(dnssec["held"]["example.test."].as_u64() >= Some(1), "{dnssec}");

    // No AAAA: a signed NODATA (NSEC3) from PowerDNS, secure too; and a zone-file name.
    let reply = secure("www.example.test", RecordType::AAAA);
    assert!(reply.answers().iter().all(|r| r.record_type() != RecordType::AAAA));
    assert_eq!(addresses(&secure("pass.example.test", RecordType::A)), set(&[PDNS_PASS]));

    // Tokyo goes down: the new answer (Osaka) is signed and validates as well.
    w.backends[0].stop();
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB3], SOON);
    let deadline = Instant::now() + SOON;
    loop {
        let reply = secure("www.example.test", RecordType::A);
        if addresses(&reply) == set(&[WEB3]) {
            break;
        }
        assert!(Instant::now() < deadline, "unbound still answers {:?}", addresses(&reply));
        std::thread::sleep(Duration::from_millis(200));
    }
    // Past unbound's cache (cache-max-ttl 1 s, whole seconds): asked again, XDP answers with the new
    // set's signature rather than passing the DO=1 query on.
    std::thread::sleep(Duration::from_millis(2500));
    let before = w.controller.counters().unwrap();
    secure("www.example.test", RecordType::A);
    let after = w.controller.counters().unwrap();
    assert!(after.answered > before.answered, "XDP answered after the failover: {before:?} → {after:?}");
    assert_eq!(after.pass_dnssec, before.pass_dnssec, "no DO=1 query passed on");

    // The same name over TCP with DO=1 (PowerDNS, asking primwatch): signed with the
    // same key, as dnspython checks.
    let reply =
        dns::exchange_tcp(&w.lab.client_ns, server, &dnssec_query(9, "www.example.test", RecordType::A)).unwrap();
    let checked = validate(&key, &reply, None).unwrap();
    assert_eq!(checked.validated, ["www.example.test. A"], "{checked:?}");
    w.backends[0].resume().unwrap();
    w.backends[1].resume().unwrap();
    drop(unbound);
    let _ = std::fs::remove_dir_all(&dir);
}
