//! Stage 2 → 3: from check results to target health. Each check flips only after
//! `rise` successes (down → up) or `fall` failures (up → down) in a row; a target is
//! healthy while every one of its checks is up.

use std::{collections::BTreeMap, time::SystemTime};

use crate::{checks::Outcome, config::Config, selection::Health};

#[derive(Debug, Clone)]
pub struct CheckState {
    pub name: String,
    pub up: bool,
    /// Results in a row that disagree with `up`.
    streak: u32,
    pub last: Option<Outcome>,
    pub runs: u64,
    pub failures: u64,
}

impl CheckState {
    pub fn new(name: &str, initially_up: bool) -> CheckState {
        CheckState { name: name.to_string(), up: initially_up, streak: 0, last: None, runs: 0, failures: 0 }
    }

    /// Feeds one result; true when the check changed state.
    pub fn record(&mut self, outcome: Outcome, rise: u32, fall: u32) -> bool {
        self.runs += 1;
        if !outcome.ok {
            self.failures += 1;
        }
        let agrees = outcome.ok == self.up;
        self.last = Some(outcome);
        if agrees {
            self.streak = 0;
            return false;
        }
        self.streak += 1;
        let needed = if self.up { fall } else { rise };
        if self.streak >= needed {
            self.up = !self.up;
            self.streak = 0;
            return true;
        }
        false
    }
}

#[derive(Debug, Clone)]
pub struct TargetState {
    pub checks: Vec<CheckState>,
    pub healthy: bool,
    pub since: SystemTime,
    /// Why it is in its state: the failing check and what it saw, or "all checks pass".
    pub reason: String,
}

impl TargetState {
    fn evaluate(&self) -> (bool, String) {
        match self.checks.iter().find(|c| !c.up) {
            None => (true, "all checks pass".into()),
            Some(c) => {
                let detail = c.last.as_ref().map_or("initial state down".to_string(), |o| o.detail.clone());
                (false, format!("check {}: {detail}", c.name))
            }
        }
    }
}

/// A target's health changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub target: String,
    pub healthy: bool,
    pub reason: String,
}

pub struct State {
    pub targets: BTreeMap<String, TargetState>,
}

impl State {
    pub fn new(config: &Config) -> State {
        let now = SystemTime::now();
        let targets = config
            .targets
            .iter()
            .map(|(name, target)| {
                let checks: Vec<CheckState> = target
                    .checks
                    .iter()
                    .map(|c| CheckState::new(c, config.checks[c].initially_up))
                    .collect();
                let mut state = TargetState { checks, healthy: true, since: now, reason: String::new() };
                (state.healthy, state.reason) = state.evaluate();
                (name.clone(), state)
            })
            .collect();
        State { targets }
    }

    /// Applies one check result; returns the target's change of health, if any.
    pub fn record(&mut self, config: &Config, target: &str, check: usize, outcome: Outcome) -> Option<Change> {
        let state = self.targets.get_mut(target)?;
        let check_state = state.checks.get_mut(check)?;
        let spec = &config.checks[&check_state.name];
        check_state.record(outcome, spec.rise, spec.fall);
        let (healthy, reason) = state.evaluate();
        if healthy == state.healthy {
            return None;
        }
        state.healthy = healthy;
        state.since = SystemTime::now();
        state.reason = reason.clone();
        Some(Change { target: target.to_string(), healthy, reason })
    }
}

impl Health for State {
    fn target_eligible(&self, target: &str) -> bool {
        self.targets.get(target).is_some_and(|t| t.healthy)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outcome(ok: bool) -> Outcome {
        Outcome { ok, detail: if ok { "ok".into() } else { "refused".into() }, latency: Duration::ZERO, tcp: None }
    }

    #[test]
    fn rise_and_fall_need_results_in_a_row() {
        let mut c = CheckState::new("http", true);
        assert!(!c.record(outcome(false), 2, 3));
        assert!(!c.record(outcome(false), 2, 3));
        assert!(!c.record(outcome(true), 2, 3), "a success resets the streak");
        assert!(!c.record(outcome(false), 2, 3));
        assert!(!c.record(outcome(false), 2, 3));
        assert!(c.record(outcome(false), 2, 3), "third failure in a row: down");
        assert!(!c.up);
        assert!(!c.record(outcome(true), 2, 3));
        assert!(c.record(outcome(true), 2, 3), "second success in a row: up");
        assert!(c.up);
        assert_eq!((c.runs, c.failures), (8, 5));
    }

    #[test]
    fn a_target_is_healthy_only_while_all_its_checks_are_up() {
        let config = crate::config::Config::parse(
            std::path::Path::new("t.toml"),
            r#"
[server]
interfaces = ["lo"]
[checks.a]
type = "icmp"
rise = 1
fall = 1
[checks.b]
type = "tcp"
port = 80
rise = 1
fall = 1
initial = "down"
[targets.web]
address = "10.0.0.1"
checks = ["a", "b"]
"#,
        )
        .unwrap();
        let mut state = State::new(&config);
        assert!(!state.target_eligible("web"), "b starts down");
        assert_eq!(state.targets["web"].reason, "check b: initial state down");
        let change = state.record(&config, "web", 1, outcome(true)).unwrap();
        assert!(change.healthy);
        let change = state.record(&config, "web", 0, outcome(false)).unwrap();
        assert_eq!(change, Change { target: "web".into(), healthy: false, reason: "check a: refused".into() });
        assert!(state.record(&config, "web", 1, outcome(true)).is_none());
    }
}
