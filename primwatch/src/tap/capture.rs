//! `primwatch capture`: the frames XDP handles, as received and as sent, written as
//! pcap. The client sends a [`CaptureRequest`] on the control socket; the controller
//! replies with one JSON line, then streams records (`u32` length of the rest, `u64`
//! Unix time in ns, `u32` original frame length, the frame bytes, all little-endian)
//! until the count or time limit, or until the client goes. The client writes them
//! as pcap (`pcap`).

use std::{
    io::{BufRead as _, Read as _, Write},
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::{io::AsyncWriteExt as _, net::UnixStream};

use super::{pcap, Tap, TapPacket, XDP_DROP, XDP_PASS, XDP_TX};

/// Longest capture a request may ask for (and the default when it sets no limit).
pub const MAX_CAPTURE_SECONDS: u64 = 24 * 3600;
/// Most packets a request may ask for.
pub const MAX_CAPTURE_PACKETS: u64 = 1_000_000_000;

/// What to capture: limits and a filter (all given parts must match).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// Stop after this many packets (1 to MAX_CAPTURE_PACKETS).
    pub count: Option<u64>,
    /// Stop after this many seconds (1 to MAX_CAPTURE_SECONDS; default the maximum).
    pub seconds: Option<u64>,
    /// Only packets from (as received) this address or prefix, e.g. "198.51.100.0/24".
    pub client: Option<String>,
    /// Only DNS queries for this name (any case, the trailing dot optional).
    pub name: Option<String>,
    /// Only packets XDP "answered" (XDP_TX), "passed" (XDP_PASS) or "dropped" (XDP_DROP).
    pub verdict: Option<String>,
}

/// A request's filter, checked.
#[derive(Debug, Clone)]
pub struct Filter {
    client: Option<ipnet::IpNet>,
    name: Option<String>,
    action: Option<u32>,
}

impl CaptureRequest {
    /// The filter and the limits (packets, time), or why the request is refused.
    pub fn check(&self) -> Result<(Filter, Option<u64>, Duration), String> {
        if let Some(count) = self.count {
            if !(1..=MAX_CAPTURE_PACKETS).contains(&count) {
                return Err(format!("count must be between 1 and {MAX_CAPTURE_PACKETS}"));
            }
        }
        let seconds = self.seconds.unwrap_or(MAX_CAPTURE_SECONDS);
        if !(1..=MAX_CAPTURE_SECONDS).contains(&seconds) {
            return Err(format!("seconds must be between 1 and {MAX_CAPTURE_SECONDS}"));
        }
        let client = match &self.client {
            None => None,
            Some(text) => Some(match text.parse::<ipnet::IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => text
                    .parse::<IpAddr>()
                    .map(ipnet::IpNet::from)
                    .map_err(|_| format!("client {text:?} is not an address or prefix"))?,
            }),
        };
        let name = self.name.as_ref().map(|n| n.trim_end_matches('.').to_ascii_lowercase());
        let action = match self.verdict.as_deref() {
            None => None,
            Some("answered") => Some(XDP_TX),
            Some("passed") => Some(XDP_PASS),
            Some("dropped") => Some(XDP_DROP),
            Some(other) => return Err(format!("verdict {other:?} is not answered, passed or dropped")),
        };
        Ok((Filter { client, name, action }, self.count, Duration::from_secs(seconds)))
    }
}

impl Filter {
    /// Whether `packet` matches every part of the filter.
    pub fn matches(&self, packet: &TapPacket) -> bool {
        if self.action.is_some_and(|a| a != packet.action) {
            return false;
        }
        if self.client.is_none() && self.name.is_none() {
            return true;
        }
        let Some(facts) = Datagram::parse(&packet.received) else { return false };
        if self.client.is_some_and(|net| !net.contains(&facts.source.0)) {
            return false;
        }
        match &self.name {
            None => true,
            Some(name) => facts.question_name().is_some_and(|q| q == *name),
        }
    }
}

/// The UDP datagram a frame carries: addresses, ports, payload.
pub struct Datagram<'a> {
    /// (address, port) of the sender and of the receiver.
    pub source: (IpAddr, u16),
    /// See `source`.
    pub destination: (IpAddr, u16),
    /// The UDP payload (a DNS message, for the frames XDP answers).
    pub payload: &'a [u8],
}

impl<'a> Datagram<'a> {
    /// The UDP datagram in an Ethernet frame (VLAN tags allowed); None for anything else
    /// or a frame cut short.
    pub fn parse(frame: &'a [u8]) -> Option<Datagram<'a>> {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let sliced = SlicedPacket::from_ethernet(frame).ok()?;
        let (source, destination) = match sliced.net? {
            NetSlice::Ipv4(ip) => {
                (IpAddr::from(ip.header().source_addr()), IpAddr::from(ip.header().destination_addr()))
            }
            NetSlice::Ipv6(ip) => {
                (IpAddr::from(ip.header().source_addr()), IpAddr::from(ip.header().destination_addr()))
            }
        };
        let Some(TransportSlice::Udp(udp)) = sliced.transport else { return None };
        Some(Datagram {
            source: (source, udp.source_port()),
            destination: (destination, udp.destination_port()),
            payload: udp.payload(),
        })
    }

    /// The question's name, lowercased, without the trailing dot ("" for the root); None
    /// when the payload has no uncompressed question.
    pub fn question_name(&self) -> Option<String> {
        let message = self.payload;
        if message.len() < 12 || u16::from_be_bytes([message[4], message[5]]) == 0 {
            return None;
        }
        let mut labels = Vec::new();
        let mut at = 12;
        loop {
            let len = *message.get(at)? as usize;
            if len == 0 {
                break;
            }
            if len > 63 || labels.len() > 127 {
                return None;
            }
            let label = message.get(at + 1..at + 1 + len)?;
            labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
            at += 1 + len;
        }
        Some(labels.join("."))
    }
}

/// The controller's side: replies on `stream`, then streams the packets that match
/// until a limit is reached or the client goes away.
///
/// The session keeps `lease` (its control connection's slot) active while it runs, and
/// ends if the slot is taken anyway.
pub(crate) async fn serve(
    mut stream: UnixStream,
    tap: Option<&Tap>,
    request: &CaptureRequest,
    lease: &crate::sys::local_socket::Lease,
) -> Result<()> {
    let reply = |ok: bool, message: String| {
        let mut line = serde_json::json!({ "ok": ok, "message": message }).to_string();
        line.push('\n');
        line
    };
    let (filter, count, duration) = match request.check() {
        Ok(checked) => checked,
        Err(why) => return Ok(stream.write_all(reply(false, why).as_bytes()).await?),
    };
    let Some(tap) = tap else {
        return Ok(stream.write_all(reply(false, "the tap is not running".into()).as_bytes()).await?);
    };
    let (mut packets, _slot) = match tap.subscribe().await {
        Ok(subscribed) => subscribed,
        Err(why) => return Ok(stream.write_all(reply(false, format!("{why:#}")).as_bytes()).await?),
    };
    stream.write_all(reply(true, "capturing".into()).as_bytes()).await?;
    let mut alive = tokio::time::interval(Duration::from_secs(1));
    let (mut read, mut write) = stream.into_split();
    let deadline = tokio::time::Instant::now() + duration;
    let mut sent = 0u64;
    let mut probe = [0u8; 1];
    loop {
        let packet = tokio::select! {
            packet = packets.recv() => match packet { Some(p) => p, None => break },
            _ = tokio::time::sleep_until(deadline) => break,
            // The client closed its end (or sent something it should not): stop.
            _ = tokio::io::AsyncReadExt::read(&mut read, &mut probe) => break,
            _ = lease.evicted() => break,
            _ = alive.tick() => {
                lease.touch();
                continue;
            }
        };
        if !filter.matches(&packet) {
            continue;
        }
        let mut records = Vec::new();
        encode(&mut records, packet.received_at, &packet.received, packet.received_len);
        if let Some((frame, len)) = &packet.sent {
            encode(&mut records, packet.exit_at, frame, *len);
        }
        if write.write_all(&records).await.is_err() {
            break;
        }
        sent += 1;
        if count.is_some_and(|c| sent >= c) {
            break;
        }
    }
    let _ = write.shutdown().await;
    Ok(())
}

fn encode(out: &mut Vec<u8>, time: SystemTime, frame: &[u8], original_len: u32) {
    let ns = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
    out.extend_from_slice(&((12 + frame.len()) as u32).to_le_bytes());
    out.extend_from_slice(&ns.to_le_bytes());
    out.extend_from_slice(&original_len.to_le_bytes());
    out.extend_from_slice(frame);
}

/// Longest record the client accepts: a frame of TAP_SNAPLEN bytes and its header.
const MAX_RECORD: usize = 12 + primwatch_common::TAP_SNAPLEN;

/// The client's side (`primwatch capture`): asks the controller at `socket` and writes
/// pcap to `out` until the stream ends. Returns the records (frames) written.
pub fn run(socket: &Path, request: &CaptureRequest, out: &mut impl Write) -> Result<u64> {
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("connecting to {} (is primwatch running? are you root?)", socket.display()))?;
    // The control socket's `capture` request (`ops::control::Request::Capture`).
    let mut request = serde_json::to_value(request)?;
    request["request"] = "capture".into();
    let mut line = request.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    let mut reader = std::io::BufReader::new(stream);
    let mut reply = String::new();
    reader.read_line(&mut reply)?;
    let reply: serde_json::Value = serde_json::from_str(&reply).context("the controller's reply")?;
    if reply["ok"] != serde_json::Value::Bool(true) {
        bail!("{}", reply["message"].as_str().unwrap_or("refused"));
    }
    pcap::write_header(out, primwatch_common::TAP_SNAPLEN as u32)?;
    out.flush()?;
    let mut written = 0;
    loop {
        let mut len = [0u8; 4];
        match reader.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_le_bytes(len) as usize;
        if !(12..=MAX_RECORD).contains(&len) {
            bail!("a capture record of {len} bytes: not a primwatch controller's stream");
        }
        let mut record = vec![0u8; len];
        reader.read_exact(&mut record)?;
        let ns = u64::from_le_bytes(record[..8].try_into().expect("8 bytes"));
        let original = u32::from_le_bytes(record[8..12].try_into().expect("4 bytes"));
        let time = SystemTime::UNIX_EPOCH + Duration::from_nanos(ns);
        pcap::write_record(out, time, &record[12..], original)?;
        out.flush()?;
        written += 1;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_out_of_range_are_refused_with_the_reason() {
        let bad = [
            CaptureRequest { count: Some(0), ..Default::default() },
            CaptureRequest { count: Some(MAX_CAPTURE_PACKETS + 1), ..Default::default() },
            CaptureRequest { seconds: Some(0), ..Default::default() },
            CaptureRequest { seconds: Some(u64::MAX), ..Default::default() },
            CaptureRequest { client: Some("10.0.0.0/33".into()), ..Default::default() },
            CaptureRequest { client: Some("example".into()), ..Default::default() },
            CaptureRequest { verdict: Some("maybe".into()), ..Default::default() },
        ];
        for request in bad {
            assert!(request.check().is_err(), "{request:?}");
        }
        let (filter, count, time) = CaptureRequest {
            count: Some(5),
            client: Some("198.51.100.7/24".into()),
            name: Some("WWW.Example.TEST.".into()),
            verdict: Some("answered".into()),
            ..Default::default()
        }
        .check()
        .unwrap();
        assert_eq!((count, time), (Some(5), Duration::from_secs(MAX_CAPTURE_SECONDS)));
        assert_eq!(filter.client.unwrap().to_string(), "198.51.100.0/24");
        assert_eq!(filter.name.as_deref(), Some("www.example.test"));
        assert_eq!(filter.action, Some(XDP_TX));
    }
}
