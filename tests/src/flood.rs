//! Spoofed floods for the netns lab: prebuilt UDP query frames from random client
//! prefixes (valid checksums, so XDP and the kernel take them as real queries), sent
//! from an AF_PACKET socket on the client veth with sendmmsg for a bounded time.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    packet::{udp_frame, Flow},
    raw::PacketSocket,
    XorShift,
};

/// `count` frames like `template`, each from a random address of a random /24 of
/// 11.0.0.0/8 (or, with `one_prefix`, of 12.0.0.0/24), carrying `query(rng)`'s bytes.
pub fn spoofed_frames(
    template: &Flow,
    count: usize,
    one_prefix: bool,
    rng: &mut XorShift,
    mut query: impl FnMut(&mut XorShift) -> Vec<u8>,
) -> Vec<Vec<u8>> {
    (0..count)
        .map(|_| {
            let b = rng.next_u64().to_le_bytes();
            let src = if one_prefix {
                Ipv4Addr::new(12, 0, 0, 1 + b[3] % 250)
            } else {
                Ipv4Addr::new(11, b[1], b[2], 1 + b[3] % 250)
            };
            let payload = query(rng);
            udp_frame(&Flow { src: src.into(), ..*template }, 64, &payload)
        })
        .collect()
}

/// A random label of `len` letters and digits (a random-subdomain flood's names).
pub fn random_label(rng: &mut XorShift, len: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..len).map(|_| CHARS[(rng.next_u64() % CHARS.len() as u64) as usize] as char).collect()
}

/// Sends `frames` over and over from `sock` for `duration`; returns the frames sent and
/// the seconds it took.
pub fn send_for(sock: &PacketSocket, frames: &[Vec<u8>], duration: Duration) -> Result<(usize, f64)> {
    let start = Instant::now();
    let deadline = start + duration;
    let mut sent = 0usize;
    while Instant::now() < deadline {
        for chunk in frames.chunks(64) {
            sent += sock.send_batch(chunk)?;
        }
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}
