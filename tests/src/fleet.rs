//! A fleet lab: the server namespaces of several labs joined by a bridge (10.98.0.0/24),
//! and a real etcd cluster (Debian's etcd-server), one member in each of them, as the
//! README's deployment picture has it. Everything is removed on drop.

use std::{
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    netns, unique, wait_for,
    world::{world_with, World},
    TempDir,
};

/// The `[fleet]` table of `node` in a three-node lab fleet under `prefix`.
pub fn fleet_table(prefix: &str, node: &str) -> String {
    let endpoints: Vec<String> = (0..3).map(|i| format!("\"http://{}:2379\"", FleetNet::address(i))).collect();
    format!("[fleet]\netcd = [{}]\nprefix = \"{prefix}\"\nnode = \"{node}\"\n", endpoints.join(", "))
}

/// Whether `w`'s controller says it is connected to etcd.
pub fn connected(w: &World) -> bool {
    w.controller.ctl(&["status"]).ok().is_some_and(|s| s["status"]["fleet"]["connected"] == true)
}

/// Waits until no node of `worlds` says it is connected to etcd (it notices a lost etcd
/// within seconds); panics, saying `why`, after 15 s.
pub fn wait_all_disconnected(worlds: &[World], why: &str) {
    let cut_off = wait_for(Duration::from_secs(15), || (!worlds.iter().any(connected)).then_some(()));
    assert!(cut_off.is_some(), "a node still claims to be connected {why}");
}

/// Three full nodes "a", "b", "c" (each a `World` whose config body is `body(node)`),
/// their fleet network and an etcd member on each; returns once every node is
/// connected to etcd.
pub fn three_nodes(body: impl Fn(&str) -> String) -> Result<(Vec<World>, FleetNet, Etcd)> {
    let worlds: Vec<World> = ["a", "b", "c"].iter().map(|n| world_with(&body(n), false)).collect();
    let namespaces: Vec<&str> = worlds.iter().map(|w| w.lab.server_ns.as_str()).collect();
    let net = FleetNet::new(&namespaces)?;
    let etcd = Etcd::start(&net)?;
    if wait_for(Duration::from_secs(20), || worlds.iter().all(connected).then_some(())).is_none() {
        bail!("nodes did not connect to etcd: {}", etcd.log());
    }
    Ok((worlds, net, etcd))
}

/// The fleet network: a bridge namespace and one veth per server namespace.
pub struct FleetNet {
    bridge_ns: String,
    /// The server namespaces, in node order; node i has 10.98.0.(i+1).
    pub members: Vec<String>,
}

impl FleetNet {
    pub fn new(server_namespaces: &[&str]) -> Result<FleetNet> {
        let bridge_ns = unique("pwfl");
        netns::ip(&["netns", "add", &bridge_ns])?;
        let net = FleetNet {
            bridge_ns: bridge_ns.clone(),
            members: server_namespaces.iter().map(|s| s.to_string()).collect(),
        };
        let in_bridge = |args: &[&str]| netns::ip(&[&["-n", bridge_ns.as_str()][..], args].concat());
        in_bridge(&["link", "add", "br0", "type", "bridge"])?;
        in_bridge(&["link", "set", "br0", "up"])?;
        for (i, ns) in server_namespaces.iter().enumerate() {
            let outer = format!("fl{i}");
            netns::ip(&[
                "-n", &bridge_ns, "link", "add", &outer, "type", "veth", "peer", "name", "fleet0", "netns", ns,
            ])?;
            in_bridge(&["link", "set", &outer, "master", "br0"])?;
            in_bridge(&["link", "set", &outer, "up"])?;
            netns::ip(&["-n", ns, "addr", "add", &format!("{}/24", FleetNet::address(i)), "dev", "fleet0"])?;
            netns::ip(&["-n", ns, "link", "set", "fleet0", "up"])?;
            netns::ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    /// Node `i`'s address on the fleet network.
    pub fn address(i: usize) -> String {
        format!("10.98.0.{}", i + 1)
    }

    /// The etcd client URLs of a cluster with a member on every node.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| format!("http://{}:2379", FleetNet::address(i))).collect()
    }
}

impl Drop for FleetNet {
    fn drop(&mut self) {
        // Deleting the bridge namespace deletes the veth pairs with it.
        let _ = netns::ip(&["netns", "del", &self.bridge_ns]);
    }
}

/// An etcd cluster: one member per node of a `FleetNet`.
pub struct Etcd {
    members: Vec<Option<Child>>,
    namespaces: Vec<String>,
    dir: TempDir,
}

impl Etcd {
    /// Starts a member on every node and waits until the cluster is healthy.
    pub fn start(net: &FleetNet) -> Result<Etcd> {
        let dir = TempDir::new("pw-etcd")?;
        let mut etcd = Etcd { members: Vec::new(), namespaces: net.members.clone(), dir };
        for i in 0..net.members.len() {
            let child = etcd.spawn(i)?;
            etcd.members.push(Some(child));
        }
        etcd.wait_healthy(Duration::from_secs(20))?;
        Ok(etcd)
    }

    fn spawn(&self, i: usize) -> Result<Child> {
        let cluster: Vec<String> =
            (0..self.namespaces.len()).map(|j| format!("m{j}=http://{}:2380", FleetNet::address(j))).collect();
        let me = FleetNet::address(i);
        let log = std::fs::File::create(self.dir.0.join(format!("m{i}.log")))?;
        netns::command(&self.namespaces[i], "etcd")
            .args(["--name", &format!("m{i}")])
            .arg("--data-dir")
            .arg(self.dir.0.join(format!("m{i}")))
            .args(["--listen-client-urls", &format!("http://{me}:2379")])
            .args(["--advertise-client-urls", &format!("http://{me}:2379")])
            .args(["--listen-peer-urls", &format!("http://{me}:2380")])
            .args(["--initial-advertise-peer-urls", &format!("http://{me}:2380")])
            .args(["--initial-cluster", &cluster.join(",")])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", "primwatch-lab"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting etcd (etcd-server; `cargo xtask setup` installs it)")
    }

    /// Waits until every running member reports healthy.
    pub fn wait_healthy(&self, within: Duration) -> Result<()> {
        let running: Vec<usize> = (0..self.members.len()).filter(|i| self.members[*i].is_some()).collect();
        let endpoints: Vec<String> = running.iter().map(|i| format!("http://{}:2379", FleetNet::address(*i))).collect();
        let ns = &self.namespaces[running[0]];
        let healthy = wait_for(within, || {
            let out = netns::command(ns, "etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &endpoints.join(","), "endpoint", "health"])
                .output()
                .ok()?;
            out.status.success().then_some(())
        });
        if healthy.is_none() {
            bail!("etcd not healthy: {}", self.log());
        }
        Ok(())
    }

    /// Kills member `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again from its data directory.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.kill(i);
        self.members[i] = Some(self.spawn(i)?);
        Ok(())
    }

    /// `etcdctl get --prefix KEY` from node 0: (key, value) pairs.
    pub fn get_prefix(&self, key: &str) -> Result<Vec<(String, String)>> {
        let endpoints: Vec<String> = (0..self.members.len())
            .filter(|i| self.members[*i].is_some())
            .map(|i| format!("http://{}:2379", FleetNet::address(i)))
            .collect();
        let out = netns::command(&self.namespaces[0], "etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &endpoints.join(","), "get", "--prefix", key])
            .output()?;
        if !out.status.success() {
            bail!("etcdctl get: {}", String::from_utf8_lossy(&out.stderr));
        }
        let text = String::from_utf8(out.stdout)?;
        let lines: Vec<&str> = text.lines().collect();
        Ok(lines.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].to_string(), c[1].to_string())).collect())
    }

    /// The cluster's revision (one more for every write), from node 0's member.
    pub fn revision(&self) -> Result<i64> {
        let out = netns::command(&self.namespaces[0], "etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &format!("http://{}:2379", FleetNet::address(0)), "endpoint", "status", "-w", "json"])
            .output()?;
        let status: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("etcdctl endpoint status: {}", String::from_utf8_lossy(&out.stderr)))?;
        status[0]["Status"]["header"]["revision"].as_i64().context("no revision in etcdctl's status")
    }

    /// `etcdctl put KEY VALUE` from node 0.
    pub fn put(&self, key: &str, value: &str) -> Result<()> {
        let out = netns::command(&self.namespaces[0], "etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &format!("http://{}:2379", FleetNet::address(0)), "put", key, value])
            .output()?;
        if !out.status.success() {
            bail!("etcdctl put: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    /// `etcdctl put KEY` from node 0 with `value` on stdin (for values longer than a
    /// command line may carry).
    pub fn put_bytes(&self, key: &str, value: &[u8]) -> Result<()> {
        self.etcdctl_stdin(&["put", key], value)
    }

    /// Many `put KEY VALUE` in transactions of 100 (etcd's default limit is 128 ops).
    pub fn put_many(&self, pairs: &[(String, String)]) -> Result<()> {
        for chunk in pairs.chunks(100) {
            let ops: String = chunk.iter().map(|(k, v)| format!("put {k} {v}\n")).collect();
            self.etcdctl_stdin(&["txn"], format!("\n{ops}\n\n").as_bytes())?;
        }
        Ok(())
    }

    fn etcdctl_stdin(&self, args: &[&str], input: &[u8]) -> Result<()> {
        use std::io::Write as _;
        let mut child = netns::command(&self.namespaces[0], "etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &format!("http://{}:2379", FleetNet::address(0))])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().context("stdin")?.write_all(input)?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    pub fn log(&self) -> String {
        (0..self.namespaces.len())
            .map(|i| std::fs::read_to_string(self.dir.0.join(format!("m{i}.log"))).unwrap_or_default())
            .map(|l| l.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
            .collect::<Vec<_>>()
            .join("\n---\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// A CA, an etcd server certificate for 127.0.0.1, a node's client certificate signed
/// by that CA, and a second CA that signed nothing here: made by `openssl` (P-256).
pub struct FleetCertificates {
    pub dir: TempDir,
}

impl FleetCertificates {
    pub fn generate() -> Result<FleetCertificates> {
        let dir = TempDir::new("pw-fleet-tls")?;
        let run = |args: &[&str]| -> Result<()> {
            let out = std::process::Command::new("openssl").args(args).current_dir(&dir.0).output()?;
            if !out.status.success() {
                bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        };
        let new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
        for ca in ["ca", "other-ca"] {
            let (key, pem, subject) =
                (format!("{ca}-key.pem"), format!("{ca}.pem"), format!("/CN=primwatch test {ca}"));
            run(&[&["req", "-x509"], &new_key[..], &["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subject]]
                .concat())?;
        }
        for (name, usage) in [
            ("etcd", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
            ("node", "extendedKeyUsage=clientAuth"),
        ] {
            let (key, csr, pem, ext) =
                (format!("{name}-key.pem"), format!("{name}.csr"), format!("{name}.pem"), format!("{name}.ext"));
            std::fs::write(dir.0.join(&ext), usage)?;
            run(&[&["req"], &new_key[..], &["-keyout", &key, "-out", &csr, "-subj", &format!("/CN={name}")]].concat())?;
            run(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                &ext,
            ])?;
        }
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.0.join("node-key.pem"), std::fs::Permissions::from_mode(0o600))?;
        Ok(FleetCertificates { dir })
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.0.join(file).display().to_string()
    }
}

/// One etcd member serving https on 127.0.0.1:23790 in namespace `ns`; with
/// `client_cert_auth`, it requires a client certificate signed by the fleet's CA.
pub struct TlsEtcd {
    child: Child,
    ns: String,
    dir: TempDir,
}

impl TlsEtcd {
    pub const ENDPOINT: &str = "https://127.0.0.1:23790";

    pub fn start(ns: &str, certs: &FleetCertificates, client_cert_auth: bool) -> Result<TlsEtcd> {
        let dir = TempDir::new("pw-etcd-tls")?;
        let log = std::fs::File::create(dir.0.join("log"))?;
        let child = netns::command(ns, "etcd")
            .args(["--name", "m0"])
            .arg("--data-dir")
            .arg(dir.0.join("data"))
            .args(["--listen-client-urls", TlsEtcd::ENDPOINT, "--advertise-client-urls", TlsEtcd::ENDPOINT])
            .args(["--listen-peer-urls", "http://127.0.0.1:23800"])
            .args(["--initial-advertise-peer-urls", "http://127.0.0.1:23800"])
            .args(["--initial-cluster", "m0=http://127.0.0.1:23800"])
            .args(["--cert-file", &certs.path("etcd.pem"), "--key-file", &certs.path("etcd-key.pem")])
            // etcd asks for a client certificate whenever it has a CA to check one with.
            .args(if client_cert_auth {
                vec!["--client-cert-auth".to_string(), "--trusted-ca-file".into(), certs.path("ca.pem")]
            } else {
                vec![]
            })
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting etcd")?;
        let etcd = TlsEtcd { child, ns: ns.to_string(), dir };
        if wait_for(Duration::from_secs(20), || etcd.etcdctl(certs, &["endpoint", "health"]).ok()).is_none() {
            bail!("etcd (TLS) not healthy: {}", std::fs::read_to_string(etcd.dir.0.join("log")).unwrap_or_default());
        }
        Ok(etcd)
    }

    /// `etcdctl ARGS` with the node's client certificate: its stdout.
    pub fn etcdctl(&self, certs: &FleetCertificates, args: &[&str]) -> Result<String> {
        let out = netns::command(&self.ns, "etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", TlsEtcd::ENDPOINT, "--cacert", &certs.path("ca.pem")])
            .args(["--cert", &certs.path("node.pem"), "--key", &certs.path("node-key.pem")])
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!("etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
