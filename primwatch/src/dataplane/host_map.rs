//! What "this host" is for the XDP program (its `HOST` map): the MAC of each interface
//! it is attached to, and every unicast address of the host, kept current while
//! addresses come and go. XDP answers only frames addressed to these and passes the rest
//! to the kernel.

use std::{net::IpAddr, time::Duration};

use anyhow::Result;
use aya::maps::{Array, MapData};
use primwatch_common::{HostAddrs, MAX_HOST_ADDRS, MAX_HOST_INTERFACES};
use tracing::{info, warn};

use crate::sys::host::{snapshot, Snapshot};

/// The map entry for the interfaces named `attached`: their MACs, and the host's
/// addresses (at most `MAX_HOST_ADDRS` per family; the second value counts those left
/// out, which XDP then passes to the kernel).
pub(crate) fn host_addrs(snapshot: &Snapshot, attached: &[String]) -> (HostAddrs, usize) {
    let mut host = HostAddrs::default();
    for interface in snapshot.interfaces.iter().filter(|i| attached.contains(&i.name)).take(MAX_HOST_INTERFACES) {
        let i = host.interface_count as usize;
        host.ifindex[i] = interface.ifindex;
        host.mac[i][..6].copy_from_slice(&interface.mac);
        host.interface_count += 1;
    }
    let mut left_out = 0;
    for address in &snapshot.addresses {
        match address {
            IpAddr::V4(a) if (host.v4_count as usize) < MAX_HOST_ADDRS => {
                host.v4[host.v4_count as usize] = a.octets();
                host.v4_count += 1;
            }
            IpAddr::V6(a) if (host.v6_count as usize) < MAX_HOST_ADDRS => {
                host.v6[host.v6_count as usize] = a.octets();
                host.v6_count += 1;
            }
            _ => left_out += 1,
        }
    }
    (host, left_out)
}

/// Writes the `HOST` map entry.
pub struct HostMapWriter {
    map: Array<MapData, HostAddrs>,
    written: Option<HostAddrs>,
}

impl HostMapWriter {
    pub fn new(map: Array<MapData, HostAddrs>) -> HostMapWriter {
        HostMapWriter { map, written: None }
    }

    /// Writes `host` if it differs from what was written last; true if written.
    pub fn write(&mut self, host: &HostAddrs) -> Result<bool> {
        if self.written.as_ref() == Some(host) {
            return Ok(false);
        }
        self.map.set(0, host, 0)?;
        self.written = Some(*host);
        Ok(true)
    }

    /// Reads the host now and writes it; `attached` names the interfaces XDP is on.
    pub fn refresh(&mut self, attached: &[String]) -> Result<bool> {
        let snapshot = snapshot()?;
        for name in attached {
            if !snapshot.interfaces.iter().any(|i| &i.name == name) {
                warn!(interface = %name, "interface not found; XDP on it answers nothing until it is back");
            }
        }
        let (host, left_out) = host_addrs(&snapshot, attached);
        let written = self.write(&host)?;
        if written {
            info!(
                interfaces = host.interface_count,
                ipv4 = host.v4_count,
                ipv6 = host.v6_count,
                "this host's addresses written for XDP"
            );
            if left_out > 0 {
                warn!(
                    left_out,
                    max = MAX_HOST_ADDRS,
                    "more host addresses than XDP holds per family; queries to the others go to the DNS server"
                );
            }
        }
        Ok(written)
    }

    /// Keeps the entry current: re-reads the host every `every` (addresses added or
    /// removed, an interface re-created with a new index).
    pub fn keep_current(mut self, attached: Vec<String>, every: Duration) {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.refresh(&attached) {
                    warn!(error = %format!("{e:#}"), "reading this host's addresses");
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::sys::host::Interface;

    #[test]
    fn the_entry_holds_attached_macs_and_every_address_up_to_the_limit() {
        let snapshot = Snapshot {
            interfaces: vec![
                Interface { name: "eth0".into(), ifindex: 7, mac: [2, 0, 0, 0, 0, 1] },
                Interface { name: "eth1".into(), ifindex: 8, mac: [2, 0, 0, 0, 0, 2] },
            ],
            addresses: (0..40u32)
                .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
                .chain(["fe80::1".parse().unwrap(), "2001:db8::53".parse().unwrap()])
                .collect(),
        };
        let (host, left_out) = host_addrs(&snapshot, &["eth1".to_string()]);
        assert_eq!(host.interface_count, 1);
        assert_eq!((host.ifindex[0], &host.mac[0]), (8, &[2, 0, 0, 0, 0, 2, 0, 0]));
        assert_eq!((host.v4_count, host.v6_count, left_out), (32, 2, 8));
        assert_eq!(host.v4[1], [10, 0, 0, 1]);
        assert_eq!(host.v6[1], "2001:db8::53".parse::<Ipv6Addr>().unwrap().octets());
    }
}
