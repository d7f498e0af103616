//! ICMP and ICMPv6 echo through surge-ping.

use std::{net::IpAddr, time::Duration};

use super::{Failure, Probe, ProbeResult};

/// `type = "icmp"`.
pub(super) struct Icmp;

impl Probe for Icmp {
    async fn probe(&self, address: IpAddr, timeout: Duration, _target: &str) -> ProbeResult {
        icmp(address, timeout).await
    }
}

/// ICMP Echo Reply type (RFC 792) and ICMPv6 Echo Reply (RFC 4443 §4.2).
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REPLY_V6: u8 = 129;

/// One echo with a random identifier and sequence, which the reply must carry: a
/// spoofer who cannot see our requests cannot guess both. Only an Echo Reply counts;
/// an ICMP error quoting our echo (which surge-ping matches by the same numbers) is a
/// failure.
async fn icmp(address: IpAddr, timeout: Duration) -> ProbeResult {
    let kind = if address.is_ipv6() { surge_ping::ICMP::V6 } else { surge_ping::ICMP::V4 };
    let client = surge_ping::Client::new(&surge_ping::Config::builder().kind(kind).build())
        .map_err(|e| Failure::local(format!("ICMP socket: {e}")))?;
    let mut pinger = client.pinger(address, surge_ping::PingIdentifier(rand::random())).await;
    pinger.timeout(timeout);
    let token: [u8; 16] = rand::random();
    let (packet, rtt) = pinger
        .ping(surge_ping::PingSequence(rand::random()), &token)
        .await
        .map_err(|e| format!("echo to {address}: {e}"))?;
    let icmp_type = match &packet {
        surge_ping::IcmpPacket::V4(p) => (p.get_icmp_type().0, ECHO_REPLY_V4),
        surge_ping::IcmpPacket::V6(p) => (p.get_icmpv6_type().0, ECHO_REPLY_V6),
    };
    if icmp_type.0 != icmp_type.1 {
        return Err(format!("ICMP type {} instead of an echo reply from {address}", icmp_type.0).into());
    }
    Ok((format!("echo reply in {rtt:?}"), None))
}
