//! `[feeds.NAME]`: data from the operator's own programs — health verdicts, weights,
//! names and view prefixes — read from a command run every `interval`, a long-running
//! command streaming batches, a file re-read when it changes, or an HTTP push listener.
//! What a batch may say and how it is checked is `feeds::batch`; this is the table.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::{
    error::At,
    limits::{count_or, duration_or, FEED_FIRST_BATCH_WAIT, FEED_INTERVAL, FEED_STALE_AFTER, FEED_TIMEOUT},
    ConfigError,
};

/// `[feeds.X] max_bytes` unless set: the largest batch read (64 MiB holds about a
/// million names or prefixes as JSON lines).
pub const DEFAULT_FEED_MAX_BYTES: usize = 64 << 20;
/// `[feeds.X] max_bytes` range: 1 KiB to 1 GiB.
pub(crate) const FEED_MAX_BYTES: std::ops::RangeInclusive<usize> = 1024..=1 << 30;

/// Where a feed's batches come from.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedSource {
    /// `command` with `interval`: run every interval; all its stdout is one batch.
    Command {
        /// The program and its arguments (not empty, not writable by others).
        command: Vec<String>,
        /// `interval`: between the end of one run and the start of the next.
        interval: Duration,
        /// The user it runs as (`server.exec_user`); None until the whole config is read.
        run_as: Option<crate::sys::process::RunAs>,
    },
    /// `command` with `stream = true`: kept running (restarted when it exits); its
    /// stdout is a sequence of batches, each ended by an empty line.
    Stream {
        /// The program and its arguments.
        command: Vec<String>,
        /// The user it runs as, as for `Command`.
        run_as: Option<crate::sys::process::RunAs>,
    },
    /// `file`: the whole file is one batch, read again when it changes (renamed over
    /// or written in place).
    File {
        /// Relative paths are read from the config's directory.
        path: PathBuf,
    },
    /// `listen`: `POST /feeds/NAME` on this address; the body is one batch.
    Push {
        /// The listener's address.
        listen: SocketAddr,
        /// `token_file`'s token: requests must carry `Authorization: Bearer TOKEN`.
        token: Token,
    },
}

/// A push listener's bearer token: compared, never printed (its Debug form is redacted,
/// so a config logged with `{:?}` does not leak it).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What a feed's batch may say (`kinds`): each is refused in a batch unless listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeedKinds {
    /// `health`: targets up, down or draining (read by `type = "feed"` checks).
    pub health: bool,
    /// `weights`: targets' weights under the `weighted` policy.
    pub weights: bool,
    /// `names`: names and their groups, per view.
    pub names: bool,
    /// `views`: client prefixes and their view.
    pub views: bool,
}

/// What a feed's data does once the feed failed or said nothing for `stale_after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnStale {
    /// Keep serving its last good batch (the default: a monitoring system that is down
    /// says nothing about the backends).
    #[default]
    Keep,
    /// Health: the targets' own checks decide alone (the feed's check counts as up);
    /// weights: the configured weights; names and views: dropped.
    Checks,
    /// Health: every target it judges is down; weights, names and views: dropped.
    Down,
}

/// One `[feeds.X]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedConfig {
    /// Where batches come from.
    pub source: FeedSource,
    /// What a batch may say.
    pub kinds: FeedKinds,
    /// `timeout`: a command run (or a push body) not done by then fails; 10 s default.
    pub timeout: Duration,
    /// `stale_after`: no good batch for this long makes the feed stale; None: never.
    /// Default: three intervals for a command, none otherwise.
    pub stale_after: Option<Duration>,
    /// `on_stale`: default `keep`.
    pub on_stale: OnStale,
    /// `persist`: the last good batch is saved in the state file and served again
    /// after a restart; default false (the feed's first batch is awaited instead).
    pub persist: bool,
    /// `first_batch_wait`: at start, how long answers wait for the feed's first batch
    /// before the controller serves without it (its health checks count as down until
    /// then); default 10 s.
    pub first_batch_wait: Duration,
    /// `max_bytes`: a larger batch is refused; default `DEFAULT_FEED_MAX_BYTES`.
    pub max_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFeed {
    command: Option<Spanned<Vec<String>>>,
    stream: Option<bool>,
    interval: Option<Spanned<String>>,
    file: Option<Spanned<PathBuf>>,
    listen: Option<Spanned<String>>,
    token_file: Option<Spanned<PathBuf>>,
    kinds: Spanned<Vec<Spanned<String>>>,
    timeout: Option<Spanned<String>>,
    stale_after: Option<Spanned<String>>,
    on_stale: Option<OnStale>,
    persist: Option<bool>,
    first_batch_wait: Option<Spanned<String>>,
    max_bytes: Option<Spanned<usize>>,
}

/// Feed names become metric labels, ctl output and URL paths: kept plain.
fn valid_feed_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses every `[feeds.X]` table. Err: the first problem, at its key.
pub(super) fn parse_feeds(
    raw: BTreeMap<Spanned<String>, Spanned<RawFeed>>,
    config_dir: &std::path::Path,
    at: &At,
) -> Result<BTreeMap<String, FeedConfig>, ConfigError> {
    let mut feeds = BTreeMap::new();
    let mut listeners: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for (name, raw) in raw {
        let span = raw.span();
        let feed = parse_feed(name.get_ref(), raw.into_inner(), span.clone(), config_dir, at)?;
        if !valid_feed_name(name.get_ref()) {
            return Err(at(
                name.span(),
                format!("feed name '{}' must be 1-64 letters, digits, '-' or '_'", name.get_ref()),
            ));
        }
        if let FeedSource::Push { listen, .. } = &feed.source {
            if let Some(other) = listeners.insert(*listen, name.get_ref().clone()) {
                return Err(at(span, format!("feeds '{other}' and '{}' both listen on {listen}", name.get_ref())));
            }
        }
        feeds.insert(name.into_inner(), feed);
    }
    Ok(feeds)
}

fn parse_feed(
    name: &str,
    raw: RawFeed,
    span: std::ops::Range<usize>,
    config_dir: &std::path::Path,
    at: &At,
) -> Result<FeedConfig, ConfigError> {
    let key = |k: &str| format!("feeds.{name}.{k}");
    let sources = [raw.command.is_some(), raw.file.is_some(), raw.listen.is_some()];
    if sources.iter().filter(|s| **s).count() != 1 {
        return Err(at(span, format!("feed '{name}' needs exactly one of command, file or listen")));
    }
    let foreign = |present: bool, what: &str, applies: &str| -> Result<(), ConfigError> {
        match present {
            true => Err(at(span.clone(), format!("{} applies to {applies} feeds only", key(what)))),
            false => Ok(()),
        }
    };
    foreign(raw.stream.is_some() && raw.command.is_none(), "stream", "command")?;
    foreign(
        raw.interval.is_some() && (raw.command.is_none() || raw.stream == Some(true)),
        "interval",
        "command (not stream)",
    )?;
    foreign(raw.token_file.is_some() && raw.listen.is_none(), "token_file", "listen")?;
    let interval = duration_or(&raw.interval, Duration::from_secs(10), &key("interval"), FEED_INTERVAL, at)?;
    let timeout = duration_or(&raw.timeout, Duration::from_secs(10), &key("timeout"), FEED_TIMEOUT, at)?;
    let source = if let Some(command) = raw.command {
        if command.get_ref().is_empty() {
            return Err(at(command.span(), format!("{} must name a program", key("command"))));
        }
        if let Some(why) = crate::sys::process::unsafe_command(&command.get_ref()[0]) {
            return Err(at(command.span(), format!("{}: {why}", key("command"))));
        }
        match raw.stream.unwrap_or(false) {
            true => FeedSource::Stream { command: command.into_inner(), run_as: None },
            false => FeedSource::Command { command: command.into_inner(), interval, run_as: None },
        }
    } else if let Some(file) = raw.file {
        FeedSource::File { path: config_dir.join(file.get_ref()) }
    } else {
        let listen = raw.listen.expect("one source is set");
        let address: SocketAddr = listen.get_ref().parse().map_err(|_| {
            at(listen.span(), format!("{} '{}' is not an address:port", key("listen"), listen.get_ref()))
        })?;
        let Some(token_file) = raw.token_file else {
            return Err(at(
                listen.span(),
                format!("{} needs a token_file (the bearer token pushes must carry)", key("listen")),
            ));
        };
        let path = config_dir.join(token_file.get_ref());
        let token = read_token(&path).map_err(|why| at(token_file.span(), format!("{}: {why}", key("token_file"))))?;
        FeedSource::Push { listen: address, token: Token(token) }
    };
    let mut kinds = FeedKinds::default();
    for kind in raw.kinds.get_ref() {
        let slot = match kind.get_ref().as_str() {
            "health" => &mut kinds.health,
            "weights" => &mut kinds.weights,
            "names" => &mut kinds.names,
            "views" => &mut kinds.views,
            other => {
                return Err(at(
                    kind.span(),
                    format!("{}: '{other}' is not one of health, weights, names, views", key("kinds")),
                ))
            }
        };
        if std::mem::replace(slot, true) {
            return Err(at(kind.span(), format!("{}: '{}' is listed twice", key("kinds"), kind.get_ref())));
        }
    }
    if kinds == FeedKinds::default() {
        return Err(at(raw.kinds.span(), format!("{} lists nothing the feed may say", key("kinds"))));
    }
    let stale_default = match &source {
        FeedSource::Command { interval, .. } => Some(*interval * 3 + timeout),
        _ => None,
    };
    let stale_after = match &raw.stale_after {
        None => stale_default,
        Some(text) => {
            Some(duration_or(&Some(text.clone()), Duration::ZERO, &key("stale_after"), FEED_STALE_AFTER, at)?)
        }
    };
    let first_batch_wait = duration_or(
        &raw.first_batch_wait,
        Duration::from_secs(10),
        &key("first_batch_wait"),
        FEED_FIRST_BATCH_WAIT,
        at,
    )?;
    let max_bytes = count_or(&raw.max_bytes, DEFAULT_FEED_MAX_BYTES, &key("max_bytes"), FEED_MAX_BYTES, at)?;
    Ok(FeedConfig {
        source,
        kinds,
        timeout,
        stale_after,
        on_stale: raw.on_stale.unwrap_or_default(),
        persist: raw.persist.unwrap_or(false),
        first_batch_wait,
        max_bytes,
    })
}

/// A push listener's bearer token: a root-only file (`check_private_file`) holding one
/// line of 16 to 256 visible ASCII characters.
fn read_token(path: &std::path::Path) -> Result<String, String> {
    crate::sys::paths::check_private_file(path).map_err(|e| format!("{e:#}"))?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let token = text.trim();
    if !(16..=256).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{} must hold one token of 16 to 256 visible ASCII characters (e.g. `openssl rand -hex 32`)",
            path.display()
        ));
    }
    Ok(token.to_string())
}
