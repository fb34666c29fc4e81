//! The dialling side of the opening handshake: connect to a `ws://` URL,
//! send the upgrade request (tungstenite's request generator), and check
//! the 101 (accept key, upgrade headers, subprotocol). The response head is
//! read here, under the connect deadline, so that bytes the server sends
//! right after its 101 stay in front of the frame reader instead of being
//! lost. [`Connection`](crate::Connection) runs a session on the result;
//! [`dial`] hands it over raw.
//!
//! May touch: the system's name resolver (to look up the host) and the
//! socket it opens (its options and timeouts); nothing else.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tungstenite::handshake::client::{generate_key, generate_request};
use tungstenite::handshake::derive_accept_key;
use tungstenite::http::{Request, StatusCode, Uri};

use crate::deflate::{self, Agreement};
use crate::error::is_timeout;
use crate::http::has_token;
use crate::{Error, Result};

/// How to dial, for [`dial`] and [`Connection::connect`](crate::Connection::connect).
/// Defaults match the server's [`Config`](crate::Config). Built like
/// `Config`: `ConnectOptions { origin: Some(..), ..ConnectOptions::default() }`.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
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
    /// Offer permessage-deflate; when the server agrees, messages from
    /// [`DEFAULT_COMPRESSION_MIN_BYTES`](crate::defaults::COMPRESSION_MIN_BYTES)
    /// up go compressed and compressed ones from the server are inflated.
    /// Default `false`.
    pub compression: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            origin: None,
            subprotocols: Vec::new(),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            write_timeout: crate::defaults::WRITE_TIMEOUT,
            ping_interval: crate::defaults::PING_INTERVAL,
            pong_timeout: crate::defaults::PONG_TIMEOUT,
            close_timeout: crate::defaults::CLOSE_TIMEOUT,
            max_message_bytes: crate::defaults::MAX_MESSAGE_BYTES,
            send_queue: crate::defaults::SEND_QUEUE,
            compression: false,
        }
    }
}

/// A socket after a successful opening handshake, with whatever the
/// server sent right after its 101 (the start of the first frames).
#[derive(Debug)]
#[non_exhaustive]
pub struct Dialed {
    /// The connected socket, its write timeout set from the options.
    pub stream: TcpStream,
    /// Bytes read past the response head: feed them to the frame reader first.
    pub rest: Vec<u8>,
    /// The subprotocol the server chose, if any (always one that was offered).
    pub subprotocol: Option<String>,
    /// With [`ConnectOptions::compression`]: what the server agreed to.
    pub(crate) deflate: Option<Agreement>,
}

impl Dialed {
    /// Whether the server agreed to permessage-deflate.
    pub fn compressed(&self) -> bool {
        self.deflate.is_some()
    }
}

/// Dials `url` (`ws://host[:port][/path][?query]`) and completes the
/// opening handshake, then hands over the raw socket: for programs that
/// do their own framing, as `wshub bench` does. Most programs want
/// [`Connection::connect`](crate::Connection::connect) instead.
///
/// Fails with [`Error::Url`] for a URL it cannot dial, [`Error::Io`] when
/// no connection can be made, [`Error::Status`] when the server answers
/// with another status than 101, and [`Error::Handshake`] for an answer
/// that is not a valid WebSocket handshake.
pub fn dial(url: &str, options: &ConnectOptions) -> Result<Dialed> {
    let uri = ws_uri(url)?;
    let host = uri
        .host()
        .ok_or_else(|| Error::Url(format!("{url:?}: no host")))?;
    let port = uri.port_u16().unwrap_or(80);
    let deadline = Instant::now() + options.connect_timeout;
    let stream = connect_tcp(
        host.trim_start_matches('[').trim_end_matches(']'),
        port,
        options.connect_timeout,
    )?;
    let _ = stream.set_nodelay(true);
    let key = write_request(&stream, &uri, host, options)?;
    let (status, headers, rest) = read_response(&stream, deadline)?;
    let (subprotocol, deflate) = check_response(status, &headers, &key, options)?;
    Ok(Dialed {
        stream,
        rest,
        subprotocol,
        deflate,
    })
}

/// `url` parsed, if it is a `ws://` URL ([`Error::Url`] otherwise, with a
/// word for `wss://`, which is not supported).
fn ws_uri(url: &str) -> Result<Uri> {
    let uri: Uri = url
        .parse()
        .map_err(|e| Error::Url(format!("{url:?}: {e}")))?;
    match uri.scheme_str() {
        Some("ws") => Ok(uri),
        Some("wss") => Err(Error::Url(format!(
            "{url:?}: wss:// (TLS) is not supported; use ws://"
        ))),
        _ => Err(Error::Url(format!(
            "{url:?}: expected ws://host[:port]/path"
        ))),
    }
}

/// Writes the upgrade request for `uri` (on `host`) with what `options`
/// ask for, under the write timeout (set here for good), and returns the
/// `Sec-WebSocket-Key` it sent, which the 101 must answer.
fn write_request(
    stream: &TcpStream,
    uri: &Uri,
    host: &str,
    options: &ConnectOptions,
) -> Result<String> {
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
    if options.compression {
        request = request.header("Sec-WebSocket-Extensions", deflate::offer());
    }
    let request = request
        .body(())
        .map_err(|e| Error::Url(format!("bad request header: {e}")))?;
    let (bytes, key) = generate_request(request)?;
    stream.set_write_timeout(Some(options.write_timeout))?;
    (&*stream).write_all(&bytes)?;
    Ok(key)
}

/// Checks the server's answer to the request that sent `key`: a 101 with
/// the upgrade headers and the right accept, a subprotocol only if one
/// was offered, an extension only if compression was offered. Returns the
/// subprotocol and the deflate agreement.
fn check_response(
    status: StatusCode,
    headers: &Headers,
    key: &str,
    options: &ConnectOptions,
) -> Result<(Option<String>, Option<Agreement>)> {
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(Error::Status(status.as_u16()));
    }
    let accept = headers.get("sec-websocket-accept").map(|v| v.as_bytes());
    if !has_token(headers, "upgrade", "websocket")
        || !has_token(headers, "connection", "upgrade")
        || accept != Some(derive_accept_key(key.as_bytes()).as_bytes())
    {
        return Err(Error::Handshake(
            "101 without a valid WebSocket accept".into(),
        ));
    }
    let subprotocol = headers
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(p) = &subprotocol
        && !options.subprotocols.contains(p)
    {
        return Err(Error::Handshake(format!(
            "server chose subprotocol {p:?}, which was not offered"
        )));
    }
    let deflate = deflate::accept(headers).map_err(Error::Handshake)?;
    if deflate.is_some() && !options.compression {
        return Err(Error::Handshake(
            "server answered with an extension that was not offered".into(),
        ));
    }
    Ok((subprotocol, deflate))
}

/// Connects to the first address of `host` that answers.
fn connect_tcp(host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
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
            return Err(Error::Handshake(
                "no response to the upgrade in time".into(),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = match (&*stream).read(&mut chunk) {
            Ok(0) => {
                return Err(Error::Handshake(
                    "connection closed during the handshake".into(),
                ));
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if is_timeout(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut raw = [httparse::EMPTY_HEADER; crate::http::MAX_HEADERS];
        let mut response = httparse::Response::new(&mut raw);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let status = StatusCode::from_u16(response.code.unwrap_or(0))
                    .map_err(|_| Error::Handshake("invalid status code".into()))?;
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
                return Err(Error::Handshake("response head too large".into()));
            }
            Err(e) => return Err(Error::Handshake(format!("malformed response: {e}"))),
        }
    }
}
