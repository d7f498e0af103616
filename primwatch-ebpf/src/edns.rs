//! EDNS(0) (RFC 6891): the query's OPT record and its options, and the OPT record of
//! the reply. PADDING (RFC 7830) is skipped; one EDNS Client Subnet option (RFC 7871)
//! is parsed into scratch and echoed; one COOKIE option (RFC 7873) is located for
//! `cookie`; an NSID request (RFC 5001) is noted for the reply; anything else sends
//! the query to the kernel.

use aya_ebpf::{
    helpers::generated::{bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use core::ptr;
use primwatch_common::{
    cookie::{CLIENT_COOKIE_LEN, MAX_SERVER_COOKIE_LEN, MIN_SERVER_COOKIE_LEN},
    csum,
    wire::{edns, EcsFamily},
    ClientSubnet, Scratch, Verdict, HARMLESS_SEEN, QTYPE_OPT,
};

use crate::{
    maps::NSID,
    packet::{be16, bytes_at, put_be16},
};

/// At most this many EDNS options are walked; more are passed up.
const MAX_EDNS_OPTIONS: usize = 8;
/// Verifier bound for offsets into the option area (RDLENGTH is 16 bits, but a frame
/// is far shorter; the mask only has to be at least the largest real offset).
const OPTION_OFFSET_MASK: usize = 0xfff;
/// RDLENGTH is 16 bits.
const RDLEN_MASK: usize = 0xffff;

/// What the reply needs from the query's OPT record.
pub struct Edns {
    /// The client's EDNS UDP payload size.
    pub udp_size: usize,
}

/// Parses the OPT record at `off` (the only additional record a plain query may have).
/// Returns it and its wire length.
#[inline(always)]
pub fn parse_opt(ctx: &XdpContext, off: usize, scratch: &mut Scratch) -> Result<(Edns, usize), Verdict> {
    let opt = bytes_at(ctx, off, edns::OPT_RR_LEN, Verdict::Malformed)?;
    // Any other additional record (TSIG, SIG(0), …) is not a plain query.
    // SAFETY: OWNER_OFF < OPT_RR_LEN and TYPE_OFF + 2 <= OPT_RR_LEN: bytes checked for `opt` by `bytes_at` above.
    if unsafe { *opt.add(edns::OWNER_OFF) } != 0 || be16(unsafe { opt.add(edns::TYPE_OFF) }) != QTYPE_OPT {
        return Err(Verdict::NotPlainQuery);
    }
    // SAFETY: UDP_SIZE_OFF + 2 <= OPT_RR_LEN, checked for `opt` by `bytes_at` above.
    let udp_size = be16(unsafe { opt.add(edns::UDP_SIZE_OFF) }) as usize;
    // SAFETY: VERSION_OFF < OPT_RR_LEN, checked for `opt` by `bytes_at` above.
    let version = unsafe { *opt.add(edns::VERSION_OFF) };
    // SAFETY: FLAGS_OFF + 2 <= OPT_RR_LEN, checked for `opt` by `bytes_at` above.
    let flags = be16(unsafe { opt.add(edns::FLAGS_OFF) });
    if version != 0 {
        return Err(Verdict::UnsupportedEdns); // RFC 6891 §6.1.3: BADVERS is the server's to send
    }
    // The DO bit (RFC 3225) is read again where the reply is written, not carried in a
    // register: the verifier would otherwise check the rest of the program twice.
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { core::ptr::write_volatile(&mut scratch.edns_do, (flags & edns::FLAG_DO) as u32) };
    // SAFETY: RDLEN_OFF + 2 == OPT_RR_LEN, checked for `opt` by `bytes_at` above.
    let rdlen = be16(unsafe { opt.add(edns::RDLEN_OFF) }) as usize;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe { ptr::write_volatile(&mut scratch.opt_rdlen, rdlen as u32) };
    check_options(ctx, off + edns::OPT_RR_LEN, rdlen, scratch)?;
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    let rdlen = (unsafe { ptr::read_volatile(&scratch.opt_rdlen) } as usize) & RDLEN_MASK;
    Ok((Edns { udp_size }, edns::OPT_RR_LEN + rdlen))
}

/// Walks the `rdlen` bytes of options at `off`.
#[inline(always)]
fn check_options(ctx: &XdpContext, off: usize, rdlen: usize, scratch: &mut Scratch) -> Result<(), Verdict> {
    let mut pos = 0usize;
    for _ in 0..MAX_EDNS_OPTIONS {
        if pos == rdlen {
            return Ok(());
        }
        if pos > rdlen {
            return Err(Verdict::Malformed); // an option overran RDLENGTH
        }
        let option_off = off + (pos & OPTION_OFFSET_MASK);
        let option = bytes_at(ctx, option_off, edns::OPTION_HLEN, Verdict::Malformed)?;
        let code = be16(option);
        // SAFETY: bytes 2..4 of the OPTION_HLEN bytes checked for `option` by `bytes_at` just above.
        let len = be16(unsafe { option.add(2) }) as usize;
        if code == edns::OPTION_CLIENT_SUBNET {
            parse_client_subnet(ctx, option_off + edns::OPTION_HLEN, len, scratch)?;
        } else if code == edns::OPTION_COOKIE {
            note_cookie(option_off + edns::OPTION_HLEN, len, scratch)?;
        } else if harmless(code) {
            note_harmless(code, len, scratch);
        } else {
            return Err(Verdict::UnsupportedEdns);
        }
        pos += edns::OPTION_HLEN + len;
    }
    if pos == rdlen {
        Ok(())
    } else if pos > rdlen {
        Err(Verdict::Malformed)
    } else {
        Err(Verdict::UnsupportedEdns) // more options than we walk
    }
}

/// Records where a COOKIE option's body is, for `cookie` (RFC 7873 §5.2.2: a client
/// cookie of 8 bytes, then a server cookie of 8 to 32; other lengths, or a second
/// option, are malformed and passed to the DNS server, which answers FORMERR).
#[inline(always)]
fn note_cookie(off: usize, len: usize, scratch: &mut Scratch) -> Result<(), Verdict> {
    let server_len = len.wrapping_sub(CLIENT_COOKIE_LEN);
    // SAFETY: a field of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    if unsafe { ptr::read_volatile(&scratch.cookie_len) } != 0
        || (len != CLIENT_COOKIE_LEN && !(MIN_SERVER_COOKIE_LEN..=MAX_SERVER_COOKIE_LEN).contains(&server_len))
    {
        return Err(Verdict::Malformed);
    }
    // SAFETY: fields of `scratch`, the valid, aligned &mut Scratch of this CPU (map value).
    unsafe {
        ptr::write_volatile(&mut scratch.cookie_off, off as u32);
        ptr::write_volatile(&mut scratch.cookie_len, len as u32);
    }
    Ok(())
}

/// PADDING (RFC 7830, skipped) or NSID (RFC 5001, noted by `note_harmless`): computed
/// without comparing `code` to each, since a comparison leaves the verifier a
/// register with an exact value per outcome, and the walk's next turns run once for
/// each.
#[inline(always)]
fn harmless(code: u16) -> bool {
    const HARMLESS: u64 = (1 << edns::OPTION_PADDING) | (1 << edns::OPTION_NSID);
    let code = code as u64;
    // 1 when code < 64: (code >> 6) - 1 wraps to the top bit only from 0.
    let small = (code >> 6).wrapping_sub(1) >> 63;
    (HARMLESS >> (code & 63)) & 1 & small != 0
}

const _: () = assert!(edns::OPTION_PADDING & 1 == 0 && edns::OPTION_NSID & 1 == 1);

/// Notes a harmless option's length in `harmless_options[code & 1]`: NSID (3) lands
/// in slot 1, PADDING (12) in slot 0, ORed in as `len | HARMLESS_SEEN` (no branch: a
/// branch here would split the walk's states); a non-empty one leaves its mark.
/// `check_nsid` and `reply` read the NSID slot (RFC 5001 §2.2: an empty request asks
/// for the id; §2.3: anything else is malformed).
#[inline(always)]
fn note_harmless(code: u16, len: usize, scratch: &mut Scratch) {
    let slot = (code & 1) as usize;
    // SAFETY: an element (index 0 or 1) of `scratch.harmless_options`, a [u32; 2] in the valid,
    // aligned &mut Scratch of this CPU (map value).
    unsafe {
        let seen = ptr::read_volatile(&scratch.harmless_options[slot]);
        // ORed, so that an empty NSID option after a non-empty one hides nothing.
        ptr::write_volatile(&mut scratch.harmless_options[slot], seen | len as u32 | HARMLESS_SEEN);
    }
}

/// Right after parsing: a query with an NSID option is passed now, before rate
/// limiting or cookies spend anything on it, when the request has data (RFC 5001
/// §2.3, malformed) or `server.nsid` is unset (the DNS server answers with its id).
#[inline(always)]
pub fn check_nsid(scratch: &Scratch) -> Result<(), Verdict> {
    // SAFETY: a field of `scratch`, the valid, aligned &Scratch of this CPU (map value).
    let seen = unsafe { ptr::read_volatile(&scratch.harmless_options[1]) };
    if seen == 0 {
        return Ok(());
    }
    if seen & 0xffff != 0 {
        return Err(Verdict::Malformed);
    }
    match NSID.get(0) {
        Some(nsid) if nsid.option_len != 0 => Ok(()),
        _ => Err(Verdict::UnsupportedEdns),
    }
}

/// Bytes of an ECS address with `source_len` prefix bits (RFC 7871 §6: no more).
#[inline(always)]
pub fn ecs_address_len(source_len: u8) -> usize {
    (source_len as usize + 7) / 8
}

/// Parses an ECS option body (`len` bytes at `off`) into scratch.
#[inline(always)]
fn parse_client_subnet(ctx: &XdpContext, off: usize, len: usize, scratch: &mut Scratch) -> Result<(), Verdict> {
    let head = bytes_at(ctx, off, edns::ECS_HLEN, Verdict::Malformed)?;
    let family = EcsFamily::from_wire(be16(head)).ok_or(Verdict::UnsupportedEdns)?;
    // SAFETY: byte 2 of the ECS_HLEN (4) bytes checked for `head` by `bytes_at` above.
    let source_len = unsafe { *head.add(2) };
    // SAFETY: byte 3 of the ECS_HLEN (4) bytes checked for `head` above.
    let scope_len = unsafe { *head.add(3) };
    // RFC 7871 §7.1.1: a second option, a scope in a query or a wrong length is FORMERR.
    let address_len = ecs_address_len(source_len);
    if scratch.ecs.present != 0
        || scope_len != 0
        || source_len > family.max_prefix()
        || len != edns::ECS_HLEN + address_len
    {
        return Err(Verdict::Malformed);
    }
    scratch.ecs.address = [0; 16];
    if address_len > 0 {
        // 1..=16 (source_len is at most 128), in a form the verifier can see.
        let n = ((address_len - 1) & 15) + 1;
        // SAFETY: the helper writes `n` (1..=16) bytes into scratch.ecs.address, a [u8; 16], and checks
        // the packet offset and length itself; `ctx.ctx` is the xdp_md the kernel passed.
        let loaded = unsafe {
            bpf_xdp_load_bytes(
                ctx.ctx,
                (off + edns::ECS_HLEN) as u32,
                scratch.ecs.address.as_mut_ptr() as *mut _,
                n as u32,
            )
        };
        if loaded != 0 {
            return Err(Verdict::Malformed);
        }
        // RFC 7871 §6: address bits beyond SOURCE PREFIX-LENGTH must be zero; a query
        // with any set is FORMERR, PowerDNS's to answer.
        let last = scratch.ecs.address[(n - 1) & 15];
        if edns::ecs_stray_bits(last, source_len) {
            return Err(Verdict::Malformed);
        }
    }
    scratch.ecs.family = family as u16;
    scratch.ecs.source_len = source_len;
    scratch.ecs.scope_len = 0;
    scratch.ecs.present = 1;
    Ok(())
}

/// Wire length of the ECS option a reply echoes (header and body).
#[inline(always)]
pub fn reply_ecs_len(ecs: &ClientSubnet) -> usize {
    if ecs.present != 0 {
        edns::OPTION_HLEN + edns::ECS_HLEN + ecs_address_len(ecs.source_len)
    } else {
        0
    }
}

/// Writes the ECS option of a reply at `off`; returns its one's-complement sum as it
/// sits 11 bytes (an odd count) after the start of the OPT record.
#[inline(always)]
pub fn write_client_subnet(ctx: &XdpContext, off: usize, ecs: &ClientSubnet) -> Result<u64, Verdict> {
    let address_len = ecs_address_len(ecs.source_len);
    let head = bytes_at(ctx, off, edns::OPTION_HLEN + edns::ECS_HLEN, Verdict::Malformed)?;
    let words = [
        edns::OPTION_CLIENT_SUBNET,
        (edns::ECS_HLEN + address_len) as u16,
        ecs.family,
        ((ecs.source_len as u16) << 8) | ecs.scope_len as u16,
    ];
    let mut sum = 0u64;
    for (i, word) in words.iter().enumerate() {
        // SAFETY: i < 4: bytes 2i..2i+2 of the 8 (OPTION_HLEN + ECS_HLEN) checked for `head` above.
        put_be16(unsafe { head.add(2 * i) }, *word);
        sum += *word as u64;
    }
    if address_len > 0 {
        let n = ((address_len - 1) & 15) + 1;
        // SAFETY: the helper reads `n` (1..=16) bytes of `ecs.address`, a [u8; 16] (never written
        // through the *mut), and checks the packet range itself.
        let stored = unsafe {
            bpf_xdp_store_bytes(
                ctx.ctx,
                (off + edns::OPTION_HLEN + edns::ECS_HLEN) as u32,
                ecs.address.as_ptr() as *mut _,
                n as u32,
            )
        };
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
    Ok(csum::fold(sum).swap_bytes() as u64)
}
