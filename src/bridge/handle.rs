//! The hub's side of the bridge: [`Bridge`] (publish, subscribe and
//! presence changes, none of which waits), what the bridge brings back
//! ([`FromBridge`], through a [`ToHub`] function), its counters, and the
//! room set the subscriber keeps across reconnections.
//!
//! May touch: the queues to the bridge's threads.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};
use log::warn;
use tungstenite::protocol::Message;

use super::envelope::encode;
use crate::session::frame::Frame;

/// What the bridge has done, for logs, tests and metrics.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub publisher_up: AtomicBool,
    pub subscriber_up: AtomicBool,
    pub published: AtomicU64,
    pub received: AtomicU64,
    pub dropped: AtomicU64,
}

impl Stats {
    /// Counts one dropped message; logs at powers of two, not per message.
    pub(crate) fn drop_one(&self, why: &str) {
        let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            warn!("redis bridge: {n} messages dropped so far ({why})");
        }
    }
}

/// A room subscription change for the subscriber thread.
#[derive(Debug)]
pub(crate) enum Control {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
}

/// A client of another instance, as presence knows it: its key
/// (`{instance}:{client}`) and its name.
pub(crate) type RemoteClient = (Arc<str>, Arc<str>);

/// What the bridge brings the hub from other instances.
pub(crate) enum FromBridge {
    /// A message from another instance (the Redis bridge): delivered to
    /// this room's local clients, never published again.
    Remote {
        room: Arc<str>,
        frame: Frame,
        message: Message,
        instance: Arc<str>,
    },
    /// What the Redis bridge found in a room's shared history when it
    /// began listening to the room (oldest first; empty when it has none
    /// or Redis is unreachable): the room's first clients wait for it.
    Backfill {
        room: Arc<str>,
        entries: Vec<(Frame, Message)>,
        /// Clients of the room on other instances.
        present: Vec<RemoteClient>,
    },
    /// A client of another instance joined (`Some(name)`) or left a room.
    RemotePresence {
        room: Arc<str>,
        key: Arc<str>,
        name: Option<Arc<str>>,
    },
    /// Another instance stopped its heartbeat: its clients are gone.
    InstanceGone(Arc<str>),
    /// Another instance asks to close one of our clients (1008, `reason`).
    Remove { client: u64, reason: String },
    /// Another instance asks to close every client of a token subject.
    RemoveUser { sub: String, reason: String },
}

/// How the bridge hands things to the hub: `false` once the hub is gone.
/// (A function rather than the hub's inbox, so that this module needs
/// nothing of the hub's.)
pub(crate) type ToHub = Box<dyn Fn(FromBridge) -> bool + Send>;

/// What the publisher thread is handed.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message for the room's stream and channel.
    Message { room: Arc<str>, payload: Vec<u8> },
    /// A local client is in the room (its presence entry, as JSON).
    Present {
        room: Arc<str>,
        client: u64,
        entry: String,
    },
    /// It left.
    Absent { room: Arc<str>, client: u64 },
    /// A request for other instances, on the commands channel (JSON).
    Command(String),
}

/// The hub's handle on the bridge. Dropping it stops the bridge's threads.
pub(crate) struct Bridge {
    pub(crate) instance: Arc<str>,
    pub(crate) publish: Option<Sender<Outgoing>>,
    pub(crate) control: Option<Sender<Control>>,
    pub(crate) view: View,
    pub(crate) threads: Vec<JoinHandle<()>>,
}

/// What the server's HTTP side sees of the bridge: its counters and
/// connection state, and who is in a room on every instance.
#[derive(Clone)]
pub(crate) struct View {
    pub(crate) stats: Arc<Stats>,
    #[cfg(feature = "redis")]
    pub(crate) client: redis::Client,
}

impl View {
    /// Who is in `room` on every live instance, oldest first; `None`
    /// when Redis cannot be asked.
    pub(crate) fn presence_of(&self, room: &str) -> Option<Vec<crate::presence::MemberInfo>> {
        #[cfg(feature = "redis")]
        return super::lookup::presence_of(&self.client, room);
        #[cfg(not(feature = "redis"))]
        {
            let _ = room;
            None
        }
    }
}

impl Bridge {
    /// What the server's HTTP side sees of the bridge.
    pub(crate) fn view(&self) -> &View {
        &self.view
    }

    /// Hands a local message to the publisher, without waiting.
    pub(crate) fn publish(&self, room: &Arc<str>, message: &Message) {
        let Some(publish) = &self.publish else {
            return;
        };
        let Some(payload) = encode(&self.instance, message) else {
            return;
        };
        let out = Outgoing::Message {
            room: room.clone(),
            payload,
        };
        match publish.try_send(out) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.view.stats.drop_one("the publish queue is full"),
            Err(TrySendError::Disconnected(_)) => self.view.stats.drop_one("the publisher stopped"),
        }
    }

    /// Records a local client in the room's shared presence.
    pub(crate) fn present(
        &self,
        room: &Arc<str>,
        client: u64,
        name: &str,
        sub: Option<&str>,
        joined_ms: u64,
    ) {
        if let Some(publish) = &self.publish {
            let mut entry = serde_json::json!({ "name": name, "joined_ms": joined_ms });
            if let Some(sub) = sub {
                entry["sub"] = serde_json::json!(sub);
            }
            let entry = entry.to_string();
            let _ = publish.try_send(Outgoing::Present {
                room: room.clone(),
                client,
                entry,
            });
        }
    }

    /// Removes a local client from the room's shared presence.
    pub(crate) fn absent(&self, room: &Arc<str>, client: u64) {
        if let Some(publish) = &self.publish {
            let _ = publish.try_send(Outgoing::Absent {
                room: room.clone(),
                client,
            });
        }
    }

    /// Asks the instance holding `key` (`{instance}:{client}`) to close
    /// that client with 1008 `reason`.
    pub(crate) fn remove(&self, key: &str, reason: &str) {
        let command = serde_json::json!({"op": "remove", "id": key, "reason": reason});
        self.command(command);
    }

    /// Asks every other instance to close the clients of `sub`.
    pub(crate) fn remove_user(&self, sub: &str, reason: &str) {
        let command = serde_json::json!({
            "op": "remove_user", "sub": sub, "reason": reason, "from": &*self.instance,
        });
        self.command(command);
    }

    fn command(&self, command: serde_json::Value) {
        if let Some(publish) = &self.publish
            && publish
                .try_send(Outgoing::Command(command.to_string()))
                .is_err()
        {
            self.view.stats.drop_one("the publish queue is full");
        }
    }

    /// Starts listening to `room` on other instances. Whether a backfill
    /// (the room's shared history) is coming for it: only while the
    /// subscriber is connected — a bridge that is down or reconnecting
    /// must not keep the room's first clients waiting.
    pub(crate) fn subscribe(&self, room: Arc<str>) -> bool {
        let up = self.view.stats.subscriber_up.load(Ordering::Acquire);
        match &self.control {
            Some(control) => control.send(Control::Subscribe(room)).is_ok() && up,
            None => false,
        }
    }

    /// Stops listening to `room`.
    pub(crate) fn unsubscribe(&self, room: Arc<str>) {
        if let Some(control) = &self.control {
            let _ = control.send(Control::Unsubscribe(room));
        }
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        // Disconnecting the queues ends both threads (the subscriber within
        // its read timeout).
        self.publish = None;
        self.control = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Keeps the set of rooms the subscriber should be in, across reconnects.
#[derive(Debug, Default)]
pub(crate) struct Rooms(pub(crate) HashSet<Arc<str>>);

impl Rooms {
    /// Applies a change; whether it changed anything.
    pub(crate) fn apply(&mut self, control: &Control) -> bool {
        match control {
            Control::Subscribe(room) => self.0.insert(room.clone()),
            Control::Unsubscribe(room) => self.0.remove(room),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<str>> {
        self.0.iter()
    }
}
