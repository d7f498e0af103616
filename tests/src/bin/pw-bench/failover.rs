//! Failover timing, measured the way the peers were: one of three HTTP backends stops
//! (connections refused) or loses its address (SYNs time out); we poll the name every
//! 10 ms and time how long until the dead address has left the answer, and after
//! the backend is back, until it has returned. Same check settings for every server:
//! interval 2 s, timeout 1 s, one failure to drop, one success to restore.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use hickory_proto::rr::RecordType;
use primwatch_tests::{
    backend::{BackendNet, HttpBackend},
    controller::Controller,
    dns,
    lab::{Lab, SERVER_IF},
    netns,
    pdns::{self, PowerDns},
    TempDir,
};

const WEBS: [&str; 3] = ["10.99.1.11", "10.99.1.12", "10.99.1.13"];
const VICTIM: usize = 1;
const TRIALS: usize = 3;

#[derive(Clone, Copy)]
enum Failure {
    Refused,
    SynTimeout,
}

struct Bed {
    backends: Vec<HttpBackend>,
    net: BackendNet,
    lab: Lab,
}

impl Bed {
    fn answers(&self) -> Option<BTreeSet<String>> {
        let sock = dns::udp_socket(&self.lab.client_ns, false).ok()?;
        sock.set_read_timeout(Some(Duration::from_millis(300))).ok()?;
        let server = SocketAddr::new(self.lab.server_addr(false), 53);
        let query = dns::query(rand_id(), "www.example.test", RecordType::A, None).ok()?;
        let reply = dns::exchange_udp(&sock, server, &query).ok()?;
        Some(dns::addresses(&dns::parse(&reply).ok()?).iter().map(|a| a.to_string()).collect())
    }

    /// Polls every 10 ms until `want` holds for the answer; the time it took.
    fn until(&self, within: Duration, want: impl Fn(&BTreeSet<String>) -> bool) -> Option<Duration> {
        let started = Instant::now();
        while started.elapsed() < within {
            if self.answers().is_some_and(|a| want(&a)) {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn fail(&mut self, how: Failure) -> Result<()> {
        match how {
            Failure::Refused => self.backends[VICTIM].stop(),
            Failure::SynTimeout => self.net.remove_address(WEBS[VICTIM].parse()?)?,
        }
        Ok(())
    }

    fn heal(&mut self, how: Failure) -> Result<()> {
        match how {
            Failure::Refused => self.backends[VICTIM].resume(),
            Failure::SynTimeout => self.net.add_address(WEBS[VICTIM].parse()?),
        }
    }
}

fn rand_id() -> u16 {
    (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() & 0xffff) as u16
}

/// (failure mode, drop seconds per trial, restore seconds per trial)
type Timings = Vec<(&'static str, Vec<Option<f64>>, Vec<Option<f64>>)>;

fn measure(bed: &mut Bed) -> Result<Timings> {
    let victim = WEBS[VICTIM].to_string();
    if bed.until(Duration::from_secs(20), |a| a.len() == 3).is_none() {
        bail!("the name never answered all three backends (last: {:?})", bed.answers());
    }
    let mut out = Vec::new();
    for (label, how) in [("refused", Failure::Refused), ("SYN timeout", Failure::SynTimeout)] {
        let (mut drops, mut restores) = (Vec::new(), Vec::new());
        for trial in 0..TRIALS {
            // Start each trial at a different phase of the check interval.
            std::thread::sleep(Duration::from_millis(300 + 700 * trial as u64));
            bed.fail(how)?;
            drops.push(
                bed.until(Duration::from_secs(15), |a| !a.contains(&victim) && !a.is_empty()).map(|d| d.as_secs_f64()),
            );
            bed.heal(how)?;
            restores.push(bed.until(Duration::from_secs(15), |a| a.contains(&victim)).map(|d| d.as_secs_f64()));
        }
        out.push((label, drops, restores));
    }
    Ok(out)
}

fn zone(lab: &Lab, www: &str) -> String {
    pdns::zone("example.test", lab.server_addr(false), &[www])
}

pub fn run() -> Result<()> {
    println!(
        "\n== Failover: interval 2 s, timeout 1 s, 1 failure to drop, 1 success to restore; {TRIALS} trials each =="
    );
    let lab = Lab::new()?;
    let net = BackendNet::new(&lab)?;
    let backends = net.serve_http(WEBS.iter().map(|ip| ip.parse::<IpAddr>().unwrap()))?;
    let mut bed = Bed { backends, net, lab };
    let mut results: Vec<(&str, Result<Timings>)> = Vec::new();

    {
        // PowerDNS answers what XDP passes; its zone has nothing for www.
        let _pdns = PowerDns::start(
            &bed.lab.server_ns,
            &[bed.lab.server_addr(false)],
            "example.test",
            &zone(&bed.lab, "other 10 IN A 192.0.2.99"),
        )?;
        let config = format!(
            r#"
[server]
interfaces = ["{SERVER_IF}"]
xdp_mode = "skb"
pin_dir = "{{pin_dir}}"
[checks.web]
type = "http"
host = "www.example.test"
interval = "2s"
timeout = "1s"
rise = 1
fall = 1
[targets.web1]
address = "{}"
checks = ["web"]
[targets.web2]
address = "{}"
checks = ["web"]
[targets.web3]
address = "{}"
checks = ["web"]
[groups.web]
members = ["web1", "web2", "web3"]
policy = "all"
[names."www.example.test"]
ttl = 10
groups = ["web"]
"#,
            WEBS[0], WEBS[1], WEBS[2]
        );
        let _controller = Controller::start(&bed.lab.server_ns, &config)?;
        results.push(("primwatch", measure(&mut bed)));
    }
    {
        let lua = format!(
            "www 10 IN LUA A \"ifurlup('http://www.example.test/', {{{{'{}', '{}', '{}'}}}}, {{selector='all', timeout='1'}})\"",
            WEBS[0], WEBS[1], WEBS[2]
        );
        // No packet cache, so the measurement is the health check's, not the cache's.
        let conf = "enable-lua-records=yes\nlua-health-checks-interval=2\ncache-ttl=0\nquery-cache-ttl=0\nnegquery-cache-ttl=0";
        let _pdns = PowerDns::start_with(
            &bed.lab.server_ns,
            &[bed.lab.server_addr(false)],
            "example.test",
            &zone(&bed.lab, &lua),
            conf,
        )?;
        results.push(("PowerDNS 4.7 LUA ifurlup", measure(&mut bed)));
    }
    {
        let _gdnsd = Gdnsd::start(&bed.lab)?;
        results.push(("gdnsd 3.8 http_status", measure(&mut bed)));
    }

    println!("{:<26} {:<12} {:>28} {:>28}", "server", "failure", "drop s (each trial)", "restore s (each trial)");
    for (server, timings) in &results {
        match timings {
            Ok(rows) => {
                for (mode, drops, restores) in rows {
                    let fmt = |v: &Vec<Option<f64>>| {
                        v.iter().map(|d| d.map_or("never".into(), |s| format!("{s:.2}"))).collect::<Vec<_>>().join(" ")
                    };
                    println!("{server:<26} {mode:<12} {:>28} {:>28}", fmt(drops), fmt(restores));
                }
            }
            Err(e) => println!("{server:<26} not measured: {e:#}"),
        }
    }
    println!(
        "(targets: drop within fall × interval + timeout + 50 ms = 3.05 s, restore within\n\
         rise × interval + 50 ms = 2.05 s; a dropped address must also be gone from replies,\n\
         so PowerDNS runs without its packet cache here)"
    );
    Ok(())
}

struct Gdnsd {
    child: Child,
    _dir: TempDir,
}

impl Gdnsd {
    fn start(lab: &Lab) -> Result<Gdnsd> {
        let dir = TempDir::new("gdnsd")?;
        std::fs::create_dir_all(dir.0.join("zones"))?;
        std::fs::write(
            dir.0.join("config"),
            format!(
                "options => {{ listen => [ {} ] }}\n\
                 service_types => {{\n  web => {{ plugin => http_status, url_path => \"/\", vhost => \"www.example.test\", port => 80,\n\
                 interval => 2, timeout => 1, ok_thresh => 1, down_thresh => 1, up_thresh => 1 }}\n}}\n\
                 plugins => {{ multifo => {{ www => {{ service_types => [ web ], addrs_v4 => {{ a => {}, b => {}, c => {} }} }} }} }}\n",
                lab.server_addr(false),
                WEBS[0],
                WEBS[1],
                WEBS[2]
            ),
        )?;
        std::fs::write(
            dir.0.join("zones/example.test"),
            format!(
                "$TTL 900\n@ SOA ns1 hostmaster 1 7200 1800 259200 900\n@ NS ns1\nns1 A {}\nwww 10 DYNA multifo!www\n",
                lab.server_addr(false)
            ),
        )?;
        let log = std::fs::File::create(dir.0.join("log"))?;
        let child = netns::command(&lab.server_ns, "gdnsd")
            .arg("-c")
            .arg(&dir.0)
            .arg("start")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting gdnsd (package gdnsd)")?;
        Ok(Gdnsd { child, _dir: dir })
    }
}

impl Drop for Gdnsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
