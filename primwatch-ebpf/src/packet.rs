//! Bounds-checked access to the frame. Every read and write of packet bytes goes
//! through `bytes_at`, so the verifier sees one pattern: start + offset + length
//! compared against the end of the frame.

use aya_ebpf::programs::XdpContext;
use core::ptr;
use primwatch_common::{csum, Verdict};

/// Verifier bounds, each at least the largest real value: the IP header's offset
/// (Ethernet and at most one VLAN tag, 18 bytes) …
pub const L3_OFFSET_MASK: usize = 0x1f;
/// … the UDP header's (18 + 40 for IPv6 at most; IPv4 options are never answered) …
pub const L4_OFFSET_MASK: usize = 0x3f;
/// … and any offset in a frame (< 4 KiB).
pub const FRAME_OFFSET_MASK: usize = 0xfff;

/// A pointer to `len` bytes at `off`, or `err` if the frame is shorter.
#[inline(always)]
pub fn bytes_at(ctx: &XdpContext, off: usize, len: usize, err: Verdict) -> Result<*mut u8, Verdict> {
    let start = ctx.data();
    if start + off + len > ctx.data_end() {
        return Err(err);
    }
    Ok((start + off) as *mut u8)
}

/// Bytes in the frame as handed to XDP (headers, payload and any link-layer padding).
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

#[inline(always)]
pub fn be16(p: *const u8) -> u16 {
    // SAFETY: every caller passes a frame position with at least 2 bytes checked by `bytes_at`,
    // so `p` and `p + 1` are in [data, data_end).
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

#[inline(always)]
pub fn put_be16(p: *mut u8, v: u16) {
    let b = v.to_be_bytes();
    // SAFETY: every caller passes a frame position with at least 2 bytes checked by `bytes_at`,
    // so `p` and `p + 1` are in [data, data_end) and writable.
    unsafe {
        *p = b[0];
        *p.add(1) = b[1];
    }
}

/// The 8 bytes at `p` as a little-endian u64, in one load whatever `p`'s alignment.
/// (`read_unaligned` becomes eight byte loads on BPF; the kernel accepts unaligned
/// packet loads on the architectures XDP runs on, so one `ldxdw` is enough.)
#[inline(always)]
pub fn load_u64(p: *const u8) -> u64 {
    let value: u64;
    // SAFETY: the asm reads only the 8 bytes at `p` (readonly, nostack): callers pass 8 bytes
    // checked by `bytes_at`, or an 8+ byte array of a map value. No Rust alignment applies
    // to the asm load; the verifier accepts it unaligned (efficient unaligned access).
    unsafe {
        core::arch::asm!("{0} = *(u64 *)({1} + 0)", lateout(reg) value, in(reg) p, options(readonly, nostack, preserves_flags));
    }
    value
}

/// The 4 bytes at `p` as a little-endian u32, in one load (see `load_u64`).
#[inline(always)]
pub fn load_u32(p: *const u8) -> u32 {
    let value: u32;
    // SAFETY: as `load_u64`, for the 4 bytes at `p` (callers pass 4 checked bytes or a [u8; 4]).
    unsafe {
        core::arch::asm!("{0} = *(u32 *)({1} + 0)", lateout(reg) value, in(reg) p, options(readonly, nostack, preserves_flags));
    }
    value
}

/// One's-complement sum of the big-endian 16-bit words of `LEN` bytes at `p` (`LEN` a
/// multiple of 4), folded to 16 bits. Read 8 bytes per load as little-endian words:
/// the folded sum of byte-swapped words is the byte-swapped sum (RFC 1071 §2(B)).
#[inline(always)]
pub fn sum_words<const LEN: usize>(p: *const u8) -> u64 {
    const { assert!(LEN % 4 == 0) };
    let mut sum = 0u64;
    let mut i = 0;
    while i + 8 <= LEN {
        // SAFETY: i + 8 <= LEN, and callers pass LEN bytes at `p` checked by `bytes_at`.
        let word = load_u64(unsafe { p.add(i) });
        sum += (word & 0xffff_ffff) + (word >> 32);
        i += 8;
    }
    if i < LEN {
        // SAFETY: i < LEN and LEN - i == 4 here (LEN % 4 == 0), inside the LEN checked bytes.
        sum += load_u32(unsafe { p.add(i) }) as u64;
    }
    csum::fold(sum).swap_bytes() as u64
}

/// Exchanges `N` bytes at `a` with `N` bytes at `b` (addresses, ports, MACs).
#[inline(always)]
pub unsafe fn swap_bytes<const N: usize>(a: *mut u8, b: *mut u8) {
    let mut tmp = [0u8; N];
    // SAFETY: callers pass `a` and `b` as two disjoint N-byte ranges of a header that `bytes_at`
    // checked; `tmp` is a local N-byte array, disjoint from both.
    unsafe {
        ptr::copy_nonoverlapping(a, tmp.as_mut_ptr(), N);
        ptr::copy_nonoverlapping(b, a, N);
        ptr::copy_nonoverlapping(tmp.as_ptr(), b, N);
    }
}

/// 1 if `x` is 0, else 0, without a branch: branches here would split the verifier's
/// view of the rest of the program into one path per outcome.
#[inline(always)]
pub fn is_zero(x: u64) -> u64 {
    let mut sign = x | x.wrapping_neg();
    // Opaque to LLVM, which would otherwise turn this back into a compare and a branch.
    // SAFETY: the asm only moves a register (`nomem`, `pure`): no memory is touched.
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) sign, options(pure, nomem, nostack, preserves_flags)) };
    (sign >> 63) ^ 1
}
