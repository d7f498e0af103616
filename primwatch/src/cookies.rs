//! The DNS server cookie secret's life (RFC 7873 §7.1, RFC 9018 §5): made at start,
//! replaced on schedule or from `cookies.secret_file` on reload, the replaced one still
//! accepted until the next change (a random one) or for one `secret_rotation` (one from
//! the file); and the XDP program's clock kept on Unix time. The
//! program verifies and makes the cookies (`primwatch-ebpf/src/cookie.rs`).

use std::time::Instant;

use anyhow::Result;
use tracing::info;

use crate::{config::CookieConfig, map_writer::CookieMapWriter};

/// Half the controller's tick (`tick` is called about once a second).
const TICK_SLACK: std::time::Duration = std::time::Duration::from_millis(500);

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
