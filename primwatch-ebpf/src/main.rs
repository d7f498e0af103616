//! primwatch's XDP program: answers plain A/AAAA queries for configured names straight
//! from the `NAMES` map and passes every other packet to the kernel, unmodified.
//!
//! Reading order: `primwatch` (entry, counters) → `parse_query` (headers, name walk,
//! EDNS) → `lookup` (hash + full-name compare) → `write_reply` (in-place rewrite,
//! checksums) → XDP_TX. Nothing is written to the packet before the lookup succeeded
//! and the reply is known to fit, so every pass leaves the packet byte for byte as it came.
#![no_std]
#![no_main]

use core::{mem::size_of, ptr};

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray},
    helpers::generated::{
        bpf_get_prandom_u32, bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
        bpf_xdp_store_bytes,
    },
    macros::{btf_map, xdp},
    programs::XdpContext,
    Global,
};
use primwatch_common::{
    ascii_lower_word, name_hash_step, AnswerSet, ClientSubnet, Counters, NameKey, NameRecords, Scratch, Settings,
    ViewMatch, NAME_BUF_LEN, SCOPE_FROM_SOURCE,
    Verdict, AAAA_RR_LEN, MAX_RECORDS, RRS_BUF_LEN, SELECT_NODATA, SELECT_RANDOM,
    SELECT_ROUND_ROBIN, SELECT_WEIGHTED, WEIGHT_SLOTS, EDNS_UDP_PAYLOAD, MAX_ANSWER_BYTES, MAX_NAME_LEN, NAME_HASH_SEED, OPT_RR, QCLASS_IN,
    QTYPE_A,
    QTYPE_AAAA, QTYPE_OPT, MAX_FRAME_FRONT, NAME_STATS_SLOTS,
};

/// UDP port the program answers on; the loader overrides it from the config.
#[unsafe(no_mangle)]
static DNS_PORT: Global<u16> = Global::new(53);

/// Served names: hash of the lowercased name → the name and its pre-rendered answers.
/// Not preallocated: entries are ~1.2 KiB and most deployments serve few names.
#[btf_map]
static NAMES: HashMap<NameKey, NameRecords, 65536, 1 /* BPF_F_NO_PREALLOC */> = HashMap::new();

/// Source prefix → view, one trie per address family.
#[btf_map]
static VIEWS_V4: LpmTrie<[u8; 4], ViewMatch, 1_048_576> = LpmTrie::new();
#[btf_map]
static VIEWS_V6: LpmTrie<[u8; 16], ViewMatch, 1_048_576> = LpmTrie::new();

#[btf_map]
static SETTINGS: Array<Settings, 1> = Array::new();

#[btf_map]
static COUNTERS: PerCpuArray<Counters, 1> = PerCpuArray::new();

#[btf_map]
static SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

/// Answers per (name, view) entry and type: index `stats_slot * 2` for A, `+ 1` for
/// AAAA. The controller gives every entry of NAMES its own slot.
#[btf_map]
static NAME_ANSWERS: PerCpuArray<u64, { 2 * NAME_STATS_SLOTS }> = PerCpuArray::new();

const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const IPPROTO_UDP: u8 = 17;
const IPV6_HLEN: usize = 40;
const UDP_HLEN: usize = 8;
const DNS_HLEN: usize = 12;
const OPT_RR_LEN: usize = 11;
/// At most this many EDNS options are walked; more are passed up.
const MAX_EDNS_OPTIONS: usize = 8;
const EDNS_OPTION_COOKIE: u16 = 10;
const EDNS_OPTION_CLIENT_SUBNET: u16 = 8;
const EDNS_OPTION_PADDING: u16 = 12;
const REPLY_IP_TTL: u8 = 64;
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

/// DNS header flag bits.
const FLAG_QR: u16 = 0x8000;
const FLAG_OPCODE: u16 = 0x7800;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_CD: u16 = 0x0010;
const EDNS_FLAG_DO: u16 = 0x8000;

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
    if verdict == Verdict::Answered {
        xdp_action::XDP_TX
    } else {
        xdp_action::XDP_PASS
    }
}

/// A program that passes everything. Tests attach it to the client end of a veth pair
/// (native-mode XDP_TX on veth needs a program on the peer) and benchmarks use it as the floor.
#[xdp]
pub fn primwatch_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// Where the parts of a plain query are, and what the reply needs from it.
struct Query {
    l3_off: usize,
    l4_off: usize,
    is_ipv6: bool,
    /// IPv4 header length (0 for IPv6).
    ipv4_hlen: usize,
    name_len: usize,
    name_hash: u64,
    /// One's-complement sum of the question name as it sits in the UDP datagram.
    name_csum: u64,
    qtype: u16,
    has_opt: bool,
    /// The client's EDNS UDP payload size (512 without EDNS).
    client_udp_size: usize,
    flags: u16,
}

#[inline(always)]
fn try_answer(ctx: &XdpContext) -> Result<(), Verdict> {
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0).ok_or(Verdict::Malformed)? };
    let query = parse_query(ctx, scratch)?;
    let records = lookup(ctx, &query, scratch)?;
    let answers = match query.qtype {
        QTYPE_A => &records.a,
        QTYPE_AAAA => &records.aaaa,
        _ => return Err(Verdict::TypeNotPresent),
    };
    if answers.count == 0 && answers.select != SELECT_NODATA {
        return Err(Verdict::TypeNotPresent);
    }
    let picked = pick_records(answers, scratch)?;
    let slot = (records.stats_slot as usize) * 2 + (query.qtype == QTYPE_AAAA) as usize;
    write_reply(ctx, scratch, &query, &picked)?;
    if let Some(count) = NAME_ANSWERS.get_ptr_mut(slot as u32) {
        unsafe { *count += 1 };
    }
    Ok(())
}

/// The records of one reply: where they start in `AnswerSet::rrs`, how many bytes,
/// how many records and their checksum.
struct Picked {
    rrs: *const u8,
    len: usize,
    ancount: u16,
    csum: u16,
}

/// Picks the start record by the set's selection mode.
#[inline(always)]
fn pick_records(set: &AnswerSet, scratch: &mut Scratch) -> Result<Picked, Verdict> {
    if set.select == SELECT_NODATA {
        return Ok(Picked { rrs: set.rrs.as_ptr(), len: 0, ancount: 0, csum: 0 });
    }
    let count = set.count as u32;
    let rr_len = set.rr_len as usize;
    let answers = set.answers as usize;
    if count == 0 || count > MAX_RECORDS as u32 || answers == 0 || answers > count as usize || rr_len > AAAA_RR_LEN {
        return Err(Verdict::TypeNotPresent);
    }
    let start = match set.select {
        SELECT_ROUND_ROBIN => {
            let n = scratch.round_robin.wrapping_add(1);
            scratch.round_robin = n;
            n % count
        }
        SELECT_RANDOM => (unsafe { bpf_get_prandom_u32() }) % count,
        SELECT_WEIGHTED => {
            let slot = unsafe { bpf_get_prandom_u32() } as usize & (WEIGHT_SLOTS - 1);
            set.weighted_start[slot] as u32
        }
        _ => 0,
    } as usize
        & (MAX_RECORDS - 1);
    let offset = start * rr_len;
    let len = answers * rr_len;
    if offset + len > RRS_BUF_LEN {
        return Err(Verdict::Malformed);
    }
    Ok(Picked {
        rrs: unsafe { set.rrs.as_ptr().add(offset) },
        len,
        ancount: answers as u16,
        csum: set.csums[start],
    })
}

/// Returns a pointer to `len` bytes at `off`, or `err` if the packet is shorter.
#[inline(always)]
fn bytes_at(ctx: &XdpContext, off: usize, len: usize, err: Verdict) -> Result<*mut u8, Verdict> {
    let start = ctx.data();
    if start + off + len > ctx.data_end() {
        return Err(err);
    }
    Ok((start + off) as *mut u8)
}

#[inline(always)]
fn be16(p: *const u8) -> u16 {
    unsafe { u16::from_be_bytes([*p, *p.add(1)]) }
}

#[inline(always)]
fn put_be16(p: *mut u8, v: u16) {
    let b = v.to_be_bytes();
    unsafe {
        *p = b[0];
        *p.add(1) = b[1];
    }
}

#[inline(always)]
fn parse_query(ctx: &XdpContext, scratch: &mut Scratch) -> Result<Query, Verdict> {
    // Ethernet, with one optional 802.1Q tag.
    let eth = bytes_at(ctx, 0, ETH_HLEN, Verdict::NotDns)?;
    let mut ethertype = be16(unsafe { eth.add(12) });
    let mut l3_off = ETH_HLEN;
    if ethertype == ETH_P_8021Q {
        let tag = bytes_at(ctx, ETH_HLEN, VLAN_HLEN, Verdict::NotDns)?;
        ethertype = be16(unsafe { tag.add(2) });
        l3_off = ETH_HLEN + VLAN_HLEN;
    }

    // IP: only unfragmented datagrams with UDP directly after the IP header.
    let (is_ipv6, ipv4_hlen, l4_off, udp_len_from_ip) = match ethertype {
        ETH_P_IPV4 => {
            let ip = bytes_at(ctx, l3_off, 20, Verdict::Malformed)?;
            let version_ihl = unsafe { *ip };
            let hlen = ((version_ihl & 0x0f) as usize) * 4;
            if version_ihl >> 4 != 4 || hlen < 20 {
                return Err(Verdict::Malformed);
            }
            let frag = be16(unsafe { ip.add(6) });
            if frag & 0x3fff != 0 || unsafe { *ip.add(9) } != IPPROTO_UDP {
                return Err(Verdict::NotDns);
            }
            let total_len = be16(unsafe { ip.add(2) }) as usize;
            if total_len < hlen + UDP_HLEN {
                return Err(Verdict::Malformed);
            }
            (false, hlen, l3_off + hlen, total_len - hlen)
        }
        ETH_P_IPV6 => {
            let ip = bytes_at(ctx, l3_off, IPV6_HLEN, Verdict::Malformed)?;
            if unsafe { *ip } >> 4 != 6 {
                return Err(Verdict::Malformed);
            }
            if unsafe { *ip.add(6) } != IPPROTO_UDP {
                return Err(Verdict::NotDns);
            }
            (true, 0, l3_off + IPV6_HLEN, be16(unsafe { ip.add(4) }) as usize)
        }
        _ => return Err(Verdict::NotDns),
    };

    let udp = bytes_at(ctx, l4_off, UDP_HLEN, Verdict::Malformed)?;
    if be16(unsafe { udp.add(2) }) != DNS_PORT.load() {
        return Err(Verdict::NotDns);
    }
    let udp_len = be16(unsafe { udp.add(4) }) as usize;
    if udp_len != udp_len_from_ip || udp_len < UDP_HLEN + DNS_HLEN || be16(udp) == 0 {
        return Err(Verdict::Malformed);
    }
    // Frames may carry padding after the datagram: the UDP length says where DNS ends.
    // Every byte parsed below is bounds-checked, and the parsed length must equal
    // `dns_len`, so the whole datagram is known to be in the frame at the end.
    let dns_off = l4_off + UDP_HLEN;
    let dns_len = udp_len - UDP_HLEN;

    let dns = bytes_at(ctx, dns_off, DNS_HLEN, Verdict::Malformed)?;
    let flags = be16(unsafe { dns.add(2) });
    let qdcount = be16(unsafe { dns.add(4) });
    let ancount = be16(unsafe { dns.add(6) });
    let nscount = be16(unsafe { dns.add(8) });
    let arcount = be16(unsafe { dns.add(10) });
    if flags & (FLAG_QR | FLAG_OPCODE | FLAG_TC) != 0
        || qdcount != 1
        || ancount != 0
        || nscount != 0
        || arcount > 1
    {
        return Err(Verdict::NotPlainQuery);
    }

    let (name_len, name_hash, name_csum) = walk_name(ctx, dns_off + DNS_HLEN, scratch)?;

    let qoff = dns_off + DNS_HLEN + name_len;
    let q = bytes_at(ctx, qoff, 4, Verdict::Malformed)?;
    let qtype = be16(q);
    if be16(unsafe { q.add(2) }) != QCLASS_IN {
        return Err(Verdict::NotPlainQuery);
    }

    scratch.ecs.present = 0;
    let mut query_len = DNS_HLEN + name_len + 4;
    let mut client_udp_size = 512;
    let has_opt = arcount == 1;
    if has_opt {
        let opt = bytes_at(ctx, qoff + 4, OPT_RR_LEN, Verdict::Malformed)?;
        // Any other additional record (TSIG, SIG(0), …) is not a plain query.
        if unsafe { *opt } != 0 || be16(unsafe { opt.add(1) }) != QTYPE_OPT {
            return Err(Verdict::NotPlainQuery);
        }
        client_udp_size = be16(unsafe { opt.add(3) }) as usize;
        let version = unsafe { *opt.add(6) };
        let edns_flags = be16(unsafe { opt.add(7) });
        if version != 0 || edns_flags & EDNS_FLAG_DO != 0 {
            return Err(Verdict::UnsupportedEdns);
        }
        let rdlen = be16(unsafe { opt.add(9) }) as usize;
        check_edns_options(ctx, qoff + 4 + OPT_RR_LEN, rdlen, scratch)?;
        query_len += OPT_RR_LEN + rdlen;
    }
    if query_len != dns_len {
        return Err(Verdict::Malformed);
    }

    Ok(Query {
        l3_off,
        l4_off,
        is_ipv6,
        ipv4_hlen,
        name_len,
        name_hash,
        name_csum,
        qtype,
        has_opt,
        client_udp_size,
        flags,
    })
}

/// Reads the question name: checks the label structure (hopping from length byte to
/// length byte), copies it to scratch in one helper call, then lowercases, hashes and
/// checksums it 8 bytes at a time. Returns (wire length, hash, checksum sum).
#[inline(always)]
fn walk_name(
    ctx: &XdpContext,
    name_off: usize,
    scratch: &mut Scratch,
) -> Result<(usize, u64, u64), Verdict> {
    let mut pos = 0usize;
    let mut name_len = 0usize;
    // At most 127 labels fit in 255 bytes, plus the root label.
    for _ in 0..128 {
        // A name byte is always followed by at least QTYPE and QCLASS, so asking for 5
        // bytes rejects nothing valid (and a 1-byte check compiles to `p < end`, which
        // the verifier cannot turn into a range).
        let p = bytes_at(ctx, name_off + pos, 5, Verdict::Malformed)?;
        let label_len = unsafe { *p } as usize;
        if label_len == 0 {
            name_len = pos + 1;
            break;
        }
        if label_len > 63 {
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
    unsafe { ptr::write_volatile(&mut scratch.name_len, name_len as u32) };
    // The mask (255 = MAX_NAME_LEN) bounds the value in whichever register uses it.
    let name_len = (unsafe { ptr::read_volatile(&scratch.name_len) } & 0xff) as usize;
    if name_len == 0 {
        return Err(Verdict::Malformed);
    }

    let name = scratch.name.as_mut_ptr();
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
    Ok((name_len, hash, fold(sum).swap_bytes() as u64))
}

/// Lowercases `len` bytes at `buf` (8-aligned, zero-padded to a word) in place, 8 at a
/// time; returns their name hash and their one's-complement sum as read (before
/// lowercasing, little-endian words).
#[inline(always)]
fn lower_hash_sum(buf: *mut u8, len: usize) -> (u64, u64) {
    let words = buf.cast::<u64>();
    let word_count = (len + 7) / 8;
    let mut hash = NAME_HASH_SEED;
    let mut sum = 0u64;
    for w in 0..(MAX_NAME_LEN + 7) / 8 {
        if w >= word_count {
            break;
        }
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

/// Accepts options a responder may ignore (RFC 7873 §5.2 cookies, RFC 7830 padding)
/// and one EDNS Client Subnet option (RFC 7871), which it records in scratch.
#[inline(always)]
fn check_edns_options(ctx: &XdpContext, off: usize, rdlen: usize, scratch: &mut Scratch) -> Result<(), Verdict> {
    let mut pos = 0usize;
    for _ in 0..MAX_EDNS_OPTIONS {
        if pos == rdlen {
            return Ok(());
        }
        if pos > rdlen {
            return Err(Verdict::Malformed); // an option overran RDLENGTH
        }
        let option = bytes_at(ctx, off + (pos & 0xfff), 4, Verdict::Malformed)?;
        let code = be16(option);
        let len = be16(unsafe { option.add(2) }) as usize;
        if code == EDNS_OPTION_CLIENT_SUBNET {
            client_subnet(ctx, off + (pos & 0xfff) + 4, len, scratch)?;
        } else if code != EDNS_OPTION_COOKIE && code != EDNS_OPTION_PADDING {
            return Err(Verdict::UnsupportedEdns);
        }
        pos += 4 + len;
    }
    if pos == rdlen {
        Ok(())
    } else if pos > rdlen {
        Err(Verdict::Malformed)
    } else {
        Err(Verdict::UnsupportedEdns) // more options than we walk
    }
}

/// Parses an ECS option body (`len` bytes at `off`) into scratch.
#[inline(always)]
fn client_subnet(ctx: &XdpContext, off: usize, len: usize, scratch: &mut Scratch) -> Result<(), Verdict> {
    let head = bytes_at(ctx, off, 4, Verdict::Malformed)?;
    let family = be16(head);
    let source_len = unsafe { *head.add(2) };
    let scope_len = unsafe { *head.add(3) };
    let max_len = match family {
        1 => 32,
        2 => 128,
        _ => return Err(Verdict::UnsupportedEdns),
    };
    // RFC 7871 §7.1.1: a second option, a scope in a query or a wrong length is FORMERR.
    let address_len = (source_len as usize + 7) / 8;
    if scratch.ecs.present != 0 || scope_len != 0 || source_len > max_len || len != 4 + address_len {
        return Err(Verdict::Malformed);
    }
    scratch.ecs.address = [0; 16];
    if address_len > 0 {
        // 1..=16 (source_len is at most 128), in a form the verifier can see.
        let n = ((address_len - 1) & 15) + 1;
        let loaded = unsafe {
            bpf_xdp_load_bytes(ctx.ctx, (off + 4) as u32, scratch.ecs.address.as_mut_ptr() as *mut _, n as u32)
        };
        if loaded != 0 {
            return Err(Verdict::Malformed);
        }
    }
    scratch.ecs.family = family;
    scratch.ecs.source_len = source_len;
    scratch.ecs.scope_len = 0;
    scratch.ecs.present = 1;
    Ok(())
}

/// The client's view: the longest configured prefix containing its EDNS Client Subnet
/// (when the query has one with a non-zero source length) or else its source address.
/// Records the scope an ECS reply may claim.
#[inline(always)]
fn client_view(ctx: &XdpContext, query: &Query, scratch: &mut Scratch) -> Result<u32, Verdict> {
    let any_views = SETTINGS.get_ptr(0).is_some_and(|s| unsafe { (*s).view_prefixes } > 0);
    if !any_views {
        return Ok(0); // the answer is the same for every client: scope 0
    }
    let ecs = &mut scratch.ecs;
    let found = if ecs.present != 0 && ecs.source_len > 0 {
        let source_len = ecs.source_len as u32;
        let found = if ecs.family == 2 {
            VIEWS_V6.get(&Key::new(source_len, ecs.address)).copied()
        } else {
            let a = ecs.address;
            VIEWS_V4.get(&Key::new(source_len, [a[0], a[1], a[2], a[3]])).copied()
        };
        ecs.scope_len = match found {
            Some(m) if m.prefix_len != SCOPE_FROM_SOURCE => m.prefix_len as u8,
            _ => ecs.source_len,
        };
        found
    } else if query.is_ipv6 {
        let src = bytes_at(ctx, query.l3_off + 8, 16, Verdict::Malformed)?;
        VIEWS_V6.get(&Key::new(128, unsafe { ptr::read_unaligned(src as *const [u8; 16]) })).copied()
    } else {
        let src = bytes_at(ctx, query.l3_off + 12, 4, Verdict::Malformed)?;
        VIEWS_V4.get(&Key::new(32, unsafe { ptr::read_unaligned(src as *const [u8; 4]) })).copied()
    };
    Ok(found.map_or(0, |m| m.view))
}

/// Finds the name's records in the client's view (else the default view); failing
/// that, the records of the wildcard one level up (`*.parent`). A hash match alone is
/// never enough: the stored name must equal the one looked for.
#[inline(always)]
fn lookup(ctx: &XdpContext, query: &Query, scratch: &mut Scratch) -> Result<&'static NameRecords, Verdict> {
    let view = client_view(ctx, query, scratch)?;
    if let Some(records) = find(query.name_hash, view, &scratch.name, query.name_len) {
        return Ok(records);
    }
    let wildcards = SETTINGS.get_ptr(0).is_some_and(|s| unsafe { (*s).wildcard_names } > 0);
    if !wildcards {
        return Err(Verdict::NameNotFound);
    }
    // "*" and the name without its first label, read from the packet once more.
    let first_label = (scratch.name[0] & 63) as usize;
    let rest = query.name_len.wrapping_sub(1 + first_label) & 0xff;
    if rest == 0 || rest > MAX_NAME_LEN - 2 {
        return Err(Verdict::NameNotFound);
    }
    let name_off = query.l4_off + UDP_HLEN + DNS_HLEN + 1 + first_label;
    let wild = scratch.wildcard.as_mut_ptr();
    unsafe {
        *wild = 1;
        *wild.add(1) = b'*';
        if bpf_xdp_load_bytes(ctx.ctx, name_off as u32, wild.add(2) as *mut _, rest as u32) != 0 {
            return Err(Verdict::NameNotFound);
        }
        ptr::write_unaligned(wild.add(2 + rest) as *mut u64, 0);
    }
    let (hash, _) = lower_hash_sum(wild, 2 + rest);
    find(hash, view, &scratch.wildcard, 2 + rest).ok_or(Verdict::NameNotFound)
}

/// The entry for a lowercased wire name (`len` bytes of `name`, zero-padded) in
/// `view`, else in the default view.
#[inline(always)]
fn find(hash: u64, view: u32, name: &[u8; NAME_BUF_LEN + 8], len: usize) -> Option<&'static NameRecords> {
    let mut entry = NAMES.get_ptr(&NameKey::new(hash, view));
    if entry.is_none() && view != 0 {
        entry = NAMES.get_ptr(&NameKey::new(hash, 0));
    }
    let records = unsafe { &*entry? };
    if records.name_len as usize != len {
        return None;
    }
    let words = (len + 7) / 8;
    let ours = name.as_ptr() as *const u64;
    let theirs = records.name.as_ptr() as *const u64;
    for w in 0..32 {
        if w >= words {
            break;
        }
        if unsafe { *ours.add(w) != *theirs.add(w) } {
            return None;
        }
    }
    Some(records)
}

#[inline(always)]
fn fold(mut sum: u64) -> u16 {
    for _ in 0..4 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Sum of big-endian 16-bit words of `len` bytes (even) at `p`.
#[inline(always)]
fn sum_words<const LEN: usize>(p: *const u8) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < LEN {
        sum += be16(unsafe { p.add(i) }) as u64;
        i += 2;
    }
    sum
}

/// Grows the frame by `delta` bytes at the front when the tail has no room (veth in
/// native mode hands XDP buffers cut to the packet's size; the headroom is guaranteed).
/// The first `front_len` bytes (headers and question) move to the new start, so the
/// layout ends up as if the tail had grown.
#[inline(always)]
fn grow_at_front(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    front_len: usize,
    delta: i64,
) -> Result<(), Verdict> {
    if delta <= 0 || front_len == 0 || front_len > MAX_FRAME_FRONT {
        return Err(Verdict::TooLarge);
    }
    let buf = scratch.frame_front.as_mut_ptr() as *mut _;
    unsafe {
        if bpf_xdp_load_bytes(ctx.ctx, 0, buf, front_len as u32) != 0
            || bpf_xdp_adjust_head(ctx.ctx, -(delta as i32)) != 0
        {
            aya_log_ebpf::warn!(ctx, "no room to grow a reply by {} bytes", delta);
            return Err(Verdict::TooLarge);
        }
        if bpf_xdp_store_bytes(ctx.ctx, 0, buf, front_len as u32) != 0 {
            return Err(Verdict::Malformed);
        }
    }
    Ok(())
}

/// Turns the query into the reply in place and computes the checksums.
#[inline(always)]
fn write_reply(
    ctx: &XdpContext,
    scratch: &mut Scratch,
    query: &Query,
    answers: &Picked,
) -> Result<(), Verdict> {
    let rrs_len = answers.len;
    // Our OPT record, with the client subnet echoed when the query had one.
    let ecs_present = scratch.ecs.present != 0;
    let ecs_address_len = (scratch.ecs.source_len as usize + 7) / 8;
    let ecs_len = if ecs_present { 8 + ecs_address_len } else { 0 };
    let opt_len = if query.has_opt { OPT_RR_LEN + ecs_len } else { 0 };
    let reply_dns_len = DNS_HLEN + query.name_len + 4 + rrs_len + opt_len;
    let limit = if query.has_opt {
        query.client_udp_size.clamp(512, EDNS_UDP_PAYLOAD as usize)
    } else {
        512
    };
    if reply_dns_len > limit {
        return Err(Verdict::TooLarge);
    }

    let l4_off = query.l4_off;
    let dns_off = l4_off + UDP_HLEN;
    let udp_len = UDP_HLEN + reply_dns_len;
    let frame_len = dns_off + reply_dns_len;
    let delta = frame_len as i64 - (ctx.data_end() - ctx.data()) as i64;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta as i32) } != 0 {
        grow_at_front(ctx, scratch, dns_off + DNS_HLEN + query.name_len + 4, delta)?;
    }
    // From here on the packet is ours to rewrite; every pointer is derived afresh.

    let eth = bytes_at(ctx, 0, ETH_HLEN, Verdict::Malformed)?;
    unsafe {
        let mut mac = [0u8; 6];
        ptr::copy_nonoverlapping(eth, mac.as_mut_ptr(), 6);
        ptr::copy_nonoverlapping(eth.add(6), eth, 6);
        ptr::copy_nonoverlapping(mac.as_ptr(), eth.add(6), 6);
    }

    let mut sum: u64 = IPPROTO_UDP as u64 + udp_len as u64; // pseudo-header
    if query.is_ipv6 {
        let ip = bytes_at(ctx, query.l3_off, IPV6_HLEN, Verdict::Malformed)?;
        unsafe {
            put_be16(ip.add(4), udp_len as u16);
            *ip.add(7) = REPLY_IP_TTL;
            swap_bytes::<16>(ip.add(8), ip.add(24));
        }
        sum += sum_words::<32>(unsafe { ip.add(8) });
    } else {
        let ip = bytes_at(ctx, query.l3_off, 20, Verdict::Malformed)?;
        unsafe {
            let old_ttl_proto = be16(ip.add(8));
            let old_total = be16(ip.add(2));
            let new_ttl_proto = ((REPLY_IP_TTL as u16) << 8) | IPPROTO_UDP as u16;
            let new_total = (query.ipv4_hlen + udp_len) as u16;
            put_be16(ip.add(2), new_total);
            put_be16(ip.add(8), new_ttl_proto);
            // RFC 1624 incremental update: works for any header length, and the
            // address swap below does not change the sum.
            let old_check = be16(ip.add(10));
            let check = !fold(
                (!old_check) as u64
                    + (!old_ttl_proto) as u64
                    + new_ttl_proto as u64
                    + (!old_total) as u64
                    + new_total as u64,
            );
            put_be16(ip.add(10), check);
            swap_bytes::<4>(ip.add(12), ip.add(16));
        }
        sum += sum_words::<8>(unsafe { ip.add(12) });
    }

    let udp = bytes_at(ctx, l4_off, UDP_HLEN + DNS_HLEN, Verdict::Malformed)?;
    let ancount = answers.ancount;
    let arcount = query.has_opt as u16;
    let flags = FLAG_QR | FLAG_AA | (query.flags & (FLAG_RD | FLAG_CD));
    unsafe {
        swap_bytes::<2>(udp, udp.add(2));
        put_be16(udp.add(4), udp_len as u16);
        put_be16(udp.add(6), 0);
        let dns = udp.add(UDP_HLEN);
        put_be16(dns.add(2), flags);
        put_be16(dns.add(6), ancount);
        put_be16(dns.add(10), arcount);
        sum += be16(udp) as u64 + be16(udp.add(2)) as u64 + udp_len as u64;
        sum += be16(dns) as u64 + flags as u64 + 1 + ancount as u64 + arcount as u64;
    }
    sum += query.name_csum;

    let answers_off = dns_off + DNS_HLEN + query.name_len + 4;
    if rrs_len > 0 {
        let len = rrs_len & 0x3ff;
        if len > MAX_ANSWER_BYTES {
            return Err(Verdict::Malformed);
        }
        let stored = unsafe {
            bpf_xdp_store_bytes(ctx.ctx, answers_off as u32, answers.rrs as *mut _, len as u32)
        };
        if stored != 0 {
            return Err(Verdict::Malformed);
        }
    }
    // Everything after the name starts at an odd offset when the name length is odd.
    let mut after_name = query.qtype as u64 + QCLASS_IN as u64 + answers.csum as u64;
    if query.has_opt {
        let opt_off = (answers_off + rrs_len) & 0xfff;
        let opt = bytes_at(ctx, opt_off, OPT_RR_LEN, Verdict::Malformed)?;
        for (i, byte) in OPT_RR.iter().enumerate() {
            unsafe { *opt.add(i) = *byte };
        }
        after_name += OPT_RR_CSUM;
        if ecs_present {
            put_be16(unsafe { opt.add(9) }, ecs_len as u16);
            // RDLENGTH sits at an odd offset of the OPT record.
            after_name += (ecs_len as u16).swap_bytes() as u64;
            after_name += write_client_subnet(ctx, opt_off + OPT_RR_LEN, &scratch.ecs, ecs_address_len)?;
        }
    }
    let after_name = fold(after_name);
    sum += if query.name_len & 1 == 1 {
        after_name.swap_bytes() as u64
    } else {
        after_name as u64
    };

    let udp = bytes_at(ctx, l4_off, UDP_HLEN, Verdict::Malformed)?;
    let check = match !fold(sum) {
        0 => 0xffff,
        c => c,
    };
    put_be16(unsafe { udp.add(6) }, check);
    Ok(())
}

/// Writes the ECS option of a reply at `off`; returns its one's-complement sum as it
/// sits 11 bytes (an odd count) after the start of the OPT record.
#[inline(always)]
fn write_client_subnet(ctx: &XdpContext, off: usize, ecs: &ClientSubnet, address_len: usize) -> Result<u64, Verdict> {
    let head = bytes_at(ctx, off, 8, Verdict::Malformed)?;
    let words = [
        EDNS_OPTION_CLIENT_SUBNET,
        (4 + address_len) as u16,
        ecs.family,
        ((ecs.source_len as u16) << 8) | ecs.scope_len as u16,
    ];
    let mut sum = 0u64;
    for (i, word) in words.iter().enumerate() {
        put_be16(unsafe { head.add(2 * i) }, *word);
        sum += *word as u64;
    }
    if address_len > 0 {
        let n = ((address_len - 1) & 15) + 1;
        let stored = unsafe { bpf_xdp_store_bytes(ctx.ctx, (off + 8) as u32, ecs.address.as_ptr() as *mut _, n as u32) };
        if stored != 0 {
            return Err(Verdict::Malformed);
        }
        // The address is zero beyond its bytes, so all 16 can be summed.
        let mut i = 0;
        while i < 16 {
            sum += (((ecs.address[i] as u16) << 8) | ecs.address[i + 1] as u16) as u64;
            i += 2;
        }
    }
    Ok(fold(sum).swap_bytes() as u64)
}

#[inline(always)]
unsafe fn swap_bytes<const N: usize>(a: *mut u8, b: *mut u8) {
    let mut tmp = [0u8; N];
    unsafe {
        ptr::copy_nonoverlapping(a, tmp.as_mut_ptr(), N);
        ptr::copy_nonoverlapping(b, a, N);
        ptr::copy_nonoverlapping(tmp.as_ptr(), b, N);
    }
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
