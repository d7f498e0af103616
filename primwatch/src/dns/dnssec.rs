//! DNSSEC signing of the RRsets XDP answers with (zones with `dnssec = "sign"`).
//!
//! The zone-signing key is a BIND-format key pair (`K<zone>.+<alg>+<tag>.key` and
//! `.private`, as `dnssec-keygen` writes them and `pdnsutil import-zone-key` reads them),
//! so PowerDNS signs the rest of the zone with the same key. Only signatures leave this
//! module: the private key stays in the controller's memory. The canonical form and
//! order of the signed data (RFC 4034 §6) are hickory-proto's; the signing is ring's.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::Engine as _;
use hickory_proto::{
    rr::{
        dnssec::{
            rdata::{DNSKEY, RRSIG},
            tbs, Algorithm, KeyPair, Private,
        },
        rdata::{A, AAAA},
        DNSClass, Name, RData, Record, RecordType,
    },
    serialize::binary::{BinEncodable as _, BinEncoder},
};
use primwatch_common::{Family, RrsigRr, MAX_SIGNER_NAME_LEN, RRSIG_RR_MAX};

use crate::dns::name::DnsName;

/// How far back a signature's inception is set, so that resolvers whose clocks run
/// behind accept it (RFC 4035 §5.3.1 checks inception ≤ now).
pub const INCEPTION_BACKDATE: Duration = Duration::from_secs(3600);
/// Default validity of a signature (`zones.*.signature_validity`); signatures are
/// renewed once half of it has passed.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(14 * 24 * 3600);

/// A zone's signing key and what every signature by it carries.
pub struct ZoneSigner {
    /// The zone apex: the signer name of every RRSIG (RFC 4034 §3.1.7).
    pub apex: DnsName,
    apex_name: Name,
    /// The key's algorithm: 13 (ECDSAP256SHA256) or 15 (ED25519).
    pub algorithm: Algorithm,
    key: KeyPair<Private>,
    /// The DNSKEY record's RDATA as the `.key` file has it (flags, protocol 3, the
    /// algorithm and public key): what PowerDNS publishes and resolvers check with.
    pub dnskey: DNSKEY,
    /// The DNSKEY's key tag (RFC 4034 Appendix B), carried in every RRSIG it makes.
    pub key_tag: u16,
    /// Where the key came from (for messages).
    pub key_file: PathBuf,
    /// How long a signature is valid from its making (plus the backdated inception).
    pub validity: Duration,
}

impl std::fmt::Debug for ZoneSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ZoneSigner({} key {} alg {})", self.apex, self.key_tag, u8::from(self.algorithm))
    }
}

impl PartialEq for ZoneSigner {
    /// The same zone, key and validity: signatures made by one are good for the other.
    fn eq(&self, other: &ZoneSigner) -> bool {
        self.apex == other.apex
            && self.dnskey == other.dnskey
            && self.key_tag == other.key_tag
            && self.validity == other.validity
    }
}

impl Eq for ZoneSigner {}

impl ZoneSigner {
    /// Loads the key pair `base` names: the path `dnssec-keygen` printed
    /// (`Kexample.com.+013+12345`), with or without `.key` / `.private`.
    ///
    /// Errors: either file missing or unreadable; the private file readable by anyone
    /// but its owner, or owned by another user than root or this process; an algorithm
    /// other than 13 (ECDSAP256SHA256, RFC 6605) or 15 (ED25519, RFC 8080); a key for
    /// another zone; a public key that does not match the private one.
    pub fn load(apex: &DnsName, base: &Path, validity: Duration) -> Result<ZoneSigner> {
        let text = base.to_string_lossy();
        let stem = text.strip_suffix(".private").or_else(|| text.strip_suffix(".key")).unwrap_or(&text);
        let (key_path, private_path) = (PathBuf::from(format!("{stem}.key")), PathBuf::from(format!("{stem}.private")));
        crate::sys::paths::check_private_file(&private_path)?;
        let public = std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let (owner, dnskey) = parse_dnskey(&public).with_context(|| format!("in {}", key_path.display()))?;
        if &owner != apex {
            bail!("{} is a key for {owner}, not for the zone {apex}", key_path.display());
        }
        let private =
            std::fs::read_to_string(&private_path).with_context(|| format!("reading {}", private_path.display()))?;
        let (algorithm, secret) = parse_private(&private).with_context(|| format!("in {}", private_path.display()))?;
        if algorithm != dnskey.algorithm() {
            bail!("{} and {} are for different algorithms", key_path.display(), private_path.display());
        }
        let key = key_pair(algorithm, &secret, dnskey.public_key()).with_context(|| {
            format!("{} does not hold the private half of {}", private_path.display(), key_path.display())
        })?;
        if apex.wire().len() > MAX_SIGNER_NAME_LEN {
            bail!("the zone name is longer than {MAX_SIGNER_NAME_LEN} bytes, the most a signature XDP sends can carry");
        }
        let key_tag = dnskey.calculate_key_tag().map_err(|e| anyhow!("key tag: {e}"))?;
        Ok(ZoneSigner {
            apex: apex.clone(),
            apex_name: apex.to_hickory(),
            algorithm,
            key,
            dnskey,
            key_tag,
            key_file: key_path,
            validity,
        })
    }

    /// The RRSIG record over the RRset of `family` records at `owner` with `ttl` and
    /// these RDATAs (4 or 16 bytes each; their order does not matter: the signed form
    /// sorts them, RFC 4034 §6.3), valid from `now - INCEPTION_BACKDATE` for `validity`,
    /// laid out as XDP appends it (owner: a compression pointer to the question).
    pub fn sign(
        &self,
        owner: &DnsName,
        family: Family,
        ttl: u32,
        rdatas: &[&[u8]],
        now: SystemTime,
    ) -> Result<RrsigRr> {
        let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as u32;
        let inception = unix(now - INCEPTION_BACKDATE);
        // Validity is at most 90 days (config::limits), so this cannot overflow; a clock
        // beyond 2106 (the end of RRSIG's 32-bit time, RFC 4034 §3.1.5) would.
        let expiration = unix(now.checked_add(self.validity).context("signature validity runs past the clock's end")?);
        let name = owner.to_hickory();
        let records: Vec<Record> = rdatas
            .iter()
            .map(|rdata| {
                let data = match family {
                    Family::V4 => RData::A(A(Ipv4Addr::from(<[u8; 4]>::try_from(*rdata)?))),
                    Family::V6 => RData::AAAA(AAAA(Ipv6Addr::from(<[u8; 16]>::try_from(*rdata)?))),
                };
                Ok(Record::from_rdata(name.clone(), ttl, data))
            })
            .collect::<Result<_, std::array::TryFromSliceError>>()
            .context("an address of the wrong length")?;
        let type_covered = match family {
            Family::V4 => RecordType::A,
            Family::V6 => RecordType::AAAA,
        };
        // Exact names only (wildcard answers are passed): the labels field is the
        // owner's label count (RFC 4034 §3.1.3).
        let labels = name.num_labels();
        let signed = tbs::rrset_tbs(
            &name,
            DNSClass::IN,
            labels,
            type_covered,
            self.algorithm,
            ttl,
            expiration,
            inception,
            self.key_tag,
            &self.apex_name,
            &records,
        )
        .map_err(|e| anyhow!("canonical form: {e}"))?;
        let signature = self.key.sign(self.algorithm, &signed).map_err(|e| anyhow!("signing: {e}"))?;
        let rrsig = RRSIG::new(
            type_covered,
            self.algorithm,
            labels,
            ttl,
            expiration,
            inception,
            self.key_tag,
            self.apex_name.clone(),
            signature,
        );
        let mut rdata = Vec::with_capacity(128);
        let mut encoder = BinEncoder::new(&mut rdata);
        // Canonical: the signer name lowercased and never compressed (RFC 4034 §3.1.7).
        encoder.set_canonical_names(true);
        rrsig.emit(&mut encoder).map_err(|e| anyhow!("encoding the RRSIG: {e}"))?;
        rrsig_record(ttl, &rdata)
    }
}

/// An RRSIG record as XDP appends it: owner 0xc00c, type RRSIG, class IN, `ttl`, the
/// RDATA; with its one's-complement sum.
fn rrsig_record(ttl: u32, rdata: &[u8]) -> Result<RrsigRr> {
    let mut rr = Vec::with_capacity(12 + rdata.len());
    rr.extend_from_slice(&[0xc0, 0x0c]);
    rr.extend_from_slice(&u16::from(RecordType::RRSIG).to_be_bytes());
    rr.extend_from_slice(&u16::from(DNSClass::IN).to_be_bytes());
    rr.extend_from_slice(&ttl.to_be_bytes());
    rr.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    rr.extend_from_slice(rdata);
    if rr.len() > RRSIG_RR_MAX {
        bail!("an RRSIG record of {} bytes (at most {RRSIG_RR_MAX})", rr.len());
    }
    let mut out = RrsigRr {
        len: rr.len() as u16,
        csum: primwatch_common::csum::fold(primwatch_common::csum::sum_be_words(&rr)),
        _pad: 0,
        rr: [0; RRSIG_RR_MAX],
    };
    out.rr[..rr.len()].copy_from_slice(&rr);
    Ok(out)
}

/// The owner and RDATA of the DNSKEY record in a BIND `.key` file (comment lines
/// start with ';'): `example.com. [TTL] [IN] DNSKEY FLAGS 3 ALG BASE64…`.
fn parse_dnskey(text: &str) -> Result<(DnsName, DNSKEY)> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with(';'))
        .ok_or_else(|| anyhow!("no DNSKEY record"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let at = fields.iter().position(|f| f.eq_ignore_ascii_case("DNSKEY")).ok_or_else(|| anyhow!("no DNSKEY record"))?;
    let owner = DnsName::parse(fields[0]).map_err(|e| anyhow!("owner '{}': {e}", fields[0]))?;
    let [flags, protocol, algorithm] = [1, 2, 3].map(|i| fields.get(at + i).and_then(|f| f.parse::<u16>().ok()));
    let (Some(flags), Some(3), Some(algorithm)) = (flags, protocol, algorithm) else {
        bail!("the DNSKEY record is not FLAGS 3 ALGORITHM KEY");
    };
    let algorithm = supported(algorithm as u8)?;
    let public = base64::engine::general_purpose::STANDARD
        .decode(fields[at + 4..].concat())
        .context("the public key is not base64")?;
    const ZONE: u16 = 0x0100;
    const SEP: u16 = 0x0001;
    const REVOKE: u16 = 0x0080;
    if flags & ZONE == 0 {
        bail!("the key is not a zone key (flags {flags})");
    }
    Ok((owner, DNSKEY::new(true, flags & SEP != 0, flags & REVOKE != 0, algorithm, public)))
}

/// The algorithm and private key bytes of a BIND `.private` file (format v1.2/v1.3).
fn parse_private(text: &str) -> Result<(Algorithm, Vec<u8>)> {
    let mut algorithm = None;
    let mut key = None;
    for line in text.lines() {
        let Some((field, value)) = line.split_once(':') else { continue };
        match field.trim() {
            "Algorithm" => {
                let number = value.split_whitespace().next().and_then(|n| n.parse::<u8>().ok());
                algorithm = Some(supported(number.ok_or_else(|| anyhow!("Algorithm '{}'", value.trim()))?)?);
            }
            "PrivateKey" => {
                key = Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(value.trim())
                        .context("PrivateKey is not base64")?,
                );
            }
            _ => {}
        }
    }
    Ok((algorithm.ok_or_else(|| anyhow!("no Algorithm line"))?, key.ok_or_else(|| anyhow!("no PrivateKey line"))?))
}

fn supported(number: u8) -> Result<Algorithm> {
    match Algorithm::from_u8(number) {
        a @ (Algorithm::ECDSAP256SHA256 | Algorithm::ED25519) => Ok(a),
        _ => bail!("algorithm {number} is not supported: use 13 (ECDSAP256SHA256) or 15 (ED25519)"),
    }
}

/// ring's key pair from the private scalar (P-256) or seed (Ed25519) and the public
/// key as DNSKEY carries it; ring checks that they belong together.
fn key_pair(algorithm: Algorithm, secret: &[u8], public: &[u8]) -> Result<KeyPair<Private>> {
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    match algorithm {
        Algorithm::ECDSAP256SHA256 => {
            // DNSKEY holds x | y (RFC 6605 §4); ring wants the uncompressed point.
            let point = [&[0x04], public].concat();
            // A key file may write the scalar without its leading zero bytes (about one
            // key in 256); ring wants all 32.
            let scalar = [&[0u8; 32][..32usize.saturating_sub(secret.len())], secret].concat();
            let rng = ring::rand::SystemRandom::new();
            let pair =
                EcdsaKeyPair::from_private_key_and_public_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &scalar, &point, &rng)
                    .map_err(|e| anyhow!("{e}"))?;
            Ok(KeyPair::from_ecdsa(pair))
        }
        Algorithm::ED25519 => {
            let pair = Ed25519KeyPair::from_seed_and_public_key(secret, public).map_err(|e| anyhow!("{e}"))?;
            Ok(KeyPair::from_ed25519(pair))
        }
        other => bail!("algorithm {other:?} is not supported"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key dnssec-keygen wrote whose P-256 scalar has a leading zero byte, which the
    /// file leaves out (31 bytes): it loads and signs like any other.
    #[test]
    fn a_p256_key_written_without_its_leading_zero_loads() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("pw-dnssec-short-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dns/testdata");
        for ext in ["key", "private"] {
            let name = format!("Kexample.test.+013+25172.{ext}");
            std::fs::copy(source.join(&name), dir.join(&name)).unwrap();
            std::fs::set_permissions(dir.join(&name), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let apex = DnsName::parse("example.test").unwrap();
        let loaded = ZoneSigner::load(&apex, &dir.join("Kexample.test.+013+25172"), Duration::from_secs(3600));
        std::fs::remove_dir_all(&dir).unwrap();
        loaded.unwrap();
    }
}
