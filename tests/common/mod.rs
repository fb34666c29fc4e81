//! Helpers shared by the loopback tests: start a server on a free port, dial
//! it with tungstenite's own client (an independent implementation), or
//! speak raw HTTP and raw frames for malformed input.
#![allow(dead_code)]

pub mod api;
pub mod deflate;
pub mod redis;
pub mod tls;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tungstenite::handshake::client::generate_key;
use tungstenite::protocol::frame::coding::{CloseCode, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader, FrameSocket};
use tungstenite::protocol::{CloseFrame, Message, WebSocket};
use wshub::{Config, Server};

/// Every blocking step of a test is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

pub type Ws = WebSocket<TcpStream>;

pub fn config() -> Config {
    Config::default().addr("127.0.0.1:0".parse().unwrap())
}

pub fn start(config: Config) -> Server {
    Server::start(config).expect("server starts")
}

/// Dials `path` with tungstenite's client; reads are bounded by [`STEP`].
pub fn ws(addr: SocketAddr, path: &str) -> Ws {
    try_ws(addr, path, &[]).unwrap_or_else(|e| panic!("upgrade to {path} failed: {e}"))
}

pub fn try_ws(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream.set_write_timeout(Some(STEP)).unwrap();
    let mut request =
        tungstenite::client::IntoClientRequest::into_client_request(format!("ws://{addr}{path}"))
            .unwrap();
    for (n, v) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    tungstenite::client(request, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("handshake interrupted"),
        })
}

/// The next data or close message, skipping pings and pongs.
pub fn next(ws: &mut Ws) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_) | Message::Pong(_)) => {}
            Ok(m) => return m,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Reads until the server's Close; returns its code.
pub fn close_code(ws: &mut Ws) -> Option<CloseCode> {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => return frame.map(|f| f.code),
            Ok(_) => {}
            Err(e) => panic!("expected a Close, got error {e}"),
        }
    }
}

/// Sends raw bytes as one HTTP exchange and returns the whole response
/// (the server closes after errors; for 200s, send `Connection: close`).
pub fn http(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends an upgrade request and returns the response head only (a 101
/// leaves the connection open, so reading to the end would wait).
pub fn handshake(addr: SocketAddr, raw: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

pub fn get(addr: SocketAddr, path: &str, extra: &str) -> String {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\r\n")
            .as_bytes(),
    )
}

/// The JSON body of an HTTP response.
pub fn json_body(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).expect("a body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

pub fn status(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"))
}

pub fn upgrade_head(addr: SocketAddr, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {}\r\n\r\n",
        generate_key()
    )
}

/// A raw upgraded socket, for sending frames tungstenite would refuse to send.
pub fn raw_ws(addr: SocketAddr, path: &str) -> FrameSocket<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(upgrade_head(addr, path).as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    FrameSocket::new(s)
}

/// A frame with full control of header bits; masked as a client must,
/// unless `masked` is false.
pub fn raw_frame(opcode: OpCode, payload: &[u8], fin: bool, masked: bool) -> Frame {
    let header = FrameHeader {
        is_final: fin,
        opcode,
        mask: masked.then_some([1, 2, 3, 4]),
        ..FrameHeader::default()
    };
    Frame::from_payload(header, payload.to_vec().into())
}

/// Reads raw frames until a Close; returns its code (None for no payload or EOF).
pub fn raw_close_code(socket: &mut FrameSocket<TcpStream>) -> Option<u16> {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        match socket.read(None) {
            Ok(Some(frame))
                if frame.header().opcode
                    == OpCode::Control(tungstenite::protocol::frame::coding::Control::Close) =>
            {
                let p = frame.payload();
                return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return None,
        }
    }
    panic!("no Close within {STEP:?}");
}

pub fn text(ws: &mut Ws, s: &str) {
    ws.send(Message::text(s)).unwrap();
}

pub fn close(ws: &mut Ws) {
    let _ = ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }));
    // Drain until the server's reply ends the session.
    while ws.read().is_ok() {}
}

/// Waits (bounded) for a condition that another thread makes true.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `wshub` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wshub");

/// A child process that is killed and reaped however the test ends.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Proc {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

/// The lines `r` produces, as a channel fed by a thread of its own.
pub fn lines(r: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits until `n` clients have joined, using the server's own events.
pub fn joined(events: &wshub::Events, n: usize) {
    let mut seen = 0;
    while seen < n {
        if let wshub::Event::Joined { .. } = events.recv_timeout(STEP).expect("join event") {
            seen += 1;
        }
    }
}

/// `n` clients of `path`, once the hub has seen them all join.
pub fn clients(server: &Server, path: &str, n: usize) -> Vec<Ws> {
    let events = server.events();
    let clients = (0..n).map(|_| ws(server.local_addr(), path)).collect();
    joined(&events, n);
    clients
}

/// A `wshub serve` process on a free loopback port, once it listens.
pub struct Served {
    pub process: Proc,
    pub addr: SocketAddr,
    /// The log lines after the "listening on" one.
    pub log: std::sync::mpsc::Receiver<String>,
    /// The log lines up to and including it.
    pub head: Vec<String>,
}

/// Starts `wshub serve --addr 127.0.0.1:0 ARGS…` with `env` (an empty
/// value removes the variable) and waits (bounded) for its address.
pub fn serve_process(args: &[&str], env: &[(&str, &str)]) -> Served {
    let mut command = std::process::Command::new(BIN);
    command
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    for (name, value) in env {
        if value.is_empty() {
            command.env_remove(name);
        } else {
            command.env(name, value);
        }
    }
    let mut process = Proc(command.spawn().expect("wshub starts"));
    let log = lines(process.stderr.take().expect("stderr"));
    let deadline = Instant::now() + STEP;
    let mut head = Vec::new();
    loop {
        let line = log
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the listening line");
        // A text line, or the message of a JSON one (--log-format json).
        let message = match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(v) => v["message"].as_str().unwrap_or_default().to_string(),
            Err(_) => line.clone(),
        };
        let addr = message
            .split("listening on ")
            .nth(1)
            .map(|a| a.trim().parse());
        head.push(line.clone());
        if let Some(addr) = addr {
            let addr = addr.expect("an address");
            return Served {
                process,
                addr,
                log,
                head,
            };
        }
    }
}

/// One scrape of `GET /metrics`, parsed by a real, independent Prometheus
/// parser (the `openmetrics-parser` crate's text-format grammar, not ours):
/// every sample by `name{label=value,…}` (labels sorted), and every
/// family's type (a counter's family named without its `_total`, as
/// Prometheus's own client libraries name it).
pub struct Scrape {
    pub samples: HashMap<String, f64>,
    pub types: HashMap<String, String>,
}

impl Scrape {
    pub fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in {:?}", self.samples.keys()))
    }
}

pub fn scrape(addr: SocketAddr) -> Scrape {
    let response = get(addr, "/metrics", "");
    assert_eq!(status(&response), 200, "{response}");
    assert!(
        response.contains("Content-Type: text/plain; version=0.0.4"),
        "{response}"
    );
    let body = response.split_once("\r\n\r\n").expect("a body").1;
    parse(body)
}

/// Runs the parser over `body`; panics if it refuses it.
pub fn parse(body: &str) -> Scrape {
    try_parse(body).unwrap_or_else(|e| panic!("the parser refused the exposition: {e}\n{body}"))
}

/// The parser's verdict on `body`: any line it cannot parse, a sample
/// twice, or a family split in two is an error.
pub fn try_parse(body: &str) -> Result<Scrape, String> {
    use openmetrics_parser::{PrometheusType, PrometheusValue, prometheus};

    let exposition = prometheus::parse_prometheus(body).map_err(|e| e.to_string())?;
    let mut samples = HashMap::new();
    let mut types = HashMap::new();
    for (name, family) in &exposition.families {
        let family_name = match family.family_type {
            PrometheusType::Counter => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        types.insert(family_name.to_string(), family.family_type.to_string());
        for sample in family.iter_samples() {
            let value = match &sample.value {
                PrometheusValue::Counter(c) => c.value.as_f64(),
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                other => return Err(format!("{name}: no {other:?} in wshub's exposition")),
            };
            let mut labels: Vec<String> = sample
                .get_labelset()
                .map_err(|e| format!("{name}: {e}"))?
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            labels.sort();
            let key = if labels.is_empty() {
                name.clone()
            } else {
                format!("{name}{{{}}}", labels.join(","))
            };
            if samples.insert(key.clone(), value).is_some() {
                return Err(format!("duplicate sample {key}"));
            }
        }
    }
    Ok(Scrape { samples, types })
}

/// Whether `program` runs here (`program ARG` starts). Without it, a test
/// skips — except under CI (`CI` set, not `false` or `0`), where its
/// absence fails the test, so CI never passes on tests it did not run.
/// A skip is recorded as a file under `target/tmp/skipped/PROGRAM/`,
/// holding `apt_package`, from which `make test` prints its summary
/// (scripts/skipped.sh).
pub fn have(program: &str, arg: &str, apt_package: &str) -> bool {
    let found = Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            !in_ci(),
            "no {program} on PATH, and CI must run this test \
             (`make test-deps` installs it: apt-get install {apt_package})"
        );
        record_skip(program, apt_package);
        eprintln!("skipping: no {program} on PATH (apt-get install {apt_package})");
    }
    found
}

/// Whether this run is CI's, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"))
}

/// Where skips are recorded: `<target>/tmp/skipped/`.
pub const SKIPPED: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/skipped");

/// Notes that the running test skipped for want of `program`: one file
/// per test binary and test, so a test counts once however often it asks.
fn record_skip(program: &str, apt_package: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("unnamed").replace("::", "-");
    let dir = std::path::Path::new(SKIPPED).join(program);
    let file = dir.join(format!("{}-{test}", env!("CARGO_CRATE_NAME")));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, format!("{apt_package}\n")))
        .unwrap_or_else(|e| panic!("recording the skip in {}: {e}", file.display()));
}
