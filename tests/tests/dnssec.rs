//! DNSSEC: the controller's signatures, checked by an independent validator
//! (dnspython) against keys made by BIND's dnssec-keygen.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    os::unix::fs::PermissionsExt as _,
    time::{Duration, SystemTime},
};

use primwatch::{dns::dnssec::ZoneSigner, dns::name::DnsName};
use primwatch_common::{Family, RrsigRr};
use primwatch_tests::dnssec::{validate, ZoneKey};

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pw-dnssec-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A response to `owner`/`family` carrying `rdatas` (in this order) and `rrsig`.
fn response(owner: &DnsName, family: Family, ttl: u32, rdatas: &[Vec<u8>], rrsig: Option<&RrsigRr>) -> Vec<u8> {
    let qtype = family.record_type() as u16;
    let mut m = vec![0x12, 0x34, 0x84, 0x00, 0, 1];
    m.extend_from_slice(&((rdatas.len() + rrsig.is_some() as usize) as u16).to_be_bytes());
    m.extend_from_slice(&[0, 0, 0, 0]);
    m.extend_from_slice(owner.wire());
    m.extend_from_slice(&qtype.to_be_bytes());
    m.extend_from_slice(&1u16.to_be_bytes());
    for rdata in rdatas {
        m.extend_from_slice(&[0xc0, 0x0c]);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m.extend_from_slice(&ttl.to_be_bytes());
        m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        m.extend_from_slice(rdata);
    }
    if let Some(sig) = rrsig {
        m.extend_from_slice(&sig.rr[..sig.len as usize]);
    }
    m
}

fn v4(list: &[[u8; 4]]) -> Vec<Vec<u8>> {
    list.iter().map(|a| Ipv4Addr::from(*a).octets().to_vec()).collect()
}

#[test]
fn signatures_validate_with_an_independent_validator() {
    let dir = tempdir("validate");
    for algorithm in [13u8, 15] {
        let key = ZoneKey::generate(&dir, "example.test", algorithm).unwrap();
        let apex = DnsName::parse("example.test").unwrap();
        let signer = ZoneSigner::load(&apex, &key.base, Duration::from_secs(3600)).unwrap();
        let now = SystemTime::now();
        let owner = DnsName::parse("www.example.test").unwrap();
        let set = v4(&[[192, 0, 2, 7], [192, 0, 2, 1], [198, 51, 100, 9]]);
        // Signed in one order, sent in another: the signed form is canonical.
        let refs: Vec<&[u8]> = set.iter().map(Vec::as_slice).collect();
        let sig = signer.sign(&owner, Family::V4, 300, &refs, now).unwrap();
        let mut sent = set.clone();
        sent.rotate_left(1);
        let ok = validate(&key, &response(&owner, Family::V4, 300, &sent, Some(&sig)), None).unwrap();
        assert_eq!(ok.validated, ["www.example.test. A"], "algorithm {algorithm}: {ok:?}");
        assert!(ok.failed.is_empty() && ok.unsigned.is_empty(), "{ok:?}");

        // A subset is another RRset: its own signature validates, the full set's does not.
        let pair: Vec<&[u8]> = refs[..2].to_vec();
        let pair_sig = signer.sign(&owner, Family::V4, 300, &pair, now).unwrap();
        let subset = set[..2].to_vec();
        let ok = validate(&key, &response(&owner, Family::V4, 300, &subset, Some(&pair_sig)), None).unwrap();
        assert_eq!(ok.validated.len(), 1, "{ok:?}");
        let bad = validate(&key, &response(&owner, Family::V4, 300, &subset, Some(&sig)), None).unwrap();
        assert_eq!(bad.failed.len(), 1, "the full set's signature must not cover a subset: {bad:?}");

        // The owner and TTL are signed: another name or TTL fails.
        let other = DnsName::parse("api.example.test").unwrap();
        let bad = validate(&key, &response(&other, Family::V4, 300, &set, Some(&sig)), None).unwrap();
        assert_eq!(bad.failed.len(), 1, "{bad:?}");

        // AAAA, and a query name in another case (0x20): canonical form is lowercase.
        let v6 = vec![Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1).octets().to_vec()];
        let v6_refs: Vec<&[u8]> = v6.iter().map(Vec::as_slice).collect();
        let v6_sig = signer.sign(&owner, Family::V6, 60, &v6_refs, now).unwrap();
        let mut message = response(&owner, Family::V6, 60, &v6, Some(&v6_sig));
        message[13] = b'W';
        message[15] = b'W';
        let ok = validate(&key, &message, None).unwrap();
        assert_eq!(ok.validated.len(), 1, "{ok:?}");

        // Validity: inception backdated an hour, expiry after the configured validity.
        let unix = now.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        let after = validate(&key, &response(&owner, Family::V4, 300, &set, Some(&sig)), Some(unix + 3700)).unwrap();
        assert_eq!(after.failed.len(), 1, "expired after the validity: {after:?}");
        let before = validate(&key, &response(&owner, Family::V4, 300, &set, Some(&sig)), Some(unix - 3500)).unwrap();
        assert_eq!(before.validated.len(), 1, "valid from an hour back: {before:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_keys_are_refused_with_the_reason() {
    let dir = tempdir("refuse");
    let apex = DnsName::parse("example.test").unwrap();
    let key = ZoneKey::generate(&dir, "example.test", 13).unwrap();
    let load = |base: &std::path::Path| ZoneSigner::load(&apex, base, Duration::from_secs(3600)).map(|_| ());
    let error = |base: &std::path::Path| format!("{:#}", load(base).unwrap_err());

    // Either file name works, as does the base dnssec-keygen prints.
    load(&key.base).unwrap();
    load(&key.private_file()).unwrap();
    load(&key.public_file()).unwrap();

    std::fs::set_permissions(key.private_file(), std::fs::Permissions::from_mode(0o640)).unwrap();
    assert!(error(&key.base).contains("root-only"), "{}", error(&key.base));
    std::fs::set_permissions(key.private_file(), std::fs::Permissions::from_mode(0o604)).unwrap();
    assert!(error(&key.base).contains("root-only"));
    std::fs::set_permissions(key.private_file(), std::fs::Permissions::from_mode(0o600)).unwrap();

    let other = ZoneKey::generate(&dir, "other.test", 13).unwrap();
    assert!(error(&other.base).contains("not for the zone example.test"), "{}", error(&other.base));

    // A .key and a .private that do not belong together.
    let second = ZoneKey::generate(&dir, "example.test", 13).unwrap();
    std::fs::copy(key.private_file(), second.private_file()).unwrap();
    assert!(error(&second.base).contains("does not hold the private half"), "{}", error(&second.base));

    // An algorithm XDP cannot carry (RSA signatures are longer than 64 bytes).
    let out = std::process::Command::new("dnssec-keygen")
        .args(["-q", "-a", "RSASHA256", "-b", "1024", "-n", "ZONE", "-K"])
        .arg(&dir)
        .arg("example.test")
        .output()
        .unwrap();
    let rsa = dir.join(String::from_utf8(out.stdout).unwrap().trim());
    assert!(error(&rsa).contains("algorithm 8 is not supported"), "{}", error(&rsa));

    assert!(error(&dir.join("Kmissing.+013+00000")).contains("reading"));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- XDP: DO=1 answers carry the RRSIG ---------------------------------------------

use hickory_proto::rr::RecordType;
use primwatch_common::Verdict;
use primwatch_tests::{
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_TX},
    packet::{udp_frame, verify_checksums, Flow},
};

fn signed_names(key: &ZoneKey, www_a: &str) -> String {
    format!(
        r#"
[zones."example.test"]
dnssec = "sign"
key = "{}"
signature_validity = "1h"

[targets.a1]
address = "10.0.0.1"
[targets.a2]
address = "10.0.0.2"
[targets.a3]
address = "10.0.0.3"
[groups.rr]
members = ["a1", "a2", "a3"]
policy = "round-robin"
max_answers = 2
[groups.v4only]
members = ["a1"]

[names."www.example.test"]
ttl = 30
a = [{www_a}]
aaaa = ["2001:db8::1"]
[names."rr.example.test"]
groups = ["rr"]
[names."*.wild.example.test"]
a = ["10.0.0.9"]
[names."v4.example.test"]
groups = ["v4only"]
[names."big.example.test"]
aaaa = [{big}]
"#,
        key.base.display(),
        big = (1..=16).map(|i| format!("\"2001:db8::{i:x}\"")).collect::<Vec<_>>().join(", ")
    )
}

fn do_query(name: &str, qtype: RecordType, dnssec_ok: bool) -> Vec<u8> {
    let edns = EdnsQuery { payload: 1232, dnssec_ok, version: 0, options: vec![] };
    dns::query(0x5151, name, qtype, Some(edns)).unwrap()
}

/// Runs `query` through XDP; returns the reply's DNS payload (checksums verified).
fn answered(h: &Harness, v6: bool, query: &[u8]) -> Vec<u8> {
    let out = h.run(&udp_frame(&Flow::client_to_server(v6), 64, query)).unwrap();
    assert_eq!(out.verdict, XDP_TX, "answered in XDP");
    verify_checksums(&out.frame).unwrap()
}

fn rrsig_count(payload: &[u8]) -> usize {
    dns::parse(payload).unwrap().answers().iter().filter(|r| r.record_type() == RecordType::RRSIG).count()
}

#[test]
fn xdp_answers_do_queries_in_signed_zones_with_a_valid_rrsig() {
    let dir = tempdir("xdp");
    let key = ZoneKey::generate(&dir, "example.test", 13).unwrap();
    let h = Harness::new(53, &signed_names(&key, "\"10.0.0.1\", \"10.0.0.2\"")).unwrap();
    for v6 in [false, true] {
        for (name, qtype, label) in [
            ("www.example.test", RecordType::A, "www.example.test. A"),
            ("www.example.test", RecordType::AAAA, "www.example.test. AAAA"),
            // 0x20 case randomisation (kresd): the signature covers the lowercase form.
            ("wWw.ExAmPlE.tEsT", RecordType::A, "wWw.ExAmPlE.tEsT. A"),
        ] {
            let payload = answered(&h, v6, &do_query(name, qtype, true));
            let reply = dns::parse(&payload).unwrap();
            assert!(reply.extensions().as_ref().unwrap().dnssec_ok(), "DO copied");
            assert_eq!(rrsig_count(&payload), 1, "{name} {qtype}: one RRSIG");
            let checked = validate(&key, &payload, None).unwrap();
            assert_eq!(checked.validated, [label], "{checked:?}");
            assert!(checked.failed.is_empty() && checked.unsigned.is_empty(), "{checked:?}");
        }
        // DO=0 (with and without EDNS): the same records, no RRSIG (RFC 3225 §3).
        let payload = answered(&h, v6, &do_query("www.example.test", RecordType::A, false));
        assert_eq!(rrsig_count(&payload), 0);
        assert_eq!(dns::addresses(&dns::parse(&payload).unwrap()).len(), 2);
        let plain = dns::query(7, "www.example.test", RecordType::A, None).unwrap();
        assert_eq!(rrsig_count(&answered(&h, v6, &plain)), 0);
    }

    // max_answers 2 of 3, round-robin: each reply is one of three RRsets, each signed.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let payload = answered(&h, false, &do_query("rr.example.test", RecordType::A, true));
        let checked = validate(&key, &payload, None).unwrap();
        assert_eq!(checked.validated.len(), 1, "{checked:?}");
        let mut set = dns::addresses(&dns::parse(&payload).unwrap());
        set.sort();
        seen.insert(set);
    }
    assert_eq!(seen.len(), 3, "three 2-of-3 subsets, each with its own signature: {seen:?}");

    // The client's EDNS size decides: 16 AAAA records and their RRSIG do not fit 512
    // bytes (passed, for the DNS server to truncate), and do fit 1232.
    let small = EdnsQuery { payload: 512, dnssec_ok: true, version: 0, options: vec![] };
    let big = dns::query(3, "big.example.test", RecordType::AAAA, Some(small)).unwrap();
    h.assert_passed(&udp_frame(&Flow::client_to_server(false), 64, &big), Verdict::TooLarge);
    let payload = answered(&h, true, &do_query("big.example.test", RecordType::AAAA, true));
    assert!(payload.len() > 512, "{} bytes", payload.len());
    assert_eq!(validate(&key, &payload, None).unwrap().validated, ["big.example.test. AAAA"]);

    // Passed on to the DNS server: a wildcard (its answer needs a denial proof) and
    // NODATA (v4.example.test has no AAAA) with DO=1; both still answered with DO=0.
    let wild = udp_frame(&Flow::client_to_server(false), 64, &do_query("x.wild.example.test", RecordType::A, true));
    h.assert_passed(&wild, Verdict::Dnssec);
    let plain = answered(&h, false, &do_query("x.wild.example.test", RecordType::A, false));
    assert_eq!(rrsig_count(&plain), 0);
    let nodata = udp_frame(&Flow::client_to_server(false), 64, &do_query("v4.example.test", RecordType::AAAA, true));
    let before = h.counters().unwrap();
    let out = h.run(&nodata).unwrap();
    assert_eq!((out.verdict, out.frame == nodata), (primwatch_tests::harness::XDP_PASS, true));
    let after = h.counters().unwrap();
    // Counted once, by why it was passed (the slow-path guard counts it among its events).
    let verdicts =
        |c: &primwatch_common::Counters| c.as_array()[..primwatch_common::VERDICT_FIELDS].iter().sum::<u64>();
    assert_eq!(verdicts(&after), verdicts(&before) + 1);
    assert_eq!(after.slow_path_passed, before.slow_path_passed + 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_changed_rrset_is_signed_anew_and_old_signatures_go() {
    let dir = tempdir("resign");
    let key = ZoneKey::generate(&dir, "example.test", 15).unwrap();
    let mut h = Harness::new(53, &signed_names(&key, "\"10.0.0.1\", \"10.0.0.2\"")).unwrap();
    // www A, www AAAA, rr (three subsets), v4 A, big AAAA: seven RRsets.
    assert_eq!(h.signatures(), 7);
    h.signed_since();
    let stats = h.reload_names(53, &signed_names(&key, "\"10.0.0.7\"")).unwrap();
    // www's address source changed: its A and AAAA sets are new sets (one spec); the
    // other names' five signatures stay.
    assert_eq!(stats.sets_written, 2, "{stats:?}");
    let signed = h.signed_since();
    assert_eq!(signed.signed, 2, "only www's RRsets are signed again: {signed:?}");
    assert_eq!(signed.deleted, 2, "their old signatures are deleted: {signed:?}");
    assert_eq!(h.signatures(), 7);
    let payload = answered(&h, false, &do_query("www.example.test", RecordType::A, true));
    assert_eq!(dns::addresses(&dns::parse(&payload).unwrap()), ["10.0.0.7".parse::<std::net::IpAddr>().unwrap()]);
    let checked = validate(&key, &payload, None).unwrap();
    assert_eq!(checked.validated, ["www.example.test. A"], "{checked:?}");

    // A new key (a rollover's second step): everything is signed again with it.
    let next = ZoneKey::generate(&dir, "example.test", 15).unwrap();
    h.reload_names(53, &signed_names(&next, "\"10.0.0.7\"")).unwrap();
    let signed = h.signed_since();
    assert_eq!(signed.signed, 7, "{signed:?}");
    let payload = answered(&h, false, &do_query("www.example.test", RecordType::AAAA, true));
    assert_eq!(validate(&next, &payload, None).unwrap().validated.len(), 1);
    assert_eq!(validate(&key, &payload, None).unwrap().failed.len(), 1, "not by the old key any more");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn signatures_are_renewed_at_half_their_validity_without_a_gap() {
    let dir = tempdir("renew");
    let key = ZoneKey::generate(&dir, "example.test", 13).unwrap();
    let names =
        signed_names(&key, "\"10.0.0.1\"").replace("signature_validity = \"1h\"", "signature_validity = \"10s\"");
    let h = Harness::new(53, &names).unwrap();
    let first = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let query = do_query("www.example.test", RecordType::A, true);
    let payload = answered(&h, false, &query);
    assert_eq!(validate(&key, &payload, Some(first + 12)).unwrap().failed.len(), 1, "expires after 10 s");
    h.signed_since();
    // Due at 5 s (4 to 5 s after `first`, which counts whole seconds).
    std::thread::sleep(Duration::from_millis(3_000));
    assert_eq!(h.signed_since().signed, 0, "nothing due before half the validity");
    // The signing thread looks every second: by 6.5 s everything was renewed once.
    std::thread::sleep(Duration::from_millis(3_500));
    let renewed = h.signed_since();
    assert_eq!(renewed.signed, h.signatures(), "all renewed at half of 10 s: {renewed:?}");
    // The renewed signature outlives the first: valid past the first one's expiry.
    let payload = answered(&h, false, &query);
    let later = validate(&key, &payload, Some(first + 12)).unwrap();
    assert_eq!(later.validated, ["www.example.test. A"], "{later:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_key_refuses_the_config_at_its_line() {
    let dir = tempdir("config");
    let key = ZoneKey::generate(&dir, "example.test", 13).unwrap();
    let parse = |text: &str| primwatch::config::Config::parse(std::path::Path::new("/etc/primwatch/p.toml"), text);
    let good = format!("[server]\ninterfaces = [\"none\"]\n{}", signed_names(&key, "\"10.0.0.1\""));
    parse(&good).unwrap();
    let missing = good.replace(&key.base.display().to_string(), "/nonexistent/Kexample.test.+013+00001");
    let e = parse(&missing).unwrap_err();
    assert_eq!((e.file.to_str(), e.line), (Some("/etc/primwatch/p.toml"), 6), "{e}");
    assert!(e.reason.contains("zones.\"example.test\".key") && e.reason.contains("nonexistent"), "{e}");
    std::fs::set_permissions(key.private_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = parse(&good).unwrap_err();
    assert!(e.reason.contains("root-only"), "{e}");
    std::fs::set_permissions(key.private_file(), std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = parse(&good.replace("\"1h\"", "\"2s\"")).unwrap_err();
    assert!(e.reason.contains("signature_validity '2s' is out of range") && e.reason.contains("10s and 90d"), "{e}");
    // So is one that would overflow the clock (a panic in the signing thread before),
    // and one that would make RRSIGs replayable for decades.
    for long in ["296000000000y", "68y", "91d"] {
        let e = parse(&good.replace("\"1h\"", &format!("\"{long}\""))).unwrap_err();
        assert!(e.reason.contains("out of range") && e.line == 7, "{long}: {e}");
    }
    // A group rotating 2 of 3 needs three signatures per name: a small capacity is
    // refused with the count and the key.
    let e = parse(&good.replace("[server]\n", "[server]\nmax_signatures = 4\n")).unwrap_err();
    assert!(e.reason.contains("up to 7 signatures") && e.reason.contains("server.max_signatures is 4"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
