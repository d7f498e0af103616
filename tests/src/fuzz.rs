//! A fuzzer for the loaded XDP program (BPF_PROG_TEST_RUN): frames built from valid
//! queries, mutated, and judged by an oracle that shares no code with the program.
//!
//! For every frame: XDP_PASS must leave it byte for byte unchanged; XDP_TX must come
//! from a query a correct server may answer (checked here from the bytes, with
//! hickory-proto for the DNS message) and must be a well-formed reply to it (checksums
//! and lengths recomputed, same ID, the question echoed byte for byte, answers from the
//! configured set, OPT iff the query had one, DO copied, size within the client's
//! limit), or is the slow-path guard's empty TC=1 reply to a whole query (its header
//! and question, QR and TC set), or a negative answer for example.test that the
//! oracle's own reading of its zone (`negative_zone`) allows, with the zone's SOA;
//! XDP_DROP (the guard) only for a UDP datagram to the DNS port.
//! Any other verdict is a failure.

use std::{collections::BTreeMap, net::IpAddr};

use anyhow::{bail, ensure, Context as _, Result};
use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, RData, RecordType},
    serialize::binary::BinDecodable,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::{
    dns::{self, EdnsQuery},
    harness::{Harness, XDP_DROP, XDP_PASS, XDP_TX},
    packet::{udp_frame, Flow, SERVER_MAC},
};

/// The config the fuzzer runs against: an unsigned zone, one PowerDNS signs, a wildcard
/// (`harness` adds a zone primwatch signs: `sign.test`).
pub const CONFIG: &str = r#"
[zones."example.test"]

[zones."signed.test"]
dnssec = "pass"

[names."www.example.test"]
ttl = 30
a = ["10.0.0.1", "10.0.0.2"]
aaaa = ["2001:db8::1"]

[names."*.wild.example.test"]
ttl = 40
a = ["10.0.0.9"]

[names."www.signed.test"]
ttl = 50
a = ["10.0.0.3"]
"#;

/// `server.nsid` in the fuzzer's config (odd length: the id ends on an odd offset).
pub const FUZZ_NSID: &str = "pw-fuzz-node";

/// The zone primwatch signs in the fuzzer's config, with its key.
pub const SIGNED_ZONE: &str = "sign.test";

/// A harness for CONFIG plus `sign.test` (`dnssec = "sign"`, an ECDSA key made in
/// `key_dir`), as the fuzzer runs: DO=1 answers there carry an RRSIG.
///
/// `slow_path` is the guard's table (with its default budgets a fuzzer's rate of passed
/// queries is mostly held; `SLOW_PATH_OFF` keeps every pass to be checked).
pub fn harness(key_dir: &std::path::Path, slow_path: &str) -> Result<Harness> {
    let key = crate::dnssec::ZoneKey::generate(key_dir, SIGNED_ZONE, 13)?;
    let mut harness = Harness::with_server(
        53,
        &format!("nsid = {FUZZ_NSID:?}"),
        &format!(
            "{CONFIG}\n[zones.\"{SIGNED_ZONE}\"]\ndnssec = \"sign\"\nkey = \"{}\"\n\n\
             [names.\"www.{SIGNED_ZONE}\"]\nttl = 60\na = [\"10.0.0.4\", \"10.0.0.5\"]\naaaa = [\"2001:db8::4\"]\n\
             {slow_path}\n",
            key.base.display()
        ),
    )?;
    harness.publish_zones(&[("example.test", NEGATIVE_ZONE)])?;
    Ok(harness)
}

/// example.test's zone file, published for negative answers (as a transfer would).
pub const NEGATIVE_ZONE: &str = "$TTL 300
@ IN SOA ns1 hostmaster 9 3600 600 86400 120
@ IN NS ns1
ns1 IN A 192.0.2.53
mail IN MX 10 mx.elsewhere.test.
txt.deep IN TXT \"x\"
sub IN NS ns.sub
ns.sub IN A 192.0.2.54
alias IN CNAME www
";

/// The oracle's own reading of example.test for negative answers (RFC 1034 §4.3.2,
/// RFC 2308, RFC 4592): every name that exists, lowercased with a trailing dot, with
/// the types present; `None` for names that answer every type (CNAME) or are served
/// by primwatch (the remote backend decides their other types).
fn negative_zone() -> BTreeMap<&'static str, Option<Vec<u16>>> {
    BTreeMap::from([
        ("example.test.", Some(vec![6, 2])),
        ("ns1.example.test.", Some(vec![1])),
        ("mail.example.test.", Some(vec![15])),
        ("txt.deep.example.test.", Some(vec![16])),
        ("deep.example.test.", Some(vec![])),
        ("alias.example.test.", None),
        ("www.example.test.", None),
        ("wild.example.test.", Some(vec![])),
        ("*.wild.example.test.", None),
        // A delegation: at and below it the DNS server refers.
        ("sub.example.test.", None),
    ])
}

/// What a correct server may deny: `Some(true)` NXDOMAIN, `Some(false)` NODATA, `None`
/// nothing (the DNS server answers). Names are lowercased, with a trailing dot.
fn expected_denial(name: &str, qtype: u16) -> Option<bool> {
    let zone = negative_zone();
    if !(name == "example.test." || name.ends_with(".example.test.")) {
        return None;
    }
    // Labels from the name up to the apex: name, its parent, …, example.test.
    let mut candidates = vec![name.to_string()];
    let mut rest = name;
    while rest != "example.test." {
        rest = rest.split_once('.')?.1;
        candidates.push(rest.to_string());
    }
    if candidates.iter().any(|c| c == "sub.example.test." || c.ends_with(".sub.example.test.")) {
        return None; // at or below the delegation
    }
    let meta = qtype == 0 || qtype == 41 || qtype >= 128;
    let (walked, encloser) = candidates.iter().enumerate().find(|(_, c)| zone.contains_key(c.as_str()))?;
    if walked >= 12 || meta {
        return None; // deeper than a server need look; meta types are never denied
    }
    if walked == 0 {
        let types = zone[encloser.as_str()].as_ref()?;
        let at_apex_ds = qtype == 43 && encloser == "example.test.";
        return (qtype < 64 && !types.contains(&qtype) && !at_apex_ds).then_some(false);
    }
    // Below an existing name: nothing exists, unless a wildcard sits directly below it.
    let wildcard = format!("*.{encloser}");
    (!zone.contains_key(wildcard.as_str())).then_some(true)
}

/// The slow-path guard off: every frame XDP passes is passed, and checked intact.
pub const SLOW_PATH_OFF: &str = "[slow_path]\nqueries_per_second = 0\nprefix_queries_per_second = 0\n";

/// Who signs a served name's zone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Zone {
    Unsigned,
    /// Signed by the DNS server behind XDP: DO=1 must be passed.
    Passed,
    /// Signed by primwatch: a DO=1 answer ends with the RRSIG of the records.
    Signed,
}

/// What the oracle knows of the config: (lowercased name with trailing dot) → (zone,
/// ttl, addresses).
fn served() -> BTreeMap<&'static str, (Zone, u32, Vec<IpAddr>)> {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    BTreeMap::from([
        ("www.example.test.", (Zone::Unsigned, 30, vec![ip("10.0.0.1"), ip("10.0.0.2"), ip("2001:db8::1")])),
        ("*.wild.example.test.", (Zone::Unsigned, 40, vec![ip("10.0.0.9")])),
        ("www.signed.test.", (Zone::Passed, 50, vec![ip("10.0.0.3")])),
        ("www.sign.test.", (Zone::Signed, 60, vec![ip("10.0.0.4"), ip("10.0.0.5"), ip("2001:db8::4")])),
    ])
}

/// Totals of one run.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub frames: u64,
    pub answered: u64,
    pub passed: u64,
    /// Dropped by the slow-path guard …
    pub dropped: u64,
    /// … or answered with its empty TC=1 reply.
    pub slipped: u64,
    /// Negative answers (NXDOMAIN, NODATA) for example.test.
    pub denied: u64,
}

/// Runs `frames` mutated frames from `seed`; the first oracle failure is an error that
/// names the seed, the frame number and the frame's bytes.
pub fn run(harness: &Harness, seed: u64, frames: u64) -> Result<Tally> {
    let mut rng = StdRng::seed_from_u64(seed);
    let seeds = seed_frames()?;
    let served = served();
    let mut tally = Tally::default();
    for i in 0..frames {
        let base = &seeds[rng.gen_range(0..seeds.len())];
        let mut frame = base.clone();
        // A few frames go through unmutated: the oracle must accept their answers.
        if rng.gen_ratio(15, 16) {
            for _ in 0..rng.gen_range(1..=3) {
                mutate(&mut rng, &mut frame);
            }
            // Most mutations would only fail a checksum; repairing them half the time
            // takes the fuzzer past the checksums into the DNS parser.
            if rng.gen_bool(0.5) {
                repair_checksums(&mut frame);
            }
        }
        if frame.len() < 14 {
            frame.resize(14, 0); // BPF_PROG_TEST_RUN refuses shorter frames
        }
        let out = harness.run(&frame)?;
        tally.frames += 1;
        let verdict = match out.verdict {
            XDP_PASS => {
                ensure!(out.frame == frame, "passed frame was modified");
                tally.passed += 1;
                Ok(())
            }
            XDP_TX if is_slip(&out.frame) => {
                tally.slipped += 1;
                check_slip(&frame, &out.frame)
            }
            XDP_TX if is_denial(&out.frame) => {
                tally.denied += 1;
                check_denial(&frame, &out.frame)
            }
            XDP_TX => {
                tally.answered += 1;
                check_answer(&frame, &out.frame, &served)
            }
            XDP_DROP => {
                tally.dropped += 1;
                ensure!(
                    udp_to_dns_port(&frame),
                    "dropped a frame that is no UDP datagram to the DNS port ({:?})",
                    etherparse::SlicedPacket::from_ethernet(&frame).map(|p| p.transport)
                );
                Ok(())
            }
            other => Err(anyhow::anyhow!("verdict {other}")),
        };
        verdict.with_context(|| format!("seed {seed}, frame {i}: {:02x?}", frame))?;
    }
    Ok(tally)
}

/// The frame-level checks of a reply to `query_frame` (IP at `ip`, DNS at `dns_off`):
/// lengths and checksums recomputed from the raw bytes, ECN cleared, MACs, addresses
/// and ports swapped. Returns the reply's DNS message.
fn check_reply_frame(query_frame: &[u8], reply_frame: &[u8], ip: &Ip, dns_off: usize, v6: bool) -> Result<Vec<u8>> {
    // Checksums recomputed from the raw bytes (etherparse's header model drops the
    // reserved IPv4 flag, which the fuzzer sets and a reply keeps).
    let (rl3, rv6) = l3_start(reply_frame).context("reply not IP")?;
    ensure!(rv6 == v6 && rl3 == dns_off - 8 - ip.hlen, "reply layout");
    let rip = parse_ip(reply_frame, rl3, v6).context("reply IP")?;
    ensure!(rip.end == reply_frame.len(), "reply IP length {} for a {}-byte frame", rip.end, reply_frame.len());
    if !v6 {
        ensure!(ones_sum(&reply_frame[rl3..rl3 + rip.hlen]) == 0xffff, "reply IPv4 header checksum");
        ensure!(reply_frame[rl3 + 1] & 0x03 == 0, "reply ECN not cleared");
    } else {
        ensure!(reply_frame[rl3 + 1] & 0x30 == 0, "reply ECN not cleared");
    }
    ensure!(reply_frame[6..12] == SERVER_MAC, "reply source MAC not the server's");
    let udp = &reply_frame[rip.l4..rip.end];
    ensure!(udp.len() >= 8 && u16::from_be_bytes([udp[4], udp[5]]) as usize == udp.len(), "reply UDP length");
    ensure!(udp[6..8] != [0, 0] && udp_sum(reply_frame, &rip) == 0xffff, "reply UDP checksum");
    let payload = udp[8..].to_vec();
    ensure!(reply_frame[0..6] == query_frame[6..12] && reply_frame[6..12] == query_frame[0..6], "MACs swapped");
    let half = rip.src.len() / 2;
    ensure!(
        reply_frame[rip.src.start..rip.src.start + half] == query_frame[ip.src.start + half..ip.src.end],
        "addresses swapped"
    );
    ensure!(reply_frame[rip.l4..rip.l4 + 2] == query_frame[ip.l4 + 2..ip.l4 + 4], "ports swapped");
    Ok(payload)
}

/// A reply from the slow-path guard's slip: an empty TC=1 reply to a whole query for
/// the DNS server (any name, any type): the query's header and question with QR and TC
/// set, RD and CD kept, every count but QDCOUNT 0, and nothing after the question.
fn check_slip(query_frame: &[u8], reply_frame: &[u8]) -> Result<()> {
    let (dns_off, ip, v6) = answerable(query_frame).context("answered a frame the kernel would drop")?;
    let query_bytes = &query_frame[dns_off..ip.end];
    let query = Message::from_bytes(query_bytes).context("answered a query that does not parse")?;
    ensure!(query.message_type() == MessageType::Query && query.op_code() == OpCode::Query, "not a query");
    ensure!(!query.truncated() && query.queries().len() == 1, "TC or question count");
    ensure!(query.queries()[0].query_class() == DNSClass::IN, "class");
    let mut end = 12;
    while query_bytes[end] != 0 {
        ensure!(query_bytes[end] < 64, "compressed or extended label");
        end += 1 + query_bytes[end] as usize;
    }
    let mut expected = query_bytes[..end + 5].to_vec();
    expected[2] = 0x80 | 0x02 | (query_bytes[2] & 0x01); // QR, TC, RD kept (opcode 0, AA 0)
    expected[3] = query_bytes[3] & 0x10; // CD kept, RCODE 0
    expected[6..12].fill(0);
    let payload = check_reply_frame(query_frame, reply_frame, &ip, dns_off, v6)?;
    ensure!(payload == expected, "slip reply {payload:02x?}, wanted {expected:02x?}");
    Ok(())
}

/// Whether `reply_frame` carries an empty TC=1 reply (no records, no OPT): the guard's
/// slip, as opposed to an answer.
fn is_slip(reply_frame: &[u8]) -> bool {
    let Some((l3, v6)) = l3_start(reply_frame) else { return false };
    let Some(rip) = parse_ip(reply_frame, l3, v6) else { return false };
    let dns = rip.l4 + 8;
    reply_frame.len() >= dns + 12
        && reply_frame[dns + 2] & 0x02 != 0
        && reply_frame[dns + 6..dns + 12].iter().all(|b| *b == 0)
}

/// Whether `frame` is a UDP datagram to port 53 (the only kind the slow-path guard may
/// drop), read with etherparse: Ethernet, at most one VLAN tag, IPv4 or IPv6.
fn udp_to_dns_port(frame: &[u8]) -> bool {
    matches!(
        etherparse::SlicedPacket::from_ethernet(frame),
        Ok(etherparse::SlicedPacket { transport: Some(etherparse::TransportSlice::Udp(udp)), .. })
            if udp.destination_port() == 53
    )
}

fn rfc9018_shaped_cookie() -> Vec<u8> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as u32);
    [&[0x5a; 8][..], &[1, 0, 0, 0], &now.to_be_bytes(), &[0x77; 8]].concat()
}

fn seed_frames() -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let editions = [
        None,
        Some(EdnsQuery::default()),
        Some(EdnsQuery { dnssec_ok: true, ..Default::default() }),
        Some(EdnsQuery { dnssec_ok: true, options: vec![(10, vec![0x5a; 8])], ..Default::default() }),
        // A client cookie with an RFC 9018-shaped server cookie of now (not ours: its
        // hash is made up), and one with a 32-byte server cookie, beside ECS.
        Some(EdnsQuery { dnssec_ok: true, options: vec![(10, rfc9018_shaped_cookie())], ..Default::default() }),
        Some(EdnsQuery {
            options: vec![(8, vec![0, 1, 24, 0, 10, 77, 0]), (10, vec![0xa5; 40])],
            ..Default::default()
        }),
        Some(EdnsQuery { payload: 4096, options: vec![(12, vec![0; 11])], ..Default::default() }),
        // NSID requests (RFC 5001), alone and between ECS and a cookie.
        Some(EdnsQuery { options: vec![(3, vec![])], ..Default::default() }),
        Some(EdnsQuery {
            dnssec_ok: true,
            options: vec![(8, vec![0, 1, 24, 0, 10, 77, 0]), (3, vec![]), (10, vec![0x5a; 8])],
            ..Default::default()
        }),
        Some(EdnsQuery { options: vec![(8, vec![0, 1, 24, 0, 10, 77, 0])], ..Default::default() }),
        Some(EdnsQuery {
            dnssec_ok: true,
            options: vec![(8, vec![0, 2, 48, 0, 0xfd, 0x77, 0, 0, 0, 0])],
            ..Default::default()
        }),
    ];
    let names = [
        "www.example.test",
        "WwW.ExAmple.TEST",
        "x.wild.example.test",
        "www.signed.test",
        "nope.example.test",
        // Negative answers: a name with another type, an empty non-terminal, below a
        // delegation, two labels below the apex, a CNAME.
        "mail.example.test",
        "Deep.example.test",
        "x.sub.example.test",
        "a.b.example.test",
        "alias.example.test",
        "www.sign.test",
        "WWW.SIGN.test",
    ];
    for (n, name) in names.iter().enumerate() {
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::MX] {
            for (e, edns) in editions.iter().enumerate() {
                let query = dns::query((n * 100 + e) as u16, name, qtype, edns.clone())?;
                for v6 in [false, true] {
                    let mut flow = Flow::client_to_server(v6);
                    if (n + e) % 3 == 0 {
                        flow.vlan = Some(7);
                    }
                    out.push(udp_frame(&flow, 64, &query));
                }
            }
        }
    }
    Ok(out)
}

const INTERESTING: [u8; 10] = [0, 1, 0x3f, 0x40, 0x7f, 0x80, 0xc0, 0xfe, 0xff, 41];

fn mutate(rng: &mut StdRng, frame: &mut Vec<u8>) {
    if frame.is_empty() {
        return;
    }
    let at = rng.gen_range(0..frame.len());
    match rng.gen_range(0..10) {
        8 | 9 => readdress(rng, frame),
        0 => frame[at] ^= 1 << rng.gen_range(0..8),
        1 => frame[at] = INTERESTING[rng.gen_range(0..INTERESTING.len())],
        2 => frame.truncate(rng.gen_range(14.max(frame.len() / 2)..=frame.len())),
        3 => {
            let n = rng.gen_range(1..=8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            frame.splice(at..at, bytes);
        }
        4 => {
            // A 16-bit length or count field rewritten: near its value or anything.
            let fields = length_fields(frame);
            if let Some(&off) = fields.get(rng.gen_range(0..fields.len().max(1))) {
                if off + 1 < frame.len() {
                    let old = u16::from_be_bytes([frame[off], frame[off + 1]]);
                    let new = if rng.gen_bool(0.5) {
                        old.wrapping_add(rng.gen_range(0..8)).wrapping_sub(4)
                    } else {
                        rng.gen()
                    };
                    frame[off..off + 2].copy_from_slice(&new.to_be_bytes());
                }
            }
        }
        5 => {
            let end = (at + rng.gen_range(1..=16)).min(frame.len());
            rng.fill(&mut frame[at..end]);
        }
        6 => frame.extend((0..rng.gen_range(1..=24)).map(|_| rng.gen::<u8>())), // link padding
        _ => frame[at] = frame[at].wrapping_add(rng.gen_range(1..=3)),
    }
}

/// Rewrites one addressing field with a value the kernel would not answer from (or
/// with this host's own value again): MACs (broadcast, multicast, another host's), the
/// destination address (another host's, broadcast, multicast), the source (martian or
/// this host's), an IPv4 option (NOP, record route, loose/strict source route), or the
/// ECN bits (which the reply must not copy).
fn readdress(rng: &mut StdRng, frame: &mut Vec<u8>) {
    let Some((l3, v6)) = l3_start(frame) else { return };
    if frame.len() < l3 + if v6 { 40 } else { 20 } {
        return;
    }
    const MACS: [[u8; 6]; 5] = [
        [0xff; 6],
        [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
        [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
        [0x02, 0, 0, 0, 0, 0x09],
        SERVER_MAC,
    ];
    let v4 = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().octets().to_vec();
    let v6a = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets().to_vec();
    let addresses: Vec<Vec<u8>> = if v6 {
        ["fd77::1", "fd77::2", "fd77::9", "::", "::1", "ff02::1", "ff02::fb", "::ffff:10.0.0.1", "fe80::1"]
            .map(v6a)
            .to_vec()
    } else {
        [
            "10.77.0.1",
            "10.77.0.2",
            "10.77.0.9",
            "10.77.0.255",
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "224.0.0.1",
            "224.0.0.251",
            "240.0.0.1",
            "255.255.255.255",
        ]
        .map(v4)
        .to_vec()
    };
    let (src, dst) = if v6 { (l3 + 8, l3 + 24) } else { (l3 + 12, l3 + 16) };
    match rng.gen_range(0..6) {
        0 => frame[0..6].copy_from_slice(&MACS[rng.gen_range(0..MACS.len())]),
        1 => frame[6..12].copy_from_slice(&MACS[rng.gen_range(0..MACS.len())]),
        2 => {
            let a = &addresses[rng.gen_range(0..addresses.len())];
            frame[dst..dst + a.len()].copy_from_slice(a);
        }
        3 => {
            let a = &addresses[rng.gen_range(0..addresses.len())];
            frame[src..src + a.len()].copy_from_slice(a);
        }
        4 if v6 => frame[l3 + 1] |= 0x30,
        4 => frame[l3 + 1] |= rng.gen_range(1..=3),
        _ if !v6 && frame[l3] == 0x45 => {
            // NOP×4, record route, loose or strict source route (one hop each).
            let options: [&[u8]; 4] = [
                &[1, 1, 1, 1],
                &[7, 7, 4, 10, 77, 0, 2, 0],
                &[131, 7, 4, 10, 77, 0, 9, 0],
                &[137, 7, 4, 10, 77, 0, 9, 0],
            ];
            let option = options[rng.gen_range(0..options.len())];
            frame.splice(l3 + 20..l3 + 20, option.iter().copied());
            frame[l3] = 0x45 + (option.len() / 4) as u8;
            let total = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]).wrapping_add(option.len() as u16);
            frame[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
        }
        _ => {}
    }
    repair_checksums(frame);
}

/// Whether the server (the harness's host: SERVER_MAC, 10.77.0.1, fd77::1) would
/// accept and answer a datagram with these addresses, by RFC 1122 §3.2.1.3 and RFC
/// 4291 §2.5 (independently of the program's own tests).
fn addressed_to_server(frame: &[u8], l3: usize, v6: bool) -> Result<()> {
    let own: [IpAddr; 2] = ["10.77.0.1".parse().unwrap(), "fd77::1".parse().unwrap()];
    ensure!(frame[0..6] == SERVER_MAC, "destination MAC not the server's");
    ensure!(frame[6] & 1 == 0, "group source MAC");
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        let a = |at: usize| IpAddr::from(<[u8; 16]>::try_from(&frame[at..at + 16]).unwrap());
        (a(l3 + 8), a(l3 + 24))
    } else {
        let a = |at: usize| IpAddr::from(<[u8; 4]>::try_from(&frame[at..at + 4]).unwrap());
        (a(l3 + 12), a(l3 + 16))
    };
    ensure!(own.contains(&dst), "destination {dst} not the server's");
    ensure!(!own.contains(&src), "source {src} is the server itself");
    let martian = match src {
        IpAddr::V4(a) => a.octets()[0] == 0 || a.is_loopback() || a.is_multicast() || a.octets()[0] >= 240,
        IpAddr::V6(a) => a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.to_ipv4_mapped().is_some(),
    };
    ensure!(!martian, "martian source {src}");
    Ok(())
}

/// Offsets of the frame's IP length, UDP length, DNS counts and OPT RDLENGTH.
fn length_fields(frame: &[u8]) -> Vec<usize> {
    let Some((l3, v6)) = l3_start(frame) else { return Vec::new() };
    let udp = if v6 { l3 + 40 } else { l3 + 4 * (frame.get(l3).map_or(5, |b| b & 0x0f) as usize) };
    let dns = udp + 8;
    let mut out = vec![if v6 { l3 + 4 } else { l3 + 2 }, udp + 4, dns + 4, dns + 6, dns + 10];
    if frame.len() >= 11 {
        out.push(frame.len() - 2); // RDLENGTH of an option-less OPT at the end
    }
    out
}

/// Where the IP header starts, and whether it is IPv6, by the EtherType.
fn l3_start(frame: &[u8]) -> Option<(usize, bool)> {
    let mut l3 = 14;
    let mut ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    if ethertype == 0x8100 {
        ethertype = u16::from_be_bytes([*frame.get(16)?, *frame.get(17)?]);
        l3 = 18;
    }
    match ethertype {
        0x0800 => Some((l3, false)),
        0x86dd => Some((l3, true)),
        _ => None,
    }
}

/// RFC 1071, a byte pair at a time.
fn ones_sum(bytes: &[u8]) -> u32 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        sum += ((pair[0] as u32) << 8) | *pair.get(1).unwrap_or(&0) as u32;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// Makes the IPv4 header checksum and the UDP checksum right for the lengths the
/// frame's headers claim, where they fit in the frame.
fn repair_checksums(frame: &mut [u8]) {
    let Some((l3, v6)) = l3_start(frame) else { return };
    let Some(ip) = parse_ip(frame, l3, v6) else { return };
    if !v6 && l3 + ip.hlen <= frame.len() {
        frame[l3 + 10..l3 + 12].copy_from_slice(&[0, 0]);
        let check = !(ones_sum(&frame[l3..l3 + ip.hlen]) as u16);
        frame[l3 + 10..l3 + 12].copy_from_slice(&check.to_be_bytes());
    }
    if ip.proto != 17 || ip.end > frame.len() || ip.l4 + 8 > ip.end {
        return;
    }
    frame[ip.l4 + 6..ip.l4 + 8].copy_from_slice(&[0, 0]);
    let sum = udp_sum(frame, &ip);
    let check = match !(sum as u16) {
        0 => 0xffff,
        c => c,
    };
    frame[ip.l4 + 6..ip.l4 + 8].copy_from_slice(&check.to_be_bytes());
}

struct Ip {
    hlen: usize,
    l4: usize,
    /// End of the datagram by the IP length field (may lie beyond the frame).
    end: usize,
    proto: u8,
    src: std::ops::Range<usize>,
}

fn parse_ip(frame: &[u8], l3: usize, v6: bool) -> Option<Ip> {
    if v6 {
        frame.get(l3..l3 + 40)?;
        let payload = u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]]) as usize;
        Some(Ip { hlen: 40, l4: l3 + 40, end: l3 + 40 + payload, proto: frame[l3 + 6], src: l3 + 8..l3 + 40 })
    } else {
        frame.get(l3..l3 + 20)?;
        let hlen = 4 * (frame[l3] & 0x0f) as usize;
        let total = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]) as usize;
        Some(Ip { hlen, l4: l3 + hlen, end: l3 + total, proto: frame[l3 + 9], src: l3 + 12..l3 + 20 })
    }
}

/// Pseudo-header (addresses, protocol, length from the IP header) plus the datagram.
fn udp_sum(frame: &[u8], ip: &Ip) -> u32 {
    let len = (ip.end - ip.l4) as u32;
    let mut sum =
        ones_sum(&frame[ip.src.clone()]) + 17 + (len & 0xffff) + (len >> 16) + ones_sum(&frame[ip.l4..ip.end]);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum
}

/// The UDP payload of a query a correct server may answer from CONFIG, or why not.
fn answerable(frame: &[u8]) -> Result<(usize, Ip, bool)> {
    let (l3, v6) = l3_start(frame).context("not IP")?;
    if frame[12..14] == [0x81, 0x00] {
        ensure!(u16::from_be_bytes([frame[16], frame[17]]) != 0x8100, "double tag");
    }
    let ip = parse_ip(frame, l3, v6).context("short IP header")?;
    ensure!(ip.proto == 17, "not UDP");
    ensure!(ip.end <= frame.len(), "IP length beyond the frame");
    if v6 {
        ensure!(frame[l3] >> 4 == 6, "IPv6 version");
    } else {
        ensure!(frame[l3] >> 4 == 4 && ip.hlen >= 20, "IPv4 version/IHL");
        ensure!(ip.hlen == 20, "IPv4 options (the kernel applies its own rules)");
        ensure!(u16::from_be_bytes([frame[l3 + 6], frame[l3 + 7]]) & 0x3fff == 0, "fragment");
        ensure!(ip.end >= ip.l4 + 8, "IPv4 total length");
        ensure!(ones_sum(&frame[l3..l3 + ip.hlen]) == 0xffff, "IPv4 header checksum");
    }
    let udp = &frame[ip.l4..ip.end];
    ensure!(udp.len() >= 8 && u16::from_be_bytes([udp[4], udp[5]]) as usize == udp.len(), "UDP length");
    ensure!(u16::from_be_bytes([udp[2], udp[3]]) == 53, "not port 53");
    ensure!(u16::from_be_bytes([udp[0], udp[1]]) != 0, "source port 0");
    let sent = u16::from_be_bytes([udp[6], udp[7]]);
    ensure!(if sent == 0 { !v6 } else { udp_sum(frame, &ip) == 0xffff }, "UDP checksum");
    addressed_to_server(frame, l3, v6)?;
    Ok((ip.l4 + 8, ip, v6))
}

/// A query a correct server may answer, as read from its frame.
struct Accepted<'a> {
    dns_off: usize,
    ip: Ip,
    v6: bool,
    query: Message,
    query_bytes: &'a [u8],
    /// The question on the wire (name, QTYPE, QCLASS).
    question_bytes: &'a [u8],
    /// The question name, lowercased, with a trailing dot.
    name: String,
    qtype: RecordType,
}

/// Checks that a frame XDP replied to is a query a correct server may answer: one the
/// kernel accepts, a plain query with one IN question with an uncompressed name, EDNS
/// version 0, no records but at most one OPT.
fn accepted(query_frame: &[u8]) -> Result<Accepted<'_>> {
    let (dns_off, ip, v6) = answerable(query_frame).context("answered a frame the kernel would drop")?;
    let query_bytes = &query_frame[dns_off..ip.end];
    let query = Message::from_bytes(query_bytes).context("answered a query that does not parse")?;
    ensure!(query.message_type() == MessageType::Query && query.op_code() == OpCode::Query, "not a query");
    ensure!(!query.truncated() && query.queries().len() == 1, "TC or question count");
    ensure!(
        query.answers().is_empty() && query.name_servers().is_empty() && query.additionals().is_empty(),
        "records in the query"
    );
    ensure!(u16::from_be_bytes([query_bytes[10], query_bytes[11]]) <= 1, "ARCOUNT");
    let question = &query.queries()[0];
    ensure!(question.query_class() == DNSClass::IN, "class");
    let qtype = question.query_type();
    // The question name on the wire: labels only (no compression), up to the root.
    let mut end = 12;
    while query_bytes[end] != 0 {
        ensure!(query_bytes[end] < 64, "compressed or extended label");
        end += 1 + query_bytes[end] as usize;
    }
    let question_bytes = &query_bytes[12..end + 5];
    let name = question.name().to_ascii().to_ascii_lowercase();
    if let Some(e) = query.extensions().as_ref() {
        ensure!(e.version() == 0, "EDNS version");
    }
    Ok(Accepted { dns_off, ip, v6, query, query_bytes, question_bytes, name, qtype })
}

/// The checks every reply to `q` passes: frame, size (within `limit` bytes), the
/// question echoed byte for byte, ID, QR and AA, `rcode`, TC clear, RD and CD copied,
/// OPT iff the query had one with DO copied, no answer to an ECS option with stray
/// bits, the NSID option iff asked, the COOKIE option RFC 9018's. Returns the reply's
/// bytes and message.
fn check_reply(
    q: &Accepted,
    query_frame: &[u8],
    reply_frame: &[u8],
    limit: usize,
    rcode: ResponseCode,
) -> Result<(Vec<u8>, Message)> {
    let payload = check_reply_frame(query_frame, reply_frame, &q.ip, q.dns_off, q.v6)?;
    let edns = q.query.extensions().as_ref();
    ensure!(payload.len() <= limit, "reply of {} bytes over the client's {limit}", payload.len());
    ensure!(payload[12..12 + q.question_bytes.len()] == *q.question_bytes, "question not echoed byte for byte");
    let reply = Message::from_bytes(&payload).context("reply does not parse")?;
    ensure!(reply.id() == q.query.id(), "ID");
    ensure!(reply.message_type() == MessageType::Response && reply.authoritative(), "QR/AA");
    ensure!(
        reply.response_code() == rcode && !reply.truncated(),
        "RCODE {} (wanted {rcode})/TC",
        reply.response_code()
    );
    ensure!(
        reply.recursion_desired() == q.query.recursion_desired()
            && reply.checking_disabled() == q.query.checking_disabled(),
        "RD/CD copied"
    );
    ensure!(reply.extensions().is_some() == edns.is_some(), "OPT iff the query had one");
    if let (Some(r), Some(e)) = (reply.extensions().as_ref(), edns) {
        ensure!(r.dnssec_ok() == e.dnssec_ok(), "DO copied");
    }
    // RFC 7871 §6: an ECS address with bits set beyond its source prefix is FORMERR,
    // never answered (the bits counted one by one here, not with primwatch's helper).
    if let Some(ecs) = crate::cookie::opt_option(q.query_bytes, 8).filter(|b| b.len() >= 4) {
        let source = ecs[2] as usize;
        let stray = (source..(ecs.len() - 4) * 8).any(|bit| ecs[4 + bit / 8] & (0x80 >> (bit % 8)) != 0);
        ensure!(!stray, "answered an ECS option with address bits beyond its /{source} source prefix");
    }
    // NSID (RFC 5001): an empty request gets the configured id, once; a request with
    // data (§2.3) is never answered; no request, no id.
    let asked = crate::cookie::opt_options(q.query_bytes, 3).unwrap_or_default();
    let given = crate::cookie::opt_options(&payload, 3).context("reply options")?;
    ensure!(asked.iter().all(|o| o.is_empty()), "answered a non-empty NSID request");
    let wanted = if asked.is_empty() { vec![] } else { vec![FUZZ_NSID.as_bytes().to_vec()] };
    ensure!(given == wanted, "reply NSID options {given:02x?}, wanted {wanted:02x?}");
    // DNS cookies (RFC 7873 §5.2.2 lengths; the server cookie RFC 9018's, from the
    // oracle in `cookie`, with the harness's secret, stamped within the last seconds).
    if let Some(cookie) = crate::cookie::opt_option(q.query_bytes, 10) {
        ensure!(cookie.len() == 8 || (16..=40).contains(&cookie.len()), "answered a malformed COOKIE option");
        let echoed = crate::cookie::opt_option(&payload, 10).context("a COOKIE option unanswered")?;
        ensure!(echoed.len() == 24 && echoed[..8] == cookie[..8], "reply COOKIE option {echoed:02x?}");
        let half = if q.v6 { 16 } else { 4 };
        let src = &query_frame[q.ip.src.start..q.ip.src.start + half];
        let src = match <[u8; 16]>::try_from(src) {
            Ok(v6) => IpAddr::from(v6),
            Err(_) => IpAddr::from(<[u8; 4]>::try_from(src).context("source address")?),
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() as u32;
        let secret = &crate::harness::TEST_COOKIE_SECRET;
        let client: [u8; 8] = cookie[..8].try_into()?;
        let presented = (cookie.len() > 8).then(|| &cookie[8..]);
        ensure!(
            (now - 3..=now + 1)
                .any(|t| crate::cookie::expected(secret, secret, &client, presented, src, t).1 == echoed[8..]),
            "server cookie {:02x?} is not RFC 9018's",
            &echoed[8..]
        );
    }
    Ok((payload, reply))
}

/// Whether a reply is a negative answer: NXDOMAIN, or NOERROR with no answers and a
/// record in the authority section.
fn is_denial(reply_frame: &[u8]) -> bool {
    let Some((l3, v6)) = l3_start(reply_frame) else { return false };
    let Some(rip) = parse_ip(reply_frame, l3, v6) else { return false };
    let dns = rip.l4 + 8;
    reply_frame.len() >= dns + 12
        && (reply_frame[dns + 3] & 0x0f == 3
            || (reply_frame[dns + 6..dns + 8] == [0, 0] && reply_frame[dns + 8..dns + 10] != [0, 0]))
}

/// A negative answer for example.test: the query one a server may deny (as the
/// oracle's own reading of the zone says, NXDOMAIN or NODATA as it says), and the
/// reply the zone's SOA alone in the authority section, with the negative TTL
/// min(300, MINIMUM 120) (RFC 2308 §3), within 512 bytes.
fn check_denial(query_frame: &[u8], reply_frame: &[u8]) -> Result<()> {
    let q = accepted(query_frame)?;
    let nxdomain = expected_denial(&q.name, u16::from(q.qtype))
        .with_context(|| format!("denied {} {}, which a server must answer or refer", q.name, q.qtype))?;
    let rcode = if nxdomain { ResponseCode::NXDomain } else { ResponseCode::NoError };
    let (_, reply) = check_reply(&q, query_frame, reply_frame, 512, rcode)?;
    ensure!(reply.answers().is_empty(), "a denial with answers");
    ensure!(reply.additionals().is_empty(), "additional records beside the OPT");
    let [soa] = reply.name_servers() else { bail!("{} authority records", reply.name_servers().len()) };
    ensure!(soa.name().to_ascii().eq_ignore_ascii_case("example.test."), "SOA owner {}", soa.name());
    ensure!(soa.ttl() == 120, "SOA TTL {}", soa.ttl());
    let Some(RData::SOA(data)) = soa.data() else { bail!("authority {:?}", soa.data()) };
    ensure!(
        data.mname().to_ascii() == "ns1.example.test."
            && data.rname().to_ascii() == "hostmaster.example.test."
            && (data.serial(), data.refresh(), data.retry(), data.expire(), data.minimum())
                == (9, 3600, 600, 86400, 120),
        "SOA {data:?}"
    );
    Ok(())
}

fn check_answer(
    query_frame: &[u8],
    reply_frame: &[u8],
    served: &BTreeMap<&str, (Zone, u32, Vec<IpAddr>)>,
) -> Result<()> {
    let q = accepted(query_frame)?;
    let (name, qtype) = (q.name.as_str(), q.qtype);
    ensure!(matches!(qtype, RecordType::A | RecordType::AAAA), "type {qtype}");
    let wildcard = name.split_once('.').map(|(_, parent)| format!("*.{parent}"));
    let (zone, ttl, addresses) = served
        .get(name)
        .or_else(|| wildcard.as_deref().and_then(|w| served.get(w)))
        .with_context(|| format!("answered {name}, which is not served"))?;
    let edns = q.query.extensions().as_ref();
    if let Some(e) = edns {
        ensure!(!(e.dnssec_ok() && *zone == Zone::Passed), "answered DO=1 for a zone PowerDNS signs");
    }
    let limit = match edns {
        Some(e) => (e.max_payload() as usize).clamp(512, 1232),
        None => 512,
    };
    let (_, reply) = check_reply(&q, query_frame, reply_frame, limit, ResponseCode::NoError)?;
    ensure!(!reply.answers().is_empty(), "no answers (no NODATA policy in the fuzz config)");
    // RFC 3225 and RFC 4035 §3.1.1: the RRSIG iff DO=1 in a zone primwatch signs, last,
    // covering the type, by the zone apex, over the owner's labels, with the TTL.
    let dnssec_ok = edns.is_some_and(|e| e.dnssec_ok());
    let (records, rrsigs): (Vec<_>, Vec<_>) =
        reply.answers().iter().partition(|r| r.record_type() != RecordType::RRSIG);
    let want_rrsig = dnssec_ok && *zone == Zone::Signed;
    ensure!(rrsigs.len() == usize::from(want_rrsig), "{} RRSIGs (DO={dnssec_ok}, {zone:?})", rrsigs.len());
    if let Some(rrsig) = rrsigs.first() {
        ensure!(reply.answers().last().map(|r| r.record_type()) == Some(RecordType::RRSIG), "the RRSIG is last");
        let Some(RData::DNSSEC(hickory_proto::rr::dnssec::rdata::DNSSECRData::RRSIG(sig))) = rrsig.data() else {
            bail!("RRSIG rdata {:?}", rrsig.data());
        };
        ensure!(rrsig.name() == records[0].name() && rrsig.ttl() == *ttl, "RRSIG owner/TTL");
        ensure!(sig.type_covered() == qtype && sig.original_ttl() == *ttl, "RRSIG covers {}", sig.type_covered());
        ensure!(
            sig.num_labels() == 3 && sig.signer_name().to_ascii() == format!("{SIGNED_ZONE}."),
            "RRSIG labels/signer"
        );
        ensure!(sig.sig().len() == 64, "signature of {} bytes", sig.sig().len());
    }
    for record in records {
        ensure!(record.record_type() == qtype && record.ttl() == *ttl, "record type/TTL");
        let address = match record.data() {
            Some(RData::A(a)) => IpAddr::V4(a.0),
            Some(RData::AAAA(a)) => IpAddr::V6(a.0),
            other => bail!("unexpected rdata {other:?}"),
        };
        ensure!(addresses.contains(&address), "{address} is not configured for {name}");
    }
    Ok(())
}
