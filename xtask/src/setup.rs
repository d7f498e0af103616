//! Idempotent machine setup. Each step checks first and says what it does.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::step;

/// Debian packages the build, the demo, the tests and the benchmarks use.
const PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "ethtool",
    "dnsutils",
    "knot-dnsutils",
    "pdns-server",
    "pdns-backend-bind",
    "pdns-backend-remote",
    "knot",
    "gdnsd",
    "openssl",
    "nftables",
    "lintian",
    // mmdblookup: reads the MaxMind DB files the geoip tests write (an independent reader).
    "mmdb-bin",
    // DNSSEC: dnssec-keygen writes the BIND-format keys the tests sign with; dnspython
    // validates the signatures independently; unbound validates end to end.
    "bind9-utils",
    "python3-dnspython",
    "unbound",
    // The fleet: etcd-client's build compiles etcd's protobuf API (protoc); the tests
    // run a real etcd cluster.
    "protobuf-compiler",
    "etcd-server",
    "etcd-client",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    debian_packages()?;
    lint_tools()?;
    cargo_deb()?;
    nightly_rust_src()?;
    bpf_linker()?;
    bpffs()?;
    exec_user()?;
    Ok(())
}

/// The unprivileged system user exec checks and hooks run as (`server.exec_user`).
fn exec_user() -> Result<()> {
    let known = Command::new("getent").args(["passwd", "primwatch"]).stdout(Stdio::null()).status()?.success();
    if known {
        return Ok(());
    }
    step("creating the system user primwatch (exec checks and hooks run as it)");
    run_cmd(Command::new("useradd").args([
        "--system",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        "primwatch",
    ]))
}

fn is_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !is_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("installing Debian packages: {}", missing.join(" ")));
    // The packages' maintainer scripts would start pdns, knot and gdnsd on the host (the
    // lab starts its own): a policy-rc.d that says no, for the install only. One the
    // operator already has is left alone, and no running daemon is touched.
    let _policy = NoDaemonStarts::install()?;
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

/// /usr/sbin/policy-rc.d exiting 101 ("action forbidden", invoke-rc.d(8)) while it
/// lives, if there was none; removed on drop.
struct NoDaemonStarts(Option<PathBuf>);

impl NoDaemonStarts {
    fn install() -> Result<NoDaemonStarts> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = PathBuf::from("/usr/sbin/policy-rc.d");
        if path.exists() {
            return Ok(NoDaemonStarts(None));
        }
        std::fs::write(&path, "#!/bin/sh\n# primwatch setup: no daemon starts during the install\nexit 101\n")?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        Ok(NoDaemonStarts(Some(path)))
    }
}

impl Drop for NoDaemonStarts {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn nightly_sysroot() -> Result<PathBuf> {
    Ok(PathBuf::from(output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?))
}

/// rustfmt and clippy for the stable toolchain (`cargo xtask test` runs both).
fn lint_tools() -> Result<()> {
    let present =
        |tool: &str| Command::new("cargo").args([tool, "--version"]).output().is_ok_and(|o| o.status.success());
    if present("fmt") && present("clippy") {
        return Ok(());
    }
    step("adding rustfmt and clippy to the toolchain");
    run_cmd(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
}

/// cargo-deb builds the Debian package (`cargo xtask deb`, and `cargo xtask test`
/// checks the package it makes).
const CARGO_DEB_VERSION: &str = "^2";

fn cargo_deb() -> Result<()> {
    let present = Command::new("cargo").args(["deb", "--version"]).output().is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    step("installing cargo-deb (builds the Debian package)");
    run_cmd(Command::new("cargo").args(["+stable", "install", "cargo-deb", "--locked", "--version", CARGO_DEB_VERSION]))
}

fn nightly_rust_src() -> Result<()> {
    let src = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if src.exists() {
        return Ok(());
    }
    step("adding rust-src to the nightly toolchain (the XDP program builds core from source)");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

/// bpf-linker must use the LLVM that nightly rustc itself uses, or it cannot read the
/// bitcode rustc emits. We link it against the library in the nightly sysroot.
fn bpf_linker() -> Result<()> {
    let sysroot = nightly_sysroot()?;
    let libllvm = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            // The real library, e.g. libLLVM.so.22.1-rust-1.97.0-nightly (the
            // libLLVM-22-rust-….so beside it is a linker script).
            name.starts_with("libLLVM.so.")
        })
        .context("no libLLVM.so.* in the nightly sysroot")?;
    let soname = libllvm.file_name().unwrap().to_string_lossy().to_string();
    let major = soname.trim_start_matches("libLLVM.so.").split('.').next().unwrap_or_default().to_string();

    if let Ok(path) = output(Command::new("sh").args(["-c", "command -v bpf-linker"])) {
        let ldd = output(Command::new("ldd").arg(&path)).unwrap_or_default();
        let version = output(Command::new(&path).arg("--version")).unwrap_or_default();
        let resolved = ldd.lines().any(|l| l.contains(&soname) && !l.contains("not found"));
        if resolved && version.contains(BPF_LINKER_VERSION) {
            return Ok(());
        }
        step(&format!("bpf-linker at {path} is not {BPF_LINKER_VERSION} linked to {soname}; reinstalling"));
    }

    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let prefix = Path::new(&home).join(".local/share/primwatch/llvm");
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    for link in ["libLLVM.so".to_string(), soname.clone()] {
        let path = lib.join(&link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&libllvm, &path)
            .with_context(|| format!("linking {} → {}", path.display(), libllvm.display()))?;
    }
    step(&format!(
        "installing bpf-linker {BPF_LINKER_VERSION} against rustc's LLVM {major} ({}; ~1 minute)",
        libllvm.display()
    ));
    run_cmd(
        Command::new("cargo")
            .args(["+stable", "install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--locked"])
            .args(["--no-default-features", "--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &prefix),
    )
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts")?;
    if mounts.lines().any(|l| l.split(' ').nth(1) == Some("/sys/fs/bpf") && l.split(' ').nth(2) == Some("bpf")) {
        return Ok(());
    }
    step("mounting bpffs on /sys/fs/bpf (mode 0700: pins are root's)");
    run_cmd(Command::new("mount").args(["-t", "bpf", "-o", "mode=0700", "bpf", "/sys/fs/bpf"]))
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}
