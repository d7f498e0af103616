//! Panics are inputs too: a panic in any thread or task is logged with where it
//! happened and turns into an orderly stop — `on_stop` honoured, state saved, a failure
//! exit status for the supervisor to restart — never a silently dead task.

use std::sync::{Mutex, OnceLock};

use tokio::sync::Notify;
use tracing::error;

static FATAL: OnceLock<Notify> = OnceLock::new();
static REASON: Mutex<Option<String>> = Mutex::new(None);

fn notify() -> &'static Notify {
    FATAL.get_or_init(Notify::new)
}

/// Logs every panic and asks the controller to stop (see `fatal`). Keeps the default
/// hook's report too.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".into());
        let place = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        error!(%thread, %place, message = %message, "panic: stopping in order");
        let mut reason = REASON.lock().unwrap_or_else(|e| e.into_inner());
        reason.get_or_insert_with(|| format!("panic in thread {thread} at {place}: {message}"));
        drop(reason);
        notify().notify_one();
        default(info);
    }));
}

/// Resolves once something panicked, with what and where.
pub async fn fatal() -> String {
    notify().notified().await;
    REASON.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default()
}

/// What panicked, if anything did.
pub fn reason() -> Option<String> {
    REASON.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Tells systemd the daemon serves (sd_notify(3) READY=1, for `Type=notify`); nothing
/// without NOTIFY_SOCKET.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify READY");
    }
}

/// Tells systemd the controller's loop is alive (WATCHDOG=1). Sent from the loop's
/// one-second tick, so a loop that stops turning stops it: systemd then restarts the
/// controller (`WatchdogSec=`) while XDP keeps answering the last answers.
pub fn watchdog_ping() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
        tracing::debug!(error = %e, "sd_notify WATCHDOG");
    }
}

/// Tells systemd the daemon is stopping (STOPPING=1).
pub fn notify_stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}
