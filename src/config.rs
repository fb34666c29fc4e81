//! Server configuration: one [`Config`] struct whose defaults are the
//! documented constants below.
//!
//! The timing defaults are gorilla/websocket's chat example constants
//! (`writeWait`, `pongWait`, `pingPeriod`, the 256-message `send` channel);
//! the size limits are chosen for a hub that relays files. The command line
//! (`wshub serve --help`) shows the same values, because `cli` reads them from
//! here. This module touches nothing else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{Authorizer, Secret};

/// Messages shorter than this are sent uncompressed, with compression on:
/// deflate gains little on them and costs a compression each.
pub const DEFAULT_COMPRESSION_MIN_BYTES: usize = 256;

/// The deflate level (1: fastest, gorilla's default too).
pub const DEFAULT_COMPRESSION_LEVEL: u32 = 1;

/// Smallest burst of the per-client rate limit when
/// [`Config::message_burst`] is not given.
pub const DEFAULT_MESSAGE_BURST: u32 = 10;

/// Default listen address: every IPv4 interface, port 8080.
pub const DEFAULT_ADDR: &str = "0.0.0.0:8080";
/// Default bound on every socket write (gorilla's `writeWait`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a peer may stay silent, sending neither data nor pongs
/// (gorilla's `pongWait`).
pub const DEFAULT_PONG_TIMEOUT: Duration = Duration::from_secs(60);
/// Default interval between pings; below the pong timeout so a live peer
/// always answers in time (gorilla's `pingPeriod`, 9/10 of `pongWait`).
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(54);
/// Default per-client send queue, in messages (gorilla's `send` channel).
pub const DEFAULT_SEND_QUEUE: usize = 256;
/// Default per-client send queue, in bytes of queued frames.
pub const DEFAULT_SEND_QUEUE_BYTES: usize = 64 << 20;
/// Default largest message accepted from a client.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Default deadline for a complete HTTP request head (slowloris guard).
pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(3);
/// Default largest HTTP request head; beyond it the answer is 431.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 8 << 10;
/// Default time to wait for the peer's answer to a Close we sent.
pub const DEFAULT_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Default read chunk of a WebSocket connection. tungstenite allocates this
/// eagerly per connection (its own default is 128 KiB), so it is small here.
pub const DEFAULT_READ_BUFFER_BYTES: usize = 4 << 10;
/// Default stack size of the reader and writer threads. Only touched pages
/// count against memory, but the reservation counts against address space.
pub const DEFAULT_THREAD_STACK_BYTES: usize = 128 << 10;
/// Default time a started message may take to arrive completely (the
/// WebSocket form of slowloris); after it the connection is closed with 1008.
pub const DEFAULT_MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// The memory budget where `/proc/meminfo` cannot be read: 1 GiB.
pub const DEFAULT_MAX_BUFFERED_BYTES_FALLBACK: usize = 1 << 30;

/// The default memory budget ([`Config::max_buffered_bytes`]): a quarter
/// of the machine's memory (`MemTotal` in `/proc/meminfo`), or
/// [`DEFAULT_MAX_BUFFERED_BYTES_FALLBACK`] where that is unknown.
pub fn default_max_buffered_bytes() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib.saturating_mul(1024) / 4)
        })
        .filter(|&bytes| bytes > 0)
        .unwrap_or(DEFAULT_MAX_BUFFERED_BYTES_FALLBACK)
}

/// Default messages each room keeps for late joiners (`?history=K`); 0
/// turns history off.
pub const DEFAULT_HISTORY: usize = 100;
/// Default bytes each room's history may hold.
pub const DEFAULT_HISTORY_BYTES: usize = 4 << 20;
/// Default age after which a message leaves its room's history (and an
/// empty room its history).
pub const DEFAULT_HISTORY_AGE: Duration = Duration::from_secs(3600);

/// Default listen backlog: connections the kernel completes and queues
/// before the acceptor takes them. std's own is 128, which 2,000 clients
/// connecting at once overflow (some then stall a second on a SYN
/// retransmit). Linux caps it at `net.core.somaxconn` (4096 by default).
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
/// Default capacity of each [`Server::events`](crate::Server::events) receiver.
pub const DEFAULT_EVENT_QUEUE: usize = 4096;

/// Everything a [`Server`](crate::Server) can be told. Build it with struct
/// update syntax: `Config { echo_sender: true, ..Config::default() }`.
///
/// Public fields rather than a builder, on purpose: a server's settings are
/// many independent knobs, each with a documented default, and a literal
/// with `..Config::default()` reads like the command line it mirrors (every
/// field is a `wshub serve` flag), can be inspected and cloned, and needs no
/// setter per field. Fields will be added as the server grows; code that
/// always ends its literal with `..Config::default()`, as every example
/// here does, keeps compiling. `Config` is checked when the server starts
/// ([`Server::start`](crate::Server::start) fails with
/// [`Error::Config`](crate::Error::Config)), not field by field.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on. Default [`DEFAULT_ADDR`]; port 0 picks a free port
    /// (see [`Server::local_addr`](crate::Server::local_addr)).
    pub addr: SocketAddr,
    /// More addresses to listen on besides `addr`, each with its own
    /// acceptor thread (e.g. `[::]:8080` beside `0.0.0.0:8080`; an IPv6
    /// address listed beside an IPv4 one is bound IPv6-only so the two do
    /// not collide). Default: none.
    pub extra_addrs: Vec<SocketAddr>,
    /// Listen backlog (Unix; elsewhere std's). Default
    /// [`DEFAULT_LISTEN_BACKLOG`].
    pub listen_backlog: u32,
    /// Bound on each write of a frame batch; a peer that does not take the
    /// bytes in time is dropped. Default [`DEFAULT_WRITE_TIMEOUT`].
    pub write_timeout: Duration,
    /// A peer from which nothing (data or pong) arrives for this long is
    /// closed. Default [`DEFAULT_PONG_TIMEOUT`].
    pub pong_timeout: Duration,
    /// How often the writer pings. Default [`DEFAULT_PING_INTERVAL`].
    pub ping_interval: Duration,
    /// Messages a client may have queued before it is evicted with 1008.
    /// Default [`DEFAULT_SEND_QUEUE`].
    pub send_queue: usize,
    /// Bytes a client may have queued before it is evicted with 1008.
    /// Default [`DEFAULT_SEND_QUEUE_BYTES`].
    pub send_queue_bytes: usize,
    /// Largest message (and frame) accepted from a client; larger closes with
    /// 1009. Default [`DEFAULT_MAX_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
    /// The memory budget: the most bytes the server holds on its clients'
    /// behalf at once — messages being received and not yet complete, and
    /// frames queued for writers (a frame shared by many queues counts
    /// once). A message that would take it over is refused with 1013; when
    /// queues take it over, the clients with the most queued are evicted.
    /// Default [`default_max_buffered_bytes`]: a quarter of the memory.
    pub max_buffered_bytes: usize,
    /// How long a message may take from its first byte to its last; a
    /// connection that takes longer is closed with 1008. Default
    /// [`DEFAULT_MESSAGE_TIMEOUT`].
    pub message_timeout: Duration,
    /// Deadline for a whole HTTP request head; also the keep-alive idle time.
    /// Default [`DEFAULT_HEAD_TIMEOUT`].
    pub head_timeout: Duration,
    /// Largest HTTP request head. Default [`DEFAULT_MAX_HEAD_BYTES`].
    pub max_head_bytes: usize,
    /// How long to wait for the peer's Close after sending ours.
    /// Default [`DEFAULT_CLOSE_TIMEOUT`].
    pub close_timeout: Duration,
    /// Upper bound of open WebSocket connections; upgrades beyond it get 503.
    /// Default `None`: bounded only by the process's limits.
    pub max_clients: Option<usize>,
    /// Origins allowed besides the request's own host (`*` allows any).
    /// Default empty: gorilla's same-origin rule.
    pub allowed_origins: Vec<String>,
    /// Subprotocols the server speaks, in order of preference. Default empty.
    pub subprotocols: Vec<String>,
    /// Also send each chat message back to its sender. Default `false`.
    pub echo_sender: bool,
    /// Serve files from this directory instead of the page embedded in the
    /// binary. Default `None`.
    pub static_dir: Option<PathBuf>,
    /// Read chunk of each WebSocket connection. Default
    /// [`DEFAULT_READ_BUFFER_BYTES`].
    pub read_buffer_bytes: usize,
    /// Stack size of every connection thread. Default
    /// [`DEFAULT_THREAD_STACK_BYTES`].
    pub thread_stack_bytes: usize,
    /// Messages each room keeps for clients that ask (`?history=K` or
    /// `?history=all` on joining); 0 turns history off. Default
    /// [`DEFAULT_HISTORY`].
    pub history: usize,
    /// Bytes each room's history may hold. Default [`DEFAULT_HISTORY_BYTES`].
    pub history_bytes: usize,
    /// Messages older than this leave the history; a room without clients
    /// forgets its history once its newest message is this old. Default
    /// [`DEFAULT_HISTORY_AGE`].
    pub history_age: Duration,
    /// On shutdown through a [`Handle`](crate::Handle) (SIGTERM in
    /// `wshub serve`), how long to keep serving while draining: `/healthz`
    /// answers 503 at once and new upgrades get 503, and only after this
    /// are the clients closed with 1001. Default zero: at once.
    pub drain_timeout: Duration,
    /// Share rooms with other instances through the Redis server at this
    /// URL (`redis://[USER:PASSWORD@]HOST:PORT[/DB]`, or `rediss://…` for
    /// TLS; needs the `redis` cargo feature; the password never reaches a
    /// log line or an error message). A
    /// URL that cannot work fails [`Server::start`](crate::Server::start);
    /// an unreachable server is retried in the background. Default `None`:
    /// no Redis code runs.
    pub redis: Option<String>,
    /// With a `rediss://` [`redis`](Config::redis) URL: the PEM file of
    /// the CA that signed the Redis server's certificate (a private CA);
    /// without it the system's roots are trusted. Default `None`.
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Capacity of each event receiver; events beyond it are dropped (and
    /// counted in the log) rather than stalling the hub. Default
    /// [`DEFAULT_EVENT_QUEUE`].
    pub event_queue: usize,
    /// The HMAC secret of HS256 tokens (`--auth-secret-file`; needs the
    /// `jwt` cargo feature): every upgrade must then carry a valid token
    /// (see [`auth`](crate::auth)). Default `None`: no authentication.
    pub auth_secret: Option<Secret>,
    /// The host program's own access decision instead of tokens (not with
    /// `auth_secret`). Default `None`.
    pub authorizer: Option<Authorizer>,
    /// Also require a token (or the authorizer's consent) for `/rooms`,
    /// `/rooms/{room}` and `/metrics`. Default `false`: left to the proxy.
    pub protect_admin: bool,
    /// Messages a client may send per second, on average; a client over
    /// it is closed with 1008 "rate limit". Default `None`: no limit.
    pub max_messages_per_second: Option<u32>,
    /// Messages a client may send at once above that rate (the token
    /// bucket's size). Default `None`: as many as one second allows, and
    /// at least [`DEFAULT_MESSAGE_BURST`].
    pub message_burst: Option<u32>,
    /// WebSocket connections one IP address may hold; beyond, upgrades get
    /// 503. Default `None`: no limit.
    pub max_connections_per_ip: Option<usize>,
    /// Accept permessage-deflate (RFC 7692) from clients that offer it
    /// (every browser does). The server answers `server_no_context_takeover`,
    /// so a broadcast is compressed once for all its compressing receivers.
    /// Default `false`, as in gorilla and uWebSockets.
    pub compression: bool,
    /// Messages shorter than this go uncompressed. Default
    /// [`DEFAULT_COMPRESSION_MIN_BYTES`].
    pub compression_min_bytes: usize,
    /// The deflate level, 0 (none) to 9 (smallest). Default
    /// [`DEFAULT_COMPRESSION_LEVEL`].
    pub compression_level: u32,
    /// Let clients keep their compression context between messages
    /// (better ratios for them, at the cost of a 32 KiB inflate window the
    /// server keeps for each such connection, idle or not). Default
    /// `false`: the server asks for `client_no_context_takeover`.
    pub compression_client_takeover: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: DEFAULT_ADDR
                .parse()
                .expect("DEFAULT_ADDR is a valid address"),
            extra_addrs: Vec::new(),
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            pong_timeout: DEFAULT_PONG_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            send_queue: DEFAULT_SEND_QUEUE,
            send_queue_bytes: DEFAULT_SEND_QUEUE_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_buffered_bytes: default_max_buffered_bytes(),
            message_timeout: DEFAULT_MESSAGE_TIMEOUT,
            head_timeout: DEFAULT_HEAD_TIMEOUT,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            close_timeout: DEFAULT_CLOSE_TIMEOUT,
            max_clients: None,
            allowed_origins: Vec::new(),
            subprotocols: Vec::new(),
            echo_sender: false,
            static_dir: None,
            read_buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
            thread_stack_bytes: DEFAULT_THREAD_STACK_BYTES,
            event_queue: DEFAULT_EVENT_QUEUE,
            drain_timeout: Duration::ZERO,
            history: DEFAULT_HISTORY,
            history_bytes: DEFAULT_HISTORY_BYTES,
            history_age: DEFAULT_HISTORY_AGE,
            redis: None,
            redis_ca_file: None,
            auth_secret: None,
            authorizer: None,
            protect_admin: false,
            max_messages_per_second: None,
            message_burst: None,
            max_connections_per_ip: None,
            compression: false,
            compression_min_bytes: DEFAULT_COMPRESSION_MIN_BYTES,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
            compression_client_takeover: false,
        }
    }
}

impl Config {
    /// Checks the values that would otherwise fail later, deep in a thread.
    pub(crate) fn validate(&self) -> crate::Result<()> {
        let bad = |what: &str| Err(crate::Error::Config(what.to_string()));
        if self.send_queue == 0 {
            return bad("send queue must hold at least one message");
        }
        if self.max_buffered_bytes == 0 || self.message_timeout.is_zero() {
            return bad("the memory budget and the message timeout must be positive");
        }
        if self.max_message_bytes == 0 || self.read_buffer_bytes == 0 {
            return bad("message limit and read buffer must be positive");
        }
        if self.ping_interval.is_zero() || self.pong_timeout.is_zero() {
            return bad("ping interval and pong timeout must be positive");
        }
        if self.ping_interval >= self.pong_timeout {
            return bad("ping interval must be shorter than the pong timeout");
        }
        if self.write_timeout.is_zero() || self.head_timeout.is_zero() {
            return bad("write and head timeouts must be positive");
        }
        if self.max_messages_per_second == Some(0) || self.message_burst == Some(0) {
            return bad("the rate limit and its burst must be positive");
        }
        if self.compression_level > 9 {
            return bad("the compression level is 0 to 9");
        }
        if self.max_connections_per_ip == Some(0) {
            return bad("the per-IP connection limit must be positive");
        }
        if self.max_head_bytes < 64 {
            return bad("the head limit must be at least 64 bytes");
        }
        if self.thread_stack_bytes < 32 << 10 {
            return bad("thread stacks need at least 32 KiB");
        }
        Ok(())
    }
}
