//! The feed format, version 1: JSON lines. A batch is a header line and one item per
//! line; it replaces the feed's previous batch whole (a snapshot, not a delta), so a
//! target, name or prefix the next batch leaves out is gone.
//!
//! ```text
//! {"primwatch_feed": 1}
//! {"target": "web1", "health": "down", "reason": "maintenance"}
//! {"target": "web2", "health": "up", "weight": 30}
//! {"name": "shop.example.com", "groups": ["tokyo", "osaka"], "ttl": 60, "all_down": "nodata"}
//! {"name": "shop.example.com", "view": "osaka-clients", "groups": ["osaka"]}
//! {"prefix": "198.51.100.0/24", "view": "osaka-clients"}
//! ```
//!
//! Why JSON lines: every language the operator's programs are written in can print it
//! without a library; a refusal names the line; a streaming command ends a batch with an
//! empty line; and a million items are parsed one line at a time. Blank lines and lines
//! starting with `#` are skipped (in a stream, an empty line ends the batch).
//!
//! Every item is checked as the config's own tables are (targets and groups exist,
//! names are valid and in a declared zone, prefixes are CIDRs, weights and TTLs in
//! range), and only the kinds the feed's `kinds` lists are accepted. One bad line
//! refuses the whole batch, with its line number and reason.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::Deserialize;

use crate::{
    config::{all_down_from, AllDown, Config, FeedKinds, MAX_TTL, MAX_WEIGHT},
    dns::name::DnsName,
};

/// The format version this build reads.
pub const FORMAT_VERSION: u64 = 1;
/// Characters of a verdict's reason kept (the rest is cut: it is shown, not parsed).
pub const MAX_REASON: usize = 200;

/// A health verdict on one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// In answers (as far as the feed is concerned).
    Up,
    /// Out of answers: failed.
    Down,
    /// Out of answers for maintenance.
    Draining,
}

/// What the feed said about one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetVerdict {
    /// Up, down or draining.
    pub verdict: Verdict,
    /// Why, as the feed put it (printable, at most `MAX_REASON` characters).
    pub reason: String,
}

/// One name a feed serves (`{"name": …}` without a view).
#[derive(Debug, Clone, PartialEq)]
pub struct FedName {
    /// Groups in priority order (at least one, none twice, each configured).
    pub groups: Vec<String>,
    /// TTL in seconds; None: `server.default_ttl`.
    pub ttl: Option<u32>,
    /// None: serve-all.
    pub all_down: Option<AllDown>,
}

/// A name's groups in one view, and its all_down there (None: the name's own).
pub type FedViewName = (Vec<String>, Option<AllDown>);

/// One checked batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    /// `health` items, per target.
    pub health: BTreeMap<String, TargetVerdict>,
    /// `weight` items, per target.
    pub weights: BTreeMap<String, u32>,
    /// `name` items without a view.
    pub names: BTreeMap<DnsName, FedName>,
    /// `name` items with a view: view → name → (groups, all_down).
    pub view_names: BTreeMap<String, BTreeMap<DnsName, FedViewName>>,
    /// `prefix` items: prefix (truncated to its length) → view.
    pub prefixes: BTreeMap<IpNet, String>,
    /// Items in it (lines other than the header, blanks and comments).
    pub items: usize,
}

/// A refused batch: the line (1-based; 0: the batch as a whole) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1-based line of the batch; 0 when the batch as a whole is at fault.
    pub line: usize,
    /// What is wrong, for the operator.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            0 => write!(f, "{}", self.reason),
            line => write!(f, "line {line}: {}", self.reason),
        }
    }
}

/// One line as written; which fields make it which item is decided in `item`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    primwatch_feed: Option<u64>,
    target: Option<String>,
    health: Option<Verdict>,
    reason: Option<String>,
    weight: Option<u64>,
    name: Option<String>,
    view: Option<String>,
    groups: Option<Vec<String>>,
    ttl: Option<u64>,
    all_down: Option<String>,
    prefix: Option<String>,
}

/// Parses and checks `text`, one batch of the feed whose `kinds` are given, against
/// `config` (the running one). Err: the first bad line, and why.
pub fn parse(text: &[u8], kinds: FeedKinds, config: &Config) -> Result<Batch, Refusal> {
    let text = std::str::from_utf8(text).map_err(|e| Refusal {
        line: 1 + text[..e.valid_up_to()].iter().filter(|b| **b == b'\n').count(),
        reason: "not UTF-8".into(),
    })?;
    let mut batch = Batch::default();
    let mut header = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let refuse = |reason: String| Refusal { line: i + 1, reason };
        let raw: RawItem = serde_json::from_str(trimmed).map_err(|e| refuse(json_reason(&e)))?;
        if !header {
            match raw.primwatch_feed {
                Some(FORMAT_VERSION) if raw.target.is_none() && raw.name.is_none() && raw.prefix.is_none() => {
                    header = true;
                    continue;
                }
                Some(other) if raw.target.is_none() && raw.name.is_none() && raw.prefix.is_none() => {
                    return Err(refuse(format!(
                        "format version {other}; this primwatch reads version {FORMAT_VERSION}"
                    )))
                }
                _ => {
                    return Err(refuse(format!(
                        "a batch starts with the header {{\"primwatch_feed\": {FORMAT_VERSION}}}"
                    )))
                }
            }
        }
        item(raw, kinds, config, &mut batch).map_err(refuse)?;
        batch.items += 1;
    }
    if !header {
        return Err(Refusal { line: 0, reason: format!("empty: no header {{\"primwatch_feed\": {FORMAT_VERSION}}}") });
    }
    Ok(batch)
}

/// serde_json's message without its own position (the line is ours, the column its).
fn json_reason(e: &serde_json::Error) -> String {
    let message = e.to_string();
    match message.rfind(" at line ") {
        Some(cut) => format!("{} (column {})", &message[..cut], e.column()),
        None => message,
    }
}

fn item(raw: RawItem, kinds: FeedKinds, config: &Config, batch: &mut Batch) -> Result<(), String> {
    if raw.primwatch_feed.is_some() {
        return Err("the header is given once, on the first line".into());
    }
    match (&raw.target, &raw.name, &raw.prefix) {
        (Some(_), None, None) => target_item(raw, kinds, config, batch),
        (None, Some(_), None) => name_item(raw, kinds, config, batch),
        (None, None, Some(_)) => prefix_item(raw, kinds, config, batch),
        _ => Err("an item has exactly one of \"target\", \"name\" or \"prefix\"".into()),
    }
}

fn refuse_fields(present: &[(bool, &str)], item: &str) -> Result<(), String> {
    match present.iter().find(|(p, _)| *p) {
        Some((_, field)) => Err(format!("\"{field}\" does not belong in a {item} item")),
        None => Ok(()),
    }
}

fn target_item(raw: RawItem, kinds: FeedKinds, config: &Config, batch: &mut Batch) -> Result<(), String> {
    let target = raw.target.unwrap_or_default();
    refuse_fields(
        &[
            (raw.view.is_some(), "view"),
            (raw.groups.is_some(), "groups"),
            (raw.ttl.is_some(), "ttl"),
            (raw.all_down.is_some(), "all_down"),
        ],
        "target",
    )?;
    if !config.targets.contains_key(&target) && !config.named_targets.contains_key(&target) {
        return Err(format!("no target '{}' in the config", crate::sys::process::printable(target.as_bytes(), 80)));
    }
    if raw.health.is_none() && raw.weight.is_none() {
        return Err(format!("target '{target}': say \"health\" or \"weight\""));
    }
    if raw.reason.is_some() && raw.health.is_none() {
        return Err("\"reason\" goes with \"health\"".into());
    }
    if let Some(verdict) = raw.health {
        if !kinds.health {
            return Err("this feed may not say health (its kinds do not list it)".into());
        }
        let reason = crate::sys::process::printable(raw.reason.unwrap_or_default().as_bytes(), MAX_REASON);
        if batch.health.insert(target.clone(), TargetVerdict { verdict, reason }).is_some() {
            return Err(format!("target '{target}': health is given twice"));
        }
    }
    if let Some(weight) = raw.weight {
        if !kinds.weights {
            return Err("this feed may not say weights (its kinds do not list it)".into());
        }
        let weight = u32::try_from(weight).ok().filter(|w| (1..=MAX_WEIGHT).contains(w));
        let weight = weight.ok_or_else(|| format!("target '{target}': weight must be 1 to {MAX_WEIGHT}"))?;
        if batch.weights.insert(target.clone(), weight).is_some() {
            return Err(format!("target '{target}': weight is given twice"));
        }
    }
    Ok(())
}

fn name_item(raw: RawItem, kinds: FeedKinds, config: &Config, batch: &mut Batch) -> Result<(), String> {
    refuse_fields(
        &[(raw.health.is_some(), "health"), (raw.reason.is_some(), "reason"), (raw.weight.is_some(), "weight")],
        "name",
    )?;
    if !kinds.names {
        return Err("this feed may not say names (its kinds do not list it)".into());
    }
    let text = raw.name.unwrap_or_default();
    let name = DnsName::parse(&text)
        .map_err(|why| format!("name '{}': {why}", crate::sys::process::printable(text.as_bytes(), 80)))?;
    let Some(listed) = raw.groups else { return Err(format!("name '{name}' lists no groups")) };
    let mut groups: Vec<String> = Vec::with_capacity(listed.len());
    for group in listed {
        if !config.groups.contains_key(&group) {
            return Err(format!("name '{name}': no group '{}'", crate::sys::process::printable(group.as_bytes(), 80)));
        }
        if groups.contains(&group) {
            return Err(format!("name '{name}': group '{group}' is listed twice"));
        }
        groups.push(group);
    }
    if groups.is_empty() {
        return Err(format!("name '{name}' lists no groups"));
    }
    let all_down = raw.all_down.map(|policy| all_down_from(&policy, &config.groups)).transpose()?;
    match raw.view {
        None => {
            let ttl = match raw.ttl {
                None => None,
                Some(ttl) if ttl <= MAX_TTL as u64 => Some(ttl as u32),
                Some(_) => return Err(format!("name '{name}': ttl must be at most {MAX_TTL} (RFC 2181)")),
            };
            if !config.zones.is_empty() && config.zone_of(&name).is_none() {
                return Err(format!("name '{name}' lies in no declared zone"));
            }
            let text = name.to_string();
            if batch.names.insert(name, FedName { groups, ttl, all_down }).is_some() {
                return Err(format!("name '{text}' is given twice"));
            }
        }
        Some(view) => {
            if raw.ttl.is_some() {
                return Err("ttl is the name's, the same in every view: give it on the item without a view".into());
            }
            if !config.views.contains_key(&view) {
                return Err(format!("no view '{}' in the config", crate::sys::process::printable(view.as_bytes(), 80)));
            }
            let text = name.to_string();
            if batch.view_names.entry(view.clone()).or_default().insert(name, (groups, all_down)).is_some() {
                return Err(format!("name '{text}' is given twice in view '{view}'"));
            }
        }
    }
    Ok(())
}

fn prefix_item(raw: RawItem, kinds: FeedKinds, config: &Config, batch: &mut Batch) -> Result<(), String> {
    refuse_fields(
        &[
            (raw.health.is_some(), "health"),
            (raw.reason.is_some(), "reason"),
            (raw.weight.is_some(), "weight"),
            (raw.groups.is_some(), "groups"),
            (raw.ttl.is_some(), "ttl"),
            (raw.all_down.is_some(), "all_down"),
        ],
        "prefix",
    )?;
    if !kinds.views {
        return Err("this feed may not say views (its kinds do not list it)".into());
    }
    let text = raw.prefix.unwrap_or_default();
    let shown = crate::sys::process::printable(text.as_bytes(), 80);
    let prefix: IpNet = text.trim().parse().map_err(|_| format!("'{shown}' is not a CIDR prefix"))?;
    let Some(view) = raw.view else { return Err(format!("prefix {prefix} names no view")) };
    if !config.views.contains_key(&view) {
        return Err(format!("no view '{}' in the config", crate::sys::process::printable(view.as_bytes(), 80)));
    }
    match batch.prefixes.insert(prefix.trunc(), view.clone()) {
        Some(other) if other != view => Err(format!("prefix {prefix} is given for views '{other}' and '{view}'")),
        Some(_) => Err(format!("prefix {prefix} is given twice")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[server]
interfaces = ["lo"]
[targets.web1]
address = "192.0.2.1"
[targets.web2]
address = "192.0.2.2"
[groups.tokyo]
members = ["web1"]
[groups.osaka]
members = ["web2"]
[names."www.example.com"]
groups = ["tokyo"]
[views.kansai]
sources = ["198.51.100.0/24"]
"#;

    fn config() -> Config {
        Config::parse(std::path::Path::new("t.toml"), CONFIG).unwrap()
    }

    const ALL: FeedKinds = FeedKinds { health: true, weights: true, names: true, views: true };

    fn refused(text: &str, kinds: FeedKinds) -> Refusal {
        parse(text.as_bytes(), kinds, &config()).unwrap_err()
    }

    #[test]
    fn a_batch_of_every_kind_is_read() {
        let text = r#"{"primwatch_feed": 1}
# a comment
{"target": "web1", "health": "draining", "reason": "kernel upgrade"}
{"target": "web2", "health": "up", "weight": 30}

{"name": "shop.example.com", "groups": ["tokyo", "osaka"], "ttl": 60, "all_down": "nodata"}
{"name": "Shop.Example.Com.", "view": "kansai", "groups": ["osaka"]}
{"prefix": "203.0.113.7/24", "view": "kansai"}
"#;
        let batch = parse(text.as_bytes(), ALL, &config()).unwrap();
        assert_eq!(batch.items, 5);
        assert_eq!(batch.health["web1"], TargetVerdict { verdict: Verdict::Draining, reason: "kernel upgrade".into() });
        assert_eq!(batch.weights["web2"], 30);
        let shop = DnsName::parse("shop.example.com").unwrap();
        assert_eq!(batch.names[&shop].ttl, Some(60));
        assert_eq!(batch.view_names["kansai"][&shop].0, vec!["osaka".to_string()]);
        assert_eq!(batch.prefixes[&"203.0.113.0/24".parse::<IpNet>().unwrap()], "kansai");
    }

    #[test]
    fn every_kind_of_bad_line_refuses_the_batch_at_its_line() {
        let h = "{\"primwatch_feed\": 1}\n";
        // (headed: the header line is put first, body, what the reason says, the line)
        let cases: &[(bool, &str, &str, usize)] = &[
            (false, "", "no header", 0),
            (false, "{\"target\": \"web1\", \"health\": \"up\"}\n", "starts with the header", 1),
            (false, "{\"primwatch_feed\": 2}\n", "format version 2", 1),
            (true, "{\"target\": \"web9\", \"health\": \"up\"}\n", "no target 'web9'", 2),
            (true, "{\"target\": \"web1\", \"health\": \"sideways\"}\n", "unknown variant", 2),
            (true, "{\"target\": \"web1\", \"weight\": 0}\n", "weight must be 1 to", 2),
            (true, "{\"target\": \"web1\", \"weight\": 18446744073709551615}\n", "weight must be 1 to", 2),
            (true, "{\"target\": \"web1\", \"weight\": -3}\n", "invalid value", 2),
            (true, "{\"target\": \"web1\"}\n", "say \"health\" or \"weight\"", 2),
            (true, "{\"target\": \"web1\", \"health\": \"up\"}\n{\"target\": \"web1\", \"health\": \"down\"}\n", "given twice", 3),
            (true, "{\"target\": \"web1\", \"health\": \"up\", \"colour\": 1}\n", "unknown field", 2),
            (true, "{\"target\": \"web1\", \"name\": \"a.example\"}\n", "exactly one of", 2),
            (true, "{\"name\": \"a..example\", \"groups\": [\"tokyo\"]}\n", "name 'a..example'", 2),
            (true, "{\"name\": \"a.example\", \"groups\": []}\n", "lists no groups", 2),
            (true, "{\"name\": \"a.example\", \"groups\": [\"nara\"]}\n", "no group 'nara'", 2),
            (true, "{\"name\": \"a.example\", \"groups\": [\"tokyo\", \"tokyo\"]}\n", "listed twice", 2),
            (true, "{\"name\": \"a.example\", \"groups\": [\"tokyo\"], \"ttl\": 4294967295}\n", "ttl must be at most", 2),
            (true, "{\"name\": \"a.example\", \"groups\": [\"tokyo\"], \"all_down\": \"shrug\"}\n", "all_down 'shrug'", 2),
            (true, "{\"name\": \"a.example\", \"view\": \"kyushu\", \"groups\": [\"tokyo\"]}\n", "no view 'kyushu'", 2),
            (true, "{\"prefix\": \"10.0.0.0/33\", \"view\": \"kansai\"}\n", "not a CIDR prefix", 2),
            (true, "{\"prefix\": \"10.0.0.0/8\"}\n", "names no view", 2),
            (true, "{\"prefix\": \"10.0.0.0/8\", \"view\": \"kansai\"}\n{\"prefix\": \"10.1.0.0/8\", \"view\": \"kansai\"}\n", "given twice", 3),
            (true, "{\"target\": \"web1\", \"health\": \"up\"}\n\u{0}garbage\n", "expected value", 3),
            (true, "{\"primwatch_feed\": 1}\n", "header is given once", 2),
        ];
        for (headed, body, expect, line) in cases {
            let text = if *headed { format!("{h}{body}") } else { body.to_string() };
            let r = refused(&text, ALL);
            assert!(r.reason.contains(expect) && r.line == *line, "{text:?}: {r} (wanted line {line}: {expect})");
        }
        let r = parse(b"{\"primwatch_feed\": 1}\n\xff\n", ALL, &config()).unwrap_err();
        assert_eq!((r.line, r.reason.as_str()), (2, "not UTF-8"));
    }

    #[test]
    fn a_feed_says_only_its_kinds() {
        let health_only = FeedKinds { health: true, ..Default::default() };
        let h = "{\"primwatch_feed\": 1}\n";
        for body in [
            "{\"target\": \"web1\", \"weight\": 3}",
            "{\"name\": \"a.example\", \"groups\": [\"tokyo\"]}",
            "{\"prefix\": \"10.0.0.0/8\", \"view\": \"kansai\"}",
        ] {
            let r = refused(&format!("{h}{body}\n"), health_only);
            assert!(r.reason.contains("its kinds do not list it"), "{body}: {r}");
        }
    }

    #[test]
    fn untrusted_text_is_cut_and_escaped_before_it_is_shown() {
        let long = "x".repeat(5000);
        let text = format!("{{\"primwatch_feed\": 1}}\n{{\"target\": \"web1\", \"health\": \"down\", \"reason\": \"a\\u001b[31m{long}\"}}\n");
        let batch = parse(text.as_bytes(), ALL, &config()).unwrap();
        let reason = &batch.health["web1"].reason;
        assert!(!reason.contains('\u{1b}') && reason.chars().count() <= MAX_REASON + 8, "{reason}");
    }

    #[test]
    fn the_shipped_example_batches_fit_the_example_config() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let config = Config::load(&examples.join("feeds.toml")).unwrap();
        for (feed, file) in [("tenants", "feed-names.jsonl"), ("regions", "feed-views.jsonl")] {
            let text = std::fs::read(examples.join(file)).unwrap();
            let batch = parse(&text, config.feeds[feed].kinds, &config).unwrap_or_else(|r| panic!("{file}: {r}"));
            assert!(batch.items >= 2, "{file}");
        }
        // The example program's output, as the cmdb feed would read it.
        let out =
            std::process::Command::new("/usr/bin/python3").arg(examples.join("feed-inventory.py")).output().unwrap();
        assert!(out.status.success());
        let batch = parse(&out.stdout, config.feeds["cmdb"].kinds, &config).unwrap();
        assert_eq!(batch.health["web2"].verdict, Verdict::Draining);
        assert_eq!(batch.weights["web1"], 100);
        // Together they fit the config as run would apply them.
        let names =
            parse(&std::fs::read(examples.join("feed-names.jsonl")).unwrap(), config.feeds["tenants"].kinds, &config)
                .unwrap();
        let views =
            parse(&std::fs::read(examples.join("feed-views.jsonl")).unwrap(), config.feeds["regions"].kinds, &config)
                .unwrap();
        let fed = crate::feeds::overlay(&config, [("tenants", &names), ("regions", &views)]).unwrap();
        assert_eq!(fed.names.len(), 3);
        assert_eq!(fed.views["kansai"].sources.len(), 2);
        assert_eq!(fed.views["kansai"].names.len(), 1);
        // A second feed giving a served name again is refused.
        let again = crate::feeds::overlay(&fed, [("tenants", &names), ("again", &names)]).unwrap_err();
        assert!(again.contains("already served"), "{again}");
    }

    #[test]
    fn fed_data_that_clashes_with_the_config_is_refused_whole() {
        let config = config();
        let batch = |text: &str| parse(format!("{{\"primwatch_feed\": 1}}\n{text}").as_bytes(), ALL, &config).unwrap();
        // A prefix the config already puts into a view (or the same prefix twice over feeds).
        let taken = batch("{\"prefix\": \"198.51.100.0/24\", \"view\": \"kansai\"}\n");
        let e = crate::feeds::overlay(&config, [("f", &taken)]).unwrap_err();
        assert!(e.contains("prefix 198.51.100.0/24 is already in view 'kansai'"), "{e}");
        let fresh = batch("{\"prefix\": \"203.0.113.0/24\", \"view\": \"kansai\"}\n");
        let e = crate::feeds::overlay(&config, [("f", &fresh), ("g", &fresh)]).unwrap_err();
        assert!(e.starts_with("feed g: prefix 203.0.113.0/24"), "{e}");
        // A view entry for a name nobody serves, and one the view already has.
        let orphan = batch("{\"name\": \"nobody.example\", \"view\": \"kansai\", \"groups\": [\"osaka\"]}\n");
        let e = crate::feeds::overlay(&config, [("f", &orphan)]).unwrap_err();
        assert!(e.contains("which nobody serves"), "{e}");
        // What fits is added beside the config's own, and dropping it restores them.
        let fed = crate::feeds::overlay(&config, [("f", &fresh)]).unwrap();
        assert_eq!(fed.views["kansai"].sources.len(), 2);
        let back = crate::feeds::overlay(&fed, std::iter::empty()).unwrap();
        assert_eq!(back.views["kansai"].sources.len(), 1);
        assert_eq!(back.names.len(), config.names.len());
        // A full names map refuses the batch with the key to raise.
        let small = Config::parse(
            std::path::Path::new("t.toml"),
            &CONFIG.replacen("interfaces = [\"lo\"]\n", "interfaces = [\"lo\"]\nmax_names = 2\n", 1),
        )
        .unwrap();
        let two = parse(
            b"{\"primwatch_feed\": 1}\n{\"name\": \"a.example\", \"groups\": [\"tokyo\"]}\n{\"name\": \"b.example\", \"groups\": [\"tokyo\"]}\n",
            ALL,
            &small,
        )
        .unwrap();
        let e = crate::feeds::overlay(&small, [("f", &two)]).unwrap_err();
        assert!(e.contains("server.max_names is 2"), "{e}");
    }

    #[test]
    fn random_bytes_never_panic_the_parser() {
        let config = config();
        let mut seed = 0x9e3779b97f4a7c15u64;
        let pieces = [
            "{\"primwatch_feed\": 1}\n",
            "{\"target\": \"web1\", ",
            "\"health\": \"up\"}",
            "\"weight\": 99999999999}",
            "{\"name\": \"",
            "a.example\", ",
            "\"groups\": [\"tokyo\"]}",
            "{\"prefix\": \"::/0\", \"view\": \"kansai\"}",
            "\n",
            "\u{0}",
            "\"",
            "}",
            "[",
            "\\u0000",
            "é",
            "\r\n",
        ];
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(seed % 9) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                text.push_str(pieces[(seed % pieces.len() as u64) as usize]);
            }
            let _ = parse(text.as_bytes(), ALL, &config);
        }
    }
}
