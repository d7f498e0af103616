//! A bare reflector, the ceiling the throughput bench measures primwatch against: a UDP
//! datagram to the DNS port goes back as it came, MACs, addresses and ports swapped and
//! QR set (the checksum updated for that one word). No lookup, no resize, no
//! validation. The controller never attaches it.

use aya_ebpf::programs::XdpContext;
use primwatch_common::{
    csum,
    wire::{dns, eth, ipv4, ipv6, udp},
    Verdict,
};

use crate::{
    maps::DNS_PORT,
    packet::{be16, bytes_at, put_be16, swap_bytes},
};

#[inline(always)]
pub fn reflect(ctx: &XdpContext) -> Result<(), Verdict> {
    let hdr = bytes_at(ctx, 0, eth::HLEN, Verdict::NotDns)?;
    // SAFETY: ETHERTYPE_OFF + 2 <= eth::HLEN, checked for `hdr` by `bytes_at` above.
    let is_ipv6 = match be16(unsafe { hdr.add(eth::ETHERTYPE_OFF) }) {
        eth::P_IPV4 => false,
        eth::P_IPV6 => true,
        _ => return Err(Verdict::NotDns),
    };
    let ip_hlen = if is_ipv6 { ipv6::HLEN } else { ipv4::MIN_HLEN };
    let ip = bytes_at(ctx, eth::HLEN, ip_hlen, Verdict::NotDns)?;
    // SAFETY: NEXT_HEADER_OFF (6) < ipv6::HLEN and PROTOCOL_OFF (9) < ipv4::MIN_HLEN: inside the
    // `ip_hlen` bytes checked for `ip` by `bytes_at` above.
    let protocol = unsafe { *ip.add(if is_ipv6 { ipv6::NEXT_HEADER_OFF } else { ipv4::PROTOCOL_OFF }) };
    // IPv4 without options only (version 4, IHL 5).
    // SAFETY: the first of the bytes checked for `ip` above.
    if protocol != udp::IPPROTO || (!is_ipv6 && unsafe { *ip } != 0x45) {
        return Err(Verdict::NotDns);
    }
    let udp_hdr = bytes_at(ctx, eth::HLEN + ip_hlen, udp::HLEN + dns::HLEN, Verdict::NotDns)?;
    // SAFETY: DST_PORT_OFF + 2 <= udp::HLEN, inside the bytes checked for `udp_hdr` above.
    if be16(unsafe { udp_hdr.add(udp::DST_PORT_OFF) }) != DNS_PORT.load() {
        return Err(Verdict::NotDns);
    }
    // SAFETY: every access is in a range `bytes_at` checked above: MACs 0..6 / 6..12 of `hdr` (14),
    // addresses 8..24 / 24..40 of `ip` (40) or 12..16 / 16..20 (20), ports 0..2 / 2..4, the
    // checksum 6..8 and the DNS flags 10..12 of `udp_hdr` (20). Swapped ranges are disjoint.
    unsafe {
        swap_bytes::<{ eth::MAC_LEN }>(hdr.add(eth::DST_OFF), hdr.add(eth::SRC_OFF));
        if is_ipv6 {
            swap_bytes::<{ ipv6::ADDR_LEN }>(ip.add(ipv6::SRC_OFF), ip.add(ipv6::DST_OFF));
        } else {
            swap_bytes::<{ ipv4::ADDR_LEN }>(ip.add(ipv4::SRC_OFF), ip.add(ipv4::DST_OFF));
        }
        swap_bytes::<2>(udp_hdr.add(udp::SRC_PORT_OFF), udp_hdr.add(udp::DST_PORT_OFF));
        let flags = udp_hdr.add(udp::HLEN + dns::FLAGS_OFF);
        let old = be16(flags);
        let new = old | dns::FLAG_QR;
        put_be16(flags, new);
        let check = be16(udp_hdr.add(udp::CHECKSUM_OFF));
        if check != 0 {
            let updated = csum::update16(check, old, new);
            put_be16(udp_hdr.add(udp::CHECKSUM_OFF), csum::udp_checksum_field(!updated));
        }
    }
    Ok(())
}
