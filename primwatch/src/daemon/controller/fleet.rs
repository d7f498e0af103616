//! The controller's reactions to the fleet (`[fleet]`): overrides and views from other
//! nodes, pushed configs on probation, and the sharded targets dealt again as nodes come
//! and go. What is decided here without I/O lives in `fleet::membership`, with its tests.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use tracing::{error, info, warn};

use super::Controller;
use crate::config::{pushed::PushedConfig, Config};

impl Controller {
    /// The targets with `checked_by` that other nodes check (see `fleet::not_checked_here`).
    pub(super) fn shards_elsewhere(&self, config: &Config) -> BTreeSet<String> {
        match &self.fleet {
            Some(fleet) => self.membership.checked_elsewhere(config, &fleet.config.node, self.running_revision()),
            None => Default::default(),
        }
    }

    /// Publishes this node's view of every target to the fleet (at start, and after
    /// a config switch, which may bring targets and take others away).
    pub(super) fn vote_all(&self) {
        if let Some(fleet) = &self.fleet {
            let voted = self.state.targets.iter().filter(|(name, _)| self.votes_on(name));
            fleet.views(voted.map(|(name, target)| (name.clone(), target.healthy)).collect());
        }
    }

    /// Whether this node publishes its view of `target`: one it checks, and for a
    /// sharded target only once it knows the other nodes (before that it checks every
    /// shard, as a node alone does, but its views of other nodes' shards must not count).
    pub(super) fn votes_on(&self, target: &str) -> bool {
        let sharded = self.config.targets.get(target).is_some_and(|t| t.is_sharded());
        !self.state.not_checked_here.contains(target) && (self.membership.known() || !sharded)
    }

    pub(super) fn running_revision(&self) -> i64 {
        self.pushed.as_ref().map_or(0, |p| p.revision)
    }

    /// An override from the fleet (another node's operator, or ours read back): applied
    /// as if made here; one that changes nothing (ours, a repeat) costs nothing.
    pub(super) fn on_fleet(&mut self, event: crate::fleet::FleetEvent) -> Result<()> {
        use crate::fleet::FleetEvent;
        let (record, live) = match event {
            FleetEvent::Override { record, live } => (record, live),
            FleetEvent::Votes(by_target) => {
                self.state.fleet_votes = by_target;
                return self.after_change();
            }
            FleetEvent::Vote { node, target, up } => {
                let views = self.state.fleet_votes.entry(target).or_default();
                let changed = crate::fleet::membership::record_vote(views, node, up);
                return if changed { self.after_change() } else { Ok(()) };
            }
            FleetEvent::Config(pushed) => {
                self.on_pushed_config(pushed);
                return Ok(());
            }
            FleetEvent::Members(members) => return self.on_members(members),
        };
        if record.action == crate::health::state::Action::Failback && !live {
            return Ok(()); // an old failback: the holds it released are long gone
        }
        let before = self.state.overrides.clone();
        match self.state.apply(&self.config, record.kind, &record.name, record.action.clone()) {
            Ok(_) if self.state.overrides != before => {
                info!(kind = ?record.kind, name = %record.name, action = ?record.action, by = %record.node, "fleet override");
                self.save_state();
                self.after_change()
            }
            Ok(_) => Ok(()),
            // Not for this config (no such target here), or a failback with nothing held.
            Err(why) => {
                tracing::debug!(name = %record.name, %why, "fleet override not applied here");
                Ok(())
            }
        }
    }

    /// A pushed config (`primwatch fleet push`): validated again here, with this node's
    /// own tables, and applied as a reload is; one this node refuses leaves it on the
    /// config it runs, and the refusal is reported in etcd and `ctl status`.
    pub(super) fn on_pushed_config(&mut self, pushed: PushedConfig) {
        if self.pushed.as_ref().is_some_and(|p| p.revision == pushed.revision) {
            return; // read again on reconnecting: already running it
        }
        let revision = pushed.revision;
        if let Some(refusal) = self.refusal.clone().filter(|r| r.revision == revision) {
            error!(revision, reason = %refusal.reason, "fleet: pushed config refused; the running config keeps serving");
            return self.report_config(revision, refusal.reason);
        }
        if let Err(e) = crate::config::pushed::begin_trial(&self.config.state_file, revision) {
            warn!(error = %format!("{e:#}"), "fleet: cannot mark the pushed config as being applied");
        }
        // Refused: (the reason, for the log; the reason, for etcd and `ctl status`).
        let outcome = match self.load_config(Some(&pushed)) {
            Ok(new) => {
                let reply = self.switch_config(new, Some(pushed.clone()));
                if reply.ok {
                    Ok(())
                } else {
                    Err((reply.message.clone(), reply.message))
                }
            }
            Err(e) => {
                // The reason goes to etcd only when it is about the pushed document: an
                // error in another file may quote that file's lines.
                // The log does not quote it either: a push may name any file of the
                // config directory, a secret's included.
                if e.file == fleet_label(&pushed, self.config.fleet.as_ref()) {
                    Err((e.to_string(), e.to_string()))
                } else {
                    let reported =
                        format!("{}:{}: refused (the reason is in this node's log)", e.file.display(), e.line);
                    let logged = format!("{}:{}: {}", e.file.display(), e.line, unquoted(&e.reason));
                    Err((logged, reported))
                }
            }
        };
        self.metrics.reload(outcome.is_ok());
        match outcome {
            Ok(()) => {
                info!(revision, by = %pushed.pushed_by, "fleet: running the pushed config");
                self.probation = Some((revision, std::time::Instant::now() + crate::config::pushed::PROBATION));
                self.pushed = Some(pushed);
                self.report_config(0, String::new());
                // Nodes still on the old revision no longer share this node's targets.
                if let Err(e) = self.reshard(false) {
                    error!(error = %format!("{e:#}"), "writing the answers after sharing out the checks");
                }
            }
            Err((reason, reported)) => {
                // Refused in order, still running the old config: nothing on trial.
                crate::config::pushed::end_trial(&self.config.state_file);
                error!(revision, %reason, "fleet: pushed config refused; the running config keeps serving");
                self.report_config(revision, reported);
            }
        }
    }

    /// A pushed revision that has run for `pushed::PROBATION` is kept for the next
    /// start, and is no longer on trial.
    pub(super) fn end_probation_if_due(&mut self) {
        let Some((revision, until)) = self.probation else { return };
        if std::time::Instant::now() < until {
            return;
        }
        self.probation = None;
        let Some(pushed) = self.pushed.as_ref().filter(|p| p.revision == revision) else { return };
        let state_file = &self.config.state_file;
        if let Err(e) = crate::config::pushed::write_cache(state_file, pushed) {
            warn!(error = %format!("{e:#}"), "fleet: the pushed config is running but could not be kept for the next start");
        }
        crate::config::pushed::end_trial(state_file);
        // A newer revision ran: the refused one is history (etcd holds only the newest).
        if self.refusal.as_ref().is_some_and(|r| r.revision < revision) {
            self.refusal = None;
            crate::config::pushed::clear_refusal(state_file);
        }
        tracing::debug!(revision, "fleet: the pushed config passed its probation");
    }

    /// Nodes came or went, or changed config: the targets with `checked_by` are
    /// shared out again.
    pub(super) fn on_members(&mut self, members: BTreeMap<String, i64>) -> Result<()> {
        let Some(first) = self.membership.update(members) else { return Ok(()) };
        info!(nodes = ?self.membership.members(), "fleet: the other live nodes (and the pushed revision each runs)");
        if self.membership.alone() {
            // Alone (or cut off for longer than a lease, when the others count this node
            // out): the sharded targets are this node's own to check, and the frozen
            // views of nodes it no longer hears from do not decide them.
            let sharded: Vec<String> = self.config.sharded_targets().cloned().collect();
            for target in sharded {
                self.state.fleet_votes.remove(&target);
            }
        }
        self.reshard(first)
    }

    /// Shares out the targets with `checked_by` again: this node starts checking those
    /// it now has, from down (its old view of them is stale: it claims nothing until
    /// its checks see them up), and stops checking, and withdraws its views of, those
    /// it no longer has. `publish_all`: publish every view (the first time the other
    /// nodes are known).
    pub(super) fn reshard(&mut self, publish_all: bool) -> Result<()> {
        let elsewhere = self.shards_elsewhere(&self.config);
        let (taken, dropped) = crate::fleet::membership::shards_moved(&self.state.not_checked_here, &elsewhere);
        if taken.is_empty() && dropped.is_empty() && !publish_all {
            return Ok(());
        }
        let sharded = self.config.sharded_targets().count();
        info!(
            checked_here = sharded - elsewhere.len(),
            sharded,
            taken = taken.len(),
            dropped = dropped.len(),
            "fleet: sharded targets shared out"
        );
        for target in &taken {
            self.state.restart_checks_down(target);
        }
        self.state.not_checked_here = elsewhere;
        self.checkers.retain(|checker| !dropped.contains(&checker.target));
        self.spawn_where(|target| taken.contains(target));
        self.vote_all();
        self.after_change()
    }

    /// Tells the fleet which pushed revision this node runs, and what it last refused.
    pub(super) fn report_config(&self, refused: i64, error: String) {
        if let Some(fleet) = &self.fleet {
            fleet.report(crate::fleet::NodeReport { revision: self.running_revision(), refused, error, at_ms: 0 });
        }
    }
}

/// `reason` with every '…'-quoted text left out (a line of a file it quotes).
fn unquoted(reason: &str) -> String {
    let mut out = String::new();
    for (i, part) in reason.split('\'').enumerate() {
        out.push_str(if i % 2 == 1 { "'…'" } else { part });
    }
    out
}

/// What errors in `pushed` are reported against (see `PushedConfig::label`).
fn fleet_label(pushed: &PushedConfig, fleet: Option<&crate::config::FleetConfig>) -> std::path::PathBuf {
    pushed.label(fleet.map_or("", |f| f.prefix.as_str()))
}
