//! Stage 3: which addresses a name answers with, given what health (and, later, the
//! operator) says about each target and group.
//!
//! Per name and address family: the groups are tried from the highest priority down;
//! the first with at least `min_healthy` eligible members of that family answers, with
//! those members, by its policy. If none qualifies, the name's all-down policy decides.
//! A group without members of a family is skipped for that family.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use primwatch_common::Family;

use crate::{
    config::{AllDown, Config, GroupConfig, NameConfig, NameSource, Policy, ViewName},
    health::Health,
};

/// How the XDP program picks the records of each reply: the map contract's own
/// enum, so the two sides cannot disagree on a value.
pub(crate) type Pick = primwatch_common::Select;

/// The records chosen for one name and type: (address, weight) in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen<A> {
    pub records: Vec<(A, u32)>,
    /// Records per reply.
    pub answers: usize,
    pub pick: Pick,
}

impl<A> Chosen<A> {
    /// Every address in every reply.
    pub fn fixed(addresses: Vec<A>) -> Chosen<A> {
        let answers = addresses.len();
        Chosen { records: addresses.into_iter().map(|a| (a, 1)).collect(), answers, pick: Pick::Fixed }
    }

    pub fn nodata() -> Chosen<A> {
        Chosen { records: Vec::new(), answers: 0, pick: Pick::NoData }
    }

    /// Not served: the XDP program passes such queries on.
    pub fn none() -> Chosen<A> {
        Chosen { records: Vec::new(), answers: 0, pick: Pick::Fixed }
    }
}

/// (address, weight) pairs of one family.
pub(crate) type Weighted<A> = Vec<(A, u32)>;

/// Splits addresses by family.
pub(crate) fn split_families(
    addresses: impl IntoIterator<Item = (IpAddr, u32)>,
) -> (Weighted<Ipv4Addr>, Weighted<Ipv6Addr>) {
    let (mut v4, mut v6) = (Vec::new(), Vec::new());
    for (address, weight) in addresses {
        match address {
            IpAddr::V4(a) => v4.push((a, weight)),
            IpAddr::V6(a) => v6.push((a, weight)),
        }
    }
    (v4, v6)
}

fn pick_for(policy: Policy) -> Pick {
    match policy {
        Policy::All | Policy::First => Pick::Fixed,
        Policy::RoundRobin => Pick::RoundRobin,
        Policy::Weighted => Pick::Weighted,
        Policy::Random => Pick::Random,
        Policy::Sticky => Pick::Sticky,
    }
}

/// Members of `group` in the given family: (target name, address, weight).
fn members<'a>(
    config: &'a Config,
    group: &'a GroupConfig,
    family: Family,
    health: &'a dyn Health,
) -> impl Iterator<Item = (&'a str, IpAddr, u32)> + 'a {
    group.members.iter().filter_map(move |name| {
        let target = &config.targets[name];
        let weight = health.target_weight(name, target.weight);
        (Family::of(&target.address) == family).then_some((name.as_str(), target.address, weight))
    })
}

/// The group that serves a family now, if any: (group name, chosen addresses).
pub(crate) fn active_group<'a>(
    config: &'a Config,
    groups: &'a [String],
    health: &dyn Health,
    family: Family,
) -> Option<(&'a str, Vec<(IpAddr, u32)>)> {
    for name in by_priority(config, groups, health) {
        let group = &config.groups[name];
        let all: Vec<_> = members(config, group, family, health).collect();
        if all.is_empty() || !health.group_allowed(name) {
            continue;
        }
        let eligible: Vec<(IpAddr, u32)> =
            all.iter().filter(|(t, _, _)| health.target_eligible(t)).map(|(_, a, w)| (*a, *w)).collect();
        if health.group_forced_up(name) {
            // Forced up: its eligible members, or all of them if none is.
            let chosen = if eligible.is_empty() { all.iter().map(|(_, a, w)| (*a, *w)).collect() } else { eligible };
            return Some((name, chosen));
        }
        if !eligible.is_empty() && eligible.len() >= group.min_healthy {
            return Some((name, eligible));
        }
    }
    None
}

/// Does any of these groups have members of the family?
pub(crate) fn has_family(config: &Config, groups: &[String], family: Family) -> bool {
    groups.iter().any(|g| members(config, &config.groups[g], family, &crate::health::AllUp).next().is_some())
}

/// The name's groups, highest (effective) priority first; the listed order breaks ties.
pub(crate) fn by_priority<'a>(config: &Config, groups: &'a [String], health: &dyn Health) -> Vec<&'a String> {
    let mut ordered: Vec<&String> = groups.iter().collect();
    ordered.sort_by_key(|g| std::cmp::Reverse(health.group_priority(g, config.groups[*g].priority)));
    ordered
}

fn chosen_for(
    config: &Config,
    groups: &[String],
    all_down: &AllDown,
    health: &dyn Health,
    family: Family,
) -> Chosen<IpAddr> {
    let shaped = |group: &GroupConfig, records: Vec<(IpAddr, u32)>| Chosen {
        answers: group.max_answers.min(records.len()),
        records,
        pick: pick_for(group.policy),
    };
    if let Some((name, eligible)) = active_group(config, groups, health, family) {
        return shaped(&config.groups[name], eligible);
    }
    // The policy and size of the best group that has this family at all.
    let ordered = by_priority(config, groups, health);
    let Some(lead) =
        ordered.iter().map(|g| &config.groups[*g]).find(|g| members(config, g, family, health).next().is_some())
    else {
        return Chosen::none(); // no group has this family
    };
    match all_down {
        AllDown::ServeAll => {
            let mut all: Vec<(IpAddr, u32)> = Vec::new();
            for g in ordered {
                for (_, address, weight) in members(config, &config.groups[g], family, health) {
                    if !all.iter().any(|(a, _)| *a == address) {
                        all.push((address, weight));
                    }
                }
            }
            all.truncate(primwatch_common::MAX_RECORDS);
            shaped(lead, all)
        }
        AllDown::Backup(name) => {
            let backup = &config.groups[name];
            let all: Vec<(IpAddr, u32)> = members(config, backup, family, health).map(|(_, a, w)| (a, w)).collect();
            if all.is_empty() {
                Chosen::none()
            } else {
                shaped(backup, all)
            }
        }
        AllDown::NoData => Chosen::nodata(),
        AllDown::Pass => Chosen::none(),
    }
}

fn narrow<A>(chosen: &Chosen<IpAddr>, records: Vec<(A, u32)>) -> Chosen<A> {
    Chosen { answers: chosen.answers.min(records.len()), records, pick: chosen.pick }
}

/// The A and AAAA records a name answers with now (default view).
pub(crate) fn choose(config: &Config, name: &NameConfig, health: &dyn Health) -> (Chosen<Ipv4Addr>, Chosen<Ipv6Addr>) {
    match &name.source {
        NameSource::Static { a, aaaa } => (Chosen::fixed(a.clone()), Chosen::fixed(aaaa.clone())),
        NameSource::Groups { groups, all_down } => choose_groups(config, groups, all_down, health),
    }
}

/// The records a name answers with in a view that maps it to its own groups.
pub(crate) fn choose_in_view(
    config: &Config,
    view: &ViewName,
    health: &dyn Health,
) -> (Chosen<Ipv4Addr>, Chosen<Ipv6Addr>) {
    choose_groups(config, &view.groups, &view.all_down, health)
}

fn choose_groups(
    config: &Config,
    groups: &[String],
    all_down: &AllDown,
    health: &dyn Health,
) -> (Chosen<Ipv4Addr>, Chosen<Ipv6Addr>) {
    let v4 = chosen_for(config, groups, all_down, health, Family::V4);
    let v6 = chosen_for(config, groups, all_down, health, Family::V6);
    let (a, _) = split_families(v4.records.clone());
    let (_, aaaa) = split_families(v6.records.clone());
    (narrow(&v4, a), narrow(&v6, aaaa))
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, path::Path};

    use super::*;
    use crate::dns::name::DnsName;

    const CONFIG: &str = r#"
[server]
interfaces = ["eth0"]

[targets.tokyo1]
address = "10.0.1.1"
[targets.tokyo2]
address = "10.0.1.2"
weight = 3
[targets.tokyo6]
address = "2001:db8:1::1"
[targets.osaka1]
address = "10.0.2.1"
[targets.sorry]
address = "10.0.9.9"

[groups.tokyo]
members = ["tokyo1", "tokyo2", "tokyo6"]
priority = 100
policy = "weighted"
min_healthy = 1
[groups.osaka]
members = ["osaka1"]
priority = 50
policy = "all"
[groups.sorry]
members = ["sorry"]

[names."www.example.test"]
groups = ["osaka", "tokyo"]

[names."backup.example.test"]
groups = ["tokyo", "osaka"]
all_down = "backup:sorry"

[names."nodata.example.test"]
groups = ["tokyo"]
all_down = "nodata"

[names."pass.example.test"]
groups = ["tokyo"]
all_down = "pass"
"#;

    struct Down(BTreeSet<&'static str>);
    impl Health for Down {
        fn target_eligible(&self, t: &str) -> bool {
            !self.0.contains(t)
        }
    }

    fn config() -> Config {
        Config::parse(Path::new("t.toml"), CONFIG).unwrap()
    }

    fn pick(name: &str, down: &[&'static str]) -> (Chosen<Ipv4Addr>, Chosen<Ipv6Addr>) {
        let config = config();
        let entry = &config.names[&DnsName::parse(name).unwrap()];
        choose(&config, entry, &Down(down.iter().copied().collect()))
    }

    fn v4(chosen: &Chosen<Ipv4Addr>) -> Vec<String> {
        chosen.records.iter().map(|(a, _)| a.to_string()).collect()
    }

    #[test]
    fn highest_priority_group_with_healthy_members_answers() {
        let (a, aaaa) = pick("www.example.test", &[]);
        assert_eq!(v4(&a), ["10.0.1.1", "10.0.1.2"], "tokyo (100) over osaka (50), listed order aside");
        assert_eq!(a.pick, Pick::Weighted);
        assert_eq!(a.records[1].1, 3, "weights carried");
        assert_eq!(aaaa.records.len(), 1);
        let (a, _) = pick("www.example.test", &["tokyo1"]);
        assert_eq!(v4(&a), ["10.0.1.2"]);
    }

    #[test]
    fn failover_to_the_backup_site_per_family() {
        let (a, aaaa) = pick("www.example.test", &["tokyo1", "tokyo2"]);
        assert_eq!(v4(&a), ["10.0.2.1"], "osaka takes A");
        assert_eq!(a.pick, Pick::Fixed);
        assert_eq!(aaaa.records.len(), 1, "tokyo still serves AAAA: its IPv6 member is up");
    }

    #[test]
    fn all_down_policies() {
        let everything = ["tokyo1", "tokyo2", "tokyo6", "osaka1"];
        let (a, aaaa) = pick("www.example.test", &everything);
        assert_eq!(v4(&a), ["10.0.1.1", "10.0.1.2", "10.0.2.1"], "serve-all: fail open");
        assert_eq!(aaaa.records.len(), 1);
        let (a, aaaa) = pick("backup.example.test", &everything);
        assert_eq!(v4(&a), ["10.0.9.9"]);
        assert!(aaaa.records.is_empty() && aaaa.pick == Pick::Fixed, "the sorry group has no IPv6");
        let (a, _) = pick("nodata.example.test", &everything);
        assert_eq!(a.pick, Pick::NoData);
        let (a, _) = pick("pass.example.test", &everything);
        assert!(a.records.is_empty() && a.pick == Pick::Fixed);
    }

    #[test]
    fn max_answers_caps_the_reply() {
        let (a, _) = pick("www.example.test", &[]);
        assert_eq!(a.answers, 1, "weighted defaults to one answer");
        let (a, _) = pick("www.example.test", &["tokyo1", "tokyo2"]);
        assert_eq!(a.answers, 1, "osaka: all of its one member");
    }
}
