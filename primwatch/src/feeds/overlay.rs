//! Fed names and views added to what the config file wrote: the one place a feed's
//! `names` and `views` items become a config's names, view entries and view prefixes.

use std::collections::HashMap;

use ipnet::IpNet;

use super::Batch;
use crate::config::{AllDown, Config, NameConfig, NameSource, ViewName};

/// `config` with the names and view data `fed` (feed name → its served batch) added to
/// what the config file wrote: fed names beside the written ones, fed view names and
/// prefixes in their views. Checked as the config's own are: a name or prefix given
/// twice (by the config, another feed or another view), a name outside the declared
/// zones, a view entry for a name nobody serves, and what the maps cannot hold are
/// refused, with the feed and the reason. With nothing fed, the written names and views
/// themselves (shared, not copied).
pub fn overlay<'a>(
    config: &Config,
    fed: impl IntoIterator<Item = (&'a str, &'a Batch)> + Clone,
) -> Result<Config, String> {
    let adds_anything =
        fed.clone().into_iter().any(|(_, b)| !b.names.is_empty() || !b.view_names.is_empty() || !b.prefixes.is_empty());
    if !adds_anything {
        return Ok(config.without_fed_data());
    }
    let (written_names, written_views) = config.written_names_and_views();
    let mut names = written_names.clone();
    for (feed, batch) in fed.clone() {
        for (name, given) in &batch.names {
            if !config.zones.is_empty() && config.zone_of(name).is_none() {
                return Err(format!("feed {feed}: name '{name}' lies in no declared zone"));
            }
            if let Some(missing) = given.groups.iter().find(|g| !config.groups.contains_key(*g)) {
                return Err(format!("feed {feed}: name '{name}': no group '{missing}'"));
            }
            let source = NameSource::Groups {
                groups: given.groups.clone(),
                all_down: given.all_down.clone().unwrap_or(AllDown::ServeAll),
            };
            let entry = NameConfig { ttl: given.ttl.unwrap_or(config.default_ttl), source };
            if names.insert(name.clone(), entry).is_some() {
                return Err(format!("feed {feed}: name '{name}' is already served (by the config or another feed)"));
            }
        }
    }
    let mut views = written_views.clone();
    let mut owner: HashMap<IpNet, String> =
        views.iter().flat_map(|(v, view)| view.sources.iter().map(move |p| (*p, v.clone()))).collect();
    for (feed, batch) in fed {
        for (view_name, entries) in &batch.view_names {
            let Some(view) = views.get_mut(view_name) else {
                return Err(format!("feed {feed}: no view '{view_name}'"));
            };
            for (name, (groups, all_down)) in entries {
                let Some(served) = names.get(name) else {
                    return Err(format!("feed {feed}: view '{view_name}' names '{name}', which nobody serves"));
                };
                let all_down = all_down.clone().unwrap_or_else(|| match &served.source {
                    NameSource::Groups { all_down, .. } => all_down.clone(),
                    NameSource::Static { .. } => AllDown::ServeAll,
                });
                if view.names.insert(name.clone(), ViewName { groups: groups.clone(), all_down }).is_some() {
                    return Err(format!("feed {feed}: name '{name}' is already given in view '{view_name}'"));
                }
            }
        }
        for (prefix, view_name) in &batch.prefixes {
            let Some(view) = views.get_mut(view_name) else {
                return Err(format!("feed {feed}: no view '{view_name}'"));
            };
            if let Some(other) = owner.insert(*prefix, view_name.clone()) {
                return Err(format!("feed {feed}: prefix {prefix} is already in view '{other}'"));
            }
            view.sources.push(*prefix);
        }
    }
    for view in views.values_mut() {
        view.sources.sort();
    }
    config.with_names_and_views(names, views)
}
