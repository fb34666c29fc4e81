//! Where a server client's reader hands each message (its session's
//! `Target`): a chat client's go to the hub ([`Chat`]) — judged first by
//! the host's message hook, if there is one — and an echo client's
//! straight back onto its own connection ([`Echo`]). Both keep the
//! client's rate limit, and both report how the connection ended
//! ([`Report`]: the hub forgets the client, the close is counted and
//! logged once). A [`Session`] is either client's reader, as the upgrade
//! hands it to the connection's thread.
//!
//! May touch: the hub's inbox (sending only), an echo client's `Wire`,
//! the metrics, the host's message hook (called on the reader's thread).

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::Sender;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Message, Role};

use log::error;

use crate::hook::{Incoming, MessageHook, Verdict};
use crate::hub::{Command, HubMsg};
use crate::id::ClientId;
use crate::memory::Memory;
use crate::metrics::{Metrics, Side};
use crate::rate::Bucket;
use crate::session::close::{Close, Ending};
use crate::session::frame::Frame;
use crate::session::wire::Wire;
use crate::session::{self, Stop, Target};

/// A client's rate limit (`--max-messages-per-second`): its own bucket,
/// on its reader's thread.
pub(super) struct RateLimit {
    pub(super) bucket: Option<Bucket>,
    pub(super) metrics: Arc<Metrics>,
}

impl RateLimit {
    /// Takes a token; over the rate, the client is closed with 1008.
    fn check(&mut self) -> Result<(), Stop> {
        if self.bucket.as_mut().is_some_and(|b| !b.take()) {
            self.metrics.rate_limited();
            return Err(Stop::Close(Close::RateLimit));
        }
        Ok(())
    }
}

/// What happens when a server client's connection ends.
pub(super) struct Report {
    pub(super) id: ClientId,
    pub(super) peer: SocketAddr,
    /// The room, for the log line (none for an echo client).
    pub(super) room: Option<Arc<str>>,
    pub(super) hub: Sender<HubMsg>,
    pub(super) metrics: Arc<Metrics>,
}

impl Report {
    fn ended(self, ending: Ending) {
        let _ = self.hub.send(HubMsg::Unregister(self.id));
        count_ending(&self.metrics, &ending);
        let (id, peer, room) = (self.id, self.peer, self.room.as_deref());
        let level = match &ending {
            Ending::WeClosed(code, _) if *code != CloseCode::Away => log::Level::Warn,
            _ => log::Level::Info,
        };
        log::log!(level, client = id.0, peer:% = peer, room; "{id} ({peer}): {ending}");
    }
}

/// Counts how a client's connection ended.
fn count_ending(metrics: &Metrics, ending: &Ending) {
    let (side, code) = match ending {
        Ending::PeerClosed(Some(close)) => (Side::Peer, u16::from(close.code)),
        Ending::PeerClosed(None) => (Side::Peer, 1005),
        Ending::Dropped(_) => (Side::Peer, 1006),
        Ending::WeClosed(code, reason) => {
            if *code == Close::PingTimeout.code() && reason == Close::PingTimeout.reason() {
                metrics.ping_timeout();
            }
            (Side::Server, u16::from(*code))
        }
    };
    metrics.closed(side, code);
}

/// A chat client: each message, judged by the host's hook if there is
/// one, then encoded once and charged to the memory budget, goes to the
/// hub for its room.
pub(super) struct Chat {
    pub(super) id: ClientId,
    /// Its token's subject, for the hook.
    pub(super) sub: Option<Arc<str>>,
    pub(super) hook: Option<MessageHook>,
    pub(super) hub: Sender<HubMsg>,
    pub(super) memory: Arc<Memory>,
    pub(super) limit: RateLimit,
    pub(super) report: Report,
}

impl Chat {
    /// What the hook makes of `message`: the message to relay, or none.
    fn judge(&self, hook: &MessageHook, message: Message) -> Result<Option<Message>, Stop> {
        let incoming = Incoming {
            client: self.id,
            room: self.report.room.as_deref().unwrap_or(""),
            sub: self.sub.as_deref(),
            message: &message,
        };
        let Some(verdict) = hook.judge(&incoming) else {
            let (id, peer) = (self.id, self.report.peer);
            error!(client = id.0, peer:% = peer; "{id} ({peer}): the message hook panicked; closing it with 1011");
            return Err(Stop::Close(Close::HookFailed));
        };
        match verdict {
            Verdict::Relay => Ok(Some(message)),
            Verdict::Replace(replacement) => Ok(Some(replacement)),
            Verdict::Drop => Ok(None),
            Verdict::Answer(answer) => {
                if let Some(frame) = Frame::data(Role::Server, &answer) {
                    let frame = frame.charged(&self.memory);
                    let client = self.id;
                    let command = Command::SendTo {
                        client,
                        frame,
                        reply: None,
                    };
                    self.hub
                        .send(HubMsg::Command(command))
                        .map_err(|_| Stop::Gone)?;
                }
                Ok(None)
            }
            Verdict::Close(code, reason) => Err(Stop::Close(Close::Hook(code, reason))),
        }
    }
}

impl Target for Chat {
    fn deliver(&mut self, message: Message) -> Result<(), Stop> {
        self.limit.check()?;
        let message = match &self.hook {
            Some(hook) => match self.judge(hook, message)? {
                Some(message) => message,
                None => return Ok(()),
            },
            None => message,
        };
        let Some(frame) = Frame::data(Role::Server, &message) else {
            return Ok(());
        };
        // Counted until the last queue has written it.
        let broadcast = HubMsg::Broadcast {
            from: Some(self.id),
            room: None,
            frame: frame.charged(&self.memory),
            message,
            reply: None,
        };
        self.hub.send(broadcast).map_err(|_| Stop::Gone)
    }

    fn ended(self, ending: Ending) {
        self.report.ended(ending);
    }
}

/// An echo client: each message goes back from the reader's thread, as in
/// gorilla's echo example — one thread hop less per round trip, and echoes
/// keep the order of reads. A client that does not read its echoes stops
/// being read from until the write timeout drops it. (After our Close the
/// echo is dropped.)
pub(super) struct Echo {
    pub(super) wire: Arc<Wire>,
    /// With permessage-deflate agreed: the level, and the shortest
    /// message worth compressing.
    pub(super) deflate: Option<(u32, usize)>,
    pub(super) limit: RateLimit,
    pub(super) report: Report,
}

impl Target for Echo {
    fn deliver(&mut self, message: Message) -> Result<(), Stop> {
        self.limit.check()?;
        let Some(mut frame) = Frame::data(Role::Server, &message) else {
            return Ok(());
        };
        let metrics = &self.report.metrics;
        if let Some((level, min)) = self.deflate
            && message.len() >= min
        {
            frame.make_deflatable(level, &metrics.deflate);
        }
        let sent = self.wire.send([&frame]).is_ok();
        metrics.echoed(message.len(), sent.then(|| frame.len()));
        if sent { Ok(()) } else { Err(Stop::Gone) }
    }

    fn ended(self, ending: Ending) {
        self.report.ended(ending);
    }
}

/// An upgraded client's reader, ready to run on the connection's thread
/// once the HTTP path has returned (its frames are deeper than the read
/// loop's, and a stack page once touched stays resident).
pub(super) enum Session {
    /// A chat client: its messages go to the hub.
    Chat(session::Reader<Chat>),
    /// An echo client: its messages come back to it.
    Echo(session::Reader<Echo>),
}

impl Session {
    /// Reads the client until it leaves.
    pub(super) fn run(self) {
        match self {
            Session::Chat(reader) => reader.run(),
            Session::Echo(reader) => reader.run(),
        }
    }
}
