//! Certificates made by `openssl` for one test run: a CA of the test's
//! own and a server certificate it signs for `localhost` and 127.0.0.1.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and one server certificate, as PEM files in a directory.
#[derive(Clone, Debug)]
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn run(command: &mut Command) {
    let out = command.output().expect("openssl runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a CA (`{prefix}ca.pem`) and a server certificate it signed
/// (`{prefix}server.pem`, `{prefix}server.key`) in `dir`.
pub fn certs(dir: &Path, prefix: &str) -> Certs {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let name = |f: &str| format!("{prefix}{f}");
    run(Command::new("openssl")
        .current_dir(dir)
        .args(["req", "-x509"])
        .args(ec)
        .args(["-keyout", &name("ca.key"), "-out", &name("ca.pem")])
        .args(["-days", "2", "-subj", "/CN=wshub test CA"]));
    run(Command::new("openssl")
        .current_dir(dir)
        .arg("req")
        .args(ec)
        .args(["-keyout", &name("server.key"), "-out", &name("server.csr")])
        .args(["-subj", "/CN=localhost"]));
    std::fs::write(
        dir.join(name("server.ext")),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("write the extensions");
    run(Command::new("openssl")
        .current_dir(dir)
        .args([
            "x509",
            "-req",
            "-in",
            &name("server.csr"),
            "-CA",
            &name("ca.pem"),
        ])
        .args(["-CAkey", &name("ca.key"), "-CAcreateserial", "-days", "2"])
        .args(["-extfile", &name("server.ext"), "-out", &name("server.pem")]));
    Certs {
        ca: dir.join(name("ca.pem")),
        cert: dir.join(name("server.pem")),
        key: dir.join(name("server.key")),
    }
}
