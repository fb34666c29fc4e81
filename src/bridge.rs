//! The Redis bridge: several wshub instances share their rooms through
//! Redis pub/sub (`Config::redis`), as Centrifugo's Redis engine and
//! socket.io's Redis adapter do.
//!
//! The hub reaches it through one narrow type, [`Bridge`]: `subscribe` /
//! `unsubscribe` when a room gets its first local client or loses its last,
//! and `publish` for every message sent to a room on this instance (by a
//! client or the host program). None of them waits: publishing is a
//! `try_send` into a bounded queue (what does not fit is dropped and
//! counted), subscriptions go through an unbounded queue of small commands.
//! Two threads do the Redis work with the `redis` crate's blocking API: the
//! publisher (one connection, `PUBLISH`) and the subscriber (another
//! connection in pub/sub mode, with a read timeout so that it notices room
//! changes and shutdown). Messages from other instances go into the hub's
//! inbox (through [`ToHub`]), and are delivered to local clients only.
//!
//! On the wire: channel `wshub:room:{room}`, payload `WSH1`, one byte of
//! message type (1 text, 2 binary), one byte of instance-id length, the
//! instance id, then the message's bytes unchanged. An instance drops its
//! own messages when they come back.
//!
//! Redis going away: local delivery is not touched (nothing here blocks the
//! hub); each thread logs the loss once, retries with a capped backoff,
//! and logs when it is back; the subscriber then subscribes to the current
//! rooms again. Meanwhile delivery across instances is at most once: what
//! is published while Redis is unreachable is dropped (counted).
//!
//! May touch: its two Redis connections, the hub's inbox (sending only).

// Without the `redis` feature only the hub-facing half is used.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Sender, TrySendError};

use crate::wire::Frame;
use log::warn;
use tungstenite::protocol::Message;

/// Prefix of every room's Redis channel.
pub(crate) const CHANNEL_PREFIX: &str = "wshub:room:";

/// Messages waiting for the publisher; more are dropped (and counted).
const PUBLISH_QUEUE: usize = 4096;

const MAGIC: &[u8; 4] = b"WSH1";

/// The Redis channel of `room`.
pub(crate) fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

/// Wraps a message for other instances.
pub(crate) fn encode(instance: &str, message: &Message) -> Option<Vec<u8>> {
    let (kind, bytes): (u8, &[u8]) = match message {
        Message::Text(t) => (1, t.as_bytes()),
        Message::Binary(b) => (2, b),
        _ => return None,
    };
    let id = instance.as_bytes();
    let mut out = Vec::with_capacity(6 + id.len() + bytes.len());
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.push(u8::try_from(id.len()).ok()?);
    out.extend_from_slice(id);
    out.extend_from_slice(bytes);
    Some(out)
}

/// Unwraps a message from another instance: its instance id and the message.
pub(crate) fn decode(payload: &[u8]) -> Option<(&str, Message)> {
    let rest = payload.strip_prefix(MAGIC)?;
    let (&kind, rest) = rest.split_first()?;
    let (&id_len, rest) = rest.split_first()?;
    let (id, bytes) = rest.split_at_checked(usize::from(id_len))?;
    let id = std::str::from_utf8(id).ok()?;
    let message = match kind {
        1 => Message::text(std::str::from_utf8(bytes).ok()?.to_string()),
        2 => Message::binary(bytes.to_vec()),
        _ => return None,
    };
    Some((id, message))
}

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
}

/// The Redis hash of who is in `room`, on every instance: field
/// `{instance}:{client}`, value `{"name":…,"joined_ms":…}`.
pub(crate) fn presence_key(room: &str) -> String {
    format!("wshub:presence:{room}")
}

/// The key an instance keeps alive while it runs; entries of instances
/// whose key has expired are not shown.
pub(crate) fn instance_key(instance: &str) -> String {
    format!("wshub:instance:{instance}")
}

/// How long an instance's presence outlives its last heartbeat: a crashed
/// instance's clients leave every other instance's `/rooms` within this.
pub(crate) const PRESENCE_TTL: std::time::Duration = std::time::Duration::from_secs(6);

/// The Redis stream that keeps `room`'s history.
pub(crate) fn stream(room: &str) -> String {
    format!("wshub:history:{room}")
}

/// The hub's handle on the bridge. Dropping it stops the bridge's threads.
pub(crate) struct Bridge {
    instance: Arc<str>,
    publish: Option<Sender<Outgoing>>,
    control: Option<Sender<Control>>,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
}

impl Bridge {
    /// The bridge's counters and connection state.
    pub(crate) fn stats(&self) -> &Arc<Stats> {
        &self.stats
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
            Err(TrySendError::Full(_)) => self.stats.drop_one("the publish queue is full"),
            Err(TrySendError::Disconnected(_)) => self.stats.drop_one("the publisher stopped"),
        }
    }

    /// Records a local client in the room's shared presence.
    pub(crate) fn present(&self, room: &Arc<str>, client: u64, name: &str, joined_ms: u64) {
        if let Some(publish) = &self.publish {
            let entry = serde_json::json!({ "name": name, "joined_ms": joined_ms }).to_string();
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

    /// Starts listening to `room` on other instances.
    pub(crate) fn subscribe(&self, room: Arc<str>) {
        if let Some(control) = &self.control {
            let _ = control.send(Control::Subscribe(room));
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
pub(crate) struct Rooms(HashSet<Arc<str>>);

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

#[cfg(feature = "redis")]
pub(crate) use self::redis_threads::{presence_of, start};

/// Without the `redis` feature there is no shared presence.
#[cfg(not(feature = "redis"))]
pub(crate) fn presence_of(_url: &str, _room: &str) -> Option<Vec<(String, u64)>> {
    None
}

/// Without the `redis` feature there is no bridge to start.
#[cfg(not(feature = "redis"))]
pub(crate) fn start(
    _url: &str,
    _hub: ToHub,
    _memory: Arc<crate::memory::Memory>,
    _history: crate::history::Bounds,
) -> crate::Result<Bridge> {
    Err(crate::Error::Config(
        "this build has no Redis support (the `redis` cargo feature)".into(),
    ))
}

#[cfg(feature = "redis")]
mod redis_threads {
    //! The two threads that talk to Redis.

    use std::collections::{HashMap, VecDeque};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError, bounded, unbounded};
    use log::{debug, info, warn};
    use redis::Value;
    use tungstenite::protocol::Role;

    use super::*;
    use crate::history;
    use crate::memory::Memory;

    /// How long the subscriber blocks in a read before it looks at room
    /// changes and shutdown.
    const POLL: Duration = Duration::from_millis(100);
    /// Bound on connecting to Redis.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Reconnection backoff: doubles from the first to the cap.
    const BACKOFF_FIRST: Duration = Duration::from_millis(100);
    const BACKOFF_CAP: Duration = Duration::from_secs(5);
    /// Messages the publisher keeps while Redis is unreachable, to send
    /// when it is back (the oldest go first when it is full).
    const BACKLOG: usize = 4096;

    /// Appends to the room's stream (trimmed by count and age, expiring
    /// with the age) and publishes with the entry's id in front, in one
    /// step: every instance sees the stream and the channel in one order.
    const PUBLISH_SCRIPT: &str = "\
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[3])
redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], id .. '\\n' .. ARGV[3])
return id";

    /// A stream entry id, `ms-seq`, in Redis's order.
    type EntryId = (u64, u64);

    fn parse_id(s: &str) -> Option<EntryId> {
        let (ms, seq) = s.split_once('-')?;
        Some((ms.parse().ok()?, seq.parse().ok()?))
    }

    /// Checks `url` and starts the bridge's threads. A URL that cannot
    /// work fails here; an unreachable server is retried in the background.
    pub(crate) fn start(
        url: &str,
        hub: ToHub,
        memory: Arc<Memory>,
        history: history::Bounds,
    ) -> crate::Result<Bridge> {
        let client = redis::Client::open(url)
            .map_err(|e| crate::Error::Config(format!("--redis {url:?}: {e}")))?;
        let instance: Arc<str> = format!("{:016x}", rand::random::<u64>()).into();
        let where_ = client.get_connection_info().addr().to_string();
        info!("redis bridge: instance {instance}, Redis at {where_}");
        let stats = Arc::new(Stats::default());
        let (publish_tx, publish_rx) = bounded(PUBLISH_QUEUE);
        let (control_tx, control_rx) = unbounded();
        let mut threads = Vec::new();
        let (c, s) = (client.clone(), stats.clone());
        threads.push(
            std::thread::Builder::new()
                .name("wshub-redis-pub".into())
                .spawn({
                    let id = instance.clone();
                    move || publisher(c, publish_rx, s, history, id)
                })?,
        );
        let sub = Subscriber {
            client,
            control: control_rx,
            hub,
            memory,
            instance: instance.clone(),
            stats: stats.clone(),
            history,
            rooms: Rooms::default(),
            last_seen: HashMap::new(),
            known: Default::default(),
        };
        let subscriber = std::thread::Builder::new()
            .name("wshub-redis-sub".into())
            .spawn(move || sub.run());
        match subscriber {
            Ok(t) => threads.push(t),
            Err(e) => {
                drop(publish_tx);
                for t in threads {
                    let _ = t.join();
                }
                return Err(e.into());
            }
        }
        Ok(Bridge {
            instance,
            publish: Some(publish_tx),
            control: Some(control_tx),
            stats,
            threads,
        })
    }

    /// Logs a change of a connection's state, once per change.
    fn set_up(flag: &AtomicBool, up: bool, what: &str, detail: &str) {
        let was = flag.swap(up, Ordering::AcqRel);
        match (was, up) {
            (false, true) => info!("redis bridge: {what} connected{detail}"),
            (true, false) => warn!("redis bridge: {what} lost Redis: {detail}; retrying"),
            _ => {}
        }
    }

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Publishes what the hub hands over, in order: each message goes into
    /// its room's stream and onto its channel. While Redis is unreachable
    /// the publisher keeps messages in a backlog (at most [`BACKLOG`]) and
    /// reconnects on a timer; when Redis is back it sends the backlog
    /// first, so a short outage loses nothing across instances. A publish
    /// that fails is retried once on a fresh connection (Redis may have
    /// restarted while the publisher was idle).
    fn publisher(
        client: redis::Client,
        queue: Receiver<Outgoing>,
        stats: Arc<Stats>,
        history: history::Bounds,
        instance: Arc<str>,
    ) {
        // This instance's presence entries, written again after a reconnect
        // (a restarted Redis has lost them).
        let mut present: HashMap<(Arc<str>, u64), String> = HashMap::new();
        // Entries removed while Redis was unreachable: removed there on reconnect.
        let mut gone: Vec<(Arc<str>, u64)> = Vec::new();
        let ttl_ms = u64::try_from(PRESENCE_TTL.as_millis()).unwrap_or(6000);
        let field = |client: u64| format!("{instance}:{client}");
        let heartbeat = |c: &mut redis::Connection| -> redis::RedisResult<()> {
            redis::cmd("SET")
                .arg(instance_key(&instance))
                .arg(1)
                .arg("PX")
                .arg(ttl_ms)
                .query::<Value>(c)
                .map(|_| ())
        };
        let connect = |stats: &Stats,
                       present: &HashMap<(Arc<str>, u64), String>,
                       gone: &mut Vec<(Arc<str>, u64)>| {
            let c = client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .and_then(|mut c| {
                    heartbeat(&mut c)?;
                    if !present.is_empty() || !gone.is_empty() {
                        let mut pipe = redis::pipe();
                        for ((room, id), entry) in present {
                            pipe.cmd("HSET")
                                .arg(presence_key(room))
                                .arg(field(*id))
                                .arg(entry)
                                .ignore();
                        }
                        for (room, id) in gone.iter() {
                            pipe.cmd("HDEL")
                                .arg(presence_key(room))
                                .arg(field(*id))
                                .ignore();
                        }
                        pipe.query::<()>(&mut c)?;
                        gone.clear();
                    }
                    Ok(c)
                });
            match c {
                Ok(c) => {
                    set_up(&stats.publisher_up, true, "publisher", "");
                    Some(c)
                }
                Err(e) => {
                    set_up(&stats.publisher_up, false, "publisher", &e.to_string());
                    None
                }
            }
        };
        let age_ms = u64::try_from(history.age.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let publish =
            |c: &mut redis::Connection, room: &str, payload: &[u8]| -> redis::RedisResult<()> {
                if history.messages == 0 {
                    let mut framed = b"0-0\n".to_vec();
                    framed.extend_from_slice(payload);
                    return redis::cmd("PUBLISH")
                        .arg(channel(room))
                        .arg(framed)
                        .query::<i64>(c)
                        .map(|_| ());
                }
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
            };
        let mut conn = connect(&stats, &present, &mut gone);
        if conn.is_none() {
            warn!("redis bridge: publisher cannot reach Redis yet; retrying");
        }
        // Messages kept while Redis is unreachable: (room, payload).
        let mut backlog: VecDeque<(Arc<str>, Vec<u8>)> = VecDeque::new();
        let mut backoff = BACKOFF_FIRST;
        let beat_every = PRESENCE_TTL / 3;
        let mut next_beat = std::time::Instant::now() + beat_every;
        loop {
            // Presence changes are state, not messages: they are applied to
            // the local map always, and to Redis when it is there.
            let take = |out: Outgoing,
                        present: &mut HashMap<(Arc<str>, u64), String>,
                        gone: &mut Vec<(Arc<str>, u64)>,
                        backlog: &mut VecDeque<(Arc<str>, Vec<u8>)>,
                        conn: &mut Option<redis::Connection>| {
                match out {
                    Outgoing::Message { room, payload } => {
                        if backlog.len() == BACKLOG {
                            backlog.pop_front();
                            stats.drop_one("the outage backlog is full");
                        }
                        backlog.push_back((room, payload));
                    }
                    Outgoing::Present {
                        room,
                        client,
                        entry,
                    } => {
                        if let Some(c) = conn.as_mut() {
                            let name = serde_json::from_str::<serde_json::Value>(&entry)
                                .ok()
                                .and_then(|v| v["name"].as_str().map(String::from))
                                .unwrap_or_default();
                            let event = serde_json::json!(
                                {"event": "join", "key": field(client), "name": name}
                            );
                            presence_change(c, &room, &field(client), Some(&entry), &event);
                        }
                        present.insert((room, client), entry);
                    }
                    Outgoing::Absent { room, client } => {
                        match conn.as_mut() {
                            Some(c) => {
                                let event =
                                    serde_json::json!({"event": "leave", "key": field(client)});
                                presence_change(c, &room, &field(client), None, &event);
                            }
                            None => gone.push((room.clone(), client)),
                        }
                        present.remove(&(room, client));
                    }
                }
            };
            if conn.is_none() {
                match queue.recv_timeout(backoff) {
                    Ok(out) => take(out, &mut present, &mut gone, &mut backlog, &mut conn),
                    Err(RecvTimeoutError::Timeout) => {
                        conn = connect(&stats, &present, &mut gone);
                        backoff = match conn {
                            Some(_) => BACKOFF_FIRST,
                            None => (backoff * 2).min(BACKOFF_CAP),
                        };
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                continue;
            }
            if backlog.is_empty() {
                let wait = next_beat.saturating_duration_since(std::time::Instant::now());
                match queue.recv_timeout(wait) {
                    Ok(out) => take(out, &mut present, &mut gone, &mut backlog, &mut conn),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            if std::time::Instant::now() >= next_beat {
                next_beat = std::time::Instant::now() + beat_every;
                if let Some(c) = conn.as_mut()
                    && let Err(e) = heartbeat(c)
                {
                    set_up(&stats.publisher_up, false, "publisher", &e.to_string());
                    conn = connect(&stats, &present, &mut gone);
                }
            }
            let Some((room, payload)) = backlog.pop_front() else {
                continue;
            };
            let Some(c) = conn.as_mut() else {
                backlog.push_front((room, payload));
                continue;
            };
            if publish(c, &room, &payload).is_ok() {
                stats.published.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // The connection may just be stale (Redis restarted meanwhile).
            conn = connect(&stats, &present, &mut gone);
            match conn.as_mut().map(|c| publish(c, &room, &payload)) {
                Some(Ok(())) => {
                    stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    set_up(&stats.publisher_up, false, "publisher", &e.to_string());
                    conn = None;
                    backlog.push_front((room, payload));
                }
                None => backlog.push_front((room, payload)),
            }
        }
        // Leaving for good: this instance's entries go now, not at expiry.
        if let Some(c) = conn.as_mut() {
            let mut pipe = redis::pipe();
            for (room, id) in present.keys() {
                pipe.cmd("HDEL")
                    .arg(presence_key(room))
                    .arg(field(*id))
                    .ignore();
            }
            pipe.cmd("DEL").arg(instance_key(&instance)).ignore();
            let _ = pipe.query::<()>(c);
        }
        debug!("redis bridge: publisher stopped");
    }

    /// Writes a presence entry (`Some`) or removes it (`None`), and tells
    /// the room's other instances, in one round trip. Best effort: a lost
    /// change is put right when the publisher reconnects.
    fn presence_change(
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

    /// Why a subscribed session ended.
    enum Ended {
        /// The hub is gone: stop.
        Shutdown,
        /// Redis failed: reconnect.
        Lost(String),
    }

    /// The subscriber's state, kept across reconnections.
    struct Subscriber {
        client: redis::Client,
        control: Receiver<Control>,
        hub: ToHub,
        memory: Arc<Memory>,
        instance: Arc<str>,
        stats: Arc<Stats>,
        history: history::Bounds,
        rooms: Rooms,
        /// The newest stream entry seen per room: what a catch-up after an
        /// outage starts after, and what a message must be newer than.
        last_seen: HashMap<Arc<str>, EntryId>,
        /// Other instances whose clients the hub shows: checked for life.
        known: std::collections::HashSet<String>,
    }

    impl Subscriber {
        fn run(mut self) {
            let mut backoff = BACKOFF_FIRST;
            let mut first = true;
            loop {
                // Room changes that came while disconnected still count.
                loop {
                    match self.control.try_recv() {
                        Ok(c) => {
                            if !self.offline(c) {
                                return;
                            }
                        }
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => return,
                    }
                }
                let conns = self
                    .client
                    .get_connection_with_timeout(CONNECT_TIMEOUT)
                    .and_then(|a| {
                        Ok((a, self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?))
                    });
                match conns {
                    Ok((mut pubsub, mut data)) => {
                        backoff = BACKOFF_FIRST;
                        match self.subscribed(&mut pubsub, &mut data) {
                            Ended::Shutdown => return,
                            Ended::Lost(why) => {
                                set_up(&self.stats.subscriber_up, false, "subscriber", &why)
                            }
                        }
                    }
                    Err(e) => {
                        if first {
                            warn!("redis bridge: subscriber cannot reach Redis: {e}; retrying");
                        }
                        set_up(
                            &self.stats.subscriber_up,
                            false,
                            "subscriber",
                            &e.to_string(),
                        );
                    }
                }
                first = false;
                // The backoff, cut short by shutdown.
                match self.control.recv_timeout(backoff) {
                    Ok(c) => {
                        if !self.offline(c) {
                            return;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
                backoff = (backoff * 2).min(BACKOFF_CAP);
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
        fn subscribed(
            &mut self,
            conn: &mut redis::Connection,
            data: &mut redis::Connection,
        ) -> Ended {
            let mut pubsub = conn.as_pubsub();
            if let Err(e) = pubsub.set_read_timeout(Some(POLL)) {
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
                        Control::Subscribe(room) => pubsub
                            .subscribe(channel(room))
                            .map_err(|e| e.to_string())
                            .and_then(|()| self.backfill(data, room)),
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
                let Some(room) = msg.get_channel_name().strip_prefix(CHANNEL_PREFIX) else {
                    continue;
                };
                let room: Arc<str> = room.into();
                let payload = msg.get_payload_bytes();
                let Some(newline) = payload.iter().position(|&b| b == b'\n') else {
                    continue;
                };
                if &payload[..newline] == b"p" {
                    if !self.remote_presence(room, &payload[newline + 1..]) {
                        return Ended::Shutdown;
                    }
                    continue;
                }
                let id = std::str::from_utf8(&payload[..newline])
                    .ok()
                    .and_then(parse_id);
                if let Some(id) = id.filter(|&id| id != (0, 0)) {
                    if self.last_seen.get(&room).is_some_and(|&seen| id <= seen) {
                        continue;
                    }
                    self.last_seen.insert(room.clone(), id);
                }
                if !self.relay(room, &payload[newline + 1..]) {
                    return Ended::Shutdown;
                }
            }
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
        fn catch_up(
            &mut self,
            data: &mut redis::Connection,
            room: &Arc<str>,
        ) -> Result<(), String> {
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

        /// A room this instance starts listening to: its stream's newest
        /// entries become the room's local history (the hub holds the room's
        /// first clients until this arrives).
        fn backfill(
            &mut self,
            data: &mut redis::Connection,
            room: &Arc<str>,
        ) -> Result<(), String> {
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
                if let Some(&(id, _)) = got.last() {
                    self.last_seen.insert(room.clone(), id);
                }
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

    /// Who is in `room` on every instance that is alive (its heartbeat key
    /// exists), as names and join times; `None` when Redis cannot be asked
    /// (then the local answer stands). On the caller's thread, bounded by
    /// the connect timeout.
    pub(crate) fn presence_of(url: &str, room: &str) -> Option<Vec<(String, u64)>> {
        let client = redis::Client::open(url).ok()?;
        let mut c = client.get_connection_with_timeout(CONNECT_TIMEOUT).ok()?;
        c.set_read_timeout(Some(CONNECT_TIMEOUT)).ok()?;
        let entries: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(presence_key(room))
            .query(&mut c)
            .ok()?;
        let mut alive: HashMap<String, bool> = HashMap::new();
        let mut out = Vec::new();
        for (field, entry) in entries {
            let Some((instance, _)) = field.split_once(':') else {
                continue;
            };
            let live = match alive.get(instance) {
                Some(&live) => live,
                None => {
                    let live = redis::cmd("EXISTS")
                        .arg(instance_key(instance))
                        .query::<i64>(&mut c)
                        .ok()?
                        > 0;
                    alive.insert(instance.to_string(), live);
                    live
                }
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&entry) else {
                continue;
            };
            if !live {
                // A crashed instance's entry: tidied up by whoever sees it.
                let _ = redis::cmd("HDEL")
                    .arg(presence_key(room))
                    .arg(&field)
                    .query::<i64>(&mut c);
                continue;
            }
            if let (Some(name), Some(joined)) = (v["name"].as_str(), v["joined_ms"].as_u64()) {
                out.push((name.to_string(), joined));
            }
        }
        out.sort_by_key(|m| m.1);
        Some(out)
    }

    /// The `(id, envelope)` pairs of an XRANGE or XREVRANGE reply.
    fn stream_entries(reply: &Value) -> Vec<(EntryId, Vec<u8>)> {
        let Value::Array(entries) = reply else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in entries {
            let Value::Array(parts) = entry else { continue };
            let [id, Value::Array(fields)] = &parts[..] else {
                continue;
            };
            let id = match id {
                Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(parse_id),
                Value::SimpleString(s) => parse_id(s),
                _ => None,
            };
            let envelope = fields.chunks(2).find_map(|kv| match kv {
                [Value::BulkString(k), Value::BulkString(v)] if k == b"m" => Some(v.clone()),
                _ => None,
            });
            if let (Some(id), Some(envelope)) = (id, envelope) {
                out.push((id, envelope));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_keep_bytes_types_and_origin() {
        let text = Message::text("héllo");
        let wrapped = encode("abc", &text).expect("data");
        assert_eq!(decode(&wrapped), Some(("abc", text)));
        let binary = Message::binary(vec![0u8, 255, 10]);
        let wrapped = encode("i2", &binary).expect("data");
        assert_eq!(decode(&wrapped), Some(("i2", binary)));
        assert!(decode(b"WSH1").is_none());
        assert!(decode(b"something else").is_none());
        assert!(encode("x", &Message::Ping(Default::default())).is_none());
    }
}
