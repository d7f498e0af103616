//! `[cookies]`: DNS server cookies in XDP, and the secret file both paths read.

use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use super::{error, limits, ConfigError};

/// `[cookies]`: DNS server cookies (RFC 7873, made as RFC 9018 says) in XDP's answers.
#[derive(Debug, Clone, PartialEq)]
pub struct CookieConfig {
    /// `cookies.enabled` (default true): XDP answers with server cookies; off, the COOKIE option is ignored.
    pub enabled: bool,
    /// How often a fresh random secret replaces the current one (the replaced one is
    /// still accepted until the next rotation). Unused with `secret`.
    pub rotation: std::time::Duration,
    /// A fixed secret from `secret_file` (32 hex digits, as PowerDNS's
    /// `edns-cookie-secret`): the same on every node of an anycast set, and in PowerDNS,
    /// so that a cookie one of them made is valid at all. Changing the file and
    /// reloading rotates it.
    pub secret: Option<[u8; 16]>,
}

impl CookieConfig {
    /// Default `secret_rotation`: 24 hours.
    pub const DEFAULT_ROTATION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig { enabled: true, rotation: CookieConfig::DEFAULT_ROTATION, secret: None }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCookies {
    enabled: Option<bool>,
    secret_rotation: Option<Spanned<String>>,
    secret_file: Option<Spanned<std::path::PathBuf>>,
}

pub(super) fn parse_cookies(
    raw: Option<RawCookies>,
    config_dir: &Path,
    at: &error::At,
) -> Result<CookieConfig, ConfigError> {
    let Some(raw) = raw else { return Ok(CookieConfig::default()) };
    let rotation = match &raw.secret_rotation {
        None => CookieConfig::DEFAULT_ROTATION,
        Some(text) => limits::duration_in(text, "cookies.secret_rotation", limits::COOKIE_ROTATION, at)?,
    };
    let secret = match &raw.secret_file {
        None => None,
        Some(file) => Some(read_secret_file(&config_dir.join(file.get_ref())).map_err(|e| at(file.span(), e))?),
    };
    Ok(CookieConfig { enabled: raw.enabled.unwrap_or(true), rotation, secret })
}

/// A cookie secret file: 32 hex digits (surrounding whitespace allowed), readable by
/// its owner and group only and writable by its owner only — with the secret, anyone
/// can make cookies that rate limiting lets through.
fn read_secret_file(path: &Path) -> Result<[u8; 16], String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("cookies.secret_file: cannot read {shown}: {e}"))?;
    let mode = meta.permissions().mode() & 0o777;
    // Whoever owns the file can chmod it and replace the secret.
    let me = unsafe { libc::geteuid() };
    if std::os::unix::fs::MetadataExt::uid(&meta) != 0 && std::os::unix::fs::MetadataExt::uid(&meta) != me {
        return Err(format!(
            "cookies.secret_file: {shown} is owned by uid {}; it must be owned by root",
            std::os::unix::fs::MetadataExt::uid(&meta)
        ));
    }
    if mode & 0o027 != 0 {
        return Err(format!(
            "cookies.secret_file: {shown} has mode {mode:03o}; it must not be writable by its group or readable by others (chmod 640)"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cookies.secret_file: cannot read {shown}: {e}"))?;
    parse_cookie_secret(&text).ok_or_else(|| {
        format!(
            "cookies.secret_file: {shown} must hold a 128-bit secret as 32 hex digits, alone or as \
             PowerDNS's `edns-cookie-secret=HEX` line (comment lines starting with # allowed)"
        )
    })
}

/// The secret in a cookie secret file's text: 32 hex digits, either the file's one
/// line or PowerDNS's setting `edns-cookie-secret=HEX`, so that one file, linked into
/// PowerDNS's `include-dir`, keys both paths. Comments (#) and blank lines are skipped;
/// anything else is refused.
pub fn parse_cookie_secret(text: &str) -> Option<[u8; 16]> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let line = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    let hex = match line.split_once('=') {
        Some((setting, value)) if setting.trim() == "edns-cookie-secret" => value.trim(),
        Some(_) => return None,
        None => line,
    };
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..16).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()).collect();
    bytes?.try_into().ok()
}
