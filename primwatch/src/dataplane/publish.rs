//! Stage 4b: writes the desired names and record sets into the BPF maps.
//!
//! Record sets are written once per change however many names share them, each into
//! the slot of its two that is not in use, then made current by flipping the set's
//! version (a 4-byte array write), so a query is answered from one whole set, old or
//! new, never a mix. A names-map update swaps a whole element under RCU; an entry is
//! only rewritten when what it holds changed (a new name, another set, other flags), and
//! names no longer wanted are deleted after the others are in.

use std::{
    collections::{BTreeMap, HashMap as StdHashMap, HashSet},
    sync::Arc,
};

use anyhow::{Context as _, Result};
use std::os::fd::AsFd as _;

use aya::maps::{Array, HashMap, IterableMap as _, MapData, PerCpuArray, PerCpuValues};
use ipnet::IpNet;
use primwatch_common::{
    cookie::{secret_from_bytes, CookieSecret, CookieSettings},
    name_answers_index, set_index, AnswerSet, NameEntry, NameKey, NsidOption, RrlSettings, Settings, SlowPathSettings,
    ViewMatch,
};

use crate::{
    answers::records::{Desired, NamePlan, PlannedName},
    config::{Config, SetSpec},
    dns::view_index::ViewIndex,
};

/// Writes the names map (`names`), each entry with its slot of answer counters
/// (`name_answers`), and through `sets` the record sets the entries name.
pub struct NameMapWriter {
    map: HashMap<MapData, NameKey, NameEntry>,
    /// Per-entry answer counters (NAME_ANSWERS), two per slot.
    answers: PerCpuArray<MapData, u64>,
    /// What the names map holds. The writer is the map's only writer from its creation
    /// (the loader makes every map fresh), so this is known without reading it back.
    holds: Holds,
    /// Counter slots no entry uses, and the first slot never used (slots from there on
    /// are still zero from the map's creation).
    free_slots: Vec<u32>,
    next_slot: u32,
    /// Entries the names map holds at most (its size, from `server.max_names`).
    capacity: u32,
    /// The `rrsets` and `set_versions` maps' writer.
    pub sets: RecordSetWriter,
}

/// The names map's contents as the writer knows them.
enum Holds {
    /// Nothing: the map is as the loader created it.
    Empty,
    /// Exactly `plan`'s entries, naming the set ids in `ids` (per spec), each entry
    /// counting into its slot in `slots` (parallel to `plan.entries`).
    Plan { plan: Arc<NamePlan>, ids: Vec<(u32, u32)>, slots: Vec<u32> },
    /// A write failed part way: the next sync rewrites every entry and reads the map's
    /// keys back to delete the rest.
    Unknown,
}

/// What one `NameMapWriter::sync` wrote, deleted and left.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Name entries written, deleted and left as they were.
    pub written: usize,
    /// Name entries deleted (no longer wanted).
    pub deleted: usize,
    /// Name entries left as they were.
    pub unchanged: usize,
    /// Record sets rewritten (a health change costs this many writes, not one per name).
    pub sets_written: usize,
}

impl NameMapWriter {
    /// A writer for maps as the loader created them (the names map empty).
    pub fn new(
        map: HashMap<MapData, NameKey, NameEntry>,
        answers: PerCpuArray<MapData, u64>,
        sets: RecordSetWriter,
    ) -> Result<Self> {
        let capacity = answers.len() / primwatch_common::NAME_ANSWERS_PER_SLOT as u32;
        Ok(NameMapWriter { map, answers, holds: Holds::Empty, free_slots: Vec::new(), next_slot: 0, capacity, sets })
    }

    /// A counter slot for a new entry, its counters zero.
    fn new_slot(&mut self) -> Result<u32> {
        if let Some(slot) = self.free_slots.pop() {
            // Used before: zero what the previous entry counted.
            let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
            for index in [name_answers_index(slot, false), name_answers_index(slot, true)] {
                let zeros = PerCpuValues::try_from(vec![0u64; cpus])?;
                self.answers.set(index, zeros, 0).context("zeroing an answer counter")?;
            }
            return Ok(slot);
        }
        anyhow::ensure!(
            self.next_slot < self.capacity,
            "more than {} names map entries (server.max_names)",
            self.capacity
        );
        self.next_slot += 1;
        Ok(self.next_slot - 1)
    }

    /// The plan the map holds and the answers XDP gave from each of its entries: (A,
    /// AAAA) summed over CPUs, parallel to `plan.entries`. Read in batches: a million
    /// names' counters in well under a second.
    pub fn answer_counts(&self) -> (Arc<NamePlan>, Vec<(u64, u64)>) {
        let Holds::Plan { plan, slots, .. } = &self.holds else { return (Arc::default(), Vec::new()) };
        let cpus = aya::util::nr_cpus().unwrap_or(1);
        let len = self.next_slot * primwatch_common::NAME_ANSWERS_PER_SLOT as u32;
        let sums = crate::dataplane::map_batch::per_cpu_u64_sums(self.answers.map().fd().as_fd(), len, cpus)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %format!("{e:#}"), "reading the per-name answer counters");
                vec![0; len as usize]
            });
        let at = |index: u32| sums.get(index as usize).copied().unwrap_or(0);
        let counts = slots
            .iter()
            .map(|&slot| (at(name_answers_index(slot, false)), at(name_answers_index(slot, true))))
            .collect();
        (plan.clone(), counts)
    }

    /// What the signing thread needs of the map as written: the plan, slots, set ids
    /// and sets (None while the contents are unknown).
    pub fn sign_request(
        &self,
        zones: Vec<(crate::dns::name::DnsName, Arc<crate::dns::dnssec::ZoneSigner>)>,
    ) -> Option<crate::answers::signatures::SignRequest> {
        let Holds::Plan { plan, ids, slots } = &self.holds else { return None };
        Some(crate::answers::signatures::SignRequest {
            plan: plan.clone(),
            slots: slots.clone(),
            ids: ids.clone(),
            sets: self.sets.written.iter().map(|(id, (_, set))| (*id, **set)).collect(),
            zones,
        })
    }

    /// Writes one entry (one atomic element replacement in the kernel).
    fn write_entry(&mut self, key: &NameKey, entry: &NameEntry) -> Result<()> {
        self.map
            .insert(key, entry, 0)
            .with_context(|| format!("writing name hash {:#018x} to the names map", key.name_hash))
    }

    /// Writes an entry the plan does not hold (tests plant malformed ones); the next
    /// sync then rewrites every entry and deletes the others.
    pub fn insert(&mut self, key: &NameKey, entry: &NameEntry) -> Result<()> {
        self.holds = Holds::Unknown;
        self.write_entry(key, entry)
    }

    /// The entry the map holds for `key`.
    pub fn entry(&self, key: &NameKey) -> Option<NameEntry> {
        self.map.get(key, 0).ok()
    }

    /// Makes the maps hold `desired` (see `sync_then`).
    pub fn sync(&mut self, desired: Desired) -> Result<SyncStats> {
        self.sync_then(desired, || ())
    }

    /// As `sync`, calling `after_writes` as soon as the changed sets and entries are in
    /// (before entries no longer wanted are deleted), for whatever must follow the map
    /// closely.
    ///
    /// Cost: the changed sets alone when handed the plan written last (a health change);
    /// otherwise one pass over both plans, sorted by key, writing only the entries that
    /// differ (a reload that adds one name writes one entry).
    pub fn sync_then(&mut self, desired: Desired, after_writes: impl FnOnce()) -> Result<SyncStats> {
        let mut stats = SyncStats::default();
        let plan = desired.plan;
        // Sets first: an entry never names a set that is not written.
        let (ids, sets_written) = self.sets.sync(&plan.specs, &desired.sets)?;
        stats.sets_written = sets_written;
        if let Holds::Plan { plan: old, ids: old_ids, .. } = &self.holds {
            if Arc::ptr_eq(old, &plan) && *old_ids == ids {
                // Same config: every entry already names its spec's sets (ids are kept
                // per spec), so a health change costs the changed sets alone.
                stats.unchanged = plan.entries.len();
                after_writes();
                return Ok(stats);
            }
        }
        // Until this sync is through, a failure leaves the map's contents unknown.
        let before = std::mem::replace(&mut self.holds, Holds::Unknown);
        let known = !matches!(before, Holds::Unknown);
        let (old_entries, old_ids, old_slots): (&[PlannedName], &[(u32, u32)], &[u32]) = match &before {
            Holds::Plan { plan, ids, slots } => (&plan.entries, ids, slots),
            Holds::Empty | Holds::Unknown => (&[], &[], &[]),
        };
        if !known {
            // Every slot used so far is free again, and zeroed when taken.
            self.free_slots = (0..self.next_slot).rev().collect();
        }
        let mut slots = Vec::with_capacity(plan.entries.len());
        let mut gone = Vec::new();
        let mut old = old_entries.iter().zip(old_slots).peekable();
        for want in &plan.entries {
            // Entries of the old plan that sort before this one are no longer wanted.
            while let Some((o, &slot)) = old.next_if(|(o, _)| o.key < want.key) {
                gone.push((o.key, slot));
            }
            let (a_set, aaaa_set) = ids[want.set as usize];
            let kept = old.next_if(|(o, _)| o.key == want.key);
            let slot = match kept {
                Some((o, &slot)) => {
                    let same =
                        o.name == want.name && o.flags == want.flags && old_ids[o.set as usize] == (a_set, aaaa_set);
                    slots.push(slot);
                    if same {
                        stats.unchanged += 1;
                        continue;
                    }
                    slot
                }
                None => {
                    let slot = self.new_slot()?;
                    slots.push(slot);
                    slot
                }
            };
            let wire = want.name.wire();
            let mut entry = NameEntry {
                name_len: wire.len() as u32,
                stats_slot: slot,
                flags: want.flags,
                a_set,
                aaaa_set,
                _pad: 0,
                name: [0; primwatch_common::NAME_BUF_LEN],
            };
            entry.name[..wire.len()].copy_from_slice(wire);
            self.write_entry(&want.key, &entry)?;
            stats.written += 1;
        }
        gone.extend(old.map(|(o, &slot)| (o.key, slot)));
        after_writes();
        for (key, slot) in gone {
            self.map.remove(&key).with_context(|| format!("deleting name hash {:#018x}", key.name_hash))?;
            self.free_slots.push(slot);
            stats.deleted += 1;
        }
        if !known {
            // After a failure: whatever else the map holds goes.
            let present: Vec<NameKey> = self.map.keys().filter_map(|k| k.ok()).collect();
            for key in present.into_iter().filter(|k| plan.get(k).is_none()) {
                self.map.remove(&key).with_context(|| format!("deleting name hash {:#018x}", key.name_hash))?;
                stats.deleted += 1;
            }
        }
        drop(before);
        // Only now that no entry names them: the sets of specs no longer used.
        self.sets.release_unused(plan.specs.iter().collect());
        self.holds = Holds::Plan { plan, ids, slots };
        Ok(stats)
    }
}

/// Every map an answer is built from, written in the one safe order: record sets, then
/// name entries (an entry never names a set not yet written), then — once per config —
/// the view tries (a prefix never points at a view whose entries are missing) and the
/// RRL settings. The controller and the test harness both publish through this.
pub struct AnswerMaps {
    /// The names map's writer (which writes the record sets too).
    pub names: NameMapWriter,
    views: ViewMapWriter,
    rrl: RrlMapWriter,
    /// The `rrsigs` map's writer, a signing thread of its own.
    pub signatures: crate::answers::signatures::SignatureWriter,
    /// The view tries and RRL settings hold the current config's.
    config_written: bool,
}

impl AnswerMaps {
    /// The writers, as `Dataplane::answer_maps` takes them; the first `publish` writes the view
    /// tries and RRL settings.
    pub fn new(
        names: NameMapWriter,
        views: ViewMapWriter,
        rrl: RrlMapWriter,
        signatures: crate::answers::signatures::SignatureWriter,
    ) -> AnswerMaps {
        AnswerMaps { names, views, rrl, signatures, config_written: false }
    }

    /// Writes `desired` for `config`, calling `after_names` as soon as the sets and
    /// entries are in (see `NameMapWriter::sync_then`); the tries and settings follow
    /// when the config changed since they were written; then the signing thread is
    /// asked to sign signed zones' new RRsets (until one is in, XDP passes DO=1
    /// queries for it on: a failover is never held up by signing).
    pub fn publish(&mut self, config: &Config, desired: Desired, after_names: impl FnOnce()) -> Result<SyncStats> {
        let stats = self.names.sync_then(desired, after_names)?;
        if !self.config_written {
            self.views.sync(&config.view_index, config.wildcard_names(), config.sticky_prefixes())?;
            self.views.nsid.set(0, NsidOption::new(&config.nsid), 0).context("writing nsid")?;
            self.rrl.sync(config.rrl.as_ref(), &config.slow_path)?;
            self.config_written = true;
        }
        let zones = config.signed_zones();
        if !zones.is_empty() || !self.signatures.is_empty() {
            if let Some(request) = self.names.sign_request(zones) {
                self.signatures.request(request);
            }
        }
        Ok(stats)
    }

    /// The next publish writes the view tries and RRL settings again (another config).
    pub fn config_changed(&mut self) {
        self.config_written = false;
    }
}

/// The `rrsets` and `set_versions` maps: every spec's A and AAAA sets, by set id.
pub struct RecordSetWriter {
    rrsets: Array<MapData, AnswerSet>,
    versions: Array<MapData, u32>,
    /// Sets the maps hold (`set_versions`' size, from `server.max_record_sets`).
    capacity: u32,
    /// Each spec's (A, AAAA) set ids.
    ids: StdHashMap<SetSpec, (u32, u32)>,
    /// Each set's current version and what it holds (with its generation).
    written: StdHashMap<u32, (u32, Box<AnswerSet>)>,
    free: Vec<u32>,
    next: u32,
    /// The generation the next set written gets (see `AnswerSet::generation`).
    next_generation: u32,
}

fn set_bytes(set: &AnswerSet) -> &[u8] {
    // SAFETY: AnswerSet is repr(C) plain data with explicit padding fields.
    unsafe { std::slice::from_raw_parts((set as *const AnswerSet).cast::<u8>(), std::mem::size_of::<AnswerSet>()) }
}

impl RecordSetWriter {
    /// A writer for maps as the loader created them (nothing written); Err if `rrsets` has fewer than
    /// two slots per `set_versions` entry.
    pub fn new(rrsets: Array<MapData, AnswerSet>, versions: Array<MapData, u32>) -> Result<Self> {
        let capacity = versions.len();
        anyhow::ensure!(rrsets.len() >= 2 * capacity, "rrsets holds fewer than two slots per set");
        Ok(RecordSetWriter {
            rrsets,
            versions,
            capacity,
            ids: StdHashMap::new(),
            written: StdHashMap::new(),
            free: Vec::new(),
            next: 0,
            next_generation: 1,
        })
    }

    fn allocate(&mut self) -> Result<u32> {
        if let Some(id) = self.free.pop() {
            return Ok(id);
        }
        anyhow::ensure!(self.next < self.capacity, "more than {} record sets (server.max_record_sets)", self.capacity);
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Writes `set` as set `id` if it changed: into the slot not in use, then flips.
    /// A written set gets a generation no set had before.
    fn write(&mut self, id: u32, set: &AnswerSet) -> Result<bool> {
        let mut set = *set;
        let version = match self.written.get(&id) {
            Some((_, old)) => {
                set.generation = old.generation;
                if set_bytes(old) == set_bytes(&set) {
                    return Ok(false);
                }
                self.written[&id].0 ^ 1
            }
            None => 0,
        };
        set.generation = self.next_generation;
        self.next_generation = self.next_generation.checked_add(1).context("set generations ran out")?;
        self.rrsets.set(set_index(id, version), set, 0).context("writing rrsets")?;
        self.versions.set(id, version, 0).context("writing set_versions")?;
        self.written.insert(id, (version, Box::new(set)));
        Ok(true)
    }

    /// What set `id` holds now, as XDP reads it.
    pub fn current(&self, id: u32) -> Option<&AnswerSet> {
        self.written.get(&id).map(|(_, set)| &**set)
    }

    /// Writes every spec's sets (changed ones only); returns their (A, AAAA) ids, in
    /// `sets`' order, and how many sets were written.
    pub fn sync(&mut self, specs: &[SetSpec], sets: &[(AnswerSet, AnswerSet)]) -> Result<(Vec<(u32, u32)>, usize)> {
        anyhow::ensure!(specs.len() == sets.len(), "{} specs, {} set pairs", specs.len(), sets.len());
        let mut ids = Vec::with_capacity(sets.len());
        let mut written = 0;
        for (spec, (a, aaaa)) in specs.iter().zip(sets) {
            let pair = match self.ids.get(spec) {
                Some(pair) => *pair,
                None => {
                    let pair = (self.allocate()?, self.allocate()?);
                    self.ids.insert(spec.clone(), pair);
                    pair
                }
            };
            written += self.write(pair.0, a)? as usize + self.write(pair.1, aaaa)? as usize;
            ids.push(pair);
        }
        Ok((ids, written))
    }

    /// Frees the ids of specs not in `wanted` for reuse (no entry names them any more).
    fn release_unused(&mut self, wanted: HashSet<&SetSpec>) {
        let gone: Vec<SetSpec> = self.ids.keys().filter(|s| !wanted.contains(s)).cloned().collect();
        for spec in gone {
            if let Some((a, aaaa)) = self.ids.remove(&spec) {
                self.free.extend([a, aaaa]);
            }
        }
    }
}

/// Writes the source-prefix → view tries and the settings entry (which lookups the
/// XDP program may skip).
pub struct ViewMapWriter {
    /// The IPv4 prefix → view trie (`views_v4`).
    pub v4: aya::maps::lpm_trie::LpmTrie<MapData, [u8; 4], ViewMatch>,
    /// The IPv6 prefix → view trie (`views_v6`).
    pub v6: aya::maps::lpm_trie::LpmTrie<MapData, [u8; 16], ViewMatch>,
    /// The `settings` map: its one entry.
    pub settings: aya::maps::Array<MapData, Settings>,
    /// The `nsid` map: `server.nsid` as the option XDP's replies carry.
    pub nsid: aya::maps::Array<MapData, NsidOption>,
}

impl ViewMapWriter {
    /// Makes the tries hold exactly `views`' prefixes. Call after the names map has
    /// the views' entries (a prefix whose view has no entry falls back to the default).
    pub fn sync(&mut self, index: &ViewIndex, wildcard_names: usize, sticky: (u32, u32)) -> Result<()> {
        let (want4, want6) = by_family(
            index.entries().map(|found| (found.prefix, ViewMatch { view: found.id, prefix_len: found.scope as u32 })),
        );
        sync_trie(&mut self.v4, &want4, "views_v4")?;
        sync_trie(&mut self.v6, &want6, "views_v6")?;
        let settings = Settings {
            view_prefixes: (want4.len() + want6.len()) as u32,
            wildcard_names: wildcard_names as u32,
            scope_without_view_v4: index.scope_without_view(primwatch_common::Family::V4) as u32,
            scope_without_view_v6: index.scope_without_view(primwatch_common::Family::V6) as u32,
            sticky_prefix_v4: sticky.0,
            sticky_prefix_v6: sticky.1,
        };
        self.settings.set(0, settings, 0).context("writing settings")?;
        Ok(())
    }
}

/// Writes `[rrl]` and `[slow_path]` into XDP's maps: the exempt prefixes, then the
/// settings (which turn limiting on or off), once per start or reload.
pub struct RrlMapWriter {
    /// `[rrl]` as XDP reads it (`rrl_settings`, one entry).
    pub settings: aya::maps::Array<MapData, RrlSettings>,
    /// `rrl.exempt`'s prefixes.
    pub exempt: ExemptTries,
    /// `[slow_path]` as XDP reads it (`slow_path_settings`, one entry).
    pub slow_path_settings: aya::maps::Array<MapData, SlowPathSettings>,
    /// `slow_path.exempt`'s prefixes.
    pub slow_path_exempt: ExemptTries,
}

/// One exempt list as XDP looks it up: a longest-prefix trie per family.
pub struct ExemptTries {
    /// The IPv4 prefixes (each with the value 1).
    pub v4: aya::maps::lpm_trie::LpmTrie<MapData, [u8; 4], u32>,
    /// The IPv6 prefixes (each with the value 1).
    pub v6: aya::maps::lpm_trie::LpmTrie<MapData, [u8; 16], u32>,
    /// For error messages: the pins' names ("rrl_exempt").
    pub name: &'static str,
}

impl ExemptTries {
    /// Makes the tries hold exactly `exempt`: adds first, then prunes the rest.
    fn sync(&mut self, exempt: &[IpNet]) -> Result<()> {
        let (want4, want6) = by_family(exempt.iter().map(|n| (*n, 1u32)));
        sync_trie(&mut self.v4, &want4, &format!("{}_v4", self.name))?;
        sync_trie(&mut self.v6, &want6, &format!("{}_v6", self.name))
    }
}

/// An LPM trie's wanted keys: (prefix length, network address) → value.
type TrieKeys<const N: usize, V> = BTreeMap<(u32, [u8; N]), V>;

/// Splits prefixes (with their values) into the IPv4 and IPv6 tries' wanted keys; a
/// prefix given twice keeps its last value.
fn by_family<V>(prefixes: impl Iterator<Item = (IpNet, V)>) -> (TrieKeys<4, V>, TrieKeys<16, V>) {
    let (mut v4, mut v6) = (BTreeMap::new(), BTreeMap::new());
    for (prefix, value) in prefixes {
        match prefix {
            IpNet::V4(n) => v4.insert((n.prefix_len() as u32, n.network().octets()), value),
            IpNet::V6(n) => v6.insert((n.prefix_len() as u32, n.network().octets()), value),
        };
    }
    (v4, v6)
}

/// Makes `trie` (the map `name`) hold exactly `want`: every wanted key is written first,
/// then the keys not wanted are pruned, so a lookup meanwhile finds the old prefix or the
/// new one, never a hole. The one LPM sync for views, RRL and slow-path exemptions.
fn sync_trie<const N: usize, V: aya::Pod>(
    trie: &mut aya::maps::lpm_trie::LpmTrie<MapData, [u8; N], V>,
    want: &TrieKeys<N, V>,
    name: &str,
) -> Result<()> {
    use aya::maps::lpm_trie::Key;
    for ((len, network), value) in want {
        trie.insert(&Key::new(*len, *network), value, 0).with_context(|| format!("writing {name}"))?;
    }
    let stale: Vec<_> =
        trie.keys().filter_map(|k| k.ok()).filter(|k| !want.contains_key(&(k.prefix_len(), k.data()))).collect();
    for key in stale {
        trie.remove(&key).with_context(|| format!("pruning {name}"))?;
    }
    Ok(())
}

impl RrlMapWriter {
    /// Writes `rrl` (None: off) and `slow_path`: each one's exempt prefixes first, then its
    /// settings.
    pub fn sync(
        &mut self,
        rrl: Option<&crate::config::RrlConfig>,
        slow_path: &crate::config::slow_path::SlowPathConfig,
    ) -> Result<()> {
        self.exempt.sync(rrl.map(|r| r.exempt.as_slice()).unwrap_or_default())?;
        self.settings.set(0, rrl_settings(rrl), 0).context("writing rrl_settings")?;
        self.slow_path_exempt.sync(&slow_path.exempt)?;
        self.slow_path_settings.set(0, slow_path_settings(slow_path), 0).context("writing slow_path_settings")?;
        Ok(())
    }
}

/// A prefix length as a mask over the address bytes, read as native-endian words.
fn prefix_masks(ipv4_len: u8, ipv6_len: u8) -> (u32, [u64; 2]) {
    let v4 = (u32::MAX.checked_shl(32 - ipv4_len as u32).unwrap_or(0)).to_be_bytes();
    let v6 = (u128::MAX.checked_shl(128 - ipv6_len as u32).unwrap_or(0)).to_be_bytes();
    (
        u32::from_ne_bytes(v4),
        [
            u64::from_ne_bytes(v6[..8].try_into().expect("8 bytes")),
            u64::from_ne_bytes(v6[8..].try_into().expect("8 bytes")),
        ],
    )
}

/// Bit 0 if `exempt` holds an IPv4 prefix, bit 1 if an IPv6 one.
fn exempt_families(exempt: &[IpNet]) -> u32 {
    exempt.iter().map(|n| if n.addr().is_ipv6() { 2 } else { 1 }).fold(0, |a, b| a | b)
}

/// XDP's view of `[slow_path]`.
pub fn slow_path_settings(slow_path: &crate::config::slow_path::SlowPathConfig) -> SlowPathSettings {
    let (ipv4_mask, ipv6_mask) = prefix_masks(slow_path.ipv4_prefix_len, slow_path.ipv6_prefix_len);
    SlowPathSettings {
        queries_per_second: slow_path.queries_per_second,
        prefix_queries_per_second: slow_path.prefix_queries_per_second,
        burst_seconds: slow_path.burst_seconds,
        exempt_families: exempt_families(&slow_path.exempt),
        ipv4_mask,
        slip: slow_path.slip,
        ipv6_mask,
    }
}

/// XDP's view of `[rrl]`: the prefix lengths as masks over the address bytes (read by
/// the program as native-endian words).
pub fn rrl_settings(rrl: Option<&crate::config::RrlConfig>) -> RrlSettings {
    let Some(rrl) = rrl else { return RrlSettings::default() };
    let (ipv4_mask, ipv6_mask) = prefix_masks(rrl.ipv4_prefix_len, rrl.ipv6_prefix_len);
    RrlSettings {
        responses_per_second: rrl.responses_per_second,
        window_seconds: rrl.window_seconds,
        slip: rrl.slip,
        log_only: rrl.log_only as u32,
        ipv4_mask,
        exempt_families: exempt_families(&rrl.exempt),
        ipv6_mask,
        nodata_per_second: rrl.nodata_per_second,
        nxdomains_per_second: rrl.nxdomains_per_second,
    }
}

/// Writes DNS cookie state into XDP's maps: whether cookies are answered, the two
/// secrets (current and previous), and the clock the program stamps cookies with.
///
/// A new secret goes into the slot that is not current, then the settings flip to it
/// (see `CookieSettings`), so the program never makes a cookie with a half-written
/// secret, and cookies made with the secret just replaced stay valid.
pub struct CookieMapWriter {
    /// The `cookie_settings` map: its one entry (on or off, the current slot, the clock offset).
    pub settings: aya::maps::Array<MapData, CookieSettings>,
    /// The `cookie_secrets` map: two slots, the current secret and the previous one.
    pub secrets: aya::maps::Array<MapData, CookieSecret>,
    /// What the settings entry holds.
    pub written: CookieSettings,
    /// The secret cookies are made with; None until the first `install`.
    pub current: Option<[u8; 16]>,
}

impl CookieMapWriter {
    /// Writes the current secret into the previous slot too: cookies made with the
    /// replaced secret are no longer valid.
    pub fn retire_previous(&mut self) -> Result<()> {
        let Some(current) = self.current else { return Ok(()) };
        let previous = (self.written.current & 1) ^ 1;
        self.secrets.set(previous, secret_from_bytes(current), 0).context("writing cookie_secrets")
    }

    /// Makes `secret` current: writes it into the slot that is not current, then flips the
    /// settings to it; the one it replaces stays valid for verification. The first secret
    /// fills both slots.
    pub fn install(&mut self, secret: [u8; 16]) -> Result<()> {
        let key = secret_from_bytes(secret);
        if self.current.is_none() {
            // The first secret fills both slots: an unwritten slot (all zeros) would be
            // a secret anyone knows.
            self.secrets.set(self.written.current & 1, key, 0).context("writing cookie_secrets")?;
        }
        let next = (self.written.current & 1) ^ 1;
        self.secrets.set(next, key, 0).context("writing cookie_secrets")?;
        self.current = Some(secret);
        self.write(CookieSettings { current: next, ..self.written })
    }

    /// Turns answering cookies on or off (off: the COOKIE option is ignored).
    pub fn set_enabled(&mut self, enabled: bool) -> Result<()> {
        self.write(CookieSettings { enabled: enabled as u32, ..self.written })
    }

    /// Sets the program's clock: Unix time is its clock plus `offset_ns`.
    pub fn set_clock_offset(&mut self, offset_ns: u64) -> Result<()> {
        self.write(CookieSettings { clock_offset_ns: offset_ns, ..self.written })
    }

    /// Sets the program's clock to the system's Unix time (called periodically: NTP
    /// slews the wall clock, the program's clock is monotonic).
    pub fn sync_clock(&mut self) -> Result<()> {
        self.set_clock_offset(unix_minus_monotonic_coarse_ns())
    }

    fn write(&mut self, settings: CookieSettings) -> Result<()> {
        if self.current.is_none() && settings.enabled != 0 {
            anyhow::bail!("cookies enabled before a secret was installed");
        }
        self.settings.set(0, settings, 0).context("writing cookie_settings")?;
        self.written = settings;
        Ok(())
    }
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC_COARSE (`bpf_ktime_get_coarse_ns`'s clock), in
/// nanoseconds.
pub fn unix_minus_monotonic_coarse_ns() -> u64 {
    let read = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec it is given; both clocks exist on Linux.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    };
    let monotonic = read(libc::CLOCK_MONOTONIC_COARSE);
    read(libc::CLOCK_REALTIME).wrapping_sub(monotonic)
}
