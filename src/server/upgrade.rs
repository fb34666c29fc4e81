//! The WebSocket upgrade of one connection (gorilla's `serveWs`): check
//! the handshake, take a client slot, write the 101, register with the hub,
//! and start the session's reader and writer. The connection's HTTP thread
//! ends here: the HTTP and handshake code runs deeper than the read loop,
//! and a stack page once touched stays resident for a thread's life, so
//! on this thread an idle client's reader would hold three pages where a
//! fresh one holds two (4 KiB more per client; glibc returns a finished
//! thread's stack pages).
//!
//! May touch: this connection's socket, the hub's inbox, `Shared`'s
//! accounting (through `budget`'s guards).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use log::{debug, error, info};
use tungstenite::http::{HeaderValue, Request, StatusCode, header};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Message, Role, WebSocketContext};

use super::budget::{Admission, Full, Registered};
use super::conn::Conn;
use crate::deflate::{self, Inflater};
use crate::http::Rejection;
use crate::hub::HubMsg;
use crate::hub::member::{Join, Member};
use crate::id::ClientId;
use crate::metrics::{Metrics, Side};
use crate::presence;
use crate::rate::{Bucket, RATE_LIMIT};
use crate::server::handshake;
use crate::session::outbox::{self, Outbox};
use crate::session::wire::Frame;
use crate::session::{self, Ending, Handlers, Parts, Stop, Timing, close_frame};

impl Conn {
    /// Refuses the upgrade (counted as a refused handshake).
    fn refuse_upgrade(&self, rejection: &Rejection) {
        self.shared
            .metrics
            .http_refused(rejection.status.as_u16(), true);
        self.refuse_uncounted(rejection, false);
    }

    /// Completes the handshake and starts the client's two threads.
    /// `room: None` is the echo endpoint.
    pub(super) fn upgrade(
        self,
        request: Request<()>,
        room: Option<Arc<str>>,
        rest: Vec<u8>,
        registered: Registered,
    ) {
        // Access first: a page that cannot open its socket asks the same
        // URL without the upgrade to learn why (401 or 403, not 400).
        let grant = match self.authorize(&request, room.as_deref()) {
            Ok(grant) => grant,
            Err(rejection) => return self.refuse_upgrade(&rejection),
        };
        let mut response = match handshake::accept(&request, &self.shared.policy) {
            Ok(response) => response,
            Err(rejection) => return self.refuse_upgrade(&rejection),
        };
        // permessage-deflate, when on and offered in a form we can honour;
        // otherwise the connection simply goes on uncompressed.
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
        let join = match &room {
            Some(_) => match join_of(&request, self.id) {
                Ok(join) => join,
                Err(rejection) => return self.refuse_upgrade(&rejection),
            },
            None => Join::default(),
        };
        // Headers are done with; what follows lives as long as the client.
        drop(request);
        if self.shared.draining.load(Ordering::SeqCst) {
            let rejection =
                Rejection::new(StatusCode::SERVICE_UNAVAILABLE, "the server is draining")
                    .with_header("Retry-After", "5");
            return self.refuse_upgrade(&rejection);
        }
        let admission = match self.shared.admit(room.is_none(), self.peer.ip()) {
            Ok(admission) => admission,
            Err(full) => {
                let why = match full {
                    Full::Clients(Some(limit)) => format!("at the limit of {limit} clients"),
                    Full::Clients(None) => "at the limit of the threads it can start".to_string(),
                    Full::PerIp(limit) => {
                        format!("at the limit of {limit} connections from this address")
                    }
                };
                let rejection = Rejection::new(StatusCode::SERVICE_UNAVAILABLE, why)
                    .with_header("Retry-After", "5");
                return self.refuse_upgrade(&rejection);
            }
        };
        // A chat client's outbox is bounded and written to directly when
        // it keeps up; an echo client's carries only its Close.
        let mailbox = match room {
            Some(_) => outbox::new(self.shared.bound, None, Some(self.wire.clone())),
            None => outbox::new(outbox::Bound::NONE, None, None),
        };
        // The hub learns of the client before the client learns of the
        // upgrade: a message sent right after the 101 (by this client's
        // peers, who may be quicker) must already find it in its room.
        // Until the 101 is out, deliveries wait in the outbox.
        let hub_accepted = self.shared.hub.send(HubMsg::Register(Member {
            id: self.id,
            room: room.clone(),
            peer: self.peer,
            outbox: mailbox.0.clone(),
            join: Arc::new(join),
        }));
        if hub_accepted.is_err() {
            return;
        }
        if let Err(e) = handshake::write_response(self.wire.stream(), &response) {
            debug!("{} ({}): writing 101: {e}", self.id, self.peer);
            let _ = self.shared.hub.send(HubMsg::Unregister(self.id));
            return;
        }
        drop(response);
        // Before anything queued goes out: frames are chosen as written.
        if let Some(agreement) = deflate {
            self.wire.set_deflate(agreement);
            self.shared.metrics.deflate_negotiated();
        }
        mailbox.0.open();
        self.shared.metrics.upgraded();
        // `stopping` is set before the hub is told to shut down, so a
        // registration that queued behind the hub's Shutdown (and will
        // never be seen) always sees it here.
        if self.shared.stopping.load(Ordering::SeqCst) {
            let _ = self
                .wire
                .send_close(Some(&close_frame(CloseCode::Away, "server shutting down")));
            let _ = self.shared.hub.send(HubMsg::Unregister(self.id));
            return;
        }
        if let Err(e) = self
            .wire
            .stream()
            .set_read_timeout(Some(self.config().pong_timeout))
        {
            debug!("{} ({}): {e}", self.id, self.peer);
            let _ = self.shared.hub.send(HubMsg::Unregister(self.id));
            return;
        }
        // Boxed: moved into the reader's thread, it would otherwise be
        // copied through the thread start-up's frames.
        // With deflate, what came after the head goes through the inflater.
        let (ctx, inflater) = match deflate {
            Some(agreement) => {
                let mut inflater =
                    Inflater::new(Role::Server, self.config().max_message_bytes, agreement)
                        .counted(self.shared.metrics.clone());
                inflater.preload(&rest);
                let ctx = WebSocketContext::new(Role::Server, Some(self.shared.ws_config));
                (Box::new(ctx), Some(Box::new(inflater)))
            }
            None => {
                let ctx = WebSocketContext::from_partially_read(
                    rest,
                    Role::Server,
                    Some(self.shared.ws_config),
                );
                (Box::new(ctx), None)
            }
        };
        let expires = grant.expires.map(|end| {
            let left = end
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            Instant::now() + left
        });
        self.start_session(
            room,
            (ctx, inflater),
            mailbox,
            expires,
            (registered, admission),
        );
    }

    /// Starts the reader (which feeds the hub, or echoes) and the writer.
    fn start_session(
        self,
        room: Option<Arc<str>>,
        (ctx, inflater): (Box<WebSocketContext>, Option<Box<Inflater>>),
        mailbox: (Outbox, outbox::Mailbox),
        expires: Option<Instant>,
        keep: (Registered, Admission),
    ) {
        let (id, peer) = (self.id, self.peer);
        let what = match &room {
            Some(room) if room.is_empty() => "joined the lobby".to_string(),
            Some(room) => format!("joined room {room:?}"),
            None => "opened an echo session".to_string(),
        };
        // The room of this client's log lines (none for an echo session).
        let room_name = room.clone();
        info!(client = id.0, peer:% = peer, room = room_name.as_deref(); "{id} ({peer}) {what}");
        let timing = Timing {
            ping_interval: self.config().ping_interval,
            close_timeout: self.config().close_timeout,
            pong_timeout: self.config().pong_timeout,
            message_timeout: self.config().message_timeout,
            expires,
        };
        let hub = self.shared.hub.clone();
        let on_end = {
            let hub = hub.clone();
            let metrics = self.shared.metrics.clone();
            move |ending: Ending| {
                let _ = hub.send(HubMsg::Unregister(id));
                count_ending(&metrics, &ending);
                log_ending(id, peer, room_name.as_deref(), &ending);
            }
        };
        let on_writer_end = move |problem: Option<String>| {
            // The writer keeps the socket registered and the slot taken until it is done too.
            drop(keep);
            if let Some(problem) = problem {
                info!(client = id.0, peer:% = peer; "{id} ({peer}): {problem}");
            }
        };
        let memory = self.shared.memory.clone();
        // With a rate limit, each client's reader keeps its own bucket.
        let mut bucket = Bucket::of(self.config());
        let rate_metrics = self.shared.metrics.clone();
        let mut within_rate = move || {
            let over = bucket.as_mut().is_some_and(|b| !b.take());
            if over {
                rate_metrics.rate_limited();
                return Err(Stop::Close(CloseCode::Policy, RATE_LIMIT));
            }
            Ok(())
        };
        let metrics = self.shared.metrics.clone();
        let on_message: Box<dyn FnMut(Message) -> Result<(), Stop> + Send> = match room {
            Some(_) => Box::new(move |message: Message| {
                within_rate()?;
                let Some(frame) = Frame::data(Role::Server, &message) else {
                    return Ok(());
                };
                // Counted until the last queue has written it.
                let frame = frame.charged(&memory);
                let broadcast = HubMsg::Broadcast {
                    from: Some(id),
                    room: None,
                    frame,
                    message,
                };
                hub.send(broadcast).map_err(|_| Stop::Gone)
            }),
            // The echo goes out from the reader's thread, as in gorilla's
            // echo example: one thread hop less per round trip, and echoes
            // keep the order of reads. A client that does not read its
            // echoes stops being read from until the write timeout drops
            // it. (After our Close the echo is dropped.)
            None => {
                let wire = self.wire.clone();
                let deflate = (self.wire.deflate().is_some()).then(|| {
                    (
                        self.config().compression_level,
                        self.config().compression_min_bytes,
                    )
                });
                Box::new(move |message: Message| {
                    within_rate()?;
                    let Some(mut frame) = Frame::data(Role::Server, &message) else {
                        return Ok(());
                    };
                    if let Some((level, min)) = deflate
                        && message.len() >= min
                    {
                        frame.make_deflatable(level, &metrics);
                    }
                    let sent = wire.send([&frame]).is_ok();
                    metrics.echoed(message.len(), sent.then(|| frame.len()));
                    if sent { Ok(()) } else { Err(Stop::Gone) }
                })
            }
        };
        let handlers = Handlers {
            on_message,
            on_end,
            on_writer_end,
        };
        let name = format!("wshub-{}", id.0);
        let parts = Parts {
            wire: self.wire.clone(),
            ctx,
            mailbox,
            memory: Some(self.shared.memory.clone()),
            inflater,
        };
        let started = session::start(&self.shared, &name, parts, timing, handlers);
        if let Err(e) = started {
            error!(client = id.0, peer:% = peer; "{id} ({peer}): cannot start its session: {e}");
            let _ = self.shared.hub.send(HubMsg::Unregister(id));
        }
    }
}

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

/// Counts how a client's connection ended.
fn count_ending(metrics: &Metrics, ending: &Ending) {
    let (side, code) = match ending {
        Ending::PeerClosed(Some(close)) => (Side::Peer, u16::from(close.code)),
        Ending::PeerClosed(None) => (Side::Peer, 1005),
        Ending::Dropped(_) => (Side::Peer, 1006),
        Ending::WeClosed(code, reason) => {
            if *code == CloseCode::Away && reason == session::PING_TIMEOUT {
                metrics.ping_timeout();
            }
            (Side::Server, u16::from(*code))
        }
    };
    metrics.closed(side, code);
}

/// One log line for how a client's connection ended.
fn log_ending(id: ClientId, peer: SocketAddr, room: Option<&str>, ending: &Ending) {
    let level = match ending {
        Ending::WeClosed(code, _) if *code != CloseCode::Away => log::Level::Warn,
        _ => log::Level::Info,
    };
    log::log!(level, client = id.0, peer:% = peer, room; "{id} ({peer}): {ending}");
}
