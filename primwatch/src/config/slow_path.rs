//! `[slow_path]`: the budgets XDP keeps for the queries it passes to the DNS server
//! (the XDP program's `slow_path`). On by default, with every key optional: PowerDNS
//! answers tens of thousands of passed queries a second, and 4.7 exits when more wait.

use serde::Deserialize;
use toml::Spanned;

use super::{error::At, ConfigError};

/// The slow-path guard's settings, as check-config and run both read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowPathConfig {
    /// Queries a second passed in all (0: no total budget).
    pub queries_per_second: u32,
    /// Queries a second passed per client prefix (0: no prefix budget).
    pub prefix_queries_per_second: u32,
    /// Seconds of credit a budget may save up.
    pub burst_seconds: u32,
    /// Every `slip`-th query over a budget gets an empty TC=1 reply (0: all dropped).
    pub slip: u32,
    /// The client prefix lengths (as `[rrl]`'s).
    pub ipv4_prefix_len: u8,
    pub ipv6_prefix_len: u8,
    /// Sources never held (your own resolvers, monitoring).
    pub exempt: Vec<ipnet::IpNet>,
}

impl SlowPathConfig {
    /// Well below what PowerDNS answers for names it must ask the remote backend about
    /// (about 18,000/s here, and less while a flood keeps the machine busy): so that its
    /// queue stays short and real clients' questions wait milliseconds, not the queue.
    /// Measured: at 10,000/s a 30 s flood left the slow path's p99 at 25–310 ms from run to
    /// run; at 5,000/s, 3 ms.
    pub const DEFAULT_QUERIES_PER_SECOND: u32 = 5_000;
    /// A busy resolver's passed queries (NXDOMAINs, other types, DO=1 in signed zones)
    /// stay far below this; one prefix cannot take the whole budget.
    pub const DEFAULT_PREFIX_QUERIES_PER_SECOND: u32 = 1_000;
    pub const DEFAULT_BURST_SECONDS: u32 = 2;
    /// As RRL's default: half of what is held is told to come back over TCP.
    pub const DEFAULT_SLIP: u32 = 2;
    pub const MAX_QUERIES_PER_SECOND: u32 = 10_000_000;
    pub const MAX_BURST_SECONDS: u32 = 60;
    pub const MAX_EXEMPT: usize = 65536;
}

impl Default for SlowPathConfig {
    fn default() -> SlowPathConfig {
        SlowPathConfig {
            queries_per_second: SlowPathConfig::DEFAULT_QUERIES_PER_SECOND,
            prefix_queries_per_second: SlowPathConfig::DEFAULT_PREFIX_QUERIES_PER_SECOND,
            burst_seconds: SlowPathConfig::DEFAULT_BURST_SECONDS,
            slip: SlowPathConfig::DEFAULT_SLIP,
            ipv4_prefix_len: 24,
            ipv6_prefix_len: 56,
            exempt: Vec::new(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlowPath {
    queries_per_second: Option<Spanned<u32>>,
    prefix_queries_per_second: Option<Spanned<u32>>,
    burst_seconds: Option<Spanned<u32>>,
    slip: Option<Spanned<u32>>,
    ipv4_prefix_len: Option<Spanned<u8>>,
    ipv6_prefix_len: Option<Spanned<u8>>,
    exempt: Option<Vec<Spanned<String>>>,
}

/// `[slow_path]` (defaults without it). Its `exempt` defaults to `rrl_exempt`: the
/// sources an operator spares from rate limiting are its own.
pub(super) fn parse(
    raw: Option<RawSlowPath>,
    rrl_exempt: &[ipnet::IpNet],
    at: &At,
) -> Result<SlowPathConfig, ConfigError> {
    let defaults = SlowPathConfig { exempt: rrl_exempt.to_vec(), ..SlowPathConfig::default() };
    let Some(raw) = raw else { return Ok(defaults) };
    let rate = |value: &Option<Spanned<u32>>, default: u32, key: &str| {
        in_range(value, default, 0..=SlowPathConfig::MAX_QUERIES_PER_SECOND, key, at)
    };
    let exempt = match &raw.exempt {
        None => defaults.exempt,
        Some(list) => super::rrl::exempt_list(list, "slow_path.exempt", SlowPathConfig::MAX_EXEMPT, at)?,
    };
    Ok(SlowPathConfig {
        queries_per_second: rate(&raw.queries_per_second, defaults.queries_per_second, "queries_per_second")?,
        prefix_queries_per_second: rate(
            &raw.prefix_queries_per_second,
            defaults.prefix_queries_per_second,
            "prefix_queries_per_second",
        )?,
        burst_seconds: in_range(
            &raw.burst_seconds,
            defaults.burst_seconds,
            1..=SlowPathConfig::MAX_BURST_SECONDS,
            "burst_seconds",
            at,
        )?,
        slip: in_range(&raw.slip, defaults.slip, 0..=10, "slip", at)?,
        ipv4_prefix_len: in_range(&raw.ipv4_prefix_len, 24, 8..=32, "ipv4_prefix_len", at)?,
        ipv6_prefix_len: in_range(&raw.ipv6_prefix_len, 56, 16..=128, "ipv6_prefix_len", at)?,
        exempt,
    })
}

/// `value` of `slow_path.KEY`, refused at its span unless it lies in `range`.
fn in_range<T: Copy + PartialOrd + std::fmt::Display>(
    value: &Option<Spanned<T>>,
    default: T,
    range: std::ops::RangeInclusive<T>,
    key: &str,
    at: &At,
) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) if range.contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(at(
            v.span(),
            format!("slow_path.{key} = {} is out of range: {}..={}", v.get_ref(), range.start(), range.end()),
        )),
    }
}
