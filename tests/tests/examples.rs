//! Every example config shipped in examples/ passes `primwatch check-config` (the real
//! binary), so the README and the demo never point at a config that run would refuse.

use std::process::Command;

use primwatch_tests::controller::binary;

#[test]
fn every_example_config_passes_check_config() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
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
