//! A two-host lab: a client namespace and a server namespace joined by a veth pair,
//! with IPv4 and IPv6 addresses. (VLAN-tagged traffic is sent through packet sockets,
//! see `raw`: the kernels here are built without 802.1Q support.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use primwatch::{
    config::XdpMode,
    dataplane::{Dataplane, PASS_PROGRAM},
};

use crate::netns::{self, ip};

pub const CLIENT_IF: &str = "pwc0";
pub const SERVER_IF: &str = "pws0";
pub const SERVER_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
pub const SERVER_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

pub struct Lab {
    pub client_ns: String,
    pub server_ns: String,
    /// Keeps the pass program on the client veth alive (native mode), see `enable_native_peer`.
    client_xdp: Option<Dataplane>,
}

impl Lab {
    /// A lab with namespace names unique to this process.
    pub fn new() -> Result<Lab> {
        Lab::named(&crate::unique("pwc"), &crate::unique("pws"))
    }

    /// A lab with fixed namespace names (the demo prints commands that use them);
    /// namespaces of these names left by an earlier run are removed first.
    pub fn named(client_ns: &str, server_ns: &str) -> Result<Lab> {
        for ns in [client_ns, server_ns] {
            if std::path::Path::new("/run/netns").join(ns).exists() {
                ip(&["netns", "del", ns])?;
            }
        }
        let (client_ns, server_ns) = (client_ns.to_string(), server_ns.to_string());
        ip(&["netns", "add", &client_ns])?;
        let lab = Lab { client_ns, server_ns, client_xdp: None };
        ip(&["netns", "add", &lab.server_ns])?;
        // Created directly inside the namespaces, so names never clash between labs.
        ip(&[
            "link",
            "add",
            CLIENT_IF,
            "netns",
            &lab.client_ns,
            "type",
            "veth",
            "peer",
            "name",
            SERVER_IF,
            "netns",
            &lab.server_ns,
        ])?;
        for (ns, dev, v4, v6) in [
            (lab.client_ns.clone(), CLIENT_IF, CLIENT_V4, CLIENT_V6),
            (lab.server_ns.clone(), SERVER_IF, SERVER_V4, SERVER_V6),
        ] {
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "link", "set", dev, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{v4}/24"), "dev", dev])?;
            ip(&["-n", &ns, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
        }
        netns::send_full_checksums(&lab.client_ns, CLIENT_IF)?;
        Ok(lab)
    }

    /// Port 40000 of the client address to port 53 of the server's, over IPv4, with the
    /// MACs of `client_ns`'s veth and the server's: the template raw senders build
    /// frames from.
    pub fn udp_flow(&self, client_ns: &str) -> Result<crate::packet::Flow> {
        Ok(crate::packet::Flow {
            src: self.client_addr(false),
            dst: self.server_addr(false),
            src_port: 40000,
            dst_port: 53,
            vlan: None,
            src_mac: self.mac(client_ns, CLIENT_IF)?,
            dst_mac: self.mac(&self.server_ns, SERVER_IF)?,
        })
    }

    pub fn server_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            SERVER_V6.into()
        } else {
            SERVER_V4.into()
        }
    }

    pub fn client_addr(&self, v6: bool) -> IpAddr {
        if v6 {
            CLIENT_V6.into()
        } else {
            CLIENT_V4.into()
        }
    }

    /// The MAC address of `dev` in `ns`.
    pub fn mac(&self, ns: &str, dev: &str) -> Result<[u8; 6]> {
        let out = std::process::Command::new("ip").args(["-n", ns, "-o", "link", "show", "dev", dev]).output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let hex = text
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("no MAC for {dev}: {text}"))?;
        let mut mac = [0u8; 6];
        for (byte, part) in mac.iter_mut().zip(hex.split(':')) {
            *byte = u8::from_str_radix(part, 16)?;
        }
        Ok(mac)
    }

    /// Native-mode XDP_TX on veth only delivers to a peer that runs XDP itself.
    pub fn enable_native_peer(&mut self) -> Result<()> {
        let ns = self.client_ns.clone();
        let dataplane = netns::run_in(&ns, || -> Result<Dataplane> {
            let mut dataplane = Dataplane::load(53)?;
            dataplane.attach_program(PASS_PROGRAM, CLIENT_IF, XdpMode::Native)?;
            Ok(dataplane)
        })??;
        self.client_xdp = Some(dataplane);
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(dataplane) = self.client_xdp.take() {
            let _ = dataplane.shutdown();
        }
        // Deleting a namespace deletes its veth end, and the peer with it.
        let _ = ip(&["netns", "del", &self.client_ns]);
        let _ = ip(&["netns", "del", &self.server_ns]);
    }
}
