//! `[fleet]`: where etcd is, who this node is, what a pushed config may carry.

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use super::{error, target_addresses, ConfigError};

/// `[fleet]` as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// etcd client URLs (`http://10.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Every key of this fleet lies under it (no trailing '/').
    pub prefix: String,
    /// This node's name (default: the host name).
    pub node: String,
    /// etcd authentication, if the cluster has it on.
    pub user: Option<(String, String)>,
    /// With https:// endpoints: the TLS settings (PEM, read when the config is).
    pub tls: Option<FleetTls>,
    /// `pushed_exec_checks`: a pushed config may carry exec checks (commands this node
    /// runs). Off by default: write access to etcd must not mean running commands.
    pub pushed_exec_checks: bool,
    /// `pushed_targets`: the ranges a pushed config's target addresses (given or
    /// resolved) must lie in. None: anywhere but special-purpose addresses and this
    /// node's own (`target_addresses::TargetPolicy`).
    pub pushed_targets: Option<Vec<ipnet::IpNet>>,
}

impl FleetConfig {
    /// What a pushed config's targets may be on this node: `pushed_targets`, or
    /// anything but special-purpose addresses and `own` (this host's addresses).
    pub fn pushed_target_policy(&self, own: Vec<IpAddr>) -> target_addresses::TargetPolicy {
        target_addresses::TargetPolicy { allowed: self.pushed_targets.clone(), special_ok: false, own }
    }
}

/// `[fleet] ca`, `cert`, `key`: how a node checks etcd's certificate and proves its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetTls {
    /// The CA that signed the etcd members' certificates (PEM).
    pub ca: Vec<u8>,
    /// This node's client certificate and private key (PEM), for etcd's
    /// `--client-cert-auth`.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFleet {
    etcd: Vec<Spanned<String>>,
    prefix: Option<Spanned<String>>,
    node: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    password_file: Option<Spanned<PathBuf>>,
    #[serde(default)]
    password_over_http: bool,
    ca: Option<Spanned<PathBuf>>,
    cert: Option<Spanned<PathBuf>>,
    key: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pushed_exec_checks: bool,
    pushed_targets: Option<Spanned<Vec<String>>>,
}

/// `[fleet]`: the etcd endpoints (all http:// or all https:// URLs), the TLS files for
/// https, the key prefix (default `/primwatch`) and this node's name (default: the
/// host name). Relative file names are relative to the config file's directory.
pub(super) fn parse_fleet(raw: RawFleet, config_dir: &Path, at: &error::At) -> Result<FleetConfig, ConfigError> {
    let mut endpoints = Vec::new();
    let mut schemes = std::collections::BTreeSet::new();
    for url in &raw.etcd {
        let text = url.get_ref();
        let Some((scheme, rest)) = text.split_once("://").filter(|(s, _)| ["http", "https"].contains(s)) else {
            return Err(at(url.span(), format!("fleet.etcd '{text}' is not http://HOST:PORT or https://HOST:PORT")));
        };
        if rest.is_empty() || rest.contains('/') {
            return Err(at(url.span(), format!("fleet.etcd '{text}' is not {scheme}://HOST:PORT")));
        }
        schemes.insert(scheme);
        if schemes.len() > 1 {
            return Err(at(url.span(), "fleet.etcd mixes http:// and https:// endpoints".into()));
        }
        endpoints.push(text.clone());
    }
    if endpoints.is_empty() {
        return Err(at(0..0, "fleet.etcd lists no endpoints".into()));
    }
    let tls = parse_fleet_tls(&raw, schemes.contains("https"), config_dir, at)?;
    let prefix = match &raw.prefix {
        None => "/primwatch".to_string(),
        Some(p) => {
            let text = p.get_ref().trim_end_matches('/');
            if !text.starts_with('/') || text.len() < 2 || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(at(
                    p.span(),
                    format!("fleet.prefix '{}' must start with '/' and name a key path", p.get_ref()),
                ));
            }
            text.to_string()
        }
    };
    let node = match &raw.node {
        Some(n) => {
            let text = n.get_ref();
            if text.is_empty() || text.contains('/') || text.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(at(
                    n.span(),
                    format!("fleet.node '{text}' must be a non-empty name without '/' or spaces"),
                ));
            }
            text.clone()
        }
        None => host_name(),
    };
    let user = parse_fleet_user(&raw, schemes.contains("http"), config_dir, at)?;
    let pushed_targets = match &raw.pushed_targets {
        None => None,
        Some(list) => Some(
            list.get_ref()
                .iter()
                .map(|text| {
                    text.parse::<ipnet::IpNet>()
                        .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map(|net| net.trunc())
                        .map_err(|_| at(list.span(), format!("fleet.pushed_targets: '{text}' is not a CIDR prefix")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(FleetConfig { endpoints, prefix, node, user, tls, pushed_exec_checks: raw.pushed_exec_checks, pushed_targets })
}

/// `[fleet] user` with `password` or `password_file` (root-only, like a private key;
/// its first line). Over http:// etcd sees the password in clear text on the wire:
/// refused unless `password_over_http = true` says the operator knows.
pub(super) fn parse_fleet_user(
    raw: &RawFleet,
    http: bool,
    config_dir: &Path,
    at: &error::At,
) -> Result<Option<(String, String)>, ConfigError> {
    const MAX_PASSWORD: usize = 1024;
    let password = match (&raw.password, &raw.password_file) {
        (Some(_), Some(file)) => {
            return Err(at(file.span(), "fleet.password and fleet.password_file: one or the other".into()))
        }
        (Some(p), None) => Some((p.span(), p.get_ref().clone())),
        (None, Some(file)) => {
            let path = config_dir.join(file.get_ref());
            crate::sys::paths::check_private_file(&path)
                .map_err(|e| at(file.span(), format!("fleet.password_file: {e:#}")))?;
            let text = std::fs::read_to_string(&path)
                .map_err(|e| at(file.span(), format!("fleet.password_file: cannot read {}: {e}", path.display())))?;
            let line = text.lines().next().unwrap_or("").trim().to_string();
            if line.is_empty() || line.len() > MAX_PASSWORD {
                return Err(at(
                    file.span(),
                    format!(
                        "fleet.password_file: {} must hold the password on its first line (1 to {MAX_PASSWORD} bytes)",
                        path.display()
                    ),
                ));
            }
            Some((file.span(), line))
        }
        (None, None) => None,
    };
    match (&raw.user, password) {
        (None, None) => Ok(None),
        (Some(_), Some((span, _))) if http && !raw.password_over_http => Err(at(
            span,
            "fleet: a password over http:// travels in clear text; use https:// endpoints, \
             or set password_over_http = true"
                .into(),
        )),
        (Some(u), Some((_, password))) => Ok(Some((u.get_ref().clone(), password))),
        (Some(u), None) => Err(at(u.span(), "fleet.user needs fleet.password or fleet.password_file".into())),
        (None, Some((span, _))) => Err(at(span, "fleet.user and fleet.password go together".into())),
    }
}

/// `[fleet] ca`, `cert`, `key`: needed (ca) or allowed (cert and key, together) only
/// with https:// endpoints. The files are read now, so that check-config refuses a
/// missing one; the private key must be root-only, like a zone's.
pub(super) fn parse_fleet_tls(
    raw: &RawFleet,
    https: bool,
    config_dir: &Path,
    at: &error::At,
) -> Result<Option<FleetTls>, ConfigError> {
    let read = |file: &Spanned<PathBuf>, key: &str| {
        let path = config_dir.join(file.get_ref());
        if key == "key" {
            crate::sys::paths::check_private_file(&path).map_err(|e| at(file.span(), format!("fleet.key: {e:#}")))?;
        }
        let pem = std::fs::read(&path)
            .map_err(|e| at(file.span(), format!("fleet.{key}: cannot read {}: {e}", path.display())))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN ") {
            return Err(at(file.span(), format!("fleet.{key}: {} is not a PEM file", path.display())));
        }
        Ok(pem)
    };
    if !https {
        if let Some(file) = [&raw.ca, &raw.cert, &raw.key].into_iter().flatten().next() {
            return Err(at(file.span(), "fleet.ca, cert and key apply only to https:// endpoints".into()));
        }
        return Ok(None);
    }
    let Some(ca) = &raw.ca else {
        return Err(at(0..0, "fleet.etcd uses https://: fleet.ca must name the CA of etcd's certificates".into()));
    };
    let identity = match (&raw.cert, &raw.key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((read(cert, "cert")?, read(key, "key")?)),
        (Some(v), None) | (None, Some(v)) => {
            return Err(at(v.span(), "fleet.cert and fleet.key go together".into()));
        }
    };
    Ok(Some(FleetTls { ca: read(ca, "ca")?, identity }))
}

/// This host's name (gethostname), the default fleet node name.
pub(crate) fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    if ok && end > 0 {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "localhost".into()
    }
}
