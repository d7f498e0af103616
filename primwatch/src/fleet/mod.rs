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
//! PREFIX/config                           the pushed config (`PushedConfig`, JSON);
//!                                          its mod_revision is the config's revision
//! PREFIX/nodes/NODE                       NODE's `NodeReport`: the revision it runs,
//!                                          the last one it refused and why (under
//!                                          NODE's lease)
//! ```
//!
//! Fail static: etcd unreachable (at start or later) never stops serving. The node
//! keeps its last-known state and its own checks, retries with back-off (1 s to 4 s),
//! says so in the log and `ctl status`, and on reconnecting writes the overrides made
//! meanwhile (the later write wins) and reads the fleet's state again.

pub(crate) mod membership;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, PutOptions, TlsOptions, Txn, TxnOp,
    WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::{
    config::{pushed::PushedConfig, FleetConfig},
    health::state::{Action, Kind},
};

/// The longest wait between two attempts to reach etcd: short, so that a node is back
/// in step within seconds of etcd returning (a reconnect costs one read of the
/// overrides, a few keys).
const MAX_BACKOFF: Duration = Duration::from_secs(4);

/// The largest value read under the prefix: an override, a view or a node's report is
/// a few hundred bytes; a larger one is ignored and listed, never parsed.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// The largest pushed config (`PREFIX/config`) read.
pub const MAX_CONFIG_BYTES: usize = 8 * 1024 * 1024;
/// The most keys read under the prefix at a (re)connection; more are ignored, said.
pub const MAX_KEYS: usize = 200_000;
/// Keys per page of the reconnection's read: values may be up to etcd's request limit
/// (1.5 MiB by default) each, and a page must fit `MAX_MESSAGE_BYTES`.
const PAGE_KEYS: i64 = 32;
/// gRPC messages decoded from etcd at most (tonic's default is 4 MiB).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Invalid keys listed in `ctl status`; more are counted.
const MAX_LISTED_INVALID: usize = 100;

/// How long a node's health views outlive it (its etcd lease), renewed every second.
const LEASE_TTL: i64 = 3;

/// What the controller asks the connection to write.
#[derive(Debug)]
enum Write {
    Override(OverrideRecord),
    /// This node's views changed (see `PendingViews`): a wake-up, several of which
    /// may find one batch.
    Views,
    /// Which pushed config this node runs (written again under every new lease).
    Report(NodeReport),
}

/// This node's views not written yet, shared with the connection task: a flap changes
/// hundreds of targets at once, and they go to etcd together, in a few transactions.
#[derive(Debug, Default)]
struct PendingViews {
    /// Every view, replacing those published (after a config switch).
    replace: Option<BTreeMap<String, bool>>,
    /// Views changed since (newer than `replace`).
    changed: BTreeMap<String, bool>,
}

impl PendingViews {
    /// Takes what is pending and applies it to `own`: returns the views to write and the
    /// targets whose views go.
    fn drain_into(
        pending: &Mutex<PendingViews>,
        own: &mut BTreeMap<String, bool>,
    ) -> (Vec<(String, bool)>, Vec<String>) {
        let PendingViews { replace, changed } = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut gone = Vec::new();
        let mut write: BTreeMap<String, bool> = BTreeMap::new();
        if let Some(all) = replace {
            gone = own.keys().filter(|t| !all.contains_key(*t) && !changed.contains_key(*t)).cloned().collect();
            write = all.clone();
            *own = all;
        }
        for (target, up) in changed {
            own.insert(target.clone(), up);
            write.insert(target, up);
        }
        (write.into_iter().collect(), gone)
    }
}

/// A node's answer to the pushed config, at `PREFIX/nodes/NODE`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The pushed revision the node runs; 0: its own file only.
    pub revision: i64,
    /// The last pushed revision it refused (0: none since the one it runs), and why.
    #[serde(default)]
    pub refused: i64,
    /// Why `refused` was refused (empty: nothing refused).
    #[serde(default)]
    pub error: String,
    /// Unix milliseconds of the report.
    #[serde(default)]
    pub at_ms: u64,
}

/// One override as stored in etcd: what was done, by which node, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverrideRecord {
    /// A target or a group.
    pub kind: Kind,
    /// The target's or group's name.
    pub name: String,
    /// What the operator did.
    pub action: Action,
    /// The node it was made on (its `[fleet] node`).
    pub node: String,
    /// Unix milliseconds when the operator made it.
    pub at_ms: u64,
}

impl OverrideRecord {
    /// `action` on the target or group `name`, made on `node` now.
    pub fn new(kind: Kind, name: &str, action: Action, node: &str) -> OverrideRecord {
        let at_ms = now_ms();
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
            Action::Weight(_) => "weight",
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

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
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
    Override {
        /// The override as read, its name and node escaped (see `untrusted`).
        record: OverrideRecord,
        /// Just written (from the watch), not read again after (re)connecting.
        live: bool,
    },
    /// Every other node's views, as read on (re)connecting: target → node → up.
    Votes(BTreeMap<String, BTreeMap<String, bool>>),
    /// One node's view of one target changed, or went (its lease expired: None).
    Vote {
        /// The other node whose view it is.
        node: String,
        /// The target's name.
        target: String,
        /// Up or down; None: the view went (deleted, or its lease expired).
        up: Option<bool>,
    },
    /// The pushed config, as read on (re)connecting or just pushed.
    Config(PushedConfig),
    /// The other live nodes (those whose `PREFIX/nodes/NODE` key, under their lease,
    /// is there) and the pushed revision each runs: on (re)connecting, whenever one
    /// comes, goes or changes config, and empty once this node has been cut off from
    /// etcd for as long as a lease lasts (the others count it out by then too).
    Members(BTreeMap<String, i64>),
}

/// The connection as `ctl status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetStatus {
    /// This node's name (`[fleet] node`).
    pub node: String,
    /// The fleet's key prefix (`[fleet] prefix`).
    pub prefix: String,
    /// The etcd endpoints (`[fleet] etcd`).
    pub endpoints: Vec<String>,
    /// Connected to etcd, with the fleet's state read.
    pub connected: bool,
    /// Why not, while not; and since when (unix seconds).
    #[serde(default)]
    pub error: String,
    /// Since when (Unix seconds) it has been connected, or failing with `error`.
    #[serde(default)]
    pub since_unix: u64,
    /// Overrides this node made and could not write yet (written on reconnecting).
    #[serde(default)]
    pub pending: usize,
    /// The overrides the fleet holds, as last read, with who set them and when.
    #[serde(default)]
    pub overrides: Vec<OverrideRecord>,
    /// Keys under the prefix that did not parse, were too large or not under a lease
    /// (ignored): the first `MAX_LISTED_INVALID`, escaped.
    #[serde(default)]
    pub invalid: Vec<String>,
    /// How many more there were.
    #[serde(default)]
    pub invalid_more: u64,
    /// This node's config: the pushed revision it runs, or refused.
    #[serde(default)]
    pub config: NodeReport,
    /// The other live nodes' reports (by node name).
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeReport>,
    /// Targets with `checked_by`: how many, and those this node checks.
    #[serde(default)]
    pub sharded: usize,
    /// The sharded targets this node checks.
    #[serde(default)]
    pub checked_here: Vec<String>,
}

/// The controller's end of the fleet connection.
pub struct Fleet {
    /// `[fleet]` as configured.
    pub config: FleetConfig,
    writes: mpsc::UnboundedSender<Write>,
    views: Arc<Mutex<PendingViews>>,
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
        let views = Arc::new(Mutex::new(PendingViews::default()));
        tokio::spawn(connection(config.clone(), pending, views.clone(), events, status.clone()));
        Fleet { config, writes, views, status }
    }

    /// Writes an override this node's operator made (queued while etcd is away).
    pub fn publish(&self, kind: Kind, name: &str, action: Action) {
        let _ = self.writes.send(Write::Override(OverrideRecord::new(kind, name, action, &self.config.node)));
    }

    /// Publishes this node's own view of `target` (kept under its lease).
    pub fn vote(&self, target: &str, up: bool) {
        self.views.lock().unwrap_or_else(|e| e.into_inner()).changed.insert(target.to_string(), up);
        let _ = self.writes.send(Write::Views);
    }

    /// Publishes this node's view of every target it checks (at start and after a
    /// config switch); views of targets no longer in the config are withdrawn.
    pub fn views(&self, views: BTreeMap<String, bool>) {
        let mut pending = self.views.lock().unwrap_or_else(|e| e.into_inner());
        *pending = PendingViews { replace: Some(views), changed: BTreeMap::new() };
        drop(pending);
        let _ = self.writes.send(Write::Views);
    }

    /// Records and publishes which pushed config this node runs, or refused.
    pub fn report(&self, mut report: NodeReport) {
        report.at_ms = now_ms();
        self.status.lock().unwrap_or_else(|e| e.into_inner()).config = report.clone();
        let _ = self.writes.send(Write::Report(report));
    }

    /// The connection's status as last recorded, for `ctl status`.
    pub fn status(&self) -> FleetStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Keeps one connection to etcd: read everything, then watch; reconnect with back-off.
async fn connection(
    config: FleetConfig,
    mut writes: mpsc::UnboundedReceiver<Write>,
    pending_views: Arc<Mutex<PendingViews>>,
    events: mpsc::Sender<FleetEvent>,
    status: Arc<Mutex<FleetStatus>>,
) {
    let mut backoff = Duration::from_secs(1);
    // Overrides made here and not written yet, by key (the latest per key), and this
    // node's views (written again under a new lease on every connection).
    let mut unwritten: BTreeMap<String, OverrideRecord> = BTreeMap::new();
    let mut own_votes: BTreeMap<String, bool> = BTreeMap::new();
    let mut own_report: Option<NodeReport> = None;
    let mut next_endpoint = 0;
    // Since when this node has been cut off, after having been connected, and whether
    // the controller was told it is alone.
    let mut cut_off_since: Option<tokio::time::Instant> = None;
    let mut told_alone = false;
    loop {
        let mut connected = false;
        let mut local = Local {
            next_endpoint,
            writes: &mut writes,
            unwritten: &mut unwritten,
            own_votes: &mut own_votes,
            pending_views: &pending_views,
            own_report: &mut own_report,
        };
        let outcome = session(&config, &mut local, &events, &status, &mut connected).await;
        next_endpoint = local.next_endpoint;
        if connected {
            backoff = Duration::from_secs(1); // it worked until now: retry soon
            cut_off_since = Some(tokio::time::Instant::now());
            told_alone = false;
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
                    Some(Write::Views) => {
                        PendingViews::drain_into(&pending_views, &mut own_votes);
                    }
                    Some(Write::Report(report)) => own_report = Some(report),
                    None => return,
                },
            }
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
        // Cut off for as long as a lease lasts: the other nodes have counted this one
        // out, so it counts them out too and checks every sharded target itself.
        let lease = Duration::from_secs(LEASE_TTL as u64);
        if !told_alone && cut_off_since.is_some_and(|since| since.elapsed() >= lease) {
            told_alone = true;
            info!("fleet: cut off for longer than a lease; checking every sharded target here");
            let _ = events.send(FleetEvent::Members(BTreeMap::new())).await;
        }
    }
}

/// Each node's pushed revision, from the nodes' reports.
fn revisions(nodes: &BTreeMap<String, NodeReport>) -> BTreeMap<String, i64> {
    nodes.iter().map(|(node, report)| (node.clone(), report.revision)).collect()
}

/// What a session takes from the connection task and leaves for the next one.
struct Local<'a> {
    /// The endpoint the next connection tries first.
    next_endpoint: usize,
    writes: &'a mut mpsc::UnboundedReceiver<Write>,
    unwritten: &'a mut BTreeMap<String, OverrideRecord>,
    own_votes: &'a mut BTreeMap<String, bool>,
    pending_views: &'a Mutex<PendingViews>,
    own_report: &'a mut Option<NodeReport>,
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
    let (mut client, used) = connect(config, local.next_endpoint).await?;
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
    // This node's views live as long as its lease: a dead node's go with it. The
    // lease is renewed by a task of its own, so that no write, however long, holds
    // its renewal back.
    let lease = client.lease_grant(LEASE_TTL, None).await?.id();
    let mut renewal = AbortOnDrop(tokio::spawn(keep_lease(client.clone(), lease)));
    PendingViews::drain_into(local.pending_views, local.own_votes);
    let views: Vec<(String, bool)> = local.own_votes.iter().map(|(t, up)| (t.clone(), *up)).collect();
    write_views(&mut client, config, lease, &views, &[]).await?;
    if let Some(report) = local.own_report.as_ref() {
        client.put(node_key(config), serde_json::to_vec(report)?, Some(PutOptions::new().with_lease(lease))).await?;
    }
    let keys = Keys::new(config);
    let (revision, snapshot) = read_prefix(&client, &keys.all).await?;
    let mut held = BTreeMap::new();
    let mut votes: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    // The pushed config first: the overrides read next may name its targets.
    if let Some(kv) = snapshot.iter().find(|kv| kv.key() == keys.config.as_bytes()) {
        if fits(&keys.config, kv.value(), status) {
            read_config(&keys.config, kv.value(), kv.mod_revision(), events, status).await;
        }
    }
    for kv in &snapshot {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        if key == keys.config || !fits(&key, kv.value(), status) {
            continue;
        }
        if key.starts_with(&keys.overrides) {
            read_record(&key, kv.value(), false, events, &mut held, status).await;
        } else if key.starts_with(&keys.health) {
            if let Some((node, target, up)) =
                read_vote(&key, kv.value(), kv.lease(), &keys.health, &config.node, status)
            {
                votes.entry(target).or_default().insert(node, up);
            }
        } else if let Some((node, report)) = read_report(&key, kv.value(), kv.lease(), &keys.nodes, &config.node) {
            nodes.insert(node, report);
        }
    }
    drop(snapshot);
    let _ = events.send(FleetEvent::Votes(votes)).await;
    let _ = events.send(FleetEvent::Members(revisions(&nodes))).await;
    {
        let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
        s.connected = true;
        s.error.clear();
        s.since_unix = unix_now();
        s.pending = 0;
        s.overrides = held.values().cloned().collect();
        s.nodes = nodes;
    }
    info!(endpoints = ?config.endpoints, overrides = held.len(), revision, "fleet: connected to etcd");
    let mut stream = client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .watch(keys.all.clone(), Some(WatchOptions::new().with_prefix().with_start_revision(revision + 1)))
        .await?;
    loop {
        tokio::select! {
            message = stream.message() => {
                let Some(response) = message? else { anyhow::bail!("the watch ended") };
                for event in response.events() {
                    let Some(kv) = event.kv() else { continue };
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let put = event.event_type() == EventType::Put;
                    if put && !fits(&key, kv.value(), status) {
                        continue;
                    }
                    if key.starts_with(&keys.overrides) {
                        if put {
                            read_record(&key, kv.value(), true, events, &mut held, status).await;
                        } else {
                            held.remove(&key);
                        }
                    } else if key == keys.config {
                        // A deleted push leaves each node on the config it runs.
                        if put {
                            read_config(&key, kv.value(), kv.mod_revision(), events, status).await;
                        }
                    } else if key.starts_with(&keys.health) {
                        // A deleted view (its lease expired) goes, whatever it was.
                        let vote = if put {
                            read_vote(&key, kv.value(), kv.lease(), &keys.health, &config.node, status)
                        } else {
                            read_vote(&key, b"down", -1, &keys.health, &config.node, status)
                        };
                        if let Some((node, target, up)) = vote {
                            let _ = events.send(FleetEvent::Vote { node, target, up: put.then_some(up) }).await;
                        }
                    } else if let Some(node) = key.strip_prefix(&keys.nodes).filter(|n| *n != config.node) {
                        let members = {
                            let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
                            let before = revisions(&s.nodes);
                            match read_report(&key, kv.value(), kv.lease(), &keys.nodes, &config.node) {
                                Some((node, report)) if put => { s.nodes.insert(node, report); }
                                _ => { s.nodes.remove(node); }
                            }
                            let after = revisions(&s.nodes);
                            (after != before).then_some(after)
                        };
                        if let Some(members) = members {
                            let _ = events.send(FleetEvent::Members(members)).await;
                        }
                    }
                }
                status.lock().unwrap_or_else(|e| e.into_inner()).overrides = held.values().cloned().collect();
            }
            ended = &mut renewal.0 => {
                return Err(ended.map_err(anyhow::Error::from).and_then(|e| e).err()
                    .unwrap_or_else(|| anyhow::anyhow!("the lease renewal ended")));
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
                Some(Write::Views) => {
                    let (write, gone) = PendingViews::drain_into(local.pending_views, local.own_votes);
                    write_views(&mut client, config, lease, &write, &gone).await?;
                }
                Some(Write::Report(report)) => {
                    let value = serde_json::to_vec(&report)?;
                    *local.own_report = Some(report);
                    client.put(node_key(config), value, Some(PutOptions::new().with_lease(lease))).await?;
                }
            },
        }
    }
}

/// The targets with `checked_by` that this node (`me`, running pushed revision
/// `revision`) does not check while `members` are the other live nodes with the
/// revision each runs: each such target is checked by the `checked_by` live nodes
/// running the same revision (the others may not have it) that score highest for it
/// (rendezvous hashing: SHA-256 of node and target, the same on every node and every
/// build), so a node that comes or goes moves only its own share.
pub fn not_checked_here(
    config: &crate::config::Config,
    me: &str,
    revision: i64,
    members: &BTreeMap<String, i64>,
) -> BTreeSet<String> {
    let others: BTreeSet<&str> =
        members.iter().filter(|(_, r)| **r == revision).map(|(node, _)| node.as_str()).collect();
    let score = |node: &str, target: &str| {
        let digest = ring::digest::digest(&ring::digest::SHA256, format!("{node}\0{target}").as_bytes());
        u64::from_be_bytes(digest.as_ref()[..8].try_into().unwrap_or_default())
    };
    config
        .targets
        .iter()
        .filter_map(|(target, t)| {
            let k = t.checked_by?; // only sharded targets (`TargetConfig::is_sharded`)
            let mine = score(me, target);
            // This node checks it unless k others outscore it (ties: the smaller name).
            let above = others.iter().filter(|n| (score(n, target), **n) > (mine, me)).count();
            (above >= k).then(|| target.clone())
        })
        .collect()
}

/// etcd's default limit on operations in one transaction (`--max-txn-ops`).
const TXN_OPS: usize = 128;

/// Writes this node's views of `write` (under `lease`) and deletes those of `gone`, in
/// transactions of up to `TXN_OPS` keys: 1,000 targets are eight round trips.
async fn write_views(
    client: &mut Client,
    config: &FleetConfig,
    lease: i64,
    write: &[(String, bool)],
    gone: &[String],
) -> anyhow::Result<()> {
    let puts = write.iter().map(|(target, up)| {
        let value = if *up { "up" } else { "down" };
        TxnOp::put(vote_key(config, target), value, Some(PutOptions::new().with_lease(lease)))
    });
    let deletes = gone.iter().map(|target| TxnOp::delete(vote_key(config, target), None));
    let ops: Vec<TxnOp> = puts.chain(deletes).collect();
    for batch in ops.chunks(TXN_OPS) {
        client.txn(Txn::new().and_then(batch.to_vec())).await?;
    }
    Ok(())
}

/// Renews `lease` every second until a renewal fails or comes back expired.
async fn keep_lease(mut client: Client, lease: i64) -> anyhow::Result<()> {
    let (mut keeper, mut renewals) = client.lease_keep_alive(lease).await?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        keeper.keep_alive().await?;
        match tokio::time::timeout(Duration::from_secs(2), renewals.message()).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => anyhow::bail!("no lease renewal within 2 s"),
            Ok(_) => anyhow::bail!("the lease on this node's views expired"),
        }
    }
}

/// Aborts the task when the session that started it ends.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The keys (and key prefixes) of one fleet.
struct Keys {
    all: String,
    overrides: String,
    health: String,
    nodes: String,
    config: String,
}

impl Keys {
    fn new(config: &FleetConfig) -> Keys {
        let p = &config.prefix;
        Keys {
            all: format!("{p}/"),
            overrides: format!("{p}/overrides/"),
            health: format!("{p}/health/"),
            nodes: format!("{p}/nodes/"),
            config: config_key(config),
        }
    }
}

fn config_key(config: &FleetConfig) -> String {
    format!("{}/config", config.prefix)
}

fn node_key(config: &FleetConfig) -> String {
    format!("{}/nodes/{}", config.prefix, config.node)
}

/// How every connection to etcd is made: short timeouts (a request sent to a member
/// that just died fails within a second or two, and the next try goes to a member
/// still up), the user if set, TLS for https:// endpoints.
fn connect_options(config: &FleetConfig) -> ConnectOptions {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(1), Duration::from_secs(1));
    if let Some((user, password)) = &config.user {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &config.tls {
        let mut settings = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca));
        if let Some((cert, key)) = &tls.identity {
            settings = settings.identity(Identity::from_pem(cert, key));
        }
        options = options.with_tls(settings);
    }
    options
}

/// Connects to one member, trying them in turn from `first`; returns the client and
/// the member's index. One member at a time: the client refuses to connect while any
/// endpoint of its list is down, and one dead member of three must change nothing. A
/// member cut off from the quorum fails the (linearizable) reads that follow, and the
/// next try goes to the next one.
pub async fn connect(config: &FleetConfig, first: usize) -> anyhow::Result<(Client, usize)> {
    let options = connect_options(config);
    let count = config.endpoints.len();
    let mut failures = Vec::new();
    for step in 0..count {
        let i = (first + step) % count;
        match Client::connect([config.endpoints[i].as_str()], Some(options.clone())).await {
            // An https:// connection is lazy: ask once, so that a bad certificate fails
            // here rather than on the first real request.
            Ok(mut client) => match client.status().await {
                Ok(_) => return Ok((client, i)),
                Err(e) => failures.push(format!("{}: {e}", config.endpoints[i])),
            },
            Err(e) => failures.push(format!("{}: {e}", config.endpoints[i])),
        }
    }
    anyhow::bail!("no etcd endpoint answers ({})", failures.join("; "))
}

/// `primwatch fleet push`: stores `pushed` (already validated by the caller) as the
/// fleet's config; returns its revision.
pub async fn push(config: &FleetConfig, pushed: &PushedConfig) -> anyhow::Result<i64> {
    let (mut client, _) = connect(config, 0).await?;
    let stored = PushedConfig { revision: 0, ..pushed.clone() };
    let reply = client.put(config_key(config), serde_json::to_vec(&stored)?, None).await?;
    reply.header().map(|h| h.revision()).ok_or_else(|| anyhow::anyhow!("etcd's reply has no revision"))
}

/// Every live node's report (`PREFIX/nodes/`), this node's name included.
pub async fn node_reports(config: &FleetConfig) -> anyhow::Result<BTreeMap<String, NodeReport>> {
    let (mut client, _) = connect(config, 0).await?;
    let keys = Keys::new(config);
    let reply = client.get(keys.nodes.clone(), Some(GetOptions::new().with_prefix())).await?;
    Ok(reply
        .kvs()
        .iter()
        .filter_map(|kv| read_report(&String::from_utf8_lossy(kv.key()), kv.value(), kv.lease(), &keys.nodes, ""))
        .collect())
}

/// A node's report from a `PREFIX/nodes/NODE` key: (node, report); this node's own
/// (`me`), one without a lease and one that does not parse are none.
fn read_report(key: &str, value: &[u8], lease: i64, nodes: &str, me: &str) -> Option<(String, NodeReport)> {
    let node = key.strip_prefix(nodes)?;
    // Without a lease it is no live node's (it would count as one for ever).
    if node == me || node.contains('/') || lease == 0 {
        return None;
    }
    // Another node's words reach `ctl status` and `fleet push`'s output: escaped here.
    let report: NodeReport = serde_json::from_slice(value).ok()?;
    let error = crate::sys::process::printable(report.error.as_bytes(), 500);
    Some((untrusted(node), NodeReport { error, ..report }))
}

/// Text from etcd (node and target names, other nodes' errors), as it may be shown:
/// control characters escaped, at most 200 characters.
fn untrusted(text: &str) -> String {
    crate::sys::process::printable(text.as_bytes(), 200)
}

/// Parses the pushed config and hands it to the controller, with its revision; one
/// that does not parse is logged, listed and never applied.
async fn read_config(
    key: &str,
    value: &[u8],
    revision: i64,
    events: &mpsc::Sender<FleetEvent>,
    status: &Arc<Mutex<FleetStatus>>,
) {
    match serde_json::from_slice::<PushedConfig>(value) {
        Ok(pushed) => {
            let _ = events.send(FleetEvent::Config(PushedConfig { revision, ..pushed })).await;
        }
        Err(e) => note_invalid(key, &e.to_string(), status),
    }
}

/// Lists `key` as ignored, and why. Keys come from whoever can write the prefix: shown
/// escaped, the first few logged, the first `MAX_LISTED_INVALID` listed, the rest
/// counted (so a flood of junk costs neither log nor time).
fn note_invalid(key: &str, reason: &str, status: &Arc<Mutex<FleetStatus>>) {
    let key = crate::sys::process::printable(key.as_bytes(), 200);
    let mut s = status.lock().unwrap_or_else(|e| e.into_inner());
    if s.invalid.contains(&key) {
        return;
    }
    if s.invalid.len() < 10 {
        warn!(%key, reason = %crate::sys::process::printable(reason.as_bytes(), 200), "fleet: an entry under the prefix is ignored");
    } else {
        tracing::debug!(%key, %reason, "fleet: an entry under the prefix is ignored");
    }
    if s.invalid.len() < MAX_LISTED_INVALID {
        s.invalid.push(key);
    } else {
        s.invalid_more += 1;
    }
}

/// Whether `value` (at `key`) is small enough to read; if not, it is listed as ignored.
fn fits(key: &str, value: &[u8], status: &Arc<Mutex<FleetStatus>>) -> bool {
    let limit = if key.ends_with("/config") { MAX_CONFIG_BYTES } else { MAX_VALUE_BYTES };
    if value.len() <= limit {
        return true;
    }
    note_invalid(key, &format!("a value of {} bytes, more than the {limit} read", value.len()), status);
    false
}

/// Every key under `prefix` at one revision, read in pages of `PAGE_KEYS` (a prefix
/// larger than one gRPC message is read all the same), at most `MAX_KEYS` of them.
async fn read_prefix(client: &Client, prefix: &str) -> anyhow::Result<(i64, Vec<etcd_client::KeyValue>)> {
    let mut kv = client.kv_client().max_decoding_message_size(MAX_MESSAGE_BYTES);
    // The prefix's range end: its last byte plus one ('/' + 1 = '0').
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut all = Vec::new();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE_KEYS);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let page = kv.get(from.clone(), Some(options)).await?;
        if revision == 0 {
            revision = page.header().map_or(0, |h| h.revision());
        }
        let more = page.more();
        let Some(last) = page.kvs().last().map(|kv| kv.key().to_vec()) else { break };
        all.extend(page.kvs().iter().cloned());
        if all.len() >= MAX_KEYS {
            warn!(prefix, read = all.len(), "fleet: the prefix holds more keys than are read; the rest are ignored");
            break;
        }
        if !more {
            break;
        }
        // The next page starts just after the last key read.
        from = last;
        from.push(0);
    }
    Ok((revision, all))
}

/// Another node's view from a `PREFIX/health/NODE/TARGET` key: (node, target, up).
/// This node's own is none. A view counts only under a lease (0: none; -1: a delete,
/// which has none to show): a node's views go with it, and one written without a
/// lease would count for ever, inflating fractional quorums. Such views, and values
/// other than "up"/"down", are listed as ignored.
fn read_vote(
    key: &str,
    value: &[u8],
    lease: i64,
    health: &str,
    me: &str,
    status: &Arc<Mutex<FleetStatus>>,
) -> Option<(String, String, bool)> {
    let (node, target) = key.strip_prefix(health)?.split_once('/')?;
    if node == me {
        return None;
    }
    let up = match value {
        b"up" => true,
        b"down" => false,
        _ => {
            note_invalid(key, "a view is \"up\" or \"down\"", status);
            return None;
        }
    };
    if lease == 0 {
        note_invalid(key, "a view without a lease (it would outlive its node)", status);
        return None;
    }
    Some((untrusted(node), untrusted(target), up))
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
            // A name with control characters matches no target or group; shown escaped.
            let record = OverrideRecord { name: untrusted(&record.name), node: untrusted(&record.node), ..record };
            held.insert(key.to_string(), record.clone());
            let _ = events.send(FleetEvent::Override { record, live }).await;
        }
        Err(e) => note_invalid(key, &e.to_string(), status),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(targets: usize, checked_by: usize) -> crate::config::Config {
        let mut text = String::from("[server]\ninterfaces = [\"lo\"]\n[fleet]\netcd = [\"http://127.0.0.1:2379\"]\n");
        for i in 0..targets {
            text.push_str(&format!(
                "[targets.t{i}]\naddress = \"10.0.0.{}\"\nquorum = 1\nchecked_by = {checked_by}\n",
                i % 250 + 1
            ));
        }
        text.push_str("[targets.everywhere]\naddress = \"10.0.1.1\"\nquorum = 2\n");
        crate::config::Config::parse(std::path::Path::new("t.toml"), &text).unwrap()
    }

    /// Which nodes check each target, each node deciding for itself from its own view
    /// of the others.
    fn checkers(config: &crate::config::Config, nodes: &[&str]) -> BTreeMap<String, Vec<String>> {
        let mut by_target: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for me in nodes {
            let others: BTreeMap<String, i64> = nodes.iter().filter(|n| *n != me).map(|n| (n.to_string(), 7)).collect();
            let elsewhere = not_checked_here(config, me, 7, &others);
            for target in config.targets.keys().filter(|t| !elsewhere.contains(*t)) {
                by_target.entry(target.clone()).or_default().push(me.to_string());
            }
        }
        by_target
    }

    #[test]
    fn every_sharded_target_is_checked_by_exactly_k_live_nodes() {
        for k in [1, 2, 3] {
            let config = config(300, k);
            let nodes = ["tokyo-ns1", "tokyo-ns2", "osaka-ns1", "osaka-ns2"];
            let by_target = checkers(&config, &nodes);
            for (target, who) in &by_target {
                let expected = if target == "everywhere" { nodes.len() } else { k };
                assert_eq!(who.len(), expected, "{target}: {who:?}");
            }
            // Shared out evenly enough: each node has roughly k/4 of the 300.
            for node in nodes {
                let share = by_target.values().filter(|w| w.contains(&node.to_string())).count() - 1;
                assert!((share as f64 - 300.0 * k as f64 / 4.0).abs() < 60.0, "k {k}: {node} checks {share}");
            }
            // A node gone moves only its own targets: every other target keeps its checkers.
            let after = checkers(&config, &nodes[..3]);
            for (target, who) in &by_target {
                if !who.contains(&"osaka-ns2".to_string()) {
                    assert_eq!(&after[target], who, "{target} moved although its checkers stayed");
                } else if target != "everywhere" {
                    assert_eq!(after[target].len(), k, "{target}: {:?}", after[target]);
                }
            }
        }
        // Alone (etcd unreachable, or the only node), a node checks everything; so it
        // does when the others run another pushed revision (they may lack its targets).
        assert!(not_checked_here(&config(10, 1), "a", 7, &BTreeMap::new()).is_empty());
        let others: BTreeMap<String, i64> = [("b".to_string(), 6), ("c".to_string(), 8)].into();
        assert!(not_checked_here(&config(10, 1), "a", 7, &others).is_empty());
        let same: BTreeMap<String, i64> = [("b".to_string(), 7), ("c".to_string(), 7)].into();
        assert!(!not_checked_here(&config(30, 1), "a", 7, &same).is_empty());
    }
}
