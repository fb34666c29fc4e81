//! What the hub answers and tells about who is where: the `/rooms`
//! queries and a room's history for the host program, presence notices
//! (through the lanes, in order with the room's messages), and other
//! instances' clients as the Redis bridge reports them.
//!
//! May touch: the hub's maps (read), the lanes (presence notices).

use std::sync::Arc;

use super::{Hub, Query, present};
use crate::hub::fanout::Delivery;
use crate::hub::member::Member;
use crate::presence;
use crate::session::outbox::Burst;

impl Hub {
    pub(super) fn members(&self, room: &str) -> impl Iterator<Item = &Member> {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .flat_map(|lane| lane.iter())
    }

    fn summary<'a>(&'a self, room: &'a str) -> presence::RoomSummary<'a> {
        presence::RoomSummary {
            name: room,
            clients: self.members(room).count(),
            relayed: self.relayed.get(room).copied().unwrap_or(0),
            history: self.histories.held(room).0,
        }
    }

    pub(super) fn answer(&mut self, query: Query) {
        self.sweep();
        match query {
            Query::Rooms(reply) => {
                let mut names: Vec<&Arc<str>> = self.rooms.keys().collect();
                names.sort();
                let json = presence::rooms_json(names.into_iter().map(|r| self.summary(r)));
                let _ = reply.send(json);
            }
            Query::Room(room, reply) => {
                let known = self.rooms.contains_key(&room) || self.histories.held(&room).0 > 0;
                let info = known.then(|| {
                    let summary = self.summary(&room);
                    presence::RoomInfo {
                        name: room.to_string(),
                        clients: summary.clients,
                        relayed: summary.relayed,
                        history: summary.history,
                        members: self
                            .members(&room)
                            .map(|m| {
                                let p = present(m);
                                (p.name.to_string(), presence::millis(p.joined))
                            })
                            .collect(),
                    }
                });
                let _ = reply.send(info);
            }
            Query::History(room, reply) => {
                let _ = reply.send(self.histories.messages(&room));
            }
            Query::Totals(reply) => {
                let history = self.histories.enabled().then(|| self.histories.totals());
                let _ = reply.send((self.rooms.len(), history));
            }
        }
    }

    /// Clients of `room` on other instances.
    pub(super) fn remote_count(&self, room: &str) -> usize {
        self.remote.get(room).map_or(0, Vec::len)
    }

    pub(super) fn remote_presence(
        &mut self,
        room: Arc<str>,
        key: Arc<str>,
        name: Option<Arc<str>>,
    ) {
        if !self.rooms.contains_key(&room) {
            return;
        }
        let list = self.remote.entry(room.clone()).or_default();
        let (event, who) = match name {
            Some(name) => {
                if list.iter().any(|(k, _)| *k == key) {
                    return;
                }
                list.push((key, name.clone()));
                ("join", name)
            }
            None => match list.iter().position(|(k, _)| *k == key) {
                Some(i) => ("leave", list.remove(i).1),
                None => return,
            },
        };
        let clients = self.members(&room).count() + self.remote_count(&room);
        self.notify(&room, event, &who, clients);
    }

    pub(super) fn instance_gone(&mut self, instance: &str) {
        let prefix = format!("{instance}:");
        let rooms: Vec<Arc<str>> = self.remote.keys().cloned().collect();
        for room in rooms {
            let gone: Vec<Arc<str>> = self.remote[&room]
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, _)| k.clone())
                .collect();
            for key in gone {
                self.remote_presence(room.clone(), key, None);
            }
        }
    }

    /// Tells the room's presence clients about a join or leave, in order
    /// with its messages (through the lanes, as every delivery).
    pub(super) fn notify(&mut self, room: &Arc<str>, event: &str, name: &str, clients: usize) {
        let Some(room_lanes) = self.rooms.get(room) else {
            return;
        };
        if !room_lanes
            .iter()
            .flat_map(|l| l.iter())
            .any(|m| m.join.presence)
        {
            return;
        }
        let (frame, _) = presence::change(event, name, clients);
        let frames: Burst = Arc::from(vec![(None, frame)]);
        let mut delivery = Delivery::new(room.clone(), frames);
        delivery.presence_only = true;
        self.lanes.dispatch(room_lanes, delivery);
    }
}
