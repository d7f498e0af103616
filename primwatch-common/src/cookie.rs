//! DNS server cookies (RFC 7873) made the interoperable way of RFC 9018: a server
//! cookie is version (1), three reserved bytes, a timestamp (Unix seconds, 32 bits,
//! big-endian) and an 8-byte hash, SipHash-2-4 keyed with the server secret over
//!
//! ```text
//! client cookie (8) | version (1) | reserved (3) | timestamp (4) | client address (4 or 16)
//! ```
//!
//! The XDP program verifies and creates them; the controller owns the secrets.

/// Length of a client cookie (RFC 7873 §4.1).
pub const CLIENT_COOKIE_LEN: usize = 8;
/// Server cookie lengths a COOKIE option may carry (RFC 7873 §4.2); other lengths make
/// the option malformed.
pub const MIN_SERVER_COOKIE_LEN: usize = 8;
pub const MAX_SERVER_COOKIE_LEN: usize = 32;
/// An RFC 9018 server cookie: version, reserved, timestamp, hash.
pub const SERVER_COOKIE_LEN: usize = 16;
/// The version byte of an RFC 9018 server cookie.
pub const SERVER_COOKIE_VERSION: u8 = 1;
/// A server cookie is valid for an hour after its timestamp and up to five minutes
/// before it (clock skew between the servers of an anycast set), RFC 9018 §4.3 …
pub const COOKIE_LIFETIME_SECONDS: u32 = 3600;
pub const COOKIE_CLOCK_SKEW_SECONDS: u32 = 300;
/// … and is replaced by a fresh one once it is half an hour old.
pub const COOKIE_RENEW_AFTER_SECONDS: u32 = 1800;

/// Hash input in 8-byte words read little-endian (SipHash's byte order): client
/// cookie, version/reserved/timestamp, then the client address from word 2, zero past
/// its end. The fifth word is always zero and ends a 32-byte (IPv6) message.
pub const COOKIE_MSG_WORDS: usize = 5;
/// Hash input lengths in bytes: 16 + an IPv4 or IPv6 address.
pub const COOKIE_MSG_LEN_V4: usize = 20;
pub const COOKIE_MSG_LEN_V6: usize = 32;

/// The COOKIE option of a reply: option code and length, client cookie, server cookie.
pub const REPLY_COOKIE_OPTION_LEN: usize = 4 + CLIENT_COOKIE_LEN + SERVER_COOKIE_LEN;

/// A server secret as SipHash's two key words (its 16 bytes read little-endian).
pub type CookieSecret = [u64; 2];

/// The key words of a 16-byte secret.
pub const fn secret_from_bytes(bytes: [u8; 16]) -> CookieSecret {
    let mut k = [0u64; 2];
    let mut i = 0;
    while i < 16 {
        k[i / 8] |= (bytes[i] as u64) << (8 * (i % 8));
        i += 1;
    }
    k
}

#[inline(always)]
const fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 (Aumasson and Bernstein, 2012) of the first `len` bytes of `msg`
/// (`len` ≤ 32; bytes past `len` must be zero, so the last block needs no mask).
/// Called with a constant `len`, it compiles to straight-line code.
#[inline(always)]
pub const fn siphash24(key: &CookieSecret, msg: &[u64; COOKIE_MSG_WORDS], len: usize) -> u64 {
    let mut v = [
        key[0] ^ 0x736f_6d65_7073_6575,
        key[1] ^ 0x646f_7261_6e64_6f6d,
        key[0] ^ 0x6c79_6765_6e65_7261,
        key[1] ^ 0x7465_6462_7974_6573,
    ];
    let full = len / 8;
    let mut i = 0;
    while i < full {
        v[3] ^= msg[i];
        sip_round(&mut v);
        sip_round(&mut v);
        v[0] ^= msg[i];
        i += 1;
    }
    let last = msg[full] | ((len as u64) << 56);
    v[3] ^= last;
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^= last;
    v[2] ^= 0xff;
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    sip_round(&mut v);
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// Whether a server cookie stamped `timestamp` is within its lifetime at `now` (both
/// Unix seconds, compared modulo 2^32 as RFC 9018 §4.3 asks).
#[inline(always)]
pub const fn cookie_fresh(timestamp: u32, now: u32) -> bool {
    let age = now.wrapping_sub(timestamp);
    age <= COOKIE_LIFETIME_SECONDS || age.wrapping_neg() <= COOKIE_CLOCK_SKEW_SECONDS
}

/// Whether a fresh server cookie is old enough to be replaced in the reply.
#[inline(always)]
pub const fn cookie_worn(timestamp: u32, now: u32) -> bool {
    let age = now.wrapping_sub(timestamp);
    age > COOKIE_RENEW_AFTER_SECONDS && age <= COOKIE_LIFETIME_SECONDS
}

/// The single entry of the `cookie_settings` array; the secrets are in the two-entry
/// `cookie_secrets` array.
///
/// Rotation without a torn read: the controller writes the new secret into the slot
/// that is not `current`, then flips `current`. Cookies are made with the current
/// secret only and verified with either, so the slot being overwritten only ever holds
/// the secret being retired.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CookieSettings {
    /// 0: cookies are not answered (a COOKIE option is ignored, as RFC 7873 §5.2 lets
    /// a server that does not do cookies).
    pub enabled: u32,
    /// The slot of `cookie_secrets` cookies are made with (0 or 1).
    pub current: u32,
    /// Unix time minus the program's clock (`bpf_ktime_get_coarse_ns`,
    /// CLOCK_MONOTONIC_COARSE), in nanoseconds; the controller keeps it current.
    pub clock_offset_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SipHash paper's Appendix A vector: key 00..0f, message 00..0e (15 bytes).
    #[test]
    fn siphash24_matches_the_reference_vector() {
        let key = secret_from_bytes(core::array::from_fn(|i| i as u8));
        let mut bytes = [0u8; 40];
        for (i, b) in bytes.iter_mut().take(15).enumerate() {
            *b = i as u8;
        }
        let msg: [u64; COOKIE_MSG_WORDS] =
            core::array::from_fn(|w| u64::from_le_bytes(bytes[8 * w..8 * w + 8].try_into().unwrap()));
        assert_eq!(siphash24(&key, &msg, 15), 0xa129_ca61_49be_45e5);
    }

    fn hex<const N: usize>(s: &str) -> [u8; N] {
        core::array::from_fn(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
    }

    /// The server cookie of RFC 9018 Appendix A for a client cookie, a 4- or 16-byte
    /// client address, version 1, reserved 0 and a timestamp.
    fn server_cookie(secret: &str, client: &str, address: &[u8], timestamp: u32) -> [u8; 16] {
        let mut bytes = [0u8; 40];
        bytes[..8].copy_from_slice(&hex::<8>(client));
        bytes[8] = SERVER_COOKIE_VERSION;
        bytes[12..16].copy_from_slice(&timestamp.to_be_bytes());
        bytes[16..16 + address.len()].copy_from_slice(address);
        let msg: [u64; COOKIE_MSG_WORDS] =
            core::array::from_fn(|w| u64::from_le_bytes(bytes[8 * w..8 * w + 8].try_into().unwrap()));
        let hash = siphash24(&secret_from_bytes(hex::<16>(secret)), &msg, 16 + address.len());
        let mut cookie = [0u8; 16];
        cookie[..8].copy_from_slice(&bytes[8..16]);
        cookie[8..].copy_from_slice(&hash.to_le_bytes());
        cookie
    }

    #[test]
    fn server_cookies_match_rfc_9018_appendix_a() {
        let v4 = [198, 51, 100, 100];
        let secret = "e5e973e5a6b2a43f48e7dc849e37bfcf";
        assert_eq!(server_cookie(secret, "2464c4abcf10c957", &v4, 1559731985), hex("010000005cf79f111f8130c3eee29480"));
        assert_eq!(server_cookie(secret, "2464c4abcf10c957", &v4, 1559734385), hex("010000005cf7a871d4a564a1442aca77"));
        let v4 = [203, 0, 113, 203];
        assert_eq!(server_cookie(secret, "fc93fc62807ddb86", &v4, 1559734700), hex("010000005cf7a9acf73a7810aca2381e"));
        let v6 = hex::<16>("20010db80220000159ded0f4876982b8");
        let (old, new) = ("dd3bdf9344b678b185a6f5cb60fca715", "445536bcd2513298075a5d379663c962");
        assert_eq!(server_cookie(old, "22681ab97d52c298", &v6, 1559741817), hex("010000005cf7c57926556bd0934c72f8"));
        assert_eq!(server_cookie(new, "22681ab97d52c298", &v6, 1559741961), hex("010000005cf7c609a6bb79d16625507a"));
    }

    #[test]
    fn freshness_is_an_hour_back_and_five_minutes_ahead_modulo_2_32() {
        let now = 1_559_731_985;
        assert!(cookie_fresh(now, now));
        assert!(cookie_fresh(now - 3600, now));
        assert!(!cookie_fresh(now - 3601, now));
        assert!(cookie_fresh(now + 300, now));
        assert!(!cookie_fresh(now + 301, now));
        assert!(cookie_fresh(u32::MAX - 100, 1000), "an hour old across the wrap");
        assert!(!cookie_worn(now - 1800, now));
        assert!(cookie_worn(now - 1801, now));
        assert!(!cookie_worn(now + 10, now));
    }
}
