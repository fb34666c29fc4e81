//! The Redis bridge's waiting state in the hub: a room new to this
//! instance first gets its shared history from Redis (its backfill), and
//! its first clients wait for it — parked, with what is sent to the room
//! meanwhile held back — so that a joiner on any instance sees one
//! history, then the live messages, nothing twice.
//!
//! Invariants: a client is parked in at most one room; a held message's
//! room is waiting; when the backfill comes, the room's parked clients and
//! held messages leave together, in their order.
//!
//! May touch: nothing (the hub's data).

use std::collections::HashMap;
use std::sync::Arc;

use super::Pending;
use super::member::Member;
use crate::id::ClientId;

/// Rooms waiting for their backfill, their clients and their messages.
#[derive(Default)]
pub(super) struct Waiting {
    /// Each waiting room's clients (possibly none left: the backfill is
    /// still on its way).
    parked: HashMap<Arc<str>, Vec<Member>>,
    /// The room of each parked client, so that what it sends meanwhile
    /// finds its room.
    parked_in: HashMap<ClientId, Arc<str>>,
    /// Messages to waiting rooms, in arrival order.
    held: Vec<Pending>,
}

impl Waiting {
    /// Whether `room` waits for its backfill.
    pub(super) fn is_waiting(&self, room: &str) -> bool {
        self.parked.contains_key(room)
    }

    /// The room a parked client waits in.
    pub(super) fn room_of(&self, client: ClientId) -> Option<&Arc<str>> {
        self.parked_in.get(&client)
    }

    /// Parks `member` in `room`, which starts waiting if it did not yet.
    pub(super) fn park(&mut self, room: Arc<str>, member: Member) {
        self.parked_in.insert(member.id, room.clone());
        self.parked.entry(room).or_default().push(member);
    }

    /// A parked client left before its room's backfill; whether it was
    /// parked.
    pub(super) fn leave(&mut self, client: ClientId) -> bool {
        let Some(room) = self.parked_in.remove(&client) else {
            return false;
        };
        if let Some(waiting) = self.parked.get_mut(&room) {
            waiting.retain(|m| m.id != client);
        }
        true
    }

    /// Holds back the messages of `burst` whose rooms wait.
    pub(super) fn hold(&mut self, burst: &mut Vec<Pending>) {
        if self.parked.is_empty() {
            return;
        }
        let (held, ready): (Vec<Pending>, Vec<Pending>) = std::mem::take(burst)
            .into_iter()
            .partition(|p| self.parked.contains_key(&p.room));
        self.held.extend(held);
        *burst = ready;
    }

    /// `room`'s backfill came: its parked clients and held messages, in
    /// order; `None` if it was not waiting.
    pub(super) fn backfilled(&mut self, room: &str) -> Option<(Vec<Member>, Vec<Pending>)> {
        let members = self.parked.remove(room)?;
        for member in &members {
            self.parked_in.remove(&member.id);
        }
        let (held, others): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|p| &*p.room == room);
        self.held = others;
        Some((members, held))
    }
}
