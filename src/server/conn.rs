//! One accepted connection's HTTP life, on its own thread: read request
//! heads under the deadline and size limit, keep the connection alive
//! between requests, serve static files and `/limits.json`, refuse what is
//! malformed, and hand WebSocket paths to `upgrade`.
//!
//! May touch: this connection's socket (through its `Wire`), the assets,
//! the configuration. Knows nothing of the hub.

use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use log::{debug, info};
use tungstenite::http::{Method, Request, StatusCode};

use super::budget::Registered;
use super::relay::Session;
use super::shared::Shared;
use crate::Config;
use crate::auth::{Access, Grant};
use crate::http::{self, HeadError, Rejection, Route};
use crate::id::ClientId;
use crate::presence;
use crate::server::handshake;
use crate::session::wire::Wire;

/// One accepted connection, on its own thread.
pub(super) struct Conn {
    pub(super) shared: Arc<Shared>,
    pub(super) wire: Arc<Wire>,
    pub(super) id: ClientId,
    pub(super) peer: SocketAddr,
    /// Once upgraded with a token: its subject.
    pub(super) subject: Option<Arc<str>>,
}

impl Conn {
    pub(super) fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Serves HTTP requests until the connection closes or upgrades; an
    /// upgrade returns the session's reader, for the caller to run on
    /// this thread once the HTTP path's stack frames are gone (not
    /// inlined: a stack page the handshake touches stays resident for the
    /// client's life, so the read loop must not run below them).
    #[inline(never)]
    pub(super) fn serve(self, registered: Registered) -> Option<Session> {
        let mut buf = Vec::new();
        let mut first = true;
        loop {
            let head = http::read_head(
                self.wire.stream(),
                &mut buf,
                self.config().head_timeout,
                self.config().max_head_bytes,
            );
            let (request, head_len) = match head {
                Ok(head) => head,
                Err(HeadError::Closed) => return None,
                Err(HeadError::Timeout { partial: false }) => {
                    if first {
                        info!(
                            client = self.id.0, peer:% = self.peer;
                            "{} ({}): no request within {:?}, closing",
                            self.id,
                            self.peer,
                            self.config().head_timeout
                        );
                    }
                    return None;
                }
                Err(HeadError::Timeout { partial: true }) => {
                    let rejection = Rejection::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request head not completed in time",
                    );
                    self.refuse(&rejection, false);
                    return None;
                }
                Err(HeadError::Rejected(rejection)) => {
                    self.refuse(&rejection, false);
                    return None;
                }
                Err(HeadError::Io(e)) => {
                    debug!("{} ({}): {e}", self.id, self.peer);
                    return None;
                }
            };
            first = false;
            let rest = buf.split_off(head_len);
            let head_only = request.method() == Method::HEAD;
            match http::route(&request) {
                Err(rejection) => {
                    self.refuse(&rejection, head_only);
                    return None;
                }
                // The head buffer is not needed for the connection's life.
                Ok(Route::Hub(room)) => {
                    drop(buf);
                    return self.upgrade(request, Some(room.into()), rest, registered);
                }
                Ok(Route::Echo) => {
                    drop(buf);
                    return self.upgrade(request, None, rest, registered);
                }
                Ok(Route::Api) => match self.serve_api(&request, rest) {
                    Some(rest) => buf = rest,
                    None => return None,
                },
                Ok(route) => {
                    if !self.answer(route, &request, head_only) {
                        return None;
                    }
                    buf = rest;
                }
            }
        }
    }

    /// Answers a plain HTTP request (no upgrade, no body); whether the
    /// connection stays open.
    fn answer(&self, route: Route, request: &Request<()>, head_only: bool) -> bool {
        match route {
            Route::File(path) => self.serve_file(request, &path, head_only),
            Route::Health => self.serve_health(request, head_only),
            Route::Metrics => self.serve_metrics(request, head_only),
            Route::Rooms(room) => self.serve_rooms(request, room, head_only),
            Route::Hub(_) | Route::Echo | Route::Api => false,
        }
    }

    /// Refuses the request with `rejection` (counted) and closes.
    pub(super) fn refuse(&self, rejection: &Rejection, head_only: bool) {
        self.shared
            .metrics
            .http_refused(rejection.status.as_u16(), false);
        self.refuse_uncounted(rejection, head_only);
    }

    pub(super) fn refuse_uncounted(&self, rejection: &Rejection, head_only: bool) {
        info!(
            client = self.id.0, peer:% = self.peer, status = rejection.status.as_u16();
            "{} ({}): {} {}",
            self.id,
            self.peer,
            rejection.status.as_u16(),
            rejection.reason
        );
        if let Err(e) = http::reject(self.wire.stream(), rejection, head_only) {
            debug!(
                "{} ({}): writing {}: {e}",
                self.id,
                self.peer,
                rejection.status.as_u16()
            );
        }
        // Let the response reach the peer before the socket closes.
        self.wire.shutdown(Shutdown::Write);
    }

    /// The access decision for `request` asking for `room` (see `auth`),
    /// as a grant or the refusal to send.
    pub(super) fn authorize(
        &self,
        request: &Request<()>,
        room: Option<&str>,
    ) -> Result<Grant, Rejection> {
        match self.shared.gate.check(request, self.peer, room) {
            Access::Allow(grant) => Ok(grant),
            Access::Refuse { status, reason } => {
                let status = StatusCode::from_u16(status)
                    .ok()
                    .filter(|s| s.is_client_error() || s.is_server_error())
                    .unwrap_or(StatusCode::FORBIDDEN);
                let rejection = Rejection::new(status, reason);
                Err(if status == StatusCode::UNAUTHORIZED {
                    rejection.with_header("WWW-Authenticate", "Bearer")
                } else {
                    rejection
                })
            }
        }
    }

    /// With `protect_admin`: whether `/rooms` or `/metrics` may be
    /// answered (refused and closed otherwise).
    fn admin_allowed(&self, request: &Request<()>, room: Option<&str>, head_only: bool) -> bool {
        if !self.config().protect_admin {
            return true;
        }
        match self.authorize(request, room) {
            Ok(_) => true,
            Err(rejection) => {
                self.refuse(&rejection, head_only);
                false
            }
        }
    }

    /// `GET /rooms` and `/rooms/{room}`, answered by the hub, under the
    /// page's origin policy; returns whether the connection stays open.
    fn serve_rooms(&self, request: &Request<()>, room: Option<String>, head_only: bool) -> bool {
        if let Err(rejection) =
            handshake::check_origin(request, &self.shared.policy.allowed_origins)
        {
            self.refuse(&rejection, head_only);
            return false;
        }
        if !self.admin_allowed(request, room.as_deref(), head_only) {
            return false;
        }
        let handle = super::Handle {
            shared: self.shared.clone(),
        };
        let answer = match room {
            None => handle.rooms().ok().map(|r| Some(presence::rooms_json(&r))),
            Some(room) => handle
                .room(&room)
                .ok()
                .map(|info| info.map(|i| i.to_json())),
        };
        let body = match answer {
            Some(Some(body)) => body,
            Some(None) => {
                let rejection = Rejection::new(
                    StatusCode::NOT_FOUND,
                    format!("no room {}", request.uri().path()),
                );
                self.refuse(&rejection, head_only);
                return false;
            }
            None => {
                let rejection =
                    Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "the hub did not answer");
                self.refuse(&rejection, head_only);
                return false;
            }
        };
        self.respond_json(request, StatusCode::OK, &body, head_only)
    }

    /// `GET /healthz`: 200 while accepting, 503 once shutdown has begun
    /// (so that a load balancer drains this instance); with Redis, the body
    /// says whether the bridge is connected (an instance without it still
    /// serves its own clients, so it stays 200).
    fn serve_health(&self, request: &Request<()>, head_only: bool) -> bool {
        let draining = self.shared.draining.load(Ordering::SeqCst);
        let redis = self.shared.redis_connected();
        let body = serde_json::json!({
            "status": if draining { "draining" } else { "ok" },
            "redis": redis.map(|up| if up { "connected" } else { "disconnected" }),
        })
        .to_string();
        let status = if draining {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        self.respond_json(request, status, &body, head_only)
    }

    /// `GET /metrics`, in the Prometheus text format; returns whether the
    /// connection stays open.
    fn serve_metrics(&self, request: &Request<()>, head_only: bool) -> bool {
        if !self.admin_allowed(request, None, head_only) {
            return false;
        }
        let body = self.shared.render_metrics();
        let answer = (StatusCode::OK, crate::metrics::CONTENT_TYPE);
        self.respond_fresh(request, answer, &body, head_only)
    }

    /// A JSON answer; whether the connection stays open (not after a 503).
    fn respond_json(
        &self,
        request: &Request<()>,
        status: StatusCode,
        body: &str,
        head_only: bool,
    ) -> bool {
        self.respond_fresh(request, (status, "application/json"), body, head_only)
    }

    /// A generated answer of `(status, content type)`, not to be cached;
    /// whether the connection stays open (only after a success).
    fn respond_fresh(
        &self,
        request: &Request<()>,
        (status, content_type): (StatusCode, &str),
        body: &str,
        head_only: bool,
    ) -> bool {
        let keep = http::keep_alive(request) && status.is_success();
        let headers = [
            ("Content-Type", content_type),
            ("Cache-Control", "no-cache"),
        ];
        http::respond(
            self.wire.stream(),
            status,
            &headers,
            body.as_bytes(),
            head_only,
            keep,
        )
        .is_ok()
            && keep
    }

    /// Serves one file; returns whether the connection stays open.
    fn serve_file(&self, request: &Request<()>, path: &str, head_only: bool) -> bool {
        if handshake::is_upgrade(request) {
            let rejection = Rejection::new(
                StatusCode::NOT_FOUND,
                format!("no WebSocket endpoint at {}", request.uri().path()),
            );
            self.refuse(&rejection, head_only);
            return false;
        }
        // The page asks for the limits so it can refuse a file before sending it.
        if path == "limits.json" {
            let body = format!(
                "{{\"maxMessageBytes\":{}}}",
                self.config().max_message_bytes
            );
            return self.respond_json(request, StatusCode::OK, &body, head_only);
        }
        let Some(asset) = self.shared.assets.get(path) else {
            self.refuse(
                &Rejection::new(
                    StatusCode::NOT_FOUND,
                    format!("{} not found", request.uri().path()),
                ),
                head_only,
            );
            return false;
        };
        let keep = http::keep_alive(request);
        let headers = [
            ("Content-Type", asset.content_type.as_str()),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
        ];
        debug!("{} ({}): 200 {}", self.id, self.peer, request.uri().path());
        match http::respond(
            self.wire.stream(),
            StatusCode::OK,
            &headers,
            &asset.body,
            head_only,
            keep,
        ) {
            Ok(()) => keep,
            Err(e) => {
                debug!("{} ({}): {e}", self.id, self.peer);
                false
            }
        }
    }
}
