//! The one question an HTTP thread asks Redis: who is in a room on every
//! instance.
//!
//! May touch: Redis connections of its own, bounded by the timeouts.

use std::collections::HashMap;

use super::common::connect;
use super::envelope::{instance_key, presence_key};
use crate::presence::MemberInfo;

/// Who is in `room` on every instance that is alive (its heartbeat key
/// exists), oldest first; `None` when Redis cannot be asked
/// (then the local answer stands). On the caller's thread, bounded by
/// the connect and command timeouts.
pub(crate) fn presence_of(client: &redis::Client, room: &str) -> Option<Vec<MemberInfo>> {
    let mut c = connect(client).ok()?;
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
        if let (Some(name), Some(joined_ms)) = (v["name"].as_str(), v["joined_ms"].as_u64()) {
            out.push(MemberInfo {
                id: field,
                client: None,
                name: name.to_string(),
                sub: v["sub"].as_str().map(str::to_string),
                joined_ms,
            });
        }
    }
    out.sort_by_key(|m| m.joined_ms);
    Some(out)
}
