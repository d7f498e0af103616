//! Views by country, continent and AS number: a MaxMind DB file (GeoLite2/GeoIP2
//! Country or ASN, DB-IP lite, the ip-location-db builds) read with the `maxminddb`
//! crate and expanded into source prefixes per view, so the XDP program, the ECS scope
//! rule and PowerDNS see plain prefixes (longest match, as for hand-written sources).
//!
//! Precedence, for an address both a database network and a hand-written source cover:
//! the hand-written source wins (database networks inside any view's `sources` are
//! dropped). Between views, a network goes to the view that lists its AS number, else
//! its country, else its continent; one value in two views is a config error.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::Path,
};

use ipnet::IpNet;
use serde::Deserialize;

/// The seven continent codes MaxMind and DB-IP use.
pub(crate) const CONTINENTS: [&str; 7] = ["AF", "AN", "AS", "EU", "NA", "OC", "SA"];

/// What a view takes from the database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GeoCriteria {
    /// ISO 3166-1 alpha-2 codes, upper case.
    pub countries: BTreeSet<String>,
    /// Continent codes (`CONTINENTS`).
    pub continents: BTreeSet<String>,
    pub asns: BTreeSet<u32>,
}

impl GeoCriteria {
    pub fn is_empty(&self) -> bool {
        self.countries.is_empty() && self.continents.is_empty() && self.asns.is_empty()
    }
}

/// Why a database network is in a view (for `ctl explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GeoMatch {
    Country(String),
    Continent(String),
    Asn(u32),
}

impl std::fmt::Display for GeoMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GeoMatch::Country(c) => write!(f, "country {c}"),
            GeoMatch::Continent(c) => write!(f, "continent {c}"),
            GeoMatch::Asn(a) => write!(f, "AS{a}"),
        }
    }
}

/// The database as read: its metadata and every network it put into a view.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoMapping {
    pub path: std::path::PathBuf,
    /// The metadata's `database_type`, e.g. "GeoLite2-Country".
    pub database_type: String,
    /// The metadata's `build_epoch` (Unix seconds).
    pub build_epoch: u64,
    /// Networks in the file (both families).
    pub networks: usize,
    /// Per view, the database networks it was given (after hand-written sources won).
    pub prefixes: BTreeMap<String, Vec<IpNet>>,
    /// Why each of those networks is where it is.
    pub origins: HashMap<IpNet, GeoMatch>,
}

/// The fields primwatch reads from a record, in the layouts the common databases use:
/// MaxMind and DB-IP (`country.iso_code`, `continent.code`), ip-location-db
/// (`country_code`), ASN databases (`autonomous_system_number`).
#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<Coded<'a>>,
    #[serde(borrow, default)]
    continent: Option<Coded<'a>>,
    #[serde(borrow, default)]
    country_code: Option<&'a str>,
    #[serde(default)]
    autonomous_system_number: Option<u32>,
}

#[derive(Deserialize)]
struct Coded<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

/// Reads the database at `path` and gives each view in `wanted` the networks its
/// criteria select, less those inside any prefix of `hand_written`.
///
/// Errors (as text, for the config error that names `geoip.database`): the file cannot
/// be read, is not a MaxMind DB (truncated, corrupt), or holds none of the fields the
/// views ask for (e.g. countries from an ASN database).
pub(crate) fn expand(
    path: &Path,
    wanted: &BTreeMap<String, GeoCriteria>,
    hand_written: &[IpNet],
) -> Result<GeoMapping, String> {
    let reader = maxminddb::Reader::open_readfile(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Which view each value belongs to (one value in two views is refused earlier).
    let mut by_asn = HashMap::new();
    let mut by_country = HashMap::new();
    let mut by_continent = HashMap::new();
    for (view, criteria) in wanted {
        by_asn.extend(criteria.asns.iter().map(|a| (*a, view.as_str())));
        by_country.extend(criteria.countries.iter().map(|c| (c.clone(), view.as_str())));
        by_continent.extend(criteria.continents.iter().map(|c| (c.clone(), view.as_str())));
    }
    let covered = Covered::new(hand_written);
    let mut mapping = GeoMapping {
        path: path.to_path_buf(),
        database_type: reader.metadata().database_type.clone(),
        build_epoch: reader.metadata().build_epoch,
        networks: 0,
        prefixes: wanted.keys().map(|v| (v.clone(), Vec::new())).collect(),
        origins: HashMap::new(),
    };
    let (mut seen_country, mut seen_continent, mut seen_asn) = (false, false, false);
    let networks = reader.networks(Default::default()).map_err(|e| format!("{}: {e}", path.display()))?;
    for item in networks {
        let item = item.map_err(|e| format!("{}: corrupt: {e}", path.display()))?;
        mapping.networks += 1;
        let network = item.network().map_err(|e| format!("{}: corrupt: {e}", path.display()))?;
        let Ok(net) = IpNet::new(network.ip(), network.prefix()) else { continue };
        let Some(record) = item.decode::<Record>().map_err(|e| format!("{}: corrupt record: {e}", path.display()))?
        else {
            continue;
        };
        let country = record.country.as_ref().and_then(|c| c.iso_code).or(record.country_code);
        let continent = record.continent.as_ref().and_then(|c| c.code);
        seen_country |= country.is_some();
        seen_continent |= continent.is_some();
        seen_asn |= record.autonomous_system_number.is_some();
        let found = record
            .autonomous_system_number
            .and_then(|a| by_asn.get(&a).map(|v| (*v, GeoMatch::Asn(a))))
            .or_else(|| country.and_then(|c| by_country.get(c).map(|v| (*v, GeoMatch::Country(c.to_string())))))
            .or_else(|| continent.and_then(|c| by_continent.get(c).map(|v| (*v, GeoMatch::Continent(c.to_string())))));
        let Some((view, why)) = found else { continue };
        if covered.contains(&net) {
            continue;
        }
        mapping.prefixes.get_mut(view).expect("every wanted view has a list").push(net);
        mapping.origins.insert(net, why);
    }
    let missing = |asked: bool, seen: bool, what: &str| -> Result<(), String> {
        if asked && !seen {
            return Err(format!(
                "{} ({}) has no {what} data; views ask for {what}s",
                path.display(),
                mapping.database_type
            ));
        }
        Ok(())
    };
    missing(!by_country.is_empty(), seen_country, "country")?;
    missing(!by_continent.is_empty(), seen_continent, "continent")?;
    missing(!by_asn.is_empty(), seen_asn, "AS number")?;
    Ok(mapping)
}

/// Hand-written prefixes, for "is this network inside one of them?" in one hash
/// probe per prefix length in use.
struct Covered {
    lengths: Vec<(bool, u8)>,
    nets: HashSet<IpNet>,
}

impl Covered {
    fn new(prefixes: &[IpNet]) -> Covered {
        let mut lengths: Vec<(bool, u8)> = prefixes.iter().map(|p| (p.addr().is_ipv6(), p.prefix_len())).collect();
        lengths.sort_unstable();
        lengths.dedup();
        Covered { lengths, nets: prefixes.iter().map(|p| p.trunc()).collect() }
    }

    fn contains(&self, net: &IpNet) -> bool {
        let v6 = net.addr().is_ipv6();
        self.lengths
            .iter()
            .filter(|(f, len)| *f == v6 && *len <= net.prefix_len())
            .any(|(_, len)| IpNet::new(net.addr(), *len).map(|n| self.nets.contains(&n.trunc())).unwrap_or(false))
    }
}

/// Is `code` an ISO 3166-1 alpha-2 country code?
pub(crate) fn is_country(code: &str) -> bool {
    isocountry::CountryCode::for_alpha2(code).is_ok()
}

/// What tells a replaced file from the one read before: inode, size, mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp(u64, u64, i64, i64);

impl FileStamp {
    pub(crate) fn of(path: &std::path::Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp(m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
    }
}
