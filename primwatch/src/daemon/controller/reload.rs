//! Reloads: SIGHUP, `ctl reload`, a changed geoip database and a pushed config all end
//! here. The new config is read and validated whole; a bad one is refused with its file,
//! line and reason, and the running config keeps serving.

use tracing::{info, warn};

use super::Controller;
use crate::{
    config::{pushed::PushedConfig, Config},
    ops::{control::Reply, hooks::HookRunner},
};

impl Controller {
    /// Reloads (as SIGHUP does) when the `[geoip] database` file changed since the
    /// running config read it: geoipupdate and packages replace it by rename. A file
    /// caught half-written is rejected like any bad config (the old mapping serves)
    /// and retried when it changes again.
    pub(super) fn reload_if_geoip_changed(&mut self) {
        let Some(path) = self.config.geoip.as_ref().map(|g| g.path.clone()) else { return };
        if !self.geoip.changed(&path) {
            return;
        }
        info!(database = %path.display(), "the geoip database changed: reloading");
        let reply = self.reload();
        if reply.ok {
            info!(database = %path.display(), "geoip database applied");
        } else {
            warn!(database = %path.display(), reason = %reply.message, "geoip database not applied");
        }
    }

    /// Re-reads the config (with the pushed config this node runs, if any); a bad one
    /// is rejected and the running one keeps serving. Counted in the reload metrics.
    pub(super) fn reload(&mut self) -> Reply {
        let pushed = self.pushed.clone();
        let reply = self.reload_from(pushed);
        self.metrics.reload(reply.ok);
        reply
    }

    /// Reads the config file, merged with `pushed` when given, and switches to it.
    pub(super) fn reload_from(&mut self, pushed: Option<PushedConfig>) -> Reply {
        match self.load_config(pushed.as_ref()) {
            Ok(new) => self.switch_config(new, pushed),
            Err(e) => Reply::error(format!("rejected, still serving the running config: {e}")),
        }
    }

    /// Reads the config file, merged with `pushed` when given.
    pub(super) fn load_config(&self, pushed: Option<&PushedConfig>) -> Result<Config, crate::config::ConfigError> {
        let Some(path) = &self.config_path else {
            return Err(crate::config::ConfigError {
                file: Default::default(),
                line: 0,
                column: 0,
                reason: "no config file to reload from".into(),
            });
        };
        match (pushed, &self.config.fleet) {
            (Some(pushed), Some(fleet)) => crate::config::pushed::load_merged(path, &fleet.prefix, pushed),
            _ => Config::load(path),
        }
    }

    /// Switches to `new` (read from the config file, merged with `pushed`), or says
    /// why not; the running config keeps serving if not.
    pub(super) fn switch_config(&mut self, new: Config, pushed: Option<PushedConfig>) -> Reply {
        let Some(path) = self.config_path.clone() else { return Reply::error("no config file to reload from") };
        if let Some(setting) = self.config.server_settings_differ(&new) {
            return Reply::error(format!("rejected: {setting} changed, which needs a restart"));
        }
        // Targets given by host keep their addresses while their host is the same.
        let kept: std::collections::BTreeMap<String, Vec<std::net::IpAddr>> = self
            .resolutions
            .iter()
            .filter(|(t, _)| {
                new.named_targets.get(*t).map(|n| &n.host) == self.config.named_targets.get(*t).map(|n| &n.host)
            })
            .map(|(t, r)| (t.clone(), r.addresses.clone()))
            .collect();
        let resolving_changed =
            (&new.named_targets, &new.resolver) != (&self.config.named_targets, &self.config.resolver);
        let (expanded, left_out) = new.expand(&kept);
        let expanded = match self.config_with_feeds(&expanded) {
            Ok(config) => config,
            Err(why) => {
                return Reply::error(format!(
                    "rejected: the feeds' data does not fit the new config ({why}); fix the feed or the config"
                ))
            }
        };
        let old_config = match self.switch_to((expanded, left_out), true) {
            Ok(old) => old,
            Err(e) => return Reply::error(format!("rejected: writing the new answers failed: {e:#}")),
        };
        if (&self.config.hooks, &self.config.exec_user) != (&old_config.hooks, &old_config.exec_user) {
            // The old runner finishes what it has queued; numbering continues.
            self.hooks = HookRunner::start(&self.config.hooks, self.config.exec_user.clone(), self.hooks.seq());
        }
        self.feeds_reloaded(&old_config);
        self.record_feed_verdicts();
        self.checkers.stop_all();
        self.spawn_all();
        if resolving_changed {
            let named = &self.config.named_targets;
            self.resolutions.retain(|t, _| kept.contains_key(t) && named.contains_key(t));
            self.spawn_resolvers();
        }
        let targets = &self.config.targets;
        self.metrics.retain_targets(|t| targets.contains_key(t));
        drop(old_config);
        crate::config::release_freed_memory();
        info!(file = %path.display(), names = self.config.names.len(), targets = self.config.targets.len(), "config reloaded");
        match pushed {
            Some(p) => Reply::ok(format!("reloaded {} with pushed revision {}", path.display(), p.revision)),
            None => Reply::ok(format!("reloaded {}", path.display())),
        }
    }
}
