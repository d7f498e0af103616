//! Response rate limiting in the XDP program (BPF_PROG_TEST_RUN): answers counted per
//! client prefix; over the rate dropped, every `slip`-th sent empty with TC=1; exempt
//! prefixes and log-only mode; other prefixes unaffected.

use std::net::IpAddr;

use hickory_proto::rr::RecordType;
use primwatch_tests::{
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_DROP, XDP_PASS, XDP_TX},
    packet::{expected_reply, udp_frame, verify_checksums, Flow},
};

const NAME: &str = r#"
[names."www.example.test"]
a = ["10.1.1.1"]
aaaa = ["2001:db8::1"]
"#;

fn harness(rrl: &str) -> Harness {
    Harness::new(53, &format!("{NAME}\n[rrl]\n{rrl}\n")).unwrap()
}

fn flow_from(src: &str) -> Flow {
    let src: IpAddr = src.parse().unwrap();
    Flow { src, ..Flow::client_to_server(src.is_ipv6()) }
}

/// The verdicts of `n` A (or AAAA) queries from `flow`, and the TC replies among them
/// checked byte for byte against a reply built independently.
fn ask(h: &Harness, flow: &Flow, n: usize) -> Vec<u32> {
    let qtype = if flow.src.is_ipv6() { RecordType::AAAA } else { RecordType::A };
    let query = dns::query(7, "www.example.test", qtype, Some(EdnsQuery::default())).unwrap();
    let frame = udp_frame(flow, 64, &query);
    (0..n)
        .map(|_| {
            let out = h.run(&frame).unwrap();
            if out.verdict == XDP_TX {
                let reply = dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap();
                if reply.truncated() {
                    // RFC 1035 §4.1.1 TC, no records: the question and our OPT only.
                    let mut expected = expected_reply(&query, &[]).unwrap();
                    expected[2] |= 0x02;
                    assert_eq!(out.frame, udp_frame(&flow.reversed(), 64, &expected));
                } else {
                    assert_eq!(reply.answers().len(), 1);
                }
            }
            out.verdict
        })
        .collect()
}

fn truncated(h: &Harness, flow: &Flow) -> bool {
    let qtype = if flow.src.is_ipv6() { RecordType::AAAA } else { RecordType::A };
    let query = dns::query(7, "www.example.test", qtype, Some(EdnsQuery::default())).unwrap();
    let out = h.run(&udp_frame(flow, 64, &query)).unwrap();
    out.verdict == XDP_TX && dns::parse(&verify_checksums(&out.frame).unwrap()).unwrap().truncated()
}

#[test]
fn over_the_rate_answers_are_dropped_and_every_slipth_is_truncated() {
    let h = harness("responses_per_second = 5\nslip = 2\nwindow = \"5s\"");
    let client = flow_from("198.51.100.7");
    let before = h.counters().unwrap();
    let verdicts = ask(&h, &client, 15);
    // A full second's credit, then limited: drop, slip, drop, slip…
    assert_eq!(&verdicts[..5], &[XDP_TX; 5], "{verdicts:?}");
    for (i, verdict) in verdicts[5..].iter().enumerate() {
        let want = if (i + 1) % 2 == 0 { XDP_TX } else { XDP_DROP };
        assert_eq!(*verdict, want, "limited response {}: {verdicts:?}", i + 1);
    }
    let after = h.counters().unwrap();
    assert_eq!(after.answered - before.answered, 5);
    assert_eq!(after.rrl_dropped - before.rrl_dropped, 5);
    assert_eq!(after.rrl_slipped - before.rrl_slipped, 5);
    // The whole /24 shares the account (in debt: nothing answered in full, the slip
    // count goes on); another /24 has its own.
    let verdicts = ask(&h, &flow_from("198.51.100.200"), 4);
    assert_eq!(verdicts, vec![XDP_DROP, XDP_TX, XDP_DROP, XDP_TX]);
    assert_eq!(h.counters().unwrap().answered, after.answered, "only TC replies");
    assert_eq!(ask(&h, &flow_from("198.51.101.7"), 5), vec![XDP_TX; 5]);
    assert_eq!(h.counters().unwrap().answered - after.answered, 5);
}

/// Every target down: names with `all_down = "nodata"` answer NODATA.
struct AllDown;
impl primwatch::health::Health for AllDown {
    fn target_eligible(&self, _: &str) -> bool {
        false
    }
}

/// The verdicts of `n` A queries for `name` from `flow`.
fn ask_for(h: &Harness, flow: &Flow, name: &str, n: usize) -> Vec<u32> {
    let frame = udp_frame(flow, 64, &dns::query(8, name, RecordType::A, None).unwrap());
    (0..n).map(|_| h.run(&frame).unwrap().verdict).collect()
}

#[test]
fn accounts_are_per_prefix_response_class_and_name() {
    let h = Harness::with_health(
        53,
        &format!(
            "{NAME}\n[names.\"mail.example.test\"]\na = [\"10.1.1.2\"]\n\
             [names.\"*.wild.example.test\"]\na = [\"10.1.1.3\"]\n\
             [targets.t1]\naddress = \"10.2.2.2\"\n[groups.g]\nmembers = [\"t1\"]\n\
             [names.\"gone.example.test\"]\ngroups = [\"g\"]\nall_down = \"nodata\"\n\
             [rrl]\nresponses_per_second = 3\nslip = 0\n"
        ),
        &AllDown,
    )
    .unwrap();
    let resolver = flow_from("198.51.100.53");
    // A spoofed flood for one name puts that name's account for the /24 in debt …
    let flooded = ask_for(&h, &flow_from("198.51.100.7"), "www.example.test", 8);
    assert_eq!(flooded, [&[XDP_TX; 3][..], &[XDP_DROP; 5]].concat());
    assert_eq!(ask_for(&h, &resolver, "www.example.test", 1), [XDP_DROP]);
    // … and not the prefix's other names: the resolver's questions for them are answered.
    assert_eq!(ask_for(&h, &resolver, "mail.example.test", 3), [XDP_TX; 3]);
    // NODATA is a class of its own, with its own account per name.
    let nodata = h.run(&udp_frame(&resolver, 64, &dns::query(8, "gone.example.test", RecordType::A, None).unwrap()));
    let nodata = nodata.unwrap();
    assert_eq!(nodata.verdict, XDP_TX);
    let reply = dns::parse(&verify_checksums(&nodata.frame).unwrap()).unwrap();
    assert!(reply.answers().is_empty(), "NODATA: {reply:?}");
    assert_eq!(ask_for(&h, &resolver, "gone.example.test", 4), [XDP_TX, XDP_TX, XDP_DROP, XDP_DROP]);
    // A wildcard's names share its one account: random labels do not escape the limit.
    let wild: Vec<u32> = (0..6).flat_map(|i| ask_for(&h, &resolver, &format!("r{i}.wild.example.test"), 1)).collect();
    assert_eq!(wild, [XDP_TX, XDP_TX, XDP_TX, XDP_DROP, XDP_DROP, XDP_DROP]);
}

#[test]
fn slip_zero_drops_all_and_slip_one_truncates_all() {
    let h = harness("responses_per_second = 2\nslip = 0");
    let verdicts = ask(&h, &flow_from("203.0.113.1"), 8);
    assert_eq!(verdicts, [&[XDP_TX; 2][..], &[XDP_DROP; 6]].concat());
    let h = harness("responses_per_second = 2\nslip = 1");
    let client = flow_from("203.0.113.1");
    assert_eq!(ask(&h, &client, 8), vec![XDP_TX; 8]);
    assert!(truncated(&h, &client), "over the rate, every answer is truncated");
}

#[test]
fn ipv6_clients_are_counted_per_56() {
    let h = harness("responses_per_second = 3\nslip = 0");
    assert_eq!(ask(&h, &flow_from("2001:db8:aa:bb01::1"), 5), [&[XDP_TX; 3][..], &[XDP_DROP; 2]].concat());
    // Same /56, another /64: the same account, in debt.
    assert_eq!(ask(&h, &flow_from("2001:db8:aa:bbff::2"), 2), vec![XDP_DROP; 2]);
    // Another /56.
    assert_eq!(ask(&h, &flow_from("2001:db8:aa:cc00::1"), 3), vec![XDP_TX; 3]);
}

#[test]
fn exempt_prefixes_and_log_only_limit_nothing_and_count() {
    let h = harness("responses_per_second = 1\nslip = 0\nexempt = [\"192.0.2.0/24\", \"2001:db8:e::/48\"]");
    let before = h.counters().unwrap();
    assert_eq!(ask(&h, &flow_from("192.0.2.53"), 6), vec![XDP_TX; 6]);
    assert_eq!(ask(&h, &flow_from("2001:db8:e:1::53"), 6), vec![XDP_TX; 6]);
    assert_eq!(h.counters().unwrap().rrl_exempt - before.rrl_exempt, 12);
    // Next to an exempt prefix, limited as usual.
    assert_eq!(ask(&h, &flow_from("192.0.3.53"), 3), vec![XDP_TX, XDP_DROP, XDP_DROP]);

    let h = harness("responses_per_second = 2\nlog_only = true");
    let before = h.counters().unwrap();
    assert_eq!(ask(&h, &flow_from("198.51.100.1"), 10), vec![XDP_TX; 10]);
    let after = h.counters().unwrap();
    assert_eq!(after.rrl_log_only - before.rrl_log_only, 8, "what would have been limited is counted");
    assert_eq!(after.answered - before.answered, 10);
}

#[test]
fn without_rrl_nothing_is_limited_and_passes_are_never_limited() {
    let h = Harness::new(53, NAME).unwrap();
    assert_eq!(ask(&h, &flow_from("198.51.100.7"), 50), vec![XDP_TX; 50]);
    // A name XDP does not serve goes to the DNS server, however often: RRL counts
    // answers only.
    let h = harness("responses_per_second = 1\nslip = 0");
    let query = dns::query(7, "other.example.test", RecordType::A, None).unwrap();
    let frame = udp_frame(&flow_from("198.51.100.7"), 64, &query);
    for _ in 0..5 {
        assert_eq!(h.run(&frame).unwrap().verdict, XDP_PASS);
    }
}

/// `n` A queries sent back to back from `from` (a client address) to the lab's server,
/// then every reply collected: (full answers, empty TC=1 replies).
fn burst(w: &primwatch_tests::world::World, from: IpAddr, n: u16) -> (usize, usize) {
    let sock = dns::udp_socket_from(&w.lab.client_ns, from).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_millis(300))).unwrap();
    let server = std::net::SocketAddr::new(w.lab.server_addr(false), 53);
    for id in 0..n {
        sock.send_to(&dns::query(id, "www.example.test", RecordType::A, None).unwrap(), server).unwrap();
    }
    let (mut full, mut truncated) = (0, 0);
    let mut buf = [0u8; 1500];
    while let Ok((len, _)) = sock.recv_from(&mut buf) {
        let reply = dns::parse(&buf[..len]).unwrap();
        if reply.truncated() {
            assert!(reply.answers().is_empty(), "a TC reply carries no records");
            truncated += 1;
        } else {
            assert!(!reply.answers().is_empty(), "a full answer");
            full += 1;
        }
    }
    (full, truncated)
}

#[test]
fn a_flood_from_one_prefix_gets_its_rate_and_others_are_answered_in_full() {
    use primwatch_tests::world::{world, SITE_GROUPS};
    let w = world(&format!(
        "{SITE_GROUPS}[names.\"www.example.test\"]\ngroups = [\"tokyo\"]\n\
         [rrl]\nresponses_per_second = 10\nslip = 2\nwindow = \"2s\"\n"
    ));
    let ns = w.lab.client_ns.clone();
    primwatch_tests::netns::ip(&["-n", &ns, "addr", "add", "10.77.5.2/32", "dev", primwatch_tests::lab::CLIENT_IF])
        .unwrap();
    let flooder = w.lab.client_addr(false);
    let other: IpAddr = "10.77.5.2".parse().unwrap();
    // Through the real path: XDP on the server's veth, the controller's RRL settings.
    let (full, truncated) = burst(&w, flooder, 200);
    // 10 of credit, plus what the burst's own duration earned; half of the rest as TC.
    assert!((10..=12).contains(&full), "full answers to the flooding prefix: {full}");
    let limited = 200 - full;
    assert!(truncated.abs_diff(limited / 2) <= 1, "every 2nd limited answer is a TC reply: {truncated} of {limited}");
    // Another prefix is answered in full meanwhile.
    assert_eq!(burst(&w, other, 8), (8, 0));
    // The controller reports it.
    let stats = w.controller.ctl(&["stats"]).unwrap();
    let xdp = &stats["stats"]["xdp"];
    assert_eq!(xdp["rrl_slipped"].as_u64().unwrap() as usize, truncated, "{xdp}");
    assert_eq!(xdp["rrl_dropped"].as_u64().unwrap() as usize, limited - truncated, "{xdp}");
    // The debt is bounded by the window (2 s): after it, the prefix is answered again,
    // at most a second's credit (10) however long it waited.
    std::thread::sleep(std::time::Duration::from_millis(2300));
    let (full, _) = burst(&w, flooder, 20);
    assert!((1..=10).contains(&full), "answered again after the window: {full}");
}

#[test]
fn a_flood_from_spoofed_sources_cannot_exhaust_the_accounts() {
    // A table far smaller than the flood: 20,000 queries, each from a random /24 (as a
    // spoofed flood looks), each the first of its prefix and so answered.
    let h = harness("responses_per_second = 5\nslip = 0\ntable_size = 1024");
    let mut rng = primwatch_tests::XorShift(0x9e37_79b9_7f4a_7c15);
    let mut next = || rng.next_u64();
    let query = dns::query(7, "www.example.test", RecordType::A, None).unwrap();
    let mut answered = 0;
    for _ in 0..20_000 {
        let r = next();
        // 11.0.0.0 to 100.255.255.0: unicast, not martian, not the harness's own.
        let src =
            std::net::Ipv4Addr::new(11 + (r % 90) as u8, (r >> 8) as u8, (r >> 16) as u8, 1 + (r >> 24) as u8 % 250);
        let out = h.run(&udp_frame(&Flow { src: src.into(), ..Flow::client_to_server(false) }, 64, &query)).unwrap();
        answered += (out.verdict == XDP_TX) as usize;
    }
    assert!(answered >= 19_900, "a prefix seen once is answered: {answered} of 20000");
    // A client arriving after the flood is tracked like any other: its rate, then
    // limited — the flood neither filled the table against it nor let it through.
    let client = flow_from("198.51.100.7");
    assert_eq!(ask(&h, &client, 8), [&[XDP_TX; 5][..], &[XDP_DROP; 3]].concat());
}

/// A spoofed flood through the real path (XDP on the lab's veth, the daemon's RRL and
/// cookie settings), sent as raw frames from many source addresses at fixed rates for
/// three seconds, every reply counted by its destination as it comes back:
/// - 400 queries/s from random hosts of one /24: at most the configured 50/s (plus the
///   first second's credit, +10 %), every 2nd limited one as an empty TC=1;
/// - 400 queries/s from a different /24 each time (a spread spoofed flood): all answered;
/// - 400 queries/s from an exempt /24: all answered;
/// - 20 queries/s from a legitimate client elsewhere: all answered;
/// - 20 queries/s from a client inside the flooded /24 presenting the server cookie it
///   learnt before the flood: all answered.
#[test]
fn a_spoofed_flood_is_limited_per_prefix_and_spares_everyone_else() {
    use primwatch_tests::{
        lab::CLIENT_IF,
        raw::PacketSocket,
        world::{world, SITE_GROUPS},
    };
    use std::{
        collections::BTreeMap,
        net::Ipv4Addr,
        sync::{atomic::AtomicBool, Arc},
        time::{Duration, Instant},
    };
    const RATE: f64 = 50.0;
    let w = world(&format!(
        "{SITE_GROUPS}[names.\"www.example.test\"]\ngroups = [\"tokyo\"]\n\
         [rrl]\nresponses_per_second = {RATE}\nslip = 2\nwindow = \"2s\"\nexempt = [\"203.0.113.0/24\"]\n"
    ));
    let client_ns = w.lab.client_ns.clone();
    let template = w.lab.udp_flow(&client_ns).unwrap();
    let frame_from = |src: Ipv4Addr, id: u16, cookie: Option<&[u8]>| {
        let edns = cookie.map(|c| EdnsQuery { options: vec![(10, c.to_vec())], ..Default::default() });
        let query = dns::query(id, "www.example.test", RecordType::A, edns).unwrap();
        udp_frame(&Flow { src: src.into(), ..template }, 64, &query)
    };
    let is_reply = move |f: &[u8]| f.len() > 42 && f[12..14] == [8, 0] && f[23] == 17 && f[34..36] == [0, 53];

    // The cookie client learns its server cookie before the flood.
    let sender = PacketSocket::open(&client_ns, CLIENT_IF).unwrap();
    let receiver = PacketSocket::open(&client_ns, CLIENT_IF).unwrap();
    let cookie_client = Ipv4Addr::new(198, 51, 100, 77);
    sender.send(&frame_from(cookie_client, 1, Some(&[0x42; 8]))).unwrap();
    let reply = receiver.recv(Duration::from_secs(2), |f| is_reply(f) && f[30..34] == cookie_client.octets()).unwrap();
    let (client, server) = primwatch_tests::cookie::cookie_option(&reply[42..]).expect("a server cookie");
    let cookie = [client, server].concat();

    // Replies, by destination: (full answers, TC replies).
    let done = Arc::new(AtomicBool::new(false));
    let counting = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut got: BTreeMap<[u8; 4], (u32, u32)> = BTreeMap::new();
            let mut quiet_since = None;
            loop {
                match receiver.recv(Duration::from_millis(100), is_reply) {
                    Some(f) => {
                        quiet_since = None;
                        let entry = got.entry(f[30..34].try_into().unwrap()).or_default();
                        if f[44] & 0x02 != 0 {
                            entry.1 += 1;
                        } else {
                            entry.0 += 1;
                        }
                    }
                    None if done.load(std::sync::atomic::Ordering::SeqCst)
                        && quiet_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_millis(300) =>
                    {
                        return got;
                    }
                    None => {}
                }
            }
        })
    };

    let mut rng = primwatch_tests::XorShift(0x853c_49e6_748f_ea9b);
    let mut next = move || rng.next_u64();
    let legit = Ipv4Addr::new(192, 0, 2, 55);
    let (mut sent_legit, mut sent_cookie, mut sent_spread, mut sent_exempt) = (0u32, 0u32, 0u32, 0u32);
    let start = Instant::now();
    let mut tick = 0u32;
    // 10 ms ticks: 4 of each flood per tick (400/s), the two clients every 5th tick (20/s).
    while tick < 300 {
        for _ in 0..4 {
            let r = next();
            let host = 1 + (r % 250) as u8;
            let flooded = Ipv4Addr::new(198, 51, 100, if host == 77 { 78 } else { host });
            sender.send(&frame_from(flooded, r as u16, None)).unwrap();
            let spread =
                Ipv4Addr::new(11 + (r >> 8) as u8 % 80, (r >> 16) as u8, (r >> 24) as u8, 1 + (r >> 32) as u8 % 250);
            sender.send(&frame_from(spread, r as u16, None)).unwrap();
            sent_spread += 1;
            sender.send(&frame_from(Ipv4Addr::new(203, 0, 113, host), r as u16, None)).unwrap();
            sent_exempt += 1;
        }
        if tick.is_multiple_of(5) {
            sender.send(&frame_from(legit, tick as u16, None)).unwrap();
            sender.send(&frame_from(cookie_client, tick as u16, Some(&cookie))).unwrap();
            sent_legit += 1;
            sent_cookie += 1;
        }
        tick += 1;
        if let Some(wait) = (start + Duration::from_millis(10 * tick as u64)).checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let got = counting.join().unwrap();

    let sum = |pick: &dyn Fn(&[u8; 4]) -> bool| {
        got.iter().filter(|(a, _)| pick(a)).fold((0, 0), |(f, t), (_, (full, tc))| (f + full, t + tc))
    };
    let cookie_octets = cookie_client.octets();
    let (flood_full, flood_tc) = sum(&|a| a[..3] == [198, 51, 100] && *a != cookie_octets);
    // At most the rate (and the first second's credit); as in BIND, limited responses
    // are charged too, so a prefix that stays over the rate gets no more than its first
    // second's worth and the credit it earns in the pauses of the flood.
    let at_most = RATE * (1.0 + seconds) * 1.1;
    assert!(
        (RATE as u32..=at_most as u32).contains(&flood_full),
        "the flooded /24 got {flood_full} answers in {seconds:.2} s; expected {RATE} to {at_most:.0}"
    );
    let limited = 1200 - flood_full;
    assert!(
        (flood_tc as f64 - limited as f64 / 2.0).abs() <= 0.1 * limited as f64 / 2.0,
        "every 2nd limited answer is a TC reply: {flood_tc} of {limited}"
    );
    assert_eq!(sum(&|a| *a == cookie_octets), (sent_cookie, 0), "the client with a valid cookie, answered in full");
    assert_eq!(sum(&|a| *a == legit.octets()), (sent_legit, 0), "the legitimate client elsewhere");
    assert_eq!(sum(&|a| a[..3] == [203, 0, 113]), (sent_exempt, 0), "the exempt prefix");
    assert_eq!(sum(&|a| (11..91).contains(&a[0])), (sent_spread, 0), "the spread flood: one query per prefix");
    let xdp = w.controller.counters().unwrap();
    assert_eq!(xdp.cookie_verified as u32, sent_cookie);
    assert_eq!(xdp.rrl_exempt as u32, sent_exempt);
}
