//! The `on_change` hook: run for every target or group state change, delivered in
//! order per target or group (a slow "down" never finishes after the "up" that followed
//! it), at most `MAX_RUNNING` at once, each numbered (PRIMWATCH_SEQ, rising across all
//! changes), as `server.exec_user` with a cleared environment (see `process`).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use tokio::sync::{mpsc, Semaphore};
use tracing::warn;

use crate::{
    config::Hooks,
    sys::process::{self, RunAs, RunError},
};

/// Hooks running at once, over all targets and groups.
pub(crate) const MAX_RUNNING: usize = 4;

/// One state change to report.
#[derive(Debug, Clone)]
pub(crate) struct Change {
    /// "target" or "group".
    pub kind: &'static str,
    pub name: String,
    pub old: &'static str,
    pub new: &'static str,
    pub reason: String,
}

/// Queues changes for the hook. Dropping it lets queued runs finish, then stops.
pub(crate) struct HookRunner {
    queue: Option<mpsc::UnboundedSender<(u64, Change)>>,
    seq: Arc<AtomicU64>,
}

impl HookRunner {
    /// A runner for `hooks` (none if it names no command), numbering from `seq`.
    pub(crate) fn start(hooks: &Hooks, run_as: Option<RunAs>, seq: Arc<AtomicU64>) -> HookRunner {
        let Some(command) = hooks.on_change.clone() else { return HookRunner { queue: None, seq } };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(rx, command, run_as, hooks.timeout));
        HookRunner { queue: Some(tx), seq }
    }

    /// The numbering, to carry over to the runner of a reloaded config.
    pub(crate) fn seq(&self) -> Arc<AtomicU64> {
        self.seq.clone()
    }

    pub(crate) fn notify(&self, change: Change) {
        if let Some(queue) = &self.queue {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
            let _ = queue.send((seq, change));
        }
    }
}

/// Queues kept before idle ones are dropped.
const MAX_QUEUES: usize = 256;

/// Hands each change to its target's or group's queue; one worker per queue runs
/// them one after another.
async fn dispatch(
    mut changes: mpsc::UnboundedReceiver<(u64, Change)>,
    command: Vec<String>,
    run_as: Option<RunAs>,
    timeout: std::time::Duration,
) {
    let running = Arc::new(Semaphore::new(MAX_RUNNING));
    type Queue = (mpsc::UnboundedSender<(u64, Change)>, std::time::Instant);
    let mut queues: HashMap<(&'static str, String), Queue> = HashMap::new();
    while let Some((seq, change)) = changes.recv().await {
        // Names come and go (targets from a resolver): a queue idle for longer than any
        // hook may run goes, and its worker ends once it has run what it holds.
        if queues.len() >= MAX_QUEUES {
            let idle = timeout.max(std::time::Duration::from_secs(60)) * 2;
            queues.retain(|_, (_, used)| used.elapsed() < idle);
        }
        let (queue, used) = queues.entry((change.kind, change.name.clone())).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<(u64, Change)>();
            let (command, run_as, running) = (command.clone(), run_as.clone(), running.clone());
            tokio::spawn(async move {
                while let Some((seq, change)) = rx.recv().await {
                    let Ok(_slot) = running.acquire().await else { return };
                    run_one(&command, run_as.as_ref(), timeout, seq, &change).await;
                }
            });
            (tx, std::time::Instant::now())
        });
        *used = std::time::Instant::now();
        let _ = queue.send((seq, change));
    }
}

async fn run_one(command: &[String], run_as: Option<&RunAs>, timeout: std::time::Duration, seq: u64, c: &Change) {
    let env = [
        ("PRIMWATCH_SEQ", seq.to_string()),
        ("PRIMWATCH_KIND", c.kind.to_string()),
        ("PRIMWATCH_NAME", c.name.clone()),
        ("PRIMWATCH_OLD_STATE", c.old.to_string()),
        ("PRIMWATCH_NEW_STATE", c.new.to_string()),
        // Reasons quote targets and commands: escaped (newlines, escapes, NUL).
        ("PRIMWATCH_REASON", process::printable(c.reason.as_bytes(), 512)),
    ];
    let hook = &command[0];
    match process::run(command, &env, run_as, timeout).await {
        Ok(out) if out.status.success() => {}
        Ok(out) => warn!(%hook, name = %c.name, seq, status = %out.status,
            stderr = %process::printable(out.stderr.trim_ascii(), 512), "on_change hook failed"),
        Err(RunError::Spawn(e)) => warn!(%hook, name = %c.name, seq, error = %e, "on_change hook could not run"),
        Err(RunError::TimedOut) => {
            warn!(%hook, name = %c.name, seq, ?timeout, "on_change hook timed out and was killed")
        }
    }
}
