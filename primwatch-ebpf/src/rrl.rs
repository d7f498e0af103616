//! Response rate limiting (RRL, as BIND and Knot do it), for answers only — what XDP
//! passes is the slow-path guard's (`slow_path`). One account per (client prefix,
//! response class, name), as BIND and Knot keep them, in the LRU map `RRL`: the prefix
//! is the source address under `RrlSettings`' masks, the class answers-with-records or
//! NODATA, the name the answering entry (a wildcard's names share its one account). An
//! account earns `responses_per_second` credits a second, up to that many, and spends
//! one per answer. In debt, the answer is limited: dropped, except every `slip`-th,
//! which goes out empty with TC=1 so that a real client behind the prefix asks again
//! over TCP. A spoofed flood for one name from a resolver's prefix so limits only that
//! name's answers to the prefix, not its other names.
//!
//! Two steps, for the verifier's sake: `prepare` runs before the question name is
//! walked (where the program has few verifier states) and finds the prefix and whether
//! it is exempt; `charge` runs once the query is known to be answered, when the class
//! and the name are known, and decides and debits.

use aya_ebpf::{
    btf_maps::{lpm_trie::Key, LpmTrie},
    helpers::generated::bpf_ktime_get_coarse_ns,
    programs::XdpContext,
};
use core::ptr;
use primwatch_common::{
    wire::{ipv4, ipv6},
    Counters, RrlBucket, RrlKey, Scratch, Verdict, ACCOUNT_CLASS_ANSWER, ACCOUNT_CLASS_MASK, ACCOUNT_CLASS_NODATA,
    ACCOUNT_CLASS_NXDOMAIN, RRL_CREDIT_UNIT, RRL_DROP, RRL_EXEMPT, RRL_LOG_ONLY, RRL_OFF, RRL_PENDING, RRL_SEND,
    RRL_SLIP,
};

use crate::{
    maps::{COUNTERS, RRL, RRL_EXEMPT_V4, RRL_EXEMPT_V6, RRL_SETTINGS},
    packet::{bytes_at, is_zero, load_u32, load_u64},
};

/// Finds the query's client prefix (`Scratch::rrl_key`) and whether it is rate limited
/// at all (`Scratch::rrl_state`: off, exempt, or pending a charge).
#[inline(always)]
pub fn prepare(ctx: &XdpContext, l3_off: usize, is_ipv6: bool, scratch: &mut Scratch) -> Result<(), Verdict> {
    let state = match RRL_SETTINGS.get_ptr(0) {
        // SAFETY: non-null from `get_ptr`: the single RRL_SETTINGS entry, alive as long as the map; only read.
        Some(settings) if unsafe { (*settings).responses_per_second } != 0 => {
            // SAFETY: non-null from `get_ptr`: the single RRL_SETTINGS entry, alive as long as the map; only read.
            let settings = unsafe { &*settings };
            let masks = PrefixMasks {
                ipv4: settings.ipv4_mask,
                ipv6: settings.ipv6_mask,
                exempt_families: settings.exempt_families,
                class: ACCOUNT_CLASS_ANSWER,
            };
            if client_prefix(ctx, l3_off, is_ipv6, &masks, &RRL_EXEMPT_V4, &RRL_EXEMPT_V6, &mut scratch.rrl_key)? {
                RRL_EXEMPT
            } else {
                RRL_PENDING
            }
        }
        _ => RRL_OFF,
    };
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.rrl_state, state) };
    Ok(())
}

/// The answer's account — `prepare`'s prefix, `class` (`ACCOUNT_CLASS_ANSWER` or
/// `_NODATA`) and `name` (the entry's stats slot) — brought up to date and decided on:
/// `RRL_SEND`, `RRL_SLIP`, `RRL_DROP` or `RRL_LOG_ONLY`.
#[inline(always)]
fn decide(key: &RrlKey) -> u32 {
    let Some(settings) = RRL_SETTINGS.get_ptr(0) else { return RRL_OFF };
    // SAFETY: non-null from `get_ptr`: the single RRL_SETTINGS entry, alive as long as the map; only read.
    let settings = unsafe { &*settings };
    // Each response class has its own rate (BIND's); 0 leaves the class unlimited.
    let rate = match key.family & ACCOUNT_CLASS_MASK {
        ACCOUNT_CLASS_NODATA => settings.nodata_per_second,
        ACCOUNT_CLASS_NXDOMAIN => settings.nxdomains_per_second,
        _ => settings.responses_per_second,
    };
    if rate == 0 {
        return RRL_SEND;
    }
    // SAFETY: bpf_ktime_get_coarse_ns takes no arguments and touches no memory of ours.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let full = rate as i64 * RRL_CREDIT_UNIT;
    let Some(bucket) = RRL.get_ptr_mut(key) else {
        // An account seen for the first time starts with a full second's credit.
        let fresh = RrlBucket { credit: full, updated_ns: now, limited: 0 };
        let _ = RRL.insert(key, &fresh, 0);
        return RRL_SEND;
    };
    // SAFETY: a non-null value from `get_ptr_mut`, kept allocated by the kernel while the program
    // runs. Shared by all CPUs and updated without a lock: a concurrent update can lose a
    // debit (plain u64/i64 stores) but touches nothing outside this value.
    let bucket = unsafe { &mut *bucket };
    // Earned since the last update: the rate per second, in thousandths, for at most
    // a window (more would overflow and is capped anyway); the debt is bounded by a
    // window's worth. Shared by all CPUs and updated without a lock: a race loses an
    // answer's debit at worst.
    // The debt stops one answer short of a window's credit, so that `window` after a
    // flood stops, the account is answered again.
    let window = (settings.window_seconds as u64).max(1);
    let elapsed = now.saturating_sub(bucket.updated_ns).min((window + 1) * 1_000_000_000);
    let earned = (elapsed * rate as u64 / 1_000_000) as i64;
    let credit = (bucket.credit + earned).min(full).max(RRL_CREDIT_UNIT - full * window as i64);
    bucket.credit = credit;
    bucket.updated_ns = now;
    if credit >= RRL_CREDIT_UNIT {
        return RRL_SEND;
    }
    if settings.log_only != 0 {
        return RRL_LOG_ONLY;
    }
    let slip = settings.slip as u64;
    if slip != 0 && (bucket.limited + 1) % slip == 0 {
        RRL_SLIP
    } else {
        RRL_DROP
    }
}

/// How a source address becomes an account's key.
pub struct PrefixMasks {
    /// The prefix masks (bytes in packet order, read as native-endian words).
    pub ipv4: u32,
    pub ipv6: [u64; 2],
    /// Bit 0: the IPv4 exempt trie holds something; bit 1: the IPv6 one.
    pub exempt_families: u32,
    /// `ACCOUNT_CLASS_*`, kept in the key's family word.
    pub class: u32,
}

/// The account key of the packet's source — its prefix under `masks`, its family and
/// class — or true, with the key untouched, if the source lies in an exempt prefix.
#[inline(always)]
pub fn client_prefix(
    ctx: &XdpContext,
    l3_off: usize,
    is_ipv6: bool,
    masks: &PrefixMasks,
    exempt_v4: &LpmTrie<[u8; 4], u32, 65536>,
    exempt_v6: &LpmTrie<[u8; 16], u32, 65536>,
    key: &mut RrlKey,
) -> Result<bool, Verdict> {
    if is_ipv6 {
        let src = bytes_at(ctx, l3_off + ipv6::SRC_OFF, ipv6::ADDR_LEN, Verdict::Malformed)?;
        // SAFETY: `src` has the ipv6::ADDR_LEN bytes `bytes_at` checked just above; read_unaligned needs no alignment.
        let address = unsafe { ptr::read_unaligned(src as *const [u8; ipv6::ADDR_LEN]) };
        if masks.exempt_families & 2 != 0 && exempt_v6.get(&Key::new(8 * ipv6::ADDR_LEN as u32, address)).is_some() {
            return Ok(true);
        }
        key.family = 6 | masks.class;
        let words = key.prefix.as_mut_ptr() as *mut u64;
        // SAFETY: `words` spans `key.prefix`, a [u8; 16] (two unaligned u64 writes); `src` has the 16
        // bytes `bytes_at` checked above (loads at 0 and 8).
        unsafe {
            ptr::write_unaligned(words, load_u64(src) & masks.ipv6[0]);
            ptr::write_unaligned(words.add(1), load_u64(src.add(8)) & masks.ipv6[1]);
        }
    } else {
        let src = bytes_at(ctx, l3_off + ipv4::SRC_OFF, ipv4::ADDR_LEN, Verdict::Malformed)?;
        // SAFETY: `src` has the ipv4::ADDR_LEN bytes `bytes_at` checked just above; read_unaligned needs no alignment.
        let address = unsafe { ptr::read_unaligned(src as *const [u8; ipv4::ADDR_LEN]) };
        if masks.exempt_families & 1 != 0 && exempt_v4.get(&Key::new(8 * ipv4::ADDR_LEN as u32, address)).is_some() {
            return Ok(true);
        }
        key.family = 4 | masks.class;
        let words = key.prefix.as_mut_ptr() as *mut u64;
        // SAFETY: `words` spans `key.prefix`, a [u8; 16] (two unaligned u64 writes); `src` has the 4
        // bytes `bytes_at` checked above.
        unsafe {
            ptr::write_unaligned(words, (load_u32(src) & masks.ipv4) as u64);
            ptr::write_unaligned(words.add(1), 0);
        }
    }
    Ok(false)
}

/// The query is answered with `ancount` records by the entry with stats slot `name`:
/// decides on its account and debits it. True if the answer is to be dropped; `slip`
/// says (branch-free) whether it goes out empty with TC=1.
#[inline(always)]
pub fn charge(scratch: &mut Scratch, name: u32, ancount: u16) -> bool {
    let class = if ancount == 0 { ACCOUNT_CLASS_NODATA } else { ACCOUNT_CLASS_ANSWER };
    charge_class(scratch, class, name)
}

/// As `charge`, for an answer of response class `class` (`ACCOUNT_CLASS_*`) on the
/// account `name`.
#[inline(always)]
pub fn charge_class(scratch: &mut Scratch, class: u32, name: u32) -> bool {
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let state = unsafe { ptr::read_volatile(&scratch.rrl_state) };
    if state == RRL_OFF {
        return false;
    }
    if state == RRL_EXEMPT {
        count(|c| c.rrl_exempt += 1);
        return false;
    }
    let key = &mut scratch.rrl_key;
    key.family |= class;
    key.name = name;
    let state = decide(key);
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.rrl_state, state) };
    if state == RRL_LOG_ONLY {
        count(|c| c.rrl_log_only += 1);
    }
    if let Some(bucket) = RRL.get_ptr_mut(&scratch.rrl_key) {
        // SAFETY: as in `decide`: a live RRL value, shared by all CPUs without a lock (a race loses a debit).
        let bucket = unsafe { &mut *bucket };
        bucket.credit -= RRL_CREDIT_UNIT;
        bucket.limited += (state == RRL_SLIP || state == RRL_DROP) as u64;
    }
    state == RRL_DROP
}

/// 1 if `prepare` decided on a slip (an empty TC=1 reply), else 0, without a branch:
/// the reply is then written once for both (see the XDP program's `try_answer`).
#[inline(always)]
pub fn slip(scratch: &Scratch) -> u64 {
    // SAFETY: a field of `scratch`, a valid, aligned reference to this CPU's Scratch (map value).
    is_zero(unsafe { ptr::read_volatile(&scratch.rrl_state) } as u64 ^ RRL_SLIP as u64)
}

/// Adds to this CPU's counters.
#[inline(always)]
pub fn count(f: impl FnOnce(&mut Counters)) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: this CPU's COUNTERS value (non-null from `get_ptr_mut`); per-CPU, and no other
        // reference to it is live while `f` runs.
        f(unsafe { &mut *counters });
    }
}
