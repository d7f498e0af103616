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
    assert!(path.exists(), "{} is missing: run `cargo xtask test` (it builds the binary first)", path.display());
    path
}

pub struct Controller {
    child: Option<Child>,
    pub pin_dir: PathBuf,
    pub control_socket: PathBuf,
    pub state_file: PathBuf,
    ns: String,
    config_path: PathBuf,
    dir: TempDir,
    /// Runs the controller under this hard and soft RLIMIT_NOFILE (prlimit).
    open_file_limit: Option<u64>,
    /// Its stderr goes to a pipe whose reader closes it after the first 100 bytes.
    pub log_reader_quits: bool,
    /// More environment for the daemon (e.g. NOTIFY_SOCKET).
    env: Vec<(String, String)>,
}

impl Controller {
    /// Writes the config (`{pin_dir}` in it is replaced by a fresh pin directory; the
    /// control socket and state file go into a temp dir unless the config sets them)
    /// and runs `primwatch run` in `ns` until it logs that it is serving.
    pub fn start(ns: &str, config_template: &str) -> Result<Controller> {
        Controller::start_limited(ns, config_template, None)
    }

    /// As `start`, under an RLIMIT_NOFILE of `open_file_limit` (soft and hard), if given.
    pub fn start_limited(ns: &str, config_template: &str, open_file_limit: Option<u64>) -> Result<Controller> {
        Controller::start_with(ns, config_template, open_file_limit, false)
    }

    /// As `start_limited`; with `log_reader_quits`, its log goes to a reader that closes
    /// the pipe after the first 100 bytes (a logger that went away).
    pub fn start_with(
        ns: &str,
        config_template: &str,
        open_file_limit: Option<u64>,
        log_reader_quits: bool,
    ) -> Result<Controller> {
        Controller::start_full(ns, config_template, open_file_limit, log_reader_quits, &[])
    }

    fn start_full(
        ns: &str,
        config_template: &str,
        open_file_limit: Option<u64>,
        log_reader_quits: bool,
        env: &[(&str, &str)],
    ) -> Result<Controller> {
        let dir = TempDir::new("pwctl")?;
        let pin_dir = PathBuf::from("/sys/fs/bpf").join(unique("pwt"));
        let control_socket = dir.0.join("ctl.sock");
        let state_file = dir.0.join("state.json");
        let config_path = dir.0.join("primwatch.toml");
        let mut controller = Controller {
            child: None,
            pin_dir,
            control_socket,
            state_file,
            ns: ns.to_string(),
            config_path,
            dir,
            open_file_limit,
            log_reader_quits,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        controller.write_config(config_template)?;
        controller.spawn()?;
        Ok(controller)
    }

    /// As `start`, with `env` added to the daemon's environment.
    pub fn start_with_env(ns: &str, config_template: &str, env: &[(&str, &str)]) -> Result<Controller> {
        Controller::start_full(ns, config_template, None, false, env)
    }

    /// Rewrites the config file (for reloads), with the same substitutions as `start`.
    pub fn write_config(&self, template: &str) -> Result<()> {
        let mut config = template.replace("{pin_dir}", &self.pin_dir.display().to_string());
        if !config.contains("control_socket") {
            config = config.replacen(
                "[server]\n",
                &format!(
                    "[server]\ncontrol_socket = \"{}\"\nstate_file = \"{}\"\n",
                    self.control_socket.display(),
                    self.state_file.display()
                ),
                1,
            );
        }
        std::fs::write(&self.config_path, config)?;
        Ok(())
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.0.join("log"))?;
        let log_len = log.metadata()?.len() as usize;
        let binary = binary().to_str().context("path")?.to_string();
        let mut command = match self.open_file_limit {
            Some(n) => {
                let mut c = netns::command(&self.ns, "prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg(&binary);
                c
            }
            None => netns::command(&self.ns, &binary),
        };
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone()?));
        if self.log_reader_quits {
            command.stderr(Stdio::piped());
        } else {
            command.stderr(Stdio::from(log));
        }
        let mut child = command.spawn().context("starting primwatch")?;
        if let Some(mut stderr) = child.stderr.take() {
            // A logger that reads a little and goes away: the pipe's read end closes.
            std::thread::spawn(move || {
                use std::io::Read as _;
                let mut first = [0u8; 100];
                let _ = stderr.read_exact(&mut first);
            });
        }
        self.child = Some(child);
        let log_reader_quits = self.log_reader_quits;
        let ready = wait_for(Duration::from_secs(20), || {
            let serving = if log_reader_quits {
                self.ctl(&["status"]).is_ok_and(|r| r["ok"] == true)
            } else {
                self.log().get(log_len..).is_some_and(|new| new.contains("serving"))
            };
            if serving {
                return Some(true);
            }
            match self.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(_))) => Some(false),
                _ => None,
            }
        });
        if ready != Some(true) {
            bail!("primwatch did not start serving:\n{}", self.log());
        }
        Ok(())
    }

    /// Stops (SIGTERM) and starts again with the same config, state file and pins.
    pub fn restart(&mut self) -> Result<()> {
        let status = self.terminate()?;
        if !status.success() {
            bail!("primwatch exited with {status} on SIGTERM:\n{}", self.log());
        }
        self.spawn()
    }

    /// SIGKILL, as a crash would: no clean-up runs.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("already stopped")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts again after `kill` or `stop`, with the same config, state file and pins.
    pub fn start_again(&mut self) -> Result<()> {
        self.spawn()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// `primwatch ctl --json ARGS`: the controller's reply (ok or not).
    pub fn ctl(&self, args: &[&str]) -> Result<serde_json::Value> {
        let out = std::process::Command::new(binary())
            .arg("ctl")
            .arg("--socket")
            .arg(&self.control_socket)
            .arg("--json")
            .args(args)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text)
            .with_context(|| format!("ctl {args:?}: {text} {}", String::from_utf8_lossy(&out.stderr)))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("log")).unwrap_or_default()
    }

    pub fn counters(&self) -> Result<Counters> {
        primwatch::dataplane::pinned_counters(&self.pin_dir)
    }

    /// Waits for the controller to exit on its own (after a fatal error), at most `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Result<ExitStatus> {
        let child = self.child.as_mut().context("already stopped")?;
        let status = wait_for(within, || child.try_wait().ok().flatten());
        match status {
            Some(status) => {
                self.child = None;
                Ok(status)
            }
            None => bail!("primwatch did not exit within {within:?}:\n{}", self.log()),
        }
    }

    /// SIGTERM, then wait for a clean exit (pins are left as the controller left them until drop).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> Result<ExitStatus> {
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
