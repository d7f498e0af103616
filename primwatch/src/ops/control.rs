//! The operator's channel: `primwatch ctl` talks to the running controller over a Unix
//! socket that only root can open (mode 0600), one JSON request and one JSON reply
//! per connection.

use std::{net::IpAddr, path::Path, time::SystemTime};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader},
    net::UnixStream,
    sync::{mpsc, oneshot},
};
use tracing::warn;

use crate::{
    config::CONTROL_IDLE_TIMEOUT,
    sys::local_socket::{self, Access, Lease},
};
pub use crate::{
    health::state::{Action, Kind},
    sys::local_socket::SocketGuard,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "request")]
pub enum Request {
    Status {
        /// Which names to list (the answer sets are always there).
        #[serde(default)]
        names: NameListing,
    },
    Set {
        kind: Kind,
        name: String,
        action: Action,
    },
    Reload,
    /// Counters and histograms (what /metrics shows).
    Stats,
    /// Why `name` answers what it answers for a client at `from` (or for `ecs`).
    Explain {
        name: String,
        from: IpAddr,
        ecs: Option<String>,
        /// A or AAAA.
        family: primwatch_common::Family,
    },
}

/// Which names `ctl status` lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NameListing {
    /// All of them while there are at most `report::STATUS_NAMES_LISTED` (name, view)
    /// entries, none above.
    #[default]
    Auto,
    All,
    /// Those matching a pattern where `*` stands for any characters.
    Matching(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explanation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<crate::ops::metrics::Stats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    /// The configured name that matched (the name itself or its wildcard).
    pub matched: String,
    /// The view chosen and by what (source address or client subnet), or "default".
    pub view: String,
    pub groups: Vec<GroupExplanation>,
    /// What XDP answers now: records, how many per reply, how they are picked.
    pub answer: Vec<String>,
    pub answers_per_reply: usize,
    pub pick: String,
    pub why: String,
    /// With a client subnet: the ECS scope the answer claims (RFC 7871 §7.2.1).
    #[serde(default)]
    pub ecs_scope: Option<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupExplanation {
    pub name: String,
    pub priority: i32,
    pub state: String,
    /// (target, address, eligible, why) for members of the asked family.
    pub members: Vec<(String, String, bool, String)>,
}

impl Reply {
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply { ok: true, message: message.into(), status: None, explain: None, stats: None }
    }

    pub fn error(message: impl Into<String>) -> Reply {
        Reply { ok: false, message: message.into(), status: None, explain: None, stats: None }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub targets: Vec<TargetStatus>,
    pub groups: Vec<GroupStatus>,
    pub names: Vec<NameStatus>,
    #[serde(default)]
    pub views: Vec<ViewStatus>,
    /// How this controller came to serve: attached afresh, or adopted what the previous
    /// run left attached (and whether that run stopped cleanly).
    #[serde(default)]
    pub dataplane: String,
    /// Targets given by DNS name: what each resolves to.
    #[serde(default)]
    pub resolved: Vec<ResolvedStatus>,
    /// (name, view) entries the config has, listed in `names` or not.
    #[serde(default)]
    pub name_entries: usize,
    /// What the names answer, one per record-set spec (TTL and source), with how many
    /// (name, view) entries answer from it.
    #[serde(default)]
    pub answer_sets: Vec<AnswerSetStatus>,
    /// `[geoip] database`, if set: what it is and how many networks each view took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geoip: Option<GeoStatus>,
    /// The declared zones and, for those primwatch signs, the key and its signatures.
    #[serde(default)]
    pub zones: Vec<ZoneStatus>,
    /// `[fleet]`: the etcd connection and the fleet's overrides (who set each, when).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<crate::fleet::FleetStatus>,
}

/// A declared zone (`[zones."APEX"]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ZoneStatus {
    pub apex: String,
    /// "off", "pass" or "sign".
    pub dnssec: String,
    /// `sign`: the key (file, tag, algorithm number), the signatures XDP holds for the
    /// zone, their validity and when the next renewal is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningStatus {
    pub key_file: String,
    pub key_tag: u16,
    pub algorithm: u8,
    pub signatures: usize,
    pub validity_seconds: u64,
    /// RFC 3339, or "-" while there are none.
    pub next_renewal: String,
}

/// The country/AS database as the running config read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeoStatus {
    pub path: String,
    /// The metadata's database_type, e.g. "GeoLite2-Country".
    pub database_type: String,
    /// The metadata's build_epoch, RFC 3339.
    pub built: String,
    /// Networks in the file.
    pub networks: usize,
    /// Per view with countries, continents or AS numbers: the networks it took.
    pub prefixes: std::collections::BTreeMap<String, usize>,
}

/// One record-set spec: the A and AAAA records every name using it answers with now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerSetStatus {
    /// "static" or "groups G1, G2".
    pub source: String,
    pub ttl: u32,
    /// (name, view) entries answering from it.
    pub names: usize,
    pub a: Vec<String>,
    pub aaaa: Vec<String>,
    pub a_from: String,
    pub aaaa_from: String,
}

/// One target given by `host`, as last resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolvedStatus {
    pub target: String,
    pub host: String,
    /// The addresses in use, each a target `TARGET@ADDRESS`.
    pub addresses: Vec<std::net::IpAddr>,
    /// RFC 3339, or empty if it never resolved.
    pub resolved_at: String,
    /// Why it does not resolve now, and since when (RFC 3339); empty if it does.
    pub error: String,
    pub failing_since: String,
    /// Addresses of the last answer not used, and why (special-purpose, over the cap).
    #[serde(default)]
    pub left_out: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewStatus {
    pub name: String,
    pub id: u32,
    pub prefixes: usize,
    /// Per name the view answers differently: (name, A now, from where).
    pub names: Vec<NameStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    pub name: String,
    pub address: IpAddr,
    /// up, down, held, forced-up, forced-down, drain.
    pub state: String,
    pub healthy: bool,
    pub in_answers: bool,
    pub reason: String,
    pub since: String,
    pub weight: u32,
    pub preempt: bool,
    pub checks: Vec<CheckStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckStatus {
    pub name: String,
    pub up: bool,
    pub last: String,
    pub latency_ms: Option<f64>,
    pub runs: u64,
    pub failures: u64,
    /// Runs that could not judge the target (a local error on this host).
    #[serde(default)]
    pub local_errors: u64,
    /// The current local error, while the check cannot run.
    #[serde(default)]
    pub local_error: Option<String>,
    pub tcp_connect_ms: Option<f64>,
    pub tcp_retransmits: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    pub name: String,
    pub priority: i32,
    pub configured_priority: i32,
    pub policy: String,
    /// up, down, held, forced-up, forced-down, drain.
    pub state: String,
    pub eligible: usize,
    pub members: usize,
    pub min_healthy: usize,
    pub preempt: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameStatus {
    pub name: String,
    pub ttl: u32,
    pub a: Vec<String>,
    pub aaaa: Vec<String>,
    /// The group serving A / AAAA now, or what the all-down policy did.
    pub a_from: String,
    pub aaaa_from: String,
}

pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A request from a client, with where to send the reply.
pub type Incoming = (Request, oneshot::Sender<Reply>);

/// Listens on `path` (replacing a stale socket), root only (mode 0600 and
/// SO_PEERCRED), and forwards requests.
pub fn listen(path: &Path, access: &Access, requests: mpsc::Sender<Incoming>) -> Result<SocketGuard> {
    let listener = local_socket::bind(path, access)?;
    local_socket::serve(listener, access.clone(), &local_socket::CONTROL, "control", move |stream, lease| {
        let requests = requests.clone();
        async move {
            if let Err(e) = serve_one(stream, lease, requests).await {
                warn!(error = %format!("{e:#}"), "control connection");
            }
        }
    });
    Ok(SocketGuard(path.to_path_buf()))
}

/// Longest request line: the largest request is a few hundred bytes.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

async fn serve_one(mut stream: UnixStream, lease: Lease, requests: mpsc::Sender<Incoming>) -> Result<()> {
    let (read, mut write) = stream.split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    tokio::select! {
        read = tokio::time::timeout(CONTROL_IDLE_TIMEOUT * 5, reader.read_line(&mut line)) => {
            read.context("no request within the time allowed")??;
        }
        _ = lease.evicted() => bail!("closed to make room for another connection"),
    }
    lease.touch();
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            requests.send((request, tx)).await.context("controller gone")?;
            rx.await.context("controller dropped the request")?
        }
        Err(e) => Reply::error(format!("bad request: {e}")),
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    Ok(())
}

/// Client side: one request, one reply.
pub fn send(path: &Path, request: &Request) -> Result<Reply> {
    use std::io::{BufRead as _, Write as _};
    let mut stream = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("connecting to {} (is primwatch running? are you root?)", path.display()))?;
    let mut text = serde_json::to_string(request)?;
    text.push('\n');
    stream.write_all(text.as_bytes())?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        bail!("the controller closed the connection without a reply");
    }
    Ok(serde_json::from_str(&line)?)
}
