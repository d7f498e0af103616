//! One config for a fleet (`primwatch fleet push`): the tables every node serves alike
//! (checks, targets, groups, names, views, zones, …) are pushed to etcd as one TOML
//! document; each node runs it with its own file's node-local tables (`[server]`,
//! `[fleet]`, `[powerdns]`, `[metrics]`, `[hooks]`: interfaces, sockets, pin dir, the
//! commands it runs). Relative paths in a pushed document (name files, keys, the geoip
//! database) are read on each node, relative to its own config file's directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Config, ConfigError};

/// The tables that stay in each node's own file and never travel in a push.
pub const NODE_LOCAL_TABLES: [&str; 6] = ["server", "fleet", "powerdns", "metrics", "hooks", "dnstap"];

/// A pushed config as stored in etcd at `PREFIX/config`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushedConfig {
    /// etcd's revision of the push (its key's mod_revision): the fleet's config number.
    #[serde(default)]
    pub revision: i64,
    /// The TOML document.
    pub toml: String,
    /// The node, or host, it was pushed from, and when (unix ms).
    pub pushed_by: String,
    /// When it was pushed (unix ms).
    pub at_ms: u64,
}

impl PushedConfig {
    /// What errors in the document are reported against: `etcd:PREFIX/config@REVISION`.
    pub fn label(&self, prefix: &str) -> PathBuf {
        PathBuf::from(format!("etcd:{prefix}/config@{}", self.revision))
    }
}

/// Refuses a document carrying a node-local table, at that table's line: what the
/// push would carry must not silently replace or be replaced by each node's own.
pub fn check_document(label: &Path, text: &str) -> Result<(), ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| {
        let (line, column) = super::line_column(text, e.span().unwrap_or(0..0).start);
        ConfigError { file: label.to_owned(), line, column, reason: e.message().trim().to_string() }
    })?;
    if let Some(path) = first_escaping_path(&toml::Value::Table(table.clone())) {
        let line = text.lines().position(|l| l.contains(&format!("\"{path}\""))).map_or(0, |i| i + 1);
        return Err(ConfigError {
            file: label.to_owned(),
            line,
            column: 1,
            reason: format!(
                "'{path}': a pushed config names files relative to each node's config directory, without '..'"
            ),
        });
    }
    for key in NODE_LOCAL_TABLES {
        if table.contains_key(key) {
            let line = text.lines().position(|l| table_header_is(l, key)).map_or(0, |i| i + 1);
            return Err(ConfigError {
                file: label.to_owned(),
                line,
                column: 1,
                reason: format!("[{key}] is node-local: it stays in each node's own file and is not pushed"),
            });
        }
    }
    Ok(())
}

/// The keys whose values are file names (every table's).
const PATH_KEYS: [&str; 6] = ["name_files", "source_files", "key", "secret_file", "database", "ca_file"];

/// The first file name in `value` that is absolute or climbs with `..`: a push may
/// name only files inside each node's config directory (which the operator put there),
/// not any file the root daemon can read, whose lines an error would quote.
fn first_escaping_path(value: &toml::Value) -> Option<String> {
    let escapes = |text: &str| {
        let path = Path::new(text);
        path.is_absolute() || path.components().any(|c| matches!(c, std::path::Component::ParentDir))
    };
    let toml::Value::Table(table) = value else { return None };
    for (key, value) in table {
        if PATH_KEYS.contains(&key.as_str()) {
            let names: Vec<&str> = match value {
                toml::Value::String(s) => vec![s.as_str()],
                toml::Value::Array(items) => items.iter().filter_map(|v| v.as_str()).collect(),
                _ => Vec::new(),
            };
            if let Some(bad) = names.into_iter().find(|n| escapes(n)) {
                return Some(bad.to_string());
            }
        } else if let Some(bad) = first_escaping_path(value) {
            return Some(bad);
        }
    }
    None
}

fn table_header_is(line: &str, key: &str) -> bool {
    let line = line.trim();
    line.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|inside| inside.trim() == key || inside.trim().starts_with(&format!("{key}.")))
        || line.starts_with(&format!("{key}."))
}

/// The config a node runs: `pushed`'s tables with the node-local tables of its own file
/// at `local_path` (whose other tables are not used). Errors name the pushed document
/// (`label`, with its line) or the local file.
pub fn merge(local_path: &Path, local_text: &str, label: &Path, pushed: &str) -> Result<Config, ConfigError> {
    check_document(label, pushed)?;
    let local: toml::Table = toml::from_str(local_text).map_err(|e| {
        let (line, column) = super::line_column(local_text, e.span().unwrap_or(0..0).start);
        ConfigError { file: local_path.to_owned(), line, column, reason: e.message().trim().to_string() }
    })?;
    let node_local: toml::Table =
        local.into_iter().filter(|(key, _)| NODE_LOCAL_TABLES.contains(&key.as_str())).collect();
    if !node_local.contains_key("server") {
        return Err(ConfigError {
            file: local_path.to_owned(),
            line: 0,
            column: 0,
            reason: "this node's own tables have no [server]: it stays in each node's file".into(),
        });
    }
    let node_local = toml::to_string(&node_local).map_err(|e| ConfigError {
        file: local_path.to_owned(),
        line: 0,
        column: 0,
        reason: format!("cannot restate the node-local tables: {e}"),
    })?;
    // The pushed document first, so that its line numbers stay its own; the node-local
    // tables after it (all of them tables, so nothing lands in the document's last one).
    let pushed_lines = pushed.lines().count();
    let merged = format!("{pushed}\n{node_local}");
    // Parsed as if at the local file's path: relative paths are the node's own.
    let config = Config::parse(local_path, &merged).map_err(|mut e| {
        if e.file != local_path {
            // In a file the config names (a name file, a key): its own name and line.
        } else if e.line > 0 && e.line <= pushed_lines {
            e.file = label.to_owned();
        } else {
            e.reason = format!("in this node's own tables ({}): {}", NODE_LOCAL_TABLES.join(", "), e.reason);
            e.line = 0;
            e.column = 0;
        }
        e
    })?;
    // An exec check or a command feed runs a program on every node: only where the
    // node's own file says a push may bring one.
    if !config.fleet.as_ref().is_some_and(|f| f.pushed_exec_checks) {
        let exec = config.checks.iter().find(|(_, c)| matches!(c.kind, super::CheckKind::Exec { .. }));
        let exec = exec.map(|(name, _)| (format!("checks.{name}"), format!("check '{name}' is an exec check")));
        let feed = config
            .feeds
            .iter()
            .find(|(_, f)| matches!(f.source, super::FeedSource::Command { .. } | super::FeedSource::Stream { .. }));
        let feed = feed.map(|(name, _)| (format!("feeds.{name}"), format!("feed '{name}' runs a command")));
        if let Some((table, what)) = exec.or(feed) {
            let line = pushed.lines().position(|l| table_header_is(l, &table)).map_or(0, |i| i + 1);
            return Err(ConfigError {
                file: label.to_owned(),
                line,
                column: 1,
                reason: format!(
                    "{what} (a command every node would run): a pushed config may carry one only where the node's [fleet] sets pushed_exec_checks = true"
                ),
            });
        }
    }
    // A target is probed by every node and its health published: only at addresses
    // the node's own file allows (not itself, its metadata service, loopback, …).
    if let Some(fleet) = &config.fleet {
        let own = crate::sys::host::snapshot().map(|s| s.addresses).unwrap_or_default();
        let policy = fleet.pushed_target_policy(own);
        for (name, target) in &config.targets {
            // Both addresses: answers carry one, checks probe the other.
            let refused =
                [Some(target.address), target.check_address].into_iter().flatten().find_map(|a| policy.refuses(a));
            if let Some(why) = refused {
                let line =
                    pushed.lines().position(|l| table_header_is(l, &format!("targets.{name}"))).map_or(0, |i| i + 1);
                return Err(ConfigError {
                    file: label.to_owned(),
                    line,
                    column: 1,
                    reason: format!(
                        "target '{name}': {why}; a pushed config may probe only what this node's [fleet] pushed_targets allows (default: no special-purpose address, not the node's own)"
                    ),
                });
            }
        }
    }
    Ok(config)
}

/// Loads the local file at `path` and merges `pushed` into it (see `merge`).
pub fn load_merged(path: &Path, prefix: &str, pushed: &PushedConfig) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, e))?;
    let merged = merge(path, &text, &pushed.label(prefix), &pushed.toml);
    super::release_freed_memory();
    merged
}

/// Where a node keeps the pushed config it last ran successfully (for `PROBATION`),
/// beside its state file: a start without etcd runs it again (fail static).
pub fn cache_path(state_file: &Path) -> PathBuf {
    beside(state_file, ".pushed-config.json")
}

/// Reads the cached pushed config, if there is one that parses.
pub fn read_cache(state_file: &Path) -> Option<PushedConfig> {
    let bytes = std::fs::read(cache_path(state_file)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the cache (owner-only, replaced atomically: a crash leaves the old or the new).
pub fn write_cache(state_file: &Path, pushed: &PushedConfig) -> anyhow::Result<()> {
    crate::sys::paths::write_atomically(&cache_path(state_file), &serde_json::to_vec(pushed)?)
}

/// How long a pushed revision must run before it counts as run successfully (and is
/// kept for the next start). A node that stops sooner — a panic, a fatal error, a
/// kill — does not apply that revision again: it starts on the last revision it ran
/// successfully, or on its own file, and reports the revision as refused.
pub const PROBATION: std::time::Duration = std::time::Duration::from_secs(10);

/// A pushed revision this node will not apply, and why (kept beside the state file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    /// The refused revision (etcd's, as `PushedConfig::revision`).
    pub revision: i64,
    /// Why this node refuses it.
    pub reason: String,
}

fn beside(state_file: &Path, suffix: &str) -> PathBuf {
    let mut name = state_file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(suffix);
    state_file.with_file_name(name)
}

/// Marks `revision` as being applied: until `end_trial`, a start finds it there and
/// knows the node stopped while applying it.
pub fn begin_trial(state_file: &Path, revision: i64) -> anyhow::Result<()> {
    crate::sys::paths::write_atomically(&beside(state_file, ".pushed-trial"), revision.to_string().as_bytes())
}

/// Removes the mark `begin_trial` left: no revision is being applied (a missing mark is fine).
pub fn end_trial(state_file: &Path) {
    let _ = std::fs::remove_file(beside(state_file, ".pushed-trial"));
}

/// The revision a previous run was applying when it stopped, if any.
pub fn read_trial(state_file: &Path) -> Option<i64> {
    std::fs::read_to_string(beside(state_file, ".pushed-trial")).ok()?.trim().parse().ok()
}

/// The refusal kept beside the state file, if there is one that parses.
pub fn read_refusal(state_file: &Path) -> Option<Refusal> {
    serde_json::from_slice(&std::fs::read(beside(state_file, ".pushed-refused.json")).ok()?).ok()
}

/// Keeps `refusal` beside the state file (replaced atomically).
pub fn write_refusal(state_file: &Path, refusal: &Refusal) -> anyhow::Result<()> {
    crate::sys::paths::write_atomically(&beside(state_file, ".pushed-refused.json"), &serde_json::to_vec(refusal)?)
}

/// Forgets the kept refusal (removes its file; a missing one is fine).
pub fn clear_refusal(state_file: &Path) {
    let _ = std::fs::remove_file(beside(state_file, ".pushed-refused.json"));
}

/// At a start: the revision a previous run stopped while applying becomes a refusal
/// (kept, so that etcd handing it over again changes nothing); otherwise the refusal
/// kept from before, if any.
pub fn refusal_at_start(state_file: &Path) -> Option<Refusal> {
    let Some(revision) = read_trial(state_file) else { return read_refusal(state_file) };
    let refusal = Refusal {
        revision,
        reason: format!(
            "this node stopped within {} of applying pushed revision {revision} (see its log); \
             not applied again: push a corrected config",
            humantime::format_duration(PROBATION)
        ),
    };
    if let Err(e) = write_refusal(state_file, &refusal) {
        tracing::warn!(error = %format!("{e:#}"), "fleet: cannot keep the refusal of a pushed revision");
    }
    end_trial(state_file);
    Some(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = r#"
[server]
interfaces = ["veth9"]
port = 5353

[fleet]
etcd = ["http://127.0.0.1:2379"]

[targets.old]
address = "10.0.0.9"

[names."old.example"]
a = ["192.0.2.9"]
"#;

    const PUSHED: &str = r#"[targets.web1]
address = "10.0.0.1"
[groups.site]
members = ["web1"]
[names."www.example"]
groups = ["site"]
"#;

    #[test]
    fn a_node_runs_the_pushed_tables_with_its_own_server_and_fleet() {
        let config = merge(Path::new("/etc/pw.toml"), LOCAL, Path::new("etcd:/p/config@7"), PUSHED).unwrap();
        assert_eq!(config.interfaces, ["veth9"]);
        assert_eq!(config.port, 5353);
        assert!(config.fleet.is_some());
        assert!(config.targets.contains_key("web1"));
        // The local file's own shared tables are not used.
        assert!(!config.targets.contains_key("old"));
        assert_eq!(config.names.len(), 1);
    }

    #[test]
    fn errors_name_the_pushed_document_and_its_line() {
        let bad = PUSHED.replace("members = [\"web1\"]", "members = [\"web9\"]");
        let e = merge(Path::new("/etc/pw.toml"), LOCAL, Path::new("etcd:/p/config@8"), &bad).unwrap_err();
        assert_eq!(e.file, Path::new("etcd:/p/config@8"), "{e}");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.reason.contains("web9"), "{e}");
        // A node-local table in a push is refused at its header.
        for (table, line) in [("[server]\nport = 53\n", 7), ("[metrics]\nlisten = \"127.0.0.1:9\"\n", 7)] {
            let e = check_document(Path::new("x"), &format!("{PUSHED}{table}")).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.reason.contains("node-local"), "{e}");
        }
        // An exec check only where the node allows it.
        let exec = format!("{PUSHED}[checks.script]\ntype = \"exec\"\ncommand = [\"/bin/true\"]\n");
        let e = merge(Path::new("/etc/pw.toml"), LOCAL, Path::new("x"), &exec).unwrap_err();
        assert!(e.reason.contains("pushed_exec_checks = true") && e.line == 7, "{e}");
        // A command feed likewise.
        let feed = format!("{PUSHED}[feeds.cmdb]\ncommand = [\"/bin/true\"]\nkinds = [\"health\"]\n");
        let e = merge(Path::new("/etc/pw.toml"), LOCAL, Path::new("x"), &feed).unwrap_err();
        assert!(e.reason.contains("feed 'cmdb' runs a command") && e.line == 7, "{e}");
        let allowing = LOCAL.replace("[fleet]\n", "[fleet]\npushed_exec_checks = true\n");
        let config = merge(Path::new("/etc/pw.toml"), &allowing, Path::new("x"), &exec).unwrap();
        assert_eq!(config.checks.len(), 1);
        // Files only inside the node's config directory.
        for bad in [
            "name_files = [\"/etc/shadow\"]\n",
            "[zones.\"example\"]\nkey = \"../keys/K\"\n",
            "[views.v]\nsource_files = [\"a/../../x\"]\n",
        ] {
            let e = check_document(Path::new("x"), bad).unwrap_err();
            assert!(e.reason.contains("relative to each node's config directory"), "{bad}: {e}");
            assert_eq!(e.line, bad.lines().count(), "{bad}: {e}");
        }
        check_document(Path::new("x"), "name_files = [\"names/west.names\"]\n").unwrap();
        // An error inside a named file keeps that file's name.
        let missing = format!("name_files = [\"no-such.names\"]\n{PUSHED}");
        let e = merge(Path::new("/nonexistent/pw.toml"), LOCAL, Path::new("x"), &missing).unwrap_err();
        assert!(e.file.ends_with("no-such.names") || e.reason.contains("no-such.names"), "{e}");
        assert!(!e.reason.contains("this node's own tables"), "{e}");
        let e = check_document(Path::new("x"), "[hooks.x]\n").unwrap_err();
        assert!(e.reason.contains("[hooks] is node-local"), "{e}");
        // A local file that lost its [server] says so, against the local tables.
        let e = merge(Path::new("/etc/pw.toml"), "", Path::new("x"), PUSHED).unwrap_err();
        assert!(e.reason.contains("this node's own tables"), "{e}");
    }

    #[test]
    fn the_cache_lives_beside_the_state_file() {
        let dir = std::env::temp_dir().join(format!("pw-pushed-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state.json");
        assert_eq!(cache_path(&state), dir.join("state.json.pushed-config.json"));
        assert!(read_cache(&state).is_none());
        let pushed = PushedConfig { revision: 12, toml: PUSHED.into(), pushed_by: "a".into(), at_ms: 1 };
        write_cache(&state, &pushed).unwrap();
        assert_eq!(read_cache(&state), Some(pushed));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(cache_path(&state)).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
