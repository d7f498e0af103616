//! A whole world for health tests: the lab, a backend namespace with three HTTP
//! backends, PowerDNS (with its own marker records) and primwatch checking them.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use hickory_proto::rr::RecordType;

use crate::{
    backend::{BackendNet, HttpBackend},
    controller::Controller,
    dns,
    lab::{Lab, SERVER_IF},
    pdns::{self, PowerDns},
    wait_for,
};

/// Two sites for the world's backends: Tokyo (web1, web2) primary, Osaka (web3)
/// backup, both answering with every eligible member. Names are added by each test.
pub const SITE_GROUPS: &str = r#"
[groups.tokyo]
members = ["web1", "web2"]
priority = 100
policy = "all"
[groups.osaka]
members = ["web3"]
priority = 50
policy = "all"
"#;

pub const WEB1: &str = "10.99.1.11";
pub const WEB2: &str = "10.99.1.12";
pub const WEB3: &str = "10.99.1.13";

pub struct World {
    pub controller: Controller,
    pub pdns: PowerDns,
    pub backends: Vec<HttpBackend>,
    pub net: BackendNet,
    pub lab: Lab,
    /// The PowerDNS remote backend socket, when PowerDNS asks primwatch.
    pub powerdns_socket: Option<std::path::PathBuf>,
}

/// The lab's check and its three targets: every world's config has them, and a fleet
/// pushes them (`fleet push`).
pub fn shared_tables() -> String {
    format!(
        r#"
[checks.http]
type = "http"
path = "/health"
host = "www.example.test"
ok_status = [200]
interval = "200ms"
timeout = "150ms"
rise = 1
fall = 1

[targets.web1]
address = "{WEB1}"
checks = ["http"]
[targets.web2]
address = "{WEB2}"
checks = ["http"]
[targets.web3]
address = "{WEB3}"
checks = ["http"]
"#
    )
}

/// PowerDNS's own record in the zone, so replies show which path produced them.
pub const PDNS_PASS: &str = "192.0.2.250";

/// The lab, three HTTP backends, PowerDNS (with its own marker records) and primwatch.
pub fn world(body: &str) -> World {
    world_with(body, false)
}

/// As `world`; with `remote_backend`, PowerDNS asks primwatch (`launch=bind,remote`,
/// caches off) for the names primwatch manages, as the README's production setup does.
pub fn world_with(body: &str, remote_backend: bool) -> World {
    world_custom(body, remote_backend, "", None)
}

/// As `world_with`, with extra `[powerdns]` keys (`powerdns_keys`, lines) and the
/// controller under an RLIMIT_NOFILE of `open_file_limit`, if given.
pub fn world_custom(body: &str, remote_backend: bool, powerdns_keys: &str, open_file_limit: Option<u64>) -> World {
    world_options(body, &Options { remote_backend, powerdns_keys, open_file_limit, ..Options::default() })
}

/// How `world_options` sets the world up beyond the config body.
#[derive(Default)]
pub struct Options<'a> {
    /// PowerDNS asks primwatch (`launch=bind,remote`).
    pub remote_backend: bool,
    /// Extra `[powerdns]` lines.
    pub powerdns_keys: &'a str,
    /// Extra `[server]` lines.
    pub server_keys: &'a str,
    pub open_file_limit: Option<u64>,
    /// The controller's log reader closes the pipe after the first 100 bytes.
    pub log_reader_quits: bool,
    /// Extra pdns.conf lines.
    pub pdns_conf: &'a str,
    /// PowerDNS signs example.test live with this key (a BIND `.private` file).
    pub pdns_dnssec_key: Option<&'a std::path::Path>,
    /// PowerDNS's packet cache on (`cache-ttl=20`), and primwatch purging it through
    /// PowerDNS's control socket (`[powerdns] control_socket`), as examples/pdns.conf.
    pub pdns_packet_cache: bool,
}

pub fn world_options(body: &str, options: &Options) -> World {
    let Options {
        remote_backend,
        powerdns_keys,
        server_keys,
        open_file_limit,
        log_reader_quits,
        pdns_conf: extra_pdns_conf,
        pdns_dnssec_key,
        pdns_packet_cache,
    } = *options;
    let pdns_dir = crate::TempDir::new("pdns").unwrap();
    let (powerdns_keys, extra_pdns_conf) = if pdns_packet_cache {
        (
            format!("control_socket = \"{}\"\n{powerdns_keys}", PowerDns::control_socket_in(&pdns_dir.0).display()),
            format!("cache-ttl=20\n{extra_pdns_conf}"),
        )
    } else {
        (powerdns_keys.to_string(), extra_pdns_conf.to_string())
    };
    let lab = Lab::new().unwrap();
    let net = BackendNet::new(&lab).unwrap();
    let backends = net.serve_http([WEB1, WEB2, WEB3].map(|ip| ip.parse().unwrap())).unwrap();
    let zone = pdns::zone("example.test", lab.server_addr(false), &[&format!("pass 30 IN A {PDNS_PASS}")]);
    let socket = std::env::temp_dir().join(format!("{}.sock", crate::unique("pw-pdns")));
    let (body, pdns_conf) = if remote_backend {
        (
            format!("[powerdns]\nsocket = \"{}\"\n{powerdns_keys}\n{body}", socket.display()),
            format!(
                "launch=bind,remote\nremote-connection-string=unix:path={}\n\
                 cache-ttl=0\nquery-cache-ttl=0\nnegquery-cache-ttl=0\nedns-subnet-processing=yes\n",
                socket.display()
            ),
        )
    } else {
        (body.to_string(), String::new())
    };
    let shared = shared_tables();
    let config = format!(
        r#"
[server]
interfaces = ["{SERVER_IF}"]
xdp_mode = "skb"
pin_dir = "{{pin_dir}}"
{server_keys}

{shared}

{body}
"#
    );
    let pdns_conf = format!("{pdns_conf}{extra_pdns_conf}");
    // The controller first: PowerDNS connects to its socket when it starts.
    let controller = Controller::start_with(&lab.server_ns, &config, open_file_limit, log_reader_quits).unwrap();
    let pdns = PowerDns::start_in(
        pdns_dir,
        &lab.server_ns,
        &[lab.server_addr(false)],
        "example.test",
        &zone,
        &pdns_conf,
        pdns_dnssec_key,
    )
    .unwrap();
    World { controller, pdns, backends, net, lab, powerdns_socket: remote_backend.then_some(socket) }
}

impl World {
    pub fn controller_config_path(&self) -> std::path::PathBuf {
        self.controller.config_path().to_path_buf()
    }

    pub fn answers(&self, name: &str) -> BTreeSet<String> {
        self.answers_from(name, self.lab.client_addr(false))
    }

    /// The A answers for a query sent from `source` (a client address, v4 or v6).
    pub fn answers_from(&self, name: &str, source: IpAddr) -> BTreeSet<String> {
        let sock = dns::udp_socket_from(&self.lab.client_ns, source).unwrap();
        let server = SocketAddr::new(self.lab.server_addr(source.is_ipv6()), 53);
        // Like any DNS client, try again if a datagram is lost (a fresh source address
        // may still be resolving its neighbour); three losses in a row fail the test.
        let mut last_error = None;
        for id in 1..=3u16 {
            match dns::exchange_udp(&sock, server, &dns::query(id, name, RecordType::A, None).unwrap()) {
                Ok(reply) => {
                    return dns::addresses(&dns::parse(&reply).unwrap()).iter().map(|a| a.to_string()).collect()
                }
                Err(e) => last_error = Some(e),
            }
        }
        panic!("{name} from {source}: no reply in three tries: {:?}", last_error);
    }

    /// Waits until `name` answers exactly `expected`; returns how long that took.
    pub fn expect(&self, name: &str, expected: &[&str], within: Duration) -> Duration {
        let want: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        let started = Instant::now();
        let mut last = BTreeSet::new();
        let ok = wait_for(within, || {
            last = self.answers(name);
            (last == want).then_some(())
        });
        assert!(ok.is_some(), "{name}: wanted {want:?}, still {last:?} after {within:?}\n{}", self.controller.log());
        started.elapsed()
    }
}

/// Queries sent back to back from the client, each waiting for its reply, sorted by
/// which of the accepted answer sets came back; anything else (a timeout, a reply from
/// the DNS server behind, a set that mixes) is recorded as bad.
pub struct SteadyLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    client: std::thread::JoinHandle<LoadResult>,
}

#[derive(Debug)]
pub struct LoadResult {
    pub sent: u32,
    /// Replies per accepted set, in the order given.
    pub per_set: Vec<u32>,
    /// Queries without a reply (timeouts, errors).
    pub lost: u32,
    /// Replies with none of the accepted sets (mixed, or from the DNS server behind).
    pub wrong: u32,
    /// The first few of either, described.
    pub bad: Vec<String>,
}

impl LoadResult {
    pub fn assert_clean(&self) {
        assert!(
            self.lost == 0 && self.wrong == 0,
            "of {} queries {} lost, {} wrong: {:?}",
            self.sent,
            self.lost,
            self.wrong,
            &self.bad[..self.bad.len().min(5)]
        );
    }
}

pub fn set(addresses: &[&str]) -> BTreeSet<String> {
    addresses.iter().map(|s| s.to_string()).collect()
}

impl World {
    pub fn steady_load(&self, name: &str, accepted: Vec<BTreeSet<String>>) -> SteadyLoad {
        use std::sync::atomic::Ordering;
        let sock = dns::udp_socket(&self.lab.client_ns, false).unwrap();
        let server = SocketAddr::new(self.lab.server_addr(false), 53);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let name = name.to_string();
        let client = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut result =
                    LoadResult { sent: 0, per_set: vec![0; accepted.len()], lost: 0, wrong: 0, bad: Vec::new() };
                while !stop.load(Ordering::SeqCst) {
                    result.sent += 1;
                    let id = result.sent as u16;
                    let query = dns::query(id, &name, RecordType::A, None).unwrap();
                    match dns::exchange_udp(&sock, server, &query) {
                        Ok(reply) => {
                            let msg = dns::parse(&reply).unwrap();
                            let got: BTreeSet<String> = dns::addresses(&msg).iter().map(|a| a.to_string()).collect();
                            match accepted.iter().position(|s| *s == got) {
                                Some(i) => result.per_set[i] += 1,
                                None => {
                                    result.wrong += 1;
                                    if result.bad.len() < 20 {
                                        result.bad.push(format!("reply {id}: {got:?} rcode {:?}", msg.response_code()));
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            result.lost += 1;
                            if result.bad.len() < 20 {
                                result.bad.push(format!("query {id}: {e:#}"));
                            }
                        }
                    }
                }
                result
            })
        };
        SteadyLoad { stop, client }
    }
}

impl SteadyLoad {
    pub fn finish(self) -> LoadResult {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.client.join().unwrap()
    }
}
