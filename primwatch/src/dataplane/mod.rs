//! Stage 4, the dataplane: the XDP program — loading it, attaching it, pinning its maps,
//! reading its counters and forwarding its log lines (here); writing the answers into its
//! maps (`publish`), the cookie secret (`cookies`), this host's addresses (`host_map`).
//!
//! May import: `sys`, `dns`, `config`, `answers`.

pub mod cookies;
pub(crate) mod host_map;
pub(crate) mod map_batch;
pub mod publish;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::{
    maps::{HashMap, MapData, PerCpuArray},
    programs::{
        links::{FdLink, PinnedLink},
        xdp::XdpLink,
        Xdp, XdpMode as AyaXdpMode,
    },
    Ebpf, EbpfLoader,
};
use primwatch_common::{Counters, NameEntry, NameKey};
use tracing::{debug, info, warn};

use crate::{
    config::XdpMode,
    dataplane::host_map::HostMapWriter,
    dataplane::publish::{NameMapWriter, ViewMapWriter},
};

/// The compiled XDP object, built by build.rs from primwatch-ebpf.
pub static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/primwatch"));

/// The answering program, the one `attach` puts on `server.interfaces`.
pub const ANSWER_PROGRAM: &str = "primwatch";
/// A program that passes every packet (tests attach it to the client end of a veth pair).
pub const PASS_PROGRAM: &str = "primwatch_pass";
/// DNS cookies, tail-called by the answering program (see the XDP program's `cookie`).
pub const COOKIE_PROGRAM: &str = "primwatch_cookie";
/// The slow-path guard, tail-called for the queries the answering program passes.
pub const SLOW_PATH_PROGRAM: &str = "primwatch_slow_path";
/// Negative answers for unsigned zones, tail-called before the guard.
pub const NEGATIVE_PROGRAM: &str = "primwatch_negative";
const COOKIE_PROGRAMS_MAP: &str = "COOKIE_PROGRAMS";
/// The tap's programs (see the XDP program's `tap`), tail-called while it records.
pub const TAP_RECEIVED_PROGRAM: &str = "primwatch_tap_received";
/// See `TAP_RECEIVED_PROGRAM`.
pub const TAP_EXIT_PROGRAM: &str = "primwatch_tap_exit";
const TAP_SETTINGS_MAP: &str = "TAP_SETTINGS";
const TAP_SETTINGS_PIN: &str = "tap_settings";
/// Not pinned: its records are this process's to read.
const TAP_EVENTS_MAP: &str = "TAP_EVENTS";
/// A bare reflector (the throughput bench's ceiling); loaded only when attached.
pub const REFLECT_PROGRAM: &str = "primwatch_reflect";
const NAMES_MAP: &str = "NAMES";
const COUNTERS_MAP: &str = "COUNTERS";
const VIEWS_V4_MAP: &str = "VIEWS_V4";
const VIEWS_V6_MAP: &str = "VIEWS_V6";
const SETTINGS_MAP: &str = "SETTINGS";
const NSID_MAP: &str = "NSID";
const NAME_ANSWERS_MAP: &str = "NAME_ANSWERS";
const RRSETS_MAP: &str = "RRSETS";
const SET_VERSIONS_MAP: &str = "SET_VERSIONS";
const RRSIGS_MAP: &str = "RRSIGS";
const HOST_MAP: &str = "HOST";
const RRL_MAP: &str = "RRL";
const RRL_SETTINGS_MAP: &str = "RRL_SETTINGS";
const RRL_EXEMPT_V4_MAP: &str = "RRL_EXEMPT_V4";
const RRL_EXEMPT_V6_MAP: &str = "RRL_EXEMPT_V6";
const COOKIE_SETTINGS_MAP: &str = "COOKIE_SETTINGS";
const SLOW_PATH_SETTINGS_MAP: &str = "SLOW_PATH_SETTINGS";
const SLOW_PATH_EXEMPT_V4_MAP: &str = "SLOW_PATH_EXEMPT_V4";
const SLOW_PATH_EXEMPT_V6_MAP: &str = "SLOW_PATH_EXEMPT_V6";
const SLOW_PATH_TOTAL_MAP: &str = "SLOW_PATH_TOTAL";
const NEGATIVE_SETTINGS_MAP: &str = "NEGATIVE_SETTINGS";
const ZONE_NAMES_MAP: &str = "ZONE_NAMES";
const ZONE_SOAS_MAP: &str = "ZONE_SOAS";
/// Not pinned: the secrets stay inside the program and this process.
const COOKIE_SECRETS_MAP: &str = "COOKIE_SECRETS";
/// aya-log's ring of the program's log lines (present when the program logs).
const LOG_RING_MAP: &str = "AYA_LOGS";
/// File names of the pins under the pin directory.
pub const NAMES_PIN: &str = "names";
/// The counters map's pin (read by `pinned_counters`).
pub const COUNTERS_PIN: &str = "counters";
/// (map, pin file) for every map that is pinned.
const PINS: [(&str, &str); 25] = [
    (NAME_ANSWERS_MAP, "name_answers"),
    (NAMES_MAP, NAMES_PIN),
    (RRSETS_MAP, "rrsets"),
    (SET_VERSIONS_MAP, "set_versions"),
    (RRSIGS_MAP, "rrsigs"),
    (COUNTERS_MAP, COUNTERS_PIN),
    (VIEWS_V4_MAP, "views_v4"),
    (VIEWS_V6_MAP, "views_v6"),
    (SETTINGS_MAP, "settings"),
    (NSID_MAP, "nsid"),
    (TAP_SETTINGS_MAP, TAP_SETTINGS_PIN),
    (HOST_MAP, "host"),
    (RRL_MAP, "rrl"),
    (RRL_SETTINGS_MAP, "rrl_settings"),
    (RRL_EXEMPT_V4_MAP, "rrl_exempt_v4"),
    (RRL_EXEMPT_V6_MAP, "rrl_exempt_v6"),
    (COOKIE_SETTINGS_MAP, "cookie_settings"),
    (SLOW_PATH_SETTINGS_MAP, "slow_path_settings"),
    (SLOW_PATH_EXEMPT_V4_MAP, "slow_path_exempt_v4"),
    (SLOW_PATH_EXEMPT_V6_MAP, "slow_path_exempt_v6"),
    (SLOW_PATH_TOTAL_MAP, "slow_path_total"),
    (NEGATIVE_SETTINGS_MAP, "negative_settings"),
    (ZONE_NAMES_MAP, "zone_names"),
    (ZONE_SOAS_MAP, "zone_soas"),
    // Pinned so that the kernel keeps its entries while the program answers without
    // us (on_stop = "keep"): a program array is emptied when its last user goes.
    (COOKIE_PROGRAMS_MAP, "cookie_programs"),
];

/// How the answering program came to be on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// Attached now, in this mode.
    Fresh(XdpMode),
    /// The previous run's pinned link was still attached; its program was replaced by
    /// ours in one kernel operation (bpf_link_update), so no packet saw neither.
    Adopted,
}

/// The pin that keeps the answering program attached to an interface after we exit.
pub fn link_pin(pin_dir: &Path, interface: &str) -> PathBuf {
    pin_dir.join(format!("link_{interface}"))
}

/// The loaded XDP object (its programs and the maps not yet handed to a writer), with the
/// attachments and pins this run made or adopted.
pub struct Dataplane {
    ebpf: Ebpf,
    /// (program, interface, link) for unpinned attachments (the tests' pass program).
    attached: Vec<(String, String, aya::programs::xdp::XdpLinkId)>,
    /// (interface, link, its pin): the answering program's attachments.
    links: Vec<(String, FdLink, PathBuf)>,
    pins: Vec<PathBuf>,
}

impl Dataplane {
    /// Loads (and so verifies) both programs; attaches nothing.
    pub fn load(port: u16) -> Result<Dataplane> {
        Dataplane::load_with(port, &crate::config::MapCapacities::default())
    }

    /// As `load`, with the maps sized as `capacities` says.
    pub fn load_with(port: u16, capacities: &crate::config::MapCapacities) -> Result<Dataplane> {
        let mut ebpf = EbpfLoader::new()
            .override_global("DNS_PORT", &port, true)
            .map_max_entries(RRL_MAP, capacities.rrl_table)
            .map_max_entries(NAMES_MAP, capacities.names)
            .map_max_entries(NAME_ANSWERS_MAP, capacities.names * primwatch_common::NAME_ANSWERS_PER_SLOT as u32)
            .map_max_entries(RRSETS_MAP, 2 * capacities.record_sets)
            .map_max_entries(SET_VERSIONS_MAP, capacities.record_sets)
            .map_max_entries(RRSIGS_MAP, capacities.signatures)
            .map_max_entries(ZONE_NAMES_MAP, capacities.zone_names)
            .load(XDP_OBJECT)
            .context("loading the XDP object")?;
        for name in [
            ANSWER_PROGRAM,
            PASS_PROGRAM,
            COOKIE_PROGRAM,
            SLOW_PATH_PROGRAM,
            NEGATIVE_PROGRAM,
            TAP_RECEIVED_PROGRAM,
            TAP_EXIT_PROGRAM,
        ] {
            let program: &mut Xdp =
                ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing from the object"))?.try_into()?;
            program.load().with_context(|| format!("verifying program {name}"))?;
        }
        // The tail calls between the answering program, the cookie program, the guard
        // and the negative answers.
        let mut fds = Vec::new();
        for (slot, name) in [
            (primwatch_common::COOKIE_PROGRAM_SLOT, COOKIE_PROGRAM),
            (primwatch_common::ANSWER_PROGRAM_SLOT, ANSWER_PROGRAM),
            (primwatch_common::SLOW_PATH_PROGRAM_SLOT, SLOW_PATH_PROGRAM),
            (primwatch_common::NEGATIVE_PROGRAM_SLOT, NEGATIVE_PROGRAM),
            (primwatch_common::TAP_RECEIVED_PROGRAM_SLOT, TAP_RECEIVED_PROGRAM),
            (primwatch_common::TAP_EXIT_PROGRAM_SLOT, TAP_EXIT_PROGRAM),
        ] {
            let program: &Xdp = ebpf.program(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?;
            fds.push((slot, name, program.fd()?.try_clone()?));
        }
        let mut slots: aya::maps::ProgramArray<&mut aya::maps::MapData> = ebpf
            .map_mut(COOKIE_PROGRAMS_MAP)
            .ok_or_else(|| anyhow!("map {COOKIE_PROGRAMS_MAP} missing"))?
            .try_into()?;
        for (slot, name, fd) in &fds {
            slots.set(*slot, fd, 0).with_context(|| format!("putting {name} into {COOKIE_PROGRAMS_MAP}"))?;
        }
        Ok(Dataplane { ebpf, attached: Vec::new(), links: Vec::new(), pins: Vec::new() })
    }

    /// The object's XDP program `name` (one of the `*_PROGRAM` names); Err if there is none.
    pub fn program(&self, name: &str) -> Result<&Xdp> {
        Ok(self.ebpf.program(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?)
    }

    /// Puts the answering program on `interface` through a link pinned in `pin_dir`, so
    /// it keeps answering if we die (fail static). A link left pinned by a previous run
    /// is adopted: our program replaces its program atomically, without detaching.
    pub fn attach(&mut self, interface: &str, mode: XdpMode, pin_dir: &Path) -> Result<Attachment> {
        let pin = link_pin(pin_dir, interface);
        if pin.exists() {
            match self.adopt(interface, &pin) {
                Ok(()) => return Ok(Attachment::Adopted),
                Err(e) => {
                    // E.g. the interface was deleted and re-created: the old link is defunct.
                    warn!(interface, error = %format!("{e:#}"), "cannot adopt the pinned XDP link; attaching afresh");
                    std::fs::remove_file(&pin).with_context(|| format!("removing {}", pin.display()))?;
                }
            }
        }
        let (id, used) = self.attach_link(ANSWER_PROGRAM, interface, mode)?;
        let program = self.xdp_mut(ANSWER_PROGRAM)?;
        let link: XdpLink = program.take_link(id)?;
        match FdLink::try_from(link) {
            Ok(link) => {
                let pinned = link.pin(&pin).with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
                self.links.push((interface.to_string(), pinned.into(), pin));
            }
            Err(e) => {
                bail!("XDP on {interface} was attached through netlink, not a BPF link, so it cannot be pinned: {e}")
            }
        }
        Ok(Attachment::Fresh(used))
    }

    fn adopt(&mut self, interface: &str, pin: &Path) -> Result<()> {
        let pinned = PinnedLink::from_pin(pin).with_context(|| format!("opening {}", pin.display()))?;
        let link = XdpLink::try_from(FdLink::from(pinned)).context("the pin is not an XDP link")?;
        let program = self.xdp_mut(ANSWER_PROGRAM)?;
        let id = program.attach_to_link(link).context("replacing the program on the link")?;
        let link: FdLink = program.take_link(id)?.try_into().context("the adopted link")?;
        info!(interface, pin = %pin.display(), "adopted the XDP link left by the previous run; program replaced without detaching");
        self.links.push((interface.to_string(), link, pin.to_path_buf()));
        Ok(())
    }

    fn xdp_mut(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self.ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?)
    }

    /// Attaches one of the object's programs (tests attach `PASS_PROGRAM` to the client
    /// end of a veth: native-mode XDP_TX on veth needs a program on the peer).
    pub fn attach_program(&mut self, name: &str, interface: &str, mode: XdpMode) -> Result<XdpMode> {
        let program = self.xdp_mut(name)?;
        if program.fd().is_err() {
            program.load().with_context(|| format!("verifying program {name}"))?;
        }
        let (link, used) = self.attach_link(name, interface, mode)?;
        self.attached.push((name.to_string(), interface.to_string(), link));
        Ok(used)
    }

    /// Attaches `name` to `interface` (falling back to generic mode for `auto`); the
    /// link stays with the program until taken or detached.
    fn attach_link(
        &mut self,
        name: &str,
        interface: &str,
        mode: XdpMode,
    ) -> Result<(aya::programs::xdp::XdpLinkId, XdpMode)> {
        let program = self.xdp_mut(name)?;
        let (link, used) = match mode {
            XdpMode::Native => (program.attach(interface, AyaXdpMode::Driver), XdpMode::Native),
            XdpMode::Skb => (program.attach(interface, AyaXdpMode::Skb), XdpMode::Skb),
            XdpMode::Auto => match program.attach(interface, AyaXdpMode::Driver) {
                Ok(link) => (Ok(link), XdpMode::Native),
                Err(e) => {
                    warn!(interface, error = %e, "native XDP not available, using generic (SKB) mode");
                    (program.attach(interface, AyaXdpMode::Skb), XdpMode::Skb)
                }
            },
        };
        let link = link.with_context(|| format!("attaching XDP to {interface} ({mode:?} mode)"))?;
        info!(program = name, interface, mode = ?used, "XDP program attached");
        Ok((link, used))
    }

    /// Pins the maps under `dir` (bpffs), replacing pins a crashed run left behind.
    pub fn pin_maps(&mut self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating {} (is bpffs mounted on /sys/fs/bpf?)", dir.display()))?;
        for (map, file) in PINS {
            let path = dir.join(file);
            if path.exists() {
                info!(path = %path.display(), "replacing the previous run's map pin");
                std::fs::remove_file(&path)?;
            }
            self.ebpf
                .map(map)
                .ok_or_else(|| anyhow!("map {map} missing"))?
                .pin(&path)
                .with_context(|| format!("pinning {map} at {}", path.display()))?;
            self.pins.push(path);
        }
        Ok(())
    }

    /// The writers of every map answers are built from, in their publish order.
    pub fn answer_maps(&mut self) -> Result<crate::dataplane::publish::AnswerMaps> {
        let signatures = self.ebpf.take_map(RRSIGS_MAP).ok_or_else(|| anyhow!("map {RRSIGS_MAP} missing"))?;
        Ok(crate::dataplane::publish::AnswerMaps::new(
            self.names_writer()?,
            self.views_writer()?,
            self.rrl_writer()?,
            crate::answers::signatures::SignatureWriter::new(signatures.try_into()?)?,
        ))
    }

    fn names_writer(&mut self) -> Result<NameMapWriter> {
        let mut take = |name: &str| self.ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing"));
        let map: HashMap<MapData, NameKey, NameEntry> = take(NAMES_MAP)?.try_into()?;
        let answers = take(NAME_ANSWERS_MAP)?.try_into()?;
        let sets = crate::dataplane::publish::RecordSetWriter::new(
            take(RRSETS_MAP)?.try_into()?,
            take(SET_VERSIONS_MAP)?.try_into()?,
        )?;
        NameMapWriter::new(map, answers, sets)
    }

    /// The writer of the RRL and slow-path settings and exempt prefixes (see
    /// `publish::RrlMapWriter`).
    fn rrl_writer(&mut self) -> Result<crate::dataplane::publish::RrlMapWriter> {
        let mut take = |name: &str| self.ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing"));
        Ok(crate::dataplane::publish::RrlMapWriter {
            settings: take(RRL_SETTINGS_MAP)?.try_into()?,
            exempt: crate::dataplane::publish::ExemptTries {
                v4: take(RRL_EXEMPT_V4_MAP)?.try_into()?,
                v6: take(RRL_EXEMPT_V6_MAP)?.try_into()?,
                name: "rrl_exempt",
            },
            slow_path_settings: take(SLOW_PATH_SETTINGS_MAP)?.try_into()?,
            slow_path_exempt: crate::dataplane::publish::ExemptTries {
                v4: take(SLOW_PATH_EXEMPT_V4_MAP)?.try_into()?,
                v6: take(SLOW_PATH_EXEMPT_V6_MAP)?.try_into()?,
                name: "slow_path_exempt",
            },
        })
    }

    /// The writer of the DNS cookie secrets and settings (see
    /// `publish::CookieMapWriter`); cookies are off until it installs a secret.
    pub fn cookie_writer(&mut self) -> Result<crate::dataplane::publish::CookieMapWriter> {
        let mut take = |name: &str| self.ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing"));
        Ok(crate::dataplane::publish::CookieMapWriter {
            settings: take(COOKIE_SETTINGS_MAP)?.try_into()?,
            secrets: take(COOKIE_SECRETS_MAP)?.try_into()?,
            written: Default::default(),
            current: None,
        })
    }

    /// The writer of the zones' names and SOAs for negative answers (see `zone_data`).
    pub fn negative_writer(&mut self) -> Result<crate::answers::zone_data::NegativeMapWriter> {
        let mut take = |name: &str| self.ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing"));
        Ok(crate::answers::zone_data::NegativeMapWriter::new(
            take(ZONE_NAMES_MAP)?.try_into()?,
            take(ZONE_SOAS_MAP)?.try_into()?,
            take(NEGATIVE_SETTINGS_MAP)?.try_into()?,
        ))
    }

    fn views_writer(&mut self) -> Result<ViewMapWriter> {
        let mut take = |name: &str| self.ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing"));
        Ok(ViewMapWriter {
            v4: take(VIEWS_V4_MAP)?.try_into()?,
            v6: take(VIEWS_V6_MAP)?.try_into()?,
            settings: take(SETTINGS_MAP)?.try_into()?,
            nsid: take(NSID_MAP)?.try_into()?,
        })
    }

    /// The tap's maps: what it records (all off as taken) and the ring of records.
    pub fn tap_maps(&mut self) -> Result<crate::tap::TapMaps> {
        let mut take = |name: &str| self.ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing"));
        let mut settings: aya::maps::Array<MapData, primwatch_common::TapSettings> =
            take(TAP_SETTINGS_MAP)?.try_into()?;
        settings.set(0, primwatch_common::TapSettings::default(), 0).context("writing tap_settings")?;
        Ok(crate::tap::TapMaps { settings, events: take(TAP_EVENTS_MAP)?.try_into()? })
    }

    /// The writer of this host's MACs and addresses (see `host_map`).
    pub fn host_writer(&mut self) -> Result<HostMapWriter> {
        let map = self.ebpf.take_map(HOST_MAP).ok_or_else(|| anyhow!("host map taken"))?;
        Ok(HostMapWriter::new(map.try_into()?))
    }

    /// The program's counters, summed over the CPUs.
    pub fn counters(&self) -> Result<Counters> {
        let map = self.ebpf.map(COUNTERS_MAP).ok_or_else(|| anyhow!("counters map missing"))?;
        let array: PerCpuArray<&MapData, Counters> = PerCpuArray::try_from(map)?;
        sum_per_cpu(&array)
    }

    /// Forwards aya-log records from the program into our `tracing` logs. A program
    /// built without log statements (the release build logs nothing on the hot path)
    /// has no `AYA_LOGS` ring: nothing to forward, and nothing wrong.
    pub fn start_log_forwarding(&mut self) {
        if self.ebpf.map(LOG_RING_MAP).is_none() {
            return debug!("the XDP program logs nothing (no AYA_LOGS ring); no log forwarding");
        }
        match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(logger) => {
                tokio::spawn(async move {
                    // SAFETY: the logger owns the ring buffer fd and moves into the AsyncFd, which
                    // deregisters it before dropping it.
                    let registered = unsafe {
                        tokio::io::unix::AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE)
                    };
                    let mut fd = match registered {
                        Ok(fd) => fd,
                        Err(e) => return warn!(error = %e, "cannot poll XDP log ring"),
                    };
                    loop {
                        let Ok(mut guard) = fd.readable_mut().await else { return };
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                });
            }
            Err(e) => warn!(error = %e, "XDP log forwarding unavailable"),
        }
    }

    /// Exits leaving the answering program attached and the maps pinned: XDP keeps
    /// answering the last answers until a new controller adopts it (or `primwatch
    /// detach`). Only unpinned attachments go.
    pub fn leave_attached(mut self) {
        for (interface, _, pin) in &self.links {
            info!(interface, pin = %pin.display(), "leaving XDP attached (fail static); the next run adopts it");
        }
        self.links.clear(); // closing our fds; the pins hold the links
        self.pins.clear();
    }

    /// Detaches from every interface and removes the pins.
    pub fn shutdown(mut self) -> Result<()> {
        for (interface, link, pin) in std::mem::take(&mut self.links) {
            // Removing the pin and closing the last fd detaches.
            if let Err(e) = std::fs::remove_file(&pin) {
                warn!(path = %pin.display(), error = %e, "removing link pin");
            }
            drop(link);
            info!(interface, "XDP program detached");
        }
        for (name, interface, link) in std::mem::take(&mut self.attached) {
            let program: &mut Xdp =
                self.ebpf.program_mut(&name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?;
            match program.detach(link) {
                Ok(()) => info!(interface, "XDP program detached"),
                Err(e) => warn!(interface, error = %e, "detaching XDP"),
            }
        }
        for pin in self.pins.drain(..) {
            if let Err(e) = std::fs::remove_file(&pin) {
                warn!(path = %pin.display(), error = %e, "removing pin");
            }
            // The directory goes too once it is empty (remove_dir refuses otherwise).
            if let Some(dir) = pin.parent() {
                let _ = std::fs::remove_dir(dir);
            }
        }
        Ok(())
    }
}

fn sum_per_cpu<T: std::borrow::Borrow<MapData>>(array: &PerCpuArray<T, Counters>) -> Result<Counters> {
    let mut total = Counters::default();
    for per_cpu in array.get(&0, 0)?.iter() {
        total.add(per_cpu);
    }
    Ok(total)
}

/// Reads the counters of a running primwatch from its pinned map.
pub fn pinned_counters(pin_dir: &Path) -> Result<Counters> {
    let path = pin_dir.join(COUNTERS_PIN);
    let data =
        MapData::from_pin(&path).with_context(|| format!("opening {} (is primwatch running?)", path.display()))?;
    let array: PerCpuArray<MapData, Counters> = PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))?;
    sum_per_cpu(&array)
}

/// Turns the tap off through its pin: a stopping controller leaves no recording on
/// behind it (the hub does the same as it ends; this holds even if it could not).
pub fn clear_pinned_tap_settings(pin_dir: &Path) -> Result<()> {
    let path = pin_dir.join(TAP_SETTINGS_PIN);
    let data = MapData::from_pin(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut array: aya::maps::Array<MapData, primwatch_common::TapSettings> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data))?;
    array.set(0, primwatch_common::TapSettings::default(), 0).context("writing tap_settings")?;
    Ok(())
}

/// `counters` by field name (`Counters::FIELD_NAMES`).
pub fn counters_table(counters: &Counters) -> BTreeMap<&'static str, u64> {
    Counters::FIELD_NAMES.iter().copied().zip(counters.as_array()).collect()
}

/// `primwatch detach`: takes a stopped controller's XDP program off every interface
/// and removes its pins (links first: with the links gone, queries go to the DNS server).
pub fn detach_pinned(pin_dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(pin_dir).with_context(|| format!("reading {}", pin_dir.display()))?;
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    files.sort_by_key(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("link_")));
    let mut removed = Vec::new();
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let ours = name.starts_with("link_") || PINS.iter().any(|(_, pin)| *pin == name);
        if ours {
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
            removed.push(name);
        }
    }
    let _ = std::fs::remove_dir(pin_dir);
    Ok(removed)
}

/// Interfaces with a pinned link in `pin_dir` (a previous run's attachments).
pub fn pinned_links(pin_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(pin_dir) else { return Vec::new() };
    let mut found: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().to_string_lossy().strip_prefix("link_").map(str::to_string))
        .collect();
    found.sort();
    found
}

/// Err, saying how to mount one, unless a bpf filesystem is mounted (per /proc/mounts).
pub fn ensure_bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    if !mounts.lines().any(|l| l.split(' ').nth(2) == Some("bpf")) {
        bail!("bpffs is not mounted on /sys/fs/bpf; run `mount -t bpf bpf /sys/fs/bpf` (note that `ip netns exec` remounts /sys: use `nsenter --net=/run/netns/NAME` to keep the host bpffs)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Maps the program keeps to itself: per-CPU scratch space between its stages, and
    /// the tap's record being built.
    const PRIVATE_MAPS: [&str; 2] = ["SCRATCH", "TAP_BUFFER"];

    /// The map names above are the eBPF crate's `#[map]` statics spelled as strings: the
    /// compiled object must define exactly these, so a map renamed or added on one side
    /// only fails here rather than at load on an operator's machine.
    #[test]
    fn the_object_defines_exactly_the_maps_named_here() {
        let object = aya_obj::Object::parse(XDP_OBJECT).expect("the embedded XDP object parses");
        // Sections for globals (`.rodata`, `.bss`: DNS_PORT) are maps to aya; not ours to name.
        // The log ring exists only when the program logs (a release build logs nothing).
        let ours = |n: &&str| !n.starts_with('.') && *n != LOG_RING_MAP;
        let defined: BTreeSet<&str> = object.maps.keys().map(String::as_str).filter(ours).collect();
        let named: BTreeSet<&str> =
            PINS.iter().map(|(map, _)| *map).chain([COOKIE_SECRETS_MAP, TAP_EVENTS_MAP]).chain(PRIVATE_MAPS).collect();
        assert_eq!(defined, named);
        let pins: BTreeSet<&str> = PINS.iter().map(|(_, pin)| *pin).collect();
        assert_eq!(pins.len(), PINS.len(), "two maps pinned under one file name");
    }
}
