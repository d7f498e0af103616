//! DNS cookies (RFC 7873) with server cookies made the interoperable way of RFC 9018
//! (layout and hash in `primwatch_common::cookie`). For a query being answered that
//! carries a COOKIE option: the server cookie it presents is verified with the current
//! or the previous secret (a verified query's source address is proven, so `rrl` lets
//! it through), and the reply's COOKIE option is made — the presented server cookie
//! again while it is less than half an hour old, else a fresh one with the current
//! secret. An invalid server cookie gets a fresh one, as a client cookie alone does
//! (RFC 7873 §5.2.3). The work is done by a program of its own (`make`), reached by a
//! tail call, and handed to `reply` through `Scratch`.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use core::ptr;
use primwatch_common::{
    cookie::{
        cookie_fresh, cookie_worn, siphash24, CookieSecret, CLIENT_COOKIE_LEN, COOKIE_MSG_LEN_V4, COOKIE_MSG_LEN_V6,
        REPLY_COOKIE_OPTION_LEN, SERVER_COOKIE_LEN, SERVER_COOKIE_VERSION,
    },
    csum,
    wire::{edns, ipv4, ipv6},
    CookieScratch, Scratch, ANSWER_PROGRAM_SLOT, COOKIE_PROGRAM_SLOT, COOKIE_RESUMED, RRL_OFF,
};

use crate::{
    maps::{COOKIE_PROGRAMS, COOKIE_SECRETS, COOKIE_SETTINGS, COUNTERS, SCRATCH},
    packet::L3_OFFSET_MASK,
};

/// Verifier bound for the COOKIE option's offset in the frame (< 4 KiB).
const OFFSET_MASK: usize = 0xfff;
/// Where the option starts in `CookieScratch::reply`: 4 bytes in, so that the client
/// and server cookies after its 4-byte header sit on 8-byte boundaries.
pub const REPLY_OPTION_START: usize = 4;

/// First thing the answering program does: notes whether the cookie program just
/// handed this packet back (its results in scratch are then this packet's), and
/// clears the mark so that no later packet mistakes them for its own.
#[inline(always)]
pub fn on_entry(scratch: &mut Scratch) {
    let c = &mut scratch.cookie;
    // SAFETY: fields of `scratch.cookie`, in the valid, aligned &mut Scratch of this CPU (map value).
    unsafe {
        let resumed = ptr::read_volatile(&c.resumed) == COOKIE_RESUMED;
        ptr::write_volatile(&mut c.ready, resumed as u32);
        ptr::write_volatile(&mut c.resumed, 0);
    }
}

/// Called once the query is known to be answered, before the records are picked (so
/// that the picking, which moves the round-robin position, runs once per query).
/// With a COOKIE option and cookies on, the first time through this tail-calls the
/// cookie program (`make`), which hands the packet back to the answering program from
/// the start; the second time the results are in scratch. The hashing lives in its own
/// program because the verifier would otherwise check it once for every path that
/// reaches this point. If the cookie program cannot be called, the reply goes without
/// a cookie, as a server without cookies answers (RFC 7873 §5.2).
#[inline(always)]
pub fn answer(ctx: &XdpContext, l3_off: usize, is_ipv6: bool, scratch: &mut Scratch) {
    let c = &mut scratch.cookie;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    if unsafe { ptr::read_volatile(&c.ready) } != 0 {
        // A verified cookie proves the source address: no rate limiting (rrl's
        // decision was made again on this pass).
        // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
        if unsafe { ptr::read_volatile(&c.verified) } != 0 {
            // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
            unsafe { ptr::write_volatile(&mut scratch.rrl_state, RRL_OFF) };
        }
        return;
    }
    // SAFETY: fields of `scratch.cookie`, in the valid, aligned &mut Scratch of this CPU (map value).
    unsafe {
        ptr::write_volatile(&mut c.reply_len, 0);
        ptr::write_volatile(&mut c.verified, 0);
    }
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    if unsafe { ptr::read_volatile(&scratch.cookie_len) } == 0
        // SAFETY: non-null from `get_ptr`: the single COOKIE_SETTINGS entry, alive as long as the map; only read.
        || COOKIE_SETTINGS.get_ptr(0).is_none_or(|s| unsafe { (*s).enabled } == 0)
    {
        return;
    }
    c.l3_off = l3_off as u32;
    c.is_ipv6 = is_ipv6 as u32;
    // SAFETY: the tail call only jumps (never returning) to the cookie program with this
    // program's `ctx`; nothing with a destructor is live and the &mut Scratch is dead
    // once it jumps. On failure it returns and the reply goes without a cookie.
    unsafe { COOKIE_PROGRAMS.tail_call(ctx, COOKIE_PROGRAM_SLOT) };
}

/// The cookie program: verifies the query's server cookie and makes the reply's COOKIE
/// option into scratch, then hands the packet back to the answering program.
#[inline(always)]
pub fn make(ctx: &XdpContext) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: `get_ptr_mut` returned this CPU's SCRATCH value (non-null, aligned, alive while
    // the program runs); this program, entered by a tail call, holds no other reference to it.
    let scratch = unsafe { &mut *scratch };
    make_cookie(ctx, scratch);
    // SAFETY: `scratch.cookie.resumed` is a field of the valid &mut above; the tail call jumps
    // as in `answer` (nothing to drop), and on failure we go on to clear the mark.
    unsafe {
        ptr::write_volatile(&mut scratch.cookie.resumed, COOKIE_RESUMED);
        COOKIE_PROGRAMS.tail_call(ctx, ANSWER_PROGRAM_SLOT);
        // Not handed back: leave no mark for the next packet, let the kernel have it.
        ptr::write_volatile(&mut scratch.cookie.resumed, 0);
    }
    xdp_action::XDP_PASS
}

#[inline(always)]
fn make_cookie(ctx: &XdpContext, scratch: &mut Scratch) {
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let len = unsafe { ptr::read_volatile(&scratch.cookie_len) } as usize;
    let Some(settings) = COOKIE_SETTINGS.get_ptr(0) else { return };
    // SAFETY: non-null from `get_ptr`: the single COOKIE_SETTINGS entry, alive as long as the map; only read.
    let settings = unsafe { &*settings };
    let current = settings.current & 1;
    let (Some(secret), Some(previous)) = (COOKIE_SECRETS.get_ptr(current), COOKIE_SECRETS.get_ptr(current ^ 1)) else {
        return;
    };
    // SAFETY: non-null from `get_ptr`: COOKIE_SECRETS entries 0 and 1, alive as long as the map; only read.
    let (secret, previous) = unsafe { (&*secret, &*previous) };
    // SAFETY: bpf_ktime_get_coarse_ns takes no arguments and touches no memory of ours.
    let now = ((unsafe { bpf_ktime_get_coarse_ns() }).wrapping_add(settings.clock_offset_ns) / 1_000_000_000) as u32;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let off = (unsafe { ptr::read_volatile(&scratch.cookie_off) } as usize) & OFFSET_MASK;
    let c = &mut scratch.cookie;
    let l3_off = c.l3_off as usize & L3_OFFSET_MASK;
    let is_ipv6 = c.is_ipv6 != 0;
    c.msg = [0; 5];
    let msg = c.msg.as_mut_ptr() as *mut u8;
    // Hash input: client cookie | version, reserved, timestamp | client address.
    // SAFETY: `msg` is `c.msg`, 5 u64s = 40 bytes: the helper writes the source address to bytes
    // 16..32 (IPv6) or 16..20 (IPv4) and the client cookie to bytes 0..8, and checks each
    // packet offset and length itself; `ctx.ctx` is the xdp_md the kernel passed.
    let loaded = unsafe {
        let address = if is_ipv6 {
            bpf_xdp_load_bytes(ctx.ctx, (l3_off + ipv6::SRC_OFF) as u32, msg.add(16) as *mut _, ipv6::ADDR_LEN as u32)
        } else {
            bpf_xdp_load_bytes(ctx.ctx, (l3_off + ipv4::SRC_OFF) as u32, msg.add(16) as *mut _, ipv4::ADDR_LEN as u32)
        };
        address | bpf_xdp_load_bytes(ctx.ctx, off as u32, msg as *mut _, CLIENT_COOKIE_LEN as u32)
    };
    if loaded != 0 {
        return;
    }
    c.msg_len = if is_ipv6 { COOKIE_MSG_LEN_V6 } else { COOKIE_MSG_LEN_V4 } as u32;

    let mut reuse = false;
    let mut verified = false;
    // Only a 16-byte server cookie can be ours (other lengths, 8..=32, are someone
    // else's kind): it gets a fresh one like a client cookie alone, counted as bad.
    if len == CLIENT_COOKIE_LEN + SERVER_COOKIE_LEN {
        let received = c.received.as_mut_ptr() as *mut _;
        // SAFETY: the helper writes SERVER_COOKIE_LEN (16) bytes into `c.received`, a [u64; 2], and
        // checks the packet range itself.
        if unsafe { bpf_xdp_load_bytes(ctx.ctx, (off + CLIENT_COOKIE_LEN) as u32, received, SERVER_COOKIE_LEN as u32) }
            != 0
        {
            return;
        }
        // Word 0 read little-endian: the version is its low byte, the big-endian
        // timestamp its high four.
        let head = c.received[0];
        let timestamp = ((head >> 32) as u32).swap_bytes();
        if head as u8 == SERVER_COOKIE_VERSION && cookie_fresh(timestamp, now) {
            // The reserved bytes are hashed as received (RFC 9018 §4.2).
            c.msg[1] = head;
            if hash(secret, c) == c.received[1] {
                verified = true;
                reuse = !cookie_worn(timestamp, now);
            } else if hash(previous, c) == c.received[1] {
                verified = true;
            }
        }
        // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
        unsafe { ptr::write_volatile(&mut c.verified, verified as u32) };
    }
    if len > CLIENT_COOKIE_LEN {
        count(verified);
    }
    if !reuse {
        c.msg[1] = SERVER_COOKIE_VERSION as u64 | ((now.swap_bytes() as u64) << 32);
        c.received = [c.msg[1], hash(secret, c)];
    }

    // The option, its header in the 4 bytes before the first 8-byte boundary.
    let words = c.reply.as_mut_ptr() as *mut u64;
    let header = ((edns::OPTION_COOKIE.to_be() as u64) << 32)
        | (((CLIENT_COOKIE_LEN + SERVER_COOKIE_LEN) as u16).to_be() as u64) << 48;
    let body = [c.msg[0], c.received[0], c.received[1]];
    let mut sum = 0u64;
    // SAFETY: `words` is `c.reply` ([u8; 32]) as u64s; words 0..4 are its 32 bytes. They are
    // 8-aligned: `reply` is at offset 80 of CookieScratch, itself at offset 608 of the
    // 8-aligned, repr(C) Scratch.
    unsafe {
        *words = header;
        for (i, word) in body.iter().enumerate() {
            *words.add(1 + i) = *word;
            sum += (word & 0xffff_ffff) + (word >> 32);
        }
    }
    // Words were read little-endian: the folded sum is byte-swapped.
    let sum = csum::fold(sum).swap_bytes() as u64
        + edns::OPTION_COOKIE as u64
        + (CLIENT_COOKIE_LEN + SERVER_COOKIE_LEN) as u64;
    c.reply_csum = csum::fold(sum) as u32;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut c.reply_len, REPLY_COOKIE_OPTION_LEN as u32) };
}

/// The RFC 9018 hash of `c.msg` (its length set by the client's address family).
#[inline(always)]
fn hash(secret: &CookieSecret, c: &CookieScratch) -> u64 {
    if c.msg_len == COOKIE_MSG_LEN_V6 as u32 {
        siphash24(secret, &c.msg, COOKIE_MSG_LEN_V6)
    } else {
        siphash24(secret, &c.msg, COOKIE_MSG_LEN_V4)
    }
}

/// Counts a presented server cookie.
#[inline(always)]
fn count(verified: bool) {
    if let Some(counters) = COUNTERS.get_ptr_mut(0) {
        // SAFETY: this CPU's COUNTERS value (non-null from `get_ptr_mut`); per-CPU, and no other
        // reference to it is live.
        let counters = unsafe { &mut *counters };
        if verified {
            counters.cookie_verified += 1;
        } else {
            counters.cookie_bad += 1;
        }
    }
}
