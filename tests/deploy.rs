//! The deployment files check out: the systemd unit passes
//! `systemd-analyze verify` (with its ExecStart pointed at the binary under
//! test). Without `systemd-analyze` the test says so and passes, except in
//! CI, which installs it.

mod common;

use std::process::Command;

use common::BIN;

#[test]
fn the_systemd_unit_verifies() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "no systemd-analyze, and CI must run this test"
        );
        eprintln!("skipping: no systemd-analyze");
        return;
    }
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/wshub.service"))
            .expect("deploy/wshub.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/wshub serve"));
    let dir = std::env::temp_dir().join(format!("wshub-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("wshub.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/wshub", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
