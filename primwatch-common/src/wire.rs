//! Header layouts on the wire: byte offsets, lengths, masks and code points of the
//! Ethernet, IP, UDP and DNS headers the XDP program reads and writes, and that the
//! controller renders records for. Offsets are from the start of their own header.

/// Ethernet II (IEEE 802.3), with at most one 802.1Q tag.
pub mod eth {
    pub const HLEN: usize = 14;
    pub const MAC_LEN: usize = 6;
    pub const DST_OFF: usize = 0;
    pub const SRC_OFF: usize = 6;
    pub const ETHERTYPE_OFF: usize = 12;
    pub const P_IPV4: u16 = 0x0800;
    pub const P_IPV6: u16 = 0x86dd;
    pub const P_8021Q: u16 = 0x8100;
    /// An 802.1Q tag: TCI (2), then the encapsulated EtherType (2).
    pub const VLAN_HLEN: usize = 4;
    pub const VLAN_ETHERTYPE_OFF: usize = 2;
    /// The I/G bit of a MAC's first byte: set for group (multicast, broadcast) addresses.
    pub const GROUP_BIT: u8 = 0x01;
}

/// IPv4 (RFC 791).
pub mod ipv4 {
    pub const MIN_HLEN: usize = 20;
    /// IHL is in 32-bit words; at most 15 of them.
    pub const MAX_HLEN: usize = 60;
    pub const VERSION: u8 = 4;
    pub const VERSION_IHL_OFF: usize = 0;
    pub const IHL_MASK: u8 = 0x0f;
    /// The ECN field: the low bits of the TOS byte, which follows VERSION_IHL (RFC 3168 §5).
    pub const ECN_MASK: u8 = 0x03;
    pub const TOTAL_LEN_OFF: usize = 2;
    /// Flags and fragment offset; MF (0x2000) or a non-zero offset (0x1fff) means a fragment.
    pub const FRAG_OFF: usize = 6;
    pub const FRAGMENT_MASK: u16 = 0x3fff;
    pub const TTL_OFF: usize = 8;
    pub const PROTOCOL_OFF: usize = 9;
    pub const CHECKSUM_OFF: usize = 10;
    pub const SRC_OFF: usize = 12;
    pub const DST_OFF: usize = 16;
    pub const ADDR_LEN: usize = 4;
}

/// IPv6 (RFC 8200).
pub mod ipv6 {
    pub const HLEN: usize = 40;
    pub const VERSION: u8 = 6;
    /// The traffic class straddles bytes 0 and 1; its ECN bits are these of byte 1.
    pub const ECN_BYTE_OFF: usize = 1;
    pub const ECN_MASK: u8 = 0x30;
    pub const PAYLOAD_LEN_OFF: usize = 4;
    pub const NEXT_HEADER_OFF: usize = 6;
    pub const HOP_LIMIT_OFF: usize = 7;
    pub const SRC_OFF: usize = 8;
    pub const DST_OFF: usize = 24;
    pub const ADDR_LEN: usize = 16;
}

/// UDP (RFC 768).
pub mod udp {
    pub const HLEN: usize = 8;
    pub const IPPROTO: u8 = 17;
    pub const SRC_PORT_OFF: usize = 0;
    pub const DST_PORT_OFF: usize = 2;
    pub const LEN_OFF: usize = 4;
    pub const CHECKSUM_OFF: usize = 6;
}

/// The DNS message header and question (RFC 1035 §4.1).
pub mod dns {
    pub const HLEN: usize = 12;
    pub const ID_OFF: usize = 0;
    pub const FLAGS_OFF: usize = 2;
    pub const QDCOUNT_OFF: usize = 4;
    pub const ANCOUNT_OFF: usize = 6;
    pub const NSCOUNT_OFF: usize = 8;
    pub const ARCOUNT_OFF: usize = 10;
    /// QTYPE (2) and QCLASS (2) after the question name.
    pub const QTYPE_QCLASS_LEN: usize = 4;
    /// Longest label; larger length bytes are compression pointers or extended types.
    pub const MAX_LABEL_LEN: usize = 63;
    /// Most labels a name of `MAX_NAME_LEN` bytes can have, the root label included.
    pub const MAX_LABELS: usize = 128;

    pub const FLAG_QR: u16 = 0x8000;
    pub const FLAG_OPCODE: u16 = 0x7800;
    pub const FLAG_AA: u16 = 0x0400;
    /// Truncated: the client should ask again over TCP (RFC 1035 §4.1.1).
    pub const FLAG_TC: u16 = 0x0200;
    /// RCODE 3, Name Error (RFC 1035 §4.1.1): NXDOMAIN.
    pub const RCODE_NXDOMAIN: u16 = 3;
    pub const FLAG_RD: u16 = 0x0100;
    pub const FLAG_CD: u16 = 0x0010;
}

/// The EDNS(0) OPT pseudo-record (RFC 6891 §6.1.2) and the options we read.
pub mod edns {
    /// Owner (root, 1), TYPE (2), CLASS = UDP payload size (2), TTL = extended RCODE (1),
    /// version (1) and flags (2), RDLENGTH (2).
    pub const OPT_RR_LEN: usize = 11;
    pub const OWNER_OFF: usize = 0;
    pub const TYPE_OFF: usize = 1;
    pub const UDP_SIZE_OFF: usize = 3;
    pub const VERSION_OFF: usize = 6;
    pub const FLAGS_OFF: usize = 7;
    pub const RDLEN_OFF: usize = 9;
    /// DNSSEC OK (RFC 3225 §3), the top bit of the EDNS flags.
    pub const FLAG_DO: u16 = 0x8000;
    /// Option code (2) and length (2).
    pub const OPTION_HLEN: usize = 4;
    /// Name server identifier (RFC 5001): empty in a query, the server's id in a reply.
    pub const OPTION_NSID: u16 = 3;
    /// RFC 7871.
    pub const OPTION_CLIENT_SUBNET: u16 = 8;
    /// RFC 7873.
    pub const OPTION_COOKIE: u16 = 10;
    /// RFC 7830.
    pub const OPTION_PADDING: u16 = 12;
    /// An ECS option body: FAMILY (2), SOURCE PREFIX-LENGTH (1), SCOPE PREFIX-LENGTH (1),
    /// then the address truncated to the source prefix.
    pub const ECS_HLEN: usize = 4;
    /// A DNS message carried over UDP without EDNS is at most this long (RFC 1035 §2.3.4).
    pub const PLAIN_UDP_SIZE: usize = 512;

    /// Whether `last`, the last address byte of an ECS option with `source_len` prefix
    /// bits, has bits set beyond the prefix (RFC 7871 §6 requires them zero).
    #[inline(always)]
    pub const fn ecs_stray_bits(last: u8, source_len: u8) -> bool {
        let used = source_len % 8; // bits of the last byte inside the prefix (0: all 8)
        used != 0 && last & (0xffu8 >> used) != 0
    }
}

/// Address families of EDNS Client Subnet (RFC 7871 §6, IANA address family numbers).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EcsFamily {
    Ipv4 = 1,
    Ipv6 = 2,
}

impl EcsFamily {
    #[inline(always)]
    pub const fn from_wire(family: u16) -> Option<EcsFamily> {
        match family {
            1 => Some(EcsFamily::Ipv4),
            2 => Some(EcsFamily::Ipv6),
            _ => None,
        }
    }

    /// Longest source prefix for the family, in bits.
    #[inline(always)]
    pub const fn max_prefix(self) -> u8 {
        match self {
            EcsFamily::Ipv4 => 32,
            EcsFamily::Ipv6 => 128,
        }
    }
}

/// Resource record types we answer or read (RFC 1035 §3.2.2, RFC 3596, RFC 6891).
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordType {
    A = 1,
    Aaaa = 28,
    Opt = 41,
}

impl RecordType {
    #[inline(always)]
    pub const fn from_wire(qtype: u16) -> Option<RecordType> {
        match qtype {
            1 => Some(RecordType::A),
            28 => Some(RecordType::Aaaa),
            41 => Some(RecordType::Opt),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::edns::ecs_stray_bits;

    /// Every source length and every bit of the last byte, against the bits counted
    /// one by one.
    #[test]
    fn stray_ecs_bits_are_those_beyond_the_source_prefix() {
        for source_len in 0u8..=128 {
            let last_byte_start = (source_len.saturating_sub(1) / 8) * 8;
            for bit in 0..8u8 {
                let position = last_byte_start + bit; // of the address, from the top
                let beyond = position >= source_len;
                assert_eq!(
                    ecs_stray_bits(0x80 >> bit, source_len),
                    beyond && source_len > 0,
                    "/{source_len} bit {bit}"
                );
            }
        }
    }
}
