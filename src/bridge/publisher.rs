//! The publisher thread: every local message into its room's stream and
//! onto its channel, presence entries and the instance's heartbeat, and
//! the outage backlog.
//!
//! May touch: its own Redis connection.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, warn};
use redis::Value;

use crate::history;

use super::common::{BACKOFF_CAP, BACKOFF_FIRST, CONNECT_TIMEOUT, now_ms, set_up};
use super::envelope::{PRESENCE_TTL, channel, instance_key, presence_key, stream};
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

/// Publishes what the hub hands over, in order: each message goes into
/// its room's stream and onto its channel. While Redis is unreachable
/// the publisher keeps messages in a backlog (at most [`BACKLOG`]) and
/// reconnects on a timer; when Redis is back it sends the backlog
/// first, so a short outage loses nothing across instances. A publish
/// that fails is retried once on a fresh connection (Redis may have
/// restarted while the publisher was idle).
pub(super) fn publisher(
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
                            let event = serde_json::json!({"event": "leave", "key": field(client)});
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
