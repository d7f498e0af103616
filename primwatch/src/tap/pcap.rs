//! The classic pcap file format (as tcpdump and Wireshark read it): a 24-byte file
//! header, then per packet a 16-byte record header and the bytes captured. Microsecond
//! timestamps, Ethernet link type, little-endian (the magic number tells readers).

use std::{io::Write, time::SystemTime};

/// LINKTYPE_ETHERNET: XDP sees frames from their Ethernet header on.
const LINKTYPE_ETHERNET: u32 = 1;
/// The magic number of microsecond-resolution pcap, written in our byte order.
const MAGIC: u32 = 0xa1b2_c3d4;

/// Writes the file header; `snaplen` is the longest record's captured length.
pub fn write_header(out: &mut impl Write, snaplen: u32) -> std::io::Result<()> {
    let mut header = Vec::with_capacity(24);
    header.extend_from_slice(&MAGIC.to_le_bytes());
    header.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
    header.extend_from_slice(&4u16.to_le_bytes());
    header.extend_from_slice(&0i32.to_le_bytes()); // GMT offset
    header.extend_from_slice(&0u32.to_le_bytes()); // timestamp accuracy
    header.extend_from_slice(&snaplen.to_le_bytes());
    header.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
    out.write_all(&header)
}

/// Writes one record: `frame` (the bytes captured) of a frame `original_len` long, at `time`.
pub fn write_record(out: &mut impl Write, time: SystemTime, frame: &[u8], original_len: u32) -> std::io::Result<()> {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let mut header = Vec::with_capacity(16);
    header.extend_from_slice(&(since.as_secs() as u32).to_le_bytes());
    header.extend_from_slice(&since.subsec_micros().to_le_bytes());
    header.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    header.extend_from_slice(&original_len.max(frame.len() as u32).to_le_bytes());
    out.write_all(&header)?;
    out.write_all(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_record_have_the_format_s_sizes_and_fields() {
        let mut out = Vec::new();
        write_header(&mut out, 1600).unwrap();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_700_000_000_123_456);
        write_record(&mut out, t, &[1, 2, 3], 90).unwrap();
        assert_eq!(out.len(), 24 + 16 + 3);
        assert_eq!(&out[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(out[16..20].try_into().unwrap()), 1600);
        assert_eq!(u32::from_le_bytes(out[20..24].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(out[24..28].try_into().unwrap()), 1_700_000_000);
        assert_eq!(u32::from_le_bytes(out[28..32].try_into().unwrap()), 123_456);
        assert_eq!(u32::from_le_bytes(out[32..36].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(out[36..40].try_into().unwrap()), 90);
    }
}
