//! DNSSEC costs: a DO=1 hit carrying an RRSIG next to a plain one (BPF_PROG_TEST_RUN),
//! the controller's signing rate per algorithm, and the time signing adds to a start
//! with 10k and 100k signed names.

use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use hickory_proto::rr::RecordType;
use primwatch::{dataplane::ANSWER_PROGRAM, dns::dnssec::ZoneSigner, dns::name::DnsName};
use primwatch_common::Family;
use primwatch_tests::{
    dns::{self, EdnsQuery},
    dnssec::ZoneKey,
    harness::{Harness, XDP_TX},
    packet::{udp_frame, Flow},
};

fn zone(key: Option<&ZoneKey>) -> String {
    match key {
        Some(key) => format!("[zones.\"example.test\"]\ndnssec = \"sign\"\nkey = \"{}\"\n", key.base.display()),
        None => "[zones.\"example.test\"]\n".into(),
    }
}

pub fn run() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("pw-bench-dnssec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = measure(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &std::path::Path) -> Result<()> {
    let p256 = ZoneKey::generate(dir, "example.test", 13)?;
    let ed25519 = ZoneKey::generate(dir, "example.test", 15)?;

    println!("\n== DNSSEC: XDP cost of the RRSIG, BPF_PROG_TEST_RUN, median of {} single runs ==", super::SINGLE_RUNS);
    let names = "[names.\"www.example.test\"]\na = [\"192.0.2.10\", \"192.0.2.11\"]\n";
    let v4 = Flow::client_to_server(false);
    let query = |dnssec_ok| {
        let edns = EdnsQuery { payload: 1232, dnssec_ok, ..EdnsQuery::default() };
        udp_frame(&v4, 64, &dns::query(0x1234, "www.example.test", RecordType::A, Some(edns)).unwrap())
    };
    let unsigned = Harness::new(53, &format!("{}{names}", zone(None)))?;
    let signed = Harness::new(53, &format!("{}{names}", zone(Some(&p256))))?;
    let floor = super::time_single(&unsigned, primwatch::dataplane::PASS_PROGRAM, &query(false), 2)?.0;
    println!("{:<44} {:>10} {:>14}", "case", "median ns", "median-floor");
    for (label, h, frame) in [
        ("A hit, 2 records, DO=0", &unsigned, query(false)),
        ("A hit, 2 records, DO=1, unsigned zone", &unsigned, query(true)),
        ("A hit, 2 records, DO=1, signed zone (+RRSIG)", &signed, query(true)),
        ("A hit, 2 records, DO=0, signed zone", &signed, query(false)),
    ] {
        let (median, _) = super::time_single(h, ANSWER_PROGRAM, &frame, XDP_TX)?;
        println!("{label:<44} {median:>10} {:>14}", median as i64 - floor as i64);
    }

    println!("\n== DNSSEC: controller signing (one thread) ==");
    let apex = DnsName::parse("example.test").map_err(anyhow::Error::msg)?;
    let rdatas: [&[u8]; 2] = [&[192, 0, 2, 10], &[192, 0, 2, 11]];
    for (label, key) in [("ECDSAP256SHA256 (13)", &p256), ("ED25519 (15)", &ed25519)] {
        let signer = ZoneSigner::load(&apex, &key.base, primwatch::dns::dnssec::DEFAULT_VALIDITY)?;
        let owner = DnsName::parse("www.example.test").map_err(anyhow::Error::msg)?;
        let started = Instant::now();
        let mut made = 0u64;
        while started.elapsed() < Duration::from_secs(2) {
            signer.sign(&owner, Family::V4, 300, &rdatas, SystemTime::now())?;
            made += 1;
        }
        let rate = made as f64 / started.elapsed().as_secs_f64();
        println!("{label:<22} {rate:>10.0} signatures/s ({:.1} µs each)", 1e6 / rate);
    }

    println!("\n== DNSSEC: start with N signed names (harness publish, one RRSIG per name) ==");
    println!("{:>8} {:>16} {:>16} {:>16}", "names", "unsigned s", "signed s", "signing adds s");
    for n in [10_000usize, 100_000] {
        let mut names = String::with_capacity(n * 48);
        for i in 0..n {
            names.push_str(&format!("[names.\"n{i}.example.test\"]\na = [\"192.0.2.10\"]\n"));
        }
        let server = format!("max_names = {}\nmax_signatures = {}\n", n + 16, n + 16);
        let time = |key: Option<&ZoneKey>| -> Result<f64> {
            let started = Instant::now();
            // (the harness waits for the signing thread before it returns)
            let h = Harness::with_server(53, &server, &format!("{}{names}", zone(key)))?;
            let took = started.elapsed().as_secs_f64();
            if key.is_some() {
                anyhow::ensure!(h.signatures() == n, "{} signatures for {n} names", h.signatures());
            }
            Ok(took)
        };
        let plain = time(None)?;
        let with = time(Some(&p256))?;
        println!("{n:>8} {plain:>16.2} {with:>16.2} {:>16.2}", with - plain);
    }
    Ok(())
}
