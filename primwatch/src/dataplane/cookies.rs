//! The DNS server cookie secret's life (RFC 7873 §7.1, RFC 9018 §5): made at start,
//! replaced on schedule or from `cookies.secret_file` on reload, the replaced one still
//! accepted until the next change (a random one) or for one `secret_rotation` (one from
//! the file); and the XDP program's clock kept on Unix time. The
//! program verifies and makes the cookies (`primwatch-ebpf/src/cookie.rs`).

use std::{io::Write as _, os::unix::fs::PermissionsExt as _, path::Path, time::Instant};

use anyhow::{Context as _, Result};
use tracing::info;

use crate::{config::CookieConfig, dataplane::publish::CookieMapWriter};

/// Half the controller's tick (`tick` is called about once a second).
const TICK_SLACK: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps XDP's server cookie secrets (RFC 7873 §7.1): installs, rotates and retires them as `[cookies]`
/// says, and keeps the program's clock on Unix time.
pub struct CookieKeeper {
    writer: CookieMapWriter,
    /// The config applied last; None before the first `apply`.
    applied: Option<CookieConfig>,
    /// When the current random secret was made (None: a fixed secret is current).
    made_at: Option<Instant>,
    /// When a `secret_file` secret replaced another: the replaced one is honoured for
    /// one `secret_rotation`, then retired (RFC 7873 §7.1: an old secret accepted for a
    /// while, not indefinitely).
    replaced_at: Option<Instant>,
}

impl CookieKeeper {
    /// Cookies stay off until the first `apply`.
    pub fn new(writer: CookieMapWriter) -> CookieKeeper {
        CookieKeeper { writer, applied: None, made_at: None, replaced_at: None }
    }

    /// Applies `[cookies]` (at start and on reload): a changed `secret_file` secret is
    /// installed, the one it replaces still accepted; switching to random secrets
    /// makes one.
    pub fn apply(&mut self, config: &CookieConfig) -> Result<()> {
        if self.applied.as_ref() == Some(config) {
            return Ok(());
        }
        match config.secret {
            Some(secret) if self.writer.current != Some(secret) => {
                let replacing = self.writer.current.is_some();
                self.writer.install(secret)?;
                self.made_at = None;
                self.replaced_at = replacing.then(Instant::now);
                info!("cookie secret from cookies.secret_file installed");
            }
            Some(_) => {}
            None if self.made_at.is_none() => self.rotate()?,
            None => {}
        }
        self.writer.sync_clock()?;
        self.writer.set_enabled(config.enabled)?;
        self.applied = Some(config.clone());
        Ok(())
    }

    /// Called every second or so: keeps the program's clock on Unix time and replaces
    /// a random secret once it is `secret_rotation` old.
    pub fn tick(&mut self) -> Result<()> {
        let Some(rotation) = self.applied.as_ref().map(|c| c.rotation) else { return Ok(()) };
        // Due at the tick nearest the rotation time: ticks come once a second, a little
        // late or early against the secret's age, and a strict comparison would let a
        // one-second rotation slip to every other tick.
        if self.made_at.is_some_and(|at| at.elapsed() + TICK_SLACK >= rotation) {
            self.rotate()?;
        }
        if self.replaced_at.is_some_and(|at| at.elapsed() + TICK_SLACK >= rotation) {
            self.writer.retire_previous()?;
            self.replaced_at = None;
            info!("the cookie secret replaced from cookies.secret_file is no longer accepted");
        }
        self.writer.sync_clock()
    }

    fn rotate(&mut self) -> Result<()> {
        self.writer.install(rand::random())?;
        self.made_at = Some(Instant::now());
        self.replaced_at = None;
        Ok(())
    }
}

/// The group that may read a new secret file when none is kept from the file it
/// replaces: PowerDNS's on Debian, which reads it through its `include-dir`.
const SHARED_GROUP: &str = "pdns";

/// Writes a fresh random secret to `path` in the form both readers take (PowerDNS's
/// `edns-cookie-secret=HEX` line, which `[cookies] secret_file` also reads): mode 0640,
/// owned by root, the group of the file it replaces (else `pdns` where it exists, else
/// root's), replaced atomically (a reader sees the old file or the new one). Errors:
/// the directory is not writable, or the rename fails.
pub fn write_secret_file(path: &Path) -> Result<[u8; 16]> {
    let secret: [u8; 16] = rand::random();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let group = std::fs::metadata(path)
        .ok()
        .map(|m| std::os::unix::fs::MetadataExt::gid(&m))
        .or_else(|| crate::sys::local_socket::group_id(SHARED_GROUP));
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("the secret file needs a file name")?.to_string_lossy();
    let temporary = dir.join(format!(".{name}.new"));
    let _ = std::fs::remove_file(&temporary);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temporary)
        .with_context(|| format!("creating {}", temporary.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    std::os::unix::fs::fchown(&file, Some(0), group)
        .with_context(|| format!("giving {} to root and group {group:?}", temporary.display()))?;
    write!(
        file,
        "# The DNS server cookie secret (RFC 9018) of primwatch's XDP answers and of PowerDNS.\n\
         # primwatch reads it as [cookies] secret_file; PowerDNS through a link in its include-dir.\n\
         # Replace it with `primwatch cookie-secret FILE`, then reload primwatch and restart PowerDNS.\n\
         edns-cookie-secret={hex}\n"
    )?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_cookie_secret;

    #[test]
    fn a_written_secret_file_reads_back_as_the_same_secret() {
        let dir = std::env::temp_dir().join(format!("pw-cookie-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cookie-secret.conf");
        let first = write_secret_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(parse_cookie_secret(&text), Some(first));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let second = write_secret_file(&path).unwrap();
        assert_ne!(first, second);
        assert_eq!(parse_cookie_secret(&std::fs::read_to_string(&path).unwrap()), Some(second));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secret_files_take_bare_hex_or_the_powerdns_line_and_nothing_else() {
        let want =
            Some([0x44, 0x55, 0x36, 0xbc, 0xd2, 0x51, 0x32, 0x98, 0x07, 0x5a, 0x5d, 0x37, 0x96, 0x63, 0xc9, 0x62]);
        for good in [
            "445536bcd2513298075a5d379663c962\n",
            "edns-cookie-secret=445536bcd2513298075a5d379663c962\n",
            "# comment\n\nedns-cookie-secret = 445536BCD2513298075A5D379663C962\n",
        ] {
            assert_eq!(parse_cookie_secret(good), want, "{good:?}");
        }
        for bad in [
            "",
            "# only a comment\n",
            "edns-cookie-secret=445536bcd2513298075a5d379663c96\n",
            "other-setting=445536bcd2513298075a5d379663c962\n",
            "445536bcd2513298075a5d379663c962\nlaunch=bind\n",
            "edns-cookie-secret=445536bcd2513298075a5d379663c9zz\n",
            "edns-cookie-secret=445536bcd2513298075a5d379663c9é\n",
        ] {
            assert_eq!(parse_cookie_secret(bad), None, "{bad:?}");
        }
    }
}
