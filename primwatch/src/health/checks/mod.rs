//! Stage 2: health checks. One module per probe (`tcp`, `http`, `icmp`, `exec`), each
//! behind `Probe`; the caller bounds each run with the check's timeout, so a probe that
//! hangs costs its own slot and nothing else.

mod exec;
mod http;
mod icmp;
pub(crate) mod schedule;
mod tcp;

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use crate::{
    config::{CheckConfig, CheckKind},
    sys::process,
};

/// Most bytes of a reply, response head or body a check reads from a target.
const MAX_BODY: usize = 64 * 1024;

/// What one run of a check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Did the target pass?
    pub ok: bool,
    /// The check could not be run for a reason on this host (out of descriptors or
    /// memory, no free local port, a command that could not be started): says nothing
    /// about the target, so it never moves the target up or down.
    pub local_error: bool,
    /// Why it failed, or a short note of what succeeded.
    pub detail: String,
    /// How long the run took, from its start to its result (a timeout's included).
    pub latency: Duration,
    /// Handshake figures of TCP-based checks.
    pub tcp: Option<TcpHandshake>,
}

/// TCP handshake figures (TCP_INFO), the signal tcpeek gave DSAS operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpHandshake {
    /// How long the TCP connect took.
    pub connect_time: Duration,
    /// Retransmissions during the connection's life so far (SYNs for a fresh connect).
    pub retransmits: u32,
    /// Smoothed RTT as the kernel saw it.
    pub rtt: Duration,
}

/// Checks in flight at once when `server.max_checks_in_flight` is not set: three
/// quarters of the open-file limit left after a reserve for the daemon's own sockets,
/// maps and files, at least 16.
pub fn budget_size(configured: Option<usize>) -> usize {
    if let Some(n) = configured {
        return n;
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct passed.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 { limit.rlim_cur } else { 1024 };
    let usable = soft.min(1 << 20).saturating_sub(RESERVED_DESCRIPTORS) as usize;
    (usable * 3 / 4).max(16)
}

/// Descriptors kept for everything but checks (maps, programs, sockets, logs, state).
const RESERVED_DESCRIPTORS: u64 = 64;

/// The slots checks run in. A check whose last run failed also needs one of the
/// `failing` slots, half of all: dead or black-holed targets, whose checks hold their
/// socket until the timeout, can never take the slots the passing checks need, so a
/// healthy target that fails is still seen failing at once. Failing checks do not
/// queue for their slots (a queue of thousands of dead targets would time out a
/// recovered target's short check every time): one free at that moment, or the run is
/// skipped as a local error and tried again at the retry interval.
pub struct Budget {
    all: tokio::sync::Semaphore,
    failing: tokio::sync::Semaphore,
    size: usize,
}

impl Budget {
    /// `size` slots in all (see `budget_size`), half of them (at least 1) for failing checks.
    pub fn new(size: usize) -> Budget {
        Budget { all: tokio::sync::Semaphore::new(size), failing: tokio::sync::Semaphore::new((size / 2).max(1)), size }
    }
}

/// As `run`, holding a slot of `budget` while it runs (`failing`: this check's last run
/// failed). A check that gets no slot within its timeout is a local error (the target
/// is not judged), not a failure.
pub async fn run_within(check: &CheckConfig, name: &str, address: IpAddr, budget: &Budget, failing: bool) -> Outcome {
    let started = Instant::now();
    let slots = async {
        let failing_slot = if failing { Some(budget.failing.try_acquire().ok()?) } else { None };
        Some((failing_slot, budget.all.acquire().await.ok()?))
    };
    let Ok(Some(_slots)) = tokio::time::timeout(check.timeout, slots).await else {
        let which = if failing { "for a failing check (half of them) " } else { "" };
        return Outcome {
            ok: false,
            local_error: true,
            detail: format!(
                "local error, target not judged: no check slot free {which}within {:?} (server.max_checks_in_flight = {})",
                check.timeout, budget.size
            ),
            latency: started.elapsed(),
            tcp: None,
        };
    };
    run(check, name, address).await
}

/// Runs one check against `address` (target `name`), bounded by the check's timeout.
pub async fn run(check: &CheckConfig, name: &str, address: IpAddr) -> Outcome {
    let started = Instant::now();
    let result = tokio::time::timeout(check.timeout, probe(&check.kind, check.timeout, name, address)).await;
    let latency = started.elapsed();
    // Details quote what targets sent and what commands printed: escape them once here,
    // for every log line, `ctl` reply and hook environment they reach.
    let result = result.map(|r| {
        r.map(|(detail, tcp)| (process::printable(detail.as_bytes(), 512), tcp)).map_err(|mut f| {
            f.reason = process::printable(f.reason.as_bytes(), 512);
            f
        })
    });
    match result {
        Ok(Ok((detail, tcp))) => Outcome { ok: true, local_error: false, detail, latency, tcp },
        Ok(Err(failure)) => {
            Outcome { ok: false, local_error: failure.local, detail: failure.reason, latency, tcp: failure.tcp }
        }
        Err(_) => Outcome {
            ok: false,
            local_error: false,
            detail: format!("timed out after {:?}", check.timeout),
            latency,
            tcp: None,
        },
    }
}

struct Failure {
    reason: String,
    tcp: Option<TcpHandshake>,
    /// Failed for a reason on this host (see `Outcome::local_error`).
    local: bool,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { reason: e.to_string(), tcp: None, local: false }
    }
}

impl Failure {
    /// A failure on this host, not the target's: `what` could not be done.
    fn local(what: String) -> Failure {
        Failure { reason: format!("local error, target not judged: {what}"), tcp: None, local: true }
    }

    /// An error while connecting: local if the host ran out of something.
    fn connect(to: SocketAddr, e: std::io::Error) -> Failure {
        if is_local_io_error(&e) {
            Failure::local(format!("connect {to}: {e}"))
        } else {
            Failure::from(format!("connect {to}: {e}"))
        }
    }
}

/// Errors that describe this host, not the peer: out of descriptors (EMFILE, ENFILE),
/// memory or buffers (ENOMEM, ENOBUFS), or local ports (EADDRNOTAVAIL on connect,
/// EAGAIN on a Unix/loopback connect).
pub fn is_local_io_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS | libc::EADDRNOTAVAIL | libc::EAGAIN)
    )
}

/// Whether an error or any of its sources is a local I/O error.
fn has_local_cause(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some_and(is_local_io_error) {
            return true;
        }
        cause = c.source();
    }
    false
}

type ProbeResult = Result<(String, Option<TcpHandshake>), Failure>;

/// One kind of probe: a single attempt against `address`, judged up (the detail and,
/// for TCP-based probes, the handshake figures) or down (a `Failure`).
trait Probe {
    async fn probe(&self, address: IpAddr, timeout: Duration, target: &str) -> ProbeResult;
}

async fn probe(kind: &CheckKind, timeout: Duration, name: &str, address: IpAddr) -> ProbeResult {
    match kind {
        CheckKind::Tcp { port, send, expect } => {
            tcp::Tcp { port: *port, send: send.as_deref(), expect: expect.as_ref() }.probe(address, timeout, name).await
        }
        CheckKind::Http(http) => http.probe(address, timeout, name).await,
        CheckKind::Icmp => icmp::Icmp.probe(address, timeout, name).await,
        CheckKind::Exec { command, run_as } => {
            exec::Exec { command, run_as: run_as.as_ref() }.probe(address, timeout, name).await
        }
        // Never started as a probe (`Checkers` skips them); the controller records the
        // feed's verdicts.
        CheckKind::Feed { feed } => Err(Failure::local(format!("judged by feed {feed}, not probed"))),
    }
}

/// The start of what a target sent, escaped (it is untrusted text).
fn snippet(bytes: &[u8]) -> String {
    process::printable(bytes, 80)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;
    use crate::config::Config;

    fn check(spec: &str) -> CheckConfig {
        let text = format!("[server]\ninterfaces = [\"lo\"]\n[checks.c]\n{spec}\n");
        Config::parse(Path::new("t.toml"), &text).unwrap().checks.remove("c").unwrap()
    }

    /// A loopback server answering each connection's first read with `reply(request)`.
    async fn serve(reply: fn(&[u8]) -> String) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let _ = s.write_all(reply(&buf[..n]).as_bytes()).await;
                });
            }
        });
        port
    }

    /// A server that reads the request, then sends `parts` (bytes, then a pause in ms)
    /// and, with `keep_open`, holds the connection open afterwards; `endless` bytes are
    /// then sent every 200 ms until the client goes away.
    async fn serve_script(parts: Vec<(Vec<u8>, u64)>, keep_open: bool, endless: Option<Vec<u8>>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let (parts, endless) = (parts.clone(), endless.clone());
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    for (bytes, pause) in parts {
                        if s.write_all(&bytes).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                    if let Some(more) = endless {
                        while s.write_all(&more).await.is_ok() {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                    if keep_open {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn a_check_without_a_free_slot_is_a_local_error() {
        let port = serve(|_| "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".into()).await;
        let spec = check(&format!("type = \"http\"\nport = {port}\ntimeout = \"200ms\"\ninterval = \"1s\""));
        let lo = IpAddr::from([127, 0, 0, 1]);
        let budget = Budget::new(4);
        assert!(run_within(&spec, "t", lo, &budget, false).await.ok);
        assert!(run_within(&spec, "t", lo, &budget, true).await.ok);
        // Failing checks hung on their timeouts hold half the slots: they get no more,
        // passing checks still get the other half.
        let _hung = budget.failing.acquire_many(2).await.unwrap();
        let _held = budget.all.acquire_many(2).await.unwrap();
        let out = run_within(&spec, "t", lo, &budget, true).await;
        assert!(!out.ok && out.local_error && out.detail.contains("no check slot free for a failing check"), "{out:?}");
        assert!(run_within(&spec, "t", lo, &budget, false).await.ok);
        // Every slot taken: a local error for passing checks too.
        let _rest = budget.all.acquire_many(2).await.unwrap();
        let out = run_within(&spec, "t", lo, &budget, false).await;
        assert!(!out.ok && out.local_error && out.detail.contains("max_checks_in_flight = 4"), "{out:?}");
        assert!(super::budget_size(Some(7)) == 7 && super::budget_size(None) >= 16);
    }

    #[tokio::test]
    async fn http_replies_real_backends_send() {
        let lo = IpAddr::from([127, 0, 0, 1]);
        let spec = |port: u16, extra: &str| {
            check(&format!("type = \"http\"\nport = {port}\ntimeout = \"1s\"\ninterval = \"2s\"\n{extra}"))
        };
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nall \r\n4\r\ngood\r\n0\r\n\r\n".to_vec();
        // A chunked body whose end arrives while the connection stays open, or is reset.
        for keep_open in [true, false] {
            let port = serve_script(vec![(chunked.clone(), 50)], keep_open, None).await;
            let out = run(&spec(port, "body = \"^all good$\""), "t", lo).await;
            assert!(out.ok && out.latency < Duration::from_millis(500), "keep_open {keep_open}: {out:?}");
        }
        // Interim replies before the final one.
        for interim in ["100 Continue", "102 Processing", "103 Early Hints\r\nLink: </style.css>; rel=preload"] {
            let reply = format!("HTTP/1.1 {interim}\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let port = serve_script(vec![(reply.into_bytes(), 0)], false, None).await;
            let out = run(&spec(port, ""), "t", lo).await;
            assert!(out.ok, "{interim}: {out:?}");
        }
        let port =
            serve_script(vec![(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\n\r\n".to_vec(), 0)], false, None)
                .await;
        let out = run(&spec(port, ""), "t", lo).await;
        assert!(!out.ok && out.detail.contains("status 503"), "the final status counts: {out:?}");
        // Many header lines (up to hyper's 100, as for HTTPS).
        let mut many = "HTTP/1.1 200 OK\r\n".to_string();
        for i in 0..99 {
            many.push_str(&format!("X-Header-{i}: {i}\r\n"));
        }
        many.push_str("Content-Length: 0\r\n\r\n");
        let port = serve_script(vec![(many.into_bytes(), 0)], false, None).await;
        let out = run(&spec(port, ""), "t", lo).await;
        assert!(out.ok, "{out:?}");
        // An endless, slow body that matches early: up at the match, not down at the timeout.
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nstatus: ok\n".to_vec();
        let port = serve_script(vec![(head, 0)], true, Some(vec![b'.'; 32])).await;
        let out = run(&spec(port, "body = \"status: ok\""), "t", lo).await;
        assert!(out.ok && out.latency < Duration::from_millis(500), "{out:?}");
        // A body that ends without a match says how much it read.
        let port =
            serve_script(vec![(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec(), 0)], true, None).await;
        let out = run(&spec(port, "body = \"bye\""), "t", lo).await;
        assert!(!out.ok && out.detail.contains("5 bytes read"), "{out:?}");
    }

    #[tokio::test]
    async fn tcp_connect_send_expect() {
        let port = serve(|req| if req == b"PING\r\n" { "+PONG\r\n".into() } else { "-ERR\r\n".into() }).await;
        let lo = IpAddr::from([127, 0, 0, 1]);
        let ok = run(
            &check(&format!("type = \"tcp\"\nport = {port}\nsend = \"PING\\\\r\\\\n\"\nexpect = \"^\\\\+PONG\"")),
            "t",
            lo,
        )
        .await;
        assert!(ok.ok, "{ok:?}");
        let tcp = ok.tcp.unwrap();
        assert!(tcp.connect_time < Duration::from_secs(1));
        assert_eq!(tcp.retransmits, 0);
        let bad = run(
            &check(&format!("type = \"tcp\"\nport = {port}\nsend = \"HELLO\\\\r\\\\n\"\nexpect = \"^\\\\+PONG\"")),
            "t",
            lo,
        )
        .await;
        assert!(!bad.ok);
        assert!(bad.detail.contains("does not match"), "{bad:?}");
        drop(ok);
    }

    #[tokio::test]
    async fn https_verification_against_a_real_tls_server() {
        // openssl makes a CA and a certificate it signs, and serves it (s_server -www).
        let dir = std::env::temp_dir().join(format!("pw-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = std::process::Command::new("openssl").current_dir(&dir).args(args).output().unwrap();
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &["-days", "1", "-subj", "/CN=test CA", "-keyout", "ca.key", "-out", "ca.pem"],
            ]
            .concat(),
        );
        openssl(
            &[&["req", "-new"][..], &ec, &["-subj", "/CN=www.example.test", "-keyout", "k.pem", "-out", "c.csr"]]
                .concat(),
        );
        std::fs::write(dir.join("ext"), "subjectAltName=DNS:www.example.test\nbasicConstraints=CA:FALSE\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "c.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext",
            "-out",
            "c.pem",
        ]);
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = std::process::Command::new("openssl")
            .current_dir(&dir)
            .args([
                "s_server",
                "-quiet",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-www",
                "-cert",
                "c.pem",
                "-key",
                "k.pem",
            ])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let lo = IpAddr::from([127, 0, 0, 1]);
        let spec =
            |extra: &str| check(&format!("type = \"https\"\nport = {port}\nhost = \"www.example.test\"\n{extra}"));
        let mut unverified = run(&spec("tls_verify = false"), "t", lo).await;
        for _ in 0..50 {
            if unverified.ok {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // s_server still starting
            unverified = run(&spec("tls_verify = false"), "t", lo).await;
        }
        assert!(unverified.ok, "{unverified:?}");
        // The system's roots do not know the test CA; with it as ca_file, verification passes.
        let verified = run(&spec(""), "t", lo).await;
        assert!(!verified.ok && verified.detail.contains("certificate"), "{verified:?}");
        let with_ca = run(&spec(&format!("ca_file = \"{}\"", dir.join("ca.pem").display())), "t", lo).await;
        assert!(with_ca.ok, "{with_ca:?}");
        // Another CA does not vouch for it.
        openssl(
            &[&["req", "-x509"][..], &ec, &["-days", "1", "-subj", "/CN=other", "-keyout", "o.key", "-out", "o.pem"]]
                .concat(),
        );
        let other = run(&spec(&format!("ca_file = \"{}\"", dir.join("o.pem").display())), "t", lo).await;
        assert!(!other.ok && other.detail.contains("certificate"), "{other:?}");
        let _ = server.kill();
        let _ = server.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn icmp_echo_over_ipv4_and_ipv6() {
        let spec = check("type = \"icmp\"\ntimeout = \"500ms\"\ninterval = \"1s\"");
        for address in [IpAddr::from([127, 0, 0, 1]), IpAddr::from(std::net::Ipv6Addr::LOCALHOST)] {
            let out = run(&spec, "t", address).await;
            assert!(out.ok, "{address}: {out:?}");
        }
    }

    #[test]
    fn request_line_and_header_injection_is_refused_at_load() {
        for (spec, says) in [
            ("host = \"a\\r\\nX-Evil: 1\"", "host"),
            ("user_agent = \"ua\\nX: 1\"", "user_agent"),
            ("path = \"/a b HTTP/1.0\\r\\nX: 1\"", "request target"),
            ("headers = { \"X-A\" = \"v\\r\\nX-B: 1\" }", "value of X-A"),
            ("headers = { \"Bad Name\" = \"v\" }", "header name"),
        ] {
            let text = format!("[server]\ninterfaces = [\"lo\"]\n[checks.c]\ntype = \"http\"\n{spec}\n");
            let err = Config::parse(Path::new("t.toml"), &text).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("t.toml:5"), "{spec}: {err}");
        }
    }

    #[tokio::test]
    async fn plain_http_status_and_body() {
        let port = serve(|req| {
            let req = String::from_utf8_lossy(req);
            if req.starts_with("GET /chunked ") {
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nall \r\n4\r\ngood\r\n0\r\n\r\n".into()
            } else if req.contains("Host: www.example.test\r\n") && req.starts_with("HEAD /health ") {
                "HTTP/1.1 204 No Content\r\n\r\n".into()
            } else {
                "HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy".into()
            }
        })
        .await;
        let lo = IpAddr::from([127, 0, 0, 1]);
        let ok = run(&check(&format!("type = \"http\"\nport = {port}\nmethod = \"head\"\npath = \"/health\"\nhost = \"www.example.test\"\nok_status = [204]")), "t", lo).await;
        assert!(ok.ok, "{ok:?}");
        assert!(ok.tcp.is_some());
        let busy = run(&check(&format!("type = \"http\"\nport = {port}")), "t", lo).await;
        assert_eq!(busy.detail, "status 503 is not in [200]");
        let chunked = run(
            &check(&format!("type = \"http\"\nport = {port}\npath = \"/chunked\"\nbody = \"^all good$\"")),
            "t",
            lo,
        )
        .await;
        assert!(chunked.ok, "{chunked:?}");
        let mismatch =
            run(&check(&format!("type = \"http\"\nport = {port}\npath = \"/chunked\"\nbody = \"^bad\"")), "t", lo)
                .await;
        assert!(
            !mismatch.ok && mismatch.detail.contains("body ended without matching /^bad/ (8 bytes read)"),
            "{mismatch:?}"
        );
    }

    #[tokio::test]
    async fn tcp_refused_and_exec() {
        // A port nobody listens on: bind, learn the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let lo = IpAddr::from([127, 0, 0, 1]);
        let refused = run(&check(&format!("type = \"tcp\"\nport = {port}")), "t", lo).await;
        assert!(!refused.ok && refused.detail.contains("refused"), "{refused:?}");

        let ok = run(&check("type = \"exec\"\ncommand = [\"sh\", \"-c\", \"test \\\"$1\\\" = 127.0.0.1 && test \\\"$PRIMWATCH_TARGET_NAME\\\" = web1\", \"sh\"]"), "web1", lo).await;
        assert!(ok.ok, "{ok:?}");
        let fails =
            run(&check("type = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo sick >&2; exit 3\"]"), "web1", lo).await;
        assert!(!fails.ok && fails.detail.contains("sick"), "{fails:?}");
        // A monitoring plugin's status line is on stdout; it is the reason when stderr is quiet.
        let plugin = run(
            &check("type = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo CRITICAL - 3 of 4 down; exit 2\"]"),
            "web1",
            lo,
        )
        .await;
        assert!(!plugin.ok && plugin.detail.contains("CRITICAL - 3 of 4 down"), "{plugin:?}");
        let hangs = run(
            &check("type = \"exec\"\ncommand = [\"sh\", \"-c\", \"sleep 5\"]\ninterval = \"1s\"\ntimeout = \"200ms\""),
            "web1",
            lo,
        )
        .await;
        assert!(!hangs.ok && hangs.detail.contains("timed out"), "{hangs:?}");
        assert!(hangs.latency < Duration::from_secs(1));
    }
}
