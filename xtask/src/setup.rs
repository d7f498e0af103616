//! Idempotent machine setup. Each step checks first and says what it does.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context as _, Result};

use crate::step;

/// Debian packages the build, the demo, the tests and the benchmarks use.
const PACKAGES: &[&str] = &[
    // The host build: rustc links with cc, and ring's C code needs libc's headers.
    "gcc",
    "libc6-dev",
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
    // systemd-analyze: the package test measures the unit's exposure offline.
    "systemd",
    // pgrep: the demo's tests look for processes the demo left behind.
    "procps",
    // mmdblookup: reads the MaxMind DB files the geoip tests write (an independent reader).
    "mmdb-bin",
    // DNSSEC: dnssec-keygen writes the BIND-format keys the tests sign with; dnspython
    // validates the signatures independently; unbound validates end to end.
    "bind9-utils",
    "python3-dnspython",
    // dnspython validates signatures with it, but only recommends it: without it the
    // import succeeds and every validation fails.
    "python3-cryptography",
    "unbound",
    // named as a resolver in front of the lab: it sends cookies and retries over TCP
    // when a server's cookie goes missing (the slow-path cookie test counts that).
    "bind9",
    // The fleet: etcd-client's build compiles etcd's protobuf API with protoc, which
    // imports the well-known types (google/protobuf/*.proto) from libprotobuf-dev:
    // protobuf-compiler only *recommends* it. The tests run a real etcd cluster.
    "protobuf-compiler",
    "libprotobuf-dev",
    "etcd-server",
    "etcd-client",
    // Seeing the fast path: tcpdump reads the pcap `primwatch capture` writes; BIND's
    // dnstap-read decodes the dnstap log (bind9-dnsutils, which dnsutils only pulls in
    // as a dependency today); fstrm_capture is the Unix-socket collector.
    "tcpdump",
    "bind9-dnsutils",
    "fstrm-bin",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn run() -> Result<()> {
    debian_packages()?;
    lint_tools()?;
    cargo_deb()?;
    nightly_rust_src()?;
    nightly_clippy()?;
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

/// clippy for the nightly toolchain (`cargo xtask test` lints the XDP program with it).
fn nightly_clippy() -> Result<()> {
    let present = Command::new("rustup")
        .args(["run", "nightly", "cargo", "clippy", "--version"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    step("adding clippy to the nightly toolchain (cargo xtask test lints the XDP program)");
    run_cmd(Command::new("rustup").args(["component", "add", "clippy", "--toolchain", "nightly"]))
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

/// System inputs no source line names as a program to run: files that builds, scripts
/// and programs read, each with why. Programs are found by scanning the sources
/// (`spawned_programs`); list a program here only when it is run some other way.
const SYSTEM_FILES: &[(&str, &str)] = &[
    ("/usr/bin/protoc", "etcd-client's build.rs compiles etcd's API"),
    ("/usr/include/google/protobuf/descriptor.proto", "protoc's well-known types, imported by etcd's protos"),
    ("/usr/include/google/protobuf/empty.proto", "protoc's well-known types"),
    ("/usr/bin/cc", "the linker rustc calls, and C code in -sys crates (ring)"),
    ("/usr/include/stdio.h", "libc headers for the C code in -sys crates"),
    ("/usr/lib/x86_64-linux-gnu/pdns/libbindbackend.so", "PowerDNS launch=bind (tests, demo, bench)"),
    ("/usr/lib/x86_64-linux-gnu/pdns/libremotebackend.so", "PowerDNS launch=remote (tests, demo)"),
    ("/usr/bin/python3", "tests/scripts/*.py"),
    ("/usr/lib/python3/dist-packages/dns/dnssec.py", "tests/scripts/dnssec_validate.py (dnspython)"),
    (
        "/usr/lib/python3/dist-packages/cryptography/__init__.py",
        "dnspython validates signatures with it (an import that fails quietly without it)",
    ),
    ("/usr/sbin/knotd", "pw-bench: Knot in XDP mode"),
    ("/usr/sbin/gdnsd", "pw-bench: gdnsd"),
];

/// `cargo xtask setup --verify`: every system input of the build, the tests and the
/// benches belongs to a package setup installs (`PACKAGES`, or what they depend on —
/// not what they only recommend) or to an essential package. Programs are found by
/// scanning the sources for the ways they are spawned; files come from `SYSTEM_FILES`.
/// Fails listing each input that a fresh machine would lack, with the package to add.
pub fn verify() -> Result<()> {
    let root = crate::workspace_root();
    let mut inputs: Vec<(String, String)> =
        SYSTEM_FILES.iter().map(|(path, why)| (path.to_string(), why.to_string())).collect();
    for (program, place) in spawned_programs(&root)? {
        inputs.push((program, place));
    }
    let provided = package_closure(PACKAGES)?;
    let mut problems = Vec::new();
    let mut checked = 0;
    for (input, why) in &inputs {
        let Some(path) = resolve(input) else {
            problems.push(format!("{input} ({why}): not found on this machine"));
            continue;
        };
        if from_rustup(&path) {
            continue;
        }
        let owners = owners(&path);
        if owners.is_empty() {
            problems.push(format!("{input} → {} ({why}): no Debian package owns it", path.display()));
            continue;
        }
        checked += 1;
        if !owners.iter().any(|o| provided.contains(o)) {
            problems.push(format!(
                "{input} → {} ({why}): owned by {}, which setup does not install (add it to PACKAGES in xtask/src/setup.rs)",
                path.display(),
                owners.join(", ")
            ));
        }
    }
    if !problems.is_empty() {
        bail!(
            "setup --verify: {} system input(s) a fresh machine would lack:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    step(&format!("setup --verify: {checked} system inputs, each from a package setup installs"));
    Ok(())
}

/// Programs the sources run, with the first place each is named: `Command::new("P")`,
/// `netns::command(NS, "P")`, `sh("P", …)`, `ip netns exec NS P` and the first word of
/// an exec check's `command = ["P", …]`. Names with a placeholder (`{}`) or paths
/// made at run time are not system inputs.
fn spawned_programs(root: &Path) -> Result<Vec<(String, String)>> {
    let patterns = regex::Regex::new(concat!(
        r#"Command::new\("([^"]+)"\)|\bcommand\([^,()]+,\s*"([^"]+)"\)|\bsh\("([^"]+)""#,
        r#"|"exec",\s*[^,]+,\s*"([^"]+)"|command = \[\\?"([^"\\]+)\\?""#,
    ))?;
    let mut found: Vec<(String, String)> = Vec::new();
    for dir in ["primwatch/src", "primwatch-common/src", "tests", "xtask/src"] {
        for file in rust_files(&root.join(dir))? {
            let text = std::fs::read_to_string(&file)?;
            for (n, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("//") {
                    continue;
                }
                for caps in patterns.captures_iter(line) {
                    let Some(program) = caps.iter().skip(1).flatten().next().map(|m| m.as_str()) else { continue };
                    if program.contains('{') || program.starts_with('.') || found.iter().any(|(p, _)| p == program) {
                        continue;
                    }
                    let place = format!("run by {}:{}", file.strip_prefix(root).unwrap_or(&file).display(), n + 1);
                    found.push((program.to_string(), place));
                }
            }
        }
    }
    Ok(found)
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A program name looked up on PATH (as root's shell would, sbin included), or a path;
/// symlinks (alternatives) followed to the file a package owns.
fn resolve(input: &str) -> Option<PathBuf> {
    let path = if input.contains('/') {
        PathBuf::from(input)
    } else {
        let search = std::env::var("PATH").unwrap_or_default();
        let found =
            search.split(':').chain(["/usr/sbin", "/sbin"]).map(|dir| Path::new(dir).join(input)).find(|p| p.is_file());
        found?
    };
    std::fs::canonicalize(path).ok()
}

/// cargo, rustc and rustup come from rustup, which the README requires.
fn from_rustup(path: &Path) -> bool {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    path.starts_with(Path::new(&home).join(".cargo")) || path.starts_with(Path::new(&home).join(".rustup"))
}

/// The packages that own `path` (`dpkg -S`), trying the /usr-merged spelling too.
fn owners(path: &Path) -> Vec<String> {
    let mut spellings = vec![path.to_path_buf()];
    if let Ok(rest) = path.strip_prefix("/usr") {
        spellings.push(Path::new("/").join(rest));
    }
    for spelling in spellings {
        let Ok(out) = Command::new("dpkg").arg("-S").arg(&spelling).stderr(Stdio::null()).output() else { continue };
        if !out.status.success() {
            continue;
        }
        let owners: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.rsplit_once(": ").map(|(pkgs, _)| pkgs.to_string()))
            .flat_map(|pkgs| pkgs.split(", ").map(|p| p.split(':').next().unwrap_or(p).to_string()).collect::<Vec<_>>())
            .collect();
        if !owners.is_empty() {
            return owners;
        }
    }
    Vec::new()
}

/// `packages`, everything they depend on (Depends and Pre-Depends, recursively; not
/// Recommends or Suggests, which `--no-install-recommends` leaves out) and the base
/// packages every Debian system has.
fn package_closure(packages: &[&str]) -> Result<std::collections::HashSet<String>> {
    let out = output(
        Command::new("apt-cache")
            .args(["depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts"])
            .args(["--no-breaks", "--no-replaces", "--no-enhances"])
            .args(packages),
    )?;
    let mut set: std::collections::HashSet<String> = out
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('<'))
        .map(|l| l.split(':').next().unwrap_or(l).trim().to_string())
        .collect();
    // Essential, protected or of priority required: what debootstrap's minbase and
    // every Debian installation have.
    let base =
        output(Command::new("dpkg-query").args(["-W", "-f=${Package} ${Essential}${Protected} ${Priority}\\n"]))?;
    set.extend(base.lines().filter_map(|l| {
        let (package, rest) = l.split_once(' ')?;
        (rest.starts_with("yes") || rest.ends_with(" required")).then(|| package.to_string())
    }));
    Ok(set)
}
