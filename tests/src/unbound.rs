//! A real validating resolver (Debian's unbound) in a namespace, for end-to-end
//! DNSSEC tests: it trusts one zone's key and asks the lab's server for that zone.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{dns, netns, wait_for, TempDir};

pub struct Unbound {
    child: Child,
    dir: TempDir,
    /// Where it listens (port 53 of the namespace's loopback).
    pub address: SocketAddr,
    ns: String,
}

impl Unbound {
    /// Starts unbound in `ns`, validating `zone` with the DNSKEY in `trust_anchor` (a
    /// BIND `.key` file) and asking `server` (port 53) for it.
    pub fn start(ns: &str, zone: &str, server: IpAddr, trust_anchor: &Path) -> Result<Unbound> {
        let dir = TempDir::new("unbound")?;
        let d = dir.0.display().to_string();
        let tld = zone.rsplit('.').next().unwrap_or(zone);
        std::fs::write(
            dir.0.join("unbound.conf"),
            format!(
                "server:\n  interface: 127.0.0.1\n  port: 53\n  do-daemonize: no\n  username: \"\"\n  chroot: \"\"\n\
                 \x20 directory: \"{d}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"{d}/log\"\n  verbosity: 1\n\
                 \x20 val-log-level: 2\n  do-not-query-localhost: no\n  module-config: \"validator iterator\"\n\
                 \x20 trust-anchor-file: \"{}\"\n  local-zone: \"{tld}.\" nodefault\n  access-control: 127.0.0.0/8 allow\n\
                 \x20 cache-max-ttl: 1\n  cache-max-negative-ttl: 1\n\
                 stub-zone:\n  name: \"{zone}\"\n  stub-addr: {server}\n",
                trust_anchor.display()
            ),
        )?;
        netns::ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        let log = std::fs::File::create(dir.0.join("stderr"))?;
        let child = netns::command(ns, "unbound")
            .args(["-d", "-c"])
            .arg(dir.0.join("unbound.conf"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting unbound (`cargo xtask setup` installs it)")?;
        let address = SocketAddr::from(([127, 0, 0, 1], 53));
        let mut unbound = Unbound { child, dir, address, ns: ns.to_string() };
        // Ready when it answers at all (a name outside the zone: REFUSED or SERVFAIL).
        let probe = dns::query(1, "ready.invalid", hickory_proto::rr::RecordType::A, None)?;
        let ready = wait_for(Duration::from_secs(10), || {
            let sock = dns::udp_socket_from(&unbound.ns, address.ip()).ok()?;
            dns::exchange_udp(&sock, address, &probe).ok()
        });
        if ready.is_none() {
            if let Some(status) = unbound.child.try_wait()? {
                bail!("unbound exited ({status}): {}", unbound.log());
            }
            bail!("unbound did not answer: {}", unbound.log());
        }
        Ok(unbound)
    }

    /// Asks unbound (RD=1, AD=1 so that it says whether it validated, RFC 6840 §5.7).
    pub fn ask(&self, name: &str, qtype: hickory_proto::rr::RecordType) -> Result<hickory_proto::op::Message> {
        let mut query = dns::query(rand::random(), name, qtype, None)?;
        query[2] |= 0x01; // RD
        query[3] |= 0x20; // AD
        let sock = dns::udp_socket_from(&self.ns, self.address.ip())?;
        dns::parse(&dns::exchange_udp(&sock, self.address, &query)?)
    }

    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.0.join(f)).unwrap_or_default();
        format!("{}{}", read("stderr"), read("log"))
    }
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
