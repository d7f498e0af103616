//! The range of every duration in the config. check-config and `run` read the config
//! with the same parser, so a value outside its range is refused at its line (with the
//! range) before anything runs; a value inside it cannot overflow the arithmetic that
//! schedules checks, signs records or rotates secrets.

use std::{ops::RangeInclusive, time::Duration};

use toml::Spanned;

use super::{error::At, ConfigError};

const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// `[checks.X] interval`: a check at least every hour (a health check that runs less
/// often says nothing about failover); 100 ms at the fastest.
pub(crate) const CHECK_INTERVAL: RangeInclusive<Duration> = Duration::from_millis(100)..=HOUR;
/// `[checks.X] timeout`, also bounded by the check's interval.
pub(crate) const CHECK_TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(1)..=HOUR;
/// `[checks.X] retry_interval`, also bounded by the check's interval.
pub(crate) const CHECK_RETRY_INTERVAL: RangeInclusive<Duration> = Duration::from_millis(100)..=HOUR;
/// `[checks.X] jitter`, also below the check's interval.
pub(crate) const CHECK_JITTER: RangeInclusive<Duration> = Duration::ZERO..=HOUR;
/// `[zones.Z] signature_validity`: RRSIGs replayable for at most 90 days (Knot's
/// default lifetime is 14 days, BIND's 30); 10 s at the shortest (renewal runs at half
/// of it, checked every second).
pub(crate) const SIGNATURE_VALIDITY: RangeInclusive<Duration> =
    Duration::from_secs(10)..=Duration::from_secs(90 * 24 * 3600);
/// `[cookies] secret_rotation`: RFC 7873 §7.1 asks for periodic changes; a month at
/// most. A cookie lives an hour (RFC 9018 §4.3), so rotating faster refuses valid ones:
/// the shortest rotations are for tests.
pub(crate) const COOKIE_ROTATION: RangeInclusive<Duration> = SECOND..=Duration::from_secs(30 * 24 * 3600);
/// `[zones."APEX"] refresh`: how often a zone's SOA serial is checked.
pub(crate) const ZONE_REFRESH: RangeInclusive<Duration> = SECOND..=HOUR;
/// `[rrl] window`.
pub(crate) const RRL_WINDOW: RangeInclusive<Duration> = SECOND..=HOUR;
/// `[resolver] min_ttl` and `max_ttl`: how long a resolved target address is kept.
pub(crate) const RESOLVER_TTL: RangeInclusive<Duration> = SECOND..=DAY;
/// `[resolver] grace`: how long addresses are kept when resolution fails.
pub(crate) const RESOLVER_GRACE: RangeInclusive<Duration> = Duration::ZERO..=DAY;
/// `[powerdns] idle_timeout`.
pub(crate) const POWERDNS_IDLE_TIMEOUT: RangeInclusive<Duration> = SECOND..=HOUR;
/// `[hooks] timeout`: how long a hook may run before it is killed.
pub(crate) const HOOK_TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(100)..=Duration::from_secs(10 * 60);

/// `[feeds.X] interval`: between one run of a feed command and the next.
pub(crate) const FEED_INTERVAL: RangeInclusive<Duration> = SECOND..=DAY;
/// `[feeds.X] timeout`: a feed command's run, or a push body's upload.
pub(crate) const FEED_TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(100)..=HOUR;
/// `[feeds.X] stale_after`.
pub(crate) const FEED_STALE_AFTER: RangeInclusive<Duration> = SECOND..=Duration::from_secs(7 * 24 * 3600);
/// `[feeds.X] first_batch_wait`: how long a start waits for a feed's first batch.
pub(crate) const FEED_FIRST_BATCH_WAIT: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(600);

/// `[targets.X] slow_start` and `[groups.X] slow_start`: the weight ramp after a return.
pub(crate) const SLOW_START: RangeInclusive<Duration> = SECOND..=DAY;

/// `[server] control_max_connections`: ctl connections served at once.
pub(crate) const CONTROL_CONNECTIONS: RangeInclusive<usize> = 1..=1024;
/// `[powerdns] max_connections`: PowerDNS backend connections served at once (PowerDNS
/// opens one per receiver/distributor thread).
pub(crate) const POWERDNS_CONNECTIONS: RangeInclusive<usize> = 1..=4096;
/// `[server] max_checks_in_flight`: each holds a socket or a process.
pub(crate) const CHECKS_IN_FLIGHT: RangeInclusive<usize> = 1..=1_000_000;

/// `[resolver] max_addresses`: the addresses one name may bring (each a target with
/// its own checkers).
pub(crate) const RESOLVED_ADDRESSES: RangeInclusive<usize> = 1..=256;

/// `value` of `key`, refused at its span unless it lies in `range`.
pub(super) fn count_or(
    value: &Option<Spanned<usize>>,
    default: usize,
    key: &str,
    range: RangeInclusive<usize>,
    at: &At,
) -> Result<usize, ConfigError> {
    let Some(value) = value else { return Ok(default) };
    if !range.contains(value.get_ref()) {
        return Err(at(
            value.span(),
            format!(
                "{key} {} is out of range: it must be between {} and {}",
                value.get_ref(),
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(*value.get_ref())
}

/// Parses `text` (humantime: "2s", "500ms", "14d") as the value of `key`, refused at
/// its span unless it lies in `range`.
pub(super) fn duration_in(
    text: &Spanned<String>,
    key: &str,
    range: RangeInclusive<Duration>,
    at: &At,
) -> Result<Duration, ConfigError> {
    let value = humantime::parse_duration(text.get_ref()).map_err(|e| {
        at(text.span(), format!("{key} '{}' is not a duration like \"2s\" or \"500ms\": {e}", text.get_ref()))
    })?;
    if !range.contains(&value) {
        return Err(at(
            text.span(),
            format!(
                "{key} '{}' is out of range: it must be between {} and {}",
                text.get_ref(),
                show(*range.start()),
                show(*range.end())
            ),
        ));
    }
    Ok(value)
}

/// As `duration_in`, with `default` when the key is absent.
pub(super) fn duration_or(
    text: &Option<Spanned<String>>,
    default: Duration,
    key: &str,
    range: RangeInclusive<Duration>,
    at: &At,
) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(text) => duration_in(text, key, range, at),
    }
}

/// A range end as the config would spell it, in its largest whole unit ("90d", "1h",
/// "100ms").
fn show(d: Duration) -> String {
    const UNITS: [(u128, &str); 6] = [
        (86_400_000_000_000, "d"),
        (3_600_000_000_000, "h"),
        (60_000_000_000, "m"),
        (1_000_000_000, "s"),
        (1_000_000, "ms"),
        (1, "ns"),
    ];
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let (size, unit) = UNITS.iter().find(|(size, _)| nanos.is_multiple_of(*size)).copied().unwrap_or((1, "ns"));
    format!("{}{unit}", nanos / size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(_: std::ops::Range<usize>, message: String) -> ConfigError {
        ConfigError { file: "t.toml".into(), line: 1, column: 1, reason: message }
    }

    fn parse(text: &str, range: RangeInclusive<Duration>) -> Result<Duration, String> {
        duration_in(&Spanned::new(0..1, text.to_string()), "k", range, &at).map_err(|e| e.to_string())
    }

    #[test]
    fn values_outside_the_range_are_refused_with_the_range() {
        assert_eq!(parse("14d", SIGNATURE_VALIDITY), Ok(Duration::from_secs(14 * 86400)));
        let e = parse("296000000000y", SIGNATURE_VALIDITY).unwrap_err();
        assert!(e.contains("out of range") && e.contains("10s") && e.contains("90d"), "{e}");
        assert!(parse("68y", SIGNATURE_VALIDITY).unwrap_err().contains("out of range"));
        assert!(parse("50ms", CHECK_INTERVAL).unwrap_err().contains("100ms"));
        assert!(parse("eleven", CHECK_INTERVAL).unwrap_err().contains("not a duration"));
        assert_eq!(parse("0s", CHECK_JITTER), Ok(Duration::ZERO));
    }
}
