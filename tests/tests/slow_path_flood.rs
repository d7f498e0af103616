//! The slow path under a spoofed random-subdomain flood, end to end: XDP on the lab's
//! veth, real PowerDNS asking primwatch through the remote backend, the flood sent from
//! random /24s of 11.0.0.0/8 with sendmmsg (as fast as one core sends: far above what
//! PowerDNS answers). While it lasts, three real clients must get their slow-path
//! queries answered — one with a server cookie (over UDP: a zone-file name and the
//! SOA), one from an exempt address, one over TCP (a managed name) — and PowerDNS must
//! stay up, without being restarted. `PRIMWATCH_FLOOD_SECONDS` sets the flood's length
//! (8 s by default; README's figures are from a 30 s run).

use std::{
    net::{IpAddr, SocketAddr},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use hickory_proto::rr::RecordType;
use primwatch_tests::{
    cookie::cookie_option,
    dns::{self, EdnsQuery},
    flood::{random_label, send_for, spoofed_frames},
    lab::CLIENT_IF,
    netns,
    packet::Flow,
    raw::PacketSocket,
    world::{world_options, Options, PDNS_PASS, SITE_GROUPS, WEB1, WEB2},
    TempDir, XorShift,
};

fn flood_length() -> Duration {
    Duration::from_secs(std::env::var("PRIMWATCH_FLOOD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8))
}
/// A query unanswered this long counts as lost.
const PATIENCE: Duration = Duration::from_millis(1000);
const EXEMPT: &str = "10.77.0.3";

/// What one client saw: how many it asked, how many were answered, the latencies.
#[derive(Debug, Default)]
struct Seen {
    asked: usize,
    answered: usize,
    latencies: Vec<Duration>,
}

impl Seen {
    fn note(&mut self, started: Instant, ok: bool) {
        self.asked += 1;
        if ok {
            self.answered += 1;
            self.latencies.push(started.elapsed());
        }
    }

    fn p99(&mut self) -> Duration {
        self.latencies.sort();
        self.latencies.get(self.latencies.len() * 99 / 100).copied().unwrap_or(PATIENCE)
    }
}

#[test]
fn a_random_name_flood_from_many_prefixes_leaves_the_slow_path_to_real_clients() {
    let dir = TempDir::new("pwflood").unwrap();
    let (secret, include) = primwatch_tests::cookie::shared_secret(&dir.0).unwrap();
    // PowerDNS as examples/pdns.conf sets it: the shared cookie secret, and UDP
    // questions dropped past 1,000 waiting rather than an exit at 5,000.
    let pdns_conf = format!("{include}overload-queue-length=1000\n");
    let w = world_options(
        &format!(
            "{SITE_GROUPS}[names.\"www.example.test\"]\ngroups = [\"tokyo\"]\n[zones.\"example.test\"]\n\
             [cookies]\nsecret_file = \"{}\"\n[slow_path]\nexempt = [\"{EXEMPT}/32\"]\n",
            secret.display()
        ),
        &Options { remote_backend: true, pdns_conf: &pdns_conf, ..Options::default() },
    );
    w.expect("www.example.test", &[WEB1, WEB2], Duration::from_secs(5));
    netns::ip(&["-n", &w.lab.client_ns, "addr", "add", &format!("{EXEMPT}/24"), "dev", CLIENT_IF]).unwrap();
    let server_ip = w.lab.server_addr(false);
    let server = SocketAddr::new(server_ip, 53);
    let ns = w.lab.client_ns.clone();

    // The cookie client's server cookie, from an answer XDP gives.
    let client_cookie = [0x5au8; 8];
    let with_cookie = |cookie: Vec<u8>| EdnsQuery { options: vec![(10, cookie)], ..Default::default() };
    let sock = dns::udp_socket_from(&ns, w.lab.client_addr(false)).unwrap();
    let reply = dns::exchange_udp(
        &sock,
        server,
        &dns::query(1, "www.example.test", RecordType::A, Some(with_cookie(client_cookie.to_vec()))).unwrap(),
    )
    .unwrap();
    let (_, server_cookie) = cookie_option(&reply).expect("XDP's server cookie");
    let cookie = [client_cookie.to_vec(), server_cookie].concat();

    // The flood: random names under the zone, from random /24s.
    let template = Flow { dst: server_ip, ..w.lab.udp_flow(&ns).unwrap() };
    let mut rng = XorShift(0x2026_1207_dead_beef);
    let frames = spoofed_frames(&template, 65_536, false, &mut rng, |rng| {
        let name = format!("{}.example.test", random_label(rng, 12));
        dns::query(rng.next_u64() as u16, &name, RecordType::A, None).unwrap()
    });
    let before = w.controller.counters().unwrap();
    let udp_before = w.pdns.stat("udp-queries").unwrap();
    let flooding = AtomicBool::new(true);
    let (flood, cookie_client, exempt_client, tcp_client) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let sock = PacketSocket::open(&ns, CLIENT_IF).unwrap();
            let sent = send_for(&sock, &frames, flood_length()).unwrap();
            flooding.store(false, Ordering::Relaxed);
            sent
        });
        // The clients start once the flood is on, and ask until it ends.
        let udp_client = |source: IpAddr, edns: Option<EdnsQuery>| {
            let flooding = &flooding;
            let ns = ns.clone();
            move || {
                std::thread::sleep(Duration::from_millis(500));
                let sock = dns::udp_socket_from(&ns, source).unwrap();
                sock.set_read_timeout(Some(PATIENCE)).unwrap();
                let mut seen = Seen::default();
                let mut id = 100u16;
                while flooding.load(Ordering::Relaxed) {
                    id += 1;
                    let (name, qtype) = if id.is_multiple_of(2) {
                        ("pass.example.test", RecordType::A)
                    } else {
                        ("example.test", RecordType::SOA)
                    };
                    let query = dns::query(id, name, qtype, edns.clone()).unwrap();
                    let started = Instant::now();
                    let ok = dns::exchange_udp(&sock, server, &query)
                        .ok()
                        .and_then(|r| dns::parse(&r).ok())
                        .is_some_and(|m| !m.answers().is_empty());
                    seen.note(started, ok);
                    std::thread::sleep(Duration::from_millis(20));
                }
                seen
            }
        };
        let cookie_client = s.spawn(udp_client(w.lab.client_addr(false), Some(with_cookie(cookie.clone()))));
        let exempt_client = s.spawn(udp_client(EXEMPT.parse().unwrap(), None));
        let tcp_client = s.spawn(|| {
            std::thread::sleep(Duration::from_millis(500));
            let mut seen = Seen::default();
            let mut id = 500u16;
            while flooding.load(Ordering::Relaxed) {
                id += 1;
                let query = dns::query(id, "www.example.test", RecordType::A, None).unwrap();
                let started = Instant::now();
                let ok = dns::exchange_tcp(&ns, server, &query)
                    .ok()
                    .and_then(|r| dns::parse(&r).ok())
                    .is_some_and(|m| !dns::addresses(&m).is_empty());
                seen.note(started, ok && started.elapsed() < PATIENCE);
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        });
        (
            flood.join().unwrap(),
            cookie_client.join().unwrap(),
            exempt_client.join().unwrap(),
            tcp_client.join().unwrap(),
        )
    });
    let after = w.controller.counters().unwrap();
    let (sent, seconds) = flood;
    // Held: dropped, or (every 2nd, the default slip) answered with an empty TC reply.
    let held = after.slow_path_dropped - before.slow_path_dropped + after.slow_path_slipped - before.slow_path_slipped;
    let let_through = after.slow_path_passed - before.slow_path_passed;
    let powerdns_got = w.pdns.stat("udp-queries").unwrap() - udp_before;
    let mut report = String::new();
    for (label, seen) in [("cookie", &cookie_client), ("exempt", &exempt_client), ("tcp", &tcp_client)] {
        let mut sorted = Seen { latencies: seen.latencies.clone(), ..*seen };
        let p99 = sorted.p99();
        report += &format!("{label}: {}/{} answered, p99 {p99:?}; ", seen.answered, seen.asked);
    }
    eprintln!(
        "flood: {:.0}/s for {seconds:.1} s; guard let through {let_through}, held {held} (TC {}); PowerDNS got {powerdns_got} UDP queries; {report}",
        sent as f64 / seconds,
        after.slow_path_slipped - before.slow_path_slipped
    );
    // The flood was real: far above PowerDNS's ceiling, held to the budget.
    assert!(sent as f64 / seconds > 100_000.0, "the flood was only {:.0}/s", sent as f64 / seconds);
    assert!(held as f64 > 0.8 * sent as f64, "most of the flood held in XDP: {report}");
    assert!(let_through as f64 <= 5_000.0 * (seconds + 2.0) * 1.1, "the total budget holds: {let_through}");
    // PowerDNS is up, never restarted, and answers.
    assert!(!w.pdns.log().contains("respawning"), "{}", w.pdns.log());
    assert_eq!(w.answers("pass.example.test"), [PDNS_PASS.to_string()].into());
    // Every client got at least 99 % of its answers.
    for (label, seen) in [("cookie", &cookie_client), ("exempt", &exempt_client), ("tcp", &tcp_client)] {
        assert!(seen.asked >= 50, "{label} asked only {}: {report}", seen.asked);
        assert!(seen.answered * 100 >= seen.asked * 99, "{label}: {report}");
    }
    assert!(after.slow_path_cookie > before.slow_path_cookie, "the cookie client went through on its cookie");
    assert!(after.slow_path_exempt > before.slow_path_exempt, "the exempt client went through as exempt");
}
