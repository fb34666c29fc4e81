//! [`Event`]: what the hub tells a host program (`Server::events`).
//! Plain data; touches nothing.

use std::net::SocketAddr;
use std::sync::Arc;

use tungstenite::protocol::Message;

use crate::id::ClientId;

/// What happened in the hub, as told to [`Server::events`](crate::Server::events).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// A client joined a room (`""` is the lobby at `/ws`).
    Joined {
        /// Who.
        client: ClientId,
        /// Which room.
        room: Arc<str>,
        /// The peer's address.
        peer: SocketAddr,
    },
    /// A client left its room: closed, dropped, or evicted.
    Left {
        /// Who.
        client: ClientId,
        /// Which room.
        room: Arc<str>,
    },
    /// A message sent to a room on another instance arrived through the
    /// Redis bridge (and went to this room's local clients).
    Remote {
        /// To which room.
        room: Arc<str>,
        /// The message, unchanged.
        message: Message,
        /// The instance it was sent on (its id in that instance's log).
        instance: Arc<str>,
    },
    /// A client sent a text or binary message to its room.
    Message {
        /// Who sent it.
        client: ClientId,
        /// To which room.
        room: Arc<str>,
        /// The message, unchanged.
        message: Message,
    },
}
