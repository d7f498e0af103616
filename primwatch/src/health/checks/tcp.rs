//! TCP connect, optionally sending bytes and requiring a reply that matches a regex;
//! the handshake figures (connect time, retransmits, RTT) come from TCP_INFO.

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use super::{snippet, Failure, Probe, ProbeResult, TcpHandshake, MAX_BODY};

/// `type = "tcp"`: connect to `port`; with `send`, write it; with `expect`, read until
/// the reply matches (or the peer closes, or `MAX_BODY`).
pub(super) struct Tcp<'a> {
    pub port: u16,
    pub send: Option<&'a [u8]>,
    pub expect: Option<&'a regex::Regex>,
}

impl Probe for Tcp<'_> {
    async fn probe(&self, address: IpAddr, _timeout: Duration, _target: &str) -> ProbeResult {
        tcp(SocketAddr::new(address, self.port), self.send, self.expect).await
    }
}

pub(super) fn handshake(stream: &TcpStream, connect_time: Duration) -> TcpHandshake {
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
    let mut stream = TcpStream::connect(to).await.map_err(|e| Failure::connect(to, e))?;
    let stats = handshake(&stream, started.elapsed());
    let fail = |reason: String| Failure { reason, tcp: Some(stats), local: false };
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
            if n == 0 || reply.len() > MAX_BODY {
                return Err(fail(format!("reply does not match /{expect}/: {:?}", snippet(&reply))));
            }
        }
    }
    Ok((format!("connected in {:?}", stats.connect_time), Some(stats)))
}
