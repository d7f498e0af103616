//! `[resolver]`: how target host names are resolved and kept.

use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{error, limits, ConfigError};

/// `[resolver]`: resolving targets given by `host`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolverConfig {
    /// Servers to ask instead of the system's (/etc/resolv.conf), port 53 unless given.
    pub nameservers: Option<Vec<std::net::SocketAddr>>,
    /// A name is resolved again after its records' TTL, but no sooner than `min_ttl`
    /// and no later than `max_ttl`; a failed resolution is retried after `min_ttl`.
    pub min_ttl: std::time::Duration,
    /// The longest a name's addresses are kept before it is resolved again, whatever their TTL (see `min_ttl`).
    pub max_ttl: std::time::Duration,
    /// A name that stops resolving keeps its last addresses this long, then has none.
    pub grace: std::time::Duration,
    /// A name's addresses used at most (the lowest, sorted); more are left out, logged.
    pub max_addresses: usize,
    /// Special-purpose addresses (loopback, link-local, unspecified, multicast) from a
    /// resolver are targets too; off: left out, logged.
    pub allow_special_addresses: bool,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            nameservers: None,
            min_ttl: std::time::Duration::from_secs(5),
            max_ttl: std::time::Duration::from_secs(3600),
            grace: std::time::Duration::from_secs(300),
            max_addresses: 16,
            allow_special_addresses: false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResolver {
    nameservers: Option<Spanned<Vec<String>>>,
    min_ttl: Option<Spanned<String>>,
    max_ttl: Option<Spanned<String>>,
    grace: Option<Spanned<String>>,
    max_addresses: Option<Spanned<usize>>,
    #[serde(default)]
    allow_special_addresses: bool,
}

pub(super) fn parse_resolver(raw: Option<RawResolver>, at: &error::At) -> Result<ResolverConfig, ConfigError> {
    let mut config = ResolverConfig::default();
    let Some(raw) = raw else { return Ok(config) };
    config.min_ttl = limits::duration_or(&raw.min_ttl, config.min_ttl, "resolver.min_ttl", limits::RESOLVER_TTL, at)?;
    config.max_ttl = limits::duration_or(&raw.max_ttl, config.max_ttl, "resolver.max_ttl", limits::RESOLVER_TTL, at)?;
    config.grace = limits::duration_or(&raw.grace, config.grace, "resolver.grace", limits::RESOLVER_GRACE, at)?;
    config.max_addresses = limits::count_or(
        &raw.max_addresses,
        config.max_addresses,
        "resolver.max_addresses",
        limits::RESOLVED_ADDRESSES,
        at,
    )?;
    config.allow_special_addresses = raw.allow_special_addresses;
    if config.min_ttl < std::time::Duration::from_secs(1) || config.min_ttl > config.max_ttl {
        let span = raw.min_ttl.as_ref().or(raw.max_ttl.as_ref()).map(|s| s.span()).unwrap_or(0..0);
        return Err(at(span, "resolver: min_ttl must be at least 1s and at most max_ttl".into()));
    }
    if let Some(list) = &raw.nameservers {
        let mut servers = Vec::new();
        for text in list.get_ref() {
            let server = text
                .parse::<std::net::SocketAddr>()
                .or_else(|_| text.parse::<IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                .map_err(|_| at(list.span(), format!("resolver.nameservers: '{text}' is not an address")))?;
            servers.push(server);
        }
        if servers.is_empty() {
            return Err(at(list.span(), "resolver.nameservers is empty; leave it out to use the system's".into()));
        }
        config.nameservers = Some(servers);
    }
    Ok(config)
}
