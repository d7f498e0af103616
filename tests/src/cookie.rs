//! An RFC 9018 server cookie oracle, written apart from primwatch's (SipHash-2-4 from
//! the `siphasher` crate, the message assembled from bytes): what the XDP program's
//! COOKIE option must hold, checked against RFC 9018 Appendix A in `xdp_cookies.rs`.

use std::{hash::Hasher, net::IpAddr};

use siphasher::sip::SipHasher24;

/// A server cookie: version 1, the reserved bytes, the timestamp and the hash over
/// client cookie | version | reserved | timestamp | client address, keyed by `secret`.
pub fn server_cookie(secret: &[u8; 16], client: &[u8; 8], reserved: [u8; 3], timestamp: u32, ip: IpAddr) -> [u8; 16] {
    let mut head = [0u8; 8];
    head[0] = 1;
    head[1..4].copy_from_slice(&reserved);
    head[4..].copy_from_slice(&timestamp.to_be_bytes());
    let mut cookie = [0u8; 16];
    cookie[..8].copy_from_slice(&head);
    cookie[8..].copy_from_slice(&hash(secret, client, &head, ip));
    cookie
}

fn hash(secret: &[u8; 16], client: &[u8; 8], head: &[u8; 8], ip: IpAddr) -> [u8; 8] {
    let mut h = SipHasher24::new_with_key(secret);
    h.write(client);
    h.write(head);
    match ip {
        IpAddr::V4(a) => h.write(&a.octets()),
        IpAddr::V6(a) => h.write(&a.octets()),
    }
    h.finish().to_le_bytes()
}

/// What a server holding `current` and `previous` makes of `presented` (a server
/// cookie or nothing) from `ip` at `now`, and the server cookie its reply carries
/// (RFC 7873 §5.2, RFC 9018 §4.3): a valid, fresh cookie made with the current secret
/// less than half an hour ago comes back as it is; anything else gets a new one.
pub fn expected(
    current: &[u8; 16],
    previous: &[u8; 16],
    client: &[u8; 8],
    presented: Option<&[u8]>,
    ip: IpAddr,
    now: u32,
) -> (Presented, [u8; 16]) {
    let fresh = server_cookie(current, client, [0; 3], now, ip);
    let Some(presented) = presented else { return (Presented::None, fresh) };
    if presented.len() != 16 || presented[0] != 1 {
        return (Presented::Bad, fresh);
    }
    let head: [u8; 8] = presented[..8].try_into().unwrap();
    let timestamp = u32::from_be_bytes(presented[4..8].try_into().unwrap());
    let age = now.wrapping_sub(timestamp);
    if age > 3600 && timestamp.wrapping_sub(now) > 300 {
        return (Presented::Bad, fresh);
    }
    if hash(current, client, &head, ip) == presented[8..] {
        if age > 1800 && age <= 3600 {
            (Presented::Verified, fresh)
        } else {
            (Presented::Verified, presented.try_into().unwrap())
        }
    } else if hash(previous, client, &head, ip) == presented[8..] {
        (Presented::Verified, fresh)
    } else {
        (Presented::Bad, fresh)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// A client cookie alone.
    None,
    Verified,
    Bad,
}

/// The COOKIE option of a DNS message's OPT record (code 10), as (client, server).
pub fn cookie_option(message: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let data = opt_option(message, 10)?;
    (data.len() >= 8).then(|| (data[..8].to_vec(), data[8..].to_vec()))
}

/// The data of the first option with `code` in a message's OPT record, read from the
/// wire (the records before it skipped by their lengths).
pub fn opt_option(message: &[u8], code: u16) -> Option<Vec<u8>> {
    opt_options(message, code).and_then(|all| all.into_iter().next())
}

/// The data of every option with `code` in a message's OPT record, in order (None: the
/// message does not parse that far).
pub fn opt_options(message: &[u8], code: u16) -> Option<Vec<Vec<u8>>> {
    let mut found = Vec::new();
    let be16 = |at: usize| Some(u16::from_be_bytes([*message.get(at)?, *message.get(at + 1)?]));
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let len = *message.get(at)? as usize;
            if len == 0 {
                return Some(at + 1);
            }
            if len >= 0xc0 {
                return Some(at + 2);
            }
            at += 1 + len;
        }
    };
    let (qd, an, ns, ar) = (be16(4)?, be16(6)?, be16(8)?, be16(10)?);
    let mut at = 12;
    for _ in 0..qd {
        at = skip_name(at)? + 4;
    }
    for _ in 0..an + ns + ar {
        let name_end = skip_name(at)?;
        let rtype = be16(name_end)?;
        let rdlen = be16(name_end + 8)? as usize;
        let rdata = name_end + 10;
        if rtype == 41 {
            let mut o = rdata;
            while o + 4 <= rdata + rdlen {
                let (c, len) = (be16(o)?, be16(o + 2)? as usize);
                if c == code {
                    found.push(message.get(o + 4..o + 4 + len)?.to_vec());
                }
                o += 4 + len;
            }
        }
        at = rdata + rdlen;
    }
    Some(found)
}

/// A DNS cookie secret shared by primwatch and PowerDNS, set up as the package does:
/// `primwatch cookie-secret DIR/cookie-secret.conf`, linked into `DIR/pdns.d`. Returns
/// the secret file (for `[cookies] secret_file`) and the pdns.conf line that has
/// PowerDNS read it (`include-dir=DIR/pdns.d`).
pub fn shared_secret(dir: &std::path::Path) -> anyhow::Result<(std::path::PathBuf, String)> {
    let secret = dir.join("cookie-secret.conf");
    let made = std::process::Command::new(crate::controller::binary()).arg("cookie-secret").arg(&secret).output()?;
    anyhow::ensure!(made.status.success(), "primwatch cookie-secret: {}", String::from_utf8_lossy(&made.stderr));
    let include_dir = dir.join("pdns.d");
    std::fs::create_dir(&include_dir)?;
    std::os::unix::fs::symlink(&secret, include_dir.join("primwatch-cookie-secret.conf"))?;
    Ok((secret, format!("include-dir={}\n", include_dir.display())))
}
