//! Stage 4c, signed zones: the writer of XDP's `rrsigs` map. A worker thread signs what
//! XDP can answer and is not signed yet, so that a failover in a zone of 100,000 names
//! (1.3 s of signing on 2 cores) never holds up the controller's loop: the new records
//! are served at once, and their DO=1 queries go to the DNS server behind XDP until
//! their signatures are in.
//!
//! Keys name an RRset by (name hash, entry slot, set generation, start record): a
//! rewritten set has a new generation, so a signature is never found for records it
//! does not cover — a stale one is only garbage, deleted on the next pass.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    sync::{mpsc, Arc, Condvar, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, Result};
use aya::maps::{HashMap, MapData};
use primwatch_common::{AnswerSet, Family, RrsigKey, RrsigRr, Select, ENTRY_SIGNED};

use crate::{answers::records::NamePlan, dns::dnssec::ZoneSigner, dns::name::DnsName};

/// RRsets signed between two looks for a newer request (about 0.2 s on 2 cores).
const BATCH: usize = 16_384;
/// How often the worker looks for signatures due for renewal.
const RENEWAL_CHECK: Duration = Duration::from_secs(1);

/// What the names map holds, as the signer needs it: the plan, each entry's counter
/// slot and (A, AAAA) set ids, every set as written, and the signed zones' keys.
pub struct SignRequest {
    /// The plan the names map was written from.
    pub plan: Arc<NamePlan>,
    /// Each entry's counter slot, parallel to `plan.entries` (part of a signature's key).
    pub slots: Vec<u32>,
    /// Per spec (indexed by `PlannedName::set`): the ids of its (A, AAAA) record sets.
    pub ids: Vec<(u32, u32)>,
    /// Every record set as written, by set id.
    pub sets: StdHashMap<u32, AnswerSet>,
    /// (apex, key) of every zone with `dnssec = "sign"`.
    pub zones: Vec<(DnsName, Arc<ZoneSigner>)>,
}

impl SignRequest {
    /// The key of the longest signed zone `name` lies in.
    fn signer_of(&self, name: &DnsName) -> Option<&Arc<ZoneSigner>> {
        name.closest_zone(self.zones.iter().map(|(apex, signer)| (apex, signer))).map(|(_, signer)| signer)
    }
}

/// What signing did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SignStats {
    /// RRSIG records made and written, deleted, and RRsets left unsigned because
    /// signing or the write failed (XDP passes their DO=1 queries on).
    pub signed: usize,
    /// RRSIG records deleted (no RRset needs them any more).
    pub deleted: usize,
    /// RRsets left unsigned: signing or the map write failed.
    pub failed: usize,
}

impl SignStats {
    fn add(&mut self, other: SignStats) {
        self.signed += other.signed;
        self.deleted += other.deleted;
        self.failed += other.failed;
    }
}

/// The worker's progress, shared with the controller (status, metrics, tests).
#[derive(Default)]
struct Progress {
    /// Requests sent, and the last one handled to the end (a newer one may replace a
    /// request part way).
    requested: u64,
    done: u64,
    /// Everything signed since the start, and since the last `wait_idle`.
    total: SignStats,
    since_wait: SignStats,
    /// Per signed zone (apex): signatures held and the earliest renewal due (unix s).
    per_zone: StdHashMap<DnsName, (usize, u64)>,
    held: usize,
}

#[derive(Default)]
struct Shared {
    progress: Mutex<Progress>,
    changed: Condvar,
}

/// The controller's end: requests go to the worker, progress comes back.
pub struct SignatureWriter {
    requests: Option<mpsc::Sender<(u64, Arc<SignRequest>)>>,
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl SignatureWriter {
    /// Starts the worker, the `rrsigs` map's only writer.
    pub fn new(map: HashMap<MapData, RrsigKey, RrsigRr>) -> Result<SignatureWriter> {
        let (requests, incoming) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let mut worker = Worker { map, written: StdHashMap::new(), next_due: u64::MAX, shared: shared.clone() };
        let handle = std::thread::Builder::new()
            .name("dnssec-signer".into())
            .spawn(move || worker.run(incoming))
            .context("starting the signing thread")?;
        Ok(SignatureWriter { requests: Some(requests), shared, worker: Some(handle) })
    }

    /// Has the worker sign for `request` (the names map as just written), replacing any
    /// request it has not finished.
    pub fn request(&mut self, request: SignRequest) {
        let mut progress = self.shared.progress.lock().unwrap_or_else(|e| e.into_inner());
        progress.requested += 1;
        let seq = progress.requested;
        drop(progress);
        if let Some(requests) = &self.requests {
            let _ = requests.send((seq, Arc::new(request)));
        }
    }

    /// Waits until every request so far is handled (or `within` passed); returns what
    /// was signed since the last wait.
    pub fn wait_idle(&self, within: Duration) -> SignStats {
        let deadline =
            Instant::now().checked_add(within).unwrap_or_else(|| Instant::now() + Duration::from_secs(86400));
        let mut progress = self.shared.progress.lock().unwrap_or_else(|e| e.into_inner());
        while progress.done < progress.requested {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            progress = self.shared.changed.wait_timeout(progress, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        std::mem::take(&mut progress.since_wait)
    }

    /// Signatures in the map.
    pub fn len(&self) -> usize {
        self.shared.progress.lock().unwrap_or_else(|e| e.into_inner()).held
    }

    /// Does the map hold no signatures?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything signed since the start.
    pub fn total(&self) -> SignStats {
        self.shared.progress.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Per signed zone (apex): signatures held and the earliest renewal due (unix s).
    pub fn per_zone(&self) -> StdHashMap<DnsName, (usize, u64)> {
        self.shared.progress.lock().unwrap_or_else(|e| e.into_inner()).per_zone.clone()
    }
}

impl Drop for SignatureWriter {
    fn drop(&mut self) {
        self.requests = None; // the worker sees the channel close and returns
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

struct Worker {
    map: HashMap<MapData, RrsigKey, RrsigRr>,
    /// What the map holds: each key's signer and when it is due for renewal (unix s).
    written: StdHashMap<RrsigKey, (Arc<ZoneSigner>, u64)>,
    /// The earliest renewal due (unix s; u64::MAX: none).
    next_due: u64,
    shared: Arc<Shared>,
}

/// Why a pass over a request ended.
enum Pass {
    Finished,
    /// A newer request came in part way: it is handled next.
    Replaced((u64, Arc<SignRequest>)),
}

impl Worker {
    fn run(&mut self, incoming: mpsc::Receiver<(u64, Arc<SignRequest>)>) {
        let mut last: Option<Arc<SignRequest>> = None;
        let mut next: Option<(u64, Arc<SignRequest>)> = None;
        loop {
            let (seq, request) = match next.take() {
                Some(request) => request,
                None => match incoming.recv_timeout(RENEWAL_CHECK) {
                    Ok(request) => request,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        // Renewals: the last request again, once a signature is due.
                        match &last {
                            Some(request) if unix_seconds(SystemTime::now()) >= self.next_due => (0, request.clone()),
                            _ => continue,
                        }
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => return,
                },
            };
            // Only the newest request matters: it describes the whole map.
            let (seq, request) = incoming.try_iter().last().unwrap_or((seq, request));
            let started = Instant::now();
            let (pass, stats) = self.pass(&request, &incoming);
            if stats.signed + stats.failed > 0 {
                tracing::info!(
                    signed = stats.signed,
                    deleted = stats.deleted,
                    failed = stats.failed,
                    ms = started.elapsed().as_millis() as u64,
                    "signatures written"
                );
            }
            let mut progress = self.shared.progress.lock().unwrap_or_else(|e| e.into_inner());
            progress.total.add(stats);
            progress.since_wait.add(stats);
            progress.held = self.written.len();
            progress.per_zone = self.per_zone();
            match pass {
                Pass::Finished => progress.done = progress.done.max(seq),
                Pass::Replaced(newer) => next = Some(newer),
            }
            drop(progress);
            self.shared.changed.notify_all();
            last = Some(request);
        }
    }

    fn per_zone(&self) -> StdHashMap<DnsName, (usize, u64)> {
        let mut zones: StdHashMap<DnsName, (usize, u64)> = StdHashMap::new();
        for (signer, due) in self.written.values() {
            let entry = zones.entry(signer.apex.clone()).or_insert((0, u64::MAX));
            entry.0 += 1;
            entry.1 = entry.1.min(*due);
        }
        zones
    }

    /// Signs what `request` makes answerable and is not signed yet (or was by another
    /// key, or is due for renewal), and deletes signatures of RRsets gone. Failures are
    /// counted and logged: an unsigned RRset costs a pass to the DNS server, never an
    /// answer.
    fn pass(&mut self, request: &SignRequest, incoming: &mpsc::Receiver<(u64, Arc<SignRequest>)>) -> (Pass, SignStats) {
        let mut stats = SignStats::default();
        let now = SystemTime::now();
        let unix = unix_seconds(now);
        let mut wanted = HashSet::new();
        let mut jobs: Vec<SignJob> = Vec::new();
        let entries = request.plan.entries.iter().zip(&request.slots);
        for (entry, &slot) in entries.filter(|(e, _)| e.flags & ENTRY_SIGNED != 0) {
            let Some(signer) = request.signer_of(&entry.name) else { continue };
            let (a, aaaa) = request.ids[entry.set as usize];
            for (family, id) in [(Family::V4, a), (Family::V6, aaaa)] {
                let Some(set) = request.sets.get(&id) else { continue };
                if set.count == 0 || set.select == Select::NoData as u8 {
                    continue; // NODATA: passed on for DO=1 (its proof is NSEC3)
                }
                // The RRsets XDP can send: one when each reply carries the whole set or
                // always the same records, else one per start record.
                let whole = set.answers == set.count || set.select == Select::Fixed as u8;
                for start in 0..if whole { 1 } else { set.count as u32 } {
                    let key =
                        RrsigKey { name_hash: entry.key.name_hash, slot, generation: set.generation, start, _pad: 0 };
                    wanted.insert(key);
                    let current = self
                        .written
                        .get(&key)
                        .is_some_and(|(by, due)| unix < *due && (Arc::ptr_eq(by, signer) || **by == **signer));
                    if !current {
                        jobs.push((key, &entry.name, family, set, signer));
                    }
                }
            }
        }
        // Signatures no RRset needs go first (XDP no longer finds them: their sets'
        // generations or entries are gone), making room for the new ones.
        let gone: Vec<RrsigKey> = self.written.keys().filter(|k| !wanted.contains(k)).copied().collect();
        for key in gone {
            self.written.remove(&key);
            if self.map.remove(&key).is_ok() {
                stats.deleted += 1;
            }
        }
        let mut first_error = None;
        let mut pass = Pass::Finished;
        for batch in jobs.chunks(BATCH) {
            for (key, signer, made) in sign_all(batch, now) {
                match made.and_then(|rr| self.map.insert(key, rr, 0).context("writing rrsigs")) {
                    Ok(()) => {
                        self.written.insert(key, (signer.clone(), unix.saturating_add(signer.validity.as_secs() / 2)));
                        stats.signed += 1;
                    }
                    Err(e) => {
                        stats.failed += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            if let Some(newer) = incoming.try_iter().last() {
                pass = Pass::Replaced(newer);
                break;
            }
        }
        self.next_due = self.written.values().map(|(_, due)| *due).min().unwrap_or(u64::MAX);
        if let Some(error) = first_error {
            tracing::warn!(failed = stats.failed, first = %error,
                "RRsets left unsigned (their DO=1 queries go to the DNS server behind XDP)");
        }
        (pass, stats)
    }
}

/// One RRset to sign: its key in `rrsigs`, owner, family, set and the zone's signer.
type SignJob<'a> = (RrsigKey, &'a DnsName, Family, &'a AnswerSet, &'a Arc<ZoneSigner>);

/// Signs every job, on all CPUs when there are many (ECDSA P-256: about 19 µs each).
fn sign_all<'a>(jobs: &[SignJob<'a>], now: SystemTime) -> Vec<(RrsigKey, &'a Arc<ZoneSigner>, Result<RrsigRr>)> {
    let sign = |(key, name, family, set, signer): &SignJob<'a>| {
        let rr_len = set.rr_len as usize;
        let start = key.start as usize;
        let records = &set.rrs[start * rr_len..(start + set.answers as usize) * rr_len];
        // Each record: pointer, type, class, TTL, RDLENGTH (12 bytes), then RDATA.
        let rdatas: Vec<&[u8]> = records.chunks(rr_len).map(|rr| &rr[12..]).collect();
        let made = signer.sign(name, *family, set.ttl, &rdatas, now).with_context(|| format!("{name}"));
        (*key, *signer, made)
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if jobs.len() < 256 || threads == 1 {
        return jobs.iter().map(sign).collect();
    }
    let chunk = jobs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> =
            jobs.chunks(chunk).map(|part| scope.spawn(move || part.iter().map(sign).collect::<Vec<_>>())).collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_default()).collect()
    })
}
