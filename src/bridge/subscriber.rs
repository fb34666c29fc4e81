//! The subscriber thread: the rooms this instance has clients in, what
//! other instances send to them, catch-up after an outage, backfill for a
//! new room, and other instances' presence.
//!
//! May touch: its two Redis connections, the hub (through `ToHub`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use log::{debug, info, warn};
use redis::Value;
use tungstenite::protocol::Role;

use crate::history;
use crate::memory::Memory;
use crate::session::frame::Frame;

use super::common::{EntryId, POLL, Retry, connect, parse_id, set_up, stream_entries};
use super::envelope::{
    CHANNEL_PREFIX, COMMANDS, PRESENCE_TTL, channel, decode, instance_key, presence_key, stream,
};
use super::handle::{Control, FromBridge, Rooms, Stats, ToHub};

/// Why a subscribed session ended.
enum Ended {
    /// The hub is gone: stop.
    Shutdown,
    /// Redis failed: reconnect.
    Lost(String),
}

/// The subscriber's state, kept across reconnections.
pub(super) struct Subscriber {
    pub(super) client: redis::Client,
    pub(super) control: Receiver<Control>,
    pub(super) hub: ToHub,
    pub(super) memory: Arc<Memory>,
    pub(super) instance: Arc<str>,
    pub(super) stats: Arc<Stats>,
    pub(super) history: history::Bounds,
    pub(super) rooms: Rooms,
    /// The newest stream entry seen per room: what a catch-up after an
    /// outage starts after, and what a message must be newer than.
    pub(super) last_seen: HashMap<Arc<str>, EntryId>,
    /// Other instances whose clients the hub shows: checked for life.
    pub(super) known: std::collections::HashSet<String>,
}

impl Subscriber {
    /// Connects, subscribes and relays until the hub is gone; each loss
    /// is retried at a deadline that room changes cannot move.
    pub(super) fn run(mut self) {
        let mut retry = Retry::now();
        let mut first = true;
        loop {
            // Room changes that come while disconnected still count.
            if !self.wait_until(retry.at()) {
                return;
            }
            let conns = connect(&self.client).and_then(|a| Ok((a, connect(&self.client)?)));
            match conns {
                Ok((mut pubsub, mut data)) => {
                    retry.succeeded();
                    match self.subscribed(&mut pubsub, &mut data) {
                        Ended::Shutdown => return,
                        Ended::Lost(why) => {
                            set_up(&self.stats.subscriber_up, false, "subscriber", &why)
                        }
                    }
                }
                Err(e) => {
                    if first {
                        let at = self.client.get_connection_info().addr().to_string();
                        warn!("redis bridge: subscriber cannot reach Redis at {at}: {e}; retrying");
                    }
                    let why = e.to_string();
                    set_up(&self.stats.subscriber_up, false, "subscriber", &why);
                }
            }
            first = false;
            retry.failed();
        }
    }

    /// Applies room changes until `deadline` (at least those already
    /// waiting); `false` when the hub is gone.
    fn wait_until(&mut self, deadline: std::time::Instant) -> bool {
        loop {
            let c = if std::time::Instant::now() >= deadline {
                match self.control.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Disconnected) => return false,
                }
            } else {
                match self.control.recv_deadline(deadline) {
                    Ok(c) => c,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return false,
                }
            };
            if !self.offline(c) {
                return false;
            }
        }
    }

    /// A room change while Redis is unreachable: remembered for the
    /// next session; a new room gets an empty backfill at once, so its
    /// first clients are not kept waiting. `false` when the hub is gone.
    fn offline(&mut self, c: Control) -> bool {
        self.rooms.apply(&c);
        match c {
            Control::Subscribe(room) => (self.hub)(FromBridge::Backfill {
                room,
                entries: Vec::new(),
                present: Vec::new(),
            }),
            Control::Unsubscribe(room) => {
                self.last_seen.remove(&room);
                true
            }
        }
    }

    /// One connected session: subscribe to the current rooms, catch up
    /// on what they missed, then relay messages and apply room changes
    /// until Redis fails or the hub stops.
    fn subscribed(&mut self, conn: &mut redis::Connection, data: &mut redis::Connection) -> Ended {
        let mut pubsub = conn.as_pubsub();
        if let Err(e) = pubsub.set_read_timeout(Some(POLL)) {
            return Ended::Lost(e.to_string());
        }
        if let Err(e) = pubsub.subscribe(COMMANDS) {
            return Ended::Lost(e.to_string());
        }
        let rooms: Vec<Arc<str>> = self.rooms.iter().cloned().collect();
        for room in &rooms {
            if let Err(e) = pubsub.subscribe(channel(room)) {
                return Ended::Lost(e.to_string());
            }
        }
        // Subscribed first, then read the streams: what is published
        // meanwhile comes twice and is recognised by its entry id.
        for room in &rooms {
            if let Err(e) = self.catch_up(data, room) {
                return Ended::Lost(e);
            }
        }
        let detail = format!(" ({} rooms)", rooms.len());
        set_up(&self.stats.subscriber_up, true, "subscriber", &detail);
        let mut next_check = std::time::Instant::now() + PRESENCE_TTL / 3;
        loop {
            loop {
                let c = match self.control.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ended::Shutdown,
                };
                if !self.rooms.apply(&c) {
                    continue;
                }
                let result = match &c {
                    Control::Subscribe(room) => self
                        .mark_start(data, room)
                        .and_then(|()| pubsub.subscribe(channel(room)).map_err(|e| e.to_string()))
                        .and_then(|()| self.backfill(data, room))
                        .and_then(|()| self.catch_up(data, room)),
                    Control::Unsubscribe(room) => {
                        self.last_seen.remove(room);
                        pubsub.unsubscribe(channel(room)).map_err(|e| e.to_string())
                    }
                };
                match result {
                    Ok(()) => {}
                    Err(e) if e == "shutdown" => return Ended::Shutdown,
                    Err(e) => return Ended::Lost(e),
                }
            }
            if std::time::Instant::now() >= next_check {
                next_check = std::time::Instant::now() + PRESENCE_TTL / 3;
                // A Redis that stopped answering is found here (the
                // pub/sub connection only ever waits).
                if let Err(e) = redis::cmd("PING").query::<String>(data) {
                    return Ended::Lost(e.to_string());
                }
                match self.check_instances(data) {
                    Ok(true) => {}
                    Ok(false) => return Ended::Shutdown,
                    Err(e) => return Ended::Lost(e),
                }
            }
            let msg = match pubsub.get_message() {
                Ok(msg) => msg,
                Err(e) if e.is_timeout() => continue,
                Err(e) => return Ended::Lost(e.to_string()),
            };
            if !self.on_message(&msg) {
                return Ended::Shutdown;
            }
        }
    }

    /// One message on a room's channel: another instance's presence
    /// change, or a chat message (skipped when its stream entry was seen
    /// already, by a catch-up). `false` when the hub is gone.
    fn on_message(&mut self, msg: &redis::Msg) -> bool {
        if msg.get_channel_name() == COMMANDS {
            return self.on_command(msg.get_payload_bytes());
        }
        let Some(room) = msg.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
            return true;
        };
        let room: Arc<str> = room.into();
        let payload = msg.get_payload_bytes();
        let Some(newline) = payload.iter().position(|&b| b == b'\n') else {
            return true;
        };
        if &payload[..newline] == b"p" {
            return self.remote_presence(room, &payload[newline + 1..]);
        }
        let id = std::str::from_utf8(&payload[..newline])
            .ok()
            .and_then(parse_id);
        if let Some(id) = id.filter(|&id| id != (0, 0)) {
            if self.last_seen.get(&room).is_some_and(|&seen| id <= seen) {
                return true;
            }
            self.last_seen.insert(room.clone(), id);
        }
        self.relay(room, &payload[newline + 1..])
    }

    /// A request of another instance: to close one of our clients, or a
    /// subject's clients. `false` when the hub is gone.
    fn on_command(&mut self, payload: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) else {
            return true;
        };
        let reason = v["reason"].as_str().unwrap_or("removed").to_string();
        let request = match v["op"].as_str() {
            Some("remove") => {
                let Some((instance, client)) = v["id"].as_str().and_then(|id| id.split_once(':'))
                else {
                    return true;
                };
                match client.parse() {
                    Ok(client) if instance == &*self.instance => {
                        FromBridge::Remove { client, reason }
                    }
                    _ => return true,
                }
            }
            Some("remove_user") if v["from"].as_str() != Some(&*self.instance) => {
                let Some(sub) = v["sub"].as_str() else {
                    return true;
                };
                let sub = sub.to_string();
                FromBridge::RemoveUser { sub, reason }
            }
            _ => return true,
        };
        (self.hub)(request)
    }

    /// Another instance's client joined or left a room: told to the
    /// hub (for presence notices); `false` when the hub is gone.
    fn remote_presence(&mut self, room: Arc<str>, event: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(event) else {
            return true;
        };
        let Some(key) = v["key"].as_str() else {
            return true;
        };
        let Some((instance, _)) = key.split_once(':') else {
            return true;
        };
        if instance == &*self.instance {
            return true;
        }
        self.known.insert(instance.to_string());
        let name = match v["event"].as_str() {
            Some("join") => Some(v["name"].as_str().unwrap_or("").into()),
            Some("leave") => None,
            _ => return true,
        };
        (self.hub)(FromBridge::RemotePresence {
            room,
            key: key.into(),
            name,
        })
    }

    /// Instances whose heartbeat has expired: their clients leave the
    /// hub's presence. `false` when the hub is gone.
    fn check_instances(&mut self, data: &mut redis::Connection) -> Result<bool, String> {
        let known: Vec<String> = self.known.iter().cloned().collect();
        for instance in known {
            let alive: i64 = redis::cmd("EXISTS")
                .arg(instance_key(&instance))
                .query(data)
                .map_err(|e| e.to_string())?;
            if alive == 0 {
                self.known.remove(&instance);
                info!("redis bridge: instance {instance} is gone; its clients leave");
                if !(self.hub)(FromBridge::InstanceGone(instance.into())) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Hands a message from another instance to the hub; `false` when
    /// the hub is gone. Our own messages (and foreign data) are skipped.
    fn relay(&self, room: Arc<str>, envelope: &[u8]) -> bool {
        let Some((origin, message)) = decode(envelope) else {
            debug!("redis bridge: a message in room {room:?} that is not ours");
            return true;
        };
        if origin == &*self.instance {
            return true;
        }
        let Some(frame) = Frame::data(Role::Server, &message) else {
            return true;
        };
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        (self.hub)(FromBridge::Remote {
            room,
            frame: frame.charged(&self.memory),
            message,
            instance: origin.into(),
        })
    }

    /// After an outage: what the room's stream got since the last entry
    /// seen, delivered once each, in order.
    fn catch_up(&mut self, data: &mut redis::Connection, room: &Arc<str>) -> Result<(), String> {
        let Some(&(ms, seq)) = self.last_seen.get(room) else {
            return Ok(());
        };
        let entries: Value = redis::cmd("XRANGE")
            .arg(stream(room))
            .arg(format!("({ms}-{seq}"))
            .arg("+")
            .query(data)
            .map_err(|e| e.to_string())?;
        let mut caught = 0;
        for (id, envelope) in stream_entries(&entries) {
            self.last_seen.insert(room.clone(), id);
            caught += 1;
            if !self.relay(room.clone(), &envelope) {
                return Err("shutdown".into());
            }
        }
        if caught > 0 {
            info!("redis bridge: room {room:?} caught up on {caught} messages from its stream");
        }
        Ok(())
    }

    /// Before subscribing to a new room: where its stream ends now. What
    /// other instances publish from here on is live for the room's first
    /// clients (who are waiting to join): what lands between this and the
    /// subscription is caught up from the stream, after the backfill.
    fn mark_start(&mut self, data: &mut redis::Connection, room: &Arc<str>) -> Result<(), String> {
        let last: Value = redis::cmd("XREVRANGE")
            .arg(stream(room))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query(data)
            .map_err(|e| e.to_string())?;
        let start = stream_entries(&last).first().map_or((0, 0), |e| e.0);
        self.last_seen.insert(room.clone(), start);
        Ok(())
    }

    /// A room this instance starts listening to: its stream's newest
    /// entries up to where `mark_start` found its end become the room's
    /// local history (the hub holds the room's first clients until this
    /// arrives).
    fn backfill(&mut self, data: &mut redis::Connection, room: &Arc<str>) -> Result<(), String> {
        let mut entries = Vec::new();
        if self.history.messages > 0 {
            let newest: Value = redis::cmd("XREVRANGE")
                .arg(stream(room))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(self.history.messages)
                .query(data)
                .map_err(|e| e.to_string())?;
            let mut got = stream_entries(&newest);
            got.reverse();
            // Later entries are live for the waiting clients: caught up next.
            let start = self.last_seen.get(room).copied().unwrap_or((0, 0));
            got.retain(|(id, _)| *id <= start);
            for (_, envelope) in got {
                if let Some((_, message)) = decode(&envelope)
                    && let Some(frame) = Frame::data(Role::Server, &message)
                {
                    entries.push((frame, message));
                }
            }
        }
        // Who is already there on other (live) instances.
        let mut present = Vec::new();
        let hash: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(presence_key(room))
            .query(data)
            .map_err(|e| e.to_string())?;
        for (key, entry) in hash {
            let Some((instance, _)) = key.split_once(':') else {
                continue;
            };
            if instance == &*self.instance {
                continue;
            }
            let alive: i64 = redis::cmd("EXISTS")
                .arg(instance_key(instance))
                .query(data)
                .map_err(|e| e.to_string())?;
            let name = serde_json::from_str::<serde_json::Value>(&entry)
                .ok()
                .and_then(|v| v["name"].as_str().map(Arc::<str>::from));
            if let (true, Some(name)) = (alive > 0, name) {
                self.known.insert(instance.to_string());
                present.push((Arc::<str>::from(key.as_str()), name));
            }
        }
        let backfill = FromBridge::Backfill {
            room: room.clone(),
            entries,
            present,
        };
        if (self.hub)(backfill) {
            Ok(())
        } else {
            Err("shutdown".to_string())
        }
    }
}
