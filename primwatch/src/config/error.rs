//! Config errors: where in which file, and why. Every parser and the compile step report
//! through `At`, which turns a byte span of the TOML text into line and column.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

/// A config error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file at fault: the config, or a file it names.
    pub file: PathBuf,
    /// 1-based line; 0 when the file could not be read at all.
    pub line: usize,
    /// 1-based column; 0 when the file could not be read at all.
    pub column: usize,
    /// What is wrong, for the operator.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// A file that could not be read at all (no line to point at).
    pub fn unreadable(path: &Path, e: std::io::Error) -> ConfigError {
        ConfigError { file: path.to_owned(), line: 0, column: 0, reason: format!("cannot read: {e}") }
    }
}

/// Makes the error for a span of the config text: `at(span, reason)`.
pub(super) type At<'a> = dyn Fn(Range<usize>, String) -> ConfigError + 'a;

/// The 1-based line and column of byte `offset` in `text`.
/// 1-based line and column of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}
