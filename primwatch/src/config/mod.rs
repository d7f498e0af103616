//! Stage 1 of the data path: the TOML config, parsed and validated.
//!
//! Every error names the file, the line and column, and the reason, so an operator can
//! fix a rejected config without guessing; nothing is attached or written before a
//! config passed validation.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Range,
    path::{Path, PathBuf},
};

use primwatch_common::MAX_RECORDS;
use serde::Deserialize;
use toml::Spanned;

use crate::{dns::name::DnsName, sys::local_socket::Access};

mod compile;
mod cookies;
mod dnstap;
mod error;
mod feeds;
mod fleet;
pub(crate) mod geoip;
mod health;
pub(crate) mod limits;
mod name_files;
mod powerdns;
pub mod pushed;
mod resolver;
mod rrl;
pub(crate) mod slow_path;
pub(crate) mod target_addresses;
mod views;
mod zones;
pub use dnstap::{DnstapConfig, DnstapOutput};
pub use error::ConfigError;
use error::{line_column, At};
pub use feeds::{FeedConfig, FeedKinds, FeedSource, OnStale, Token, DEFAULT_FEED_MAX_BYTES};
pub use health::{
    Calculated, CheckConfig, CheckKind, GroupConfig, HttpCheck, NamedTarget, Policy, Quorum, TargetConfig,
    DEFAULT_INTERVAL, DEFAULT_RISE_FALL, DEFAULT_TIMEOUT, MAX_WEIGHT, NAMED_MEMBER_SEPARATOR,
};
pub use views::ViewConfig;
use zones::RawZone;
pub use zones::{Dnssec, NegativeAnswers, ZoneConfig};

pub use cookies::{parse_cookie_secret, CookieConfig};
use cookies::{parse_cookies, RawCookies};
use fleet::{parse_fleet, RawFleet};
pub use fleet::{FleetConfig, FleetTls};
use powerdns::{parse_powerdns, RawPowerDns};
pub use powerdns::{
    PowerDnsConfig, DEFAULT_POWERDNS_GROUP, DEFAULT_POWERDNS_IDLE_TIMEOUT, DEFAULT_POWERDNS_MAX_CONNECTIONS,
};
pub use resolver::ResolverConfig;
use resolver::{parse_resolver, RawResolver};
pub use rrl::RrlConfig;
use rrl::{parse_rrl, RawRrl};

/// `server.pin_dir` unless set: where the maps and XDP links are pinned (on bpffs).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/primwatch";
/// `server.control_socket` unless set: the Unix socket `primwatch ctl` connects to.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/primwatch/ctl.sock";
/// `server.state_file` unless set: where overrides and holds are saved across restarts.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/primwatch/state.json";
/// `server.default_ttl` unless set: the TTL, in seconds, of a name that sets no `ttl`.
pub const DEFAULT_TTL: u32 = 30;
/// The user exec checks and hooks run as unless `server.exec_user` names another.
pub const DEFAULT_EXEC_USER: &str = "primwatch";
/// RFC 2181 §8: TTLs are 31-bit values.
pub const MAX_TTL: u32 = i32::MAX as u32;

/// `server.xdp_mode`: how the XDP program is attached; default `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode where the driver supports it, else generic (SKB) mode.
    #[default]
    Auto,
    /// `native`: driver mode only; attaching fails where the driver lacks it.
    Native,
    /// `skb`: generic (SKB) mode, whatever the driver supports.
    Skb,
}

/// What a stopping controller does with the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnStop {
    /// Leave it attached, answering the last answers, for the next run to adopt: a
    /// restart or upgrade loses no query. `primwatch detach` takes it off.
    #[default]
    Keep,
    /// Detach and unpin: queries go to the DNS server behind.
    Detach,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// `server.interfaces`: the interfaces XDP is attached to (at least one, none twice).
    pub interfaces: Vec<String>,
    /// `server.xdp_mode`: default `auto`.
    pub xdp_mode: XdpMode,
    /// `server.port`: the DNS port XDP answers queries on, 1-65535; default 53.
    pub port: u16,
    /// `server.on_stop`: what a stopping controller does with the XDP program; default `keep`.
    pub on_stop: OnStop,
    /// `server.pin_dir`: where the maps and XDP links are pinned; default `DEFAULT_PIN_DIR`.
    pub pin_dir: PathBuf,
    /// Where `primwatch ctl` connects.
    pub control_socket: PathBuf,
    /// Root only; `server.control_max_connections` at once.
    pub control_access: Access,
    /// Where overrides and holds are saved across restarts.
    pub state_file: PathBuf,
    /// `[checks.X]`: every check, by name.
    pub checks: BTreeMap<String, CheckConfig>,
    /// Targets by name: `[targets.X]` given by address and, after `expand`, every address of one
    /// given by host (`NAME@ADDRESS`).
    pub targets: BTreeMap<String, TargetConfig>,
    /// `[groups.X]`: every group, by name; members given by host as of the last `expand`.
    pub groups: BTreeMap<String, GroupConfig>,
    /// Shared: a million names are not copied when a resolved target's addresses
    /// change the targets (`expand`) or a reload compares configs.
    pub names: std::sync::Arc<BTreeMap<DnsName, NameConfig>>,
    /// `[views.X]`: the client views, by name.
    pub views: std::sync::Arc<BTreeMap<String, ViewConfig>>,
    /// Declared zones, by apex. Empty: none declared (DO=1 queries are passed).
    pub zones: BTreeMap<DnsName, ZoneConfig>,
    /// `[hooks]`: commands run on state changes.
    pub hooks: Hooks,
    /// Who exec checks and hooks run as (only resolved when there are any).
    pub exec_user: Option<crate::sys::process::RunAs>,
    /// Checks in flight at once (`server.max_checks_in_flight`; None: derived from the
    /// open-file limit, see `checks::budget_size`).
    pub max_checks_in_flight: Option<usize>,
    /// The XDP map sizes fixed at load (`server.max_names`, `server.max_record_sets`,
    /// `rrl.table_size`).
    pub capacities: MapCapacities,
    /// Where to serve the PowerDNS remote backend (pdns-backend-remote's Unix
    /// connector), if anywhere.
    pub powerdns: Option<PowerDnsConfig>,
    /// Where to serve Prometheus metrics (GET /metrics), if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `views`' prefixes by length, with their ECS scopes: built once per load, shared
    /// by the XDP map writer, the PowerDNS backend and explain.
    pub view_index: std::sync::Arc<crate::dns::view_index::ViewIndex>,
    /// `[geoip] database` as read: its metadata and the networks it put into views.
    pub geoip: Option<std::sync::Arc<geoip::GeoMapping>>,
    /// Targets given by DNS name (`host`), by target name; `targets` and `groups` hold
    /// their addresses as of the last resolution (see `expand`).
    pub named_targets: BTreeMap<String, NamedTarget>,
    /// How and how often `named_targets` are resolved.
    pub resolver: ResolverConfig,
    /// What was written, before `expand`.
    declared: std::sync::Arc<Declared>,
    /// `[rrl]`: response rate limiting in XDP; None: off.
    pub rrl: Option<RrlConfig>,
    /// `[slow_path]`: budgets for the queries XDP passes (on by default).
    pub slow_path: slow_path::SlowPathConfig,
    /// `[cookies]`: DNS server cookies in XDP (on unless turned off).
    pub cookies: CookieConfig,
    /// `[fleet]`: operator state shared with other nodes through etcd; None: alone.
    pub fleet: Option<FleetConfig>,
    /// `[feeds.X]`: data from the operator's own programs, by feed name.
    pub feeds: BTreeMap<String, FeedConfig>,
    /// `server.default_ttl`: the TTL of a name that sets none (feeds' names too).
    pub default_ttl: u32,
    /// The calculated targets, each after the calculated targets it reads.
    pub calculated_order: Vec<String>,
    /// `[sticky]`: the client prefix lengths the `sticky` policy keys on.
    pub sticky: StickyConfig,
    /// `server.nsid`: the id XDP's replies carry for a query with an NSID option (RFC
    /// 5001), 1 to MAX_NSID_LEN bytes; empty: off (such a query goes to the DNS server).
    pub nsid: Vec<u8>,
    /// `[dnstap]`: the log of XDP's answers; None: off.
    pub dnstap: Option<DnstapConfig>,
    /// The names and views as the config (and the files it names) wrote them, before
    /// feeds added theirs (`feeds::overlay`); the same maps as `names` and `views`
    /// until a feed adds any.
    written: (SharedNames, SharedViews),
}

/// `[sticky]`: how much of a client's address the `sticky` policy keys on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StickyConfig {
    /// `ipv4_prefix_len`: 1 to 32, default 24.
    pub ipv4_prefix_len: u8,
    /// `ipv6_prefix_len`: 1 to 128, default 56.
    pub ipv6_prefix_len: u8,
}

impl Default for StickyConfig {
    fn default() -> Self {
        StickyConfig { ipv4_prefix_len: 24, ipv6_prefix_len: 56 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSticky {
    ipv4_prefix_len: Option<Spanned<u32>>,
    ipv6_prefix_len: Option<Spanned<u32>>,
}

fn parse_sticky(raw: Option<RawSticky>, at: &At) -> Result<StickyConfig, ConfigError> {
    let Some(raw) = raw else { return Ok(StickyConfig::default()) };
    let length = |value: &Option<Spanned<u32>>, key: &str, max: u32, default: u8| match value {
        None => Ok(default),
        Some(v) if (1..=max).contains(v.get_ref()) => Ok(*v.get_ref() as u8),
        Some(v) => Err(at(v.span(), format!("sticky.{key} must be between 1 and {max}"))),
    };
    let defaults = StickyConfig::default();
    Ok(StickyConfig {
        ipv4_prefix_len: length(&raw.ipv4_prefix_len, "ipv4_prefix_len", 32, defaults.ipv4_prefix_len)?,
        ipv6_prefix_len: length(&raw.ipv6_prefix_len, "ipv6_prefix_len", 128, defaults.ipv6_prefix_len)?,
    })
}

/// `server.nsid`: the name server identifier XDP's replies carry when a query asks
/// (RFC 5001), as bytes: printable ASCII as written, or `0x` and an even number of hex
/// digits for any bytes; 1 to MAX_NSID_LEN bytes. None: empty (off).
fn parse_nsid(raw: Option<&Spanned<String>>, at: &At) -> Result<Vec<u8>, ConfigError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let text = raw.get_ref();
    let refuse = |why: &str| at(raw.span(), format!("server.nsid {why}"));
    let bytes = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refuse("after 0x must be an even number of hex digits"));
        }
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits")).collect()
    } else {
        if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(refuse("must be printable ASCII; write other bytes as 0x and hex digits"));
        }
        text.as_bytes().to_vec()
    };
    if bytes.is_empty() || bytes.len() > primwatch_common::MAX_NSID_LEN {
        return Err(refuse(&format!("must be 1 to {} bytes", primwatch_common::MAX_NSID_LEN)));
    }
    Ok(bytes)
}

/// Names by name, shared between configs (a million are not copied).
type SharedNames = std::sync::Arc<BTreeMap<DnsName, NameConfig>>;
/// Views by name, shared between configs.
type SharedViews = std::sync::Arc<BTreeMap<String, ViewConfig>>;

/// Targets with an address, and each group's members, as written.
#[derive(Debug)]
struct Declared {
    targets: BTreeMap<String, TargetConfig>,
    members: BTreeMap<String, Vec<String>>,
}

/// Commands run on state changes (keepalived's notify, Murakumo's on-activate).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hooks {
    /// Run on every target or group state change, with PRIMWATCH_KIND (target|group),
    /// PRIMWATCH_NAME, PRIMWATCH_OLD_STATE, PRIMWATCH_NEW_STATE (up|down) and
    /// PRIMWATCH_REASON in its environment.
    pub on_change: Option<Vec<String>>,
    /// A hook still running after this long is killed.
    pub timeout: std::time::Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHooks {
    on_change: Option<Spanned<Vec<String>>>,
    timeout: Option<Spanned<String>>,
}

/// Hands memory freed inside the heap back to the kernel. Parsing a big config (the
/// TOML tree of 100,000s of tables with their spans) frees several times what the
/// config keeps, which glibc would otherwise keep resident for good.
pub fn release_freed_memory() {
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// One served name (`[names."NAME"]`, or a line of a name file): its TTL and where its
/// addresses come from.
#[derive(Debug, Clone, PartialEq)]
pub struct NameConfig {
    /// `ttl` in seconds, at most `MAX_TTL`; default `server.default_ttl`.
    pub ttl: u32,
    /// `groups` (with `all_down`), or the fixed `a` and `aaaa` addresses.
    pub source: NameSource,
}

/// How a view answers one name: its own groups, in priority order, and all-down policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewName {
    /// `groups`: the groups the view answers the name from (at least one).
    pub groups: Vec<String>,
    /// `all_down`; default: the name's own policy (serve-all for a name with fixed addresses).
    pub all_down: AllDown,
}

/// What a (name, view)'s records depend on besides health: its TTL and where its
/// addresses come from. Every (name, view) with the same spec answers from the same
/// two record sets (A and AAAA), written once per change however many names use them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SetSpec {
    /// The records' TTL, in seconds.
    pub ttl: u32,
    /// Where the addresses come from.
    pub source: NameSource,
}

impl Config {
    /// The spec of `name` in the default view.
    pub fn set_spec(name: &NameConfig) -> SetSpec {
        SetSpec { ttl: name.ttl, source: name.source.clone() }
    }

    /// The spec of `name` in a view that answers it from `view`'s groups.
    pub fn view_set_spec(name: &NameConfig, view: &ViewName) -> SetSpec {
        SetSpec {
            ttl: name.ttl,
            source: NameSource::Groups { groups: view.groups.clone(), all_down: view.all_down.clone() },
        }
    }

    /// Record sets the config needs in XDP: two (A and AAAA) per distinct spec.
    pub fn record_sets(&self) -> usize {
        // The specs by reference (a million names must not mean a million clones): equal
        // exactly when the `SetSpec`s `records::plan_names` builds are equal.
        type SpecRef<'a> = (u32, Option<&'a NameSource>, &'a [String], Option<&'a AllDown>);
        fn of_name(name: &NameConfig) -> SpecRef<'_> {
            match &name.source {
                NameSource::Groups { groups, all_down } => (name.ttl, None, groups, Some(all_down)),
                fixed => (name.ttl, Some(fixed), &[], None),
            }
        }
        let mut specs: std::collections::HashSet<SpecRef> = self.names.values().map(of_name).collect();
        for view in self.views.values() {
            for (name, view_name) in &view.names {
                specs.insert((self.names[name].ttl, None, &view_name.groups, Some(&view_name.all_down)));
            }
        }
        2 * specs.len()
    }

    /// The most RRSIG records XDP can need at once for the signed zones: per exact
    /// (name, view) entry and family, one RRset — or one per start record when a
    /// group's `max_answers` is below its members of that family (a reply then carries
    /// a rotating subset, each its own RRset).
    pub fn signatures_needed(&self) -> usize {
        if !self.zones.values().any(|z| matches!(z.dnssec, Dnssec::Sign(_))) {
            return 0;
        }
        let rrsets = |source: &NameSource| -> usize {
            match source {
                NameSource::Static { a, aaaa } => usize::from(!a.is_empty()) + usize::from(!aaaa.is_empty()),
                NameSource::Groups { groups, .. } => self.group_rrsets(groups),
            }
        };
        let mut total = 0;
        for (name, config) in self.names.iter() {
            if name.is_wildcard() || self.signer_of(name).is_none() {
                continue;
            }
            total += rrsets(&config.source);
            for view in self.views.values() {
                if let Some(view_name) = view.names.get(name) {
                    total += self.group_rrsets(&view_name.groups);
                }
            }
        }
        total
    }

    /// RRsets (both families) answers from `groups` can come as, at most.
    fn group_rrsets(&self, groups: &[String]) -> usize {
        let mut total = 0;
        for v6 in [false, true] {
            // Per group: members of this family (a target given by host may resolve
            // to up to MAX_RECORDS), and whether a reply carries fewer than that.
            let mut members = 0;
            let mut subsets = false;
            for group in groups.iter().filter_map(|g| self.groups.get(g)) {
                let here: usize = group
                    .members
                    .iter()
                    .map(|m| match self.targets.get(m) {
                        Some(t) => usize::from(t.address.is_ipv6() == v6),
                        None => MAX_RECORDS,
                    })
                    .sum();
                members += here;
                subsets |= group.max_answers < here;
            }
            let members = members.min(MAX_RECORDS);
            total += if members == 0 {
                0
            } else if subsets {
                members
            } else {
                1
            };
        }
        total
    }

    /// (name, view) entries of XDP's names map: every name, plus one per name a view
    /// answers on its own.
    pub fn name_entries(&self) -> usize {
        self.names.len() + self.views.values().map(|v| v.names.len()).sum::<usize>()
    }
}

/// Sizes of the XDP maps that are fixed when the program is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapCapacities {
    /// (name, view) entries (`server.max_names`).
    pub names: u32,
    /// Record sets (`server.max_record_sets`).
    pub record_sets: u32,
    /// Client prefixes RRL tracks (`rrl.table_size`).
    pub rrl_table: u32,
    /// RRSIG records of signed zones XDP holds (`server.max_signatures`).
    pub signatures: u32,
    /// Names of the zones XDP answers negatively for (`server.max_zone_names`).
    pub zone_names: u32,
}

impl Default for MapCapacities {
    fn default() -> Self {
        MapCapacities {
            names: primwatch_common::NAME_STATS_SLOTS as u32,
            record_sets: primwatch_common::DEFAULT_RECORD_SETS as u32,
            rrl_table: RrlConfig::DEFAULT_TABLE_SIZE,
            signatures: primwatch_common::NAME_STATS_SLOTS as u32,
            zone_names: MapCapacities::DEFAULT_ZONE_NAMES,
        }
    }
}

impl MapCapacities {
    /// Most `server.max_names`: 16,777,216.
    pub const MAX_NAMES: u32 = 1 << 24;
    /// Most `server.max_record_sets`: 1,048,576 (each takes two 2-KB slots).
    pub const MAX_RECORD_SETS: u32 = 1 << 20;
    /// Most `server.max_signatures`: 16,777,216 (about 300 bytes each, allocated as
    /// signatures are made).
    pub const MAX_SIGNATURES: u32 = 1 << 24;
    /// Default `server.max_zone_names`: 1,048,576 (about 300 bytes each, allocated as
    /// zones are transferred).
    pub const DEFAULT_ZONE_NAMES: u32 = 1 << 20;
    /// Most `server.max_zone_names`: 16,777,216.
    pub const MAX_ZONE_NAMES: u32 = 1 << 24;
}

/// Where a name's addresses come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NameSource {
    /// Fixed addresses, always served.
    Static {
        /// `a`: IPv4 addresses, none twice, at most `MAX_RECORDS`.
        a: Vec<Ipv4Addr>,
        /// `aaaa`: IPv6 addresses, none twice, at most `MAX_RECORDS`.
        aaaa: Vec<Ipv6Addr>,
    },
    /// Health-checked groups, tried in priority order.
    Groups {
        /// `groups`: group names, none twice, at least one.
        groups: Vec<String>,
        /// `all_down`: what to answer when no group qualifies; default serve-all.
        all_down: AllDown,
    },
}

/// What a name answers when none of its groups has enough eligible members.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AllDown {
    /// Every member of the name's groups, health ignored (fail open). The default: a
    /// name that resolves to possibly-dead backends degrades; one that resolves to
    /// nothing is an outage for every client.
    ServeAll,
    /// Every member of this group, health ignored (a sorry server, another region).
    Backup(String),
    /// NOERROR with no records.
    NoData,
    /// No answer from XDP: the query goes to the DNS server behind it.
    Pass,
}

// The file as written. Spans are kept where validation may need to point at a value.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Spanned<RawServer>,
    #[serde(default)]
    checks: BTreeMap<Spanned<String>, Spanned<health::RawCheck>>,
    #[serde(default)]
    targets: BTreeMap<Spanned<String>, Spanned<health::RawTarget>>,
    #[serde(default)]
    groups: BTreeMap<Spanned<String>, Spanned<health::RawGroup>>,
    #[serde(default)]
    names: BTreeMap<Spanned<String>, Spanned<RawName>>,
    #[serde(default)]
    views: BTreeMap<Spanned<String>, Spanned<views::RawView>>,
    #[serde(default)]
    zones: BTreeMap<Spanned<String>, Spanned<RawZone>>,
    hooks: Option<RawHooks>,
    powerdns: Option<RawPowerDns>,
    metrics: Option<RawMetrics>,
    resolver: Option<RawResolver>,
    rrl: Option<Spanned<RawRrl>>,
    slow_path: Option<slow_path::RawSlowPath>,
    cookies: Option<RawCookies>,
    geoip: Option<RawGeoip>,
    fleet: Option<RawFleet>,
    /// Files of names served from groups, one per line (see `read_name_file`).
    #[serde(default)]
    name_files: Vec<Spanned<PathBuf>>,
    #[serde(default)]
    feeds: BTreeMap<Spanned<String>, Spanned<feeds::RawFeed>>,
    sticky: Option<RawSticky>,
    dnstap: Option<Spanned<dnstap::RawDnstap>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeoip {
    database: Spanned<PathBuf>,
}

/// Reads `[geoip] database` and adds the networks each view's countries, continents and
/// AS numbers select to its sources (see `geoip`).
fn read_geoip(
    raw: &RawGeoip,
    config_path: &Path,
    views: &mut BTreeMap<String, ViewConfig>,
    at: &error::At,
) -> Result<geoip::GeoMapping, ConfigError> {
    let path = views::config_dir(config_path).join(raw.database.get_ref());
    let wanted = views.iter().filter(|(_, v)| !v.geo.is_empty()).map(|(n, v)| (n.clone(), v.geo.clone())).collect();
    let hand_written: Vec<ipnet::IpNet> = views.values().flat_map(|v| v.sources.iter().copied()).collect();
    let mapping = geoip::expand(&path, &wanted, &hand_written)
        .map_err(|reason| at(raw.database.span(), format!("geoip.database: {reason}")))?;
    for (view, prefixes) in &mapping.prefixes {
        let sources = &mut views.get_mut(view).expect("wanted views exist").sources;
        sources.extend(prefixes.iter().copied());
        sources.sort();
        sources.dedup();
    }
    Ok(mapping)
}

/// `server.control_max_connections` unless set: `ctl` connections served at once (1 to 1024 when set).
pub const DEFAULT_CONTROL_MAX_CONNECTIONS: usize = 16;
/// A `ctl` client sends its one request at once.
pub const CONTROL_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    /// e.g. "127.0.0.1:9153"
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    interfaces: Spanned<Vec<Spanned<String>>>,
    #[serde(default)]
    xdp_mode: XdpMode,
    #[serde(default = "default_port")]
    port: Spanned<u16>,
    #[serde(default)]
    on_stop: OnStop,
    pin_dir: Option<PathBuf>,
    control_socket: Option<PathBuf>,
    control_max_connections: Option<Spanned<usize>>,
    max_checks_in_flight: Option<Spanned<usize>>,
    exec_user: Option<Spanned<String>>,
    state_file: Option<PathBuf>,
    default_ttl: Option<Spanned<u32>>,
    max_names: Option<Spanned<u32>>,
    max_record_sets: Option<Spanned<u32>>,
    max_signatures: Option<Spanned<u32>>,
    max_zone_names: Option<Spanned<u32>>,
    nsid: Option<Spanned<String>>,
}

fn default_port() -> Spanned<u16> {
    Spanned::new(0..0, 53)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawName {
    ttl: Option<Spanned<u32>>,
    #[serde(default)]
    a: Vec<Spanned<String>>,
    #[serde(default)]
    aaaa: Vec<Spanned<String>>,
    groups: Option<Spanned<Vec<Spanned<String>>>>,
    all_down: Option<Spanned<String>>,
}

impl Config {
    /// The declared zone `name` lies in: the longest apex at or above it.
    pub fn zone_of(&self, name: &DnsName) -> Option<(&DnsName, &ZoneConfig)> {
        name.closest_zone(&self.zones)
    }

    /// The targets only some of the fleet's nodes check (`TargetConfig::is_sharded`).
    pub fn sharded_targets(&self) -> impl Iterator<Item = &String> {
        self.targets.iter().filter(|(_, target)| target.is_sharded()).map(|(name, _)| name)
    }

    /// Whether XDP answers DO=1 queries for `name`: its zone is declared and unsigned.
    /// With no zones declared, nothing is known to be unsigned, so nothing is.
    pub fn answers_dnssec_ok(&self, name: &DnsName) -> bool {
        matches!(self.zone_of(name), Some((_, ZoneConfig { dnssec: Dnssec::Off, .. })))
    }

    /// (apex, key) of every zone primwatch signs.
    pub fn signed_zones(&self) -> Vec<(DnsName, std::sync::Arc<crate::dns::dnssec::ZoneSigner>)> {
        self.zones
            .iter()
            .filter_map(|(apex, z)| match &z.dnssec {
                Dnssec::Sign(signer) => Some((apex.clone(), signer.clone())),
                _ => None,
            })
            .collect()
    }

    /// The key `name`'s answers are signed with, if its zone is signed by primwatch.
    pub fn signer_of(&self, name: &DnsName) -> Option<&std::sync::Arc<crate::dns::dnssec::ZoneSigner>> {
        match self.zone_of(name) {
            Some((_, ZoneConfig { dnssec: Dnssec::Sign(signer), .. })) => Some(signer),
            _ => None,
        }
    }

    /// How many of the names are wildcards (`*.parent`): XDP skips the wildcard lookup when 0.
    pub fn wildcard_names(&self) -> usize {
        self.names.keys().filter(|n| n.is_wildcard()).count()
    }

    /// The sticky policy's prefix lengths as XDP reads them: (0, 0) when no group is sticky
    /// (the client key is then not computed).
    pub fn sticky_prefixes(&self) -> (u32, u32) {
        match self.groups.values().any(|g| g.policy == Policy::Sticky) {
            true => (self.sticky.ipv4_prefix_len as u32, self.sticky.ipv6_prefix_len as u32),
            false => (0, 0),
        }
    }

    /// The settings only a restart can change (they shape what is attached and pinned,
    /// and the sizes of maps).
    pub fn server_settings_differ(&self, other: &Config) -> Option<&'static str> {
        if self.interfaces != other.interfaces {
            Some("server.interfaces")
        } else if self.xdp_mode != other.xdp_mode {
            Some("server.xdp_mode")
        } else if self.port != other.port {
            Some("server.port")
        } else if self.pin_dir != other.pin_dir {
            Some("server.pin_dir")
        } else if self.control_socket != other.control_socket {
            Some("server.control_socket")
        } else if self.state_file != other.state_file {
            Some("server.state_file")
        } else if self.max_checks_in_flight != other.max_checks_in_flight {
            Some("server.max_checks_in_flight")
        } else if self.capacities.rrl_table != other.capacities.rrl_table {
            // Map sizes are fixed when the program is loaded.
            Some("rrl.table_size")
        } else if self.capacities.names != other.capacities.names {
            Some("server.max_names")
        } else if self.capacities.record_sets != other.capacities.record_sets {
            Some("server.max_record_sets")
        } else if self.capacities.signatures != other.capacities.signatures {
            Some("server.max_signatures")
        } else if self.capacities.zone_names != other.capacities.zone_names {
            Some("server.max_zone_names")
        } else if self.control_access != other.control_access {
            Some("server.control_max_connections")
        } else if self.powerdns != other.powerdns {
            Some("powerdns")
        } else if self.dnstap != other.dnstap {
            // The writer and XDP's sample are set up at start.
            Some("dnstap")
        } else if self.fleet != other.fleet {
            Some("fleet")
        } else if self.metrics_listen != other.metrics_listen {
            Some("metrics.listen")
        } else {
            None
        }
    }

    /// Reads the config file at `path` and parses it (see `parse`); Err: unreadable or invalid.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, e))?;
        let parsed = Config::parse(path, &text);
        drop(text);
        release_freed_memory();
        parsed
    }

    /// Parses and validates `text`, the config file at `path` (errors name it; relative paths in it
    /// are read from its directory), then compiles it (`compile`: users, keys, the view index,
    /// capacities). Err: the first problem found, at its line and column.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let at = |span: Range<usize>, reason: String| {
            let (line, column) = line_column(text, span.start);
            ConfigError { file: path.to_owned(), line, column, reason }
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            // toml's message repeats the position and the source line; keep the reason.
            at(e.span().unwrap_or(0..0), e.message().trim().to_string())
        })?;
        let config_dir = views::config_dir(path);
        let server_span = raw.server.span();
        let server = raw.server.into_inner();
        let interfaces = parse_interfaces(server.interfaces.clone(), &at)?;
        let port_span = server.port.span();
        let port = *server.port.get_ref();
        if port == 0 {
            let span = if port_span.is_empty() { server_span.clone() } else { port_span };
            return Err(at(span, "server.port must be between 1 and 65535".into()));
        }
        let default_ttl = match server.default_ttl.clone() {
            Some(ttl) => check_ttl(ttl, &at)?,
            None => DEFAULT_TTL,
        };
        let feeds = feeds::parse_feeds(raw.feeds, &config_dir, &at)?;
        let health =
            health::parse_tables(raw.checks, raw.targets, raw.groups, raw.fleet.is_some(), &feeds, &config_dir, &at)?;
        let resolver = parse_resolver(raw.resolver, &at)?;
        let rrl = raw.rrl.map(|r| parse_rrl(r, &at)).transpose()?;
        let slow_path =
            slow_path::parse(raw.slow_path, rrl.as_ref().map(|r| r.exempt.as_slice()).unwrap_or_default(), &at)?;
        let (capacities, capacity_spans) = parse_capacities(&server, rrl.as_ref(), &at)?;
        let cookies = parse_cookies(raw.cookies, &config_dir, &at)?;
        let fleet = raw.fleet.map(|f| parse_fleet(f, &config_dir, &at)).transpose()?;

        let (mut names, name_spans) = parse_names(raw.names, &health.groups, default_ttl, &at)?;
        let zones = zones::parse_zones(raw.zones, &config_dir, &at)?;
        // After the zones: a name file's name outside them is reported at its own line.
        for file in &raw.name_files {
            name_files::read_names(&config_dir.join(file.get_ref()), &health.groups, &zones, default_ttl, &mut names)?;
        }
        check_names_in_zones(&names, &name_spans, &zones, &at)?;
        let views_fed = feeds.values().any(|f| f.kinds.views);
        let mut views =
            views::parse_views(raw.views, &config_dir, &health.groups, &names, raw.geoip.is_some(), views_fed, &at)?;
        let geoip = match &raw.geoip {
            Some(geoip) => Some(std::sync::Arc::new(read_geoip(geoip, path, &mut views, &at)?)),
            None => None,
        };
        let hooks = parse_hooks(raw.hooks, &at)?;
        let (max_checks_in_flight, control_access, metrics_listen) =
            parse_operations(&server, raw.metrics.as_ref(), &at)?;
        // Exec checks and hooks run as an unprivileged user, looked up by the compile step.
        let exec_user = match &server.exec_user {
            Some(user) => (user.get_ref().clone(), user.span()),
            None => (DEFAULT_EXEC_USER.to_string(), server_span),
        };
        let health::Tables { checks, targets, named_targets, groups, declared, calculated_order } = health;
        let (names, views) = (std::sync::Arc::new(names), std::sync::Arc::new(views));
        let config = Config {
            interfaces,
            xdp_mode: server.xdp_mode,
            port,
            on_stop: server.on_stop,
            pin_dir: server.pin_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_PIN_DIR)),
            control_socket: server.control_socket.unwrap_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET)),
            control_access,
            state_file: server.state_file.unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_FILE)),
            checks,
            targets,
            groups,
            written: (names.clone(), views.clone()),
            names,
            views,
            zones: BTreeMap::new(),
            hooks,
            exec_user: None,
            max_checks_in_flight,
            powerdns: raw.powerdns.map(|p| parse_powerdns(p, &at)).transpose()?,
            metrics_listen,
            view_index: Default::default(),
            geoip,
            named_targets,
            resolver,
            declared,
            capacities,
            rrl,
            slow_path,
            cookies,
            fleet,
            feeds,
            default_ttl,
            calculated_order,
            sticky: parse_sticky(raw.sticky, &at)?,
            nsid: parse_nsid(server.nsid.as_ref(), &at)?,
            dnstap: raw.dnstap.map(|d| dnstap::parse(d, &config_dir, &at)).transpose()?,
        };
        let geoip_span = raw.geoip.as_ref().map_or(0..0, |g| g.database.span());
        compile::compile(config, compile::Pending { zones, exec_user, capacity_spans, geoip_span }, &at)
    }

    /// The names and views as the config file (and the files it names) wrote them,
    /// before any feed added to them.
    pub fn written_names_and_views(&self) -> (&BTreeMap<DnsName, NameConfig>, &BTreeMap<String, ViewConfig>) {
        (&self.written.0, &self.written.1)
    }

    /// This config with `names` and `views` in place of its own (a feed's data added to
    /// what the config wrote: `feeds::overlay`), checked as `compile` checks a config's
    /// (view prefixes, name hashes, map capacities), with its view index rebuilt.
    /// Err: the reason, with the key to raise.
    pub fn with_names_and_views(
        &self,
        names: BTreeMap<DnsName, NameConfig>,
        views: BTreeMap<String, ViewConfig>,
    ) -> Result<Config, String> {
        let mut config = self.clone();
        config.names = std::sync::Arc::new(names);
        config.views = std::sync::Arc::new(views);
        compile::recheck_names_and_views(&config)?;
        config.view_index = std::sync::Arc::new(crate::dns::view_index::ViewIndex::build(&config.views));
        Ok(config)
    }

    /// This config with the names and views the config file wrote, and nothing a feed
    /// added (shared, not copied).
    pub fn without_fed_data(&self) -> Config {
        let mut config = self.clone();
        (config.names, config.views) = (self.written.0.clone(), self.written.1.clone());
        config.view_index = std::sync::Arc::new(crate::dns::view_index::ViewIndex::build(&config.views));
        config
    }

    /// This config with the targets given by host replaced by the addresses they
    /// resolved to (`resolved`: target name → addresses; missing: none): each address
    /// becomes target `NAME@ADDRESS` with the named target's settings, in every group
    /// that lists the name, in address order. A group keeps at most MAX_RECORDS
    /// addresses per family; the rest are left out and returned, to be logged.
    pub fn expand(&self, resolved: &BTreeMap<String, Vec<IpAddr>>) -> (Config, Vec<String>) {
        let Declared { targets: declared_targets, members: declared_members } = &*self.declared;
        let mut config = self.clone();
        config.targets = declared_targets.clone();
        let mut members_of: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (name, named) in &self.named_targets {
            let mut addresses = resolved.get(name).cloned().unwrap_or_default();
            addresses.sort();
            addresses.dedup();
            for address in addresses {
                let member = format!("{name}{NAMED_MEMBER_SEPARATOR}{address}");
                config.targets.insert(
                    member.clone(),
                    TargetConfig {
                        address,
                        weight: named.weight,
                        checks: named.checks.clone(),
                        preempt: named.preempt,
                        quorum: None,
                        checked_by: None,
                        check_address: None,
                        calculated: None,
                        slow_start: named.slow_start,
                    },
                );
                members_of.entry(name.as_str()).or_default().push(member);
            }
        }
        let mut left_out = Vec::new();
        for (group_name, group) in config.groups.iter_mut() {
            let mut members: Vec<String> = Vec::new();
            for declared in &declared_members[group_name] {
                match members_of.get(declared.as_str()) {
                    Some(expanded) => members.extend(expanded.iter().cloned()),
                    None if declared_targets.contains_key(declared) => members.push(declared.clone()),
                    None => {} // a named target without addresses
                }
            }
            let mut per_family = [0usize; 2];
            members.retain(|m| {
                let family = &mut per_family[config.targets[m].address.is_ipv6() as usize];
                *family += 1;
                let keep = *family <= MAX_RECORDS;
                if !keep {
                    left_out
                        .push(format!("group '{group_name}': {m} (more than {MAX_RECORDS} addresses of its family)"));
                }
                keep
            });
            group.members = members;
        }
        (config, left_out)
    }
}

pub(crate) fn parse_all_down(
    policy: &Spanned<String>,
    groups: &BTreeMap<String, GroupConfig>,
    at: &dyn Fn(Range<usize>, String) -> ConfigError,
) -> Result<AllDown, ConfigError> {
    all_down_from(policy.get_ref(), groups).map_err(|reason| at(policy.span(), reason))
}

/// An all-down policy from its text: serve-all, backup:GROUP, nodata or pass.
pub(crate) fn all_down_from(policy: &str, groups: &BTreeMap<String, GroupConfig>) -> Result<AllDown, String> {
    Ok(match policy {
        "serve-all" => AllDown::ServeAll,
        "nodata" => AllDown::NoData,
        "pass" => AllDown::Pass,
        other => match other.strip_prefix("backup:") {
            Some(group) if groups.contains_key(group) => AllDown::Backup(group.to_string()),
            Some(group) => return Err(format!("all_down names unknown group '{group}'")),
            None => return Err(format!("all_down '{other}' is not one of serve-all, backup:GROUP, nodata, pass")),
        },
    })
}

/// `[names."NAME"]` tables: each name's TTL and where its addresses come from (groups,
/// with an all-down policy, or fixed addresses), checked against the groups; with the
/// span of each name, for errors reported later at its line.
#[allow(clippy::type_complexity)]
fn parse_names(
    raw: BTreeMap<Spanned<String>, Spanned<RawName>>,
    groups: &BTreeMap<String, GroupConfig>,
    default_ttl: u32,
    at: &error::At,
) -> Result<(BTreeMap<DnsName, NameConfig>, BTreeMap<DnsName, Range<usize>>), ConfigError> {
    let mut names = BTreeMap::new();
    let mut name_spans = BTreeMap::new();
    for (name, entry) in raw {
        let name_span = name.span();
        let name_text = name.into_inner();
        let dns_name = DnsName::parse(&name_text)
            .map_err(|reason| at(name_span.clone(), format!("name '{name_text}': {reason}")))?;
        let entry_span = entry.span();
        let entry = entry.into_inner();
        let ttl = match entry.ttl {
            Some(ttl) => check_ttl(ttl, at)?,
            None => default_ttl,
        };
        let a = parse_addresses::<Ipv4Addr>(&entry.a, "IPv4", at)?;
        let aaaa = parse_addresses::<Ipv6Addr>(&entry.aaaa, "IPv6", at)?;
        let source = match entry.groups {
            Some(list) => {
                if !a.is_empty() || !aaaa.is_empty() {
                    return Err(at(
                        list.span(),
                        format!("name '{name_text}' has both groups and fixed addresses; use one"),
                    ));
                }
                let list_span = list.span();
                let mut chosen = Vec::new();
                for group in list.into_inner() {
                    if !groups.contains_key(group.get_ref()) {
                        return Err(at(group.span(), format!("unknown group '{}'", group.get_ref())));
                    }
                    if chosen.contains(group.get_ref()) {
                        return Err(at(group.span(), format!("group '{}' is listed twice", group.get_ref())));
                    }
                    chosen.push(group.into_inner());
                }
                if chosen.is_empty() {
                    return Err(at(list_span, format!("name '{name_text}' lists no groups")));
                }
                let all_down = match &entry.all_down {
                    None => AllDown::ServeAll,
                    Some(policy) => parse_all_down(policy, groups, at)?,
                };
                NameSource::Groups { groups: chosen, all_down }
            }
            None => {
                if let Some(policy) = &entry.all_down {
                    return Err(at(policy.span(), "all_down applies only to names served from groups".into()));
                }
                if a.is_empty() && aaaa.is_empty() {
                    return Err(at(entry_span, format!("name '{name_text}' has no groups and no a or aaaa addresses")));
                }
                NameSource::Static { a, aaaa }
            }
        };
        if names.contains_key(&dns_name) {
            return Err(at(name_span, format!("name '{name_text}' is configured twice (names are case-insensitive)")));
        }
        name_spans.insert(dns_name.clone(), name_span);
        names.insert(dns_name, NameConfig { ttl, source });
    }
    Ok((names, name_spans))
}

/// `[server] max_checks_in_flight` and `control_max_connections`, and `[metrics] listen`.
fn parse_operations(
    server: &RawServer,
    metrics: Option<&RawMetrics>,
    at: &At,
) -> Result<(Option<usize>, Access, Option<std::net::SocketAddr>), ConfigError> {
    let metrics_listen = match metrics {
        Some(m) => Some(m.listen.get_ref().parse().map_err(|_| {
            at(m.listen.span(), format!("metrics.listen '{}' is not an address:port", m.listen.get_ref()))
        })?),
        None => None,
    };
    let max_checks_in_flight = match &server.max_checks_in_flight {
        None => None,
        some => Some(limits::count_or(some, 0, "server.max_checks_in_flight", limits::CHECKS_IN_FLIGHT, at)?),
    };
    let control_access = Access {
        mode: 0o600,
        group: None,
        max_connections: limits::count_or(
            &server.control_max_connections,
            DEFAULT_CONTROL_MAX_CONNECTIONS,
            "server.control_max_connections",
            limits::CONTROL_CONNECTIONS,
            at,
        )?,
        idle_timeout: CONTROL_IDLE_TIMEOUT,
    };
    Ok((max_checks_in_flight, control_access, metrics_listen))
}

/// `[server] interfaces`: at least one, each a valid interface name (at most 15 bytes, no
/// '/' or space), none twice.
fn parse_interfaces(raw: Spanned<Vec<Spanned<String>>>, at: &At) -> Result<Vec<String>, ConfigError> {
    let span = raw.span();
    let mut interfaces = Vec::new();
    for name in raw.into_inner() {
        let span = name.span();
        let name = name.into_inner();
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
            return Err(at(span, format!("'{name}' is not a valid interface name")));
        }
        if interfaces.contains(&name) {
            return Err(at(span, format!("interface '{name}' is listed twice")));
        }
        interfaces.push(name);
    }
    if interfaces.is_empty() {
        return Err(at(span, "server.interfaces must name at least one interface".into()));
    }
    Ok(interfaces)
}

/// `[server] max_names`, `max_record_sets`, `max_signatures`, `max_zone_names` (each 1 to
/// its `MapCapacities::MAX_*`) and `[rrl] table_size`: the XDP maps' sizes, with the
/// spans the compile step's capacity errors point at.
fn parse_capacities(
    server: &RawServer,
    rrl: Option<&RrlConfig>,
    at: &At,
) -> Result<(MapCapacities, compile::CapacitySpans), ConfigError> {
    let capacity = |value: &Option<Spanned<u32>>, default: u32, max: u32, key: &str| match value {
        None => Ok((default, 0..0)),
        Some(v) if (1..=max).contains(v.get_ref()) => Ok((*v.get_ref(), v.span())),
        Some(v) => Err(at(v.span(), format!("server.{key} = {} is out of range: 1..={max}", v.get_ref()))),
    };
    let defaults = MapCapacities::default();
    let (names, names_span) = capacity(&server.max_names, defaults.names, MapCapacities::MAX_NAMES, "max_names")?;
    let (record_sets, record_sets_span) =
        capacity(&server.max_record_sets, defaults.record_sets, MapCapacities::MAX_RECORD_SETS, "max_record_sets")?;
    let (signatures, signatures_span) =
        capacity(&server.max_signatures, defaults.signatures, MapCapacities::MAX_SIGNATURES, "max_signatures")?;
    let (zone_names, _) =
        capacity(&server.max_zone_names, defaults.zone_names, MapCapacities::MAX_ZONE_NAMES, "max_zone_names")?;
    let capacities = MapCapacities {
        zone_names,
        names,
        record_sets,
        signatures,
        rrl_table: rrl.map_or(RrlConfig::DEFAULT_TABLE_SIZE, |r| r.table_size),
    };
    Ok((
        capacities,
        compile::CapacitySpans { names: names_span, record_sets: record_sets_span, signatures: signatures_span },
    ))
}

/// Every name lies in a declared zone, when zones are declared.
fn check_names_in_zones<Z>(
    names: &BTreeMap<DnsName, NameConfig>,
    spans: &BTreeMap<DnsName, Range<usize>>,
    zones: &BTreeMap<DnsName, Z>,
    at: &At,
) -> Result<(), ConfigError> {
    if zones.is_empty() {
        return Ok(());
    }
    match names.keys().find(|name| !zones.keys().any(|apex| name.is_at_or_below(apex))) {
        None => Ok(()),
        Some(name) => {
            let declared: Vec<String> = zones.keys().map(|z| z.to_string()).collect();
            Err(at(
                spans.get(name).cloned().unwrap_or(0..0),
                format!(
                    "name '{name}' lies in no declared zone ({}); declare its zone under [zones]",
                    declared.join(", ")
                ),
            ))
        }
    }
}

/// `[hooks]`: `on_change` (a program, not a shell line; refused if writable by others) and
/// its `timeout` (default 5 s).
fn parse_hooks(raw: Option<RawHooks>, at: &At) -> Result<Hooks, ConfigError> {
    let Some(h) = raw else { return Ok(Hooks { on_change: None, timeout: std::time::Duration::from_secs(5) }) };
    let timeout =
        limits::duration_or(&h.timeout, std::time::Duration::from_secs(5), "hooks.timeout", limits::HOOK_TIMEOUT, at)?;
    let on_change = match h.on_change {
        Some(cmd) if cmd.get_ref().is_empty() => {
            return Err(at(cmd.span(), "hooks.on_change must name a program".into()))
        }
        Some(cmd) => {
            if let Some(why) = crate::sys::process::unsafe_command(&cmd.get_ref()[0]) {
                return Err(at(cmd.span(), format!("hooks.on_change: {why}")));
            }
            Some(cmd.into_inner())
        }
        None => None,
    };
    Ok(Hooks { on_change, timeout })
}

fn check_ttl(ttl: Spanned<u32>, at: &error::At) -> Result<u32, ConfigError> {
    let span = ttl.span();
    let ttl = ttl.into_inner();
    if ttl > MAX_TTL {
        return Err(at(span, format!("ttl {ttl} is above the maximum {MAX_TTL} (RFC 2181)")));
    }
    Ok(ttl)
}

fn parse_addresses<A>(raw: &[Spanned<String>], family: &str, at: &error::At) -> Result<Vec<A>, ConfigError>
where
    A: std::str::FromStr + PartialEq,
{
    let mut out = Vec::new();
    for text in raw {
        let address: A = text
            .get_ref()
            .parse()
            .map_err(|_| at(text.span(), format!("'{}' is not an {family} address", text.get_ref())))?;
        if out.contains(&address) {
            return Err(at(text.span(), format!("address {} is listed twice", text.get_ref())));
        }
        out.push(address);
    }
    if out.len() > MAX_RECORDS {
        return Err(at(raw[MAX_RECORDS].span(), format!("at most {MAX_RECORDS} {family} addresses per name")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.toml"), text)
    }

    const GOOD: &str = r#"
[server]
interfaces = ["veth0"]
xdp_mode = "skb"
port = 5353

[names."WWW.Example.test"]
ttl = 60
a = ["192.0.2.1", "192.0.2.2"]
aaaa = ["2001:db8::1"]

[names."api.example.test"]
a = ["192.0.2.9"]
"#;

    #[test]
    fn parses_a_good_config() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.interfaces, vec!["veth0"]);
        assert_eq!(config.xdp_mode, XdpMode::Skb);
        assert_eq!(config.port, 5353);
        assert_eq!(config.pin_dir, PathBuf::from(DEFAULT_PIN_DIR));
        let www = &config.names[&DnsName::parse("www.example.test").unwrap()];
        assert_eq!(www.ttl, 60);
        assert_eq!(
            www.source,
            NameSource::Static {
                a: vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)],
                aaaa: vec!["2001:db8::1".parse::<Ipv6Addr>().unwrap()],
            }
        );
        let api = &config.names[&DnsName::parse("api.example.test.").unwrap()];
        assert_eq!(api.ttl, DEFAULT_TTL);
        assert!(matches!(&api.source, NameSource::Static { aaaa, .. } if aaaa.is_empty()));
    }

    fn error(text: &str) -> ConfigError {
        parse(text).expect_err("config should be rejected")
    }

    #[test]
    fn bad_address_names_line_and_reason() {
        let e = error(&GOOD.replace("192.0.2.2", "192.0.2.300"));
        assert_eq!(e.line, 9, "{e}");
        assert!(e.reason.contains("'192.0.2.300' is not an IPv4 address"), "{e}");
        assert!(e.to_string().starts_with("test.toml:9:"), "{e}");
    }

    #[test]
    fn ipv6_in_a_is_rejected() {
        let e = error(&GOOD.replace("\"192.0.2.9\"", "\"2001:db8::9\""));
        assert_eq!(e.line, 13, "{e}");
        assert!(e.reason.contains("not an IPv4 address"), "{e}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let e = error(&GOOD.replace("ttl = 60", "ttl = 60\ncolour = \"blue\""));
        assert_eq!(e.line, 9, "{e}");
        assert!(e.reason.contains("unknown field `colour`"), "{e}");
    }

    #[test]
    fn zones_decide_who_answers_do_and_every_name_needs_one() {
        // No zones: nothing is known to be unsigned, DO=1 is passed (the old behaviour).
        let config = parse(GOOD).unwrap();
        let www = DnsName::parse("www.example.test").unwrap();
        assert!(!config.answers_dnssec_ok(&www));

        let zoned = format!("{GOOD}\n[zones.\"example.test\"]\n[zones.\"signed.example.test\"]\ndnssec = \"pass\"\n");
        let config = parse(&zoned).unwrap();
        assert!(config.answers_dnssec_ok(&www));
        assert!(!config.answers_dnssec_ok(&DnsName::parse("a.signed.example.test").unwrap()), "longest apex wins");
        assert!(!config.answers_dnssec_ok(&DnsName::parse("www.other.test").unwrap()));

        // Zones declared: a name outside all of them is rejected at its own line.
        let outside = format!("{GOOD}\n[zones.\"elsewhere.test\"]\n");
        let e = error(&outside);
        assert!(e.reason.contains("name 'api.example.test.' lies in no declared zone (elsewhere.test.)"), "{e}");
        assert_eq!(e.line, 12, "{e}");
        let e = error(&format!("{GOOD}\n[zones.\"example.test\"]\ndnssec = \"sign\"\n"));
        assert!(e.reason.contains("needs zones.\"example.test\".key"), "{e}");
        let e = error(&format!("{GOOD}\n[zones.\"example.test\"]\ndnssec = \"on\"\n"));
        assert!(e.reason.contains("is not one of off, pass, sign"), "{e}");
        let e = error(&format!("{GOOD}\n[zones.\"example.test\"]\nkey = \"Kexample.test.+013+1\"\n"));
        assert!(e.reason.contains("applies only with dnssec = \"sign\""), "{e}");
        let e = error(&format!("{GOOD}\n[zones.\"example.test\"]\n[zones.\"EXAMPLE.test\"]\n"));
        assert!(e.reason.contains("declared twice"), "{e}");
    }

    #[test]
    fn negative_answers_need_an_unsigned_zone_an_address_and_a_refresh_in_range() {
        let zone = |body: &str| format!("{GOOD}\n[zones.\"example.test\"]\n{body}\n");
        // On by default for an unsigned zone, off for a signed one.
        let apex = DnsName::parse("example.test").unwrap();
        let config = parse(&zone("")).unwrap();
        assert_eq!(config.zones[&apex].negative.unwrap().transfer_from, NegativeAnswers::DEFAULT_TRANSFER_FROM);
        assert_eq!(parse(&zone("dnssec = \"pass\"")).unwrap().zones[&apex].negative, None);
        let config = parse(&zone("negative_answers = true")).unwrap();
        let negative = config.zones[&apex].negative.unwrap();
        assert_eq!(negative.transfer_from, NegativeAnswers::DEFAULT_TRANSFER_FROM);
        assert_eq!(negative.refresh, NegativeAnswers::DEFAULT_REFRESH);
        let config = parse(&zone("negative_answers = true\ntransfer_from = \"[::1]:5300\"\nrefresh = \"1h\"")).unwrap();
        let negative = config.zones[&apex].negative.unwrap();
        assert_eq!(negative.transfer_from, "[::1]:5300".parse().unwrap());
        assert_eq!(negative.refresh, std::time::Duration::from_secs(3600));
        assert_eq!(parse(&zone("negative_answers = false")).unwrap().zones[&apex].negative, None);
        for (body, expected, line) in [
            ("dnssec = \"pass\"\nnegative_answers = true", "needs an unsigned zone", 17),
            ("dnssec = \"pass\"\ntransfer_from = \"127.0.0.1:53\"", "applies only with negative_answers = true", 17),
            ("negative_answers = false\nrefresh = \"5s\"", "applies only with negative_answers = true", 17),
            ("negative_answers = true\ntransfer_from = \"localhost:53\"", "is not an address and port", 17),
            ("negative_answers = true\ntransfer_from = \"127.0.0.1\"", "is not an address and port", 17),
            ("negative_answers = true\ntransfer_from = \"127.0.0.1:0\"", "port 0 is not a port", 17),
            ("negative_answers = true\nrefresh = \"500ms\"", "out of range", 17),
            ("negative_answers = true\nrefresh = \"2h\"", "out of range", 17),
            ("negative_answers = true\nrefresh = \"soon\"", "is not a duration", 17),
            ("negative_answers = \"yes\"", "invalid type", 16),
        ] {
            let e = error(&zone(body));
            assert!(e.reason.contains(expected), "{body}: {e}");
            assert_eq!(e.line, line, "{body}: {e}");
        }
        let e = error(&GOOD.replacen("[server]\n", "[server]\nmax_zone_names = 0\n", 1));
        assert!(e.reason.contains("server.max_zone_names = 0 is out of range"), "{e}");
    }

    #[test]
    fn fleet_settings_are_checked_at_their_line() {
        let fleet = |body: &str| format!("{GOOD}\n[fleet]\n{body}\n");
        let config = parse(&fleet("etcd = [\"http://10.0.0.1:2379\"]\nnode = \"ns1\"")).unwrap();
        let f = config.fleet.unwrap();
        assert_eq!((f.endpoints.len(), f.prefix.as_str(), f.node.as_str(), f.user), (1, "/primwatch", "ns1", None));
        let named = parse(&fleet("etcd = [\"http://e:2379\"]")).unwrap().fleet.unwrap();
        assert!(!named.node.is_empty(), "the host name by default");
        for (body, reason) in [
            ("etcd = []", "lists no endpoints"),
            ("etcd = [\"10.0.0.1:2379\"]", "is not http://HOST:PORT"),
            ("etcd = [\"https://10.0.0.1:2379\"]", "fleet.ca must name the CA"),
            ("etcd = [\"https://a:2379\", \"http://b:2379\"]", "mixes http:// and https://"),
            ("etcd = [\"ftp://a:2379\"]", "is not http://HOST:PORT or https://"),
            ("etcd = [\"http://e:2379\"]\nca = \"/etc/ssl/ca.pem\"", "apply only to https://"),
            ("etcd = [\"https://e:2379\"]\nca = \"/nonexistent/ca.pem\"", "fleet.ca: cannot read"),
            ("etcd = [\"http://e:2379\"]\nprefix = \"primwatch\"", "must start with '/'"),
            ("etcd = [\"http://e:2379\"]\nnode = \"a/b\"", "without '/'"),
            ("etcd = [\"http://e:2379\"]\nuser = \"pw\"", "needs fleet.password"),
            ("etcd = [\"http://e:2379\"]\npassword = \"x\"", "go together"),
            // A password over http:// is in clear text on the wire: only when said so.
            ("etcd = [\"http://e:2379\"]\nuser = \"pw\"\npassword = \"x\"", "clear text"),
            ("etcd = [\"http://e:2379\"]\nuser = \"pw\"\npassword_file = \"/nonexistent/pw\"", "password_file"),
            (
                "etcd = [\"http://e:2379\"]\nuser = \"pw\"\npassword = \"x\"\npassword_file = \"/etc/hostname\"",
                "one or the other",
            ),
        ] {
            let e = error(&fleet(body));
            assert!(e.reason.contains(reason), "{body}: {e}");
        }
        let e = error(&fleet("etcd = [\"http://e:2379\"]\nnode = \"a/b\""));
        assert_eq!(e.line, GOOD.lines().count() + 4, "{e}");
        let plain = "etcd = [\"http://e:2379\"]\nuser = \"pw\"\npassword = \"x\"\npassword_over_http = true";
        assert_eq!(parse(&fleet(plain)).unwrap().fleet.unwrap().user, Some(("pw".into(), "x".into())));

        // TLS: the CA and the client pair are read, and the key must be root-only.
        let dir = std::env::temp_dir().join(format!("pw-fleet-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for name in ["ca.pem", "node.pem", "node-key.pem"] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
        std::fs::write(dir.join("not-pem"), "hello").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.join("node-key.pem"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let tls =
            |extra: &str| fleet(&format!("etcd = [\"https://e:2379\"]\nca = \"{}/ca.pem\"\n{extra}", dir.display()));
        let with_pair = tls(&format!("cert = \"{0}/node.pem\"\nkey = \"{0}/node-key.pem\"", dir.display()));
        let e = error(&with_pair);
        assert!(e.reason.contains("fleet.key") && e.reason.contains("chmod 600"), "{e}");
        std::fs::set_permissions(dir.join("node-key.pem"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let f = parse(&with_pair).unwrap().fleet.unwrap();
        let t = f.tls.unwrap();
        assert_eq!(t.ca, pem.as_bytes());
        assert!(t.identity.is_some());
        assert!(error(&tls(&format!("cert = \"{}/node.pem\"", dir.display()))).reason.contains("go together"));
        // A password file: root-only, its first line.
        std::fs::write(dir.join("password"), "s3cret\n").unwrap();
        std::fs::set_permissions(dir.join("password"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let with_file = tls(&format!("user = \"pw\"\npassword_file = \"{}/password\"", dir.display()));
        assert!(error(&with_file).reason.contains("chmod 600"), "{}", error(&with_file));
        std::fs::set_permissions(dir.join("password"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(parse(&with_file).unwrap().fleet.unwrap().user, Some(("pw".into(), "s3cret".into())));
        let e = error(&fleet(&format!("etcd = [\"https://e:2379\"]\nca = \"{}/not-pem\"", dir.display())));
        assert!(e.reason.contains("is not a PEM file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();

        // A quorum counts the fleet's nodes.
        let quorum = |q: &str| format!("{GOOD}\n[targets.q]\naddress = \"192.0.2.50\"\nquorum = {q}\n");
        let e = error(&quorum("2"));
        assert!(e.reason.contains("quorum counts the fleet's nodes: it needs [fleet]"), "{e}");
        assert_eq!(e.line, GOOD.lines().count() + 4, "{e}");
        let with_fleet = |q: &str| format!("{}[fleet]\netcd = [\"http://e:2379\"]\n", quorum(q));
        let config = parse(&with_fleet("2")).unwrap();
        assert_eq!(config.targets["q"].quorum, Some(Quorum::Nodes(2)));
        assert_eq!(parse(&quorum("\"local\"")).unwrap().targets["q"].quorum, None, "local: as without one");
        let config = parse(&with_fleet("\"2/3\"")).unwrap();
        let two_thirds = config.targets["q"].quorum.unwrap();
        assert_eq!(two_thirds, Quorum::Fraction { numerator: 2, denominator: 3 });
        // Rounded up, and never below one node.
        assert_eq!([1, 2, 3, 4, 6].map(|live| two_thirds.needed(live)), [1, 2, 2, 3, 4]);
        assert_eq!(Quorum::Nodes(2).needed(1), 2);
        assert!(error(&with_fleet("0")).reason.contains("between 1 and 64"));
        assert!(error(&with_fleet("65")).reason.contains("between 1 and 64"));
        // checked_by shards a quorum's checks.
        let sharded = |q: &str, k: &str| with_fleet(q).replace("[fleet]", &format!("checked_by = {k}\n[fleet]"));
        assert_eq!(parse(&sharded("2", "3")).unwrap().targets["q"].checked_by, Some(3));
        assert_eq!(parse(&sharded("\"1/2\"", "1")).unwrap().targets["q"].checked_by, Some(1));
        assert!(error(&sharded("3", "2")).reason.contains("quorum = 3 can never be met by checked_by = 2"));
        assert!(error(&sharded("2", "0")).reason.contains("between 1 and 64"));
        let e = error(&format!("{GOOD}\n[targets.q]\naddress = \"192.0.2.50\"\nchecked_by = 2\n"));
        assert!(e.reason.contains("it needs a quorum"), "{e}");
        for bad in ["\"0/3\"", "\"4/3\"", "\"1/0\"", "\"half\"", "\"1/65\"", "\"-1/2\""] {
            let e = error(&with_fleet(bad));
            assert!(e.reason.contains("is not a fraction A/B"), "{bad}: {e}");
            assert_eq!(e.line, GOOD.lines().count() + 4, "{e}");
        }
    }

    #[test]
    fn syntax_error_has_a_line() {
        let e = error(&GOOD.replace("port = 5353", "port = = 5353"));
        assert_eq!(e.line, 5, "{e}");
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(error(&GOOD.replace("\"skb\"", "\"turbo\"")).reason.contains("unknown variant"));
        assert!(error(&GOOD.replace("5353", "0")).reason.contains("between 1 and 65535"));
        assert!(error(&GOOD.replace("5353", "70000")).line == 5);
        assert!(error(&GOOD.replace("ttl = 60", "ttl = 4294967295")).reason.contains("RFC 2181"));
        assert!(error(&GOOD.replace("[\"veth0\"]", "[]")).reason.contains("at least one interface"));
        assert!(error(&GOOD.replace("[\"veth0\"]", "[\"veth0\", \"veth0\"]")).reason.contains("twice"));
        assert!(error(&GOOD.replace("\"192.0.2.2\"", "\"192.0.2.1\"")).reason.contains("listed twice"));
        let e = error(&GOOD.replace("a = [\"192.0.2.9\"]", ""));
        assert!(e.reason.contains("no groups and no a or aaaa"), "{e}");
        assert_eq!(e.line, 12, "{e}");
    }

    #[test]
    fn bad_names_are_rejected() {
        let e = error(&GOOD.replace("api.example.test", "api..example.test"));
        assert!(e.reason.contains("empty label"), "{e}");
        assert_eq!(e.line, 12);
        let long_label = "a".repeat(64);
        assert!(error(&GOOD.replace("api", &long_label)).reason.contains("63"));
        let e = error(&GOOD.replace("api.example.test", "www.EXAMPLE.test"));
        assert!(e.reason.contains("configured twice"), "{e}");
    }

    #[test]
    fn too_many_addresses_are_rejected() {
        let many: Vec<String> = (1..=17).map(|i| format!("\"192.0.2.{i}\"")).collect();
        let text = GOOD.replace("[\"192.0.2.9\"]", &format!("[{}]", many.join(", ")));
        assert!(error(&text).reason.contains("at most 16"));
    }

    const HEALTH: &str = r#"
[server]
interfaces = ["eth0"]

[checks.web]
type = "http"
path = "/health"
host = "www.example.test"
ok_status = [200, 204]
interval = "2s"
timeout = "1s"
rise = 2
fall = 3
jitter = "100ms"

[checks.ping]
type = "icmp"
interval = "500ms"
timeout = "400ms"

[targets.tokyo1]
address = "10.0.1.1"
checks = ["web", "ping"]
weight = 5

[targets.osaka1]
address = "2001:db8::1"
checks = ["web"]
preempt = false

[groups.tokyo]
members = ["tokyo1"]
priority = 100

[groups.osaka]
members = ["osaka1"]
policy = "all"

[names."www.example.test"]
groups = ["tokyo", "osaka"]
all_down = "backup:osaka"
"#;

    #[test]
    fn interim_statuses_are_not_ok_statuses() {
        let text = "[server]\ninterfaces = [\"lo\"]\n[checks.c]\ntype = \"http\"\nok_status = [200, 103]\n";
        let e = Config::parse(Path::new("t.toml"), text).unwrap_err();
        assert!(e.line == 5 && e.reason.contains("ok_status lists 103") && e.reason.contains("never final"), "{e}");
    }

    #[test]
    fn ca_file_is_read_and_checked_at_load() {
        let dir = std::env::temp_dir().join(format!("pw-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("junk.pem"), "not a certificate").unwrap();
        let parse = |check: &str| {
            let text = format!("[server]\ninterfaces = [\"lo\"]\n[checks.c]\n{check}\n");
            Config::parse(&dir.join("primwatch.toml"), &text)
        };
        let e = parse("type = \"https\"\nca_file = \"missing.pem\"").unwrap_err();
        assert!(
            e.line == 5 && e.reason.contains("checks.c.ca_file: cannot read") && e.reason.contains("missing.pem"),
            "{e}"
        );
        let e = parse("type = \"https\"\nca_file = \"junk.pem\"").unwrap_err();
        assert!(e.reason.contains("no PEM certificate") || e.reason.contains("not a PEM"), "{e}");
        let e = parse("type = \"http\"\nca_file = \"junk.pem\"").unwrap_err();
        assert!(e.reason.contains("'ca_file' applies to https checks"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn targets_given_by_host_expand_into_one_target_per_address() {
        let text = r#"
[server]
interfaces = ["lo"]
[resolver]
nameservers = ["10.0.0.53", "[fd00::53]:5353"]
min_ttl = "2s"
grace = "30s"
[checks.web]
type = "http"
[targets.fixed]
address = "192.0.2.1"
[targets.app]
host = "App.Example.NET."
checks = ["web"]
weight = 3
[groups.g]
members = ["app", "fixed"]
[names."www.example.test"]
groups = ["g"]
"#;
        let config = Config::parse(Path::new("t.toml"), text).unwrap();
        assert_eq!(config.named_targets["app"].host, "app.example.net");
        assert_eq!(config.resolver.nameservers.as_ref().unwrap()[1], "[fd00::53]:5353".parse().unwrap());
        assert_eq!((config.resolver.min_ttl, config.resolver.grace), (Duration::from_secs(2), Duration::from_secs(30)));
        // Unresolved: only the fixed member.
        assert_eq!(config.groups["g"].members, vec!["fixed"]);
        let resolved = BTreeMap::from([(
            "app".to_string(),
            vec!["2001:db8::2".parse().unwrap(), "198.51.100.7".parse().unwrap(), "198.51.100.7".parse().unwrap()],
        )]);
        let (expanded, left_out) = config.expand(&resolved);
        assert!(left_out.is_empty());
        assert_eq!(expanded.groups["g"].members, vec!["app@198.51.100.7", "app@2001:db8::2", "fixed"]);
        let member = &expanded.targets["app@2001:db8::2"];
        assert_eq!((member.weight, member.checks.clone()), (3, vec!["web".to_string()]));
        // The names and views are shared, not copied, by every expansion.
        assert!(std::sync::Arc::ptr_eq(&expanded.names, &config.names));
        assert!(std::sync::Arc::ptr_eq(&expanded.views, &config.views));
        // Expanding again from the expanded config starts from what was written.
        let (again, _) = expanded.expand(&BTreeMap::new());
        assert_eq!(again.groups["g"].members, vec!["fixed"]);
        assert!(!again.targets.contains_key("app@198.51.100.7"));
        // More addresses than a group can answer with: the rest are left out, named.
        let many = BTreeMap::from([("app".to_string(), (1..=20).map(|i| IpAddr::from([10, 0, 0, i])).collect())]);
        let (capped, left_out) = config.expand(&many);
        assert_eq!(capped.groups["g"].members.len(), MAX_RECORDS);
        assert_eq!(left_out.len(), 20 + 1 - MAX_RECORDS);
    }

    #[test]
    fn the_record_set_count_is_the_plans() {
        let config = Config::parse(
            Path::new("t.toml"),
            "[server]\ninterfaces = [\"lo\"]\n[targets.w]\naddress = \"192.0.2.9\"\n\
             [targets.v]\naddress = \"192.0.2.10\"\n[groups.g]\nmembers = [\"w\"]\n[groups.h]\nmembers = [\"v\"]\n\
             [names.\"a.example.test\"]\ngroups = [\"g\"]\n[names.\"b.example.test\"]\ngroups = [\"h\"]\n\
             [names.\"s.example.test\"]\na = [\"192.0.2.1\"]\n\
             [views.west]\nsources = [\"198.51.100.0/24\"]\n\
             [views.west.names.\"a.example.test\"]\ngroups = [\"h\"]\n\
             [views.west.names.\"b.example.test\"]\ngroups = [\"g\", \"h\"]\n",
        )
        .unwrap();
        // a's view spec is b's (one set pair); b's view spec is new: g, h, static, g+h.
        assert_eq!(config.record_sets(), 8);
        assert_eq!(config.record_sets(), 2 * crate::answers::records::plan_names(&config).specs.len());
    }

    #[test]
    fn names_sharing_a_source_share_record_sets_and_capacities_are_checked() {
        let mut text = String::from("[server]\ninterfaces = [\"lo\"]\n{extra}\n[targets.w]\naddress = \"192.0.2.9\"\n[groups.g]\nmembers = [\"w\"]\n");
        for i in 0..100 {
            text.push_str(&format!("[names.\"t{i}.example.test\"]\ngroups = [\"g\"]\n"));
        }
        text.push_str(
            "[names.\"s.example.test\"]\na = [\"192.0.2.1\"]\n[names.\"l.example.test\"]\nttl = 5\ngroups = [\"g\"]\n",
        );
        let parse = |extra: &str| Config::parse(Path::new("t.toml"), &text.replace("{extra}", extra));
        let config = parse("").unwrap();
        // 100 names on one group share one spec; a static name and another TTL add two.
        assert_eq!((config.name_entries(), config.record_sets()), (102, 6));
        let err = parse("max_names = 101").unwrap_err().to_string();
        assert!(
            err.contains("t.toml:")
                && err.contains("102 (name, view) entries")
                && err.contains("server.max_names is 101"),
            "{err}"
        );
        let err = parse("max_record_sets = 5").unwrap_err().to_string();
        assert!(err.contains("6 record sets") && err.contains("server.max_record_sets is 5"), "{err}");
        let err = parse("max_record_sets = 0").unwrap_err().to_string();
        assert!(err.contains("server.max_record_sets = 0 is out of range"), "{err}");
        let bigger = parse("max_names = 200000").unwrap();
        assert_eq!(bigger.capacities.names, 200_000);
        assert_eq!(config.server_settings_differ(&bigger), Some("server.max_names"));
    }

    /// A config in a fresh directory reading `tenants.names` beside it, with targets w,
    /// v and groups g (w), h (v), then `rest`: (the directory, the config's path).
    fn config_with_name_files(dir_name: &str, rest: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("{dir_name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("primwatch.toml");
        let head = "name_files = [\"tenants.names\"]\n[server]\ninterfaces = [\"lo\"]\n\
             [targets.w]\naddress = \"192.0.2.9\"\n[targets.v]\naddress = \"192.0.2.10\"\n\
             [groups.g]\nmembers = [\"w\"]\n[groups.h]\nmembers = [\"v\"]\n";
        std::fs::write(&config, format!("{head}{rest}")).unwrap();
        (dir, config)
    }

    #[test]
    fn name_files_add_names_and_say_which_line_is_wrong() {
        let (dir, config) = config_with_name_files("pw-name-files", "[names.\"www.example.test\"]\ngroups = [\"g\"]\n");
        let names = dir.join("tenants.names");
        let load = |text: &str| {
            std::fs::write(&names, text).unwrap();
            Config::load(&config)
        };
        let loaded = load("# tenants\n\nt1.example.test g\nT2.Example.Test g,h ttl=60  # two groups\n").unwrap();
        assert_eq!(loaded.names.len(), 3);
        let t2 = &loaded.names[&DnsName::parse("t2.example.test").unwrap()];
        assert_eq!(t2.ttl, 60);
        assert_eq!(t2.source, NameSource::Groups { groups: vec!["g".into(), "h".into()], all_down: AllDown::ServeAll });
        // Files are read again on every load, so a reload picks up a changed file.
        assert_eq!(load("t1.example.test g\n").unwrap().names.len(), 2);
        for (text, line, says) in [
            ("t1.example.test g\nt3.example.test nope\n", 2, "unknown group 'nope'"),
            ("t1.example.test\n", 1, "lists no groups"),
            ("bad..name g\n", 1, "name 'bad..name'"),
            ("www.example.test g\n", 1, "configured twice"),
            ("t1.example.test g,g\n", 1, "listed twice"),
            ("t1.example.test g ttl=x\n", 1, "ttl 'x'"),
            ("t1.example.test g extra\n", 1, "'extra' is not ttl=SECONDS"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.file.ends_with("tenants.names") && err.line == line, "{text:?}: {err}");
            assert!(err.reason.contains(says), "{text:?}: {err}");
        }
        // With zones declared, a name outside them is reported at its own line.
        let zoned = std::fs::read_to_string(&config).unwrap() + "[zones.\"example.test\"]\n";
        std::fs::write(&config, zoned).unwrap();
        assert_eq!(load("t1.example.test g\n").unwrap().names.len(), 2);
        let err = load("t1.example.test g\nt9.other.test g\n").unwrap_err();
        assert!(err.file.ends_with("tenants.names") && err.line == 2, "{err}");
        assert!(err.reason.contains("lies in no declared zone"), "{err}");
        std::fs::remove_file(&names).unwrap();
        assert!(Config::load(&config).unwrap_err().reason.contains("cannot read the name file"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn view_name_files_give_names_their_view_groups() {
        let (dir, config) = config_with_name_files(
            "pw-view-name-files",
            "[views.west]\nsources = [\"198.51.100.0/24\"]\nname_files = [\"west.names\"]\n\
             [views.west.names.\"t3.example.test\"]\ngroups = [\"g\"]\n",
        );
        std::fs::write(
            dir.join("tenants.names"),
            "t1.example.test g all_down=nodata\nt2.example.test g\nt3.example.test g\n",
        )
        .unwrap();
        let views = dir.join("west.names");
        let load = |text: &str| {
            std::fs::write(&views, text).unwrap();
            Config::load(&config)
        };
        let loaded = load("t1.example.test h\nt2.example.test h,g all_down=backup:g\n").unwrap();
        let t1 = DnsName::parse("t1.example.test").unwrap();
        assert_eq!(
            loaded.names[&t1].source,
            NameSource::Groups { groups: vec!["g".into()], all_down: AllDown::NoData },
            "all_down= on a top-level line"
        );
        let west = &loaded.views["west"].names;
        assert_eq!(west.len(), 3, "two from the file, one from TOML");
        assert_eq!(west[&t1], ViewName { groups: vec!["h".into()], all_down: AllDown::NoData }, "the name's all_down");
        let t2 = &west[&DnsName::parse("t2.example.test").unwrap()];
        assert_eq!(t2.all_down, AllDown::Backup("g".into()));
        assert_eq!(t2.groups, vec!["h".to_string(), "g".to_string()]);
        for (text, line, says) in [
            (
                "t1.example.test h\nt9.example.test h\n",
                2,
                "view 'west' names 't9.example.test.', which is not a configured name",
            ),
            ("t1.example.test h ttl=5\n", 1, "ttl= is the name's"),
            ("t1.example.test h\nT1.example.test g\n", 2, "given twice in view 'west'"),
            ("t3.example.test h\n", 1, "given twice in view 'west'"),
            ("t1.example.test nope\n", 1, "unknown group 'nope'"),
            ("t1.example.test h all_down=sometimes\n", 1, "all_down 'sometimes' is not one of"),
            ("t1.example.test h all_down=backup:x\n", 1, "unknown group 'x'"),
        ] {
            let err = load(text).unwrap_err();
            assert!(err.file.ends_with("west.names") && err.line == line, "{text:?}: {err}");
            assert!(err.reason.contains(says), "{text:?}: {err}");
        }
        std::fs::remove_file(&views).unwrap();
        assert!(Config::load(&config).unwrap_err().reason.contains("cannot read the name file"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn more_names_than_xdp_holds_are_refused_at_load() {
        let mut text = String::from("[server]\ninterfaces = [\"lo\"]\n");
        for i in 0..=primwatch_common::NAME_STATS_SLOTS {
            text.push_str(&format!("[names.\"n{i}.example.test\"]\na = [\"192.0.2.1\"]\n"));
        }
        let err = Config::parse(Path::new("t.toml"), &text).unwrap_err().to_string();
        assert!(err.contains("65537 (name, view) entries") && err.contains("server.max_names is 65536"), "{err}");
    }

    #[test]
    fn targets_given_by_host_refuse_what_cannot_work() {
        let base = "[server]\ninterfaces = [\"lo\"]\n";
        for (body, says) in [
            ("[targets.a]\nhost = \"192.0.2.1\"\n", "is an address: write it as `address`"),
            ("[targets.a]\nhost = \"bad..name\"\n", "host 'bad..name'"),
            ("[targets.a]\naddress = \"192.0.2.1\"\nhost = \"a.example\"\n", "has both address and host"),
            ("[targets.a]\nweight = 2\n", "needs an address or a host"),
            ("[targets.\"a@b\"]\naddress = \"192.0.2.1\"\n", "contains '@'"),
            ("[resolver]\nmin_ttl = \"2h\"\n", "min_ttl must be at least 1s and at most max_ttl"),
            ("[resolver]\nnameservers = [\"resolver.example\"]\n", "'resolver.example' is not an address"),
        ] {
            let err = Config::parse(Path::new("t.toml"), &format!("{base}{body}")).unwrap_err().to_string();
            assert!(err.contains(says) && err.contains("t.toml:"), "{body}: {err}");
        }
    }

    #[test]
    fn parses_checks_targets_groups() {
        let config = parse(HEALTH).unwrap();
        let web = &config.checks["web"];
        assert_eq!(
            (web.interval, web.timeout, web.rise, web.fall),
            (Duration::from_secs(2), Duration::from_secs(1), 2, 3)
        );
        assert_eq!(web.jitter, Duration::from_millis(100));
        let CheckKind::Http(http) = &web.kind else { panic!("http") };
        assert_eq!((http.port, http.path.as_str(), http.ok_status.clone()), (80, "/health", vec![200, 204]));
        assert_eq!(config.checks["ping"].rise, DEFAULT_RISE_FALL);
        assert_eq!(config.targets["tokyo1"].weight, 5);
        assert!(!config.targets["osaka1"].preempt);
        let tokyo = &config.groups["tokyo"];
        assert_eq!(
            (tokyo.priority, tokyo.policy, tokyo.max_answers, tokyo.min_healthy),
            (100, Policy::RoundRobin, 1, 1)
        );
        assert_eq!(config.groups["osaka"].max_answers, MAX_RECORDS);
        let www = &config.names[&DnsName::parse("www.example.test").unwrap()];
        assert_eq!(
            www.source,
            NameSource::Groups {
                groups: vec!["tokyo".into(), "osaka".into()],
                all_down: AllDown::Backup("osaka".into())
            }
        );
    }

    #[test]
    fn health_errors_name_line_and_reason() {
        let cases: &[(&str, &str, &str)] = &[
            ("members = [\"tokyo1\"]", "members = [\"tokyo9\"]", "unknown target 'tokyo9'"),
            ("checks = [\"web\", \"ping\"]", "checks = [\"web\", \"pong\"]", "unknown check 'pong'"),
            ("groups = [\"tokyo\", \"osaka\"]", "groups = [\"tokyo\", \"kyoto\"]", "unknown group 'kyoto'"),
            ("all_down = \"backup:osaka\"", "all_down = \"backup:nara\"", "unknown group 'nara'"),
            ("all_down = \"backup:osaka\"", "all_down = \"panic\"", "not one of serve-all"),
            ("timeout = \"1s\"", "timeout = \"3s\"", "at most the interval"),
            ("interval = \"2s\"", "interval = \"2 parsecs\"", "not a duration"),
            ("interval = \"500ms\"", "interval = \"10ms\"", "between 100ms and 1h"),
            ("interval = \"500ms\"", "interval = \"296000000000y\"", "between 100ms and 1h"),
            ("rise = 2", "rise = 0", "rise must be at least 1"),
            ("jitter = \"100ms\"", "jitter = \"5s\"", "jitter must be below"),
            ("ok_status = [200, 204]", "ok_status = [200, 999]", "status codes"),
            ("type = \"icmp\"", "type = \"smtp\"", "check type 'smtp'"),
            ("type = \"icmp\"", "type = \"icmp\"\nport = 7", "'port' does not apply to a icmp check"),
            ("address = \"10.0.1.1\"", "address = \"10.0.1\"", "not an IP address"),
            ("weight = 5", "weight = 0", "weight must be between"),
            ("priority = 100", "priority = 100\nmin_healthy = 2", "min_healthy must be between 1 and the 1 members"),
            ("policy = \"all\"", "policy = \"fastest\"", "unknown variant"),
            ("path = \"/health\"", "path = \"health\"", "must start with '/'"),
            ("path = \"/health\"", "path = \"/health\"\nbogus = 1", "unknown field `bogus`"),
        ];
        for (from, to, reason) in cases {
            assert!(HEALTH.contains(from), "{from}");
            let text = HEALTH.replacen(from, to, 1);
            let e = error(&text);
            assert!(e.reason.contains(reason), "{from} → {to}: {e}");
            // The reported line is the changed line (or the key it belongs to).
            let changed_line = text[..text.find(to).unwrap()].matches('\n').count() + 1;
            assert!(
                e.line + 3 >= changed_line && e.line <= changed_line + to.matches('\n').count(),
                "{to}: line {} vs {changed_line}",
                e.line
            );
        }
        let e =
            error(&format!("{HEALTH}\n[names.\"mixed.example.test\"]\ngroups = [\"tokyo\"]\na = [\"192.0.2.1\"]\n"));
        assert!(e.reason.contains("both groups and fixed addresses"), "{e}");
    }

    #[test]
    fn views_parse_and_their_errors_point_at_the_source() {
        let dir = std::env::temp_dir().join(format!("pw-views-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("jp.cidr"), "# JP\n203.0.113.0/24\n2001:db8:1::/48 # v6\n").unwrap();
        std::fs::write(dir.join("bad.cidr"), "203.0.113.0/24\n\n10.0.0.0/33\n").unwrap();
        let base = format!(
            "{HEALTH}\n[views.jp]\nsources = [\"198.51.100.7/24\"]\nsource_files = [\"jp.cidr\"]\n\
             [views.jp.names.\"www.example.test\"]\ngroups = [\"osaka\"]\n"
        );
        let path = dir.join("primwatch.toml");
        let config = Config::parse(&path, &base).unwrap();
        let jp = &config.views["jp"];
        let sources: Vec<String> = jp.sources.iter().map(|n| n.to_string()).collect();
        assert_eq!(sources, ["198.51.100.0/24", "203.0.113.0/24", "2001:db8:1::/48"], "host bits dropped, file read");
        assert_ne!(jp.id, 0);
        let www = &jp.names[&DnsName::parse("www.example.test").unwrap()];
        assert_eq!(www.groups, vec!["osaka".to_string()]);
        assert_eq!(www.all_down, AllDown::Backup("osaka".into()), "inherits the name's all_down");

        let e = Config::parse(&path, &base.replace("jp.cidr", "bad.cidr")).unwrap_err();
        assert_eq!((e.file.clone(), e.line), (dir.join("bad.cidr"), 3), "{e}");
        assert!(e.reason.contains("'10.0.0.0/33' is not a CIDR prefix"), "{e}");
        let e = Config::parse(&path, &base.replace("[views.jp", "[views.default")).unwrap_err();
        assert!(e.reason.contains("'default' is reserved") && e.line > 0, "{e}");
        let e = Config::parse(&path, &base.replace("198.51.100.7/24", "198.51.100.0/24x")).unwrap_err();
        assert!(e.reason.contains("not a CIDR prefix") && e.file == path, "{e}");
        let e = Config::parse(&path, &base.replace("jp.names.\"www.example.test\"]", "jp.names.\"ftp.example.test\"]"))
            .unwrap_err();
        assert!(e.reason.contains("not in [names]"), "{e}");
        let twice = format!("{base}\n[views.us]\nsources = [\"203.0.113.0/24\"]\n");
        let e = Config::parse(&path, &twice).unwrap_err();
        assert!(e.reason.contains("prefix 203.0.113.0/24 is in views 'jp' and 'us'"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
