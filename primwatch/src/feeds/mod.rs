//! Stage 2, beside `health`: data from the operator's own programs (`[feeds.NAME]`) —
//! health verdicts, weights, names and view prefixes — from a command, a streaming
//! command, a watched file or an HTTP push (`sources`, `push`), in one versioned format
//! (`batch`). The controller checks each batch against the running config and applies
//! it whole through the same publish path as checks and reloads, or refuses it whole
//! and keeps the last good one.
//!
//! May import: `sys`, `dns`, `config`.

pub mod batch;
mod event;
mod overlay;
mod push;
pub(crate) mod sources;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::{sync::mpsc, task::JoinSet};

pub use batch::{Batch, Verdict};
pub use event::FeedEvent;
pub use overlay::overlay;

use crate::config::{Config, FeedConfig, FeedSource, OnStale};

/// The running feed tasks, restarted when a reload changes `[feeds]`.
pub struct Feeds {
    tasks: JoinSet<()>,
    events: mpsc::Sender<FeedEvent>,
    /// Bumped at every (re)start: events of stopped tasks carry an older one.
    pub generation: u64,
    running: BTreeMap<String, FeedConfig>,
}

impl Feeds {
    /// Starts a task per feed of `config`, sending to `events`.
    pub fn start(config: &Config, events: mpsc::Sender<FeedEvent>) -> Feeds {
        let mut feeds = Feeds { tasks: JoinSet::new(), events, generation: 0, running: BTreeMap::new() };
        feeds.restart(config);
        feeds
    }

    /// Stops every task and starts those of `config` when its feeds differ from the
    /// running ones; true if it did.
    pub fn restart_if_changed(&mut self, config: &Config) -> bool {
        if self.running == config.feeds {
            return false;
        }
        self.restart(config);
        true
    }

    fn restart(&mut self, config: &Config) {
        self.tasks.abort_all();
        self.generation += 1;
        self.running = config.feeds.clone();
        for (name, feed) in &config.feeds {
            self.tasks.spawn(sources::run(name.clone(), feed.clone(), self.generation, self.events.clone()));
        }
    }
}

impl Drop for Feeds {
    fn drop(&mut self) {
        // Aborting a task drops its child process, whose group is killed with it.
        self.tasks.abort_all();
    }
}

/// One line of `ctl status` and /metrics for a feed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedStatus {
    /// Where its batches come from, in words.
    pub source: String,
    /// What it may say.
    pub kinds: Vec<String>,
    /// When the last batch (or source failure) came.
    pub last_batch_at: Option<SystemTime>,
    /// When the batch in use was applied (None: none yet).
    pub last_good_at: Option<SystemTime>,
    /// Items of the batch in use.
    pub items: usize,
    /// Bytes of the batch in use.
    pub bytes: usize,
    /// "applied", "refused: line N: why" or "source failed: why" (the last batch's fate).
    pub result: String,
    /// No good batch for `stale_after`: its `on_stale` applies.
    pub stale: bool,
    /// The batch in use was saved before the restart (`persist`), not received since.
    pub restored: bool,
    /// Batches applied, refused, and source failures, since the start.
    pub applied: u64,
    /// Batches refused (a bad line, or data the config cannot take).
    pub refused: u64,
    /// Source failures (a command failed, a file could not be read).
    pub failed: u64,
}

/// What the controller holds per feed: its status and the batch in use.
#[derive(Debug, Default)]
pub struct FeedSlot {
    /// What `ctl status` shows.
    pub status: FeedStatus,
    /// The last good batch (None: none yet).
    pub good: Option<Arc<Batch>>,
    /// Since when the feed has had no good batch, for `stale_after`.
    pub quiet_since: Option<Instant>,
}

impl FeedSlot {
    /// A slot for `feed`, waiting for its first batch since `now`.
    pub fn new(feed: &FeedConfig, now: Instant) -> FeedSlot {
        let kinds = [
            (feed.kinds.health, "health"),
            (feed.kinds.weights, "weights"),
            (feed.kinds.names, "names"),
            (feed.kinds.views, "views"),
        ];
        FeedSlot {
            status: FeedStatus {
                source: describe(&feed.source),
                kinds: kinds.iter().filter(|(on, _)| *on).map(|(_, k)| k.to_string()).collect(),
                result: "waiting for the first batch".into(),
                ..Default::default()
            },
            good: None,
            quiet_since: Some(now),
        }
    }

    /// The batch whose data is served now: the good one, unless the feed is stale and
    /// its `on_stale` drops it.
    pub fn served(&self, feed: &FeedConfig) -> Option<&Batch> {
        match (self.status.stale, feed.on_stale) {
            (true, OnStale::Checks | OnStale::Down) => None,
            _ => self.good.as_deref(),
        }
    }

    /// Marks it stale when it has had no good batch for `stale_after`; true when it
    /// just became stale.
    pub fn check_stale(&mut self, feed: &FeedConfig, now: Instant) -> bool {
        let (Some(after), Some(since)) = (feed.stale_after, self.quiet_since) else { return false };
        if self.status.stale || now.duration_since(since) < after {
            return false;
        }
        self.status.stale = true;
        true
    }
}

/// A feed's source in words, for `ctl status`.
pub fn describe(source: &FeedSource) -> String {
    match source {
        FeedSource::Command { command, interval, .. } => {
            format!("command {} every {}", command.join(" "), humantime::format_duration(*interval))
        }
        FeedSource::Stream { command, .. } => format!("stream from {}", command.join(" ")),
        FeedSource::File { path } => format!("file {}", path.display()),
        FeedSource::Push { listen, .. } => format!("push to http://{listen}/feeds/…"),
    }
}

/// What a health feed says of one target's `type = "feed"` check now: (up, why).
pub fn verdict_on(feed_name: &str, feed: &FeedConfig, slot: &FeedSlot, target: &str) -> (bool, String) {
    let when = |t: Option<SystemTime>| t.map_or("?".to_string(), |t| humantime::format_rfc3339_seconds(t).to_string());
    if slot.status.stale {
        let since = when(slot.status.last_good_at);
        match feed.on_stale {
            OnStale::Checks => {
                return (
                    true,
                    format!("feed {feed_name} stale (last good batch {since}): the target's own checks decide"),
                )
            }
            OnStale::Down => return (false, format!("feed {feed_name} stale (last good batch {since}): down")),
            OnStale::Keep => {}
        }
    }
    let Some(batch) = &slot.good else { return (false, format!("feed {feed_name}: no batch yet")) };
    let at = when(slot.status.last_good_at);
    // A target given by host is judged by its own name (`NAME@ADDRESS` → NAME).
    let own = target.split(crate::config::NAMED_MEMBER_SEPARATOR).next().unwrap_or(target);
    match batch.health.get(target).or_else(|| batch.health.get(own)) {
        None => (false, format!("feed {feed_name} at {at}: not in its batch")),
        Some(v) => {
            let word = match v.verdict {
                Verdict::Up => "up",
                Verdict::Down => "down",
                Verdict::Draining => "draining",
            };
            let reason = if v.reason.is_empty() { String::new() } else { format!(", '{}'", v.reason) };
            (v.verdict == Verdict::Up, format!("feed {feed_name} at {at}: {word}{reason}"))
        }
    }
}

/// Where a `persist = true` feed's last good batch is kept: beside the state file.
pub fn saved_batch_path(state_file: &Path, feed: &str) -> PathBuf {
    let dir = state_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    dir.join(format!("feed-{feed}.jsonl"))
}

/// Waits, at start, for the first event of every feed that has no saved batch to serve,
/// at most the longest of their `first_batch_wait`s (each feed waited for at most its
/// own); returns the events that came meanwhile, in order.
pub async fn await_first(config: &Config, events: &mut mpsc::Receiver<FeedEvent>) -> Vec<FeedEvent> {
    let started = Instant::now();
    let mut waiting: BTreeMap<&str, Duration> = config
        .feeds
        .iter()
        .filter(|(name, feed)| !(feed.persist && saved_batch_path(&config.state_file, name).exists()))
        .map(|(name, feed)| (name.as_str(), feed.first_batch_wait))
        .collect();
    let mut came = Vec::new();
    loop {
        waiting.retain(|_, wait| started.elapsed() < *wait);
        let Some(deadline) = waiting.values().max().map(|wait| started + *wait) else { return came };
        match tokio::time::timeout_at(deadline.into(), events.recv()).await {
            Ok(Some(event)) => {
                waiting.remove(event.feed.as_str());
                came.push(event);
            }
            Ok(None) | Err(_) => return came,
        }
    }
}
