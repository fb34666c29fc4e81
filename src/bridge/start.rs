//! Starting the bridge (its URL checked, its two threads), and the one
//! query made from an HTTP thread: who is in a room on every instance.
//!
//! May touch: Redis connections of its own (for `presence_of`).

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded};
use log::info;

use super::common::{connect, masked, open};
use super::envelope::{PUBLISH_QUEUE, instance_key, presence_key};
use super::handle::{Bridge, Rooms, Stats, ToHub, View};
use super::publisher::Publisher;
use super::subscriber::Subscriber;
use crate::history;
use crate::memory::Memory;

/// Checks `url` (and the CA file, for `rediss://`) and starts the
/// bridge's threads. A URL or CA file that cannot work fails here; an
/// unreachable server, a wrong password or an untrusted certificate is
/// logged and retried in the background.
pub(crate) fn start(
    url: &str,
    ca_file: Option<&std::path::Path>,
    hub: ToHub,
    memory: Arc<Memory>,
    history: history::Bounds,
) -> crate::Result<Bridge> {
    let client = open(url, ca_file).map_err(crate::Error::Config)?;
    let instance: Arc<str> = format!("{:016x}", crate::random::next_u64()).into();
    info!(
        "redis bridge: instance {instance}, Redis at {}",
        masked(url)
    );
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
                move || Publisher::new(c, publish_rx, s, history, id).run()
            })?,
    );
    let view = View {
        stats: stats.clone(),
        client: client.clone(),
    };
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
        view,
        threads,
    })
}

/// Who is in `room` on every instance that is alive (its heartbeat key
/// exists), as names and join times; `None` when Redis cannot be asked
/// (then the local answer stands). On the caller's thread, bounded by
/// the connect and command timeouts.
pub(crate) fn presence_of(client: &redis::Client, room: &str) -> Option<Vec<(String, u64)>> {
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
        if let (Some(name), Some(joined)) = (v["name"].as_str(), v["joined_ms"].as_u64()) {
            out.push((name.to_string(), joined));
        }
    }
    out.sort_by_key(|m| m.1);
    Some(out)
}
