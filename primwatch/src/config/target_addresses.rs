//! Which addresses a health-checked target may have. A target is probed (TCP, HTTP,
//! ICMP) and its health is published in public answers and, in a fleet, in etcd: an
//! address taken from a resolver's answer or from a pushed config must not aim the
//! node's probes at itself, at the cloud's metadata service or at addresses that are
//! no host's (RFC 6890 special-purpose blocks).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why `address` is special-purpose (no target of a health check unless the operator
/// says so), or None.
pub(crate) fn special_purpose(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => special_v4(v4),
            None => special_v6(v6),
        },
    }
}

fn special_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = v4.octets();
    if v4.is_unspecified() || a == 0 {
        Some("\"this network\" (0.0.0.0/8)")
    } else if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_link_local() {
        Some("link-local (169.254.0.0/16, cloud metadata)")
    } else if v4.is_multicast() {
        Some("multicast")
    } else if v4.is_broadcast() || a >= 240 {
        Some("reserved (240.0.0.0/4)")
    } else if a == 192 && b == 0 && v4.octets()[2] == 0 {
        Some("IETF protocol assignments (192.0.0.0/24)")
    } else {
        None
    }
}

fn special_v6(v6: Ipv6Addr) -> Option<&'static str> {
    let first = v6.segments()[0];
    if v6.is_unspecified() {
        Some("unspecified")
    } else if v6.is_loopback() {
        Some("loopback")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local (fe80::/10)")
    } else if first & 0xff00 == 0xff00 {
        Some("multicast")
    } else if v6.segments()[..6] == [0; 6] {
        Some("IPv4-compatible (::/96, deprecated)")
    } else {
        None
    }
}

/// The addresses a config's targets may have, as the node's own file says: for a
/// pushed config, `[fleet] pushed_targets` (or, without it, anything but special-purpose
/// addresses and the node's own); for resolved names, special-purpose ones only with
/// `[resolver] allow_special_addresses`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetPolicy {
    /// Only inside one of these (None: anywhere that is not special or the node's own).
    pub allowed: Option<Vec<IpNet>>,
    /// Special-purpose addresses are allowed (outside `allowed`'s say).
    pub special_ok: bool,
    /// This node's own addresses (refused unless inside `allowed`).
    pub own: Vec<IpAddr>,
}

impl TargetPolicy {
    /// Why `address` may not be a target under this policy, or None.
    pub fn refuses(&self, address: IpAddr) -> Option<String> {
        if let Some(allowed) = &self.allowed {
            return (!allowed.iter().any(|net| net.contains(&address)))
                .then(|| format!("{address} is outside the ranges this node allows ({})", show(allowed)));
        }
        if !self.special_ok {
            if let Some(why) = special_purpose(address) {
                return Some(format!("{address} is {why}"));
            }
        }
        self.own.contains(&address).then(|| format!("{address} is this node's own address"))
    }
}

fn show(nets: &[IpNet]) -> String {
    nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_purpose_blocks_are_named() {
        for (text, special) in [
            ("127.0.0.1", true),
            ("169.254.169.254", true),
            ("0.0.0.0", true),
            ("224.0.0.1", true),
            ("255.255.255.255", true),
            ("::1", true),
            ("::", true),
            ("fe80::1", true),
            ("ff02::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:169.254.169.254", true),
            ("10.0.0.1", false),
            ("192.0.2.1", false),
            ("2001:db8::1", false),
            ("::ffff:10.0.0.1", false),
        ] {
            assert_eq!(special_purpose(text.parse().unwrap()).is_some(), special, "{text}");
        }
    }

    #[test]
    fn a_policy_refuses_special_own_and_outside_addresses() {
        let own: IpAddr = "10.0.0.5".parse().unwrap();
        let default = TargetPolicy { own: vec![own], ..TargetPolicy::default() };
        assert!(default.refuses("10.0.0.6".parse().unwrap()).is_none());
        assert!(default.refuses(own).unwrap().contains("own address"));
        assert!(default.refuses("169.254.169.254".parse().unwrap()).unwrap().contains("link-local"));
        let listed =
            TargetPolicy { allowed: Some(vec!["10.0.0.0/24".parse().unwrap()]), own: vec![own], special_ok: false };
        assert!(listed.refuses(own).is_none(), "inside a listed range: the operator's say");
        assert!(listed.refuses("10.0.1.1".parse().unwrap()).unwrap().contains("outside"));
        let special = TargetPolicy { special_ok: true, ..TargetPolicy::default() };
        assert!(special.refuses("127.0.0.1".parse().unwrap()).is_none());
    }
}
