//! The listener, the life of each accepted connection, and shutdown.
//!
//! Threads: one acceptor, one hub, and per connection one thread that reads
//! HTTP request heads and, after an upgrade, becomes the client's reader; the
//! upgrade spawns the client's writer. Nothing else. Every thread is counted
//! so that [`Server::shutdown`] can wait for all of them, and every socket is
//! registered so that shutdown can force the stragglers awake.
//!
//! Shutdown: stop accepting (the acceptor is woken by a connection to
//! itself, tiny_http's trick), tell the hub, which asks every client to close
//! with 1001; wait up to `close_timeout` for the close handshakes, then shut
//! down whatever sockets remain (idle HTTP connections, silent peers) and
//! wait for their threads.

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use log::{debug, error, info, warn};
use tungstenite::http::{Method, Request, StatusCode};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use crate::assets::Assets;
use crate::client::{self, Ending, Load, Out, Signals, Timing, WriterInputs, close_frame};
use crate::handshake::{self, Policy};
use crate::http::{self, HeadError, Rejection, Route};
use crate::hub::{self, ClientId, Event, HubMsg, Limits, Member};
use crate::wire::{Frame, Wire};
use crate::{Config, Error, Result};

/// Capacity of the hub's inbox. Readers block when it is full, which slows
/// senders down instead of letting the hub's backlog grow without bound.
const HUB_INBOX: usize = 4096;

/// A running server. Dropping it shuts it down.
pub struct Server {
    handle: Handle,
    acceptor: Option<JoinHandle<()>>,
    hub: Option<JoinHandle<()>>,
}

/// A cheap, cloneable, thread-safe view of a running [`Server`]: broadcast,
/// subscribe to events, ask for shutdown.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

struct Shared {
    config: Config,
    local_addr: SocketAddr,
    policy: Policy,
    assets: Assets,
    ws_config: WebSocketConfig,
    hub: Sender<HubMsg>,
    stopping: AtomicBool,
    next_id: AtomicU64,
    /// Most connection threads this process can start (see [`thread_budget`]).
    thread_budget: usize,
    /// Open WebSocket connections, for `max_clients`.
    clients: AtomicUsize,
    live: Mutex<Live>,
    changed: Condvar,
}

#[derive(Default)]
struct Live {
    threads: usize,
    sockets: HashMap<u64, Arc<Wire>>,
    stop_requested: bool,
}

impl Server {
    /// Binds `config.addr` and starts serving on background threads.
    pub fn start(config: Config) -> Result<Server> {
        config.validate()?;
        let listener = TcpListener::bind(config.addr)?;
        let local_addr = listener.local_addr()?;
        let assets = Assets::new(config.static_dir.as_deref())?;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_bytes)
            .write_buffer_size(0)
            .max_message_size(Some(config.max_message_bytes))
            .max_frame_size(Some(config.max_message_bytes));
        let (hub_tx, hub_rx) = bounded(HUB_INBOX);
        let limits = Limits {
            messages: config.send_queue,
            bytes: config.send_queue_bytes,
            echo_sender: config.echo_sender,
        };
        let shared = Arc::new(Shared {
            policy: Policy {
                allowed_origins: config.allowed_origins.clone(),
                subprotocols: config.subprotocols.clone(),
            },
            config,
            local_addr,
            assets,
            ws_config,
            hub: hub_tx,
            stopping: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            thread_budget: thread_budget(),
            clients: AtomicUsize::new(0),
            live: Mutex::new(Live::default()),
            changed: Condvar::new(),
        });
        let hub = thread::Builder::new()
            .name("wshub-hub".into())
            .spawn(move || hub::run(hub_rx, limits))?;
        let acceptor_shared = shared.clone();
        let acceptor = thread::Builder::new()
            .name("wshub-accept".into())
            .spawn(move || accept_loop(listener, acceptor_shared));
        let acceptor = match acceptor {
            Ok(a) => a,
            Err(e) => {
                let _ = shared.hub.send(HubMsg::Shutdown);
                let _ = hub.join();
                return Err(e.into());
            }
        };
        info!("listening on {local_addr}");
        Ok(Server {
            handle: Handle { shared },
            acceptor: Some(acceptor),
            hub: Some(hub),
        })
    }

    /// A cloneable handle for other threads (signal handlers, the host program).
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// See [`Handle::events`].
    pub fn events(&self) -> Receiver<Event> {
        self.handle.events()
    }

    /// See [`Handle::broadcast`].
    pub fn broadcast(&self, room: &str, message: Message) -> Result<()> {
        self.handle.broadcast(room, message)
    }

    /// Blocks until some [`Handle::shutdown`] asks for it, then shuts down.
    pub fn run(mut self) {
        {
            let mut live = self.handle.shared.lock();
            while !live.stop_requested {
                live = self
                    .handle
                    .shared
                    .changed
                    .wait(live)
                    .unwrap_or_else(|e| e.into_inner());
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
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        let started = Instant::now();
        shared.stopping.store(true, Ordering::SeqCst);
        // Wake the acceptor from accept(); if the connect fails it is not
        // blocked there (or the listener is gone) and sees the flag anyway.
        let _ = TcpStream::connect_timeout(&wake_addr(shared.local_addr), Duration::from_secs(1));
        let _ = acceptor.join();
        let _ = shared.hub.send(HubMsg::Shutdown);
        if let Some(hub) = self.hub.take() {
            let _ = hub.join();
        }
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
        let frame = Frame::data(Role::Server, &message).ok_or(Error::NotData)?;
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

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no connection thread is left, or `timeout` passes.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
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

    /// Spawns a counted connection thread.
    fn spawn(
        self: &Arc<Self>,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        {
            let mut live = self.lock();
            // Past the budget the kernel refuses the thread's mappings, and
            // Rust's thread start-up aborts the process: refuse first.
            if live.threads >= self.thread_budget {
                return Err(std::io::Error::other(format!(
                    "thread budget of {} exhausted (see vm.max_map_count)",
                    self.thread_budget
                )));
            }
            live.threads += 1;
        }
        let guard = ThreadGuard(self.clone());
        thread::Builder::new()
            .name(name)
            .stack_size(self.config.thread_stack_bytes)
            .spawn(move || {
                let _guard = guard;
                body();
            })?;
        Ok(())
    }

    /// Takes a WebSocket slot, or `None` at `max_clients`.
    fn admit(self: &Arc<Self>) -> Option<Admission> {
        let before = self.clients.fetch_add(1, Ordering::AcqRel);
        // The writer needs one more thread; keep room for a few HTTP requests.
        let threads_full = self.lock().threads + 8 > self.thread_budget;
        if threads_full || self.config.max_clients.is_some_and(|max| before >= max) {
            self.clients.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission(self.clone()))
    }
}

/// Counts a running thread; dropping it (when the thread ends, or when the
/// spawn fails and the closure is dropped) uncounts it.
struct ThreadGuard(Arc<Shared>);

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.0.lock().threads -= 1;
        self.0.changed.notify_all();
    }
}

/// Holds one of the `max_clients` slots while a WebSocket connection lives.
struct Admission(Arc<Shared>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keeps a socket in the registry for forced shutdown while any of its
/// threads runs.
struct Registered {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.lock().sockets.remove(&self.id);
    }
}

/// How many connection threads the kernel will let this process start.
///
/// Each thread costs four memory mappings (its stack and guard page, and
/// the alternate signal stack Rust gives every thread, with its guard), and
/// `vm.max_map_count` (65530 by default) bounds mappings per process; the
/// system-wide `kernel.threads-max` bounds threads. When a thread cannot get
/// its mappings, Rust aborts the whole process, so the server stays below.
fn thread_budget() -> usize {
    let read = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
    };
    let maps = read("/proc/sys/vm/max_map_count").unwrap_or(65530);
    let by_maps = maps.saturating_sub(4096) / 4;
    let by_threads = read("/proc/sys/kernel/threads-max").map_or(usize::MAX, |t| t / 2);
    let budget = by_maps.min(by_threads);
    info!(
        "thread budget {budget} (vm.max_map_count {maps}): room for about {} WebSocket clients",
        budget / 2
    );
    budget
}

/// The address that reaches our own listener.
fn wake_addr(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), bound.port())
        }
        _ => bound,
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        match stream {
            Ok(stream) => accept(stream, &shared),
            Err(e) => {
                error!("accept failed: {e}");
                // Out of file descriptors: accept would fail again at once;
                // back off briefly instead of spinning.
                if e.raw_os_error().is_some_and(|c| c == 23 || c == 24) {
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }
    debug!("acceptor stopped");
}

fn accept(stream: TcpStream, shared: &Arc<Shared>) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let peer = match stream.peer_addr() {
        Ok(peer) => peer,
        Err(e) => {
            debug!("connection {id} gone before it started: {e}");
            return;
        }
    };
    // Small frames must not wait for Nagle's algorithm.
    let _ = stream.set_nodelay(true);
    let wire = match Wire::new(stream, Role::Server, shared.config.write_timeout) {
        Ok(wire) => Arc::new(wire),
        Err(e) => {
            warn!("connection {id} from {peer}: {e}");
            return;
        }
    };
    shared.lock().sockets.insert(id, wire.clone());
    let registered = Registered {
        shared: shared.clone(),
        id,
    };
    let conn = Conn {
        shared: shared.clone(),
        wire: wire.clone(),
        id: ClientId(id),
        peer,
    };
    if let Err(e) = shared.spawn(format!("wshub-conn-{id}"), move || conn.serve(registered)) {
        error!("cannot start a thread for {peer}: {e}");
        let body = b"server overloaded\n";
        let _ = http::respond(
            wire.stream(),
            StatusCode::SERVICE_UNAVAILABLE,
            &[("Retry-After", "5")],
            body,
            false,
            false,
        );
    }
}

/// One accepted connection, on its own thread.
struct Conn {
    shared: Arc<Shared>,
    wire: Arc<Wire>,
    id: ClientId,
    peer: SocketAddr,
}

impl Conn {
    fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Serves HTTP requests until the connection closes or upgrades.
    fn serve(self, registered: Registered) {
        let mut buf = Vec::new();
        let mut first = true;
        loop {
            let head = http::read_head(
                self.wire.stream(),
                &mut buf,
                self.config().head_timeout,
                self.config().max_head_bytes,
            );
            let (request, head_len) = match head {
                Ok(head) => head,
                Err(HeadError::Closed) => return,
                Err(HeadError::Timeout { partial: false }) => {
                    if first {
                        info!(
                            "{} ({}): no request within {:?}, closing",
                            self.id,
                            self.peer,
                            self.config().head_timeout
                        );
                    }
                    return;
                }
                Err(HeadError::Timeout { partial: true }) => {
                    let rejection = Rejection::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request head not completed in time",
                    );
                    return self.refuse(&rejection, false);
                }
                Err(HeadError::Rejected(rejection)) => return self.refuse(&rejection, false),
                Err(HeadError::Io(e)) => {
                    debug!("{} ({}): {e}", self.id, self.peer);
                    return;
                }
            };
            first = false;
            let rest = buf.split_off(head_len);
            let head_only = request.method() == Method::HEAD;
            match http::route(&request) {
                Err(rejection) => return self.refuse(&rejection, head_only),
                Ok(Route::File(path)) => {
                    if !self.serve_file(&request, &path, head_only) {
                        return;
                    }
                    buf = rest;
                }
                // The head buffer is not needed for the connection's life.
                Ok(Route::Hub(room)) => {
                    drop(buf);
                    return self.upgrade(request, Some(room.into()), rest, registered);
                }
                Ok(Route::Echo) => {
                    drop(buf);
                    return self.upgrade(request, None, rest, registered);
                }
            }
        }
    }

    fn refuse(&self, rejection: &Rejection, head_only: bool) {
        info!(
            "{} ({}): {} {}",
            self.id,
            self.peer,
            rejection.status.as_u16(),
            rejection.reason
        );
        if let Err(e) = http::reject(self.wire.stream(), rejection, head_only) {
            debug!(
                "{} ({}): writing {}: {e}",
                self.id,
                self.peer,
                rejection.status.as_u16()
            );
        }
        // Let the response reach the peer before the socket closes.
        self.wire.shutdown(Shutdown::Write);
    }

    /// Serves one file; returns whether the connection stays open.
    fn serve_file(&self, request: &Request<()>, path: &str, head_only: bool) -> bool {
        if http::header_tokens(request, "upgrade")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("websocket"))
        {
            let rejection = Rejection::new(
                StatusCode::NOT_FOUND,
                format!("no WebSocket endpoint at {}", request.uri().path()),
            );
            self.refuse(&rejection, head_only);
            return false;
        }
        // The page asks for the limits so it can refuse a file before sending it.
        if path == "limits.json" {
            let body = format!(
                "{{\"maxMessageBytes\":{}}}",
                self.config().max_message_bytes
            );
            let headers = [
                ("Content-Type", "application/json"),
                ("Cache-Control", "no-cache"),
            ];
            let keep = http::keep_alive(request);
            return http::respond(
                self.wire.stream(),
                StatusCode::OK,
                &headers,
                body.as_bytes(),
                head_only,
                keep,
            )
            .is_ok()
                && keep;
        }
        let Some(asset) = self.shared.assets.get(path) else {
            self.refuse(
                &Rejection::new(
                    StatusCode::NOT_FOUND,
                    format!("{} not found", request.uri().path()),
                ),
                head_only,
            );
            return false;
        };
        let keep = http::keep_alive(request);
        let headers = [
            ("Content-Type", asset.content_type.as_str()),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
        ];
        debug!("{} ({}): 200 {}", self.id, self.peer, request.uri().path());
        match http::respond(
            self.wire.stream(),
            StatusCode::OK,
            &headers,
            &asset.body,
            head_only,
            keep,
        ) {
            Ok(()) => keep,
            Err(e) => {
                debug!("{} ({}): {e}", self.id, self.peer);
                false
            }
        }
    }

    /// Completes the handshake and runs the client: this thread becomes its
    /// reader, a new thread its writer. `room: None` is the echo endpoint.
    fn upgrade(
        self,
        request: Request<()>,
        room: Option<Arc<str>>,
        rest: Vec<u8>,
        registered: Registered,
    ) {
        let response = match handshake::accept(&request, &self.shared.policy) {
            Ok(response) => response,
            Err(rejection) => return self.refuse(&rejection, false),
        };
        // Headers are done with; the reader loop below lives as long as the client.
        drop(request);
        let Some(admission) = self.shared.admit() else {
            let limit = self.config().max_clients.unwrap_or_default();
            let rejection = Rejection::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("at the limit of {limit} clients"),
            )
            .with_header("Retry-After", "5");
            return self.refuse(&rejection, false);
        };
        if let Err(e) = handshake::write_response(self.wire.stream(), &response)
            .and_then(|()| Ok(self.wire.stream().flush()?))
        {
            debug!("{} ({}): writing 101: {e}", self.id, self.peer);
            return;
        }
        drop(response);
        let cfg = self.config();
        if let Err(e) = self.wire.stream().set_read_timeout(Some(cfg.pong_timeout)) {
            debug!("{} ({}): {e}", self.id, self.peer);
            return;
        }
        // Boxed: moved into the reader's thread, it would otherwise be
        // copied through the thread start-up's frames (see below).
        let mut ctx = Box::new(WebSocketContext::from_partially_read(
            rest,
            Role::Server,
            Some(self.shared.ws_config),
        ));
        let timing = Timing {
            ping_interval: cfg.ping_interval,
            close_timeout: cfg.close_timeout,
        };
        // Unbounded: a bounded crossbeam channel allocates and initialises
        // every slot up front (12 KiB for 256 entries), a cost each idle
        // client would pay. The hub bounds a chat client's queue itself
        // (`Load`, in messages and bytes); an echo client's queue carries
        // only its Close.
        let (queue_tx, queue_rx) = unbounded();
        let signals = Arc::new(Signals::default());
        let load = Arc::new(Load::default());
        let member = Member {
            id: self.id,
            room: room.clone(),
            peer: self.peer,
            queue: queue_tx.clone(),
            signals: signals.clone(),
            load: load.clone(),
        };
        let what = match &room {
            Some(room) if room.is_empty() => "joined the lobby".to_string(),
            Some(room) => format!("joined room {room:?}"),
            None => "opened an echo session".to_string(),
        };
        // `stopping` is set before the hub is told to shut down, so a
        // registration that queued behind the hub's Shutdown (and will never
        // be seen) always sees it here.
        if self.shared.hub.send(HubMsg::Register(member)).is_err()
            || self.shared.stopping.load(Ordering::SeqCst)
        {
            let _ = self
                .wire
                .send_close(Some(&close_frame(CloseCode::Away, "server shutting down")));
            return;
        }
        let inputs = WriterInputs {
            queue: queue_rx,
            signals: signals.clone(),
            load: load.clone(),
        };
        let (writer_wire, id, peer) = (self.wire.clone(), self.id, self.peer);
        let writer = self.shared.spawn(format!("wshub-write-{}", id.0), move || {
            // The writer keeps the socket registered and the slot taken until it is done too.
            let _keep = (registered, admission);
            if let Some(problem) = client::write_loop(&writer_wire, inputs, timing) {
                info!("{id} ({peer}): {problem}");
            }
        });
        if let Err(e) = writer {
            error!("{} ({}): cannot start its writer: {e}", self.id, self.peer);
            let _ = self
                .wire
                .send_close(Some(&close_frame(CloseCode::Again, "server overloaded")));
            let _ = self.shared.hub.send(HubMsg::Unregister(self.id));
            return;
        }
        info!("{} ({}) {what}", self.id, self.peer);
        // The reader gets a fresh thread and this one ends. The HTTP and
        // handshake code above runs deeper than the read loop does, and a
        // stack page once touched stays resident for the thread's life: on
        // this thread an idle client's reader would hold three pages where
        // a fresh one holds two (4 KiB more per client; glibc returns a
        // finished thread's stack pages).
        let (shared, wire, hub) = (
            self.shared.clone(),
            self.wire.clone(),
            self.shared.hub.clone(),
        );
        let (reader_queue, reader_signals) = (queue_tx.clone(), signals.clone());
        let reader = shared.spawn(format!("wshub-read-{}", id.0), move || {
            // Dropped after `read` has unregistered from the hub.
            let _exit = reader_signals.on_reader_exit(reader_queue.clone());
            self.read(&mut ctx, room, &reader_queue, timing);
        });
        if let Err(e) = reader {
            error!("{id} ({peer}): cannot start its reader: {e}");
            let _ = wire.send_close(Some(&close_frame(CloseCode::Again, "server overloaded")));
            let _ = hub.send(HubMsg::Unregister(id));
            signals.reader_done(&queue_tx);
        }
    }

    /// The reader loop of an upgraded connection, then its goodbye to the hub.
    fn read(
        self,
        ctx: &mut WebSocketContext,
        room: Option<Arc<str>>,
        queue_tx: &Sender<Out>,
        timing: Timing,
    ) {
        let id = self.id;
        let ending = match room {
            Some(_) => {
                let hub = &self.shared.hub;
                client::read_loop(&self.wire, ctx, queue_tx, timing, |message| {
                    let Some(frame) = Frame::data(Role::Server, &message) else {
                        return true;
                    };
                    hub.send(HubMsg::Broadcast {
                        from: Some(id),
                        room: None,
                        frame,
                        message,
                    })
                    .is_ok()
                })
            }
            None => client::read_loop(&self.wire, ctx, queue_tx, timing, |message| {
                let Some(frame) = Frame::data(Role::Server, &message) else {
                    return true;
                };
                // The echo goes out from this thread, as in gorilla's echo
                // example: one thread hop less per round trip, and the order
                // of echoes is the order of reads. A client that does not
                // read its echoes stops being read from until the write
                // timeout drops it. (After our Close the echo is dropped.)
                self.wire.send([&frame]).is_ok()
            }),
        };
        let _ = self.shared.hub.send(HubMsg::Unregister(self.id));
        match &ending {
            Ending::PeerClosed(_) => info!("{} ({}): {ending}", self.id, self.peer),
            Ending::WeClosed(code, _) if *code == CloseCode::Away => {
                info!("{} ({}): {ending}", self.id, self.peer)
            }
            Ending::WeClosed(..) => warn!("{} ({}): {ending}", self.id, self.peer),
            Ending::Dropped(_) => info!("{} ({}): {ending}", self.id, self.peer),
        }
    }
}
