//! The maps the controller fills and the program reads (names, views, settings), the
//! counters it writes, and its per-CPU scratch space. Layouts are in primwatch-common.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, ProgramArray, RingBuf},
    macros::btf_map,
    Global,
};
use primwatch_common::{
    cookie::{CookieSecret, CookieSettings},
    AnswerSet, Counters, HostAddrs, NameEntry, NameKey, NsidOption, RrlBucket, RrlKey, RrlSettings, RrsigKey, RrsigRr,
    Scratch, Settings, SlowPathSettings, TapRecord, TapSettings, ViewMatch, ZoneName, ZoneSoa, BPF_F_NO_COMMON_LRU,
    BPF_F_NO_PREALLOC, DEFAULT_RECORD_SETS, MAX_NEGATIVE_ZONES, MAX_VIEW_PREFIXES, NAME_ANSWERS_PER_SLOT,
    NAME_STATS_SLOTS, PROGRAM_SLOTS,
};

/// UDP port the program answers on; the loader overrides it from the config.
#[unsafe(no_mangle)]
pub static DNS_PORT: Global<u16> = Global::new(53);

/// Served names: hash of the lowercased name and view → the name and its record sets.
/// Not preallocated: entries are allocated as names are added (about 300 bytes each).
/// The loader sets the size from `[server] max_names`.
#[btf_map]
pub static NAMES: HashMap<NameKey, NameEntry, NAME_STATS_SLOTS, { BPF_F_NO_PREALLOC }> = HashMap::new();

/// Record sets, pre-rendered, two slots per set (see `set_index`), and which slot of
/// each set is current. Sized from `[server] max_record_sets` by the loader.
#[btf_map]
pub static RRSETS: Array<AnswerSet, { 2 * DEFAULT_RECORD_SETS }> = Array::new();
#[btf_map]
pub static SET_VERSIONS: Array<u32, DEFAULT_RECORD_SETS> = Array::new();

/// Signed zones: the RRSIG record of each RRset XDP can answer with (see `RrsigKey`),
/// written by the controller once the set is in; a DO=1 query for a signed name whose
/// RRset has none here is passed. Not preallocated; sized from the config.
#[btf_map]
pub static RRSIGS: HashMap<RrsigKey, RrsigRr, NAME_STATS_SLOTS, { BPF_F_NO_PREALLOC }> = HashMap::new();

/// Source prefix → view, one trie per address family.
#[btf_map]
pub static VIEWS_V4: LpmTrie<[u8; 4], ViewMatch, MAX_VIEW_PREFIXES> = LpmTrie::new();
#[btf_map]
pub static VIEWS_V6: LpmTrie<[u8; 16], ViewMatch, MAX_VIEW_PREFIXES> = LpmTrie::new();

#[btf_map]
pub static SETTINGS: Array<Settings, 1> = Array::new();

/// `server.nsid` as the NSID option of a reply (RFC 5001); `option_len` 0: off.
#[btf_map]
pub static NSID: Array<NsidOption, 1> = Array::new();

/// This host's interface MACs and addresses (see `host`).
#[btf_map]
pub static HOST: Array<HostAddrs, 1> = Array::new();

#[btf_map]
pub static COUNTERS: PerCpuArray<Counters, 1> = PerCpuArray::new();

#[btf_map]
pub static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// Answers per (name, view) entry and type, indexed by `name_answers_index`. The
/// controller gives every entry of NAMES its own slot.
#[btf_map]
pub static NAME_ANSWERS: PerCpuArray<u64, { NAME_ANSWERS_PER_SLOT * NAME_STATS_SLOTS }> = PerCpuArray::new();

/// Response rate limiting: its settings, the prefixes it spares, and one account per
/// client prefix. LRU and shared by all CPUs: a flood from spoofed sources evicts the
/// least recently answered prefixes instead of filling the map, and one prefix has one
/// account whichever CPU its packets land on. The LRU lists are per CPU
/// (BPF_F_NO_COMMON_LRU): under a random-source flood that churns the table it gave
/// 11 % more answers at 10 % less CPU each than one common list (`cargo xtask bench --
/// --only rrl`). The loader sets the size from the config.
#[btf_map]
pub static RRL_SETTINGS: Array<RrlSettings, 1> = Array::new();
#[btf_map]
pub static RRL_EXEMPT_V4: LpmTrie<[u8; 4], u32, 65536> = LpmTrie::new();
#[btf_map]
pub static RRL_EXEMPT_V6: LpmTrie<[u8; 16], u32, 65536> = LpmTrie::new();
#[btf_map]
pub static RRL: LruHashMap<RrlKey, RrlBucket, 65536, { BPF_F_NO_COMMON_LRU }> = LruHashMap::new();

/// The slow-path guard (see `slow_path`): its settings, the prefixes it spares, and the
/// total budget's account (one, shared by all CPUs; per-prefix accounts are in `RRL`
/// under `ACCOUNT_CLASS_PASSED`).
#[btf_map]
pub static SLOW_PATH_SETTINGS: Array<SlowPathSettings, 1> = Array::new();
#[btf_map]
pub static SLOW_PATH_EXEMPT_V4: LpmTrie<[u8; 4], u32, 65536> = LpmTrie::new();
#[btf_map]
pub static SLOW_PATH_EXEMPT_V6: LpmTrie<[u8; 16], u32, 65536> = LpmTrie::new();
#[btf_map]
pub static SLOW_PATH_TOTAL: Array<RrlBucket, 1> = Array::new();

/// DNS cookies: whether they are answered, which secret is current, the clock; and
/// the two secrets, current and previous (see `CookieSettings` for the rotation).
#[btf_map]
pub static COOKIE_SETTINGS: Array<CookieSettings, 1> = Array::new();
#[btf_map]
pub static COOKIE_SECRETS: Array<CookieSecret, 2> = Array::new();
/// The cookie program, the answering program, the slow-path guard and the negative
/// answers, for the tail calls between them (slots `COOKIE_PROGRAM_SLOT`,
/// `ANSWER_PROGRAM_SLOT`, `SLOW_PATH_PROGRAM_SLOT`, `NEGATIVE_PROGRAM_SLOT`); the
/// loader fills it.
#[btf_map]
pub static COOKIE_PROGRAMS: ProgramArray<PROGRAM_SLOTS> = ProgramArray::new();

/// Negative answers for unsigned zones (see `negative`): how many zones have their
/// names here (0: the program is not called) …
#[btf_map]
pub static NEGATIVE_SETTINGS: Array<u32, 1> = Array::new();
/// … every name that exists in them, by `NameKey::new(hash, 0)` (not preallocated;
/// sized from `[server] max_zone_names`) …
#[btf_map]
pub static ZONE_NAMES: HashMap<NameKey, ZoneName, NAME_STATS_SLOTS, { BPF_F_NO_PREALLOC }> = HashMap::new();
/// … and each zone's SOA record as a negative answer carries it.
#[btf_map]
pub static ZONE_SOAS: Array<ZoneSoa, MAX_NEGATIVE_ZONES> = Array::new();

/// The tap (see `tap`): what to record, the per-CPU record being built, and the ring
/// the controller reads records from (8 MiB: some 50,000 records of a query or reply).
#[btf_map]
pub static TAP_SETTINGS: Array<TapSettings, 1> = Array::new();
#[btf_map]
pub static TAP_BUFFER: PerCpuArray<TapRecord, 1> = PerCpuArray::new();
#[btf_map]
pub static TAP_EVENTS: RingBuf<u8, { 8 << 20 }> = RingBuf::new();

/// The single SETTINGS entry, if the controller wrote one.
#[inline(always)]
pub fn settings() -> Option<&'static Settings> {
    // SAFETY: non-null from `get_ptr`: the single SETTINGS entry, alive as long as the map; only read.
    SETTINGS.get_ptr(0).map(|s| unsafe { &*s })
}
