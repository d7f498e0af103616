//! A fleet of nodes sharing operator state through etcd (`[fleet]`): an override made
//! with `ctl` on any node is written under the fleet's prefix and applied by every node
//! from its watch. Without `[fleet]` nothing here runs.
//!
//! Key layout under `prefix` (values are JSON `OverrideRecord`s):
//!
//! ```text
//! PREFIX/overrides/target/NAME/force      up | down | drain | auto
//! PREFIX/overrides/target/NAME/preempt
//! PREFIX/overrides/target/NAME/failback   (an event: releases a hold where it is held)
//! PREFIX/overrides/group/NAME/force | priority | preempt | failback
//! PREFIX/health/NODE/TARGET               up | down: NODE's own checks' view, held
//!                                          under NODE's lease (gone LEASE_TTL after
//!                                          NODE is)
//! ```
//!
//! Fail static: etcd unreachable (at start or later) never stops serving. The node
//! keeps its last-known state and its own checks, retries with back-off (1 s to 4 s),
//! says so in the log and `ctl status`, and on reconnecting writes the overrides made
//! meanwhile (the later write wins) and reads the fleet's state again.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::FleetConfig,
    state::{Action, Kind},
};

/// The longest wait between two attempts to reach etcd: short, so that a node is back
/// in step within seconds of etcd returning (a reconnect costs one read of the
/// overrides, a few keys).
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// How long a node's health views outlive it (its etcd lease), renewed every second.
const LEASE_TTL: i64 = 3;

/// What the controller asks the connection to write.
#[derive(Debug)]
enum Write {
    Override(OverrideRecord),
    /// This node's own view of a target (for targets under a quorum).
    Vote {
        target: String,
        up: bool,
    },
}

/// One override as stored in etcd: what was done, by which node, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideRecord {
    pub kind: Kind,
    pub name: String,
    pub action: Action,
    pub node: String,
    /// Unix milliseconds when the operator made it.
    pub at_ms: u64,
}

impl OverrideRecord {
    pub fn new(kind: Kind, name: &str, action: Action, node: &str) -> OverrideRecord {
        let at_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        OverrideRecord { kind, name: name.to_string(), action, node: node.to_string(), at_ms }
    }

    /// Which of a target's or group's override fields this sets (one key each, so that
    /// a priority change does not undo a force).
    fn field(&self) -> &'static str {
        match self.action {
            Action::Force(_) | Action::Auto => "force",
            Action::Priority(_) => "priority",
            Action::Preempt(_) => "preempt",
            Action::Failback => "failback",
        }
    }

    fn key(&self, prefix: &str) -> String {
        let kind = match self.kind {
            Kind::Target => "target",
            Kind::Group => "group",
        };
        format!("{prefix}/overrides/{kind}/{}/{}", self.name, self.field())
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What the fleet connection tells the controller.
#[derive(Debug)]
pub enum FleetEvent {
    /// An override in etcd: `live` when it was just written (from the watch), not when
    /// it was read again after (re)connecting. A failback is an event, not a state: only
    /// a live one releases a hold (an old one must not release a hold made since).
    Override { record: OverrideRecord, live: bool },
    /// Every other node's views, as read on (re)connecting: target → node → up.
    Votes(BTreeMap<String, BTreeMap<String, bool>>),
    /// One node's view of one target changed, or went (its lease expired: None).
    Vote { node: String, target: String, up: Option<bool> },
}

/// The connection as `ctl status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetStatus {
    pub node: String,
    pub prefix: String,
    pub endpoints: Vec<String>,
    pub connected: bool,
    /// Why not, while not; and since when (unix seconds).
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub since_unix: u64,
    /// Overrides this node made and could not write yet (written on reconnecting).
    #[serde(default)]
    pub pending: usize,
    /// The overrides the fleet holds, as last read, with who set them and when.
    #[serde(default)]
    pub overrides: Vec<OverrideRecord>,
    /// Keys under the prefix that did not parse (ignored).
    #[serde(default)]
    pub invalid: Vec<String>,
}

/// The controller's end of the fleet connection.
pub struct Fleet {
    pub config: FleetConfig,
    writes: mpsc::UnboundedSender<Write>,
    status: Arc<Mutex<FleetStatus>>,
}

impl Fleet {
    /// Starts the connection task; events come back on `events`.
    pub fn start(config: FleetConfig, events: mpsc::Sender<FleetEvent>) -> Fleet {
        let (writes, pending) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(FleetStatus {
            node: config.node.clone(),
            prefix: config.prefix.clone(),
            endpoints: config.endpoints.clone(),
            error: "connecting".into(),
            since_unix: unix_now(),
            ..FleetStatus::default()
        }));
        tokio::spawn(connection(config.clone(), pending, events, status.clone()));
        Fleet { config, writes, status }
    }

    /// Writes an override this node's operator made (queued while etcd is away).
    pub fn publish(&self, kind: Kind, name: &str, action: Action) {
        let _ = self.writes.send(Write::Override(OverrideRecord::new(kind, name, action, &self.config.node)));
    }

    /// Publishes this node's own view of `target` (kept under its lease).
    pub fn vote(&self, target: &str, up: bool) {
        let _ = self.writes.send(Write::Vote { target: target.to_string(), up });
    }

    pub fn status(&self) -> FleetStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Keeps one connection to etcd: read everything, then watch; reconnect with back-off.
async fn connection(
    config: FleetConfig,
    mut writes: mpsc::UnboundedReceiver<Write>,
    events: mpsc::Sender<FleetEvent>,
    status: Arc<Mutex<FleetStatus>>,
) {
    let mut backoff = Duration::from_secs(1);
    // Overrides made here and not written yet, by key (the latest per key), and this
    // node's views (written again under a new lease on every connection).
    let mut unwritten: BTreeMap<String, OverrideRecord> = BTreeMap::new();
    let mut own_votes: BTreeMap<String, bool> = BTreeMap::new();
    let mut next_endpoint = 0;
    loop {
        let mut connected = false;
        let mut local =
            Local { next_endpoint, writes: &mut writes, unwritten: &mut unwritten, own_votes: &mut own_votes };
        let outcome = session(&config, &mut local, &events, &status, &mut connected).await;
        next_endpoint = local.next_endpoint;
        if connected {
            backoff = Duration::from_secs(1); // it worked until now: retry soon
        }
        let why = match outcome {
            Ok(()) => return, // the controller is gone
            Err(e) => format!("{e:#}"),
        };
        {
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            if s.connected || s.error != why {
                warn!(error = %why, retry_in = ?backoff, "fleet: etcd unreachable; serving from the last-known fleet state and local checks");
                s.since_unix = unix_now();
            }
            s.connected = false;
            s.error = why;
            s.pending = unwritten.len();
        }
        // Queue what the operator does meanwhile; try again after the back-off.
        let deadline = tokio::time::Instant::now() + backoff;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                write = writes.recv() => match write {
                    Some(Write::Override(record)) => {
                        unwritten.insert(record.key(&config.prefix), record);
                        status.lock().unwrap_or_else(|e| e.into_inner()).pending = unwritten.len();
                    }
                    Some(Write::Vote { target, up }) => {
                        own_votes.insert(target, up);
                    }
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// What a session takes from the connection task and leaves for the next one.
struct Local<'a> {
    /// The endpoint the next connection tries first.
    next_endpoint: usize,
    writes: &'a mut mpsc::UnboundedReceiver<Write>,
    unwritten: &'a mut BTreeMap<String, OverrideRecord>,
    own_votes: &'a mut BTreeMap<String, bool>,
}

fn vote_key(config: &FleetConfig, target: &str) -> String {
    format!("{}/health/{}/{target}", config.prefix, config.node)
}

/// One connected session: write what is pending and this node's views (under a fresh
/// lease), read the fleet's overrides and the other nodes' views, then watch for
/// changes and write new ones until something fails.
async fn session(
    config: &FleetConfig,
    local: &mut Local<'_>,
    events: &mpsc::Sender<FleetEvent>,
    status: &Arc<Mutex<FleetStatus>>,
    connected: &mut bool,
) -> anyhow::Result<()> {
    // Short timeouts: a request sent to a member that just died fails within a second
    // or two, and the next session goes through the members still up.
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1));
    if let Some((user, password)) = &config.user {
        options = options.with_user(user.clone(), password.clone());
    }
    // One member at a time, starting after the last one used: the client refuses to
    // connect while any endpoint of its list is down, and one dead member of three
    // must change nothing. A member cut off from the quorum fails the reads below
    // (linearizable) and the next session tries the next one.
    let count = config.endpoints.len();
    let mut failures = Vec::new();
    let mut found = None;
    for step in 0..count {
        let i = (local.next_endpoint + step) % count;
        match Client::connect([config.endpoints[i].as_str()], Some(options.clone())).await {
            Ok(client) => {
                found = Some((client, i));
                break;
            }
            Err(e) => failures.push(format!("{}: {e}", config.endpoints[i])),
        }
    }
    let Some((mut client, used)) = found else { anyhow::bail!("no etcd endpoint answers ({})", failures.join("; ")) };
    // Should this session fail, the next starts with the next member.
    local.next_endpoint = used + 1;
    *connected = true;
    // Local overrides made while away are newer than what etcd holds for them.
    while let Some((key, record)) = local.unwritten.pop_first() {
        if let Err(e) = client.put(key.clone(), serde_json::to_vec(&record)?, None).await {
            local.unwritten.insert(key, record);
            return Err(e.into());
        }
    }
    // This node's views live as long as its lease: a dead node's go with it.
    let lease = client.lease_grant(LEASE_TTL, None).await?.id();
    let (mut keeper, mut renewals) = client.lease_keep_alive(lease).await?;
    for (target, up) in local.own_votes.iter() {
        let value = if *up { "up" } else { "down" };
        client.put(vote_key(config, target), value, Some(PutOptions::new().with_lease(lease))).await?;
    }
    let prefix = format!("{}/", config.prefix);
    let overrides = format!("{}/overrides/", config.prefix);
    let health = format!("{}/health/", config.prefix);
    let snapshot = client.get(prefix.clone(), Some(GetOptions::new().with_prefix())).await?;
    let revision = snapshot.header().map_or(0, |h| h.revision());
    let mut held = BTreeMap::new();
    let mut votes: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for kv in snapshot.kvs() {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        if key.starts_with(&overrides) {
            read_record(&key, kv.value(), false, events, &mut held, status).await;
        } else if let Some((node, target, up)) = read_vote(&key, kv.value(), &health, &config.node) {
            votes.entry(target).or_default().insert(node, up);
        }
    }
    let _ = events.send(FleetEvent::Votes(votes)).await;
    {
        let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
        s.connected = true;
        s.error.clear();
        s.since_unix = unix_now();
        s.pending = 0;
        s.overrides = held.values().cloned().collect();
    }
    info!(endpoints = ?config.endpoints, overrides = held.len(), revision, "fleet: connected to etcd");
    let mut stream =
        client.watch(prefix.clone(), Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1))).await?;
    let mut renew = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            message = stream.message() => {
                let Some(response) = message? else { anyhow::bail!("the watch ended") };
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let put = event.event_type() == EventType::Put;
                    if key.starts_with(&overrides) {
                        if put {
                            read_record(&key, kv.value(), true, events, &mut held, status).await;
                        } else {
                            held.remove(&key);
                        }
                    } else if let Some((node, target, up)) =
                        read_vote(&key, if put { kv.value() } else { b"down" }, &health, &config.node)
                    {
                        let _ = events.send(FleetEvent::Vote { node, target, up: put.then_some(up) }).await;
                    }
                }
                status.lock().unwrap_or_else(|e| e.into_inner()).overrides = held.values().cloned().collect();
            }
            _ = renew.tick() => {
                keeper.keep_alive().await?;
            }
            renewal = renewals.message() => {
                if renewal?.is_none_or(|r| r.ttl() <= 0) {
                    anyhow::bail!("the lease on this node's views expired");
                }
            }
            write = local.writes.recv() => match write {
                None => return Ok(()),
                Some(Write::Override(record)) => {
                    let key = record.key(&config.prefix);
                    if let Err(e) = client.put(key.clone(), serde_json::to_vec(&record)?, None).await {
                        local.unwritten.insert(key, record);
                        return Err(e.into());
                    }
                }
                Some(Write::Vote { target, up }) => {
                    local.own_votes.insert(target.clone(), up);
                    let value = if up { "up" } else { "down" };
                    client.put(vote_key(config, &target), value, Some(PutOptions::new().with_lease(lease))).await?;
                }
            },
        }
    }
}

/// Another node's view from a `PREFIX/health/NODE/TARGET` key: (node, target, up).
/// This node's own, and values other than "up"/"down", are none.
fn read_vote(key: &str, value: &[u8], health: &str, me: &str) -> Option<(String, String, bool)> {
    let (node, target) = key.strip_prefix(health)?.split_once('/')?;
    let up = match value {
        b"up" => true,
        b"down" => false,
        _ => return None,
    };
    (node != me).then(|| (node.to_string(), target.to_string(), up))
}

/// Parses one stored override and hands it to the controller; one that does not
/// parse is logged, listed in `ctl status` and never applied.
async fn read_record(
    key: &str,
    value: &[u8],
    live: bool,
    events: &mpsc::Sender<FleetEvent>,
    held: &mut BTreeMap<String, OverrideRecord>,
    status: &Arc<Mutex<FleetStatus>>,
) {
    match serde_json::from_slice::<OverrideRecord>(value) {
        Ok(record) => {
            held.insert(key.to_string(), record.clone());
            let _ = events.send(FleetEvent::Override { record, live }).await;
        }
        Err(e) => {
            let reason = e.to_string();
            warn!(%key, %reason, "fleet: an entry that does not parse is ignored");
            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
            if !s.invalid.iter().any(|k| k == key) {
                s.invalid.push(key.to_string());
            }
        }
    }
}
