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
//! inbox as `HubMsg::Remote`, and are delivered to local clients only.
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

/// A message for the publisher thread.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub channel: String,
    pub payload: Vec<u8>,
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
    pub(crate) fn publish(&self, room: &str, message: &Message) {
        let Some(publish) = &self.publish else {
            return;
        };
        let Some(payload) = encode(&self.instance, message) else {
            return;
        };
        let out = Outgoing {
            channel: channel(room),
            payload,
        };
        match publish.try_send(out) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.stats.drop_one("the publish queue is full"),
            Err(TrySendError::Disconnected(_)) => self.stats.drop_one("the publisher stopped"),
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
pub(crate) use self::redis_threads::start;

/// Without the `redis` feature there is no bridge to start.
#[cfg(not(feature = "redis"))]
pub(crate) fn start(
    _url: &str,
    _hub: Sender<crate::hub::HubMsg>,
    _memory: Arc<crate::memory::Memory>,
) -> crate::Result<Bridge> {
    Err(crate::Error::Config(
        "this build has no Redis support (the `redis` cargo feature)".into(),
    ))
}

#[cfg(feature = "redis")]
mod redis_threads {
    //! The two threads that talk to Redis.

    use std::time::Duration;

    use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError, bounded, unbounded};
    use log::{debug, info, warn};
    use tungstenite::protocol::Role;

    use super::*;
    use crate::hub::HubMsg;
    use crate::memory::Memory;
    use crate::wire::Frame;

    /// How long the subscriber blocks in a read before it looks at room
    /// changes and shutdown.
    const POLL: Duration = Duration::from_millis(100);
    /// Bound on connecting to Redis.
    const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
    /// Reconnection backoff: doubles from the first to the cap.
    const BACKOFF_FIRST: Duration = Duration::from_millis(100);
    const BACKOFF_CAP: Duration = Duration::from_secs(5);

    /// Checks `url` and starts the bridge's threads. A URL that cannot
    /// work fails here; an unreachable server is retried in the background.
    pub(crate) fn start(
        url: &str,
        hub: Sender<HubMsg>,
        memory: Arc<Memory>,
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
                .spawn(move || publisher(c, publish_rx, s))?,
        );
        let (c, s, id) = (client, stats.clone(), instance.clone());
        let subscriber = std::thread::Builder::new()
            .name("wshub-redis-sub".into())
            .spawn(move || subscriber(c, control_rx, hub, memory, id, s));
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

    /// Publishes what the hub hands over, in order. While Redis is
    /// unreachable it reconnects on a timer (capped backoff) and drops what
    /// comes meanwhile; a publish that fails is retried once on a fresh
    /// connection, so a Redis that restarted while the publisher was idle
    /// loses nothing.
    fn publisher(client: redis::Client, queue: Receiver<Outgoing>, stats: Arc<Stats>) {
        let connect = |stats: &Stats| match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
            Ok(c) => {
                set_up(&stats.publisher_up, true, "publisher", "");
                Some(c)
            }
            Err(e) => {
                set_up(&stats.publisher_up, false, "publisher", &e.to_string());
                None
            }
        };
        let publish = |c: &mut redis::Connection, out: &Outgoing| -> redis::RedisResult<i64> {
            redis::cmd("PUBLISH")
                .arg(&out.channel)
                .arg(&out.payload)
                .query(c)
        };
        let mut conn = connect(&stats);
        if conn.is_none() {
            warn!("redis bridge: publisher cannot reach Redis yet; retrying");
        }
        let mut backoff = BACKOFF_FIRST;
        loop {
            let out = match conn.is_some() {
                true => match queue.recv() {
                    Ok(out) => out,
                    Err(_) => break,
                },
                false => match queue.recv_timeout(backoff) {
                    Ok(_) => {
                        stats.drop_one("Redis is unreachable");
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        conn = connect(&stats);
                        backoff = match conn {
                            Some(_) => BACKOFF_FIRST,
                            None => (backoff * 2).min(BACKOFF_CAP),
                        };
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
            };
            let Some(c) = conn.as_mut() else { continue };
            if publish(c, &out).is_ok() {
                stats.published.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // The connection may just be stale (Redis restarted meanwhile).
            conn = connect(&stats);
            match conn.as_mut().map(|c| publish(c, &out)) {
                Some(Ok(_)) => {
                    stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(e)) => {
                    set_up(&stats.publisher_up, false, "publisher", &e.to_string());
                    conn = None;
                    stats.drop_one("Redis is unreachable");
                }
                None => stats.drop_one("Redis is unreachable"),
            }
        }
        debug!("redis bridge: publisher stopped");
    }

    /// Why a subscribed session ended.
    enum Ended {
        /// The hub is gone: stop.
        Shutdown,
        /// Redis failed: reconnect.
        Lost(String),
    }

    fn subscriber(
        client: redis::Client,
        control: Receiver<Control>,
        hub: Sender<HubMsg>,
        memory: Arc<Memory>,
        instance: Arc<str>,
        stats: Arc<Stats>,
    ) {
        let mut rooms = Rooms::default();
        let mut backoff = BACKOFF_FIRST;
        let mut first = true;
        loop {
            // Room changes that came while disconnected still count.
            loop {
                match control.try_recv() {
                    Ok(c) => {
                        rooms.apply(&c);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            match client.get_connection_with_timeout(CONNECT_TIMEOUT) {
                Ok(mut conn) => {
                    backoff = BACKOFF_FIRST;
                    let ended = subscribed(
                        &mut conn, &mut rooms, &control, &hub, &memory, &instance, &stats,
                    );
                    match ended {
                        Ended::Shutdown => return,
                        Ended::Lost(why) => set_up(&stats.subscriber_up, false, "subscriber", &why),
                    }
                }
                Err(e) => {
                    if first {
                        warn!("redis bridge: subscriber cannot reach Redis: {e}; retrying");
                    }
                    set_up(&stats.subscriber_up, false, "subscriber", &e.to_string());
                }
            }
            first = false;
            // The backoff, cut short by shutdown.
            match control.recv_timeout(backoff) {
                Ok(c) => {
                    rooms.apply(&c);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
        }
    }

    /// One connected session: subscribe to the current rooms, then relay
    /// messages and apply room changes until Redis fails or the hub stops.
    fn subscribed(
        conn: &mut redis::Connection,
        rooms: &mut Rooms,
        control: &Receiver<Control>,
        hub: &Sender<HubMsg>,
        memory: &Arc<Memory>,
        instance: &str,
        stats: &Stats,
    ) -> Ended {
        let mut pubsub = conn.as_pubsub();
        if let Err(e) = pubsub.set_read_timeout(Some(POLL)) {
            return Ended::Lost(e.to_string());
        }
        for room in rooms.iter() {
            if let Err(e) = pubsub.subscribe(channel(room)) {
                return Ended::Lost(e.to_string());
            }
        }
        set_up(
            &stats.subscriber_up,
            true,
            "subscriber",
            &format!(" ({} rooms)", rooms.0.len()),
        );
        loop {
            loop {
                let c = match control.try_recv() {
                    Ok(c) => c,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ended::Shutdown,
                };
                if rooms.apply(&c) {
                    let result = match &c {
                        Control::Subscribe(room) => pubsub.subscribe(channel(room)),
                        Control::Unsubscribe(room) => pubsub.unsubscribe(channel(room)),
                    };
                    if let Err(e) = result {
                        return Ended::Lost(e.to_string());
                    }
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
            let Some((origin, message)) = decode(msg.get_payload_bytes()) else {
                debug!(
                    "redis bridge: a message on {} that is not ours",
                    msg.get_channel_name()
                );
                continue;
            };
            if origin == instance {
                continue;
            }
            let Some(frame) = Frame::data(Role::Server, &message) else {
                continue;
            };
            stats.received.fetch_add(1, Ordering::Relaxed);
            let remote = HubMsg::Remote {
                room: room.into(),
                frame: frame.charged(memory),
                message,
                instance: origin.into(),
            };
            if hub.send(remote).is_err() {
                return Ended::Shutdown;
            }
        }
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
