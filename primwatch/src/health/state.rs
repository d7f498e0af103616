//! Stage 2 → 3: from check results to target health, and what operators override.
//!
//! Each check flips only after `rise` successes (down → up) or `fall` failures (up →
//! down) in a row; a target is healthy while every one of its checks is up. On top:
//! operators force targets and groups up, down or to drain, change group priorities,
//! and with preempt off a target or group that went down and came back is *held* out
//! of answers until an operator fails it back. Overrides and holds are saved to the
//! state file, so they survive a restart.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::{config::Config, health::checks::Outcome, health::Health};

/// An operator's forcing of a target or group (`ctl target|group NAME up|down|drain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Force {
    /// In answers whatever its health (a group: serves whatever its members' health).
    Up,
    /// Out of answers, as if failed.
    Down,
    /// Out of answers for maintenance; checks go on and status shows it as drained.
    Drain,
}

/// What operators set for one target, and its preempt-off hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetOverride {
    /// Forced up, down or to drain; None: its health decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<Force>,
    /// Preempt as `ctl target NAME preempt on|off` set it; None: the configured `preempt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt: Option<bool>,
    /// Came back with preempt off: out of answers until failed back.
    #[serde(default)]
    pub held: bool,
    /// `ctl target NAME weight N`: its weight in place of a feed's and the config's;
    /// None: theirs (`weight auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// What operators set for one group, and its preempt-off hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupOverride {
    /// Forced up, down or to drain; None: its members' health decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<Force>,
    /// Priority as `ctl group NAME priority` set it; None: the configured `priority`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Preempt as `ctl group NAME preempt on|off` set it; None: the configured `preempt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preempt: Option<bool>,
    /// Qualified again with preempt off: out of answers until failed back.
    #[serde(default)]
    pub held: bool,
}

/// What operators said, plus holds: the part of the state that is saved.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Overrides {
    /// Per target name.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetOverride>,
    /// Per group name.
    #[serde(default)]
    pub groups: BTreeMap<String, GroupOverride>,
}

/// Everything the state file holds: overrides and holds, the last-known health of every
/// target (so a restart starts from what was true, not from "all up" or "all down"),
/// and whether the controller that wrote it stopped cleanly.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SavedState {
    /// Overrides and holds, at the file's top level.
    #[serde(flatten)]
    pub overrides: Overrides,
    /// Per target name: its health when the file was written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_known: BTreeMap<String, LastKnown>,
    /// Per group: has it qualified, has it lost its minimum since, and since when it
    /// is in its state (so preempt-off holds survive a restart).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub group_history: BTreeMap<String, GroupHistory>,
    /// False while a controller runs; set by its clean exit. Still false at the next
    /// start means it was killed or crashed.
    #[serde(default)]
    pub stopped_cleanly: bool,
    /// When the file was written (None: the file does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_at: Option<SystemTime>,
}

/// A group's qualification history as saved (a group qualifies while it has at least `min_healthy`
/// eligible members).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroupHistory {
    /// Has it ever qualified?
    pub qualified_ever: bool,
    /// Has it stopped qualifying since it last qualified (so that coming back is a return)?
    pub lost_since: bool,
    /// When its qualification last changed (or was first judged).
    pub since: SystemTime,
}

/// One group as `State` follows it.
#[derive(Debug, Clone, Copy)]
struct GroupTrack {
    /// What the state file keeps.
    history: GroupHistory,
    /// Whether it qualified at the last update (None: not judged since the start), to
    /// report changes.
    up: Option<bool>,
}

/// A target's health as it was last saved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastKnown {
    /// (check name, up) in the target's check order.
    pub checks: Vec<(String, bool)>,
    /// Was every check up?
    pub healthy: bool,
    /// Had it been healthy before (so that coming up again is a return; see `TargetState::was_up`)?
    pub was_up: bool,
    /// When its health last changed.
    pub since: SystemTime,
    /// Why it was in its state.
    pub reason: String,
}

impl SavedState {
    /// Reads the state file; a missing file is a first start.
    pub fn load(path: &Path) -> Result<Option<SavedState>> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map(Some).with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the state file atomically (temp file, then rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        crate::sys::paths::write_atomically(path, &serde_json::to_vec_pretty(self)?)
    }
}

/// The state file (`server.state_file`): the controller writes the state into it; the
/// state machine itself does no I/O.
pub struct StateFile(pub PathBuf);

impl StateFile {
    /// Saves overrides, holds and last-known health. Failure is logged: the running
    /// state stays right, only a restart would forget.
    pub fn write(&self, state: &mut State, stopped_cleanly: bool) {
        match state.saved(stopped_cleanly).save(&self.0) {
            Ok(()) => (state.health_unsaved, state.holds_unsaved) = (false, false),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "saving the state file"),
        }
    }
}

impl Overrides {
    fn prune(&mut self, config: &Config) -> Vec<String> {
        let mut dropped = Vec::new();
        self.targets.retain(|name, _| {
            config.targets.contains_key(name) || {
                dropped.push(format!("target {name}"));
                false
            }
        });
        self.groups.retain(|name, _| {
            config.groups.contains_key(name) || {
                dropped.push(format!("group {name}"));
                false
            }
        });
        dropped
    }
}

/// One check of one target: its state after rise and fall, and its counts.
#[derive(Debug, Clone)]
pub struct CheckState {
    /// The check's name (`[checks.NAME]`).
    pub name: String,
    /// Up or down: flips after `rise` successes or `fall` failures in a row.
    pub up: bool,
    /// Results in a row that disagree with `up`.
    streak: u32,
    /// The last result that judged the target (local errors excluded); None before the first.
    pub last: Option<Outcome>,
    /// Runs that judged the target (local errors not counted).
    pub runs: u64,
    /// Of those runs, the ones that failed.
    pub failures: u64,
    /// Runs that could not judge the target for a reason on this host.
    pub local_errors: u64,
    /// The last such run, while runs keep failing locally; cleared by a real result.
    pub local_error: Option<Outcome>,
}

impl CheckState {
    /// A check named `name` in its initial state, with no results yet.
    pub fn new(name: &str, initially_up: bool) -> CheckState {
        CheckState {
            name: name.to_string(),
            up: initially_up,
            streak: 0,
            last: None,
            runs: 0,
            failures: 0,
            local_errors: 0,
            local_error: None,
        }
    }

    /// Feeds one result; true when the check changed state. A local error (the check
    /// could not be run) leaves the state and the streak as they were.
    pub fn record(&mut self, outcome: Outcome, rise: u32, fall: u32) -> bool {
        if outcome.local_error {
            self.local_errors += 1;
            self.local_error = Some(outcome);
            return false;
        }
        self.local_error = None;
        self.runs += 1;
        if !outcome.ok {
            self.failures += 1;
        }
        let agrees = outcome.ok == self.up;
        self.last = Some(outcome);
        if agrees {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak >= needed {
            self.up = !self.up;
            self.streak = 0;
            return true;
        }
        false
    }
}

/// One target's health: its checks, and whether all of them are up.
#[derive(Debug, Clone)]
pub struct TargetState {
    /// Its checks, in the target's check order.
    pub checks: Vec<CheckState>,
    /// True while every check is up (overrides, holds and a fleet quorum apply on top).
    pub healthy: bool,
    /// Has it been healthy since we started? (Coming up for the first time is not a return.)
    pub was_up: bool,
    /// When its health last changed (or was first judged).
    pub since: SystemTime,
    /// Why it is in its state: the failing check and what it saw, or "all checks pass".
    pub reason: String,
    /// Its health and reason are the last known before a restart (restored from the
    /// state file); cleared when its checks give a new reason.
    pub restored: bool,
}

impl TargetState {
    /// `reason` as operators read it, noting a reason restored from before a restart.
    pub fn shown_reason(&self) -> String {
        if self.restored {
            format!("{} (last known before restart)", self.reason)
        } else {
            self.reason.clone()
        }
    }

    /// Sets why it is in its state now (no longer what was restored).
    fn set_reason(&mut self, reason: String) {
        self.reason = reason;
        self.restored = false;
    }

    fn evaluate(&self) -> (bool, String) {
        match self.checks.iter().find(|c| !c.up) {
            None => (true, "all checks pass".into()),
            Some(c) => {
                let detail = c.last.as_ref().map_or("initial state down".to_string(), |o| o.detail.clone());
                (false, format!("check {}: {detail}", c.name))
            }
        }
    }
}

/// What an operator's action applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A target (`ctl target NAME ...`).
    Target,
    /// A group (`ctl group NAME ...`).
    Group,
}

/// An operator's action on a target or group (`ctl target|group NAME ...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "action", content = "value")]
pub enum Action {
    /// Force up, down or drain.
    Force(Force),
    /// Back to automatic (health decides).
    Auto,
    /// Groups only.
    Priority(i32),
    /// Preempt on or off: with it off, one that went down and came back is held out of answers until
    /// failed back.
    Preempt(bool),
    /// Release a hold left by preempt off.
    Failback,
    /// Targets only: the weight under the weighted and sticky policies, 1 to
    /// 1,000,000; None: back to the feed's or the config's (`weight auto`).
    Weight(Option<u32>),
}

/// A target's health (or a group's qualification) changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The target or group.
    pub name: String,
    /// Its new state: healthy (a target) or qualifying (a group).
    pub healthy: bool,
    /// Why, in words (for the log and hooks).
    pub reason: String,
}

/// The health state the controller holds: every target's checks and health, the operators'
/// overrides and holds, and each group's qualification.
pub struct State {
    /// Per target name: its checks and health.
    pub targets: BTreeMap<String, TargetState>,
    /// Operators' overrides and preempt-off holds (saved in the state file).
    pub overrides: Overrides,
    /// Per group: its qualification history and last judgement. A group qualifies while
    /// it has at least min_healthy eligible members.
    groups: BTreeMap<String, GroupTrack>,
    /// Some target's health changed since the state file was last written (saved within
    /// the second).
    pub health_unsaved: bool,
    /// A preempt-off hold was set since the state file was last written (saved at once:
    /// a restart must not let a held target back in).
    pub holds_unsaved: bool,
    /// `[fleet]`: per target with a quorum, how many nodes must see it up.
    quorum: BTreeMap<String, crate::config::Quorum>,
    /// `[fleet]`: the other live nodes' views, per target: node → up. A node's views
    /// expire with its etcd lease.
    pub fleet_votes: BTreeMap<String, BTreeMap<String, bool>>,
    /// `[fleet]`: targets with `checked_by` that other nodes check: this node's own
    /// (stale) view does not count towards their quorum.
    pub not_checked_here: std::collections::BTreeSet<String>,
    /// Weights a weights feed set, per target (given by host: per `NAME`), in place of
    /// the configured ones.
    pub feed_weights: BTreeMap<String, u32>,
    /// Targets in their slow start (`slow_start`): since when, and the step published.
    pub ramps: BTreeMap<String, Ramp>,
}

/// Steps of a slow start: the weight goes 1/10, 2/10, … of full, one publish each.
pub const SLOW_START_STEPS: u32 = 10;

/// A target's slow start after it came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ramp {
    /// When it came back.
    pub since: SystemTime,
    /// The window (`slow_start`).
    pub window: std::time::Duration,
    /// The step in effect, 1 to `SLOW_START_STEPS`: its weight is this many tenths.
    pub step: u32,
}

impl Ramp {
    /// The step `now` falls in (`SLOW_START_STEPS` + 1 once the window is over).
    fn step_at(&self, now: SystemTime) -> u32 {
        let elapsed = now.duration_since(self.since).unwrap_or_default();
        let done = elapsed.as_nanos() * SLOW_START_STEPS as u128 / self.window.as_nanos().max(1);
        (done as u32).saturating_add(1)
    }
}

impl State {
    /// A state for `config`: every check in its initial state, no overrides.
    pub fn new(config: &Config) -> State {
        State::with_overrides(config, Overrides::default())
    }

    /// Starts from saved overrides (pruned of targets and groups no longer configured).
    pub fn with_overrides(config: &Config, mut overrides: Overrides) -> State {
        for gone in overrides.prune(config) {
            tracing::warn!(%gone, "saved override for something no longer configured dropped");
        }
        let now = SystemTime::now();
        let targets = config
            .targets
            .iter()
            .map(|(name, target)| {
                let checks: Vec<CheckState> =
                    target.checks.iter().map(|c| CheckState::new(c, config.checks[c].initially_up)).collect();
                let mut state = TargetState {
                    checks,
                    healthy: true,
                    was_up: false,
                    since: now,
                    reason: String::new(),
                    restored: false,
                };
                (state.healthy, state.reason) = state.evaluate();
                state.was_up = state.healthy;
                (name.clone(), state)
            })
            .collect();
        let mut state = State {
            targets,
            overrides,
            groups: BTreeMap::new(),
            health_unsaved: false,
            holds_unsaved: false,
            quorum: config.targets.iter().filter_map(|(name, t)| Some((name.clone(), t.quorum?))).collect(),
            fleet_votes: BTreeMap::new(),
            not_checked_here: Default::default(),
            feed_weights: BTreeMap::new(),
            ramps: BTreeMap::new(),
        };
        state.update_calculated(config);
        state.update_groups(config);
        state
    }

    /// Starts targets from their last-known health where their checks are unchanged;
    /// returns how many were restored. Groups are then judged from that health with
    /// their saved history, so a group that had lost its minimum stays "lost" and a
    /// preempt-off hold still applies when it comes back.
    pub fn restore(&mut self, config: &Config, saved: &SavedState) -> usize {
        let last_known = &saved.last_known;
        let mut restored = 0;
        for (name, target) in self.targets.iter_mut() {
            let Some(saved) = last_known.get(name) else { continue };
            if !saved.checks.iter().map(|(c, _)| c).eq(target.checks.iter().map(|c| &c.name)) {
                continue;
            }
            for (check, (_, up)) in target.checks.iter_mut().zip(&saved.checks) {
                check.up = *up;
            }
            target.healthy = saved.healthy;
            target.was_up = saved.was_up;
            target.since = saved.since;
            target.reason = saved.reason.clone();
            target.restored = true;
            restored += 1;
        }
        self.groups = saved
            .group_history
            .iter()
            .filter(|(group, _)| config.groups.contains_key(*group))
            .map(|(group, history)| (group.clone(), GroupTrack { history: *history, up: None }))
            .collect();
        self.update_calculated(config);
        self.update_groups(config);
        restored
    }

    fn last_known(&self) -> BTreeMap<String, LastKnown> {
        self.targets
            .iter()
            .map(|(name, t)| {
                let known = LastKnown {
                    checks: t.checks.iter().map(|c| (c.name.clone(), c.up)).collect(),
                    healthy: t.healthy,
                    was_up: t.was_up,
                    since: t.since,
                    reason: t.reason.clone(),
                };
                (name.clone(), known)
            })
            .collect()
    }

    /// Whether `target` counts as up: this node's own view, or under a quorum, whether
    /// at least that many live nodes (this one included) see it up.
    fn seen_up(&self, target: &str, own: bool) -> bool {
        match self.quorum.get(target) {
            None => own,
            Some(&quorum) => {
                let votes = self.fleet_votes.get(target);
                let others_up = votes.map_or(0, |votes| votes.values().filter(|up| **up).count());
                let own_counts = !self.not_checked_here.contains(target);
                let live = usize::from(own_counts) + votes.map_or(0, |votes| votes.len());
                usize::from(own && own_counts) + others_up >= quorum.needed(live)
            }
        }
    }

    /// Carries health over from a previous state for targets whose checks did not change.
    pub fn inherit(&mut self, old: &State, config: &Config) {
        self.fleet_votes = old.fleet_votes.clone();
        self.feed_weights = old.feed_weights.clone();
        self.ramps = old.ramps.clone();
        self.ramps.retain(|t, _| config.targets.contains_key(t));
        self.not_checked_here = old.not_checked_here.clone();
        self.not_checked_here.retain(|t| config.targets.get(t).is_some_and(|t| t.is_sharded()));
        for (name, target) in self.targets.iter_mut() {
            if let Some(previous) = old.targets.get(name) {
                let same_checks = previous.checks.iter().map(|c| &c.name).eq(target.checks.iter().map(|c| &c.name));
                if same_checks {
                    *target = previous.clone();
                }
            }
        }
        self.groups = old.groups.clone();
        self.groups.retain(|g, _| config.groups.contains_key(g));
        self.health_unsaved = old.health_unsaved;
    }

    /// Starts `target`'s checks again from down (a sharded target this node takes over:
    /// its old view is stale, and it claims nothing until its checks see it up).
    pub fn restart_checks_down(&mut self, target: &str) {
        if let Some(state) = self.targets.get_mut(target) {
            state.checks = state.checks.iter().map(|c| CheckState::new(&c.name, false)).collect();
            state.healthy = false;
            state.set_reason("taken over from another node: not seen up here yet".into());
            state.since = SystemTime::now();
        }
    }

    /// Applies one check result; returns the target's change of health, if any.
    pub fn record(&mut self, config: &Config, target: &str, check: usize, outcome: Outcome) -> Option<Change> {
        let state = self.targets.get_mut(target)?;
        let check_state = state.checks.get_mut(check)?;
        let spec = &config.checks[&check_state.name];
        if check_state.record(outcome, spec.rise, spec.fall) {
            // Even if the target stays as it is: a restart restores checks one by one.
            self.health_unsaved = true;
        }
        let (healthy, reason) = state.evaluate();
        if healthy == state.healthy {
            // Still down: say why now (a timeout may have turned into a refusal).
            if !healthy {
                state.set_reason(reason);
            }
            return None;
        }
        state.healthy = healthy;
        state.since = SystemTime::now();
        state.set_reason(reason.clone());
        let returned = healthy && state.was_up;
        state.was_up |= healthy;
        self.health_unsaved = true;
        self.start_or_end_ramp(config, target, healthy, returned);
        let preempt = self.target_preempt(config, target);
        let mut reason = reason;
        if returned && !preempt {
            self.overrides.targets.entry(target.to_string()).or_default().held = true;
            reason.push_str("; held out until failed back (preempt off)");
            self.holds_unsaved = true;
        }
        Some(Change { name: target.to_string(), healthy, reason })
    }

    /// A target that came back with a `slow_start` starts its ramp; one that went down
    /// ends it.
    fn start_or_end_ramp(&mut self, config: &Config, target: &str, healthy: bool, returned: bool) {
        match config.targets.get(target).and_then(|t| t.slow_start) {
            Some(window) if returned => {
                let ramp = Ramp { since: SystemTime::now(), window, step: 1 };
                self.ramps.insert(target.to_string(), ramp);
            }
            _ if !healthy => {
                self.ramps.remove(target);
            }
            _ => {}
        }
    }

    /// Moves every slow start to the step `now` falls in, ending those whose window is
    /// over; true when a weight changed (the answers need a publish).
    pub fn advance_ramps(&mut self, now: SystemTime) -> bool {
        let mut changed = false;
        self.ramps.retain(|_, ramp| {
            let step = ramp.step_at(now);
            changed |= step != ramp.step;
            ramp.step = step;
            step <= SLOW_START_STEPS
        });
        changed
    }

    /// Recomputes the calculated targets, in order, from the eligibility of those they
    /// read; returns those whose health changed.
    pub fn update_calculated(&mut self, config: &Config) -> Vec<Change> {
        let mut changes = Vec::new();
        for name in &config.calculated_order {
            let Some(calculated) = config.targets.get(name).and_then(|t| t.calculated.as_ref()) else { continue };
            let (healthy, reason) = match calculated {
                crate::config::Calculated::AtLeast { count, of } => {
                    let eligible: Vec<&str> =
                        of.iter().filter(|t| self.target_eligible(t)).map(String::as_str).collect();
                    let healthy = eligible.len() >= *count;
                    let listed = if eligible.is_empty() { "none".to_string() } else { eligible.join(", ") };
                    (
                        healthy,
                        format!("calculated: {} of {} eligible ({listed}), at least {count}", eligible.len(), of.len()),
                    )
                }
                crate::config::Calculated::InverseOf(other) => {
                    let up = self.target_eligible(other);
                    let word = if up { "eligible" } else { "not eligible" };
                    (!up, format!("calculated: the inverse of {other}, which is {word}"))
                }
            };
            let Some(state) = self.targets.get_mut(name) else { continue };
            if state.healthy == healthy {
                state.set_reason(reason);
                continue;
            }
            state.healthy = healthy;
            state.since = SystemTime::now();
            state.set_reason(reason.clone());
            let returned = healthy && state.was_up;
            state.was_up |= healthy;
            self.health_unsaved = true;
            self.start_or_end_ramp(config, name, healthy, returned);
            changes.push(Change { name: name.clone(), healthy, reason });
        }
        changes
    }

    /// Whether `target` has preempt on: the operator's setting, else the configured one.
    pub fn target_preempt(&self, config: &Config, target: &str) -> bool {
        self.overrides.targets.get(target).and_then(|o| o.preempt).unwrap_or(config.targets[target].preempt)
    }

    /// Whether `group` has preempt on: the operator's setting, else the configured one.
    pub fn group_preempt(&self, config: &Config, group: &str) -> bool {
        self.overrides.groups.get(group).and_then(|o| o.preempt).unwrap_or(config.groups[group].preempt)
    }

    /// When `group`'s qualification last changed (or was first judged); None: unknown group.
    pub fn group_since(&self, group: &str) -> Option<SystemTime> {
        self.groups.get(group).map(|track| track.history.since)
    }

    /// Does the group have its minimum of eligible members (any family)?
    pub fn group_qualifies(&self, config: &Config, group: &str) -> bool {
        let spec = &config.groups[group];
        spec.members.iter().filter(|m| self.target_eligible(m)).count() >= spec.min_healthy
    }

    /// Tracks groups losing and regaining their minimum, holds those with preempt off,
    /// and returns the groups whose state changed (the first call reports nothing).
    pub fn update_groups(&mut self, config: &Config) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut held_any = false;
        for name in config.groups.keys() {
            let qualifies = self.group_qualifies(config, name);
            let preempt = self.group_preempt(config, name);
            let mut reason = {
                let spec = &config.groups[name];
                let eligible = spec.members.iter().filter(|m| self.target_eligible(m)).count();
                format!("{eligible} of {} members eligible, minimum {}", spec.members.len(), spec.min_healthy)
            };
            let now = SystemTime::now();
            let track = self.groups.entry(name.clone()).or_insert(GroupTrack {
                history: GroupHistory { qualified_ever: false, lost_since: false, since: now },
                up: None,
            });
            let lost = track.history.lost_since;
            // Lost: it qualified once and does not now; coming back is then a return.
            track.history.lost_since = if qualifies { false } else { track.history.qualified_ever };
            track.history.qualified_ever |= qualifies;
            if qualifies && lost && !preempt {
                self.overrides.groups.entry(name.clone()).or_default().held = true;
                tracing::warn!(group = %name, "group is back but held out until failed back (preempt off)");
                reason.push_str("; held out until failed back (preempt off)");
                held_any = true;
            }
            if track.up.replace(qualifies).is_some_and(|was| was != qualifies) {
                track.history.since = now;
                changes.push(Change { name: name.clone(), healthy: qualifies, reason });
            }
        }
        self.holds_unsaved |= held_any;
        changes
    }

    /// Applies an operator's action (`ctl target|group NAME ...`) to the overrides;
    /// returns what to tell the operator, or why it was refused.
    pub fn apply(&mut self, config: &Config, kind: Kind, name: &str, action: Action) -> Result<String, String> {
        // One override's fields, whichever kind it is.
        let (force, preempt, held) = match kind {
            Kind::Target => {
                if !config.targets.contains_key(name) {
                    return Err(format!("no target '{name}'"));
                }
                match action {
                    Action::Priority(_) => return Err("priority applies to groups".into()),
                    Action::Weight(Some(w)) if !(1..=crate::config::MAX_WEIGHT).contains(&w) => {
                        return Err(format!("weight must be between 1 and {}", crate::config::MAX_WEIGHT))
                    }
                    _ => {}
                }
                let o = self.overrides.targets.entry(name.to_string()).or_default();
                if let Action::Weight(w) = action {
                    o.weight = w;
                }
                (&mut o.force, &mut o.preempt, &mut o.held)
            }
            Kind::Group => {
                if !config.groups.contains_key(name) {
                    return Err(format!("no group '{name}'"));
                }
                if let Action::Weight(_) = action {
                    return Err("weight applies to targets".into());
                }
                let o = self.overrides.groups.entry(name.to_string()).or_default();
                if let Action::Priority(p) = action {
                    o.priority = Some(p);
                }
                (&mut o.force, &mut o.preempt, &mut o.held)
            }
        };
        match action {
            Action::Force(f) => *force = Some(f),
            Action::Auto => *force = None,
            Action::Priority(_) | Action::Weight(_) => {}
            Action::Preempt(on) => {
                *preempt = Some(on);
                if on {
                    *held = false; // with preempt on it would have come back by itself
                }
            }
            Action::Failback => {
                if !*held {
                    return Err(format!("{} '{name}' is not held", format!("{kind:?}").to_lowercase()));
                }
                *held = false;
            }
        }
        Ok(format!("{kind:?} {name}: done").to_lowercase())
    }

    /// What the state file holds for this state.
    pub fn saved(&self, stopped_cleanly: bool) -> SavedState {
        SavedState {
            overrides: self.overrides.clone(),
            last_known: self.last_known(),
            group_history: self.groups.iter().map(|(g, track)| (g.clone(), track.history)).collect(),
            stopped_cleanly,
            saved_at: Some(SystemTime::now()),
        }
    }
}

impl Health for State {
    fn target_eligible(&self, target: &str) -> bool {
        let Some(state) = self.targets.get(target) else { return false };
        match self.overrides.targets.get(target) {
            Some(TargetOverride { force: Some(Force::Up), .. }) => true,
            Some(TargetOverride { force: Some(Force::Down | Force::Drain), .. }) => false,
            Some(TargetOverride { held: true, .. }) => false,
            _ => self.seen_up(target, state.healthy),
        }
    }

    fn group_allowed(&self, group: &str) -> bool {
        match self.overrides.groups.get(group) {
            Some(GroupOverride { force: Some(Force::Up), .. }) => true,
            Some(GroupOverride { force: Some(Force::Down | Force::Drain), .. }) => false,
            Some(GroupOverride { held, .. }) => !held,
            None => true,
        }
    }

    fn group_forced_up(&self, group: &str) -> bool {
        self.overrides.groups.get(group).is_some_and(|o| o.force == Some(Force::Up))
    }

    fn group_priority(&self, group: &str, configured: i32) -> i32 {
        self.overrides.groups.get(group).and_then(|o| o.priority).unwrap_or(configured)
    }

    fn target_weight(&self, target: &str, configured: u32) -> u32 {
        // The operator's, else a feed's, else the config's; a slow start scales it.
        let operator = self.overrides.targets.get(target).and_then(|o| o.weight);
        let fed = || {
            let own = target.split(crate::config::NAMED_MEMBER_SEPARATOR).next().unwrap_or(target);
            self.feed_weights.get(target).or_else(|| self.feed_weights.get(own)).copied()
        };
        let weight = operator.or_else(fed).unwrap_or(configured);
        match self.ramps.get(target) {
            Some(ramp) => (weight as u64 * ramp.step as u64 / SLOW_START_STEPS as u64).max(1) as u32,
            None => weight,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outcome(ok: bool) -> Outcome {
        Outcome {
            ok,
            local_error: false,
            detail: if ok { "ok".into() } else { "refused".into() },
            latency: Duration::ZERO,
            tcp: None,
        }
    }

    #[test]
    fn rise_and_fall_need_results_in_a_row() {
        let mut c = CheckState::new("http", true);
        assert!(!c.record(outcome(false), 2, 3));
        assert!(!c.record(outcome(false), 2, 3));
        assert!(!c.record(outcome(true), 2, 3), "a success resets the streak");
        assert!(!c.record(outcome(false), 2, 3));
        assert!(!c.record(outcome(false), 2, 3));
        assert!(c.record(outcome(false), 2, 3), "third failure in a row: down");
        assert!(!c.up);
        assert!(!c.record(outcome(true), 2, 3));
        assert!(c.record(outcome(true), 2, 3), "second success in a row: up");
        assert!(c.up);
        assert_eq!((c.runs, c.failures), (8, 5));
    }

    #[test]
    fn local_errors_neither_fail_nor_restore_a_check() {
        let mut c = CheckState::new("http", true);
        let local = Outcome { local_error: true, detail: "local error: EMFILE".into(), ..outcome(false) };
        assert!(!c.record(outcome(false), 1, 2));
        for _ in 0..10 {
            assert!(!c.record(local.clone(), 1, 2), "a local error is not a failure");
        }
        assert!(c.up);
        assert_eq!((c.runs, c.failures, c.local_errors), (1, 1, 10));
        assert!(c.local_error.is_some());
        // The streak survives the local errors: the next real failure completes it.
        assert!(c.record(outcome(false), 1, 2));
        assert!(c.local_error.is_none());
        let mut down = CheckState::new("http", false);
        assert!(!down.record(local, 1, 1), "nor does it bring a target back");
        assert!(!down.up);
    }

    const POLICIES: &str = r#"
[server]
interfaces = ["lo"]
[checks.a]
type = "icmp"
rise = 1
fall = 1
[targets.web1]
address = "10.0.0.1"
checks = ["a"]
[targets.web2]
address = "10.0.0.2"
checks = ["a"]
[targets.web3]
address = "10.0.0.3"
checks = ["a"]
slow_start = "100s"
[targets.site]
address = "10.0.0.10"
calculated = { at_least = 2, of = ["web1", "web2", "web3"] }
[targets.sorry]
address = "10.0.0.99"
calculated = { inverse_of = "site" }
[groups.web]
members = ["web1", "web2", "web3"]
policy = "weighted"
"#;

    #[test]
    fn calculated_targets_follow_the_targets_they_read_in_order() {
        let config = crate::config::Config::parse(std::path::Path::new("t.toml"), POLICIES).unwrap();
        assert_eq!(config.calculated_order, ["site", "sorry"], "site before the target that reads it");
        let mut state = State::new(&config);
        assert!(state.target_eligible("site") && !state.target_eligible("sorry"));
        assert!(state.targets["site"].reason.contains("3 of 3 eligible"), "{}", state.targets["site"].reason);
        state.record(&config, "web1", 0, outcome(false)).unwrap();
        assert!(state.update_calculated(&config).is_empty(), "2 of 3 is enough");
        // An operator's drain counts as not eligible, as for groups.
        state.apply(&config, Kind::Target, "web2", Action::Force(Force::Drain)).unwrap();
        let changes = state.update_calculated(&config);
        let changed: Vec<(&str, bool)> = changes.iter().map(|c| (c.name.as_str(), c.healthy)).collect();
        assert_eq!(changed, [("site", false), ("sorry", true)], "one pass, in order");
        assert!(changes[0].reason.contains("1 of 3 eligible (web3), at least 2"), "{}", changes[0].reason);
        assert!(state.target_eligible("sorry"));
    }

    #[test]
    fn calculated_targets_are_refused_with_a_cycle_an_unknown_target_or_checks() {
        let parse = |extra: &str| {
            crate::config::Config::parse(std::path::Path::new("t.toml"), &format!("{POLICIES}{extra}")).unwrap_err()
        };
        let e = parse("[targets.loop1]\naddress = \"10.0.1.1\"\ncalculated = { inverse_of = \"loop2\" }\n[targets.loop2]\naddress = \"10.0.1.2\"\ncalculated = { inverse_of = \"loop1\" }\n");
        assert!(e.reason.contains("cycle") && e.line > 0, "{e}");
        let e = parse("[targets.x]\naddress = \"10.0.1.1\"\ncalculated = { at_least = 1, of = [\"nobody\"] }\n");
        assert!(e.reason.contains("no target 'nobody'"), "{e}");
        let e = parse("[targets.x]\naddress = \"10.0.1.1\"\ncalculated = { at_least = 3, of = [\"web1\"] }\n");
        assert!(e.reason.contains("at_least must be between 1"), "{e}");
        let e =
            parse("[targets.x]\naddress = \"10.0.1.1\"\nchecks = [\"a\"]\ncalculated = { inverse_of = \"web1\" }\n");
        assert!(e.reason.contains("no checks of its own"), "{e}");
        let e = parse("[targets.x]\naddress = \"10.0.1.1\"\ncalculated = { inverse_of = \"web1\", at_least = 1 }\n");
        assert!(e.reason.contains("either"), "{e}");
        let e = parse("[targets.x]\naddress = \"10.0.1.1\"\ncheck_address = \"nowhere\"\n");
        assert!(e.reason.contains("check_address 'nowhere'"), "{e}");
        let e = parse("[targets.x]\naddress = \"10.0.1.1\"\nslow_start = \"2d\"\n");
        assert!(e.reason.contains("out of range"), "{e}");
    }

    #[test]
    fn weights_come_from_the_operator_a_feed_or_the_config() {
        let config = crate::config::Config::parse(std::path::Path::new("t.toml"), POLICIES).unwrap();
        let mut state = State::new(&config);
        assert_eq!(state.target_weight("web1", 5), 5);
        state.feed_weights.insert("web1".into(), 30);
        assert_eq!(state.target_weight("web1", 5), 30, "a feed's over the config's");
        state.apply(&config, Kind::Target, "web1", Action::Weight(Some(2))).unwrap();
        assert_eq!(state.target_weight("web1", 5), 2, "the operator's over a feed's");
        state.apply(&config, Kind::Target, "web1", Action::Weight(None)).unwrap();
        assert_eq!(state.target_weight("web1", 5), 30);
        let refused = state.apply(&config, Kind::Target, "web1", Action::Weight(Some(0))).unwrap_err();
        assert!(refused.contains("between 1 and 1000000"), "{refused}");
        let refused = state.apply(&config, Kind::Group, "web", Action::Weight(Some(3))).unwrap_err();
        assert_eq!(refused, "weight applies to targets");
        // Saved with the overrides.
        state.apply(&config, Kind::Target, "web1", Action::Weight(Some(9))).unwrap();
        let saved: SavedState = serde_json::from_str(&serde_json::to_string(&state.saved(true)).unwrap()).unwrap();
        assert_eq!(saved.overrides.targets["web1"].weight, Some(9));
    }

    #[test]
    fn a_slow_start_ramps_the_weight_in_ten_steps_over_its_window() {
        let config = crate::config::Config::parse(std::path::Path::new("t.toml"), POLICIES).unwrap();
        let mut state = State::new(&config);
        state.record(&config, "web3", 0, outcome(false)).unwrap();
        assert!(state.ramps.is_empty(), "no ramp while down");
        state.record(&config, "web3", 0, outcome(true)).unwrap();
        let since = state.ramps["web3"].since;
        // The weighted start table's share of web3 (weight 1000 against two of 1000) at
        // the start of each tenth of the 100 s window.
        let mut shares = Vec::new();
        for second in (0..=100).step_by(10) {
            let now = since + Duration::from_secs(second) + Duration::from_millis(1);
            state.advance_ramps(now);
            let weights: Vec<u32> = ["web1", "web2", "web3"].iter().map(|t| state.target_weight(t, 1000)).collect();
            let slots = crate::answers::records::weighted_slots(&weights);
            shares.push(slots.iter().filter(|s| **s == 2).count() * 100 / slots.len());
        }
        println!("web3's share of replies over its slow start, every 10 s: {shares:?} %");
        // 100 of 2100, 200 of 2200, …: the tenth step (full weight, a third) starts at 90 s.
        assert_eq!(shares, [4, 9, 13, 16, 20, 23, 25, 28, 31, 33, 33]);
        assert!(state.ramps.is_empty(), "over at the end of the window");
        // Advancing within a step changes nothing (no publish).
        state.record(&config, "web3", 0, outcome(false)).unwrap();
        state.record(&config, "web3", 0, outcome(true)).unwrap();
        let since = state.ramps["web3"].since;
        assert!(!state.advance_ramps(since + Duration::from_secs(5)));
        assert!(state.advance_ramps(since + Duration::from_secs(11)));
    }

    #[test]
    fn a_fractional_quorum_counts_the_live_nodes() {
        let config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            r#"
[server]
interfaces = ["lo"]
[targets.half]
address = "10.0.0.1"
quorum = "1/2"
[targets.two]
address = "10.0.0.2"
quorum = 2
[fleet]
etcd = ["http://127.0.0.1:2379"]
"#,
        )
        .unwrap();
        let mut state = State::new(&config);
        let views = |pairs: &[(&str, bool)]| pairs.iter().map(|(n, up)| (n.to_string(), *up)).collect();
        // Alone (the other nodes' leases gone), this node's own view decides "1/2",
        // while "2" cannot be met.
        assert!(state.target_eligible("half"));
        assert!(!state.target_eligible("two"));
        // Four live nodes: "1/2" needs two up.
        for target in ["half", "two"] {
            state.fleet_votes.insert(target.into(), views(&[("b", true), ("c", false), ("d", false)]));
        }
        assert!(state.target_eligible("half") && state.target_eligible("two"));
        state.targets.get_mut("half").unwrap().healthy = false;
        assert!(!state.target_eligible("half"), "one of four is below half");
        state.fleet_votes.insert("half".into(), views(&[("b", true), ("c", true), ("d", false)]));
        assert!(state.target_eligible("half"), "two of four");
    }

    #[test]
    fn a_restart_keeps_last_known_health_and_preempt_holds() {
        let config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            r#"
[server]
interfaces = ["lo"]
[checks.a]
type = "icmp"
rise = 1
fall = 1
[targets.web1]
address = "10.0.0.1"
checks = ["a"]
[targets.web2]
address = "10.0.0.2"
checks = ["a"]
[groups.site]
members = ["web1"]
preempt = false
"#,
        )
        .unwrap();
        let mut before = State::new(&config);
        before.record(&config, "web1", 0, outcome(false)).unwrap();
        before.update_groups(&config);
        assert!(!before.group_qualifies(&config, "site"));
        // Through JSON, as the state file carries it.
        let saved: SavedState = serde_json::from_str(&serde_json::to_string(&before.saved(false)).unwrap()).unwrap();
        let mut after = State::with_overrides(&config, saved.overrides.clone());
        assert_eq!(after.restore(&config, &saved), 2);
        assert!(!after.target_eligible("web1"), "down as last known, not initially up");
        assert!(after.targets["web1"].shown_reason().contains("last known before restart"));
        assert!(after.target_eligible("web2"));
        // The site had lost its member before the restart: coming back, it is held.
        after.record(&config, "web1", 0, outcome(true)).unwrap();
        after.update_groups(&config);
        assert!(after.overrides.groups["site"].held, "preempt-off hold survives the restart");
        assert!(!after.group_allowed("site"));
    }

    #[test]
    fn a_target_is_healthy_only_while_all_its_checks_are_up() {
        let config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            r#"
[server]
interfaces = ["lo"]
[checks.a]
type = "icmp"
rise = 1
fall = 1
[checks.b]
type = "tcp"
port = 80
rise = 1
fall = 1
initial = "down"
[targets.web]
address = "10.0.0.1"
checks = ["a", "b"]
"#,
        )
        .unwrap();
        let mut state = State::new(&config);
        assert!(!state.target_eligible("web"), "b starts down");
        assert_eq!(state.targets["web"].reason, "check b: initial state down");
        let change = state.record(&config, "web", 1, outcome(true)).unwrap();
        assert!(change.healthy);
        let change = state.record(&config, "web", 0, outcome(false)).unwrap();
        assert_eq!(change, Change { name: "web".into(), healthy: false, reason: "check a: refused".into() });
        assert!(state.record(&config, "web", 1, outcome(true)).is_none());
    }

    #[test]
    fn operator_actions_apply_to_overrides_or_say_why_not() {
        let config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            "[server]\ninterfaces = [\"lo\"]\n[targets.web1]\naddress = \"192.0.2.1\"\n\
             [groups.tokyo]\nmembers = [\"web1\"]\n",
        )
        .unwrap();
        let mut state = State::new(&config);
        let refused =
            |state: &mut State, kind, name: &str, action| state.apply(&config, kind, name, action).unwrap_err();
        assert_eq!(refused(&mut state, Kind::Target, "web9", Action::Auto), "no target 'web9'");
        assert_eq!(refused(&mut state, Kind::Group, "osaka", Action::Auto), "no group 'osaka'");
        assert_eq!(refused(&mut state, Kind::Target, "web1", Action::Priority(5)), "priority applies to groups");
        assert_eq!(refused(&mut state, Kind::Group, "tokyo", Action::Failback), "group 'tokyo' is not held");
        assert_eq!(
            state.apply(&config, Kind::Target, "web1", Action::Force(Force::Drain)).unwrap(),
            "target web1: done"
        );
        assert!(!state.target_eligible("web1"));
        state.apply(&config, Kind::Target, "web1", Action::Auto).unwrap();
        assert!(state.target_eligible("web1"));
        state.apply(&config, Kind::Group, "tokyo", Action::Priority(7)).unwrap();
        assert_eq!(state.group_priority("tokyo", 100), 7);
        // A hold is released by failback, or by turning preempt back on.
        state.overrides.targets.get_mut("web1").unwrap().held = true;
        assert!(!state.target_eligible("web1"));
        state.apply(&config, Kind::Target, "web1", Action::Preempt(true)).unwrap();
        assert!(state.target_eligible("web1"));
        state.overrides.targets.get_mut("web1").unwrap().held = true;
        state.apply(&config, Kind::Target, "web1", Action::Failback).unwrap();
        assert!(state.target_eligible("web1"));
        assert_eq!(refused(&mut state, Kind::Target, "web1", Action::Failback), "target 'web1' is not held");
    }
}
