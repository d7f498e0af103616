//! Running code and commands inside a named network namespace.

use std::{fs::File, os::fd::AsRawFd, process::Command};

use anyhow::{bail, Context as _, Result};

/// Runs `f` on a fresh thread that has joined network namespace `ns`. Sockets created
/// there stay in that namespace and can be used from any thread afterwards.
pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only; the fd is valid for the call.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(anyhow::anyhow!("setns: {}", std::io::Error::last_os_error()));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in netns {ns} panicked"))?
}

/// A command that runs in `ns` but keeps the host's mounts (so /sys/fs/bpf is the
/// host's bpffs, unlike `ip netns exec`, which remounts /sys).
pub fn command(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(program);
    cmd
}

/// Runs `ip ARGS` and fails with its stderr if it fails.
pub fn ip(args: &[&str]) -> Result<()> {
    sh("ip", args)
}

pub fn sh(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program).args(args).output().with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Turns off TX checksum offload on `dev` in `ns`, so the frames it sends carry full
/// UDP checksums, as frames from a real wire do. (A veth with offload on hands its peer
/// only the pseudo-header sum, which the XDP program rightly refuses to answer.)
pub fn send_full_checksums(ns: &str, dev: &str) -> Result<()> {
    let out = command(ns, "ethtool").args(["-K", dev, "tx", "off"]).output().context("running ethtool")?;
    if !out.status.success() {
        bail!("ethtool -K {dev} tx off in {ns} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
