//! Domain names in the form the XDP program compares: lowercased wire format.

use std::fmt;

use primwatch_common::{name_hash_step, MAX_NAME_LEN, NAME_BUF_LEN, NAME_HASH_SEED};

/// A validated, lowercased, fully qualified domain name.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DnsName {
    /// Wire format: length-prefixed labels ending with the root label (0).
    wire: Vec<u8>,
}

impl DnsName {
    /// Parses a dotted name ("www.example.com", trailing dot optional). Letters, digits,
    /// '-' and '_' are allowed; case is folded.
    pub fn parse(text: &str) -> Result<DnsName, String> {
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        if trimmed.is_empty() {
            return Err("the root name cannot be served".into());
        }
        let mut wire = Vec::with_capacity(trimmed.len() + 2);
        for (i, label) in trimmed.split('.').enumerate() {
            if label.is_empty() {
                return Err("empty label".into());
            }
            if label == "*" {
                // A wildcard: `*.parent` answers for any one label in front of parent.
                if i != 0 || trimmed == "*" {
                    return Err("'*' may only be the first label, in front of a parent name".into());
                }
                wire.extend_from_slice(b"\x01*");
                continue;
            }
            if label.len() > 63 {
                return Err(format!("label '{label}' is longer than 63 bytes"));
            }
            if let Some(c) = label.chars().find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')) {
                return Err(format!("character '{c}' is not allowed in a name"));
            }
            wire.push(label.len() as u8);
            wire.extend(label.bytes().map(|b| b.to_ascii_lowercase()));
        }
        wire.push(0);
        if wire.len() > MAX_NAME_LEN {
            return Err(format!("longer than {MAX_NAME_LEN} bytes on the wire"));
        }
        Ok(DnsName { wire })
    }

    /// `*.parent` for this name: the wildcard that covers it one label up, the only
    /// one XDP looks for. None for a name directly under the root.
    pub fn covering_wildcard(&self) -> Option<DnsName> {
        let parent = &self.wire[1 + self.wire[0] as usize..];
        (parent.len() > 1).then(|| DnsName { wire: [b"\x01*".as_slice(), parent].concat() })
    }

    /// The name one label up; None for a name directly under the root (the root is
    /// never a served name).
    pub fn parent(&self) -> Option<DnsName> {
        let parent = &self.wire[1 + self.wire[0] as usize..];
        (parent.len() > 1).then(|| DnsName { wire: parent.to_vec() })
    }

    /// Is this `*.parent`?
    pub fn is_wildcard(&self) -> bool {
        self.wire.starts_with(b"\x01*")
    }

    /// Is this name `zone` itself or a name below it (label by label, RFC 1034 §3.1)?
    pub fn is_at_or_below(&self, zone: &DnsName) -> bool {
        let mut off = 0;
        while off < self.wire.len() {
            if self.wire[off..] == zone.wire[..] {
                return true;
            }
            off += 1 + self.wire[off] as usize;
        }
        false
    }

    /// The same name as hickory-proto's `Name` (for signing: canonical form and order
    /// are hickory's). The names map keeps the compact wire form: a million names.
    pub fn to_hickory(&self) -> hickory_proto::rr::Name {
        let mut labels = Vec::new();
        let mut off = 0;
        while self.wire[off] != 0 {
            let len = self.wire[off] as usize;
            labels.push(&self.wire[off + 1..off + 1 + len]);
            off += 1 + len;
        }
        // Labels were validated by `parse`: at most 63 bytes each, 255 in all.
        hickory_proto::rr::Name::from_labels(labels).expect("a parsed name is a valid name")
    }

    /// A name from hickory-proto (a zone transfer's owner), lowercased; None for the
    /// root. Any label bytes are kept (zone files may hold names `parse` refuses).
    pub fn from_hickory(name: &hickory_proto::rr::Name) -> Option<DnsName> {
        let mut wire = Vec::with_capacity(name.len() + 1);
        for label in name.iter() {
            wire.push(label.len() as u8);
            wire.extend(label.iter().map(|b| b.to_ascii_lowercase()));
        }
        wire.push(0);
        (wire.len() > 1 && wire.len() <= MAX_NAME_LEN).then_some(DnsName { wire })
    }

    /// The zone of `zones` (apex, value) this name lies in with the longest apex: the
    /// zone that holds it (RFC 1034 §4.2).
    pub fn closest_zone<'a, T>(&self, zones: impl IntoIterator<Item = (&'a DnsName, T)>) -> Option<(&'a DnsName, T)> {
        zones.into_iter().filter(|(apex, _)| self.is_at_or_below(apex)).max_by_key(|(apex, _)| apex.wire().len())
    }

    /// The name in wire format: length-prefixed lowercased labels, ending with the root label (0).
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The hash the XDP program computes over the lowercased question name.
    pub fn hash(&self) -> u64 {
        self.wire.chunks(8).fold(NAME_HASH_SEED, |h, chunk| {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            name_hash_step(h, u64::from_le_bytes(word))
        })
    }

    /// The wire name zero-padded to the map's buffer size.
    pub fn padded(&self) -> [u8; NAME_BUF_LEN] {
        let mut buf = [0u8; NAME_BUF_LEN];
        buf[..self.wire.len()].copy_from_slice(&self.wire);
        buf
    }
}

impl fmt::Display for DnsName {
    /// Dotted form with a trailing dot.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut pos = 0;
        while let Some(&len) = self.wire.get(pos) {
            if len == 0 {
                break;
            }
            let label = &self.wire[pos + 1..pos + 1 + len as usize];
            write!(f, "{}.", String::from_utf8_lossy(label))?;
            pos += 1 + len as usize;
        }
        Ok(())
    }
}

impl fmt::Debug for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DnsName({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_membership_is_by_whole_labels() {
        let zone = DnsName::parse("example.com").unwrap();
        for inside in ["example.com", "www.example.com", "a.b.Example.COM.", "*.example.com"] {
            assert!(DnsName::parse(inside).unwrap().is_at_or_below(&zone), "{inside}");
        }
        for outside in ["com", "badexample.com", "example.com.evil", "www.example.org"] {
            assert!(!DnsName::parse(outside).unwrap().is_at_or_below(&zone), "{outside}");
        }
    }

    #[test]
    fn encodes_lowercased_wire_format() {
        let name = DnsName::parse("WWW.Example.Test.").unwrap();
        assert_eq!(name.wire(), b"\x03www\x07example\x04test\x00");
        assert_eq!(name.to_string(), "www.example.test.");
        assert_eq!(name, DnsName::parse("www.example.test").unwrap());
    }

    #[test]
    fn covering_wildcard_is_one_label_up() {
        let name = DnsName::parse("A.Apps.example.test").unwrap();
        assert_eq!(name.covering_wildcard(), Some(DnsName::parse("*.apps.example.test").unwrap()));
        assert_eq!(DnsName::parse("test").unwrap().covering_wildcard(), None);
    }

    #[test]
    fn hash_covers_the_zero_padded_wire_name_in_words() {
        // Reference: the same steps, written out for a 10-byte name (two words).
        let name = DnsName::parse("Ab.cdefg").unwrap();
        assert_eq!(name.wire(), b"\x02ab\x05cdefg\x00");
        let w0 = u64::from_le_bytes(*b"\x02ab\x05cdef");
        let w1 = u64::from_le_bytes([b'g', 0, 0, 0, 0, 0, 0, 0]);
        let expected = name_hash_step(name_hash_step(NAME_HASH_SEED, w0), w1);
        assert_eq!(name.hash(), expected);
        assert_ne!(DnsName::parse("a.b").unwrap().hash(), DnsName::parse("ab").unwrap().hash());
        assert_eq!(DnsName::parse("WWW.x").unwrap().hash(), DnsName::parse("www.X.").unwrap().hash());
    }

    #[test]
    fn converts_to_hickory_names() {
        let name = DnsName::parse("WWW.Example.test").unwrap();
        let hickory = name.to_hickory();
        assert!(hickory.is_fqdn());
        assert_eq!(hickory.to_string(), "www.example.test.");
        assert_eq!(hickory.num_labels(), 3);
        let mut wire = Vec::new();
        let mut encoder = hickory_proto::serialize::binary::BinEncoder::new(&mut wire);
        hickory.emit_as_canonical(&mut encoder, true).unwrap();
        assert_eq!(wire, name.wire(), "the same wire form");
    }

    #[test]
    fn rejects_bad_names() {
        assert!(DnsName::parse("").is_err());
        assert!(DnsName::parse(".").is_err());
        assert!(DnsName::parse("a..b").unwrap_err().contains("empty label"));
        assert!(DnsName::parse("*.example.com").unwrap().is_wildcard());
        assert!(DnsName::parse("a.*.example.com").unwrap_err().contains("'*'"));
        assert!(DnsName::parse("*").unwrap_err().contains("'*'"));
        assert!(DnsName::parse("a*.example.com").unwrap_err().contains("'*'"));
        assert!(DnsName::parse("exa mple.com").is_err());
        assert!(DnsName::parse(&format!("{}.com", "x".repeat(64))).unwrap_err().contains("63"));
        // 4 labels of 63 = 256 bytes + root > 255.
        let long = vec!["y".repeat(63); 4].join(".");
        assert!(DnsName::parse(&long).unwrap_err().contains("255"));
        let fits = format!("{}.{}", vec!["y".repeat(63); 3].join("."), "z".repeat(61));
        assert_eq!(DnsName::parse(&fits).unwrap().wire().len(), 255);
    }
}
