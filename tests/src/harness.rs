//! BPF_PROG_TEST_RUN harness: loads the real XDP program, fills its maps from a config,
//! feeds it crafted frames and returns the verdict and the bytes it produced. Needs
//! root, nothing else (no interface, no namespace).

use std::{net::IpAddr, path::Path};

use anyhow::{Context as _, Result};
use aya::programs::{TestRun, TestRunOptions};
use primwatch::{
    answers::records,
    config::Config,
    dataplane::publish::{AnswerMaps, CookieMapWriter},
    dataplane::{Dataplane, ANSWER_PROGRAM},
};
use primwatch_common::{Counters, HostAddrs, NameEntry, NameKey, Verdict};

use crate::{
    cookie::Presented,
    packet::{expected_reply_with_options, udp_frame, verify_checksums, Flow, SERVER_MAC},
};

/// CLOCK_MONOTONIC_COARSE, the XDP program's clock (bpf_ktime_get_coarse_ns), in ns.
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub struct Harness {
    dataplane: Dataplane,
    maps: AnswerMaps,
    /// DNS cookies: on with `TEST_COOKIE_SECRET` (or the config's secret) unless the
    /// config turns them off; tests install secrets and set the clock through the
    /// harness, which keeps what it wrote for the oracle.
    cookies: CookieMapWriter,
    cookies_on: bool,
    /// (current, previous) secrets.
    cookie_secrets: ([u8; 16], [u8; 16]),
    cookie_clock_offset_ns: u64,
    /// Negative answers: the zones' names and SOAs, published by `publish_zones`.
    negative: primwatch::answers::zone_data::NegativeMapWriter,
    zone_inputs: primwatch::answers::zone_data::Inputs,
    /// The tap's settings and the thread draining its ring (see `record_taps`).
    tap: Option<(aya::maps::Array<aya::maps::MapData, primwatch_common::TapSettings>, TapDrain)>,
}

/// Reads the tap's ring as the controller would (records counted, then dropped) until
/// dropped itself.
struct TapDrain {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    records: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for TapDrain {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The harness's cookie secret when the config names none (RFC 9018 Appendix A's).
pub const TEST_COOKIE_SECRET: [u8; 16] =
    [0xe5, 0xe9, 0x73, 0xe5, 0xa6, 0xb2, 0xa4, 0x3f, 0x48, 0xe7, 0xdc, 0x84, 0x9e, 0x37, 0xbf, 0xcf];

#[derive(Debug)]
pub struct Outcome {
    pub verdict: u32,
    pub frame: Vec<u8>,
    /// Kernel-measured run time of the program (BPF_PROG_TEST_RUN's duration).
    pub nanos: u64,
}

/// How long the harness waits for the signing thread after a publish.
const SIGNING_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Loopback's index, which BPF_PROG_TEST_RUN reports as the receiving interface.
pub const TEST_RUN_IFINDEX: u32 = 1;

/// "This host" for the harness: loopback with `SERVER_MAC`, and the server addresses
/// of `Flow::client_to_server`.
pub fn harness_host() -> HostAddrs {
    let mut host = HostAddrs { interface_count: 1, v4_count: 1, v6_count: 1, ..HostAddrs::default() };
    host.ifindex[0] = TEST_RUN_IFINDEX;
    host.mac[0][..6].copy_from_slice(&SERVER_MAC);
    for v6 in [false, true] {
        match Flow::client_to_server(v6).dst {
            std::net::IpAddr::V4(a) => host.v4[0] = a.octets(),
            std::net::IpAddr::V6(a) => host.v6[0] = a.octets(),
        }
    }
    host
}

impl Harness {
    /// `names` is a config without its `[server]` part (names, targets, groups…);
    /// every target counts as healthy.
    pub fn new(port: u16, names: &str) -> Result<Harness> {
        Harness::with_health(port, names, &primwatch::health::AllUp)
    }

    /// As `new`, with the names of `name_files` (`NAME GROUP` lines) besides.
    pub fn with_name_files(port: u16, name_files: &[&Path], names: &str) -> Result<Harness> {
        let files: Vec<String> = name_files.iter().map(|f| format!("{:?}", f.display().to_string())).collect();
        Harness::from_text(
            &format!("name_files = [{}]\n[server]\ninterfaces = [\"none\"]\nport = {port}\n{names}", files.join(", ")),
            port,
            &primwatch::health::AllUp,
        )
    }

    /// As `new`, with more `[server]` keys (`server_keys`, e.g. map capacities).
    pub fn with_server(port: u16, server_keys: &str, names: &str) -> Result<Harness> {
        let text = format!("[server]\ninterfaces = [\"none\"]\nport = {port}\n{server_keys}\n{names}");
        Harness::from_text(&text, port, &primwatch::health::AllUp)
    }

    pub fn with_health(port: u16, names: &str, health: &dyn primwatch::health::Health) -> Result<Harness> {
        let text = format!("[server]\ninterfaces = [\"none\"]\nport = {port}\n{names}");
        Harness::from_text(&text, port, health)
    }

    fn from_text(text: &str, port: u16, health: &dyn primwatch::health::Health) -> Result<Harness> {
        let config = Config::parse(Path::new("harness.toml"), text)?;
        let mut dataplane = Dataplane::load_with(port, &config.capacities)?;
        // Published as the controller publishes: through the answer maps' one order.
        let mut maps = dataplane.answer_maps()?;
        maps.publish(&config, records::desired_entries(&config, health), || ())?;
        // Signed zones: queries see every signature from the start.
        maps.signatures.wait_idle(SIGNING_WAIT);
        let mut cookies = dataplane.cookie_writer()?;
        let secret = config.cookies.secret.unwrap_or(TEST_COOKIE_SECRET);
        cookies.install(secret)?;
        let cookie_clock_offset_ns = primwatch::dataplane::publish::unix_minus_monotonic_coarse_ns();
        cookies.set_clock_offset(cookie_clock_offset_ns)?;
        cookies.set_enabled(config.cookies.enabled)?;
        // BPF_PROG_TEST_RUN hands the program frames as received on loopback.
        dataplane.host_writer()?.write(&harness_host())?;
        let negative = dataplane.negative_writer()?;
        let zone_inputs = primwatch::answers::zone_data::Inputs::of(&config);
        Ok(Harness {
            negative,
            zone_inputs,
            dataplane,
            maps,
            cookies,
            cookies_on: config.cookies.enabled,
            cookie_secrets: (secret, secret),
            cookie_clock_offset_ns,
            tap: None,
        })
    }

    /// Turns the tap on as `settings` say (all zero: off), with a thread reading its
    /// ring meanwhile, so that records cost what they cost with a reader keeping up.
    /// Returns the records read so far.
    pub fn record_taps(&mut self, settings: primwatch_common::TapSettings) -> Result<u64> {
        use std::sync::{atomic::Ordering, Arc};
        if self.tap.is_none() {
            let maps = self.dataplane.tap_maps()?;
            let mut ring = maps.events;
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let records = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let (stop2, records2) = (stop.clone(), records.clone());
            let thread = std::thread::spawn(move || {
                while !stop2.load(Ordering::Relaxed) {
                    while let Some(item) = ring.next() {
                        std::hint::black_box(&*item);
                        records2.fetch_add(1, Ordering::Relaxed);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            });
            self.tap = Some((maps.settings, TapDrain { stop, records, thread: Some(thread) }));
        }
        let (map, drain) = self.tap.as_mut().expect("set above");
        map.set(0, settings, 0)?;
        Ok(drain.records.load(Ordering::Relaxed))
    }

    /// Publishes negative answers for `zones` ((apex, zone file text)), as the zone
    /// task does after a transfer; returns the names written.
    pub fn publish_zones(&mut self, zones: &[(&str, &str)]) -> Result<usize> {
        let mut contents = std::collections::BTreeMap::new();
        for (apex, text) in zones {
            let apex = primwatch::dns::name::DnsName::parse(apex).map_err(anyhow::Error::msg)?;
            contents.insert(apex.clone(), primwatch::answers::zone_data::ZoneContents::from_zone_file(&apex, text)?);
        }
        let inputs = &self.zone_inputs;
        let mut declared: Vec<_> = inputs.zones.keys().cloned().collect();
        declared.extend(contents.keys().cloned());
        let per_zone = self.negative.publish(&contents, &declared, &inputs.managed, inputs.capacity)?;
        Ok(per_zone.values().sum())
    }

    pub fn run(&self, frame: &[u8]) -> Result<Outcome> {
        self.run_program(ANSWER_PROGRAM, frame)
    }

    pub fn run_program(&self, program: &str, frame: &[u8]) -> Result<Outcome> {
        let program = self.dataplane.program(program)?;
        let mut out = vec![0u8; 4096];
        let opts =
            TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat: 1, ..TestRunOptions::new() };
        let result = program.test_run(opts).context("BPF_PROG_TEST_RUN")?;
        out.truncate(result.data_size_out as usize);
        Ok(Outcome { verdict: result.return_value, frame: out, nanos: result.duration.as_nanos() as u64 })
    }

    /// Runs `frame` `repeat` times in one call (only meaningful for frames the program
    /// does not rewrite) and returns the mean ns per run.
    pub fn run_repeated(&self, program: &str, frame: &[u8], repeat: u32) -> Result<f64> {
        let program = self.dataplane.program(program)?;
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::new() };
        let result = program.test_run(opts)?;
        Ok(result.duration.as_nanos() as f64)
    }

    /// Writes the names of another config (as a reload does: a new name plan) with
    /// every target up; returns what the writer did.
    pub fn reload_names(&mut self, port: u16, names: &str) -> Result<primwatch::dataplane::publish::SyncStats> {
        let text = format!("[server]\ninterfaces = [\"none\"]\nport = {port}\n{names}");
        let config = Config::parse(Path::new("harness.toml"), &text)?;
        self.maps.config_changed();
        self.maps.publish(&config, records::desired_entries(&config, &primwatch::health::AllUp), || ())
        // (signed zones: `signed_since` waits for the signing thread and says what it did)
    }

    /// What the signing thread did since the last look, once it has caught up with
    /// every publish.
    pub fn signed_since(&self) -> primwatch::answers::signatures::SignStats {
        self.maps.signatures.wait_idle(SIGNING_WAIT)
    }

    /// RRSIG records in the `rrsigs` map, once the signing thread has caught up.
    pub fn signatures(&self) -> usize {
        self.maps.signatures.wait_idle(SIGNING_WAIT);
        self.maps.signatures.len()
    }

    /// Answers XDP gave from each (name, view) entry: (A, AAAA).
    pub fn answer_counts(&self) -> std::collections::BTreeMap<NameKey, (u64, u64)> {
        let (plan, counts) = self.maps.names.answer_counts();
        plan.entries.iter().map(|e| e.key).zip(counts).collect()
    }

    /// Writes one entry as is, e.g. a name's entry filed under another name's hash.
    pub fn insert_entry(&mut self, name_hash: u64, entry: NameEntry) -> Result<()> {
        self.maps.names.insert(&NameKey::new(name_hash, 0), &entry)
    }

    /// The default view's entry for the name with `name_hash`.
    pub fn entry(&self, name_hash: u64) -> Option<NameEntry> {
        self.maps.names.entry(&NameKey::new(name_hash, 0))
    }

    /// Makes `secret` the current cookie secret; the current one becomes the previous.
    pub fn install_cookie_secret(&mut self, secret: [u8; 16]) -> Result<()> {
        self.cookies.install(secret)?;
        self.cookie_secrets = (secret, self.cookie_secrets.0);
        Ok(())
    }

    /// Sets the program's Unix clock to `unix_seconds` (half a second into it).
    pub fn set_cookie_clock(&mut self, unix_seconds: u32) -> Result<()> {
        let offset = (unix_seconds as u64 * 1_000_000_000 + 500_000_000).wrapping_sub(monotonic_coarse_ns());
        self.cookies.set_clock_offset(offset)?;
        self.cookie_clock_offset_ns = offset;
        Ok(())
    }

    /// The program's Unix time, in seconds.
    pub fn cookie_now(&self) -> u32 {
        (monotonic_coarse_ns().wrapping_add(self.cookie_clock_offset_ns) / 1_000_000_000) as u32
    }

    /// What the oracle (`crate::cookie`) says of a query's COOKIE option at `now`: the
    /// verdict and the reply's COOKIE option, whole (code, length, data); None for a
    /// query without one or with cookies off.
    pub fn expected_cookie(&self, query: &[u8], from: IpAddr, now: u32) -> Option<(Presented, Vec<u8>)> {
        if !self.cookies_on {
            return None;
        }
        let (client, server) = crate::cookie::cookie_option(query)?;
        let client: [u8; 8] = client.try_into().ok()?;
        let (current, previous) = &self.cookie_secrets;
        let presented = (!server.is_empty()).then_some(server.as_slice());
        let (verdict, server) = crate::cookie::expected(current, previous, &client, presented, from, now);
        let mut option = vec![0, 10, 0, 24];
        option.extend_from_slice(&client);
        option.extend_from_slice(&server);
        Some((verdict, option))
    }

    /// Instructions the verifier processed to accept `program` (its limit is 1M):
    /// how close a change brings the program to being refused.
    pub fn verified_insns(&self, program: &str) -> Result<u32> {
        let info = self.dataplane.program(program)?.info()?;
        info.verified_instruction_count().context("the kernel reports no verified instruction count")
    }

    pub fn counters(&self) -> Result<Counters> {
        self.dataplane.counters()
    }

    /// Runs `query` from `flow` and checks the program answers it with exactly the reply
    /// packet.rs builds independently (`rrs` as (type, ttl, rdata)), with correct
    /// checksums. Returns the reply's DNS message.
    #[track_caller]
    pub fn assert_answers(&self, flow: Flow, query: &[u8], rrs: &[(u16, u32, Vec<u8>)]) -> Vec<u8> {
        let frame = udp_frame(&flow, 61, query);
        let before = self.cookie_now();
        let out = self.run(&frame).unwrap();
        let after = self.cookie_now();
        assert_eq!(out.verdict, XDP_TX, "query should be answered");
        // With a COOKIE option, the reply's is the oracle's, made at some second of the run.
        let expected: Vec<Vec<u8>> = (before..=after)
            .map(|now| {
                let options = self.expected_cookie(query, flow.src, now).map(|(_, o)| o).unwrap_or_default();
                udp_frame(&flow.reversed(), 64, &expected_reply_with_options(query, rrs, &options).unwrap())
            })
            .collect();
        assert!(expected.contains(&out.frame), "reply bytes:\n{:02x?}\nexpected one of\n{:02x?}", out.frame, expected);
        verify_checksums(&out.frame).unwrap()
    }

    /// Runs `frame` and checks it is passed unmodified and counted under `reason`.
    #[track_caller]
    pub fn assert_passed(&self, frame: &[u8], reason: Verdict) {
        let before = self.counters().unwrap().as_array();
        let out = self.run(frame).unwrap();
        assert_eq!(out.verdict, XDP_PASS, "frame should be passed ({reason:?})");
        assert_eq!(out.frame, frame, "a passed frame must be unmodified");
        let after = self.counters().unwrap().as_array();
        assert_eq!(
            after[reason as usize],
            before[reason as usize] + 1,
            "counter {} should rise",
            Counters::FIELD_NAMES[reason as usize]
        );
    }
}
