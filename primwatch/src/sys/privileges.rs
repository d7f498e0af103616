//! Least privilege after start: once XDP is loaded and attached, the maps pinned and
//! the sockets bound, the daemon keeps only the capabilities it still uses and cannot
//! regain the others (no_new_privs; the bounding set too, where it may change it).
//!
//! Kept, and why:
//! - CAP_NET_RAW: ICMP checks (raw sockets where unprivileged ping sockets are off);
//! - CAP_SETUID, CAP_SETGID: exec checks and hooks start as `server.exec_user`;
//! - CAP_KILL: their process groups, another user's, are killed at the timeout.
//!
//! Everything after start works on descriptors it already holds (map updates, the
//! sockets) or on root's own files (pins, the state file), which need no capability.
//!
//! Capabilities, the bounding set and no_new_privs belong to each thread, and the
//! runtime's threads exist before the drop: every thread of the process is made to
//! drop (a signal whose handler makes the raw system calls, as libcap's psx does), and
//! the result is read back from /proc for each one.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use caps::{CapSet, Capability};
use tracing::info;

/// The capabilities a running controller keeps.
pub(crate) const KEPT: [Capability; 4] =
    [Capability::CAP_NET_RAW, Capability::CAP_SETUID, Capability::CAP_SETGID, Capability::CAP_KILL];

/// The kept set as a capability mask, for the signal handler.
static MASK: AtomicU64 = AtomicU64::new(0);
/// Whether threads may drop from their bounding set (they hold CAP_SETPCAP).
static BOUNDING: AtomicBool = AtomicBool::new(false);

const CAP_SETPCAP: u64 = 8;
/// _LINUX_CAPABILITY_VERSION_3: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Drops this thread to MASK with raw system calls only (async-signal-safe).
fn drop_this_thread() {
    let mask = MASK.load(Ordering::SeqCst);
    // SAFETY: prctl and capset with integer arguments and pointers to live locals.
    unsafe {
        if BOUNDING.load(Ordering::SeqCst) {
            for cap in 0..64u64 {
                if mask & (1 << cap) == 0 && cap != CAP_SETPCAP {
                    libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
                }
            }
            // Last: dropping it from the bounding set while still effective is fine.
            libc::prctl(libc::PR_CAPBSET_DROP, CAP_SETPCAP as libc::c_ulong, 0, 0, 0);
        }
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong, 0, 0, 0);
        let header = CapHeader { version: CAPABILITY_VERSION_3, pid: 0 };
        let word = |shift: u32| CapData {
            effective: (mask >> shift) as u32,
            permitted: (mask >> shift) as u32,
            inheritable: 0,
        };
        let data = [word(0), word(32)];
        libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr());
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
}

extern "C" fn on_drop_signal(_: libc::c_int) {
    drop_this_thread();
}

/// A thread's effective, permitted and bounding masks and no_new_privs, from /proc.
fn thread_state(tid: &str) -> Option<(u64, u64, u64, bool)> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let field = |name: &str| status.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let hex = |name: &str| field(name).and_then(|v| u64::from_str_radix(v, 16).ok());
    Some((hex("CapEff:")?, hex("CapPrm:")?, hex("CapBnd:")?, field("NoNewPrivs:")? == "1"))
}

/// Drops every capability but `KEPT` (those the process holds) from the effective,
/// permitted, inheritable and ambient sets of every thread, from their bounding sets
/// when it may, and sets no_new_privs; fails unless /proc shows every thread dropped.
pub(crate) fn drop_to_kept() -> Result<()> {
    let permitted = caps::read(None, CapSet::Permitted).context("reading capabilities")?;
    let mask = KEPT.iter().filter(|c| permitted.contains(c)).fold(0u64, |m, c| m | (1u64 << c.index()));
    MASK.store(mask, Ordering::SeqCst);
    BOUNDING.store(permitted.contains(&Capability::CAP_SETPCAP), Ordering::SeqCst);
    let bounding_goal = if BOUNDING.load(Ordering::SeqCst) { Some(mask) } else { None };

    let signal = libc::SIGRTMIN() + 5;
    // SAFETY: installs a handler that only makes system calls (see drop_this_thread).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_drop_signal as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error()).context("installing the capability-drop handler");
        }
    }
    drop_this_thread();
    let pid = std::process::id() as i32;
    let done = |state: (u64, u64, u64, bool)| {
        state.0 == mask && state.1 == mask && state.3 && bounding_goal.is_none_or(|b| state.2 == b)
    };
    for _ in 0..200 {
        let mut pending = 0;
        for entry in std::fs::read_dir("/proc/self/task").context("listing threads")? {
            let tid = entry?.file_name().to_string_lossy().into_owned();
            if thread_state(&tid).is_some_and(|s| !done(s)) {
                pending += 1;
                let tid: i32 = tid.parse().unwrap_or(0);
                // SAFETY: signals one thread of this process.
                unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, signal) };
            }
        }
        if pending == 0 {
            let mut names: Vec<String> =
                KEPT.iter().filter(|c| mask & (1 << c.index()) != 0).map(|c| c.to_string()).collect();
            names.sort();
            info!(kept = %names.join(" "), "dropped every other capability, in every thread");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    bail!("some threads did not drop their capabilities")
}
