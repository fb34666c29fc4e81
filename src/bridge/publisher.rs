//! The publisher thread: every local message into its room's stream and
//! onto its channel, presence entries and the instance's heartbeat, and
//! the outage backlog.
//!
//! It is a [`Publisher`] with one method per state: [`down`] (waiting for
//! its retry deadline, keeping what arrives in the backlog), [`flushing`]
//! (connected, sending the backlog oldest first) and [`idle`] (connected,
//! waiting for work until the next heartbeat). Invariant: every wait is
//! bounded by a deadline that traffic cannot move — a busy room never
//! postpones a reconnection or a heartbeat.
//!
//! May touch: its own Redis connection.
//!
//! [`down`]: Publisher::down
//! [`flushing`]: Publisher::flushing
//! [`idle`]: Publisher::idle

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, warn};
use redis::Value;

use crate::history;

use super::common::{Retry, connect, now_ms, set_up};
use super::envelope::{COMMANDS, PRESENCE_TTL, channel, instance_key, presence_key, stream};
use super::handle::{Outgoing, Stats};

/// Messages the publisher keeps while Redis is unreachable, to send
/// when it is back (the oldest go first when it is full).
pub(super) const BACKLOG: usize = 4096;

/// Appends to the room's stream (trimmed by count and age, expiring
/// with the age) and publishes with the entry's id in front, in one
/// step: every instance sees the stream and the channel in one order.
pub(super) const PUBLISH_SCRIPT: &str = "\
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[3])
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. '\\n' .. ARGV[3])
return id";

/// A presence entry's key: (room, local client id).
type Entry = (Arc<str>, u64);

/// The publisher's state, kept across reconnections.
pub(super) struct Publisher {
    client: redis::Client,
    queue: Receiver<Outgoing>,
    stats: Arc<Stats>,
    history: history::Bounds,
    instance: Arc<str>,
    /// The connection, while Redis answers.
    conn: Option<redis::Connection>,
    /// When the next connection attempt is due, while `conn` is `None`.
    retry: Retry,
    /// When the instance's heartbeat is next due, while connected.
    next_beat: Instant,
    /// Messages not yet published, oldest first: (room, payload).
    backlog: VecDeque<(Arc<str>, Vec<u8>)>,
    /// This instance's presence entries, written again after a reconnect
    /// (a restarted Redis has lost them).
    present: HashMap<Entry, String>,
    /// Entries removed while Redis was unreachable: removed there on reconnect.
    gone: Vec<Entry>,
    /// Requests for other instances made while Redis was unreachable
    /// (at most `BACKLOG`): sent on reconnect.
    commands: VecDeque<String>,
    /// Whether a connection attempt was made yet (the first failure is
    /// logged as a warning, with its reason).
    tried: bool,
}

impl Publisher {
    pub(super) fn new(
        client: redis::Client,
        queue: Receiver<Outgoing>,
        stats: Arc<Stats>,
        history: history::Bounds,
        instance: Arc<str>,
    ) -> Publisher {
        Publisher {
            client,
            queue,
            stats,
            history,
            instance,
            conn: None,
            retry: Retry::now(),
            next_beat: Instant::now(),
            backlog: VecDeque::new(),
            present: HashMap::new(),
            gone: Vec::new(),
            commands: VecDeque::new(),
            tried: false,
        }
    }

    /// Publishes what the hub hands over, in order, until the hub is gone.
    pub(super) fn run(mut self) {
        loop {
            let go_on = match (&self.conn, self.backlog.is_empty()) {
                (None, _) => self.down(),
                (Some(_), false) => self.flushing(),
                (Some(_), true) => self.idle(),
            };
            if !go_on {
                break;
            }
        }
        self.leave();
        debug!("redis bridge: publisher stopped");
    }

    /// Redis is unreachable: what arrives waits in the backlog, and the
    /// next attempt is made at its deadline, however busy the queue.
    /// `false` when the hub is gone.
    fn down(&mut self) -> bool {
        if Instant::now() >= self.retry.at() {
            self.try_connect();
            return true;
        }
        match self.queue.recv_deadline(self.retry.at()) {
            Ok(out) => self.take(out),
            Err(RecvTimeoutError::Timeout) => self.try_connect(),
            Err(RecvTimeoutError::Disconnected) => return false,
        }
        true
    }

    /// Connected with a backlog: the oldest message goes first. What the
    /// hub hands over meanwhile joins the backlog's end (so order holds)
    /// once the backlog is sent.
    fn flushing(&mut self) -> bool {
        if Instant::now() >= self.next_beat {
            self.beat();
            return true;
        }
        let Some((room, payload)) = self.backlog.front() else {
            return true;
        };
        let Some(c) = self.conn.as_mut() else {
            return true;
        };
        match publish(c, self.history, room, payload) {
            Ok(()) => {
                self.backlog.pop_front();
                self.stats.published.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if is_connection_error(&e) => self.lost(&e),
            Err(e) => {
                // Redis refused this message (out of memory, say): it is
                // dropped, the connection and the rest go on.
                self.backlog.pop_front();
                self.stats
                    .drop_one(&format!("Redis refused a message: {e}"));
            }
        }
        true
    }

    /// Connected, nothing to send: waits for the hub until the heartbeat
    /// is due. `false` when the hub is gone.
    fn idle(&mut self) -> bool {
        if Instant::now() >= self.next_beat {
            self.beat();
            return true;
        }
        match self.queue.recv_deadline(self.next_beat) {
            Ok(out) => self.take(out),
            Err(RecvTimeoutError::Timeout) => self.beat(),
            Err(RecvTimeoutError::Disconnected) => return false,
        }
        true
    }

    /// One thing from the hub: a message joins the backlog (the oldest
    /// is dropped when it is full); presence is state, applied to the
    /// local map always and to Redis when it is there.
    fn take(&mut self, out: Outgoing) {
        match out {
            Outgoing::Message { room, payload } => {
                if self.backlog.len() == BACKLOG {
                    self.backlog.pop_front();
                    self.stats.drop_one("the outage backlog is full");
                }
                self.backlog.push_back((room, payload));
            }
            Outgoing::Present {
                room,
                client,
                entry,
            } => {
                let field = self.field(client);
                if let Some(c) = self.conn.as_mut() {
                    let name = serde_json::from_str::<serde_json::Value>(&entry)
                        .ok()
                        .and_then(|v| v["name"].as_str().map(String::from))
                        .unwrap_or_default();
                    let event = serde_json::json!({"event": "join", "key": field, "name": name});
                    presence_change(c, &room, &field, Some(&entry), &event);
                }
                self.present.insert((room, client), entry);
            }
            Outgoing::Absent { room, client } => {
                let field = self.field(client);
                match self.conn.as_mut() {
                    Some(c) => {
                        let event = serde_json::json!({"event": "leave", "key": field});
                        presence_change(c, &room, &field, None, &event);
                    }
                    None => self.gone.push((room.clone(), client)),
                }
                self.present.remove(&(room, client));
            }
            Outgoing::Command(command) => {
                if self.commands.len() == BACKLOG {
                    self.commands.pop_front();
                }
                self.commands.push_back(command);
                self.send_commands();
            }
        }
    }

    /// Sends the waiting requests for other instances, while connected.
    fn send_commands(&mut self) {
        while let (Some(c), Some(command)) = (self.conn.as_mut(), self.commands.front()) {
            let sent = redis::cmd("PUBLISH")
                .arg(COMMANDS)
                .arg(command)
                .query::<i64>(c);
            match sent {
                Ok(_) => {
                    self.commands.pop_front();
                }
                Err(e) => self.lost(&e),
            }
        }
    }

    /// A connection attempt: connect, heartbeat, and put this instance's
    /// presence back (a restarted Redis has lost it).
    fn try_connect(&mut self) {
        let first = !self.tried;
        self.tried = true;
        match self.connect() {
            Ok(c) => {
                self.conn = Some(c);
                self.retry.succeeded();
                self.next_beat = Instant::now() + PRESENCE_TTL / 3;
                set_up(&self.stats.publisher_up, true, "publisher", "");
                self.send_commands();
            }
            Err(e) => {
                if first {
                    let at = self.client.get_connection_info().addr().to_string();
                    warn!("redis bridge: publisher cannot reach Redis at {at}: {e}; retrying");
                }
                set_up(&self.stats.publisher_up, false, "publisher", &e.to_string());
                self.retry.failed();
            }
        }
    }

    fn connect(&mut self) -> redis::RedisResult<redis::Connection> {
        let mut c = connect(&self.client)?;
        heartbeat(&mut c, &self.instance)?;
        if !self.present.is_empty() || !self.gone.is_empty() {
            let mut pipe = redis::pipe();
            for ((room, id), entry) in &self.present {
                pipe.cmd("HSET")
                    .arg(presence_key(room))
                    .arg(self.field(*id))
                    .arg(entry)
                    .ignore();
            }
            for (room, id) in &self.gone {
                pipe.cmd("HDEL")
                    .arg(presence_key(room))
                    .arg(self.field(*id))
                    .ignore();
            }
            pipe.query::<()>(&mut c)?;
            self.gone.clear();
        }
        Ok(c)
    }

    /// The instance's heartbeat, which also finds a connection that died
    /// while there was nothing to publish.
    fn beat(&mut self) {
        self.next_beat = Instant::now() + PRESENCE_TTL / 3;
        let Some(c) = self.conn.as_mut() else { return };
        if let Err(e) = heartbeat(c, &self.instance) {
            self.lost(&e);
        }
    }

    /// The connection failed: logged once, and retried on the timer.
    fn lost(&mut self, e: &redis::RedisError) {
        self.conn = None;
        set_up(&self.stats.publisher_up, false, "publisher", &e.to_string());
        self.retry.failed();
    }

    /// Leaving for good: this instance's entries go now, not at expiry.
    fn leave(&mut self) {
        let Some(c) = self.conn.as_mut() else { return };
        let mut pipe = redis::pipe();
        for (room, id) in self.present.keys() {
            pipe.cmd("HDEL")
                .arg(presence_key(room))
                .arg(format!("{}:{id}", self.instance))
                .ignore();
        }
        pipe.cmd("DEL").arg(instance_key(&self.instance)).ignore();
        let _ = pipe.query::<()>(c);
    }

    /// A local client's presence field: `{instance}:{client}`.
    fn field(&self, client: u64) -> String {
        format!("{}:{client}", self.instance)
    }
}

/// Whether `e` means the connection is gone (rather than Redis refusing
/// one command).
fn is_connection_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
}

/// The key that says this instance is alive, for [`PRESENCE_TTL`].
fn heartbeat(c: &mut redis::Connection, instance: &str) -> redis::RedisResult<()> {
    let ttl_ms = u64::try_from(PRESENCE_TTL.as_millis()).unwrap_or(6000);
    redis::cmd("SET")
        .arg(instance_key(instance))
        .arg(1)
        .arg("PX")
        .arg(ttl_ms)
        .query::<Value>(c)
        .map(|_| ())
}

/// One message into its room's stream (with history on) and onto its
/// channel, with the stream entry's id in front (`0-0` without history).
fn publish(
    c: &mut redis::Connection,
    history: history::Bounds,
    room: &str,
    payload: &[u8],
) -> redis::RedisResult<()> {
    if history.messages == 0 {
        let mut framed = b"0-0\n".to_vec();
        framed.extend_from_slice(payload);
        return redis::cmd("PUBLISH")
            .arg(channel(room))
            .arg(framed)
            .query::<i64>(c)
            .map(|_| ());
    }
    let age_ms = u64::try_from(history.age.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let oldest = now_ms().saturating_sub(age_ms);
    redis::cmd("EVAL")
        .arg(PUBLISH_SCRIPT)
        .arg(2)
        .arg(stream(room))
        .arg(channel(room))
        .arg(history.messages)
        .arg(age_ms)
        .arg(payload)
        .arg(oldest)
        .query::<Value>(c)
        .map(|_| ())
}

/// Writes a presence entry (`Some`) or removes it (`None`), and tells
/// the room's other instances, in one round trip. Best effort: a lost
/// change is put right when the publisher reconnects.
pub(super) fn presence_change(
    c: &mut redis::Connection,
    room: &str,
    field: &str,
    entry: Option<&str>,
    event: &serde_json::Value,
) {
    let mut pipe = redis::pipe();
    match entry {
        Some(entry) => pipe
            .cmd("HSET")
            .arg(presence_key(room))
            .arg(field)
            .arg(entry),
        None => pipe.cmd("HDEL").arg(presence_key(room)).arg(field),
    };
    pipe.ignore()
        .cmd("PUBLISH")
        .arg(channel(room))
        .arg(format!("p\n{event}"))
        .ignore();
    let _ = pipe.query::<()>(c);
}
