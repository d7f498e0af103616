//! The Internet checksum (RFC 1071) as the XDP program and the controller compute it:
//! sums of 16-bit words kept in a u64 (no carries lost for any packet we handle), folded
//! at the end. Plain functions on integers and slices, so both sides share them and the
//! host tests them against a byte-by-byte oracle.

/// Folds a wide one's-complement sum into 16 bits (RFC 1071 §4.1). Four rounds carry
/// any u64 down to 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u64) -> u16 {
    let mut i = 0;
    while i < 4 {
        sum = (sum & 0xffff) + (sum >> 16);
        i += 1;
    }
    sum as u16
}

/// The checksum field for a folded sum: its complement, except that UDP sends a
/// computed 0 as 0xffff (RFC 768: 0 means "no checksum").
#[inline(always)]
pub const fn udp_checksum_field(folded: u16) -> u16 {
    match !folded {
        0 => 0xffff,
        c => c,
    }
}

/// Sum of the big-endian 16-bit words of `bytes`, an odd last byte padded with zero.
/// Not folded.
#[inline(always)]
pub fn sum_be_words(bytes: &[u8]) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i + 1 < bytes.len() {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u64;
        i += 2;
    }
    if i < bytes.len() {
        sum += (bytes[i] as u64) << 8;
    }
    sum
}

/// A folded sum computed over bytes that start at an odd offset of the checksummed
/// data: the one's-complement sum of byte-swapped words is the byte-swapped sum.
///
/// Branch-free: in BPF a branch on `offset` would split the verifier's state of the
/// offset's register for the rest of the program.
#[inline(always)]
pub const fn at_offset(folded: u16, offset: usize) -> u16 {
    let shift = ((offset & 1) * 8) as u32;
    let wide = folded as u32;
    ((wide << shift) | (wide >> shift)) as u16
}

/// RFC 1624 eqn. 3: the checksum field after one 16-bit word of the covered data
/// changed from `old` to `new`.
#[inline(always)]
pub const fn update16(check: u16, old: u16, new: u16) -> u16 {
    !fold((!check) as u64 + (!old) as u64 + new as u64)
}

/// The pseudo-header's protocol and length words (RFC 768, RFC 8200 §8.1); the
/// addresses are summed by the caller.
#[inline(always)]
pub const fn pseudo_header_rest(protocol: u8, udp_len: usize) -> u64 {
    protocol as u64 + udp_len as u64
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// The oracle: RFC 1071 §4.1's loop, byte pairs added into a u32 with end-around carry.
    fn rfc1071(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let word = ((pair[0] as u32) << 8) | *pair.get(1).unwrap_or(&0) as u32;
            sum += word;
            if sum > 0xffff {
                sum = (sum & 0xffff) + 1;
            }
        }
        sum as u16
    }

    fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn matches_the_rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to 0xddf2.
        assert_eq!(fold(sum_be_words(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
    }

    #[test]
    fn wide_sums_fold_like_the_byte_loop() {
        for len in 0..300 {
            let bytes = pseudo_random(len as u64 + 7, len);
            assert_eq!(fold(sum_be_words(&bytes)), rfc1071(&bytes), "len {len}");
        }
        // All ones: the largest sums, where a missed carry would show.
        let ones = [0xffu8; 4096];
        assert_eq!(fold(sum_be_words(&ones)), rfc1071(&ones));
    }

    #[test]
    fn split_sums_combine_at_any_offset() {
        for len in 2..200 {
            let bytes = pseudo_random(len as u64, len);
            for cut in 0..len {
                let (head, tail) = bytes.split_at(cut);
                let combined = fold(sum_be_words(head) + at_offset(fold(sum_be_words(tail)), cut) as u64);
                assert_eq!(combined, rfc1071(&bytes), "len {len} cut {cut}");
            }
        }
    }

    #[test]
    fn incremental_update_equals_recomputation() {
        for seed in 0..500u64 {
            let mut bytes = pseudo_random(seed, 20);
            bytes[10] = 0;
            bytes[11] = 0;
            let check = !rfc1071(&bytes);
            bytes[10..12].copy_from_slice(&check.to_be_bytes());
            assert_eq!(rfc1071(&bytes), 0xffff, "a correct header sums to all ones");
            let word = (seed as usize % 5) * 2;
            let old = u16::from_be_bytes([bytes[word], bytes[word + 1]]);
            let new = (seed as u16).wrapping_mul(40503);
            bytes[word..word + 2].copy_from_slice(&new.to_be_bytes());
            let updated = update16(check, old, new);
            bytes[10..12].copy_from_slice(&updated.to_be_bytes());
            assert_eq!(rfc1071(&bytes), 0xffff, "seed {seed}");
        }
    }

    #[test]
    fn at_offset_swaps_only_odd_offsets() {
        for offset in 0..8 {
            let expected = if offset % 2 == 1 { 0x3412 } else { 0x1234 };
            assert_eq!(at_offset(0x1234, offset), expected);
        }
    }

    #[test]
    fn udp_never_sends_a_zero_checksum() {
        assert_eq!(udp_checksum_field(0xffff), 0xffff);
        assert_eq!(udp_checksum_field(0x1234), !0x1234);
    }
}
