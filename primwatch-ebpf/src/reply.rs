//! Stage 4: the query becomes the reply in place — MACs, addresses and ports swapped,
//! header flags set, the picked records and our OPT record (DO copied, ECS echoed, the
//! COOKIE option, NSID when asked) written after the question,
//! lengths and checksums recomputed. Nothing is written before the reply is known to
//! fit, so a pass from here on can only follow a failed helper call.

use core::mem::size_of;

use aya_ebpf::{
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use primwatch_common::{
    cookie::REPLY_COOKIE_OPTION_LEN,
    csum,
    wire::{dns, edns as wire_edns, eth, ipv4, ipv6, udp},
    RrsigRr, Scratch, Verdict, EDNS_UDP_PAYLOAD, MAX_ANSWER_BYTES, MAX_FRAME_FRONT, MAX_NAME_LEN, MAX_NSID_LEN, OPT_RR,
    QCLASS_IN, RRSIG_RR_MAX,
};

use crate::{
    cookie,
    edns::{reply_ecs_len, write_client_subnet},
    maps::NSID,
    packet::{
        be16, bytes_at, frame_len, put_be16, sum_words, swap_bytes, FRAME_OFFSET_MASK, L3_OFFSET_MASK, L4_OFFSET_MASK,
    },
};

/// Hop limit / TTL of every reply.
const REPLY_IP_TTL: u8 = 64;
/// Verifier bounds for lengths and offsets written below (each at least the largest
/// real value: answers ≤ MAX_ANSWER_BYTES, a frame < 4 KiB).
const ANSWER_LEN_MASK: usize = 0x3ff;
/// Verifier bound for the reply's COOKIE option length (0 or 28).
const COOKIE_LEN_MASK: usize = 0x1f;
/// Verifier bound for the reply's NSID option length (0, or 5 to 4 + MAX_NSID_LEN).
const NSID_LEN_MASK: usize = 0xff;
/// Offset of the picked records in their `AnswerSet` (< 4 KiB).
const RECORDS_OFFSET_MASK: usize = 0xfff;
/// Verifier bound for the RRSIG record's length (≤ RRSIG_RR_MAX).
const RRSIG_LEN_MASK: usize = 0x1ff;

/// One's-complement sum of `OPT_RR` as big-endian words from an even offset.
const OPT_RR_CSUM: u64 = {
    let mut sum = 0u64;
    let mut i = 0;
    while i < OPT_RR.len() {
        let lo = if i + 1 < OPT_RR.len() { OPT_RR[i + 1] } else { 0 };
        sum += ((OPT_RR[i] as u64) << 8) | lo as u64;
        i += 2;
    }
    sum
};

/// Turns the query into the reply in place and computes the checksums, as
/// `Scratch::plan` says (the records come from `set`: an `AnswerSet`, or a zone's
/// `ZoneSoa` for a negative answer, with `plan.rrs_off` into it). When the plan has an RRSIG
/// record, its room after the records is left for `write_rrsig` and its checksum is
/// counted in already; returns that room's offset in the frame.
#[inline(always)]
pub fn write_reply<Records>(ctx: &XdpContext, scratch: &mut Scratch, set: &Records) -> Result<usize, Verdict> {
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let plan = unsafe { core::ptr::read_volatile(&scratch.plan) };
    // Each value bounded again, for the verifier (the bounds hold for every real value).
    let l3_off = plan.l3_off as usize & L3_OFFSET_MASK;
    let l4_off = plan.l4_off as usize & L4_OFFSET_MASK;
    let is_ipv6 = plan.is_ipv6 != 0;
    let name_len = plan.name_len as usize & MAX_NAME_LEN;
    let qtype = plan.qtype as u16;
    let has_edns = plan.has_edns != 0;
    let rrs_len = plan.rrs_len as usize & ANSWER_LEN_MASK;
    let rrs_off = plan.rrs_off as usize & RECORDS_OFFSET_MASK;
    let rrsig_len = plan.rrsig_len as usize & RRSIG_LEN_MASK;
    let dns_off = l4_off + udp::HLEN;
    let question_end = dns_off + dns::HLEN + name_len + dns::QTYPE_QCLASS_LEN;

    // Our OPT record, with the client subnet echoed when the query had one, and the
    // COOKIE option `cookie` made.
    let ecs_len = reply_ecs_len(&scratch.ecs);
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let cookie_len = (unsafe { core::ptr::read_volatile(&scratch.cookie.reply_len) } as usize) & COOKIE_LEN_MASK;
    // The NSID option (RFC 5001), when the query asked and `server.nsid` is set:
    // branch-free, the length is the option's or zero.
    let nsid = NSID.get(0).ok_or(Verdict::Malformed)?;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let nsid_seen = unsafe { core::ptr::read_volatile(&scratch.harmless_options[1]) };
    // 0: no NSID option; 1: an empty one; above: one with data.
    let nsid_asked = ((nsid_seen >> 16) + (nsid_seen & 0xffff)) as usize;
    let nsid_len = (nsid.option_len as usize * (nsid_asked & 1)) & NSID_LEN_MASK;
    if nsid_asked > 1 || nsid_len > 4 + MAX_NSID_LEN {
        return Err(Verdict::Malformed); // a non-empty NSID request (RFC 5001 §2.3)
    }
    if nsid_asked != 0 && nsid_len == 0 {
        // `server.nsid` unset: the DNS server answers with its own id, as before.
        return Err(Verdict::UnsupportedEdns);
    }
    let options_len = ecs_len + cookie_len + nsid_len;
    let opt_len = if has_edns { wire_edns::OPT_RR_LEN + options_len } else { 0 };
    let reply_dns_len = dns::HLEN + name_len + dns::QTYPE_QCLASS_LEN + rrs_len + rrsig_len + opt_len;
    let limit = if has_edns {
        (plan.udp_size as usize).clamp(wire_edns::PLAIN_UDP_SIZE, EDNS_UDP_PAYLOAD as usize)
    } else {
        wire_edns::PLAIN_UDP_SIZE
    };
    if reply_dns_len > limit {
        return Err(Verdict::TooLarge);
    }

    let udp_len = udp::HLEN + reply_dns_len;
    let delta = (dns_off + reply_dns_len) as i64 - frame_len(ctx) as i64;
    // SAFETY: `ctx.ctx` is the xdp_md the kernel passed; the helper checks `delta` itself. No
    // packet pointer is held across it: all are derived afresh below.
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) } != 0 {
        grow_at_front(ctx, scratch, question_end, delta)?;
    }
    // From here on the packet is ours to rewrite; every pointer is derived afresh.

    let mut sum = turn_around(ctx, l3_off, is_ipv6, udp_len)?;

    let flags =
        dns::FLAG_QR | dns::FLAG_AA | (plan.flags as u16 & (dns::FLAG_RD | dns::FLAG_CD)) | plan.extra_flags as u16;
    // The records are the answer section, or the authority section (a negative
    // answer's SOA), chosen without a branch.
    let in_authority = (plan.authority & 1) as u16;
    let counts = [plan.ancount as u16 * (in_authority ^ 1), plan.ancount as u16 * in_authority];
    sum += write_headers(ctx, l4_off, udp_len, flags, counts, has_edns as u16)?;
    sum += plan.name_csum;

    let answers_off = question_end;
    if rrs_len > 0 {
        let len = rrs_len & ANSWER_LEN_MASK;
        // (len is rrs_len; tested again after the mask so the verifier knows it.)
        if len == 0 || len > MAX_ANSWER_BYTES {
            return Err(Verdict::Malformed);
        }
        if size_of::<Records>() < MAX_ANSWER_BYTES || rrs_off > size_of::<Records>() - MAX_ANSWER_BYTES {
            return Err(Verdict::Malformed);
        }
        // SAFETY: `rrs_off <= size_of::<Records>() - MAX_ANSWER_BYTES` (checked above): inside `*set`.
        let rrs = unsafe { (set as *const Records as *const u8).add(rrs_off) };
        // SAFETY: the helper reads `len` <= MAX_ANSWER_BYTES bytes from `rrs`, inside `*set` by the
        // check above (never written through the *mut), and checks the packet range itself.
        let stored = unsafe { bpf_xdp_store_bytes(ctx.ctx, answers_off as u32, rrs as *mut _, len as u32) };
        if stored != 0 {
            return Err(Verdict::Malformed);
        }
    }
    // Everything after the name starts at an odd offset when the name length is odd.
    // Answer records are whole words (a negative answer's SOA may not be, and has no
    // RRSIG after it); the RRSIG record starts after them, and the OPT record after it
    // at an odd offset when the records' and the RRSIG's lengths add up to odd.
    let mut after_name = qtype as u64 + QCLASS_IN as u64 + plan.rrs_csum as u64 + plan.rrsig_csum as u64;
    let mut opt_sum = 0u64;
    if has_edns {
        let opt_off = (answers_off + rrs_len + rrsig_len) & FRAME_OFFSET_MASK;
        let opt = bytes_at(ctx, opt_off, wire_edns::OPT_RR_LEN, Verdict::Malformed)?;
        for (i, byte) in OPT_RR.iter().enumerate() {
            // SAFETY: i < OPT_RR.len() == OPT_RR_LEN, the bytes checked for `opt` by `bytes_at` above.
            unsafe { *opt.add(i) = *byte };
        }
        opt_sum += OPT_RR_CSUM;
        // RFC 3225 §3: the DO bit of the query is copied into the response (branch-free:
        // the flags word is the query's DO bit or zero).
        // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
        let do_flag = (unsafe { core::ptr::read_volatile(&scratch.edns_do) } as u16) & wire_edns::FLAG_DO;
        // SAFETY: FLAGS_OFF + 2 <= OPT_RR_LEN, checked for `opt` by `bytes_at` above.
        put_be16(unsafe { opt.add(wire_edns::FLAGS_OFF) }, do_flag);
        opt_sum += csum::at_offset(do_flag, wire_edns::FLAGS_OFF) as u64;
        if options_len > 0 {
            // SAFETY: RDLEN_OFF + 2 == OPT_RR_LEN, checked for `opt` by `bytes_at` above.
            put_be16(unsafe { opt.add(wire_edns::RDLEN_OFF) }, options_len as u16);
            // RDLENGTH sits at an odd offset of the OPT record.
            opt_sum += csum::at_offset(options_len as u16, wire_edns::RDLEN_OFF) as u64;
        }
        if ecs_len > 0 {
            opt_sum += write_client_subnet(ctx, opt_off + wire_edns::OPT_RR_LEN, &scratch.ecs)?;
        }
        if cookie_len > 0 {
            let cookie_off = wire_edns::OPT_RR_LEN + ecs_len;
            // SAFETY: REPLY_OPTION_START (4) is inside `scratch.cookie.reply`, a [u8; 32].
            let option = unsafe { scratch.cookie.reply.as_ptr().add(cookie::REPLY_OPTION_START) };
            // SAFETY: the helper reads REPLY_COOKIE_OPTION_LEN (28) bytes from `option`, bytes 4..32 of
            // `reply` (never written through the *mut), and checks the packet range itself.
            let stored = unsafe {
                bpf_xdp_store_bytes(
                    ctx.ctx,
                    ((opt_off + cookie_off) & FRAME_OFFSET_MASK) as u32,
                    option as *mut _,
                    REPLY_COOKIE_OPTION_LEN as u32,
                )
            };
            if stored != 0 {
                return Err(Verdict::Malformed);
            }
            opt_sum += csum::at_offset(scratch.cookie.reply_csum as u16, cookie_off) as u64;
        }
        if nsid_len > 0 {
            let nsid_off = wire_edns::OPT_RR_LEN + ecs_len + cookie_len;
            let len = nsid_len & NSID_LEN_MASK;
            if len > 4 + MAX_NSID_LEN {
                return Err(Verdict::Malformed);
            }
            // SAFETY: the helper reads `len` (at most 4 + MAX_NSID_LEN, checked above) bytes of
            // `nsid.option`, a [u8; 4 + MAX_NSID_LEN] in the map value (never written through the
            // *mut), and checks the packet range itself.
            let stored = unsafe {
                bpf_xdp_store_bytes(
                    ctx.ctx,
                    ((opt_off + nsid_off) & FRAME_OFFSET_MASK) as u32,
                    nsid.option.as_ptr() as *mut _,
                    len as u32,
                )
            };
            if stored != 0 {
                return Err(Verdict::Malformed);
            }
            opt_sum += csum::at_offset(nsid.csum as u16, nsid_off) as u64;
        }
    }
    after_name += csum::at_offset(csum::fold(opt_sum), rrs_len + rrsig_len) as u64;
    sum += csum::at_offset(csum::fold(after_name), name_len) as u64;

    let hdr = bytes_at(ctx, l4_off, udp::HLEN, Verdict::Malformed)?;
    // SAFETY: CHECKSUM_OFF + 2 <= udp::HLEN, checked for `hdr` by `bytes_at` above.
    put_be16(unsafe { hdr.add(udp::CHECKSUM_OFF) }, csum::udp_checksum_field(csum::fold(sum)));
    Ok(answers_off + rrs_len)
}

/// Turns a query's frame around for its reply, `udp_len` bytes of UDP: MACs and IP
/// addresses swapped, the IP length set, TTL / hop limit 64, ECN cleared, the IPv4
/// header checksum updated. Returns the UDP pseudo-header's sum (addresses, protocol,
/// length) for the reply's checksum. Shared by the answer and the slow-path guard's
/// TC reply.
#[inline(always)]
pub fn turn_around(ctx: &XdpContext, l3_off: usize, is_ipv6: bool, udp_len: usize) -> Result<u64, Verdict> {
    let hdr = bytes_at(ctx, 0, eth::HLEN, Verdict::Malformed)?;
    // SAFETY: MACs 0..6 and 6..12 (disjoint) of the eth::HLEN bytes checked for `hdr` by `bytes_at` above.
    unsafe { swap_bytes::<{ eth::MAC_LEN }>(hdr.add(eth::DST_OFF), hdr.add(eth::SRC_OFF)) };
    let l3_off = l3_off & L3_OFFSET_MASK;

    let mut sum = csum::pseudo_header_rest(udp::IPPROTO, udp_len);
    if is_ipv6 {
        let ip = bytes_at(ctx, l3_off, ipv6::HLEN, Verdict::Malformed)?;
        // SAFETY: all inside the ipv6::HLEN bytes checked for `ip` by `bytes_at` above: bytes 4..6, 1
        // and 7, and the disjoint addresses 8..24 and 24..40.
        unsafe {
            put_be16(ip.add(ipv6::PAYLOAD_LEN_OFF), udp_len as u16);
            // A query's congestion mark is no reason to mark the reply (RFC 3168 §5).
            *ip.add(ipv6::ECN_BYTE_OFF) &= !ipv6::ECN_MASK;
            *ip.add(ipv6::HOP_LIMIT_OFF) = REPLY_IP_TTL;
            swap_bytes::<{ ipv6::ADDR_LEN }>(ip.add(ipv6::SRC_OFF), ip.add(ipv6::DST_OFF));
        }
        // SAFETY: SRC_OFF + 32 == ipv6::HLEN: both addresses lie in the header checked for `ip` above.
        sum += sum_words::<{ 2 * ipv6::ADDR_LEN }>(unsafe { ip.add(ipv6::SRC_OFF) });
    } else {
        let ip = bytes_at(ctx, l3_off, ipv4::MIN_HLEN, Verdict::Malformed)?;
        // SAFETY: all inside the ipv4::MIN_HLEN bytes checked for `ip` by `bytes_at` above: words at
        // 0, 2, 8 and 10, and the disjoint addresses 12..16 and 16..20.
        unsafe {
            let old_ttl_proto = be16(ip.add(ipv4::TTL_OFF));
            let old_total = be16(ip.add(ipv4::TOTAL_LEN_OFF));
            let new_ttl_proto = ((REPLY_IP_TTL as u16) << 8) | udp::IPPROTO as u16;
            let new_total = (ipv4::MIN_HLEN + udp_len) as u16;
            let old_version_tos = be16(ip.add(ipv4::VERSION_IHL_OFF));
            // A query's congestion mark is no reason to mark the reply (RFC 3168 §5).
            let new_version_tos = old_version_tos & !(ipv4::ECN_MASK as u16);
            put_be16(ip.add(ipv4::VERSION_IHL_OFF), new_version_tos);
            put_be16(ip.add(ipv4::TOTAL_LEN_OFF), new_total);
            put_be16(ip.add(ipv4::TTL_OFF), new_ttl_proto);
            // RFC 1624 incremental update; the address swap below does not change the sum.
            let check = be16(ip.add(ipv4::CHECKSUM_OFF));
            let check = csum::update16(csum::update16(check, old_ttl_proto, new_ttl_proto), old_total, new_total);
            let check = csum::update16(check, old_version_tos, new_version_tos);
            put_be16(ip.add(ipv4::CHECKSUM_OFF), check);
            swap_bytes::<{ ipv4::ADDR_LEN }>(ip.add(ipv4::SRC_OFF), ip.add(ipv4::DST_OFF));
        }
        // SAFETY: SRC_OFF + 8 == ipv4::MIN_HLEN: both addresses lie in the header checked for `ip` above.
        sum += sum_words::<{ 2 * ipv4::ADDR_LEN }>(unsafe { ip.add(ipv4::SRC_OFF) });
    }
    Ok(sum)
}

/// Writes the reply's UDP header (ports swapped, `udp_len`, the checksum zeroed until
/// it is known) and DNS header (the ID and QDCOUNT kept, `flags`, `counts` as
/// (ANCOUNT, NSCOUNT), `arcount`); returns their one's-complement sum for the UDP checksum. Shared by the
/// answer and the slow-path guard's TC reply.
#[inline(always)]
pub fn write_headers(
    ctx: &XdpContext,
    l4_off: usize,
    udp_len: usize,
    flags: u16,
    counts: [u16; 2],
    arcount: u16,
) -> Result<u64, Verdict> {
    let [ancount, nscount] = counts;
    let hdr = bytes_at(ctx, l4_off & L4_OFFSET_MASK, udp::HLEN + dns::HLEN, Verdict::Malformed)?;
    // SAFETY: all inside the udp::HLEN + dns::HLEN (20) bytes checked for `hdr` by `bytes_at`
    // above: disjoint ports 0..2 and 2..4, length 4..6, checksum 6..8, and the DNS
    // header's ID, flags and counts at 8..20.
    unsafe {
        swap_bytes::<2>(hdr.add(udp::SRC_PORT_OFF), hdr.add(udp::DST_PORT_OFF));
        put_be16(hdr.add(udp::LEN_OFF), udp_len as u16);
        put_be16(hdr.add(udp::CHECKSUM_OFF), 0);
        let dns_hdr = hdr.add(udp::HLEN);
        put_be16(dns_hdr.add(dns::FLAGS_OFF), flags);
        put_be16(dns_hdr.add(dns::ANCOUNT_OFF), ancount);
        put_be16(dns_hdr.add(dns::NSCOUNT_OFF), nscount);
        put_be16(dns_hdr.add(dns::ARCOUNT_OFF), arcount);
        let ports = be16(hdr.add(udp::SRC_PORT_OFF)) as u64 + be16(hdr.add(udp::DST_PORT_OFF)) as u64;
        // ID, flags, QDCOUNT (1), ANCOUNT, NSCOUNT, ARCOUNT.
        let header =
            be16(dns_hdr.add(dns::ID_OFF)) as u64 + flags as u64 + 1 + ancount as u64 + nscount as u64 + arcount as u64;
        Ok(ports + udp_len as u64 + header)
    }
}

/// Copies the RRSIG record into the room `write_reply` left at `off` (its length is
/// the plan's `rrsig_len`, its checksum already counted).
#[inline(always)]
pub fn write_rrsig(ctx: &XdpContext, off: usize, rrsig: &RrsigRr) -> Result<(), Verdict> {
    let len = rrsig.len as usize & RRSIG_LEN_MASK;
    if len == 0 || len > RRSIG_RR_MAX {
        return Err(Verdict::Malformed);
    }
    let rr = rrsig.rr.as_ptr();
    // SAFETY: the helper reads `len` (1..=RRSIG_RR_MAX, checked above) bytes of `rrsig.rr`, a
    // [u8; RRSIG_RR_MAX] (never written through the *mut), and checks the packet range.
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, (off & FRAME_OFFSET_MASK) as u32, rr as *mut _, len as u32) } != 0 {
        return Err(Verdict::Malformed);
    }
    Ok(())
}

/// Grows the frame by `delta` bytes at the front when the tail has no room (veth in
/// native mode hands XDP buffers cut to the packet's size; the headroom is guaranteed).
/// The first `front_len` bytes (headers and question) move to the new start, so the
/// layout ends up as if the tail had grown.
#[inline(always)]
fn grow_at_front(ctx: &XdpContext, scratch: &mut Scratch, front_len: usize, delta: i64) -> Result<(), Verdict> {
    if delta <= 0 || front_len == 0 || front_len > MAX_FRAME_FRONT {
        return Err(Verdict::TooLarge);
    }
    let buf = scratch.frame_front.as_mut_ptr() as *mut _;
    // SAFETY: `buf` is scratch.frame_front, MAX_FRAME_FRONT bytes, and `front_len` is
    // 1..=MAX_FRAME_FRONT (checked above), so both copies stay inside it; the helpers check
    // offsets and `delta` against the packet, and no packet pointer is held across them.
    unsafe {
        if bpf_xdp_load_bytes(ctx.ctx, 0, buf, front_len as u32) != 0
            || bpf_xdp_adjust_head(ctx.ctx, -(delta as i32)) != 0
        {
            return Err(Verdict::TooLarge); // counted, not logged: no per-packet logging
        }
        if bpf_xdp_store_bytes(ctx.ctx, 0, buf, front_len as u32) != 0 {
            return Err(Verdict::Malformed);
        }
    }
    Ok(())
}
