//! Stage 2: health checks. One async probe per check type; the caller bounds each run
//! with the check's timeout, so a probe that hangs costs its own slot and nothing else.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::config::{CheckConfig, CheckKind, HttpCheck};

/// What one run of a check found.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub ok: bool,
    /// Why it failed, or a short note of what succeeded.
    pub detail: String,
    pub latency: Duration,
    /// Handshake figures of TCP-based checks.
    pub tcp: Option<TcpHandshake>,
}

/// TCP handshake figures (TCP_INFO), the signal tcpeek gave DSAS operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpHandshake {
    pub connect_time: Duration,
    /// Retransmissions during the connection's life so far (SYNs for a fresh connect).
    pub retransmits: u32,
    /// Smoothed RTT as the kernel saw it.
    pub rtt: Duration,
}

/// Runs one check against `address` (target `name`), bounded by the check's timeout.
pub async fn run(check: &CheckConfig, name: &str, address: IpAddr) -> Outcome {
    let started = Instant::now();
    let result = tokio::time::timeout(check.timeout, probe(&check.kind, check.timeout, name, address)).await;
    let latency = started.elapsed();
    match result {
        Ok(Ok((detail, tcp))) => Outcome { ok: true, detail, latency, tcp },
        Ok(Err(failure)) => Outcome { ok: false, detail: failure.reason, latency, tcp: failure.tcp },
        Err(_) => Outcome { ok: false, detail: format!("timed out after {:?}", check.timeout), latency, tcp: None },
    }
}

struct Failure {
    reason: String,
    tcp: Option<TcpHandshake>,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure { reason: e.to_string(), tcp: None }
    }
}

type ProbeResult = Result<(String, Option<TcpHandshake>), Failure>;

async fn probe(kind: &CheckKind, timeout: Duration, name: &str, address: IpAddr) -> ProbeResult {
    match kind {
        CheckKind::Tcp { port, send, expect } => tcp(SocketAddr::new(address, *port), send.as_deref(), expect.as_ref()).await,
        CheckKind::Http(http) => http_probe(http, timeout, address).await,
        CheckKind::Icmp => icmp(address, timeout).await,
        CheckKind::Exec { command } => exec(command, name, address).await,
    }
}

fn handshake(stream: &TcpStream, connect_time: Duration) -> TcpHandshake {
    // SAFETY: TCP_INFO fills a tcp_info of the given length on a valid socket fd.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if rc != 0 {
        return TcpHandshake { connect_time, ..Default::default() };
    }
    TcpHandshake {
        connect_time,
        retransmits: info.tcpi_total_retrans,
        rtt: Duration::from_micros(info.tcpi_rtt as u64),
    }
}

async fn tcp(to: SocketAddr, send: Option<&[u8]>, expect: Option<&regex::Regex>) -> ProbeResult {
    let started = Instant::now();
    let mut stream = TcpStream::connect(to).await.map_err(|e| format!("connect {to}: {e}"))?;
    let stats = handshake(&stream, started.elapsed());
    let fail = |reason: String| Failure { reason, tcp: Some(stats) };
    if let Some(bytes) = send {
        stream.write_all(bytes).await.map_err(|e| fail(format!("send: {e}")))?;
    }
    if let Some(expect) = expect {
        // Read until the reply matches, the peer closes, or 64 KiB (the timeout bounds it too).
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| fail(format!("read: {e}")))?;
            reply.extend_from_slice(&buf[..n]);
            if expect.is_match(&String::from_utf8_lossy(&reply)) {
                break;
            }
            if n == 0 || reply.len() > 65536 {
                return Err(fail(format!("reply does not match /{expect}/: {:?}", snippet(&reply))));
            }
        }
    }
    Ok((format!("connected in {:?}", stats.connect_time), Some(stats)))
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.chars().take(80).collect()
}

async fn http_probe(http: &HttpCheck, timeout: Duration, address: IpAddr) -> ProbeResult {
    let scheme = if http.tls { "https" } else { "http" };
    let socket = SocketAddr::new(address, http.port);
    // With a server name (SNI, or the Host for HTTPS), connect to the target's address
    // under that name, so TLS sees the name and the URL still reaches this target.
    let server_name = http.sni.clone().or_else(|| if http.tls { http.host.clone() } else { None });
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(http.user_agent.clone())
        .danger_accept_invalid_certs(!http.tls_verify);
    let url = match &server_name {
        Some(host) => {
            builder = builder.resolve(host, socket);
            format!("{scheme}://{host}:{}{}", http.port, http.path)
        }
        None => format!("{scheme}://{socket}{}", http.path),
    };
    let client = builder.build()?;
    let mut request = client.request(http.method.clone(), &url);
    if let Some(host) = &http.host {
        request = request.header(reqwest::header::HOST, host);
    }
    for (name, value) in &http.headers {
        request = request.header(name, value);
    }
    let response = request.send().await.map_err(|e| format!("{url}: {}", error_chain(&e)))?;
    let status = response.status().as_u16();
    if !http.ok_status.contains(&status) {
        return Err(format!("status {status} is not in {:?}", http.ok_status).into());
    }
    if let Some(body) = &http.body {
        let text = response.text().await.map_err(|e| format!("reading body: {e}"))?;
        if !body.is_match(&text) {
            return Err(format!("body does not match /{body}/: {:?}", snippet(text.as_bytes())).into());
        }
    }
    Ok((format!("status {status}"), None))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

async fn icmp(address: IpAddr, timeout: Duration) -> ProbeResult {
    let kind = if address.is_ipv6() { surge_ping::ICMP::V6 } else { surge_ping::ICMP::V4 };
    let client = surge_ping::Client::new(&surge_ping::Config::builder().kind(kind).build())
        .map_err(|e| format!("ICMP socket: {e}"))?;
    let mut pinger = client.pinger(address, surge_ping::PingIdentifier(rand::random())).await;
    pinger.timeout(timeout);
    let (_, rtt) = pinger
        .ping(surge_ping::PingSequence(0), &[0u8; 16])
        .await
        .map_err(|e| format!("echo to {address}: {e}"))?;
    Ok((format!("echo reply in {rtt:?}"), None))
}

async fn exec(command: &[String], name: &str, address: IpAddr) -> ProbeResult {
    let output = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .arg(address.to_string())
        .arg(name)
        .env("PRIMWATCH_TARGET_ADDRESS", address.to_string())
        .env("PRIMWATCH_TARGET_NAME", name)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true) // a timed-out check's process does not linger
        .output()
        .await
        .map_err(|e| format!("running {}: {e}", command[0]))?;
    if output.status.success() {
        Ok(("exit 0".into(), None))
    } else {
        let stderr = snippet(&output.stderr);
        Err(format!("{} ({})", output.status, stderr.trim()).into())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn check(spec: &str) -> CheckConfig {
        let text = format!("[server]\ninterfaces = [\"lo\"]\n[checks.c]\n{spec}\n");
        Config::parse(Path::new("t.toml"), &text).unwrap().checks.remove("c").unwrap()
    }

    #[tokio::test]
    async fn tcp_connect_send_expect() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let reply = if &buf[..n] == b"PING\r\n" { "+PONG\r\n" } else { "-ERR\r\n" };
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        let lo = IpAddr::from([127, 0, 0, 1]);
        let ok = run(&check(&format!("type = \"tcp\"\nport = {port}\nsend = \"PING\\\\r\\\\n\"\nexpect = \"^\\\\+PONG\"")), "t", lo).await;
        assert!(ok.ok, "{ok:?}");
        let tcp = ok.tcp.unwrap();
        assert!(tcp.connect_time < Duration::from_secs(1));
        assert_eq!(tcp.retransmits, 0);
        let bad = run(&check(&format!("type = \"tcp\"\nport = {port}\nsend = \"HELLO\\\\r\\\\n\"\nexpect = \"^\\\\+PONG\"")), "t", lo).await;
        assert!(!bad.ok);
        assert!(bad.detail.contains("does not match"), "{bad:?}");
        drop(ok);
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
        let fails = run(&check("type = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo sick >&2; exit 3\"]"), "web1", lo).await;
        assert!(!fails.ok && fails.detail.contains("sick"), "{fails:?}");
        let hangs = run(&check("type = \"exec\"\ncommand = [\"sh\", \"-c\", \"sleep 5\"]\ninterval = \"1s\"\ntimeout = \"200ms\""), "web1", lo).await;
        assert!(!hangs.ok && hangs.detail.contains("timed out"), "{hangs:?}");
        assert!(hangs.latency < Duration::from_secs(1));
    }
}
