//! Stage 2 → 3: from the addresses chosen for a name to the map entry the XDP program
//! answers from. Today every configured address is chosen (static records); the
//! health-aware selection feeds the same `NameRecords` builder.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use primwatch_common::{
    AnswerSet, NameKey, NameRecords, AAAA_RR_LEN, A_RR_LEN, MAX_ANSWER_BYTES, MAX_RECORDS,
    OPT_RR, QCLASS_IN, QTYPE_A, QTYPE_AAAA,
};

use crate::{config::Config, dns_name::DnsName};

/// A compression pointer to the question name, which always sits at offset 12.
const POINTER_TO_QUESTION: [u8; 2] = [0xc0, 0x0c];

/// Renders records of one type as the answer section bytes the XDP program copies.
fn render(ttl: u32, qtype: u16, rdatas: &[&[u8]]) -> AnswerSet {
    assert!(rdatas.len() <= MAX_RECORDS, "record count is validated by config");
    let mut set = AnswerSet {
        ttl,
        ancount: rdatas.len() as u16,
        rrs_len: 0,
        rrs_csum: 0,
        _pad: 0,
        rrs: [0; MAX_ANSWER_BYTES + OPT_RR.len()],
    };
    let mut out = Vec::with_capacity(MAX_ANSWER_BYTES);
    for rdata in rdatas {
        out.extend_from_slice(&POINTER_TO_QUESTION);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&QCLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(rdata);
    }
    set.rrs[..out.len()].copy_from_slice(&out);
    // The XDP program copies the OPT record along with the answers when it needs one.
    set.rrs[out.len()..out.len() + OPT_RR.len()].copy_from_slice(&OPT_RR);
    set.rrs_len = out.len() as u16;
    set.rrs_csum = ones_complement_sum(&out) as u32;
    set
}

pub fn a_records(ttl: u32, addresses: &[Ipv4Addr]) -> AnswerSet {
    let octets: Vec<[u8; 4]> = addresses.iter().map(|a| a.octets()).collect();
    let rdatas: Vec<&[u8]> = octets.iter().map(|o| &o[..]).collect();
    let set = render(ttl, QTYPE_A, &rdatas);
    debug_assert_eq!(set.rrs_len as usize, addresses.len() * A_RR_LEN);
    set
}

pub fn aaaa_records(ttl: u32, addresses: &[Ipv6Addr]) -> AnswerSet {
    let octets: Vec<[u8; 16]> = addresses.iter().map(|a| a.octets()).collect();
    let rdatas: Vec<&[u8]> = octets.iter().map(|o| &o[..]).collect();
    let set = render(ttl, QTYPE_AAAA, &rdatas);
    debug_assert_eq!(set.rrs_len as usize, addresses.len() * AAAA_RR_LEN);
    set
}

/// One's-complement sum of big-endian 16-bit words (odd tail padded with zero), folded.
pub fn ones_complement_sum(bytes: &[u8]) -> u16 {
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

pub fn name_records(name: &DnsName, a: AnswerSet, aaaa: AnswerSet) -> NameRecords {
    NameRecords {
        name_len: name.wire().len() as u32,
        _pad: 0,
        name: name.padded(),
        a,
        aaaa,
    }
}

/// The entries the `names` map should hold for a config, keyed by name hash.
pub fn desired_entries(config: &Config) -> BTreeMap<NameKey, NameRecords> {
    config
        .names
        .iter()
        .map(|(name, entry)| {
            let records = name_records(
                name,
                a_records(entry.ttl, &entry.a),
                aaaa_records(entry.ttl, &entry.aaaa),
            );
            (NameKey { name_hash: name.hash() }, records)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::{
        op::Message,
        rr::{RData, RecordType},
        serialize::binary::BinDecodable,
    };

    #[test]
    fn rendered_records_parse_as_dns_answers() {
        let set = a_records(300, &[Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 7)]);
        assert_eq!(set.ancount, 2);
        assert_eq!(set.rrs_len, 32);
        // Wrap the rendered section in a response to www.example.test and let hickory parse it.
        let mut msg = vec![0x12, 0x34, 0x84, 0x00, 0, 1, 0, 2, 0, 0, 0, 0];
        msg.extend_from_slice(b"\x03www\x07example\x04test\x00\x00\x01\x00\x01");
        msg.extend_from_slice(&set.rrs[..set.rrs_len as usize]);
        let parsed = Message::from_bytes(&msg).unwrap();
        let answers: Vec<_> = parsed.answers().iter().map(|r| (r.name().to_string(), r.ttl(), r.data().cloned())).collect();
        assert_eq!(answers.len(), 2);
        assert_eq!(answers[0].0, "www.example.test.");
        assert_eq!(answers[0].1, 300);
        assert_eq!(answers[1].2, Some(RData::A(Ipv4Addr::new(198, 51, 100, 7).into())));

        let v6 = aaaa_records(5, &["2001:db8::1".parse().unwrap()]);
        let mut msg = vec![0, 1, 0x84, 0x00, 0, 1, 0, 1, 0, 0, 0, 0];
        msg.extend_from_slice(b"\x01a\x00\x00\x1c\x00\x01");
        msg.extend_from_slice(&v6.rrs[..v6.rrs_len as usize]);
        let parsed = Message::from_bytes(&msg).unwrap();
        assert_eq!(parsed.answers()[0].record_type(), RecordType::AAAA);
        assert_eq!(parsed.answers()[0].ttl(), 5);
    }

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to 0xddf2.
        assert_eq!(ones_complement_sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0xddf2);
        let set = a_records(1, &[Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(set.rrs_csum as u16, ones_complement_sum(&set.rrs[..16]));
    }
}
