//! The compile step: what turns a parsed config (data, read from the file and the files
//! it names) into one the daemon runs, after every table parsed. It looks up the user
//! exec checks and hooks run as, reads the signed zones' keys, builds the client-address
//! → view index, and refuses what the XDP maps could not hold. Its errors point at the
//! key that asked for it (file:line:column), like parsing's; `check-config` runs it too,
//! so it refuses exactly what `run` would.

use std::{collections::BTreeMap, ops::Range, sync::Arc};

use super::{error::At, zones::ZoneDraft, CheckKind, Config, ConfigError, FeedSource, MapCapacities};
use crate::{dns::name::DnsName, sys::process::RunAs};

/// What parsing leaves for this step, with the spans its errors point at.
pub(super) struct Pending {
    /// The zones, their keys not read yet.
    pub zones: BTreeMap<DnsName, ZoneDraft>,
    /// `[server] exec_user` (or the default) and where it is written.
    pub exec_user: (String, Range<usize>),
    pub capacity_spans: CapacitySpans,
    /// `[geoip] database`, where too many view prefixes are reported.
    pub geoip_span: Range<usize>,
}

/// Where `[server] max_names`, `max_record_sets` and `max_signatures` are written (0..0:
/// not written, the default applies).
pub(super) struct CapacitySpans {
    pub names: Range<usize>,
    pub record_sets: Range<usize>,
    pub signatures: Range<usize>,
}

/// Compiles `config` (parsed, with no zones, no exec user and an empty view index yet)
/// with `pending`. Err: the first problem, at the key it is about.
pub(super) fn compile(mut config: Config, pending: Pending, at: &At) -> Result<Config, ConfigError> {
    let Pending { zones, exec_user, capacity_spans, geoip_span } = pending;
    config.exec_user = find_exec_user(&mut config, exec_user, at)?;
    config.zones = zones
        .into_iter()
        .map(|(apex, zone)| Ok((apex.clone(), zone.load_key(&apex, at)?)))
        .collect::<Result<_, _>>()?;
    check_view_prefixes(&config, geoip_span, at)?;
    check_name_hashes(&config, at)?;
    config.view_index = Arc::new(crate::dns::view_index::ViewIndex::build(&config.views));
    check_capacities(&config, &capacity_spans, at)?;
    Ok(config)
}

/// The checks of `compile` that depend on the names and views alone, run again when a
/// feed changes them (`Config::with_names_and_views`): Err is the reason, with the key to raise.
pub(super) fn recheck_names_and_views(config: &Config) -> Result<(), String> {
    let at = |_: Range<usize>, reason: String| ConfigError { file: Default::default(), line: 0, column: 0, reason };
    let spans = CapacitySpans { names: 0..0, record_sets: 0..0, signatures: 0..0 };
    check_view_prefixes(config, 0..0, &at)
        .and_then(|()| check_name_hashes(config, &at))
        .and_then(|()| check_capacities(config, &spans, &at))
        .map_err(|e| e.reason)
}

/// The user exec checks and hooks run as, looked up now rather than at the first check;
/// None when nothing runs commands. Each exec check is given it.
fn find_exec_user(
    config: &mut Config,
    (name, span): (String, Range<usize>),
    at: &At,
) -> Result<Option<RunAs>, ConfigError> {
    let has_exec = config.checks.values().any(|c| matches!(c.kind, CheckKind::Exec { .. }))
        || config.feeds.values().any(|f| matches!(f.source, FeedSource::Command { .. } | FeedSource::Stream { .. }));
    if !has_exec && config.hooks.on_change.is_none() {
        return Ok(None);
    }
    let user = RunAs::lookup(&name).ok_or_else(|| {
        at(
            span,
            format!(
                "server.exec_user: no user '{name}' on this host (exec checks and hooks run as it); \
                 create it (`useradd --system --no-create-home --shell /usr/sbin/nologin {name}`; \
                 `cargo xtask setup` does) or name another unprivileged user"
            ),
        )
    })?;
    for check in config.checks.values_mut() {
        if let CheckKind::Exec { run_as, .. } = &mut check.kind {
            *run_as = Some(user.clone());
        }
    }
    for feed in config.feeds.values_mut() {
        if let FeedSource::Command { run_as, .. } | FeedSource::Stream { run_as, .. } = &mut feed.source {
            *run_as = Some(user.clone());
        }
    }
    Ok(Some(user))
}

/// The view tries' size (`MAX_VIEW_PREFIXES` per family): CIDR files and geoip databases
/// can both reach it.
fn check_view_prefixes(config: &Config, geoip_span: Range<usize>, at: &At) -> Result<(), ConfigError> {
    for v6 in [false, true] {
        let count = config.views.values().flat_map(|v| &v.sources).filter(|p| p.addr().is_ipv6() == v6).count();
        if count > primwatch_common::MAX_VIEW_PREFIXES {
            return Err(at(
                geoip_span,
                format!(
                    "views hold {count} {} prefixes; XDP holds at most {} per family",
                    if v6 { "IPv6" } else { "IPv4" },
                    primwatch_common::MAX_VIEW_PREFIXES
                ),
            ));
        }
    }
    Ok(())
}

/// Distinct names with one 64-bit hash could never both be answered by XDP.
fn check_name_hashes(config: &Config, at: &At) -> Result<(), ConfigError> {
    let mut by_hash = BTreeMap::new();
    for name in config.names.keys() {
        if let Some(other) = by_hash.insert(name.hash(), name) {
            return Err(at(0..0, format!("names '{other}' and '{name}' share a hash; rename one")));
        }
    }
    Ok(())
}

/// The names, record sets and signatures the config needs against the maps' sizes:
/// refused here, with the numbers and the key, so check-config says what run would.
fn check_capacities(config: &Config, spans: &CapacitySpans, at: &At) -> Result<(), ConfigError> {
    let capacities = config.capacities;
    let (entries, sets) = (config.name_entries(), config.record_sets());
    if entries > capacities.names as usize {
        return Err(at(
            spans.names.clone(),
            format!(
                "{entries} (name, view) entries ({} names, {} more in views); server.max_names is {} (raise it, up to {})",
                config.names.len(),
                entries - config.names.len(),
                capacities.names,
                MapCapacities::MAX_NAMES
            ),
        ));
    }
    if sets > capacities.record_sets as usize {
        return Err(at(
            spans.record_sets.clone(),
            format!(
                "{sets} record sets (an A and an AAAA set per distinct TTL and address source); \
                 server.max_record_sets is {} (raise it, up to {})",
                capacities.record_sets,
                MapCapacities::MAX_RECORD_SETS
            ),
        ));
    }
    let signatures = config.signatures_needed();
    if signatures > capacities.signatures as usize {
        return Err(at(
            spans.signatures.clone(),
            format!(
                "signed zones need up to {signatures} signatures (one per name, view and type, or one per \
                 start record where max_answers is below a group's members); server.max_signatures is {} \
                 (raise it, up to {})",
                capacities.signatures,
                MapCapacities::MAX_SIGNATURES
            ),
        ));
    }
    Ok(())
}
