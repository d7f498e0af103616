//! `cargo xtask bench`: primwatch's figures, each compared with a reference measured in
//! the same run (the machines are noisy; ratios within one run are what count).
//!
//! 1. ns per packet through BPF_PROG_TEST_RUN, next to a bare XDP_PASS floor.
//! 2. Answers per second end to end in a netns lab, kxdpgun saturating the server:
//!    primwatch's XDP path, PowerDNS for a name XDP passes, Knot 3.2 in XDP mode.

use std::{
    net::IpAddr,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use hickory_proto::rr::RecordType;
use primwatch::{
    config::XdpMode,
    dataplane::{Dataplane, ANSWER_PROGRAM, COOKIE_PROGRAM, PASS_PROGRAM, REFLECT_PROGRAM},
};
use primwatch_tests::{
    controller::Controller,
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_DROP, XDP_PASS, XDP_TX},
    lab::{Lab, CLIENT_IF, SERVER_IF},
    netns,
    packet::{udp_frame, Flow},
    pdns::{self, PowerDns},
    TempDir,
};

/// Four weighted targets and a group picking them by weight, or (`{policy}`) by the
/// client's prefix: the micro bench's `weighted` and `sticky` rows.
const POLICY_GROUP: &str = r#"
[targets.w1]
address = "10.2.0.1"
[targets.w2]
address = "10.2.0.2"
weight = 2
[targets.w3]
address = "10.2.0.3"
weight = 3
[targets.w4]
address = "10.2.0.4"
weight = 4
[groups.picked]
members = ["w1", "w2", "w3", "w4"]
policy = "{policy}"
[names."picked.example.test"]
groups = ["picked"]
"#;

const NAMES: &str = r#"
[zones."example.test"]

[names."www.example.test"]
a = ["192.0.2.10"]
aaaa = ["2001:db8::10"]

[names."eight.example.test"]
a = ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.1.0.7", "10.1.0.8"]
"#;

mod continuity;
mod dnssec;
mod failover;
mod feeds;
mod fleet;
mod flood;
mod geoip;
mod http;
mod names;
mod negative;
mod scale;

struct Args {
    seconds: u64,
    skip_lab: bool,
    only: Option<String>,
}

fn parse_args() -> Args {
    let mut args = Args { seconds: 5, skip_lab: false, only: None };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => args.seconds = it.next().and_then(|s| s.parse().ok()).unwrap_or(5),
            "--micro-only" => args.skip_lab = true,
            "--only" => args.only = it.next(),
            other => eprintln!("ignoring unknown argument {other}"),
        }
    }
    args
}

fn main() -> Result<()> {
    let args = parse_args();
    let wanted = |section: &str| args.only.as_deref().is_none_or(|o| o == section);
    if wanted("micro") {
        micro()?;
    }
    if args.skip_lab {
        return Ok(());
    }
    if wanted("throughput") {
        end_to_end(args.seconds)?;
    }
    if wanted("failover") {
        failover::run()?;
    }
    if wanted("http") {
        http::run()?;
    }
    if wanted("scale") {
        scale::run()?;
    }
    if wanted("feeds") {
        feeds::run()?;
    }
    if wanted("continuity") {
        continuity::run()?;
    }
    if wanted("powerdns") {
        powerdns_path(args.seconds)?;
    }
    if wanted("flood") {
        flood::run(args.seconds)?;
    }
    if wanted("rrl") {
        rrl_flood(args.seconds)?;
    }
    if wanted("negative") {
        negative::run(args.seconds)?;
    }
    if wanted("names") {
        names::run()?;
    }
    if wanted("geoip") {
        geoip::run()?;
    }
    if wanted("dnssec") {
        dnssec::run()?;
    }
    if wanted("fleet") {
        fleet::run()?;
    }
    Ok(())
}

// ---- 1. BPF_PROG_TEST_RUN ---------------------------------------------------------

/// Unix seconds now (the harness's cookie clock follows the system's).
fn cookies_now() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32)
}

const SINGLE_RUNS: usize = 20_000;

/// Median and 10th percentile of single-run durations (ns). Hits rewrite the frame,
/// so each run must start from a fresh copy: one BPF_PROG_TEST_RUN call per packet.
fn time_single(h: &Harness, program: &str, frame: &[u8], expect: u32) -> Result<(u64, u64)> {
    let mut samples = Vec::with_capacity(SINGLE_RUNS);
    for _ in 0..SINGLE_RUNS {
        let out = h.run_program(program, frame)?;
        if out.verdict != expect {
            bail!("unexpected verdict {} (wanted {expect})", out.verdict);
        }
        samples.push(out.nanos);
    }
    samples.sort_unstable();
    Ok((samples[samples.len() / 2], samples[samples.len() / 10]))
}

/// The slow-path guard with budgets no single-run series exhausts: every miss pays for
/// the guard's accounting and is passed.
const GUARD_OPEN: &str = "[slow_path]\nqueries_per_second = 10000000\nprefix_queries_per_second = 10000000\n\
                          burst_seconds = 60\n";

fn micro() -> Result<()> {
    let h = Harness::new(53, &format!("{NAMES}\n{GUARD_OPEN}"))?;
    for program in [
        ANSWER_PROGRAM,
        COOKIE_PROGRAM,
        primwatch::dataplane::SLOW_PATH_PROGRAM,
        primwatch::dataplane::NEGATIVE_PROGRAM,
    ] {
        println!(
            "verifier: {program} accepted after {} instructions processed (limit 1,000,000)",
            h.verified_insns(program)?
        );
    }
    let v4 = Flow::client_to_server(false);
    let v6 = Flow::client_to_server(true);
    let query = |name: &str, t| dns::query(0x1234, name, t, Some(EdnsQuery::default())).unwrap();
    let hit_a = udp_frame(&v4, 64, &query("www.example.test", RecordType::A));
    let mut other_port = v4;
    other_port.dst_port = 5353;
    let cases: Vec<(&str, &str, Vec<u8>, u32)> = vec![
        ("floor: bare XDP_PASS program", PASS_PROGRAM, hit_a.clone(), XDP_PASS),
        (
            "non-DNS UDP (port 5353)",
            ANSWER_PROGRAM,
            udp_frame(&other_port, 64, &query("www.example.test", RecordType::A)),
            XDP_PASS,
        ),
        (
            "miss (name not served), guarded",
            ANSWER_PROGRAM,
            udp_frame(&v4, 64, &query("nope.example.test", RecordType::A)),
            XDP_PASS,
        ),
        ("A hit, 1 record (IPv4)", ANSWER_PROGRAM, hit_a.clone(), XDP_TX),
        (
            "A hit, 8 records (IPv4)",
            ANSWER_PROGRAM,
            udp_frame(&v4, 64, &query("eight.example.test", RecordType::A)),
            XDP_TX,
        ),
        (
            "AAAA hit, 1 record (IPv6)",
            ANSWER_PROGRAM,
            udp_frame(&v6, 64, &query("www.example.test", RecordType::AAAA)),
            XDP_TX,
        ),
    ];
    println!("\n== XDP program cost, BPF_PROG_TEST_RUN, {SINGLE_RUNS} single runs per case ==");
    println!("{:<32} {:>10} {:>8} {:>14} {:>16}", "case", "median ns", "p10 ns", "median-floor", "repeat-mean ns");
    let mut floor = 0u64;
    for (i, (label, program, frame, verdict)) in cases.iter().enumerate() {
        let (median, p10) = time_single(&h, program, frame, *verdict)?;
        if i == 0 {
            floor = median;
        }
        // For frames the program leaves alone, one call with many repeats is exact.
        let repeated = if *verdict == XDP_PASS {
            format!("{:.1}", h.run_repeated(program, frame, 1_000_000)?)
        } else {
            "-".into()
        };
        println!("{label:<32} {median:>10} {p10:>8} {:>14} {repeated:>16}", median as i64 - floor as i64);
    }
    // The tap (dnstap, captures): a hit while 1 in 100 packets is recorded, and while
    // every one is (received and sent, into the ring, a reader keeping up); the tap off
    // is the plain hit above.
    {
        let mut tapped = Harness::new(53, &format!("{NAMES}\n{GUARD_OPEN}"))?;
        for (label, every) in [
            ("A hit, tap off, reader running", 0),
            ("A hit, dnstap 1 in 100", 100),
            ("A hit, every packet recorded", 1),
        ] {
            tapped.record_taps(primwatch_common::TapSettings { capture: 0, dnstap_every: every })?;
            let (median, p10) = time_single(&tapped, ANSWER_PROGRAM, &hit_a, XDP_TX)?;
            println!("{label:<32} {median:>10} {p10:>8} {:>14} {:>16}", median as i64 - floor as i64, "-");
        }
        let read = tapped.record_taps(primwatch_common::TapSettings::default())?;
        println!("  (the tap's reader took {read} records)");
    }
    // Weighted against sticky, each in a config of its own: a sticky group makes every
    // query compute its client key, which the last row shows on a plain hit.
    let picked = udp_frame(&v4, 64, &query("picked.example.test", RecordType::A));
    for policy in ["weighted", "sticky"] {
        let config = format!("{NAMES}\n{GUARD_OPEN}\n{}", POLICY_GROUP.replace("{policy}", policy));
        let h = Harness::new(53, &config)?;
        let mut rows = vec![(format!("A hit, {policy}, 4 records"), &picked)];
        if policy == "sticky" {
            rows.push(("A hit, 1 record, sticky elsewhere".to_string(), &hit_a));
        }
        for (label, frame) in rows {
            let (median, p10) = time_single(&h, ANSWER_PROGRAM, frame, XDP_TX)?;
            println!("{label:<32} {median:>10} {p10:>8} {:>14} {:>16}", median as i64 - floor as i64, "-");
        }
    }
    // The miss without the guard, and over its budget (dropped).
    let miss = udp_frame(&v4, 64, &query("nope.example.test", RecordType::A));
    for (label, guard, verdict) in [
        ("miss, guard off", "[slow_path]\nqueries_per_second = 0\nprefix_queries_per_second = 0\n", XDP_PASS),
        (
            "miss over the budget (dropped)",
            "[slow_path]\nqueries_per_second = 1\nburst_seconds = 1\nslip = 0\n",
            XDP_DROP,
        ),
    ] {
        let guarded = Harness::new(53, &format!("{NAMES}\n{guard}"))?;
        let _ = guarded.run(&miss)?; // spends a one-query budget
        let (median, p10) = time_single(&guarded, ANSWER_PROGRAM, &miss, verdict)?;
        let repeated = guarded.run_repeated(ANSWER_PROGRAM, &miss, 1_000_000)?;
        println!("{label:<32} {median:>10} {p10:>8} {:>14} {repeated:>16.1}", median as i64 - floor as i64);
    }
    // Negative answers (a zone with negative_answers): the miss goes on to the negative
    // program, which walks up to the apex and answers NXDOMAIN, or NODATA at a name
    // without the type.
    let mut negative = Harness::new(53, NAMES)?;
    negative.publish_zones(&[(
        "example.test",
        "$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 192.0.2.53\n\
         mail IN MX 10 mx.elsewhere.test.\n",
    )])?;
    for (label, name) in
        [("NXDOMAIN (negative answers)", "nope.example.test"), ("NODATA (negative answers)", "mail.example.test")]
    {
        let frame = udp_frame(&v4, 64, &query(name, RecordType::A));
        let (median, p10) = time_single(&negative, ANSWER_PROGRAM, &frame, XDP_TX)?;
        println!("{label:<32} {median:>10} {p10:>8} {:>14} {:>16}", median as i64 - floor as i64, "-");
    }
    // Response rate limiting on: a hit whose prefix has credit (a rate no single-run
    // series reaches), and a hit over the rate (dropped; slip 0).
    let rrl_on = Harness::new(53, &format!("{NAMES}\n[rrl]\nresponses_per_second = 1000000\n"))?;
    let (median, p10) = time_single(&rrl_on, ANSWER_PROGRAM, &hit_a, XDP_TX)?;
    println!(
        "{:<32} {median:>10} {p10:>8} {:>14} {:>16}",
        "A hit, RRL on (has credit)",
        median as i64 - floor as i64,
        "-"
    );
    let rrl_limited = Harness::new(53, &format!("{NAMES}\n[rrl]\nresponses_per_second = 1\nslip = 0\n"))?;
    let (median, p10) = time_single(&rrl_limited, ANSWER_PROGRAM, &hit_a, XDP_DROP).or_else(|_| {
        // The first query of the series had the prefix's one credit.
        time_single(&rrl_limited, ANSWER_PROGRAM, &hit_a, XDP_DROP)
    })?;
    let repeated = rrl_limited.run_repeated(ANSWER_PROGRAM, &hit_a, 1_000_000)?;
    println!(
        "{:<32} {median:>10} {p10:>8} {:>14} {repeated:>16.1}",
        "A hit over the rate (dropped)",
        median as i64 - floor as i64
    );
    // DNS cookies: a client cookie alone (one hash to make the server cookie), a valid
    // server cookie (one hash to verify, echoed), one made with the previous secret
    // (two hashes to verify, one to make a new one); each is two passes through the
    // answering program with the cookie program between them.
    let mut cookies = Harness::new(53, NAMES)?;
    let with_cookie = |cookie: &[u8]| {
        let edns = EdnsQuery { options: vec![(10, cookie.to_vec())], ..Default::default() };
        udp_frame(&v4, 64, &dns::query(0x1234, "www.example.test", RecordType::A, Some(edns)).unwrap())
    };
    let client = [0x11u8; 8];
    let secret = primwatch_tests::harness::TEST_COOKIE_SECRET;
    let fresh = |secret: &[u8; 16]| {
        let server = primwatch_tests::cookie::server_cookie(secret, &client, [0; 3], cookies_now(), v4.src);
        [&client[..], &server[..]].concat()
    };
    let valid = fresh(&secret);
    let cases =
        [("A hit, client cookie (made)", with_cookie(&client)), ("A hit, server cookie verified", with_cookie(&valid))];
    for (label, frame) in &cases {
        let (median, p10) = time_single(&cookies, ANSWER_PROGRAM, frame, XDP_TX)?;
        println!("{label:<32} {median:>10} {p10:>8} {:>14} {:>16}", median as i64 - floor as i64, "-");
    }
    cookies.install_cookie_secret([0x77; 16])?;
    let (median, p10) = time_single(&cookies, ANSWER_PROGRAM, &with_cookie(&valid), XDP_TX)?;
    println!(
        "{:<32} {median:>10} {p10:>8} {:>14} {:>16}",
        "A hit, previous secret's cookie",
        median as i64 - floor as i64,
        "-"
    );
    println!(
        "(single-run figures include the kernel's per-call timing overhead, which the floor\n\
         row measures; median-floor is the program's own cost. repeat-mean: one call,\n\
         1,000,000 repeats, for cases that do not rewrite the frame)"
    );
    Ok(())
}

// ---- 2. End to end ----------------------------------------------------------------

/// Response rate limiting under a flood from random sources, RRL off and on in one
/// run: answers/s (XDP's counters) and machine CPU per answer. kxdpgun varies only the
/// last byte of its source address (every query from one /24), so the flood comes
/// from our own sender: 65,536 prebuilt frames from random /24s of 11.0.0.0/8, sent
/// with sendmmsg through a packet socket on the client veth for `seconds`.
/// Nearly every query is its /24's first in a while, so with RRL on they are answered
/// while the LRU map churns. Then a flood from one /24 (every query limited but the
/// rate and the slipped TC replies).
fn rrl_flood(seconds: u64) -> Result<()> {
    use primwatch_tests::{
        flood::{send_for, spoofed_frames},
        raw::PacketSocket,
    };
    let lab = Lab::new()?;
    let template = lab.udp_flow(&lab.client_ns)?;
    let query = dns::query(0x1234, "www.example.test", RecordType::A, None)?;
    let mut rng = primwatch_tests::XorShift(0x9e37_79b9_7f4a_7c15);
    let mut frames = |one_prefix: bool| spoofed_frames(&template, 65_536, one_prefix, &mut rng, |_| query.clone());
    let (random, one) = (frames(false), frames(true));
    // Pass replies on the client veth: nothing there needs them.
    netns::ip(&["-n", &lab.client_ns, "link", "set", "dev", CLIENT_IF, "xdp", "off"]).ok();
    let flood = |frames: &[Vec<u8>], controller: &Controller, label: &str| -> Result<Row> {
        let sock = PacketSocket::open(&lab.client_ns, CLIENT_IF)?;
        let before = controller.counters()?;
        let ((sent, elapsed), cpu) = cpu_seconds(|| send_for(&sock, frames, Duration::from_secs(seconds)))?;
        let after = controller.counters()?;
        let replies = (after.answered - before.answered + after.rrl_slipped - before.rrl_slipped) as f64;
        Ok(Row {
            label: label.into(),
            sent: sent as f64 / elapsed,
            answered: replies / elapsed,
            cpu_us_per_answer: if replies > 0.0 { cpu * 1e6 / replies } else { f64::NAN },
        })
    };
    let mut rows = Vec::new();
    for (label, rrl) in [("RRL off", ""), ("RRL on (20/s per /24, slip 2)", "[rrl]\nresponses_per_second = 20\n")] {
        let config = format!(
            "[server]\ninterfaces = [\"{SERVER_IF}\"]\nxdp_mode = \"skb\"\npin_dir = \"{{pin_dir}}\"\n{NAMES}\n{rrl}"
        );
        let controller = Controller::start(&lab.server_ns, &config)?;
        rows.push(flood(&random, &controller, &format!("{label}, random sources"))?);
        if !rrl.is_empty() {
            rows.push(flood(&one, &controller, &format!("{label}, one /24"))?);
            let c = controller.counters()?;
            println!("RRL counters: dropped {}, slipped (TC) {}", c.rrl_dropped, c.rrl_slipped);
        }
    }
    println!(
        "\n== Response rate limiting under a flood, netns lab, sendmmsg on the client veth, {seconds} s per row =="
    );
    println!("{:<48} {:>12} {:>12} {:>18}", "flood", "sent/s", "replies/s", "CPU µs / reply");
    for r in &rows {
        println!("{:<48} {:>12.0} {:>12.0} {:>18.2}", r.label, r.sent, r.answered, r.cpu_us_per_answer);
    }
    Ok(())
}

/// One kxdpgun: from a client namespace, out of its veth, to a server address.
struct Generator {
    ns: String,
    server: IpAddr,
    cpu: u32,
    /// Source addresses: kxdpgun's `-l` (a prefix: a random address from it per query).
    local: Option<&'static str>,
}

/// Runs every generator at once for `seconds`; returns the summed (sent/s, answered/s).
/// kxdpgun leaves its XDP program on the client veth and a new run sometimes finds the
/// AF_XDP queue still busy: clear the program first and retry a busy start.
/// `query` is a kxdpgun query line: "NAME TYPE" with an optional flag (E: EDNS, D: DO=1);
/// `qps` the offered rate (a fixed one for servers that fall over when flooded).
fn kxdpgun(generators: &[Generator], query: &str, qps: u32, seconds: u64) -> Result<(f64, f64)> {
    let mut last_error = None;
    for _attempt in 0..3 {
        for g in generators {
            let _ = netns::ip(&["-n", &g.ns, "link", "set", "dev", CLIENT_IF, "xdp", "off"]);
        }
        std::thread::sleep(Duration::from_millis(300));
        match kxdpgun_once(generators, query, qps, seconds) {
            Ok(rates) => return Ok(rates),
            Err(e) if format!("{e:#}").contains("busy") => last_error = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_error.unwrap())
}

fn kxdpgun_once(generators: &[Generator], query: &str, qps: u32, seconds: u64) -> Result<(f64, f64)> {
    let dir = TempDir::new("kxdpgun")?;
    let queries = dir.0.join("queries");
    std::fs::write(&queries, format!("{query}\n"))?;
    let children: Vec<_> = generators
        .iter()
        .map(|g| {
            Command::new("ip")
                .args(["netns", "exec", &g.ns, "kxdpgun", "-t", &seconds.to_string(), "-Q", &qps.to_string()])
                .args(["-F", &g.cpu.to_string(), "-I", CLIENT_IF])
                .args(g.local.map(|l| ["-l", l]).into_iter().flatten())
                .arg("-i")
                .arg(&queries)
                .arg(g.server.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("running kxdpgun (knot-dnsutils)")
        })
        .collect::<Result<_>>()?;
    let (mut sent, mut answered) = (0.0, 0.0);
    for child in children {
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        // "total queries:     2237640 (745880 pps)" / "total replies:     … (… pps) (100%)"
        let rate = |label: &str| -> Option<f64> {
            let line = text.lines().find(|l| l.starts_with(label))?;
            let inside = line.split('(').nth(1)?;
            inside.split_whitespace().next()?.parse().ok()
        };
        match (rate("total queries"), rate("total replies")) {
            (Some(q), Some(r)) => {
                sent += q;
                answered += r;
            }
            _ => bail!("could not read kxdpgun's output:\n{text}"),
        }
    }
    Ok((sent, answered))
}

/// Machine-wide CPU time (all CPUs, everything but idle and iowait) while `f` runs, in seconds.
fn cpu_seconds<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    fn busy_ticks() -> u64 {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let cpu: Vec<u64> =
            stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
        // user nice system idle iowait irq softirq steal
        cpu.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum()
    }
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let before = busy_ticks();
    let result = f()?;
    Ok((result, (busy_ticks() - before) as f64 / hz))
}

struct Row {
    label: String,
    sent: f64,
    answered: f64,
    cpu_us_per_answer: f64,
}

/// What recursive resolvers send, as kxdpgun query lines (flag D: EDNS with DO=1, E:
/// EDNS without DO, none: no EDNS): mostly DO=1 (unbound, validating kresd, BIND),
/// some plain EDNS, a few without EDNS; A and AAAA. kxdpgun cannot add a COOKIE option.
const RESOLVER_MIX: &str = "www.example.test A D\nwww.example.test A D\nwww.example.test AAAA D\n\
www.example.test A D\nwww.example.test A D\nwww.example.test AAAA D\nwww.example.test A D\n\
www.example.test A E\nwww.example.test AAAA E\nwww.example.test A";

/// The same load against a bare XDP reflector on the server veths (no lookup, no
/// checks): the ceiling of this path on this machine.
fn reflector(lab: &Lab, generators: &[Generator], seconds: u64) -> Result<Row> {
    let ns = lab.server_ns.clone();
    let dataplane = netns::run_in(&ns, || -> Result<Dataplane> {
        let mut dataplane = Dataplane::load(53)?;
        for interface in [SERVER_IF, SECOND_SERVER_IF] {
            dataplane.attach_program(REFLECT_PROGRAM, interface, XdpMode::Native)?;
        }
        Ok(dataplane)
    })??;
    let row = measure(generators, "bare XDP reflector", "www.example.test A", FLOOD, seconds);
    dataplane.shutdown()?;
    row
}

/// As many queries as the generators can send.
const FLOOD: u32 = 5_000_000;

fn measure(generators: &[Generator], label: &str, query: &str, qps: u32, seconds: u64) -> Result<Row> {
    let ((sent, answered), cpu) = cpu_seconds(|| kxdpgun(generators, query, qps, seconds))?;
    let total = answered * seconds as f64;
    Ok(Row {
        label: label.into(),
        sent,
        answered,
        cpu_us_per_answer: if total > 0.0 { cpu * 1e6 / total } else { f64::NAN },
    })
}

/// A second client namespace with its own veth to the server namespace (10.78.0.0/24),
/// so a second kxdpgun can load the server from the other core.
struct SecondClient {
    ns: String,
}

const SECOND_SERVER_IF: &str = "pws1";

impl SecondClient {
    fn new(lab: &Lab) -> Result<SecondClient> {
        let ns = primwatch_tests::unique("pwc");
        netns::ip(&["netns", "add", &ns])?;
        let client = SecondClient { ns };
        netns::ip(&[
            "link",
            "add",
            CLIENT_IF,
            "netns",
            &client.ns,
            "type",
            "veth",
            "peer",
            "name",
            SECOND_SERVER_IF,
            "netns",
            &lab.server_ns,
        ])?;
        for (ns, dev, addr) in
            [(&client.ns, CLIENT_IF, "10.78.0.2/24"), (&lab.server_ns, SECOND_SERVER_IF, "10.78.0.1/24")]
        {
            netns::ip(&["-n", ns, "link", "set", "lo", "up"])?;
            netns::ip(&["-n", ns, "link", "set", dev, "up"])?;
            netns::ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
        }
        netns::send_full_checksums(&client.ns, CLIENT_IF)?;
        Ok(client)
    }

    fn server_addr() -> IpAddr {
        "10.78.0.1".parse().unwrap()
    }
}

impl Drop for SecondClient {
    fn drop(&mut self) {
        let _ = netns::ip(&["netns", "del", &self.ns]);
    }
}

fn end_to_end(seconds: u64) -> Result<()> {
    let lab = Lab::new()?;
    let second = SecondClient::new(&lab)?;
    let server = lab.server_addr(false);
    let one = vec![Generator { ns: lab.client_ns.clone(), server, cpu: 1, local: None }];
    let two = vec![
        Generator { ns: lab.client_ns.clone(), server, cpu: 1, local: None },
        Generator { ns: second.ns.clone(), server: SecondClient::server_addr(), cpu: 0, local: None },
    ];
    let scenarios: [(&str, &Vec<Generator>); 2] =
        [("1 kxdpgun (CPU 1)", &one), ("2 kxdpgun (CPU 0 and 1, one veth each)", &two)];
    let zone = pdns::zone("example.test", server, &["www 30 IN A 192.0.2.10", "other 30 IN A 192.0.2.99"]);
    let mut rows = Vec::new();
    {
        let _pdns = PowerDns::start(&lab.server_ns, &[server, SecondClient::server_addr()], "example.test", &zone)?;
        // kxdpgun's own XDP program on the client veths lets native XDP_TX through.
        let config = format!(
            "[server]\ninterfaces = [\"{SERVER_IF}\", \"{SECOND_SERVER_IF}\"]\nxdp_mode = \"native\"\npin_dir = \"{{pin_dir}}\"\n{NAMES}"
        );
        let controller = Controller::start(&lab.server_ns, &config)?;
        for (load, generators) in scenarios {
            rows.push((load, measure(generators, "primwatch XDP", "www.example.test A", FLOOD, seconds)?));
            let before = controller.counters()?.answered;
            let mut mix = measure(generators, "primwatch XDP, resolver mix", RESOLVER_MIX, FLOOD, seconds)?;
            let by_xdp = (controller.counters()?.answered - before) as f64;
            let share = 100.0 * by_xdp / (mix.answered * seconds as f64).max(1.0);
            mix.label = format!("primwatch XDP, resolver mix ({share:.1} % by XDP)");
            rows.push((load, mix));
            rows.push((
                load,
                measure(generators, "PowerDNS 4.7 behind primwatch", "other.example.test A", FLOOD, seconds)?,
            ));
        }
        let counters = controller.counters()?;
        println!(
            "primwatch counters after the runs: answered {}, passed (name not found) {}, passed (DO=1) {}, bad checksum {}",
            counters.answered, counters.pass_name_not_found, counters.pass_dnssec, counters.pass_bad_checksum
        );
    }
    // dnstap logging every answer (a file on tmpfs-backed /tmp: the writer's cost, not a
    // disk's), with one generator.
    {
        let dir = TempDir::new("pw-bench-dnstap")?;
        let log = dir.0.join("xdp.dnstap");
        let _pdns = PowerDns::start(&lab.server_ns, &[server, SecondClient::server_addr()], "example.test", &zone)?;
        let config = format!(
            "[server]\ninterfaces = [\"{SERVER_IF}\", \"{SECOND_SERVER_IF}\"]\nxdp_mode = \"native\"\npin_dir = \"{{pin_dir}}\"\n{NAMES}\n\
             [dnstap]\nfile = {:?}\nfile_max_bytes = 1073741824\n",
            log.display().to_string()
        );
        let controller = Controller::start(&lab.server_ns, &config)?;
        let (load, generators) = scenarios[0];
        rows.push((
            load,
            measure(generators, "primwatch XDP, dnstap of every answer", "www.example.test A", FLOOD, seconds)?,
        ));
        let stats = controller.ctl(&["stats"])?;
        let tap = &stats["stats"]["tap"];
        println!(
            "dnstap of every answer: {} packets read from the ring, {} dropped by the writer, {} ring drops in XDP, log {} MB",
            tap["packets"],
            tap["dnstap_dropped"],
            stats["stats"]["xdp"]["tap_dropped"],
            std::fs::metadata(&log).map(|m| m.len() / 1_000_000).unwrap_or(0)
        );
    }
    for (load, generators) in scenarios {
        rows.push((load, reflector(&lab, generators, seconds)?));
    }
    for (load, generators) in scenarios {
        match knot_xdp(&lab, generators, seconds) {
            Ok(row) => rows.push((load, row)),
            Err(e) => println!("Knot XDP row skipped: {e:#}"),
        }
    }

    println!("\n== Answers per second, netns lab, kxdpgun (AF_XDP) sending A queries for {seconds} s per row ==");
    for (load, _) in scenarios {
        println!("-- load: {load}");
        println!("{:<44} {:>12} {:>12} {:>18}", "server", "sent/s", "answered/s", "CPU µs / answer");
        let in_load: Vec<&Row> = rows.iter().filter(|(l, _)| *l == load).map(|(_, r)| r).collect();
        for r in &in_load {
            println!("{:<44} {:>12.0} {:>12.0} {:>18.2}", r.label, r.sent, r.answered, r.cpu_us_per_answer);
        }
        let find = |prefix: &str| in_load.iter().find(|r| r.label.starts_with(prefix)).map(|r| r.answered);
        if let (Some(pw), Some(r)) = (find("primwatch"), find("bare XDP reflector")) {
            println!("primwatch / bare reflector answers: {:.1} %", 100.0 * pw / r);
        }
        if let (Some(pw), Some(pd)) = (find("primwatch"), find("PowerDNS")) {
            println!("primwatch / PowerDNS answers: {:.1}×", pw / pd);
        }
        if let (Some(pw), Some(k)) = (find("primwatch"), find("Knot")) {
            println!("primwatch / Knot XDP answers: {:.2}×", pw / k);
        }
    }
    println!(
        "(on veth, XDP runs in softirq on the sending CPU, so a kxdpgun core also runs the\n\
         server's XDP program; CPU µs / answer is the whole machine's busy time over answers)"
    );
    Ok(())
}

/// What the PowerDNS path costs: queries XDP passes (here DO=1) answered by PowerDNS
/// from its zone file and from primwatch's remote backend, next to XDP's own answers.
/// PowerDNS runs as in production beside primwatch: launch=bind,remote, caches off.
fn powerdns_path(seconds: u64) -> Result<()> {
    let lab = Lab::new()?;
    let server = lab.server_addr(false);
    let one = vec![Generator { ns: lab.client_ns.clone(), server, cpu: 1, local: None }];
    let zone = pdns::zone("example.test", server, &["other 30 IN A 192.0.2.99"]);
    // No declared zone: XDP passes DO=1 queries, so the DO=1 rows measure PowerDNS.
    let names = NAMES.replace("[zones.\"example.test\"]\n", "");
    for (setup, cache) in
        [("PowerDNS caches off", 0), ("PowerDNS packet cache on (cache-ttl=20), purged by primwatch", 20)]
    {
        let socket = std::env::temp_dir().join(format!("{}.sock", primwatch_tests::unique("pw-bench-pdns")));
        let pdns_dir = TempDir::new("pdns")?;
        let config = format!(
            "[server]\ninterfaces = [\"{SERVER_IF}\"]\nxdp_mode = \"native\"\npin_dir = \"{{pin_dir}}\"\n\
             [powerdns]\nsocket = \"{}\"\ncontrol_socket = \"{}\"\n{names}\n\
             # PowerDNS's own capacity is measured: the slow-path guard would hold it to 5,000/s.\n\
             [slow_path]\nqueries_per_second = 0\nprefix_queries_per_second = 0\n",
            socket.display(),
            PowerDns::control_socket_in(&pdns_dir.0).display()
        );
        let controller = Controller::start(&lab.server_ns, &config)?;
        // PowerDNS 4.7 exits when its queue passes max-queue-length (5000 by default),
        // which an unbounded generator reaches at once: raise it and offer fixed rates.
        let remote = format!(
            "launch=bind,remote\nremote-connection-string=unix:path={}\ncache-ttl={cache}\nquery-cache-ttl=0\n\
             negquery-cache-ttl=0\nmax-queue-length=10000000\n",
            socket.display()
        );
        let pdns = PowerDns::start_in(pdns_dir, &lab.server_ns, &[server], "example.test", &zone, &remote, None)?;
        println!("\n== The PowerDNS path: 1 kxdpgun (CPU 1), {seconds} s per row, {setup}, launch=bind,remote ==");
        println!(
            "{:<48} {:>10} {:>12} {:>8} {:>18}",
            "answered by", "offered/s", "answered/s", "share", "CPU µs / answer"
        );
        let mut rows = vec![
            ("PowerDNS: managed name, DO=1 (remote backend)", "www.example.test A D", 10_000),
            ("", "www.example.test A D", 20_000),
            ("", "www.example.test A D", 40_000),
        ];
        if cache == 0 {
            rows.insert(0, ("primwatch XDP (A)", "www.example.test A", FLOOD));
            rows.extend([
                ("PowerDNS: zone-file name, DO=1 (bind backend)", "other.example.test A D", 20_000),
                ("", "other.example.test A D", 40_000),
                ("", "other.example.test A D", 80_000),
            ]);
        } else {
            rows.extend([("", "www.example.test A D", 80_000), ("", "www.example.test A D", 120_000)]);
        }
        for (label, query, rate) in rows {
            let r = measure(&one, label, query, rate, seconds)?;
            println!(
                "{:<48} {:>10.0} {:>12.0} {:>7.0}% {:>18.2}",
                r.label,
                r.sent,
                r.answered,
                100.0 * r.answered / r.sent,
                r.cpu_us_per_answer
            );
        }
        if cache != 0 {
            println!("packet cache hits: {}", pdns.stat("packetcache-hit")?);
        }
        drop(pdns);
        drop(controller);
    }
    Ok(())
}

/// Knot DNS 3.2 with its XDP listener on the server veth, serving the same name.
fn knot_xdp(lab: &Lab, generators: &[Generator], seconds: u64) -> Result<Row> {
    let dir = TempDir::new("knot")?;
    let d = dir.0.display();
    let server: IpAddr = lab.server_addr(false);
    let second = SecondClient::server_addr();
    std::fs::write(dir.0.join("example.test.zone"), pdns::zone("example.test", server, &["www 30 IN A 192.0.2.10"]))?;
    std::fs::write(
        dir.0.join("knot.conf"),
        format!(
            "server:\n  rundir: {d}\n  listen: [ {server}@53, {second}@53 ]\n\
             xdp:\n  listen: [ {SERVER_IF}@53, {SECOND_SERVER_IF}@53 ]\n  udp: on\n\
             database:\n  storage: {d}\n\
             zone:\n  - domain: example.test\n    storage: {d}\n    file: example.test.zone\n\
             log:\n  - target: stderr\n    any: warning\n"
        ),
    )?;
    let log = std::fs::File::create(dir.0.join("log"))?;
    let mut knot = netns::command(&lab.server_ns, "knotd")
        .args(["-c", &format!("{d}/knot.conf")])
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting knotd (package knot)")?;
    // Ready when it answers over the kernel path.
    let sock = dns::udp_socket(&lab.client_ns, false)?;
    let query = dns::query(1, "www.example.test", RecordType::A, None)?;
    let ready = primwatch_tests::wait_for(Duration::from_secs(10), || {
        dns::exchange_udp(&sock, std::net::SocketAddr::new(server, 53), &query).ok()
    });
    let result = match ready {
        Some(_) => measure(generators, "Knot 3.2 XDP mode", "www.example.test A", FLOOD, seconds),
        None => Err(anyhow::anyhow!(
            "knotd did not answer: {}",
            std::fs::read_to_string(dir.0.join("log")).unwrap_or_default()
        )),
    };
    let _ = knot.kill();
    let _ = knot.wait();
    result
}
