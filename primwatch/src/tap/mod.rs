//! The tap stage: frames the XDP program recorded (see its `tap` module and
//! `primwatch_common::TapHeader`) read from the `TAP_EVENTS` ring, each packet's two
//! records paired into a [`TapPacket`], and handed to whoever listens: `primwatch
//! capture` sessions (`capture`, written as pcap by the client) and the dnstap writer
//! (`dnstap`). The hub turns recording on in XDP only while someone listens, and a
//! listener that falls behind loses packets (counted), never slows XDP down.
//!
//! May import: `sys`, `dns`, `config` (`dataplane` hands it the maps, `ops` serves
//! capture sessions through it).

pub mod capture;
pub mod dnstap;
pub mod pcap;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result};
use aya::maps::{Array, MapData, RingBuf};
use primwatch_common::{
    TapHeader, TapSettings, TAP_EXIT, TAP_FOR_CAPTURE, TAP_FOR_DNSTAP, TAP_HEADER_LEN, TAP_RECEIVED,
};
use tokio::{
    io::unix::AsyncFd,
    sync::{mpsc, watch},
};
use tracing::warn;

/// The tap's maps, as `Dataplane::tap_maps` hands them over.
pub struct TapMaps {
    /// `tap_settings`: what XDP records (one entry).
    pub settings: Array<MapData, TapSettings>,
    /// `TAP_EVENTS`: the ring XDP writes records to.
    pub events: RingBuf<MapData>,
}

/// One packet as XDP saw it: the frame as received, and what became of it.
#[derive(Debug, Clone)]
pub struct TapPacket {
    /// TAP_FOR_* bits: recorded for a capture, as a dnstap sample, or both.
    pub flags: u32,
    /// When it arrived, and when XDP was done with it.
    pub received_at: SystemTime,
    /// See `received_at`.
    pub exit_at: SystemTime,
    /// The frame as received (at most TAP_SNAPLEN bytes) and its full length.
    pub received: Vec<u8>,
    /// See `received`.
    pub received_len: u32,
    /// The XDP action: XDP_TX (answered), XDP_PASS, XDP_DROP.
    pub action: u32,
    /// For XDP_TX, the frame as sent, and its full length.
    pub sent: Option<(Vec<u8>, u32)>,
    /// The interface it arrived on.
    pub ifindex: u32,
}

/// Counters of the tap in userspace (XDP counts its own ring drops as `tap_dropped`).
#[derive(Debug, Default)]
pub struct TapStats {
    /// Packets paired from the ring.
    pub packets: AtomicU64,
    /// Packets a capture session or the dnstap writer had no room for.
    pub capture_dropped: AtomicU64,
    /// See `capture_dropped`; also what `max_per_second` held back or a collector lost.
    pub dnstap_dropped: AtomicU64,
}

/// A handle to the hub: subscribe a capture session; stop.
#[derive(Clone)]
pub struct Tap {
    subscribe: mpsc::Sender<mpsc::Sender<Arc<TapPacket>>>,
    stop: watch::Sender<bool>,
    tasks: Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    captures: Arc<std::sync::atomic::AtomicUsize>,
    /// The hub's counters.
    pub stats: Arc<TapStats>,
}

/// Packets a listener may have waiting before more are dropped for it.
pub const LISTENER_QUEUE: usize = 16384;
/// Ring records read before the hub lets its other work run.
const DRAIN_PER_WAKEUP: usize = 4096;
/// Captures running at once (each holds a control connection and a queue).
pub const MAX_CAPTURES: usize = 4;

impl Tap {
    /// Starts the hub on `maps`, and the dnstap writer when `[dnstap]` is configured
    /// (its sample recorded from the start); captures turn recording of every frame on
    /// while any runs.
    pub fn start(maps: TapMaps, dnstap: Option<&crate::config::DnstapConfig>) -> Result<Tap> {
        // SAFETY: the ring's fd is the map's own, open for as long as the RingBuf (owned by
        // the AsyncFd from here on) lives, and always the same descriptor.
        let events =
            unsafe { AsyncFd::register(maps.events) }.map_err(|e| e.into_parts().1).context("watching the tap ring")?;
        let (subscribe, subscriptions) = mpsc::channel(16);
        let (stop, stopped) = watch::channel(false);
        let stats = Arc::new(TapStats::default());
        let writer = dnstap.map(|config| (dnstap::start(config.clone(), stats.clone()), config.sample));
        let mut tasks = Vec::new();
        let hub = Hub {
            settings: maps.settings,
            written: TapSettings::default(),
            dnstap_every: writer.as_ref().map_or(0, |(_, every)| *every),
            dnstap: writer.map(|(w, _)| {
                tasks.push(w.task);
                w.queue
            }),
            captures: Vec::new(),
            pending: HashMap::new(),
            clock: Clock::now(),
            stats: stats.clone(),
        };
        tasks.insert(0, tokio::spawn(hub.run(events, subscriptions, stopped)));
        Ok(Tap { subscribe, stop, tasks: Arc::new(std::sync::Mutex::new(tasks)), captures: Default::default(), stats })
    }

    /// A capture session: every packet XDP handles from now until the receiver is
    /// dropped (or the hub is gone). Err when MAX_CAPTURES run already.
    pub async fn subscribe(&self) -> Result<(mpsc::Receiver<Arc<TapPacket>>, CaptureSlot)> {
        if self.captures.fetch_add(1, Ordering::Relaxed) >= MAX_CAPTURES {
            self.captures.fetch_sub(1, Ordering::Relaxed);
            anyhow::bail!("{MAX_CAPTURES} captures are running already");
        }
        let slot = CaptureSlot(self.captures.clone());
        let (tx, rx) = mpsc::channel(LISTENER_QUEUE);
        self.subscribe.send(tx).await.map_err(|_| anyhow::anyhow!("the tap is not running"))?;
        Ok((rx, slot))
    }

    /// Turns recording off in XDP and ends the dnstap log (STOP written), waiting up to
    /// two seconds for it.
    pub async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// XDP actions as `TapPacket::action` holds them (the kernel's `xdp_action`).
pub(crate) const XDP_DROP: u32 = 1;
/// See `XDP_DROP`.
pub(crate) const XDP_PASS: u32 = 2;
/// See `XDP_DROP`: an answer.
pub(crate) const XDP_TX: u32 = 3;

/// A running capture's place among the MAX_CAPTURES; freed when dropped.
pub struct CaptureSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for CaptureSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// CLOCK_MONOTONIC (XDP's bpf_ktime_get_ns) to wall-clock time.
#[derive(Clone, Copy)]
struct Clock {
    unix_minus_monotonic_ns: i128,
}

impl Clock {
    fn now() -> Clock {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        let monotonic = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
        let unix = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
        Clock { unix_minus_monotonic_ns: unix - monotonic }
    }

    fn wall(&self, monotonic_ns: u64) -> SystemTime {
        let unix = (monotonic_ns as i128 + self.unix_minus_monotonic_ns).max(0) as u128;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(unix.min(u64::MAX as u128) as u64)
    }
}

struct Hub {
    settings: Array<MapData, TapSettings>,
    written: TapSettings,
    dnstap_every: u32,
    dnstap: Option<mpsc::Sender<Arc<TapPacket>>>,
    captures: Vec<mpsc::Sender<Arc<TapPacket>>>,
    /// Per CPU: the received record waiting for its exit record.
    pending: HashMap<u32, (TapHeader, Vec<u8>)>,
    clock: Clock,
    stats: Arc<TapStats>,
}

impl Hub {
    async fn run(
        mut self,
        mut events: AsyncFd<RingBuf<MapData>>,
        mut subscriptions: mpsc::Receiver<mpsc::Sender<Arc<TapPacket>>>,
        mut stopped: watch::Receiver<bool>,
    ) {
        self.write_settings();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                ready = events.readable_mut() => {
                    let mut guard = match ready {
                        Ok(guard) => guard,
                        Err(e) => {
                            warn!(error = %e, "the tap ring cannot be read; recording stops");
                            break;
                        }
                    };
                    // A bounded share per wakeup: under a flood the ring refills as
                    // fast as it drains, and stop, subscriptions and the tick must still
                    // be heard.
                    let mut read = 0;
                    while read < DRAIN_PER_WAKEUP {
                        let Some(item) = guard.get_inner_mut().next() else { break };
                        self.record(&item);
                        read += 1;
                    }
                    if read < DRAIN_PER_WAKEUP {
                        guard.clear_ready();
                    } else {
                        drop(guard);
                        tokio::task::yield_now().await;
                    }
                }
                subscription = subscriptions.recv() => match subscription {
                    Some(tx) => {
                        self.captures.push(tx);
                        self.write_settings();
                    }
                    None => break,
                },
                _ = stopped.changed() => break,
                _ = tick.tick() => {
                    // Sessions whose client went away; the clock, which NTP may step.
                    self.captures.retain(|c| !c.is_closed());
                    self.write_settings();
                    self.clock = Clock::now();
                }
            }
        }
        self.captures.clear();
        self.dnstap = None;
        self.write_settings();
    }

    /// Records every frame while a capture runs, and dnstap's sample.
    fn write_settings(&mut self) {
        let wanted = TapSettings {
            capture: !self.captures.is_empty() as u32,
            dnstap_every: if self.dnstap.is_some() { self.dnstap_every } else { 0 },
        };
        if wanted != self.written {
            match self.settings.set(0, wanted, 0) {
                Ok(()) => self.written = wanted,
                Err(e) => warn!(error = %e, "writing tap_settings"),
            }
        }
    }

    /// One ring record: a received frame is held until its exit record arrives.
    fn record(&mut self, bytes: &[u8]) {
        let Some(header) = parse_header(bytes) else { return };
        let frame = bytes[TAP_HEADER_LEN..].get(..header.caplen as usize).unwrap_or(&bytes[TAP_HEADER_LEN..]).to_vec();
        match header.kind {
            TAP_RECEIVED => {
                // A received record still waiting lost its exit record to a full ring.
                self.pending.insert(header.cpu, (header, frame));
            }
            TAP_EXIT => {
                let Some((received, received_frame)) = self.pending.remove(&header.cpu) else { return };
                if received.seq != header.seq {
                    return; // this packet's received record, or the other's exit, was lost
                }
                let packet = Arc::new(TapPacket {
                    flags: received.flags,
                    received_at: self.clock.wall(received.time_ns),
                    exit_at: self.clock.wall(header.time_ns),
                    received: received_frame,
                    received_len: received.frame_len,
                    action: header.action,
                    sent: (header.caplen > 0).then_some((frame, header.frame_len)),
                    ifindex: received.ifindex,
                });
                self.stats.packets.fetch_add(1, Ordering::Relaxed);
                self.deliver(packet);
            }
            _ => {}
        }
    }

    fn deliver(&mut self, packet: Arc<TapPacket>) {
        // dnstap logs XDP's answers only: what it passes is PowerDNS's.
        if packet.flags & TAP_FOR_DNSTAP != 0 && packet.action == XDP_TX {
            if let Some(dnstap) = &self.dnstap {
                if dnstap.try_send(packet.clone()).is_err() {
                    self.stats.dnstap_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if packet.flags & TAP_FOR_CAPTURE != 0 {
            for capture in &self.captures {
                if capture.try_send(packet.clone()).is_err() && !capture.is_closed() {
                    self.stats.capture_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// The header of a ring record, or None for one too short to hold it.
fn parse_header(bytes: &[u8]) -> Option<TapHeader> {
    if bytes.len() < TAP_HEADER_LEN {
        return None;
    }
    let word = |at: usize| Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    Some(TapHeader {
        kind: word(0)?,
        flags: word(4)?,
        action: word(8)?,
        cpu: word(12)?,
        time_ns: u64::from_ne_bytes(bytes.get(16..24)?.try_into().ok()?),
        frame_len: word(24)?,
        caplen: word(28)?,
        ifindex: word(32)?,
        seq: word(36)?,
    })
}

const _: () = assert!(TAP_HEADER_LEN == 40);
