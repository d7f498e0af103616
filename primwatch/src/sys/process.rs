//! External commands — exec checks and the `on_change` hook — run with the least the
//! daemon can give them: an unprivileged user (`server.exec_user`), a cleared
//! environment (PATH and the PRIMWATCH_* variables only), `/` as working directory,
//! their own process group (killed whole at the timeout, grandchildren included), and
//! output read up to a cap. Their output is untrusted text: `printable` escapes it
//! before it reaches a log line, `ctl` or another command's environment.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::io::{AsyncRead, AsyncReadExt as _};

/// The PATH commands get, and where a bare command name is looked up.
pub(crate) const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Bytes of stdout and of stderr kept per run; the rest is read and dropped.
pub(crate) const MAX_OUTPUT: usize = 64 * 1024;

/// The user and group a command runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// The user `name` from the password database, if it exists.
    pub fn lookup(name: &str) -> Option<RunAs> {
        let cname = std::ffi::CString::new(name).ok()?;
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: getpwnam_r fills `pwd` and `buf`, both live and sized as passed.
        let rc = unsafe { libc::getpwnam_r(cname.as_ptr(), &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
        (rc == 0 && !found.is_null()).then(|| RunAs { name: name.to_string(), uid: pwd.pw_uid, gid: pwd.pw_gid })
    }
}

/// How a command ended.
#[derive(Debug)]
pub(crate) struct Finished {
    pub status: ExitStatus,
    /// At most `MAX_OUTPUT` bytes of each.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[derive(Debug)]
pub(crate) enum RunError {
    /// It could not be started (or waited for): a problem of this host, not of what
    /// the command checks.
    Spawn(std::io::Error),
    /// Still running at the timeout: its process group was killed.
    TimedOut,
}

/// Runs `argv` (`argv[0]` looked up in `SAFE_PATH` unless it has a slash) with only
/// `env` and PATH in its environment, as `run_as` if given, for at most `timeout`.
pub(crate) async fn run(
    argv: &[String],
    env: &[(&str, String)],
    run_as: Option<&RunAs>,
    timeout: Duration,
) -> Result<Finished, RunError> {
    run_capped(argv, env, run_as, timeout, MAX_OUTPUT).await.map(|(finished, _)| finished)
}

/// `argv` started as `run` describes (its own process group, cleared environment,
/// `run_as`, stdin closed, stdout and stderr piped), and the guard that kills its group
/// when dropped (disarm it with `.0 = None` once it has been waited for).
pub(crate) fn spawn(
    argv: &[String],
    env: &[(&str, String)],
    run_as: Option<&RunAs>,
) -> std::io::Result<(tokio::process::Child, GroupKill)> {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .env_clear()
        .env("PATH", SAFE_PATH)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = run_as {
        // std drops supplementary groups (setgroups(0)) when root sets a uid.
        command.uid(user.uid).gid(user.gid);
    }
    let child = command.spawn()?;
    let group = GroupKill(child.id().map(|pid| pid as i32));
    Ok((child, group))
}

/// `run` keeping up to `cap` bytes of stdout (stderr: `MAX_OUTPUT`); also says whether
/// stdout had more than `cap` (the rest was read and dropped).
pub(crate) async fn run_capped(
    argv: &[String],
    env: &[(&str, String)],
    run_as: Option<&RunAs>,
    timeout: Duration,
    cap: usize,
) -> Result<(Finished, bool), RunError> {
    let (mut child, mut group) = spawn(argv, env, run_as).map_err(RunError::Spawn)?;
    // Kills the group however this ends early: the timeout below, or the caller giving
    // up on this future (a check's own timeout).
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let finished = tokio::time::timeout(timeout, async {
        let ((stdout, more), (stderr, _)) = tokio::join!(read_capped(stdout, cap), read_capped(stderr, MAX_OUTPUT));
        child.wait().await.map(|status| (Finished { status, stdout, stderr }, more))
    })
    .await;
    match finished {
        Ok(Ok(finished)) => {
            group.0 = None;
            Ok(finished)
        }
        Ok(Err(e)) => Err(RunError::Spawn(e)),
        Err(_) => {
            drop(group);
            let _ = child.wait().await;
            Err(RunError::TimedOut)
        }
    }
}

/// SIGKILLs a process group when dropped, unless disarmed (`.0 = None`).
pub(crate) struct GroupKill(pub(crate) Option<i32>);

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            // SAFETY: signals the process group our child leads; nothing else.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
    }
}

/// Reads `from` to its end, keeping the first `cap` bytes; true if there was more.
async fn read_capped(from: Option<impl AsyncRead + Unpin>, cap: usize) -> (Vec<u8>, bool) {
    let Some(mut from) = from else { return (Vec::new(), false) };
    let mut kept = Vec::new();
    let mut more = false;
    let mut chunk = [0u8; 8192];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return (kept, more),
            Ok(n) => {
                let room = cap - kept.len();
                more |= n > room;
                kept.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

/// Untrusted text made safe for one log line, `ctl` output or an environment variable:
/// invalid UTF-8 replaced, control characters (newlines, escape sequences, NUL)
/// written as escapes, at most `max_chars` characters kept.
pub(crate) fn printable(bytes: &[u8], max_chars: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for c in text.chars().take(max_chars) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Where `program` would be run from: itself if it names a path, else the first match
/// in `SAFE_PATH`.
pub(crate) fn resolve(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    SAFE_PATH.split(':').map(|dir| Path::new(dir).join(program)).find(|p| p.is_file())
}

/// Why a command file may not be run by a root daemon, if it may not: it (after
/// symlinks) or its directory is owned by someone other than root, or writable by group
/// or others — whoever can change it could run code as the exec user and decide health
/// (keepalived's `enable_script_security` rule).
pub(crate) fn unsafe_command(program: &str) -> Option<String> {
    let Some(path) = resolve(program) else {
        return Some(format!("'{program}' is not a file (looked up in {SAFE_PATH})"));
    };
    let real = match path.canonicalize() {
        Ok(real) => real,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    let mut checks = vec![real.clone()];
    checks.extend(real.parent().map(Path::to_path_buf));
    for p in checks {
        let meta = match std::fs::metadata(&p) {
            Ok(meta) => meta,
            Err(e) => return Some(format!("{}: {e}", p.display())),
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.uid() != 0 {
            return Some(format!(
                "{} is owned by uid {}, not root: only root may be able to change a command primwatch runs",
                p.display(),
                meta.uid()
            ));
        }
        if mode & 0o022 != 0 {
            return Some(format!(
                "{} is writable by group or others (mode {mode:04o}): only root may be able to change a command primwatch runs",
                p.display()
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(script: &str) -> Vec<String> {
        ["sh", "-c", script].iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn the_environment_is_cleared_and_output_capped() {
        std::env::set_var("PRIMWATCH_TEST_SECRET", "leak");
        let out =
            run(&argv("env; head -c 200000 /dev/zero"), &[("PRIMWATCH_X", "1".into())], None, Duration::from_secs(5))
                .await
                .unwrap();
        let env = String::from_utf8_lossy(&out.stdout);
        assert!(env.contains("PRIMWATCH_X=1") && env.contains(&format!("PATH={SAFE_PATH}")), "{env}");
        assert!(!env.contains("PRIMWATCH_TEST_SECRET"), "{env}");
        assert_eq!(out.stdout.len(), MAX_OUTPUT);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let marker = std::env::temp_dir().join(format!("pw-grandchild-{}", std::process::id()));
        let _ = std::fs::remove_file(&marker);
        // The grandchild outlives its parent's exit unless the group is killed.
        let script = format!("(sleep 1; touch {}) & sleep 10", marker.display());
        let started = std::time::Instant::now();
        let result = run(&argv(&script), &[], None, Duration::from_millis(200)).await;
        assert!(matches!(result, Err(RunError::TimedOut)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
        std::thread::sleep(Duration::from_millis(1300));
        assert!(!marker.exists(), "the grandchild was killed with its group");
    }

    #[tokio::test]
    async fn runs_as_the_given_user() {
        let nobody = RunAs::lookup("nobody").expect("Debian has nobody");
        let out = run(&argv("id -u; id -G"), &[], Some(&nobody), Duration::from_secs(5)).await.unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(nobody.uid.to_string().as_str()));
        assert_eq!(lines.next(), Some(nobody.gid.to_string().as_str()), "no supplementary groups: {text}");
    }

    #[test]
    fn printable_escapes_control_characters() {
        assert_eq!(printable(b"ok\nfake line\x1b[31m\0end", 100), "ok\\nfake line\\u{1b}[31m\\u{0}end");
        assert_eq!(printable("日本語".as_bytes(), 2), "日本");
        assert_eq!(printable(&[0xff, b'a'], 10), "\u{fffd}a");
    }

    #[test]
    fn command_files_writable_by_others_are_refused() {
        assert_eq!(unsafe_command("sh"), None, "/usr/bin/sh is root's");
        let dir = std::env::temp_dir().join(format!("pw-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = dir.join("check.sh");
        std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o775)).unwrap();
        let why = unsafe_command(script.to_str().unwrap()).unwrap();
        assert!(why.contains("writable by group or others (mode 0775)"), "{why}");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(unsafe_command(script.to_str().unwrap()), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(unsafe_command(script.to_str().unwrap()).unwrap().contains("mode 0777"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(unsafe_command("no-such-command-here").unwrap().contains("not a file"));
    }
}
