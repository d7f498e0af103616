//! Checker supervision: one task per (target, check), each probing on its own schedule
//! (`checks::schedule`) and reporting to the controller. A checker never returns while it
//! runs; one that panics is restarted, named in the log.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use tokio::{
    sync::mpsc,
    task::{AbortHandle, Id, JoinSet},
};

use crate::{
    config::Config,
    health::checks::{
        schedule::{check_loop, Checker, Report},
        Budget,
    },
};

/// The running checker tasks and what each checks.
pub(crate) struct Checkers {
    tasks: JoinSet<()>,
    running: HashMap<Id, (Checker, AbortHandle)>,
    reports: mpsc::Sender<Report>,
    /// Checks in flight at once, over all checkers (`[server] max_checks_in_flight`).
    budget: Arc<Budget>,
}

impl Checkers {
    /// No checker yet; each will report to `reports`.
    pub(crate) fn new(reports: mpsc::Sender<Report>, budget: Arc<Budget>) -> Checkers {
        Checkers { tasks: JoinSet::new(), running: HashMap::new(), reports, budget }
    }

    /// Starts a checker for each check of every target of `config` that `wanted` says
    /// yes to, except targets in `checked_elsewhere` (sharded to other nodes).
    pub(crate) fn start_where(
        &mut self,
        config: &Config,
        checked_elsewhere: &BTreeSet<String>,
        wanted: impl Fn(&str) -> bool,
    ) {
        let checkers: Vec<Checker> = config
            .targets
            .iter()
            .filter(|(name, _)| wanted(name) && !checked_elsewhere.contains(*name))
            .flat_map(|(name, target)| {
                // A feed check is no probe: the controller records its feed's verdicts.
                let probed = |(_, check): &(usize, &String)| {
                    !matches!(config.checks[*check].kind, crate::config::CheckKind::Feed { .. })
                };
                target.checks.iter().enumerate().filter(probed).map(|(index, check)| Checker {
                    target: name.clone(),
                    index,
                    address: target.probe_address(),
                    spec: config.checks[check].clone(),
                })
            })
            .collect();
        for checker in checkers {
            self.start(checker);
        }
    }

    fn start(&mut self, checker: Checker) {
        let handle = self.tasks.spawn(check_loop(checker.clone(), self.reports.clone(), self.budget.clone()));
        self.running.insert(handle.id(), (checker, handle));
    }

    /// Stops the checkers `keep` says no to.
    pub(crate) fn retain(&mut self, keep: impl Fn(&Checker) -> bool) {
        self.running.retain(|_, (checker, handle)| {
            let kept = keep(checker);
            if !kept {
                handle.abort();
            }
            kept
        });
    }

    /// Stops every checker (a reload starts them again from the new config).
    pub(crate) fn stop_all(&mut self) {
        self.tasks.abort_all();
        self.running.clear();
    }

    /// The targets that have a checker running.
    pub(crate) fn targets(&self) -> BTreeSet<String> {
        self.running.values().map(|(checker, _)| checker.target.clone()).collect()
    }

    /// How many checkers run.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.running.len()
    }

    /// Waits until a checker ends (it panicked, or was aborted from outside), starts it
    /// again and returns it with why it ended. Checkers stopped by `retain` or
    /// `stop_all` are not restarted. Pending forever while no checker runs.
    pub(crate) async fn restart_next_dead(&mut self) -> (Checker, String) {
        loop {
            let Some(done) = self.tasks.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (id, why) = match done {
                Ok((id, ())) => (id, "returned".to_string()),
                Err(e) => (e.id(), e.to_string()),
            };
            if let Some((checker, _)) = self.running.remove(&id) {
                self.start(checker.clone());
                return (checker, why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{path::Path, time::Duration};

    use super::*;

    fn config() -> Config {
        let text = r#"
[server]
interfaces = ["lo"]
[checks.slow]
type = "tcp"
port = 9
interval = "1h"
[checks.slow2]
type = "tcp"
port = 10
interval = "1h"
[targets.a]
address = "127.0.0.1"
checks = ["slow", "slow2"]
[targets.b]
address = "127.0.0.2"
checks = ["slow"]
[groups.g]
members = ["a", "b"]
[names."www.example.test"]
groups = ["g"]
"#;
        Config::parse(Path::new("t.toml"), text).unwrap()
    }

    /// Checkers, and the reports' receiver: a checker ends when nobody listens.
    fn checkers() -> (Checkers, mpsc::Receiver<Report>) {
        let (tx, rx) = mpsc::channel(16);
        (Checkers::new(tx, Arc::new(Budget::new(8))), rx)
    }

    #[tokio::test]
    async fn one_task_per_check_of_the_wanted_targets_not_sharded_away() {
        let config = config();
        let (mut all, _reports) = checkers();
        all.start_where(&config, &BTreeSet::new(), |_| true);
        assert_eq!((all.len(), all.targets()), (3, BTreeSet::from(["a".to_string(), "b".to_string()])));
        let (mut some, _reports) = checkers();
        some.start_where(&config, &BTreeSet::from(["a".to_string()]), |_| true);
        assert_eq!(some.targets(), BTreeSet::from(["b".to_string()]));
        let (mut wanted, _reports) = checkers();
        wanted.start_where(&config, &BTreeSet::new(), |t| t == "a");
        assert_eq!(wanted.len(), 2);
        wanted.retain(|c| c.index == 1);
        assert_eq!(wanted.len(), 1);
        wanted.stop_all();
        assert_eq!(wanted.len(), 0);
    }

    #[tokio::test]
    async fn a_checker_that_dies_is_started_again_and_a_stopped_one_is_not() {
        let config = config();
        let (mut checkers, _reports) = checkers();
        checkers.start_where(&config, &BTreeSet::new(), |_| true);
        // Stopped on purpose: gone for good.
        checkers.retain(|c| c.target != "b");
        // Killed from outside, as a panic ends it: restarted.
        let victim = checkers.running.values().find(|(c, _)| c.index == 1).unwrap().1.clone();
        victim.abort();
        let (checker, why) =
            tokio::time::timeout(Duration::from_secs(5), checkers.restart_next_dead()).await.expect("restarted");
        assert_eq!((checker.target.as_str(), checker.index), ("a", 1));
        assert!(why.contains("cancelled"), "{why}");
        assert_eq!(checkers.len(), 2);
        // Nothing else has died: waiting goes on.
        assert!(tokio::time::timeout(Duration::from_millis(200), checkers.restart_next_dead()).await.is_err());
    }
}
