//! Where the daemon's log lines go (stderr), written so that logging can never stop
//! it: a line that cannot be written — the reader went away (EPIPE), the disk is full
//! (ENOSPC), the pipe is full (EAGAIN; a pipe or socket on stderr is made
//! non-blocking) — is dropped and counted (`ctl stats`, `primwatch_log_lines_lost_total`),
//! never retried, never a panic, never a stall of checks or map updates.

use std::{
    io::{self, Write},
    sync::atomic::{AtomicU64, Ordering},
};

static LOST: AtomicU64 = AtomicU64::new(0);

/// Log writes that failed since start (each a line or the rest of one).
pub fn lines_lost() -> u64 {
    LOST.load(Ordering::Relaxed)
}

/// stderr for tracing; see the module docs.
pub struct LogOutput;

impl Write for LogOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            // SAFETY: writes `buf` to fd 2; the buffer is live for the call.
            let n = unsafe { libc::write(2, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            LOST.fetch_add(1, Ordering::Relaxed);
            // Claim it written: the caller moves on, the line is lost.
            return Ok(buf.len());
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Makes stderr non-blocking when it is a pipe or a socket, so that a reader that
/// stops reading costs log lines, not the daemon's progress. A terminal or a file is
/// left as it is (they do not block for long, and a terminal's flags are shared with
/// the shell).
pub fn never_block_on_stderr() {
    // SAFETY: fstat and fcntl on fd 2 with a local stat buffer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(2, &mut st) != 0 {
            return;
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFIFO || kind == libc::S_IFSOCK {
            let flags = libc::fcntl(2, libc::F_GETFL);
            if flags >= 0 {
                libc::fcntl(2, libc::F_SETFL, flags | libc::O_NONBLOCK);
            }
        }
    }
}
