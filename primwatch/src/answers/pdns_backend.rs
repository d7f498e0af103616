//! One truth for both paths: a PowerDNS remote backend (pdns-backend-remote, Unix
//! socket connector) answering the managed names from the same state, views and
//! selection as the XDP maps.
//!
//! XDP passes TCP, DO=1, other types and misses to PowerDNS on the same host; with
//! `launch=bind,remote` PowerDNS answers the zone's own names (and SOA/NS) from its
//! zone files and asks us for the names we manage, which the zone files leave out. The protocol is JSON: `{"method": ...,
//! "parameters": {...}}` in, `{"result": ...}` out, one connection per PowerDNS
//! backend instance. We implement the read side only (initialize, lookup); everything
//! else gets `false`, which PowerDNS reads as "not supported / nothing here".

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use anyhow::Result;
use ipnet::IpNet;
use primwatch_common::MAX_RECORDS;
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::UnixStream,
    sync::watch,
};
use tracing::{debug, info, warn};

use crate::{
    answers::records::{self, NamePlan},
    answers::selection::{Chosen, Pick},
    config::{Config, PowerDnsConfig},
    dns::name::DnsName,
    dns::view_index::ViewIndex,
    health::Health,
    sys::local_socket::{self, Lease, SocketGuard},
};

/// What one record-set spec answers, as XDP's two record sets for it hold it.
struct Entry {
    ttl: u32,
    a: Chosen<Ipv4Addr>,
    aaaa: Chosen<Ipv6Addr>,
    /// Round-robin positions for A and AAAA (per spec and family, like XDP's counter
    /// per query: PowerDNS asks for ANY, which must not move one family twice).
    turns: [AtomicUsize; 2],
    /// For weighted A and AAAA sets, the start table XDP draws from (else empty).
    weighted: [Vec<u8>; 2],
}

/// The `WEIGHT_SLOTS` start table of `chosen`, as XDP's set holds it: weighted starts,
/// or the sticky policy's slots (empty for the other policies).
fn weighted_starts<A: Copy + Into<std::net::IpAddr>>(chosen: &Chosen<A>) -> Vec<u8> {
    if chosen.records.is_empty() {
        return Vec::new();
    }
    let weights: Vec<u32> = chosen.records.iter().take(MAX_RECORDS).map(|(_, w)| *w).collect();
    match chosen.pick {
        Pick::Weighted => records::weighted_slots(&weights).to_vec(),
        Pick::Sticky => {
            let keys: Vec<Vec<u8>> = chosen
                .records
                .iter()
                .take(MAX_RECORDS)
                .map(|(a, _)| match (*a).into() {
                    std::net::IpAddr::V4(a) => a.octets().to_vec(),
                    std::net::IpAddr::V6(a) => a.octets().to_vec(),
                })
                .collect();
            records::sticky_slots(&keys, &weights).to_vec()
        }
        _ => Vec::new(),
    }
}

/// The sticky policy's key for `client` (the ECS subnet PowerDNS reports, or the
/// address as /32 or /128), cut to the shorter of its length and `sticky`'s, as XDP
/// computes it; and the length used (the ECS scope a sticky answer claims).
fn sticky_client(client: IpNet, (v4_len, v6_len): (u32, u32)) -> (u32, u8) {
    let mut address = [0u8; 16];
    let (is_v6, sticky) = match client.addr() {
        std::net::IpAddr::V4(a) => {
            address[..4].copy_from_slice(&a.octets());
            (false, v4_len)
        }
        std::net::IpAddr::V6(a) => {
            address = a.octets();
            (true, v6_len)
        }
    };
    let len = (client.prefix_len() as u32).min(sticky);
    (primwatch_common::sticky_key(&address, is_v6, len), len as u8)
}

/// A snapshot of every answer, rebuilt whenever the maps are written: XDP's name plan
/// (shared, built once per config) and each spec's records (rebuilt per publish, so a
/// health change costs the specs, not the names).
#[derive(Default)]
pub struct AnswerTable {
    plan: Arc<NamePlan>,
    /// Each spec's records, in `plan.specs`' order.
    specs: Vec<Entry>,
    /// Source prefixes → views, and ECS scopes.
    views: Arc<ViewIndex>,
    /// The sticky policy's prefix lengths (`Config::sticky_prefixes`).
    sticky: (u32, u32),
}

impl AnswerTable {
    /// The table for `plan` with each spec's records `chosen` (in `plan.specs`' order).
    pub fn new(
        plan: Arc<NamePlan>,
        chosen: Vec<(Chosen<Ipv4Addr>, Chosen<Ipv6Addr>)>,
        views: Arc<ViewIndex>,
        sticky: (u32, u32),
    ) -> AnswerTable {
        let specs = plan
            .specs
            .iter()
            .zip(chosen)
            .map(|(spec, (a, aaaa))| Entry {
                ttl: spec.ttl,
                weighted: [weighted_starts(&a), weighted_starts(&aaaa)],
                a,
                aaaa,
                turns: [AtomicUsize::new(0), AtomicUsize::new(0)],
            })
            .collect();
        AnswerTable { plan, specs, views, sticky }
    }

    /// The table for `config` under `health`, plan and all.
    pub fn build(config: &Config, health: &dyn Health) -> AnswerTable {
        let plan = Arc::new(records::plan_names(config));
        let chosen = records::choose_sets(config, &plan.specs, health);
        AnswerTable::new(plan, chosen, config.view_index.clone(), config.sticky_prefixes())
    }

    /// The client's view (its subnet, as PowerDNS reports ECS in `real-remote`, or its
    /// address) and the ECS scope its answer claims, by the same rule as XDP's maps.
    fn view_of(&self, client: IpNet) -> (u32, u8) {
        let (found, scope) = self.views.classify(client);
        (found.map_or(0, |m| m.id), scope)
    }

    /// The records for a query, or None when the name is not ours (PowerDNS then asks
    /// its next backend): exact name first, then `*.parent` one label up, as XDP does.
    pub fn lookup(&self, qname: &str, qtype: &str, client: IpNet) -> Option<Vec<Record>> {
        let asked = DnsName::parse(qname).ok()?;
        if asked.is_wildcard() {
            // PowerDNS probes `*.parent` to synthesise wildcards by RFC 4592 rules, which
            // reach deeper than XDP's one label: we do our own matching instead.
            return None;
        }
        let (view, scope) = self.view_of(client);
        let owner = if qname.ends_with('.') { qname.to_string() } else { format!("{qname}.") };
        let any = qtype.eq_ignore_ascii_case("ANY");
        let Some(planned) = self.plan.resolve(&asked, view) else {
            // A name above served names exists (RFC 8020): PowerDNS must say NODATA, and
            // prove it in a signed zone, not NXDOMAIN, which would deny every name below.
            return (any && self.plan.is_empty_non_terminal(&asked)).then(|| vec![Record::existence(owner)]);
        };
        let entry = self.specs.get(planned.set as usize)?;
        // A name whose every family is unserved (its all-down policy passes) is left to
        // PowerDNS's zone, as XDP leaves it.
        if entry.a.records.is_empty() && entry.aaaa.records.is_empty() && !has_nodata(entry) {
            return None;
        }
        let want = |t: &str| qtype.eq_ignore_ascii_case(t) || any;
        let (client_key, sticky_len) = sticky_client(client, self.sticky);
        // A sticky answer depends on the client's prefix at the sticky length.
        let sticky = |chosen_pick: Pick| if chosen_pick == Pick::Sticky { scope.max(sticky_len) } else { scope };
        let (scope_a, scope_aaaa) = (sticky(entry.a.pick), sticky(entry.aaaa.pick));
        // Other types, and a family without records, answer empty: NODATA.
        let mut records = Vec::new();
        if want("A") {
            pick(
                &entry.turns[0],
                (&entry.weighted[0], client_key),
                &entry.a,
                |a| Record {
                    qtype: "A",
                    qname: owner.clone(),
                    content: a.to_string(),
                    ttl: entry.ttl,
                    scope_mask: scope_a,
                },
                &mut records,
            );
        }
        if want("AAAA") {
            pick(
                &entry.turns[1],
                (&entry.weighted[1], client_key),
                &entry.aaaa,
                |a| Record {
                    qtype: "AAAA",
                    qname: owner.clone(),
                    content: a.to_string(),
                    ttl: entry.ttl,
                    scope_mask: scope_aaaa,
                },
                &mut records,
            );
        }
        if any && records.is_empty() {
            // Served with no records at all (all down: NODATA): it still exists.
            records.push(Record::existence(owner));
        }
        Some(records)
    }
}

fn has_nodata(entry: &Entry) -> bool {
    entry.a.pick == Pick::NoData || entry.aaaa.pick == Pick::NoData
}

/// Appends this reply's records of one family, chosen as XDP would: the same start
/// for fixed and round-robin sets, and for weighted sets a draw from the same table
/// of `WEIGHT_SLOTS` starts XDP draws from (`records::weighted_slots`), so both paths
/// give each record the same share.
fn pick<A: Copy>(
    turn: &AtomicUsize,
    (weighted, client_key): (&[u8], u32),
    chosen: &Chosen<A>,
    record: impl Fn(A) -> Record,
    out: &mut Vec<Record>,
) {
    let count = chosen.records.len();
    if count == 0 {
        return;
    }
    let answers = chosen.answers.clamp(1, count);
    let start = primwatch_common::start_record(
        Some(chosen.pick),
        count as u32,
        || turn.fetch_add(1, Ordering::Relaxed) as u32,
        || rand::thread_rng().gen(),
        client_key,
        weighted,
    ) as usize;
    out.extend((0..answers).map(|i| record(chosen.records[(start + i) % count].0)));
}

const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The controller's end of the backend: the socket, and the table it answers from.
pub struct AnswerFeed {
    tables: watch::Sender<Arc<AnswerTable>>,
    _socket: SocketGuard,
}

impl AnswerFeed {
    /// Starts serving `first` at `powerdns.socket` (see `listen`).
    pub fn start(powerdns: &PowerDnsConfig, first: AnswerTable) -> Result<AnswerFeed> {
        let (tables, rx) = watch::channel(Arc::new(first));
        Ok(AnswerFeed { tables, _socket: listen(powerdns, rx)? })
    }

    /// From the next question on, answers come from `table`.
    pub fn replace(&self, table: Arc<AnswerTable>) {
        self.tables.send_replace(table);
    }
}

/// Serves the remote-backend protocol at `powerdns.socket` from the latest table in
/// `answers`. Only root and the PowerDNS group may connect (mode 0660 and
/// SO_PEERCRED); at most `max_connections` are served at once.
///
/// Runs on its own thread and runtime: a flood of queries PowerDNS passes on (DO=1,
/// TCP, random names) keeps that thread busy, not the one whose timers run the health
/// checks.
pub fn listen(powerdns: &PowerDnsConfig, answers: watch::Receiver<Arc<AnswerTable>>) -> Result<SocketGuard> {
    let path = powerdns.socket.clone();
    let access = powerdns.access.clone();
    let control_socket = powerdns.control_socket.clone();
    let (bound_tx, bound_rx) = std::sync::mpsc::channel::<Result<()>>();
    let thread_path = path.clone();
    std::thread::Builder::new().name("powerdns-backend".into()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => return drop(bound_tx.send(Err(e.into()))),
        };
        runtime.block_on(async move {
            let listener = match local_socket::bind(&thread_path, &access) {
                Ok(listener) => listener,
                Err(e) => return drop(bound_tx.send(Err(e))),
            };
            if let Some(control_socket) = control_socket {
                tokio::spawn(purge_on_change(control_socket, answers.clone()));
            }
            local_socket::serve(listener, access, &local_socket::POWERDNS, "powerdns", move |stream, lease| {
                serve_connection(stream, lease, answers.clone())
            });
            let _ = bound_tx.send(Ok(()));
            std::future::pending::<()>().await
        })
    })?;
    bound_rx.recv().map_err(|_| anyhow::anyhow!("the PowerDNS backend thread ended before binding"))??;
    info!(socket = %path.display(), group = ?powerdns.access.group.as_ref().map(|g| &g.0),
        "PowerDNS remote backend listening");
    Ok(SocketGuard(path))
}

/// How long after a purge it is repeated: a question PowerDNS asked the backend just
/// before the answers changed may reach its packet cache just after the first purge.
const PURGE_AGAIN_AFTER: std::time::Duration = std::time::Duration::from_millis(500);
/// A control socket that does not answer within this long is given up on until the
/// next change.
const PURGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Empties PowerDNS's caches (`pdns_control purge`, over its control socket) whenever
/// the answers change, and once more `PURGE_AGAIN_AFTER` later; changes in between are
/// covered by those two. So PowerDNS may cache what it asked primwatch (answers
/// without a view-dependent ECS scope: PowerDNS never caches those) and still never
/// serves an answer older than the last change for longer than the purge takes.
async fn purge_on_change(control_socket: std::path::PathBuf, mut answers: watch::Receiver<Arc<AnswerTable>>) {
    let mut failures = 0u64;
    while answers.changed().await.is_ok() {
        for again in [false, true] {
            if again {
                tokio::time::sleep(PURGE_AGAIN_AFTER).await;
                answers.borrow_and_update();
            }
            match tokio::time::timeout(PURGE_TIMEOUT, purge(&control_socket)).await {
                Ok(Ok(reply)) => debug!(reply = %reply.trim(), "PowerDNS caches purged"),
                Ok(Err(e)) => {
                    failures += 1;
                    // The first failure and every 100th: a PowerDNS that is down is not news each time.
                    if failures % 100 == 1 {
                        warn!(socket = %control_socket.display(), error = %e, failures, "cannot purge PowerDNS's caches");
                    }
                }
                Err(_) => {
                    failures += 1;
                    if failures % 100 == 1 {
                        warn!(socket = %control_socket.display(), failures, "PowerDNS's control socket did not answer a purge");
                    }
                }
            }
        }
    }
}

/// One `purge` over PowerDNS's control socket (its line protocol: a command line in,
/// the answer out, then the connection closes).
async fn purge(control_socket: &std::path::Path) -> std::io::Result<String> {
    let mut stream = UnixStream::connect(control_socket).await?;
    stream.write_all(b"purge\n").await?;
    let mut reply = Vec::new();
    (&mut stream).take(4096).read_to_end(&mut reply).await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

async fn serve_connection(mut stream: UnixStream, lease: Lease, answers: watch::Receiver<Arc<AnswerTable>>) {
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let read = tokio::select! {
            read = stream.read(&mut chunk) => read,
            _ = lease.evicted() => return,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
        lease.touch();
        // Requests are a few hundred bytes; anything this large is not PowerDNS.
        if buffer.len() > MAX_REQUEST_BYTES {
            warn!(bytes = buffer.len(), "remote backend: request too large; closing the connection");
            return;
        }
        // PowerDNS writes one JSON object per request; take every complete one.
        let mut consumed = 0;
        let mut replies = Vec::new();
        let mut stream_of = serde_json::Deserializer::from_slice(&buffer).into_iter::<Value>();
        loop {
            match stream_of.next() {
                Some(Ok(request)) => {
                    consumed = stream_of.byte_offset();
                    let table = answers.borrow().clone();
                    replies.push(answer(&request, &table));
                }
                Some(Err(e)) if e.is_eof() => break,
                Some(Err(e)) => {
                    warn!(error = %e, "remote backend: malformed request; closing the connection");
                    return;
                }
                None => {
                    consumed = buffer.len();
                    break;
                }
            }
        }
        buffer.drain(..consumed);
        for reply in replies {
            let mut bytes = reply.to_string().into_bytes();
            bytes.push(b'\n');
            if stream.write_all(&bytes).await.is_err() {
                return;
            }
        }
    }
}

/// A remote-backend request: `{"method": …, "parameters": {…}}` (PowerDNS remote
/// backend, JSON connector). Only `lookup`'s parameters are read; others are ignored.
#[derive(Debug, Deserialize)]
struct Request {
    method: String,
    #[serde(default)]
    parameters: LookupParameters,
}

#[derive(Debug, Default, Deserialize)]
struct LookupParameters {
    #[serde(default)]
    qname: String,
    #[serde(default)]
    qtype: String,
    /// The client's address ("192.0.2.1" or "2001:db8::1", maybe with a %zone).
    #[serde(default)]
    remote: Option<String>,
    /// The EDNS Client Subnet with `edns-subnet-processing=yes` ("198.51.100.0/24"),
    /// else the address as a host prefix.
    #[serde(default, rename = "real-remote")]
    real_remote: Option<String>,
}

/// One record of a `lookup` result. `scopeMask` is the ECS scope PowerDNS echoes when
/// the query carried a subnet.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// The record type as PowerDNS names it: "A", "AAAA", or "TYPE0" for the existence marker.
    pub qtype: &'static str,
    /// The owner name, fully qualified (with the final dot).
    pub qname: String,
    /// The record data as text: the address ("192.0.2.1", "2001:db8::1"); empty for TYPE0.
    pub content: String,
    /// TTL in seconds: the name's configured TTL (0 for TYPE0).
    pub ttl: u32,
    /// The ECS scope prefix length the answer claims for the client's view (RFC 7871); 0 for TYPE0.
    #[serde(rename = "scopeMask")]
    pub scope_mask: u8,
}

impl Record {
    /// PowerDNS's empty non-terminal marker (`QType::ENT`, type 0, no data): in a reply
    /// to its ANY lookup it says "this name exists, with no records", so PowerDNS
    /// answers NODATA (with an NSEC3 proof of the empty type bitmap in a signed zone)
    /// rather than NXDOMAIN. Type 0 is never sent on the wire.
    fn existence(owner: String) -> Record {
        Record { qtype: "TYPE0", qname: owner, content: String::new(), ttl: 0, scope_mask: 0 }
    }
}

/// A reply: the records, or `false` ("not supported / nothing here"), or `true` with
/// log lines (initialize).
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Reply {
    Records {
        result: Vec<Record>,
    },
    Flag {
        result: bool,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        log: Vec<&'static str>,
    },
}

/// One request → one reply (as JSON values, the connector's framing).
pub fn answer(request: &Value, table: &AnswerTable) -> Value {
    let reply = match Request::deserialize(request) {
        Ok(request) => reply_to(request, table),
        Err(e) => {
            debug!(error = %e, "remote backend: request of an unexpected shape");
            Reply::Flag { result: false, log: Vec::new() }
        }
    };
    serde_json::to_value(reply).unwrap_or(Value::Bool(false))
}

fn reply_to(request: Request, table: &AnswerTable) -> Reply {
    match request.method.as_str() {
        "initialize" => Reply::Flag { result: true, log: vec!["primwatch remote backend ready"] },
        "lookup" => {
            let p = &request.parameters;
            match table.lookup(&p.qname, &p.qtype, client_of(p)) {
                Some(records) => Reply::Records { result: records },
                None => Reply::Flag { result: false, log: Vec::new() },
            }
        }
        other => {
            debug!(method = other, "remote backend: unsupported method");
            Reply::Flag { result: false, log: Vec::new() }
        }
    }
}

/// The client as PowerDNS reports it: `real-remote` (the EDNS Client Subnet when
/// `edns-subnet-processing=yes`, else the address as /32 or /128), else `remote`.
fn client_of(parameters: &LookupParameters) -> IpNet {
    let strip_zone = |s: &str| s.split('%').next().unwrap_or(s).to_string();
    let subnet = parameters.real_remote.as_deref().and_then(|s| strip_zone(s).parse::<IpNet>().ok());
    let address = parameters
        .remote
        .as_deref()
        .and_then(|s| strip_zone(s).parse::<IpAddr>().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    crate::dns::view_index::client_key(address, subnet)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::json;

    use super::*;

    const CONFIG: &str = r#"
[server]
interfaces = ["eth0"]
[targets.tokyo1]
address = "10.0.1.1"
[targets.tokyo2]
address = "10.0.1.2"
[targets.osaka1]
address = "10.0.2.1"
[groups.tokyo]
members = ["tokyo1", "tokyo2"]
policy = "round-robin"
max_answers = 1
[groups.osaka]
members = ["osaka1"]
[names."www.example.test"]
groups = ["tokyo"]
[names."*.apps.example.test"]
a = ["192.0.2.9"]
[names."pass.example.test"]
groups = ["osaka"]
all_down = "pass"
[views.kansai]
sources = ["198.51.100.0/24"]
[views.kansai.names."www.example.test"]
groups = ["osaka"]
"#;

    struct Down(&'static str);
    impl Health for Down {
        fn target_eligible(&self, target: &str) -> bool {
            target != self.0
        }
        fn group_allowed(&self, _: &str) -> bool {
            true
        }
        fn group_forced_up(&self, _: &str) -> bool {
            false
        }
        fn group_priority(&self, _: &str, configured: i32) -> i32 {
            configured
        }
    }

    fn lookup(table: &AnswerTable, qname: &str, qtype: &str, remote: &str) -> Value {
        answer(
            &json!({"method": "lookup", "parameters": {"qname": qname, "qtype": qtype, "remote": remote, "real-remote": format!("{remote}/32"), "zone-id": -1}}),
            table,
        )
    }

    fn contents(reply: &Value) -> Vec<String> {
        let mut all: Vec<String> =
            reply["result"].as_array().unwrap().iter().map(|r| r["content"].as_str().unwrap().to_string()).collect();
        all.sort();
        all
    }

    #[test]
    fn lookups_follow_views_wildcards_rotation_and_health() {
        let config = Config::parse(Path::new("t.toml"), CONFIG).unwrap();
        let table = AnswerTable::build(&config, &Down("none"));
        // Round robin, one per reply: both members in turn.
        let first = contents(&lookup(&table, "www.example.test.", "A", "192.0.2.1"));
        let second = contents(&lookup(&table, "WWW.Example.Test.", "ANY", "192.0.2.1"));
        assert_eq!(first.len(), 1);
        assert_ne!(first, second);
        // The view by source address.
        assert_eq!(contents(&lookup(&table, "www.example.test.", "A", "198.51.100.7")), ["10.0.2.1"]);
        // And by client subnet, as PowerDNS reports it.
        let ecs = answer(
            &json!({"method": "lookup", "parameters": {"qname": "www.example.test.", "qtype": "A", "remote": "192.0.2.1", "real-remote": "198.51.100.0/24"}}),
            &table,
        );
        assert_eq!(contents(&ecs), ["10.0.2.1"]);
        assert_eq!(ecs["result"][0]["scopeMask"], 24, "the view's prefix, as XDP's ECS scope");
        // A /0 subnet opts out: the source address decides.
        let opted_out = answer(
            &json!({"method": "lookup", "parameters": {"qname": "www.example.test.", "qtype": "A", "remote": "198.51.100.9", "real-remote": "0.0.0.0/0"}}),
            &table,
        );
        assert_eq!(contents(&opted_out), ["10.0.2.1"]);
        // One label under a wildcard; not two; no answers for PowerDNS's own wildcard probes.
        assert_eq!(contents(&lookup(&table, "x.apps.example.test.", "A", "192.0.2.1")), ["192.0.2.9"]);
        assert_eq!(lookup(&table, "y.x.apps.example.test.", "A", "192.0.2.1")["result"], false);
        assert_eq!(lookup(&table, "*.apps.example.test.", "ANY", "192.0.2.1")["result"], false);
        // Not ours, other types, SOA: the next backend or NODATA.
        assert_eq!(lookup(&table, "other.example.test.", "A", "192.0.2.1")["result"], false);
        assert_eq!(lookup(&table, "www.example.test.", "MX", "192.0.2.1")["result"], json!([]));
        assert_eq!(
            lookup(&table, "www.example.test.", "AAAA", "192.0.2.1")["result"],
            json!([]),
            "no AAAA members: NODATA"
        );

        // Health: tokyo1 down leaves tokyo2; osaka1 down makes pass.example.test PowerDNS's.
        let table = AnswerTable::build(&config, &Down("tokyo1"));
        for _ in 0..3 {
            assert_eq!(contents(&lookup(&table, "www.example.test.", "A", "192.0.2.1")), ["10.0.1.2"]);
        }
        assert_eq!(contents(&lookup(&table, "pass.example.test.", "A", "192.0.2.1")), ["10.0.2.1"]);
        let table = AnswerTable::build(&config, &Down("osaka1"));
        assert_eq!(lookup(&table, "pass.example.test.", "A", "192.0.2.1")["result"], false);
    }

    #[test]
    fn any_lookups_rotate_each_family_in_turn() {
        let config = Config::parse(
            Path::new("t.toml"),
            r#"
[server]
interfaces = ["eth0"]
[targets.a1]
address = "10.0.0.1"
[targets.a2]
address = "10.0.0.2"
[targets.b1]
address = "2001:db8::1"
[targets.b2]
address = "2001:db8::2"
[groups.dual]
members = ["a1", "a2", "b1", "b2"]
policy = "round-robin"
max_answers = 1
[names."www.example.test"]
groups = ["dual"]
"#,
        )
        .unwrap();
        let table = AnswerTable::build(&config, &Down("none"));
        // PowerDNS asks ANY: each reply has one A and one AAAA, and both rotate.
        let seen: Vec<Vec<String>> =
            (0..4).map(|_| contents(&lookup(&table, "www.example.test.", "ANY", "192.0.2.1"))).collect();
        assert!(seen.iter().all(|s| s.len() == 2), "{seen:?}");
        assert_ne!(seen[0], seen[1], "consecutive replies differ: {seen:?}");
        assert_eq!(seen[0], seen[2]);
    }

    #[test]
    fn the_ecs_scope_is_the_prefix_that_decided_as_in_xdp() {
        let config = Config::parse(
            Path::new("t.toml"),
            &CONFIG.replace(
                "[views.kansai]",
                "[views.office]\nsources = [\"198.51.100.0/26\"]\n[views.office.names.\"www.example.test\"]\ngroups = [\"tokyo\"]\n\n[views.kansai]",
            ),
        )
        .unwrap();
        let table = AnswerTable::build(&config, &Down("none"));
        // A /24 subnet whose first /26 is another view: that view decides, scope 26.
        assert_eq!(table.view_of("198.51.100.0/24".parse().unwrap()), (config.views["office"].id, 26));
        // Elsewhere in kansai's /24: its answer holds for /26 blocks.
        assert_eq!(table.view_of("198.51.100.128/25".parse().unwrap()), (config.views["kansai"].id, 26));
        // In no view: the longest IPv4 view prefix.
        assert_eq!(table.view_of("192.0.2.0/24".parse().unwrap()), (0, 26));
    }

    #[test]
    fn names_above_served_names_exist_with_no_records() {
        let config = Config::parse(
            Path::new("t.toml"),
            &format!(
                "{CONFIG}\n[names.\"*.t.example.test\"]\na = [\"192.0.2.7\"]\n\
                 [names.\"a.deep.example.test\"]\na = [\"192.0.2.8\"]\n\
                 [names.\"gone.example.test\"]\ngroups = [\"osaka\"]\nall_down = \"nodata\"\n"
            ),
        )
        .unwrap();
        let table = AnswerTable::build(&config, &Down("osaka1"));
        let ent = json!([{"qtype": "TYPE0", "qname": "t.example.test.", "content": "", "ttl": 0, "scopeMask": 0}]);
        // PowerDNS asks ANY first: the marker says the name exists (NODATA, not NXDOMAIN).
        assert_eq!(lookup(&table, "t.example.test.", "ANY", "192.0.2.1")["result"], ent);
        assert_eq!(lookup(&table, "T.Example.Test", "ANY", "192.0.2.1")["result"][0]["qtype"], "TYPE0");
        // Two labels above a served name, and from inside a view.
        assert_eq!(lookup(&table, "deep.example.test.", "ANY", "192.0.2.1")["result"][0]["qtype"], "TYPE0");
        assert_eq!(lookup(&table, "deep.example.test.", "ANY", "198.51.100.7")["result"][0]["qtype"], "TYPE0");
        // A typed lookup finds nothing there; nor does a name that does not exist.
        assert_eq!(lookup(&table, "t.example.test.", "A", "192.0.2.1")["result"], false);
        assert_eq!(lookup(&table, "nx.example.test.", "ANY", "192.0.2.1")["result"], false);
        assert_eq!(lookup(&table, "b.a.deep.example.test.", "ANY", "192.0.2.1")["result"], false);
        assert_eq!(lookup(&table, "x.y.t.example.test.", "ANY", "192.0.2.1")["result"], false);
        // Under the wildcard: its records, not the marker.
        assert_eq!(contents(&lookup(&table, "x1.t.example.test.", "ANY", "192.0.2.1")), ["192.0.2.7"]);
        // A served name with no records (all down, NODATA) exists too.
        assert_eq!(lookup(&table, "gone.example.test.", "ANY", "192.0.2.1")["result"][0]["qtype"], "TYPE0");
        assert_eq!(lookup(&table, "gone.example.test.", "A", "192.0.2.1")["result"], json!([]));
    }

    #[test]
    fn other_methods_are_declined() {
        let table = AnswerTable::default();
        assert_eq!(answer(&json!({"method": "initialize", "parameters": {}}), &table)["result"], true);
        assert_eq!(answer(&json!({"method": "getDomainMetadata", "parameters": {}}), &table)["result"], false);
        assert_eq!(
            answer(&json!({"method": "lookup", "parameters": {"qname": "bad name!", "qtype": "A"}}), &table)["result"],
            false
        );
    }
}
