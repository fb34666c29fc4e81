//! A `redis-server` of a test's own, on a free loopback port: plain, or
//! with a password, ACL users or TLS ([`Setup`]).
#![allow(dead_code)]

use std::process::{Command, Stdio};

use super::{Proc, eventually};

/// How a test's `redis-server` is set up beyond the defaults.
#[derive(Default, Clone)]
pub struct Setup {
    /// More `redis-server` arguments (`--requirepass`, say).
    pub args: Vec<String>,
    /// How `redis-cli` authenticates (`--user`, `--pass`).
    pub cli_auth: Vec<String>,
    /// TLS only, with this CA, certificate and key.
    pub tls: Option<super::tls::Certs>,
}

/// A `redis-server` of this test's own.
pub struct Redis {
    pub port: u16,
    process: Option<Proc>,
    setup: Setup,
}

impl Redis {
    /// Starts one, or `None` (with a message) when there is no binary.
    pub fn start() -> Option<Redis> {
        Redis::start_with(Setup::default())
    }

    /// Starts one set up as `setup` says, or `None` (the test skips)
    /// when there is no binary.
    pub fn start_with(setup: Setup) -> Option<Redis> {
        // One at a time: a port is free until its server has bound it.
        static PICKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = PICKING.lock().unwrap_or_else(|e| e.into_inner());
        let mut redis = Redis::reserve(setup)?;
        redis.run();
        Some(redis)
    }

    /// A free port for one set up as `setup` says, not started yet (see
    /// [`run`](Redis::run)), or `None` (the test skips) when there is no
    /// binary.
    pub fn reserve(setup: Setup) -> Option<Redis> {
        // Without one the test skips, and `make test` says so; under CI
        // (which installs it) its absence fails.
        if !super::have("redis-server", "--version", "redis-server") {
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        Some(Redis {
            port,
            process: None,
            setup,
        })
    }

    /// (Re)starts the server on its port and waits until it answers —
    /// and until the one answering is this one (tests run in parallel, and
    /// a port found free can be taken by another test's server).
    pub fn run(&mut self) {
        let port = self.port.to_string();
        let listen: Vec<String> = match &self.setup.tls {
            None => vec!["--port".into(), port],
            Some(tls) => vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port,
                "--tls-cert-file".into(),
                tls.cert.display().to_string(),
                "--tls-key-file".into(),
                tls.key.display().to_string(),
                "--tls-ca-cert-file".into(),
                tls.ca.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
        };
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.setup.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let pid = child.id().to_string();
        self.process = Some(Proc(child));
        eventually("our redis-server answers on its port", || {
            self.cli(&["INFO", "server"])
                .iter()
                .any(|l| l.trim() == format!("process_id:{pid}"))
        });
    }

    /// Kills the server (as a crash would).
    pub fn kill(&mut self) {
        self.process = None;
        eventually("redis-server is gone", || self.cli(&["PING"]).is_empty());
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://localhost:PORT` with TLS.
    pub fn url(&self) -> String {
        match self.setup.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://localhost:{}", self.port),
        }
    }

    /// The URL with `user:password@` in it.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        self.url()
            .replacen("://", &format!("://{user}:{password}@"), 1)
    }

    /// `redis-cli` output lines (none when the server does not answer).
    pub fn cli(&self, args: &[&str]) -> Vec<String> {
        let tls: Vec<String> = match &self.setup.tls {
            None => Vec::new(),
            Some(tls) => vec![
                "--tls".into(),
                "--cacert".into(),
                tls.ca.display().to_string(),
            ],
        };
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(tls)
            .args(&self.setup.cli_auth)
            .args(args)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty() && !l.starts_with("Could not connect"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Instances subscribed to `room`.
    pub fn subscribers(&self, room: &str) -> usize {
        let out = self.cli(&["PUBSUB", "NUMSUB", &format!("wshub:room:{room}")]);
        out.get(1).and_then(|n| n.parse().ok()).unwrap_or(0)
    }

    pub fn wait_subscribers(&self, room: &str, n: usize) {
        eventually(&format!("{n} instances subscribed to {room}"), || {
            self.subscribers(room) == n
        });
    }
}
