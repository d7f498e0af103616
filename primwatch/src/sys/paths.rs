//! Files and directories the daemon trusts: the state directory (overrides and holds
//! that decide answers after a restart) and the pin directory (the maps and links XDP
//! answers from). Whoever can write them can change what DNS answers, so they must
//! belong to root (or the daemon's own user) and not be writable by group or others;
//! the state file is replaced through an exclusively created temp file that is never a
//! symlink.

use std::{
    fs::{self, OpenOptions},
    io::Write as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use anyhow::{bail, Context as _, Result};

/// Why `path` may not be trusted, if it may not: not a directory (or a symlink), owned
/// by another user than root or us, or writable by group or others.
pub fn untrusted_dir(path: &Path) -> Option<String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("{}: {e}", path.display())),
    };
    if !meta.is_dir() {
        return Some(format!("{} is not a directory", path.display()));
    }
    untrusted_owner_or_mode(path, &meta)
}

fn untrusted_owner_or_mode(path: &Path, meta: &fs::Metadata) -> Option<String> {
    let own = unsafe { libc::geteuid() };
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != 0 && meta.uid() != own {
        Some(format!("{} is owned by uid {}, not root", path.display(), meta.uid()))
    } else if mode & 0o022 != 0 {
        Some(format!("{} is writable by group or others (mode {mode:04o})", path.display()))
    } else {
        None
    }
}

/// What check-config and run both refuse: an existing state directory (of
/// `state_file`) or pin directory that is not trusted. Each problem names the key to
/// change.
pub fn check_config_paths(state_file: &Path, pin_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let state_dir = state_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    for (key, dir) in [("server.state_file", state_dir), ("server.pin_dir", pin_dir)] {
        if dir.exists() {
            if let Some(why) = untrusted_dir(dir) {
                problems.push(format!("{key}: {why}; use a directory only root can write"));
            }
        }
    }
    problems
}

/// Before run uses them: the directories created if missing (mode 0700) and checked,
/// and every pin a previous run left checked too.
pub fn prepare(state_file: &Path, pin_dir: &Path) -> Result<()> {
    // Refused before anything is created.
    let problems = check_config_paths(state_file, pin_dir);
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    let state_dir = state_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    for dir in [state_dir, pin_dir] {
        if !dir.exists() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        }
    }
    for entry in fs::read_dir(pin_dir).with_context(|| format!("reading {}", pin_dir.display()))? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        if let Some(why) = untrusted_owner_or_mode(&path, &meta) {
            bail!("server.pin_dir: {why}; remove it (or `primwatch detach`) if it is not primwatch's");
        }
    }
    Ok(())
}

/// Refuses a private key file others could read or replace: it must be a regular
/// file, owned by root (or by this process's user), with no group or other access, in
/// a directory only root (or this user) can write.
pub fn check_private_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    // Whoever can write the directory can replace the key (a reload reads it again).
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Some(problem) = untrusted_dir(dir) {
        bail!("the key's directory is not trusted: {problem}");
    }
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        bail!("{} is owned by uid {}; a private key must be owned by root", path.display(), meta.uid());
    }
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} is readable or writable by others (mode {:o}); a private key must be root-only: chmod 600",
            path.display(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}

/// Replaces `path` with `bytes`: written to a new temp file beside it (created
/// exclusively, never following a symlink, mode 0600), flushed to disk, renamed over.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().context("a file name")?.to_string_lossy();
    let tmp = dir.join(format!(".{name}.{}.{:016x}", std::process::id(), rand::random::<u64>()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all()); // no empty file after a power loss
    if let Err(e) = written.and_then(|()| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    let _ = fs::File::open(dir).and_then(|d| d.sync_all());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_others_can_write_are_untrusted() {
        let dir = std::env::temp_dir().join(format!("pw-paths-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(untrusted_dir(&dir), None);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o775)).unwrap();
        assert!(untrusted_dir(&dir).unwrap().contains("mode 0775"));
        assert!(untrusted_dir(Path::new("/tmp")).unwrap().contains("mode 1777"));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let link = dir.join("link");
        std::os::unix::fs::symlink("/", &link).unwrap();
        assert!(untrusted_dir(&link).unwrap().contains("not a directory"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_state_file_is_replaced_without_following_a_planted_link() {
        let dir = std::env::temp_dir().join(format!("pw-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let target = dir.join("victim");
        fs::write(&target, "precious").unwrap();
        let state = dir.join("state.json");
        // The old fixed temp name, planted as a link to another file.
        std::os::unix::fs::symlink(&target, dir.join("state.tmp")).unwrap();
        write_atomically(&state, b"{}").unwrap();
        write_atomically(&state, b"{\"v\":2}").unwrap();
        assert_eq!(fs::read_to_string(&state).unwrap(), "{\"v\":2}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "precious");
        assert_eq!(fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 3, "state, victim, the planted link: {leftovers:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
