//! This host's interfaces (name, index, MAC) and unicast addresses, read from the kernel
//! (getifaddrs). The dataplane writes them into XDP's `HOST` map; a pushed config uses
//! them to tell which targets are this node's own.

use std::{
    ffi::CStr,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{bail, Result};

/// One interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
}

/// The host's interfaces (with a link-layer address) and unicast addresses, loopback
/// excluded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub interfaces: Vec<Interface>,
    pub addresses: Vec<IpAddr>,
}

/// Reads the host's interfaces and addresses (getifaddrs(3)).
pub(crate) fn snapshot() -> Result<Snapshot> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we walk read-only and free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        bail!("getifaddrs: {}", std::io::Error::last_os_error());
    }
    let mut out = Snapshot::default();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: every entry and its addr (when non-null) stay valid until freeifaddrs.
        let ifa = unsafe { &*entry };
        entry = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        match unsafe { (*ifa.ifa_addr).sa_family } as i32 {
            libc::AF_INET => {
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let addr = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                if !addr.is_loopback() {
                    out.addresses.push(IpAddr::V4(addr));
                }
            }
            libc::AF_INET6 => {
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let addr = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                if !addr.is_loopback() {
                    out.addresses.push(IpAddr::V6(addr));
                }
            }
            libc::AF_PACKET => {
                let ll = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_ll) };
                if ll.sll_halen == 6 {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(&ll.sll_addr[..6]);
                    out.interfaces.push(Interface { name, ifindex: ll.sll_ifindex as u32, mac });
                }
            }
            _ => {}
        }
    }
    unsafe { libc::freeifaddrs(list) };
    out.addresses.sort();
    out.addresses.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_snapshot_has_loopback_without_its_addresses() {
        let s = snapshot().unwrap();
        assert!(s.addresses.iter().all(|a| !a.is_loopback()), "{s:?}");
        assert!(s.interfaces.iter().any(|i| i.name == "lo" && i.ifindex == 1), "{s:?}");
    }
}
