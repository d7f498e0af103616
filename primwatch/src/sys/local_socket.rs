//! The controller's two Unix sockets (`ctl`'s control socket and the PowerDNS remote
//! backend): who may connect, how many at once, when an idle one gives up its slot, and
//! an accept loop that backs off instead of spinning when the process is short of
//! descriptors. Nothing a local user does to these sockets may change what DNS answers.

use std::{
    collections::HashMap,
    fs,
    io::ErrorKind,
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::Notify,
};
use tracing::warn;

/// Who may use a socket and how much of the process it may hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    /// File mode of the socket (0600: root only; 0660: root and `group`).
    pub mode: u32,
    /// A group whose members may connect besides root: (name, gid).
    pub group: Option<(String, u32)>,
    /// Connections served at once; beyond that a new one is refused (or takes an idle
    /// one's slot).
    pub max_connections: usize,
    /// A connection silent this long gives its slot to a new one when all are taken.
    pub idle_timeout: Duration,
}

/// What happened on one socket since the controller started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    /// Peer credentials (SO_PEERCRED) neither root nor in the socket's group.
    pub refused_peer: AtomicU64,
    /// Every slot taken by a connection that was not idle.
    pub refused_busy: AtomicU64,
    /// Idle connections closed to make room.
    pub closed_idle: AtomicU64,
    /// accept(2) failures (EMFILE and friends), each followed by a back-off.
    pub accept_errors: AtomicU64,
}

/// The counters as plain numbers, for `ctl status` and /metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CounterSnapshot {
    pub accepted: u64,
    pub refused_peer: u64,
    pub refused_busy: u64,
    pub closed_idle: u64,
    pub accept_errors: u64,
}

impl Counters {
    pub(crate) const fn new() -> Counters {
        Counters {
            accepted: AtomicU64::new(0),
            refused_peer: AtomicU64::new(0),
            refused_busy: AtomicU64::new(0),
            closed_idle: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
        }
    }

    pub(crate) fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            accepted: self.accepted.load(Relaxed),
            refused_peer: self.refused_peer.load(Relaxed),
            refused_busy: self.refused_busy.load(Relaxed),
            closed_idle: self.closed_idle.load(Relaxed),
            accept_errors: self.accept_errors.load(Relaxed),
        }
    }
}

/// The control socket's counters.
pub(crate) static CONTROL: Counters = Counters::new();
/// The PowerDNS remote backend socket's counters.
pub(crate) static POWERDNS: Counters = Counters::new();

/// Binds a Unix socket at `path` with `access`'s mode and group. An existing socket
/// there (a previous run's) is replaced; anything else at that path is refused, not
/// deleted.
pub(crate) fn bind(path: &Path, access: &Access) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            fs::remove_file(path).with_context(|| format!("removing the old socket {}", path.display()))?
        }
        Ok(_) => bail!("{} exists and is not a socket; refusing to replace it", path.display()),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", path.display())),
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    // Peer credentials are checked on every connection too, so the moment between
    // bind and chmod lets nobody in.
    if let Some((name, gid)) = &access.group {
        std::os::unix::fs::chown(path, None, Some(*gid))
            .with_context(|| format!("giving {} to group {name}", path.display()))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(access.mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(listener)
}

/// A served connection's slot: the handler reports activity through it and stops when
/// asked to make room; dropping it frees the slot.
pub(crate) struct Lease {
    slot: Arc<Slot>,
    slots: Arc<Slots>,
    id: u64,
}

impl Lease {
    /// Marks the connection active (a request arrived).
    pub(crate) fn touch(&self) {
        self.slot.last_active.store(self.slots.now_ms(), Relaxed);
    }

    /// Resolves when the accept loop closes this connection to make room.
    pub(crate) async fn evicted(&self) {
        self.slot.evict.notified().await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slots.open.lock().unwrap().remove(&self.id);
    }
}

struct Slot {
    last_active: AtomicU64,
    evict: Notify,
}

struct Slots {
    started: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Slot>>>,
}

impl Slots {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A slot for a new connection: a free one, or the longest-idle connection's if it
    /// has been silent for `idle`.
    fn admit(self: &Arc<Self>, access: &Access, counters: &Counters) -> Option<(u64, Arc<Slot>)> {
        let now = self.now_ms();
        let mut open = self.open.lock().unwrap();
        if open.len() >= access.max_connections {
            let (&oldest, slot) = open.iter().min_by_key(|(_, s)| s.last_active.load(Relaxed))?;
            if now.saturating_sub(slot.last_active.load(Relaxed)) < access.idle_timeout.as_millis() as u64 {
                return None;
            }
            slot.evict.notify_one();
            open.remove(&oldest);
            counters.closed_idle.fetch_add(1, Relaxed);
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        let slot = Arc::new(Slot { last_active: AtomicU64::new(now), evict: Notify::new() });
        open.insert(id, slot.clone());
        Some((id, slot))
    }
}

/// Whether the peer may use a socket with this access: root, our own user, or (with a
/// group) a process whose group is it.
fn peer_allowed(stream: &UnixStream, access: &Access) -> bool {
    let Ok(cred) = stream.peer_cred() else { return false };
    let own_uid = unsafe { libc::geteuid() };
    cred.uid() == 0 || cred.uid() == own_uid || access.group.as_ref().is_some_and(|(_, gid)| cred.gid() == *gid)
}

const BACKOFF_MIN: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` for as long as the runtime runs, handing each
/// admitted one to `handler`. `what` names the socket in logs.
pub(crate) fn serve<H, F>(
    listener: UnixListener,
    access: Access,
    counters: &'static Counters,
    what: &'static str,
    handler: H,
) where
    H: Fn(UnixStream, Lease) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let slots =
        Arc::new(Slots { started: Instant::now(), next_id: AtomicU64::new(0), open: Mutex::new(HashMap::new()) });
    tokio::spawn(async move {
        let mut backoff = BACKOFF_MIN;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => {
                    backoff = BACKOFF_MIN;
                    stream
                }
                Err(e) => {
                    // Out of descriptors or memory: retrying at once would spin.
                    let n = counters.accept_errors.fetch_add(1, Relaxed) + 1;
                    if n.is_power_of_two() {
                        warn!(socket = what, error = %e, errors = n, "accept failed; backing off");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            if !peer_allowed(&stream, &access) {
                let n = counters.refused_peer.fetch_add(1, Relaxed) + 1;
                if n.is_power_of_two() {
                    let cred = stream.peer_cred().ok();
                    warn!(socket = what, uid = ?cred.map(|c| c.uid()), gid = ?cred.map(|c| c.gid()), refused = n,
                        "connection from a user who may not use this socket refused");
                }
                continue;
            }
            let Some((id, slot)) = slots.admit(&access, counters) else {
                let n = counters.refused_busy.fetch_add(1, Relaxed) + 1;
                if n.is_power_of_two() {
                    warn!(
                        socket = what,
                        max_connections = access.max_connections,
                        refused = n,
                        "every connection slot is busy; connection refused"
                    );
                }
                continue;
            };
            counters.accepted.fetch_add(1, Relaxed);
            tokio::spawn(handler(stream, Lease { slot, slots: slots.clone(), id }));
        }
    });
}

/// The gid of group `name`, if it exists.
pub(crate) fn group_id(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: getgrnam_r writes into `group` and `buf`, both live and sized as passed.
    let rc = unsafe { libc::getgrnam_r(cname.as_ptr(), &mut group, buf.as_mut_ptr(), buf.len(), &mut found) };
    (rc == 0 && !found.is_null()).then_some(group.gr_gid)
}

/// Removes the socket file when the controller stops.
pub struct SocketGuard(pub std::path::PathBuf);

impl Drop for SocketGuard {
    fn drop(&mut self) {
        if fs::symlink_metadata(&self.0).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = fs::remove_file(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(max: usize, idle_ms: u64) -> Access {
        Access { mode: 0o600, group: None, max_connections: max, idle_timeout: Duration::from_millis(idle_ms) }
    }

    #[test]
    fn a_full_table_admits_only_by_closing_a_connection_idle_long_enough() {
        let slots =
            Arc::new(Slots { started: Instant::now(), next_id: AtomicU64::new(0), open: Mutex::new(HashMap::new()) });
        let counters = Counters::new();
        let a = access(2, 50);
        let first = slots.admit(&a, &counters).expect("free slot");
        let _second = slots.admit(&a, &counters).expect("free slot");
        assert!(slots.admit(&a, &counters).is_none(), "both busy and fresh");
        std::thread::sleep(Duration::from_millis(80));
        // The second stays active; the first went silent and gives its slot up.
        _second.1.last_active.store(slots.now_ms(), Relaxed);
        let third = slots.admit(&a, &counters).expect("the idle one makes room");
        assert!(!slots.open.lock().unwrap().contains_key(&first.0));
        assert!(slots.open.lock().unwrap().contains_key(&third.0));
        assert_eq!(counters.snapshot().closed_idle, 1);
        assert!(slots.admit(&a, &counters).is_none());
    }

    #[tokio::test]
    async fn bind_replaces_a_socket_but_not_a_file() {
        let dir = std::env::temp_dir().join(format!("pw-sock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let a = access(4, 1000);
        drop(bind(&path, &a).unwrap());
        let again = bind(&path, &a).expect("a stale socket is replaced");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        drop(again);
        fs::remove_file(&path).unwrap();
        fs::write(&path, "precious").unwrap();
        let e = bind(&path, &a).unwrap_err();
        assert!(format!("{e:#}").contains("not a socket"), "{e:#}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "precious");
        fs::remove_dir_all(&dir).unwrap();
    }
}
