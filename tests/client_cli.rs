//! `wshub client` run as a user runs it, against a wshub server on loopback
//! (and, for the close handshake, against a plain tungstenite server).

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

/// A `wshub client` process with its output as channels of lines; killed
/// and reaped however the test ends.
struct Client {
    child: Proc,
    stdin: Option<ChildStdin>,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

fn client(args: &[&str]) -> Client {
    let mut child = Command::new(BIN)
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wshub client starts");
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    Client {
        stdin: child.stdin.take(),
        child: Proc(child),
        out,
        err,
    }
}

impl Client {
    fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn end_stdin(&mut self) {
        self.stdin = None;
    }

    fn next_out(&self) -> String {
        self.out.recv_timeout(STEP).expect("a line on stdout")
    }

    /// Waits for a stderr line containing `what`; returns it.
    fn err_line(&self, what: &str) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let line = self
                .err
                .recv_timeout(deadline.saturating_duration_since(Instant::now()));
            let line = line.unwrap_or_else(|_| panic!("no stderr line containing {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    }

    fn exit_code(&mut self) -> i32 {
        let deadline = Instant::now() + STEP;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "client did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wshub-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn two_clients_chat_through_the_server() {
    let server = start(config());
    let events = server.events();
    let url = format!("ws://{}/ws/chat", server.local_addr());
    let mut alice = client(&[&url]);
    let mut bob = client(&[&url]);
    joined(&events, 2);
    alice.say("hello bob");
    assert_eq!(bob.next_out(), "hello bob");
    bob.say("hi alice, ünïcode ✓");
    assert_eq!(alice.next_out(), "hi alice, ünïcode ✓");
    // End of stdin: Close 1000, exit 0.
    alice.end_stdin();
    assert_eq!(alice.exit_code(), 0);
    bob.end_stdin();
    assert_eq!(bob.exit_code(), 0);
}

#[test]
fn history_flag_prints_the_rooms_last_messages_first() {
    let server = start(config());
    let events = server.events();
    let url = format!("ws://{}/ws/late", server.local_addr());
    let mut alice = client(&[&url]);
    let mut bob = client(&[&url]);
    joined(&events, 2);
    for line in ["one", "two", "three"] {
        alice.say(line);
        assert_eq!(bob.next_out(), line);
    }
    let mut late = client(&["--history", "2", &url]);
    assert_eq!(late.next_out(), "two");
    assert_eq!(late.next_out(), "three");
    alice.say("four");
    assert_eq!(late.next_out(), "four");
    for c in [&mut alice, &mut bob, &mut late] {
        c.end_stdin();
        assert_eq!(c.exit_code(), 0);
    }
}

#[test]
fn send_file_and_save_dir_are_byte_exact() {
    let server = start(config());
    let events = server.events();
    let url = format!("ws://{}/ws/files", server.local_addr());
    let inbox = temp_dir("inbox");
    let outbox = temp_dir("outbox");
    let name = "naïve résumé 2024.bin";
    let contents: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 3) as u8).collect();
    std::fs::write(outbox.join(name), &contents).unwrap();
    // An older file of the same name must survive.
    std::fs::write(inbox.join(name), b"keep me").unwrap();

    let receiver = client(&["--save-dir", inbox.to_str().unwrap(), &url]);
    joined(&events, 1);
    let mut sender = client(&["--send-file", outbox.join(name).to_str().unwrap(), &url]);
    let saved = receiver.err_line("saved ");
    let saved_as = inbox.join("naïve résumé 2024 (1).bin");
    assert!(saved.contains(saved_as.to_str().unwrap()), "{saved}");
    assert_eq!(std::fs::read(&saved_as).unwrap(), contents);
    assert_eq!(std::fs::read(inbox.join(name)).unwrap(), b"keep me");
    sender.end_stdin();
    assert_eq!(sender.exit_code(), 0);
    let _ = std::fs::remove_dir_all(&inbox);
    let _ = std::fs::remove_dir_all(&outbox);
}

#[test]
fn hostile_file_names_stay_inside_save_dir() {
    let server = start(config());
    let events = server.events();
    let addr = server.local_addr();
    let root = temp_dir("hostile");
    let inbox = root.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let receiver = client(&[
        "--save-dir",
        inbox.to_str().unwrap(),
        &format!("ws://{addr}/ws/h"),
    ]);
    joined(&events, 1);
    let mut evil = ws(addr, "/ws/h");
    for name in ["../x", "..", "/etc/passwd-copy", "..\\..\\y"] {
        evil.send(Message::binary(file_message(name, b"payload")))
            .unwrap();
        receiver.err_line("saved ");
    }
    // Malformed frames are reported, not saved.
    evil.send(Message::binary(vec![200, 0, b'a'])).unwrap();
    receiver.err_line("name length past the end");
    let outside: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        outside,
        vec![std::ffi::OsString::from("inbox")],
        "something was written outside"
    );
    let mut inside: Vec<_> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    inside.sort();
    assert_eq!(inside, ["file", "passwd-copy", "x", "y"]);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn every_sends_at_the_requested_period() {
    let server = start(config());
    let events = server.events();
    let url = format!("ws://{}/ws/tick", server.local_addr());
    let listener = client(&[&url]);
    joined(&events, 1);
    let _ticker = client(&["--every", "200ms", "--text", "tick", "--no-stdin", &url]);
    let mut times = Vec::new();
    for _ in 0..8 {
        assert_eq!(listener.next_out(), "tick");
        times.push(Instant::now());
    }
    // Seven intervals of 200 ms; scheduling noise on a busy machine is allowed
    // for, but not a wrong period (100 ms or 400 ms would fail).
    let span = times[7] - times[0];
    assert!(
        span >= Duration::from_millis(1100) && span <= Duration::from_millis(2100),
        "{span:?}"
    );
}

#[test]
fn sigint_sends_close_1000_and_exits_0() {
    // A plain tungstenite server, to see exactly what the client sends.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream.set_read_timeout(Some(STEP)).unwrap();
        let mut ws = tungstenite::accept(stream).unwrap();
        tx.send(None).unwrap();
        loop {
            match ws.read() {
                Ok(Message::Close(frame)) => {
                    tx.send(frame.map(|f| u16::from(f.code))).unwrap();
                    // tungstenite answers the Close on the next flush.
                    let _ = ws.flush();
                    return;
                }
                Ok(_) => {}
                Err(e) => panic!("server read: {e}"),
            }
        }
    });
    let mut c = client(&[&format!("ws://{addr}/")]);
    assert_eq!(rx.recv_timeout(STEP).unwrap(), None, "connected");
    c.err_line("connected to");
    let ok = Command::new("kill")
        .args(["-INT", &c.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    assert_eq!(rx.recv_timeout(STEP).unwrap(), Some(1000));
    assert_eq!(c.exit_code(), 0);
}

#[test]
fn server_close_codes_decide_the_exit_code() {
    let server = start(config().max_message_bytes(10));
    let url = format!("ws://{}/echo", server.local_addr());
    let mut c = client(&[&url]);
    c.err_line("connected to");
    c.say("this line is longer than ten bytes");
    assert!(c.err_line("server closed").contains("1009"));
    assert_eq!(c.exit_code(), 3);

    let server = start(config());
    let mut c = client(&[&format!("ws://{}/ws", server.local_addr())]);
    c.err_line("connected to");
    drop(server); // shutdown: 1001
    assert!(c.err_line("server closed").contains("1001"));
    assert_eq!(c.exit_code(), 0);
}

#[test]
fn failures_are_one_clear_line_and_exit_1() {
    // Refused: a port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec![format!("ws://127.0.0.1:{port}/ws")],
            "Connection refused".into(),
        ),
        (vec!["http://localhost/ws".into()], "bad URL".into()),
        (
            vec!["ws://no-such-host.invalid/ws".into()],
            "cannot resolve no-such-host.invalid".into(),
        ),
    ];
    let server = start(config());
    let forbidden = vec![
        "--origin".to_string(),
        "http://evil.example".to_string(),
        format!("ws://{}/ws", server.local_addr()),
    ];
    let cases = cases
        .into_iter()
        .chain([(forbidden, "server answered 403 Forbidden".to_string())]);
    for (args, expected) in cases {
        let out = Command::new(BIN)
            .arg("client")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("wshub client: ") && err.contains(&expected),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn binary_messages_are_summarised_on_stderr() {
    let server = start(config());
    let events = server.events();
    let addr = server.local_addr();
    let c = client(&[&format!("ws://{addr}/ws/b")]);
    joined(&events, 1);
    let mut other = ws(addr, "/ws/b");
    other.send(Message::binary(vec![1u8; 1234])).unwrap();
    let line = c.err_line("binary message");
    assert!(line.contains("1234 bytes"), "{line}");
    other.send(Message::text("after")).unwrap();
    assert_eq!(c.next_out(), "after", "only text reaches stdout");
}

#[test]
fn wshub_token_mints_what_the_server_accepts_and_client_token_sends_it() {
    let dir = temp_dir("token");
    let secret = dir.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let out = Command::new(BIN)
        .args(["token", "--secret-file", secret.to_str().unwrap()])
        .args(["--sub", "alice", "--rooms", "ops,team-*", "--ttl", "5m"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    // The trailing newline is not part of the secret, on either side.
    let server =
        start(config().auth_secret(wshub::auth::Secret::new("0123456789abcdef0123456789abcdef")));
    let events = server.events();
    let addr = server.local_addr();
    let mut alice = client(&[&format!("ws://{addr}/ws/team-x"), "--token", &token]);
    let mut bob = client(&[&format!("ws://{addr}/ws/team-x"), "--token", &token]);
    joined(&events, 2);
    alice.say("signed in");
    assert_eq!(bob.next_out(), "signed in");
    // Without the token, and for a room it does not grant: one clear line.
    let mut stranger = client(&[&format!("ws://{addr}/ws/team-x")]);
    stranger.err_line("401 Unauthorized");
    assert_eq!(stranger.exit_code(), 1);
    let mut elsewhere = client(&[&format!("ws://{addr}/ws/finance"), "--token", &token]);
    elsewhere.err_line("403 Forbidden");
    assert_eq!(elsewhere.exit_code(), 1);
    alice.end_stdin();
    bob.end_stdin();
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn client_compression_negotiates_and_chats() {
    let server = start(config().compression(true));
    let events = server.events();
    let addr = server.local_addr();
    let url = format!("ws://{addr}/ws/z");
    let mut alice = client(&[&url, "--compression"]);
    let mut bob = client(&[&url]);
    joined(&events, 2);
    let long = "compressible words, ".repeat(40);
    alice.say(&long);
    assert_eq!(bob.next_out(), long);
    bob.say(&long);
    assert_eq!(alice.next_out(), long);
    let m = scrape(addr);
    assert_eq!(m.get("wshub_deflate_negotiated_total"), 1.0);
    // Alice's message came compressed; Bob's went to her compressed.
    assert_eq!(m.get("wshub_deflate_messages_total{direction=in}"), 1.0);
    assert_eq!(m.get("wshub_deflate_messages_total{direction=out}"), 1.0);
    alice.end_stdin();
    bob.end_stdin();
}

/// The chat's file message, as the page builds it: `[u16 LE name
/// length][name][bytes]` (laid out here, independently of the binary).
fn file_message(name: &str, bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(name.len()).expect("a short name");
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(bytes);
    out
}
