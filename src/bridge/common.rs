//! What both Redis threads share: timeouts, backoff, how a connection's
//! state is logged, stream entry ids and replies. Touches nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{info, warn};
use redis::Value;

/// How long the subscriber blocks in a read before it looks at room
/// changes and shutdown.
pub(super) const POLL: Duration = Duration::from_millis(100);
/// Bound on connecting to Redis.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnection backoff: doubles from the first to the cap.
pub(super) const BACKOFF_FIRST: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A stream entry id, `ms-seq`, in Redis's order.
pub(super) type EntryId = (u64, u64);

pub(super) fn parse_id(s: &str) -> Option<EntryId> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Logs a change of a connection's state, once per change.
pub(super) fn set_up(flag: &AtomicBool, up: bool, what: &str, detail: &str) {
    let was = flag.swap(up, Ordering::AcqRel);
    match (was, up) {
        (false, true) => info!("redis bridge: {what} connected{detail}"),
        (true, false) => warn!("redis bridge: {what} lost Redis: {detail}; retrying"),
        _ => {}
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The `(id, envelope)` pairs of an XRANGE or XREVRANGE reply.
pub(super) fn stream_entries(reply: &Value) -> Vec<(EntryId, Vec<u8>)> {
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
