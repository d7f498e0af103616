//! Every example config shipped in examples/ passes `primwatch check-config` (the real
//! binary), so the README and the demo never point at a config that run would refuse.

use std::process::Command;

use primwatch_tests::controller::binary;

#[test]
fn every_example_config_passes_check_config() {
    // A copy of examples/ with the cookie secret production.toml names beside it, made
    // the way the package's postinst makes it (git keeps no 0640 file, and no secret).
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let copy = primwatch_tests::TempDir::new("pwexamples").unwrap();
    let dir = copy.0.clone();
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let made = Command::new(binary()).arg("cookie-secret").arg(dir.join("cookie-secret.conf")).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let out = Command::new(binary()).arg("check-config").arg(&path).output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2, "only {checked} example configs found in {}", dir.display());
}

/// The demo's country database is the one `mmdb::demo_database` writes (run with
/// PRIMWATCH_WRITE_EXAMPLES=1 to write it after changing that function).
#[test]
fn the_demo_country_database_is_the_tests_own() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-country.mmdb");
    let want = primwatch_tests::mmdb::demo_database();
    if std::env::var_os("PRIMWATCH_WRITE_EXAMPLES").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    assert_eq!(std::fs::read(&path).unwrap(), want, "{} differs from mmdb::demo_database()", path.display());
}
