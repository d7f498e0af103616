//! The controller loop: one task per (target, check) probes on its own schedule and
//! reports; this loop folds reports into `State` and, when a target's health changes,
//! recomputes the answers and writes what changed into the map.

use std::{net::IpAddr, sync::Arc, time::Duration};

use anyhow::Result;
use tokio::{sync::mpsc, task::JoinSet};
use tracing::{error, info, warn};

mod feeds;
mod fleet;
mod reload;

use crate::{
    answers::pdns_backend::{AnswerFeed, AnswerTable},
    answers::records,
    config::{pushed::PushedConfig, Config},
    dataplane::publish::AnswerMaps,
    health::checkers::Checkers,
    health::checks::{
        self,
        schedule::{LocalErrorLog, Report},
    },
    health::state::{Overrides, SavedState, State, StateFile},
    ops::control::{Explanation, Incoming, Reply, Request, Status},
    ops::hooks::{self, HookRunner},
    ops::metrics::Recorder,
    ops::report,
};

pub(crate) struct Controller {
    config: Config,
    /// Where `reload` reads the config from.
    config_path: Option<std::path::PathBuf>,
    state: State,
    /// The answer maps (record sets, names, view tries, RRL settings).
    maps: AnswerMaps,
    /// Where the state is saved (overrides, holds, last-known health).
    state_file: StateFile,
    cookies: crate::dataplane::cookies::CookieKeeper,
    /// The names map's plan for the running config (None: to be built).
    name_plan: Option<std::sync::Arc<records::NamePlan>>,
    reports: mpsc::Receiver<Report>,
    checkers: Checkers,
    previous_run: Option<PreviousRun>,
    /// The PowerDNS remote backend's view of the answers, if it is enabled.
    answers: Option<AnswerFeed>,
    metrics: Recorder,
    /// What happened to the data plane at start (attached afresh, adopted after a clean
    /// stop or after a crash), shown by `ctl status`.
    dataplane_note: String,
    /// Negative answers: the zone task (None in tests that drive the maps themselves).
    zones: Option<crate::answers::zone_data::ZoneFeed>,
    /// The tap's counters (dnstap, captures), for stats.
    tap_stats: Option<std::sync::Arc<crate::tap::TapStats>>,
    hooks: HookRunner,
    /// Log lines about checks that could not run here, at most a few per window.
    local_errors: LocalErrorLog,
    /// The `[geoip] database` file as last seen (inode, size, mtime): a change reloads.
    geoip: crate::daemon::file_watch::FileWatch,
    /// Targets given by host: what they resolve to, and the tasks resolving them.
    resolutions: std::collections::BTreeMap<String, crate::health::resolve::Resolution>,
    resolved_tx: mpsc::Sender<crate::health::resolve::Resolved>,
    resolved_rx: mpsc::Receiver<crate::health::resolve::Resolved>,
    resolvers: JoinSet<()>,
    /// `[fleet]`: the etcd connection, and the overrides it brings in.
    fleet: Option<crate::fleet::Fleet>,
    fleet_events: Option<mpsc::Receiver<crate::fleet::FleetEvent>>,
    /// `fleet push`: the pushed config this node runs with its own node-local tables
    /// (None: its own file alone).
    pushed: Option<PushedConfig>,
    /// A pushed revision this node will not apply (it stopped while applying it before).
    refusal: Option<crate::config::pushed::Refusal>,
    /// The pushed revision on probation and when it ends: then it is kept for the next
    /// start (`pushed::PROBATION`).
    probation: Option<(i64, std::time::Instant)>,
    /// The other live nodes, and so who checks the sharded targets.
    membership: crate::fleet::membership::Membership,
    /// `[feeds]`: their tasks (None without a runtime's tasks, in tests), their events,
    /// and per feed its status and last good batch.
    feeds: Option<crate::feeds::Feeds>,
    feed_events: Option<mpsc::Receiver<crate::feeds::FeedEvent>>,
    feed_slots: std::collections::BTreeMap<String, crate::feeds::FeedSlot>,
}

/// The feeds' tasks at start, their events, and the events that came while the start
/// waited for first batches (`feeds::await_first`).
pub(crate) struct FeedStart {
    pub tasks: crate::feeds::Feeds,
    pub events: mpsc::Receiver<crate::feeds::FeedEvent>,
    pub early: Vec<crate::feeds::FeedEvent>,
}

/// What the state file says about the controller that ran before this one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PreviousRun {
    pub stopped_cleanly: bool,
    pub saved_at: Option<std::time::SystemTime>,
}

impl Controller {
    /// Writes the initial answers (every check in its initial state, saved overrides
    /// and holds applied) and starts the checkers.
    pub(crate) fn start(
        config: Config,
        config_path: Option<std::path::PathBuf>,
        (pushed, refusal): (Option<PushedConfig>, Option<crate::config::pushed::Refusal>),
        maps: AnswerMaps,
        cookies: crate::dataplane::publish::CookieMapWriter,
        feed_start: Option<FeedStart>,
    ) -> Result<Controller> {
        let (reports_tx, reports) = mpsc::channel(1024);
        let (resolved_tx, resolved_rx) = mpsc::channel(64);
        let saved = match SavedState::load(&config.state_file) {
            Ok(saved) => saved,
            Err(e) => {
                // Keep it for the operator: the save below would otherwise replace it.
                let aside = config.state_file.with_extension("unreadable");
                let _ = std::fs::rename(&config.state_file, &aside);
                error!(error = %format!("{e:#}"), kept = %aside.display(), "state file unreadable; starting without overrides or last-known health");
                None
            }
        };
        let previous_run =
            saved.as_ref().map(|s| PreviousRun { stopped_cleanly: s.stopped_cleanly, saved_at: s.saved_at });
        let saved = saved.unwrap_or_default();
        if saved.overrides != Overrides::default() {
            info!(file = %config.state_file.display(), "restored saved overrides");
        }
        let mut state = State::with_overrides(&config, saved.overrides.clone());
        let restored = state.restore(&config, &saved);
        if restored > 0 {
            info!(targets = restored, "targets start from their last-known health");
        }
        // From here on the file says "running": a kill leaves it that way.
        let state_file = StateFile(config.state_file.clone());
        state_file.write(&mut state, false);
        let hooks = HookRunner::start(&config.hooks, config.exec_user.clone(), Default::default());
        let config_budget = config.max_checks_in_flight;
        let (fleet, fleet_events) = match &config.fleet {
            Some(fleet) => {
                let (events, incoming) = mpsc::channel(256);
                info!(node = %fleet.node, prefix = %fleet.prefix, endpoints = ?fleet.endpoints, "fleet: sharing overrides through etcd");
                (Some(crate::fleet::Fleet::start(fleet.clone(), events)), Some(incoming))
            }
            None => (None, None),
        };
        let mut controller = Controller {
            config,
            config_path,
            state,
            maps,
            state_file,
            cookies: crate::dataplane::cookies::CookieKeeper::new(cookies),
            name_plan: None,
            reports,
            checkers: Checkers::new(reports_tx, Arc::new(checks::Budget::new(checks::budget_size(config_budget)))),
            previous_run,
            answers: None,
            metrics: Recorder::default(),
            dataplane_note: String::new(),
            zones: None,
            tap_stats: None,
            hooks,
            local_errors: LocalErrorLog::default(),
            geoip: Default::default(),
            resolutions: Default::default(),
            resolved_tx,
            resolved_rx,
            resolvers: JoinSet::new(),
            fleet,
            fleet_events,
            probation: pushed
                .as_ref()
                .map(|p| (p.revision, std::time::Instant::now() + crate::config::pushed::PROBATION)),
            pushed,
            refusal,
            membership: Default::default(),
            feeds: None,
            feed_events: None,
            feed_slots: Default::default(),
        };
        match controller.refusal.clone() {
            Some(r) => controller.report_config(r.revision, r.reason),
            None => controller.report_config(0, String::new()),
        }
        controller.vote_all();
        controller.spawn_resolvers();
        if let Some(powerdns) = controller.config.powerdns.clone() {
            let plan = controller.plan();
            let chosen = records::choose_sets(&controller.config, &plan.specs, &controller.state);
            let table = AnswerTable::new(
                plan,
                chosen,
                controller.config.view_index.clone(),
                controller.config.sticky_prefixes(),
            );
            controller.answers = Some(AnswerFeed::start(&powerdns, table)?);
        }
        // Feeds: batches saved before the restart, then what came while the start waited,
        // applied before the checkers start (the first publish already carries them).
        controller.adopt_feed_slots(true);
        let early = match feed_start {
            Some(FeedStart { tasks, events, early }) => {
                controller.feeds = Some(tasks);
                controller.feed_events = Some(events);
                early
            }
            None => Vec::new(),
        };
        if controller.config.feeds.is_empty() {
            controller.publish()?;
        } else {
            controller.record_feed_verdicts();
            let with_feeds = controller.config_with_feeds(&controller.config);
            match with_feeds {
                Ok(config) => {
                    controller.config = config;
                    controller.name_plan = None;
                }
                Err(why) => error!(%why, "restored feed data does not fit; serving without it"),
            }
            controller.state.feed_weights = controller.served_weights();
            controller.publish()?;
            for event in early {
                controller.on_feed(event)?;
            }
        }
        controller.spawn_all();
        Ok(controller)
    }

    fn spawn_all(&mut self) {
        self.spawn_where(|_| true);
    }

    /// Starts the checkers of every target `wanted` says yes to (and this node checks).
    fn spawn_where(&mut self, wanted: impl Fn(&str) -> bool) {
        self.checkers.start_where(&self.config, &self.state.not_checked_here, wanted);
    }

    /// One resolving task per target given by host (again after a reload).
    fn spawn_resolvers(&mut self) {
        self.resolvers.abort_all();
        if self.config.named_targets.is_empty() {
            return;
        }
        let resolver = match crate::health::resolve::resolver(&self.config.resolver) {
            Ok(r) => r,
            Err(why) => {
                error!(%why, "cannot resolve targets given by host; they have no addresses");
                for target in self.config.named_targets.keys() {
                    let entry = self.resolutions.entry(target.clone()).or_default();
                    entry.failing.get_or_insert((std::time::SystemTime::now(), why.clone()));
                }
                return;
            }
        };
        for (target, named) in &self.config.named_targets {
            self.resolvers.spawn(crate::health::resolve::resolve_loop(
                target.clone(),
                named.host.clone(),
                self.config.resolver.clone(),
                resolver.clone(),
                self.resolved_tx.clone(),
            ));
        }
    }

    /// A resolution came in: new addresses become targets, gone ones are dropped.
    fn on_resolved(&mut self, resolved: crate::health::resolve::Resolved) -> Result<()> {
        let Some(named) = self.config.named_targets.get(&resolved.target) else { return Ok(()) };
        let host = named.host.clone();
        // Targets from a resolver's answer: not special-purpose addresses (unless the
        // config allows them) and, for a pushed config, only what this node allows.
        let policy = match (&self.pushed, &self.config.fleet) {
            (Some(_), Some(fleet)) => {
                fleet.pushed_target_policy(crate::sys::host::snapshot().map(|s| s.addresses).unwrap_or_default())
            }
            _ => crate::config::target_addresses::TargetPolicy {
                special_ok: self.config.resolver.allow_special_addresses,
                ..Default::default()
            },
        };
        let max = self.config.resolver.max_addresses;
        let mut left_out = String::new();
        let resolved = crate::health::resolve::Resolved {
            result: resolved.result.map(|addresses| {
                let (kept, note) = crate::health::resolve::screen(addresses, &policy, max);
                left_out = note;
                kept
            }),
            ..resolved
        };
        let entry = self.resolutions.entry(resolved.target.clone()).or_default();
        if entry.left_out != left_out {
            if !left_out.is_empty() {
                warn!(target = %resolved.target, %host, left_out = %left_out, "resolved addresses left out of the targets");
            }
            entry.left_out = left_out;
        }
        let was_failing = entry.failing.is_some();
        let result = resolved.result.clone();
        let changed = entry.record(resolved.result, self.config.resolver.grace, std::time::SystemTime::now());
        let addresses: Vec<String> = entry.addresses.iter().map(|a| a.to_string()).collect();
        match (&result, changed) {
            (Ok(_), true) => {
                info!(target = %resolved.target, %host, addresses = %addresses.join(", "), "target resolves to new addresses")
            }
            (Ok(_), false) if was_failing => info!(target = %resolved.target, %host, "target resolves again"),
            (Err(why), true) => warn!(target = %resolved.target, %host, %why, grace = ?self.config.resolver.grace,
                "target has not resolved for its grace period: its addresses are gone from the answers"),
            (Err(why), false) if !was_failing => {
                warn!(target = %resolved.target, %host, %why, kept = %addresses.join(", "),
                "target does not resolve; its last addresses stay for the grace period")
            }
            _ => {}
        }
        if changed {
            self.apply_resolutions()?;
        }
        Ok(())
    }

    /// Makes `new` (an expanded config and the addresses left out of its groups) the
    /// running one: health carried over for targets that stay, answers published — and
    /// the view tries and RRL settings too with `config_maps`. If publishing fails, the
    /// running config and state stay. Returns the config it replaced.
    fn switch_to(&mut self, (new, left_out): (Config, Vec<String>), config_maps: bool) -> Result<Config> {
        for member in left_out {
            warn!(%member, "address left out of its group");
        }
        let mut state = State::with_overrides(&new, self.state.overrides.clone());
        state.inherit(&self.state, &new);
        state.not_checked_here = self.shards_elsewhere(&new);
        let old_config = std::mem::replace(&mut self.config, new);
        let old_state = std::mem::replace(&mut self.state, state);
        if config_maps {
            self.maps.config_changed();
        }
        self.name_plan = None;
        if let Err(e) = self.publish() {
            self.config = old_config;
            self.state = old_state;
            // The running config's maps are written again with its next publish.
            if config_maps {
                self.maps.config_changed();
            }
            self.name_plan = None;
            return Err(e);
        }
        self.vote_all();
        if let Some(zones) = &self.zones {
            zones.update(&self.config);
        }
        Ok(old_config)
    }

    /// Rebuilds the targets from the resolutions: state carried over for addresses
    /// that stay, checkers started for new ones and stopped for gone ones, answers
    /// published.
    fn apply_resolutions(&mut self) -> Result<()> {
        let addresses = self.resolutions.iter().map(|(t, r)| (t.clone(), r.addresses.clone())).collect();
        self.switch_to(self.config.expand(&addresses), false)?;
        // Checkers: stop those of gone targets, start those of new ones.
        let targets = &self.config.targets;
        self.checkers
            .retain(|checker| targets.get(&checker.target).is_some_and(|t| t.probe_address() == checker.address));
        let running = self.checkers.targets();
        self.spawn_where(|name| !running.contains(name));
        let targets = &self.config.targets;
        self.metrics.retain_targets(|t| targets.contains_key(t));
        Ok(())
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn previous_run(&self) -> Option<PreviousRun> {
        self.previous_run
    }

    /// The zone task for negative answers, told of every config switch.
    pub(crate) fn set_zone_feed(&mut self, feed: crate::answers::zone_data::ZoneFeed) {
        self.zones = Some(feed);
    }

    /// The tap's counters, shown by stats.
    pub(crate) fn set_tap_stats(&mut self, stats: std::sync::Arc<crate::tap::TapStats>) {
        self.tap_stats = Some(stats);
    }

    pub(crate) fn set_dataplane_note(&mut self, note: String) {
        self.dataplane_note = note;
    }

    /// The config's name plan: it depends on the config alone, so built once per config.
    fn plan(&mut self) -> std::sync::Arc<records::NamePlan> {
        self.name_plan.get_or_insert_with(|| std::sync::Arc::new(records::plan_names(&self.config))).clone()
    }

    /// Recomputes every name's answers and writes those that changed.
    fn publish(&mut self) -> Result<()> {
        let started = std::time::Instant::now();
        let plan = self.plan();
        // Selection once per spec; both paths answer from its result.
        let chosen = records::choose_sets(&self.config, &plan.specs, &self.state);
        let sets = records::render_sets(&plan.specs, &chosen);
        // PowerDNS answers from the same state: its table is built beforehand and handed
        // over the moment XDP's entries are written, so the two differ for microseconds.
        let table = self.answers.as_ref().map(|_| {
            let sticky = self.config.sticky_prefixes();
            std::sync::Arc::new(AnswerTable::new(plan.clone(), chosen, self.config.view_index.clone(), sticky))
        });
        let desired = records::Desired { plan, sets };
        let answers = self.answers.as_ref();
        let stats = self.maps.publish(&self.config, desired, || {
            if let (Some(feed), Some(table)) = (answers, table) {
                feed.replace(table);
            }
        })?;
        self.cookies.apply(&self.config.cookies)?;
        self.metrics.map_sync(stats.written + stats.sets_written, stats.deleted, started.elapsed());
        if stats.written + stats.deleted + stats.sets_written > 0 {
            info!(
                record_sets = stats.sets_written,
                names_written = stats.written,
                names_deleted = stats.deleted,
                publish_us = started.elapsed().as_micros() as u64,
                "answers updated"
            );
        }
        Ok(())
    }

    /// Handles reports, operator requests and SIGHUP until `shutdown` resolves.
    pub(crate) async fn run(
        &mut self,
        mut requests: mpsc::Receiver<Incoming>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<()> {
        tokio::pin!(shutdown);
        let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        // Health changes are saved at most once a second: many targets flapping must not
        // turn into a file write each. A crash loses at most that second.
        let mut save_tick = tokio::time::interval(Duration::from_secs(1));
        save_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.state.holds_unsaved {
                self.save_state();
            }
            tokio::select! {
                _ = &mut shutdown => {
                    crate::sys::supervise::notify_stopping();
                    self.state_file.write(&mut self.state, true);
                    // Stopped in order (a signal, not a panic): the revision on probation
                    // ran until asked to stop, so it counts as run successfully.
                    if crate::sys::supervise::reason().is_none() {
                        self.probation = self.probation.map(|(revision, _)| (revision, std::time::Instant::now()));
                        self.end_probation_if_due();
                    }
                    return Ok(());
                }
                Some(event) = next_event(&mut self.feed_events) => {
                    if let Err(e) = self.on_feed(event) {
                        self.save_state();
                        return Err(e.context("writing the answers after a feed's batch"));
                    }
                }
                _ = save_tick.tick() => {
                    crate::sys::supervise::watchdog_ping();
                    if let Err(e) = self.check_feeds_stale() {
                        self.save_state();
                        return Err(e.context("writing the answers after a feed went stale"));
                    }
                    // Slow starts: one publish per step, not per query.
                    if self.state.advance_ramps(std::time::SystemTime::now()) {
                        if let Err(e) = self.publish() {
                            self.save_state();
                            return Err(e.context("writing the answers for a slow start's next step"));
                        }
                    }
                    self.local_errors.tick();
                    self.end_probation_if_due();
                    self.reload_if_geoip_changed();
                    if let Err(e) = self.cookies.tick() {
                        self.save_state();
                        return Err(e.context("writing the DNS cookie secret or clock"));
                    }
                    if self.state.health_unsaved {
                        self.save_state();
                    }
                }
                Some(event) = next_event(&mut self.fleet_events) => {
                    if let Err(e) = self.on_fleet(event) {
                        self.save_state();
                        return Err(e.context("writing the answers after a fleet override"));
                    }
                }
                Some(resolved) = self.resolved_rx.recv() => {
                    if let Err(e) = self.on_resolved(resolved) {
                        self.save_state();
                        return Err(e.context("writing the answers after a target's addresses changed"));
                    }
                }
                Some(report) = self.reports.recv() => {
                    if let Err(e) = self.handle(report) {
                        // The answers can no longer be written (a map update failed):
                        // stop, so that on_stop is honoured and a supervisor restarts
                        // us with fresh maps. Save first; this is not a clean stop.
                        self.save_state();
                        return Err(e.context("writing the answers after a health change"));
                    }
                }
                Some((request, reply)) = requests.recv() => {
                    let answer = self.request(request);
                    let _ = reply.send(answer);
                }
                Some(()) = sighup.recv() => {
                    info!("SIGHUP: reloading");
                    let reply = self.reload();
                    if !reply.ok {
                        error!(reason = %reply.message, "reload rejected; the running config keeps serving");
                    }
                }
                (checker, why) = self.checkers.restart_next_dead() => {
                    error!(target = %checker.target, check = checker.index, %why, "checker died; restarted it");
                }
            }
        }
    }

    fn handle(&mut self, report: Report) -> Result<()> {
        let Report { target, check, outcome } = report;
        let Some(check_state) = self.state.targets.get(&target).and_then(|t| t.checks.get(check)) else {
            return Ok(());
        };
        self.metrics.check(&target, &check_state.name, &outcome);
        // When a run of local errors starts and ends, not for every run; rate-limited
        // over all targets.
        if outcome.local_error {
            if check_state.local_error.is_none() {
                self.local_errors.failed(&target, &check_state.name, &outcome.detail);
            }
        } else if check_state.local_error.is_some() {
            self.local_errors.recovered(&target, &check_state.name);
        }
        if !outcome.ok {
            tracing::debug!(%target, check, detail = %outcome.detail, "check failed");
        }
        if let Some(change) = self.state.record(&self.config, &target, check, outcome) {
            self.announce("target", &change);
            self.after_change()?;
        }
        Ok(())
    }

    /// Group changes that follow target changes or overrides, then the new answers.
    fn after_change(&mut self) -> Result<()> {
        for change in self.state.update_calculated(&self.config) {
            self.announce("target", &change);
        }
        for change in self.state.update_groups(&self.config) {
            self.announce("group", &change);
        }
        self.publish()
    }

    /// Logs a state change and queues the on_change hook, if any, without waiting; a
    /// target's change is this node's view for the fleet's quorums.
    fn announce(&self, kind: &'static str, change: &crate::health::state::Change) {
        if let (Some(fleet), "target") = (&self.fleet, kind) {
            if self.votes_on(&change.name) {
                fleet.vote(&change.name, change.healthy);
            }
        }
        let (old, new) = if change.healthy { ("down", "up") } else { ("up", "down") };
        if change.healthy {
            info!(kind, name = %change.name, reason = %change.reason, "{kind} up");
        } else {
            warn!(kind, name = %change.name, reason = %change.reason, "{kind} down");
        }
        self.hooks.notify(hooks::Change { kind, name: change.name.clone(), old, new, reason: change.reason.clone() });
    }
}

impl Controller {
    fn request(&mut self, request: Request) -> Reply {
        match request {
            Request::Status { names } => Reply { status: Some(self.status(&names)), ..Reply::ok("") },
            Request::Stats => Reply { stats: Some(self.stats()), ..Reply::ok("") },
            Request::Explain { name, from, ecs, family } => match self.explain(&name, from, ecs.as_deref(), family) {
                Ok(explanation) => Reply { explain: Some(explanation), ..Reply::ok("") },
                Err(message) => Reply::error(message),
            },
            Request::Reload => self.reload(),
            // Served by the control socket itself (`tap::capture`).
            Request::Capture(_) => Reply::error("capture is served by the control socket"),
            Request::Set { kind, name, action } => match self.state.apply(&self.config, kind, &name, action.clone()) {
                Ok(message) => {
                    info!(?kind, %name, ?action, "operator override");
                    if let Some(fleet) = &self.fleet {
                        fleet.publish(kind, &name, action.clone());
                    }
                    self.save_state();
                    match self.after_change() {
                        Ok(()) => Reply::ok(message),
                        Err(e) => Reply::error(format!("{message}, but writing the map failed: {e:#}")),
                    }
                }
                Err(message) => Reply::error(message),
            },
        }
    }

    fn save_state(&mut self) {
        self.state_file.write(&mut self.state, false);
    }

    /// Counters from the XDP maps and what the controller recorded.
    pub(crate) fn stats(&self) -> crate::ops::metrics::Stats {
        let xdp = match crate::dataplane::pinned_counters(&self.config.pin_dir) {
            Ok(c) => crate::dataplane::counters_table(&c).into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "reading XDP counters");
                Default::default()
            }
        };
        let (plan, counts) = self.maps.names.answer_counts();
        let signing = &self.maps.signatures;
        let held = signing.per_zone().into_iter().map(|(apex, (n, _))| (apex.to_string(), n as u64)).collect();
        let mut stats = self.metrics.stats(&self.config, &self.state, xdp, &plan, &counts, (signing.total(), held));
        stats.fleet = self.fleet.as_ref().map(|f| (&f.status()).into());
        stats.zones = self.zones.as_ref().map(|z| z.status()).unwrap_or_default();
        stats.feeds = self.feed_statuses();
        if let Some(tap) = &self.tap_stats {
            use std::sync::atomic::Ordering::Relaxed;
            stats.tap = crate::ops::metrics::TapCounts {
                packets: tap.packets.load(Relaxed),
                capture_dropped: tap.capture_dropped.load(Relaxed),
                dnstap_dropped: tap.dnstap_dropped.load(Relaxed),
            };
        }
        stats
    }

    pub(crate) fn explain(
        &mut self,
        name: &str,
        from: IpAddr,
        ecs: Option<&str>,
        family: primwatch_common::Family,
    ) -> Result<Explanation, String> {
        let plan = self.plan();
        report::explain(&self.config, &plan, &self.state, name, from, ecs, family)
    }

    pub(crate) fn status(&mut self, listing: &crate::ops::control::NameListing) -> Status {
        let plan = self.plan();
        let mut status = report::status(&self.config, &plan, &self.state, &self.dataplane_note, listing);
        status.resolved = report::resolved(&self.config, &self.resolutions);
        status.fleet = self.fleet.as_ref().map(|f| {
            let mut fleet = f.status();
            let (here, elsewhere): (Vec<_>, Vec<_>) =
                self.config.sharded_targets().cloned().partition(|name| !self.state.not_checked_here.contains(name));
            fleet.sharded = here.len() + elsewhere.len();
            fleet.checked_here = here;
            fleet
        });
        status.zones = report::zones(&self.config, &self.maps.signatures.per_zone());
        status.feeds = self.feed_statuses();
        status
    }
}

/// The next event of an optional source (the fleet, the feeds), or never without one.
async fn next_event<T>(events: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match events {
        Some(events) => events.recv().await,
        None => std::future::pending().await,
    }
}
