//! Watching a data file the config names (the `[geoip] database`): geoipupdate and
//! packages replace it by rename, editors write it in place; either changes its stamp
//! (inode, size, mtime), which the controller checks once a second and answers with a
//! reload.

use std::path::Path;

use crate::config::geoip::FileStamp;

/// The file's stamp as last seen.
#[derive(Debug, Default)]
pub(crate) struct FileWatch {
    seen: Option<FileStamp>,
}

impl FileWatch {
    /// True when `path` changed since the last call: replaced, rewritten, or appeared or
    /// vanished. The first call only takes the stamp (the config just read the file).
    pub(crate) fn changed(&mut self, path: &Path) -> bool {
        let now = FileStamp::of(path);
        let first = self.seen.is_none();
        let changed = now != self.seen;
        self.seen = now;
        changed && !first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaced_by_rename_or_rewritten_in_place_is_a_change_once() {
        let dir = std::env::temp_dir().join(format!("pw-file-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("GeoLite2-Country.mmdb");
        std::fs::write(&path, b"one").unwrap();
        let mut watch = FileWatch::default();
        assert!(!watch.changed(&path), "the first look only takes the stamp");
        assert!(!watch.changed(&path));
        // geoipupdate: a new file renamed over the old one (same size: the inode differs).
        std::fs::write(dir.join("new"), b"two").unwrap();
        std::fs::rename(dir.join("new"), &path).unwrap();
        assert!(watch.changed(&path));
        assert!(!watch.changed(&path), "seen once, then quiet");
        // Written in place, longer.
        std::fs::write(&path, b"three").unwrap();
        assert!(watch.changed(&path));
        std::fs::remove_file(&path).unwrap();
        assert!(watch.changed(&path), "gone is a change (the reload then refuses it)");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
