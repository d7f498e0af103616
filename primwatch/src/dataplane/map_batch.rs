//! Batched map reads (BPF_MAP_LOOKUP_BATCH, Linux 5.6), which aya 0.14 does not wrap:
//! reading a million names' counters one element per syscall takes seconds of the
//! controller's loop; in batches it takes milliseconds.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use anyhow::{Context as _, Result};

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Elements per syscall: 64 Ki elements of a few CPUs' u64 each is a few MB of buffer.
const BATCH: usize = 64 * 1024;

/// The first `len` elements of a per-CPU array of u64, each summed over `cpus` (the
/// kernel's possible CPUs, which it sizes per-CPU values by).
///
/// Errors: the syscall's (e.g. EINVAL on kernels without batch support for arrays).
pub(crate) fn per_cpu_u64_sums(map: BorrowedFd<'_>, len: u32, cpus: usize) -> Result<Vec<u64>> {
    let mut sums = Vec::with_capacity(len as usize);
    let mut keys = vec![0u32; BATCH];
    let mut values = vec![0u64; BATCH * cpus];
    let (mut cursor_in, mut cursor_out) = (0u32, 0u32);
    let mut first = true;
    while sums.len() < len as usize {
        let want = (len as usize - sums.len()).min(BATCH);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { &cursor_in as *const u32 as u64 },
            out_batch: &mut cursor_out as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: attr points at buffers of `want` keys and `want * cpus` values that
        // outlive the call; the kernel writes at most `count` of each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as libc::c_uint,
            )
        };
        let done = attr.count as usize;
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            // ENOENT: the map's end was reached; `count` elements were still copied.
            if err.raw_os_error() != Some(libc::ENOENT) {
                return Err(err).context("BPF_MAP_LOOKUP_BATCH");
            }
        }
        sums.extend(values[..done * cpus].chunks(cpus).map(|per_cpu| per_cpu.iter().sum::<u64>()));
        if rc < 0 || done == 0 {
            break;
        }
        cursor_in = cursor_out;
        first = false;
    }
    sums.resize(len as usize, 0);
    Ok(sums)
}
