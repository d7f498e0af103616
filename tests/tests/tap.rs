//! Seeing the fast path, end to end in a netns lab (XDP on a veth, PowerDNS behind it),
//! read with tools primwatch did not write:
//! - `primwatch capture` writes pcap that tcpdump reads back: the query and XDP's reply
//!   for an answered packet, the query alone for a passed one, filters applied;
//! - `[dnstap] file`: BIND's dnstap-read decodes the log — every answered query and
//!   its reply, client address and port, the answer's records;
//! - `[dnstap] socket`: fstrm_capture (the fstrm library's collector) receives it;
//!   with the collector gone, XDP keeps answering and the log's drops are counted,
//!   and it reconnects when the collector is back;
//! - `sample`: one answer in N is logged.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use primwatch_tests::{
    controller::{binary, Controller},
    lab::{Lab, SERVER_IF},
    netns,
    pdns::{self, PowerDns},
    wait_for, TempDir,
};

const NAMES: &str = r#"
[names."www.example.test"]
ttl = 30
a = ["10.0.0.1"]
aaaa = ["2001:db8::1"]

[names."api.example.test"]
ttl = 30
a = ["10.0.0.7", "10.0.0.8"]
"#;

struct Setup {
    lab: Lab,
    _pdns: PowerDns,
    controller: Controller,
}

fn setup(extra: &str) -> Setup {
    let lab = Lab::new().expect("lab");
    let v4 = lab.server_addr(false);
    let zone = pdns::zone("example.test", v4, &["other 30 IN TXT \"from powerdns\""]);
    let pdns = PowerDns::start(&lab.server_ns, &[v4, lab.server_addr(true)], "example.test", &zone).expect("PowerDNS");
    let config = format!(
        "[server]\ninterfaces = [\"{SERVER_IF}\"]\nxdp_mode = \"skb\"\npin_dir = \"{{pin_dir}}\"\n{NAMES}\n{extra}"
    );
    let controller = Controller::start(&lab.server_ns, &config).expect("primwatch");
    Setup { lab, _pdns: pdns, controller }
}

/// dig in the client namespace; its short answer.
fn dig(s: &Setup, v6: bool, name: &str, qtype: &str) -> String {
    let server = format!("@{}", s.lab.server_addr(v6));
    let out = netns::command(&s.lab.client_ns, "dig")
        .args([&server, "+short", "+norec", "+tries=1", "+time=2", name, qtype])
        .output()
        .expect("dig");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `primwatch capture` writing `file`, with `args`; returns once its pcap header is out
/// (the controller has subscribed it).
fn capture(s: &Setup, file: &Path, args: &[&str]) -> Child {
    let child = Command::new(binary())
        .arg("capture")
        .arg("--socket")
        .arg(&s.controller.control_socket)
        .arg("-w")
        .arg(file)
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .expect("primwatch capture");
    wait_for(Duration::from_secs(5), || std::fs::metadata(file).ok().filter(|m| m.len() >= 24))
        .expect("the pcap header within 5 s");
    child
}

fn finish(mut child: Child) -> String {
    let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten()).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("capture did not end");
    });
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(status.success(), "capture: {err}");
    err
}

fn tcpdump(file: &Path) -> Vec<String> {
    let out = Command::new("tcpdump").args(["-n", "-r"]).arg(file).output().expect("tcpdump");
    assert!(out.status.success(), "tcpdump -r: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn capture_writes_pcap_that_tcpdump_reads() {
    let s = setup("");
    let dir = TempDir::new("pwcap").unwrap();
    let client = s.lab.client_addr(false).to_string();
    let server = s.lab.server_addr(false).to_string();

    // Everything: an answered query (query and reply) and a passed one (as received).
    let all = dir.0.join("all.pcap");
    // (XDP sees ARP too: the client filter keeps to the client's IP traffic.)
    let child = capture(&s, &all, &["-c", "2", "--client", &client]);
    assert_eq!(dig(&s, false, "www.example.test", "A"), "10.0.0.1");
    assert_eq!(dig(&s, false, "other.example.test", "TXT"), "\"from powerdns\"");
    assert!(finish(child).contains("3 frames captured"));
    let lines = tcpdump(&all);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(lines[0].contains(&format!("{client}.")) && lines[0].contains("A? www.example.test."), "{lines:#?}");
    assert!(lines[1].contains(&format!("{server}.53 > {client}.")), "XDP's reply, as sent: {lines:#?}");
    assert!(lines[1].contains("A 10.0.0.1"), "{lines:#?}");
    assert!(lines[2].contains("TXT? other.example.test."), "the passed query: {lines:#?}");

    // Filters: by name and verdict (what XDP answered), then by client prefix over IPv6.
    let named = dir.0.join("named.pcap");
    let child = capture(&s, &named, &["-c", "1", "--name", "API.example.test", "--verdict", "answered"]);
    assert_eq!(dig(&s, false, "www.example.test", "A"), "10.0.0.1");
    assert_eq!(dig(&s, false, "other.example.test", "TXT"), "\"from powerdns\"");
    let api = dig(&s, false, "api.example.test", "A");
    assert!(api.contains("10.0.0.7") && api.contains("10.0.0.8"), "{api}");
    finish(child);
    let lines = tcpdump(&named);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains("A? api.example.test."), "{lines:#?}");
    assert!(lines[1].contains("A 10.0.0.7") || lines[1].contains("A 10.0.0.8"), "{lines:#?}");

    let v6 = dir.0.join("v6.pcap");
    let prefix = format!("{}/64", s.lab.client_addr(true));
    let child = capture(&s, &v6, &["-c", "1", "--client", &prefix]);
    assert_eq!(dig(&s, false, "www.example.test", "A"), "10.0.0.1");
    assert_eq!(dig(&s, true, "www.example.test", "AAAA"), "2001:db8::1");
    finish(child);
    let lines = tcpdump(&v6);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains("AAAA? www.example.test.") && lines[1].contains("AAAA 2001:db8::1"), "{lines:#?}");

    // What XDP drops: a second answer over RRL's rate (slip 0) is in a capture of drops.
    drop(s);
    let s = setup("[rrl]\nresponses_per_second = 1\nslip = 0\n");
    let client = s.lab.client_addr(false).to_string();
    let dropped = dir.0.join("dropped.pcap");
    let child = capture(&s, &dropped, &["-c", "1", "--verdict", "dropped"]);
    assert_eq!(dig(&s, false, "www.example.test", "A"), "10.0.0.1");
    for _ in 0..2 {
        dig(&s, false, "www.example.test", "A"); // over the rate: no reply (dig times out)
    }
    finish(child);
    let lines = tcpdump(&dropped);
    assert_eq!(lines.len(), 1, "a dropped query as received, no reply: {lines:#?}");
    assert!(lines[0].contains(&format!("{client}.")) && lines[0].contains("A? www.example.test."), "{lines:#?}");

    // At most four captures at once: a fifth is refused with the reason, and a slot
    // frees when a capture ends.
    let running: Vec<Child> =
        (0..4).map(|i| capture(&s, &dir.0.join(format!("busy{i}.pcap")), &["--seconds", "60"])).collect();
    let fifth = || {
        Command::new(binary())
            .args(["capture", "--socket"])
            .arg(&s.controller.control_socket)
            .args(["-w", "/dev/null", "--seconds", "1"])
            .output()
            .unwrap()
    };
    let out = fifth();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 captures are running already"), "{out:?}");
    for mut child in running {
        child.kill().unwrap(); // by pid: the children this test started
        child.wait().unwrap();
    }
    let freed = wait_for(Duration::from_secs(5), || fifth().status.success().then_some(()));
    assert!(freed.is_some(), "a slot frees when its client goes");

    // A refused request says why.
    let out = Command::new(binary())
        .args(["capture", "--socket"])
        .arg(&s.controller.control_socket)
        .args(["-w", "/dev/null", "--client", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an address or prefix"));
}

/// dnstap-read's YAML of `file`: one document per message.
fn dnstap_read(file: &Path) -> Vec<String> {
    let out = Command::new("dnstap-read").arg("-y").arg(file).output().expect("dnstap-read");
    assert!(out.status.success(), "dnstap-read: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).split("\n---").map(str::to_string).filter(|d| d.contains("type:")).collect()
}

#[test]
fn dnstap_file_is_decoded_by_bind_s_dnstap_read() {
    let dir = TempDir::new("pwdnstap").unwrap();
    let log = dir.0.join("xdp.dnstap");
    let mut s = setup(&format!("[dnstap]\nfile = {:?}\nidentity = \"pw-lab\"\n", log.display().to_string()));
    let names = ["www.example.test", "api.example.test", "www.example.test"];
    for (i, name) in names.iter().enumerate() {
        assert!(!dig(&s, i == 2, name, if i == 2 { "AAAA" } else { "A" }).is_empty());
    }
    assert_eq!(dig(&s, false, "other.example.test", "TXT"), "\"from powerdns\"");
    s.controller.stop().unwrap();
    let docs = dnstap_read(&log);
    let queries: Vec<&String> = docs.iter().filter(|d| d.contains("type: AUTH_QUERY")).collect();
    let responses: Vec<&String> = docs.iter().filter(|d| d.contains("type: AUTH_RESPONSE")).collect();
    assert_eq!((queries.len(), responses.len()), (3, 3), "XDP's three answers, not PowerDNS's: {docs:#?}");
    let client = |v6: bool| s.lab.client_addr(v6);
    for (i, (q, r)) in queries.iter().zip(&responses).enumerate() {
        let v6 = i == 2;
        assert!(q.contains("identity: pw-lab"), "{q}");
        assert!(q.contains(&format!("query_address: \"{}\"", client(v6))), "{q}");
        assert!(q.contains(&format!("response_address: \"{}\"", s.lab.server_addr(v6))), "{q}");
        assert!(q.contains("socket_protocol: UDP") && q.contains("response_port: 53"), "{q}");
        assert!(q.contains(&format!("{}.", names[i])), "{q}");
        assert!(r.contains("response_message:") && r.contains("qr aa"), "{r}");
    }
    assert!(responses[0].contains("10.0.0.1"), "{}", responses[0]);
    assert!(responses[1].contains("10.0.0.7") && responses[1].contains("10.0.0.8"), "{}", responses[1]);
    assert!(responses[2].contains("2001:db8::1"), "{}", responses[2]);
}

/// fstrm_capture listening on `socket`, writing `file`.
fn collector(socket: &Path, file: &Path) -> Child {
    let child = Command::new("fstrm_capture")
        .args(["-t", "protobuf:dnstap.Dnstap", "-u"])
        .arg(socket)
        .arg("-w")
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fstrm_capture");
    wait_for(Duration::from_secs(5), || socket.exists().then_some(())).expect("fstrm_capture's socket");
    child
}

fn stop_collector(mut child: Child) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten()).expect("fstrm_capture exits");
}

#[test]
fn dnstap_to_a_collector_survives_it_going_away_and_samples() {
    let dir = TempDir::new("pwfstrm").unwrap();
    let socket = dir.0.join("dnstap.sock");
    // No collector yet: XDP answers all the same, and the log's drops are counted.
    let mut s = setup(&format!("[dnstap]\nsocket = {:?}\n", socket.display().to_string()));
    let answered = s.controller.counters().unwrap().answered;
    for _ in 0..5 {
        assert_eq!(dig(&s, false, "www.example.test", "A"), "10.0.0.1");
    }
    assert_eq!(s.controller.counters().unwrap().answered - answered, 5);
    let dropped = wait_for(Duration::from_secs(5), || {
        let stats = s.controller.ctl(&["stats"]).ok()?;
        let n = stats["stats"]["tap"]["dnstap_dropped"].as_u64()?;
        (n >= 5).then_some(n)
    });
    assert!(dropped.is_some(), "drops counted: {}", s.controller.ctl(&["stats"]).unwrap());

    // The collector comes: the next answers reach it (reconnects within a second).
    let first = dir.0.join("first.fstrm");
    let fstrm = collector(&socket, &first);
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..5 {
        assert_eq!(dig(&s, false, "api.example.test", "A").lines().count(), 2);
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    // It goes away mid-stream: answers go on.
    stop_collector(fstrm);
    for _ in 0..3 {
        assert_eq!(dig(&s, false, "www.example.test", "A"), "10.0.0.1");
    }
    let docs = dnstap_read(&first);
    let api = docs.iter().filter(|d| d.contains("AUTH_RESPONSE") && d.contains("api.example.test.")).count();
    assert!(api >= 4, "the answers after the collector came (one may race the reconnect): {api} in {docs:#?}");
    assert!(docs.iter().all(|d| !d.contains("other.example.test")));
    s.controller.stop().unwrap();

    // sample = 10: one answer in ten per CPU.
    let sampled = dir.0.join("sampled.dnstap");
    let s = setup(&format!("[dnstap]\nfile = {:?}\nsample = 10\nlog_queries = false\n", sampled.display().to_string()));
    let v4 = primwatch_tests::dns::udp_socket(&s.lab.client_ns, false).unwrap();
    let server = std::net::SocketAddr::new(s.lab.server_addr(false), 53);
    for id in 0..200u16 {
        let q = primwatch_tests::dns::query(id, "www.example.test", hickory_proto::rr::RecordType::A, None).unwrap();
        primwatch_tests::dns::exchange_udp(&v4, server, &q).unwrap();
    }
    let mut s = s;
    s.controller.stop().unwrap();
    let docs = dnstap_read(&sampled);
    assert!(docs.iter().all(|d| d.contains("AUTH_RESPONSE")), "log_queries = false");
    assert!((16..=24).contains(&docs.len()), "200 answers at 1 in 10 per CPU: {} logged", docs.len());
}

/// A collector that completes the Frame Streams handshake, then reads nothing for
/// `stall` seconds, then reads everything and reports the data frames it got.
const SLOW_COLLECTOR: &str = r#"
import socket, struct, sys, time
path, stall = sys.argv[1], float(sys.argv[2])
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(path)
server.listen(1)
conn, _ = server.accept()
def read_exact(n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data
def control():
    assert struct.unpack(">I", read_exact(4))[0] == 0
    body = read_exact(struct.unpack(">I", read_exact(4))[0])
    return struct.unpack(">I", body[:4])[0]
assert control() == 4  # READY
ct = b"protobuf:dnstap.Dnstap"
body = struct.pack(">III", 1, 1, len(ct)) + ct  # ACCEPT with the content type
conn.sendall(struct.pack(">II", 0, len(body)) + body)
assert control() == 2  # START
print("started", flush=True)
time.sleep(stall)
frames = 0
conn.settimeout(3)
try:
    while True:
        n = struct.unpack(">I", read_exact(4))[0]
        if n == 0:
            break
        read_exact(n)
        frames += 1
except (EOFError, socket.timeout):
    pass
print("frames", frames, flush=True)
"#;

#[test]
fn a_slow_collector_costs_answers_nothing_and_its_drops_are_counted() {
    let dir = TempDir::new("pwslow").unwrap();
    let socket = dir.0.join("slow.sock");
    let mut collector = Command::new("/usr/bin/python3")
        .args(["-c", SLOW_COLLECTOR])
        .arg(&socket)
        .arg("8")
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    wait_for(Duration::from_secs(5), || socket.exists().then_some(())).expect("the collector's socket");
    let s = setup(&format!("[dnstap]\nsocket = {:?}\n", socket.display().to_string()));
    let v4 = primwatch_tests::dns::udp_socket(&s.lab.client_ns, false).unwrap();
    let server = std::net::SocketAddr::new(s.lab.server_addr(false), 53);
    let q = primwatch_tests::dns::query(7, "www.example.test", hickory_proto::rr::RecordType::A, None).unwrap();
    // One answer first, so that the writer has connected before the burst.
    primwatch_tests::dns::exchange_udp(&v4, server, &q).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let before = s.controller.counters().unwrap().answered;
    let started = std::time::Instant::now();
    let burst = 30_000u64;
    for _ in 0..burst {
        // Every query answered, and promptly, while the collector reads nothing.
        primwatch_tests::dns::exchange_udp(&v4, server, &q).unwrap();
    }
    let took = started.elapsed();
    assert_eq!(s.controller.counters().unwrap().answered - before, burst);
    assert!(took < Duration::from_secs(8), "the burst took {took:?}: XDP waited for the log");
    let stats = s.controller.ctl(&["stats"]).unwrap();
    let dropped = stats["stats"]["tap"]["dnstap_dropped"].as_u64().unwrap();
    assert!(dropped > 0, "the writer's queue overflowed while the collector stalled: {}", stats["stats"]["tap"]);
    let out = wait_for(Duration::from_secs(20), || collector.try_wait().ok().flatten());
    assert!(out.is_some(), "the collector finishes");
    let mut text = String::new();
    std::io::Read::read_to_string(collector.stdout.as_mut().unwrap(), &mut text).unwrap();
    let frames: u64 = text.lines().find_map(|l| l.strip_prefix("frames ")).unwrap().trim().parse().unwrap();
    eprintln!("slow collector: {frames} frames, {dropped} answers dropped of {burst}, the burst took {took:?}");
    // Two messages per logged answer; what it got and what was dropped add up.
    assert!(frames >= 2 && frames / 2 + dropped <= burst + 1, "{frames} frames, {dropped} dropped of {burst}");
}
