//! `[powerdns]`: the remote backend's socket, who may connect, and PowerDNS's control
//! socket for cache purges.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{error, limits, ConfigError};
use crate::sys::local_socket::{self, Access};

/// The PowerDNS remote backend's socket (`[powerdns]`).
#[derive(Debug, Clone, PartialEq)]
pub struct PowerDnsConfig {
    /// `powerdns.socket`: the Unix socket the remote backend listens on for PowerDNS.
    pub socket: PathBuf,
    /// Who may connect (root, and PowerDNS's group with mode 0660), how many at once, and when an idle
    /// connection gives up its slot.
    pub access: Access,
    /// PowerDNS's control socket (`pdns_control`'s), if its packet cache is on: the
    /// cache is purged whenever the answers change.
    pub control_socket: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPowerDns {
    /// e.g. "/run/primwatch/pdns.sock"; pdns.conf: remote-connection-string=unix:path=...
    socket: PathBuf,
    /// The group PowerDNS runs as (default "pdns" where it exists).
    group: Option<Spanned<String>>,
    max_connections: Option<Spanned<usize>>,
    idle_timeout: Option<Spanned<String>>,
    /// e.g. "/run/pdns/pdns.controlsocket": with PowerDNS's packet cache on, purged on
    /// every change of the answers.
    control_socket: Option<PathBuf>,
}

/// The PowerDNS group PowerDNS runs as on Debian.
pub const DEFAULT_POWERDNS_GROUP: &str = "pdns";

/// PowerDNS opens one connection per backend instance (a few per receiver thread).
pub const DEFAULT_POWERDNS_MAX_CONNECTIONS: usize = 64;

/// PowerDNS keeps its connections open and does not expect them closed under it, so an
/// idle one is closed only when a new connection needs its slot.
pub const DEFAULT_POWERDNS_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) fn parse_powerdns(raw: RawPowerDns, at: &error::At) -> Result<PowerDnsConfig, ConfigError> {
    let group = match &raw.group {
        Some(name) if name.get_ref().is_empty() => None,
        Some(name) => match local_socket::group_id(name.get_ref()) {
            Some(gid) => Some((name.get_ref().clone(), gid)),
            None => {
                return Err(at(
                    name.span(),
                    format!("powerdns.group: no group named '{}' on this host", name.get_ref()),
                ))
            }
        },
        None => local_socket::group_id(DEFAULT_POWERDNS_GROUP).map(|gid| (DEFAULT_POWERDNS_GROUP.to_string(), gid)),
    };
    let max_connections = limits::count_or(
        &raw.max_connections,
        DEFAULT_POWERDNS_MAX_CONNECTIONS,
        "powerdns.max_connections",
        limits::POWERDNS_CONNECTIONS,
        at,
    )?;
    let idle_timeout = limits::duration_or(
        &raw.idle_timeout,
        DEFAULT_POWERDNS_IDLE_TIMEOUT,
        "powerdns.idle_timeout",
        limits::POWERDNS_IDLE_TIMEOUT,
        at,
    )?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    Ok(PowerDnsConfig {
        socket: raw.socket,
        access: Access { mode, group, max_connections, idle_timeout },
        control_socket: raw.control_socket,
    })
}
