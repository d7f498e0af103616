//! primwatch's XDP program: answers plain A/AAAA queries for configured names straight
//! from the `NAMES` map and passes every other packet to the kernel, unmodified.
//!
//! The flow, one module per stage: `parse` (headers, question; `edns` for the OPT
//! record) → `lookup` (view, exact name, wildcard) → `pick` (which records) → `rrl`
//! (response rate limiting) → `reply` (in-place rewrite, checksums) → XDP_TX. Nothing is written to the packet before the
//! lookup succeeded and the reply is known to fit, so every pass leaves the packet byte
//! for byte as it came. Maps are in `maps`, bounds-checked packet access in `packet`.
#![no_std]
#![no_main]
// One-instruction unaligned loads (packet::load_u64); the eBPF crate builds on nightly.
#![feature(asm_experimental_arch)]

mod edns;
mod host;
mod lookup;
mod maps;
mod packet;
mod parse;
mod pick;
mod reflect;
mod reply;
mod rrl;

use core::mem::size_of;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use primwatch_common::{
    name_answers_index, wire::dns, NameKey, Select, Verdict, ENTRY_ANSWERS_DO, QTYPE_A, QTYPE_AAAA,
};

use maps::{COUNTERS, NAME_ANSWERS, SCRATCH};

#[xdp]
pub fn primwatch(ctx: XdpContext) -> u32 {
    let verdict = match try_answer(&ctx) {
        Ok(()) => Verdict::Answered,
        Err(reason) => reason,
    };
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // The fields of `Counters` are u64s in `Verdict` order.
        unsafe { *(counters as *mut u64).add(verdict as usize) += 1 };
    }
    match verdict {
        // A reply was written: an answer, or RRL's empty TC=1 reply.
        Verdict::Answered | Verdict::RrlSlipped => xdp_action::XDP_TX,
        Verdict::RrlDropped => xdp_action::XDP_DROP,
        _ => xdp_action::XDP_PASS,
    }
}

/// A program that passes everything. Tests attach it to the client end of a veth pair
/// (native-mode XDP_TX on veth needs a program on the peer) and benchmarks use it as the floor.
#[xdp]
pub fn primwatch_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
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
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0).ok_or(Verdict::Malformed)? };
    let query = parse::parse_query(ctx, scratch)?;
    let records = lookup::lookup(ctx, &query, scratch)?;
    if unsafe { core::ptr::read_volatile(&scratch.edns_do) } != 0 && records.flags & ENTRY_ANSWERS_DO == 0 {
        return Err(Verdict::Dnssec); // a signed zone's answers come from the DNS server
    }
    let answers = match query.qtype {
        QTYPE_A => &records.a,
        QTYPE_AAAA => &records.aaaa,
        _ => return Err(Verdict::TypeNotPresent),
    };
    if answers.count == 0 && answers.select != Select::NoData as u8 {
        return Err(Verdict::TypeNotPresent);
    }
    let mut picked = pick::pick_records(answers, scratch)?;
    if rrl::charge(scratch) {
        return Err(Verdict::RrlDropped);
    }
    // RRL's slip: the same reply without records and with TC=1, made branch-free so
    // that the verifier checks the reply once rather than once per outcome.
    let slip = rrl::slip(scratch);
    let keep = slip ^ 1;
    picked.len *= keep as usize;
    picked.ancount *= keep as u16;
    picked.csum *= keep as u16;
    let counter = name_answers_index(records.stats_slot, query.qtype == QTYPE_AAAA);
    reply::write_reply(ctx, scratch, &query, &picked, slip as u16 * dns::FLAG_TC)?;
    if slip != 0 {
        return Err(Verdict::RrlSlipped); // sent, as an empty TC=1 reply
    }
    if let Some(count) = NAME_ANSWERS.get_ptr_mut(counter) {
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
