//! `cargo xtask …`: set up a machine, build, run the demo, test and benchmark primwatch.
//!
//! xtask depends on nothing that needs the eBPF toolchain, so `cargo xtask setup` can
//! install that toolchain on a fresh machine before anything else is built.

mod setup;

use std::process::Command;

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what is missing (Debian packages, nightly rust-src, bpf-linker, bpffs mount).
    Setup {
        /// Then check that every system input of the build, the tests and the benches
        /// comes from a package setup installs (not one only recommended, or installed
        /// by hand).
        #[arg(long)]
        verify: bool,
    },
    /// Set up, then build primwatch (release, with the embedded XDP object).
    Build {
        /// Show the XDP program's build output even when it succeeds.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Build the Debian package target/debian/primwatch_VERSION_amd64.deb (cargo-deb):
    /// the binary, the unit, /etc/primwatch/primwatch.toml, examples, README, a man page
    /// and shell completions.
    Deb,
    /// Without arguments: the demo lab (netns client/server, PowerDNS, primwatch on
    /// examples/demo.toml). With arguments: `primwatch run ARGS` on this host.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run every test: unit tests and the root/netns integration tests.
    Test {
        /// Extra arguments for the test harness (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fuzz the XDP program through BPF_PROG_TEST_RUN: `-- --frames N --seed S`.
    Fuzz {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Print benchmark figures (BPF_PROG_TEST_RUN ns/packet, end-to-end answers/s).
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup { verify } => {
            setup::run()?;
            if verify {
                setup::verify()?;
            }
            Ok(())
        }
        Cmd::Build { verbose } => {
            setup::run()?;
            if verbose {
                std::env::set_var("PRIMWATCH_EBPF_VERBOSE", "1");
            }
            build()
        }
        Cmd::Deb => {
            setup::run()?;
            build()?;
            deb()
        }
        Cmd::Run { args } => {
            setup::run()?;
            build()?;
            if args.is_empty() {
                run_demo()
            } else {
                let mut full = vec!["run".to_string()];
                full.extend(args);
                let status = Command::new(workspace_root().join("target/release/primwatch")).args(&full).status()?;
                if !status.success() {
                    bail!("primwatch exited with {status}");
                }
                Ok(())
            }
        }
        Cmd::Test { args } => {
            setup::run()?;
            // A fresh machine has only what setup installs: prove it before the build.
            setup::verify()?;
            build()?;
            // tests/tests/package.rs installs it into a scratch root.
            deb()?;
            let bin = workspace_root().join("target/release/primwatch");
            let bin = bin.to_str().context("non-UTF-8 path")?;
            step("format and lint (cargo fmt --check; clippy on the host crates and on the XDP program, warnings are errors)");
            cargo(&["fmt", "--all", "--check"], &[])?;
            cargo(&["clippy", "--release", "--all-targets", "--", "-D", "warnings"], &[])?;
            lint_ebpf()?;
            step("unit and integration tests (release build; netns tests need root)");
            // Lab tests create namespaces, PowerDNS instances and XDP attachments; one
            // at a time keeps their timing honest on a 2-core machine.
            // The default members: everything but the eBPF crate, which only builds for BPF.
            let mut cmd = vec!["test", "--release", "--", "--test-threads=1"];
            cmd.extend(args.iter().map(String::as_str));
            cargo(&cmd, &[("PRIMWATCH_BIN", bin)])
        }
        Cmd::Fuzz { args } => {
            setup::run()?;
            build()?;
            run_tests_bin("pw-fuzz", &args)
        }
        Cmd::Bench { args } => {
            setup::run()?;
            build()?;
            run_tests_bin("pw-bench", &args)
        }
    }
}

/// `cargo run` of one of primwatch-tests' binaries (release) with `args`.
fn run_tests_bin(bin: &str, args: &[String]) -> Result<()> {
    let mut cmd = vec!["run", "--release", "-p", "primwatch-tests", "--bin", bin, "--"];
    cmd.extend(args.iter().map(String::as_str));
    cargo(&cmd, &[])
}

/// Runs the demo and waits for it, whatever signal arrives: Ctrl-C, a kill or a closed
/// terminal reach the demo (forwarded, if they were sent to us alone), which removes
/// its lab before it exits; only then do we exit.
fn run_demo() -> Result<()> {
    use std::sync::atomic::{AtomicI32, Ordering};
    static CHILD: AtomicI32 = AtomicI32::new(0);
    extern "C" fn forward(signal: libc::c_int) {
        let pid = CHILD.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill is async-signal-safe; it signals our own child.
            unsafe { libc::kill(pid, signal) };
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .args(["run", "--release", "-p", "primwatch-tests", "--bin", "pw-demo"])
        .current_dir(workspace_root())
        .spawn()
        .context("starting the demo")?;
    CHILD.store(child.id() as i32, Ordering::SeqCst);
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installs a handler that only calls kill.
        unsafe { libc::signal(signal, forward as extern "C" fn(libc::c_int) as libc::sighandler_t) };
    }
    let status = loop {
        match child.wait() {
            Ok(status) => break status,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("waiting for the demo"),
        }
    };
    if !status.success() {
        bail!("the demo exited with {status}");
    }
    Ok(())
}

fn step(what: &str) {
    eprintln!("xtask: {what}");
}

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

fn build() -> Result<()> {
    step("building primwatch (release; build.rs compiles the XDP program with nightly + bpf-linker)");
    cargo(&["build", "--release", "-p", "primwatch", "-p", "primwatch-tests"], &[])
}

/// The Debian package, from the release build: the man page and completions are made
/// by the built binary itself (clap_mangen, clap_complete), the unit is the example's
/// with the packaged binary's path.
fn deb() -> Result<()> {
    let root = workspace_root();
    let assets = root.join("target/release/deb-assets");
    std::fs::create_dir_all(&assets)?;
    let bin = root.join("target/release/primwatch");
    let generate = |args: &[&str]| -> Result<Vec<u8>> {
        let out = Command::new(&bin).args(args).output().with_context(|| format!("running primwatch {args:?}"))?;
        if !out.status.success() {
            bail!("primwatch {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    };
    // gzip -9n: no name or time stamp, so the package builds the same twice.
    let man = generate(&["man"])?;
    let mut gzip = Command::new("gzip")
        .args(["-9n"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::fs::File::create(assets.join("primwatch.8.gz"))?)
        .spawn()
        .context("running gzip")?;
    std::io::Write::write_all(gzip.stdin.as_mut().context("gzip stdin")?, &man)?;
    drop(gzip.stdin.take());
    if !gzip.wait()?.success() {
        bail!("gzip failed");
    }
    for (shell, file) in [("bash", "primwatch.bash"), ("zsh", "_primwatch"), ("fish", "primwatch.fish")] {
        std::fs::write(assets.join(file), generate(&["completions", shell])?)?;
    }
    let unit = std::fs::read_to_string(root.join("examples/primwatch.service"))?
        .replace("/usr/local/bin/primwatch", "/usr/bin/primwatch")
        .replace(
            "# systemd unit for primwatch. Install the binary as /usr/bin/primwatch and the\n# config as /etc/primwatch/primwatch.toml",
            "# systemd unit for primwatch, from its Debian package. Edit\n# /etc/primwatch/primwatch.toml, then `systemctl enable --now primwatch`",
        );
    std::fs::write(assets.join("primwatch.service"), unit)?;
    step("building the Debian package (cargo deb, from the release build)");
    cargo(&["deb", "-p", "primwatch", "--no-build"], &[])?;
    Ok(())
}

/// Clippy on the XDP program, for the BPF target with nightly (as build.rs builds it),
/// warnings as errors; its own target directory, so the host build is not disturbed.
fn lint_ebpf() -> Result<()> {
    let status = Command::new("rustup")
        .args(["run", "nightly", "cargo", "clippy", "-p", "primwatch-ebpf", "--release"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core", "--target-dir", "target/ebpf-clippy"])
        .args(["--", "-D", "warnings"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .current_dir(workspace_root())
        .status()
        .context("running clippy on the XDP program (rustup run nightly cargo clippy)")?;
    if !status.success() {
        bail!("clippy on the XDP program failed ({status})");
    }
    Ok(())
}

fn cargo(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(workspace_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let status = cmd.status().with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
