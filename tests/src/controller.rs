//! The real `primwatch` binary, run in a namespace as an operator would run it.

use std::{
    path::PathBuf,
    process::{Child, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use primwatch_common::Counters;

use crate::{netns, unique, wait_for, TempDir};

/// The release binary `cargo xtask test` builds (PRIMWATCH_BIN), or the workspace's.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PRIMWATCH_BIN") {
        return path.into();
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/primwatch");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask test` (it builds the binary first)",
        path.display()
    );
    path
}

pub struct Controller {
    child: Option<Child>,
    pub pin_dir: PathBuf,
    dir: TempDir,
}

impl Controller {
    /// Writes the config (`{pin_dir}` in it is replaced by a fresh pin directory) and
    /// runs `primwatch run` in `ns` until it logs that it is serving.
    pub fn start(ns: &str, config_template: &str) -> Result<Controller> {
        let dir = TempDir::new("pwctl")?;
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("pwt"));
        let config = config_template.replace("{pin_dir}", &pin_dir.display().to_string());
        let config_path = dir.0.join("primwatch.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.0.join("log"))?;
        let child = netns::command(ns, binary().to_str().context("path")?)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting primwatch")?;
        let mut controller = Controller { child: Some(child), pin_dir, dir };
        let ready = wait_for(Duration::from_secs(20), || {
            if controller.log().contains("serving") {
                return Some(true);
            }
            match controller.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) => Some(false),
                _ => None,
            }
        });
        if ready != Some(true) {
            bail!("primwatch did not start serving:\n{}", controller.log());
        }
        Ok(controller)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("log")).unwrap_or_default()
    }

    pub fn counters(&self) -> Result<Counters> {
        primwatch::dataplane::pinned_counters(&self.pin_dir)
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) -> Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
        match status {
            Some(status) => Ok(status),
            None => {
                let _ = child.kill();
                bail!("primwatch did not exit on SIGTERM:\n{}", self.log())
            }
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            if wait_for(Duration::from_secs(5), || child.try_wait().ok().flatten()).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
