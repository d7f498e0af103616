//! Is the query for this host, from a source a reply may go to? The kernel's stack
//! drops (or does not answer) anything else, so XDP passes it untouched: a frame
//! answered here must be addressed to the receiving interface's own unicast MAC and to
//! one of the host's addresses, and come from a unicast MAC and a source that is
//! neither martian (RFC 1122 §3.2.1.3, RFC 4291 §2.5) nor this host. Replies swap the
//! addresses, so they then leave from the interface's own MAC and a host address.

use aya_ebpf::programs::XdpContext;
use primwatch_common::{
    wire::{eth, ipv4, ipv6},
    HostAddrs, Verdict, MAX_HOST_ADDRS, MAX_HOST_INTERFACES,
};

use crate::{
    maps::HOST,
    packet::{bytes_at, is_zero, load_u32, load_u64},
};

/// The low 48 bits of a little-endian load: a MAC's 6 bytes.
const MAC_MASK: u64 = 0xffff_ffff_ffff;

/// Ok, or why the frame is passed (`NotForHost`, `BadSource`, `Malformed`).
#[inline(always)]
pub fn check_addressing(ctx: &XdpContext, l3_off: usize, is_ipv6: bool) -> Result<(), Verdict> {
    // SAFETY: non-null from `get_ptr`: the single HOST entry, alive as long as the map; only read.
    let host = unsafe { &*HOST.get_ptr(0).ok_or(Verdict::NotForHost)? };
    // 8 bytes from the destination MAC's start: the MAC and the source MAC's first two.
    let frame = bytes_at(ctx, 0, eth::HLEN, Verdict::Malformed)?;
    // SAFETY: SRC_OFF < eth::HLEN, checked for `frame` by `bytes_at` above.
    if unsafe { *frame.add(eth::SRC_OFF) } & eth::GROUP_BIT != 0 {
        return Err(Verdict::BadSource);
    }
    let dst_mac = load_u64(frame) & MAC_MASK;
    // SAFETY: `ctx.ctx` is the xdp_md the kernel passed, valid while the program runs.
    if !is_own_mac(host, unsafe { (*ctx.ctx).ingress_ifindex }, dst_mac) {
        return Err(Verdict::NotForHost);
    }
    if is_ipv6 {
        let ip = bytes_at(ctx, l3_off, ipv6::HLEN, Verdict::Malformed)?;
        // SAFETY: SRC_OFF + 16 <= ipv6::HLEN, the bytes checked for `ip` by `bytes_at` above.
        let src = unsafe { (load_u64(ip.add(ipv6::SRC_OFF)), load_u64(ip.add(ipv6::SRC_OFF + 8))) };
        // SAFETY: DST_OFF + 16 == ipv6::HLEN, the bytes checked for `ip` above.
        let dst = unsafe { (load_u64(ip.add(ipv6::DST_OFF)), load_u64(ip.add(ipv6::DST_OFF + 8))) };
        if is_martian_v6(src) {
            return Err(Verdict::BadSource);
        }
        let (src_own, dst_own) = own_v6(host, src, dst);
        if !dst_own {
            return Err(Verdict::NotForHost);
        }
        if src_own {
            return Err(Verdict::BadSource);
        }
    } else {
        let ip = bytes_at(ctx, l3_off, ipv4::MIN_HLEN, Verdict::Malformed)?;
        // SAFETY: SRC_OFF + 4 <= ipv4::MIN_HLEN, the bytes checked for `ip` by `bytes_at` above.
        let src = load_u32(unsafe { ip.add(ipv4::SRC_OFF) });
        // SAFETY: DST_OFF + 4 == ipv4::MIN_HLEN, the bytes checked for `ip` above.
        let dst = load_u32(unsafe { ip.add(ipv4::DST_OFF) });
        if is_martian_v4(src) {
            return Err(Verdict::BadSource);
        }
        let (src_own, dst_own) = own_v4(host, src, dst);
        if !dst_own {
            return Err(Verdict::NotForHost);
        }
        if src_own {
            return Err(Verdict::BadSource);
        }
    }
    Ok(())
}

/// Whether `mac` (low 48 bits) is the MAC of interface `ifindex`.
#[inline(always)]
fn is_own_mac(host: &HostAddrs, ifindex: u32, mac: u64) -> bool {
    for i in 0..MAX_HOST_INTERFACES {
        if i as u32 >= host.interface_count {
            break;
        }
        if host.ifindex[i] == ifindex {
            return load_u64(host.mac[i].as_ptr()) == mac;
        }
    }
    false
}

/// 0.0.0.0/8, 127/8, and 224/3 (multicast, class E, limited broadcast); `addr` as
/// loaded little-endian, so its low byte is the first octet.
#[inline(always)]
fn is_martian_v4(addr: u32) -> bool {
    let first = (addr & 0xff) as u64;
    let high = (223u64.wrapping_sub(first)) >> 63; // first >= 224
    (is_zero(first) | is_zero(first ^ 127) | high) != 0
}

/// ::, ::1, ff00::/8 and IPv4-mapped ::ffff:0:0/96; halves as loaded little-endian.
#[inline(always)]
fn is_martian_v6((hi, lo): (u64, u64)) -> bool {
    const LOOPBACK_LO: u64 = 1 << 56;
    const MAPPED_LO: u64 = 0xffff_0000;
    let multicast = is_zero((hi & 0xff) ^ 0xff);
    let low = is_zero(lo) | is_zero(lo ^ LOOPBACK_LO) | is_zero((lo & 0xffff_ffff) ^ MAPPED_LO);
    (multicast | (is_zero(hi) & low)) != 0
}

/// (source is the host's, destination is the host's).
#[inline(always)]
fn own_v4(host: &HostAddrs, src: u32, dst: u32) -> (bool, bool) {
    let (mut src_own, mut dst_own) = (0u64, 0u64);
    for i in 0..MAX_HOST_ADDRS {
        if i as u32 >= host.v4_count {
            break;
        }
        let addr = load_u32(host.v4[i].as_ptr());
        src_own |= is_zero((addr ^ src) as u64);
        dst_own |= is_zero((addr ^ dst) as u64);
    }
    (src_own != 0, dst_own != 0)
}

#[inline(always)]
fn own_v6(host: &HostAddrs, src: (u64, u64), dst: (u64, u64)) -> (bool, bool) {
    let (mut src_own, mut dst_own) = (0u64, 0u64);
    for i in 0..MAX_HOST_ADDRS {
        if i as u32 >= host.v6_count {
            break;
        }
        let a = host.v6[i].as_ptr();
        // SAFETY: bytes 8..16 of `host.v6[i]`, a [u8; 16].
        let (hi, lo) = (load_u64(a), load_u64(unsafe { a.add(8) }));
        src_own |= is_zero((hi ^ src.0) | (lo ^ src.1));
        dst_own |= is_zero((hi ^ dst.0) | (lo ^ dst.1));
    }
    (src_own != 0, dst_own != 0)
}
