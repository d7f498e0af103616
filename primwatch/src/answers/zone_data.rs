//! Stage 4d, negative answers: what exists in the unsigned zones XDP denies names for.
//!
//! A zone with `negative_answers` (the default for unsigned zones) is transferred (AXFR, RFC 5936) from the DNS
//! server behind XDP — one truth for both paths — and its SOA serial is asked for every
//! `refresh`; a new serial (or every `FULL_TRANSFER_EVERY` regardless) means a new
//! transfer. From the zone's records and the managed names this module builds every
//! name that exists (owners, empty non-terminals, the apex), with its types and what
//! hands it to the DNS server (delegations, DNAMEs, wildcards, child zones, managed
//! names), and writes them into the XDP program's `ZONE_NAMES` map and the zone's SOA
//! into `ZONE_SOAS`; the XDP program's `negative` stage answers from them.
//!
//! Nothing partial is ever published: a zone whose transfer fails, is refused, exceeds
//! `server.max_zone_names` or does not parse keeps its last complete contents; after
//! `FAILURES_BEFORE_DROP` failed checks in a row it has none, and its denials go back
//! to the DNS server. A wrong NXDOMAIN is worse than a passed query.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{RData, Record, RecordType},
    serialize::binary::BinEncodable,
};
use primwatch_common::{
    NameKey, ZoneName, ZoneSoa, MAX_NEGATIVE_ZONES, NAME_BUF_LEN, SOA_RR_MAX, ZONE_NAME_APEX, ZONE_NAME_CNAME,
    ZONE_NAME_HANDS_OFF, ZONE_NAME_MANAGED, ZONE_NAME_WILDCARD_BELOW,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
};
use tracing::{info, warn};

use crate::{
    config::{Config, NegativeAnswers, ZoneConfig},
    dns::name::DnsName,
};

/// A transfer, however large, must finish within this.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60);
/// An SOA query must be answered within this.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// A zone is transferred again at least this often, serial or not (an edited zone
/// file whose serial was not raised is picked up).
pub const FULL_TRANSFER_EVERY: Duration = Duration::from_secs(300);
/// Failed SOA checks or transfers in a row after which a zone's negative data goes.
pub const FAILURES_BEFORE_DROP: u32 = 3;
/// Records a transfer may bring per name `server.max_zone_names` allows (a bound on
/// memory before the names are counted).
const RECORDS_PER_NAME: usize = 16;
/// DNAME (RFC 6672), which hickory-proto 0.24 has no name for.
const TYPE_DNAME: u16 = 39;

/// What one name of a zone is: `ZONE_NAME_*` flags and the types present (bit t for
/// type t < 64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NameFacts {
    /// `ZONE_NAME_*` bits.
    pub flags: u32,
    /// The record types present at the name: bit t for type t (types 64 and above are not recorded).
    pub types: u64,
}

/// A zone's contents as transferred: its SOA and every owner name with its facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneContents {
    /// The zone's apex.
    pub apex: DnsName,
    /// The SOA serial of these contents.
    pub serial: u32,
    /// The SOA record for a negative answer's authority section (see `ZoneSoa`).
    pub soa_rr: Vec<u8>,
    /// Every owner name in the zone (the apex included), with its facts.
    pub names: BTreeMap<DnsName, NameFacts>,
}

impl ZoneContents {
    /// From a zone's records (a transfer's, or a zone file's). Errors: no SOA at the
    /// apex, a record outside the zone, a name primwatch cannot hold, an SOA record
    /// longer than `SOA_RR_MAX`.
    pub fn from_records<'a>(apex: &DnsName, records: impl IntoIterator<Item = &'a Record>) -> Result<ZoneContents> {
        let mut names: BTreeMap<DnsName, NameFacts> = BTreeMap::new();
        let mut soa = None;
        for record in records {
            let owner = DnsName::from_hickory(record.name())
                .ok_or_else(|| anyhow!("owner name {} cannot be held", record.name()))?;
            if !owner.is_at_or_below(apex) {
                bail!("record {} {} lies outside zone {apex}", record.name(), record.record_type());
            }
            let rtype = record.record_type();
            let facts = names.entry(owner.clone()).or_default();
            let code = u16::from(rtype);
            if code < 64 {
                facts.types |= 1 << code;
            }
            let at_apex = owner == *apex;
            match rtype {
                RecordType::CNAME => facts.flags |= ZONE_NAME_CNAME,
                RecordType::NS if !at_apex => facts.flags |= ZONE_NAME_HANDS_OFF,
                _ if code == TYPE_DNAME => facts.flags |= ZONE_NAME_HANDS_OFF,
                RecordType::SOA if at_apex && soa.is_none() => {
                    if let Some(RData::SOA(s)) = record.data() {
                        soa = Some((s.clone(), record.ttl()));
                    }
                }
                _ => {}
            }
        }
        let (soa, ttl) = soa.ok_or_else(|| anyhow!("zone {apex} has no SOA record at its apex"))?;
        names.entry(apex.clone()).or_default().flags |= ZONE_NAME_APEX;
        Ok(ZoneContents { apex: apex.clone(), serial: soa.serial(), soa_rr: soa_rr(&soa, ttl)?, names })
    }
}

impl ZoneContents {
    /// From a zone file's text (master file format, RFC 1035 §5), `$ORIGIN` the apex.
    pub fn from_zone_file(apex: &DnsName, text: &str) -> Result<ZoneContents> {
        let origin = apex.to_hickory();
        let (_, sets) = hickory_proto::serialize::txt::Parser::new(text, None, Some(origin))
            .parse()
            .map_err(|e| anyhow!("zone file for {apex}: {e}"))?;
        let records: Vec<Record> = sets.values().flat_map(|s| s.records_without_rrsigs().cloned()).collect();
        ZoneContents::from_records(apex, &records)
    }
}

/// The SOA record as a negative answer carries it (RFC 2308 §3): owner 0xc000 (the
/// XDP program points it at the apex in the question), TTL min(SOA TTL, MINIMUM),
/// names uncompressed.
fn soa_rr(soa: &hickory_proto::rr::rdata::SOA, ttl: u32) -> Result<Vec<u8>> {
    let mut rdata = soa.mname().to_bytes()?;
    rdata.extend(soa.rname().to_bytes()?);
    for field in [soa.serial(), soa.refresh() as u32, soa.retry() as u32, soa.expire() as u32, soa.minimum()] {
        rdata.extend(field.to_be_bytes());
    }
    let mut rr = vec![0xc0, 0x00];
    rr.extend(u16::from(RecordType::SOA).to_be_bytes());
    rr.extend(1u16.to_be_bytes()); // IN
    rr.extend(ttl.min(soa.minimum()).to_be_bytes());
    rr.extend((rdata.len() as u16).to_be_bytes());
    rr.extend(rdata);
    if rr.len() > SOA_RR_MAX {
        bail!("the SOA record is {} bytes; XDP holds at most {SOA_RR_MAX}", rr.len());
    }
    Ok(rr)
}

/// The XDP entries for one zone: every name that exists in it as the DNS server
/// answers, sorted. `declared` are all declared zones (a child zone's names are the
/// child's: its apex hands off), `managed` the names primwatch serves.
pub fn zone_names<'a>(
    contents: &ZoneContents,
    declared: impl IntoIterator<Item = &'a DnsName>,
    managed: impl IntoIterator<Item = &'a DnsName>,
) -> BTreeMap<DnsName, NameFacts> {
    let apex = &contents.apex;
    let children: Vec<&DnsName> = declared.into_iter().filter(|z| *z != apex && z.is_at_or_below(apex)).collect();
    let mut names = contents.names.clone();
    for name in managed.into_iter().filter(|n| n.is_at_or_below(apex)) {
        names.entry(name.clone()).or_default().flags |= ZONE_NAME_MANAGED;
    }
    for child in &children {
        names.entry((*child).clone()).or_default().flags |= ZONE_NAME_HANDS_OFF;
    }
    // Below a delegation, a DNAME or a child apex nothing is this zone's (glue and
    // occluded names included): the name that hands off is the closest encloser.
    // Each name's ancestors are looked up (a few per name), not every hands-off name
    // tried against every name: a zone of a million names with a thousand delegations
    // stays a million short walks.
    let hands_off: std::collections::BTreeSet<DnsName> =
        names.iter().filter(|(_, f)| f.flags & ZONE_NAME_HANDS_OFF != 0).map(|(n, _)| n.clone()).collect();
    if !hands_off.is_empty() {
        names.retain(|name, _| !strictly_below_any(name, &hands_off));
    }
    // Wildcards cover the names below their parent; every ancestor up to the apex
    // exists (an empty non-terminal if it has no records).
    let owners: Vec<DnsName> = names.keys().cloned().collect();
    for owner in owners {
        if owner.is_wildcard() {
            if let Some(parent) = owner.parent() {
                names.entry(parent).or_default().flags |= ZONE_NAME_WILDCARD_BELOW;
            }
        }
        let mut above = owner.parent();
        while let Some(ancestor) = above {
            if !ancestor.is_at_or_below(apex) {
                break;
            }
            above = ancestor.parent();
            names.entry(ancestor).or_default();
        }
    }
    names
}

/// Whether `name` lies strictly below one of `owners`.
fn strictly_below_any(name: &DnsName, owners: &std::collections::BTreeSet<DnsName>) -> bool {
    let mut above = name.parent();
    while let Some(ancestor) = above {
        if owners.contains(&ancestor) {
            return true;
        }
        above = ancestor.parent();
    }
    false
}

/// The transfer of `apex` from `server` (AXFR over TCP): every record, the closing
/// SOA excluded. At most `max_records` records.
pub async fn transfer(server: SocketAddr, apex: &DnsName, max_records: usize) -> Result<Vec<Record>> {
    tokio::time::timeout(TRANSFER_TIMEOUT, transfer_within(server, apex, max_records))
        .await
        .map_err(|_| anyhow!("the transfer took longer than {}s", TRANSFER_TIMEOUT.as_secs()))?
}

async fn transfer_within(server: SocketAddr, apex: &DnsName, max_records: usize) -> Result<Vec<Record>> {
    let mut stream = TcpStream::connect(server).await.with_context(|| format!("connecting to {server}"))?;
    let id = rand::random::<u16>();
    send(&mut stream, &query(id, apex, RecordType::AXFR)).await?;
    let mut records = Vec::new();
    let mut soas = 0;
    while soas < 2 {
        let message = receive(&mut stream, id).await?;
        if message.answers().is_empty() {
            bail!("the transfer stopped before its closing SOA");
        }
        for record in message.answers() {
            if record.record_type() == RecordType::SOA {
                soas += 1;
                if soas == 2 {
                    break; // the closing SOA: the transfer is complete
                }
            }
            if records.len() == max_records {
                bail!("the zone has more than {max_records} records (raise server.max_zone_names)");
            }
            records.push(record.clone());
        }
        if records.first().is_some_and(|r| r.record_type() != RecordType::SOA) {
            bail!("the transfer does not start with the zone's SOA");
        }
    }
    Ok(records)
}

/// The SOA serial of `apex` as `server` answers it (over TCP).
pub async fn serial(server: SocketAddr, apex: &DnsName) -> Result<u32> {
    let asked = async {
        let mut stream = TcpStream::connect(server).await.with_context(|| format!("connecting to {server}"))?;
        let id = rand::random::<u16>();
        send(&mut stream, &query(id, apex, RecordType::SOA)).await?;
        let message = receive(&mut stream, id).await?;
        message
            .answers()
            .iter()
            .find_map(|r| match r.data() {
                Some(RData::SOA(soa)) if DnsName::from_hickory(r.name()).as_ref() == Some(apex) => Some(soa.serial()),
                _ => None,
            })
            .ok_or_else(|| anyhow!("no SOA record for {apex} in the answer (is the zone served there?)"))
    };
    tokio::time::timeout(QUERY_TIMEOUT, asked).await.map_err(|_| anyhow!("no answer within {QUERY_TIMEOUT:?}"))?
}

fn query(id: u16, apex: &DnsName, rtype: RecordType) -> Message {
    let mut message = Message::new();
    message.set_id(id).set_message_type(MessageType::Query).set_op_code(OpCode::Query);
    message.add_query(Query::query(apex.to_hickory(), rtype));
    message
}

async fn send(stream: &mut TcpStream, message: &Message) -> Result<()> {
    let bytes = message.to_vec()?;
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend(bytes);
    stream.write_all(&framed).await.context("sending the query")
}

/// One DNS message over TCP (RFC 1035 §4.2.2: a two-byte length first): the reply to
/// query `id`, NOERROR.
async fn receive(stream: &mut TcpStream, id: u16) -> Result<Message> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.context("reading the reply's length")?;
    let mut bytes = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut bytes).await.context("reading the reply")?;
    let message = Message::from_vec(&bytes).context("the reply does not parse")?;
    if message.id() != id || message.message_type() != MessageType::Response {
        bail!("the reply is not one to our query");
    }
    if message.response_code() != ResponseCode::NoError {
        bail!(
            "refused: {} (PowerDNS transfers to allow-axfr-ips, 127.0.0.0/8 and ::1 by default)",
            message.response_code()
        );
    }
    Ok(message)
}

/// What the zone task needs from the config: the declared zones, the managed names
/// and the map capacity.
#[derive(Debug, Clone, PartialEq)]
pub struct Inputs {
    /// Every declared zone (`[zones."APEX"]`), by apex.
    pub zones: BTreeMap<DnsName, ZoneConfig>,
    /// The names primwatch serves, in the default view and every view, sorted without duplicates.
    pub managed: Vec<DnsName>,
    /// The most zone names XDP holds (`server.max_zone_names`).
    pub capacity: usize,
}

impl Inputs {
    /// The inputs `config` gives.
    pub fn of(config: &Config) -> Inputs {
        let mut managed: Vec<DnsName> = config.names.keys().cloned().collect();
        managed.extend(config.views.values().flat_map(|v| v.names.keys().cloned()));
        managed.sort();
        managed.dedup();
        Inputs { zones: config.zones.clone(), managed, capacity: config.capacities.zone_names as usize }
    }

    fn negative(&self) -> impl Iterator<Item = (&DnsName, &NegativeAnswers)> {
        self.zones.iter().filter_map(|(apex, z)| Some((apex, z.negative.as_ref()?)))
    }
}

/// Writes `ZONE_NAMES`, `ZONE_SOAS` and `NEGATIVE_SETTINGS`: new and changed names
/// before removed ones, each zone's SOA before its names, and the settings' zone count
/// last (the XDP program consults the names only while it is non-zero).
pub struct NegativeMapWriter {
    /// `ZONE_NAMES`: every name that exists in the zones, by name hash (view 0).
    pub names: BpfHashMap<MapData, NameKey, ZoneName>,
    /// `ZONE_SOAS`: each zone's SOA record, at the zone's slot.
    pub soas: Array<MapData, ZoneSoa>,
    /// `NEGATIVE_SETTINGS`: entry 0 holds how many zones have data (0: the XDP program consults no names).
    pub settings: Array<MapData, u32>,
    /// What the maps hold.
    written: HashMap<NameKey, ZoneName>,
    /// Each zone's slot in `ZONE_SOAS`, kept while the zone has data (so a zone's
    /// names never point at another zone's SOA).
    slots: BTreeMap<DnsName, u32>,
}

impl NegativeMapWriter {
    /// A writer for the three maps, taken to hold nothing yet.
    pub fn new(
        names: BpfHashMap<MapData, NameKey, ZoneName>,
        soas: Array<MapData, ZoneSoa>,
        settings: Array<MapData, u32>,
    ) -> NegativeMapWriter {
        NegativeMapWriter { names, soas, settings, written: HashMap::new(), slots: BTreeMap::new() }
    }

    /// Publishes the negative data of the zones in `zones` (complete contents only),
    /// with `declared` and `managed` as in `zone_names`. Errors: a hash shared by two
    /// names, more names than `capacity`, a map write failing; nothing is then removed.
    pub fn publish(
        &mut self,
        zones: &BTreeMap<DnsName, ZoneContents>,
        declared: &[DnsName],
        managed: &[DnsName],
        capacity: usize,
    ) -> Result<BTreeMap<DnsName, usize>> {
        self.slots.retain(|apex, _| zones.contains_key(apex));
        let mut per_zone = BTreeMap::new();
        let mut wanted: HashMap<NameKey, ZoneName> = HashMap::new();
        let mut soas = Vec::new();
        for (apex, contents) in zones {
            let slot = match self.slots.get(apex) {
                Some(slot) => *slot,
                None => {
                    let used: Vec<u32> = self.slots.values().copied().collect();
                    let free = (0..MAX_NEGATIVE_ZONES as u32)
                        .find(|s| !used.contains(s))
                        .ok_or_else(|| anyhow!("more than {MAX_NEGATIVE_ZONES} zones"))?;
                    self.slots.insert(apex.clone(), free);
                    free
                }
            };
            soas.push((slot, zone_soa(contents)));
            let names = zone_names(contents, declared, managed);
            per_zone.insert(apex.clone(), names.len());
            for (name, facts) in names {
                let key = NameKey::new(name.hash(), 0);
                let entry = ZoneName {
                    flags: facts.flags,
                    zone: slot,
                    types: facts.types,
                    name_len: name.wire().len() as u32,
                    _pad: 0,
                    name: name.padded(),
                };
                match wanted.get(&key) {
                    // A child zone's apex: the child's own entry wins over the parent's
                    // hand-off.
                    Some(held) if held.name == entry.name => {
                        if entry.flags & ZONE_NAME_APEX != 0 {
                            wanted.insert(key, entry);
                        }
                    }
                    Some(_) => bail!("names {name} and another share one 64-bit hash; zone {apex} is not published"),
                    None => {
                        wanted.insert(key, entry);
                    }
                }
            }
        }
        if wanted.len() > capacity {
            bail!("the zones have {} names; server.max_zone_names is {capacity}", wanted.len());
        }
        for (slot, soa) in &soas {
            self.soas.set(*slot, soa, 0).context("writing a zone's SOA")?;
        }
        for (key, entry) in &wanted {
            if self.written.get(key) != Some(entry) {
                self.names.insert(key, entry, 0).context("writing a zone name")?;
            }
        }
        for key in self.written.keys().filter(|k| !wanted.contains_key(k)) {
            let _ = self.names.remove(key);
        }
        self.settings.set(0, zones.len() as u32, 0).context("writing the negative answers' settings")?;
        self.written = wanted;
        Ok(per_zone)
    }
}

fn zone_soa(contents: &ZoneContents) -> ZoneSoa {
    let mut rr = [0u8; SOA_RR_MAX];
    rr[..contents.soa_rr.len()].copy_from_slice(&contents.soa_rr);
    let csum: u32 = contents.soa_rr.chunks(2).map(|w| u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0))).sum();
    ZoneSoa {
        len: contents.soa_rr.len() as u32,
        csum,
        apex_len: contents.apex.wire().len() as u32,
        serial: contents.serial,
        rr,
    }
}

/// One zone's negative data as `ctl stats` and /metrics show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ZoneStats {
    /// The zone's apex, dotted with a trailing dot.
    pub zone: String,
    /// The SOA serial XDP's data was transferred at (None: XDP holds none; the
    /// zone's denials come from the DNS server).
    pub serial: Option<u32>,
    /// Names XDP holds for the zone.
    pub names: u64,
    /// Failed checks or transfers in a row, and the last one's reason.
    pub failures: u32,
    /// The last failure's reason; empty after a success.
    pub last_error: String,
}

/// The running zone task: `update` hands it a new config's inputs.
pub struct ZoneFeed {
    inputs: watch::Sender<Arc<Inputs>>,
    status: Arc<std::sync::Mutex<Vec<ZoneStats>>>,
}

impl ZoneFeed {
    /// Starts the task that keeps the zones of `first` transferred and published.
    pub fn start(writer: NegativeMapWriter, first: Inputs) -> ZoneFeed {
        let (inputs, rx) = watch::channel(Arc::new(first));
        let status = Arc::new(std::sync::Mutex::new(Vec::new()));
        tokio::spawn(keep_published(writer, rx, status.clone()));
        ZoneFeed { inputs, status }
    }

    /// Each zone with `negative_answers`, as last checked.
    pub fn status(&self) -> Vec<ZoneStats> {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// After a reload: the new config's zones and names (published at once if changed).
    pub fn update(&self, config: &Config) {
        let new = Inputs::of(config);
        self.inputs.send_if_modified(|held| {
            let changed = **held != new;
            if changed {
                *held = Arc::new(new);
            }
            changed
        });
    }
}

/// One zone's transfer state.
struct Tracked {
    contents: Option<ZoneContents>,
    last_transfer: Option<tokio::time::Instant>,
    failures: u32,
    last_error: String,
    /// Names published for it (0 until published).
    published: usize,
}

/// The zone task: checks each zone's serial every `refresh`, transfers it when the
/// serial changed (or `FULL_TRANSFER_EVERY`), and publishes whenever a zone's contents
/// or the inputs change.
async fn keep_published(
    mut writer: NegativeMapWriter,
    mut inputs: watch::Receiver<Arc<Inputs>>,
    status: Arc<std::sync::Mutex<Vec<ZoneStats>>>,
) {
    let mut tracked: BTreeMap<DnsName, Tracked> = BTreeMap::new();
    let mut due: BTreeMap<DnsName, tokio::time::Instant> = BTreeMap::new();
    let mut republish = true;
    loop {
        let current = inputs.borrow_and_update().clone();
        tracked.retain(|apex, _| current.negative().any(|(a, _)| a == apex));
        due.retain(|apex, _| tracked.contains_key(apex) || current.negative().any(|(a, _)| a == apex));
        let now = tokio::time::Instant::now();
        for (apex, negative) in current.negative() {
            let when = *due.entry(apex.clone()).or_insert(now);
            if when > now {
                continue;
            }
            due.insert(apex.clone(), now + negative.refresh);
            let zone = tracked.entry(apex.clone()).or_insert(Tracked {
                contents: None,
                last_transfer: None,
                failures: 0,
                last_error: String::new(),
                published: 0,
            });
            match refresh(apex, negative, zone, current.capacity).await {
                Ok(changed) => {
                    if zone.failures >= FAILURES_BEFORE_DROP {
                        info!(zone = %apex, "zone transfers work again");
                    }
                    zone.failures = 0;
                    zone.last_error.clear();
                    republish |= changed;
                }
                Err(e) => {
                    zone.failures += 1;
                    zone.last_error = format!("{e:#}");
                    // Before a first transfer (the DNS server may start after us) a
                    // failure is news only once it persists; with data held, at once.
                    let held = zone.contents.is_some();
                    if (held && zone.failures == 1) || zone.failures == FAILURES_BEFORE_DROP {
                        let outcome = match (held, zone.failures >= FAILURES_BEFORE_DROP) {
                            (true, true) => "its negative answers go back to the DNS server",
                            (true, false) => "its negative answers stay as they were",
                            (false, _) => "the DNS server answers its denials until a transfer works",
                        };
                        let error = format!("{e:#}");
                        let server = negative.transfer_from;
                        warn!(zone = %apex, %server, %error, failures = zone.failures, "zone check failed; {outcome}");
                    } else if !held && zone.failures == 1 {
                        let error = format!("{e:#}");
                        let server = negative.transfer_from;
                        info!(zone = %apex, %server, %error, "zone not transferred yet; trying again every refresh");
                    }
                    if zone.failures >= FAILURES_BEFORE_DROP && zone.contents.take().is_some() {
                        republish = true;
                    }
                }
            }
        }
        if republish {
            republish = false;
            let contents: BTreeMap<DnsName, ZoneContents> =
                tracked.iter().filter_map(|(apex, t)| Some((apex.clone(), t.contents.clone()?))).collect();
            let declared: Vec<DnsName> = current.zones.keys().cloned().collect();
            match writer.publish(&contents, &declared, &current.managed, current.capacity) {
                Ok(per_zone) => {
                    for (apex, zone) in tracked.iter_mut() {
                        zone.published = per_zone.get(apex).copied().unwrap_or(0);
                    }
                    info!(
                        zones = contents.len(),
                        names = per_zone.values().sum::<usize>(),
                        "negative answers published"
                    );
                }
                Err(e) => warn!(error = %format!("{e:#}"), "negative answers not published; the previous ones stay"),
            }
        }
        if let Ok(mut shown) = status.lock() {
            *shown = tracked
                .iter()
                .map(|(apex, t)| ZoneStats {
                    zone: apex.to_string(),
                    serial: t.contents.as_ref().filter(|_| t.published > 0).map(|c| c.serial),
                    names: t.published as u64,
                    failures: t.failures,
                    last_error: t.last_error.clone(),
                })
                .collect();
        }
        let next =
            due.values().min().copied().unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            changed = inputs.changed() => {
                if changed.is_err() {
                    return; // the controller is gone
                }
                republish = true;
            }
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Checks one zone's serial and transfers it if needed; true if its contents changed.
async fn refresh(apex: &DnsName, negative: &NegativeAnswers, zone: &mut Tracked, capacity: usize) -> Result<bool> {
    let serial = serial(negative.transfer_from, apex).await?;
    let stale = zone.last_transfer.is_none_or(|t| t.elapsed() >= FULL_TRANSFER_EVERY);
    if zone.contents.as_ref().is_some_and(|c| c.serial == serial) && !stale {
        return Ok(false);
    }
    let records = transfer(negative.transfer_from, apex, capacity.saturating_mul(RECORDS_PER_NAME)).await?;
    let contents = ZoneContents::from_records(apex, &records)?;
    zone.last_transfer = Some(tokio::time::Instant::now());
    if zone.contents.as_ref() == Some(&contents) {
        return Ok(false);
    }
    info!(zone = %apex, serial = contents.serial, names = contents.names.len(), records = records.len(), "zone transferred");
    zone.contents = Some(contents);
    Ok(true)
}

/// NAME_BUF_LEN bounds every name held.
const _: () = assert!(NAME_BUF_LEN > primwatch_common::MAX_NAME_LEN);

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::{rr::Name, serialize::txt::Parser};

    fn name(text: &str) -> DnsName {
        DnsName::parse(text).unwrap()
    }

    /// A zone file's records, as a transfer would bring them.
    fn contents(apex: &str, text: &str) -> ZoneContents {
        ZoneContents::from_zone_file(&name(apex), text).unwrap()
    }

    const ZONE: &str = "$TTL 300
@ IN SOA ns1 hostmaster 7 3600 600 86400 60
@ IN NS ns1
ns1 IN A 192.0.2.53
mail IN MX 10 mx.elsewhere.test.
txt.deep IN TXT \"hello\"
alias IN CNAME www
sub IN NS ns.sub
ns.sub IN A 192.0.2.54
*.wild IN A 192.0.2.9
";

    #[test]
    fn the_names_that_exist_are_owners_their_ancestors_and_the_managed_names() {
        let zone = contents("example.test", ZONE);
        assert_eq!(zone.serial, 7);
        let managed = [name("www.example.test"), name("*.apps.example.test")];
        let declared = [name("example.test"), name("child.example.test")];
        let names = zone_names(&zone, &declared, &managed);
        let facts = |n: &str| names.get(&name(n)).copied();
        let apex = facts("example.test").unwrap();
        assert_eq!(apex.flags, ZONE_NAME_APEX);
        assert_ne!(apex.types & (1 << 6), 0, "SOA at the apex");
        assert_eq!(facts("mail.example.test").unwrap().types, 1 << 15, "MX only: NODATA for A");
        // An empty non-terminal: exists, no types.
        assert_eq!(facts("deep.example.test"), Some(NameFacts::default()));
        assert_eq!(facts("alias.example.test").unwrap().flags, ZONE_NAME_CNAME);
        // A delegation hands off; its glue is not this zone's.
        assert_eq!(facts("sub.example.test").unwrap().flags, ZONE_NAME_HANDS_OFF);
        assert_eq!(facts("ns.sub.example.test"), None);
        assert_eq!(facts("wild.example.test").unwrap().flags, ZONE_NAME_WILDCARD_BELOW);
        assert_eq!(facts("apps.example.test").unwrap().flags, ZONE_NAME_WILDCARD_BELOW);
        assert_eq!(facts("www.example.test").unwrap().flags, ZONE_NAME_MANAGED);
        assert_eq!(facts("child.example.test").unwrap().flags, ZONE_NAME_HANDS_OFF);
        assert_eq!(facts("nothing.example.test"), None);
    }

    #[test]
    fn many_delegations_hand_off_their_subtrees_and_nothing_else() {
        // 2,000 delegations, each with glue two and three labels down, beside 2,000 names
        // of the zone's own that merely share a label with them.
        let mut text =
            String::from("$TTL 300\n@ IN SOA ns1 hostmaster 7 3600 600 86400 60\n@ IN NS ns1\nns1 IN A 192.0.2.1\n");
        for i in 0..2000 {
            text.push_str(&format!("d{i} IN NS ns.d{i}\nns.d{i} IN A 192.0.2.2\na.b.d{i} IN A 192.0.2.3\n"));
            text.push_str(&format!("own{i}.d IN A 192.0.2.4\n"));
        }
        let names = zone_names(&contents("example.test", &text), &[name("example.test")], &[]);
        for i in [0, 999, 1999] {
            assert_eq!(names[&name(&format!("d{i}.example.test"))].flags, ZONE_NAME_HANDS_OFF);
            assert!(!names.contains_key(&name(&format!("ns.d{i}.example.test"))), "glue below d{i}");
            assert!(!names.contains_key(&name(&format!("b.d{i}.example.test"))), "below d{i}");
            assert!(names.contains_key(&name(&format!("own{i}.d.example.test"))));
        }
        // apex, ns1, the empty non-terminal d, 2,000 delegations and 2,000 names of its own.
        assert_eq!(names.len(), 3 + 2000 + 2000);
    }

    #[test]
    fn a_dname_hands_its_subtree_off() {
        // hickory's zone parser has no DNAME (type 39): the record as a transfer brings it.
        let zone = contents("example.test", ZONE);
        let mut records: Vec<Record> = Vec::new();
        let soa = Record::from_rdata(
            Name::from_ascii("example.test.").unwrap(),
            300,
            RData::SOA(hickory_proto::rr::rdata::SOA::new(
                Name::from_ascii("ns1.example.test.").unwrap(),
                Name::from_ascii("hostmaster.example.test.").unwrap(),
                7,
                3600,
                600,
                86400,
                60,
            )),
        );
        records.push(soa);
        let target = Name::from_ascii("new.test.").unwrap().to_bytes().unwrap();
        records.push(Record::from_rdata(
            Name::from_ascii("old.example.test.").unwrap(),
            300,
            RData::Unknown {
                code: RecordType::Unknown(TYPE_DNAME),
                rdata: hickory_proto::rr::rdata::NULL::with(target),
            },
        ));
        records.push(Record::from_rdata(
            Name::from_ascii("x.old.example.test.").unwrap(),
            300,
            RData::A("192.0.2.1".parse().unwrap()),
        ));
        let dnamed = ZoneContents::from_records(&name("example.test"), &records).unwrap();
        assert_eq!(dnamed.serial, zone.serial);
        let names = zone_names(&dnamed, &[], &[]);
        assert_eq!(names[&name("old.example.test")].flags, ZONE_NAME_HANDS_OFF);
        assert!(!names.contains_key(&name("x.old.example.test")), "occluded below the DNAME");
    }

    #[test]
    fn the_soa_record_carries_the_negative_ttl_and_fits() {
        let zone = contents("example.test", ZONE);
        let rr = &zone.soa_rr;
        assert_eq!(&rr[..2], &[0xc0, 0x00]);
        assert_eq!(u16::from_be_bytes([rr[2], rr[3]]), 6);
        // min(TTL 300, MINIMUM 60).
        assert_eq!(u32::from_be_bytes([rr[6], rr[7], rr[8], rr[9]]), 60);
        let rdlen = u16::from_be_bytes([rr[10], rr[11]]) as usize;
        assert_eq!(rr.len(), 12 + rdlen);
        assert_eq!(&rr[rr.len() - 4..], &60u32.to_be_bytes());
    }

    #[test]
    fn a_zone_without_soa_or_with_foreign_records_is_refused() {
        let origin = Name::from_ascii("example.test.").unwrap();
        let (_, sets) = Parser::new("$TTL 300\nwww IN A 192.0.2.1\n", None, Some(origin)).parse().unwrap();
        let records: Vec<Record> = sets.values().flat_map(|s| s.records_without_rrsigs().cloned()).collect();
        let e = ZoneContents::from_records(&name("example.test"), &records).unwrap_err();
        assert!(e.to_string().contains("no SOA"), "{e}");
        let e = ZoneContents::from_records(&name("other.test"), &records).unwrap_err();
        assert!(e.to_string().contains("outside zone"), "{e}");
    }
}
