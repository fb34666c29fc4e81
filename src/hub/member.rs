//! A chat client as the hub and its fan-out lanes see it: its id, room,
//! peer, outbox and what it asked for when it joined; and the hub's
//! delivery settings. Plain data, shared by `hub` and `fanout`.
//!
//! May touch: nothing (it holds an outbox handle; the hub uses it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::id::ClientId;
use crate::session::outbox::Outbox;

/// A connection as the hub sees it.
#[derive(Clone)]
pub(crate) struct Member {
    pub id: ClientId,
    /// `None` for echo clients: known to the hub only so shutdown reaches them.
    pub room: Option<Arc<str>>,
    pub peer: SocketAddr,
    pub outbox: Outbox,
    /// What the client asked for when it joined.
    pub join: Arc<Join>,
}

/// What a client asks for when it joins (`?history=K&presence=1&name=…`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Join {
    /// The last K messages of the room first (`usize::MAX`: all it keeps).
    pub history: Option<usize>,
    /// Presence notices as text messages.
    pub presence: bool,
    /// The name presence shows.
    pub name: Arc<str>,
    /// Its token's subject, when it joined with a token.
    pub sub: Option<Arc<str>>,
    pub at: Option<SystemTime>,
}

/// How the hub delivers (per-member queue bounds live in each outbox).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Also deliver a member's messages to itself.
    pub echo_sender: bool,
    /// For the eviction log line: the outboxes' bound.
    pub messages: usize,
    pub bytes: usize,
    /// With compression on: the deflate level, and the size below which
    /// messages go uncompressed.
    pub deflate: Option<(u32, usize)>,
}
