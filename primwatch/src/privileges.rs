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

use anyhow::{Context as _, Result};
use caps::{CapSet, Capability, CapsHashSet};
use tracing::info;

/// The capabilities a running controller keeps.
pub const KEPT: [Capability; 4] =
    [Capability::CAP_NET_RAW, Capability::CAP_SETUID, Capability::CAP_SETGID, Capability::CAP_KILL];

/// Drops every capability but `KEPT` from the effective, permitted and inheritable sets
/// (and the bounding set, when we hold CAP_SETPCAP), and sets no_new_privs.
pub fn drop_to_kept() -> Result<()> {
    let kept: CapsHashSet = KEPT.into_iter().collect();
    let permitted = caps::read(None, CapSet::Permitted).context("reading capabilities")?;
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all().difference(&kept) {
            caps::drop(None, CapSet::Bounding, *cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    let keep: CapsHashSet = permitted.intersection(&kept).copied().collect();
    caps::clear(None, CapSet::Ambient).context("clearing ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing inheritable capabilities")?;
    caps::set(None, CapSet::Effective, &keep).context("setting effective capabilities")?;
    caps::set(None, CapSet::Permitted, &keep).context("setting permitted capabilities")?;
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setting no_new_privs");
    }
    let mut names: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
    names.sort();
    info!(kept = %names.join(" "), "dropped every other capability");
    Ok(())
}
