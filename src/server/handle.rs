//! [`Handle`]: what a host program holds of a running server — the
//! cheap, cloneable, thread-safe way in from any thread: broadcast into a
//! room, read its history, subscribe to [`Events`], look at the server's
//! counters, ask for shutdown.
//!
//! May touch: the hub's inbox (sending and asking), `Shared`'s counters.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::bounded;
use tungstenite::protocol::{Message, Role};

use super::shared::Shared;
use crate::http;
use crate::hub::{self, Events, HubMsg};
use crate::session::frame::Frame;
use crate::{Error, Result};

/// A cheap, cloneable, thread-safe view of a running
/// [`Server`](crate::Server): broadcast, subscribe to events, ask for
/// shutdown.
#[derive(Clone)]
pub struct Handle {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("local_addr", &self.shared.local_addr)
            .field("clients", &self.client_count())
            .finish()
    }
}

impl Handle {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Subscribes to hub events. Each call makes a new subscription
    /// holding up to [`Config::event_queue`](crate::Config::event_queue)
    /// events; when it is full, further events are dropped for it rather
    /// than stalling the hub. Drop it to unsubscribe.
    pub fn events(&self) -> Events {
        let (tx, rx) = bounded(self.shared.config.event_queue.max(1));
        let _ = self.shared.hub.send(HubMsg::Subscribe(tx));
        Events::new(rx)
    }

    /// Sends a text or binary message to every client in `room` (`""` is the
    /// lobby at `/ws`).
    pub fn broadcast(&self, room: &str, message: Message) -> Result<()> {
        if !room.is_empty() && !http::valid_room(room) {
            return Err(Error::InvalidRoom(room.to_string()));
        }
        let frame = Frame::data(Role::Server, &message)
            .ok_or(Error::NotData)?
            .charged(&self.shared.memory);
        self.shared
            .hub
            .send(HubMsg::Broadcast {
                from: None,
                room: Some(room.into()),
                frame,
                message,
            })
            .map_err(|_| Error::Closed)
    }

    /// Bytes the server holds for its clients right now — messages being
    /// received and frames queued for writers — counted against
    /// [`Config::max_buffered_bytes`](crate::Config::max_buffered_bytes).
    pub fn buffered_bytes(&self) -> usize {
        self.shared.memory.used()
    }

    /// Connections closed with 1013 so far because a message would have
    /// taken the buffered bytes over [`Config::max_buffered_bytes`](crate::Config::max_buffered_bytes).
    pub fn refused_for_memory(&self) -> u64 {
        self.shared.memory.refused()
    }

    /// Clients evicted (1008) so far because queued frames took the
    /// buffered bytes over [`Config::max_buffered_bytes`](crate::Config::max_buffered_bytes).
    pub fn evicted_for_memory(&self) -> u64 {
        self.shared.memory.evicted()
    }

    /// With [`Config::redis`](crate::Config::redis): whether both of the bridge's connections to
    /// Redis are up (`None` without a bridge). While they are down, local
    /// clients are served as always and messages do not cross instances.
    pub fn redis_connected(&self) -> Option<bool> {
        self.shared.redis_connected()
    }

    /// The messages `room` keeps in its history (see [`Config::history`](crate::Config::history)),
    /// oldest first.
    pub fn history(&self, room: &str) -> Result<Vec<Message>> {
        if !room.is_empty() && !http::valid_room(room) {
            return Err(Error::InvalidRoom(room.to_string()));
        }
        let room: Arc<str> = room.into();
        self.shared
            .ask(|tx| hub::Query::History(room, tx))
            .ok_or(Error::Closed)
    }

    /// Open WebSocket connections right now.
    pub fn client_count(&self) -> usize {
        self.shared.clients.load(Ordering::Relaxed)
    }

    /// Asks the server to shut down: [`Server::run`](crate::Server::run) returns once it has.
    /// Safe to call from any thread, any number of times.
    pub fn shutdown(&self) {
        self.shared.lock().stop_requested = true;
        self.shared.changed.notify_all();
    }
}
