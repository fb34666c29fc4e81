//! HTTP/1.1 front: reading a request head under a deadline and a size limit,
//! parsing it (httparse), routing it, and writing plain responses.
//!
//! Everything here works on one connection's socket and a byte buffer; it
//! knows nothing of the hub or of WebSocket framing. [`parse_head`] and
//! [`route`] are pure functions so that they can be fuzzed: any byte string
//! gives either a request, "need more bytes", or a 4xx [`Rejection`].

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::http::{self, HeaderName, HeaderValue, Method, Request, StatusCode};

use crate::error::is_timeout;

/// Most headers a request may carry; more is answered with 431.
pub const MAX_HEADERS: usize = 64;

/// A request refused before any WebSocket or file work: the status to send,
/// extra headers, and a one-line reason for the body and the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// The HTTP status to answer with (always 4xx or 5xx).
    pub status: StatusCode,
    /// Extra response headers, e.g. `Allow` on 405.
    pub headers: Vec<(&'static str, String)>,
    /// Why, in a few words.
    pub reason: String,
}

impl Rejection {
    /// A rejection with no extra headers.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Rejection {
            status,
            headers: Vec::new(),
            reason: reason.into(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A file: the decoded path below the static root, without leading `/`.
    File(String),
    /// The chat hub, in this room (`""` is the lobby at `/ws`).
    Hub(String),
    /// The echo endpoint.
    Echo,
    /// `GET /rooms` (`None`) or `GET /rooms/{room}`: who is where.
    Rooms(Option<String>),
    /// `GET /healthz`: 200 while accepting, 503 once draining.
    Health,
    /// `GET /metrics`: the Prometheus exposition.
    Metrics,
    /// The server API: any method on a path under `/api/`.
    Api,
}

/// Parses a request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete, `Ok(Some((request,
/// head_len)))` once it is complete, and a 4xx [`Rejection`] for anything
/// malformed or past `max_head` bytes.
pub fn parse_head(buf: &[u8], max_head: usize) -> Result<Option<(Request<()>, usize)>, Rejection> {
    // On the heap: 2 KiB of stack would stay resident in every reader thread.
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let status = match parsed.parse(buf) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Rejection::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ));
        }
        Err(e) => {
            return Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                format!("malformed request: {e}"),
            ));
        }
    };
    let head_len = match status {
        httparse::Status::Complete(n) if n <= max_head => n,
        httparse::Status::Complete(_) => return Err(too_large()),
        httparse::Status::Partial if buf.len() >= max_head => return Err(too_large()),
        httparse::Status::Partial => return Ok(None),
    };
    let bad = |what: &str| Rejection::new(StatusCode::BAD_REQUEST, what.to_string());
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| bad("bad method"))?;
    let version = match parsed.version {
        Some(0) => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    };
    let target = parsed.path.unwrap_or_default();
    if !target.starts_with('/') {
        return Err(bad("request target must be an absolute path"));
    }
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .version(version);
    let Some(map) = builder.headers_mut() else {
        return Err(bad("bad request target"));
    };
    for header in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| bad("bad header name"))?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| bad("bad header value"))?;
        map.append(name, value);
    }
    let request = builder.body(()).map_err(|_| bad("bad request target"))?;
    Ok(Some((request, head_len)))
}

fn too_large() -> Rejection {
    Rejection::new(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request head too large",
    )
}

/// Decides where a request goes, or why it is refused.
///
/// Only the path decides the route; whether a WebSocket request really is an
/// upgrade is checked by the handshake. `GET` and `HEAD` are the only
/// methods, but for the server API (`/api/…`), which decides its own.
pub fn route(request: &Request<()>) -> Result<Route, Rejection> {
    if request.uri().path().starts_with("/api/") {
        return Ok(Route::Api);
    }
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return Err(Rejection::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed"),
        )
        .with_header("Allow", "GET, HEAD"));
    }
    let path = request.uri().path();
    if path == "/ws" {
        return Ok(Route::Hub(String::new()));
    }
    if let Some(room) = path.strip_prefix("/ws/") {
        return if valid_room(room) {
            Ok(Route::Hub(room.to_string()))
        } else {
            Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "room names are 1-64 of A-Z a-z 0-9 _ . -",
            ))
        };
    }
    if path == "/echo" {
        return Ok(Route::Echo);
    }
    if path == "/rooms" {
        return Ok(Route::Rooms(None));
    }
    if path == "/healthz" {
        return Ok(Route::Health);
    }
    if path == "/metrics" {
        return Ok(Route::Metrics);
    }
    if let Some(room) = path.strip_prefix("/rooms/") {
        return if valid_room(room) {
            Ok(Route::Rooms(Some(room.to_string())))
        } else {
            Err(Rejection::new(
                StatusCode::BAD_REQUEST,
                "room names are 1-64 of A-Z a-z 0-9 _ . -",
            ))
        };
    }
    let decoded = percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| Rejection::new(StatusCode::BAD_REQUEST, "path is not UTF-8"))?;
    let mut clean = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                return Err(Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "path escapes the root",
                ));
            }
            s if s.contains(['\\', '\0']) => {
                return Err(Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "bad character in path",
                ));
            }
            s => clean.push(s),
        }
    }
    let mut file = clean.join("/");
    if file.is_empty() || decoded.ends_with('/') {
        if !file.is_empty() {
            file.push('/');
        }
        file.push_str("index.html");
    }
    Ok(Route::File(file))
}

/// True for a valid room name: 1–64 of `A-Z a-z 0-9 _ . -`.
pub fn valid_room(room: &str) -> bool {
    (1..=64).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Why a head could not be read.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// The peer closed before sending a byte of a new request.
    Closed,
    /// The deadline passed; `partial` says whether some bytes had arrived.
    Timeout { partial: bool },
    /// The bytes are not a request we accept.
    Rejected(Rejection),
    /// The socket failed.
    Io(io::Error),
}

/// Reads one request head from `stream` into `buf` (which may already hold
/// bytes left over from a previous request), within `timeout` in total.
/// On success the head's bytes are still at the start of `buf`.
pub(crate) fn read_head(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    timeout: Duration,
    max_head: usize,
) -> Result<(Request<()>, usize), HeadError> {
    let deadline = Instant::now() + timeout;
    let mut fresh = true;
    loop {
        // Re-parse only when a line may have ended: a byte-at-a-time sender
        // must not cost a full parse per byte.
        if !buf.is_empty() && fresh {
            match parse_head(buf, max_head) {
                Ok(Some(done)) => return Ok(done),
                Ok(None) => {}
                Err(rejection) => return Err(HeadError::Rejected(rejection)),
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(HeadError::Timeout {
                partial: !buf.is_empty(),
            });
        }
        stream
            .set_read_timeout(Some(deadline - now))
            .map_err(HeadError::Io)?;
        // Straight into `buf` (no stack buffer: this thread's stack pages
        // stay resident for the life of the connection).
        let len = buf.len();
        let room = (max_head - len.min(max_head)).clamp(1, 1024);
        buf.resize(len + room, 0);
        let read = (&*stream).read(&mut buf[len..]);
        buf.truncate(len + *read.as_ref().unwrap_or(&0));
        match read {
            Ok(0) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(0) => {
                return Err(HeadError::Rejected(Rejection::new(
                    StatusCode::BAD_REQUEST,
                    "connection closed mid-head",
                )));
            }
            Ok(n) => fresh = buf[len..len + n].contains(&b'\n'),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return Err(HeadError::Timeout {
                    partial: !buf.is_empty(),
                });
            }
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// Writes a complete response. `body` is omitted (but still counted in
/// `Content-Length`) when `head_only`, as HEAD requires.
pub(crate) fn respond(
    mut out: impl Write,
    status: StatusCode,
    headers: &[(&str, &str)],
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    if head_only || body.is_empty() {
        out.write_all(head.as_bytes())?;
    } else {
        let mut joined = head.into_bytes();
        joined.extend_from_slice(body);
        out.write_all(&joined)?;
    }
    out.flush()
}

/// Writes a rejection as a plain-text response and asks for the connection
/// to be closed (after a malformed request the stream cannot be trusted).
pub(crate) fn reject(out: impl Write, rejection: &Rejection, head_only: bool) -> io::Result<()> {
    let mut headers: Vec<(&str, &str)> = vec![("Content-Type", "text/plain; charset=utf-8")];
    headers.extend(rejection.headers.iter().map(|(n, v)| (*n, v.as_str())));
    let body = format!(
        "{} {}: {}\n",
        rejection.status.as_u16(),
        rejection.status.canonical_reason().unwrap_or(""),
        rejection.reason
    );
    respond(
        out,
        rejection.status,
        &headers,
        body.as_bytes(),
        head_only,
        false,
    )
}

/// True when the client asked to keep the connection open after this
/// request: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only with
/// `Connection: keep-alive`. A request with a body is never kept, since the
/// body is not read.
pub(crate) fn keep_alive(request: &Request<()>) -> bool {
    let has_body = request
        .headers()
        .contains_key(http::header::TRANSFER_ENCODING)
        || request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    !has_body && wants_keep_alive(request)
}

/// Whether the client asks to keep the connection open (HTTP/1.1's
/// default, HTTP/1.0's `keep-alive`), once any body has been read.
pub(crate) fn wants_keep_alive(request: &Request<()>) -> bool {
    let tokens = header_tokens(request, "connection");
    if request.version() == http::Version::HTTP_10 {
        tokens.iter().any(|t| t.eq_ignore_ascii_case("keep-alive"))
    } else {
        !tokens.iter().any(|t| t.eq_ignore_ascii_case("close"))
    }
}

/// The comma-separated tokens of every `name` header, trimmed.
pub(crate) fn header_tokens<'a>(request: &'a Request<()>, name: &str) -> Vec<&'a str> {
    header_tokens_of(request.headers(), name)
}

/// True when a `name` header of `headers` lists `token` (ASCII case
/// ignored): `has_token(h, "upgrade", "websocket")`.
pub(crate) fn has_token(headers: &http::HeaderMap, name: &str, token: &str) -> bool {
    header_tokens_of(headers, name)
        .iter()
        .any(|t| t.eq_ignore_ascii_case(token))
}

/// The comma-separated tokens of every `name` header in `headers`, trimmed.
pub(crate) fn header_tokens_of<'a>(headers: &'a http::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(raw: &str) -> Request<()> {
        parse_head(raw.as_bytes(), 8192).unwrap().unwrap().0
    }

    #[test]
    fn partial_then_complete() {
        assert!(matches!(
            parse_head(b"GET / HTTP/1.1\r\nHost: a\r\n", 8192),
            Ok(None)
        ));
        let (r, n) = parse_head(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nrest", 8192)
            .unwrap()
            .unwrap();
        assert_eq!(r.uri().path(), "/x");
        assert_eq!(n, 28);
    }

    #[test]
    fn oversized_head_is_431() {
        let mut raw = b"GET / HTTP/1.1\r\nX: ".to_vec();
        raw.resize(9000, b'a');
        assert_eq!(parse_head(&raw, 8192).unwrap_err().status, 431);
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(&req("GET /ws HTTP/1.1\r\n\r\n")),
            Ok(Route::Hub(String::new()))
        );
        assert_eq!(
            route(&req("GET /ws/a.b-c_1?x=1 HTTP/1.1\r\n\r\n")),
            Ok(Route::Hub("a.b-c_1".into()))
        );
        assert_eq!(
            route(&req("GET /ws/a%20b HTTP/1.1\r\n\r\n"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            route(&req("GET /ws/ HTTP/1.1\r\n\r\n")).unwrap_err().status,
            400
        );
        let long = format!("GET /ws/{} HTTP/1.1\r\n\r\n", "a".repeat(65));
        assert_eq!(route(&req(&long)).unwrap_err().status, 400);
        assert_eq!(route(&req("GET /echo HTTP/1.1\r\n\r\n")), Ok(Route::Echo));
        assert_eq!(
            route(&req("GET /rooms HTTP/1.1\r\n\r\n")),
            Ok(Route::Rooms(None))
        );
        assert_eq!(
            route(&req("GET /rooms/ops HTTP/1.1\r\n\r\n")),
            Ok(Route::Rooms(Some("ops".into())))
        );
        assert_eq!(
            route(&req("GET /?room=x HTTP/1.1\r\n\r\n")),
            Ok(Route::File("index.html".into()))
        );
        assert_eq!(
            route(&req("HEAD /a/b.css HTTP/1.1\r\n\r\n")),
            Ok(Route::File("a/b.css".into()))
        );
        assert_eq!(
            route(&req("GET /%2e%2e/etc/passwd HTTP/1.1\r\n\r\n"))
                .unwrap_err()
                .status,
            400
        );
        let post = route(&req("POST / HTTP/1.1\r\n\r\n")).unwrap_err();
        assert_eq!(post.status, 405);
        assert_eq!(post.headers, vec![("Allow", "GET, HEAD".to_string())]);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(keep_alive(&req("GET / HTTP/1.1\r\n\r\n")));
        assert!(!keep_alive(&req(
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n"
        )));
        assert!(!keep_alive(&req("GET / HTTP/1.0\r\n\r\n")));
        assert!(keep_alive(&req(
            "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
        )));
        assert!(!keep_alive(&req(
            "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"
        )));
    }
}
