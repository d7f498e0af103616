//! `[rrl]`: response rate limiting of XDP's answers.

use serde::Deserialize;
use toml::Spanned;

use super::{error, limits, ConfigError};

/// `[rrl]`: response rate limiting of XDP's answers (BIND/Knot semantics, see
/// `primwatch_common::RrlSettings`).
#[derive(Debug, Clone, PartialEq)]
pub struct RrlConfig {
    /// Answers with records, per account and second …
    pub responses_per_second: u32,
    /// … NODATA answers (default: `responses_per_second`; 0: unlimited) …
    pub nodata_per_second: u32,
    /// … NXDOMAIN answers, per (prefix, zone) (default: `responses_per_second`; 0:
    /// unlimited).
    pub nxdomains_per_second: u32,
    /// `rrl.window`, in seconds: an account's debt is bounded by this much credit, so a flood must stop
    /// for up to that long before it is answered again.
    pub window_seconds: u32,
    /// Every `slip`-th limited answer goes out empty with TC=1 (0: all dropped, 1: all truncated).
    pub slip: u32,
    /// IPv4 clients are accounted per prefix of this length (default 24).
    pub ipv4_prefix_len: u8,
    /// IPv6 clients are accounted per prefix of this length (default 56).
    pub ipv6_prefix_len: u8,
    /// Count what would be limited, and answer anyway.
    pub log_only: bool,
    /// Sources never limited (your own resolvers, monitoring).
    pub exempt: Vec<ipnet::IpNet>,
    /// Accounts tracked at once, (prefix, class, name) each (an LRU map: the least
    /// recently answered go).
    pub table_size: u32,
}

impl RrlConfig {
    /// Default `rrl.responses_per_second`.
    pub const DEFAULT_RESPONSES_PER_SECOND: u32 = 20;
    /// Default `rrl.window`: 15 seconds.
    pub const DEFAULT_WINDOW_SECONDS: u32 = 15;
    /// Default `rrl.slip`: every second limited answer goes out truncated.
    pub const DEFAULT_SLIP: u32 = 2;
    /// Default `rrl.table_size`: 1,048,576 accounts.
    pub const DEFAULT_TABLE_SIZE: u32 = 1 << 20;
    /// Largest `rrl.table_size`: 16,777,216 accounts.
    pub const MAX_TABLE_SIZE: u32 = 1 << 24;
    /// Most sources `rrl.exempt` may list.
    pub const MAX_EXEMPT: usize = 65536;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRrl {
    responses_per_second: Option<Spanned<u32>>,
    nodata_per_second: Option<Spanned<u32>>,
    nxdomains_per_second: Option<Spanned<u32>>,
    window: Option<Spanned<String>>,
    slip: Option<Spanned<u32>>,
    ipv4_prefix_len: Option<Spanned<u8>>,
    ipv6_prefix_len: Option<Spanned<u8>>,
    #[serde(default)]
    log_only: bool,
    #[serde(default)]
    exempt: Vec<Spanned<String>>,
    table_size: Option<Spanned<u32>>,
}

pub(super) fn parse_rrl(raw: Spanned<RawRrl>, at: &error::At) -> Result<RrlConfig, ConfigError> {
    let raw = raw.into_inner();
    let bounded =
        |value: &Option<Spanned<u32>>, default: u32, range: std::ops::RangeInclusive<u32>, key: &str| match value {
            None => Ok(default),
            Some(v) if range.contains(v.get_ref()) => Ok(*v.get_ref()),
            Some(v) => Err(at(
                v.span(),
                format!("rrl.{key} = {} is out of range: {}..={}", v.get_ref(), range.start(), range.end()),
            )),
        };
    let responses_per_second = bounded(
        &raw.responses_per_second,
        RrlConfig::DEFAULT_RESPONSES_PER_SECOND,
        1..=1_000_000,
        "responses_per_second",
    )?;
    let nodata_per_second = bounded(&raw.nodata_per_second, responses_per_second, 0..=1_000_000, "nodata_per_second")?;
    let nxdomains_per_second =
        bounded(&raw.nxdomains_per_second, responses_per_second, 0..=1_000_000, "nxdomains_per_second")?;
    let slip = bounded(&raw.slip, RrlConfig::DEFAULT_SLIP, 0..=10, "slip")?;
    let table_size =
        bounded(&raw.table_size, RrlConfig::DEFAULT_TABLE_SIZE, 1024..=RrlConfig::MAX_TABLE_SIZE, "table_size")?;
    let window_seconds = match &raw.window {
        None => RrlConfig::DEFAULT_WINDOW_SECONDS,
        Some(text) => limits::duration_in(text, "rrl.window", limits::RRL_WINDOW, at)?.as_secs() as u32,
    };
    let prefix = |value: &Option<Spanned<u8>>, default: u8, range: std::ops::RangeInclusive<u8>, key: &str| match value
    {
        None => Ok(default),
        Some(v) if range.contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(at(v.span(), format!("rrl.{key} must be between {} and {}", range.start(), range.end()))),
    };
    let ipv4_prefix_len = prefix(&raw.ipv4_prefix_len, 24, 8..=32, "ipv4_prefix_len")?;
    let ipv6_prefix_len = prefix(&raw.ipv6_prefix_len, 56, 16..=128, "ipv6_prefix_len")?;
    let exempt = exempt_list(&raw.exempt, "rrl.exempt", RrlConfig::MAX_EXEMPT, at)?;
    Ok(RrlConfig {
        responses_per_second,
        nodata_per_second,
        nxdomains_per_second,
        window_seconds,
        slip,
        ipv4_prefix_len,
        ipv6_prefix_len,
        log_only: raw.log_only,
        exempt,
        table_size,
    })
}

/// A list of exempt sources (`rrl.exempt`, `slow_path.exempt`): addresses or prefixes,
/// at most `max`, each refused at its line if it is neither.
pub(super) fn exempt_list(
    list: &[Spanned<String>],
    key: &str,
    max: usize,
    at: &error::At,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    if list.len() > max {
        let span = list.first().map_or(0..0, |t| t.span());
        return Err(at(span, format!("{key} lists {} prefixes; at most {max}", list.len())));
    }
    list.iter()
        .map(|text| {
            let net = text
                .get_ref()
                .parse::<ipnet::IpNet>()
                .or_else(|_| text.get_ref().parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| at(text.span(), format!("{key}: '{}' is not an address or prefix", text.get_ref())))?;
            Ok(net.trunc())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrl(body: &str) -> Result<RrlConfig, String> {
        let raw: Spanned<RawRrl> = toml::from_str(body).map_err(|e: toml::de::Error| e.to_string())?;
        parse_rrl(raw, &|_, reason| ConfigError { file: Default::default(), line: 0, column: 0, reason })
            .map_err(|e| e.reason)
    }

    #[test]
    fn the_classes_rates_default_to_the_answers_and_zero_means_unlimited() {
        let config = rrl("responses_per_second = 7").unwrap();
        assert_eq!((config.nodata_per_second, config.nxdomains_per_second), (7, 7));
        let config = rrl("responses_per_second = 7\nnodata_per_second = 0\nnxdomains_per_second = 3").unwrap();
        assert_eq!((config.nodata_per_second, config.nxdomains_per_second), (0, 3));
        let e = rrl("nxdomains_per_second = 1000001").unwrap_err();
        assert!(e.contains("rrl.nxdomains_per_second = 1000001 is out of range: 0..=1000000"), "{e}");
    }
}
