//! `[dnstap]`: a log of XDP's answers in dnstap (Frame Streams of dnstap protobuf
//! messages, as Knot, BIND, Unbound and NSD write it), to a file or a collector's Unix
//! socket. Written by `tap::dnstap`.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{error::At, limits::count_or, ConfigError};

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnstapOutput {
    /// `file`: written here, rotated at `max_bytes` into `PATH.1` … `PATH.keep`.
    File {
        /// The file (relative: to the config file's directory).
        path: PathBuf,
        /// `file_max_bytes`: 1 MiB to 1 TiB, default 100 MiB.
        max_bytes: u64,
        /// `file_keep`: rotated files kept, 0 to 1000, default 5.
        keep: usize,
    },
    /// `socket`: a collector listening on this Unix socket (bidirectional Frame Streams,
    /// e.g. `fstrm_capture`); reconnected every second while it is gone.
    Socket(PathBuf),
}

/// `[dnstap]` as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnstapConfig {
    /// `file` or `socket` (exactly one).
    pub output: DnstapOutput,
    /// `sample`: one answer in this many per CPU is logged, 1 to 1,000,000; default 1 (all).
    pub sample: u32,
    /// `max_per_second`: at most this many answers logged a second, 0 (no cap) to
    /// 10,000,000; default 0.
    pub max_per_second: u32,
    /// `identity`: the server's name in each message, 1 to 255 bytes; default the host name.
    pub identity: String,
    /// `log_queries`, `log_responses`: AUTH_QUERY and AUTH_RESPONSE messages; both default on.
    pub log_queries: bool,
    /// See `log_queries`.
    pub log_responses: bool,
}

/// `file_max_bytes` range and default.
pub(super) const DNSTAP_FILE_MAX_BYTES: std::ops::RangeInclusive<usize> = 1 << 20..=1 << 40;
const DEFAULT_FILE_MAX_BYTES: usize = 100 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDnstap {
    file: Option<Spanned<PathBuf>>,
    socket: Option<Spanned<PathBuf>>,
    file_max_bytes: Option<Spanned<usize>>,
    file_keep: Option<Spanned<usize>>,
    sample: Option<Spanned<usize>>,
    max_per_second: Option<Spanned<usize>>,
    identity: Option<Spanned<String>>,
    log_queries: Option<bool>,
    log_responses: Option<bool>,
}

/// Checks `[dnstap]` (at `span`); relative paths are under `config_dir`.
pub(super) fn parse(
    raw: Spanned<RawDnstap>,
    config_dir: &std::path::Path,
    at: &At,
) -> Result<DnstapConfig, ConfigError> {
    let span = raw.span();
    let raw = raw.into_inner();
    let output = match (&raw.file, &raw.socket) {
        (Some(file), None) => DnstapOutput::File {
            path: config_dir.join(file.get_ref()),
            max_bytes: count_or(
                &raw.file_max_bytes,
                DEFAULT_FILE_MAX_BYTES,
                "dnstap.file_max_bytes",
                DNSTAP_FILE_MAX_BYTES,
                at,
            )? as u64,
            keep: count_or(&raw.file_keep, 5, "dnstap.file_keep", 0..=1000, at)?,
        },
        (None, Some(socket)) => {
            if let Some(key) = raw.file_max_bytes.as_ref().or(raw.file_keep.as_ref()) {
                return Err(at(key.span(), "dnstap.file_max_bytes and file_keep go with file, not socket".into()));
            }
            DnstapOutput::Socket(config_dir.join(socket.get_ref()))
        }
        _ => return Err(at(span, "[dnstap] needs exactly one of file and socket".into())),
    };
    let identity = match raw.identity {
        Some(identity) if (1..=255).contains(&identity.get_ref().len()) => identity.into_inner(),
        Some(identity) => return Err(at(identity.span(), "dnstap.identity must be 1 to 255 bytes".into())),
        None => super::fleet::host_name(),
    };
    Ok(DnstapConfig {
        output,
        sample: count_or(&raw.sample, 1, "dnstap.sample", 1..=1_000_000, at)? as u32,
        max_per_second: count_or(&raw.max_per_second, 0, "dnstap.max_per_second", 0..=10_000_000, at)? as u32,
        identity,
        log_queries: raw.log_queries.unwrap_or(true),
        log_responses: raw.log_responses.unwrap_or(true),
    })
}
