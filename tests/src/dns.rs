//! DNS clients for the lab: queries built and replies parsed with hickory-proto, sent
//! over real UDP and TCP sockets created inside the client namespace.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{
        rdata::opt::{EdnsCode, EdnsOption},
        Name, RData, RecordType,
    },
    serialize::binary::BinDecodable,
};

use crate::netns;

pub const TIMEOUT: Duration = Duration::from_millis(1500);

/// EDNS settings for a query.
#[derive(Clone, Debug)]
pub struct EdnsQuery {
    pub payload: u16,
    pub dnssec_ok: bool,
    pub version: u8,
    /// (code, data) options, e.g. a cookie: (10, 8 random bytes).
    pub options: Vec<(u16, Vec<u8>)>,
}

impl Default for EdnsQuery {
    fn default() -> Self {
        EdnsQuery { payload: 1232, dnssec_ok: false, version: 0, options: Vec::new() }
    }
}

/// A standard query for `name` (case kept as given) and `qtype`.
pub fn query(id: u16, name: &str, qtype: RecordType, edns: Option<EdnsQuery>) -> Result<Vec<u8>> {
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name)?, qtype));
    if let Some(e) = edns {
        let mut edns = Edns::new();
        edns.set_max_payload(e.payload).set_dnssec_ok(e.dnssec_ok).set_version(e.version);
        for (code, data) in e.options {
            edns.options_mut().insert(EdnsOption::Unknown(code, data));
        }
        msg.set_edns(edns);
    }
    Ok(msg.to_vec()?)
}

/// A UDP socket in the client namespace, with a receive timeout.
pub fn udp_socket(ns: &str, v6: bool) -> Result<UdpSocket> {
    let bind: SocketAddr = if v6 { "[::]:0".parse()? } else { "0.0.0.0:0".parse()? };
    let sock = netns::run_in(ns, move || UdpSocket::bind(bind))??;
    sock.set_read_timeout(Some(TIMEOUT))?;
    Ok(sock)
}

/// A UDP socket in the client namespace bound to a given source address.
pub fn udp_socket_from(ns: &str, source: IpAddr) -> Result<UdpSocket> {
    let bind = SocketAddr::new(source, 0);
    let sock = netns::run_in(ns, move || UdpSocket::bind(bind))??;
    sock.set_read_timeout(Some(TIMEOUT))?;
    Ok(sock)
}

/// Sends `bytes` and returns the first datagram that comes back with the same ID.
pub fn exchange_udp(sock: &UdpSocket, server: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>> {
    sock.send_to(bytes, server)?;
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = sock.recv_from(&mut buf).context("no UDP reply")?;
        if from == server && n >= 2 && buf[..2] == bytes[..2] {
            return Ok(buf[..n].to_vec());
        }
    }
}

/// Sends `bytes` and expects no reply within `wait`.
pub fn expect_no_udp_reply(sock: &UdpSocket, server: SocketAddr, bytes: &[u8], wait: Duration) -> Result<()> {
    sock.set_read_timeout(Some(wait))?;
    sock.send_to(bytes, server)?;
    let mut buf = [0u8; 4096];
    let got = sock.recv_from(&mut buf);
    sock.set_read_timeout(Some(TIMEOUT))?;
    match got {
        Ok((n, from)) => bail!("unexpected {n}-byte reply from {from}: {:02x?}", &buf[..n]),
        Err(_) => Ok(()),
    }
}

/// One query over TCP from the client namespace.
pub fn exchange_tcp(ns: &str, server: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>> {
    let mut stream = netns::run_in(ns, move || TcpStream::connect_timeout(&server, TIMEOUT))??;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(bytes);
    stream.write_all(&framed)?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply)?;
    Ok(reply)
}

pub fn parse(bytes: &[u8]) -> Result<Message> {
    Ok(Message::from_bytes(bytes)?)
}

/// The A/AAAA addresses in a reply's answer section, in order.
pub fn addresses(msg: &Message) -> Vec<IpAddr> {
    msg.answers()
        .iter()
        .filter_map(|r| match r.data() {
            Some(RData::A(a)) => Some(IpAddr::V4(a.0)),
            Some(RData::AAAA(a)) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// Whether the reply carries an OPT record, and its advertised payload size.
pub fn edns_payload(msg: &Message) -> Option<u16> {
    msg.extensions().as_ref().map(|e| e.max_payload())
}

pub fn has_option(msg: &Message, code: u16) -> bool {
    msg.extensions().as_ref().is_some_and(|e| e.option(EdnsCode::from(code)).is_some())
}

/// The scope prefix length of the reply's EDNS Client Subnet option, if it has one.
pub fn ecs_scope(msg: &Message) -> Option<u8> {
    let option = msg.extensions().as_ref()?.option(EdnsCode::Subnet)?;
    let wire: Vec<u8> = match option {
        EdnsOption::Subnet(subnet) => subnet.try_into().ok()?,
        EdnsOption::Unknown(_, data) => data.clone(),
        _ => return None,
    };
    wire.get(3).copied() // family (2 bytes), source prefix, scope prefix, address
}
