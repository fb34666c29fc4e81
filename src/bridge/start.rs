//! Starting the bridge: its URL checked, its two threads.
//!
//! May touch: nothing but what it starts.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::{bounded, unbounded};
use log::info;

use super::common::{masked, open};
use super::envelope::PUBLISH_QUEUE;
use super::handle::{Bridge, Rooms, Stats, ToHub, View};
use super::publisher::Publisher;
use super::subscriber::Subscriber;
use crate::history;
use crate::memory::Memory;

/// Checks `url` (and the CA file, for `rediss://`) and starts the
/// bridge's threads for the server `instance`. A URL or CA file that cannot work fails here; an
/// unreachable server, a wrong password or an untrusted certificate is
/// logged and retried in the background.
pub(crate) fn start(
    url: &str,
    ca_file: Option<&std::path::Path>,
    hub: ToHub,
    memory: Arc<Memory>,
    history: history::Bounds,
    instance: Arc<str>,
) -> crate::Result<Bridge> {
    let client = open(url, ca_file).map_err(crate::Error::Config)?;
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
