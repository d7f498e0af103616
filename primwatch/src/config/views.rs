//! Views (PrimWatch's address map): source prefixes, inline or from files of CIDRs,
//! and per view which groups a name uses.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::{
    error::At,
    geoip::{is_country, GeoCriteria, CONTINENTS},
    parse_all_down, AllDown, ConfigError, GroupConfig, NameConfig, ViewName,
};
use crate::dns::name::DnsName;

/// A view (`[views.NAME]`): the clients it takes, by source prefix or database network, and the
/// names it answers differently.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewConfig {
    /// The id the XDP program sees (from the name; never 0, the default view).
    pub id: u32,
    /// Hand-written prefixes and, after the database was read, the database networks
    /// `geo` selected (see `geoip`).
    pub sources: Vec<IpNet>,
    /// Names this view answers differently, and how.
    pub names: BTreeMap<DnsName, ViewName>,
    /// Countries, continents and AS numbers whose networks (from `[geoip] database`)
    /// are in this view.
    pub geo: GeoCriteria,
}

impl crate::dns::view_index::ViewSources for ViewConfig {
    fn id(&self) -> u32 {
        self.id
    }
    fn sources(&self) -> &[IpNet] {
        &self.sources
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawView {
    #[serde(default)]
    sources: Vec<Spanned<String>>,
    #[serde(default)]
    source_files: Vec<Spanned<String>>,
    #[serde(default)]
    countries: Vec<Spanned<String>>,
    #[serde(default)]
    continents: Vec<Spanned<String>>,
    #[serde(default)]
    asns: Vec<Spanned<u32>>,
    #[serde(default)]
    names: BTreeMap<Spanned<String>, Spanned<RawViewName>>,
    /// Files of `NAME GROUP[,GROUP…] [all_down=POLICY]` lines (see `name_files`).
    #[serde(default)]
    name_files: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawViewName {
    groups: Spanned<Vec<Spanned<String>>>,
    all_down: Option<Spanned<String>>,
}

fn parse_prefix(text: &str) -> Result<IpNet, String> {
    let net: IpNet = text.trim().parse().map_err(|_| format!("'{}' is not a CIDR prefix", text.trim()))?;
    Ok(net.trunc())
}

/// Reads a file of CIDRs: one per line, `#` starts a comment.
fn read_source_file(path: &Path) -> Result<Vec<IpNet>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.push(parse_prefix(line).map_err(|reason| ConfigError {
            file: path.to_owned(),
            line: i + 1,
            column: 1,
            reason,
        })?);
    }
    Ok(out)
}

/// `[views.X]` tables: prefixes (inline and from CIDR files), geo criteria, and the
/// names each view answers differently; a prefix or criterion in two views, or a view
/// with nothing to select clients by, is refused.
pub(super) fn parse_views(
    raw: BTreeMap<Spanned<String>, Spanned<RawView>>,
    config_dir: &Path,
    groups: &BTreeMap<String, GroupConfig>,
    names: &BTreeMap<DnsName, NameConfig>,
    has_database: bool,
    views_fed: bool,
    at: &At,
) -> Result<BTreeMap<String, ViewConfig>, ConfigError> {
    let mut views = BTreeMap::new();
    // Every country, continent and AS number selects one view.
    let mut geo_owner: BTreeMap<String, String> = BTreeMap::new();
    // Every prefix belongs to one view: the same prefix in two would be a coin toss.
    let mut owner: BTreeMap<IpNet, String> = BTreeMap::new();
    let mut ids: BTreeMap<u32, String> = BTreeMap::new();
    for (name, view) in raw {
        let view_span = view.span();
        let view = view.into_inner();
        if name.get_ref() == "default" {
            // Status, stats and metrics call the view of clients outside every view "default".
            return Err(at(name.span(), "the view name 'default' is reserved for clients in no view".into()));
        }
        let view_name = name.into_inner();
        let mut sources = Vec::new();
        for text in &view.sources {
            sources.push(parse_prefix(text.get_ref()).map_err(|reason| at(text.span(), reason))?);
        }
        for file in &view.source_files {
            let path = config_dir.join(file.get_ref());
            sources.extend(read_source_file(&path)?);
        }
        let geo = view_geo(&view, &view_name, has_database, &mut geo_owner, at)?;
        if sources.is_empty() && geo.is_empty() && !views_fed {
            return Err(at(
                view_span,
                format!("view '{view_name}' has no sources, countries, continents or asns (and no feed says views)"),
            ));
        }
        for net in &sources {
            if let Some(other) = owner.insert(*net, view_name.clone()) {
                if other != view_name {
                    return Err(at(view_span, format!("prefix {net} is in views '{other}' and '{view_name}'")));
                }
            }
        }
        sources.sort();
        sources.dedup();
        let mut view_names = view_names(view.names, &view_name, groups, names, at)?;
        for file in &view.name_files {
            let path = config_dir.join(file.get_ref());
            super::name_files::read_view_names(&path, &view_name, groups, names, &mut view_names)?;
        }
        let id = view_id(&view_name);
        if let Some(other) = ids.insert(id, view_name.clone()) {
            return Err(at(view_span, format!("views '{other}' and '{view_name}' share an id; rename one")));
        }
        views.insert(view_name, ViewConfig { id, sources, names: view_names, geo });
    }
    Ok(views)
}

/// A view's `countries` (ISO 3166-1 alpha-2), `continents` and `asns` (not 0, RFC 7607);
/// each may select one view only (`geo_owner`: what → view), and needs `[geoip]`.
fn view_geo(
    view: &RawView,
    view_name: &str,
    has_database: bool,
    geo_owner: &mut BTreeMap<String, String>,
    at: &At,
) -> Result<GeoCriteria, ConfigError> {
    let mut geo = GeoCriteria::default();
    let mut claim = |what: String, span: std::ops::Range<usize>| -> Result<(), ConfigError> {
        if !has_database {
            return Err(at(span, format!("{what} needs a database: set [geoip] database")));
        }
        match geo_owner.insert(what.clone(), view_name.to_string()) {
            Some(other) if other != view_name => {
                Err(at(span, format!("{what} is in views '{other}' and '{view_name}'")))
            }
            _ => Ok(()),
        }
    };
    for code in &view.countries {
        let upper = code.get_ref().to_ascii_uppercase();
        if !is_country(&upper) {
            return Err(at(code.span(), format!("'{}' is not an ISO 3166-1 alpha-2 country code", code.get_ref())));
        }
        claim(format!("country {upper}"), code.span())?;
        geo.countries.insert(upper);
    }
    for code in &view.continents {
        let upper = code.get_ref().to_ascii_uppercase();
        if !CONTINENTS.contains(&upper.as_str()) {
            return Err(at(
                code.span(),
                format!("'{}' is not a continent code ({})", code.get_ref(), CONTINENTS.join(", ")),
            ));
        }
        claim(format!("continent {upper}"), code.span())?;
        geo.continents.insert(upper);
    }
    for asn in &view.asns {
        if *asn.get_ref() == 0 {
            return Err(at(asn.span(), "AS number 0 is reserved (RFC 7607)".into()));
        }
        claim(format!("AS{}", asn.get_ref()), asn.span())?;
        geo.asns.insert(*asn.get_ref());
    }
    Ok(geo)
}

/// A view's `[views.X.names]`: each a name of `[names]`, with known groups (not none) and
/// an `all_down` policy (default: the name's own), none twice.
fn view_names(
    raw: BTreeMap<Spanned<String>, Spanned<RawViewName>>,
    view_name: &str,
    groups: &BTreeMap<String, GroupConfig>,
    names: &BTreeMap<DnsName, NameConfig>,
    at: &At,
) -> Result<BTreeMap<DnsName, ViewName>, ConfigError> {
    let mut view_names = BTreeMap::new();
    for (dns, entry) in raw {
        let span = dns.span();
        let text = dns.into_inner();
        let dns_name = DnsName::parse(&text).map_err(|reason| at(span.clone(), format!("name '{text}': {reason}")))?;
        if !names.contains_key(&dns_name) {
            return Err(at(span, format!("view '{view_name}' names '{text}', which is not in [names]")));
        }
        let entry = entry.into_inner();
        let list_span = entry.groups.span();
        let mut chosen = Vec::new();
        for group in entry.groups.into_inner() {
            if !groups.contains_key(group.get_ref()) {
                return Err(at(group.span(), format!("unknown group '{}'", group.get_ref())));
            }
            chosen.push(group.into_inner());
        }
        if chosen.is_empty() {
            return Err(at(list_span, "groups must not be empty".into()));
        }
        let all_down = match &entry.all_down {
            Some(policy) => parse_all_down(policy, groups, at)?,
            None => match &names[&dns_name].source {
                super::NameSource::Groups { all_down, .. } => all_down.clone(),
                super::NameSource::Static { .. } => AllDown::ServeAll,
            },
        };
        if view_names.insert(dns_name, ViewName { groups: chosen, all_down }).is_some() {
            return Err(at(span, format!("name '{text}' is given twice in view '{view_name}'")));
        }
    }
    Ok(view_names)
}

/// A view's id comes from its name, so a reload that adds or removes other views
/// never renumbers it while the XDP maps are being updated.
pub(super) fn view_id(name: &str) -> u32 {
    let hash = name.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193));
    hash.max(1)
}

/// The directory relative source files are read from.
pub(super) fn config_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}
