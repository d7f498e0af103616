//! Feeds in the controller: a batch is checked against the running config, then its
//! health verdicts, weights, names and prefixes are applied together with one publish
//! (XDP and PowerDNS see all of it or none of it); a bad batch is refused whole and the
//! last good one keeps serving. Staleness falls back as the feed's `on_stale` says.

use std::{sync::Arc, time::Instant};

use tracing::{error, info, warn};

use super::Controller;
use crate::{
    config::{CheckKind, Config},
    feeds::{self, batch, FeedEvent, FeedSlot},
    health::checks::Outcome,
};

impl Controller {
    /// A slot per configured feed (kept for feeds that stay), and the batches saved by
    /// `persist = true` feeds read back and checked against the config.
    pub(super) fn adopt_feed_slots(&mut self, restoring: bool) {
        let now = Instant::now();
        let mut slots = std::mem::take(&mut self.feed_slots);
        slots.retain(|name, _| self.config.feeds.contains_key(name));
        for (name, feed) in &self.config.feeds {
            let slot = slots.entry(name.clone()).or_insert_with(|| FeedSlot::new(feed, now));
            slot.status.source = feeds::describe(&feed.source);
            if !(restoring && feed.persist) {
                continue;
            }
            let path = feeds::saved_batch_path(&self.config.state_file, name);
            let Ok(bytes) = std::fs::read(&path) else { continue };
            match batch::parse(&bytes, feed.kinds, &self.config) {
                Ok(saved) => {
                    info!(feed = %name, items = saved.items, "feed: serving its batch saved before the restart");
                    slot.status.items = saved.items;
                    slot.status.bytes = bytes.len();
                    slot.status.restored = true;
                    slot.status.result = "restored from before the restart".into();
                    slot.good = Some(Arc::new(saved));
                }
                Err(why) => {
                    warn!(feed = %name, file = %path.display(), %why, "feed: the saved batch no longer fits the config; not restored")
                }
            }
        }
        self.feed_slots = slots;
    }

    /// Handles one event of a feed task: Err only when the answers cannot be written.
    pub(super) fn on_feed(&mut self, event: FeedEvent) -> anyhow::Result<()> {
        let FeedEvent { feed: name, generation, data, reply } = event;
        let answer = |result: Result<String, String>| {
            if let Some(reply) = reply {
                let _ = reply.send(result);
            }
        };
        let current = self.feeds.as_ref().map(|f| f.generation);
        let (Some(feed), true) = (self.config.feeds.get(&name).cloned(), current == Some(generation)) else {
            answer(Err("the feed was reloaded; send the batch again".into()));
            return Ok(());
        };
        let now = std::time::SystemTime::now();
        let bytes = match data {
            Ok(bytes) => bytes,
            Err(why) => {
                warn!(feed = %name, %why, "feed source failed; its last good batch keeps serving");
                let slot = self.feed_slots.entry(name.clone()).or_default();
                slot.status.last_batch_at = Some(now);
                slot.status.failed += 1;
                slot.status.result = format!("source failed: {why}");
                answer(Err(why));
                return Ok(());
            }
        };
        let checked = batch::parse(&bytes, feed.kinds, &self.config).map_err(|r| r.to_string());
        let applied = match checked {
            Ok(batch) => {
                let items = batch.items;
                let previous = self.feed_slots.get_mut(&name).and_then(|s| s.good.replace(Arc::new(batch)));
                match self.apply_feed_data(feed.kinds.names || feed.kinds.views) {
                    Ok(()) => Ok(items),
                    Err(FeedError::Refused(why)) => {
                        if let Some(slot) = self.feed_slots.get_mut(&name) {
                            slot.good = previous;
                        }
                        Err(why)
                    }
                    Err(FeedError::Publish(e)) => return Err(e),
                }
            }
            Err(why) => Err(why),
        };
        let slot = self.feed_slots.entry(name.clone()).or_default();
        slot.status.last_batch_at = Some(now);
        match applied {
            Ok(items) => {
                let was_stale = std::mem::take(&mut slot.status.stale);
                slot.status.applied += 1;
                (slot.status.items, slot.status.bytes) = (items, bytes.len());
                slot.status.last_good_at = Some(now);
                slot.status.restored = false;
                slot.status.result = "applied".into();
                slot.quiet_since = Some(Instant::now());
                if was_stale {
                    info!(feed = %name, "feed is fresh again");
                }
                tracing::debug!(feed = %name, items, bytes = bytes.len(), "feed batch applied");
                if feed.persist {
                    let path = feeds::saved_batch_path(&self.config.state_file, &name);
                    if let Err(e) = crate::sys::paths::write_atomically(&path, &bytes) {
                        error!(feed = %name, error = %format!("{e:#}"), "feed: cannot save the batch for a restart");
                    }
                }
                answer(Ok(format!("applied {items} items")));
            }
            Err(why) => {
                slot.status.refused += 1;
                slot.status.result = format!("refused: {why}");
                error!(feed = %name, %why, "feed batch refused whole; its last good batch keeps serving");
                answer(Err(format!("refused: {why}")));
            }
        }
        Ok(())
    }

    /// Once a second: feeds quiet for their `stale_after` become stale, and their
    /// `on_stale` applies.
    pub(super) fn check_feeds_stale(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let (mut changed, mut names_dropped) = (false, false);
        for (name, feed) in &self.config.feeds {
            let Some(slot) = self.feed_slots.get_mut(name) else { continue };
            if slot.check_stale(feed, now) {
                warn!(feed = %name, stale_after = ?feed.stale_after, on_stale = ?feed.on_stale, "feed is stale: no good batch for stale_after");
                changed = true;
                names_dropped |=
                    (feed.kinds.names || feed.kinds.views) && feed.on_stale != crate::config::OnStale::Keep;
            }
        }
        if !changed {
            return Ok(());
        }
        match self.apply_feed_data(names_dropped) {
            Ok(()) => Ok(()),
            // Dropping data cannot make the config refuse it.
            Err(FeedError::Refused(why)) => {
                error!(%why, "feed fallback not applied");
                Ok(())
            }
            Err(FeedError::Publish(e)) => Err(e),
        }
    }

    /// `base` with the served feeds' names and views (its own written names and views
    /// when no feed serves any). A feed whose table differs from the running config's
    /// (a reload changed it) serves nothing until its next batch.
    pub(super) fn config_with_feeds(&self, base: &Config) -> Result<Config, String> {
        let served: Vec<(&str, &feeds::Batch)> = base
            .feeds
            .iter()
            .filter(|(name, feed)| self.config.feeds.get(*name) == Some(*feed))
            .filter_map(|(name, feed)| Some((name.as_str(), self.feed_slots.get(name)?.served(feed)?)))
            .collect();
        feeds::overlay(base, served.iter().copied())
    }

    /// After a reload switched configs: slots of feeds whose table changed start afresh,
    /// and the feed tasks restart if any table changed.
    pub(super) fn feeds_reloaded(&mut self, old: &Config) {
        let now = Instant::now();
        for (name, feed) in &self.config.feeds {
            if old.feeds.get(name) != Some(feed) {
                self.feed_slots.insert(name.clone(), FeedSlot::new(feed, now));
            }
        }
        self.adopt_feed_slots(false);
        if let Some(tasks) = &mut self.feeds {
            if tasks.restart_if_changed(&self.config) {
                info!(feeds = self.config.feeds.len(), "feed tasks restarted with the new [feeds]");
            }
        }
    }

    /// Applies what the feeds serve now — health of every feed check, weights, and, when
    /// `names_changed` (a names or views feed's data came or went), names and views —
    /// with one publish. A health batch does not rebuild a million fed names.
    fn apply_feed_data(&mut self, names_changed: bool) -> Result<(), FeedError> {
        let new_config = match names_changed {
            true => Some(self.config_with_feeds(&self.config).map_err(FeedError::Refused)?),
            false => None,
        };
        self.record_feed_verdicts();
        self.state.feed_weights = self.served_weights();
        match new_config {
            Some(config) => {
                let old = self.switch_to((config, Vec::new()), true).map_err(FeedError::Publish)?;
                // The names and views it replaced can be large: freed, and handed back.
                drop(old);
                crate::config::release_freed_memory();
                Ok(())
            }
            None => self.after_change().map_err(FeedError::Publish),
        }
    }

    /// Weights the served feeds set, per target.
    pub(super) fn served_weights(&self) -> std::collections::BTreeMap<String, u32> {
        let mut weights = std::collections::BTreeMap::new();
        for (name, feed) in &self.config.feeds {
            if let Some(batch) = self.feed_slots.get(name).and_then(|s| s.served(feed)) {
                weights.extend(batch.weights.iter().map(|(t, w)| (t.clone(), *w)));
            }
        }
        weights
    }

    /// Records every feed check's verdict now, announcing targets that change.
    pub(super) fn record_feed_verdicts(&mut self) {
        let mut verdicts = Vec::new();
        for (target, config) in &self.config.targets {
            for (index, check) in config.checks.iter().enumerate() {
                let CheckKind::Feed { feed } = &self.config.checks[check].kind else { continue };
                let (Some(feed_config), Some(slot)) = (self.config.feeds.get(feed), self.feed_slots.get(feed)) else {
                    continue;
                };
                verdicts.push((target.clone(), index, feeds::verdict_on(feed, feed_config, slot, target)));
            }
        }
        for (target, index, (ok, detail)) in verdicts {
            let outcome = Outcome { ok, local_error: false, detail, latency: Default::default(), tcp: None };
            if let Some(change) = self.state.record(&self.config, &target, index, outcome) {
                self.announce("target", &change);
            }
        }
    }

    /// `ctl status`'s feeds, by name.
    pub(super) fn feed_statuses(&self) -> Vec<(String, feeds::FeedStatus)> {
        self.feed_slots.iter().map(|(name, slot)| (name.clone(), slot.status.clone())).collect()
    }
}

/// Why a feed's data was not applied.
enum FeedError {
    /// The config cannot take it (a name served twice, a full map): the batch is refused.
    Refused(String),
    /// Writing the answers failed: the controller stops (see `run`).
    Publish(anyhow::Error),
}
