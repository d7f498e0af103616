//! A real PowerDNS (Debian's pdns-server, bind backend) serving a zone in a namespace.

use std::{
    net::IpAddr,
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{netns, wait_for, TempDir};

pub struct PowerDns {
    child: Child,
    dir: TempDir,
}

/// Zone file text for `origin` with SOA and NS, plus `records` (lines relative to the origin).
pub fn zone(origin: &str, ns_addr: IpAddr, records: &[&str]) -> String {
    let mut text = format!(
        "$ORIGIN {origin}.\n$TTL 300\n\
         @ IN SOA ns1 hostmaster 1 3600 600 86400 60\n\
         @ IN NS ns1\n\
         ns1 IN {} {ns_addr}\n",
        if ns_addr.is_ipv6() { "AAAA" } else { "A" }
    );
    for r in records {
        text.push_str(r);
        text.push('\n');
    }
    text
}

impl PowerDns {
    /// Starts pdns_server in `ns` on port 53 of `listen`, serving `zone_text` for `origin`.
    pub fn start(ns: &str, listen: &[IpAddr], origin: &str, zone_text: &str) -> Result<PowerDns> {
        PowerDns::start_with(ns, listen, origin, zone_text, "")
    }

    /// As `start`, with extra pdns.conf lines (e.g. to enable LUA records).
    pub fn start_with(
        ns: &str,
        listen: &[IpAddr],
        origin: &str,
        zone_text: &str,
        extra_conf: &str,
    ) -> Result<PowerDns> {
        PowerDns::start_signed(ns, listen, origin, zone_text, extra_conf, None)
    }

    /// As `start_with`; with `dnssec_key` (a BIND `.private` file) the zone is signed
    /// live with that key, as README's DNSSEC section sets PowerDNS up: the bind
    /// backend's DNSSEC database, the key imported as the zone's one key (a CSK), NSEC3
    /// in narrow mode (no iterations, no salt, RFC 9276).
    pub fn start_signed(
        ns: &str,
        listen: &[IpAddr],
        origin: &str,
        zone_text: &str,
        extra_conf: &str,
        dnssec_key: Option<&std::path::Path>,
    ) -> Result<PowerDns> {
        PowerDns::start_in(TempDir::new("pdns")?, ns, listen, origin, zone_text, extra_conf, dnssec_key)
    }

    /// As `start_signed`, with its files (and its control socket, `control_socket_in`)
    /// in `dir`.
    pub fn start_in(
        dir: TempDir,
        ns: &str,
        listen: &[IpAddr],
        origin: &str,
        zone_text: &str,
        extra_conf: &str,
        dnssec_key: Option<&std::path::Path>,
    ) -> Result<PowerDns> {
        let d = dir.0.display().to_string();
        std::fs::write(dir.0.join("zone"), zone_text)?;
        std::fs::write(
            dir.0.join("named.conf"),
            format!("zone \"{origin}\" {{ type master; file \"{d}/zone\"; }};\n"),
        )?;
        let addresses: Vec<String> = listen.iter().map(|a| a.to_string()).collect();
        std::fs::write(
            dir.0.join("pdns.conf"),
            format!(
                "launch=bind\nbind-config={d}/named.conf\nlocal-address={}\nlocal-port=53\n\
                 socket-dir={d}\nguardian=no\ndaemon=no\ndisable-syslog=yes\nwrite-pid=no\n\
                 loglevel=4\nsetuid=\nsetgid=\n{extra_conf}\n",
                addresses.join(",")
            ),
        )?;
        if let Some(key) = dnssec_key {
            let mut conf = std::fs::OpenOptions::new().append(true).open(dir.0.join("pdns.conf"))?;
            std::io::Write::write_all(
                &mut conf,
                format!(
                    "bind-dnssec-db={d}/dnssec.db
"
                )
                .as_bytes(),
            )?;
            let pdnsutil = |args: &[&str]| -> Result<()> {
                let out =
                    std::process::Command::new("pdnsutil").arg(format!("--config-dir={d}")).args(args).output()?;
                if !out.status.success() {
                    bail!("pdnsutil {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                }
                Ok(())
            };
            pdnsutil(&["create-bind-db", &format!("{d}/dnssec.db")])?;
            pdnsutil(&["import-zone-key", origin, &key.display().to_string(), "ksk", "active", "published"])?;
            pdnsutil(&["set-nsec3", origin, "1 0 0 -", "narrow"])?;
        }
        let log = std::fs::File::create(dir.0.join("log"))?;
        let child = netns::command(ns, "pdns_server")
            .arg(format!("--config-dir={d}"))
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting pdns_server (is pdns-server installed? `cargo xtask setup`)")?;
        let mut pdns = PowerDns { child, dir };
        // Ready when the control socket answers.
        if wait_for(Duration::from_secs(10), || pdns.control(&["rping"]).ok()).is_none() {
            if let Some(status) = pdns.child.try_wait()? {
                bail!("pdns_server exited ({status}): {}", pdns.log());
            }
            bail!("pdns_server did not become ready: {}", pdns.log());
        }
        Ok(pdns)
    }

    /// Where PowerDNS started in `dir` puts its control socket (`pdns_control`'s).
    pub fn control_socket_in(dir: &std::path::Path) -> std::path::PathBuf {
        dir.join("pdns.controlsocket")
    }

    /// Replaces the zone file of `origin` and has PowerDNS load it at once.
    pub fn replace_zone(&self, origin: &str, zone_text: &str) -> Result<()> {
        std::fs::write(self.dir.0.join("zone"), zone_text)?;
        let reply = self.control(&["bind-reload-now", origin])?;
        if !reply.contains("parsed into memory") {
            bail!("bind-reload-now {origin}: {reply}");
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("log")).unwrap_or_default()
    }

    fn control(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new("pdns_control")
            .arg(format!("--socket-dir={}", self.dir.0.display()))
            .arg(format!("--config-dir={}", self.dir.0.display()))
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("pdns_control {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// A PowerDNS statistic, e.g. "udp-queries" or "tcp-queries".
    pub fn stat(&self, name: &str) -> Result<u64> {
        let text = self.control(&["show", name])?;
        text.parse().with_context(|| format!("pdns stat {name}: {text:?}"))
    }

    /// Stops PowerDNS (the process this harness started, by its pid).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// UDP + TCP queries PowerDNS has received.
    pub fn queries(&self) -> Result<u64> {
        Ok(self.stat("udp-queries")? + self.stat("tcp-queries")?)
    }
}

impl Drop for PowerDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
