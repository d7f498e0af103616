//! `cargo xtask run`: the demo lab. A client and a server namespace joined by veth,
//! PowerDNS serving example.test in the server namespace, primwatch answering the
//! names of examples/demo.toml from XDP in front of it. Ctrl-C tears it all down.

use std::{
    path::Path,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};
use primwatch::config::Config;
use primwatch_tests::{backend::BackendNet, controller, lab::Lab, netns, pdns};

/// primwatch, stopped (SIGTERM, then wait) however the demo ends.
struct Stopping(std::process::Child);

impl Drop for Stopping {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

/// The demo's namespaces: client, server, backends.
const DEMO_NAMESPACES: [&str; 3] = ["pwdemo-client", "pwdemo-server", "pwdemo-backends"];

/// Stops every process in namespace `ns` (SIGTERM, then SIGKILL) and deletes it.
fn remove_namespace_and_processes(ns: &str) {
    if !Path::new("/run/netns").join(ns).exists() {
        return;
    }
    println!("removing {ns}, left by an earlier demo");
    let pids = || -> Vec<i32> {
        std::process::Command::new("ip")
            .args(["netns", "pids", ns])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    };
    for pid in pids() {
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    if primwatch_tests::wait_for(Duration::from_secs(5), || pids().is_empty().then_some(())).is_none() {
        for pid in pids() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = netns::ip(&["netns", "del", ns]);
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config_path = root.join("examples/demo.toml");
    let config = Config::load(&config_path)?;
    // Survive Ctrl-C, a kill, a closed terminal or a dropped SSH session long enough to
    // clean up; a closed terminal must not turn printing into a panic either.
    unsafe {
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }

    // A demo killed with SIGKILL left its lab: take it down first.
    for ns in DEMO_NAMESPACES {
        remove_namespace_and_processes(ns);
    }
    let _ = std::fs::remove_file("/var/lib/primwatch/demo-state.json"); // a fresh demo each time
    let lab = Lab::named(DEMO_NAMESPACES[0], DEMO_NAMESPACES[1])?;
    // Three HTTP backends in their own namespace; the client can reach them too.
    let backends_net = BackendNet::named(&lab, DEMO_NAMESPACES[2])?;
    let mut backends = backends_net.serve_http(config.targets.values().map(|t| t.address))?;
    // primwatch first: PowerDNS connects to its remote-backend socket when it starts.
    let mut primwatch = Stopping(
        netns::command(&lab.server_ns, controller::binary().to_str().context("path")?)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .spawn()
            .context("starting primwatch")?,
    );
    let socket = config.powerdns.as_ref().map(|p| p.socket.clone()).context("demo.toml has [powerdns]")?;
    if primwatch_tests::wait_for(Duration::from_secs(20), || socket.exists().then_some(())).is_none() {
        anyhow::bail!("primwatch did not start (no {})", socket.display());
    }

    // PowerDNS has the zone's other records (SOA, NS, MX, ...) in a zone file and asks
    // primwatch for the names it manages, so TCP and DNSSEC clients, which XDP passes
    // up, get the same health-checked addresses.
    let records = ["other 300 IN A 192.0.2.99", "@ 300 IN MX 10 mail", "mail 300 IN A 192.0.2.25"];
    let zone = pdns::zone("example.test", lab.server_addr(false), &records);
    let remote = format!(
        "launch=bind,remote\nremote-connection-string=unix:path={}\n\
         cache-ttl=0\nquery-cache-ttl=0\nnegquery-cache-ttl=0\nedns-subnet-processing=yes\n",
        socket.display()
    );
    // And on 127.0.0.1, as examples/pdns.conf's 0.0.0.0 does: primwatch transfers the
    // zone from there for XDP's negative answers (PowerDNS allows 127.0.0.0/8 to).
    let addresses = [lab.server_addr(false), lab.server_addr(true), std::net::Ipv4Addr::LOCALHOST.into()];
    let powerdns = pdns::PowerDns::start_with(&lab.server_ns, &addresses, "example.test", &zone, &remote)?;
    println!("PowerDNS is serving example.test in namespace {} (launch=bind,remote)", lab.server_ns);

    let (c, s) = (&lab.client_ns, &lab.server_ns);
    println!(
        "\nprimwatch answers {} from XDP on {}. Try, in another terminal:\n\n\
         \x20 ip netns exec {c} dig @10.77.0.1 www.example.test A        # XDP\n\
         \x20 ip netns exec {c} dig @fd77::1 WwW.ExAmPlE.test A         # XDP over IPv6, case kept\n\
         \x20 ip netns exec {c} dig @fd77::1 api.example.test AAAA      # XDP, AAAA\n\
         \x20 ip netns exec {c} dig @10.77.0.1 www.example.test A +tcp   # PowerDNS (TCP)\n\
         \x20 ip netns exec {c} dig @10.77.0.1 www.example.test A +dnssec # XDP (DO=1, unsigned zone)\n\
         \x20 ip netns exec {c} dig @10.77.0.1 www.example.test A +subnet=192.0.2.0/24 # XDP, a client subnet in Korea: Osaka\n\
         \x20 ip netns exec {c} dig @10.77.0.1 other.example.test A      # PowerDNS (not served by XDP)\n\
         \x20 ip netns exec {c} dig @10.77.0.1 example.test MX           # PowerDNS (other type)\n\
         \x20 ip netns exec {c} dig @10.77.0.1 nope.example.test A      # XDP: NXDOMAIN with the SOA\n\
         \x20 ip netns exec {c} dig @10.77.0.1 mail.example.test AAAA   # XDP: NODATA with the SOA\n\n\
         \x20 target/release/primwatch ctl --socket /run/primwatch/demo.sock status\n\
         \x20 target/release/primwatch ctl --socket /run/primwatch/demo.sock target tokyo1 down\n\
         \x20 target/release/primwatch ctl --socket /run/primwatch/demo.sock group osaka priority 200\n\
         \x20 target/release/primwatch ctl --socket /run/primwatch/demo.sock stats\n\
         \x20 target/release/primwatch ctl --socket /run/primwatch/demo.sock explain www.example.test --from 10.77.0.2\n\
         \x20 target/release/primwatch ctl --socket /run/primwatch/demo.sock explain www.example.test --from 10.77.0.2 --ecs 192.0.2.0/24\n\
         \x20 nsenter --net=/run/netns/{s} curl -s 127.0.0.1:9153/metrics   # Prometheus\n\
         \x20 target/release/primwatch counters                           # XDP counters\n\
         \x20 bpftool map dump pinned /sys/fs/bpf/primwatch/counters\n\
         \x20 bpftool map dump pinned /sys/fs/bpf/primwatch/names\n\n\
         Press Enter to stop the Tokyo backends (then again to bring them back) and watch\n\
         www.example.test fail over from Tokyo (10.99.1.11/.12) to Osaka (10.99.1.13) and\n\
         back; Ctrl-C stops everything and removes the lab.",
        config.names.keys().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
        config.interfaces.join(", "),
    );

    // Enter toggles the primary site (the Tokyo backends), so failover can be watched.
    // The backends were started in the config's (sorted) target order.
    let tokyo: Vec<usize> =
        config.targets.keys().enumerate().filter(|(_, name)| name.starts_with("tokyo")).map(|(i, _)| i).collect();
    let (enter_tx, enter_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            let _ = enter_tx.send(());
            line.clear();
        }
    });
    let mut stopped = false;
    while !STOP.load(Ordering::SeqCst) {
        if let Some(status) = primwatch.0.try_wait()? {
            println!("primwatch exited ({status})");
            break;
        }
        if enter_rx.try_recv().is_ok() {
            for &i in &tokyo {
                if stopped {
                    backends[i].resume()?;
                    println!("backend {} is listening again", backends[i].address);
                } else {
                    backends[i].stop();
                    println!("backend {} stopped (connections refused)", backends[i].address);
                }
            }
            println!(
                "www.example.test should now answer {}",
                if stopped {
                    "from Tokyo again (after the rise checks)"
                } else {
                    "10.99.1.13 (Osaka) within a few seconds"
                }
            );
            stopped = !stopped;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(primwatch);
    drop(powerdns);
    drop(backends);
    drop(backends_net);
    drop(lab);
    println!("lab removed");
    Ok(())
}
