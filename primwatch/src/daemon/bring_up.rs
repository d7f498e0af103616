//! The daemon's bring-up order, from `primwatch run` to serving: load the config (and
//! the fleet's last pushed one), load the XDP program and pin its maps, write the host's
//! addresses and the first answers, open the operator's socket, attach (or adopt the
//! previous run's link), drop privileges, then hand over to the controller's loop; and
//! on the way out, keep or detach as `on_stop` says.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{error, info, warn};

use crate::{
    config::{
        pushed::{self, PushedConfig},
        Config, OnStop,
    },
    daemon::controller::{Controller, PreviousRun},
    dataplane::{self, Attachment, Dataplane},
    ops::control,
};

/// `primwatch run`: serves until SIGINT/SIGTERM or a panic; Err (a failure exit, for the
/// supervisor to restart) when the start fails or a panic stopped it.
pub fn run(config_path: PathBuf) -> Result<()> {
    crate::sys::log_output::never_block_on_stderr();
    let config = Config::load(&config_path)?;
    let (config, pushed, refusal) = with_cached_push(config, &config_path);
    raise_open_file_limit();
    crate::sys::supervise::install_panic_hook();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let (on_stop, pin_dir) = (config.on_stop, config.pin_dir.clone());
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(serve(config, pushed, refusal, config_path))
    })) {
        Ok(result) => result,
        Err(_) => {
            // The serving flow itself panicked: its links are still pinned (fail static).
            // Honour on_stop from the pins, which is all the next start needs.
            if on_stop == OnStop::Detach {
                match dataplane::detach_pinned(&pin_dir) {
                    Ok(removed) => info!(pins = removed.len(), "detached after the panic (on_stop = detach)"),
                    Err(e) => error!(error = %format!("{e:#}"), "detaching after the panic"),
                }
            }
            bail!("stopped after a panic: {}", crate::sys::supervise::reason().unwrap_or_default())
        }
    }
}

/// Raises the soft limit on open files to the hard limit: checks, sockets and maps all
/// take descriptors, and systemd's default soft limit (1024) is easy to reach.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                info!(from = soft, to = limit.rlim_max, "raised the open-file limit");
            }
        }
    }
}

/// A fleet node starts on the pushed config it ran last successfully (kept beside its
/// state file), so that it serves the fleet's config even while etcd is away; if that
/// no longer fits its own file, on its own file alone (and etcd's copy is tried when it
/// connects). A revision the previous run stopped while applying is not applied again
/// (`pushed::PROBATION`): returned as the refusal to report.
fn with_cached_push(config: Config, config_path: &Path) -> (Config, Option<PushedConfig>, Option<pushed::Refusal>) {
    let Some(fleet) = &config.fleet else { return (config, None, None) };
    let refusal = pushed::refusal_at_start(&config.state_file);
    if let Some(r) = &refusal {
        error!(revision = r.revision, reason = %r.reason, "fleet: a pushed revision is refused");
    }
    let cached = pushed::read_cache(&config.state_file)
        .filter(|cached| refusal.as_ref().is_none_or(|r| r.revision != cached.revision));
    let Some(cached) = cached else { return (config, None, refusal) };
    match pushed::load_merged(config_path, &fleet.prefix, &cached) {
        Ok(merged) => {
            info!(revision = cached.revision, "fleet: starting on the pushed config run last");
            if let Err(e) = pushed::begin_trial(&merged.state_file, cached.revision) {
                warn!(error = %format!("{e:#}"), "fleet: cannot mark the pushed config as being applied");
            }
            (merged, Some(cached), refusal)
        }
        Err(e) => {
            warn!(error = %e, "fleet: the pushed config run last does not load; starting on this node's file");
            (config, None, refusal)
        }
    }
}

async fn serve(
    config: Config,
    pushed: Option<PushedConfig>,
    refusal: Option<pushed::Refusal>,
    config_path: PathBuf,
) -> Result<()> {
    dataplane::ensure_bpffs()?;
    // The state and pin directories decide answers: refuse ones others could write.
    crate::sys::paths::prepare(&config.state_file, &config.pin_dir)?;
    let left_attached = dataplane::pinned_links(&config.pin_dir);
    let mut dataplane = Dataplane::load_with(config.port, &config.capacities)?;
    dataplane.start_log_forwarding();
    dataplane.pin_maps(&config.pin_dir)?;
    let maps = dataplane.answer_maps()?;
    let cookies = dataplane.cookie_writer()?;
    let negative = dataplane.negative_writer()?;
    // The tap: dnstap from the start when configured, captures on request.
    let tap = crate::tap::Tap::start(dataplane.tap_maps()?, config.dnstap.as_ref())?;
    // XDP answers only frames addressed to this host: its MACs and addresses first.
    let mut host = dataplane.host_writer()?;
    host.refresh(&config.interfaces)?;
    host.keep_current(config.interfaces.clone(), std::time::Duration::from_secs(1));
    // Writes the first answers (overrides and last-known health restored) and starts
    // the checkers.
    // The controller owns the config from here (a million names are not copied); the
    // rest of the bring-up needs only settings a reload cannot change.
    let (names, targets) = (config.names.len(), config.targets.len());
    let (port, pin_dir, interfaces, xdp_mode) =
        (config.port, config.pin_dir.clone(), config.interfaces.clone(), config.xdp_mode);
    let (metrics_listen, control_socket, control_access) =
        (config.metrics_listen, config.control_socket.clone(), config.control_access.clone());
    let zones = crate::answers::zone_data::ZoneFeed::start(negative, crate::answers::zone_data::Inputs::of(&config));
    // Feeds start first: their first batches are awaited (each up to its
    // first_batch_wait) so that the first answers carry them.
    let feed_start = if config.feeds.is_empty() {
        None
    } else {
        let (events_tx, mut events) = tokio::sync::mpsc::channel(64);
        let tasks = crate::feeds::Feeds::start(&config, events_tx);
        let early = crate::feeds::await_first(&config, &mut events).await;
        info!(feeds = config.feeds.len(), batches = early.len(), "feeds started");
        Some(crate::daemon::controller::FeedStart { tasks, events, early })
    };
    let mut controller = Controller::start(config, Some(config_path), (pushed, refusal), maps, cookies, feed_start)?;
    controller.set_zone_feed(zones);
    controller.set_tap_stats(tap.stats.clone());
    info!(names, targets, "names map written");

    // Attach (or take over the previous run's attachment) only now that the maps hold
    // the answers, so the first packet the new program sees finds them.
    // The operator's socket first: if it cannot be had, nothing has been taken over
    // yet. Metrics never stop a start (a listener that cannot be bound is retried).
    let (requests_tx, requests) = tokio::sync::mpsc::channel(16);
    if let Some(address) = metrics_listen {
        // Scrapes read a snapshot taken once a second, as `ctl stats` asks for one.
        let controller = requests_tx.clone();
        let snapshot = crate::ops::metrics::refresh_snapshots(move || {
            let controller = controller.clone();
            async move {
                let (tx, rx) = tokio::sync::oneshot::channel();
                controller.send((control::Request::Stats, tx)).await.ok()?;
                Some(rx.await.ok().and_then(|reply: control::Reply| reply.stats))
            }
        });
        crate::ops::metrics::serve(address, snapshot);
    }
    let _socket = control::listen(&control_socket, &control_access, requests_tx, Some(tap.clone()))
        .with_context(|| format!("control socket {}", control_socket.display()))?;

    let mut attachments = Vec::new();
    for interface in &interfaces {
        match dataplane.attach(interface, xdp_mode, &pin_dir) {
            Ok(how) => attachments.push(format!("{interface}: {}", describe(how))),
            Err(e) => {
                if left_attached.is_empty() {
                    // Nothing was serving before us: leave nothing half attached.
                    if let Err(cleanup) = dataplane.shutdown() {
                        error!(error = %format!("{cleanup:#}"), "detaching after a failed attach");
                    }
                } else {
                    // The previous run's program was answering: keep whatever answers now
                    // (adopted or not) rather than take DNS down.
                    dataplane.leave_attached();
                }
                return Err(e);
            }
        }
    }
    // A link left on an interface the config no longer names would go on answering
    // stale answers with nobody updating them: take it off.
    for interface in left_attached.iter().filter(|i| !interfaces.contains(i)) {
        let pin = dataplane::link_pin(&pin_dir, interface);
        match std::fs::remove_file(&pin) {
            Ok(()) => {
                warn!(interface, "detached XDP left by the previous run on an interface no longer configured");
                attachments.push(format!("{interface}: detached (no longer configured)"));
            }
            Err(e) => error!(interface, error = %e, "cannot remove the previous run's link pin {}", pin.display()),
        }
    }
    let note = dataplane_note(&left_attached, controller.previous_run(), &attachments);
    if left_attached.is_empty() || controller.previous_run().is_some_and(|p| p.stopped_cleanly) {
        info!("{note}");
    } else {
        warn!("{note}");
    }
    controller.set_dataplane_note(note);
    // Loaded, attached, pinned, bound: from here on only what checks and hooks need.
    crate::sys::privileges::drop_to_kept()?;
    info!(port, pin_dir = %pin_dir.display(), control = %control_socket.display(), "serving");
    crate::sys::supervise::notify_ready();

    let mut sigint = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = sigint.recv() => info!("SIGINT: shutting down"),
            _ = sigterm.recv() => info!("SIGTERM: shutting down"),
            why = crate::sys::supervise::fatal() => error!(%why, "shutting down after a panic"),
        }
    };
    let result = controller.run(requests, shutdown).await;
    tap.stop().await;
    if let Err(e) = dataplane::clear_pinned_tap_settings(&pin_dir) {
        warn!(error = %format!("{e:#}"), "turning the tap off");
    }
    match dataplane.counters() {
        Ok(counters) => info!(answered = counters.answered, "final counters"),
        Err(e) => warn!(error = %format!("{e:#}"), "reading the final counters"),
    }
    match controller.config().on_stop {
        OnStop::Keep => dataplane.leave_attached(),
        OnStop::Detach => dataplane.shutdown()?,
    }
    // A panic stopped us: a failure exit, for the supervisor to restart.
    if let Some(why) = crate::sys::supervise::reason() {
        bail!("stopped after a panic: {why}");
    }
    result
}

fn describe(how: Attachment) -> String {
    match how {
        Attachment::Fresh(mode) => format!("attached ({mode:?} mode)").to_lowercase(),
        Attachment::Adopted => "adopted the running program's link (no detach)".into(),
    }
}

/// One line for the log and `ctl status`: how this run took over the data plane.
fn dataplane_note(left_attached: &[String], previous: Option<PreviousRun>, attachments: &[String]) -> String {
    let now = attachments.join("; ");
    if left_attached.is_empty() {
        return format!("XDP {now}");
    }
    let when = |p: &PreviousRun| {
        p.saved_at.map_or("an unknown time".to_string(), |t| humantime::format_rfc3339_seconds(t).to_string())
    };
    match previous {
        Some(p) if p.stopped_cleanly => format!("the previous controller stopped cleanly at {}; XDP kept answering meanwhile; {now}", when(&p)),
        Some(p) => format!(
            "the previous controller did not stop cleanly (killed or crashed; last saved {}): XDP kept answering from its last answers (fail static); {now}",
            when(&p)
        ),
        None => format!("found XDP left attached by an earlier run; {now}"),
    }
}
