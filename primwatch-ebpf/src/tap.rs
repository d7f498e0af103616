//! The tap: frames recorded for dnstap and `primwatch capture` into the `TAP_EVENTS`
//! ring buffer, as received and as sent (see `TapHeader`). While `TAP_SETTINGS` is all
//! zero the answering program reads that one entry and goes on; the recording lives in
//! two programs of its own, reached by tail calls (`received`, `exit`), so that the
//! verifier checks it once rather than along every path of the answering program.
//!
//! A full ring drops the record (counted `tap_dropped`), never the packet: a slow or
//! absent reader costs answers nothing.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_xdp_load_bytes},
    programs::XdpContext,
};
use core::ptr;
use primwatch_common::{
    Scratch, TapHeader, TapRecord, ANSWER_PROGRAM_SLOT, TAP_EXIT, TAP_EXIT_PROGRAM_SLOT, TAP_FOR_CAPTURE,
    TAP_FOR_DNSTAP, TAP_HEADER_LEN, TAP_RECEIVED, TAP_RECEIVED_PROGRAM_SLOT, TAP_SEEN, TAP_SNAPLEN,
};

use crate::maps::{COOKIE_PROGRAMS, COUNTERS, SCRATCH, TAP_BUFFER, TAP_EVENTS, TAP_SETTINGS};

const _: () = assert!(TAP_SNAPLEN.is_power_of_two());

/// First thing the answering program does: with the tap on and this packet not yet
/// seen by it, decides whether the packet is recorded (every one for a capture; one in
/// `dnstap_every` per CPU for dnstap) and, if so, hands it to the `received` program
/// (which hands it back). The decision is made here so that a packet not sampled costs
/// no tail call. Returns unless the packet went to `received`.
#[inline(always)]
pub fn on_entry(ctx: &XdpContext, scratch: &mut Scratch) {
    let Some(settings) = TAP_SETTINGS.get(0) else { return };
    // SAFETY: fields of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe {
        if settings.capture | settings.dnstap_every == 0 || ptr::read_volatile(&scratch.tap_state) != 0 {
            return;
        }
        let mut flags = (settings.capture != 0) as u32 * TAP_FOR_CAPTURE;
        let every = settings.dnstap_every;
        if every != 0 {
            let left = ptr::read_volatile(&scratch.tap_countdown);
            let left = if left == 0 || left > every { every } else { left };
            flags |= (left == 1) as u32 * TAP_FOR_DNSTAP;
            ptr::write_volatile(&mut scratch.tap_countdown, left - 1);
        }
        // Seen: a second pass (after the cookie program) is not decided again.
        ptr::write_volatile(&mut scratch.tap_state, TAP_SEEN | flags);
        if flags == 0 {
            return;
        }
        ptr::write_volatile(&mut scratch.tap_seq, ptr::read_volatile(&scratch.tap_seq).wrapping_add(1));
        // SAFETY: the tail call only jumps (never returning) to a program of ours with this
        // program's `ctx`; nothing with a destructor is live, and on failure it returns and
        // we go on (the exit record then has no received record to pair with).
        COOKIE_PROGRAMS.tail_call(ctx, TAP_RECEIVED_PROGRAM_SLOT);
    }
}

/// Last thing every program that returns an action does: if the packet was recorded
/// as received, hands the action to the `exit` program, which records it and returns
/// it. Clears the packet's tap state either way.
#[inline(always)]
pub fn on_exit(ctx: &XdpContext, action: u32) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return action };
    // SAFETY: `get_ptr_mut` returned this CPU's SCRATCH value (non-null, aligned); the caller
    // holds no reference to it across this call.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: fields of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe {
        let state = ptr::read_volatile(&scratch.tap_state);
        if state == 0 {
            return action;
        }
        ptr::write_volatile(&mut scratch.tap_state, 0);
        if state & (TAP_FOR_CAPTURE | TAP_FOR_DNSTAP) == 0 {
            return action;
        }
        ptr::write_volatile(&mut scratch.tap_exit_state, state);
        ptr::write_volatile(&mut scratch.tap_action, action);
        // SAFETY: as in `on_entry`.
        COOKIE_PROGRAMS.tail_call(ctx, TAP_EXIT_PROGRAM_SLOT);
    }
    action
}

/// The `received` program: records the packet as it arrived, for what `on_entry`
/// decided, and hands it back to the answering program.
#[inline(always)]
pub fn received(ctx: &XdpContext) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: `get_ptr_mut` returned this CPU's SCRATCH value (non-null, aligned, alive while
    // the program runs); this program, entered by a tail call, holds no other reference to it.
    let scratch = unsafe { &mut *scratch };
    // SAFETY: a field of `scratch`, as above.
    let (flags, seq) = unsafe {
        (
            ptr::read_volatile(&scratch.tap_state) & (TAP_FOR_CAPTURE | TAP_FOR_DNSTAP),
            ptr::read_volatile(&scratch.tap_seq),
        )
    };
    if !record(ctx, TAP_RECEIVED, flags, 0, true, seq) {
        // Not in the ring (full): no exit record either, for a packet the reader
        // never saw arrive.
        // SAFETY: a field of `scratch`, as above.
        unsafe { ptr::write_volatile(&mut scratch.tap_state, TAP_SEEN) };
    }
    // SAFETY: the tail call jumps as in `on_entry`; on failure the state is cleared so
    // that the next packet is seen afresh.
    unsafe {
        COOKIE_PROGRAMS.tail_call(ctx, ANSWER_PROGRAM_SLOT);
        ptr::write_volatile(&mut scratch.tap_state, 0);
    }
    xdp_action::XDP_PASS
}

/// The `exit` program: records the action taken (with the frame as sent for XDP_TX)
/// and returns it.
#[inline(always)]
pub fn exit(ctx: &XdpContext) -> u32 {
    let Some(scratch) = SCRATCH.get_ptr(0) else { return xdp_action::XDP_PASS };
    // SAFETY: `get_ptr` returned this CPU's SCRATCH value (non-null, aligned, alive while the
    // program runs); only read.
    let scratch = unsafe { &*scratch };
    // SAFETY: fields of `scratch`, as above.
    let (flags, action, seq) = unsafe {
        (
            ptr::read_volatile(&scratch.tap_exit_state),
            ptr::read_volatile(&scratch.tap_action),
            ptr::read_volatile(&scratch.tap_seq),
        )
    };
    record(ctx, TAP_EXIT, flags & (TAP_FOR_CAPTURE | TAP_FOR_DNSTAP), action, action == xdp_action::XDP_TX, seq);
    action
}

/// Writes one record (header, then up to TAP_SNAPLEN bytes of the frame when
/// `with_frame`) to the ring; false (counted) when it could not.
#[inline(always)]
fn record(ctx: &XdpContext, kind: u32, flags: u32, action: u32, with_frame: bool, seq: u32) -> bool {
    let Some(buffer) = TAP_BUFFER.get_ptr_mut(0) else { return false };
    // SAFETY: `get_ptr_mut` returned this CPU's TAP_BUFFER value (non-null, aligned, alive while
    // the program runs); nothing else refers to it.
    let buffer = unsafe { &mut *buffer };
    let frame_len = ctx.data_end() - ctx.data();
    let caplen = if with_frame { frame_len.min(TAP_SNAPLEN) } else { 0 };
    buffer.header = TapHeader {
        kind,
        flags,
        action,
        // SAFETY: helpers without arguments.
        cpu: unsafe { bpf_get_smp_processor_id() },
        // SAFETY: as above.
        time_ns: unsafe { bpf_ktime_get_ns() },
        frame_len: frame_len as u32,
        caplen: caplen as u32,
        ifindex: ctx.ingress_ifindex() as u32,
        seq,
    };
    // Read back through memory: LLVM would otherwise fold the mask below away, knowing
    // the range, and hand the verifier a length it cannot bound from below.
    // SAFETY: a field of `buffer`, the valid, aligned &mut TapRecord of this CPU.
    let caplen = unsafe { ptr::read_volatile(&buffer.header.caplen) } as usize;
    if caplen > 0 {
        // 1..=TAP_SNAPLEN in a form the verifier follows (the mask keeps both bounds).
        let n = ((caplen - 1) & (TAP_SNAPLEN - 1)) + 1;
        // SAFETY: the helper writes `n` (1..=TAP_SNAPLEN) bytes into `buffer.frame`, a
        // [u8; TAP_SNAPLEN], and checks the packet range itself.
        if unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, buffer.frame.as_mut_ptr() as *mut _, n as u32) } != 0 {
            return false;
        }
    }
    let len = (TAP_HEADER_LEN + caplen.min(TAP_SNAPLEN)).min(core::mem::size_of::<TapRecord>());
    // SAFETY: `len` is at most the size of the TapRecord `buffer` points into (checked above),
    // which stays alive and unchanged while the helper copies it into the ring.
    let record = unsafe { core::slice::from_raw_parts(buffer as *const TapRecord as *const u8, len) };
    let written = TAP_EVENTS.output_untyped::<[u8]>(record, 0);
    if written.is_err() {
        if let Some(counters) = COUNTERS.get_ptr_mut(0) {
            // SAFETY: this CPU's COUNTERS value (non-null from `get_ptr_mut`); per-CPU.
            unsafe { (*counters).tap_dropped += 1 };
        }
        return false;
    }
    true
}
