//! Stock resolvers as Debian ships them, run in a namespace in front of the lab's
//! server: unbound (`unbound`) and BIND's named (`named`). Each listens on port 53 of
//! the namespace's loopback; `ask` sends it a recursive question.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{dns, netns, wait_for, TempDir};

pub struct Resolver {
    child: Child,
    pub dir: TempDir,
    /// Where it listens (port 53 of the namespace's loopback).
    pub address: SocketAddr,
    ns: String,
}

impl Resolver {
    /// Runs `command` (made with `netns::command(ns, …)`, so that setup's check sees
    /// the program) with its files in `dir`, stdout and stderr to `dir/stderr`, and
    /// waits until it answers on 127.0.0.1:53 in `ns`.
    pub fn spawn(ns: &str, dir: TempDir, program: &str, mut command: std::process::Command) -> Result<Resolver> {
        netns::ip(&["netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        let log = std::fs::File::create(dir.0.join("stderr"))?;
        let child = command
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {program} (`cargo xtask setup` installs it)"))?;
        let address = SocketAddr::from(([127, 0, 0, 1], 53));
        let mut resolver = Resolver { child, dir, address, ns: ns.to_string() };
        // Ready when it answers at all (a name outside the zone: REFUSED or SERVFAIL).
        let probe = dns::query(1, "ready.invalid", hickory_proto::rr::RecordType::A, None)?;
        let ready = wait_for(Duration::from_secs(10), || {
            let sock = dns::udp_socket_from(&resolver.ns, address.ip()).ok()?;
            dns::exchange_udp(&sock, address, &probe).ok()
        });
        if ready.is_none() {
            if let Some(status) = resolver.child.try_wait()? {
                bail!("{program} exited ({status}): {}", resolver.log());
            }
            bail!("{program} did not answer: {}", resolver.log());
        }
        Ok(resolver)
    }

    /// Asks the resolver (RD=1, AD=1 so that it says whether it validated, RFC 6840 §5.7).
    pub fn ask(&self, name: &str, qtype: hickory_proto::rr::RecordType) -> Result<hickory_proto::op::Message> {
        let mut query = dns::query(rand::random(), name, qtype, None)?;
        query[2] |= 0x01; // RD
        query[3] |= 0x20; // AD
        let sock = dns::udp_socket_from(&self.ns, self.address.ip())?;
        dns::parse(&dns::exchange_udp(&sock, self.address, &query)?)
    }

    /// Its output and its log file (`dir/log`), if it writes one.
    pub fn log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.0.join(f)).unwrap_or_default();
        format!("{}{}", read("stderr"), read("log"))
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// BIND 9.18's named as a resolver in `ns`, asking `server` for `zone` (a static
/// stub) and not validating it. As shipped it sends DO=1 and a COOKIE on every
/// upstream query, minimises QNAMEs (relaxed) and retries over TCP when a server that
/// once sent it a server cookie replies without one.
pub fn named(ns: &str, zone: &str, server: std::net::IpAddr) -> Result<Resolver> {
    let dir = TempDir::new("named")?;
    let d = dir.0.display().to_string();
    std::fs::write(
        dir.0.join("named.conf"),
        format!(
            "options {{\n  directory \"{d}\";\n  pid-file \"{d}/named.pid\";\n  listen-on port 53 {{ 127.0.0.1; }};\n\
             \x20 listen-on-v6 {{ none; }};\n  recursion yes;\n  allow-query {{ any; }};\n  dnssec-validation yes;\n\
             \x20 validate-except {{ \"{zone}\"; }};\n  max-cache-ttl 1;\n  max-ncache-ttl 1;\n}};\n\
             logging {{ channel all {{ file \"{d}/log\"; severity info; }}; category default {{ all; }}; }};\n\
             zone \"{zone}\" {{ type static-stub; server-addresses {{ {server}; }}; }};\n"
        ),
    )?;
    let mut command = netns::command(ns, "named");
    command.args(["-g", "-u", "root", "-c"]).arg(dir.0.join("named.conf"));
    Resolver::spawn(ns, dir, "named", command)
}

/// unbound 1.17 as a validating resolver in `ns`: it trusts `zone`'s key in
/// `trust_anchor` (a BIND `.key` file) and asks `server` for it. Its stock defaults
/// stay: QNAME minimisation, `harden-below-nxdomain`, DO=1 on every query.
pub fn unbound(ns: &str, zone: &str, server: std::net::IpAddr, trust_anchor: &Path) -> Result<Resolver> {
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
    let mut command = netns::command(ns, "unbound");
    command.args(["-d", "-c"]).arg(dir.0.join("unbound.conf"));
    Resolver::spawn(ns, dir, "unbound", command)
}
