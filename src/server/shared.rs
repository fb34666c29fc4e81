//! The state every thread of a server shares: its configuration and
//! policy, the hub's inbox, the counters and the registry of live threads
//! and sockets, and the few questions asked of it (the lock, waiting for
//! threads to finish, asking the hub). The thread and slot accounting on
//! it is in `budget`.
//!
//! May touch: its own fields, the hub's inbox (sending only).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use log::info;
use tungstenite::protocol::WebSocketConfig;

use crate::Config;
use crate::auth::Gate;
use crate::hub::{self, HubMsg, Limits};
use crate::memory::Memory;
use crate::metrics::{self, Metrics};
use crate::server::assets::Assets;
use crate::server::handshake::Policy;
use crate::session::CONTEXT_READ_BYTES;
use crate::session::outbox::Bound;
use crate::session::wire::Wire;

/// How long a question to the hub may wait for its answer.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Shared {
    pub(super) config: Config,
    pub(super) local_addr: SocketAddr,
    /// Every bound address, `local_addr` first.
    pub(super) local_addrs: Vec<SocketAddr>,
    pub(super) policy: Policy,
    pub(super) assets: Assets,
    pub(super) ws_config: WebSocketConfig,
    /// Every chat client's outbox bound.
    pub(super) bound: Bound,
    /// The memory budget every connection counts against.
    pub(super) memory: Arc<Memory>,
    /// The Redis bridge's state, when there is one.
    pub(super) bridge: OnceLock<crate::bridge::View>,
    pub(super) hub: Sender<HubMsg>,
    pub(super) stopping: AtomicBool,
    /// Shutdown has begun: `/healthz` says 503 and upgrades are refused,
    /// while the drain timeout runs.
    pub(super) draining: AtomicBool,
    pub(super) next_id: AtomicU64,
    /// This server's id among instances (random): a client's id on every
    /// instance is `{instance}:{number}`.
    pub(super) instance: Arc<str>,
    /// Pings the chat clients that have no writer thread.
    pub(super) keeper: crate::session::Keeper,
    /// Connection threads waiting for their next connection.
    pub(super) pool: super::pool::Pool,
    /// Most connection threads this process can start (see `limits::thread_budget`).
    pub(super) thread_budget: super::limits::Ceiling,
    /// Open WebSocket connections, for `max_clients`.
    pub(super) clients: AtomicUsize,
    /// Of those, the ones on `/echo`.
    pub(super) echo_clients: AtomicUsize,
    /// The counters behind `/metrics`.
    pub(super) metrics: Arc<Metrics>,
    /// Who may upgrade, and to which room.
    pub(super) gate: Gate,
    /// WebSocket connections per IP address, with `max_connections_per_ip`.
    pub(super) per_ip: Mutex<HashMap<IpAddr, usize>>,
    pub(super) live: Mutex<Live>,
    pub(super) changed: Condvar,
}

#[derive(Default)]
pub(super) struct Live {
    pub(super) threads: usize,
    pub(super) sockets: HashMap<u64, Arc<Wire>>,
    pub(super) stop_requested: bool,
}

impl Shared {
    /// The state of a server about to start, for `config`, bound to
    /// `local_addrs` (`config.addr`'s first), its hub's inbox `hub`.
    pub(super) fn new(
        config: Config,
        local_addrs: Vec<SocketAddr>,
        hub: Sender<HubMsg>,
    ) -> crate::Result<Shared> {
        let assets = Assets::new(config.static_dir.as_deref())?;
        let ws_config = WebSocketConfig::default()
            // The context's own buffer is small; bigger reads spill
            // (see `session::reader`).
            .read_buffer_size(CONTEXT_READ_BYTES.min(config.read_buffer_bytes))
            .write_buffer_size(0)
            .max_message_size(Some(config.max_message_bytes))
            .max_frame_size(Some(config.max_message_bytes));
        let gate = Gate::new(config.auth_secret.as_ref(), config.authorizer.as_ref())?;
        info!(
            "memory budget {} MiB for buffered messages (--max-buffered-bytes)",
            config.max_buffered_bytes >> 20
        );
        let thread_budget = super::limits::thread_budget(&config);
        Ok(Shared {
            policy: Policy {
                allowed_origins: config.allowed_origins.clone(),
                subprotocols: config.subprotocols.clone(),
            },
            bound: Bound {
                messages: config.send_queue,
                bytes: config.send_queue_bytes,
            },
            memory: Memory::new(config.max_buffered_bytes),
            config,
            local_addr: local_addrs[0],
            local_addrs,
            assets,
            ws_config,
            bridge: OnceLock::new(),
            hub,
            stopping: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            instance: format!("{:016x}", crate::random::next_u64()).into(),
            keeper: crate::session::Keeper::start()?,
            pool: super::pool::Pool::default(),
            thread_budget,
            clients: AtomicUsize::new(0),
            echo_clients: AtomicUsize::new(0),
            metrics: Arc::new(Metrics::default()),
            gate,
            per_ip: Mutex::new(HashMap::new()),
            live: Mutex::new(Live::default()),
            changed: Condvar::new(),
        })
    }

    /// How the hub delivers.
    pub(super) fn limits(&self) -> Limits {
        let config = &self.config;
        Limits {
            echo_sender: config.echo_sender,
            messages: config.send_queue,
            bytes: config.send_queue_bytes,
            deflate: config
                .compression
                .then_some((config.compression_level, config.compression_min_bytes)),
        }
    }

    /// With a Redis bridge: whether both of its connections are up.
    pub(super) fn redis_connected(&self) -> Option<bool> {
        let stats = &self.bridge.get()?.stats;
        Some(
            stats.publisher_up.load(Ordering::Acquire)
                && stats.subscriber_up.load(Ordering::Acquire),
        )
    }

    /// The `/metrics` page: the counters, and what the hub, the memory
    /// budget and the bridge know now.
    pub(super) fn render_metrics(&self) -> String {
        let (rooms, history) = self.ask(hub::Query::Totals).unwrap_or((0, None));
        let clients = self.clients.load(Ordering::Relaxed);
        let echo = self.echo_clients.load(Ordering::Relaxed);
        let redis = self.bridge.get().map(|view| {
            let stats = &view.stats;
            (
                self.redis_connected().unwrap_or(false),
                stats.published.load(Ordering::Relaxed),
                stats.received.load(Ordering::Relaxed),
                stats.dropped.load(Ordering::Relaxed),
            )
        });
        self.metrics.render(&metrics::Snapshot {
            chat_clients: clients.saturating_sub(echo),
            echo_clients: echo,
            rooms,
            history,
            buffered: (self.memory.used(), self.memory.limit()),
            memory_refused: self.memory.refused(),
            memory_evicted: self.memory.evicted(),
            redis,
            draining: self.draining.load(Ordering::Relaxed),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the hub a question and waits (at most 2 s) for its answer.
    pub(super) fn ask<T: Send + 'static>(
        &self,
        query: impl FnOnce(Sender<T>) -> hub::Query,
    ) -> Option<T> {
        let (tx, rx) = bounded(1);
        self.hub.send(HubMsg::Query(query(tx))).ok()?;
        rx.recv_timeout(ANSWER_TIMEOUT).ok()
    }

    /// Waits until no connection thread is left, or `timeout` passes.
    /// (Threads waiting in the thread cache are let go first.)
    pub(super) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.pool.release();
        let mut live = self.lock();
        while live.threads > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            live = self
                .changed
                .wait_timeout(live, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}
