//! [`Event`]: what the hub tells a host program; [`Events`], one
//! subscription to them (`Server::events`); and the hub's list of those
//! who listen ([`Subscribers`]).
//!
//! May touch: the subscribers' channels (`try_send` only: a full one
//! loses events, counted in the log, and never stalls the hub).

use std::net::SocketAddr;
use std::sync::Arc;

use std::sync::mpsc::{RecvError, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
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
        /// Its token's subject (`sub`), when it joined with a token.
        sub: Option<Arc<str>>,
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

/// One subscription to the hub's [`Event`]s, from
/// [`Server::events`](crate::Server::events) or
/// [`Handle::events`](crate::Handle::events). It holds up to
/// [`Config::event_queue`](crate::Config::event_queue) events; beyond
/// that the hub drops events for it rather than wait. Drop it to
/// unsubscribe. The errors are std's: a timeout, or the server gone.
pub struct Events {
    rx: Receiver<Event>,
}

impl Events {
    pub(crate) fn new(rx: Receiver<Event>) -> Events {
        Events { rx }
    }

    /// The next event, waiting for it; an error once the server is gone.
    pub fn recv(&self) -> Result<Event, RecvError> {
        self.rx.recv().map_err(|_| RecvError)
    }

    /// The next event, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Event, RecvTimeoutError> {
        self.rx.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => RecvTimeoutError::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => RecvTimeoutError::Disconnected,
        })
    }

    /// The next event if one is waiting.
    pub fn try_recv(&self) -> Result<Event, TryRecvError> {
        self.rx.try_recv().map_err(|e| match e {
            crossbeam_channel::TryRecvError::Empty => TryRecvError::Empty,
            crossbeam_channel::TryRecvError::Disconnected => TryRecvError::Disconnected,
        })
    }

    /// Events as they come, until the server is gone.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.rx.iter()
    }

    /// The events waiting now, without waiting for more.
    pub fn try_iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.rx.try_iter()
    }

    /// Events waiting now.
    pub fn len(&self) -> usize {
        self.rx.len()
    }

    /// Whether no event is waiting.
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("waiting", &self.rx.len())
            .finish()
    }
}
