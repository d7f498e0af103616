//! The controller loop: one task per (target, check) probes on its own schedule and
//! reports; this loop folds reports into `State` and, when a target's health changes,
//! recomputes the answers and writes what changed into the map.

use std::{net::IpAddr, time::Duration};

use anyhow::Result;
use rand::Rng as _;
use tokio::{
    sync::mpsc,
    task::JoinSet,
    time::{sleep_until, Instant},
};
use tracing::{error, info, warn};

use crate::{
    checks::{self, Outcome},
    config::{CheckConfig, Config},
    map_writer::NameMapWriter,
    records,
    state::State,
};

/// One check result from a checker task.
pub struct Report {
    pub target: String,
    pub check: usize,
    pub outcome: Outcome,
}

/// Identifies a checker task, so a dead one can be named and restarted.
#[derive(Clone)]
struct Checker {
    target: String,
    index: usize,
    address: IpAddr,
    spec: CheckConfig,
}

async fn check_loop(checker: Checker, reports: mpsc::Sender<Report>) {
    let Checker { target, index, address, spec } = checker;
    let mut next = Instant::now() + jitter(spec.jitter);
    loop {
        sleep_until(next).await;
        let outcome = checks::run(&spec, &target, address).await;
        if reports.send(Report { target: target.clone(), check: index, outcome }).await.is_err() {
            return; // the controller is shutting down
        }
        // Keep the cadence; if a run took longer than the interval, start again now.
        next = (next + spec.interval).max(Instant::now()) + jitter(spec.jitter);
    }
}

fn jitter(max: Duration) -> Duration {
    if max.is_zero() {
        Duration::ZERO
    } else {
        rand::thread_rng().gen_range(Duration::ZERO..max)
    }
}

pub struct Controller {
    config: Config,
    state: State,
    writer: NameMapWriter,
    reports_tx: mpsc::Sender<Report>,
    reports: mpsc::Receiver<Report>,
    checkers: JoinSet<()>,
    running: std::collections::HashMap<tokio::task::Id, Checker>,
}

impl Controller {
    /// Writes the initial answers (every check in its initial state) and starts the checkers.
    pub fn start(config: Config, writer: NameMapWriter) -> Result<Controller> {
        let (reports_tx, reports) = mpsc::channel(1024);
        let state = State::new(&config);
        let mut controller = Controller {
            config,
            state,
            writer,
            reports_tx,
            reports,
            checkers: JoinSet::new(),
            running: Default::default(),
        };
        controller.publish()?;
        let all: Vec<Checker> = controller
            .config
            .targets
            .iter()
            .flat_map(|(name, target)| {
                target.checks.iter().enumerate().map(|(index, check)| Checker {
                    target: name.clone(),
                    index,
                    address: target.address,
                    spec: controller.config.checks[check].clone(),
                })
            })
            .collect();
        for checker in all {
            controller.spawn(checker);
        }
        Ok(controller)
    }

    fn spawn(&mut self, checker: Checker) {
        let handle = self.checkers.spawn(check_loop(checker.clone(), self.reports_tx.clone()));
        self.running.insert(handle.id(), checker);
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Recomputes every name's answers and writes those that changed.
    fn publish(&mut self) -> Result<()> {
        let desired = records::desired_entries(&self.config, &self.state);
        let stats = self.writer.sync(&desired)?;
        if stats.written + stats.deleted > 0 {
            info!(written = stats.written, deleted = stats.deleted, "answers updated");
        }
        Ok(())
    }

    /// Handles reports until `shutdown` resolves.
    pub async fn run(&mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                Some(report) = self.reports.recv() => self.handle(report)?,
                Some(done) = self.checkers.join_next_with_id() => {
                    // A checker never returns while we run: it panicked. Say so and restart it.
                    let (id, why) = match done {
                        Ok((id, ())) => (id, "returned".to_string()),
                        Err(e) => (e.id(), e.to_string()),
                    };
                    if let Some(checker) = self.running.remove(&id) {
                        error!(target = %checker.target, check = checker.index, %why, "checker died; restarting it");
                        self.spawn(checker);
                    }
                }
            }
        }
    }

    fn handle(&mut self, report: Report) -> Result<()> {
        let Report { target, check, outcome } = report;
        if !outcome.ok {
            tracing::debug!(%target, check, detail = %outcome.detail, "check failed");
        }
        if let Some(change) = self.state.record(&self.config, &target, check, outcome) {
            if change.healthy {
                info!(target = %change.target, reason = %change.reason, "target up");
            } else {
                warn!(target = %change.target, reason = %change.reason, "target down");
            }
            self.publish()?;
        }
        Ok(())
    }
}
