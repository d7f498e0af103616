//! Stage 3: which of a set's pre-rendered records this reply carries. The controller
//! rendered every rotation contiguously with its checksum, so a pick is a start index.

use aya_ebpf::helpers::generated::bpf_get_prandom_u32;
use primwatch_common::{start_record, AnswerSet, Scratch, Select, Verdict, AAAA_RR_LEN, MAX_RECORDS, RRS_BUF_LEN};

/// The records of one reply: where they start in `AnswerSet::rrs`, how many bytes,
/// how many records and their checksum.
pub struct Picked {
    /// The first record, counted in records; 0 when the reply carries the whole set
    /// (the RRset is then the same whatever the rotation).
    pub start: u32,
    pub offset: usize,
    pub len: usize,
    pub ancount: u16,
    pub csum: u16,
}

/// Picks the start record by the set's selection mode.
#[inline(always)]
pub fn pick_records(set: &AnswerSet, scratch: &mut Scratch) -> Result<Picked, Verdict> {
    let select = Select::from_u8(set.select);
    if select == Some(Select::NoData) {
        return Ok(Picked { start: 0, offset: 0, len: 0, ancount: 0, csum: 0 });
    }
    let count = set.count as u32;
    let rr_len = set.rr_len as usize;
    let answers = set.answers as usize;
    if count == 0 || count > MAX_RECORDS as u32 || answers == 0 || answers > count as usize || rr_len > AAAA_RR_LEN {
        return Err(Verdict::TypeNotPresent);
    }
    let client_key = scratch.client_key;
    if select == Some(Select::Sticky) && scratch.ecs.present != 0 {
        // The answer depends on the client's prefix at the sticky length: a resolver
        // may reuse it for that prefix only (RFC 7871 §7.2.1).
        scratch.ecs.scope_len = scratch.ecs.scope_len.max(scratch.client_key_len as u8);
    }
    let turn = || {
        scratch.round_robin = scratch.round_robin.wrapping_add(1);
        scratch.round_robin
    };
    // SAFETY: bpf_get_prandom_u32 takes no arguments and touches no memory of ours.
    let random = || unsafe { bpf_get_prandom_u32() };
    let start = start_record(select, count, turn, random, client_key, &set.weighted_start) as usize & (MAX_RECORDS - 1);
    let offset = start * rr_len;
    let len = answers * rr_len;
    if offset + len > RRS_BUF_LEN {
        return Err(Verdict::Malformed);
    }
    let whole = (answers as u32 == count) as u32;
    Ok(Picked { start: start as u32 * (whole ^ 1), offset, len, ancount: answers as u16, csum: set.csums[start] })
}
