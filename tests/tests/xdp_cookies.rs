//! DNS server cookies in the XDP program (BPF_PROG_TEST_RUN): replies carry exactly the
//! cookie an RFC 9018 oracle written apart from primwatch (`primwatch_tests::cookie`,
//! SipHash from the `siphasher` crate) says, for the RFC's own test vectors and for
//! random clients; a verified cookie takes a query out of rate limiting, a bad one does
//! not; rotation keeps cookies made with the previous secret valid; malformed options
//! are passed unmodified. Then through the real path (the daemon, XDP on a veth): a
//! cookie PowerDNS made with the shared secret is verified, and a daemon rotating its
//! secret every second under load turns no valid cookie away.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use primwatch_common::Verdict;
use primwatch_tests::{
    cookie::{cookie_option, expected, server_cookie, Presented},
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_DROP, XDP_TX},
    packet::{udp_frame, verify_checksums, Flow},
};

const NAMES: &str = r#"
[names."www.example.test"]
ttl = 30
a = ["10.0.0.1"]
aaaa = ["2001:db8::1"]
"#;

fn hex<const N: usize>(s: &str) -> [u8; N] {
    std::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
}

fn from(src: &str) -> Flow {
    let src: IpAddr = src.parse().unwrap();
    Flow { src, ..Flow::client_to_server(src.is_ipv6()) }
}

fn query(id: u16, flow: &Flow, cookie: &[u8]) -> Vec<u8> {
    let qtype = if flow.src.is_ipv6() { RecordType::AAAA } else { RecordType::A };
    let edns = EdnsQuery { options: vec![(10, cookie.to_vec())], ..Default::default() };
    dns::query(id, "www.example.test", qtype, Some(edns)).unwrap()
}

fn record(flow: &Flow) -> (u16, u32, Vec<u8>) {
    match flow.src {
        IpAddr::V4(_) => (1, 30, vec![10, 0, 0, 1]),
        IpAddr::V6(_) => (28, 30, "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec()),
    }
}

/// Asks with `cookie` and returns the reply's COOKIE option data (client + server),
/// after checking the reply byte for byte (assert_answers: the oracle's cookie).
fn ask(h: &Harness, flow: &Flow, cookie: &[u8]) -> Vec<u8> {
    let reply = h.assert_answers(*flow, &query(7, flow, cookie), &[record(flow)]);
    let (client, server) = cookie_option(&reply).expect("a COOKIE option");
    [client, server].concat()
}

#[test]
fn the_oracle_matches_rfc_9018_appendix_a() {
    let secret = hex::<16>("e5e973e5a6b2a43f48e7dc849e37bfcf");
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let client = hex::<8>("2464c4abcf10c957");
    assert_eq!(
        server_cookie(&secret, &client, [0; 3], 1559731985, ip("198.51.100.100")),
        hex("010000005cf79f111f8130c3eee29480")
    );
    assert_eq!(
        server_cookie(&secret, &client, [0; 3], 1559734385, ip("198.51.100.100")),
        hex("010000005cf7a871d4a564a1442aca77")
    );
    let client = hex::<8>("fc93fc62807ddb86");
    assert_eq!(
        server_cookie(&secret, &client, [0; 3], 1559734700, ip("203.0.113.203")),
        hex("010000005cf7a9acf73a7810aca2381e")
    );
    // A.3's query carries another server's cookie, reserved bytes set: valid with them.
    let theirs = hex::<16>("01abcdef5cf78f71a314227b6679ebf5");
    assert_eq!(server_cookie(&secret, &client, [0xab, 0xcd, 0xef], 1559727985, ip("203.0.113.203")), theirs);
    let client = hex::<8>("22681ab97d52c298");
    let v6 = ip("2001:db8:220:1:59de:d0f4:8769:82b8");
    let old = hex::<16>("dd3bdf9344b678b185a6f5cb60fca715");
    let new = hex::<16>("445536bcd2513298075a5d379663c962");
    assert_eq!(server_cookie(&old, &client, [0; 3], 1559741817, v6), hex("010000005cf7c57926556bd0934c72f8"));
    assert_eq!(server_cookie(&new, &client, [0; 3], 1559741961, v6), hex("010000005cf7c609a6bb79d16625507a"));
}

#[test]
fn xdp_answers_rfc_9018_appendix_a() {
    let mut h = Harness::new(53, NAMES).unwrap();
    let secret = hex::<16>("e5e973e5a6b2a43f48e7dc849e37bfcf");
    h.install_cookie_secret(secret).unwrap();
    let counters = |h: &Harness| {
        let c = h.counters().unwrap();
        (c.cookie_verified, c.cookie_bad)
    };

    // A.1: a client cookie alone gets a new server cookie.
    let client = from("198.51.100.100");
    h.set_cookie_clock(1559731985).unwrap();
    assert_eq!(
        ask(&h, &client, &hex::<8>("2464c4abcf10c957")),
        hex::<24>("2464c4abcf10c957010000005cf79f111f8130c3eee29480")
    );
    // A.2: 40 minutes later it comes back: valid, but worn, so renewed.
    h.set_cookie_clock(1559734385).unwrap();
    let before = counters(&h);
    assert_eq!(
        ask(&h, &client, &hex::<24>("2464c4abcf10c957010000005cf79f111f8130c3eee29480")),
        hex::<24>("2464c4abcf10c957010000005cf7a871d4a564a1442aca77")
    );
    assert_eq!(counters(&h), (before.0 + 1, before.1));
    // A.3: another client with another server's cookie, 1h52m old: no longer valid
    // here (RFC 9018 §4.3's hour), so a new one.
    h.set_cookie_clock(1559734700).unwrap();
    let before = counters(&h);
    assert_eq!(
        ask(&h, &from("203.0.113.203"), &hex::<24>("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5")),
        hex::<24>("fc93fc62807ddb86010000005cf7a9acf73a7810aca2381e")
    );
    assert_eq!(counters(&h), (before.0, before.1 + 1));
    // … while within the hour, the same cookie (reserved bytes and all) is valid.
    h.set_cookie_clock(1559727985 + 600).unwrap();
    let before = counters(&h);
    let presented = hex::<24>("fc93fc62807ddb8601abcdef5cf78f71a314227b6679ebf5");
    assert_eq!(ask(&h, &from("203.0.113.203"), &presented), presented, "fresh and valid: echoed");
    assert_eq!(counters(&h), (before.0 + 1, before.1));
    // A.4: IPv6, made with the old secret; the secret has rolled over since: still
    // valid with the previous secret, renewed with the current one.
    let mut h = Harness::new(53, NAMES).unwrap();
    h.install_cookie_secret(hex("dd3bdf9344b678b185a6f5cb60fca715")).unwrap();
    h.install_cookie_secret(hex("445536bcd2513298075a5d379663c962")).unwrap();
    h.set_cookie_clock(1559741961).unwrap();
    assert_eq!(
        ask(
            &h,
            &from("2001:db8:220:1:59de:d0f4:8769:82b8"),
            &hex::<24>("22681ab97d52c298010000005cf7c57926556bd0934c72f8")
        ),
        hex::<24>("22681ab97d52c298010000005cf7c609a6bb79d16625507a")
    );
    assert_eq!(counters(&h), (1, 0));
}

#[test]
fn replies_match_the_oracle_for_random_clients() {
    let h = Harness::new(53, NAMES).unwrap();
    let mut rng = primwatch_tests::XorShift(0x2545_f491_4f6c_dd1d);
    let mut next = || rng.next_u64();
    let (mut verified, mut bad) = (0, 0);
    for i in 0..400 {
        let r = next();
        let flow = if i % 2 == 0 {
            from(&format!("{}.{}.{}.{}", 11 + r % 100, (r >> 8) as u8, (r >> 16) as u8, 1 + (r >> 24) as u8 % 250))
        } else {
            from(&format!("2001:db8:{:x}:{:x}::{:x}", (r >> 8) as u16, (r >> 24) as u16, 1 + (r >> 40) as u16 % 0xfff0))
        };
        let client = next().to_le_bytes();
        // A client cookie alone, then what the reply gave back, then that tampered
        // with, then a server cookie of another length.
        let learned = ask(&h, &flow, &client);
        let mut tampered = learned.clone();
        tampered[8 + (r as usize % 16)] ^= 1 << ((r >> 60) & 7);
        let mut short = learned[..16].to_vec();
        short[8] = 1;
        for presented in [learned.clone(), tampered, short] {
            let reply = ask(&h, &flow, &presented);
            let (verdict, _) = expected(
                &primwatch_tests::harness::TEST_COOKIE_SECRET,
                &primwatch_tests::harness::TEST_COOKIE_SECRET,
                &client,
                Some(&presented[8..]),
                flow.src,
                h.cookie_now(),
            );
            match verdict {
                Presented::Verified => verified += 1,
                Presented::Bad => bad += 1,
                Presented::None => unreachable!("a server cookie was presented"),
            }
            assert_eq!(reply[..8], client, "client cookie echoed");
        }
    }
    assert_eq!((verified, bad), (400, 800), "the oracle's verdicts");
    let c = h.counters().unwrap();
    assert_eq!((c.cookie_verified, c.cookie_bad), (400, 800));
}

#[test]
fn a_verified_cookie_is_not_rate_limited_and_a_bad_one_is() {
    let h =
        Harness::new(53, &format!("{NAMES}\n[rrl]\nresponses_per_second = 5\nslip = 0\nwindow = \"5s\"\n")).unwrap();
    let flow = from("198.51.100.7");
    let client = [3u8; 8];
    // A client cookie alone is limited like any answer: five, then dropped.
    let verdicts: Vec<u32> =
        (0..8).map(|i| h.run(&udp_frame(&flow, 64, &query(i, &flow, &client))).unwrap().verdict).collect();
    assert_eq!(verdicts, [&[XDP_TX; 5][..], &[XDP_DROP; 3]].concat());
    // The same prefix, now in debt: with a valid server cookie every query is answered.
    let now = h.cookie_now();
    let (_, server) = expected(
        &primwatch_tests::harness::TEST_COOKIE_SECRET,
        &primwatch_tests::harness::TEST_COOKIE_SECRET,
        &client,
        None,
        flow.src,
        now,
    );
    let valid = [client.to_vec(), server.to_vec()].concat();
    for _ in 0..50 {
        assert_eq!(ask(&h, &flow, &valid), valid);
    }
    // A forged one (another hash) is not proof: dropped.
    let mut forged = valid.clone();
    forged[23] ^= 0xff;
    let out = h.run(&udp_frame(&flow, 64, &query(9, &flow, &forged))).unwrap();
    assert_eq!(out.verdict, XDP_DROP);
    let c = h.counters().unwrap();
    assert_eq!((c.cookie_verified, c.cookie_bad, c.rrl_dropped), (50, 1, 4));
}

#[test]
fn rotation_keeps_the_previous_secrets_cookies_valid_and_no_older() {
    let mut h = Harness::new(53, NAMES).unwrap();
    let flow = from("2001:db8:7::9");
    let client = [9u8; 8];
    let first = ask(&h, &flow, &client);
    h.install_cookie_secret([1; 16]).unwrap();
    // Made with the previous secret: verified, and renewed with the current one.
    let second = ask(&h, &flow, &first);
    assert_ne!(second, first);
    assert_eq!(h.counters().unwrap().cookie_verified, 1);
    h.install_cookie_secret([2; 16]).unwrap();
    // `second` (secret 1, now previous) is valid; `first` (two secrets ago) is not.
    ask(&h, &flow, &second);
    ask(&h, &flow, &first);
    let c = h.counters().unwrap();
    assert_eq!((c.cookie_verified, c.cookie_bad), (2, 1));
}

#[test]
fn malformed_cookie_options_are_passed_unmodified() {
    let h = Harness::new(53, NAMES).unwrap();
    let flow = Flow::client_to_server(false);
    // RFC 7873 §5.2.2: a client cookie is 8 bytes, a server cookie 8 to 32.
    for len in [0usize, 1, 7, 9, 15, 41, 48] {
        h.assert_passed(&udp_frame(&flow, 64, &query(1, &flow, &vec![5; len])), Verdict::Malformed);
    }
    // Two COOKIE options (appended by hand: the DNS library keeps one per code).
    let mut twice = query(2, &flow, &[1; 8]);
    let rdlen_at = twice.len() - 12 - 2;
    assert_eq!(twice[rdlen_at..rdlen_at + 2], [0, 12]);
    twice[rdlen_at + 1] = 24;
    twice.extend_from_slice(&[0, 10, 0, 8, 2, 2, 2, 2, 2, 2, 2, 2]);
    h.assert_passed(&udp_frame(&flow, 64, &twice), Verdict::Malformed);
    // Every valid length is answered (16..=40 with a server cookie that is not ours).
    for len in [8usize, 16, 24, 31, 40] {
        let out = h.run(&udp_frame(&flow, 64, &query(3, &flow, &vec![6; len]))).unwrap();
        assert_eq!(out.verdict, XDP_TX, "a cookie of {len} bytes");
        verify_checksums(&out.frame).unwrap();
    }
}

#[test]
fn with_cookies_off_the_option_is_ignored() {
    let h = Harness::new(53, &format!("{NAMES}\n[cookies]\nenabled = false\n")).unwrap();
    let flow = Flow::client_to_server(true);
    let reply = h.assert_answers(flow, &query(1, &flow, &[4; 8]), &[record(&flow)]);
    assert!(cookie_option(&reply).is_none());
}

#[test]
fn a_cookie_secret_file_must_be_32_hex_digits_and_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = primwatch_tests::TempDir::new("pwcookie").unwrap();
    let secret = dir.0.join("cookie.secret");
    let config =
        format!("[server]\ninterfaces = [\"none\"]\n{NAMES}\n[cookies]\nsecret_file = \"{}\"\n", secret.display());
    let path = dir.0.join("primwatch.toml");
    std::fs::write(&path, &config).unwrap();
    let load = || primwatch::config::Config::load(&path);
    std::fs::write(&secret, "e5e973e5a6b2a43f48e7dc849e37bfcf\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(load().unwrap().cookies.secret, Some(hex("e5e973e5a6b2a43f48e7dc849e37bfcf")));
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = load().unwrap_err().to_string();
    assert!(e.contains("mode 644") && e.contains("primwatch.toml:"), "{e}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Owned by another user, who could chmod it and replace the secret: refused.
    std::os::unix::fs::chown(&secret, Some(65534), None).unwrap();
    let e = load().unwrap_err().to_string();
    assert!(e.contains("owned by uid 65534") && e.contains("must be owned by root"), "{e}");
    std::os::unix::fs::chown(&secret, Some(0), None).unwrap();
    for bad in ["e5e973e5", "zz e973e5a6b2a43f48e7dc849e37bfcf", "e5e973e5a6b2a43f48e7dc849e37bfcf00"] {
        std::fs::write(&secret, bad).unwrap();
        let e = load().unwrap_err().to_string();
        assert!(e.contains("32 hex digits"), "{bad}: {e}");
    }
}

// ---- Through the real path: the daemon, XDP on the lab's veth, PowerDNS ------------

/// PowerDNS (its own RFC 9018 implementation, `edns-cookie-secret`) and primwatch
/// sharing a secret from `cookies.secret_file`: a cookie PowerDNS made is verified in
/// XDP, as one anycast node's is by another.
#[test]
fn a_cookie_made_by_powerdns_with_the_shared_secret_is_verified_in_xdp() {
    use primwatch_tests::world::{world_options, Options, PDNS_PASS, SITE_GROUPS};
    use std::os::unix::fs::PermissionsExt;
    let dir = primwatch_tests::TempDir::new("pwcookie").unwrap();
    let secret_file = dir.0.join("cookie.secret");
    std::fs::write(&secret_file, "445536bcd2513298075a5d379663c962\n").unwrap();
    std::fs::set_permissions(&secret_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let w = world_options(
        &format!(
            "{SITE_GROUPS}[names.\"www.example.test\"]\ngroups = [\"tokyo\"]\n[cookies]\nsecret_file = \"{}\"\n\
             secret_rotation = \"3s\"\n",
            secret_file.display()
        ),
        &Options { pdns_conf: "edns-cookie-secret=445536bcd2513298075a5d379663c962\n", ..Options::default() },
    );
    let sock = dns::udp_socket(&w.lab.client_ns, false).unwrap();
    let server = std::net::SocketAddr::new(w.lab.server_addr(false), 53);
    let ask = |name: &str, cookie: &[u8]| {
        let edns = EdnsQuery { options: vec![(10, cookie.to_vec())], ..Default::default() };
        let reply = dns::exchange_udp(&sock, server, &dns::query(5, name, RecordType::A, Some(edns)).unwrap()).unwrap();
        let (client, server) = cookie_option(&reply).expect("a COOKIE option");
        (dns::addresses(&dns::parse(&reply).unwrap()), [client, server].concat())
    };
    // PowerDNS 4.7 answers a client cookie alone with BADCOOKIE and its server cookie
    // (RFC 7873 §5.2.3 lets it), and the name it serves once that cookie comes back …
    let (_, from_powerdns) = ask("pass.example.test", &[0x24; 8]);
    assert_eq!(from_powerdns.len(), 24);
    let (addresses, _) = ask("pass.example.test", &from_powerdns);
    assert_eq!(addresses, vec![PDNS_PASS.parse::<IpAddr>().unwrap()]);
    // … which is exactly RFC 9018's (the oracle, for the second PowerDNS stamped it).
    let stamped = u32::from_be_bytes(from_powerdns[12..16].try_into().unwrap());
    let client_ip = w.lab.client_addr(false);
    let made = server_cookie(&hex("445536bcd2513298075a5d379663c962"), &[0x24; 8], [0; 3], stamped, client_ip);
    assert_eq!(from_powerdns[8..], made, "PowerDNS's cookie is the RFC 9018 one");
    // XDP verifies it (fresh, so it comes back as it is) and counts it.
    let before = w.controller.counters().unwrap().cookie_verified;
    let (addresses, from_xdp) = ask("www.example.test", &from_powerdns);
    assert!(!addresses.is_empty(), "answered by XDP");
    assert_eq!(from_xdp, from_powerdns);
    assert_eq!(w.controller.counters().unwrap().cookie_verified, before + 1);

    // The shared secret replaced (a new file, a reload): the replaced one is honoured
    // for one secret_rotation (3 s here), then retired, not kept indefinitely.
    std::fs::write(&secret_file, "00112233445566778899aabbccddeeff\n").unwrap();
    assert_eq!(w.controller.ctl(&["reload"]).unwrap()["ok"], true);
    ask("www.example.test", &from_powerdns);
    assert_eq!(w.controller.counters().unwrap().cookie_verified, before + 2, "still valid just after the change");
    std::thread::sleep(std::time::Duration::from_secs(5));
    let (addresses, from_xdp) = ask("www.example.test", &from_powerdns);
    assert!(!addresses.is_empty());
    assert_eq!(w.controller.counters().unwrap().cookie_verified, before + 2, "retired after one rotation period");
    assert_ne!(from_xdp[8..], from_powerdns[8..], "a fresh server cookie instead");
    assert!(w.controller.log().contains("no longer accepted"));
}

/// A BIND resolver in front of the lab. XDP hands it server cookies, so PowerDNS must
/// too for the queries XDP passes, or BIND takes the missing cookie for spoofing and
/// asks again over TCP. With one secret file read by both (`primwatch cookie-secret`,
/// linked into PowerDNS's include-dir, as the package sets it up) it opens no TCP
/// connection; with PowerDNS left without it, it does — the case this test tells apart.
#[test]
fn a_bind_resolver_makes_no_tcp_retries_when_both_paths_share_the_secret() {
    use hickory_proto::op::ResponseCode;
    use primwatch_tests::{
        resolver,
        world::{world_options, Options, SITE_GROUPS},
    };
    let tcp_queries = |shared: bool| -> u64 {
        let dir = primwatch_tests::TempDir::new("pwcookieshare").unwrap();
        let (secret, include) = primwatch_tests::cookie::shared_secret(&dir.0).unwrap();
        let pdns_conf = if shared { include } else { String::new() };
        let w = world_options(
            &format!(
                "{SITE_GROUPS}[names.\"www.example.test\"]\ngroups = [\"tokyo\"]\n\
                 [names.\"a.deep.example.test\"]\ngroups = [\"tokyo\"]\n\
                 [zones.\"example.test\"]\n[cookies]\nsecret_file = \"{}\"\n",
                secret.display()
            ),
            &Options { remote_backend: true, pdns_conf: &pdns_conf, ..Options::default() },
        );
        let named = resolver::named(&w.lab.client_ns, "example.test", w.lab.server_addr(false)).unwrap();
        // XDP answers first (BIND asks with DO=1; the zone is declared unsigned): BIND
        // now holds this server's cookie.
        let before = w.controller.counters().unwrap().answered;
        let reply = named.ask("www.example.test", RecordType::A).unwrap();
        assert!(!dns::addresses(&reply).is_empty(), "{reply:?}\n{}", named.log());
        assert!(w.controller.counters().unwrap().answered > before, "XDP answered BIND");
        // Then what PowerDNS answers: a zone-file name, another type, a name that does
        // not exist, a name below an empty non-terminal (minimised: NS? deep first).
        for (name, qtype, rcode) in [
            ("pass.example.test", RecordType::A, ResponseCode::NoError),
            ("www.example.test", RecordType::MX, ResponseCode::NoError),
            ("nx.example.test", RecordType::A, ResponseCode::NXDomain),
            ("a.deep.example.test", RecordType::A, ResponseCode::NoError),
        ] {
            let reply = named.ask(name, qtype).unwrap();
            assert_eq!(reply.response_code(), rcode, "{name} {qtype}: {reply:?}\n{}", named.log());
        }
        assert!(w.pdns.stat("udp-queries").unwrap() >= 4, "PowerDNS answered the passed queries");
        w.pdns.stat("tcp-queries").unwrap()
    };
    assert_eq!(tcp_queries(true), 0, "one secret: no TCP retry");
    assert!(tcp_queries(false) > 0, "PowerDNS without the secret: BIND retries over TCP");
}

/// The daemon rotating its secret every second while a client inside a prefix over
/// its rate keeps presenting the latest cookie it was given: every query is answered
/// (a rotation never turns a valid cookie away), none is rate limited.
#[test]
fn secret_rotation_under_load_refuses_no_valid_cookie() {
    use primwatch_tests::world::{world, SITE_GROUPS};
    let w = world(&format!(
        "{SITE_GROUPS}[names.\"www.example.test\"]\ngroups = [\"tokyo\"]\n\
         [rrl]\nresponses_per_second = 5\nslip = 0\n[cookies]\nsecret_rotation = \"1s\"\n"
    ));
    let sock = dns::udp_socket(&w.lab.client_ns, false).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(500))).unwrap();
    let server = std::net::SocketAddr::new(w.lab.server_addr(false), 53);
    let mut cookie = vec![0x31; 8];
    let (mut answered, mut renewed, mut sent) = (0, 0, 0);
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(4500) {
        let edns = EdnsQuery { options: vec![(10, cookie.clone())], ..Default::default() };
        sent += 1;
        let query = dns::query(sent as u16, "www.example.test", RecordType::A, Some(edns)).unwrap();
        if let Ok(reply) = dns::exchange_udp(&sock, server, &query) {
            answered += 1;
            let (client, server) = cookie_option(&reply).expect("a COOKIE option");
            let next = [client, server].concat();
            renewed += (next != cookie && cookie.len() == 24) as u32;
            cookie = next;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(answered, sent, "every query answered across the rotations");
    assert!(sent > 200, "{sent} queries: far over the prefix's 5/s");
    assert!(renewed >= 3, "cookies renewed at {renewed} rotations");
    let xdp = w.controller.counters().unwrap();
    assert_eq!(xdp.cookie_verified, sent as u64 - 1, "all but the first presented a valid cookie");
    assert_eq!((xdp.cookie_bad, xdp.rrl_dropped), (0, 0));
}
