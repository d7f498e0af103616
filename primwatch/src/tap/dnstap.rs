//! dnstap for XDP's answers: each answered packet the tap hands over becomes an
//! AUTH_QUERY message (the query as received) and an AUTH_RESPONSE message (the reply
//! as sent), encoded with dnstap's protobuf schema (dnstap.proto, the fields declared
//! below) and written as Frame Streams data frames (content type
//! `protobuf:dnstap.Dnstap`) to a file, rotated by size, or to a collector's Unix
//! socket (bidirectional: READY, ACCEPT, START … STOP, FINISH). What XDP passes is
//! PowerDNS's to log.

use std::{
    io::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{atomic::Ordering, Arc},
    time::{Duration, SystemTime},
};

use anyhow::{bail, Context as _, Result};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::mpsc,
    task::JoinHandle,
};
use tracing::{info, warn};

use super::{capture::Datagram, TapPacket, TapStats, LISTENER_QUEUE, XDP_TX};
use crate::config::{DnstapConfig, DnstapOutput};

/// The Frame Streams content type of dnstap.
pub const CONTENT_TYPE: &[u8] = b"protobuf:dnstap.Dnstap";

/// dnstap.proto's `Dnstap` (the fields primwatch writes).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Dnstap {
    /// The server's name (`dnstap.identity`).
    #[prost(bytes = "vec", optional, tag = "1")]
    pub identity: Option<Vec<u8>>,
    /// "primwatch VERSION".
    #[prost(bytes = "vec", optional, tag = "2")]
    pub version: Option<Vec<u8>>,
    /// The message logged.
    #[prost(message, optional, tag = "14")]
    pub message: Option<Message>,
    /// Type: MESSAGE (1).
    #[prost(int32, required, tag = "15")]
    pub r#type: i32,
}

/// dnstap.proto's `Message` (the fields of an authoritative server's messages).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// AUTH_QUERY (1) or AUTH_RESPONSE (2).
    #[prost(int32, required, tag = "1")]
    pub r#type: i32,
    /// INET (1), INET6 (2).
    #[prost(int32, optional, tag = "2")]
    pub socket_family: Option<i32>,
    /// UDP (1).
    #[prost(int32, optional, tag = "3")]
    pub socket_protocol: Option<i32>,
    /// The client's address (4 or 16 bytes) and port, and the server's.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub query_address: Option<Vec<u8>>,
    #[doc = "The server's address."]
    #[prost(bytes = "vec", optional, tag = "5")]
    pub response_address: Option<Vec<u8>>,
    #[doc = "The client's port."]
    #[prost(uint32, optional, tag = "6")]
    pub query_port: Option<u32>,
    #[doc = "The server's port."]
    #[prost(uint32, optional, tag = "7")]
    pub response_port: Option<u32>,
    /// When the query arrived (Unix seconds, nanoseconds).
    #[prost(uint64, optional, tag = "8")]
    pub query_time_sec: Option<u64>,
    #[doc = "… its nanoseconds."]
    #[prost(fixed32, optional, tag = "9")]
    pub query_time_nsec: Option<u32>,
    /// The query as received (the UDP payload).
    #[prost(bytes = "vec", optional, tag = "10")]
    pub query_message: Option<Vec<u8>>,
    /// When the reply was sent (Unix seconds, nanoseconds).
    #[prost(uint64, optional, tag = "12")]
    pub response_time_sec: Option<u64>,
    #[doc = "… its nanoseconds."]
    #[prost(fixed32, optional, tag = "13")]
    pub response_time_nsec: Option<u32>,
    /// The reply as sent.
    #[prost(bytes = "vec", optional, tag = "14")]
    pub response_message: Option<Vec<u8>>,
}

const DNSTAP_MESSAGE: i32 = 1;
const AUTH_QUERY: i32 = 1;
const AUTH_RESPONSE: i32 = 2;

/// The dnstap messages (encoded) for one answered packet: AUTH_QUERY and AUTH_RESPONSE
/// as `config` asks; none for a packet XDP did not answer or that is not UDP.
pub fn messages(config: &DnstapConfig, packet: &TapPacket) -> Vec<Vec<u8>> {
    use prost::Message as _;
    let Some((sent, _)) = packet.sent.as_ref().filter(|_| packet.action == XDP_TX) else { return Vec::new() };
    let (Some(query), Some(reply)) = (Datagram::parse(&packet.received), Datagram::parse(sent)) else {
        return Vec::new();
    };
    let (client, server) = (query.source, query.destination);
    let octets = |a: IpAddr| match a {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    let time = |t: SystemTime| {
        let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        (Some(since.as_secs()), Some(since.subsec_nanos()))
    };
    let (query_sec, query_nsec) = time(packet.received_at);
    let (response_sec, response_nsec) = time(packet.exit_at);
    let base = Message {
        r#type: AUTH_QUERY,
        socket_family: Some(if client.0.is_ipv6() { 2 } else { 1 }),
        socket_protocol: Some(1),
        query_address: Some(octets(client.0)),
        response_address: Some(octets(server.0)),
        query_port: Some(client.1 as u32),
        response_port: Some(server.1 as u32),
        query_time_sec: query_sec,
        query_time_nsec: query_nsec,
        ..Default::default()
    };
    let wrap = |message: Message| {
        Dnstap {
            identity: Some(config.identity.as_bytes().to_vec()),
            version: Some(format!("primwatch {}", env!("CARGO_PKG_VERSION")).into_bytes()),
            message: Some(message),
            r#type: DNSTAP_MESSAGE,
        }
        .encode_to_vec()
    };
    let mut out = Vec::new();
    if config.log_queries {
        out.push(wrap(Message { query_message: Some(query.payload.to_vec()), ..base.clone() }));
    }
    if config.log_responses {
        out.push(wrap(Message {
            r#type: AUTH_RESPONSE,
            response_time_sec: response_sec,
            response_time_nsec: response_nsec,
            response_message: Some(reply.payload.to_vec()),
            ..base
        }));
    }
    out
}

/// Frame Streams control frame types (fstrm's control.h).
const CONTROL_ACCEPT: u32 = 1;
const CONTROL_START: u32 = 2;
const CONTROL_STOP: u32 = 3;
const CONTROL_READY: u32 = 4;
const FIELD_CONTENT_TYPE: u32 = 1;

/// A control frame: the escape (a zero length), its length, its type, and the content
/// type field when given.
fn control_frame(kind: u32, content_type: Option<&[u8]>) -> Vec<u8> {
    let mut body = kind.to_be_bytes().to_vec();
    if let Some(ct) = content_type {
        body.extend_from_slice(&FIELD_CONTENT_TYPE.to_be_bytes());
        body.extend_from_slice(&(ct.len() as u32).to_be_bytes());
        body.extend_from_slice(ct);
    }
    let mut frame = 0u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// A data frame: the length, then the payload.
fn data_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

/// The writer task's handle: its queue (for the hub) and the task.
pub struct Writer {
    /// Answered packets to log (the hub drops what does not fit, counted).
    pub queue: mpsc::Sender<Arc<TapPacket>>,
    /// Ends (writing STOP) once every sender is dropped.
    pub task: JoinHandle<()>,
}

/// Starts the writer for `config`. `stats` counts what it cannot write.
pub fn start(config: DnstapConfig, stats: Arc<TapStats>) -> Writer {
    let (queue, packets) = mpsc::channel(LISTENER_QUEUE);
    let task = tokio::spawn(write_loop(config, packets, stats));
    Writer { queue, task }
}

/// Where frames go: a file (rotated) or a collector.
enum Sink {
    File { path: PathBuf, max_bytes: u64, keep: usize, file: std::fs::File, written: u64 },
    Socket { path: PathBuf, stream: Option<tokio::net::UnixStream>, retry_at: tokio::time::Instant },
}

async fn write_loop(config: DnstapConfig, mut packets: mpsc::Receiver<Arc<TapPacket>>, stats: Arc<TapStats>) {
    let mut sink = match &config.output {
        DnstapOutput::File { path, max_bytes, keep } => match open_file(path, *keep) {
            Ok(file) => Sink::File { path: path.clone(), max_bytes: *max_bytes, keep: *keep, file, written: 0 },
            Err(e) => {
                warn!(error = %format!("{e:#}"), "dnstap: cannot open {}; no log", path.display());
                return;
            }
        },
        DnstapOutput::Socket(path) => {
            Sink::Socket { path: path.clone(), stream: None, retry_at: tokio::time::Instant::now() }
        }
    };
    let (mut second, mut this_second) = (tokio::time::Instant::now(), 0u32);
    let mut frames = Vec::new();
    // Warned of a failing sink: said once, until it works again.
    let mut failing = false;
    while let Some(first) = packets.recv().await {
        // Everything queued goes out in one write.
        let mut batch = vec![first];
        while batch.len() < 1024 {
            match packets.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        frames.clear();
        let mut logged = 0u64;
        for packet in batch {
            let messages = messages(&config, &packet);
            if messages.is_empty() {
                continue;
            }
            if config.max_per_second > 0 {
                let now = tokio::time::Instant::now();
                if now.duration_since(second) >= Duration::from_secs(1) {
                    (second, this_second) = (now, 0);
                }
                if this_second >= config.max_per_second {
                    stats.dnstap_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                this_second += 1;
            }
            logged += 1;
            for message in messages {
                data_frame(&mut frames, &message);
            }
        }
        if !frames.is_empty() {
            match sink.write(&frames).await {
                Ok(()) => failing = false,
                Err(e) => {
                    stats.dnstap_dropped.fetch_add(logged, Ordering::Relaxed);
                    if !failing {
                        warn!(error = %format!("{e:#}"), "dnstap: cannot write; answers are dropped from the log until it can");
                        failing = true;
                    }
                }
            }
        }
    }
    sink.finish().await;
}

impl Sink {
    async fn write(&mut self, frames: &[u8]) -> Result<()> {
        match self {
            Sink::File { path, max_bytes, keep, file, written } => {
                if *written > 0 && *written + frames.len() as u64 > *max_bytes {
                    file.write_all(&control_frame(CONTROL_STOP, None))?;
                    *file = open_file(path, *keep)?;
                    *written = 0;
                }
                file.write_all(frames)?;
                *written += frames.len() as u64;
                Ok(())
            }
            Sink::Socket { path, stream, retry_at } => {
                if stream.is_none() {
                    if tokio::time::Instant::now() < *retry_at {
                        bail!("the collector at {} is not connected", path.display());
                    }
                    *retry_at = tokio::time::Instant::now() + Duration::from_secs(1);
                    *stream = Some(connect(path).await?);
                    info!(socket = %path.display(), "dnstap: connected to the collector");
                }
                let result = stream.as_mut().expect("connected").write_all(frames).await;
                if result.is_err() {
                    *stream = None;
                }
                Ok(result?)
            }
        }
    }

    /// STOP (and, on a socket, the collector's FINISH).
    async fn finish(self) {
        match self {
            Sink::File { mut file, .. } => {
                let _ = file.write_all(&control_frame(CONTROL_STOP, None));
            }
            Sink::Socket { stream: Some(mut stream), .. } => {
                if stream.write_all(&control_frame(CONTROL_STOP, None)).await.is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), read_control(&mut stream)).await;
                }
            }
            Sink::Socket { stream: None, .. } => {}
        }
    }
}

/// Opens `path` afresh with START written: an existing file is rotated first (a Frame
/// Streams file has one START), `path.N` → `path.N+1` up to `keep`.
fn open_file(path: &Path, keep: usize) -> Result<std::fs::File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > 0) {
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        if keep == 0 {
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        } else {
            let _ = std::fs::remove_file(numbered(keep));
            for n in (1..keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(path, numbered(1)).with_context(|| format!("rotating {}", path.display()))?;
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(&control_frame(CONTROL_START, Some(CONTENT_TYPE)))?;
    Ok(file)
}

/// Connects to a collector and completes the handshake (READY → ACCEPT, then START).
async fn connect(path: &Path) -> Result<tokio::net::UnixStream> {
    let mut stream = tokio::time::timeout(Duration::from_secs(2), tokio::net::UnixStream::connect(path))
        .await
        .context("connecting timed out")?
        .with_context(|| format!("connecting to {}", path.display()))?;
    stream.write_all(&control_frame(CONTROL_READY, Some(CONTENT_TYPE))).await?;
    let (kind, content_types) = tokio::time::timeout(Duration::from_secs(2), read_control(&mut stream))
        .await
        .context("no ACCEPT from the collector")??;
    if kind != CONTROL_ACCEPT {
        bail!("the collector answered control frame {kind}, not ACCEPT");
    }
    if !content_types.is_empty() && !content_types.iter().any(|c| c == CONTENT_TYPE) {
        bail!("the collector does not accept {}", String::from_utf8_lossy(CONTENT_TYPE));
    }
    stream.write_all(&control_frame(CONTROL_START, Some(CONTENT_TYPE))).await?;
    Ok(stream)
}

/// Longest control frame read from a collector.
const MAX_CONTROL_FRAME: usize = 512;

/// Reads one control frame: its type and its content types.
async fn read_control(stream: &mut tokio::net::UnixStream) -> Result<(u32, Vec<Vec<u8>>)> {
    let escape = stream.read_u32().await?;
    if escape != 0 {
        bail!("a data frame where a control frame was due");
    }
    let len = stream.read_u32().await? as usize;
    if !(4..=MAX_CONTROL_FRAME).contains(&len) {
        bail!("a control frame of {len} bytes");
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    let kind = u32::from_be_bytes(body[..4].try_into().expect("4 bytes"));
    let mut content_types = Vec::new();
    let mut at = 4;
    while at + 8 <= body.len() {
        let field = u32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes"));
        let flen = u32::from_be_bytes(body[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let value = body.get(at + 8..at + 8 + flen).context("a control field past the frame")?;
        if field == FIELD_CONTENT_TYPE {
            content_types.push(value.to_vec());
        }
        at += 8 + flen;
    }
    Ok((kind, content_types))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_have_fstrm_s_layout() {
        let start = control_frame(CONTROL_START, Some(CONTENT_TYPE));
        assert_eq!(&start[..4], &[0, 0, 0, 0], "the escape");
        assert_eq!(u32::from_be_bytes(start[4..8].try_into().unwrap()) as usize, start.len() - 8);
        assert_eq!(u32::from_be_bytes(start[8..12].try_into().unwrap()), 2);
        assert_eq!(u32::from_be_bytes(start[12..16].try_into().unwrap()), 1);
        assert_eq!(u32::from_be_bytes(start[16..20].try_into().unwrap()) as usize, CONTENT_TYPE.len());
        assert_eq!(&start[20..], CONTENT_TYPE);
        assert_eq!(control_frame(CONTROL_STOP, None), [0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 3]);
    }
}
