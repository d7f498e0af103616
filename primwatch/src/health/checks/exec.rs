//! External commands: exit status 0 means up (run by `process`, as `server.exec_user`).

use std::{net::IpAddr, time::Duration};

use super::{snippet, Failure, Probe, ProbeResult};
use crate::sys::process::{self, RunAs, RunError};

/// `type = "exec"`: the command with the target's address and name appended.
pub(super) struct Exec<'a> {
    pub command: &'a [String],
    pub run_as: Option<&'a RunAs>,
}

impl Probe for Exec<'_> {
    async fn probe(&self, address: IpAddr, timeout: Duration, target: &str) -> ProbeResult {
        exec(self.command, self.run_as, timeout, target, address).await
    }
}

async fn exec(
    command: &[String],
    run_as: Option<&RunAs>,
    timeout: Duration,
    name: &str,
    address: IpAddr,
) -> ProbeResult {
    let argv: Vec<String> = command.iter().cloned().chain([address.to_string(), name.to_string()]).collect();
    let env = [("PRIMWATCH_TARGET_ADDRESS", address.to_string()), ("PRIMWATCH_TARGET_NAME", name.to_string())];
    match process::run(&argv, &env, run_as, timeout).await {
        Ok(out) if out.status.success() => Ok(("exit 0".into(), None)),
        Ok(out) => {
            // Monitoring plugins (Nagios style) say why on stdout; most tools on stderr.
            let said = if out.stderr.trim_ascii().is_empty() { &out.stdout } else { &out.stderr };
            Err(format!("{} ({})", out.status, snippet(said).trim()).into())
        }
        Err(RunError::Spawn(e)) => Err(Failure::local(format!("running {}: {e}", command[0]))),
        Err(RunError::TimedOut) => Err(format!("timed out after {timeout:?}; its process group was killed").into()),
    }
}
