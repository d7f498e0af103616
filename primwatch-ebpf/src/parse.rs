//! Stage 1 of a packet: Ethernet (one optional 802.1Q tag) → IPv4/IPv6 → UDP to our
//! port → DNS header → question. Accepts only a plain query (RFC 1035 §4.1.1: QR=0,
//! OPCODE=QUERY, one question, no answer or authority records, at most one additional
//! record, which must be OPT) and records where its parts are for the reply.
//!
//! And only a datagram the kernel's own stack would accept and answer: for this host
//! from a unicast, non-martian source (`host`), without IPv4 options, IP lengths within the
//! frame (trailing Ethernet padding is not part of the datagram), the UDP length equal
//! to the IP payload, a valid IPv4 header checksum, and a valid UDP checksum (IPv4 may
//! send none; IPv6 must, RFC 8200 §8.1).

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use core::ptr;
use primwatch_common::{
    ascii_lower_word, csum, name_hash_step,
    wire::{dns, eth, ipv4, ipv6, udp},
    Scratch, Verdict, MAX_CHECKSUMMED_DATAGRAM, MAX_NAME_LEN, NAME_HASH_SEED, PASSED_EDNS, PASSED_IPV6, PASSED_QUERY,
    PASSED_QUESTION, QCLASS_IN,
};

/// A folded one's-complement sum over data that carries its own correct checksum.
const VALID_SUM: u16 = 0xffff;
/// Verifier bound for the checksummed datagram's length (at most 512 bytes).
const DATAGRAM_LEN_MASK: usize = 0x3ff;

use crate::{
    edns::{self, Edns},
    host,
    maps::DNS_PORT,
    packet::{be16, bytes_at, frame_len, load_u64, sum_words, L3_OFFSET_MASK},
};

/// Where the parts of a plain query are, and what the reply needs from it.
pub struct Query {
    /// Offset of the IP header in the frame.
    pub l3_off: usize,
    /// Offset of the UDP header in the frame.
    pub l4_off: usize,
    pub is_ipv6: bool,
    /// Wire length of the question name, root label included.
    pub name_len: usize,
    /// `name_hash_step` over the lowercased name.
    pub name_hash: u64,
    /// One's-complement sum of the question name as it sits in the UDP datagram
    /// (folded, as big-endian words from the name's first byte).
    pub name_csum: u64,
    pub qtype: u16,
    /// DNS header flags of the query.
    pub flags: u16,
    /// The query's OPT record, if it had one.
    pub edns: Option<Edns>,
}

/// The IP layer of a frame: where UDP starts and the UDP length the IP header implies.
struct Ip {
    is_ipv6: bool,
    ipv4_hlen: usize,
    l4_off: usize,
    udp_len: usize,
    end: usize,
}

#[inline(always)]
pub fn parse_query(ctx: &XdpContext, scratch: &mut Scratch) -> Result<Query, Verdict> {
    let (ethertype, l3_off) = parse_ethernet(ctx)?;
    let ip = match ethertype {
        eth::P_IPV4 => parse_ipv4(ctx, l3_off)?,
        eth::P_IPV6 => parse_ipv6(ctx, l3_off)?,
        _ => return Err(Verdict::NotDns),
    };

    let udp_hdr = bytes_at(ctx, ip.l4_off, udp::HLEN, Verdict::Malformed)?;
    // SAFETY: DST_PORT_OFF + 2 <= udp::HLEN, the bytes checked for `udp_hdr` by `bytes_at` above.
    if be16(unsafe { udp_hdr.add(udp::DST_PORT_OFF) }) != DNS_PORT.load() {
        return Err(Verdict::NotDns);
    }
    // SAFETY: LEN_OFF + 2 <= udp::HLEN, checked for `udp_hdr` above.
    let udp_len = be16(unsafe { udp_hdr.add(udp::LEN_OFF) }) as usize;
    if udp_len != ip.udp_len
        || udp_len < udp::HLEN + dns::HLEN
        // SAFETY: SRC_PORT_OFF + 2 <= udp::HLEN, checked for `udp_hdr` above.
        || be16(unsafe { udp_hdr.add(udp::SRC_PORT_OFF) }) == 0
        || ip.end > frame_len(ctx)
    {
        return Err(Verdict::Malformed);
    }
    // A whole datagram to the DNS port: from here on, whatever is passed reaches the
    // DNS server, so the slow-path guard holds it to its budgets.
    let passed = PASSED_QUERY | l3_off as u32 | if ip.is_ipv6 { PASSED_IPV6 } else { 0 };
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.passed, passed) };
    if ip.ipv4_hlen > ipv4::MIN_HLEN {
        return Err(Verdict::IpOptions);
    }
    host::check_addressing(ctx, l3_off, ip.is_ipv6)?;
    if !ip.is_ipv6 && !ipv4_header_checksum_ok(ctx, l3_off)? {
        return Err(Verdict::BadChecksum);
    }
    if !udp_checksum_ok(ctx, l3_off, &ip, scratch)? {
        return Err(Verdict::BadChecksum);
    }
    // Frames may carry padding after the datagram: the UDP length says where DNS ends.
    // Every byte parsed below is bounds-checked, and the parsed length must equal
    // `dns_len`, so the whole datagram is known to be in the frame at the end.
    let dns_off = ip.l4_off + udp::HLEN;
    let dns_len = udp_len - udp::HLEN;

    let hdr = bytes_at(ctx, dns_off, dns::HLEN, Verdict::Malformed)?;
    // SAFETY: FLAGS_OFF + 2 <= dns::HLEN, the DNS header checked for `hdr` by `bytes_at` above.
    let flags = be16(unsafe { hdr.add(dns::FLAGS_OFF) });
    // SAFETY: QDCOUNT_OFF + 2 <= dns::HLEN, within the DNS header checked above.
    let qdcount = be16(unsafe { hdr.add(dns::QDCOUNT_OFF) });
    // SAFETY: ANCOUNT_OFF + 2 <= dns::HLEN, within the DNS header checked above.
    let ancount = be16(unsafe { hdr.add(dns::ANCOUNT_OFF) });
    // SAFETY: NSCOUNT_OFF + 2 <= dns::HLEN, within the DNS header checked above.
    let nscount = be16(unsafe { hdr.add(dns::NSCOUNT_OFF) });
    // SAFETY: ARCOUNT_OFF + 2 <= dns::HLEN, within the DNS header checked above.
    let arcount = be16(unsafe { hdr.add(dns::ARCOUNT_OFF) });
    if flags & (dns::FLAG_QR | dns::FLAG_OPCODE | dns::FLAG_TC) != 0
        || qdcount != 1
        || ancount != 0
        || nscount != 0
        || arcount > 1
    {
        return Err(Verdict::NotPlainQuery);
    }

    // Before the name walk: see `rrl`.
    crate::rrl::prepare(ctx, l3_off, ip.is_ipv6, scratch)?;
    let (name_len, name_hash, name_csum) = walk_name(ctx, dns_off + dns::HLEN, scratch)?;

    let qoff = dns_off + dns::HLEN + name_len;
    let q = bytes_at(ctx, qoff, dns::QTYPE_QCLASS_LEN, Verdict::Malformed)?;
    let qtype = be16(q);
    // SAFETY: QCLASS is bytes 2..4 of the QTYPE_QCLASS_LEN bytes checked for `q` just above.
    if be16(unsafe { q.add(2) }) != QCLASS_IN {
        return Err(Verdict::NotPlainQuery);
    }

    scratch.ecs.present = 0;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.cookie_len, 0) };
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.edns_do, 0) };
    let mut query_len = dns::HLEN + name_len + dns::QTYPE_QCLASS_LEN;
    let edns = if arcount == 1 {
        let (edns, opt_len) = edns::parse_opt(ctx, qoff + dns::QTYPE_QCLASS_LEN, scratch)?;
        query_len += opt_len;
        Some(edns)
    } else {
        None
    };
    if query_len != dns_len {
        return Err(Verdict::Malformed);
    }
    // A whole, well-formed query: the slow-path guard may send it a TC reply, made from
    // its question.
    // SAFETY: fields of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe {
        ptr::write_volatile(&mut scratch.passed_name_len, name_len as u32);
        ptr::write_volatile(&mut scratch.passed_name_csum, name_csum);
        let edns_bit = if edns.is_some() { PASSED_EDNS } else { 0 };
        ptr::write_volatile(&mut scratch.passed, passed | PASSED_QUESTION | edns_bit);
    }

    Ok(Query { l3_off, l4_off: ip.l4_off, is_ipv6: ip.is_ipv6, name_len, name_hash, name_csum, qtype, flags, edns })
}

/// Whether the IPv4 header (20 bytes: options were passed before) sums to all ones
/// (RFC 791).
#[inline(always)]
fn ipv4_header_checksum_ok(ctx: &XdpContext, l3_off: usize) -> Result<bool, Verdict> {
    let hdr = bytes_at(ctx, l3_off, ipv4::MIN_HLEN, Verdict::Malformed)?;
    Ok(csum::fold(sum_words::<{ ipv4::MIN_HLEN }>(hdr)) == VALID_SUM)
}

/// Whether the UDP checksum is valid (RFC 768): pseudo-header plus the whole datagram,
/// its checksum field included, sums to all ones. IPv4 may send 0 (no checksum); IPv6
/// may not (RFC 8200 §8.1). The datagram (its length already checked against the
/// frame) is summed 8 bytes at a time straight from the packet; the last partial word
/// is read as the datagram's final 8 bytes with the bytes already summed shifted out.
#[inline(always)]
fn udp_checksum_ok(ctx: &XdpContext, l3_off: usize, ip: &Ip, scratch: &mut Scratch) -> Result<bool, Verdict> {
    let hdr = bytes_at(ctx, ip.l4_off, udp::HLEN, Verdict::Malformed)?;
    // SAFETY: CHECKSUM_OFF + 2 <= udp::HLEN, checked for `hdr` by `bytes_at` above.
    let sent = be16(unsafe { hdr.add(udp::CHECKSUM_OFF) });
    if sent == 0 {
        return Ok(!ip.is_ipv6);
    }
    if ip.udp_len > MAX_CHECKSUMMED_DATAGRAM {
        return Err(Verdict::UnsupportedEdns); // only heavy EDNS padding makes a query this long
    }
    // Handed through the map so that the verifier checks what follows the loop once,
    // not once per length.
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.udp_len, ip.udp_len as u32) };
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let len = (unsafe { ptr::read_volatile(&scratch.udp_len) } as usize) & DATAGRAM_LEN_MASK;
    let words = len / 8;
    // Words are read little-endian: their sum, folded, is the byte-swapped sum.
    let mut sum = 0u64;
    for w in 0..MAX_CHECKSUMMED_DATAGRAM / 8 {
        if w >= words {
            break;
        }
        let p = bytes_at(ctx, ip.l4_off + 8 * w, 8, Verdict::Malformed)?;
        let word = load_u64(p);
        sum += (word & 0xffff_ffff) + (word >> 32);
    }
    let tail = len % 8;
    if tail > 0 {
        // A datagram is at least 8 bytes, so its last 8 bytes are in the frame; the
        // first 8 - tail of them were summed above.
        let p = bytes_at(ctx, ip.l4_off + (len.wrapping_sub(8) & DATAGRAM_LEN_MASK), 8, Verdict::Malformed)?;
        let word = load_u64(p) >> (8 * (8 - tail));
        sum += (word & 0xffff_ffff) + (word >> 32);
    }
    let sum = csum::fold(sum).swap_bytes() as u64
        + csum::pseudo_header_rest(udp::IPPROTO, ip.udp_len)
        + address_sum(ctx, l3_off, ip.is_ipv6)?;
    Ok(csum::fold(sum) == VALID_SUM)
}

/// The EtherType of the payload and where it starts.
#[inline(always)]
fn parse_ethernet(ctx: &XdpContext) -> Result<(u16, usize), Verdict> {
    let hdr = bytes_at(ctx, 0, eth::HLEN, Verdict::NotDns)?;
    // SAFETY: ETHERTYPE_OFF + 2 <= eth::HLEN, checked for `hdr` by `bytes_at` above.
    let ethertype = be16(unsafe { hdr.add(eth::ETHERTYPE_OFF) });
    if ethertype != eth::P_8021Q {
        return Ok((ethertype, eth::HLEN));
    }
    let tag = bytes_at(ctx, eth::HLEN, eth::VLAN_HLEN, Verdict::NotDns)?;
    // SAFETY: VLAN_ETHERTYPE_OFF + 2 <= eth::VLAN_HLEN, checked for `tag` by `bytes_at` just above.
    Ok((be16(unsafe { tag.add(eth::VLAN_ETHERTYPE_OFF) }), eth::HLEN + eth::VLAN_HLEN))
}

/// An unfragmented IPv4 datagram carrying UDP.
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3_off: usize) -> Result<Ip, Verdict> {
    let hdr = bytes_at(ctx, l3_off, ipv4::MIN_HLEN, Verdict::Malformed)?;
    // SAFETY: VERSION_IHL_OFF < ipv4::MIN_HLEN, checked for `hdr` by `bytes_at` above.
    let version_ihl = unsafe { *hdr.add(ipv4::VERSION_IHL_OFF) };
    let hlen = ((version_ihl & ipv4::IHL_MASK) as usize) * 4;
    if version_ihl >> 4 != ipv4::VERSION || hlen < ipv4::MIN_HLEN {
        return Err(Verdict::Malformed);
    }
    // SAFETY: FRAG_OFF + 2 <= ipv4::MIN_HLEN, checked for `hdr` by `bytes_at` above.
    let frag = be16(unsafe { hdr.add(ipv4::FRAG_OFF) });
    // SAFETY: PROTOCOL_OFF < ipv4::MIN_HLEN, checked for `hdr` by `bytes_at` above.
    if frag & ipv4::FRAGMENT_MASK != 0 || unsafe { *hdr.add(ipv4::PROTOCOL_OFF) } != udp::IPPROTO {
        return Err(Verdict::NotDns);
    }
    // SAFETY: TOTAL_LEN_OFF + 2 <= ipv4::MIN_HLEN, checked for `hdr` by `bytes_at` above.
    let total_len = be16(unsafe { hdr.add(ipv4::TOTAL_LEN_OFF) }) as usize;
    if total_len < hlen + udp::HLEN {
        return Err(Verdict::Malformed);
    }
    Ok(Ip {
        is_ipv6: false,
        ipv4_hlen: hlen,
        l4_off: l3_off + hlen,
        udp_len: total_len - hlen,
        end: l3_off + total_len,
    })
}

/// An IPv6 packet whose first next header is UDP (extension headers are passed).
#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3_off: usize) -> Result<Ip, Verdict> {
    let hdr = bytes_at(ctx, l3_off, ipv6::HLEN, Verdict::Malformed)?;
    // SAFETY: the first of the ipv6::HLEN bytes checked for `hdr` by `bytes_at` above.
    if unsafe { *hdr } >> 4 != ipv6::VERSION {
        return Err(Verdict::Malformed);
    }
    // SAFETY: NEXT_HEADER_OFF < ipv6::HLEN, checked for `hdr` by `bytes_at` above.
    if unsafe { *hdr.add(ipv6::NEXT_HEADER_OFF) } != udp::IPPROTO {
        return Err(Verdict::NotDns);
    }
    // SAFETY: PAYLOAD_LEN_OFF + 2 <= ipv6::HLEN, checked for `hdr` by `bytes_at` above.
    let payload_len = be16(unsafe { hdr.add(ipv6::PAYLOAD_LEN_OFF) }) as usize;
    Ok(Ip {
        is_ipv6: true,
        ipv4_hlen: 0,
        l4_off: l3_off + ipv6::HLEN,
        udp_len: payload_len,
        end: l3_off + ipv6::HLEN + payload_len,
    })
}

/// Reads the question name: checks the label structure (hopping from length byte to
/// length byte), copies it to scratch in one helper call, then lowercases, hashes and
/// checksums it 8 bytes at a time. Returns (wire length, hash, checksum sum).
#[inline(always)]
fn walk_name(ctx: &XdpContext, name_off: usize, scratch: &mut Scratch) -> Result<(usize, u64, u64), Verdict> {
    let mut pos = 0usize;
    let mut name_len = 0usize;
    for _ in 0..dns::MAX_LABELS {
        // A name byte is always followed by at least QTYPE and QCLASS, so asking for 5
        // bytes rejects nothing valid (and a 1-byte check compiles to `p < end`, which
        // the verifier cannot turn into a range).
        let p = bytes_at(ctx, name_off + pos, 1 + dns::QTYPE_QCLASS_LEN, Verdict::Malformed)?;
        // SAFETY: `p` is the first of the 5 bytes `bytes_at` checked just above.
        let label_len = unsafe { *p } as usize;
        if label_len == 0 {
            name_len = pos + 1;
            break;
        }
        if label_len > dns::MAX_LABEL_LEN {
            // Compression pointers and extended label types are not for us.
            return Err(Verdict::Malformed);
        }
        pos += 1 + label_len;
        if pos >= MAX_NAME_LEN {
            return Err(Verdict::Malformed); // the root label would not fit in 255 bytes
        }
    }
    // The loop can end at any of its iterations with a different length range;
    // round-tripping it through the map makes it one unknown value, so the verifier
    // checks the rest of the program once instead of once per exit.
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.name_len, name_len as u32) };
    // The mask (255 = MAX_NAME_LEN) bounds the value in whichever register uses it.
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let name_len = (unsafe { ptr::read_volatile(&scratch.name_len) } & MAX_NAME_LEN as u32) as usize;
    if name_len == 0 {
        return Err(Verdict::Malformed);
    }

    let name = scratch.name.as_mut_ptr();
    // SAFETY: `name` is scratch.name, NAME_BUF_LEN + 8 = 264 bytes; `name_len` is 1..=255
    // (masked, 0 rejected), so the helper writes at most 255 bytes into it and the zero
    // word at `name + name_len` ends by byte 263. The helper bounds-checks `name_off` and
    // `name_len` against the packet itself; `ctx.ctx` is the xdp_md the kernel passed.
    unsafe {
        if bpf_xdp_load_bytes(ctx.ctx, name_off as u32, name as *mut _, name_len as u32) != 0 {
            return Err(Verdict::Malformed);
        }
        // Zero the word after the name: the last word hashes and compares clean.
        ptr::write_unaligned(name.add(name_len) as *mut u64, 0);
    }
    let (hash, sum) = lower_hash_sum(name, name_len);
    // Words were read little-endian; the one's-complement sum of byte-swapped words is
    // the byte-swapped sum.
    Ok((name_len, hash, csum::fold(sum).swap_bytes() as u64))
}

/// Lowercases `len` bytes at `buf` (8-aligned, zero-padded to a word) in place, 8 at a
/// time; returns their name hash and their one's-complement sum as read (before
/// lowercasing, little-endian words).
#[inline(always)]
pub fn lower_hash_sum(buf: *mut u8, len: usize) -> (u64, u64) {
    let words = buf.cast::<u64>();
    let word_count = (len + 7) / 8;
    let mut hash = NAME_HASH_SEED;
    let mut sum = 0u64;
    for w in 0..(MAX_NAME_LEN + 7) / 8 {
        if w >= word_count {
            break;
        }
        // SAFETY: w < min((len + 7) / 8, 32); callers pass an 8-aligned `buf` with (len + 7) / 8 words
        // readable (len <= 255: scratch.name or scratch.wildcard, 264 bytes each, at offsets
        // 0 and 264 of the 8-aligned Scratch), so each word is in bounds and aligned.
        unsafe {
            let word = *words.add(w);
            // The checksum covers the name as sent (the reply echoes the client's case).
            sum += (word & 0xffff_ffff) + (word >> 32);
            let lower = ascii_lower_word(word);
            *words.add(w) = lower;
            hash = name_hash_step(hash, lower);
        }
    }
    (hash, sum)
}

/// Sum of the source and destination addresses (they sit side by side in both headers).
#[inline(always)]
fn address_sum(ctx: &XdpContext, l3_off: usize, is_ipv6: bool) -> Result<u64, Verdict> {
    Ok(if is_ipv6 {
        sum_words::<{ 2 * ipv6::ADDR_LEN }>(bytes_at(
            ctx,
            l3_off + ipv6::SRC_OFF,
            2 * ipv6::ADDR_LEN,
            Verdict::Malformed,
        )?)
    } else {
        sum_words::<{ 2 * ipv4::ADDR_LEN }>(bytes_at(
            ctx,
            l3_off + ipv4::SRC_OFF,
            2 * ipv4::ADDR_LEN,
            Verdict::Malformed,
        )?)
    })
}

/// `Scratch::passed` decoded: what the parse stage left for the programs a passed query
/// goes to (negative answers, the slow-path guard). The one reading of the `PASSED_*` bits.
pub struct Passed {
    /// A whole datagram to the DNS port (what the DNS server would get).
    pub query: bool,
    /// … and a well-formed query, whose question may be answered from XDP.
    pub question: bool,
    /// … which had an OPT record.
    pub edns: bool,
    pub is_ipv6: bool,
    /// The IP header's offset in the frame, within the verifier's bound.
    pub l3_off: usize,
}

impl Passed {
    #[inline(always)]
    pub fn of(scratch: &Scratch) -> Passed {
        // SAFETY: a field of `scratch`, a valid, aligned reference to this CPU's Scratch (map value).
        let passed = unsafe { ptr::read_volatile(&scratch.passed) };
        Passed {
            query: passed & PASSED_QUERY != 0,
            question: passed & PASSED_QUESTION != 0,
            edns: passed & PASSED_EDNS != 0,
            is_ipv6: passed & PASSED_IPV6 != 0,
            l3_off: passed as usize & L3_OFFSET_MASK,
        }
    }
}
