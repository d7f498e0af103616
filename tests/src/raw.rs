//! An AF_PACKET socket on the client veth: sends hand-built frames (e.g. 802.1Q-tagged)
//! and receives replies as they crossed the wire. The kernel moves a received VLAN tag
//! into packet metadata; `recv` puts it back so callers see the frame as sent.

use std::{
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::netns;

const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const PACKET_OUTGOING: u8 = 4;

#[repr(C)]
struct TpacketAuxdata {
    tp_status: u32,
    tp_len: u32,
    tp_snaplen: u32,
    tp_mac: u16,
    tp_net: u16,
    tp_vlan_tci: u16,
    tp_vlan_tpid: u16,
}

pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    pub fn open(ns: &str, dev: &str) -> Result<PacketSocket> {
        let dev = std::ffi::CString::new(dev)?;
        netns::run_in(ns, move || -> Result<PacketSocket> {
            unsafe {
                let ifindex = libc::if_nametoindex(dev.as_ptr()) as i32;
                if ifindex == 0 {
                    bail!("no interface {dev:?}");
                }
                let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32);
                if fd < 0 {
                    bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let mut addr: libc::sockaddr_ll = zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                addr.sll_ifindex = ifindex;
                if libc::bind(
                    fd.as_raw_fd(),
                    &addr as *const _ as *const libc::sockaddr,
                    size_of::<libc::sockaddr_ll>() as u32,
                ) != 0
                {
                    bail!("bind: {}", std::io::Error::last_os_error());
                }
                let one: i32 = 1;
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_AUXDATA,
                    &one as *const _ as *const _,
                    4,
                );
                let tv = libc::timeval { tv_sec: 0, tv_usec: 100_000 };
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    &tv as *const _ as *const _,
                    size_of::<libc::timeval>() as u32,
                );
                Ok(PacketSocket { fd, ifindex })
            }
        })?
    }

    pub fn send(&self, frame: &[u8]) -> Result<()> {
        unsafe {
            let mut addr: libc::sockaddr_ll = zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = self.ifindex;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            let n = libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const _,
                frame.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_ll>() as u32,
            );
            if n < 0 {
                bail!("sendto: {}", std::io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// Sends `frames` with as few system calls as sendmmsg allows (the socket is bound
    /// to its interface); returns how many went out.
    pub fn send_batch(&self, frames: &[Vec<u8>]) -> Result<usize> {
        let mut iovs: Vec<libc::iovec> =
            frames.iter().map(|f| libc::iovec { iov_base: f.as_ptr() as *mut _, iov_len: f.len() }).collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: an all-zero mmsghdr is valid; the iovec outlives the call.
                let mut m: libc::mmsghdr = unsafe { zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let mut sent = 0;
        while sent < msgs.len() {
            // SAFETY: msgs points at len valid headers whose buffers live in `frames`.
            let n = unsafe {
                libc::sendmmsg(self.fd.as_raw_fd(), msgs[sent..].as_mut_ptr(), (msgs.len() - sent) as u32, 0)
            };
            if n <= 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOBUFS) || e.raw_os_error() == Some(libc::EAGAIN) {
                    return Ok(sent);
                }
                bail!("sendmmsg: {e}");
            }
            sent += n as usize;
        }
        Ok(sent)
    }

    /// The next incoming frame for which `wanted` holds, within `timeout`.
    pub fn recv(&self, timeout: Duration, wanted: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(frame) = self.recv_one() {
                if wanted(&frame) {
                    return Some(frame);
                }
            }
        }
        None
    }

    fn recv_one(&self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        let mut control = [0u8; 64];
        unsafe {
            let mut from: libc::sockaddr_ll = zeroed();
            let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut _, iov_len: buf.len() };
            let mut msg: libc::msghdr = zeroed();
            msg.msg_name = &mut from as *mut _ as *mut _;
            msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut _;
            msg.msg_controllen = control.len();
            let n = libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0);
            if n <= 0 || from.sll_pkttype == PACKET_OUTGOING {
                return None;
            }
            buf.truncate(n as usize);
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_PACKET && (*cmsg).cmsg_type == libc::PACKET_AUXDATA {
                    let aux = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const TpacketAuxdata);
                    if aux.tp_status & TP_STATUS_VLAN_VALID != 0 && buf.len() >= 12 {
                        let tpid = if aux.tp_vlan_tpid == 0 { 0x8100 } else { aux.tp_vlan_tpid };
                        let mut tag = tpid.to_be_bytes().to_vec();
                        tag.extend_from_slice(&aux.tp_vlan_tci.to_be_bytes());
                        buf.splice(12..12, tag);
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        Some(buf)
    }
}
