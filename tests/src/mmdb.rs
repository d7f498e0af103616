//! A small MaxMind DB writer for the tests (MaxMind DB File Format Specification 2.0:
//! a binary search tree of 32-bit records, a 16-byte separator, the data section, the
//! metadata after `\xAB\xCD\xEFMaxMind.com`). Written from the published spec, not the
//! reader's code, so a file it writes checks the reader primwatch uses; one test also
//! reads it with `mmdblookup` (libmaxminddb).

use std::{io, net::IpAddr, path::Path};

/// A data-section value (the types the tests need).
#[derive(Debug, Clone)]
pub enum Value {
    Str(String),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

/// A country database record as GeoLite2-Country lays it out.
pub fn country(iso_code: &str, continent: &str) -> Value {
    Value::Map(vec![
        ("continent".into(), Value::Map(vec![("code".into(), Value::Str(continent.into()))])),
        ("country".into(), Value::Map(vec![("iso_code".into(), Value::Str(iso_code.into()))])),
    ])
}

/// An ASN database record as GeoLite2-ASN lays it out.
pub fn asn(number: u32, organization: &str) -> Value {
    Value::Map(vec![
        ("autonomous_system_number".into(), Value::U32(number)),
        ("autonomous_system_organization".into(), Value::Str(organization.into())),
    ])
}

/// The demo's country database (`examples/demo-country.mmdb`, checked against this by
/// `tests/tests/examples.rs`): documentation prefixes in a few countries.
pub fn demo_database() -> Vec<u8> {
    let mut w = Writer::new("GeoLite2-Country", 1_764_460_800);
    let net = |s: &str| -> IpAddr { s.parse().unwrap() };
    w.insert(net("192.0.2.0"), 24, country("KR", "AS"))
        .insert(net("198.51.100.0"), 24, country("JP", "AS"))
        .insert(net("203.0.113.0"), 24, country("DE", "EU"))
        .insert(net("2001:db8:100::"), 40, country("KR", "AS"));
    w.to_bytes()
}

#[derive(Clone, Copy, PartialEq)]
enum Child {
    Empty,
    Node(usize),
    Data(usize),
}

/// An IPv6 database (IPv4 networks in `::/96`, as MaxMind builds them).
pub struct Writer {
    database_type: String,
    build_epoch: u64,
    networks: Vec<(u128, u8, Value)>,
}

impl Writer {
    pub fn new(database_type: &str, build_epoch: u64) -> Writer {
        Writer { database_type: database_type.into(), build_epoch, networks: Vec::new() }
    }

    /// Adds `address/prefix_len` (an IPv4 network goes to `::a.b.c.d/96+len`).
    pub fn insert(&mut self, address: IpAddr, prefix_len: u8, value: Value) -> &mut Writer {
        let (bits, len) = match address {
            IpAddr::V4(v4) => (u32::from(v4) as u128, prefix_len + 96),
            IpAddr::V6(v6) => (u128::from(v6), prefix_len),
        };
        assert!((1..=128).contains(&len), "prefix length {prefix_len}");
        self.networks.push((bits, len, value));
        self
    }

    pub fn write(&self, path: &Path) -> io::Result<()> {
        std::fs::write(path, self.to_bytes())
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        // The tree: a node per branching point, networks as data leaves. Shorter
        // networks first, so a longer one inside splits its leaf.
        let mut order: Vec<usize> = (0..self.networks.len()).collect();
        order.sort_by_key(|&i| self.networks[i].1);
        let mut nodes: Vec<[Child; 2]> = vec![[Child::Empty; 2]];
        for i in order {
            let (bits, len, _) = &self.networks[i];
            let mut node = 0;
            for depth in 0..*len as usize {
                let bit = ((bits >> (127 - depth)) & 1) as usize;
                if depth + 1 == *len as usize {
                    nodes[node][bit] = Child::Data(i);
                    break;
                }
                node = match nodes[node][bit] {
                    Child::Node(next) => next,
                    leaf => {
                        // Empty or a shorter network's leaf: both halves inherit it.
                        nodes.push([leaf, leaf]);
                        let next = nodes.len() - 1;
                        nodes[node][bit] = Child::Node(next);
                        next
                    }
                };
            }
        }
        let mut data = Vec::new();
        let offsets: Vec<usize> = self
            .networks
            .iter()
            .map(|(_, _, value)| {
                let at = data.len();
                encode(value, &mut data);
                at
            })
            .collect();
        let node_count = nodes.len();
        let record = |child: Child| -> u32 {
            match child {
                Child::Empty => node_count as u32,
                Child::Node(n) => n as u32,
                Child::Data(i) => (node_count + 16 + offsets[i]) as u32,
            }
        };
        let mut out = Vec::with_capacity(node_count * 8 + 16 + data.len() + 256);
        for [left, right] in &nodes {
            out.extend_from_slice(&record(*left).to_be_bytes());
            out.extend_from_slice(&record(*right).to_be_bytes());
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&data);
        out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
        let metadata = Value::Map(vec![
            ("binary_format_major_version".into(), Value::U16(2)),
            ("binary_format_minor_version".into(), Value::U16(0)),
            ("build_epoch".into(), Value::U64(self.build_epoch)),
            ("database_type".into(), Value::Str(self.database_type.clone())),
            ("description".into(), Value::Map(vec![("en".into(), Value::Str("primwatch test database".into()))])),
            ("ip_version".into(), Value::U16(6)),
            ("languages".into(), Value::Array(vec![Value::Str("en".into())])),
            ("node_count".into(), Value::U32(node_count as u32)),
            ("record_size".into(), Value::U16(32)),
        ]);
        encode(&metadata, &mut out);
        out
    }
}

/// The control byte(s) of a field: type (extended types after a 0 type), size.
fn control(type_number: u8, size: usize, out: &mut Vec<u8>) {
    let (low, extra): (u8, Vec<u8>) = match size {
        0..=28 => (size as u8, vec![]),
        29..=284 => (29, vec![(size - 29) as u8]),
        285..=65_820 => (30, ((size - 285) as u16).to_be_bytes().to_vec()),
        _ => (31, ((size - 65_821) as u32).to_be_bytes()[1..].to_vec()),
    };
    if type_number <= 7 {
        out.push(type_number << 5 | low);
    } else {
        out.push(low);
        out.push(type_number - 7);
    }
    out.extend_from_slice(&extra);
}

fn unsigned(type_number: u8, value: u64, out: &mut Vec<u8>) {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    control(type_number, 8 - skip, out);
    out.extend_from_slice(&bytes[skip..]);
}

fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Str(s) => {
            control(2, s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        Value::U16(v) => unsigned(5, *v as u64, out),
        Value::U32(v) => unsigned(6, *v as u64, out),
        Value::U64(v) => unsigned(9, *v, out),
        Value::Map(pairs) => {
            control(7, pairs.len(), out);
            for (key, value) in pairs {
                encode(&Value::Str(key.clone()), out);
                encode(value, out);
            }
        }
        Value::Array(items) => {
            control(11, items.len(), out);
            for item in items {
                encode(item, out);
            }
        }
    }
}
