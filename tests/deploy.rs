//! The deployment files check out: the systemd unit passes
//! `systemd-analyze verify` (with its ExecStart pointed at the binary under
//! test). Without `systemd-analyze` on PATH the test skips and `make test`
//! says so, except under CI, where that fails it.

mod common;

use std::process::Command;

use common::{BIN, have};

#[test]
fn the_systemd_unit_verifies() {
    if !have("systemd-analyze", "--version", "systemd") {
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
