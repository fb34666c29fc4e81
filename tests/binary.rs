//! The `wshub` binary as a user runs it: help, start-up log, signals.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;

/// Starts `wshub serve` on a free port; returns the child, its address and
/// a channel of its log lines.
fn serve(extra: &[&str]) -> (Proc, SocketAddr, mpsc::Receiver<String>) {
    let served = serve_process(extra, &[]);
    (served.process, served.addr, served.log)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wshub did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--addr",
        "--write-timeout",
        "--pong-timeout",
        "--ping-interval",
        "--send-queue ",
        "--send-queue-bytes",
        "--max-message-bytes",
        "--head-timeout",
        "--max-head-bytes",
        "--close-timeout",
        "--max-clients",
        "--max-buffered-bytes",
        "--message-timeout",
        "--listen-backlog",
        "--allowed-origin",
        "--subprotocol",
        "--echo-sender",
        "--static-dir",
        "--redis",
        "--drain-timeout",
        "--log-level",
        "--log-format",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help:\n{help}");
    }
    for default in [
        "0.0.0.0:8080",
        "10s",
        "1m",
        "54s",
        "256",
        "\"16.0 MiB\"",
        "\"64.0 MiB\"",
        "3s",
        "1s",
    ] {
        assert!(
            help.contains(&format!("[default: {default}]")),
            "default {default} missing:\n{help}"
        );
    }
}

#[test]
fn bad_flags_fail_clearly() {
    let out = Command::new(BIN)
        .args(["serve", "--ping-interval", "2m", "--addr", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ping interval must be shorter than the pong timeout"),
        "{err}"
    );
}

#[test]
fn logs_the_url_and_serves_the_page() {
    let (mut child, addr, _log) = serve(&[]);
    assert_eq!(status(&get(addr, "/", "")), 200);
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(2)).success());
}

#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    // A terminal type that asks for colour, but stderr is a pipe (a file,
    // a journal): the lines must be plain text.
    let served = serve_process(&[], &[("TERM", "xterm-256color"), ("NO_COLOR", "")]);
    for line in &served.head {
        assert!(!line.contains('\u{1b}'), "escape codes in {line:?}");
    }
    let mut child = served.process;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(2)).success());
}

#[test]
fn json_logs_are_one_object_per_line_with_the_client_peer_and_room() {
    let served = serve_process(&["--log-format", "json"], &[]);
    let parse = |line: &str| -> serde_json::Value {
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
    };
    for line in &served.head {
        let v = parse(line);
        for field in ["time", "level", "message"] {
            assert!(v[field].is_string(), "no {field} in {v}");
        }
        // RFC 3339, UTC.
        let time = v["time"].as_str().unwrap();
        assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    }
    let mut client = ws(served.addr, "/ws/logged");
    let local = client.get_ref().local_addr().unwrap().to_string();
    close(&mut client);
    let deadline = Instant::now() + STEP;
    let mut seen = Vec::new();
    let joined = loop {
        let line = served
            .log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no join line in {seen:?}"));
        let v = parse(&line);
        if v["message"].as_str().unwrap_or("").contains("joined room") {
            break v;
        }
        seen.push(line);
    };
    assert_eq!(joined["level"], "INFO");
    assert_eq!(joined["room"], "logged");
    assert_eq!(joined["peer"], local.as_str());
    assert!(joined["client"].as_u64().is_some(), "{joined}");
    let mut child = served.process;
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(2)).success());
}

#[test]
fn sigint_closes_clients_with_1001_and_exits_0_within_2s() {
    for sig in ["-INT", "-TERM"] {
        let (mut child, addr, log) = serve(&["--log-level", "debug"]);
        let mut c = ws(addr, "/ws/sig");
        // Joined once the server logs it.
        let deadline = Instant::now() + STEP;
        while !log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap()
            .contains("joined room")
        {}
        let reader = std::thread::spawn(move || close_code(&mut c));
        let began = Instant::now();
        signal(&child, sig);
        let status = wait_exit(&mut child, Duration::from_secs(2));
        assert!(status.success(), "{sig}: exit {status:?}");
        assert!(began.elapsed() < Duration::from_secs(2));
        assert_eq!(reader.join().unwrap(), Some(CloseCode::Away), "{sig}");
    }
}
