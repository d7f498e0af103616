//! Types shared by the XDP program and the controller.
//!
//! Everything here is `#[repr(C)]` and lives in BPF maps, so the layout is the
//! contract between the two sides: change it on both at once.
#![no_std]

pub mod cookie;
pub mod csum;
pub mod wire;

pub use wire::RecordType;

/// Longest name on the wire, including length bytes and the root label (RFC 1035 §2.3.4).
pub const MAX_NAME_LEN: usize = 255;
/// Name buffers are padded to a multiple of 8 so that names compare in u64 words.
pub const NAME_BUF_LEN: usize = 256;
/// Most records of one type that one name can answer with.
pub const MAX_RECORDS: usize = 16;
/// An A record in an answer: pointer to the question (2), type, class, TTL, rdlength (10), address (4).
pub const A_RR_LEN: usize = 16;
/// An AAAA record in an answer: as A, with a 16-byte address.
pub const AAAA_RR_LEN: usize = 28;
/// Room for the largest answer section one record set can hold.
pub const MAX_ANSWER_BYTES: usize = MAX_RECORDS * AAAA_RR_LEN;
/// UDP payload size we advertise in our OPT record (the DNS flag day 2020 value).
pub const EDNS_UDP_PAYLOAD: u16 = 1232;

pub const QTYPE_A: u16 = RecordType::A as u16;
pub const QTYPE_AAAA: u16 = RecordType::Aaaa as u16;
pub const QTYPE_OPT: u16 = RecordType::Opt as u16;
pub const QCLASS_IN: u16 = 1;

/// `map_flags` of a hash map whose entries are allocated as they are inserted.
pub const BPF_F_NO_PREALLOC: usize = 1;
/// `map_flags` of an LRU hash map whose LRU lists are per CPU (the table is still one).
pub const BPF_F_NO_COMMON_LRU: usize = 2;

/// The name hash: over the lowercased wire name (length bytes and root label
/// included), zero-padded to whole 8-byte words, each word read little-endian.
///
/// The XDP program computes it a word at a time while it walks the question, so the
/// map lookup hashes an 8-byte key instead of a 256-byte name. A hash is only a hint:
/// the program compares the full name stored in the entry before it answers.
pub const NAME_HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;
const NAME_HASH_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
pub const fn name_hash_step(hash: u64, word: u64) -> u64 {
    let h = (hash ^ word).wrapping_mul(NAME_HASH_MULTIPLIER);
    h ^ (h >> 29)
}

/// ASCII-lowercases the 8 bytes of `word` at once (SWAR); other bytes are unchanged.
/// Label length bytes (< 64) are never letters, so a whole wire name can go through it.
#[inline(always)]
pub const fn ascii_lower_word(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let low7 = word & (0x7f * ONES);
    // Bit 7 of each byte: set iff that byte's low 7 bits are >= 'A' / > 'Z' (no carries).
    let ge_a = low7 + (0x80 - b'A' as u64) * ONES;
    let gt_z = low7 + (0x80 - b'Z' as u64 - 1) * ONES;
    let upper = ge_a & !gt_z & !word & (0x80 * ONES);
    word | (upper >> 2)
}

/// Key of the `names` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameKey {
    /// `name_hash_step` over the lowercased wire name.
    pub name_hash: u64,
    /// The view the entry is for; 0 is the default view, which every name has.
    pub view: u32,
    pub _pad: u32,
}

impl NameKey {
    pub const fn new(name_hash: u64, view: u32) -> NameKey {
        NameKey { name_hash, view, _pad: 0 }
    }
}

/// Prefixes each of the `views_v4` / `views_v6` LPM tries holds at most (allocated as
/// used).
pub const MAX_VIEW_PREFIXES: usize = 1_048_576;

/// Value of the `views_v4` / `views_v6` LPM tries: which view a source prefix is in.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ViewMatch {
    pub view: u32,
    /// The scope an EDNS Client Subnet reply claims (RFC 7871 §7.2.1): the matched
    /// prefix's length, lengthened to that of the longest prefix of another view nested
    /// inside it (the controller's `view_index` decides).
    pub prefix_len: u32,
}

/// The single entry of the `settings` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Source prefixes in the view tries; 0 skips the view lookup altogether.
    pub view_prefixes: u32,
    /// Wildcard names served; 0 skips the wildcard lookup after a miss.
    pub wildcard_names: u32,
    /// The ECS scope of an answer for a client in no view: the longest IPv4 / IPv6
    /// view prefix.
    pub scope_without_view_v4: u32,
    pub scope_without_view_v6: u32,
    /// The sticky policy's client prefix lengths (`[sticky]`); 0: no set is sticky, the
    /// client key is not computed.
    pub sticky_prefix_v4: u32,
    pub sticky_prefix_v6: u32,
}

/// Response rate limiting (RRL, the scheme of BIND and Knot) as the controller sets
/// it: the single entry of the `rrl_settings` array. Answers are counted per client
/// prefix; a prefix earns `responses_per_second` credits a second, up to that many,
/// and spends one per answer; below zero its answers are limited, and its debt is
/// bounded by `window_seconds` of credit, so a flood must stop for up to that long
/// before the prefix is answered again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RrlSettings {
    /// 0: no rate limiting.
    pub responses_per_second: u32,
    pub window_seconds: u32,
    /// Every `slip`-th limited response goes out empty with TC=1; 0: none (all
    /// dropped), 1: all.
    pub slip: u32,
    /// 1: count what would be limited and answer anyway.
    pub log_only: u32,
    /// The client prefix: the source address ANDed with these masks (bytes in packet
    /// order, read as native-endian words).
    pub ipv4_mask: u32,
    /// Exempt prefixes configured per family (bit 0: IPv4, bit 1: IPv6): the exempt
    /// tries are looked up only when they hold something.
    pub exempt_families: u32,
    pub ipv6_mask: [u64; 2],
    /// The NODATA and NXDOMAIN classes' own rates (BIND's `nodata-per-second`,
    /// `nxdomains-per-second`); 0: that class is not limited.
    pub nodata_per_second: u32,
    pub nxdomains_per_second: u32,
}

/// The slow-path guard's settings (`[slow_path]`): budgets for the UDP queries XDP
/// passes to the DNS server behind it, so that a flood of what XDP cannot answer
/// (random names, other types, DO=1 in signed zones) never queues up in it. Sources in
/// the guard's exempt tries and queries with a verified server cookie are never held;
/// beyond a budget the query is dropped. Zero rates: no guard.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlowPathSettings {
    /// Queries a second passed in all, whatever their source (0: no total budget).
    pub queries_per_second: u32,
    /// Queries a second passed per client prefix (0: no prefix budget).
    pub prefix_queries_per_second: u32,
    /// Seconds of credit a budget may save up (its burst).
    pub burst_seconds: u32,
    /// Exempt prefixes configured per family (bit 0: IPv4, bit 1: IPv6).
    pub exempt_families: u32,
    /// The client prefix, as `RrlSettings`' masks.
    pub ipv4_mask: u32,
    /// Every `slip`-th query over a budget is answered with an empty TC=1 reply (a
    /// real resolver asks again over TCP), the rest dropped; 0: all dropped.
    pub slip: u32,
    pub ipv6_mask: [u64; 2],
}

/// `RrlKey::family` carries the account's response class above its low byte, as BIND
/// and Knot keep one account per (client prefix, class, name): answers with records …
pub const ACCOUNT_CLASS_ANSWER: u32 = 0;
/// … the slow-path guard's budget for passed queries (per prefix, no name) …
pub const ACCOUNT_CLASS_PASSED: u32 = 1 << 8;
/// … NODATA answers (a served name without records of the type) …
pub const ACCOUNT_CLASS_NODATA: u32 = 2 << 8;
/// … and NXDOMAIN answers (one account per zone, as BIND: random names share it).
pub const ACCOUNT_CLASS_NXDOMAIN: u32 = 3 << 8;
/// The class's bits in `RrlKey::family`.
pub const ACCOUNT_CLASS_MASK: u32 = 0xff << 8;

/// An account in the `rrl` map: the client prefix (the masked source address, IPv4 in
/// the first four bytes), its family (4 or 6) with the class (`ACCOUNT_CLASS_*`), and
/// the name (the answering entry's stats slot, so a wildcard's names share one
/// account; 0 for the per-prefix classes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RrlKey {
    pub family: u32,
    pub name: u32,
    pub prefix: [u8; 16],
}

/// One client prefix's account (see `RrlSettings`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RrlBucket {
    /// Credit in thousandths of a response.
    pub credit: i64,
    /// When the credit was last brought up to date (bpf_ktime_get_ns).
    pub updated_ns: u64,
    /// Limited responses so far, for the slip count.
    pub limited: u64,
}

/// `Scratch::rrl_state`: an account to be charged once the answer is known (RRL on,
/// the source not exempt; `charge` replaces it by one of the decisions below) …
pub const RRL_PENDING: u32 = 6;
/// … no limiting (off) …
pub const RRL_OFF: u32 = 0;
/// … answer, the prefix has credit …
pub const RRL_SEND: u32 = 1;
/// … over the rate: an empty TC=1 reply (the slip-th limited) …
pub const RRL_SLIP: u32 = 2;
/// … over the rate: drop …
pub const RRL_DROP: u32 = 3;
/// … an exempt source …
pub const RRL_EXEMPT: u32 = 4;
/// … over the rate in log-only mode: answer and count.
pub const RRL_LOG_ONLY: u32 = 5;

/// Thousandths: the unit of `RrlBucket::credit`.
pub const RRL_CREDIT_UNIT: i64 = 1000;

/// Most interfaces and addresses per family the XDP program knows as this host's.
pub const MAX_HOST_INTERFACES: usize = 16;
pub const MAX_HOST_ADDRS: usize = 32;

/// What "this host" is, for the XDP program (the single entry of the `host` array,
/// kept current by the controller): the MAC of each interface the program is attached
/// to, and every unicast address of the host (any interface: the kernel accepts a
/// datagram for any local address on any interface, e.g. an anycast service address on
/// a dummy device).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostAddrs {
    pub interface_count: u32,
    pub v4_count: u32,
    pub v6_count: u32,
    pub _pad: u32,
    /// Interface indexes, `interface_count` of them.
    pub ifindex: [u32; MAX_HOST_INTERFACES],
    /// Their MACs in the first 6 bytes, the other 2 zero.
    pub mac: [[u8; 8]; MAX_HOST_INTERFACES],
    /// IPv4 addresses in network byte order.
    pub v4: [[u8; 4]; MAX_HOST_ADDRS],
    pub v6: [[u8; 16]; MAX_HOST_ADDRS],
}

impl Default for HostAddrs {
    fn default() -> Self {
        HostAddrs {
            interface_count: 0,
            v4_count: 0,
            v6_count: 0,
            _pad: 0,
            ifindex: [0; MAX_HOST_INTERFACES],
            mac: [[0; 8]; MAX_HOST_INTERFACES],
            v4: [[0; 4]; MAX_HOST_ADDRS],
            v6: [[0; 16]; MAX_HOST_ADDRS],
        }
    }
}

/// An address family: A records and IPv4 clients, AAAA records and IPv6 clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The record type that carries addresses of this family.
    pub const fn record_type(self) -> RecordType {
        match self {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::Aaaa,
        }
    }

    /// Bytes of one rendered answer record of this family (`A_RR_LEN`, `AAAA_RR_LEN`).
    pub const fn rr_len(self) -> usize {
        match self {
            Family::V4 => A_RR_LEN,
            Family::V6 => AAAA_RR_LEN,
        }
    }

    pub fn of(address: &core::net::IpAddr) -> Family {
        if address.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        }
    }
}

/// How the XDP program picks the records of one reply from an [`AnswerSet`]
/// (`AnswerSet::select` holds the value).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// Always the first `answers` records.
    Fixed = 0,
    /// Rotate the start record per query (a per-CPU counter).
    RoundRobin = 1,
    /// A uniformly random start record per query.
    Random = 2,
    /// A start record drawn from `weighted_start`, where records appear in proportion to weight.
    Weighted = 3,
    /// Answer NOERROR with no records (an all-down policy).
    NoData = 4,
    /// The start record in `weighted_start`'s slot for the client's prefix
    /// ([`sticky_key`]): the same client prefix gets the same start while its record
    /// stays; the table is a weighted rendezvous hash, so a record leaving moves only
    /// the slots it had.
    Sticky = 5,
}

impl Select {
    #[inline(always)]
    pub const fn from_u8(value: u8) -> Option<Select> {
        match value {
            0 => Some(Select::Fixed),
            1 => Some(Select::RoundRobin),
            2 => Some(Select::Random),
            3 => Some(Select::Weighted),
            4 => Some(Select::NoData),
            5 => Some(Select::Sticky),
            _ => None,
        }
    }
}

/// Slots of the weighted-start table; a power of two, so a random slot is a mask away.
pub const WEIGHT_SLOTS: usize = 1024;

/// The record a reply starts at, for a set of `count` records picked by `select`: the one
/// rule both paths share (XDP's `pick`, the PowerDNS backend's lookup), so each record gets
/// the same share of answers whichever path answers.
///
/// - `Fixed`, `NoData`, an unknown mode or `count == 0`: 0;
/// - `RoundRobin`: `turn() % count`, `turn` being the caller's rotating counter;
/// - `Random`: `random() % count`;
/// - `Weighted`: `weighted_start[random() % WEIGHT_SLOTS]`, or 0 if the table is shorter
///   (a set rendered without one). The table holds starts below `count` by construction
///   (`records::weighted_slots`); callers still bound the index they use.
/// - `Sticky`: `weighted_start[client_key % WEIGHT_SLOTS]` (`client_key` from
///   [`sticky_key`]), or 0 without a table.
///
/// `turn` and `random` are called only by the modes that need them (XDP's random number is
/// a helper call).
#[inline(always)]
pub fn start_record(
    select: Option<Select>,
    count: u32,
    turn: impl FnOnce() -> u32,
    random: impl FnOnce() -> u32,
    client_key: u32,
    weighted_start: &[u8],
) -> u32 {
    if count == 0 {
        return 0;
    }
    let slot = |key: u32| weighted_start.get(key as usize & (WEIGHT_SLOTS - 1)).map_or(0, |start| *start as u32);
    match select {
        Some(Select::RoundRobin) => turn() % count,
        Some(Select::Random) => random() % count,
        Some(Select::Weighted) => slot(random()),
        Some(Select::Sticky) => slot(client_key),
        _ => 0,
    }
}

/// The sticky policy's client key: the address (IPv4 in its first 4 bytes) cut to its
/// first `prefix_len` bits (at most 32 or 128) and hashed with the family and the
/// length (murmur3's 64-bit finalizer). The same prefix always gives the same key, on
/// both paths; `prefix_len` 0 gives every client one key. See `sticky_key_words` for
/// the form the XDP program calls.
#[inline(always)]
pub fn sticky_key(address: &[u8; 16], is_v6: bool, prefix_len: u32) -> u32 {
    let hi = u64::from_be_bytes([
        address[0], address[1], address[2], address[3], address[4], address[5], address[6], address[7],
    ]);
    let lo = u64::from_be_bytes([
        address[8],
        address[9],
        address[10],
        address[11],
        address[12],
        address[13],
        address[14],
        address[15],
    ]);
    sticky_key_words(hi, lo, is_v6 as u64, if is_v6 { prefix_len.min(128) } else { prefix_len.min(32) })
}

/// `sticky_key` of the address given as two big-endian words (`hi`: bytes 0-7, `lo`:
/// bytes 8-15; an IPv4 address is `hi`'s top 32 bits), `is_v6` 0 or 1, and `bits` the
/// prefix length already cut to the family's (at most 32 or 128). Without a branch:
/// the XDP program computes it on every path that reaches a lookup, and the verifier
/// walks each branch once per such path.
#[inline(always)]
pub fn sticky_key_words(hi: u64, lo: u64, is_v6: u64, bits: u32) -> u32 {
    let hi_bits = min_u32(bits, 64);
    let lo_bits = bits - hi_bits;
    let mut h = (hi & top_bits(hi_bits)) ^ (lo & top_bits(lo_bits)).rotate_left(31) ^ (is_v6 << 8) ^ bits as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h as u32
}

/// `min(a, b)` for `a, b < 2^31`, without a branch (BPF has no conditional move).
#[inline(always)]
pub fn min_u32(a: u32, b: u32) -> u32 {
    let d = a.wrapping_sub(b);
    b.wrapping_add(d & (((d as i32) >> 31) as u32))
}

/// The top `n` bits of a word set, `n` = 0..=64, without a branch (two shifts, each
/// below 64, since a shift by 64 is not defined).
#[inline(always)]
pub fn top_bits(n: u32) -> u64 {
    !((u64::MAX >> (n >> 1)) >> (n - (n >> 1)))
}

/// Room for the records of a set, rendered twice over (see `AnswerSet::rrs`).
pub const RRS_BUF_LEN: usize = 2 * MAX_ANSWER_BYTES;

/// The records of one type for the names that share them, pre-rendered for the answer
/// section (a value of the `rrsets` map).
///
/// The controller renders the eligible records once per change; per query the XDP
/// program only picks where to start (`select`) and copies `answers` consecutive
/// records, whose checksum the controller also computed. The records are rendered
/// twice over, so the `answers` records from any start are one contiguous block.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AnswerSet {
    /// TTL of every record in the set (also inside `rrs`; kept here for inspection).
    pub ttl: u32,
    /// Eligible records; 0 means this type is not served here (the query is passed).
    pub count: u16,
    /// Records per reply (1..=count).
    pub answers: u16,
    /// Bytes per record: 16 (A) or 28 (AAAA).
    pub rr_len: u16,
    /// A [`Select`] value.
    pub select: u8,
    pub _pad: u8,
    /// Which rendering of the set this is: the controller numbers every write of any
    /// set afresh, so (name, generation, start) names one RRset for its signatures.
    pub generation: u32,
    /// One's-complement sum (folded, big-endian words) of the `answers` records
    /// starting at record i.
    pub csums: [u16; MAX_RECORDS],
    /// For `Select::Weighted`: start record per slot.
    pub weighted_start: [u8; WEIGHT_SLOTS],
    /// `count` records, each starting with a compression pointer to the question
    /// (0xc00c), then the first `count - 1` of them again.
    pub rrs: [u8; RRS_BUF_LEN],
}

/// The OPT record of every reply to a query that had one: root owner, type 41, our UDP
/// payload size, extended RCODE 0, version 0, no flags, no options.
pub const OPT_RR: [u8; 11] = [0, 0, 41, (EDNS_UDP_PAYLOAD >> 8) as u8, EDNS_UDP_PAYLOAD as u8, 0, 0, 0, 0, 0, 0];

/// Slots for per-entry answer counters: one per possible NAMES entry. The default
/// capacity of the names map (`[server] max_names` sets it at load).
pub const NAME_STATS_SLOTS: usize = 65536;
/// Default capacity of record sets (`[server] max_record_sets`).
pub const DEFAULT_RECORD_SETS: usize = 1024;
/// Counters per slot in NAME_ANSWERS: one for A answers, one for AAAA.
pub const NAME_ANSWERS_PER_SLOT: usize = 2;

/// Index in NAME_ANSWERS of the counter of A (`aaaa == false`) or AAAA answers given
/// from the entry with `stats_slot`.
#[inline(always)]
pub const fn name_answers_index(stats_slot: u32, aaaa: bool) -> u32 {
    stats_slot * NAME_ANSWERS_PER_SLOT as u32 + aaaa as u32
}

/// `NameEntry::flags`: the name lies in a declared zone that is not DNSSEC-signed, so
/// a query with DO=1 gets the same answer, with DO copied into the reply's OPT record
/// (RFC 3225 §3). Without it, DO=1 queries are passed to the DNS server behind XDP.
pub const ENTRY_ANSWERS_DO: u32 = 1;

/// `NameEntry::flags`: the name lies in a zone primwatch signs (`dnssec = "sign"`): a
/// DO=1 query is answered with the RRset's RRSIG from `rrsigs` when there is one, and
/// passed to the DNS server behind XDP when there is none (not yet signed, a
/// wildcard, NODATA: denial of existence needs NSEC3, which XDP does not build).
pub const ENTRY_SIGNED: u32 = 2;

/// Bytes of the longest RRSIG record `rrsigs` holds: the fixed part, a signer name of
/// up to `MAX_SIGNER_NAME_LEN` bytes and a 64-byte signature (ECDSA P-256, Ed25519).
pub const RRSIG_RR_MAX: usize = 256;
/// RRSIG record bytes besides the signer name and signature: owner (a compression
/// pointer), type, class, TTL, RDLENGTH; then type covered, algorithm, labels,
/// original TTL, expiration, inception and key tag (RFC 4034 §3.1).
pub const RRSIG_FIXED_LEN: usize = 2 + 2 + 2 + 4 + 2 + 18;
/// Signature bytes of the algorithms primwatch signs with (13 and 15, RFC 6605 §4,
/// RFC 8080 §3).
pub const SIGNATURE_LEN: usize = 64;
/// The longest zone apex (wire bytes) a signed zone may have.
pub const MAX_SIGNER_NAME_LEN: usize = RRSIG_RR_MAX - RRSIG_FIXED_LEN - SIGNATURE_LEN;

/// Key of the `rrsigs` map: one RRset XDP can answer with. `name_hash` and `slot` are
/// the entry's (`NameKey::name_hash`, `NameEntry::stats_slot`), `generation` the set's
/// (`AnswerSet::generation`), `start` the first record of the reply (0 when the reply
/// carries the whole set, whatever the rotation: the RRset is the same).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RrsigKey {
    pub name_hash: u64,
    pub slot: u32,
    pub generation: u32,
    pub start: u32,
    pub _pad: u32,
}

/// Value of the `rrsigs` map: the RRSIG record as it goes into the answer section
/// (owner 0xc00c, the question name), and its one's-complement sum from an even offset.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RrsigRr {
    pub len: u16,
    pub csum: u16,
    pub _pad: u32,
    pub rr: [u8; RRSIG_RR_MAX],
}

/// Value of the `names` map: the name itself (to rule out hash collisions) and, per
/// family, which record set answers it. Record sets live in `rrsets`, shared by every
/// (name, view) with the same records (see `set_index`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NameEntry {
    /// Bytes used in `name`, root label included.
    pub name_len: u32,
    /// This entry's counters in NAME_ANSWERS (see `NAME_STATS_SLOTS`).
    pub stats_slot: u32,
    /// `ENTRY_*` bits.
    pub flags: u32,
    /// The record sets of A and AAAA answers (ids below `max_record_sets`).
    pub a_set: u32,
    pub aaaa_set: u32,
    pub _pad: u32,
    /// Lowercased wire name, zero padded.
    pub name: [u8; NAME_BUF_LEN],
}

/// Index in `rrsets` of version `version` (0 or 1, as `set_versions` says) of record
/// set `set`. Each set has two slots: the controller writes the one not in use, then
/// flips the set's version, so a reply is built from one whole set, old or new.
#[inline(always)]
pub const fn set_index(set: u32, version: u32) -> u32 {
    2 * set + (version & 1)
}

/// Per-CPU scratch space for the XDP program (the BPF stack is only 512 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Scratch {
    /// The question name, lowercased, followed by 8 zero bytes for word compares.
    pub name: [u8; NAME_BUF_LEN + 8],
    /// A wildcard candidate (`*` and the name less its first label), as `name`.
    pub wildcard: [u8; NAME_BUF_LEN + 8],
    /// The query's EDNS Client Subnet option, if any (RFC 7871).
    pub ecs: ClientSubnet,
    /// Name length handed across the walk loop (see the XDP program for why).
    pub name_len: u32,
    /// The UDP length handed through memory for the same reason.
    pub udp_len: u32,
    /// The OPT record's RDLENGTH, handed through memory across the option walk: each
    /// of the walk's exits has learnt a different range for it, and the verifier would
    /// check the rest of the program once per range.
    pub opt_rdlen: u32,
    /// The query's EDNS flags masked to DO (0 or 0x8000): read where needed rather than
    /// carried in a register, so the verifier does not split the rest of the program
    /// into DO=0 and DO=1 paths.
    pub edns_do: u32,
    /// This CPU's round-robin position.
    pub round_robin: u32,
    /// The sticky policy's key for this query's client (`sticky_key`), and the prefix
    /// length it was cut to (the ECS scope a sticky answer claims); 0 without sticky sets.
    pub client_key: u32,
    pub client_key_len: u32,
    /// Response rate limiting, decided before the name walk (where the verifier has
    /// few states) and charged once the query is known to be answered: what to do
    /// (`RRL_*`) and the client prefix's key.
    pub rrl_state: u32,
    pub rrl_key: RrlKey,
    /// DNS cookies (RFC 7873/9018): where the query's COOKIE option body is in the
    /// frame and its length (0: no option), found while the OPT record is walked …
    pub cookie_off: u32,
    pub cookie_len: u32,
    /// … and the work on it (see `CookieScratch`).
    pub cookie: CookieScratch,
    /// The options the walk of the OPT record skips, each noted by its code's low bit
    /// as `HARMLESS_SEEN | length`, ORed over the options of that code (0: none): [0] PADDING (RFC 7830), [1] NSID (RFC
    /// 5001: an empty one asks for the `NSID` map's option in the reply).
    pub harmless_options: [u32; 2],
    /// A query that would go to the DNS server if passed: where its IP header is
    /// (`PASSED_*` bits), set once the datagram is known to be one the kernel delivers
    /// to port 53; 0 for anything else. The slow-path guard reads it.
    pub passed: u32,
    /// Set by the slow-path guard when it has the cookie program check a passed query
    /// (which then comes through the answering program again): that second pass is
    /// not counted again. Read and cleared by the answering program.
    pub guard_resumed: u32,
    /// With `PASSED_QUESTION` in `passed`: the question's name length and its sum (as
    /// `ReplyPlan::name_csum`), for the guard's TC reply.
    pub passed_name_len: u32,
    pub passed_name_csum: u64,
    /// What the reply is made of, handed to the reply stage through memory.
    pub plan: ReplyPlan,
    /// The front of a frame (headers and question) while it moves into the headroom.
    pub frame_front: [u8; MAX_FRAME_FRONT],
    /// The tap (see `TapSettings`): for the packet in hand, `TAP_SEEN` once the tap
    /// program has seen it, with the `TAP_FOR_*` bits of what it was recorded for;
    /// 0 between packets. Handed to the exit record with the XDP action.
    pub tap_state: u32,
    pub tap_exit_state: u32,
    pub tap_action: u32,
    /// Packets until this CPU's next dnstap sample.
    pub tap_countdown: u32,
    /// The number of this CPU's last recorded packet (`TapHeader::seq`).
    pub tap_seq: u32,
}

/// Everything the XDP program's reply stage needs from the stages before it, handed
/// over in memory rather than in registers: each path through parsing, lookup and
/// picking has left different value ranges in its registers, and the verifier would
/// check the reply stage once per path; read back from here they are one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplyPlan {
    /// One's-complement sum of the question name as sent (see the program's `Query`).
    pub name_csum: u64,
    /// Offsets of the IP and UDP headers in the frame; 1 for IPv6.
    pub l3_off: u32,
    pub l4_off: u32,
    pub is_ipv6: u32,
    /// Wire length of the question name.
    pub name_len: u32,
    pub qtype: u32,
    /// The query's DNS header flags.
    pub flags: u32,
    /// 1 if the query had an OPT record, and its UDP payload size.
    pub has_edns: u32,
    pub udp_size: u32,
    /// The picked records: offset in their `AnswerSet`, bytes, count, checksum.
    pub rrs_off: u32,
    pub rrs_len: u32,
    pub ancount: u32,
    pub rrs_csum: u32,
    /// The RRSIG record the reply carries after the records (0 bytes: none) and its
    /// checksum.
    pub rrsig_len: u32,
    pub rrsig_csum: u32,
    /// Header flags the reply adds: TC for RRL's slip, the RCODE of a negative answer.
    pub extra_flags: u32,
    /// 1: the records go in the authority section (a negative answer's SOA), not the
    /// answer section.
    pub authority: u32,
    /// The entry's counter in NAME_ANSWERS.
    pub counter: u32,
}

/// The XDP program's work on a query's COOKIE option.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CookieScratch {
    /// Where the query's IP header is and its family (1: IPv6), for the cookie program.
    pub l3_off: u32,
    pub is_ipv6: u32,
    /// `COOKIE_RESUMED` while the cookie program hands the packet back to the answering
    /// program; the answering program reads and clears it on entry …
    pub resumed: u32,
    /// … into this: 1 while the results below are for the packet being answered.
    pub ready: u32,
    /// The hash input (`cookie::COOKIE_MSG_WORDS`): the client address is put in before
    /// the question is walked, the cookie words once the OPT record is found.
    pub msg: [u64; cookie::COOKIE_MSG_WORDS],
    /// `cookie::COOKIE_MSG_LEN_V4` or `_V6`.
    pub msg_len: u32,
    /// 1: the query's server cookie is ours, made with a current or previous secret and
    /// fresh, so its source address is proven (RRL lets it through).
    pub verified: u32,
    /// The server cookie the query presented (RFC 9018 layout), as read.
    pub received: [u64; 2],
    /// The reply's COOKIE option, ready to copy (`cookie::REPLY_COOKIE_OPTION_LEN`
    /// bytes used) …
    pub reply: [u8; 32],
    /// … its length (0: the reply has no COOKIE option) …
    pub reply_len: u32,
    /// … and its one's-complement sum, folded, as big-endian words from its first byte.
    pub reply_csum: u32,
}

/// `Scratch::harmless_options`: an option of that kind was in the query (its length
/// is in the low 16 bits).
pub const HARMLESS_SEEN: u32 = 1 << 16;

/// Longest `server.nsid`, in bytes: the option stays small beside the answer (the
/// reply must fit 512 bytes without EDNS buffer to spare); Knot and NSD ids are host
/// names, well under this.
pub const MAX_NSID_LEN: usize = 128;

/// The NSID option (RFC 5001 §2.3) XDP's replies carry when a query asks: the single
/// entry of the `NSID` map, written by the controller from `server.nsid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsidOption {
    /// Bytes of `option` in use: 4 (code, length) + the id's length; 0: NSID is off,
    /// and a query asking for it is passed to the DNS server as before.
    pub option_len: u32,
    /// One's-complement sum of `option[..option_len]` as big-endian words from an
    /// even offset (odd length: the last byte is a word's high byte), folded to 16 bits.
    pub csum: u32,
    /// OPTION-CODE 3, OPTION-LENGTH, then the id; zero after `option_len`.
    pub option: [u8; 4 + MAX_NSID_LEN],
}

impl NsidOption {
    /// The option carrying `id` (at most MAX_NSID_LEN bytes; longer is cut, the config
    /// refuses it first); an empty `id` is NSID off.
    pub fn new(id: &[u8]) -> NsidOption {
        let id = &id[..id.len().min(MAX_NSID_LEN)];
        let mut option = [0u8; 4 + MAX_NSID_LEN];
        if id.is_empty() {
            return NsidOption { option_len: 0, csum: 0, option };
        }
        option[..2].copy_from_slice(&wire::edns::OPTION_NSID.to_be_bytes());
        option[2..4].copy_from_slice(&(id.len() as u16).to_be_bytes());
        option[4..4 + id.len()].copy_from_slice(id);
        let option_len = 4 + id.len();
        let sum = csum::sum_be_words(&option[..option_len]);
        NsidOption { option_len: option_len as u32, csum: csum::fold(sum) as u32, option }
    }
}

/// `CookieScratch::resumed`: the cookie program made this packet's cookie.
pub const COOKIE_RESUMED: u32 = 0x636b_6965;
/// Slots of the `cookie_programs` program array: the cookie program, and the answering
/// program it hands the packet back to.
pub const COOKIE_PROGRAM_SLOT: u32 = 0;
pub const ANSWER_PROGRAM_SLOT: u32 = 1;
/// The slow-path guard, tail-called for a query the answering program passes.
pub const SLOW_PATH_PROGRAM_SLOT: u32 = 2;
/// Negative answers (NXDOMAIN, NODATA) for unsigned zones, tail-called for a query the
/// answering program passes before the guard sees it.
pub const NEGATIVE_PROGRAM_SLOT: u32 = 3;
/// The tap's programs: the one recording a frame as received (then handing it to the
/// answering program), and the one recording what became of it (see `TapSettings`).
pub const TAP_RECEIVED_PROGRAM_SLOT: u32 = 4;
pub const TAP_EXIT_PROGRAM_SLOT: u32 = 5;
/// Entries of the `program_slots` program array.
pub const PROGRAM_SLOTS: usize = 6;

/// What the tap records (the single entry of `TAP_SETTINGS`): all zero, nothing — the
/// answering program then only reads this entry. Set by the controller while a
/// `primwatch capture` runs or `[dnstap]` is configured.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapSettings {
    /// 1: every frame, for `primwatch capture`.
    pub capture: u32,
    /// dnstap: one packet in this many per CPU (1: all); 0: off.
    pub dnstap_every: u32,
}

/// `Scratch::tap_state` and `TapHeader::flags`: the frame was recorded for a capture …
pub const TAP_FOR_CAPTURE: u32 = 1;
/// … or as a dnstap sample.
pub const TAP_FOR_DNSTAP: u32 = 2;
/// `Scratch::tap_state`: the tap program has seen this packet (recorded or not).
pub const TAP_SEEN: u32 = 1 << 31;
/// `TapHeader::kind`: the frame as it arrived …
pub const TAP_RECEIVED: u32 = 1;
/// … and what became of it (`action`); the frame as sent when the action is XDP_TX,
/// none otherwise (a passed frame is the received one, unmodified).
pub const TAP_EXIT: u32 = 2;
/// Frame bytes a tap record holds; longer frames are cut (`caplen` < `frame_len`).
pub const TAP_SNAPLEN: usize = 2048;

/// One record of the `TAP_EVENTS` ring buffer: this header, then `caplen` frame bytes.
/// The two records of one packet come from one CPU, received then exit, with nothing
/// of that CPU's between them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapHeader {
    /// TAP_RECEIVED or TAP_EXIT.
    pub kind: u32,
    /// TAP_FOR_* bits.
    pub flags: u32,
    /// The XDP action (exit records).
    pub action: u32,
    /// The CPU that handled the packet.
    pub cpu: u32,
    /// CLOCK_MONOTONIC, nanoseconds (bpf_ktime_get_ns).
    pub time_ns: u64,
    /// The frame's length, and how much of it follows.
    pub frame_len: u32,
    pub caplen: u32,
    /// The interface it arrived on.
    pub ifindex: u32,
    /// This CPU's number for the packet: its two records carry the same one, so that a
    /// record the full ring dropped never pairs one packet's query with another's fate.
    pub seq: u32,
}

/// Bytes of a `TapHeader` on the wire of the ring buffer.
pub const TAP_HEADER_LEN: usize = core::mem::size_of::<TapHeader>();

/// A tap record as the XDP program builds it (per-CPU, before it goes to the ring).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TapRecord {
    pub header: TapHeader,
    pub frame: [u8; TAP_SNAPLEN],
}

/// `ZoneName::flags`: the name is a delegation point (NS records below the apex) or a
/// DNAME owner, or the apex of a declared zone XDP has no negative data for: queries at
/// and below it are the DNS server's (referrals, synthesis, another zone's data).
pub const ZONE_NAME_HANDS_OFF: u32 = 1;
/// … a wildcard (`*.name`) exists directly below it: a name below is covered, the DNS
/// server answers it.
pub const ZONE_NAME_WILDCARD_BELOW: u32 = 2;
/// … the name has a CNAME (it answers every type).
pub const ZONE_NAME_CNAME: u32 = 4;
/// … the name is managed by primwatch (A/AAAA from the answering program): what that
/// program passes for it is the DNS server's.
pub const ZONE_NAME_MANAGED: u32 = 8;
/// … the name is the zone's apex (a DS query there is the parent zone's).
pub const ZONE_NAME_APEX: u32 = 16;

/// A name that exists in an unsigned zone XDP answers negatively for (`zone_names`
/// map, keyed by `NameKey::new(hash, 0)`): every owner of the zone's records, every
/// empty non-terminal, the apex. Absent names are the NXDOMAIN ones.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneName {
    /// `ZONE_NAME_*`.
    pub flags: u32,
    /// The zone's index in `zone_soas`.
    pub zone: u32,
    /// Types present at the name, bit t for type t < 64 (A = bit 1); a type ≥ 64 is
    /// never answered NODATA here.
    pub types: u64,
    pub name_len: u32,
    pub _pad: u32,
    /// Lowercased wire name, zero-padded (compared in full: a hash match is not enough).
    pub name: [u8; NAME_BUF_LEN],
}

/// Zones (apexes) `zone_soas` holds at most.
pub const MAX_NEGATIVE_ZONES: usize = 256;

/// Room for a negative answer's SOA record: the owner a compression pointer, then
/// TYPE, CLASS, TTL, RDLENGTH and RDATA with MNAME and RNAME uncompressed.
pub const SOA_RR_MAX: usize = MAX_ANSWER_BYTES;

/// A zone's SOA record as a negative answer carries it in its authority section
/// (RFC 2308 §3), value of the `zone_soas` array: the owner is a compression pointer
/// written as 0xc000 (the program adds the apex's offset in the question), the TTL is
/// min(SOA TTL, MINIMUM).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneSoa {
    /// Bytes of `rr`; 0: no SOA (the zone is not answered negatively).
    pub len: u32,
    /// One's-complement sum of `rr` (big-endian words from its first byte), unfolded.
    pub csum: u32,
    /// Wire length of the apex name.
    pub apex_len: u32,
    /// The SOA serial these answers were built from (for `bpftool` readers).
    pub serial: u32,
    pub rr: [u8; SOA_RR_MAX],
}
/// `Scratch::passed`: set for a query to the DNS server; the IP header's offset in
/// the low byte; IPv6.
pub const PASSED_QUERY: u32 = 1 << 16;
/// … and the query parsed whole and well formed (one question of class IN, a valid OPT
/// record if any, no IP options, no trailing bytes), so the guard may reply to it.
pub const PASSED_QUESTION: u32 = 1 << 17;
pub const PASSED_IPV6: u32 = 1 << 8;
/// … with `PASSED_QUESTION`: the query had an OPT record (its reply gets one).
pub const PASSED_EDNS: u32 = 1 << 18;

/// Longest UDP datagram (header included) whose checksum the XDP program verifies;
/// longer queries (heavy EDNS padding) are passed.
pub const MAX_CHECKSUMMED_DATAGRAM: usize = 512;

/// Ethernet + VLAN + IPv4 with options + UDP + DNS header + longest question.
pub const MAX_FRAME_FRONT: usize = 14 + 4 + 60 + 8 + 12 + MAX_NAME_LEN + 4;

/// An EDNS Client Subnet option as parsed from a query.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientSubnet {
    /// The address, zero beyond its bytes.
    pub address: [u8; 16],
    /// 1 IPv4, 2 IPv6.
    pub family: u16,
    pub source_len: u8,
    /// 1 when the query carried the option.
    pub present: u8,
    /// Scope prefix length for the reply (set with the view).
    pub scope_len: u8,
    pub _pad: [u8; 3],
}

/// Declares `Counters` from one list of its fields: the struct (field order is the
/// map's layout; the XDP program indexes the first `VERDICT_FIELDS` by `Verdict`), their
/// names (as `ctl stats` and `primwatch counters` show them), the metric family and
/// label each is exported under, and the sum over CPUs — so a counter is added in one
/// place.
macro_rules! counters {
    ($($(#[$doc:meta])* $field:ident => $family:literal / $label:literal,)*) => {
        /// Per-CPU packet counters: what was answered and why the rest was passed up.
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Counters {
            $($(#[$doc])* pub $field: u64,)*
        }

        impl Counters {
            pub const FIELD_NAMES: [&'static str; COUNTER_FIELDS] = [$(stringify!($field),)*];

            /// Where each field is exported: (metric family, label value), e.g.
            /// `rrl_exempt` is `("rrl_events", "exempt")`, which /metrics shows as
            /// `primwatch_xdp_rrl_events_total{event="exempt"}`.
            pub const METRICS: [(&'static str, &'static str); COUNTER_FIELDS] = [$(($family, $label),)*];

            pub fn as_array(&self) -> [u64; COUNTER_FIELDS] {
                [$(self.$field,)*]
            }

            pub fn add(&mut self, other: &Counters) {
                $(self.$field += other.$field;)*
            }
        }
    };
}

counters! {
    answered => "packets" / "answered",
    /// Not UDP to the DNS port (including IP fragments and IPv6 extension headers).
    pass_not_dns => "packets" / "pass_not_dns",
    /// A response, another opcode, several questions, or records in answer/authority.
    pass_not_plain_query => "packets" / "pass_not_plain_query",
    /// EDNS version other than 0, an EDNS option we do not handle, or more option
    /// bytes than we checksum.
    pass_unsupported_edns => "packets" / "pass_unsupported_edns",
    pass_name_not_found => "packets" / "pass_name_not_found",
    /// The name is served, but not for this query type or class.
    pass_type_not_present => "packets" / "pass_type_not_present",
    /// Truncated or inconsistent headers, compressed or over-long names.
    pass_malformed => "packets" / "pass_malformed",
    /// The reply would not fit the client's UDP payload size or the packet buffer.
    pass_too_large => "packets" / "pass_too_large",
    /// DO=1 for a name whose zone is signed (`dnssec = "pass"`) or in no declared zone.
    pass_dnssec => "packets" / "pass_dnssec",
    /// A wrong IPv4 header checksum or UDP checksum (or none over IPv6): the kernel
    /// would drop it, so XDP does not answer it.
    pass_bad_checksum => "packets" / "pass_bad_checksum",
    /// Not addressed to this host: a destination MAC other than the receiving
    /// interface's own (broadcast, multicast, another host's), or a destination IP that
    /// is none of the host's addresses (another host's, broadcast, multicast).
    pass_not_for_host => "packets" / "pass_not_for_host",
    /// From a source no reply may go to: a multicast source MAC, a martian source IP
    /// (unspecified, loopback, multicast, class E, broadcast, IPv4-mapped) or one of
    /// this host's own addresses.
    pass_bad_source => "packets" / "pass_bad_source",
    /// IPv4 options (source routes and the like): the kernel applies its own rules.
    pass_ip_options => "packets" / "pass_ip_options",
    /// Response rate limiting: over the client prefix's rate, dropped (XDP_DROP).
    rrl_dropped => "packets" / "rrl_dropped",
    /// Response rate limiting: over the rate, sent as an empty reply with TC=1 (the
    /// `slip`-th limited response), so a real client retries over TCP.
    rrl_slipped => "packets" / "rrl_slipped",
    /// Not verdicts (the packet is also counted above): answered without rate
    /// limiting because the source is in an exempt prefix …
    rrl_exempt => "rrl_events" / "exempt",
    /// … and what would have been limited in log-only mode (answered anyway).
    rrl_log_only => "rrl_events" / "log_only",
    /// DNS cookies: answers to a query whose server cookie verified (never rate
    /// limited) …
    cookie_verified => "cookie_events" / "verified",
    /// … and to one whose server cookie did not (expired, another server's, forged):
    /// answered with a fresh cookie, as one with a client cookie only.
    cookie_bad => "cookie_events" / "bad",
    /// The slow-path guard, for queries passed to the DNS server (also counted above by
    /// why they were passed): within the budgets …
    slow_path_passed => "slow_path_events" / "passed",
    /// … from an exempt prefix …
    slow_path_exempt => "slow_path_events" / "exempt",
    /// … with a verified server cookie (over budget, let through) …
    slow_path_cookie => "slow_path_events" / "cookie",
    /// … over a budget: dropped (XDP_DROP) …
    slow_path_dropped => "slow_path_events" / "dropped",
    /// … or, the `slip`-th, answered with an empty TC=1 reply (XDP_TX).
    slow_path_slipped => "slow_path_events" / "slipped",
    /// Negative answers for unsigned zones (also counted above as passed by the
    /// answering program): NXDOMAIN …
    negative_nxdomain => "negative_answers" / "nxdomain",
    /// … and NODATA (RFC 2308), each with the zone's SOA.
    negative_nodata => "negative_answers" / "nodata",
    /// The tap (dnstap, `primwatch capture`): frame records the ring buffer had no room
    /// for (the reader is behind); the packets themselves are handled as always.
    tap_dropped => "tap_events" / "dropped",
}

/// Fields of [`Counters`] from here on are events, not packet verdicts.
pub const VERDICT_FIELDS: usize = Verdict::RrlSlipped as usize + 1;

/// Why a packet was passed to the kernel; the value is the field index in [`Counters`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Answered = 0,
    NotDns = 1,
    NotPlainQuery = 2,
    UnsupportedEdns = 3,
    NameNotFound = 4,
    TypeNotPresent = 5,
    Malformed = 6,
    TooLarge = 7,
    Dnssec = 8,
    BadChecksum = 9,
    NotForHost = 10,
    BadSource = 11,
    IpOptions = 12,
    /// Dropped by response rate limiting (XDP_DROP, not passed).
    RrlDropped = 13,
    /// Answered with an empty TC=1 reply by response rate limiting (XDP_TX).
    RrlSlipped = 14,
}

pub const COUNTER_FIELDS: usize = core::mem::size_of::<Counters>() / 8;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain-old-data, repr(C), no padding the kernel could leak into.
    unsafe impl aya::Pod for super::NameKey {}
    unsafe impl aya::Pod for super::NameEntry {}
    unsafe impl aya::Pod for super::AnswerSet {}
    unsafe impl aya::Pod for super::RrsigKey {}
    unsafe impl aya::Pod for super::RrsigRr {}
    unsafe impl aya::Pod for super::Counters {}
    unsafe impl aya::Pod for super::ViewMatch {}
    unsafe impl aya::Pod for super::Settings {}
    // SAFETY: plain-old-data, repr(C), no padding the kernel could leak into.
    unsafe impl aya::Pod for super::NsidOption {}
    // SAFETY: plain-old-data, repr(C), no padding the kernel could leak into.
    unsafe impl aya::Pod for super::TapSettings {}
    unsafe impl aya::Pod for super::HostAddrs {}
    unsafe impl aya::Pod for super::RrlSettings {}
    unsafe impl aya::Pod for super::SlowPathSettings {}
    unsafe impl aya::Pod for super::RrlKey {}
    unsafe impl aya::Pod for super::RrlBucket {}
    unsafe impl aya::Pod for super::ZoneName {}
    unsafe impl aya::Pod for super::ZoneSoa {}
    unsafe impl aya::Pod for super::cookie::CookieSettings {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_verdicts_are_packets_and_the_events_are_not() {
        for (i, (family, label)) in Counters::METRICS.iter().enumerate() {
            assert_eq!(*family == "packets", i < VERDICT_FIELDS, "{}", Counters::FIELD_NAMES[i]);
            assert!(Counters::FIELD_NAMES[i].ends_with(label), "{} as {label}", Counters::FIELD_NAMES[i]);
        }
    }

    #[test]
    fn start_record_follows_the_mode() {
        let never = || -> u32 { panic!("not needed by this mode") };
        assert_eq!(start_record(Some(Select::Fixed), 4, never, never, 9, &[]), 0);
        assert_eq!(start_record(Some(Select::NoData), 4, never, never, 9, &[]), 0);
        assert_eq!(start_record(None, 4, never, never, 9, &[]), 0);
        assert_eq!(start_record(Some(Select::RoundRobin), 0, never, never, 9, &[]), 0, "no records");
        let rotation: [u32; 9] =
            core::array::from_fn(|turn| start_record(Some(Select::RoundRobin), 4, || turn as u32, never, 9, &[]));
        assert_eq!(rotation, [0, 1, 2, 3, 0, 1, 2, 3, 0]);
        assert_eq!(start_record(Some(Select::Random), 4, never, || 4_000_000_007, 9, &[]), 4_000_000_007 % 4);
        assert_eq!(start_record(Some(Select::Random), 3, never, || u32::MAX, 9, &[]), u32::MAX % 3);
        // Weighted: the slot is the random number's low bits, the start whatever it holds.
        let mut table = [0u8; WEIGHT_SLOTS];
        table[5] = 2;
        table[WEIGHT_SLOTS - 1] = 1;
        assert_eq!(start_record(Some(Select::Weighted), 3, never, || 5, 9, &table), 2);
        assert_eq!(start_record(Some(Select::Weighted), 3, never, || (7 * WEIGHT_SLOTS + 5) as u32, 9, &table), 2);
        assert_eq!(start_record(Some(Select::Weighted), 3, never, || u32::MAX, 9, &table), 1);
        assert_eq!(start_record(Some(Select::Weighted), 3, never, || 5, 9, &[]), 0, "no table: the first record");
        // Sticky: the slot is the client key's low bits; no random number is drawn.
        assert_eq!(start_record(Some(Select::Sticky), 3, never, never, 5, &table), 2);
        assert_eq!(start_record(Some(Select::Sticky), 3, never, never, u32::MAX, &table), 1);
        assert_eq!(start_record(Some(Select::Sticky), 3, never, never, 5, &[]), 0);
    }

    #[test]
    fn branch_free_helpers_agree_with_the_plain_forms() {
        for n in 0..=64u32 {
            let plain = if n == 0 { 0 } else { u64::MAX << (64 - n) };
            assert_eq!(top_bits(n), plain, "top {n} bits");
        }
        for (a, b) in [(0, 0), (0, 5), (5, 0), (24, 32), (128, 56), (56, 128), (0x7fff_ffff, 1), (1, 0x7fff_ffff)] {
            assert_eq!(min_u32(a, b), a.min(b), "min({a}, {b})");
        }
    }

    #[test]
    fn a_sticky_key_depends_on_the_prefix_alone() {
        let v4 = |a: [u8; 4]| {
            let mut address = [0u8; 16];
            address[..4].copy_from_slice(&a);
            address
        };
        let key = sticky_key(&v4([192, 0, 2, 1]), false, 24);
        assert_eq!(sticky_key(&v4([192, 0, 2, 254]), false, 24), key, "same /24");
        assert_ne!(sticky_key(&v4([192, 0, 3, 1]), false, 24), key, "next /24");
        assert_ne!(sticky_key(&v4([192, 0, 2, 1]), false, 25), key, "the length is part of the key");
        assert_eq!(sticky_key(&v4([192, 0, 2, 1]), false, 99), sticky_key(&v4([192, 0, 2, 1]), false, 32));
        assert_eq!(sticky_key(&v4([1, 2, 3, 4]), false, 0), sticky_key(&v4([5, 6, 7, 8]), false, 0));
        // Bits, not bytes: a /20 keeps the first four bits of the third byte.
        assert_eq!(sticky_key(&v4([10, 1, 0x1f, 9]), false, 20), sticky_key(&v4([10, 1, 0x10, 0]), false, 20));
        assert_ne!(sticky_key(&v4([10, 1, 0x2f, 9]), false, 20), sticky_key(&v4([10, 1, 0x10, 0]), false, 20));
        let mut v6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0x12, 0x34, 1, 2, 3, 4, 5, 6, 7, 8];
        let key6 = sticky_key(&v6, true, 56);
        v6[7] = 0xff;
        v6[15] = 0;
        assert_eq!(sticky_key(&v6, true, 56), key6, "beyond /56 ignored");
        v6[6] = 0;
        assert_ne!(sticky_key(&v6, true, 56), key6);
        // The family is part of the key: 192.0.2.0/24 is not ::c000:200/24.
        assert_ne!(sticky_key(&v4([192, 0, 2, 0]), true, 24), key);
        // Keys of many /24s spread over the slots evenly enough for shares to hold.
        let mut per_slot = [0u32; WEIGHT_SLOTS];
        for i in 0..(WEIGHT_SLOTS as u32 * 64) {
            let [_, b, c, d] = i.to_be_bytes();
            per_slot[sticky_key(&v4([b, c, d, 0]), false, 24) as usize % WEIGHT_SLOTS] += 1;
        }
        let (least, most) = (per_slot.iter().min().unwrap(), per_slot.iter().max().unwrap());
        assert!(*least > 30 && *most < 110, "64 per slot expected: {least}..{most}");
    }

    use super::*;

    #[test]
    fn word_lowercase_matches_bytewise_lowercase() {
        for b in 0..=255u8 {
            for position in 0..8 {
                // The byte among neighbours that are letters and non-letters.
                let mut bytes = *b"aZ@[`{\xffQ";
                bytes[position] = b;
                let expected = u64::from_le_bytes(bytes.map(|c| c.to_ascii_lowercase()));
                assert_eq!(ascii_lower_word(u64::from_le_bytes(bytes)), expected, "byte {b} at {position}");
            }
        }
    }

    #[test]
    fn counters_layout_matches_verdicts() {
        let c = Counters { pass_too_large: 7, answered: 1, ..Counters::default() };
        let a = c.as_array();
        assert_eq!(a[Verdict::TooLarge as usize], 7);
        assert_eq!(a[Verdict::Answered as usize], 1);
        assert_eq!(Counters::FIELD_NAMES[Verdict::Malformed as usize], "pass_malformed");
    }
}
