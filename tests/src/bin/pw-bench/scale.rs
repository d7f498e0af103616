//! 10,000 targets with HTTP checks at a 1 s interval against a loopback backend: the
//! controller's CPU use while it keeps all of them checked.

use std::{
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use primwatch_tests::{controller::Controller, netns};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TARGETS: usize = 10_000;
const MEASURE: Duration = Duration::from_secs(10);

/// Namespace with only loopback: every 127.x.y.z is local, one listener serves all.
/// Removed when dropped.
pub(crate) struct Ns(pub(crate) String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = netns::ip(&["netns", "del", &self.0]);
    }
}

/// utime + stime of a process, in seconds.
pub(crate) fn cpu_of(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

pub fn run() -> Result<()> {
    println!("\n== {TARGETS} targets, HTTP checks every 1 s, loopback backend, {} s ==", MEASURE.as_secs());
    let ns = Ns(primwatch_tests::unique("pwscale"));
    netns::ip(&["netns", "add", &ns.0])?;
    netns::ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;

    // The backend: a small async HTTP server counting the checks it answers.
    let listener = netns::run_in(&ns.0, || std::net::TcpListener::bind("0.0.0.0:8080"))??;
    listener.set_nonblocking(true)?;
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((mut stream, _)) = listener.accept().await else { continue };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = stream.read(&mut buf).await;
                    let _ =
                        stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").await;
                    counter.fetch_add(1, Ordering::Relaxed);
                });
            }
        });
    });

    let mut config = String::from(
        "[server]\ninterfaces = [\"lo\"]\nxdp_mode = \"skb\"\npin_dir = \"{pin_dir}\"\n\
         [checks.web]\ntype = \"http\"\nport = 8080\ninterval = \"1s\"\ntimeout = \"500ms\"\njitter = \"900ms\"\n",
    );
    for i in 0..TARGETS {
        let _ = write!(config, "[targets.t{i}]\naddress = \"127.1.{}.{}\"\nchecks = [\"web\"]\n", i / 250, i % 250 + 1);
    }
    config.push_str("[groups.web]\nmembers = [\"t0\", \"t1\", \"t2\", \"t3\"]\npolicy = \"all\"\n[names.\"www.example.test\"]\ngroups = [\"web\"]\n");
    let controller = Controller::start(&ns.0, &config)?;
    let pid = controller.pid().context("controller pid")?;
    std::thread::sleep(Duration::from_secs(3)); // first round, clients built
    let (cpu0, served0, t0) = (cpu_of(pid)?, served.load(Ordering::Relaxed), Instant::now());
    std::thread::sleep(MEASURE);
    let (cpu1, served1, elapsed) = (cpu_of(pid)?, served.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    let rss_kb: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    let checks_per_s = (served1 - served0) as f64 / elapsed;
    let cores = (cpu1 - cpu0) / elapsed;
    println!("checks answered by the backend: {checks_per_s:.0}/s (expected {TARGETS}/s)");
    println!(
        "controller CPU: {:.2} cores ({:.1} µs per check), RSS {} MiB",
        cores,
        cores * 1e6 / checks_per_s.max(1.0),
        rss_kb / 1024
    );
    println!("(goal: under one core; the backend's own CPU is not counted)");
    drop(controller);
    Ok(())
}
