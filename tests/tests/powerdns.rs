//! One truth for both paths: queries XDP passes (TCP, DO=1, other types) reach PowerDNS,
//! which asks primwatch's remote backend and so answers from the same health state,
//! views and selection. Real PowerDNS (launch=bind,remote), real backends going down.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::atomic::{AtomicBool, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use primwatch_tests::{
    dns::{self, EdnsQuery},
    world::{set, world_with, World, PDNS_PASS, SITE_GROUPS, WEB1, WEB2, WEB3},
};

const NAMES: &str = r#"
[names."www.example.test"]
groups = ["tokyo", "osaka"]

[views.kansai]
sources = ["198.51.100.0/24"]
[views.kansai.names."www.example.test"]
groups = ["osaka"]
"#;

const SOON: Duration = Duration::from_secs(3);

fn server(w: &World) -> SocketAddr {
    SocketAddr::new(w.lab.server_addr(false), 53)
}

fn addresses(reply: &[u8]) -> BTreeSet<String> {
    dns::addresses(&dns::parse(reply).unwrap()).iter().map(|a| a.to_string()).collect()
}

fn tcp(w: &World, name: &str, qtype: RecordType, edns: Option<EdnsQuery>) -> hickory_proto::op::Message {
    let reply = dns::exchange_tcp(&w.lab.client_ns, server(w), &dns::query(7, name, qtype, edns).unwrap()).unwrap();
    dns::parse(&reply).unwrap()
}

fn tcp_set(w: &World, name: &str) -> BTreeSet<String> {
    dns::addresses(&tcp(w, name, RecordType::A, None)).iter().map(|a| a.to_string()).collect()
}

fn ecs(prefix: [u8; 3]) -> EdnsQuery {
    // family 1, source /24, scope 0, address bytes
    let data = [&[0, 1, 24, 0][..], &prefix[..]].concat();
    EdnsQuery { options: vec![(8, data)], ..EdnsQuery::default() }
}

#[test]
fn passed_queries_get_the_same_health_aware_answers_from_powerdns() {
    let mut w = world_with(&format!("{SITE_GROUPS}{NAMES}"), true);
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let before = w.pdns.stat("tcp-queries").unwrap_or(0);
    assert_eq!(tcp_set(&w, "www.example.test"), set(&[WEB1, WEB2]));
    assert!(w.pdns.stat("tcp-queries").unwrap() > before, "PowerDNS answered the TCP query");

    // DO=1 over UDP: XDP passes it, PowerDNS answers the same set.
    let sock = dns::udp_socket(&w.lab.client_ns, false).unwrap();
    let do_query =
        dns::query(9, "www.example.test", RecordType::A, Some(EdnsQuery { dnssec_ok: true, ..EdnsQuery::default() }))
            .unwrap();
    let passed_before = w.controller.counters().unwrap().pass_dnssec;
    assert_eq!(addresses(&dns::exchange_udp(&sock, server(&w), &do_query).unwrap()), set(&[WEB1, WEB2]));
    assert!(w.controller.counters().unwrap().pass_dnssec > passed_before);

    // Other types of a managed name: NODATA, not NXDOMAIN; the zone's own names and SOA
    // come from the zone file.
    let mx = tcp(&w, "www.example.test", RecordType::MX, None);
    assert_eq!((mx.response_code(), mx.answers().len()), (ResponseCode::NoError, 0));
    assert_eq!(tcp_set(&w, "pass.example.test"), set(&[PDNS_PASS]));
    let soa = tcp(&w, "example.test", RecordType::SOA, None);
    assert_eq!(soa.answers().len(), 1);

    // The view, chosen by the client subnet on both paths.
    let udp_view = dns::exchange_udp(
        &sock,
        server(&w),
        &dns::query(11, "www.example.test", RecordType::A, Some(ecs([198, 51, 100]))).unwrap(),
    )
    .unwrap();
    assert_eq!(addresses(&udp_view), set(&[WEB3]));
    let tcp_view = tcp(&w, "www.example.test", RecordType::A, Some(ecs([198, 51, 100])));
    assert_eq!(dns::addresses(&tcp_view).iter().map(|a| a.to_string()).collect::<Vec<_>>(), [WEB3]);
    // Both claim the view's /24 as the ECS scope, so a resolver caches per view.
    assert_eq!(dns::ecs_scope(&dns::parse(&udp_view).unwrap()), Some(24));
    assert_eq!(dns::ecs_scope(&tcp_view), Some(24));

    // Health: a backend down is gone from both paths.
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB1], SOON);
    assert_eq!(tcp_set(&w, "www.example.test"), set(&[WEB1]));
    w.backends[1].resume().unwrap();
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    assert_eq!(tcp_set(&w, "www.example.test"), set(&[WEB1, WEB2]));
}

#[test]
fn udp_and_tcp_agree_while_targets_flap() {
    // The lab's client asks thousands of passed (DO=1) questions a second here, as an
    // operator's monitoring might: it is exempt from the slow-path guard's budgets.
    let mut w = world_with(&format!("{SITE_GROUPS}{NAMES}[slow_path]\nexempt = [\"10.77.0.0/24\"]\n"), true);
    let do_edns = EdnsQuery { dnssec_ok: true, ..EdnsQuery::default() };
    // The PowerDNS path, alternately over TCP and as a DO=1 datagram XDP passes.
    agree_while_flapping(&mut w, None, |w, sock, id| {
        if id % 2 == 0 {
            tcp_set(w, "www.example.test")
        } else {
            addresses(
                &dns::exchange_udp(
                    sock,
                    server(w),
                    &dns::query(id, "www.example.test", RecordType::A, Some(do_edns.clone())).unwrap(),
                )
                .unwrap(),
            )
        }
    });
}

#[test]
fn do_bit_answers_from_xdp_and_powerdns_agree_while_targets_flap() {
    // With the zone declared unsigned, XDP answers DO=1 over UDP; PowerDNS answers DO=1
    // over TCP. Both must carry the same records.
    let mut w = world_with(&format!("{SITE_GROUPS}{NAMES}[zones.\"example.test\"]\n"), true);
    let do_edns = EdnsQuery { dnssec_ok: true, ..EdnsQuery::default() };
    let before = w.controller.counters().unwrap();
    let udp_queries = agree_while_flapping(&mut w, Some(do_edns.clone()), |w, _, _| {
        dns::addresses(&tcp(w, "www.example.test", RecordType::A, Some(do_edns.clone())))
            .iter()
            .map(|a| a.to_string())
            .collect()
    });
    let after = w.controller.counters().unwrap();
    assert!(after.answered - before.answered >= udp_queries, "XDP answered every DO=1 datagram");
    assert_eq!(after.pass_dnssec, before.pass_dnssec, "no DO=1 query was passed");
}

/// For 5 s while web2 flaps, compares XDP's UDP answers (with `xdp_edns`) just before
/// and just after each answer `via_pdns` gets from PowerDNS; PowerDNS must agree with
/// one of them every time. Returns the number of UDP queries sent.
fn agree_while_flapping(
    w: &mut World,
    xdp_edns: Option<EdnsQuery>,
    via_pdns: impl Fn(&World, &std::net::UdpSocket, u16) -> BTreeSet<String>,
) -> u64 {
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let mut web2 = w.backends.remove(1);
    let w = &*w;
    // Real flapping: web2's backend goes away and comes back; checks notice on their own.
    let stop = Arc::new(AtomicBool::new(false));
    let flapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut flaps = 0;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(350));
                if flaps % 2 == 0 {
                    web2.stop()
                } else {
                    web2.resume().unwrap()
                }
                flaps += 1;
            }
            flaps
        })
    };
    let sock = dns::udp_socket(&w.lab.client_ns, false).unwrap();
    let udp = |id: u16| {
        let query = dns::query(id, "www.example.test", RecordType::A, xdp_edns.clone()).unwrap();
        addresses(&dns::exchange_udp(&sock, server(w), &query).unwrap())
    };
    let (mut compared, mut stable, mut mismatches, mut seen) = (0, 0, Vec::new(), BTreeSet::new());
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        let id = compared as u16;
        let before = udp(id);
        let pdns = via_pdns(w, &sock, id);
        let after = udp(id);
        // A change may land between the three queries: PowerDNS must agree with XDP
        // just before or just after.
        if pdns != before && pdns != after {
            mismatches.push(format!("xdp {before:?} pdns {pdns:?} xdp {after:?}"));
        }
        stable += (before == after) as u32;
        seen.insert(pdns.into_iter().collect::<Vec<_>>());
        compared += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let flaps = flapper.join().unwrap();
    assert!(
        mismatches.is_empty(),
        "{} of {compared} differ: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(5)]
    );
    assert!(stable > 100, "only {stable} stable comparisons of {compared}");
    assert!(seen.len() >= 2 && flaps >= 10, "the set changed while we compared: {seen:?}, {flaps} flaps");
    println!("{compared} UDP/PowerDNS comparisons over {flaps} flaps: 0 differ");
    2 * compared as u64
}

/// PowerDNS's packet cache on (`cache-ttl=20`), with `[powerdns] control_socket`:
/// PowerDNS answers the managed name from its cache, and primwatch purges the cache
/// whenever the answers change, so after a failover the PowerDNS path gives the new
/// set as soon as XDP does, and never the old one again.
#[test]
fn with_powerdns_caching_every_change_purges_it_and_nothing_stale_is_served() {
    use primwatch_tests::world::{world_options, Options};
    let mut w = world_options(
        &format!("{SITE_GROUPS}[names.\"www.example.test\"]\ngroups = [\"tokyo\", \"osaka\"]\n"),
        &Options { remote_backend: true, pdns_packet_cache: true, ..Options::default() },
    );
    w.expect("www.example.test", &[WEB1, WEB2], SOON);
    let hits = w.pdns.stat("packetcache-hit").unwrap();
    for _ in 0..3 {
        assert_eq!(tcp_set(&w, "www.example.test"), set(&[WEB1, WEB2]));
    }
    assert!(w.pdns.stat("packetcache-hit").unwrap() >= hits + 2, "PowerDNS answered from its cache");

    // Tokyo fails: XDP answers Osaka, and the PowerDNS path at once (the purge's round
    // trip), though its cached answer had 20 s to live.
    w.backends[0].stop();
    w.backends[1].stop();
    w.expect("www.example.test", &[WEB3], SOON);
    let deadline = Instant::now() + Duration::from_millis(300);
    while tcp_set(&w, "www.example.test") != set(&[WEB3]) {
        assert!(Instant::now() < deadline, "PowerDNS still serves the cached answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    // And never the old answer again: the second purge covers a question PowerDNS
    // asked just before the change.
    for _ in 0..15 {
        assert_eq!(tcp_set(&w, "www.example.test"), set(&[WEB3]));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(w.pdns.log().contains("Cache clear request"), "purged through the control socket");
    w.backends[0].resume().unwrap();
    w.backends[1].resume().unwrap();
}
