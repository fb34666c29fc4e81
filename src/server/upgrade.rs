//! The WebSocket upgrade of one connection (gorilla's `serveWs`): check
//! the handshake, take a client slot (and the thread its writer will run
//! on), write the 101, register with the hub, start the session's writer
//! and go on, on this same thread, as the session's reader, with the
//! client's target (`relay`: the hub, or echo). So an upgrade starts one
//! thread, not two; the request head is dropped before the session runs.
//!
//! May touch: this connection's socket, the hub's inbox, `Shared`'s
//! accounting (through `budget`'s guards).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, info};
use tungstenite::http::{HeaderValue, Request, Response, StatusCode, header};
use tungstenite::protocol::{Role, WebSocketContext};

use super::budget::{Admission, Full, Registered};
use super::conn::Conn;
use super::handshake;
use super::relay::{Chat, Echo, RateLimit, Report, Session};
use crate::auth::Grant;
use crate::deflate::{self, Inflater};
use crate::http::Rejection;
use crate::hub::HubMsg;
use crate::hub::member::{Join, Member};
use crate::id::ClientId;
use crate::presence;
use crate::rate::Bucket;
use crate::session::close::Close;
use crate::session::outbox::{self, Outbox};
use crate::session::{self, Parts, Target, Timing};

impl Conn {
    /// Refuses the upgrade (counted as a refused handshake). A 503 is a
    /// refusal at the ceiling: logged once a second with the others
    /// (`Shared::refused`), not once per connection.
    fn refuse_upgrade(&self, rejection: &Rejection) {
        let status = rejection.status.as_u16();
        self.shared.metrics.http_refused(status, true);
        if rejection.status != StatusCode::SERVICE_UNAVAILABLE {
            return self.refuse_uncounted(rejection, false);
        }
        debug!("{} ({}): {status} {}", self.id, self.peer, rejection.reason);
        self.shared.refused(&rejection.reason);
        if let Err(e) = crate::http::reject(self.wire.stream(), rejection, false) {
            debug!("{} ({}): writing {status}: {e}", self.id, self.peer);
        }
        // Let the response reach the peer before the socket closes.
        self.wire.shutdown(std::net::Shutdown::Write);
    }

    /// Completes the handshake and prepares the client's writer; returns
    /// the reader to run on this thread until the client leaves (`None`
    /// when the upgrade was refused or the client is gone). `room: None`
    /// is the echo endpoint.
    pub(super) fn upgrade(
        mut self,
        request: Request<()>,
        room: Option<Arc<str>>,
        rest: Vec<u8>,
        registered: Registered,
    ) -> Option<Session> {
        let accepted = match self.accept(&request, room.as_deref()) {
            Ok(accepted) => accepted,
            Err(rejection) => {
                self.refuse_upgrade(&rejection);
                return None;
            }
        };
        // Headers are done with; what follows lives as long as the client.
        drop(request);
        self.subject = accepted.grant.subject.as_deref().map(Into::into);
        let admission = match self.admit(room.is_none()) {
            Ok(admission) => admission,
            Err(rejection) => {
                self.refuse_upgrade(&rejection);
                return None;
            }
        };
        // A chat client's outbox is bounded and written to directly when
        // it keeps up; an echo client's carries only its Close.
        let mailbox = match room {
            Some(_) => outbox::new(self.shared.bound, None, Some(self.wire.clone())),
            None => outbox::new(outbox::Bound::NONE, None, None),
        };
        let Accepted {
            grant,
            response,
            deflate,
            join,
        } = accepted;
        if !self.register_and_answer(&room, join, &mailbox, response, deflate) {
            return None;
        }
        let reader = self.reader_state(deflate, rest);
        let expires = grant.expires.map(|end| {
            let left = end
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            Instant::now() + left
        });
        self.start_session(room, reader, mailbox, expires, (registered, admission))
    }

    /// The checks of the request, in order: access first (a page that
    /// cannot open its socket asks the same URL without the upgrade to
    /// learn why: 401 or 403, not 400), the handshake, permessage-deflate
    /// (when on and offered in a form we can honour; otherwise the
    /// connection goes on uncompressed), and what a chat client asks for.
    fn accept(&self, request: &Request<()>, room: Option<&str>) -> Result<Accepted, Rejection> {
        let grant = self.authorize(request, room)?;
        let mut response = handshake::accept(request, &self.shared.policy)?;
        let deflate = self
            .config()
            .compression
            .then(|| {
                deflate::negotiate(request.headers(), self.config().compression_client_takeover)
            })
            .flatten()
            .and_then(|(agreement, answer)| {
                let value = HeaderValue::from_str(&answer).ok()?;
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_EXTENSIONS, value);
                Some(agreement)
            });
        let join = match room {
            Some(_) => Join {
                sub: grant.subject.as_deref().map(Into::into),
                ..join_of(request, self.id)?
            },
            None => Join::default(),
        };
        Ok(Accepted {
            grant,
            response,
            deflate,
            join,
        })
    }

    /// A client slot, unless the server drains or is full (503 with
    /// `Retry-After` either way).
    fn admit(&self, echo: bool) -> Result<Admission, Rejection> {
        let unavailable = |why: String| {
            Rejection::new(StatusCode::SERVICE_UNAVAILABLE, why).with_header("Retry-After", "5")
        };
        if self.shared.draining.load(Ordering::SeqCst) {
            return Err(unavailable("the server is draining".into()));
        }
        self.shared
            .admit(echo, self.peer.ip())
            .map_err(|full| match full {
                Full::Clients(limit) => format!("at the limit of {limit} clients"),
                Full::Threads(budget) => format!(
                    "at the thread budget of {} (limited by {} = {})",
                    budget.threads, budget.limit, budget.value
                ),
                Full::PerIp(limit) => {
                    format!("at the limit of {limit} connections from this address")
                }
            })
            .map_err(unavailable)
    }

    /// Registers the client with the hub, then writes the 101. The hub
    /// learns of the client before the client learns of the upgrade: a
    /// message sent right after the 101 (by this client's peers, who may
    /// be quicker) must already find it in its room; until the 101 is
    /// out, deliveries (and the room's history) wait in the outbox, and
    /// this thread writes them right after it, so that they need no writer.
    /// `false` when the session must not start (the client is unregistered
    /// again).
    fn register_and_answer(
        &self,
        room: &Option<Arc<str>>,
        join: Join,
        (outbox, mailbox): &(Outbox, outbox::Mailbox),
        response: Response<()>,
        deflate: Option<deflate::Agreement>,
    ) -> bool {
        let member = Member {
            id: self.id,
            room: room.clone(),
            peer: self.peer,
            outbox: outbox.clone(),
            join: Arc::new(join),
        };
        if self.shared.hub.send(HubMsg::Register(member)).is_err() {
            return false;
        }
        let unregister = || {
            let _ = self.shared.hub.send(HubMsg::Unregister(self.id));
            false
        };
        if let Err(e) = handshake::write_response(self.wire.stream(), &response) {
            debug!("{} ({}): writing 101: {e}", self.id, self.peer);
            return unregister();
        }
        drop(response);
        // Before anything queued goes out: frames are chosen as written.
        if let Some(agreement) = deflate {
            self.wire.set_deflate(agreement);
            self.shared.metrics.deflate.negotiated();
        }
        if let Err(e) = mailbox.open(outbox, &self.wire) {
            debug!("{} ({}): writing what was queued: {e}", self.id, self.peer);
            return unregister();
        }
        self.shared.metrics.upgraded();
        // `stopping` is set before the hub is told to shut down, so a
        // registration that queued behind the hub's Shutdown (and will
        // never be seen) always sees it here.
        if self.shared.stopping.load(Ordering::SeqCst) {
            let _ = self.wire.send_close(Some(&Close::ShuttingDown.frame()));
            return unregister();
        }
        let pong_timeout = self.config().pong_timeout;
        if let Err(e) = self.wire.stream().set_read_timeout(Some(pong_timeout)) {
            debug!("{} ({}): {e}", self.id, self.peer);
            return unregister();
        }
        true
    }

    /// The reader's protocol state (boxed: moved into the reader's thread,
    /// it would otherwise be copied through the thread start-up's frames).
    /// With deflate, what came after the head goes through the inflater.
    fn reader_state(&self, deflate: Option<deflate::Agreement>, rest: Vec<u8>) -> ReaderState {
        let config = Some(self.shared.ws_config);
        match deflate {
            Some(agreement) => {
                let mut inflater =
                    Inflater::new(Role::Server, self.config().max_message_bytes, agreement)
                        .counted(self.shared.metrics.deflate.clone());
                inflater.preload(&rest);
                let ctx = WebSocketContext::new(Role::Server, config);
                (Box::new(ctx), Some(Box::new(inflater)))
            }
            None => {
                let ctx = WebSocketContext::from_partially_read(rest, Role::Server, config);
                (Box::new(ctx), None)
            }
        }
    }

    /// Prepares the writer (started now for echo, on demand for chat),
    /// and returns the reader (which feeds the hub, or echoes) to run on
    /// this thread, the connection's: no thread started per session. The
    /// writer takes the thread the admission reserved, and keeps the socket
    /// registered and the slot taken until it is done.
    fn start_session(
        self,
        room: Option<Arc<str>>,
        (ctx, inflater): ReaderState,
        mailbox: (Outbox, outbox::Mailbox),
        expires: Option<Instant>,
        (registered, admission): (Registered, Admission),
    ) -> Option<Session> {
        let (id, peer) = (self.id, self.peer);
        let what = match &room {
            Some(room) if room.is_empty() => "joined the lobby".to_string(),
            Some(room) => format!("joined room {room:?}"),
            None => "opened an echo session".to_string(),
        };
        info!(client = id.0, peer:% = peer, room = room.as_deref(); "{id} ({peer}) {what}");
        let timing = Timing {
            ping_interval: self.config().ping_interval,
            close_timeout: self.config().close_timeout,
            pong_timeout: self.config().pong_timeout,
            message_timeout: self.config().message_timeout,
            expires,
        };
        let writer = admission.writer_thread();
        let on_writer_end = move |problem: Option<String>| {
            drop((registered, admission));
            if let Some(problem) = problem {
                info!(client = id.0, peer:% = peer; "{id} ({peer}): {problem}");
            }
        };
        let parts = Parts {
            wire: self.wire.clone(),
            ctx,
            mailbox,
            memory: Some(self.shared.memory.clone()),
            inflater,
            read_bytes: self.config().read_buffer_bytes,
        };
        let name = format!("wshub-{}", id.0);
        match room {
            Some(_) => {
                let chat = self.chat(room);
                let start = session::WriterStart::Lazy(Box::new(writer), &self.shared.keeper);
                let started =
                    session::start_writer(start, &name, parts, timing, chat, on_writer_end);
                self.ready(started).map(Session::Chat)
            }
            None => {
                let echo = self.echo();
                let start = session::WriterStart::Now(&writer);
                let started =
                    session::start_writer(start, &name, parts, timing, echo, on_writer_end);
                self.ready(started).map(Session::Echo)
            }
        }
    }

    /// The session's reader; or, if its writer could not be started (the
    /// peer has had 1013), `None`, the client unregistered.
    fn ready<T: Target>(
        self,
        started: std::io::Result<session::Reader<T>>,
    ) -> Option<session::Reader<T>> {
        match started {
            Ok(reader) => Some(reader),
            Err(e) => {
                debug!("{} ({}): no thread for its writer: {e}", self.id, self.peer);
                let reason = format!("no thread for a session's writer (closed with 1013): {e}");
                self.shared.refused(&reason);
                let _ = self.shared.hub.send(HubMsg::Unregister(self.id));
                None
            }
        }
    }

    /// What a client's end reports, and its rate limit.
    fn report(&self, room: Option<Arc<str>>) -> (Report, RateLimit) {
        let metrics = self.shared.metrics.clone();
        let report = Report {
            id: self.id,
            peer: self.peer,
            room,
            hub: self.shared.hub.clone(),
            metrics: metrics.clone(),
        };
        let limit = RateLimit {
            bucket: Bucket::new(
                self.config().max_messages_per_second,
                self.config().message_burst,
            ),
            metrics,
        };
        (report, limit)
    }

    /// A chat client's target: the hub.
    fn chat(&self, room: Option<Arc<str>>) -> Chat {
        let (report, limit) = self.report(room);
        Chat {
            id: self.id,
            sub: self.subject.clone(),
            hook: self.config().message_hook.clone(),
            hub: self.shared.hub.clone(),
            memory: self.shared.memory.clone(),
            limit,
            report,
        }
    }

    /// An echo client's target: its own connection.
    fn echo(&self) -> Echo {
        let (report, limit) = self.report(None);
        let deflate = self.wire.deflate().is_some().then(|| {
            (
                self.config().compression_level,
                self.config().compression_min_bytes,
            )
        });
        Echo {
            wire: self.wire.clone(),
            deflate,
            limit,
            report,
        }
    }
}

/// What the request's checks decided.
struct Accepted {
    grant: Grant,
    response: Response<()>,
    deflate: Option<deflate::Agreement>,
    join: Join,
}

/// The reader's context and, with deflate, its inflater.
type ReaderState = (Box<WebSocketContext>, Option<Box<Inflater>>);

/// What a chat client asks for in its query string: `history=K|all`,
/// `presence=1`, `name=…` (1–64 characters, no control characters).
fn join_of(request: &Request<()>, id: ClientId) -> Result<Join, Rejection> {
    let bad = |why: &str| Rejection::new(StatusCode::BAD_REQUEST, why.to_string());
    let mut join = Join {
        name: format!("guest-{}", id.0).into(),
        at: Some(SystemTime::now()),
        ..Join::default()
    };
    let query = request.uri().query().unwrap_or("");
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "history" => {
                join.history = Some(match &*value {
                    "all" => usize::MAX,
                    n => n
                        .parse()
                        .map_err(|_| bad("history is a number of messages or all"))?,
                })
            }
            "presence" => join.presence = matches!(&*value, "1" | "true" | "yes"),
            "name" if presence::valid_name(&value) => join.name = value.as_ref().into(),
            "name" => return Err(bad("names are 1-64 characters, no control characters")),
            _ => {}
        }
    }
    Ok(join)
}
