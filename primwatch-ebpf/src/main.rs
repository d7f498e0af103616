//! primwatch's XDP program: answers plain A/AAAA queries for configured names straight
//! from the `NAMES` map and passes every other packet to the kernel, unmodified.
//!
//! The flow, one module per stage: `parse` (headers, question; `edns` for the OPT
//! record) → `lookup` (view, exact name, wildcard) → `pick` (which records) → `cookie`
//! (DNS cookies) → `rrl` (response rate limiting) → `reply` (in-place rewrite,
//! checksums) → XDP_TX; a query it passes to the DNS server goes through `negative`
//! (NXDOMAIN and NODATA for unsigned zones) and `slow_path` (budgets) first. Nothing is written to the packet before the lookup succeeded and
//! the reply is known to fit, so every pass leaves the packet byte for byte as it came. Maps are in `maps`, bounds-checked packet access in `packet`;
//! `tap` records frames for dnstap and `primwatch capture` when asked.
#![no_std]
#![no_main]
// Every unsafe block says why it is sound (`SAFETY:`), checked by clippy in `cargo xtask test`.
#![warn(clippy::undocumented_unsafe_blocks)]
// One-instruction unaligned loads (packet::load_u64); the eBPF crate builds on nightly.
#![feature(asm_experimental_arch)]
// The verifier follows `(n + 7) / 8` and `n % 8 == 0` as plain arithmetic; `div_ceil`
// and `is_multiple_of` may add checks and branches the verifier then walks.
#![allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)]
// A map key passed by reference is read where it lies (in scratch, a map value); by
// value it would be copied to the stack first.
#![allow(clippy::needless_borrows_for_generic_args)]

mod cookie;
mod edns;
mod host;
mod lookup;
mod maps;
mod negative;
mod packet;
mod parse;
mod pick;
mod reflect;
mod reply;
mod rrl;
mod slow_path;
mod tap;

use core::mem::{offset_of, size_of};

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use primwatch_common::{
    name_answers_index, set_index, wire::dns, AnswerSet, NameKey, ReplyPlan, RrsigKey, Select, Verdict,
    ENTRY_ANSWERS_DO, ENTRY_SIGNED, QTYPE_A, QTYPE_AAAA,
};

use maps::{COUNTERS, NAME_ANSWERS, RRSETS, RRSIGS, SCRATCH, SET_VERSIONS};

#[xdp]
pub fn primwatch(ctx: XdpContext) -> u32 {
    if let Some(scratch) = SCRATCH.get_ptr_mut(0) {
        // SAFETY: `get_ptr_mut` returned this CPU's SCRATCH value (non-null, aligned, alive while
        // the program runs); the reference ends with this call.
        tap::on_entry(&ctx, unsafe { &mut *scratch });
    }
    let action = answer_or_hand_over(&ctx);
    tap::on_exit(&ctx, action)
}

/// The answering program's work: answer, drop, pass, or hand over to the negative
/// answers and the slow-path guard; returns the XDP action.
#[inline(always)]
fn answer_or_hand_over(ctx: &XdpContext) -> u32 {
    let verdict = match try_answer(ctx) {
        Ok(()) => Verdict::Answered,
        Err(reason) => reason,
    };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: `get_ptr_mut` returned this CPU's SCRATCH value (non-null, aligned, alive while the
    // program runs); `try_answer`'s reference to it has ended, so this one is the only one.
    let scratch = unsafe { &mut *scratch };
    let passing = !matches!(verdict, Verdict::Answered | Verdict::RrlSlipped | Verdict::RrlDropped);
    // A passed query comes through twice when the slow-path guard has its cookie
    // checked (see `slow_path`): count it the first time only. (`ready` says this pass
    // follows the cookie program; the guard's mark, that the guard sent it there.)
    let again = passing
        // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
        && unsafe { core::ptr::read_volatile(&scratch.cookie.ready) } != 0
        // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
        && unsafe { core::ptr::read_volatile(&scratch.guard_resumed) } != 0;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { core::ptr::write_volatile(&mut scratch.guard_resumed, 0) };
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // The fields of `Counters` are u64s in `Verdict` order.
        // SAFETY: `counters` is this CPU's COUNTERS value (non-null from `get_ptr_mut`), a repr(C)
        // `Counters` of COUNTER_FIELDS (27) u64s; `verdict` is at most RrlSlipped = 14, so the
        // pointer is one of them. Per-CPU: nothing else writes it meanwhile.
        unsafe { *(counters as *mut u64).add(verdict as usize) += !again as u64 };
    }
    match verdict {
        // A reply was written: an answer, or RRL's empty TC=1 reply.
        Verdict::Answered | Verdict::RrlSlipped => xdp_action::XDP_TX,
        Verdict::RrlDropped => xdp_action::XDP_DROP,
        // Not for this host: the kernel's to forward or drop, not the DNS server's.
        Verdict::NotForHost => xdp_action::XDP_PASS,
        _ => slow_path::hand_over(ctx, scratch, verdict),
    }
}

/// A program that passes everything. Tests attach it to the client end of a veth pair
/// (native-mode XDP_TX on veth needs a program on the peer) and benchmarks use it as the floor.
#[xdp]
pub fn primwatch_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The slow-path guard, reached by a tail call for a query the answering program
/// passes: see `slow_path`.
#[xdp]
pub fn primwatch_slow_path(ctx: XdpContext) -> u32 {
    tap::on_exit(&ctx, slow_path::guard(&ctx))
}

/// Negative answers for unsigned zones, reached by a tail call for a query the
/// answering program passes: see `negative`.
#[xdp]
pub fn primwatch_negative(ctx: XdpContext) -> u32 {
    tap::on_exit(&ctx, negative::answer(&ctx))
}

/// DNS cookies for the answering program, reached by a tail call: see `cookie`.
#[xdp]
pub fn primwatch_cookie(ctx: XdpContext) -> u32 {
    tap::on_exit(&ctx, cookie::make(&ctx))
}

/// The tap's record of a frame as received, reached by a tail call: see `tap`.
#[xdp]
pub fn primwatch_tap_received(ctx: XdpContext) -> u32 {
    tap::received(&ctx)
}

/// The tap's record of what became of a frame, reached by a tail call: see `tap`.
#[xdp]
pub fn primwatch_tap_exit(ctx: XdpContext) -> u32 {
    tap::exit(&ctx)
}

/// The throughput bench's ceiling: see `reflect`.
#[xdp]
pub fn primwatch_reflect(ctx: XdpContext) -> u32 {
    match reflect::reflect(&ctx) {
        Ok(()) => xdp_action::XDP_TX,
        Err(_) => xdp_action::XDP_PASS,
    }
}

#[inline(always)]
fn try_answer(ctx: &XdpContext) -> Result<(), Verdict> {
    // SAFETY: `get_ptr_mut` returned this CPU's SCRATCH value (non-null, aligned, alive while the
    // program runs); no other reference to it exists while `try_answer` runs.
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0).ok_or(Verdict::Malformed)? };
    cookie::on_entry(scratch);
    // Set again by `parse` for this packet, if it is a query for the DNS server.
    // SAFETY: fields of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe {
        core::ptr::write_volatile(&mut scratch.passed, 0);
        core::ptr::write_volatile(&mut scratch.cookie_len, 0);
        core::ptr::write_volatile(&mut scratch.harmless_options, [0; 2]);
    }
    let query = parse::parse_query(ctx, scratch)?;
    edns::check_nsid(scratch)?;
    let entry = lookup::lookup(ctx, &query, scratch)?;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let dnssec_ok = unsafe { core::ptr::read_volatile(&scratch.edns_do) } != 0;
    if dnssec_ok && entry.flags & (ENTRY_ANSWERS_DO | ENTRY_SIGNED) == 0 {
        return Err(Verdict::Dnssec); // a signed zone's answers come from the DNS server
    }
    let set = match query.qtype {
        QTYPE_A => entry.a_set,
        QTYPE_AAAA => entry.aaaa_set,
        _ => return Err(Verdict::TypeNotPresent),
    };
    // The set's current slot: the controller rewrites the other one, then flips.
    let version = SET_VERSIONS.get(set).copied().ok_or(Verdict::TypeNotPresent)?;
    let answers = RRSETS.get(set_index(set, version)).ok_or(Verdict::TypeNotPresent)?;
    if answers.count == 0 && answers.select != Select::NoData as u8 {
        return Err(Verdict::TypeNotPresent);
    }
    cookie::answer(ctx, query.l3_off, query.is_ipv6, scratch);
    let picked = pick::pick_records(answers, scratch)?;
    // DO=1 in a zone we sign: the RRset's signature, or the DNS server answers (one
    // not signed yet; NODATA, whose proof of nonexistence XDP does not build).
    let rrsig = if dnssec_ok && entry.flags & ENTRY_SIGNED != 0 {
        if picked.ancount == 0 {
            return Err(Verdict::Dnssec);
        }
        let key = RrsigKey {
            name_hash: query.name_hash,
            slot: entry.stats_slot,
            generation: answers.generation,
            start: picked.start,
            _pad: 0,
        };
        // SAFETY: non-null from `get_ptr`: a RRSIGS value, kept alive by the kernel (RCU) while the
        // program runs; only read.
        Some(unsafe { &*RRSIGS.get_ptr(&key).ok_or(Verdict::Dnssec)? })
    } else {
        None
    };
    let (rrsig_len, rrsig_csum) = rrsig.map_or((0, 0), |r| (r.len as u32, r.csum as u32));
    if rrl::charge(scratch, entry.stats_slot, picked.ancount) {
        return Err(Verdict::RrlDropped);
    }
    // RRL's slip: the same reply without records and with TC=1, made branch-free so
    // that the verifier checks the reply once rather than once per outcome.
    let slip = rrl::slip(scratch);
    let keep = slip ^ 1;
    let plan = ReplyPlan {
        name_csum: query.name_csum,
        l3_off: query.l3_off as u32,
        l4_off: query.l4_off as u32,
        is_ipv6: query.is_ipv6 as u32,
        name_len: query.name_len as u32,
        qtype: query.qtype as u32,
        flags: query.flags as u32,
        has_edns: query.edns.is_some() as u32,
        udp_size: query.edns.as_ref().map_or(0, |e| e.udp_size as u32),
        rrs_off: (offset_of!(AnswerSet, rrs) + picked.offset) as u32,
        rrs_len: picked.len as u32 * keep as u32,
        ancount: (picked.ancount as u32 + (rrsig_len != 0) as u32) * keep as u32,
        rrs_csum: picked.csum as u32 * keep as u32,
        rrsig_len: rrsig_len * keep as u32,
        rrsig_csum: rrsig_csum * keep as u32,
        extra_flags: slip as u32 * dns::FLAG_TC as u32,
        authority: 0,
        counter: name_answers_index(entry.stats_slot, query.qtype == QTYPE_AAAA),
    };
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { core::ptr::write_volatile(&mut scratch.plan, plan) };
    let rrsig_off = reply::write_reply(ctx, scratch, answers)?;
    if rrl::slip(scratch) != 0 {
        return Err(Verdict::RrlSlipped); // sent, as an empty TC=1 reply
    }
    if let Some(rrsig) = rrsig {
        reply::write_rrsig(ctx, rrsig_off, rrsig)?;
    }
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let counter = unsafe { core::ptr::read_volatile(&scratch.plan.counter) };
    if let Some(count) = NAME_ANSWERS.get_ptr_mut(counter) {
        // SAFETY: `count` is this CPU's NAME_ANSWERS slot (non-null from `get_ptr_mut`, which bounds
        // the index); per-CPU, so nothing else writes it meanwhile.
        unsafe { *count += 1 };
    }
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

const _: () = assert!(size_of::<NameKey>() == 16);
