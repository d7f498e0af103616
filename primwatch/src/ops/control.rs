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

/// A `primwatch ctl` request: one JSON line on the control socket, tagged by `request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "request")]
pub enum Request {
    /// `ctl status`: the state of targets, groups, names and the rest (a `Status` in the reply).
    Status {
        /// Which names to list (the answer sets are always there).
        #[serde(default)]
        names: NameListing,
    },
    /// `ctl target|group NAME ACTION`: an operator override, saved in the state file (and published to
    /// the fleet with `[fleet]`).
    Set {
        /// Whether `name` is a target or a group.
        kind: Kind,
        /// The target's or group's name.
        name: String,
        /// What to do to it.
        action: Action,
    },
    /// `ctl reload`: read the config file again (with the pushed config this node runs, if any); one
    /// that is rejected leaves the running config serving.
    Reload,
    /// Counters and histograms (what /metrics shows).
    Stats,
    /// Why `name` answers what it answers for a client at `from` (or for `ecs`).
    Explain {
        /// The name asked for (dotted, the trailing dot optional).
        name: String,
        /// The client's source address.
        from: IpAddr,
        /// An EDNS Client Subnet prefix (e.g. "198.51.100.0/24"), as a resolver would send it (RFC 7871).
        ecs: Option<String>,
        /// A or AAAA.
        family: primwatch_common::Family,
    },
    /// `primwatch capture`: the frames XDP handles, streamed after the reply (see
    /// `tap::capture`); served by the control socket itself, not the controller.
    Capture(crate::tap::capture::CaptureRequest),
}

/// Which names `ctl status` lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NameListing {
    /// All of them while there are at most `report::STATUS_NAMES_LISTED` (name, view)
    /// entries, none above.
    #[default]
    Auto,
    /// Every name, however many.
    All,
    /// Those matching a pattern where `*` stands for any characters.
    Matching(String),
}

/// The controller's reply to one request: whether it succeeded, a message, and the report asked for
/// (`status`, `explain` or `stats`), if any.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request succeeded; false: `message` says why not.
    pub ok: bool,
    /// What was done, or why it failed; empty in a reply that carries a report.
    pub message: String,
    /// The reply to `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// The reply to `explain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explanation>,
    /// The reply to `stats`: counters and histograms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<crate::ops::metrics::Stats>,
}

/// `ctl explain`: why a name answers what it answers for one client and one family (A or AAAA).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Explanation {
    /// The configured name that matched (the name itself or its wildcard).
    pub matched: String,
    /// The view chosen and by what (source address or client subnet), or "default".
    pub view: String,
    /// The groups the name uses in that view, highest effective priority first.
    pub groups: Vec<GroupExplanation>,
    /// What XDP answers now: records, how many per reply, how they are picked.
    pub answer: Vec<String>,
    /// Records in each reply.
    pub answers_per_reply: usize,
    /// How XDP picks each reply's records: "fixed", "roundrobin", "random", "weighted", "sticky" or "nodata".
    pub pick: String,
    /// Why these records: the group that serves, "fixed addresses", or what happens with no group serving.
    pub why: String,
    /// With a client subnet: the ECS scope the answer claims (RFC 7871 §7.2.1).
    #[serde(default)]
    pub ecs_scope: Option<u8>,
}

/// One of the name's groups in `ctl explain`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupExplanation {
    /// The group's name.
    pub name: String,
    /// Its priority in effect (higher is preferred): the operator's, else the configured one.
    pub priority: i32,
    /// "forced up", "forced down", "drained", held (preempt off) until failed back, or else
    /// "min_healthy N".
    pub state: String,
    /// (target, address, eligible, why) for members of the asked family.
    pub members: Vec<(String, String, bool, String)>,
}

impl Reply {
    /// A successful reply saying `message`, with no report.
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply { ok: true, message: message.into(), status: None, explain: None, stats: None }
    }

    /// A failed reply: `message` says why.
    pub fn error(message: impl Into<String>) -> Reply {
        Reply { ok: false, message: message.into(), status: None, explain: None, stats: None }
    }
}

/// `ctl status`: targets, groups, names, views, answer sets, zones and the fleet, as the controller
/// holds them now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// Every configured target.
    pub targets: Vec<TargetStatus>,
    /// Every configured group.
    pub groups: Vec<GroupStatus>,
    /// The default view's names the listing asks for, with what each answers now.
    pub names: Vec<NameStatus>,
    /// Every view, with the listed names it answers differently.
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
    /// `[feeds]`: per feed, its source, last batch and whether it is stale.
    #[serde(default)]
    pub feeds: Vec<(String, crate::feeds::FeedStatus)>,
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
    /// The zone's apex, dotted with a trailing dot.
    pub apex: String,
    /// "off", "pass" or "sign".
    pub dnssec: String,
    /// `sign`: the key (file, tag, algorithm number), the signatures XDP holds for the
    /// zone, their validity and when the next renewal is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningStatus>,
}

/// A signed zone's key and the signatures (RRSIG, RFC 4034) XDP holds for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningStatus {
    /// The key's `.key` file (the `.private` file lies beside it).
    pub key_file: String,
    /// The key's tag (RFC 4034 Appendix B), as every signature carries it.
    pub key_tag: u16,
    /// The DNSSEC algorithm number: 13 (ECDSAP256SHA256) or 15 (ED25519).
    pub algorithm: u8,
    /// RRSIG records XDP holds for the zone now.
    pub signatures: usize,
    /// How long a signature is valid from its making, in seconds (`signature_validity`); each is
    /// renewed once half of it has passed.
    pub validity_seconds: u64,
    /// RFC 3339, or "-" while there are none.
    pub next_renewal: String,
}

/// The country/AS database as the running config read it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeoStatus {
    /// The database file.
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
    /// The TTL of its records, in seconds.
    pub ttl: u32,
    /// (name, view) entries answering from it.
    pub names: usize,
    /// The A records answered now.
    pub a: Vec<String>,
    /// The AAAA records answered now.
    pub aaaa: Vec<String>,
    /// Where the A records come from now: "static", "group G", or what happens while no group serves
    /// (the all-down policy, or queries passed to the DNS server).
    pub a_from: String,
    /// As `a_from`, for the AAAA records.
    pub aaaa_from: String,
}

/// One target given by `host`, as last resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolvedStatus {
    /// The target's name (`[targets.NAME]`).
    pub target: String,
    /// The host name it is given by (`host`).
    pub host: String,
    /// The addresses in use, each a target `TARGET@ADDRESS`.
    pub addresses: Vec<std::net::IpAddr>,
    /// RFC 3339, or empty if it never resolved.
    pub resolved_at: String,
    /// Why it does not resolve now, and since when (RFC 3339); empty if it does.
    pub error: String,
    /// When it stopped resolving (RFC 3339); empty while it resolves.
    pub failing_since: String,
    /// Addresses of the last answer not used, and why (special-purpose, over the cap).
    #[serde(default)]
    pub left_out: String,
}

/// A view (`[views.NAME]`) in `ctl status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ViewStatus {
    /// The view's name.
    pub name: String,
    /// The id XDP knows the view by (never 0, the default view's).
    pub id: u32,
    /// Source prefixes in the view: hand-written, from `source_files` and from the geoip database.
    pub prefixes: usize,
    /// Per name the view answers differently: (name, A now, from where).
    pub names: Vec<NameStatus>,
}

/// A target in `ctl status`: its state, why, and its checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    /// The target's name (`NAME@ADDRESS` for each address of a target given by `host`).
    pub name: String,
    /// The address answers carry (and checks probe, unless `check_address` is set).
    pub address: IpAddr,
    /// Where its checks probe, when not `address`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_address: Option<IpAddr>,
    /// up, down, held, forced-up, forced-down, drain.
    pub state: String,
    /// Whether every check is up (its own health, before overrides, holds and a fleet quorum).
    pub healthy: bool,
    /// Whether answers may include it now: its health with overrides, holds and a fleet quorum applied.
    pub in_answers: bool,
    /// Why it is in its state: the failing check and what it saw, or "all checks pass".
    pub reason: String,
    /// When its health last changed (RFC 3339).
    pub since: String,
    /// Its weight in effect (the operator's, a feed's or the config's, scaled during a slow start):
    /// under the weighted policy, how often replies start with its record, relative to the other
    /// members'.
    pub weight: u32,
    /// Whether it rejoins answers by itself after being down (false: held until `failback`); the
    /// operator's setting, else the configured one.
    pub preempt: bool,
    /// Its checks, in the target's check order.
    pub checks: Vec<CheckStatus>,
}

/// One check of a target in `ctl status`: its state, last result and counts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckStatus {
    /// The check's name (`[checks.NAME]`).
    pub name: String,
    /// Up or down, after `rise` and `fall`.
    pub up: bool,
    /// The last result that judged the target: why it failed or what succeeded; "not run yet" before one.
    pub last: String,
    /// How long that run took, in milliseconds; null before the first result.
    pub latency_ms: Option<f64>,
    /// Runs that judged the target (local errors not counted).
    pub runs: u64,
    /// Of those runs, the ones that failed.
    pub failures: u64,
    /// Runs that could not judge the target (a local error on this host).
    #[serde(default)]
    pub local_errors: u64,
    /// The current local error, while the check cannot run.
    #[serde(default)]
    pub local_error: Option<String>,
    /// TCP-based checks: how long the last run's connect took, in milliseconds.
    pub tcp_connect_ms: Option<f64>,
    /// TCP-based checks: retransmissions on the last run's connection (TCP_INFO).
    pub tcp_retransmits: Option<u32>,
}

/// A group in `ctl status`: its priority, policy, state and members.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group's name (`[groups.NAME]`).
    pub name: String,
    /// Its priority in effect (higher is preferred): the operator's, else the configured one.
    pub priority: i32,
    /// The priority the config gives it.
    pub configured_priority: i32,
    /// How its members' records are picked: "all", "first", "round-robin", "weighted", "random" or "sticky".
    pub policy: String,
    /// up, down, held, forced-up, forced-down, drain.
    pub state: String,
    /// Members that answers may include now (see `TargetStatus::in_answers`).
    pub eligible: usize,
    /// Members in all.
    pub members: usize,
    /// Eligible members it needs to serve.
    pub min_healthy: usize,
    /// Whether it serves again by itself after losing its minimum (false: held until `failback`).
    pub preempt: bool,
}

/// A name in `ctl status`: its TTL and what it answers now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameStatus {
    /// The name, dotted with a trailing dot.
    pub name: String,
    /// The TTL of its records, in seconds.
    pub ttl: u32,
    /// The A records it answers with now.
    pub a: Vec<String>,
    /// The AAAA records it answers with now.
    pub aaaa: Vec<String>,
    /// The group serving A / AAAA now, or what the all-down policy did.
    pub a_from: String,
    /// As `a_from`, for AAAA.
    pub aaaa_from: String,
}

/// A time as `ctl` shows it: RFC 3339 in UTC, to the second.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A request from a client, with where to send the reply.
pub type Incoming = (Request, oneshot::Sender<Reply>);

/// Listens on `path` (replacing a stale socket), root only (mode 0600 and
/// SO_PEERCRED), and forwards requests.
pub fn listen(
    path: &Path,
    access: &Access,
    requests: mpsc::Sender<Incoming>,
    tap: Option<crate::tap::Tap>,
) -> Result<SocketGuard> {
    let listener = local_socket::bind(path, access)?;
    local_socket::serve(listener, access.clone(), &local_socket::CONTROL, "control", move |stream, lease| {
        let (requests, tap) = (requests.clone(), tap.clone());
        async move {
            if let Err(e) = serve_one(stream, lease, requests, tap).await {
                warn!(error = %format!("{e:#}"), "control connection");
            }
        }
    });
    Ok(SocketGuard(path.to_path_buf()))
}

/// Longest request line: the largest request is a few hundred bytes.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

async fn serve_one(
    mut stream: UnixStream,
    lease: Lease,
    requests: mpsc::Sender<Incoming>,
    tap: Option<crate::tap::Tap>,
) -> Result<()> {
    let mut line = String::new();
    {
        let mut reader = BufReader::new((&mut stream).take(MAX_REQUEST_BYTES));
        tokio::select! {
            read = tokio::time::timeout(CONTROL_IDLE_TIMEOUT * 5, reader.read_line(&mut line)) => {
                read.context("no request within the time allowed")??;
            }
            _ = lease.evicted() => bail!("closed to make room for another connection"),
        }
    }
    lease.touch();
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(Request::Capture(capture)) => {
            return crate::tap::capture::serve(stream, tap.as_ref(), &capture, &lease).await
        }
        Ok(request) => {
            let (tx, rx) = oneshot::channel();
            requests.send((request, tx)).await.context("controller gone")?;
            rx.await.context("controller dropped the request")?
        }
        Err(e) => Reply::error(format!("bad request: {e}")),
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    stream.write_all(text.as_bytes()).await?;
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
