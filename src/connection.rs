//! A thread-safe handle for one client-side WebSocket connection: dial a
//! `ws://` URL, then `send`, `recv` and `close` from any thread.
//!
//! It runs the same reader/writer pair as the server's clients (see
//! [`client`]): the reader delivers messages to a channel
//! that [`Connection::recv`] reads, the writer takes frames from a bounded
//! queue that [`Connection::send`] fills. The opening handshake uses
//! tungstenite's request generator and accept-key derivation; the response
//! head is read here so that bytes the server sends right after its 101 stay
//! in front of the reader instead of being lost.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, bounded, unbounded};
use tungstenite::handshake::client::{generate_key, generate_request};
use tungstenite::handshake::derive_accept_key;
use tungstenite::http::{Request, StatusCode, Uri};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use crate::client::{self, Ending, Load, Out, Signals, Timing, WriterInputs, close_frame};
use crate::http::header_tokens_of;
use crate::wire::{Frame, Wire};
use crate::{Error, Result};

/// How to dial. Defaults match the server's [`Config`](crate::Config).
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `Origin` header to send (none by default, as non-browser clients do).
    pub origin: Option<String>,
    /// Subprotocols to offer, in order of preference.
    pub subprotocols: Vec<String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// Bound on connecting and on the whole handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// Bound on each write. Default 10 s.
    pub write_timeout: Duration,
    /// How often to ping. Default 54 s.
    pub ping_interval: Duration,
    /// Close the connection after this long without a byte from the server.
    /// Default 60 s.
    pub pong_timeout: Duration,
    /// How long to wait for the server's answer to our Close. Default 1 s.
    pub close_timeout: Duration,
    /// Largest message accepted from the server. Default 16 MiB.
    pub max_message_bytes: usize,
    /// Messages `send` may queue before it blocks. Default 256.
    pub send_queue: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            origin: None,
            subprotocols: Vec::new(),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            write_timeout: crate::DEFAULT_WRITE_TIMEOUT,
            ping_interval: crate::DEFAULT_PING_INTERVAL,
            pong_timeout: crate::DEFAULT_PONG_TIMEOUT,
            close_timeout: crate::DEFAULT_CLOSE_TIMEOUT,
            max_message_bytes: crate::DEFAULT_MAX_MESSAGE_BYTES,
            send_queue: crate::DEFAULT_SEND_QUEUE,
        }
    }
}

/// One open WebSocket connection. All methods take `&self`; share it
/// between threads with an `Arc`.
pub struct Connection {
    wire: Arc<Wire>,
    queue: Sender<Out>,
    signals: Arc<Signals>,
    inbox: Receiver<Message>,
    load: Arc<Load>,
    closing: AtomicBool,
    write_timeout: Duration,
    subprotocol: Option<String>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Disconnects once both threads have finished.
    finished: Receiver<()>,
    ending: Arc<Mutex<Option<Ending>>>,
}

impl Connection {
    /// Dials `url` (`ws://host[:port][/path][?query]`) and completes the
    /// opening handshake.
    pub fn connect(url: &str, options: &ClientOptions) -> Result<Connection> {
        let opened = open(url, options)?;
        Connection::start(opened.stream, opened.rest, opened.subprotocol, options)
    }
}

/// A socket after a successful opening handshake, and what followed the
/// response head.
pub(crate) struct Opened {
    pub stream: TcpStream,
    pub rest: Vec<u8>,
    pub subprotocol: Option<String>,
}

/// Dials `url` and completes the opening handshake.
pub(crate) fn open(url: &str, options: &ClientOptions) -> Result<Opened> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::Url(format!("{url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("ws") => {}
        Some("wss") => {
            return Err(Error::Url(format!(
                "{url:?}: wss:// (TLS) is not supported; use ws://"
            )));
        }
        _ => {
            return Err(Error::Url(format!(
                "{url:?}: expected ws://host[:port]/path"
            )));
        }
    }
    let host = uri
        .host()
        .ok_or_else(|| Error::Url(format!("{url:?}: no host")))?;
    let port = uri.port_u16().unwrap_or(80);
    let deadline = Instant::now() + options.connect_timeout;
    let stream = dial(
        host.trim_start_matches('[').trim_end_matches(']'),
        port,
        options.connect_timeout,
    )?;
    let _ = stream.set_nodelay(true);

    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(host);
    let mut request = Request::builder()
        .uri(uri.clone())
        .header("Host", authority)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", generate_key());
    if let Some(origin) = &options.origin {
        request = request.header("Origin", origin);
    }
    if !options.subprotocols.is_empty() {
        request = request.header("Sec-WebSocket-Protocol", options.subprotocols.join(", "));
    }
    for (name, value) in &options.headers {
        request = request.header(name, value);
    }
    let request = request
        .body(())
        .map_err(|e| Error::Url(format!("bad request header: {e}")))?;
    let (bytes, key) = generate_request(request)?;
    stream.set_write_timeout(Some(options.write_timeout))?;
    (&stream).write_all(&bytes)?;

    let (status, headers, rest) = read_response(&stream, deadline)?;
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(Error::Http(format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )));
    }
    let tokens = |name: &str| header_tokens_of(&headers, name);
    let accept = headers.get("sec-websocket-accept").map(|v| v.as_bytes());
    if !tokens("upgrade")
        .iter()
        .any(|t| t.eq_ignore_ascii_case("websocket"))
        || !tokens("connection")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
        || accept != Some(derive_accept_key(key.as_bytes()).as_bytes())
    {
        return Err(Error::Http("101 without a valid WebSocket accept".into()));
    }
    let subprotocol = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(p) = &subprotocol {
        if !options.subprotocols.contains(p) {
            return Err(Error::Http(format!(
                "server chose subprotocol {p:?}, which was not offered"
            )));
        }
    }
    Ok(Opened {
        stream,
        rest,
        subprotocol,
    })
}

impl Connection {
    fn start(
        stream: TcpStream,
        rest: Vec<u8>,
        subprotocol: Option<String>,
        options: &ClientOptions,
    ) -> Result<Connection> {
        stream.set_read_timeout(Some(options.pong_timeout))?;
        let wire = Arc::new(Wire::new(stream, Role::Client, options.write_timeout)?);
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(crate::DEFAULT_READ_BUFFER_BYTES)
            .write_buffer_size(0)
            .max_message_size(Some(options.max_message_bytes))
            .max_frame_size(Some(options.max_message_bytes));
        let mut ctx = WebSocketContext::from_partially_read(rest, Role::Client, Some(ws_config));
        let timing = Timing {
            ping_interval: options.ping_interval,
            close_timeout: options.close_timeout,
        };
        let (queue_tx, queue_rx) = bounded(options.send_queue.max(1));
        let signals = Arc::new(Signals::default());
        // Unbounded: the reader must never block on a slow consumer while
        // owning the only path by which pongs are answered.
        let (inbox_tx, inbox_rx) = unbounded();
        let load = Arc::new(Load::default());
        let ending = Arc::new(Mutex::new(None));
        let (finished_tx, finished_rx) = bounded::<()>(0);
        let writer_finished = finished_tx.clone();

        let inputs = WriterInputs {
            queue: queue_rx,
            signals: signals.clone(),
            load: load.clone(),
        };
        let writer_wire = wire.clone();
        let writer = thread::Builder::new()
            .name("wshub-client-write".into())
            .spawn(move || {
                let _finished = writer_finished;
                if let Some(problem) = client::write_loop(&writer_wire, inputs, timing) {
                    log::debug!("client writer: {problem}");
                }
            })?;
        let reader_wire = wire.clone();
        let reader_ending = ending.clone();
        let reader_queue = queue_tx.clone();
        let reader_signals = signals.clone();
        let reader = thread::Builder::new()
            .name("wshub-client-read".into())
            .spawn(move || {
                let _finished = finished_tx;
                let _exit = reader_signals.on_reader_exit(reader_queue.clone());
                let inbox: Sender<Message> = inbox_tx;
                let end = client::read_loop(&reader_wire, &mut ctx, &reader_queue, timing, |m| {
                    inbox.send(m).is_ok()
                });
                let close = match &end {
                    Ending::PeerClosed(frame) => frame.clone(),
                    Ending::WeClosed(code, reason) => Some(close_frame(*code, reason)),
                    Ending::Dropped(_) => None,
                };
                if let Ok(mut slot) = reader_ending.lock() {
                    *slot = Some(end);
                }
                let _ = inbox.send(Message::Close(close));
            });
        let reader = match reader {
            Ok(reader) => reader,
            Err(e) => {
                wire.shutdown(Shutdown::Both);
                let _ = writer.join();
                return Err(e.into());
            }
        };
        Ok(Connection {
            wire,
            queue: queue_tx,
            signals,
            inbox: inbox_rx,
            load,
            closing: AtomicBool::new(false),
            write_timeout: options.write_timeout,
            subprotocol,
            threads: Mutex::new(vec![reader, writer]),
            finished: finished_rx,
            ending,
        })
    }

    /// Queues a text or binary message; blocks while the send queue is full.
    pub fn send(&self, message: Message) -> Result<()> {
        let frame = Frame::data(Role::Client, &message).ok_or(Error::NotData)?;
        if self.closing.load(Ordering::Acquire) || self.wire.close_sent() {
            return Err(Error::Closed);
        }
        self.load.add(1, frame.len());
        self.queue
            .send(Out::Frame(frame))
            .map_err(|_| Error::Closed)
    }

    /// The next message from the server. The last one is always
    /// `Message::Close` (with the close frame, if there was one); after it,
    /// `Err(Error::Closed)`.
    pub fn recv(&self) -> Result<Message> {
        self.inbox.recv().map_err(|_| Error::Closed)
    }

    /// Like [`recv`](Self::recv), giving `Ok(None)` after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        match self.inbox.recv_timeout(timeout) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }

    /// The channel behind [`recv`](Self::recv), for `select!`.
    pub fn incoming(&self) -> &Receiver<Message> {
        &self.inbox
    }

    /// The subprotocol the server chose, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Starts the close handshake after every message already sent.
    /// Idempotent: later calls (or a close that already happened) do
    /// nothing. Use [`wait`](Self::wait) to see it end.
    pub fn close(&self, code: CloseCode, reason: &str) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let close = close_frame(code, reason);
        let frame = Frame::close(Role::Client, Some(&close));
        // Behind the queued messages; if the queue does not move within a
        // write timeout the writer is stuck, and the Close jumps the queue.
        if let Err(SendTimeoutError::Timeout(_)) = self
            .queue
            .send_timeout(Out::Frame(frame), self.write_timeout)
        {
            self.signals.close(close, &self.queue);
        }
    }

    /// Waits for both threads to finish (after a close, the server's
    /// close, or a dropped connection), at most `timeout`; then forces the
    /// socket shut. Returns how the connection ended, if it has.
    pub fn wait(&self, timeout: Duration) -> Option<Ending> {
        // Nothing is ever sent: this returns when both threads are gone.
        if let Err(RecvTimeoutError::Timeout) = self.finished.recv_timeout(timeout) {
            self.wire.shutdown(Shutdown::Both);
        }
        let threads: Vec<_> = self
            .threads
            .lock()
            .map(|mut t| t.drain(..).collect())
            .unwrap_or_default();
        for t in threads {
            let _ = t.join();
        }
        self.ending.lock().ok().and_then(|e| e.clone())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close(CloseCode::Away, "");
        let _ = self.wait(Duration::from_millis(1500));
    }
}

/// Connects to the first address of `host` that answers.
fn dial(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let addrs: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot resolve {host}: {e}"),
            ))
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => {
                last = Some(std::io::Error::new(
                    e.kind(),
                    format!("cannot connect to {addr}: {e}"),
                ))
            }
        }
    }
    Err(Error::Io(last.unwrap_or_else(|| {
        std::io::Error::other(format!("{host} has no address"))
    })))
}

type Headers = tungstenite::http::HeaderMap;

/// Reads the server's response head; returns status, headers and whatever
/// bytes followed the head.
fn read_response(stream: &TcpStream, deadline: Instant) -> Result<(StatusCode, Headers, Vec<u8>)> {
    const MAX: usize = 16 << 10;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Http("no response to the upgrade in time".into()));
        }
        stream.set_read_timeout(Some(left))?;
        let n = match (&*stream).read(&mut chunk) {
            Ok(0) => return Err(Error::Http("connection closed during the handshake".into())),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut raw = [httparse::EMPTY_HEADER; crate::http::MAX_HEADERS];
        let mut response = httparse::Response::new(&mut raw);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = StatusCode::from_u16(response.code.unwrap_or(0))
                    .map_err(|_| Error::Http("invalid status code".into()))?;
                let mut headers = Headers::new();
                for h in response.headers.iter() {
                    if let (Ok(name), Ok(value)) = (
                        tungstenite::http::HeaderName::from_bytes(h.name.as_bytes()),
                        tungstenite::http::HeaderValue::from_bytes(h.value),
                    ) {
                        headers.append(name, value);
                    }
                }
                return Ok((status, headers, buf.split_off(len)));
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX => {}
            Ok(httparse::Status::Partial) => {
                return Err(Error::Http("response head too large".into()));
            }
            Err(e) => return Err(Error::Http(format!("malformed response: {e}"))),
        }
    }
}
