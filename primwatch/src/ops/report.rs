//! What `ctl status` and `ctl explain` say: the state in words, computed from the
//! config and the health state the controller holds; `text` prints them for `ctl`.

pub mod text;

use std::net::IpAddr;

use primwatch_common::{Family, NameKey};

use crate::{
    answers::records::NamePlan,
    answers::selection,
    config::{AllDown, Config, NameConfig, NameSource, Policy},
    dns::name::DnsName,
    health::state::{Force, State},
    health::Health as _,
    ops::control::{
        self, AnswerSetStatus, CheckStatus, Explanation, GroupExplanation, GroupStatus, NameListing, NameStatus,
        Status, TargetStatus, ViewStatus,
    },
};

/// The view, groups, member states and answer for one query, as XDP would see it.
pub fn explain(
    config: &Config,
    plan: &NamePlan,
    state: &State,
    name: &str,
    from: IpAddr,
    ecs: Option<&str>,
    family: Family,
) -> Result<Explanation, String> {
    use crate::{answers::selection::Pick, config::NameSource, dns::name::DnsName};
    let asked = DnsName::parse(name)?;
    // The configured name the query answers from, by the lookup every path uses.
    let matched = match plan.resolve(&asked, 0) {
        Some(entry) => entry.name.clone(),
        None => return Err(format!("'{name}' is not served by XDP: queries for it go to the DNS server")),
    };
    let entry = &config.names[&matched];
    // The view: longest configured prefix containing the subnet or the address.
    let subnet = match ecs {
        Some(prefix) => Some(prefix.parse::<ipnet::IpNet>().map_err(|_| format!("'{prefix}' is not a prefix"))?),
        None => None,
    };
    let key = crate::dns::view_index::client_key(from, subnet);
    let by = match subnet {
        Some(net) if key == net.trunc() => format!("client subnet {net}"),
        _ => format!("source address {from}"),
    };
    let (found, scope) = config.view_index.classify(key);
    let view = found.map(|m| (&m.view, &config.views[&m.view], m.prefix));
    let (view_label, groups, all_down) = match view {
        Some((view_name, v, prefix)) if v.names.contains_key(&matched) => {
            let vn = &v.names[&matched];
            (format!("{view_name} ({by} in {})", prefix_origin(config, prefix)), vn.groups.clone(), vn.all_down.clone())
        }
        found => {
            let label = match found {
                Some((view_name, _, prefix)) => format!(
                    "default ({by} is in view {view_name}, {}, which does not map this name)",
                    prefix_origin(config, prefix)
                ),
                None => format!("default ({by} is in no view)"),
            };
            match &entry.source {
                NameSource::Groups { groups, all_down } => (label, groups.clone(), all_down.clone()),
                NameSource::Static { .. } => (label, Vec::new(), AllDown::ServeAll),
            }
        }
    };
    let group_explanations = selection::by_priority(config, &groups, state)
        .into_iter()
        .map(|g| {
            let spec = &config.groups[g];
            let o = state.overrides.groups.get(g);
            let label = match o.and_then(|o| o.force) {
                Some(Force::Up) => "forced up".to_string(),
                Some(Force::Down) => "forced down".into(),
                Some(Force::Drain) => "drained".into(),
                None if o.is_some_and(|o| o.held) => "held (preempt off): waits for failback".into(),
                None => format!("min_healthy {}", spec.min_healthy),
            };
            let members = spec
                .members
                .iter()
                .filter(|m| Family::of(&config.targets[*m].address) == family)
                .map(|m| {
                    let t = &state.targets[m];
                    let o = state.overrides.targets.get(m);
                    let why = match o.and_then(|o| o.force) {
                        Some(f) => format!("forced {f:?}").to_lowercase(),
                        None if o.is_some_and(|o| o.held) => "held (preempt off): waits for failback".into(),
                        None => t.shown_reason(),
                    };
                    let why = match config.targets[m].check_address {
                        Some(probed) => format!("{why} (checked at {probed})"),
                        None => why,
                    };
                    // Under the weighted policy, its weight in effect (a feed's, else the config's).
                    let why = match spec.policy {
                        crate::config::Policy::Weighted | crate::config::Policy::Sticky => {
                            format!("{why}; weight {}", state.target_weight(m, config.targets[m].weight))
                        }
                        _ => why,
                    };
                    (m.clone(), config.targets[m].address.to_string(), state.target_eligible(m), why)
                })
                .collect();
            GroupExplanation {
                name: g.clone(),
                priority: state.group_priority(g, spec.priority),
                state: label,
                members,
            }
        })
        .collect();
    let (a, aaaa) = match &entry.source {
        NameSource::Static { .. } if groups.is_empty() => selection::choose(config, entry, state),
        _ => selection::choose_in_view(config, &crate::config::ViewName { groups: groups.clone(), all_down }, state),
    };
    let (records, answers, pick): (Vec<String>, usize, Pick) = if family == Family::V6 {
        (aaaa.records.iter().map(|(a, _)| a.to_string()).collect(), aaaa.answers, aaaa.pick)
    } else {
        (a.records.iter().map(|(a, _)| a.to_string()).collect(), a.answers, a.pick)
    };
    let why = if groups.is_empty() {
        "fixed addresses".to_string()
    } else {
        match selection::active_group(config, &groups, state, family) {
            Some((g, _)) => format!("group {g} is the highest-priority group that serves"),
            None if records.is_empty() && pick != Pick::NoData => {
                "no group serves; the query goes to the DNS server".into()
            }
            None => "no group serves; the all-down policy answers".into(),
        }
    };
    Ok(Explanation {
        matched: matched.to_string(),
        view: view_label,
        groups: group_explanations,
        answer: records,
        answers_per_reply: answers,
        pick: format!("{pick:?}").to_lowercase(),
        why,
        ecs_scope: ecs.filter(|p| !p.ends_with("/0")).map(|_| scope),
    })
}

/// What each target given by `host` resolves to, for `ctl status`.
pub fn resolved(
    config: &Config,
    resolutions: &std::collections::BTreeMap<String, crate::health::resolve::Resolution>,
) -> Vec<crate::ops::control::ResolvedStatus> {
    let time = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    config
        .named_targets
        .iter()
        .map(|(target, named)| {
            let r = resolutions.get(target).cloned().unwrap_or_default();
            crate::ops::control::ResolvedStatus {
                target: target.clone(),
                host: named.host.clone(),
                addresses: r.addresses,
                resolved_at: r.resolved_at.map(time).unwrap_or_default(),
                error: r.failing.as_ref().map(|(_, why)| why.clone()).unwrap_or_default(),
                failing_since: r.failing.map(|(since, _)| time(since)).unwrap_or_default(),
                left_out: r.left_out,
            }
        })
        .collect()
}

/// The declared zones for `ctl status`; `signed` gives, per signed apex, the
/// signatures XDP holds and the earliest renewal due (unix seconds).
pub fn zones(config: &Config, signed: &std::collections::HashMap<DnsName, (usize, u64)>) -> Vec<control::ZoneStatus> {
    use crate::config::Dnssec;
    config
        .zones
        .iter()
        .map(|(apex, zone)| {
            let (dnssec, signing) = match &zone.dnssec {
                Dnssec::Off => ("off", None),
                Dnssec::Pass => ("pass", None),
                Dnssec::Sign(signer) => {
                    let (signatures, due) = signed.get(apex).copied().unwrap_or((0, u64::MAX));
                    let next_renewal = if due == u64::MAX {
                        "-".to_string()
                    } else {
                        control::format_time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(due))
                    };
                    let signing = control::SigningStatus {
                        key_file: signer.key_file.display().to_string(),
                        key_tag: signer.key_tag,
                        algorithm: u8::from(signer.algorithm),
                        signatures,
                        validity_seconds: signer.validity.as_secs(),
                        next_renewal,
                    };
                    ("sign", Some(signing))
                }
            };
            control::ZoneStatus { apex: apex.to_string(), dnssec: dnssec.into(), signing }
        })
        .collect()
}

/// `ctl status`: targets, groups, the answer sets, and the names `listing` asks for, from
/// the config, the name plan and the health state; `resolved`, `zones` and `fleet` are left
/// empty for the caller to fill.
pub fn status(config: &Config, plan: &NamePlan, state: &State, dataplane: &str, listing: &NameListing) -> Status {
    let targets = config
        .targets
        .iter()
        .map(|(name, t)| {
            let s = &state.targets[name];
            let o = state.overrides.targets.get(name);
            let label = match o.and_then(|o| o.force) {
                Some(Force::Up) => "forced-up",
                Some(Force::Down) => "forced-down",
                Some(Force::Drain) => "drain",
                None if o.is_some_and(|o| o.held) => "held",
                None if s.healthy => "up",
                None => "down",
            };
            TargetStatus {
                name: name.clone(),
                address: t.address,
                check_address: t.check_address,
                state: label.into(),
                healthy: s.healthy,
                in_answers: state.target_eligible(name),
                reason: s.shown_reason(),
                since: control::format_time(s.since),
                weight: state.target_weight(name, t.weight),
                preempt: state.target_preempt(config, name),
                checks: s
                    .checks
                    .iter()
                    .map(|c| CheckStatus {
                        name: c.name.clone(),
                        up: c.up,
                        last: c.last.as_ref().map_or("not run yet".into(), |o| o.detail.clone()),
                        latency_ms: c.last.as_ref().map(|o| o.latency.as_secs_f64() * 1000.0),
                        runs: c.runs,
                        failures: c.failures,
                        local_errors: c.local_errors,
                        local_error: c.local_error.as_ref().map(|o| o.detail.clone()),
                        tcp_connect_ms: c
                            .last
                            .as_ref()
                            .and_then(|o| o.tcp)
                            .map(|t| t.connect_time.as_secs_f64() * 1000.0),
                        tcp_retransmits: c.last.as_ref().and_then(|o| o.tcp).map(|t| t.retransmits),
                    })
                    .collect(),
            }
        })
        .collect();
    let groups = config
        .groups
        .iter()
        .map(|(name, g)| {
            let o = state.overrides.groups.get(name);
            let qualifies = state.group_qualifies(config, name);
            let label = match o.and_then(|o| o.force) {
                Some(Force::Up) => "forced-up",
                Some(Force::Down) => "forced-down",
                Some(Force::Drain) => "drain",
                None if o.is_some_and(|o| o.held) => "held",
                None if qualifies => "up",
                None => "down",
            };
            GroupStatus {
                name: name.clone(),
                priority: state.group_priority(name, g.priority),
                configured_priority: g.priority,
                policy: match g.policy {
                    Policy::All => "all",
                    Policy::First => "first",
                    Policy::RoundRobin => "round-robin",
                    Policy::Weighted => "weighted",
                    Policy::Random => "random",
                    Policy::Sticky => "sticky",
                }
                .into(),
                state: label.into(),
                eligible: g.members.iter().filter(|m| state.target_eligible(m)).count(),
                members: g.members.len(),
                min_healthy: g.min_healthy,
                preempt: state.group_preempt(config, name),
            }
        })
        .collect();
    // Selection once per record-set spec; every name answering from it shares the result.
    let mut users = vec![0usize; plan.specs.len()];
    for entry in &plan.entries {
        users[entry.set as usize] += 1;
    }
    let sets: Vec<AnswerSetStatus> = plan
        .specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let (a, aaaa) =
                selection::choose(config, &NameConfig { ttl: spec.ttl, source: spec.source.clone() }, state);
            let from = |family: Family| match &spec.source {
                NameSource::Static { .. } => "static".to_string(),
                NameSource::Groups { groups, all_down } => match selection::active_group(config, groups, state, family)
                {
                    Some((g, _)) => format!("group {g}"),
                    None if !selection::has_family(config, groups, family) => {
                        "no members of this family: passed to the DNS server".into()
                    }
                    None => match all_down {
                        AllDown::ServeAll => "all down: serving all".into(),
                        AllDown::Backup(b) => format!("all down: backup {b}"),
                        AllDown::NoData => "all down: NODATA".into(),
                        AllDown::Pass => "all down: passed to the DNS server".into(),
                    },
                },
            };
            AnswerSetStatus {
                source: match &spec.source {
                    NameSource::Static { .. } => "static".into(),
                    NameSource::Groups { groups, .. } => format!("groups {}", groups.join(", ")),
                },
                ttl: spec.ttl,
                names: users[index],
                a: a.records.iter().map(|(a, _)| a.to_string()).collect(),
                aaaa: aaaa.records.iter().map(|(a, _)| a.to_string()).collect(),
                a_from: from(Family::V4),
                aaaa_from: from(Family::V6),
            }
        })
        .collect();
    let entries = plan.entries.len();
    let list = |name: &DnsName| match listing {
        NameListing::Auto => entries <= STATUS_NAMES_LISTED,
        NameListing::All => true,
        NameListing::Matching(pattern) => glob_match(pattern, name.to_string().trim_end_matches('.')),
    };
    let status_of = |name: &DnsName, view: u32| -> Option<NameStatus> {
        let set = &sets[plan.get(&NameKey::new(name.hash(), view))?.set as usize];
        Some(NameStatus {
            name: name.to_string(),
            ttl: set.ttl,
            a: set.a.clone(),
            aaaa: set.aaaa.clone(),
            a_from: set.a_from.clone(),
            aaaa_from: set.aaaa_from.clone(),
        })
    };
    let names = config.names.keys().filter(|n| list(n)).filter_map(|n| status_of(n, 0)).collect();
    let views = config
        .views
        .iter()
        .map(|(view_name, view)| ViewStatus {
            name: view_name.clone(),
            id: view.id,
            prefixes: view.sources.len(),
            names: view.names.keys().filter(|n| list(n)).filter_map(|n| status_of(n, view.id)).collect(),
        })
        .collect();
    Status {
        targets,
        groups,
        names,
        views,
        dataplane: dataplane.to_string(),
        resolved: Vec::new(),
        name_entries: entries,
        answer_sets: sets,
        geoip: config.geoip.as_ref().map(|g| control::GeoStatus {
            path: g.path.display().to_string(),
            database_type: g.database_type.clone(),
            built: control::format_time(std::time::UNIX_EPOCH + std::time::Duration::from_secs(g.build_epoch)),
            networks: g.networks,
            prefixes: g.prefixes.iter().map(|(view, p)| (view.clone(), p.len())).collect(),
        }),
        zones: Vec::new(),
        fleet: None,
        feeds: Vec::new(),
    }
}

/// A view's prefix in words: the prefix, or where the database put it ("country JP
/// (GeoLite2-Country, network 1.0.16.0/20)").
fn prefix_origin(config: &Config, prefix: ipnet::IpNet) -> String {
    match config.geoip.as_ref().and_then(|g| Some((g, g.origins.get(&prefix)?))) {
        Some((g, why)) => format!("{why} ({}, network {prefix})", g.database_type),
        None => prefix.to_string(),
    }
}

/// `ctl status` lists every name by default up to this many (name, view) entries; above
/// it, the answer sets summarise them and `--names` or `--name PATTERN` lists them.
pub const STATUS_NAMES_LISTED: usize = 1_000;

/// Does `text` match `pattern`, where `*` stands for any run of characters (none
/// included)? Case-insensitive, as DNS names are.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (pattern, text) = (pattern.to_ascii_lowercase(), text.to_ascii_lowercase());
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let middle: Vec<&str> = parts.collect();
    let Some((last, middle)) = middle.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn name_patterns() {
        assert!(glob_match("*.tenant.example.com", "a.tenant.example.com"));
        assert!(glob_match("*.tenant.example.com", "x.y.TENANT.example.com"));
        assert!(!glob_match("*.tenant.example.com", "tenant.example.com"));
        assert!(glob_match("n12*", "n12.example.test"));
        assert!(glob_match("n1*.example.*", "n123.example.test"));
        assert!(!glob_match("n1*.example.*", "m123.example.test"));
        assert!(glob_match("www.example.test", "www.example.test"));
        assert!(!glob_match("www.example.test", "www.example.test.org"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*a", "aa"));
        assert!(!glob_match("a*a", "a"), "the prefix and suffix may not overlap");
    }
}
