//! The server: [`Server`] and its [`Handle`], the state every connection
//! thread shares, and shutdown.
//!
//! Threads: one acceptor, one hub, and per connection one thread that reads
//! HTTP request heads; an upgrade starts the client's reader and writer
//! (`session`) and that thread ends. Every thread is counted so that
//! [`Server::shutdown`] can wait for all of them, and every socket is
//! registered so that shutdown can force the stragglers awake.
//!
//! The parts, each in its own file:
//! * `accept` — the listener loop and what happens to each accepted socket;
//! * `conn` — one connection's HTTP life: the keep-alive loop, static files,
//!   refusals;
//! * `upgrade` — the WebSocket upgrade (gorilla's `serveWs`): handshake,
//!   admission, registration with the hub, the session's two threads;
//! * `budget` — counted threads, the thread budget, the client slots.
//!
//! Shutdown: stop accepting (the acceptor is woken by a connection to
//! itself, tiny_http's trick), tell the hub, which asks every client to close
//! with 1001; wait up to `close_timeout` for the close handshakes, then shut
//! down whatever sockets remain (idle HTTP connections, silent peers) and
//! wait for their threads.

mod accept;
pub(crate) mod assets;
mod budget;
mod conn;
pub(crate) mod handshake;
mod relay;
mod shared;
mod upgrade;

use shared::{Live, Shared};

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use log::{debug, info, warn};
use tungstenite::protocol::{Message, Role, WebSocketConfig};

use crate::http;
use crate::hub::{self, Event, HubMsg, Limits};
use crate::memory::Memory;
use crate::metrics::Metrics;
use crate::server::assets::Assets;
use crate::server::handshake::Policy;
use crate::session::frame::Frame;
use crate::session::outbox::Bound;
use crate::{Config, Error, Result};

/// Capacity of the hub's inbox. Readers block when it is full, which slows
/// senders down instead of letting the hub's backlog grow without bound.
const HUB_INBOX: usize = 4096;

/// A running server. Dropping it shuts it down.
pub struct Server {
    handle: Handle,
    /// Each listener's acceptor thread, by bound address.
    acceptors: Vec<(SocketAddr, JoinHandle<()>)>,
    hub: Option<JoinHandle<()>>,
}

/// A cheap, cloneable, thread-safe view of a running [`Server`]: broadcast,
/// subscribe to events, ask for shutdown.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Server {
    /// Binds `config.addr` and starts serving on background threads.
    pub fn start(config: Config) -> Result<Server> {
        config.validate()?;
        let listeners = accept::bind_all(&config)?;
        let local_addrs = listeners
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<Vec<_>>>()?;
        let local_addr = local_addrs[0];
        let assets = Assets::new(config.static_dir.as_deref())?;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_bytes)
            .write_buffer_size(0)
            .max_message_size(Some(config.max_message_bytes))
            .max_frame_size(Some(config.max_message_bytes));
        let (hub_tx, hub_rx) = bounded(HUB_INBOX);
        let limits = Limits {
            echo_sender: config.echo_sender,
            messages: config.send_queue,
            bytes: config.send_queue_bytes,
            deflate: config
                .compression
                .then_some((config.compression_level, config.compression_min_bytes)),
        };
        let bound = Bound {
            messages: config.send_queue,
            bytes: config.send_queue_bytes,
        };
        let memory = Memory::new(config.max_buffered_bytes);
        let metrics = Arc::new(Metrics::default());
        let gate = crate::auth::Gate::new(&config)?;
        info!(
            "memory budget {} MiB for buffered messages (--max-buffered-bytes)",
            config.max_buffered_bytes >> 20
        );
        let shared = Arc::new(Shared {
            policy: Policy {
                allowed_origins: config.allowed_origins.clone(),
                subprotocols: config.subprotocols.clone(),
            },
            config,
            local_addr,
            local_addrs: local_addrs.clone(),
            assets,
            ws_config,
            bound,
            memory: memory.clone(),
            bridge: OnceLock::new(),
            hub: hub_tx,
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            thread_budget: budget::thread_budget(),
            clients: AtomicUsize::new(0),
            echo_clients: AtomicUsize::new(0),
            metrics: metrics.clone(),
            gate,
            per_ip: Mutex::new(std::collections::HashMap::new()),
            live: Mutex::new(Live::default()),
            changed: Condvar::new(),
        });
        let history = crate::history::Bounds {
            messages: shared.config.history,
            bytes: shared.config.history_bytes,
            age: shared.config.history_age,
        };
        let bridge = match &shared.config.redis {
            Some(url) => {
                let inbox = shared.hub.clone();
                let to_hub: crate::bridge::ToHub =
                    Box::new(move |m| inbox.send(HubMsg::Bridge(m)).is_ok());
                let ca = shared.config.redis_ca_file.as_deref();
                Some(crate::bridge::start(
                    url,
                    ca,
                    to_hub,
                    memory.clone(),
                    history,
                )?)
            }
            None => None,
        };
        if let Some(bridge) = &bridge {
            let _ = shared.bridge.set(bridge.view().clone());
        }
        // The lanes' threads start here, before `start` returns, so that a
        // caller counting threads sees all of the server's.
        let lanes = hub::Lanes::start(limits, metrics);
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
    pub fn events(&self) -> Receiver<Event> {
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

impl Handle {
    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Subscribes to hub events. Each call makes a new receiver holding up
    /// to `Config::event_queue` events; when it is full, further events are
    /// dropped for it rather than stalling the hub. Drop the receiver to
    /// unsubscribe.
    pub fn events(&self) -> Receiver<Event> {
        let (tx, rx) = bounded(self.shared.config.event_queue.max(1));
        let _ = self.shared.hub.send(HubMsg::Subscribe(tx));
        rx
    }

    /// Sends a text or binary message to every client in `room` (`""` is the
    /// lobby at `/ws`).
    pub fn broadcast(&self, room: &str, message: Message) -> Result<()> {
        if !room.is_empty() && !http::valid_room(room) {
            return Err(Error::InvalidRoom(room.to_string()));
        }
        let frame = Frame::data(Role::Server, &message)
            .ok_or(Error::NotData)?
            .charged(&self.shared.memory);
        self.shared
            .hub
            .send(HubMsg::Broadcast {
                from: None,
                room: Some(room.into()),
                frame,
                message,
            })
            .map_err(|_| Error::Closed)
    }

    /// Bytes the server holds for its clients right now — messages being
    /// received and frames queued for writers — counted against
    /// [`Config::max_buffered_bytes`].
    pub fn buffered_bytes(&self) -> usize {
        self.shared.memory.used()
    }

    /// Connections closed with 1013 so far because a message would have
    /// taken the buffered bytes over [`Config::max_buffered_bytes`].
    pub fn refused_for_memory(&self) -> u64 {
        self.shared.memory.refused()
    }

    /// Clients evicted (1008) so far because queued frames took the
    /// buffered bytes over [`Config::max_buffered_bytes`].
    pub fn evicted_for_memory(&self) -> u64 {
        self.shared.memory.evicted()
    }

    /// With [`Config::redis`]: whether both of the bridge's connections to
    /// Redis are up (`None` without a bridge). While they are down, local
    /// clients are served as always and messages do not cross instances.
    pub fn redis_connected(&self) -> Option<bool> {
        self.shared.redis_connected()
    }

    /// The messages `room` keeps in its history (see [`Config::history`]),
    /// oldest first.
    pub fn history(&self, room: &str) -> Result<Vec<Message>> {
        if !room.is_empty() && !http::valid_room(room) {
            return Err(Error::InvalidRoom(room.to_string()));
        }
        let room: Arc<str> = room.into();
        self.shared
            .ask(|tx| hub::Query::History(room, tx))
            .ok_or(Error::Closed)
    }

    /// Open WebSocket connections right now.
    pub fn client_count(&self) -> usize {
        self.shared.clients.load(Ordering::Relaxed)
    }

    /// Asks the server to shut down: [`Server::run`] returns once it has.
    /// Safe to call from any thread, any number of times.
    pub fn shutdown(&self) {
        self.shared.lock().stop_requested = true;
        self.shared.changed.notify_all();
    }
}
