//! The fleet's live nodes as this node last heard them, and what they mean for the
//! sharded targets (`[targets.X] checked_by`): which other nodes check, which shards
//! moved to or from this node, and whose views of a target count.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;

/// The other live nodes, each with the pushed revision it runs.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    members: BTreeMap<String, i64>,
    /// Heard from etcd at least once: before that, a node checks every shard itself (as a
    /// node alone does) but its views of other nodes' shards must not count.
    known: bool,
}

impl Membership {
    /// Takes the fleet's new list of other live nodes. None: nothing changed; Some(first):
    /// the shards are to be dealt again, `first` the first time the others are known.
    pub(crate) fn update(&mut self, members: BTreeMap<String, i64>) -> Option<bool> {
        let first = !self.known;
        if members == self.members && !first {
            return None;
        }
        self.members = members;
        self.known = true;
        Some(first)
    }

    /// Has this node heard who else is live?
    pub(crate) fn known(&self) -> bool {
        self.known
    }

    /// No other live node (alone, or cut off for longer than a lease).
    pub(crate) fn alone(&self) -> bool {
        self.members.is_empty()
    }

    /// The other live nodes and the pushed revision each runs.
    pub(crate) fn members(&self) -> &BTreeMap<String, i64> {
        &self.members
    }

    /// The sharded targets of `config` that other nodes check, for node `me` running
    /// pushed `revision` (see `fleet::not_checked_here`).
    pub(crate) fn checked_elsewhere(&self, config: &Config, me: &str, revision: i64) -> BTreeSet<String> {
        super::not_checked_here(config, me, revision, &self.members)
    }
}

/// How the shards moved between two deals: (taken: checked here now and not before,
/// dropped: checked elsewhere now and here before), from the sets checked elsewhere.
pub(crate) fn shards_moved(
    elsewhere_before: &BTreeSet<String>,
    elsewhere_now: &BTreeSet<String>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let taken = elsewhere_before.difference(elsewhere_now).cloned().collect();
    let dropped = elsewhere_now.difference(elsewhere_before).cloned().collect();
    (taken, dropped)
}

/// Records `node`'s view of a target (`up`; None: withdrawn) in `views` (node → up);
/// true if that changed anything.
pub(crate) fn record_vote(views: &mut BTreeMap<String, bool>, node: String, up: Option<bool>) -> bool {
    match up {
        Some(up) => views.insert(node, up) != Some(up),
        None => views.remove(&node).is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_first_list_always_deals_and_a_repeat_never_does() {
        let mut membership = Membership::default();
        assert!(!membership.known());
        assert_eq!(membership.update(BTreeMap::new()), Some(true), "alone, but now known");
        assert!(membership.known() && membership.alone());
        assert_eq!(membership.update(BTreeMap::new()), None);
        let two = BTreeMap::from([("b".to_string(), 3), ("c".to_string(), 3)]);
        assert_eq!(membership.update(two.clone()), Some(false));
        assert_eq!(membership.update(two.clone()), None);
        assert_eq!(membership.members(), &two);
        // A node moving to another revision is a change: it no longer shares shards.
        assert_eq!(membership.update(BTreeMap::from([("b".to_string(), 3), ("c".to_string(), 4)])), Some(false));
    }

    #[test]
    fn shards_taken_and_dropped() {
        let (taken, dropped) = shards_moved(&set(&["t1", "t2"]), &set(&["t2", "t3"]));
        assert_eq!((taken, dropped), (set(&["t1"]), set(&["t3"])));
        let (taken, dropped) = shards_moved(&set(&["t1"]), &set(&["t1"]));
        assert!(taken.is_empty() && dropped.is_empty());
    }

    #[test]
    fn a_vote_counts_as_a_change_only_when_it_changes_the_view() {
        let mut views = BTreeMap::new();
        assert!(record_vote(&mut views, "a".into(), Some(true)));
        assert!(!record_vote(&mut views, "a".into(), Some(true)));
        assert!(record_vote(&mut views, "a".into(), Some(false)));
        assert!(record_vote(&mut views, "a".into(), None));
        assert!(!record_vote(&mut views, "a".into(), None));
        assert!(views.is_empty());
    }
}
