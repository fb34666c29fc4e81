//! What the host program (and the server API built on it) asks of single
//! clients: send one client a message, close one client, close every
//! client of a token subject. Done on the hub's thread, so a message to
//! one client keeps its order with the room's messages, and goes through
//! the client's outbox under the same bounds as every delivery (a client
//! whose queue is full is evicted with 1008).
//!
//! May touch: the addressed members' outboxes, the rooms (a removed client
//! leaves its room at once, with the notices and the event of any leave),
//! the Redis bridge (to reach clients of other instances).

use std::sync::Arc;

use crossbeam_channel::Sender;
use log::{info, warn};
use tungstenite::protocol::CloseFrame;

use super::Hub;
use crate::id::ClientId;
use crate::session::close::Close;
use crate::session::frame::Frame;
use crate::session::outbox::Refused;

/// A request about single clients.
pub(crate) enum Command {
    /// One data frame to one client; told whether it was there.
    SendTo {
        client: ClientId,
        frame: Frame,
        reply: Option<Sender<bool>>,
    },
    /// Close one client with this frame (when it is in `room`, if
    /// given); told whether it was there.
    Remove {
        client: ClientId,
        room: Option<Arc<str>>,
        close: CloseFrame,
        reply: Option<Sender<bool>>,
    },
    /// Ask the instance holding `key` (`{instance}:{client}`) to close
    /// it with 1008 `reason`, through Redis.
    RemoveRemote { key: String, reason: String },
    /// Close every client whose token subject is `sub`, here and (with
    /// Redis) on every instance; told how many were closed here.
    RemoveUser {
        sub: Arc<str>,
        reason: Arc<str>,
        reply: Option<Sender<usize>>,
    },
}

impl Hub {
    pub(super) fn command(&mut self, command: Command) {
        match command {
            Command::SendTo {
                client,
                frame,
                reply,
            } => {
                let found = self.send_to(client, frame);
                if let Some(reply) = reply {
                    let _ = reply.send(found);
                }
            }
            Command::Remove {
                client,
                room,
                close,
                reply,
            } => {
                let here = self.rooms.room_of(client);
                let found = match room {
                    Some(room) if here != Some(&room) => false,
                    _ => self.close_client(client, close),
                };
                if let Some(reply) = reply {
                    let _ = reply.send(found);
                }
            }
            Command::RemoveRemote { key, reason } => {
                if let Some(bridge) = &self.bridge {
                    bridge.remove(&key, &reason);
                }
            }
            Command::RemoveUser { sub, reason, reply } => {
                if let Some(bridge) = &self.bridge {
                    bridge.remove_user(&sub, &reason);
                }
                let closed = self.close_user(&sub, &reason);
                if let Some(reply) = reply {
                    let _ = reply.send(closed);
                }
            }
        }
    }

    /// Offers `frame` to `client`'s outbox, as a delivery; whether the
    /// client is here (a full queue evicts it, as in a room's fan-out).
    fn send_to(&mut self, client: ClientId, frame: Frame) -> bool {
        let Some(member) = self.rooms.member(client) else {
            return false;
        };
        let bytes = frame.len();
        let burst: crate::session::outbox::Burst = Arc::from(vec![(None, frame)]);
        match member.outbox.offer(&burst, None, 1, bytes) {
            Ok(()) | Err(Refused::Gone) => {}
            Err(Refused::Full) => {
                if member.outbox.evict(Close::QueueFull.frame()) {
                    warn!("{client} evicted: send queue full (a message sent to it alone)");
                }
            }
        }
        true
    }

    /// Asks `client` to close with `close`, and takes it out of its room
    /// at once (it hears nothing more, and is no longer listed); whether
    /// it was here.
    fn close_client(&mut self, client: ClientId, close: CloseFrame) -> bool {
        let Some(member) = self.rooms.member(client) else {
            return false;
        };
        info!(client = client.0; "{client}: removed by the host ({})", close.reason);
        member.outbox.close_now(close);
        if let Some(left) = self.rooms.remove(client) {
            self.left(client, left);
        }
        true
    }

    /// Removes every local client of `sub` with 1008 `reason`; how many.
    fn close_user(&mut self, sub: &str, reason: &str) -> usize {
        let close = Close::Removed(reason.to_string()).frame();
        let of_sub: Vec<ClientId> = self
            .rooms
            .chat_members()
            .filter(|m| m.join.sub.as_deref() == Some(sub))
            .map(|m| m.id)
            .collect();
        for &client in &of_sub {
            self.close_client(client, close.clone());
        }
        if !of_sub.is_empty() {
            info!(
                "{} clients of {sub:?} removed by the host ({reason})",
                of_sub.len()
            );
        }
        of_sub.len()
    }

    /// Another instance asked (through Redis) to remove one of ours.
    pub(super) fn remove_by_request(&mut self, client: u64, reason: &str) {
        let close = Close::Removed(reason.to_string()).frame();
        self.close_client(ClientId(client), close);
    }

    /// Another instance asked (through Redis) to remove a subject's clients.
    pub(super) fn remove_user_by_request(&mut self, sub: &str, reason: &str) {
        self.close_user(sub, reason);
    }
}
