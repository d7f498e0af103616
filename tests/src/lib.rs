//! The lab the integration tests, the demo and the benchmarks share: network
//! namespaces joined by veth, a real PowerDNS, the real primwatch binary, DNS clients,
//! a packet builder and a BPF_PROG_TEST_RUN harness for the XDP program.
//!
//! Everything here needs root. Every resource (namespace, process, pin) is released
//! on drop, so a failing test still cleans up.

pub mod backend;
pub mod controller;
pub mod cookie;
pub mod dns;
pub mod dnssec;
pub mod fleet;
pub mod flood;
pub mod fuzz;
pub mod harness;
pub mod lab;
pub mod mmdb;
pub mod netns;
pub mod packet;
pub mod pdns;
pub mod raw;
pub mod resolver;
pub mod world;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

/// A short name unique to this process and call, for namespaces, pins and temp dirs.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// A small deterministic generator (xorshift64) for test inputs that must be the same
/// on every run: random sources, client cookies. Not for anything secret.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(unique(prefix));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn wait_for<T>(timeout: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
