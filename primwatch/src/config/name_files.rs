//! Name files: names served from groups, one per line, for configs with many names
//! (TOML takes about 5 s and gigabytes per million `[names]` tables; a name file 1.5 s).
//!
//! ```text
//! # NAME  GROUP[,GROUP…]  [ttl=SECONDS]  [all_down=POLICY]
//! tenant1.example.com  tokyo,osaka
//! tenant2.example.com  tokyo  ttl=60  all_down=nodata
//! ```
//!
//! A line is the same as `[names."NAME"] groups = [...]` (top-level `name_files`) or
//! `[views.V.names."NAME"] groups = [...]` (a view's `name_files`, no `ttl=`: a name
//! has one TTL in every view). Blank lines and `#` comments are skipped. Errors name
//! the file and the line.

use std::{collections::BTreeMap, path::Path};

use super::{all_down_from, AllDown, ConfigError, GroupConfig, NameConfig, NameSource, ViewName, MAX_TTL};
use crate::dns::name::DnsName;

/// One line: the name, its groups in priority order, and the options it set.
struct NameLine {
    name: DnsName,
    groups: Vec<String>,
    ttl: Option<u32>,
    all_down: Option<AllDown>,
}

fn parse_line(line: &str, groups: &BTreeMap<String, GroupConfig>) -> Result<NameLine, String> {
    let mut fields = line.split_whitespace();
    let name_text = fields.next().unwrap_or("");
    let group_list = fields.next().ok_or_else(|| {
        format!("name '{name_text}' lists no groups (NAME GROUP[,GROUP…] [ttl=SECONDS] [all_down=POLICY])")
    })?;
    let name = DnsName::parse(name_text).map_err(|reason| format!("name '{name_text}': {reason}"))?;
    let mut chosen: Vec<String> = Vec::new();
    for group in group_list.split(',') {
        if !groups.contains_key(group) {
            return Err(format!("unknown group '{group}'"));
        }
        if chosen.iter().any(|g| g == group) {
            return Err(format!("group '{group}' is listed twice"));
        }
        chosen.push(group.to_string());
    }
    let (mut ttl, mut all_down) = (None, None);
    for option in fields {
        if let Some(value) = option.strip_prefix("ttl=") {
            let parsed = value.parse::<u32>().ok().filter(|t| *t <= MAX_TTL);
            ttl = Some(parsed.ok_or_else(|| format!("ttl '{value}' is not a number up to {MAX_TTL} (RFC 2181)"))?);
        } else if let Some(value) = option.strip_prefix("all_down=") {
            all_down = Some(all_down_from(value, groups)?);
        } else {
            return Err(format!("'{option}' is not ttl=SECONDS or all_down=POLICY"));
        }
    }
    Ok(NameLine { name, groups: chosen, ttl, all_down })
}

/// Calls `each` with every line of the file at `path` that holds a name; an error from
/// either is reported at the file and line.
fn read_lines(
    path: &Path,
    groups: &BTreeMap<String, GroupConfig>,
    mut each: impl FnMut(NameLine) -> Result<(), String>,
) -> Result<(), ConfigError> {
    let error = |line: usize, reason: String| ConfigError { file: path.to_path_buf(), line, column: 1, reason };
    let text = std::fs::read_to_string(path).map_err(|e| error(0, format!("cannot read the name file: {e}")))?;
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        parse_line(line, groups).and_then(&mut each).map_err(|reason| error(i + 1, reason))?;
    }
    Ok(())
}

/// The names of a top-level name file, into `names` (TTL `default_ttl` unless the line
/// sets one, all_down serve-all unless it sets one).
pub(super) fn read_names(
    path: &Path,
    groups: &BTreeMap<String, GroupConfig>,
    zones: &BTreeMap<DnsName, impl Sized>,
    default_ttl: u32,
    names: &mut BTreeMap<DnsName, NameConfig>,
) -> Result<(), ConfigError> {
    read_lines(path, groups, |line| {
        if !zones.is_empty() && !zones.keys().any(|apex| line.name.is_at_or_below(apex)) {
            return Err(format!("name '{}' lies in no declared zone; declare its zone under [zones]", line.name));
        }
        let all_down = line.all_down.unwrap_or(AllDown::ServeAll);
        let source = NameSource::Groups { groups: line.groups, all_down };
        let text = line.name.to_string();
        match names.insert(line.name, NameConfig { ttl: line.ttl.unwrap_or(default_ttl), source }) {
            Some(_) => Err(format!("name '{text}' is configured twice (names are case-insensitive)")),
            None => Ok(()),
        }
    })
}

/// The names of a view's name file, into `view_names`: each must be a configured name
/// (all_down: the name's own unless the line sets one).
pub(super) fn read_view_names(
    path: &Path,
    view: &str,
    groups: &BTreeMap<String, GroupConfig>,
    names: &BTreeMap<DnsName, NameConfig>,
    view_names: &mut BTreeMap<DnsName, ViewName>,
) -> Result<(), ConfigError> {
    read_lines(path, groups, |line| {
        let Some(configured) = names.get(&line.name) else {
            return Err(format!("view '{view}' names '{}', which is not a configured name", line.name));
        };
        if line.ttl.is_some() {
            return Err("ttl= is the name's, the same in every view: set it where the name is configured".into());
        }
        let all_down = line.all_down.unwrap_or_else(|| match &configured.source {
            NameSource::Groups { all_down, .. } => all_down.clone(),
            NameSource::Static { .. } => AllDown::ServeAll,
        });
        let text = line.name.to_string();
        match view_names.insert(line.name, ViewName { groups: line.groups, all_down }) {
            Some(_) => Err(format!("name '{text}' is given twice in view '{view}'")),
            None => Ok(()),
        }
    })
}
