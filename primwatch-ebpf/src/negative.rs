//! Negative answers for unsigned zones (RFC 2308): NXDOMAIN for a name that exists
//! nowhere in its zone, NODATA for a name without the type asked for, each with the
//! zone's SOA in the authority section — so a random-subdomain flood is answered here
//! and never reaches the DNS server, and resolvers cache the denial for the SOA's
//! negative TTL (RFC 8020: NXDOMAIN means nothing below either).
//!
//! The controller transfers each zone that asks for it from the DNS server and writes
//! every name that exists in it into `ZONE_NAMES` (owners, empty non-terminals, the
//! apex, the managed names), with its types and what hands it off, and the zone's SOA
//! into `ZONE_SOAS`. For a query the answering program did not find, this program walks
//! the question name up, a label at a time, to the closest name that exists (the
//! closest encloser, RFC 4592 §3.3.1):
//! - the name itself: NODATA if the type is not there (a type below 64, no CNAME, not
//!   a managed name, not DS at an apex, not at a delegation);
//! - an ancestor: NXDOMAIN, unless a wildcard sits directly below it (the name may be
//!   covered) or it hands off (a delegation, a DNAME, a zone without negative data);
//! - nothing within `MAX_WALK` labels: not ours.
//!
//! Anything it does not answer goes on to the slow-path guard, untouched.

use core::{mem::offset_of, ptr};

use aya_ebpf::{bindings::xdp_action, helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use primwatch_common::{
    wire::{dns, ipv4, ipv6, udp},
    NameKey, ReplyPlan, Scratch, Verdict, ZoneName, ZoneSoa, ACCOUNT_CLASS_NODATA, ACCOUNT_CLASS_NXDOMAIN,
    MAX_NAME_LEN, SLOW_PATH_PROGRAM_SLOT, SOA_RR_MAX, ZONE_NAME_APEX, ZONE_NAME_CNAME, ZONE_NAME_HANDS_OFF,
    ZONE_NAME_MANAGED, ZONE_NAME_WILDCARD_BELOW,
};

use crate::{
    cookie,
    lookup::same_name,
    maps::{COOKIE_PROGRAMS, SCRATCH, ZONE_NAMES, ZONE_SOAS},
    packet::{be16, bytes_at, put_be16, FRAME_OFFSET_MASK, L4_OFFSET_MASK},
    parse::{lower_hash_sum, Passed},
    reply::write_reply,
    rrl::{self, count},
};

/// Labels walked up from the question name before giving up (and passing the query):
/// a random-subdomain flood's names are a label or two below a zone's names.
const MAX_WALK: usize = 12;
/// Types never denied here: the meta types (RFC 6895 §3.1: 128–255, ANY, AXFR, IXFR)
/// start at 128; OPT (41) is not a question type.
const FIRST_META_TYPE: u16 = 128;
const QTYPE_OPT: u16 = 41;
/// DS (RFC 4034 §5): at an apex it is the parent zone's.
const QTYPE_DS: u16 = 43;
/// Bit set in a NODATA account's name (the name's hash): never a stats slot.
const HASHED_ACCOUNT: u32 = 1 << 31;

/// What the walk found.
enum Denial {
    NxDomain,
    NoData,
}

/// The program: XDP_TX with the negative answer (or RRL's TC reply), XDP_DROP over
/// RRL's rate, or on to the slow-path guard.
#[inline(always)]
pub fn answer(ctx: &XdpContext) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: `get_ptr_mut` returned this CPU's SCRATCH value (non-null, aligned, alive while
    // the program runs); this program, entered by a tail call, holds no other reference to it.
    let scratch = unsafe { &mut *scratch };
    match try_deny(ctx, scratch) {
        Ok(Denial::NxDomain) => {
            count(|c| c.negative_nxdomain += 1);
            xdp_action::XDP_TX
        }
        Ok(Denial::NoData) => {
            count(|c| c.negative_nodata += 1);
            xdp_action::XDP_TX
        }
        Err(Verdict::RrlSlipped) => {
            count(|c| c.rrl_slipped += 1);
            xdp_action::XDP_TX
        }
        Err(Verdict::RrlDropped) => {
            count(|c| c.rrl_dropped += 1);
            xdp_action::XDP_DROP
        }
        Err(_) => {
            // SAFETY: the tail call only jumps (never returning) to a program of ours with this program's
            // `ctx`; nothing with a destructor is live, and on failure it returns and we go on.
            unsafe { COOKIE_PROGRAMS.tail_call(ctx, SLOW_PATH_PROGRAM_SLOT) };
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn try_deny(ctx: &XdpContext, scratch: &mut Scratch) -> Result<Denial, Verdict> {
    let Passed { question, edns, is_ipv6, l3_off, .. } = Passed::of(scratch);
    if !question {
        return Err(Verdict::NameNotFound);
    }
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let name_len = (unsafe { ptr::read_volatile(&scratch.passed_name_len) } as usize) & MAX_NAME_LEN;
    if name_len < 2 {
        return Err(Verdict::NameNotFound); // the root: no zone of ours
    }
    let l4_off = (l3_off + if is_ipv6 { ipv6::HLEN } else { ipv4::MIN_HLEN }) & L4_OFFSET_MASK;
    let name_off = l4_off + udp::HLEN + dns::HLEN;
    let hdr = bytes_at(ctx, l4_off + udp::HLEN, dns::HLEN, Verdict::Malformed)?;
    // SAFETY: FLAGS_OFF + 2 <= dns::HLEN, the DNS header checked for `hdr` by `bytes_at` above.
    let query_flags = be16(unsafe { hdr.add(dns::FLAGS_OFF) });
    let q = bytes_at(ctx, name_off + name_len, dns::QTYPE_QCLASS_LEN, Verdict::Malformed)?;
    let qtype = be16(q);
    if qtype == 0 || qtype == QTYPE_OPT || qtype >= FIRST_META_TYPE {
        return Err(Verdict::TypeNotPresent);
    }
    let (depth, hash, entry) = closest_encloser(ctx, scratch, name_off, name_len)?;
    let hands_off = ZONE_NAME_HANDS_OFF | ZONE_NAME_MANAGED;
    let (denial, class, account) = if depth == 0 {
        // The name exists: NODATA if it lacks the type and nothing else answers for it.
        let absent = qtype < 64 && entry.types & (1u64 << qtype) == 0;
        let ds_at_apex = qtype == QTYPE_DS && entry.flags & ZONE_NAME_APEX != 0;
        if !absent || ds_at_apex || entry.flags & (hands_off | ZONE_NAME_CNAME) != 0 {
            return Err(Verdict::TypeNotPresent);
        }
        (Denial::NoData, ACCOUNT_CLASS_NODATA, hash as u32 | HASHED_ACCOUNT)
    } else {
        if entry.flags & (ZONE_NAME_HANDS_OFF | ZONE_NAME_WILDCARD_BELOW) != 0 {
            return Err(Verdict::NameNotFound);
        }
        (Denial::NxDomain, ACCOUNT_CLASS_NXDOMAIN, entry.zone)
    };
    // SAFETY: non-null from `get_ptr`: a ZONE_SOAS entry, alive as long as the map; only read.
    let soa = unsafe { &*ZONE_SOAS.get_ptr(entry.zone).ok_or(Verdict::NameNotFound)? };
    let soa_len = soa.len as usize;
    let apex_len = soa.apex_len as usize;
    if !(2..=SOA_RR_MAX).contains(&soa_len) || apex_len > name_len {
        return Err(Verdict::NameNotFound);
    }

    // DNS cookies as the answering program makes them: the first time through, the
    // cookie program is called and hands the packet back to the answering program,
    // which passes it here again with the results in scratch (not counted twice).
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.guard_resumed, 1) };
    cookie::answer(ctx, l3_off, is_ipv6, scratch);
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.guard_resumed, 0) };

    if rrl::charge_class(scratch, class, account) {
        return Err(Verdict::RrlDropped);
    }
    let slip = rrl::slip(scratch);
    let keep = slip ^ 1;
    // The SOA's owner is the apex: a pointer to where it starts in the question. The
    // stored record's sum counts the pointer as 0xc000; the offset is added.
    let apex_off = (dns::HLEN + name_len - apex_len) as u32;
    let pointer = 0xc000 | apex_off;
    let rcode = match denial {
        Denial::NxDomain => dns::RCODE_NXDOMAIN as u32,
        Denial::NoData => 0,
    };
    // An answer that does not depend on the client's address: ECS scope 0.
    scratch.ecs.scope_len = 0;
    let plan = ReplyPlan {
        // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
        name_csum: unsafe { ptr::read_volatile(&scratch.passed_name_csum) },
        l3_off: l3_off as u32,
        l4_off: l4_off as u32,
        is_ipv6: is_ipv6 as u32,
        name_len: name_len as u32,
        qtype: qtype as u32,
        flags: query_flags as u32,
        has_edns: edns as u32,
        // The client's payload size is not kept: a negative answer fits in 512 bytes
        // or is passed.
        udp_size: 0,
        rrs_off: offset_of!(ZoneSoa, rr) as u32,
        rrs_len: soa_len as u32 * keep as u32,
        ancount: keep as u32,
        rrs_csum: (soa.csum + apex_off) * keep as u32,
        rrsig_len: 0,
        rrsig_csum: 0,
        extra_flags: (slip as u32 * dns::FLAG_TC as u32) | rcode,
        authority: 1,
        counter: 0,
    };
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.plan, plan) };
    let end = write_reply(ctx, scratch, soa)?;
    if slip != 0 {
        return Err(Verdict::RrlSlipped);
    }
    let owner = bytes_at(ctx, (end - soa_len) & FRAME_OFFSET_MASK, 2, Verdict::Malformed)?;
    put_be16(owner, pointer as u16);
    Ok(denial)
}

/// The closest name to the question's that exists in a zone with negative data, at
/// most `MAX_WALK` labels up: (labels walked, its hash, its entry). Each candidate is
/// read from the packet into scratch, lowercased and hashed as the answering program
/// does, and compared in full with the entry's name.
#[inline(always)]
fn closest_encloser(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    name_off: usize,
    name_len: usize,
) -> Result<(usize, u64, &'static ZoneName), Verdict> {
    let mut skip = 0usize;
    for depth in 0..MAX_WALK {
        let rest = name_len.wrapping_sub(skip) & MAX_NAME_LEN;
        if rest < 2 || skip >= name_len {
            break; // at the root: in no zone of ours
        }
        let candidate = scratch.wildcard.as_mut_ptr();
        // SAFETY: `candidate` is scratch.wildcard, NAME_BUF_LEN + 8 = 264 bytes; `rest` is 2..=255
        // (masked), so the helper's `rest` bytes and the zero word at `candidate + rest` (ending
        // by byte 263) fit. The helper checks the packet range itself; `ctx.ctx` is the kernel's.
        unsafe {
            let loaded = bpf_xdp_load_bytes(ctx.ctx, (name_off + skip) as u32, candidate as *mut _, rest as u32);
            if loaded != 0 {
                return Err(Verdict::Malformed);
            }
            ptr::write_unaligned(candidate.add(rest) as *mut u64, 0);
        }
        let (hash, _) = lower_hash_sum(candidate, rest);
        if let Some(entry) = ZONE_NAMES.get_ptr(&NameKey::new(hash, 0)) {
            // SAFETY: non-null from `get_ptr`: a ZONE_NAMES value, kept alive by the kernel (RCU) while the
            // program runs; only read.
            let entry = unsafe { &*entry };
            if same_name(&scratch.wildcard, rest, &entry.name, entry.name_len as usize) {
                return Ok((depth, hash, entry));
            }
        }
        skip += 1 + (scratch.name[skip & MAX_NAME_LEN] as usize & dns::MAX_LABEL_LEN);
    }
    Err(Verdict::NameNotFound)
}
