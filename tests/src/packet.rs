//! Frames for the XDP program: Ethernet (+802.1Q) / IPv4 or IPv6 / UDP built with
//! etherparse, the DNS reply the program must produce (built here independently of
//! the program), and checksum verification of what it produced.

use std::net::IpAddr;

use anyhow::{bail, ensure, Context as _, Result};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice, UdpHeader, VlanId};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Addresses and ports of a frame, seen from its sender.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub vlan: Option<u16>,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
}

impl Flow {
    pub fn client_to_server(v6: bool) -> Flow {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            ("fd77::2".parse().unwrap(), "fd77::1".parse().unwrap())
        } else {
            ("10.77.0.2".parse().unwrap(), "10.77.0.1".parse().unwrap())
        };
        Flow { src, dst, src_port: 40000, dst_port: 53, vlan: None, src_mac: CLIENT_MAC, dst_mac: SERVER_MAC }
    }

    pub fn reversed(&self) -> Flow {
        Flow {
            src: self.dst,
            dst: self.src,
            src_port: self.dst_port,
            dst_port: self.src_port,
            vlan: self.vlan,
            src_mac: self.dst_mac,
            dst_mac: self.src_mac,
        }
    }
}

/// A UDP frame carrying `payload`, with correct IP and UDP checksums, hop limit `ttl`.
pub fn udp_frame(flow: &Flow, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(flow.src_mac, flow.dst_mac);
    let mut out = Vec::new();
    macro_rules! finish {
        ($step:expr) => {
            match (flow.src, flow.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    $step.ipv4(s.octets(), d.octets(), ttl).udp(flow.src_port, flow.dst_port).write(&mut out, payload)
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    $step.ipv6(s.octets(), d.octets(), ttl).udp(flow.src_port, flow.dst_port).write(&mut out, payload)
                }
                _ => panic!("mixed address families"),
            }
        };
    }
    match flow.vlan {
        Some(id) => finish!(eth.single_vlan(VlanId::try_new(id).unwrap())),
        None => finish!(eth),
    }
    .expect("frame fits");
    out
}

/// The DNS reply primwatch must send for `query` (a plain query as our tests build
/// them): same ID, QR AA, RD and CD copied, the question as sent, `rrs` as
/// (type, ttl, rdata) with a pointer to the question, and an OPT (1232, version 0,
/// the query's DO bit) if the query had one.
pub fn expected_reply(query: &[u8], rrs: &[(u16, u32, Vec<u8>)]) -> Result<Vec<u8>> {
    expected_reply_with_options(query, rrs, &[])
}

/// As `expected_reply`, with `options` (wire options: code, length, data) in the OPT
/// record of a query that had one.
pub fn expected_reply_with_options(query: &[u8], rrs: &[(u16, u32, Vec<u8>)], options: &[u8]) -> Result<Vec<u8>> {
    ensure!(query.len() >= 12, "short query");
    let arcount = u16::from_be_bytes([query[10], query[11]]);
    // Question: the name up to its root label, then type and class.
    let mut end = 12;
    while query[end] != 0 {
        end += 1 + query[end] as usize;
    }
    let question = &query[12..end + 5];
    let flags = u16::from_be_bytes([query[2], query[3]]);
    let reply_flags = 0x8400 | (flags & 0x0110);
    let mut out = Vec::new();
    out.extend_from_slice(&query[..2]);
    out.extend_from_slice(&reply_flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(rrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&arcount.to_be_bytes());
    out.extend_from_slice(question);
    for (rtype, ttl, rdata) in rrs {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    if arcount == 1 {
        // RFC 3225 §3: DO is copied from the query's OPT record (flags at its byte 7).
        let do_bit = query.get(end + 5 + 7).copied().unwrap_or(0) & 0x80;
        out.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, do_bit, 0]);
        out.extend_from_slice(&(options.len() as u16).to_be_bytes());
        out.extend_from_slice(options);
    }
    Ok(out)
}

/// Checks the IPv4 header checksum and the UDP checksum of a frame; returns the UDP payload.
pub fn verify_checksums(frame: &[u8]) -> Result<Vec<u8>> {
    let sliced = SlicedPacket::from_ethernet(frame).context("frame does not parse")?;
    let Some(TransportSlice::Udp(udp)) = &sliced.transport else { bail!("not UDP") };
    let header = udp.to_header();
    let payload = udp.payload();
    let expected = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header().to_header();
            ensure!(h.header_checksum == h.calc_header_checksum(), "bad IPv4 header checksum");
            UdpHeader { checksum: 0, ..header.clone() }.calc_checksum_ipv4(&h, payload)?
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header().to_header();
            UdpHeader { checksum: 0, ..header.clone() }.calc_checksum_ipv6(&h, payload)?
        }
        _ => bail!("no IP header"),
    };
    ensure!(header.checksum == expected, "UDP checksum {:#06x}, expected {expected:#06x}", header.checksum);
    Ok(payload.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_have_the_expected_layout() {
        let flow = Flow::client_to_server(false);
        let frame = udp_frame(&flow, 64, b"hello!");
        assert_eq!(frame.len(), 14 + 20 + 8 + 6);
        assert_eq!(&frame[12..14], &[0x08, 0x00]);
        assert_eq!(verify_checksums(&frame).unwrap(), b"hello!");

        let mut tagged = flow;
        tagged.vlan = Some(100);
        let frame = udp_frame(&tagged, 64, b"x");
        assert_eq!(&frame[12..16], &[0x81, 0x00, 0x00, 100]);
        assert_eq!(&frame[16..18], &[0x08, 0x00]);

        let frame = udp_frame(&Flow::client_to_server(true), 64, b"abc");
        assert_eq!(frame.len(), 14 + 40 + 8 + 3);
        verify_checksums(&frame).unwrap();
    }

    #[test]
    fn corrupted_checksum_is_detected() {
        let mut frame = udp_frame(&Flow::client_to_server(true), 64, b"abcd");
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert!(verify_checksums(&frame).is_err());
    }

    #[test]
    fn expected_reply_parses() {
        let q = crate::dns::query(7, "Www.Example.Test", hickory_proto::rr::RecordType::A, Some(Default::default()))
            .unwrap();
        let r = expected_reply(&q, &[(1, 30, vec![10, 0, 0, 1])]).unwrap();
        let msg = crate::dns::parse(&r).unwrap();
        assert_eq!(msg.id(), 7);
        assert!(msg.authoritative());
        assert_eq!(crate::dns::addresses(&msg), vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(crate::dns::edns_payload(&msg), Some(1232));
        assert_eq!(&r[12..29], &q[12..29], "question echoed with its case");
    }
}
