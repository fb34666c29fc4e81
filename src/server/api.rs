//! A server API request (`/api/…`) on its connection: the key, the body
//! (read up to the message limit, within the message timeout, never past
//! it), the answer written as JSON, the request counted. What each route
//! does is `crate::api`'s.
//!
//! May touch: this connection's socket (through its `Wire`), the metrics.

use std::io::Read;
use std::net::Shutdown;
use std::time::Instant;

use log::debug;
use tungstenite::http::{Request, StatusCode, header};

use super::conn::Conn;
use super::handle::Handle;
use crate::api::{self, Answer, Call};
use crate::error::is_timeout;
use crate::http;

/// How long, and how much, a refused request's unread body is drained.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(1);
const DRAIN_MOST: usize = 1 << 20;

/// Why a request's body could not be had.
enum NoBody {
    /// Answer this, then close.
    Answer(Answer),
    /// The connection failed or timed out: close without an answer.
    Gone,
}

impl Conn {
    /// Answers one `/api/` request. Returns what was read past it (the
    /// start of the next request), or `None` when the connection closes.
    pub(super) fn serve_api(&self, request: &Request<()>, mut rest: Vec<u8>) -> Option<Vec<u8>> {
        let (answer, body_read) = self.api_answer(request, &mut rest);
        let route = answer.route;
        self.shared
            .metrics
            .api_request(route, answer.status.as_u16());
        let keep = body_read && http::wants_keep_alive(request);
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
        ];
        if let Some(allow) = answer.allow {
            headers.push(("Allow", allow));
        }
        let written = http::respond(
            self.wire.stream(),
            answer.status,
            &headers,
            answer.body.as_bytes(),
            false,
            keep,
        );
        debug!(
            client = self.id.0, peer:% = self.peer;
            "{} ({}): {} {} (api {route})",
            self.id, self.peer, request.method(), answer.status.as_u16()
        );
        if written.is_err() || !keep {
            // Let the answer reach the peer before the socket closes.
            self.wire.shutdown(Shutdown::Write);
            if !body_read {
                self.drain_unread();
            }
            return None;
        }
        Some(rest)
    }

    /// After an answer given without reading the body (411, 413, 401…):
    /// reads and drops what the client is still sending, for a moment
    /// and up to a bound, so that closing with unread bytes does not reset
    /// the connection before the client has read the answer (a client
    /// writes its whole body before it reads). Nothing is kept.
    fn drain_unread(&self) {
        let deadline = Instant::now() + DRAIN_FOR;
        // On the heap: this thread goes on as a reader, and a page of
        // stack touched here would stay resident for the client's life.
        let mut sink = vec![0u8; 4096];
        let mut drained = 0;
        let mut stream = self.wire.stream();
        while drained < DRAIN_MOST {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match stream.read(&mut sink) {
                Ok(0) | Err(_) => return,
                Ok(n) => drained += n,
            }
        }
    }

    /// The answer, and whether the request's body was read whole (the
    /// connection can then serve another request).
    fn api_answer(&self, request: &Request<()>, rest: &mut Vec<u8>) -> (Answer, bool) {
        let Some(key) = &self.config().api_key else {
            let why = "the server API is off (serve --api-key-file)";
            return (Answer::error("other", StatusCode::NOT_FOUND, why), false);
        };
        let given = request.headers().get("x-api-key").map(|v| v.as_bytes());
        if !api::key_matches(&key.0, given) {
            let why = "a valid X-API-Key header is required";
            return (Answer::error("other", StatusCode::UNAUTHORIZED, why), false);
        }
        let endpoint = match api::endpoint(request.method(), request.uri().path()) {
            Ok(endpoint) => endpoint,
            Err(answer) => return (answer, false),
        };
        let route = endpoint.route();
        let body = match self.read_body(request, rest, endpoint.takes_body(), route) {
            Ok(body) => body,
            Err(NoBody::Answer(answer)) => return (answer, false),
            Err(NoBody::Gone) => {
                let why = "the request body did not arrive in time";
                return (
                    Answer::error(route, StatusCode::REQUEST_TIMEOUT, why),
                    false,
                );
            }
        };
        let call = Call {
            query: request.uri().query(),
            content_type: request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            body: &body,
        };
        let handle = Handle {
            shared: self.shared.clone(),
        };
        (api::answer(&handle, endpoint, &call), true)
    }

    /// The request's body: `Content-Length` bytes (none for a route that
    /// takes no body and has none), taken from `rest` first. A body over
    /// the message limit is refused (413) from its length alone, unread; a
    /// body without a length (chunked) is 411.
    fn read_body(
        &self,
        request: &Request<()>,
        rest: &mut Vec<u8>,
        wanted: bool,
        route: &'static str,
    ) -> Result<Vec<u8>, NoBody> {
        let headers = request.headers();
        let length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        let chunked = headers.contains_key(header::TRANSFER_ENCODING);
        let length = match (length, chunked) {
            (Some(n), false) => n,
            (None, false) if !wanted => 0,
            _ => {
                let why = "a Content-Length header is required";
                let answer = Answer::error(route, StatusCode::LENGTH_REQUIRED, why);
                return Err(NoBody::Answer(answer));
            }
        };
        if length > self.config().max_message_bytes {
            let why = format!(
                "the body is over the message limit of {} bytes",
                self.config().max_message_bytes
            );
            let answer = Answer::error(route, StatusCode::PAYLOAD_TOO_LARGE, &why);
            return Err(NoBody::Answer(answer));
        }
        self.read_exactly(rest, length)
    }

    /// Takes `length` bytes from `rest`, reading the rest of them from
    /// the socket within the message timeout.
    fn read_exactly(&self, rest: &mut Vec<u8>, length: usize) -> Result<Vec<u8>, NoBody> {
        if rest.len() >= length {
            let after = rest.split_off(length);
            return Ok(std::mem::replace(rest, after));
        }
        let deadline = Instant::now() + self.config().message_timeout;
        let mut filled = rest.len();
        let mut body = std::mem::take(rest);
        body.resize(length, 0);
        let mut stream = self.wire.stream();
        while filled < length {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                return Err(NoBody::Gone);
            }
            match stream.read(&mut body[filled..]) {
                Ok(0) => return Err(NoBody::Gone),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => return Err(NoBody::Gone),
                Err(_) => return Err(NoBody::Gone),
            }
        }
        Ok(body)
    }
}
