//! Stage 2, health: the probes (`checks`), targets given by DNS name (`resolve`), and the
//! rise/fall machine with operators' overrides and its saved state (`state`). What the
//! answer stage may ask of it is the [`Health`] trait below.
//!
//! May import: `sys`, `dns`, `config`.

pub(crate) mod checkers;
pub mod checks;
pub(crate) mod resolve;
pub mod state;

/// What selection needs to know about the live state.
pub trait Health {
    /// May this target be in answers now (healthy, not forced down, not held out)?
    fn target_eligible(&self, target: &str) -> bool;
    /// May this group serve now (not forced down, not held out after a failover)?
    fn group_allowed(&self, _group: &str) -> bool {
        true
    }
    /// Has an operator forced this group up (it serves whatever its members' health)?
    fn group_forced_up(&self, _group: &str) -> bool {
        false
    }
    /// The group's priority now (an operator may have changed it).
    fn group_priority(&self, _group: &str, configured: i32) -> i32 {
        configured
    }
    /// The target's weight now (a weights feed may have set it).
    fn target_weight(&self, _target: &str, configured: u32) -> u32 {
        configured
    }
}

/// Every target healthy: what the config alone says.
pub struct AllUp;

impl Health for AllUp {
    fn target_eligible(&self, _: &str) -> bool {
        true
    }
}
