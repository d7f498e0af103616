//! Stage 4a: from the records chosen for a name to the map entry the XDP program
//! answers from. Rendering happens here, once per change, so that per query the
//! program only picks a start record and copies bytes.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use primwatch_common::{
    AnswerSet, Family, NameKey, Select, ENTRY_ANSWERS_DO, ENTRY_SIGNED, MAX_RECORDS, QCLASS_IN, RRS_BUF_LEN,
    WEIGHT_SLOTS,
};

use crate::{
    answers::selection::{self, Chosen, Pick},
    config::{Config, SetSpec},
    dns::name::DnsName,
};

/// A compression pointer to the question name, which always sits at offset 12.
const POINTER_TO_QUESTION: [u8; 2] = [0xc0, 0x0c];

fn empty_set(ttl: u32, rr_len: usize) -> AnswerSet {
    AnswerSet {
        ttl,
        count: 0,
        answers: 0,
        rr_len: rr_len as u16,
        select: Select::Fixed as u8,
        _pad: 0,
        generation: 0,
        csums: [0; MAX_RECORDS],
        weighted_start: [0; WEIGHT_SLOTS],
        rrs: [0; RRS_BUF_LEN],
    }
}

/// Renders chosen records (rdata already encoded) into an AnswerSet.
fn render(ttl: u32, family: Family, rdatas: &[Vec<u8>], weights: &[u32], answers: usize, pick: Pick) -> AnswerSet {
    let rr_len = family.rr_len();
    let mut set = empty_set(ttl, rr_len);
    if pick == Pick::NoData {
        set.select = Select::NoData as u8;
        return set;
    }
    let count = rdatas.len().min(MAX_RECORDS);
    if count == 0 {
        return set;
    }
    let mut one = Vec::with_capacity(count * rr_len);
    for rdata in &rdatas[..count] {
        one.extend_from_slice(&POINTER_TO_QUESTION);
        one.extend_from_slice(&(family.record_type() as u16).to_be_bytes());
        one.extend_from_slice(&QCLASS_IN.to_be_bytes());
        one.extend_from_slice(&ttl.to_be_bytes());
        one.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        one.extend_from_slice(rdata);
    }
    debug_assert_eq!(one.len(), count * rr_len);
    // Twice over (less the last record), so `answers` records from any start are contiguous.
    set.rrs[..one.len()].copy_from_slice(&one);
    set.rrs[one.len()..2 * one.len() - rr_len].copy_from_slice(&one[..one.len() - rr_len]);
    let answers = answers.clamp(1, count);
    for start in 0..count {
        let block = &set.rrs[start * rr_len..(start + answers) * rr_len];
        set.csums[start] = ones_complement_sum(block);
    }
    set.count = count as u16;
    set.answers = answers as u16;
    set.select = pick as u8;
    match pick {
        Pick::Weighted => set.weighted_start = weighted_slots(&weights[..count]),
        Pick::Sticky => set.weighted_start = sticky_slots(&rdatas[..count], &weights[..count]),
        _ => {}
    }
    set
}

/// The sticky policy's table: each of the `WEIGHT_SLOTS` slots (a client key's low bits)
/// goes to the record whose weighted rendezvous score for it is highest (Schindelhauer
/// and Schomaker's weighted HRW: `-weight / ln(u)`, `u` a hash of the slot and the
/// record's address in (0, 1)). Records get slots in proportion to weight, and a record
/// leaving or joining moves only the slots it loses or wins: the other clients keep
/// their answer. `keys` are the records' rdata (their addresses), in record order.
pub fn sticky_slots(keys: &[Vec<u8>], weights: &[u32]) -> [u8; WEIGHT_SLOTS] {
    let mut table = [0u8; WEIGHT_SLOTS];
    for (slot, start) in table.iter_mut().enumerate() {
        let mut best = (f64::NEG_INFINITY, 0u8);
        for (i, (key, weight)) in keys.iter().zip(weights).enumerate().take(MAX_RECORDS) {
            // u in (0, 1): 53 bits of a hash of the address and the slot, never 0. FNV-1a
            // then murmur3's finalizer: fixed, so an upgrade does not move clients.
            let mut h = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3));
            h ^= (slot as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            h ^= h >> 33;
            h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
            h ^= h >> 33;
            h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
            h ^= h >> 33;
            let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            let score = -(*weight.max(&1) as f64) / u.ln();
            if score > best.0 {
                best = (score, i as u8);
            }
        }
        *start = best.1;
    }
    table
}

/// Apportions WEIGHT_SLOTS slots to records by weight (largest remainder method).
pub fn weighted_slots(weights: &[u32]) -> [u8; WEIGHT_SLOTS] {
    let total: u64 = weights.iter().map(|&w| w as u64).sum::<u64>().max(1);
    let mut shares: Vec<(usize, u64, u64)> = weights
        .iter()
        .enumerate()
        .map(|(i, &w)| {
            let exact = w as u64 * WEIGHT_SLOTS as u64;
            (i, exact / total, exact % total)
        })
        .collect();
    let given: u64 = shares.iter().map(|s| s.1).sum();
    let mut by_remainder: Vec<usize> = (0..shares.len()).collect();
    by_remainder.sort_by_key(|&i| std::cmp::Reverse(shares[i].2));
    for &i in by_remainder.iter().take(WEIGHT_SLOTS - given as usize) {
        shares[i].1 += 1;
    }
    let mut slots = [0u8; WEIGHT_SLOTS];
    let mut next = 0;
    for (i, n, _) in shares {
        for _ in 0..n {
            slots[next] = i as u8;
            next += 1;
        }
    }
    slots
}

/// The A records `chosen` for a name, with `ttl` (seconds), rendered into the set XDP answers from.
pub fn a_records(ttl: u32, chosen: &Chosen<Ipv4Addr>) -> AnswerSet {
    let rdatas: Vec<Vec<u8>> = chosen.records.iter().map(|(a, _)| a.octets().to_vec()).collect();
    let weights: Vec<u32> = chosen.records.iter().map(|r| r.1).collect();
    render(ttl, Family::V4, &rdatas, &weights, chosen.answers, chosen.pick)
}

/// The AAAA records `chosen` for a name, with `ttl` (seconds), rendered into the set XDP answers from.
pub fn aaaa_records(ttl: u32, chosen: &Chosen<Ipv6Addr>) -> AnswerSet {
    let rdatas: Vec<Vec<u8>> = chosen.records.iter().map(|(a, _)| a.octets().to_vec()).collect();
    let weights: Vec<u32> = chosen.records.iter().map(|r| r.1).collect();
    render(ttl, Family::V6, &rdatas, &weights, chosen.answers, chosen.pick)
}

/// One's-complement sum of big-endian 16-bit words (odd tail padded with zero), folded.
pub fn ones_complement_sum(bytes: &[u8]) -> u16 {
    primwatch_common::csum::fold(primwatch_common::csum::sum_be_words(bytes))
}

/// What XDP's maps should hold for a config under some health.
pub struct Desired {
    /// The (name, view) entries and their specs: the config's alone, so built once per
    /// config and shared by every publish under it (the writer skips the names when it
    /// is handed the plan it wrote last).
    pub plan: Arc<NamePlan>,
    /// Each spec's A and AAAA sets, in `plan.specs`' order.
    pub sets: Vec<(AnswerSet, AnswerSet)>,
}

/// The names part of `Desired`: which record sets every (name, view) answers from.
/// About 60 bytes per entry plus the name, so a million names fit in well under 100 MB.
#[derive(Default)]
pub struct NamePlan {
    /// Every (name, view) entry, sorted by key (looked up by binary search).
    pub entries: Vec<PlannedName>,
    /// Each distinct spec once.
    pub specs: Vec<SetSpec>,
    /// The empty non-terminals the names make (RFC 8020 §2, RFC 4592 §2.2.2): every
    /// name above a served name (a wildcard's parent included) that is not served
    /// itself, sorted. They exist, so the DNS server must answer them NOERROR with no
    /// records (NODATA), never NXDOMAIN; names above the zone apex are listed too and
    /// never asked for, and a zone file's own records for one take precedence.
    pub empty_non_terminals: Vec<DnsName>,
}

/// One (name, view) entry.
pub struct PlannedName {
    /// The names map's key: the name's hash and the view id (0: the default view).
    pub key: NameKey,
    /// The lowercased name, compared in full by XDP after the hash lookup.
    pub name: DnsName,
    /// `ENTRY_*` bits.
    pub flags: u32,
    /// Index into `NamePlan::specs`.
    pub set: u32,
}

impl NamePlan {
    /// The entry for `key`, if the plan has one.
    pub fn get(&self, key: &NameKey) -> Option<&PlannedName> {
        self.entries.binary_search_by_key(key, |e| e.key).ok().map(|i| &self.entries[i])
    }

    /// Is `name` an empty non-terminal of the served names?
    pub fn is_empty_non_terminal(&self, name: &DnsName) -> bool {
        self.empty_non_terminals.binary_search(name).is_ok()
    }

    /// The entry XDP answers `name` from in view `view`: the view's own entry, else the
    /// default view's (a view lists only the names it answers differently).
    pub fn lookup(&self, name: &DnsName, view: u32) -> Option<&PlannedName> {
        let hash = name.hash();
        let found = |view| self.get(&NameKey::new(hash, view)).filter(|e| e.name == *name);
        found(view).or_else(|| found(0))
    }

    /// The entry a query for `asked` in `view` answers from, as XDP looks: the exact
    /// name, else the wildcard one label up (`*.parent`); each in the view, else in the
    /// default view. None: not ours (XDP passes it; PowerDNS asks its next backend).
    pub fn resolve(&self, asked: &DnsName, view: u32) -> Option<&PlannedName> {
        self.lookup(asked, view).or_else(|| self.lookup(&asked.covering_wildcard()?, view))
    }
}

/// The entries XDP's names map should hold for `config`: every name in the default
/// view (0), and in each view the names it answers differently, each with its spec.
pub fn plan_names(config: &Config) -> NamePlan {
    let mut entries =
        Vec::with_capacity(config.names.len() + config.views.values().map(|v| v.names.len()).sum::<usize>());
    let mut specs = Vec::new();
    let mut index: HashMap<SetSpec, u32> = HashMap::new();
    let mut set_of = |spec: SetSpec| -> u32 {
        *index.entry(spec).or_insert_with_key(|spec| {
            specs.push(spec.clone());
            specs.len() as u32 - 1
        })
    };
    for (name, entry) in config.names.iter() {
        let set = set_of(Config::set_spec(entry));
        entries.push(PlannedName {
            key: NameKey::new(name.hash(), 0),
            name: name.clone(),
            flags: entry_flags(config, name),
            set,
        });
    }
    for view in config.views.values() {
        for (name, view_name) in &view.names {
            let set = set_of(Config::view_set_spec(&config.names[name], view_name));
            entries.push(PlannedName {
                key: NameKey::new(name.hash(), view.id),
                name: name.clone(),
                flags: entry_flags(config, name),
                set,
            });
        }
    }
    // Two names with one 64-bit hash cannot share the map (the key is the hash): the
    // config refuses them, so keys are unique here.
    entries.sort_unstable_by_key(|e| e.key);
    entries.dedup_by_key(|e| e.key);
    NamePlan { entries, specs, empty_non_terminals: empty_non_terminals(config) }
}

/// Every proper ancestor of a served name that is not served itself, sorted, once
/// (names share parents: a million names under one zone add one entry).
fn empty_non_terminals(config: &Config) -> Vec<DnsName> {
    let mut found = std::collections::BTreeSet::new();
    for name in config.names.keys() {
        let mut above = name.parent();
        while let Some(ancestor) = above {
            if config.names.contains_key(&ancestor) {
                // Served: its own ancestors come from its own walk.
                break;
            }
            above = ancestor.parent();
            if !found.insert(ancestor) {
                break; // this one's ancestors are in already
            }
        }
    }
    found.into_iter().collect()
}

/// Each spec's A and AAAA records under `health`: selection once per spec, however
/// many names share it. Both paths answer from these (XDP rendered, PowerDNS as is).
pub fn choose_sets(
    config: &Config,
    specs: &[SetSpec],
    health: &dyn crate::health::Health,
) -> Vec<(Chosen<Ipv4Addr>, Chosen<Ipv6Addr>)> {
    specs
        .iter()
        .map(|spec| {
            selection::choose(config, &crate::config::NameConfig { ttl: spec.ttl, source: spec.source.clone() }, health)
        })
        .collect()
}

/// The chosen records of every spec rendered as XDP's record sets.
pub fn render_sets(specs: &[SetSpec], chosen: &[(Chosen<Ipv4Addr>, Chosen<Ipv6Addr>)]) -> Vec<(AnswerSet, AnswerSet)> {
    specs.iter().zip(chosen).map(|(spec, (a, aaaa))| (a_records(spec.ttl, a), aaaa_records(spec.ttl, aaaa))).collect()
}

/// The names and record sets for `config` under `health` (`plan_names`, `choose_sets`
/// and `render_sets` at once).
pub fn desired_entries(config: &Config, health: &dyn crate::health::Health) -> Desired {
    let plan = Arc::new(plan_names(config));
    let sets = render_sets(&plan.specs, &choose_sets(config, &plan.specs, health));
    Desired { plan, sets }
}

/// The `ENTRY_*` bits of every entry for `name`. A wildcard in a signed zone is not
/// signed by XDP: its answer would need a proof that the QNAME does not exist.
fn entry_flags(config: &Config, name: &DnsName) -> u32 {
    if config.answers_dnssec_ok(name) {
        ENTRY_ANSWERS_DO
    } else if config.signer_of(name).is_some() && !name.is_wildcard() {
        ENTRY_SIGNED
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::{
        op::Message,
        rr::{RData, RecordType},
        serialize::binary::BinDecodable,
    };

    #[test]
    fn empty_non_terminals_are_the_unserved_ancestors_once() {
        let config = Config::parse(
            std::path::Path::new("t.toml"),
            "[server]\ninterfaces = [\"eth0\"]\n\
             [names.\"*.t.example.test\"]\na = [\"192.0.2.1\"]\n\
             [names.\"a.b.deep.example.test\"]\na = [\"192.0.2.2\"]\n\
             [names.\"b.deep.example.test\"]\na = [\"192.0.2.3\"]\n\
             [names.\"www.example.test\"]\na = [\"192.0.2.4\"]\n",
        )
        .unwrap();
        let plan = plan_names(&config);
        let ents: Vec<String> = plan.empty_non_terminals.iter().map(|n| n.to_string()).collect();
        // b.deep is served, so not empty; deep is; the apex and the TLD are listed too
        // (PowerDNS never asks above the apex, and the zone file's apex wins).
        let mut want = vec!["deep.example.test.", "example.test.", "t.example.test.", "test."];
        want.sort();
        let mut got = ents.clone();
        got.sort();
        assert_eq!(got, want);
        assert!(plan.is_empty_non_terminal(&DnsName::parse("deep.example.test").unwrap()));
        assert!(!plan.is_empty_non_terminal(&DnsName::parse("b.deep.example.test").unwrap()));
        assert!(!plan.is_empty_non_terminal(&DnsName::parse("x.t.example.test").unwrap()));
    }

    /// The sticky table over 100,000 client /24s: shares follow the weights, and when one
    /// member of four leaves only its own clients move (HRW's property, exact here).
    #[test]
    fn a_member_leaving_a_sticky_set_moves_only_its_clients() {
        let address = |i: u8| vec![10, 0, 0, i];
        let clients: Vec<u32> = (0..100_000u32)
            .map(|i| {
                let [_, b, c, d] = i.to_be_bytes();
                let mut client = [0u8; 16];
                client[..4].copy_from_slice(&[b, c, d, 0]);
                primwatch_common::sticky_key(&client, false, 24)
            })
            .collect();
        let keys: Vec<Vec<u8>> = (1..=4).map(address).collect();
        let before = sticky_slots(&keys, &[1, 1, 1, 1]);
        let after = sticky_slots(&keys[..2].iter().chain(&keys[3..]).cloned().collect::<Vec<_>>(), &[1, 1, 1]);
        let owner =
            |table: &[u8; WEIGHT_SLOTS], members: &[u8], key: u32| members[table[key as usize % WEIGHT_SLOTS] as usize];
        let (mut moved, mut on_departed) = (0, 0);
        for key in &clients {
            let was = owner(&before, &[1, 2, 3, 4], *key);
            let now = owner(&after, &[1, 2, 4], *key);
            on_departed += usize::from(was == 3);
            moved += usize::from(was != now);
            assert!(was == 3 || was == now, "a client of {was} moved to {now}");
        }
        let share = moved as f64 / clients.len() as f64;
        println!("one of four sticky members left: {moved} of 100,000 client /24s moved ({share:.3})");
        assert_eq!(moved, on_departed);
        assert!((share - 0.25).abs() < 0.05, "{share}");
        // Weights 1, 3, 6: slots in proportion, within 3 % of the table.
        let weighted = sticky_slots(&keys[..3], &[1, 3, 6]);
        for (i, weight) in [1.0, 3.0, 6.0].into_iter().enumerate() {
            let slots = weighted.iter().filter(|s| **s as usize == i).count() as f64 / WEIGHT_SLOTS as f64;
            assert!((slots - weight / 10.0).abs() < 0.03, "member {i}: {slots:.3} of the slots");
        }
    }

    #[test]
    fn rendered_records_parse_as_dns_answers() {
        let set = a_records(300, &Chosen::fixed(vec![Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 7)]));
        assert_eq!((set.count, set.answers, set.rr_len, set.select), (2, 2, 16, Select::Fixed as u8));
        // Wrap the rendered section in a response to www.example.test and let hickory parse it.
        let mut msg = vec![0x12, 0x34, 0x84, 0x00, 0, 1, 0, 2, 0, 0, 0, 0];
        msg.extend_from_slice(b"\x03www\x07example\x04test\x00\x00\x01\x00\x01");
        msg.extend_from_slice(&set.rrs[..32]);
        let parsed = Message::from_bytes(&msg).unwrap();
        let answers: Vec<_> =
            parsed.answers().iter().map(|r| (r.name().to_string(), r.ttl(), r.data().cloned())).collect();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].0, "www.example.test.");
        assert_eq!(answers[0].1, 300);
        assert_eq!(answers[1].2, Some(RData::A(Ipv4Addr::new(198, 51, 100, 7).into())));

        let v6 = aaaa_records(5, &Chosen::fixed(vec!["2001:db8::1".parse().unwrap()]));
        let mut msg = vec![0, 1, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 0];
        msg.extend_from_slice(b"\x01a\x00\x00\x1c\x00\x01");
        msg.extend_from_slice(&v6.rrs[..28]);
        let parsed = Message::from_bytes(&msg).unwrap();
        assert_eq!(parsed.answers()[0].record_type(), RecordType::AAAA);
        assert_eq!(parsed.answers()[0].ttl(), 5);
    }

    #[test]
    fn rotations_are_contiguous_and_checksummed() {
        let addrs: Vec<(Ipv4Addr, u32)> = (1..=4).map(|i| (Ipv4Addr::new(10, 0, 0, i), 1)).collect();
        let set = a_records(30, &Chosen { records: addrs, answers: 2, pick: Pick::RoundRobin });
        assert_eq!((set.count, set.answers, set.select), (4, 2, Select::RoundRobin as u8));
        for start in 0..4usize {
            let block = &set.rrs[start * 16..(start + 2) * 16];
            // The address of each record is its last 4 bytes.
            let first = block[15];
            let second = block[31];
            assert_eq!(first as usize, start + 1);
            assert_eq!(second as usize, (start + 1) % 4 + 1, "wraps around");
            assert_eq!(set.csums[start], ones_complement_sum(block));
        }
    }

    #[test]
    fn weighted_slots_follow_weights() {
        let slots = weighted_slots(&[1, 3, 6]);
        let count = |i: u8| slots.iter().filter(|&&s| s == i).count();
        assert_eq!(count(0) + count(1) + count(2), WEIGHT_SLOTS);
        assert!((count(0) as i64 - 102).abs() <= 1, "{}", count(0));
        assert!((count(1) as i64 - 307).abs() <= 1, "{}", count(1));
        assert!((count(2) as i64 - 614).abs() <= 1, "{}", count(2));
        let set = a_records(
            30,
            &Chosen {
                records: vec![(Ipv4Addr::LOCALHOST, 1), (Ipv4Addr::BROADCAST, 3)],
                answers: 1,
                pick: Pick::Weighted,
            },
        );
        assert_eq!(set.select, Select::Weighted as u8);
        assert_eq!(set.weighted_start.iter().filter(|&&s| s == 1).count(), 768);
    }

    #[test]
    fn nodata_and_unserved_sets() {
        let set = a_records(30, &Chosen::nodata());
        assert_eq!((set.count, set.select), (0, Select::NoData as u8));
        let set = aaaa_records(30, &Chosen::none());
        assert_eq!((set.count, set.select), (0, Select::Fixed as u8));
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to 0xddf2.
        assert_eq!(ones_complement_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
    }
}
