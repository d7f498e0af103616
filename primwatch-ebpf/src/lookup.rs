//! Stage 2: the client's view (longest source prefix, or the EDNS Client Subnet), then
//! the name's entry: exact name in the view, else in the default view; failing both,
//! the wildcard one label up (`*.parent`), in the same order. A hash match alone is
//! never enough: the stored name must equal the one looked for.

use aya_ebpf::{btf_maps::lpm_trie::Key, helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use core::ptr;
use primwatch_common::{
    min_u32, sticky_key_words,
    wire::{dns, ipv4, ipv6, udp, EcsFamily},
    NameEntry, NameKey, Scratch, Verdict, MAX_NAME_LEN, NAME_BUF_LEN,
};

use crate::{
    maps::{settings, NAMES, VIEWS_V4, VIEWS_V6},
    packet::bytes_at,
    parse::{lower_hash_sum, Query},
};

/// The view every name has; a client in no configured view is in it.
const DEFAULT_VIEW: u32 = 0;

/// The entry that answers `query`, or why there is none.
#[inline(always)]
pub fn lookup(ctx: &XdpContext, query: &Query, scratch: &mut Scratch) -> Result<&'static NameEntry, Verdict> {
    sticky_client(ctx, query, scratch)?;
    let view = client_view(ctx, query, scratch)?;
    if let Some(records) = find(query.name_hash, view, &scratch.name, query.name_len) {
        return Ok(records);
    }
    if !settings().is_some_and(|s| s.wildcard_names > 0) {
        return Err(Verdict::NameNotFound);
    }
    // "*" and the name without its first label, read from the packet once more.
    let first_label = (scratch.name[0] as usize) & dns::MAX_LABEL_LEN;
    let rest = query.name_len.wrapping_sub(1 + first_label) & MAX_NAME_LEN;
    if rest == 0 || rest > MAX_NAME_LEN - 2 {
        return Err(Verdict::NameNotFound);
    }
    let name_off = query.l4_off + udp::HLEN + dns::HLEN + 1 + first_label;
    let wild = scratch.wildcard.as_mut_ptr();
    // SAFETY: `wild` is scratch.wildcard, NAME_BUF_LEN + 8 = 264 bytes; `rest` is 1..=253 (checked
    // above), so bytes 0 and 1, the helper's `rest` bytes from `wild + 2` and the zero word at
    // `wild + 2 + rest` (ending by byte 263) are inside it. The helper checks `name_off` and
    // `rest` against the packet itself; `ctx.ctx` is the xdp_md the kernel passed.
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

/// The sticky policy's client key (`Scratch::client_key`), when a set is sticky: the
/// query's EDNS Client Subnet cut to the shorter of its source length and the sticky
/// length, else its source address cut to the sticky length, hashed by
/// `primwatch_common::sticky_key_words` as the PowerDNS backend hashes it.
///
/// Chosen by masks rather than branches, and a BPF-to-BPF call: the verifier walks
/// it once for every path that reaches a lookup, so its branches would multiply.
#[inline(always)]
fn sticky_client(ctx: &XdpContext, query: &Query, scratch: &mut Scratch) -> Result<(), Verdict> {
    // Without sticky sets the lengths are 0 and the key one constant: computed anyway,
    // since a branch here would be walked once more for every path.
    let (v4_len, v6_len) = settings().map_or((0, 0), |s| (s.sticky_prefix_v4, s.sticky_prefix_v6));
    let word = |bytes: *const u8| {
        // SAFETY: callers pass 8 readable bytes (checked packet bytes or scratch's ECS address).
        u64::from_be(unsafe { ptr::read_unaligned(bytes as *const u64) })
    };
    // The source address (the verifier knows the family on each path).
    let (src_hi, src_lo, src_v6, src_len) = if query.is_ipv6 {
        let src = bytes_at(ctx, query.l3_off + ipv6::SRC_OFF, ipv6::ADDR_LEN, Verdict::Malformed)?;
        // SAFETY: `src` has the ipv6::ADDR_LEN (16) bytes `bytes_at` checked just above.
        let lo = word(unsafe { src.add(8) });
        (word(src), lo, 1u64, v6_len)
    } else {
        let src = bytes_at(ctx, query.l3_off + ipv4::SRC_OFF, ipv4::ADDR_LEN, Verdict::Malformed)?;
        // SAFETY: `src` has the ipv4::ADDR_LEN bytes `bytes_at` checked just above; read_unaligned needs no alignment.
        let v4 = u32::from_be(unsafe { ptr::read_unaligned(src as *const u32) });
        ((v4 as u64) << 32, 0, 0u64, v4_len)
    };
    // The ECS subnet decides when the query has one with a source length (RFC 7871
    // §7.1.2). The parser left family 1 or 2 and a source length within the family's.
    let ecs = &scratch.ecs;
    let address = ecs.address.as_ptr();
    // SAFETY: `address` is the 16-byte ECS address: bytes 8..16 are inside it.
    let (ecs_hi, ecs_lo) = (word(address), word(unsafe { address.add(8) }));
    let ecs_v6 = (ecs.family as u64).wrapping_sub(1) & 1;
    let ecs_sticky = v4_len + (v6_len.wrapping_sub(v4_len) & 0u32.wrapping_sub(ecs_v6 as u32));
    let ecs_len = min_u32(ecs.source_len as u32, ecs_sticky);
    let use_ecs = (ecs.present as u64 & 1) & ((ecs.source_len as u64 + 255) >> 8);
    let (take, keep) = (0u64.wrapping_sub(use_ecs), use_ecs.wrapping_sub(1));
    let hi = (ecs_hi & take) | (src_hi & keep);
    let lo = (ecs_lo & take) | (src_lo & keep);
    let is_v6 = (ecs_v6 & take) | (src_v6 & keep);
    let len = (ecs_len & take as u32) | (src_len & keep as u32);
    scratch.client_key = sticky_key_words(hi, lo, is_v6, len);
    scratch.client_key_len = len;
    Ok(())
}

/// The client's view: the longest configured prefix containing its EDNS Client Subnet
/// (when the query has one with a non-zero source length; /0 opts out, RFC 7871 §7.1.2)
/// or else its source address. Records the scope an ECS reply claims.
#[inline(always)]
fn client_view(ctx: &XdpContext, query: &Query, scratch: &mut Scratch) -> Result<u32, Verdict> {
    if !settings().is_some_and(|s| s.view_prefixes > 0) {
        return Ok(DEFAULT_VIEW); // the answer is the same for every client: scope 0
    }
    let ecs = &mut scratch.ecs;
    let found = if ecs.present != 0 && ecs.source_len > 0 {
        // The subnet's address (zero beyond the source prefix) looked up in full: a
        // view prefix longer than the source prefix may decide (RFC 7871 §7.2.1), and
        // the scope then says so.
        let is_v6 = ecs.family == EcsFamily::Ipv6 as u16;
        let found = if is_v6 {
            VIEWS_V6.get(&Key::new(8 * ipv6::ADDR_LEN as u32, ecs.address)).copied()
        } else {
            let a = ecs.address;
            VIEWS_V4.get(&Key::new(8 * ipv4::ADDR_LEN as u32, [a[0], a[1], a[2], a[3]])).copied()
        };
        let without_view =
            settings().map_or(0, |s| if is_v6 { s.scope_without_view_v6 } else { s.scope_without_view_v4 });
        ecs.scope_len = found.map_or(without_view, |m| m.prefix_len) as u8;
        found
    } else if query.is_ipv6 {
        let src = bytes_at(ctx, query.l3_off + ipv6::SRC_OFF, ipv6::ADDR_LEN, Verdict::Malformed)?;
        // SAFETY: `src` has the ipv6::ADDR_LEN bytes `bytes_at` checked just above; read_unaligned needs no alignment.
        let address = unsafe { ptr::read_unaligned(src as *const [u8; ipv6::ADDR_LEN]) };
        VIEWS_V6.get(&Key::new(8 * ipv6::ADDR_LEN as u32, address)).copied()
    } else {
        let src = bytes_at(ctx, query.l3_off + ipv4::SRC_OFF, ipv4::ADDR_LEN, Verdict::Malformed)?;
        // SAFETY: `src` has the ipv4::ADDR_LEN bytes `bytes_at` checked just above; read_unaligned needs no alignment.
        let address = unsafe { ptr::read_unaligned(src as *const [u8; ipv4::ADDR_LEN]) };
        VIEWS_V4.get(&Key::new(8 * ipv4::ADDR_LEN as u32, address)).copied()
    };
    Ok(found.map_or(DEFAULT_VIEW, |m| m.view))
}

/// The entry for a lowercased wire name (`len` bytes of `name`, zero-padded) in
/// `view`, else in the default view.
#[inline(always)]
fn find(hash: u64, view: u32, name: &[u8; NAME_BUF_LEN + 8], len: usize) -> Option<&'static NameEntry> {
    let mut entry = NAMES.get_ptr(&NameKey::new(hash, view));
    if entry.is_none() && view != DEFAULT_VIEW {
        entry = NAMES.get_ptr(&NameKey::new(hash, DEFAULT_VIEW));
    }
    // SAFETY: non-null (`?`) from `get_ptr`: a NAMES value, kept alive by the kernel (RCU) while the
    // program runs; only read.
    let records = unsafe { &*entry? };
    same_name(name, len, &records.name, records.name_len as usize).then_some(records)
}

/// Whether `ours` (`len` bytes of a lowercased wire name, zero-padded) is the name
/// stored in a map entry (`theirs`, `their_len` bytes, zero-padded): compared a word
/// at a time, in full.
#[inline(always)]
pub fn same_name(ours: &[u8; NAME_BUF_LEN + 8], len: usize, theirs: &[u8; NAME_BUF_LEN], their_len: usize) -> bool {
    if their_len != len {
        return false;
    }
    let words = (len + 7) / 8;
    let ours = ours.as_ptr() as *const u64;
    let theirs = theirs.as_ptr() as *const u64;
    for w in 0..NAME_BUF_LEN / 8 {
        if w >= words {
            break;
        }
        // SAFETY: w < min((len + 7) / 8, 32): both words lie in the 256 bytes of `theirs` (264 of `ours`).
        // Both are 8-aligned: `ours` is scratch.name or scratch.wildcard (offsets 0 and 264 of the
        // 8-aligned Scratch), `theirs` the `name` at offset 24 of a NAMES or ZONE_NAMES value
        // (the kernel 8-aligns map values).
        if unsafe { *ours.add(w) != *theirs.add(w) } {
            return false;
        }
    }
    true
}
