//! A `redis-server` of a test's own, on a free loopback port.
#![allow(dead_code)]

use std::process::{Command, Stdio};

use super::{Proc, eventually};

/// A `redis-server` of this test's own.
pub struct Redis {
    pub port: u16,
    process: Option<Proc>,
}

impl Redis {
    /// Starts one, or `None` (with a message) when there is no binary.
    pub fn start() -> Option<Redis> {
        // One at a time: a port is free until its server has bound it.
        static PICKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = PICKING.lock().unwrap_or_else(|e| e.into_inner());
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            // CI always has one (.ci/run installs it): there, its absence fails.
            assert!(
                std::env::var_os("CI").is_none(),
                "no redis-server binary, and CI must run these tests"
            );
            eprintln!("skipping: no redis-server binary (CI installs Debian's redis-server)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut redis = Redis {
            port,
            process: None,
        };
        redis.run();
        Some(redis)
    }

    /// (Re)starts the server on its port and waits until it answers —
    /// and until the one answering is this one (tests run in parallel, and
    /// a port found free can be taken by another test's server).
    pub fn run(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` output lines (none when the server does not answer).
    pub fn cli(&self, args: &[&str]) -> Vec<String> {
        Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
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
