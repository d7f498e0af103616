//! Where batches come from: one task per feed, sending each batch's bytes (or why
//! there is none) to the controller, which checks and applies it (`FeedEvent`).
//! Commands run as `server.exec_user` with a cleared environment in their own process
//! group, killed whole at their timeout or when the task is stopped; every read is
//! bounded by the feed's `max_bytes`.

use std::{path::Path, time::Duration};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _},
    sync::mpsc,
};
use tracing::{info, warn};

use super::event::FeedEvent;
use crate::{
    config::{FeedConfig, FeedSource},
    sys::process::{self, RunAs, RunError},
};

/// Runs `name`'s source until aborted, sending to `events`.
pub(super) async fn run(name: String, feed: FeedConfig, generation: u64, events: mpsc::Sender<FeedEvent>) {
    let send = |data: Result<Vec<u8>, String>| {
        let events = events.clone();
        let feed = name.clone();
        async move { events.send(FeedEvent { feed, generation, data, reply: None }).await.is_ok() }
    };
    match &feed.source {
        FeedSource::Command { command, interval, run_as } => loop {
            if !send(run_command(command, run_as.as_ref(), &feed).await).await {
                return;
            }
            tokio::time::sleep(*interval).await;
        },
        FeedSource::Stream { command, run_as } => {
            let mut backoff = Duration::from_secs(1);
            loop {
                let started = std::time::Instant::now();
                let why = stream(&name, command, run_as.as_ref(), &feed, generation, &events).await;
                if !send(Err(why)).await {
                    return;
                }
                // A command that ran a while before it ended is restarted at once; one
                // that keeps failing, at most every 30 s.
                backoff = if started.elapsed() > Duration::from_secs(60) { Duration::from_secs(1) } else { backoff };
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        FeedSource::File { path } => {
            let mut seen = None;
            loop {
                let stamp = crate::config::geoip::FileStamp::of(path);
                if stamp != seen {
                    seen = stamp;
                    if !send(read_file(path, feed.max_bytes).await).await {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        FeedSource::Push { listen, token } => {
            super::push::serve(name.clone(), *listen, token.clone(), feed.clone(), generation, events).await
        }
    }
}

/// One run of a command feed: its stdout when it exits 0.
async fn run_command(command: &[String], run_as: Option<&RunAs>, feed: &FeedConfig) -> Result<Vec<u8>, String> {
    match process::run_capped(command, &[], run_as, feed.timeout, feed.max_bytes).await {
        Ok((_, true)) => Err(format!("its output is larger than max_bytes ({} bytes)", feed.max_bytes)),
        Ok((out, false)) if out.status.success() => Ok(out.stdout),
        Ok((out, false)) => Err(format!("{} ({})", out.status, process::printable(out.stderr.trim_ascii(), 200))),
        Err(RunError::Spawn(e)) => Err(format!("running {}: {e}", command[0])),
        Err(RunError::TimedOut) => Err(format!("timed out after {:?}; its process group was killed", feed.timeout)),
    }
}

/// Runs a streaming command until it ends, sending each batch (ended by an empty line);
/// returns why it ended. A batch over `max_bytes` is refused and skipped to its end.
async fn stream(
    name: &str,
    command: &[String],
    run_as: Option<&RunAs>,
    feed: &FeedConfig,
    generation: u64,
    events: &mpsc::Sender<FeedEvent>,
) -> String {
    let (mut child, mut group) = match process::spawn(command, &[], run_as) {
        Ok(spawned) => spawned,
        Err(e) => return format!("running {}: {e}", command[0]),
    };
    info!(feed = name, pid = child.id(), "feed command started");
    // Its stderr goes to the log, a line at a time, escaped and cut.
    if let Some(stderr) = child.stderr.take() {
        let feed = name.to_string();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stderr.take(1 << 20)).split(b'\n');
            while let Ok(Some(line)) = lines.next_segment().await {
                warn!(%feed, said = %process::printable(&line, 200), "feed command stderr");
            }
        });
    }
    let Some(stdout) = child.stdout.take() else { return "no stdout".into() };
    let mut reader = tokio::io::BufReader::new(stdout);
    let (mut batch, mut line) = (Vec::new(), Vec::new());
    let mut oversized = false;
    loop {
        line.clear();
        // One line at most max_bytes + 1: a line without end cannot grow memory.
        let read = (&mut reader).take(feed.max_bytes as u64 + 1).read_until(b'\n', &mut line).await;
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if line.trim_ascii().is_empty() {
            let data = match std::mem::take(&mut oversized) {
                true => Err(format!("a batch larger than max_bytes ({} bytes)", feed.max_bytes)),
                false => Ok(std::mem::take(&mut batch)),
            };
            batch.clear();
            if matches!(&data, Ok(b) if b.is_empty()) {
                continue; // blank lines between batches
            }
            if events.send(FeedEvent { feed: name.to_string(), generation, data, reply: None }).await.is_err() {
                break;
            }
            continue;
        }
        if batch.len() + line.len() > feed.max_bytes {
            oversized = true;
            batch.clear();
            batch.shrink_to_fit();
        } else if !oversized {
            batch.extend_from_slice(&line);
        }
    }
    let status = child.wait().await;
    group.0 = None;
    match status {
        Ok(status) => format!("the command ended ({status}); restarting it"),
        Err(e) => format!("waiting for the command: {e}"),
    }
}

/// The whole file, if it is at most `max_bytes`.
async fn read_file(path: &Path, max_bytes: usize) -> Result<Vec<u8>, String> {
    let file = tokio::fs::File::open(path).await.map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut data = Vec::new();
    file.take(max_bytes as u64 + 1)
        .read_to_end(&mut data)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if data.len() > max_bytes {
        return Err(format!("{} is larger than max_bytes ({max_bytes} bytes)", path.display()));
    }
    Ok(data)
}
