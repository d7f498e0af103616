//! BPF_PROG_TEST_RUN harness: loads the real XDP program, fills its maps from a config,
//! feeds it crafted frames and returns the verdict and the bytes it produced. Needs
//! root, nothing else (no interface, no namespace).

use std::path::Path;

use anyhow::{Context as _, Result};
use aya::programs::{TestRun, TestRunOptions};
use primwatch::{
    config::Config,
    dataplane::{Dataplane, ANSWER_PROGRAM},
    map_writer::NameMapWriter,
    records,
};
use primwatch_common::{Counters, HostAddrs, NameKey, NameRecords, Verdict};

use crate::packet::{expected_reply, udp_frame, verify_checksums, Flow, SERVER_MAC};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

pub struct Harness {
    dataplane: Dataplane,
    names: NameMapWriter,
}

#[derive(Debug)]
pub struct Outcome {
    pub verdict: u32,
    pub frame: Vec<u8>,
    /// Kernel-measured run time of the program (BPF_PROG_TEST_RUN's duration).
    pub nanos: u64,
}

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
        Harness::with_health(port, names, &primwatch::selection::AllUp)
    }

    pub fn with_health(port: u16, names: &str, health: &dyn primwatch::selection::Health) -> Result<Harness> {
        let text = format!("[server]\ninterfaces = [\"none\"]\nport = {port}\n{names}");
        let config = Config::parse(Path::new("harness.toml"), &text)?;
        let mut dataplane = Dataplane::load_with(port, config.rrl_table_size())?;
        let mut names = dataplane.names_writer()?;
        names.sync(records::desired_entries(&config, health))?;
        dataplane.views_writer()?.sync(&config.view_index, config.wildcard_names())?;
        dataplane.rrl_writer()?.sync(config.rrl.as_ref())?;
        // BPF_PROG_TEST_RUN hands the program frames as received on loopback.
        dataplane.host_writer()?.write(&harness_host())?;
        Ok(Harness { dataplane, names })
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

    /// Writes one entry as is, e.g. records filed under another name's hash.
    pub fn insert_entry(&mut self, name_hash: u64, records: NameRecords) -> Result<()> {
        self.names.insert(&NameKey::new(name_hash, 0), &records)
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
        let out = self.run(&frame).unwrap();
        assert_eq!(out.verdict, XDP_TX, "query should be answered");
        let expected = udp_frame(&flow.reversed(), 64, &expected_reply(query, rrs).unwrap());
        assert_eq!(out.frame, expected, "reply bytes");
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
