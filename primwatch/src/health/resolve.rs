//! Stage 1b: targets given by DNS name (`host`). One task per name resolves it (A and
//! AAAA) with the system's resolver configuration or `[resolver] nameservers`, again
//! after the records' TTL (clamped to `min_ttl`..`max_ttl`), and reports each result;
//! the controller turns the addresses into targets (`Config::expand`).

use std::{
    net::IpAddr,
    time::{Duration, SystemTime},
};

use hickory_resolver::{
    config::{LookupIpStrategy, NameServerConfig, Protocol, ResolverConfig as HickoryConfig, ResolverOpts},
    TokioAsyncResolver,
};
use tokio::sync::mpsc;

use crate::config::ResolverConfig;

/// One resolution of one named target.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// The target's name in the config.
    pub target: String,
    /// Sorted addresses, or why there are none (NXDOMAIN, no A/AAAA, no answer).
    pub result: Result<Vec<IpAddr>, String>,
}

/// What the controller knows of one named target's addresses (shown by `ctl status`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolution {
    /// The addresses in use (the last ones resolved, kept through a failure for the
    /// grace period).
    pub addresses: Vec<IpAddr>,
    /// When `addresses` were last confirmed by a resolution.
    pub resolved_at: Option<SystemTime>,
    /// Since when, and why, the name does not resolve.
    pub failing: Option<(SystemTime, String)>,
    /// Addresses the last answer had that are not used, and why (empty: none).
    pub left_out: String,
}

impl Resolution {
    /// Takes in one result; true if the addresses in use changed. After a failure the
    /// last addresses stay until `grace` has passed since the first failure in a row.
    pub fn record(&mut self, result: Result<Vec<IpAddr>, String>, grace: Duration, now: SystemTime) -> bool {
        match result {
            Ok(addresses) => {
                self.failing = None;
                self.resolved_at = Some(now);
                let changed = addresses != self.addresses;
                self.addresses = addresses;
                changed
            }
            Err(reason) => {
                let since = match &self.failing {
                    Some((since, _)) => *since,
                    None => now,
                };
                self.failing = Some((since, reason));
                let expired = now.duration_since(since).unwrap_or_default() >= grace;
                if expired && !self.addresses.is_empty() {
                    self.addresses.clear();
                    return true;
                }
                false
            }
        }
    }
}

/// The addresses of one answer that become targets: those `policy` allows, at most
/// `max` of them (the lowest: an answer's order is the server's to change). Returns
/// them and what was left out, and why (empty: nothing).
pub(crate) fn screen(
    addresses: Vec<IpAddr>,
    policy: &crate::config::target_addresses::TargetPolicy,
    max: usize,
) -> (Vec<IpAddr>, String) {
    let mut why = Vec::new();
    let mut kept: Vec<IpAddr> = addresses
        .into_iter()
        .filter(|a| match policy.refuses(*a) {
            Some(reason) => {
                why.push(reason);
                false
            }
            None => true,
        })
        .collect();
    if kept.len() > max {
        why.push(format!("{} more than resolver.max_addresses = {max}", kept.len() - max));
        kept.truncate(max);
    }
    // A hostile answer could carry thousands: say how many, name a few.
    let shown = why.len().min(4);
    let mut note = why[..shown].join("; ");
    if why.len() > shown {
        note.push_str(&format!("; and {} more", why.len() - shown));
    }
    (kept, note)
}

/// A resolver for `config`: its nameservers, or the system's (/etc/resolv.conf).
/// Caching is ours (re-resolution on the TTL), so the resolver keeps none.
pub(crate) fn resolver(config: &ResolverConfig) -> Result<TokioAsyncResolver, String> {
    let (servers, mut options) = match &config.nameservers {
        Some(list) => {
            let mut servers = HickoryConfig::new();
            for address in list {
                servers.add_name_server(NameServerConfig::new(*address, Protocol::Udp));
                servers.add_name_server(NameServerConfig::new(*address, Protocol::Tcp));
            }
            (servers, ResolverOpts::default())
        }
        None => hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| format!("reading the system's resolver configuration: {e}"))?,
    };
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.cache_size = 0;
    options.use_hosts_file = config.nameservers.is_none();
    options.timeout = Duration::from_secs(2);
    options.attempts = 2;
    Ok(TokioAsyncResolver::tokio(servers, options))
}

/// Resolves `host` now and after every TTL, sending each result, until the receiver is
/// gone.
pub(crate) async fn resolve_loop(
    target: String,
    host: String,
    config: ResolverConfig,
    resolver: TokioAsyncResolver,
    results: mpsc::Sender<Resolved>,
) {
    // Fully qualified: the search list of resolv.conf must not apply.
    let fqdn = format!("{host}.");
    loop {
        let (result, wait) = match resolver.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut addresses: Vec<IpAddr> = lookup.iter().collect();
                addresses.sort();
                addresses.dedup();
                let ttl = lookup.valid_until().saturating_duration_since(std::time::Instant::now());
                (Ok(addresses), ttl.clamp(config.min_ttl, config.max_ttl))
            }
            Err(e) => (Err(format!("{host}: {e}")), config.min_ttl),
        };
        if results.send(Resolved { target: target.clone(), result }).await.is_err() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_kept_through_failures_for_the_grace_period() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let grace = Duration::from_secs(60);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let mut r = Resolution::default();
        assert!(r.record(Ok(vec![a]), grace, t0));
        assert!(!r.record(Ok(vec![a]), grace, t0), "the same addresses are no change");
        assert!(!r.record(Err("NXDOMAIN".into()), grace, t0 + Duration::from_secs(10)));
        assert!(!r.record(Err("NXDOMAIN".into()), grace, t0 + Duration::from_secs(69)));
        assert_eq!(r.addresses, vec![a], "kept within the grace");
        assert!(r.record(Err("timeout".into()), grace, t0 + Duration::from_secs(70)), "grace over");
        assert!(r.addresses.is_empty());
        assert_eq!(r.failing, Some((t0 + Duration::from_secs(10), "timeout".to_string())));
        assert!(r.record(Ok(vec![a]), grace, t0 + Duration::from_secs(80)));
        assert_eq!(r.failing, None);
    }
}
