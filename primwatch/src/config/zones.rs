//! `[zones."APEX"]`: the zones the served names lie in — whether each is signed, and by
//! whom, and whether XDP answers what does not exist in it.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    ops::Range,
    path::Path,
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::{error::At, limits, ConfigError};
use crate::dns::name::DnsName;

/// `[zones."APEX"]`'s `dnssec`, `key` and `signature_validity`; the key itself is read
/// by the compile step (`ZoneDraft::load_key`).
fn parse_dnssec(apex_text: &str, raw: &RawZone, config_dir: &Path, at: &At) -> Result<DnssecDraft, ConfigError> {
    let key_of = |what: &str| format!("zones.\"{apex_text}\".{what}");
    let mode = match &raw.dnssec {
        None => "off",
        Some(value) => value.get_ref().as_str(),
    };
    let signing = mode == "sign";
    for (field, present) in [("key", raw.key.as_ref()), ("signature_validity", raw.signature_validity.as_ref())] {
        if let (Some(value), false) = (present, signing) {
            return Err(at(value.span(), format!("{} applies only with dnssec = \"sign\"", key_of(field))));
        }
    }
    match mode {
        "off" => Ok(DnssecDraft::Off),
        "pass" => Ok(DnssecDraft::Pass),
        "sign" => {
            let Some(key) = &raw.key else {
                return Err(at(
                    dnssec_span_of(&raw.dnssec),
                    format!(
                        "{} = \"sign\" needs {} (the key pair dnssec-keygen wrote)",
                        key_of("dnssec"),
                        key_of("key")
                    ),
                ));
            };
            let validity = match &raw.signature_validity {
                None => crate::dns::dnssec::DEFAULT_VALIDITY,
                Some(text) => limits::duration_in(text, &key_of("signature_validity"), limits::SIGNATURE_VALIDITY, at)?,
            };
            Ok(DnssecDraft::Sign(ZoneKey {
                path: config_dir.join(key.get_ref()),
                validity,
                key: key_of("key"),
                span: key.span(),
            }))
        }
        other => Err(at(
            dnssec_span_of(&raw.dnssec),
            format!("{} '{other}' is not one of off, pass, sign", key_of("dnssec")),
        )),
    }
}

fn dnssec_span_of(value: &Option<Spanned<String>>) -> Range<usize> {
    value.as_ref().map(|v| v.span()).unwrap_or_default()
}

/// A zone as parsed, before the compile step reads its key.
#[derive(Debug, Clone)]
pub(super) struct ZoneDraft {
    dnssec: DnssecDraft,
    negative: Option<NegativeAnswers>,
}

/// `dnssec` as parsed: for "sign", where the key is and how long its signatures last.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DnssecDraft {
    Off,
    Pass,
    Sign(ZoneKey),
}

/// `key` and `signature_validity` of a zone primwatch signs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ZoneKey {
    /// The key pair's base name (`K<zone>.+<alg>+<tag>`), from the config's directory.
    path: std::path::PathBuf,
    validity: Duration,
    /// `zones."APEX".key`, for errors, and where it is written.
    key: String,
    span: Range<usize>,
}

impl ZoneDraft {
    /// The compile step: reads the zone's key pair (dnssec-keygen's files) if it is
    /// signed. Err: the key is missing, unreadable, not for this zone or of an
    /// algorithm primwatch does not sign with, at the `key` line.
    pub(super) fn load_key(self, apex: &DnsName, at: &At) -> Result<ZoneConfig, ConfigError> {
        let dnssec = match self.dnssec {
            DnssecDraft::Off => Dnssec::Off,
            DnssecDraft::Pass => Dnssec::Pass,
            DnssecDraft::Sign(key) => {
                let signer = crate::dns::dnssec::ZoneSigner::load(apex, &key.path, key.validity)
                    .map_err(|e| at(key.span.clone(), format!("{}: {e:#}", key.key)))?;
                Dnssec::Sign(std::sync::Arc::new(signer))
            }
        };
        Ok(ZoneConfig { dnssec, negative: self.negative })
    }
}

/// A zone the served names lie in (`[zones."example.com"]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// `dnssec`: "off" (the default), "pass", or "sign" with `key` (and `signature_validity`).
    pub dnssec: Dnssec,
    /// Some: XDP answers what does not exist in the zone (see `zone_data`).
    pub negative: Option<NegativeAnswers>,
}

/// `negative_answers = true`: where the zone's contents come from and how often they
/// are checked for a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegativeAnswers {
    /// The DNS server that transfers the zone (AXFR over TCP, RFC 5936); the default,
    /// PowerDNS on this host, allows transfers to 127.0.0.0/8 as shipped.
    pub transfer_from: SocketAddr,
    /// How often its SOA serial is asked for; a changed serial means a new transfer.
    pub refresh: Duration,
}

impl NegativeAnswers {
    /// `transfer_from` unless set: 127.0.0.1:53, PowerDNS on this host.
    pub const DEFAULT_TRANSFER_FROM: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53);
    /// `refresh` unless set (1 s to 1 h when set).
    pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);
}

/// Most zones with `negative_answers` (each has a slot for its SOA in XDP).
pub(super) const MAX_NEGATIVE_ZONES: usize = primwatch_common::MAX_NEGATIVE_ZONES;

/// `[zones."APEX"]` tables, each parsed by `parse_zone`; an apex declared twice (names
/// are case-insensitive) or more than `MAX_NEGATIVE_ZONES` with negative answers is
/// refused.
pub(super) fn parse_zones(
    raw: BTreeMap<Spanned<String>, Spanned<RawZone>>,
    config_dir: &Path,
    at: &At,
) -> Result<BTreeMap<DnsName, ZoneDraft>, ConfigError> {
    let mut zones = BTreeMap::new();
    for (apex, zone) in raw {
        let apex_span = apex.span();
        let apex_text = apex.into_inner();
        let dns_name = DnsName::parse(&apex_text)
            .map_err(|reason| at(apex_span.clone(), format!("zone '{apex_text}': {reason}")))?;
        if dns_name.is_wildcard() {
            return Err(at(apex_span, format!("zone '{apex_text}': a zone apex cannot be a wildcard")));
        }
        let zone = parse_zone(&apex_text, zone.into_inner(), config_dir, at)?;
        if zones.insert(dns_name, zone).is_some() {
            return Err(at(apex_span, format!("zone '{apex_text}' is declared twice (names are case-insensitive)")));
        }
    }
    let negative = zones.values().filter(|z: &&ZoneDraft| z.negative.is_some()).count();
    if negative > MAX_NEGATIVE_ZONES {
        return Err(at(
            0..0,
            format!(
                "{negative} zones have negative_answers = true; XDP holds the SOAs of at most {}",
                MAX_NEGATIVE_ZONES
            ),
        ));
    }
    Ok(zones)
}

/// One `[zones."APEX"]` table.
fn parse_zone(apex_text: &str, raw: RawZone, config_dir: &Path, at: &At) -> Result<ZoneDraft, ConfigError> {
    let dnssec = parse_dnssec(apex_text, &raw, config_dir, at)?;
    let key_of = |what: &str| format!("zones.\"{apex_text}\".{what}");
    // On by default for an unsigned zone: the documented setup (PowerDNS on this host,
    // transfers allowed to 127.0.0.0/8 as shipped) needs nothing more, and a zone that
    // cannot be transferred is simply passed, as before.
    let wanted = raw.negative_answers.as_ref().map_or(dnssec == DnssecDraft::Off, |v| *v.get_ref());
    if !wanted {
        for (field, value) in [("transfer_from", &raw.transfer_from), ("refresh", &raw.refresh)] {
            if let Some(value) = value {
                return Err(at(value.span(), format!("{} applies only with negative_answers = true", key_of(field))));
            }
        }
        return Ok(ZoneDraft { dnssec, negative: None });
    }
    if dnssec != DnssecDraft::Off {
        let span = raw.negative_answers.as_ref().map(|v| v.span()).unwrap_or_default();
        return Err(at(
            span,
            format!(
                "{} = true needs an unsigned zone (dnssec = \"off\"): a signed zone's denials carry NSEC3 records \
                 signed online, which the DNS server behind XDP makes",
                key_of("negative_answers")
            ),
        ));
    }
    let transfer_from = match &raw.transfer_from {
        None => NegativeAnswers::DEFAULT_TRANSFER_FROM,
        Some(text) => text.get_ref().parse::<SocketAddr>().map_err(|_| {
            at(
                text.span(),
                format!(
                    "{} '{}' is not an address and port like \"127.0.0.1:53\"",
                    key_of("transfer_from"),
                    text.get_ref()
                ),
            )
        })?,
    };
    if transfer_from.port() == 0 {
        let span = raw.transfer_from.as_ref().map(|v| v.span()).unwrap_or_default();
        return Err(at(span, format!("{}: port 0 is not a port", key_of("transfer_from"))));
    }
    let refresh = limits::duration_or(
        &raw.refresh,
        NegativeAnswers::DEFAULT_REFRESH,
        &key_of("refresh"),
        limits::ZONE_REFRESH,
        at,
    )?;
    Ok(ZoneDraft { dnssec, negative: Some(NegativeAnswers { transfer_from, refresh }) })
}

/// Whether a zone is DNSSEC-signed, and so who answers DO=1 queries for its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dnssec {
    /// Unsigned (the default): a DO=1 query gets the same answer as without DO, from
    /// XDP, with DO copied into the reply (RFC 3225 §3).
    Off,
    /// Signed by the DNS server behind XDP: DO=1 queries go to it.
    Pass,
    /// Signed with this key by primwatch (the answers XDP gives) and by the DNS server
    /// behind it (the rest of the zone): DO=1 answers carry their RRSIG.
    Sign(std::sync::Arc<crate::dns::dnssec::ZoneSigner>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawZone {
    dnssec: Option<Spanned<String>>,
    /// `dnssec = "sign"`: the BIND-format key pair (`K<zone>.+013+<tag>`).
    key: Option<Spanned<String>>,
    signature_validity: Option<Spanned<String>>,
    /// XDP answers NXDOMAIN and NODATA for the zone (unsigned zones only; the default
    /// for them) …
    negative_answers: Option<Spanned<bool>>,
    /// … from its contents as the DNS server at this address transfers them (AXFR) …
    transfer_from: Option<Spanned<String>>,
    /// … whose SOA serial is checked this often.
    refresh: Option<Spanned<String>>,
}
