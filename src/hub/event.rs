//! [`Event`]: what the hub tells a host program (`Server::events`), and
//! the hub's list of those who listen ([`Subscribers`]).
//!
//! May touch: the subscribers' channels (`try_send` only: a full one
//! loses events, counted in the log, and never stalls the hub).

use std::net::SocketAddr;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};
use log::warn;
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

/// Who listens to the hub's events.
#[derive(Default)]
pub(super) struct Subscribers {
    list: Vec<Sender<Event>>,
    /// Events lost to full subscribers, so far.
    dropped: u64,
}

impl Subscribers {
    pub(super) fn add(&mut self, subscriber: Sender<Event>) {
        self.list.push(subscriber);
    }

    /// Tells every subscriber (the event is made only if there is one);
    /// gone subscribers are forgotten, full ones lose it.
    pub(super) fn emit(&mut self, event: impl FnOnce() -> Event) {
        if self.list.is_empty() {
            return;
        }
        let event = event();
        let mut dropped = 0;
        self.list.retain(|s| match s.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                dropped += 1;
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
        if dropped > 0 {
            self.dropped += dropped;
            // Powers of two: a stuck subscriber is reported, not logged per event.
            if self.dropped.is_power_of_two() {
                warn!(
                    "hub: {} events dropped so far: a subscriber is not keeping up",
                    self.dropped
                );
            }
        }
    }
}
