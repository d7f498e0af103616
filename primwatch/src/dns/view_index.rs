//! Which view a client is in, and the EDNS Client Subnet scope an answer may claim: one
//! implementation for the XDP maps, the PowerDNS backend and `ctl explain`.
//!
//! The view is the one whose source prefix is the longest holding the client's address
//! (its ECS address when the query has a subnet, RFC 7871 §7.1.1). The scope is the
//! prefix length that decided the answer (RFC 7871 §7.2.1; it may exceed the client's
//! source prefix): the matched prefix, lengthened to the longest prefix of another view
//! nested inside it, so that every address in the claimed block gets the same view.
//! With no match, the longest prefix of the family. Lookups go by prefix length,
//! longest first, one hash probe per length configured.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use ipnet::IpNet;
use primwatch_common::Family;

/// A view prefix and what a client inside it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewMatch {
    pub view: String,
    pub id: u32,
    pub prefix: IpNet,
    /// The ECS scope (prefix length) an answer for this prefix claims.
    pub scope: u8,
}

/// Per prefix length present, longest first: network bits → the prefix's match.
type Table = Vec<(u8, HashMap<u128, ViewMatch>)>;

#[derive(Debug, Default)]
pub struct ViewIndex {
    v4: Table,
    v6: Table,
}

/// An address as a u128 (IPv4 in the low 32 bits) and its family's length.
fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u32::from(a) as u128, 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn mask(value: u128, len: u8, family_len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        value & (u128::MAX << (family_len - len)) & (u128::MAX >> (128 - family_len as u32))
    }
}

/// What the index needs of a view: the id the XDP program sees and its source prefixes.
pub trait ViewSources {
    fn id(&self) -> u32;
    fn sources(&self) -> &[IpNet];
}

impl ViewIndex {
    pub fn build<V: ViewSources>(views: &BTreeMap<String, V>) -> ViewIndex {
        let mut all: Vec<(IpNet, &String, u32)> =
            views.iter().flat_map(|(name, v)| v.sources().iter().map(move |p| (p.trunc(), name, v.id()))).collect();
        // By network, then length: whatever a prefix holds follows it directly.
        all.sort_by_key(|(p, _, _)| (p.network(), p.prefix_len()));
        let mut index = ViewIndex::default();
        for (i, (prefix, view, id)) in all.iter().enumerate() {
            let nested = all[i + 1..]
                .iter()
                .take_while(|(q, _, _)| prefix.contains(q))
                .filter(|(q, other, _)| other != view && q.prefix_len() > prefix.prefix_len())
                .map(|(q, _, _)| q.prefix_len())
                .max();
            let scope = nested.unwrap_or(0).max(prefix.prefix_len());
            let m = ViewMatch { view: (*view).clone(), id: *id, prefix: *prefix, scope };
            let (value, family_len) = bits(prefix.network());
            let table = if family_len == 32 { &mut index.v4 } else { &mut index.v6 };
            let len = prefix.prefix_len();
            let slot = match table.iter().position(|(l, _)| *l == len) {
                Some(slot) => slot,
                None => {
                    table.push((len, HashMap::new()));
                    table.len() - 1
                }
            };
            table[slot].1.insert(mask(value, len, family_len), m);
        }
        index.v4.sort_by_key(|t| std::cmp::Reverse(t.0));
        index.v6.sort_by_key(|t| std::cmp::Reverse(t.0));
        index
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The longest prefix holding `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<&ViewMatch> {
        let (value, family_len) = bits(addr);
        let table = if family_len == 32 { &self.v4 } else { &self.v6 };
        table.iter().find_map(|(len, nets)| nets.get(&mask(value, *len, family_len)))
    }

    /// The scope of an answer for a client in no view: the longest prefix of its family
    /// (every block that long is either some view's or holds none).
    pub fn scope_without_view(&self, family: Family) -> u8 {
        let table = match family {
            Family::V4 => &self.v4,
            Family::V6 => &self.v6,
        };
        table.first().map_or(0, |(len, _)| *len)
    }

    /// The view of a client at `client` (see `client_key`)
    /// and the ECS scope its answer claims: 0 when there are no views (the answer is the
    /// same for everyone).
    pub fn classify(&self, client: IpNet) -> (Option<&ViewMatch>, u8) {
        if self.is_empty() {
            return (None, 0);
        }
        match self.lookup(client.network()) {
            Some(m) => (Some(m), m.scope),
            None => (None, self.scope_without_view(Family::of(&client.network()))),
        }
    }

    /// Every prefix and its match, for the XDP tries.
    pub fn entries(&self) -> impl Iterator<Item = &ViewMatch> {
        self.v4.iter().chain(&self.v6).flat_map(|(_, nets)| nets.values())
    }
}

/// What picks a client's view: its EDNS Client Subnet when that has a prefix, else its
/// address as a host prefix (RFC 7871 §7.1.2: source prefix length 0 means the client
/// opts out, and its address decides). The XDP program applies the same rule; PowerDNS's
/// backend and `ctl explain` call this.
pub(crate) fn client_key(address: IpAddr, subnet: Option<IpNet>) -> IpNet {
    match subnet {
        Some(net) if net.prefix_len() > 0 => net.trunc(),
        _ => IpNet::from(address),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TestView {
        id: u32,
        sources: Vec<IpNet>,
    }

    impl ViewSources for TestView {
        fn id(&self) -> u32 {
            self.id
        }
        fn sources(&self) -> &[IpNet] {
            &self.sources
        }
    }

    fn views(spec: &[(&str, &[&str])]) -> BTreeMap<String, TestView> {
        spec.iter()
            .enumerate()
            .map(|(i, (name, prefixes))| {
                let sources = prefixes.iter().map(|p| p.parse().unwrap()).collect();
                (name.to_string(), TestView { id: i as u32 + 1, sources })
            })
            .collect()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_the_scope_covers_only_one_view() {
        let index = ViewIndex::build(&views(&[
            ("wide", &["10.0.0.0/16", "2001:db8::/32"]),
            ("narrow", &["10.0.0.0/25"]),
            ("same", &["10.0.7.0/24"]),
        ]));
        // A /25 view inside the client's /24: the /25 decided (scope beyond the source).
        let (m, scope) = index.classify(net("10.0.0.0/24"));
        assert_eq!((m.unwrap().view.as_str(), scope), ("narrow", 25));
        // In the /16 outside any nested prefix: the /16's answer holds only for blocks
        // as long as the longest other view nested in it.
        let (m, scope) = index.classify(net("10.0.9.0/24"));
        assert_eq!((m.unwrap().view.as_str(), scope), ("wide", 25));
        let (m, scope) = index.classify(net("10.0.7.9/32"));
        assert_eq!((m.unwrap().view.as_str(), scope), ("same", 24));
        // No view: the longest prefix of the family.
        assert_eq!(index.classify(net("192.0.2.0/24")), (None, 25));
        assert_eq!(index.classify(net("2001:db9::/48")), (None, 32));
        let (m, scope) = index.classify(net("2001:db8:1::/48"));
        assert_eq!((m.unwrap().view.as_str(), scope), ("wide", 32));
        assert_eq!(ViewIndex::build(&BTreeMap::<String, TestView>::new()).classify(net("10.0.0.0/24")), (None, 0));
    }

    #[test]
    fn a_prefix_nested_in_its_own_view_does_not_narrow_the_scope() {
        let index = ViewIndex::build(&views(&[("a", &["10.0.0.0/16", "10.0.1.0/24"]), ("b", &["192.0.2.0/24"])]));
        assert_eq!(index.classify(net("10.0.2.0/24")).1, 16);
        assert_eq!(index.classify(net("10.0.1.0/24")).1, 24);
    }

    #[test]
    fn agrees_with_a_linear_scan() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut spec: Vec<(String, Vec<String>)> = Vec::new();
        for v in 0..5 {
            let prefixes = (0..40)
                .map(|_| {
                    let len = rng.gen_range(8..=28u8);
                    let addr = std::net::Ipv4Addr::from(rng.gen::<u32>() & 0x0aff_ffff | 0x0a00_0000);
                    IpNet::new(IpAddr::V4(addr), len).unwrap().trunc().to_string()
                })
                .collect();
            spec.push((format!("v{v}"), prefixes));
        }
        let mut config = BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        for (i, (name, prefixes)) in spec.iter().enumerate() {
            let sources: Vec<IpNet> = prefixes.iter().map(|p| net(p)).filter(|p| seen.insert(*p)).collect();
            config.insert(name.clone(), TestView { id: i as u32 + 1, sources });
        }
        let index = ViewIndex::build(&config);
        for _ in 0..20_000 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(rng.gen::<u32>() & 0x0aff_ffff | 0x0a00_0000));
            let linear = config
                .iter()
                .flat_map(|(n, v)| v.sources.iter().map(move |s| (n, s)))
                .filter(|(_, s)| s.contains(&addr))
                .max_by_key(|(_, s)| s.prefix_len())
                .map(|(n, s)| (n.clone(), *s));
            assert_eq!(index.lookup(addr).map(|m| (m.view.clone(), m.prefix)), linear, "{addr}");
            // The scope's block around the address lies in one view.
            if let (Some(m), scope) = index.classify(IpNet::from(addr)) {
                let block = IpNet::new(addr, scope).unwrap().trunc();
                for (n, v) in &config {
                    for s in &v.sources {
                        if block.contains(s) && s.prefix_len() > m.prefix.prefix_len() {
                            assert_eq!(n, &m.view, "{block} holds {s} of another view");
                        }
                    }
                }
            }
        }
    }
}
