//! The server: [`Server`] and its [`Handle`], the state every connection
//! thread shares, and shutdown.
//!
//! Threads: one acceptor per listener, one hub and its fan-out lanes, and
//! per connection one thread that reads HTTP request heads; after an
//! upgrade that thread goes on as the client's reader, and the client's
//! writer (`session`) starts only when the client first needs one, so a
//! WebSocket client that keeps up has one thread, and a session starts
//! none; one keepalive thread pings the clients without a writer. Every connection thread is counted, against a budget taken
//! from every limit that can refuse a thread (`limits`), so that
//! [`Server::shutdown`] can wait for all of them and an upgrade past the
//! budget gets 503 instead of a thread the kernel would refuse; every
//! socket is registered so that shutdown can force the stragglers awake.
//!
//! The parts, each in its own file:
//! * `accept` — the listener loop and what happens to each accepted socket;
//! * `conn` — one connection's HTTP life: the keep-alive loop, static files,
//!   refusals;
//! * `api` — a server API request on its connection (key, body, answer;
//!   the routes are `crate::api`'s, built on [`Handle`]);
//! * `upgrade` — the WebSocket upgrade (gorilla's `serveWs`): handshake,
//!   admission, registration with the hub, the session's writer, and the
//!   connection's thread going on as its reader;
//! * `budget` — counted threads, the client slots (each with its writer's
//!   thread), refusals at the ceiling;
//! * `pool` — the thread cache: ended connection threads wait briefly for
//!   the next connection's work;
//! * `limits` — the thread budget every limit of the kernel and the
//!   process allows, and the once-a-second log of refusals.
//!
//! Shutdown: stop accepting (the acceptor is woken by a connection to
//! itself, tiny_http's trick), tell the hub, which asks every client to close
//! with 1001; wait up to `close_timeout` for the close handshakes, then shut
//! down whatever sockets remain (idle HTTP connections, silent peers) and
//! wait for their threads.

mod accept;
mod api;
pub(crate) mod assets;
mod budget;
mod conn;
mod handle;
pub(crate) mod handshake;
mod limits;
mod pool;
mod relay;
mod shared;
mod upgrade;

pub use handle::Handle;
use shared::Shared;

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use log::{debug, info, warn};
use tungstenite::protocol::Message;

use crate::hub::{self, Events, HubMsg};
use crate::{Config, Result};

/// Capacity of the hub's inbox. Readers block when it is full, which slows
/// senders down instead of letting the hub's backlog grow without bound.
const HUB_INBOX: usize = 4096;

/// A running server. Dropping it shuts it down.
///
/// Its `Debug` shows the bound addresses and how many clients it holds.
pub struct Server {
    handle: Handle,
    /// Each listener's acceptor thread, by bound address.
    acceptors: Vec<(SocketAddr, JoinHandle<()>)>,
    hub: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds [`Config::addr`] (and any extra addresses) and starts serving
    /// on background threads: the hub, its fan-out lanes, the Redis bridge
    /// if configured, and one acceptor per listener.
    pub fn start(config: Config) -> Result<Server> {
        config.validate()?;
        let listeners = accept::bind_all(&config)?;
        let local_addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<Vec<_>>>()?;
        let (hub_tx, hub_rx) = bounded(HUB_INBOX);
        let shared = Arc::new(Shared::new(config, local_addrs.clone(), hub_tx)?);
        let history = crate::history::Bounds {
            messages: shared.config.history,
            bytes: shared.config.history_bytes,
            age: shared.config.history_age,
        };
        let bridge = start_bridge(&shared, history)?;
        // The lanes' threads start here, before `start` returns, so that a
        // caller counting threads sees all of the server's.
        let lanes = hub::Lanes::start(shared.limits(), shared.metrics.clone());
        let memory = shared.memory.clone();
        let hub = thread::Builder::new()
            .name("wshub-hub".into())
            .spawn(move || hub::run(hub_rx, lanes, memory, bridge, history))?;
        let mut server = Server {
            handle: Handle { shared },
            acceptors: Vec::new(),
            hub: Some(hub),
        };
        for (listener, addr) in listeners.into_iter().zip(&local_addrs) {
            let shared = server.handle.shared.clone();
            let acceptor = thread::Builder::new()
                .name("wshub-accept".into())
                .spawn(move || accept::accept_loop(listener, shared))?;
            server.acceptors.push((*addr, acceptor));
            info!("listening on {addr}");
        }
        Ok(server)
    }

    /// A cloneable handle for other threads (signal handlers, the host program).
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The address actually bound (useful with port 0): that of
    /// [`Config::addr`].
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Every address bound: [`Config::addr`]'s, then those of
    /// [`Config::extra_addrs`].
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.handle.shared.local_addrs
    }

    /// See [`Handle::events`].
    pub fn events(&self) -> Events {
        self.handle.events()
    }

    /// See [`Handle::broadcast`].
    pub fn broadcast(&self, room: &str, message: Message) -> Result<()> {
        self.handle.broadcast(room, message)
    }

    /// See [`Handle::history`].
    pub fn history(&self, room: &str) -> Result<Vec<Message>> {
        self.handle.history(room)
    }

    /// Blocks until some [`Handle::shutdown`] asks for it, then shuts down.
    pub fn run(mut self) {
        let shared = self.handle.shared.clone();
        {
            let mut live = shared.lock();
            while !live.stop_requested {
                live = shared.changed.wait(live).unwrap_or_else(|e| e.into_inner());
            }
        }
        let drain = shared.config.drain_timeout;
        if !drain.is_zero() {
            // Load balancers see /healthz go 503 and stop sending new
            // clients; those connected keep chatting until the drain ends.
            shared.draining.store(true, Ordering::SeqCst);
            info!("draining for {drain:?} before closing clients");
            let deadline = Instant::now() + drain;
            let mut live = shared.lock();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                live = shared
                    .changed
                    .wait_timeout(live, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
        self.stop();
    }

    /// Stops accepting, closes every client with 1001, and joins every
    /// thread the server started (bounded: see the module doc).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let shared = &self.handle.shared;
        let Some(hub) = self.hub.take() else {
            return;
        };
        let started = Instant::now();
        shared.draining.store(true, Ordering::SeqCst);
        shared.stopping.store(true, Ordering::SeqCst);
        for (addr, acceptor) in self.acceptors.drain(..) {
            // Wake the acceptor from accept(); if the connect fails it is
            // not blocked there (or the listener is gone) and sees the flag
            // anyway.
            let _ = TcpStream::connect_timeout(&accept::wake_addr(addr), Duration::from_secs(1));
            let _ = acceptor.join();
        }
        let _ = shared.hub.send(HubMsg::Shutdown);
        let _ = hub.join();
        let grace = shared.config.close_timeout + Duration::from_millis(250);
        if !shared.wait_idle(grace) {
            let sockets: Vec<_> = shared.lock().sockets.values().cloned().collect();
            debug!("shutdown: forcing {} connections closed", sockets.len());
            for wire in sockets {
                wire.shutdown(Shutdown::Both);
            }
            if !shared.wait_idle(Duration::from_secs(2)) {
                warn!("shutdown: {} threads still running", shared.lock().threads);
            }
        }
        info!("shut down in {:?}", started.elapsed());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// With [`Config::redis`]: the bridge, whose messages from other instances
/// go into the hub's inbox.
fn start_bridge(
    shared: &Arc<Shared>,
    history: crate::history::Bounds,
) -> Result<Option<crate::bridge::Bridge>> {
    let Some(url) = &shared.config.redis else {
        return Ok(None);
    };
    let inbox = shared.hub.clone();
    let to_hub: crate::bridge::ToHub = Box::new(move |m| inbox.send(HubMsg::Bridge(m)).is_ok());
    let ca = shared.config.redis_ca_file.as_deref();
    let memory = shared.memory.clone();
    let instance = shared.instance.clone();
    let bridge = crate::bridge::start(&url.0, ca, to_hub, memory, history, instance)?;
    let _ = shared.bridge.set(bridge.view().clone());
    Ok(Some(bridge))
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.handle.shared.local_addrs)
            .field("clients", &self.handle.client_count())
            .field("running", &self.hub.is_some())
            .finish()
    }
}
