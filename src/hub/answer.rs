//! What the hub answers and tells about who is where: the `/rooms`
//! queries and a room's history for the host program, presence notices
//! (through the lanes, in order with the room's messages), and other
//! instances' clients as the Redis bridge reports them.
//!
//! May touch: the hub's maps (read), the lanes (presence notices).

use std::sync::Arc;

use super::joins::present;
use super::{Hub, Query};
use crate::hub::fanout::Delivery;
use crate::presence;
use crate::session::outbox::Burst;

impl Hub {
    fn summary(&self, room: &str) -> presence::RoomSummary {
        presence::RoomSummary {
            name: room.to_string(),
            clients: self.rooms.members(room).count(),
            messages: self.rooms.relayed(room),
            history: self.histories.held(room).0,
        }
    }

    /// `room`'s local members, oldest first (their `id` left empty).
    fn member_infos(&self, room: &str) -> Vec<presence::MemberInfo> {
        let mut members: Vec<presence::MemberInfo> = self
            .rooms
            .members(room)
            .map(|m| {
                let p = present(m);
                presence::MemberInfo {
                    id: String::new(),
                    client: Some(m.id),
                    name: p.name.to_string(),
                    sub: m.join.sub.as_deref().map(str::to_string),
                    joined_ms: presence::millis(p.joined),
                }
            })
            .collect();
        members.sort_by_key(|m| (m.joined_ms, m.client));
        members
    }

    pub(super) fn answer(&mut self, query: Query) {
        self.sweep();
        match query {
            Query::Rooms(reply) => {
                let rooms = self.rooms.names();
                let _ = reply.send(rooms.into_iter().map(|r| self.summary(r)).collect());
            }
            Query::Room(room, reply) => {
                let known = self.rooms.contains(&room) || self.histories.held(&room).0 > 0;
                let info = known.then(|| presence::RoomInfo {
                    summary: self.summary(&room),
                    members: self.member_infos(&room),
                });
                let _ = reply.send(info);
            }
            Query::History(room, reply) => {
                let _ = reply.send(self.histories.messages(&room));
            }
            Query::Totals(reply) => {
                let history = self.histories.enabled().then(|| self.histories.totals());
                let _ = reply.send((self.rooms.count(), history));
            }
        }
    }

    /// Another instance's client joined (`Some(name)`) or left `room`:
    /// announced to the room's presence clients.
    pub(super) fn remote_presence(
        &mut self,
        room: Arc<str>,
        key: Arc<str>,
        name: Option<Arc<str>>,
    ) {
        if let Some((event, who)) = self.rooms.remote_change(&room, key, name) {
            let clients = self.rooms.clients(&room);
            self.notify(&room, event, &who, clients);
        }
    }

    /// Another instance stopped: its clients leave every room.
    pub(super) fn instance_gone(&mut self, instance: &str) {
        for (room, key) in self.rooms.remote_of(instance) {
            self.remote_presence(room, key, None);
        }
    }

    /// Tells the room's presence clients about a join or leave, in order
    /// with its messages (through the lanes, as every delivery).
    pub(super) fn notify(&mut self, room: &Arc<str>, event: &str, name: &str, clients: usize) {
        let Some(room_lanes) = self.rooms.lanes(room) else {
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
