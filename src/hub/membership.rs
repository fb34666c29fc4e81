//! Who is where, as the hub keeps it: each room's members split by fan-out
//! lane, which room (and lane) each chat client is in, the echo clients
//! (known only so shutdown reaches them), messages relayed per room, and
//! other instances' clients of each room (from the Redis bridge).
//!
//! Invariants: a chat client is in `where_is` exactly when it is in its
//! room's lane; a room is present exactly while it has a local member; its
//! `relayed` count and remote clients go with it.
//!
//! May touch: nothing (the hub's data; no I/O, no events).

use std::collections::HashMap;
use std::sync::Arc;

use super::fanout::LaneMembers;
use super::member::Member;
use crate::bridge::RemoteClient;
use crate::id::ClientId;

/// The hub's rooms and members.
#[derive(Default)]
pub(super) struct Rooms {
    /// Each room's members, split by fan-out lane.
    lanes: HashMap<Arc<str>, Vec<LaneMembers>>,
    /// Which room, and lane, each chat member is in.
    where_is: HashMap<ClientId, (Arc<str>, usize)>,
    /// Echo clients.
    echo: HashMap<ClientId, Member>,
    /// Messages relayed per room with clients.
    relayed: HashMap<Arc<str>, u64>,
    /// Each room's clients on other instances (key `{instance}:{client}`,
    /// name), for presence.
    remote: HashMap<Arc<str>, Vec<RemoteClient>>,
}

/// A member taken out of its room.
pub(super) struct Left {
    pub(super) room: Arc<str>,
    /// Its name, when it was still in the room's lane.
    pub(super) name: Option<Arc<str>>,
    /// It was the room's last local member: the room is gone.
    pub(super) emptied: bool,
}

impl Rooms {
    /// Whether `room` has local members.
    pub(super) fn contains(&self, room: &str) -> bool {
        self.lanes.contains_key(room)
    }

    /// Rooms with local members.
    pub(super) fn count(&self) -> usize {
        self.lanes.len()
    }

    /// The rooms' names, sorted.
    pub(super) fn names(&self) -> Vec<&Arc<str>> {
        let mut names: Vec<&Arc<str>> = self.lanes.keys().collect();
        names.sort();
        names
    }

    /// `room`'s members, lane by lane (none for an unknown room).
    pub(super) fn lanes(&self, room: &str) -> Option<&Vec<LaneMembers>> {
        self.lanes.get(room)
    }

    /// `room`'s local members.
    pub(super) fn members(&self, room: &str) -> impl Iterator<Item = &Member> {
        self.lanes
            .get(room)
            .into_iter()
            .flatten()
            .flat_map(|lane| lane.iter())
    }

    /// Every chat member, then every echo client.
    pub(super) fn everyone(&self) -> impl Iterator<Item = &Member> {
        let chat = self.lanes.values().flatten().flat_map(|lane| lane.iter());
        chat.chain(self.echo.values())
    }

    /// Every chat member.
    pub(super) fn chat_members(&self) -> impl Iterator<Item = &Member> {
        self.lanes.values().flatten().flat_map(|lane| lane.iter())
    }

    /// The chat member `client`, wherever it is.
    pub(super) fn member(&self, client: ClientId) -> Option<&Member> {
        let (room, lane) = self.where_is.get(&client)?;
        self.lanes
            .get(room)?
            .get(*lane)?
            .iter()
            .find(|m| m.id == client)
    }

    /// The room `client` is in.
    pub(super) fn room_of(&self, client: ClientId) -> Option<&Arc<str>> {
        self.where_is.get(&client).map(|(room, _)| room)
    }

    /// How many local members `room` has, making it (with `lanes` empty
    /// lanes) if it is new.
    pub(super) fn open(&mut self, room: &Arc<str>, lanes: usize) -> usize {
        let room_lanes = self
            .lanes
            .entry(room.clone())
            .or_insert_with(|| (0..lanes).map(|_| Arc::new(Vec::new())).collect());
        self.relayed.entry(room.clone()).or_insert(0);
        room_lanes.iter().map(|l| l.len()).sum()
    }

    /// Puts `member` into `lane` of `room` (opened first).
    pub(super) fn insert(&mut self, room: Arc<str>, lane: usize, member: Member) {
        let id = member.id;
        if let Some(room_lanes) = self.lanes.get_mut(&room) {
            Arc::make_mut(&mut room_lanes[lane]).push(member);
            self.where_is.insert(id, (room, lane));
        }
    }

    /// Keeps an echo client (for shutdown).
    pub(super) fn insert_echo(&mut self, member: Member) {
        self.echo.insert(member.id, member);
    }

    /// Forgets an echo client; whether it was one.
    pub(super) fn remove_echo(&mut self, client: ClientId) -> bool {
        self.echo.remove(&client).is_some()
    }

    /// Takes `client` out of its room; `None` if it is in none (already
    /// evicted, say).
    pub(super) fn remove(&mut self, client: ClientId) -> Option<Left> {
        let (room, lane) = self.where_is.remove(&client)?;
        Some(self.remove_from(client, room, lane))
    }

    /// Takes every chat member out, one by one.
    pub(super) fn drain(&mut self) -> Vec<(ClientId, Left)> {
        let all: Vec<(ClientId, (Arc<str>, usize))> = self.where_is.drain().collect();
        self.echo.clear();
        all.into_iter()
            .map(|(client, (room, lane))| (client, self.remove_from(client, room, lane)))
            .collect()
    }

    fn remove_from(&mut self, client: ClientId, room: Arc<str>, lane: usize) -> Left {
        let mut name = None;
        let mut emptied = false;
        if let Some(room_lanes) = self.lanes.get_mut(&room) {
            Arc::make_mut(&mut room_lanes[lane]).retain(|m| {
                if m.id == client {
                    name = Some(m.join.name.clone());
                }
                m.id != client
            });
            if room_lanes.iter().all(|members| members.is_empty()) {
                self.lanes.remove(&room);
                self.relayed.remove(&room);
                self.remote.remove(&room);
                emptied = true;
            }
        }
        Left {
            room,
            name,
            emptied,
        }
    }

    /// Counts a message relayed to `room`.
    pub(super) fn relayed_one(&mut self, room: &str) {
        if let Some(n) = self.relayed.get_mut(room) {
            *n += 1;
        }
    }

    /// Messages relayed to `room` while it had clients.
    pub(super) fn relayed(&self, room: &str) -> u64 {
        self.relayed.get(room).copied().unwrap_or(0)
    }

    /// `room`'s clients on other instances.
    pub(super) fn remote(&self, room: &str) -> &[RemoteClient] {
        self.remote.get(room).map_or(&[], Vec::as_slice)
    }

    /// How many clients `room` has, here and on other instances.
    pub(super) fn clients(&self, room: &str) -> usize {
        self.members(room).count() + self.remote(room).len()
    }

    /// Sets `room`'s clients on other instances (its backfill).
    pub(super) fn set_remote(&mut self, room: Arc<str>, present: Vec<RemoteClient>) {
        self.remote.insert(room, present);
    }

    /// Another instance's client joined (`Some(name)`) or left `room`:
    /// the name to announce, or `None` when nothing changed.
    pub(super) fn remote_change(
        &mut self,
        room: &Arc<str>,
        key: Arc<str>,
        name: Option<Arc<str>>,
    ) -> Option<(&'static str, Arc<str>)> {
        if !self.contains(room) {
            return None;
        }
        let list = self.remote.entry(room.clone()).or_default();
        match name {
            Some(name) if !list.iter().any(|(k, _)| *k == key) => {
                list.push((key, name.clone()));
                Some(("join", name))
            }
            Some(_) => None,
            None => {
                let i = list.iter().position(|(k, _)| *k == key)?;
                Some(("leave", list.remove(i).1))
            }
        }
    }

    /// The keys of `instance`'s clients, by room.
    pub(super) fn remote_of(&self, instance: &str) -> Vec<(Arc<str>, Arc<str>)> {
        let prefix = format!("{instance}:");
        self.remote
            .iter()
            .flat_map(|(room, list)| {
                list.iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| (room.clone(), k.clone()))
            })
            .collect()
    }
}
