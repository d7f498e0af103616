//! When checks run: one task per (target, check) on its own jittered schedule, sending
//! each outcome to the controller; and the rate-limited log of checks that could not
//! run on this host.

use std::{net::IpAddr, sync::Arc, time::Duration};

use rand::Rng as _;
use tokio::{
    sync::mpsc,
    time::{sleep_until, Instant},
};
use tracing::{error, info, warn};

use super::{Budget, Outcome};
use crate::config::CheckConfig;

/// One check result from a checker task.
pub(crate) struct Report {
    pub target: String,
    pub check: usize,
    pub outcome: Outcome,
}

/// Identifies a checker task, so a dead one can be named and restarted.
#[derive(Clone)]
pub(crate) struct Checker {
    pub target: String,
    pub index: usize,
    pub address: IpAddr,
    pub spec: CheckConfig,
}

pub(crate) async fn check_loop(checker: Checker, reports: mpsc::Sender<Report>, budget: Arc<Budget>) {
    let Checker { target, index, address, spec } = checker;
    // Jitter spreads the first runs over `jitter`, then moves each run by up to ±jitter/2,
    // so checks of many targets do not march in step, and the mean period stays the interval.
    let mut next = later(Instant::now(), jitter(spec.jitter));
    let mut failing = false;
    loop {
        sleep_until(next).await;
        let outcome = super::run_within(&spec, &target, address, &budget, failing).await;
        if !outcome.local_error {
            failing = !outcome.ok;
        }
        // After a failure, look again soon: confirms a death, or notices a recovery.
        let pause = if outcome.ok && !outcome.local_error { spec.interval } else { spec.retry_interval };
        if reports.send(Report { target: target.clone(), check: index, outcome }).await.is_err() {
            return; // the controller is shutting down
        }
        // Keep the cadence. A run that overran its slot (a hung target, timed out) waits
        // for the next tick rather than starting at once: a dead target must not hold a
        // socket nearly all the time.
        next = later(later(next, pause), jitter(spec.jitter)).checked_sub(spec.jitter / 2).unwrap_or(next);
        let now = Instant::now();
        if next <= now {
            let behind = (now - next).as_nanos() / pause.as_nanos().max(1) + 1;
            next = later(next, pause.saturating_mul(behind.min(u32::MAX as u128) as u32));
        }
    }
}

/// `at + by`, or a year from `at` where that would overflow the clock: the config's
/// ranges keep durations far below that (config::limits), so this is a last guard.
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by).or_else(|| at.checked_add(Duration::from_secs(365 * 24 * 3600))).unwrap_or(at)
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        Duration::ZERO
    } else {
        rand::thread_rng().gen_range(Duration::ZERO..max)
    }
}

/// Local errors (out of descriptors, no check slot, a command that cannot start) come
/// in storms: every target at once, again on every tick. The first of a storm is
/// logged with its detail; the rest are counted and summed up once per window, so the
/// log stays readable and bounded whatever the number of targets. Each target's own
/// local-error state is in `ctl status` and the metrics.
#[derive(Default)]
pub(crate) struct LocalErrorLog {
    window_start: Option<tokio::time::Instant>,
    failed: u64,
    recovered: u64,
}

impl LocalErrorLog {
    const WINDOW: Duration = Duration::from_secs(10);

    /// Whether this event is the one to log now (the first of a window).
    fn first(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        match self.window_start {
            Some(start) if now.duration_since(start) < Self::WINDOW => false,
            _ => {
                self.flush();
                self.window_start = Some(now);
                true
            }
        }
    }

    pub(crate) fn failed(&mut self, target: &str, check: &str, detail: &str) {
        if self.first() {
            error!(%target, %check, %detail,
                "check could not run on this host; the target keeps its state until checks run again (more in this 10 s window are summed up)");
        } else {
            self.failed += 1;
        }
    }

    pub(crate) fn recovered(&mut self, target: &str, check: &str) {
        if self.first() {
            info!(%target, %check, "check runs again");
        } else {
            self.recovered += 1;
        }
    }

    /// Sums up what was not logged, once the window is over.
    pub(crate) fn tick(&mut self) {
        if self.window_start.is_some_and(|s| s.elapsed() >= Self::WINDOW) {
            self.flush();
            self.window_start = None;
        }
    }

    fn flush(&mut self) {
        if self.failed + self.recovered > 0 {
            warn!(
                could_not_run = self.failed,
                ran_again = self.recovered,
                "more checks could not run on this host in the last 10 s (targets not judged; see `ctl status`)"
            );
        }
        self.failed = 0;
        self.recovered = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worst durations a config could have held before it had ranges: scheduling
    /// never panics, and moves forward.
    #[test]
    fn scheduling_arithmetic_survives_the_largest_durations() {
        let now = Instant::now();
        for by in [Duration::ZERO, Duration::from_secs(1), Duration::from_secs(u64::MAX), Duration::MAX] {
            assert!(later(now, by) >= now, "{by:?}");
        }
        assert_eq!(later(now, Duration::from_secs(1)), now + Duration::from_secs(1));
        assert!(jitter(Duration::MAX) <= Duration::MAX);
    }
}
