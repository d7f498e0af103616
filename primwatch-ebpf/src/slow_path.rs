//! The slow-path guard: budgets for the queries XDP passes to the DNS server behind it.
//!
//! Everything XDP cannot answer — names it does not serve, other types, DO=1 in signed
//! zones, malformed or oversized queries — goes to PowerDNS, which answers tens of
//! thousands a second, not millions, and exits when its queue overflows. So a UDP
//! query to the DNS port that the answering program passes comes here (a program of
//! its own, reached by a tail call, so that the answering program's verification does
//! not grow) and is let through:
//! - from an exempt prefix (your own resolvers and monitoring), always;
//! - within both budgets: the total (`queries_per_second`, one account shared by all
//!   CPUs) and its client prefix's (`prefix_queries_per_second`, an account in the
//!   `RRL` map under `ACCOUNT_CLASS_PASSED`), each refilled continuously and holding
//!   at most `burst_seconds` of credit;
//! - over a budget, when it presents a server cookie that verifies (its source is
//!   proven, so it is no spoofed flood): the cookie program checks it and hands the
//!   packet back to the answering program, which comes here again with the result.
//!
//! Anything else is held: every `slip`-th is answered with an empty TC=1 reply, so
//! that a real resolver behind the source (one without cookies: unbound as shipped)
//! asks again over TCP, the rest are dropped; each counted. TCP is never held here:
//! its handshake proves the source. A TC reply is the query's size or smaller (its OPT
//! record goes), so a spoofed flood reflected through it is not amplified.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use core::ptr;
use primwatch_common::{
    csum,
    wire::{dns, ipv4, ipv6, udp},
    RrlBucket, RrlKey, Scratch, SlowPathSettings, Verdict, ACCOUNT_CLASS_PASSED, COOKIE_PROGRAM_SLOT, MAX_NAME_LEN,
    NEGATIVE_PROGRAM_SLOT, QCLASS_IN, RRL_CREDIT_UNIT, SLOW_PATH_PROGRAM_SLOT,
};

use crate::{
    maps::{
        COOKIE_PROGRAMS, COOKIE_SETTINGS, NEGATIVE_SETTINGS, RRL, SCRATCH, SLOW_PATH_EXEMPT_V4, SLOW_PATH_EXEMPT_V6,
        SLOW_PATH_SETTINGS, SLOW_PATH_TOTAL,
    },
    packet::{be16, bytes_at, frame_len, put_be16, L4_OFFSET_MASK},
    parse::Passed,
    reply::{turn_around, write_headers},
    rrl::{client_prefix, count, PrefixMasks},
};

/// Called by the answering program for a packet it passes (`verdict` says why): a
/// query for the DNS server goes to the guard, or first to the negative answers for a
/// name it does not serve (neither returns here); anything else is passed.
#[inline(always)]
pub fn hand_over(ctx: &XdpContext, scratch: &Scratch, verdict: Verdict) -> u32 {
    let passed = Passed::of(scratch);
    if passed.query {
        if passed.question
            && verdict == Verdict::NameNotFound
            && NEGATIVE_SETTINGS.get(0).is_some_and(|zones| *zones != 0)
        {
            // SAFETY: the tail call only jumps (never returning) to a program of ours with this program's
            // `ctx`; nothing with a destructor is live, and on failure it returns and we go on.
            unsafe { COOKIE_PROGRAMS.tail_call(ctx, NEGATIVE_PROGRAM_SLOT) };
        }
        // SAFETY: the tail call only jumps (never returning) to a program of ours with this program's
        // `ctx`; nothing with a destructor is live, and on failure it returns and we go on.
        unsafe { COOKIE_PROGRAMS.tail_call(ctx, SLOW_PATH_PROGRAM_SLOT) };
    }
    xdp_action::XDP_PASS
}

/// The guard program: XDP_PASS or XDP_DROP for the query the answering program passed.
#[inline(always)]
pub fn guard(ctx: &XdpContext) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: `get_ptr_mut` returned this CPU's SCRATCH value (non-null, aligned, alive while
    // the program runs); this program, entered by a tail call, holds no other reference to it.
    let scratch = unsafe { &mut *scratch };
    let passed = Passed::of(scratch);
    let Some(settings) = SLOW_PATH_SETTINGS.get_ptr(0) else { return xdp_action::XDP_PASS };
    // SAFETY: non-null from `get_ptr`: the single SLOW_PATH_SETTINGS entry, alive as long as the map; only read.
    let settings = unsafe { &*settings };
    if !passed.query || (settings.queries_per_second == 0 && settings.prefix_queries_per_second == 0) {
        return xdp_action::XDP_PASS;
    }
    let masks = PrefixMasks {
        ipv4: settings.ipv4_mask,
        ipv6: settings.ipv6_mask,
        exempt_families: settings.exempt_families,
        class: ACCOUNT_CLASS_PASSED,
    };
    let mut key = RrlKey::default();
    let Passed { l3_off, is_ipv6, question, .. } = passed;
    match client_prefix(ctx, l3_off, is_ipv6, &masks, &SLOW_PATH_EXEMPT_V4, &SLOW_PATH_EXEMPT_V6, &mut key) {
        Ok(true) => {
            count(|c| c.slow_path_exempt += 1);
            return xdp_action::XDP_PASS;
        }
        Ok(false) => {}
        Err(_) => return xdp_action::XDP_PASS, // no source address to account: the kernel's
    }
    let cookie = &mut scratch.cookie;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let checked = unsafe { ptr::read_volatile(&cookie.ready) } != 0;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    if checked && unsafe { ptr::read_volatile(&cookie.verified) } != 0 {
        count(|c| c.slow_path_cookie += 1);
        return xdp_action::XDP_PASS;
    }
    // SAFETY: bpf_ktime_get_coarse_ns takes no arguments and touches no memory of ours.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if within_budgets(settings, &key, now) {
        count(|c| c.slow_path_passed += 1);
        return xdp_action::XDP_PASS;
    }
    // Over a budget: a server cookie may prove the source. The cookie program verifies
    // it and hands the packet back to the answering program, which passes it here again.
    // SAFETY: non-null from `get_ptr`: the single COOKIE_SETTINGS entry, alive as long as the map; only read.
    let cookies_on = COOKIE_SETTINGS.get_ptr(0).is_some_and(|s| unsafe { (*s).enabled } != 0);
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    if !checked && cookies_on && unsafe { ptr::read_volatile(&scratch.cookie_len) } != 0 {
        cookie.l3_off = l3_off as u32;
        cookie.is_ipv6 = is_ipv6 as u32;
        // SAFETY: `guard_resumed` is a field of the valid &mut Scratch above; the tail call jumps with
        // this program's `ctx` (nothing to drop) and, on failure, we go on to clear the mark.
        unsafe {
            ptr::write_volatile(&mut scratch.guard_resumed, 1);
            COOKIE_PROGRAMS.tail_call(ctx, COOKIE_PROGRAM_SLOT);
            ptr::write_volatile(&mut scratch.guard_resumed, 0);
        }
    }
    // Not proven: every `slip`-th gets an empty TC=1 reply (a real resolver behind the
    // source asks again over TCP, which is not held), the rest are dropped.
    if question && slip_due(settings) {
        // On failure the frame may be half rewritten: it is dropped, never passed on.
        if write_tc(ctx, scratch, l3_off, is_ipv6).is_ok() {
            count(|c| c.slow_path_slipped += 1);
            return xdp_action::XDP_TX;
        }
    }
    count(|c| c.slow_path_dropped += 1);
    xdp_action::XDP_DROP
}

/// Whether this query over budget is the `slip`-th (counted on the total account, for
/// all sources).
#[inline(always)]
fn slip_due(settings: &SlowPathSettings) -> bool {
    let slip = settings.slip as u64;
    let Some(total) = SLOW_PATH_TOTAL.get_ptr_mut(0) else { return false };
    // SAFETY: non-null from `get_ptr_mut`: the single SLOW_PATH_TOTAL entry, alive as long as the
    // map. Shared by all CPUs and updated without a lock: a concurrent update can lose a
    // count (plain stores) but touches nothing outside this value.
    let total = unsafe { &mut *total };
    total.limited = total.limited.wrapping_add(1);
    slip != 0 && total.limited % slip == 0
}

/// Turns the query into an empty reply with TC=1 in place: the question kept, QR and
/// TC set, RD and CD copied, no records and no OPT (RFC 1035 §4.1.1; what RRL's slip
/// sends, without the answer's lookup). Lengths and checksums are made for the
/// shortened datagram.
#[inline(always)]
fn write_tc(ctx: &XdpContext, scratch: &Scratch, l3_off: usize, is_ipv6: bool) -> Result<(), Verdict> {
    // SAFETY: a field of `scratch`, a valid, aligned reference to this CPU's Scratch (map value).
    let name_len = (unsafe { ptr::read_volatile(&scratch.passed_name_len) } as usize) & MAX_NAME_LEN;
    if name_len == 0 {
        return Err(Verdict::Malformed);
    }
    let l4_off = (l3_off + if is_ipv6 { ipv6::HLEN } else { ipv4::MIN_HLEN }) & L4_OFFSET_MASK;
    let dns_off = l4_off + udp::HLEN;
    let dns_len = dns::HLEN + name_len + dns::QTYPE_QCLASS_LEN;
    let udp_len = udp::HLEN + dns_len;
    let hdr = bytes_at(ctx, dns_off, dns::HLEN, Verdict::Malformed)?;
    // SAFETY: FLAGS_OFF + 2 <= dns::HLEN, the DNS header checked for `hdr` by `bytes_at` above.
    let query_flags = be16(unsafe { hdr.add(dns::FLAGS_OFF) });
    let q = bytes_at(ctx, dns_off + dns::HLEN + name_len, dns::QTYPE_QCLASS_LEN, Verdict::Malformed)?;
    let qtype = be16(q);
    // The question is in the frame (parsed); what follows it goes.
    let delta = (dns_off + dns_len) as i64 - frame_len(ctx) as i64;
    // SAFETY: `ctx.ctx` is the xdp_md the kernel passed; `delta` <= 0 only shrinks the frame (the
    // helper checks it), and `hdr` and `q` are not used after it.
    if delta > 0 || unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) } != 0 {
        return Err(Verdict::Malformed);
    }
    let mut sum = turn_around(ctx, l3_off, is_ipv6, udp_len)?;
    let flags = dns::FLAG_QR | dns::FLAG_TC | (query_flags & (dns::FLAG_RD | dns::FLAG_CD));
    sum += write_headers(ctx, l4_off, udp_len, flags, [0, 0], 0)?;
    // SAFETY: a field of `scratch`, a valid, aligned reference to this CPU's Scratch (map value).
    sum += unsafe { ptr::read_volatile(&scratch.passed_name_csum) };
    // QTYPE and QCLASS follow the name, at an odd offset when its length is odd.
    sum += csum::at_offset(csum::fold(qtype as u64 + QCLASS_IN as u64), name_len) as u64;
    let hdr = bytes_at(ctx, l4_off, udp::HLEN, Verdict::Malformed)?;
    // SAFETY: CHECKSUM_OFF + 2 <= udp::HLEN, checked for `hdr` by `bytes_at` above.
    put_be16(unsafe { hdr.add(udp::CHECKSUM_OFF) }, csum::udp_checksum_field(csum::fold(sum)));
    Ok(())
}

/// Whether the total budget and the prefix's (`key`) both have a query's credit left;
/// if so, each is debited one. Budgets refill at their rate and hold at most
/// `burst_seconds` of it; a prefix seen for the first time starts full. Shared by all
/// CPUs and updated without a lock, as RRL's accounts: a race loses a debit at worst.
#[inline(always)]
fn within_budgets(settings: &SlowPathSettings, key: &RrlKey, now: u64) -> bool {
    let burst = settings.burst_seconds.max(1) as i64;
    let total = match SLOW_PATH_TOTAL.get_ptr_mut(0) {
        Some(bucket) if settings.queries_per_second != 0 => {
            // SAFETY: non-null from `get_ptr_mut`: the single SLOW_PATH_TOTAL entry, alive as long as the
            // map. Shared by all CPUs and updated without a lock: a concurrent update can lose a
            // count (plain stores) but touches nothing outside this value.
            let bucket = unsafe { &mut *bucket };
            refill(bucket, settings.queries_per_second, burst, now);
            if bucket.credit < RRL_CREDIT_UNIT {
                return false;
            }
            Some(bucket)
        }
        _ => None,
    };
    if settings.prefix_queries_per_second != 0 {
        let rate = settings.prefix_queries_per_second;
        match RRL.get_ptr_mut(key) {
            Some(bucket) => {
                // SAFETY: a non-null value from `get_ptr_mut`, kept allocated by the kernel while the program
                // runs. Shared by all CPUs and updated without a lock: a concurrent update can lose a
                // debit (plain u64/i64 stores) but touches nothing outside this value.
                let bucket = unsafe { &mut *bucket };
                refill(bucket, rate, burst, now);
                if bucket.credit < RRL_CREDIT_UNIT {
                    return false;
                }
                bucket.credit -= RRL_CREDIT_UNIT;
            }
            None => {
                let full = rate as i64 * RRL_CREDIT_UNIT * burst;
                let fresh = RrlBucket { credit: full - RRL_CREDIT_UNIT, updated_ns: now, limited: 0 };
                let _ = RRL.insert(key, &fresh, 0);
            }
        }
    }
    if let Some(bucket) = total {
        bucket.credit -= RRL_CREDIT_UNIT;
    }
    true
}

/// Brings `bucket` up to `now`: `rate` a second, in `RRL_CREDIT_UNIT`ths, capped at
/// `burst` seconds' worth.
#[inline(always)]
fn refill(bucket: &mut RrlBucket, rate: u32, burst: i64, now: u64) {
    let cap = rate as i64 * RRL_CREDIT_UNIT * burst;
    // At most `burst` seconds count (more would only be capped, and could overflow).
    let elapsed = now.saturating_sub(bucket.updated_ns).min(burst as u64 * 1_000_000_000);
    let earned = (elapsed * rate as u64 / 1_000_000) as i64;
    bucket.credit = (bucket.credit + earned).min(cap);
    bucket.updated_ns = now;
}
