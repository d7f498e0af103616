//! DNSSEC lab tools: zone keys made by BIND's `dnssec-keygen` (the files operators
//! have), and dnspython's validator as the independent oracle for signatures
//! (`tests/scripts/dnssec_validate.py`).

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

/// A zone key pair as `dnssec-keygen` wrote it.
pub struct ZoneKey {
    /// `DIR/K<zone>.+<alg>+<tag>` (add `.key` / `.private`).
    pub base: PathBuf,
}

impl ZoneKey {
    /// Makes a key for `zone` in `dir`: `algorithm` is 13 (ECDSAP256SHA256) or 15 (ED25519).
    /// One key signs everything (a CSK, flags 257), as README sets PowerDNS up.
    pub fn generate(dir: &Path, zone: &str, algorithm: u8) -> Result<ZoneKey> {
        let name = match algorithm {
            13 => "ECDSAP256SHA256",
            15 => "ED25519",
            other => bail!("no dnssec-keygen name for algorithm {other}"),
        };
        let out = Command::new("dnssec-keygen")
            .args(["-q", "-a", name, "-f", "KSK", "-n", "ZONE", "-K"])
            .arg(dir)
            .arg(zone)
            .output()
            .context("running dnssec-keygen (bind9-utils; `cargo xtask setup` installs it)")?;
        if !out.status.success() {
            bail!("dnssec-keygen: {}", String::from_utf8_lossy(&out.stderr));
        }
        let key = ZoneKey { base: dir.join(String::from_utf8(out.stdout)?.trim()) };
        // dnssec-keygen makes the private file 0600 already; say so rather than rely on it.
        std::fs::set_permissions(key.private_file(), std::fs::Permissions::from_mode(0o600))?;
        Ok(key)
    }

    pub fn public_file(&self) -> PathBuf {
        PathBuf::from(format!("{}.key", self.base.display()))
    }

    pub fn private_file(&self) -> PathBuf {
        PathBuf::from(format!("{}.private", self.base.display()))
    }

    pub fn dnskey_text(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.public_file())?)
    }
}

/// What dnspython made of a message's answer section.
#[derive(Debug, Default)]
pub struct Validation {
    /// "NAME TYPE" of each RRset whose RRSIG validated with the key.
    pub validated: Vec<String>,
    /// RRsets without an RRSIG.
    pub unsigned: Vec<String>,
    /// RRsets whose RRSIG did not validate, with dnspython's reason.
    pub failed: Vec<String>,
}

/// Validates every RRset in `message`'s answer section against `key`'s DNSKEY with
/// dnspython (at `now`, unix seconds, if given).
pub fn validate(key: &ZoneKey, message: &[u8], now: Option<u64>) -> Result<Validation> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/dnssec_validate.py");
    let hex: String = message.iter().map(|b| format!("{b:02x}")).collect();
    let request = serde_json::json!({"dnskey": key.dnskey_text()?, "message": hex, "now": now});
    let mut child = Command::new("/usr/bin/python3")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the dnspython validator")?;
    child.stdin.take().expect("piped").write_all(request.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("dnssec_validate.py: {}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let list = |k: &str| -> Vec<String> {
        v[k].as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(String::from)).collect()).unwrap_or_default()
    };
    Ok(Validation { validated: list("validated"), unsigned: list("unsigned"), failed: list("failed") })
}
