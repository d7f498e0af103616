//! End to end in a netns lab: real XDP on a veth (generic and native mode, IPv4, IPv6,
//! an 802.1Q VLAN), a real PowerDNS behind it, real sockets on the client side (the
//! client kernel verifies every checksum before a reply reaches the socket).

use std::{
    net::{IpAddr, SocketAddr},
    process::Command,
    time::Duration,
};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use primwatch::config::XdpMode;
use primwatch_tests::{
    controller::{self, Controller},
    dns::{self, EdnsQuery},
    lab::{Lab, CLIENT_IF, SERVER_IF},
    packet::{expected_reply, udp_frame, verify_checksums, Flow},
    pdns::{self, PowerDns},
    raw::PacketSocket,
};

/// PowerDNS's own records for the zone differ from primwatch's, so every reply shows
/// which server produced it.
const PDNS_WWW_V4: &str = "192.0.2.250";
const PDNS_WWW_V6: &str = "2001:db8::250";
const PDNS_OTHER: &str = "192.0.2.251";

fn config(mode: &str, server_extra: &str) -> String {
    format!(
        r#"
[server]
interfaces = ["{SERVER_IF}"]
xdp_mode = "{mode}"
pin_dir = "{{pin_dir}}"
{server_extra}
[names."www.example.test"]
ttl = 30
a = ["10.0.0.1", "10.0.0.2"]
aaaa = ["2001:db8::1"]
"#
    )
}

struct Setup {
    controller: Controller,
    pdns: PowerDns,
    lab: Lab,
}

fn setup(mode: XdpMode) -> Setup {
    setup_with(mode, "")
}

fn setup_with(mode: XdpMode, server_extra: &str) -> Setup {
    let mut lab = Lab::new().expect("lab");
    if mode == XdpMode::Native {
        lab.enable_native_peer().expect("pass program on the client veth");
    }
    let zone = pdns::zone(
        "example.test",
        lab.server_addr(false),
        &[
            &format!("www 30 IN A {PDNS_WWW_V4}"),
            &format!("www 30 IN AAAA {PDNS_WWW_V6}"),
            &format!("other 30 IN A {PDNS_OTHER}"),
        ],
    );
    let pdns = PowerDns::start(&lab.server_ns, &[lab.server_addr(false), lab.server_addr(true)], "example.test", &zone)
        .expect("PowerDNS");
    let mode_name = match mode {
        XdpMode::Native => "native",
        XdpMode::Skb => "skb",
        XdpMode::Auto => "auto",
    };
    let controller = Controller::start(&lab.server_ns, &config(mode_name, server_extra)).expect("primwatch");
    Setup { controller, pdns, lab }
}

fn server(s: &Setup, v6: bool) -> SocketAddr {
    SocketAddr::new(s.lab.server_addr(v6), 53)
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|a| a.parse().unwrap()).collect()
}

/// The whole split, checked in one lab: XDP answers the served names over IPv4 and
/// IPv6, with and without EDNS, in any case; PowerDNS answers everything else.
fn check_split(s: &Setup) {
    let v4 = dns::udp_socket(&s.lab.client_ns, false).unwrap();
    let v6 = dns::udp_socket(&s.lab.client_ns, true).unwrap();
    let pdns_before = s.pdns.queries().unwrap();
    let xdp_before = s.controller.counters().unwrap();

    // A over IPv4, no EDNS.
    let reply =
        dns::exchange_udp(&v4, server(s, false), &dns::query(1, "www.example.test", RecordType::A, None).unwrap())
            .unwrap();
    let msg = dns::parse(&reply).unwrap();
    assert!(msg.authoritative());
    assert_eq!(dns::addresses(&msg), ips(&["10.0.0.1", "10.0.0.2"]));
    assert_eq!(dns::edns_payload(&msg), None);

    // AAAA over IPv6 with EDNS and a cookie, as dig sends it.
    let edns = EdnsQuery { options: vec![(10, vec![7; 8])], ..Default::default() };
    let reply = dns::exchange_udp(
        &v6,
        server(s, true),
        &dns::query(2, "www.example.test", RecordType::AAAA, Some(edns)).unwrap(),
    )
    .unwrap();
    let msg = dns::parse(&reply).unwrap();
    assert_eq!(dns::addresses(&msg), ips(&["2001:db8::1"]));
    assert_eq!(dns::edns_payload(&msg), Some(1232));
    // A server cookie (RFC 9018: version 1, a timestamp of now), made in XDP …
    let (client, server_cookie) = primwatch_tests::cookie::cookie_option(&reply).expect("a COOKIE option in the reply");
    assert_eq!(client, vec![7; 8], "the client cookie is echoed");
    assert_eq!((server_cookie.len(), server_cookie[0]), (16, 1), "{server_cookie:02x?}");
    let stamped = u32::from_be_bytes(server_cookie[4..8].try_into().unwrap()) as i64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((stamped - now).abs() <= 5, "stamped {stamped}, now {now}");
    // … which it verifies when the client presents it again.
    let verified_before = s.controller.counters().unwrap().cookie_verified;
    let mut cookie = client.clone();
    cookie.extend_from_slice(&server_cookie);
    let edns = EdnsQuery { options: vec![(10, cookie)], ..Default::default() };
    let reply = dns::exchange_udp(
        &v6,
        server(s, true),
        &dns::query(7, "www.example.test", RecordType::AAAA, Some(edns)).unwrap(),
    )
    .unwrap();
    assert_eq!(dns::addresses(&dns::parse(&reply).unwrap()), ips(&["2001:db8::1"]));
    assert_eq!(s.controller.counters().unwrap().cookie_verified, verified_before + 1);

    // Mixed case (0x20 randomisation): the question comes back exactly as sent.
    for (id, v6_sock) in [(3u16, false), (4, true)] {
        let query = dns::query(id, "wWw.ExAMple.TeSt", RecordType::A, Some(EdnsQuery::default())).unwrap();
        let sock = if v6_sock { &v6 } else { &v4 };
        let reply = dns::exchange_udp(sock, server(s, v6_sock), &query).unwrap();
        assert_eq!(&reply[12..34], &query[12..34], "question bytes echoed with the client's case");
        assert_eq!(dns::addresses(&dns::parse(&reply).unwrap()), ips(&["10.0.0.1", "10.0.0.2"]));
    }

    let xdp_after = s.controller.counters().unwrap();
    assert_eq!(xdp_after.answered - xdp_before.answered, 5, "XDP answered all five");
    assert_eq!(s.pdns.queries().unwrap(), pdns_before, "PowerDNS never saw them");

    // A name primwatch does not serve: PowerDNS answers.
    let reply =
        dns::exchange_udp(&v4, server(s, false), &dns::query(5, "other.example.test", RecordType::A, None).unwrap())
            .unwrap();
    assert_eq!(dns::addresses(&dns::parse(&reply).unwrap()), ips(&[PDNS_OTHER]));
    // DNSSEC OK: PowerDNS answers, with its own records.
    let do_bit = EdnsQuery { dnssec_ok: true, ..Default::default() };
    let reply = dns::exchange_udp(
        &v6,
        server(s, true),
        &dns::query(6, "www.example.test", RecordType::A, Some(do_bit)).unwrap(),
    )
    .unwrap();
    assert_eq!(dns::addresses(&dns::parse(&reply).unwrap()), ips(&[PDNS_WWW_V4]));
    // A type primwatch does not serve for the name: PowerDNS answers (NOERROR, its SOA).
    let reply =
        dns::exchange_udp(&v4, server(s, false), &dns::query(7, "www.example.test", RecordType::MX, None).unwrap())
            .unwrap();
    let msg = dns::parse(&reply).unwrap();
    assert_eq!(msg.response_code(), ResponseCode::NoError);
    assert!(msg.answers().is_empty() && !msg.name_servers().is_empty(), "NODATA from PowerDNS");
    // TCP: the kernel, and so PowerDNS.
    for v6_tcp in [false, true] {
        let reply = dns::exchange_tcp(
            &s.lab.client_ns,
            server(s, v6_tcp),
            &dns::query(8, "www.example.test", RecordType::A, None).unwrap(),
        )
        .unwrap();
        assert_eq!(dns::addresses(&dns::parse(&reply).unwrap()), ips(&[PDNS_WWW_V4]));
    }
    let xdp_end = s.controller.counters().unwrap();
    assert_eq!(xdp_end.answered, xdp_after.answered, "XDP answered none of those");
    assert_eq!(xdp_end.pass_name_not_found - xdp_after.pass_name_not_found, 1);
    assert_eq!(xdp_end.pass_dnssec - xdp_after.pass_dnssec, 1, "DO=1 with no [zones] goes to PowerDNS");
    assert_eq!(xdp_end.pass_type_not_present - xdp_after.pass_type_not_present, 1);
    assert_eq!(s.pdns.queries().unwrap() - pdns_before, 5, "PowerDNS answered those five");

    // A response and a truncated query: XDP answers neither.
    let mut response = dns::query(9, "www.example.test", RecordType::A, None).unwrap();
    response[2] |= 0x80;
    dns::expect_no_udp_reply(&v4, server(s, false), &response, Duration::from_millis(300)).unwrap();
    let truncated = &dns::query(10, "www.example.test", RecordType::A, None).unwrap()[..20];
    if let Ok(reply) = dns::exchange_udp(&v4, server(s, false), truncated) {
        // Only PowerDNS may reply, and only with an error.
        assert_eq!(dns::parse(&reply).map(|m| m.answers().len()).unwrap_or(0), 0);
    }
    let xdp_final = s.controller.counters().unwrap();
    assert_eq!(xdp_final.answered, xdp_end.answered);
    assert_eq!(xdp_final.pass_not_plain_query - xdp_end.pass_not_plain_query, 1);
    assert_eq!(xdp_final.pass_malformed - xdp_end.pass_malformed, 1);
}

#[test]
fn generic_mode_splits_between_xdp_and_powerdns() {
    check_split(&setup(XdpMode::Skb));
}

#[test]
fn native_mode_splits_between_xdp_and_powerdns() {
    check_split(&setup(XdpMode::Native));
}

/// 802.1Q-tagged queries sent through a packet socket on the client veth (these
/// kernels have no VLAN devices): the reply must be exactly the expected tagged frame.
fn check_vlan(s: &Setup) {
    let sock = PacketSocket::open(&s.lab.client_ns, CLIENT_IF).unwrap();
    let client_mac = s.lab.mac(&s.lab.client_ns, CLIENT_IF).unwrap();
    let server_mac = s.lab.mac(&s.lab.server_ns, SERVER_IF).unwrap();
    let before = s.controller.counters().unwrap();
    for (i, (v6, qtype, rrs)) in [
        (false, RecordType::A, vec![(1u16, 30u32, vec![10, 0, 0, 1]), (1, 30, vec![10, 0, 0, 2])]),
        (
            true,
            RecordType::AAAA,
            vec![(28, 30, "2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec())],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut flow = Flow::client_to_server(v6);
        flow.vlan = Some(100 + i as u16);
        flow.src_mac = client_mac;
        flow.dst_mac = server_mac;
        flow.src_port = 41000 + i as u16;
        let query = dns::query(0x700 + i as u16, "Www.Example.Test", qtype, Some(EdnsQuery::default())).unwrap();
        sock.send(&udp_frame(&flow, 64, &query)).unwrap();
        let expected = udp_frame(&flow.reversed(), 64, &expected_reply(&query, &rrs).unwrap());
        let reply = sock
            .recv(Duration::from_secs(2), |f| f.len() == expected.len() && f[..18] == expected[..18])
            .expect("a tagged reply");
        assert_eq!(reply, expected, "tagged reply bytes");
        verify_checksums(&reply).unwrap();
    }
    // A tagged miss is passed (and, with no VLAN device, dropped by the kernel).
    let mut flow = Flow::client_to_server(false);
    flow.vlan = Some(100);
    flow.src_mac = client_mac;
    flow.dst_mac = server_mac;
    sock.send(&udp_frame(&flow, 64, &dns::query(0x799, "other.example.test", RecordType::A, None).unwrap())).unwrap();
    let passed = primwatch_tests::wait_for(Duration::from_secs(2), || {
        let c = s.controller.counters().ok()?;
        (c.pass_name_not_found > before.pass_name_not_found).then_some(c)
    })
    .expect("the miss is counted");
    assert_eq!(passed.answered - before.answered, 2);
}

#[test]
fn generic_mode_answers_vlan_tagged_queries() {
    check_vlan(&setup(XdpMode::Skb));
}

#[test]
fn native_mode_answers_vlan_tagged_queries() {
    check_vlan(&setup(XdpMode::Native));
}

fn xdp_attached(ns: &str) -> bool {
    let out = Command::new("ip").args(["-n", ns, "-d", "link", "show", SERVER_IF]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

#[test]
fn stop_leaves_xdp_answering_until_detach() {
    let mut s = setup(XdpMode::Skb);
    assert!(xdp_attached(&s.lab.server_ns));
    let pin_dir = s.controller.pin_dir.clone();
    assert!(pin_dir.join("names").exists() && pin_dir.join("counters").exists());
    assert!(pin_dir.join(format!("link_{SERVER_IF}")).exists(), "the link is pinned");
    let status = s.controller.stop().unwrap();
    assert!(status.success(), "clean exit on SIGTERM");
    // on_stop = "keep" (the default): the program keeps answering from the pinned maps.
    assert!(xdp_attached(&s.lab.server_ns), "XDP still attached");
    let v4 = dns::udp_socket(&s.lab.client_ns, false).unwrap();
    let server = SocketAddr::new(s.lab.server_addr(false), 53);
    let ask = || {
        dns::addresses(
            &dns::parse(
                &dns::exchange_udp(&v4, server, &dns::query(1, "www.example.test", RecordType::A, None).unwrap())
                    .unwrap(),
            )
            .unwrap(),
        )
    };
    assert_eq!(ask(), ips(&["10.0.0.1", "10.0.0.2"]), "answered by XDP after the controller stopped");

    // `primwatch detach` takes it off and removes the pins: PowerDNS answers.
    let out = Command::new(primwatch_tests::controller::binary())
        .arg("detach")
        .arg("--pin-dir")
        .arg(&pin_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!xdp_attached(&s.lab.server_ns), "XDP detached");
    assert!(!pin_dir.exists(), "pins removed");
    assert_eq!(ask(), ips(&[PDNS_WWW_V4]));
    drop(s.pdns);
}

#[test]
fn on_stop_detach_detaches_and_unpins() {
    let mut s = setup_with(XdpMode::Skb, "on_stop = \"detach\"\n");
    let pin_dir = s.controller.pin_dir.clone();
    assert!(s.controller.stop().unwrap().success());
    assert!(!xdp_attached(&s.lab.server_ns), "XDP detached");
    assert!(!pin_dir.join("names").exists() && !pin_dir.join(format!("link_{SERVER_IF}")).exists(), "pins removed");
}

#[test]
fn invalid_config_is_rejected_before_anything_is_attached() {
    let lab = Lab::new().unwrap();
    let dir = primwatch_tests::TempDir::new("badcfg").unwrap();
    let path = dir.0.join("bad.toml");
    let text = config("skb", "").replace("{pin_dir}", "/sys/fs/bpf/pw-bad").replace("\"10.0.0.2\"", "\"10.0.0.256\"");
    std::fs::write(&path, &text).unwrap();

    let check = Command::new(controller::binary()).arg("check-config").arg(&path).output().unwrap();
    assert!(!check.status.success());
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(stderr.contains(&format!("{}:9:", path.display())), "file and line: {stderr}");
    assert!(stderr.contains("'10.0.0.256' is not an IPv4 address"), "reason: {stderr}");

    let run = primwatch_tests::netns::command(&lab.server_ns, controller::binary().to_str().unwrap())
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("is not an IPv4 address"));
    assert!(!xdp_attached(&lab.server_ns));
    assert!(!std::path::Path::new("/sys/fs/bpf/pw-bad").exists());

    // And a good one passes.
    std::fs::write(&path, config("skb", "")).unwrap();
    let check = Command::new(controller::binary()).arg("check-config").arg(&path).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

#[test]
fn a_start_without_an_interface_takes_the_previous_runs_xdp_off_it() {
    let mut s = setup(XdpMode::Skb);
    assert!(s.controller.stop().unwrap().success());
    assert!(xdp_attached(&s.lab.server_ns), "left attached by the stop");
    // The next run serves another interface only: the old link must not stay behind,
    // answering what nobody updates any more.
    s.controller.write_config(&config("skb", "").replace(&format!("[\"{SERVER_IF}\"]"), "[\"lo\"]")).unwrap();
    s.controller.start_again().unwrap();
    assert!(!xdp_attached(&s.lab.server_ns), "XDP taken off {SERVER_IF}");
    let status = s.controller.ctl(&["status"]).unwrap();
    let note = status["status"]["dataplane"].as_str().unwrap();
    assert!(
        note.contains("stopped cleanly") && note.contains(&format!("{SERVER_IF}: detached (no longer configured)")),
        "{note}"
    );
    assert!(s.controller.log().contains("no longer configured"));
}
