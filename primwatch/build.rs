//! Builds the XDP program (primwatch-ebpf) for bpfel-unknown-none with nightly and
//! bpf-linker, so the controller can embed the object. `cargo xtask setup` installs both.
//!
//! aya-build reports every line of the inner build (its "Compiling …" lines included)
//! as a cargo warning, which reads as if something were wrong. Its directives are
//! captured here and passed on, except the warnings, which are shown only when the
//! eBPF build fails or PRIMWATCH_EBPF_VERBOSE is set (`cargo xtask build -v`).

use std::{
    fs::File,
    io::{Read as _, Seek as _, Write as _},
    os::fd::AsRawFd as _,
};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PRIMWATCH_EBPF_VERBOSE");
    let verbose = std::env::var_os("PRIMWATCH_EBPF_VERBOSE").is_some_and(|v| !v.is_empty() && v != "0");
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let mut captured =
        File::options().read(true).write(true).create(true).truncate(true).open(out_dir.join("ebpf-build.log"))?;

    let result = with_stdout_into(&captured, || {
        let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../primwatch-ebpf");
        aya_build::build_ebpf(
            [aya_build::Package { name: "primwatch-ebpf", root_dir: ebpf_dir, ..Default::default() }],
            aya_build::Toolchain::default(),
        )
    })?;

    let mut text = String::new();
    captured.rewind()?;
    captured.read_to_string(&mut text)?;
    let show_warnings = verbose || result.is_err();
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    for line in text.lines() {
        if line.starts_with("cargo:warning=") && !show_warnings {
            continue;
        }
        writeln!(stdout, "{line}")?;
    }
    result
}

/// Runs `f` with this process's stdout (fd 1, where build scripts talk to cargo) sent
/// to `file`, then puts it back.
fn with_stdout_into<T>(file: &File, f: impl FnOnce() -> T) -> anyhow::Result<T> {
    std::io::stdout().flush()?;
    // SAFETY: dup/dup2 on fd 1 and an open file; the saved descriptor is restored and
    // closed below.
    let saved = unsafe { libc::dup(1) };
    anyhow::ensure!(saved >= 0, "dup(1): {}", std::io::Error::last_os_error());
    anyhow::ensure!(unsafe { libc::dup2(file.as_raw_fd(), 1) } == 1, "dup2: {}", std::io::Error::last_os_error());
    let value = f();
    std::io::stdout().flush()?;
    unsafe {
        libc::dup2(saved, 1);
        libc::close(saved);
    }
    Ok(value)
}
