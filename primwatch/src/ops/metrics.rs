//! Observability: what the controller counts (check results and latencies, map
//! updates, reloads), the `Stats` snapshot `ctl stats` prints, and the same snapshot
//! as Prometheus text (prometheus-client's encoder, from a collector over the snapshot)
//! on an optional HTTP listener (hyper; GET /metrics).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, SystemTime},
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
};

use anyhow::Result;

use crate::{answers::records::NamePlan, config::Config, health::state::State, health::Health as _};
use serde::{Deserialize, Serialize};

/// Check latency buckets, seconds.
const CHECK_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Map sync (one publish: names, views, settings) buckets, seconds.
const SYNC_BUCKETS: &[f64] = &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 1.0];

/// A fixed-bucket histogram; `counts[i]` holds observations ≤ `bounds[i]` and above
/// the bound before (the last count is above every bound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    fn new(bounds: &[f64]) -> Histogram {
        Histogram { bounds: bounds.to_vec(), counts: vec![0; bounds.len() + 1], sum: 0.0, count: 0 }
    }

    pub fn observe(&mut self, value: f64) {
        let bucket = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[bucket] += 1;
        self.sum += value;
        self.count += 1;
    }

    /// The upper bound of the bucket holding quantile `q` (None if empty or beyond
    /// the last bound).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q * self.count as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return self.bounds.get(i).copied();
            }
        }
        None
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckStats {
    pub target: String,
    pub check: String,
    pub ok: u64,
    pub failed: u64,
    /// Runs that could not judge the target (a local error on this host).
    #[serde(default)]
    pub local_errors: u64,
    pub latency_seconds: Histogram,
}

/// What the controller counts as it runs.
pub(crate) struct Recorder {
    checks: BTreeMap<(String, String), CheckStats>,
    map: MapStats,
    reloads: ReloadStats,
}

/// Signing in zones with `dnssec = "sign"`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DnssecStats {
    /// RRSIG records made (new RRsets, renewals, a new key) and RRsets left unsigned
    /// because signing or the map write failed.
    pub signed: u64,
    pub failed: u64,
    /// Signatures XDP holds, per zone apex.
    pub held: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MapStats {
    /// Publishes: each writes what changed in the names map, the view tries and settings.
    pub syncs: u64,
    pub entries_written: u64,
    pub entries_deleted: u64,
    pub sync_seconds: Histogram,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReloadStats {
    pub applied: u64,
    pub rejected: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            checks: BTreeMap::new(),
            map: MapStats {
                syncs: 0,
                entries_written: 0,
                entries_deleted: 0,
                sync_seconds: Histogram::new(SYNC_BUCKETS),
            },
            reloads: ReloadStats::default(),
        }
    }
}

impl Recorder {
    pub(crate) fn check(&mut self, target: &str, check: &str, outcome: &crate::health::checks::Outcome) {
        let stats = self.checks.entry((target.to_string(), check.to_string())).or_insert_with(|| CheckStats {
            target: target.to_string(),
            check: check.to_string(),
            ok: 0,
            failed: 0,
            local_errors: 0,
            latency_seconds: Histogram::new(CHECK_BUCKETS),
        });
        if outcome.local_error {
            stats.local_errors += 1;
            return;
        }
        if outcome.ok {
            stats.ok += 1;
        } else {
            stats.failed += 1;
        }
        stats.latency_seconds.observe(outcome.latency.as_secs_f64());
    }

    pub(crate) fn map_sync(&mut self, written: usize, deleted: usize, took: Duration) {
        self.map.syncs += 1;
        self.map.entries_written += written as u64;
        self.map.entries_deleted += deleted as u64;
        self.map.sync_seconds.observe(took.as_secs_f64());
    }

    pub(crate) fn reload(&mut self, applied: bool) {
        if applied {
            self.reloads.applied += 1;
        } else {
            self.reloads.rejected += 1;
        }
    }

    /// Forgets checks of targets no longer configured (after a reload).
    pub(crate) fn retain_targets(&mut self, keep: impl Fn(&str) -> bool) {
        self.checks.retain(|(target, _), _| keep(target));
    }

    /// Everything `ctl stats` and /metrics show, from the recorded numbers, the XDP
    /// verdict counters `xdp` and the per-entry answer counts `counts` (A, AAAA; in the
    /// order of `plan.entries`).
    pub(crate) fn stats(
        &self,
        config: &Config,
        state: &State,
        xdp: BTreeMap<String, u64>,
        plan: &NamePlan,
        counts: &[(u64, u64)],
        (signed, held): (crate::answers::signatures::SignStats, BTreeMap<String, u64>),
    ) -> Stats {
        let name_entries = plan.entries.len().min(counts.len());
        let names = name_stats(config, plan, &counts[..name_entries]);
        let (targets, groups) = state_stats(config, state);
        let mut stats = self.snapshot(xdp, names, name_entries, targets, groups);
        stats.dnssec = DnssecStats { signed: signed.signed as u64, failed: signed.failed as u64, held };
        stats
    }

    fn snapshot(
        &self,
        xdp: BTreeMap<String, u64>,
        names: Vec<NameStats>,
        name_entries: usize,
        targets: Vec<StateStats>,
        groups: Vec<StateStats>,
    ) -> Stats {
        Stats {
            xdp,
            names,
            name_entries,
            checks: self.checks.values().cloned().collect(),
            targets,
            groups,
            map: self.map.clone(),
            reloads: self.reloads.clone(),
            sockets: [
                ("control", &crate::sys::local_socket::CONTROL),
                ("powerdns", &crate::sys::local_socket::POWERDNS),
            ]
            .into_iter()
            .map(|(name, counters)| (name.to_string(), counters.snapshot()))
            .collect(),
            log_lines_lost: crate::sys::log_output::lines_lost(),
            dnssec: DnssecStats::default(),
            fleet: None,
            zones: Vec::new(),
            feeds: Vec::new(),
            tap: TapCounts::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NameStats {
    pub name: String,
    /// "default" or the view's name.
    pub view: String,
    pub a_answers: u64,
    pub aaaa_answers: u64,
}

/// A target's or group's state: up (healthy / qualifies), in answers (after overrides
/// and holds), and since when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StateStats {
    pub name: String,
    pub up: bool,
    pub in_answers: bool,
    pub since: SystemTime,
}

/// Everything `ctl stats` and /metrics show.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    /// XDP verdict counters (answered, pass_*), summed over CPUs.
    pub xdp: BTreeMap<String, u64>,
    /// Every (name, view) entry's answers while there are at most `STATS_NAMES_ALL`;
    /// above, the `STATS_NAMES_TOP` busiest, busiest first.
    pub names: Vec<NameStats>,
    /// (name, view) entries in the names map.
    #[serde(default)]
    pub name_entries: usize,
    pub checks: Vec<CheckStats>,
    pub targets: Vec<StateStats>,
    pub groups: Vec<StateStats>,
    pub map: MapStats,
    pub reloads: ReloadStats,
    /// Per local socket (control, powerdns): connections accepted and refused.
    #[serde(default)]
    pub sockets: BTreeMap<String, crate::sys::local_socket::CounterSnapshot>,
    /// Log writes that failed (stderr closed, full or blocked): the lines are lost.
    #[serde(default)]
    pub log_lines_lost: u64,
    #[serde(default)]
    pub dnssec: DnssecStats,
    /// `[fleet]`: the etcd connection and the pushed config (None without a fleet).
    #[serde(default)]
    pub fleet: Option<FleetStats>,
    /// Zones with `negative_answers`: what XDP holds of each.
    #[serde(default)]
    pub zones: Vec<crate::answers::zone_data::ZoneStats>,
    /// `[feeds]`: per feed, its batches and staleness.
    #[serde(default)]
    pub feeds: Vec<(String, crate::feeds::FeedStatus)>,
    /// The tap (dnstap, captures): packets read from XDP's ring, and those a listener
    /// had no room for (XDP's own ring drops are `xdp`'s `tap_dropped`).
    #[serde(default)]
    pub tap: TapCounts,
}

/// The tap's userspace counters, as `tap::TapStats` holds them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TapCounts {
    /// Packets paired from XDP's ring.
    pub packets: u64,
    /// Packets a capture session had no room for.
    pub capture_dropped: u64,
    /// Packets the dnstap writer had no room for, held back by `max_per_second`, or
    /// lost with a collector.
    pub dnstap_dropped: u64,
}

/// The fleet as metrics see it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct FleetStats {
    pub connected: bool,
    /// Overrides made here, waiting for etcd.
    pub pending_writes: u64,
    /// The pushed config revision this node runs (0: its own file), and the last one
    /// it refused (0: none).
    pub config_revision: i64,
    pub config_refused: i64,
    /// Other live nodes.
    pub nodes: u64,
}

impl From<&crate::fleet::FleetStatus> for FleetStats {
    fn from(s: &crate::fleet::FleetStatus) -> FleetStats {
        FleetStats {
            connected: s.connected,
            pending_writes: s.pending as u64,
            config_revision: s.config.revision,
            config_refused: s.config.refused,
            nodes: s.nodes.len() as u64,
        }
    }
}

/// Per (name, view) entry: every one up to `STATS_NAMES_ALL`, else the busiest
/// `STATS_NAMES_TOP`, busiest first.
fn name_stats(config: &Config, plan: &NamePlan, counts: &[(u64, u64)]) -> Vec<NameStats> {
    let mut order: Vec<usize> = (0..counts.len()).collect();
    if counts.len() > STATS_NAMES_ALL {
        let total = |i: &usize| std::cmp::Reverse(counts[*i].0 + counts[*i].1);
        order.select_nth_unstable_by_key(STATS_NAMES_TOP, total);
        order.truncate(STATS_NAMES_TOP);
        order.sort_by_key(total);
    }
    let view_names: std::collections::HashMap<u32, &str> =
        config.views.iter().map(|(name, v)| (v.id, name.as_str())).collect();
    let mut names: Vec<NameStats> = order
        .into_iter()
        .map(|i| {
            let entry = &plan.entries[i];
            NameStats {
                name: entry.name.to_string().trim_end_matches('.').to_string(),
                view: view_names.get(&entry.key.view).unwrap_or(&"default").to_string(),
                a_answers: counts[i].0,
                aaaa_answers: counts[i].1,
            }
        })
        .collect();
    if counts.len() <= STATS_NAMES_ALL {
        names.sort_by(|x, y| (x.view != "default", &x.view, &x.name).cmp(&(y.view != "default", &y.view, &y.name)));
    }
    names
}

/// Each target's and group's state: up, in answers (after overrides and holds), since.
fn state_stats(config: &Config, state: &State) -> (Vec<StateStats>, Vec<StateStats>) {
    let targets = state
        .targets
        .iter()
        .map(|(name, t)| StateStats {
            name: name.clone(),
            up: t.healthy,
            in_answers: state.target_eligible(name),
            since: t.since,
        })
        .collect();
    let groups = config
        .groups
        .keys()
        .map(|g| {
            let up = state.group_qualifies(config, g);
            let since = state.group_since(g).unwrap_or(SystemTime::UNIX_EPOCH);
            StateStats {
                name: g.clone(),
                up,
                in_answers: up && state.group_allowed(g) || state.group_forced_up(g),
                since,
            }
        })
        .collect();
    (targets, groups)
}

/// Up to this many (name, view) entries, stats and /metrics carry each one's answers.
/// Above it, a series per name would swamp Prometheus: /metrics leaves them out and
/// `ctl stats` shows the `STATS_NAMES_TOP` busiest.
pub(crate) const STATS_NAMES_ALL: usize = 10_000;
pub(crate) const STATS_NAMES_TOP: usize = 100;

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The Prometheus text exposition format (version 0.0.4), written by prometheus-client
/// from the snapshot (a collector: the controller owns the numbers, a scrape copies them).
pub(crate) fn prometheus_text(stats: &Stats) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Exported(stats.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Exported(Stats);

type Labels = Vec<(&'static str, String)>;

/// A family of counters (the encoder appends `_total` to `name`), one per label set.
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, u64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        if labels.is_empty() {
            family.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        } else {
            family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
    }
    Ok(())
}

fn gauges(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, f64)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

fn histograms<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (Labels, &'a Histogram)>,
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in samples {
        // Per-bucket counts; the encoder sums them and adds +Inf with the total.
        let buckets: Vec<(f64, u64)> = h.bounds.iter().copied().zip(h.counts.iter().copied()).collect();
        if labels.is_empty() {
            family.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        } else {
            family.encode_family(&labels)?.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        }
    }
    Ok(())
}

/// The XDP counters' metric families (`primwatch_xdp_<family>_total`), each with its
/// label's key and help; which counter goes where is `primwatch_common::Counters::METRICS`.
const XDP_FAMILIES: [(&str, &str, &str); 5] = [
    (
        "packets",
        "verdict",
        "Packets seen by XDP, by verdict (answered, or why passed to the kernel).",
    ),
    (
        "rrl_events",
        "event",
        "Answers response rate limiting let through: from an exempt prefix, or over the rate in log-only mode.",
    ),
    (
        "cookie_events",
        "event",
        "Answers to queries that presented a server cookie: verified (never rate limited), or bad (answered with a fresh one).",
    ),
    (
        "slow_path_events",
        "event",
        "Queries passed to the DNS server, by the slow-path guard's decision: passed (within the budgets), exempt, cookie (over a budget, with a verified server cookie), dropped (over a budget).",
    ),
    (
        "negative_answers",
        "event",
        "Negative answers XDP gave for names of unsigned zones it holds (negative_answers = true): nxdomain (the name exists nowhere in the zone), nodata (the name has no records of the type).",
    ),
];

/// `[feeds]`: batches by result, items and age of the batch in use, staleness.
fn feed_families(e: &mut DescriptorEncoder, feeds: &[(String, crate::feeds::FeedStatus)]) -> std::fmt::Result {
    let feed = |name: &String| vec![("feed", name.clone())];
    counters(
        e,
        "primwatch_feed_batches",
        "Feed batches by result: applied, refused (a bad line or data the config cannot take; the last good batch keeps serving), failed (the source gave none).",
        feeds.iter().flat_map(|(name, f)| {
            [("applied", f.applied), ("refused", f.refused), ("failed", f.failed)]
                .map(|(result, n)| (vec![("feed", name.clone()), ("result", result.to_string())], n))
        }),
    )?;
    gauges(
        e,
        "primwatch_feed_items",
        "Items of the feed's batch in use.",
        feeds.iter().map(|(name, f)| (feed(name), f.items as f64)),
    )?;
    gauges(
        e,
        "primwatch_feed_last_good_timestamp_seconds",
        "When the feed's batch in use was applied (Unix time; 0: none yet).",
        feeds.iter().map(|(name, f)| (feed(name), f.last_good_at.map_or(0.0, unix_seconds))),
    )?;
    gauges(
        e,
        "primwatch_feed_stale",
        "1 if the feed has had no good batch for its stale_after (its on_stale applies).",
        feeds.iter().map(|(name, f)| (feed(name), f.stale as u8 as f64)),
    )
}

impl Collector for Exported {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let stats = &self.0;
        let e = &mut encoder;
        let per_name = if stats.name_entries <= STATS_NAMES_ALL { stats.names.as_slice() } else { &[] };
        counters(
            e,
            "primwatch_xdp_answers",
            "Queries answered by XDP, per name, view and type.",
            per_name.iter().flat_map(|n| {
                [("A", n.a_answers), ("AAAA", n.aaaa_answers)].map(|(qtype, count)| {
                    (vec![("name", n.name.clone()), ("view", n.view.clone()), ("type", qtype.to_string())], count)
                })
            }),
        )?;
        // Every XDP counter, in the family and with the label `Counters::METRICS` gives it.
        for (family, label, help) in XDP_FAMILIES {
            let fields = primwatch_common::Counters::FIELD_NAMES.iter().zip(primwatch_common::Counters::METRICS);
            counters(
                e,
                &format!("primwatch_xdp_{family}"),
                help,
                fields.filter(|(_, (f, _))| *f == family).filter_map(|(field, (_, value))| {
                    Some((vec![(label, value.to_string())], *stats.xdp.get(*field)?))
                }),
            )?;
        }
        counters(
            e,
            "primwatch_check_results",
            "Health check runs per target, check and result.",
            stats.checks.iter().flat_map(|c| {
                [("ok", c.ok), ("fail", c.failed), ("local_error", c.local_errors)].map(|(result, n)| {
                    (vec![("target", c.target.clone()), ("check", c.check.clone()), ("result", result.to_string())], n)
                })
            }),
        )?;
        histograms(
            e,
            "primwatch_check_latency_seconds",
            "Health check duration per target and check.",
            stats
                .checks
                .iter()
                .map(|c| (vec![("target", c.target.clone()), ("check", c.check.clone())], &c.latency_seconds)),
        )?;
        for (kind, list) in [("target", &stats.targets), ("group", &stats.groups)] {
            let labelled = |s: &StateStats| vec![(kind, s.name.clone())];
            gauges(
                e,
                &format!("primwatch_{kind}_up"),
                &format!("1 if the {kind} is healthy (a group: has its minimum of eligible members)."),
                list.iter().map(|s| (labelled(s), s.up as u8 as f64)),
            )?;
            gauges(
                e,
                &format!("primwatch_{kind}_in_answers"),
                &format!("1 if the {kind} is in answers (after overrides and preempt holds)."),
                list.iter().map(|s| (labelled(s), s.in_answers as u8 as f64)),
            )?;
            gauges(
                e,
                &format!("primwatch_{kind}_last_change_timestamp_seconds"),
                &format!("When the {kind}'s state last changed (Unix time)."),
                list.iter().map(|s| (labelled(s), unix_seconds(s.since))),
            )?;
        }
        feed_families(e, &stats.feeds)?;
        counters(
            e,
            "primwatch_map_syncs",
            "Times the answers were recomputed and written to the BPF maps.",
            [(vec![], stats.map.syncs)],
        )?;
        counters(
            e,
            "primwatch_map_entry_updates",
            "Names map entries written or deleted.",
            [
                (vec![("op", "write".to_string())], stats.map.entries_written),
                (vec![("op", "delete".to_string())], stats.map.entries_deleted),
            ],
        )?;
        histograms(
            e,
            "primwatch_map_sync_duration_seconds",
            "Time to write one change of answers into the maps.",
            [(vec![], &stats.map.sync_seconds)],
        )?;
        counters(
            e,
            "primwatch_reloads",
            "Config reloads by result.",
            [
                (vec![("result", "applied".to_string())], stats.reloads.applied),
                (vec![("result", "rejected".to_string())], stats.reloads.rejected),
            ],
        )?;
        counters(
            e,
            "primwatch_dnssec_signatures_made",
            "RRSIG records made for XDP's answers in signed zones (new RRsets, renewals, a new key).",
            [(vec![], stats.dnssec.signed)],
        )?;
        counters(
            e,
            "primwatch_dnssec_sign_failures",
            "RRsets left unsigned because signing or the map write failed (their DO=1 queries go to the DNS server).",
            [(vec![], stats.dnssec.failed)],
        )?;
        gauges(
            e,
            "primwatch_dnssec_signatures",
            "RRSIG records XDP holds, per signed zone.",
            stats.dnssec.held.iter().map(|(zone, n)| (vec![("zone", zone.clone())], *n as f64)),
        )?;
        gauges(
            e,
            "primwatch_zone_serial",
            "The SOA serial of the zone data XDP denies names from (zones with negative_answers; absent: none held).",
            stats.zones.iter().filter_map(|z| Some((vec![("zone", z.zone.clone())], f64::from(z.serial?)))),
        )?;
        gauges(
            e,
            "primwatch_zone_names",
            "Names XDP holds per zone with negative_answers (0: its denials come from the DNS server).",
            stats.zones.iter().map(|z| (vec![("zone", z.zone.clone())], z.names as f64)),
        )?;
        gauges(
            e,
            "primwatch_zone_check_failures",
            "Failed SOA checks or transfers in a row, per zone with negative_answers.",
            stats.zones.iter().map(|z| (vec![("zone", z.zone.clone())], f64::from(z.failures))),
        )?;
        if let Some(f) = &stats.fleet {
            gauges(
                e,
                "primwatch_fleet_connected",
                "1 while this node is connected to etcd; 0 while it serves from its last-known fleet state.",
                [(vec![], f64::from(u8::from(f.connected)))],
            )?;
            gauges(
                e,
                "primwatch_fleet_pending_writes",
                "Overrides made on this node that wait for etcd.",
                [(vec![], f.pending_writes as f64)],
            )?;
            gauges(
                e,
                "primwatch_fleet_config_revision",
                "The pushed config revision this node runs (0: its own file), and the last one it refused (0: none).",
                [
                    (vec![("config", "running".to_string())], f.config_revision as f64),
                    (vec![("config", "refused".to_string())], f.config_refused as f64),
                ],
            )?;
            gauges(e, "primwatch_fleet_nodes", "Other live nodes of the fleet.", [(vec![], f.nodes as f64)])?;
        }
        counters(
            e,
            "primwatch_tap_packets",
            "Packets the tap read from XDP's ring (dnstap samples and captures), and those dropped for a listener that had no room (dnstap: also held back by max_per_second or lost with a collector).",
            [
                (vec![("result", "read".to_string())], stats.tap.packets),
                (vec![("result", "capture_dropped".to_string())], stats.tap.capture_dropped),
                (vec![("result", "dnstap_dropped".to_string())], stats.tap.dnstap_dropped),
            ],
        )?;
        counters(
            e,
            "primwatch_log_lines_lost",
            "Log lines that could not be written to stderr (closed, full or blocked) and were dropped.",
            [(vec![], stats.log_lines_lost)],
        )?;
        counters(
            e,
            "primwatch_socket_connections",
            "Connections to the control and PowerDNS sockets by result (refused: not root or the socket's group, or every slot busy).",
            stats.sockets.iter().flat_map(|(socket, c)| {
                [
                    ("accepted", c.accepted),
                    ("refused_peer", c.refused_peer),
                    ("refused_busy", c.refused_busy),
                    ("closed_idle", c.closed_idle),
                    ("accept_error", c.accept_errors),
                ]
                .map(|(result, n)| (vec![("socket", socket.clone()), ("result", result.to_string())], n))
            }),
        )
    }
}

/// The latest snapshot of the controller's stats, refreshed once a second by
/// `refresh_snapshots`; scrapes read it and never wait on the controller's loop.
pub(crate) type Snapshot = tokio::sync::watch::Receiver<Option<std::sync::Arc<Stats>>>;

/// How often the snapshot scrapes read is taken (so values are at most this old).
pub(crate) const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Connections served at once; more are closed at once (a scraper needs one).
pub(crate) const MAX_CONNECTIONS: usize = 32;

/// Asks `take` for the controller's stats every `SNAPSHOT_EVERY` and publishes them
/// for scrapes; ends when the controller is gone.
pub(crate) fn refresh_snapshots<F, Fut>(mut take: F) -> Snapshot
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<Option<Stats>>> + Send,
{
    let (tx, rx) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SNAPSHOT_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            match take().await {
                None => return, // the controller stopped
                Some(Some(stats)) => {
                    let _ = tx.send(Some(std::sync::Arc::new(stats)));
                }
                Some(None) => {}
            }
        }
    });
    rx
}

/// Serves GET /metrics on `address` (hyper's HTTP/1 server, one request per
/// connection) from `snapshot`. Never fails: an address that cannot be bound (taken by
/// another process, not yet configured) is retried in the background, said once per
/// distinct error, so that no local user can keep the controller from starting.
pub(crate) fn serve(address: SocketAddr, snapshot: Snapshot) {
    let listener = crate::sys::http_listener::Listener {
        what: "metrics listener".into(),
        bound: "Prometheus metrics on /metrics".into(),
        max_connections: MAX_CONNECTIONS,
        // A scraper that stops reading must not hold a slot forever.
        limit: Duration::from_secs(15),
    };
    tokio::spawn(crate::sys::http_listener::serve(address, listener, move |request| {
        respond(request, snapshot.clone())
    }));
}

async fn respond(
    request: hyper::Request<hyper::body::Incoming>,
    snapshot: Snapshot,
) -> Result<hyper::Response<http_body_util::Full<bytes::Bytes>>, std::convert::Infallible> {
    use hyper::{Method, StatusCode};
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => {
            let stats = snapshot.borrow().clone();
            match stats {
                Some(stats) => (StatusCode::OK, prometheus_text(&stats)),
                None => (StatusCode::SERVICE_UNAVAILABLE, "no stats yet\n".to_string()),
            }
        }
        (&Method::GET, _) => (StatusCode::NOT_FOUND, "try /metrics\n".to_string()),
        _ => (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_string()),
    };
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let mut h = Histogram::new(&[0.001, 0.01, 0.1]);
        for v in [0.0005, 0.002, 0.003, 0.05, 7.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, [1, 2, 1, 1]);
        assert_eq!(h.count, 5);
        assert_eq!(h.quantile(0.5), Some(0.01));
        assert_eq!(h.quantile(0.2), Some(0.001));
        assert_eq!(h.quantile(1.0), None, "beyond the last bound");
    }

    #[test]
    fn prometheus_text_has_cumulative_buckets_and_escaped_labels() {
        let mut r = Recorder::default();
        let run = |ok, local_error, ms| crate::health::checks::Outcome {
            ok,
            local_error,
            detail: String::new(),
            latency: Duration::from_millis(ms),
            tcp: None,
        };
        r.check("web\"1", "http", &run(true, false, 2));
        r.check("web\"1", "http", &run(false, false, 20));
        r.check("web\"1", "http", &run(false, true, 0));
        r.map_sync(3, 1, Duration::from_micros(80));
        let names =
            vec![NameStats { name: "www.example.test".into(), view: "default".into(), a_answers: 5, aaaa_answers: 0 }];
        let xdp = [("answered".to_string(), 5u64)].into_iter().collect();
        let text = prometheus_text(&r.snapshot(xdp, names, 1, vec![], vec![]));
        assert!(
            text.contains("primwatch_xdp_answers_total{name=\"www.example.test\",view=\"default\",type=\"A\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("primwatch_check_results_total{target=\"web\\\"1\",check=\"http\",result=\"fail\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("primwatch_check_results_total{target=\"web\\\"1\",check=\"http\",result=\"local_error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("primwatch_check_latency_seconds_bucket{target=\"web\\\"1\",check=\"http\",le=\"0.0025\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("primwatch_check_latency_seconds_bucket{target=\"web\\\"1\",check=\"http\",le=\"0.025\"} 2"),
            "{text}"
        );
        assert!(text.contains("primwatch_map_entry_updates_total{op=\"write\"} 3"));
        assert!(text.contains("primwatch_map_sync_duration_seconds_bucket{le=\"0.0001\"} 1"), "{text}");
        assert!(text.contains("primwatch_xdp_packets_total{verdict=\"answered\"} 5"));
    }

    #[test]
    fn per_name_series_are_left_out_above_the_limit() {
        let r = Recorder::default();
        let names = |n: usize| {
            (0..n)
                .map(|i| NameStats {
                    name: format!("n{i}.test"),
                    view: "default".into(),
                    a_answers: 1,
                    aaaa_answers: 0,
                })
                .collect::<Vec<_>>()
        };
        let series = |text: &str| text.lines().filter(|l| l.starts_with("primwatch_xdp_answers_total{")).count();
        let all =
            prometheus_text(&r.snapshot(BTreeMap::new(), names(STATS_NAMES_ALL), STATS_NAMES_ALL, vec![], vec![]));
        assert_eq!(series(&all), 2 * STATS_NAMES_ALL, "A and AAAA per name");
        let top = names(STATS_NAMES_TOP);
        let over = prometheus_text(&r.snapshot(BTreeMap::new(), top, STATS_NAMES_ALL + 1, vec![], vec![]));
        assert_eq!(series(&over), 0, "no per-name series above {STATS_NAMES_ALL} entries");
        assert!(over.contains("# TYPE primwatch_xdp_answers_total counter"));
    }
}
