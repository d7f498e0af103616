//! The Debian package `cargo xtask test` builds (`cargo xtask deb`), installed into a
//! scratch root: the installed binary runs, validates the installed config, and the
//! package carries its unit, conffile, man page, completions and docs.

use std::{path::PathBuf, process::Command};

fn the_package() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debian");
    let version = env!("CARGO_PKG_VERSION");
    let debs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!("{}: {e} (run the tests with `cargo xtask test`, which builds the package)", dir.display())
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with(&format!("primwatch_{version}")) && name.ends_with("_amd64.deb")
        })
        .collect();
    assert_eq!(debs.len(), 1, "one package for version {version} in {}: {debs:?}", dir.display());
    debs[0].clone()
}

fn run(command: &mut Command) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn the_debian_package_installs_and_runs() {
    let deb = the_package();
    let root = primwatch_tests::TempDir::new("pwdeb").unwrap();
    run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root.0));
    let file = |path: &str| root.0.join(path.trim_start_matches('/'));

    // The installed binary: its version, and the installed config validated.
    let binary = file("/usr/bin/primwatch");
    let version = run(Command::new(&binary).arg("--version"));
    assert_eq!(version.trim(), format!("primwatch {}", env!("CARGO_PKG_VERSION")));
    // postinst makes the cookie secret the packaged config names (beside it).
    let postinst_made = run(Command::new(&binary).arg("cookie-secret").arg(file("/etc/primwatch/cookie-secret.conf")));
    assert!(postinst_made.contains("wrote a new cookie secret"), "{postinst_made}");
    let checked = run(Command::new(&binary).arg("check-config").arg(file("/etc/primwatch/primwatch.toml")));
    assert!(checked.contains("ok"), "{checked}");

    // The unit runs the packaged binary on the packaged config.
    let unit = std::fs::read_to_string(file("/lib/systemd/system/primwatch.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/primwatch run --config /etc/primwatch/primwatch.toml"), "{unit}");
    assert!(!unit.contains("/usr/local/bin"), "{unit}");
    // Sandboxed: a memory ceiling, no way to the cloud's metadata service, and an
    // exposure score (systemd's own measure, offline) no worse than 3.0.
    assert!(unit.contains("\nMemoryMax=") && unit.contains("\nIPAddressDeny=169.254.0.0/16"), "{unit}");
    let analysis = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(file("/lib/systemd/system/primwatch.service"))
        .output()
        .expect("systemd-analyze (systemd)");
    let report = String::from_utf8_lossy(&analysis.stdout);
    let score: f64 = report
        .split("Overall exposure level for primwatch.service: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level: {report}"));
    assert!(score <= 3.0, "exposure {score}:\n{report}");
    // Documentation= points at a file the package installs.
    assert!(unit.contains("Documentation=file:///usr/share/doc/primwatch/README.md"));
    for path in [
        "/usr/share/doc/primwatch/README.md",
        "/usr/share/doc/primwatch/examples/production.toml",
        "/usr/share/doc/primwatch/examples/pdns.conf",
        "/usr/share/doc/primwatch/copyright",
        "/usr/share/man/man8/primwatch.8.gz",
        "/usr/share/bash-completion/completions/primwatch",
        "/usr/share/zsh/vendor-completions/_primwatch",
        "/usr/share/fish/vendor_completions.d/primwatch.fish",
    ] {
        assert!(file(path).exists(), "{path} is in the package");
    }
    // The man page is a real roff page for the commands; the completions know them.
    let man = run(Command::new("zcat").arg(file("/usr/share/man/man8/primwatch.8.gz")));
    assert!(man.contains(".TH primwatch 8") && man.contains("check\\-config"), "{}", &man[..man.len().min(400)]);
    let bash = std::fs::read_to_string(file("/usr/share/bash-completion/completions/primwatch")).unwrap();
    assert!(bash.contains("check-config") && bash.contains("ctl"));

    // The config is a conffile (an upgrade keeps the operator's edits); the maintainer
    // scripts create the exec user and enable nothing.
    let control = primwatch_tests::TempDir::new("pwdebctl").unwrap();
    run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control.0));
    let conffiles = std::fs::read_to_string(control.0.join("conffiles")).unwrap();
    assert_eq!(conffiles.trim(), "/etc/primwatch/primwatch.toml");
    // It may hold secrets ([fleet] password): not readable by other users.
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let line = listing.lines().find(|l| l.ends_with("etc/primwatch/primwatch.toml")).expect("the config is listed");
    assert!(line.starts_with("-rw-r----- 0/0 "), "{line}");
    let postinst = std::fs::read_to_string(control.0.join("postinst")).unwrap();
    let commands: Vec<&str> = postinst.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    assert!(commands.iter().any(|l| l.contains("useradd --system")), "{postinst}");
    assert!(
        commands.iter().any(|l| l.contains("primwatch cookie-secret /etc/primwatch/cookie-secret.conf")),
        "{postinst}"
    );
    assert!(!commands.iter().any(|l| l.contains("systemctl enable") || l.contains("systemctl start")), "{postinst}");
    let fields = run(Command::new("dpkg-deb").arg("-f").arg(&deb).args(["Package", "Architecture", "Depends"]));
    assert!(fields.contains("Package: primwatch") && fields.contains("Architecture: amd64"), "{fields}");
    assert!(fields.contains("libc6"), "shared-library dependencies are listed: {fields}");
}

/// Lintian (installed by setup): no error and no warning. Not applicable outside
/// Debian's archive, and so suppressed: initial-upload-closes-no-bugs (no ITP bug).
#[test]
fn the_debian_package_is_lintian_clean() {
    let out = Command::new("lintian")
        .args(["--suppress-tags", "initial-upload-closes-no-bugs"])
        .arg(the_package())
        .output()
        .expect("lintian (cargo xtask setup installs it)");
    let report = String::from_utf8_lossy(&out.stdout);
    let findings: Vec<&str> = report.lines().filter(|l| l.starts_with("E:") || l.starts_with("W:")).collect();
    assert!(findings.is_empty(), "lintian: {findings:#?}");
}
