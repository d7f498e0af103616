//! The health part of the config: checks, targets (backends) and groups.

use std::{collections::BTreeMap, net::IpAddr, time::Duration};

use primwatch_common::MAX_RECORDS;
use regex::Regex;
use serde::Deserialize;
use toml::Spanned;

use super::{error::At, ConfigError};

/// How a health check probes a target.
#[derive(Debug, Clone)]
pub enum CheckKind {
    /// TCP connect; optionally send bytes and require a reply matching a regex.
    Tcp {
        /// `port`: the TCP port to connect to (required).
        port: u16,
        /// `send`: bytes written once connected (`\n`, `\r`, `\t`, `\\` unescaped).
        send: Option<Vec<u8>>,
        /// `expect`: a regex the reply must match, read until it matches, the peer closes or
        /// more than 64 KiB came; None: connecting (and sending) is enough.
        expect: Option<Regex>,
    },
    /// HTTP or HTTPS request; the status must be in `ok_status`.
    Http(Box<HttpCheck>),
    /// ICMP (or ICMPv6) echo.
    Icmp,
    /// An external command; exit status 0 means up. Gets the target's address and
    /// name as arguments and as PRIMWATCH_TARGET_ADDRESS / PRIMWATCH_TARGET_NAME; runs
    /// as `run_as` (`server.exec_user`, set once the whole config is read).
    Exec {
        /// `command`: the program and its arguments (not empty).
        command: Vec<String>,
        /// The user it runs as; None until the whole config is read.
        run_as: Option<crate::sys::process::RunAs>,
    },
    /// `type = "feed"`: the verdicts of `[feeds.FEED]` (a health feed) on this target;
    /// no probe runs. Rise and fall default to 1: a batch is a verdict.
    Feed {
        /// `feed`: the feed's name (one that may say `health`).
        feed: String,
    },
}

/// An `http` or `https` check's settings (`[checks.X]`).
#[derive(Debug, Clone)]
pub struct HttpCheck {
    /// `type = "https"`: the request goes over TLS.
    pub tls: bool,
    /// `port`: default 80 (http) or 443 (https).
    pub port: u16,
    /// `method`, upper-cased; default GET.
    pub method: reqwest::Method,
    /// `path`: the request target, starting with '/' (RFC 9112 §3.2); default "/".
    pub path: String,
    /// Host header (and, for HTTPS, the TLS server name unless `sni` is set).
    pub host: Option<String>,
    /// `sni`: the TLS server name, in place of `host`.
    pub sni: Option<String>,
    /// `tls_verify`: whether the server's certificate is verified; default true.
    pub tls_verify: bool,
    /// PEM certificates (`ca_file`, read and checked when the config is loaded) that
    /// replace the system's roots for this check: an internal CA.
    pub ca_pem: Option<Vec<u8>>,
    /// `ok_status`: the status codes that mean up, 200-599 (a 1xx is never final, RFC 9110
    /// §15.2); default [200].
    pub ok_status: Vec<u16>,
    /// `body`: a regex the response body must match (at most 64 KiB of it is read); None: the
    /// status alone decides.
    pub body: Option<Regex>,
    /// `user_agent`: default "primwatch/VERSION".
    pub user_agent: String,
    /// The check's extra request headers (`headers`), checked when loaded.
    pub headers: Vec<(String, String)>,
    /// The request head of a plain HTTP check but for Host, built once when loaded:
    /// User-Agent, Accept, Connection: close and the extra headers.
    pub plain_head: (http::uri::PathAndQuery, http::HeaderMap),
}

/// One `[checks.X]` table: how a target is probed, and how often.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// `type` and the options that go with it.
    pub kind: CheckKind,
    /// `interval`: time between runs, 100 ms to 1 h; default 2 s.
    pub interval: Duration,
    /// After a failed run, the next comes this soon (until a run succeeds): a dead
    /// backend is confirmed and a recovered one noticed without waiting a full
    /// interval (HAProxy's fastinter/downinter). Default: interval / 4, at least 100 ms.
    pub retry_interval: Duration,
    /// `timeout`: a run not done by then fails; above 0 and at most the interval, default 1 s.
    pub timeout: Duration,
    /// Consecutive successes to go up.
    pub rise: u32,
    /// Consecutive failures to go down.
    pub fall: u32,
    /// Each run starts up to this much later than the interval says (spreads load).
    pub jitter: Duration,
    /// State before the first result.
    pub initially_up: bool,
}

/// One target (backend) with an address: `[targets.X] address`, or one address of a target
/// given by `host` (see `Config::expand`).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetConfig {
    /// The address answers carry and checks probe.
    pub address: IpAddr,
    /// `weight`: its share under the `weighted` policy, 1 to 1,000,000; default 1.
    pub weight: u32,
    /// `checks`: the names of the checks run on it, none twice; it is healthy while every one
    /// is up (a target with none is always healthy).
    pub checks: Vec<String>,
    /// After going down and coming back, rejoin answers on its own (true) or only
    /// when an operator fails it back (false).
    pub preempt: bool,
    /// `[fleet]`: up only while enough live nodes see it up (this node's own view
    /// included); None: this node's checks alone decide.
    pub quorum: Option<Quorum>,
    /// `[fleet]`, with a quorum: only this many live nodes check it (chosen by
    /// rendezvous hashing over the live nodes, the same choice on every node); the
    /// quorum counts their views. None: every node checks it.
    pub checked_by: Option<usize>,
    /// `check_address`: where its checks probe, while answers carry `address` (a
    /// management address, a status service); None: `address`.
    pub check_address: Option<IpAddr>,
    /// `calculated`: its health is computed from other targets' (no checks of its own).
    pub calculated: Option<Calculated>,
    /// `slow_start` (its own, else the longest of its groups'): after it comes back, its
    /// weight ramps from a tenth to full over this window, in ten steps. None: at once.
    pub slow_start: Option<Duration>,
}

/// `[targets.X] calculated`: health computed from other targets (Route 53's calculated
/// health checks), each of which is a target given by address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Calculated {
    /// `{ at_least = N, of = [...] }`: up while at least N of the listed targets are
    /// eligible (healthy, or forced up; not forced down, drained or held).
    AtLeast {
        /// N: 1 to the length of `of`.
        count: usize,
        /// The targets counted (none twice).
        of: Vec<String>,
    },
    /// `{ inverse_of = "T" }`: up while T is not eligible (a maintenance page while the
    /// site is down).
    InverseOf(String),
}

impl TargetConfig {
    /// Where its checks probe: `check_address`, else `address`.
    pub fn probe_address(&self) -> IpAddr {
        self.check_address.unwrap_or(self.address)
    }

    /// Sharded: only `checked_by` of the fleet's live nodes check it (the rest count
    /// their views). The one statement of that rule.
    pub fn is_sharded(&self) -> bool {
        self.checked_by.is_some()
    }
}

/// `[targets.X] quorum`: how many of the live nodes checking a target must see it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quorum {
    /// `quorum = N`: at least N nodes, however many are live.
    Nodes(usize),
    /// `quorum = "A/B"`: at least A/B of the live nodes (rounded up, at least one), so
    /// that a fleet that lost nodes still decides (Route 53's checker threshold).
    Fraction {
        /// A: at least 1 and at most B.
        numerator: usize,
        /// B: at most 64.
        denominator: usize,
    },
}

impl Quorum {
    /// How many "up" views are needed while `live` nodes (this one included) hold a
    /// view of the target.
    pub fn needed(self, live: usize) -> usize {
        match self {
            Quorum::Nodes(n) => n,
            Quorum::Fraction { numerator, denominator } => (numerator * live).div_ceil(denominator).max(1),
        }
    }

    /// Parses `quorum`'s value: a whole number of nodes (1..=64) or a fraction "A/B"
    /// with 0 < A <= B <= 64.
    fn parse(value: &RawQuorum) -> Result<Quorum, String> {
        match value {
            RawQuorum::Nodes(n) if (1..=64).contains(n) => Ok(Quorum::Nodes(*n as usize)),
            RawQuorum::Nodes(_) => Err("quorum must be between 1 and 64 nodes, or a fraction such as \"1/2\"".into()),
            RawQuorum::Fraction(text) => {
                let parsed = text
                    .split_once('/')
                    .and_then(|(a, b)| Some((a.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?)));
                match parsed {
                    Some((numerator, denominator))
                        if numerator >= 1 && numerator <= denominator && denominator <= 64 =>
                    {
                        Ok(Quorum::Fraction { numerator, denominator })
                    }
                    _ => Err(format!(
                        "quorum = \"{text}\" is not a fraction A/B of the live nodes with 0 < A <= B <= 64"
                    )),
                }
            }
        }
    }
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Quorum::Nodes(n) => write!(f, "{n}"),
            Quorum::Fraction { numerator, denominator } => write!(f, "{numerator}/{denominator}"),
        }
    }
}

/// `quorum`'s two spellings.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawQuorum {
    Nodes(i64),
    Fraction(String),
}

/// A target given by DNS name (`host`): every address the name resolves to becomes a
/// target of its own, `NAME@ADDRESS`, with these settings (see `Config::expand`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTarget {
    /// Lower case, without the final dot.
    pub host: String,
    /// `weight`, given to each of its addresses (1 to 1,000,000; default 1).
    pub weight: u32,
    /// `checks`, run on each of its addresses.
    pub checks: Vec<String>,
    /// `preempt`, as `TargetConfig::preempt` (default true).
    pub preempt: bool,
    /// `slow_start`, as `TargetConfig::slow_start`.
    pub slow_start: Option<Duration>,
}

/// `[groups.X] policy`: which of a group's eligible members an answer carries; default
/// `round-robin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Every eligible member (up to max_answers).
    All,
    /// The first eligible members in the order listed.
    First,
    /// A different start member per query, in turn.
    RoundRobin,
    /// Start members drawn in proportion to weight.
    Weighted,
    /// Start members drawn uniformly.
    Random,
    /// The start member chosen by the client's prefix (`[sticky]` lengths; the ECS
    /// subnet when the query has one), weighted: the same client prefix gets the same
    /// member while it stays eligible, and a member leaving moves only its own clients.
    Sticky,
}

/// One `[groups.X]` table: targets answered together, under a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// `members`: target names, in the order listed; a target given by host is replaced by its
    /// `NAME@ADDRESS` targets as of the last resolution (see `Config::expand`).
    pub members: Vec<String>,
    /// Higher is preferred.
    pub priority: i32,
    /// `policy`: default round-robin.
    pub policy: Policy,
    /// `max_answers`: the most members one answer carries, 1 to `MAX_RECORDS`; default
    /// `MAX_RECORDS` for `all`, else 1.
    pub max_answers: usize,
    /// The group serves only while at least this many members are eligible.
    pub min_healthy: usize,
    /// After losing and regaining min_healthy, take over again on its own (true) or
    /// only when an operator fails it back (false).
    pub preempt: bool,
}

// ---- as written ---------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub(super) struct RawCheck {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    interval: Option<Spanned<String>>,
    retry_interval: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    rise: Option<Spanned<u32>>,
    fall: Option<Spanned<u32>>,
    jitter: Option<Spanned<String>>,
    initial: Option<Spanned<String>>,
    port: Option<Spanned<u16>>,
    // tcp
    send: Option<String>,
    expect: Option<Spanned<String>>,
    // http / https
    method: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    sni: Option<String>,
    tls_verify: Option<bool>,
    ca_file: Option<Spanned<std::path::PathBuf>>,
    ok_status: Option<Spanned<Vec<u16>>>,
    body: Option<Spanned<String>>,
    user_agent: Option<Spanned<String>>,
    headers: Option<Spanned<BTreeMap<String, String>>>,
    // exec
    command: Option<Spanned<Vec<String>>>,
    // feed
    feed: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTarget {
    address: Option<Spanned<String>>,
    /// A DNS name instead of an address: each address it resolves to is a member.
    host: Option<Spanned<String>>,
    weight: Option<Spanned<u32>>,
    #[serde(default)]
    checks: Vec<Spanned<String>>,
    preempt: Option<bool>,
    quorum: Option<Spanned<RawQuorum>>,
    checked_by: Option<Spanned<u32>>,
    check_address: Option<Spanned<String>>,
    calculated: Option<Spanned<RawCalculated>>,
    slow_start: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCalculated {
    at_least: Option<usize>,
    of: Option<Vec<String>>,
    inverse_of: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGroup {
    members: Spanned<Vec<Spanned<String>>>,
    priority: Option<i32>,
    policy: Option<Policy>,
    max_answers: Option<Spanned<usize>>,
    min_healthy: Option<Spanned<usize>>,
    preempt: Option<bool>,
    slow_start: Option<Spanned<String>>,
}

/// The most a target's `weight` may be (and an operator's or a feed's weight).
pub const MAX_WEIGHT: u32 = 1_000_000;

/// A check's `interval` when it sets none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// A check's `timeout` when it sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
pub(super) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Consecutive results needed to change state, unless a check says otherwise: one
/// stray timeout does not pull a backend, one lucky answer does not restore it.
pub const DEFAULT_RISE_FALL: u32 = 2;
/// The most consecutive results `rise` and `fall` may ask for.
pub(super) const MAX_RISE_FALL: u32 = 100;

/// The fixed part of a plain HTTP check's request (see `HttpCheck::plain_head`); every
/// part was checked before this is called.
fn plain_head(check: &HttpCheck) -> (http::uri::PathAndQuery, http::HeaderMap) {
    use http::{header, HeaderValue};
    let mut head = http::HeaderMap::new();
    let value = |v: &str| HeaderValue::from_str(v).unwrap_or_else(|_| HeaderValue::from_static(""));
    head.insert(header::USER_AGENT, value(&check.user_agent));
    head.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    head.insert(header::CONNECTION, HeaderValue::from_static("close"));
    for (name, v) in &check.headers {
        if let Ok(name) = header::HeaderName::from_bytes(name.as_bytes()) {
            head.append(name, value(v));
        }
    }
    let target = check.path.parse().unwrap_or_else(|_| http::uri::PathAndQuery::from_static("/"));
    (target, head)
}

/// A header value from the config (`host`, `user_agent`): no CR, LF or other control
/// characters, which would end the header and inject others (RFC 9110 §5.5).
fn header_value(raw: &Option<Spanned<String>>, key: &str, at: &At) -> Result<Option<String>, ConfigError> {
    let Some(value) = raw else { return Ok(None) };
    if http::HeaderValue::from_str(value.get_ref()).is_err() {
        return Err(at(
            value.span(),
            format!("{key} {:?} is not a valid HTTP header value (control characters)", value.get_ref()),
        ));
    }
    Ok(Some(value.get_ref().clone()))
}

/// The check's extra request headers: names are tokens, values free of control
/// characters (RFC 9110 §5.1, §5.5), in the order given (sorted by name).
fn headers(raw: Option<Spanned<BTreeMap<String, String>>>, at: &At) -> Result<Vec<(String, String)>, ConfigError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let span = raw.span();
    raw.into_inner()
        .into_iter()
        .map(|(name, value)| {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(at(span.clone(), format!("headers: {name:?} is not a valid HTTP header name")));
            }
            if http::HeaderValue::from_str(&value).is_err() {
                return Err(at(
                    span.clone(),
                    format!("headers: the value of {name} is not a valid HTTP header value (control characters)"),
                ));
            }
            Ok((name, value))
        })
        .collect()
}

/// The PEM certificates in `file` (relative paths from the config's directory).
fn read_ca_file(
    name: &Spanned<String>,
    file: &Spanned<std::path::PathBuf>,
    config_dir: &std::path::Path,
    at: &At,
) -> Result<Vec<u8>, ConfigError> {
    let path = config_dir.join(file.get_ref());
    let key = format!("checks.{}.ca_file", name.get_ref());
    let pem =
        std::fs::read(&path).map_err(|e| at(file.span(), format!("{key}: cannot read {}: {e}", path.display())))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        Ok(_) => Err(at(file.span(), format!("{key}: no PEM certificate in {}", path.display()))),
        Err(e) => Err(at(file.span(), format!("{key}: {} is not a PEM certificate bundle: {e}", path.display()))),
    }
}

pub(super) fn parse_check(
    name: &Spanned<String>,
    raw: RawCheck,
    config_dir: &std::path::Path,
    at: &At,
) -> Result<CheckConfig, ConfigError> {
    let Timing { interval, retry_interval, timeout, jitter, mut rise, mut fall, initially_up } =
        parse_timing(name, &raw, at)?;
    let (rise_set, fall_set) = (raw.rise.is_some(), raw.fall.is_some());
    let kind = parse_kind(name, raw, config_dir, at)?;
    if let CheckKind::Feed { .. } = kind {
        // A feed's batch is already a verdict; its program did its own counting.
        rise = if rise_set { rise } else { 1 };
        fall = if fall_set { fall } else { 1 };
    }
    Ok(CheckConfig { kind, interval, retry_interval, timeout, rise, fall, jitter, initially_up })
}

/// A check's schedule and rise/fall, as `CheckConfig` holds them.
struct Timing {
    interval: Duration,
    retry_interval: Duration,
    timeout: Duration,
    jitter: Duration,
    rise: u32,
    fall: u32,
    initially_up: bool,
}

/// `interval`, `timeout` (above 0, at most the interval), `jitter` (below it),
/// `retry_interval` (`MIN_INTERVAL` to the interval), `rise`/`fall` (1 to
/// `MAX_RISE_FALL`) and `initial`.
fn parse_timing(name: &Spanned<String>, raw: &RawCheck, at: &At) -> Result<Timing, ConfigError> {
    use super::limits::{duration_or, CHECK_INTERVAL, CHECK_JITTER, CHECK_RETRY_INTERVAL, CHECK_TIMEOUT};
    let interval = duration_or(&raw.interval, DEFAULT_INTERVAL, "interval", CHECK_INTERVAL, at)?;
    let timeout = duration_or(&raw.timeout, DEFAULT_TIMEOUT, "timeout", CHECK_TIMEOUT, at)?;
    let jitter = duration_or(&raw.jitter, Duration::ZERO, "jitter", CHECK_JITTER, at)?;
    let retry_interval =
        duration_or(&raw.retry_interval, (interval / 4).max(MIN_INTERVAL), "retry_interval", CHECK_RETRY_INTERVAL, at)?;
    let span_of = |s: &Option<Spanned<String>>| s.as_ref().map_or(name.span(), |s| s.span());
    if timeout.is_zero() || timeout > interval {
        return Err(at(span_of(&raw.timeout), "timeout must be above 0 and at most the interval".into()));
    }
    if retry_interval < MIN_INTERVAL || retry_interval > interval {
        return Err(at(
            span_of(&raw.retry_interval),
            format!("retry_interval must be between {}ms and the interval", MIN_INTERVAL.as_millis()),
        ));
    }
    if jitter >= interval {
        return Err(at(span_of(&raw.jitter), "jitter must be below the interval".into()));
    }
    // More than a hundred results in a row would keep a dead backend in the answers
    // for minutes: no failover at all, by a typo.
    let positive = |v: &Option<Spanned<u32>>, what: &str| -> Result<u32, ConfigError> {
        match v {
            None => Ok(DEFAULT_RISE_FALL),
            Some(n) if (1..=MAX_RISE_FALL).contains(n.get_ref()) => Ok(*n.get_ref()),
            Some(n) => Err(at(n.span(), format!("{what} must be at least 1 and at most {MAX_RISE_FALL}"))),
        }
    };
    let rise = positive(&raw.rise, "rise")?;
    let fall = positive(&raw.fall, "fall")?;
    let initially_up = match raw.initial.as_ref().map(|s| s.get_ref().as_str()) {
        None | Some("up") => true,
        Some("down") => false,
        Some(other) => {
            return Err(at(span_of(&raw.initial), format!("initial must be \"up\" or \"down\", not '{other}'")))
        }
    };
    Ok(Timing { interval, retry_interval, timeout, jitter, rise, fall, initially_up })
}

/// A regex option (`expect`, `body`). Err: not a valid regex, at its line.
fn regex_of(r: &Option<Spanned<String>>, at: &At) -> Result<Option<Regex>, ConfigError> {
    r.as_ref()
        .map(|text| Regex::new(text.get_ref()).map_err(|e| at(text.span(), format!("bad regex: {e}"))))
        .transpose()
}

/// `type` and the options of that type; an option of another type is refused (a
/// mistake, not something to ignore).
fn parse_kind(
    name: &Spanned<String>,
    raw: RawCheck,
    config_dir: &std::path::Path,
    at: &At,
) -> Result<CheckKind, ConfigError> {
    let kind_span = raw.kind.span();
    let kind_name = raw.kind.get_ref().clone();
    let foreign = |present: bool, key: &str| -> Result<(), ConfigError> {
        if present {
            Err(at(kind_span.clone(), format!("'{key}' does not apply to a {kind_name} check")))
        } else {
            Ok(())
        }
    };
    let http_only = raw.method.is_some()
        || raw.path.is_some()
        || raw.host.is_some()
        || raw.sni.is_some()
        || raw.tls_verify.is_some()
        || raw.ca_file.is_some()
        || raw.ok_status.is_some()
        || raw.body.is_some()
        || raw.user_agent.is_some()
        || raw.headers.is_some();
    let send_expect = raw.send.is_some() || raw.expect.is_some();
    foreign(raw.feed.is_some() && kind_name != "feed", "feed")?;
    match kind_name.as_str() {
        "tcp" => {
            foreign(http_only, "an HTTP option")?;
            foreign(raw.command.is_some(), "command")?;
            let port = raw.port.ok_or_else(|| at(kind_span.clone(), "a tcp check needs a port".into()))?;
            Ok(CheckKind::Tcp {
                port: *port.get_ref(),
                send: raw.send.map(unescape),
                expect: regex_of(&raw.expect, at)?,
            })
        }
        "http" | "https" => {
            foreign(send_expect, "send/expect")?;
            foreign(raw.command.is_some(), "command")?;
            Ok(CheckKind::Http(Box::new(parse_http(name, raw, kind_name == "https", config_dir, at)?)))
        }
        "icmp" => {
            foreign(http_only, "an HTTP option")?;
            foreign(raw.port.is_some(), "port")?;
            foreign(send_expect, "send/expect")?;
            foreign(raw.command.is_some(), "command")?;
            Ok(CheckKind::Icmp)
        }
        "exec" => {
            foreign(http_only, "an HTTP option")?;
            foreign(raw.port.is_some(), "port")?;
            foreign(send_expect, "send/expect")?;
            let command = raw.command.ok_or_else(|| at(kind_span.clone(), "an exec check needs a command".into()))?;
            if command.get_ref().is_empty() {
                return Err(at(command.span(), "command must name a program".into()));
            }
            if let Some(why) = crate::sys::process::unsafe_command(&command.get_ref()[0]) {
                return Err(at(command.span(), format!("checks.{}.command: {why}", name.get_ref())));
            }
            Ok(CheckKind::Exec { command: command.into_inner(), run_as: None })
        }
        "feed" => {
            foreign(http_only, "an HTTP option")?;
            foreign(raw.port.is_some(), "port")?;
            foreign(send_expect, "send/expect")?;
            foreign(raw.command.is_some(), "command")?;
            let feed = raw.feed.ok_or_else(|| at(kind_span.clone(), "a feed check needs feed = \"FEED\"".into()))?;
            Ok(CheckKind::Feed { feed: feed.into_inner() })
        }
        other => Err(at(kind_span, format!("check type '{other}' is not one of tcp, http, https, icmp, exec, feed"))),
    }
}

/// An `http`/`https` check's options: `method`, `path` (a valid origin-form request
/// target, RFC 9112 §3.2), `ca_file` (https only), `ok_status` (final codes 200-599;
/// default 200), `host`, `user_agent`, `headers` (refused if they would end a header
/// line early), `sni`, `tls_verify`, `body`.
fn parse_http(
    name: &Spanned<String>,
    raw: RawCheck,
    tls: bool,
    config_dir: &std::path::Path,
    at: &At,
) -> Result<HttpCheck, ConfigError> {
    let method = match &raw.method {
        None => reqwest::Method::GET,
        Some(m) => reqwest::Method::from_bytes(m.get_ref().to_ascii_uppercase().as_bytes())
            .map_err(|_| at(m.span(), format!("'{}' is not an HTTP method", m.get_ref())))?,
    };
    let path = match &raw.path {
        None => "/".to_string(),
        Some(p) if p.get_ref().starts_with('/') && p.get_ref().parse::<http::uri::PathAndQuery>().is_ok() => {
            p.get_ref().clone()
        }
        Some(p) if p.get_ref().starts_with('/') => return Err(at(
            p.span(),
            "path is not a valid request target (RFC 9112 §3.2: no spaces or control characters; percent-encode them)"
                .into(),
        )),
        Some(p) => return Err(at(p.span(), "path must start with '/'".into())),
    };
    let ca_pem = match &raw.ca_file {
        None => None,
        Some(_) if !tls => return Err(at(raw.kind.span(), "'ca_file' applies to https checks".into())),
        Some(file) => Some(read_ca_file(name, file, config_dir, at)?),
    };
    let ok_status = match &raw.ok_status {
        None => vec![200],
        Some(list) => {
            if list.get_ref().is_empty() || list.get_ref().iter().any(|s| !(100..=599).contains(s)) {
                return Err(at(list.span(), "ok_status must list HTTP status codes (100-599)".into()));
            }
            if let Some(interim) = list.get_ref().iter().find(|s| (100..200).contains(*s)) {
                return Err(at(
                    list.span(),
                    format!(
                        "ok_status lists {interim}: a 1xx reply is never final (RFC 9110 §15.2); list 2xx-5xx codes"
                    ),
                ));
            }
            list.get_ref().clone()
        }
    };
    let mut check = HttpCheck {
        tls,
        port: raw.port.map_or(if tls { 443 } else { 80 }, |p| *p.get_ref()),
        method,
        path,
        host: header_value(&raw.host, "host", at)?,
        sni: raw.sni,
        tls_verify: raw.tls_verify.unwrap_or(true),
        ca_pem,
        ok_status,
        body: regex_of(&raw.body, at)?,
        user_agent: header_value(&raw.user_agent, "user_agent", at)?
            .unwrap_or_else(|| format!("primwatch/{}", env!("CARGO_PKG_VERSION"))),
        headers: headers(raw.headers, at)?,
        plain_head: (http::uri::PathAndQuery::from_static("/"), http::HeaderMap::new()),
    };
    check.plain_head = plain_head(&check);
    Ok(check)
}

/// `\n`, `\r`, `\t` and `\\` in a `send` string, so line-based protocols can be spoken.
fn unescape(text: String) -> Vec<u8> {
    text.replace("\\r", "\r").replace("\\n", "\n").replace("\\t", "\t").replace("\\\\", "\\").into_bytes()
}

/// A target as written: an address, or a DNS name whose addresses are resolved while
/// running (see `resolve`).
pub(super) enum ParsedTarget {
    Address(TargetConfig),
    Named(NamedTarget),
}

/// Characters a target's name may not contain: `@` joins a named target and one of its
/// addresses (`app@192.0.2.1`).
pub const NAMED_MEMBER_SEPARATOR: char = '@';

pub(super) fn parse_target(
    name: &Spanned<String>,
    raw: RawTarget,
    checks: &BTreeMap<String, CheckConfig>,
    fleet: bool,
    at: &At,
) -> Result<ParsedTarget, ConfigError> {
    if name.get_ref().contains(NAMED_MEMBER_SEPARATOR) {
        return Err(at(
            name.span(),
            format!("target name '{}' contains '@', which names one address of a target given by host", name.get_ref()),
        ));
    }
    let weight = match raw.weight {
        None => 1,
        Some(w) if (1..=MAX_WEIGHT).contains(w.get_ref()) => *w.get_ref(),
        Some(w) => return Err(at(w.span(), format!("weight must be between 1 and {MAX_WEIGHT}"))),
    };
    let mut names = Vec::new();
    for check in raw.checks {
        if !checks.contains_key(check.get_ref()) {
            return Err(at(check.span(), format!("unknown check '{}'", check.get_ref())));
        }
        if names.contains(check.get_ref()) {
            return Err(at(check.span(), format!("check '{}' is listed twice", check.get_ref())));
        }
        names.push(check.into_inner());
    }
    let preempt = raw.preempt.unwrap_or(true);
    let quorum = match &raw.quorum {
        None => None,
        // Spelled out: this node's own checks decide, as without a quorum.
        Some(q) if matches!(q.get_ref(), RawQuorum::Fraction(t) if t == "local") => None,
        Some(q) if !fleet => {
            return Err(at(q.span(), "quorum counts the fleet's nodes: it needs [fleet]".into()));
        }
        Some(q) if raw.host.is_some() => {
            return Err(at(q.span(), "quorum applies to targets given by address, not by host".into()));
        }
        Some(q) => Some(Quorum::parse(q.get_ref()).map_err(|reason| at(q.span(), reason))?),
    };
    let checked_by = match (&raw.checked_by, quorum) {
        (None, _) => None,
        (Some(k), None) => {
            return Err(at(k.span(), "checked_by shards a target's checks over the fleet: it needs a quorum".into()));
        }
        (Some(k), _) if !(1..=64).contains(k.get_ref()) => {
            return Err(at(k.span(), "checked_by must be between 1 and 64 nodes".into()));
        }
        (Some(k), Some(Quorum::Nodes(n))) if n > *k.get_ref() as usize => {
            return Err(at(k.span(), format!("quorum = {n} can never be met by checked_by = {} nodes", k.get_ref())));
        }
        (Some(k), Some(_)) => Some(*k.get_ref() as usize),
    };
    let slow_start = raw
        .slow_start
        .as_ref()
        .map(|text| super::limits::duration_in(text, "slow_start", super::limits::SLOW_START, at))
        .transpose()?;
    let calculated = match &raw.calculated {
        None => None,
        Some(c) => {
            let refuse = |reason: &str| Err(at(c.span(), format!("calculated: {reason}")));
            if !names.is_empty() {
                return refuse("a calculated target has no checks of its own (its health is computed)");
            }
            if quorum.is_some() || raw.host.is_some() {
                return refuse("a calculated target has an address, and no quorum");
            }
            match c.get_ref() {
                RawCalculated { at_least: Some(n), of: Some(of), inverse_of: None } => {
                    if of.is_empty() || !(1..=of.len()).contains(n) {
                        return refuse("at_least must be between 1 and the number of targets in `of`");
                    }
                    Some(Calculated::AtLeast { count: *n, of: of.clone() })
                }
                RawCalculated { at_least: None, of: None, inverse_of: Some(t) } => {
                    Some(Calculated::InverseOf(t.clone()))
                }
                _ => return refuse("give either { at_least = N, of = [\"T\", ...] } or { inverse_of = \"T\" }"),
            }
        }
    };
    match (raw.address, raw.host) {
        (Some(address), None) => {
            let address: IpAddr = address
                .get_ref()
                .parse()
                .map_err(|_| at(address.span(), format!("'{}' is not an IP address", address.get_ref())))?;
            let check_address = match &raw.check_address {
                None => None,
                Some(text) => Some(text.get_ref().parse::<IpAddr>().map_err(|_| {
                    at(text.span(), format!("check_address '{}' is not an IP address", text.get_ref()))
                })?),
            };
            Ok(ParsedTarget::Address(TargetConfig {
                address,
                weight,
                checks: names,
                preempt,
                quorum,
                checked_by,
                check_address,
                calculated,
                slow_start,
            }))
        }
        (None, Some(host)) => {
            let text = host.get_ref().trim_end_matches('.');
            if text.parse::<IpAddr>().is_ok() {
                return Err(at(host.span(), format!("'{text}' is an address: write it as `address`")));
            }
            crate::dns::name::DnsName::parse(text)
                .map_err(|reason| at(host.span(), format!("host '{text}': {reason}")))?;
            if let Some(check_address) = &raw.check_address {
                return Err(at(check_address.span(), "check_address applies to targets given by address".into()));
            }
            Ok(ParsedTarget::Named(NamedTarget {
                host: text.to_ascii_lowercase(),
                weight,
                checks: names,
                preempt,
                slow_start,
            }))
        }
        (Some(address), Some(_)) => {
            Err(at(address.span(), format!("target '{}' has both address and host; give one", name.get_ref())))
        }
        (None, None) => Err(at(name.span(), format!("target '{}' needs an address or a host", name.get_ref()))),
    }
}

/// The health tables, parsed: checks, targets (with an address, or given by host) and
/// groups, with the groups as written (`Declared`, for expanding targets given by host).
pub(super) struct Tables {
    /// Calculated targets, each after those it reads.
    pub calculated_order: Vec<String>,
    pub checks: BTreeMap<String, CheckConfig>,
    pub targets: BTreeMap<String, TargetConfig>,
    pub named_targets: BTreeMap<String, NamedTarget>,
    pub groups: BTreeMap<String, GroupConfig>,
    pub declared: std::sync::Arc<super::Declared>,
}

type RawTables<T> = BTreeMap<Spanned<String>, Spanned<T>>;

/// `[checks.X]`, `[targets.X]` and `[groups.X]`, in that order (each refers to the one
/// before); `in_fleet`: a `[fleet]` table exists (quorums need one).
pub(super) fn parse_tables(
    raw_checks: RawTables<RawCheck>,
    raw_targets: RawTables<RawTarget>,
    raw_groups: RawTables<RawGroup>,
    in_fleet: bool,
    feeds: &BTreeMap<String, super::FeedConfig>,
    config_dir: &std::path::Path,
    at: &At,
) -> Result<Tables, ConfigError> {
    let mut checks = BTreeMap::new();
    for (name, check) in raw_checks {
        let span = check.span();
        let parsed = parse_check(&name, check.into_inner(), config_dir, at)?;
        if let CheckKind::Feed { feed } = &parsed.kind {
            match feeds.get(feed) {
                Some(f) if f.kinds.health => {}
                Some(_) => {
                    return Err(at(
                        span,
                        format!(
                            "checks.{}: feed '{feed}' may not say health (add \"health\" to its kinds)",
                            name.get_ref()
                        ),
                    ))
                }
                None => return Err(at(span, format!("checks.{}: no feed '{feed}' under [feeds]", name.get_ref()))),
            }
        }
        checks.insert(name.into_inner(), parsed);
    }
    let (mut targets, mut named_targets) = (BTreeMap::new(), BTreeMap::new());
    let mut spans = BTreeMap::new();
    for (name, target) in raw_targets {
        spans.insert(name.get_ref().clone(), target.span());
        match parse_target(&name, target.into_inner(), &checks, in_fleet, at)? {
            ParsedTarget::Address(t) => targets.insert(name.into_inner(), t).map(drop),
            ParsedTarget::Named(t) => named_targets.insert(name.into_inner(), t).map(drop),
        };
    }
    let calculated_order = order_calculated(&targets, &named_targets, &spans, at)?;
    let mut groups = BTreeMap::new();
    // A group's slow_start goes to members without their own (the longest if several).
    let own_slow_start: std::collections::BTreeSet<String> = targets
        .iter()
        .filter(|(_, t)| t.slow_start.is_some())
        .map(|(n, _)| n.clone())
        .chain(named_targets.iter().filter(|(_, t)| t.slow_start.is_some()).map(|(n, _)| n.clone()))
        .collect();
    for (name, group) in raw_groups {
        let slow_start = group
            .get_ref()
            .slow_start
            .as_ref()
            .map(|text| super::limits::duration_in(text, "slow_start", super::limits::SLOW_START, at))
            .transpose()?;
        let parsed = parse_group(&name, group.into_inner(), &targets, &named_targets, at)?;
        for member in parsed.members.iter().filter(|m| !own_slow_start.contains(*m)) {
            let slot = match targets.get_mut(member) {
                Some(t) => &mut t.slow_start,
                None => &mut named_targets.get_mut(member).expect("members exist").slow_start,
            };
            *slot = (*slot).max(slow_start);
        }
        groups.insert(name.into_inner(), parsed);
    }
    let declared = std::sync::Arc::new(super::Declared {
        targets: targets.clone(),
        members: groups.iter().map(|(name, g)| (name.clone(), g.members.clone())).collect(),
    });
    // Until they resolve, targets given by host have no addresses.
    for group in groups.values_mut() {
        group.members.retain(|m| targets.contains_key(m));
    }
    Ok(Tables { checks, targets, named_targets, groups, declared, calculated_order })
}

/// The calculated targets in an order where each comes after the calculated targets it
/// reads (so one pass computes them all); a target named that does not exist, is given
/// by host, or a cycle, is refused at the target.
fn order_calculated(
    targets: &BTreeMap<String, TargetConfig>,
    named: &BTreeMap<String, NamedTarget>,
    spans: &BTreeMap<String, std::ops::Range<usize>>,
    at: &At,
) -> Result<Vec<String>, ConfigError> {
    let reads = |calculated: &Calculated| -> Vec<String> {
        match calculated {
            Calculated::AtLeast { of, .. } => of.clone(),
            Calculated::InverseOf(t) => vec![t.clone()],
        }
    };
    for (name, target) in targets {
        let Some(calculated) = &target.calculated else { continue };
        let span = spans.get(name).cloned().unwrap_or(0..0);
        let read = reads(calculated);
        for (i, other) in read.iter().enumerate() {
            if named.contains_key(other) {
                return Err(at(span, format!("calculated: '{other}' is given by host; name targets given by address")));
            }
            if !targets.contains_key(other) {
                return Err(at(span, format!("calculated: no target '{other}'")));
            }
            if read[..i].contains(other) {
                return Err(at(span, format!("calculated: '{other}' is listed twice")));
            }
        }
    }
    // Depth-first, marking targets being visited: meeting one again is a cycle.
    fn visit(
        name: &str,
        targets: &BTreeMap<String, TargetConfig>,
        reads: &dyn Fn(&Calculated) -> Vec<String>,
        state: &mut BTreeMap<String, bool>,
        order: &mut Vec<String>,
    ) -> Result<(), String> {
        match state.get(name) {
            Some(true) => return Ok(()),
            Some(false) => return Err(name.to_string()),
            None => {}
        }
        let Some(calculated) = &targets[name].calculated else { return Ok(()) };
        state.insert(name.to_string(), false);
        for other in reads(calculated) {
            visit(&other, targets, reads, state, order)?;
        }
        state.insert(name.to_string(), true);
        order.push(name.to_string());
        Ok(())
    }
    let (mut state, mut order) = (BTreeMap::new(), Vec::new());
    for name in targets.keys() {
        visit(name, targets, &reads, &mut state, &mut order).map_err(|cycle| {
            at(
                spans.get(name).cloned().unwrap_or(0..0),
                format!("calculated: targets '{name}' and '{cycle}' depend on each other in a cycle"),
            )
        })?;
    }
    Ok(order)
}

pub(super) fn parse_group(
    name: &Spanned<String>,
    raw: RawGroup,
    targets: &BTreeMap<String, TargetConfig>,
    named: &BTreeMap<String, NamedTarget>,
    at: &At,
) -> Result<GroupConfig, ConfigError> {
    let members_span = raw.members.span();
    let mut members = Vec::new();
    for member in raw.members.into_inner() {
        if !targets.contains_key(member.get_ref()) && !named.contains_key(member.get_ref()) {
            return Err(at(
                member.span(),
                format!("group '{}' names unknown target '{}'", name.get_ref(), member.get_ref()),
            ));
        }
        if members.contains(member.get_ref()) {
            return Err(at(member.span(), format!("target '{}' is listed twice", member.get_ref())));
        }
        members.push(member.into_inner());
    }
    if members.is_empty() {
        return Err(at(members_span, format!("group '{}' has no members", name.get_ref())));
    }
    for v6 in [false, true] {
        // Targets given by host are counted when they resolve (see `Config::expand`).
        let n = members.iter().filter(|m| targets.get(*m).is_some_and(|t| t.address.is_ipv6() == v6)).count();
        if n > MAX_RECORDS {
            let family = if v6 { "IPv6" } else { "IPv4" };
            return Err(at(
                members_span,
                format!("group '{}' has {n} {family} members; at most {MAX_RECORDS} per family", name.get_ref()),
            ));
        }
    }
    let policy = raw.policy.unwrap_or(Policy::RoundRobin);
    let default_answers = if policy == Policy::All { MAX_RECORDS } else { 1 };
    let max_answers = match raw.max_answers {
        None => default_answers,
        Some(n) if (1..=MAX_RECORDS).contains(n.get_ref()) => *n.get_ref(),
        Some(n) => return Err(at(n.span(), format!("max_answers must be between 1 and {MAX_RECORDS}"))),
    };
    let min_healthy = match raw.min_healthy {
        None => 1,
        Some(n) if *n.get_ref() >= 1 && *n.get_ref() <= members.len() => *n.get_ref(),
        Some(n) => {
            return Err(at(n.span(), format!("min_healthy must be between 1 and the {} members", members.len())));
        }
    };
    Ok(GroupConfig {
        members,
        priority: raw.priority.unwrap_or(0),
        policy,
        max_answers,
        min_healthy,
        preempt: raw.preempt.unwrap_or(true),
    })
}
