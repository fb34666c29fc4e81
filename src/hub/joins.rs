//! Joining and leaving: a client registers (parked first when its room is
//! new to this instance and the Redis bridge brings the room's history),
//! joins — with the room's history and a presence snapshot queued for it
//! in the same step, so nothing relayed before the join is missed and
//! nothing comes twice — and leaves, with the notices, the bridge's
//! presence and the events that go with each.
//!
//! May touch: the joiner's outbox (its first frames), the bridge's queues,
//! the lanes (presence notices), the event subscribers.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tungstenite::protocol::Message;

use super::membership::Left;
use super::{Event, Hub};
use crate::hub::member::Member;
use crate::id::ClientId;
use crate::presence;
use crate::session::frame::Frame;

/// A member as presence shows it.
pub(super) fn present(m: &Member) -> presence::Present<'_> {
    presence::Present {
        name: &m.join.name,
        joined: m.join.at.unwrap_or(UNIX_EPOCH),
    }
}

impl Hub {
    pub(super) fn register(&mut self, member: Member) {
        let Some(room) = member.room.clone() else {
            self.rooms.insert_echo(member);
            return;
        };
        // With the bridge, a room new to this instance first gets its
        // shared history from Redis; its first clients wait for it (when
        // the bridge is connected: otherwise they join at once).
        if let Some(bridge) = &self.bridge
            && !self.rooms.contains(&room)
            && (self.waiting.is_waiting(&room) || bridge.subscribe(room.clone()))
        {
            self.waiting.park(room, member);
            return;
        }
        self.join(room, member);
    }

    /// The bridge's answer for a new room: its shared history becomes the
    /// local one, and the clients that waited join.
    pub(super) fn backfilled(&mut self, room: Arc<str>, entries: Vec<(Frame, Message)>) {
        let Some((waiting, mut held)) = self.waiting.backfilled(&room) else {
            // Nobody waited for it (the bridge was down when the room
            // began): the local history stands.
            return;
        };
        self.histories.replace(&room, entries);
        if waiting.is_empty() && !self.rooms.contains(&room) {
            // They all left before it came; what they said still goes out.
            if let Some(bridge) = &self.bridge {
                bridge.unsubscribe(room);
            }
            self.deliver(&mut held);
            return;
        }
        for member in waiting {
            self.join(room.clone(), member);
        }
        // Then what was sent to the room while they waited, in order.
        self.deliver(&mut held);
    }

    fn join(&mut self, room: Arc<str>, member: Member) {
        let (client, peer) = (member.id, member.peer);
        let size = self.rooms.open(&room, self.lanes.count());
        let lane = self.lanes.lane_of(client, size);
        // The join and what the joiner gets first are one step: nothing
        // relayed before it is missed, nothing twice.
        let first = self.first_frames(&room, &member);
        if !first.is_empty() {
            member.outbox.preload(Arc::from(first));
        }
        let join = member.join.clone();
        let clients = self.rooms.clients(&room) + 1;
        self.notify(&room, "join", &join.name, clients);
        self.rooms.insert(room.clone(), lane, member);
        if let Some(bridge) = &self.bridge {
            let joined = join.at.unwrap_or(UNIX_EPOCH);
            let sub = join.sub.as_deref();
            bridge.present(&room, client.0, &join.name, sub, presence::millis(joined));
        }
        let sub = join.sub.clone();
        self.events.emit(|| Event::Joined {
            client,
            room,
            peer,
            sub,
        });
    }

    /// What a joiner gets before anything live: the history it asked for,
    /// then, with presence, who is there.
    fn first_frames(&mut self, room: &Arc<str>, member: &Member) -> Vec<(Option<ClientId>, Frame)> {
        let join = &member.join;
        let mut first: Vec<(Option<ClientId>, Frame)> = Vec::new();
        if let Some(k) = join.history {
            let history = self.histories.snapshot(room, k).into_iter();
            first.extend(history.map(|f| (None, f)));
        }
        if join.presence {
            let remote = self
                .rooms
                .remote(room)
                .iter()
                .map(|(_, name)| presence::Present {
                    name,
                    joined: UNIX_EPOCH,
                });
            let others = self.rooms.members(room).map(present);
            let everyone = others.chain(remote).chain([present(member)]);
            first.push((None, presence::snapshot(everyone).0));
        }
        first
    }

    pub(super) fn unregister(&mut self, id: ClientId) {
        if self.rooms.remove_echo(id) || self.waiting.leave(id) {
            return;
        }
        // Absent means already evicted: nothing to do, as in gorilla.
        if let Some(left) = self.rooms.remove(id) {
            self.left(id, left);
        }
    }

    /// What follows a member's leaving its room: the bridge forgets an
    /// emptied room, the others hear of it, and so does the host.
    pub(super) fn left(&mut self, client: ClientId, left: Left) {
        let Left {
            room,
            name,
            emptied,
        } = left;
        if let (true, Some(bridge)) = (emptied, &self.bridge) {
            bridge.unsubscribe(room.clone());
        }
        if let Some(name) = name {
            let clients = self.rooms.clients(&room);
            self.notify(&room, "leave", &name, clients);
            if let Some(bridge) = &self.bridge {
                bridge.absent(&room, client.0);
            }
        }
        self.events.emit(|| Event::Left { client, room });
    }
}
