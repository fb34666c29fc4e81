//! Server configuration: [`Config`], built from its defaults with one
//! method per setting, and [`defaults`], every default as a named
//! constant (which `wshub serve`'s flags and the tests read too).
//!
//! May touch: nothing (values only; `defaults` reads `/proc/meminfo`).

pub mod defaults;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::auth::{Authorizer, Secret};

/// Everything a [`Server`](crate::Server) can be told, built from the
/// defaults with one method per setting:
///
/// ```
/// use std::time::Duration;
/// let config = wshub::Config::default()
///     .addr("127.0.0.1:0".parse().unwrap())
///     .max_clients(500)
///     .ping_interval(Duration::from_secs(20))
///     .pong_timeout(Duration::from_secs(30));
/// # let _ = config;
/// ```
///
/// Each method's documentation names its default (a constant of
/// [`defaults`]). `Config` is checked when the server starts
/// ([`Server::start`](crate::Server::start) fails with
/// [`Error::Config`](crate::Error::Config)), not method by method. New
/// settings arrive as new methods, so code written against this one keeps
/// compiling. Its `Debug` shows no secret: a Redis password is masked and
/// the token secret is never printed.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use]
pub struct Config {
    pub(crate) addr: SocketAddr,
    pub(crate) extra_addrs: Vec<SocketAddr>,
    pub(crate) listen_backlog: u32,
    pub(crate) write_timeout: Duration,
    pub(crate) pong_timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) send_queue: usize,
    pub(crate) send_queue_bytes: usize,
    pub(crate) max_message_bytes: usize,
    pub(crate) max_buffered_bytes: usize,
    pub(crate) message_timeout: Duration,
    pub(crate) head_timeout: Duration,
    pub(crate) max_head_bytes: usize,
    pub(crate) close_timeout: Duration,
    pub(crate) max_clients: Option<usize>,
    pub(crate) allowed_origins: Vec<String>,
    pub(crate) subprotocols: Vec<String>,
    pub(crate) echo_sender: bool,
    pub(crate) static_dir: Option<PathBuf>,
    pub(crate) read_buffer_bytes: usize,
    pub(crate) thread_stack_bytes: usize,
    pub(crate) max_threads: Option<usize>,
    pub(crate) api_key: Option<ApiKey>,
    pub(crate) message_hook: Option<crate::hook::MessageHook>,
    pub(crate) history: usize,
    pub(crate) history_bytes: usize,
    pub(crate) history_age: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) redis: Option<RedisUrl>,
    pub(crate) redis_ca_file: Option<std::path::PathBuf>,
    pub(crate) event_queue: usize,
    pub(crate) auth_secret: Option<Secret>,
    pub(crate) authorizer: Option<Authorizer>,
    pub(crate) protect_admin: bool,
    pub(crate) max_messages_per_second: Option<u32>,
    pub(crate) message_burst: Option<u32>,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) compression: bool,
    pub(crate) compression_min_bytes: usize,
    pub(crate) compression_level: u32,
    pub(crate) compression_client_takeover: bool,
}

/// The Redis URL, whose `Debug` masks the password.
#[derive(Clone)]
pub(crate) struct RedisUrl(pub(crate) String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The user:password part, if any, is never shown.
        let shown = match self.0.split_once("://") {
            Some((scheme, rest)) => match rest.split_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.0.clone(),
            },
            None => self.0.clone(),
        };
        f.write_str(&shown)
    }
}

/// The server API's key, whose `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct ApiKey(pub(crate) String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: defaults::ADDR
                .parse()
                .expect("defaults::ADDR is a valid address"),
            extra_addrs: Vec::new(),
            listen_backlog: defaults::LISTEN_BACKLOG,
            write_timeout: defaults::WRITE_TIMEOUT,
            pong_timeout: defaults::PONG_TIMEOUT,
            ping_interval: defaults::PING_INTERVAL,
            send_queue: defaults::SEND_QUEUE,
            send_queue_bytes: defaults::SEND_QUEUE_BYTES,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            max_buffered_bytes: defaults::max_buffered_bytes(),
            message_timeout: defaults::MESSAGE_TIMEOUT,
            head_timeout: defaults::HEAD_TIMEOUT,
            max_head_bytes: defaults::MAX_HEAD_BYTES,
            close_timeout: defaults::CLOSE_TIMEOUT,
            max_clients: None,
            allowed_origins: Vec::new(),
            subprotocols: Vec::new(),
            echo_sender: false,
            static_dir: None,
            read_buffer_bytes: defaults::READ_BUFFER_BYTES,
            thread_stack_bytes: defaults::THREAD_STACK_BYTES,
            max_threads: None,
            api_key: None,
            message_hook: None,
            event_queue: defaults::EVENT_QUEUE,
            drain_timeout: Duration::ZERO,
            history: defaults::HISTORY,
            history_bytes: defaults::HISTORY_BYTES,
            history_age: defaults::HISTORY_AGE,
            redis: None,
            redis_ca_file: None,
            auth_secret: None,
            authorizer: None,
            protect_admin: false,
            max_messages_per_second: None,
            message_burst: None,
            max_connections_per_ip: None,
            compression: false,
            compression_min_bytes: defaults::COMPRESSION_MIN_BYTES,
            compression_level: defaults::COMPRESSION_LEVEL,
            compression_client_takeover: false,
        }
    }
}

impl Config {
    /// Address to listen on. Default [`defaults::ADDR`]; port 0 picks a free port
    /// (see [`Server::local_addr`](crate::Server::local_addr)).
    pub fn addr(mut self, value: SocketAddr) -> Config {
        self.addr = value;
        self
    }

    /// More addresses to listen on besides `addr`, each with its own
    /// acceptor thread (e.g. `[::]:8080` beside `0.0.0.0:8080`; an IPv6
    /// address listed beside an IPv4 one is bound IPv6-only so the two do
    /// not collide). Default: none.
    pub fn extra_addrs(mut self, value: impl IntoIterator<Item = SocketAddr>) -> Config {
        self.extra_addrs = value.into_iter().collect();
        self
    }

    /// Listen backlog (Unix; elsewhere std's). Default
    /// [`defaults::LISTEN_BACKLOG`].
    pub fn listen_backlog(mut self, value: u32) -> Config {
        self.listen_backlog = value;
        self
    }

    /// Bound on each write of a frame batch; a peer that does not take the
    /// bytes in time is dropped. Default [`defaults::WRITE_TIMEOUT`].
    pub fn write_timeout(mut self, value: Duration) -> Config {
        self.write_timeout = value;
        self
    }

    /// A peer from which nothing (data or pong) arrives for this long is
    /// closed. Default [`defaults::PONG_TIMEOUT`].
    pub fn pong_timeout(mut self, value: Duration) -> Config {
        self.pong_timeout = value;
        self
    }

    /// How often the writer pings. Default [`defaults::PING_INTERVAL`].
    pub fn ping_interval(mut self, value: Duration) -> Config {
        self.ping_interval = value;
        self
    }

    /// Messages a client may have queued before it is evicted with 1008.
    /// Default [`defaults::SEND_QUEUE`].
    pub fn send_queue(mut self, value: usize) -> Config {
        self.send_queue = value;
        self
    }

    /// Bytes a client may have queued before it is evicted with 1008.
    /// Default [`defaults::SEND_QUEUE_BYTES`].
    pub fn send_queue_bytes(mut self, value: usize) -> Config {
        self.send_queue_bytes = value;
        self
    }

    /// Largest message (and frame) accepted from a client; larger closes with
    /// 1009. Default [`defaults::MAX_MESSAGE_BYTES`].
    pub fn max_message_bytes(mut self, value: usize) -> Config {
        self.max_message_bytes = value;
        self
    }

    /// The memory budget: the most bytes the server holds on its clients'
    /// behalf at once — messages being received and not yet complete, and
    /// frames queued for writers (a frame shared by many queues counts
    /// once). A message that would take it over is refused with 1013; when
    /// queues take it over, the clients with the most queued are evicted.
    /// Default [`defaults::max_buffered_bytes`]: a quarter of the memory.
    pub fn max_buffered_bytes(mut self, value: usize) -> Config {
        self.max_buffered_bytes = value;
        self
    }

    /// How long a message may take from its first byte to its last; a
    /// connection that takes longer is closed with 1008. Default
    /// [`defaults::MESSAGE_TIMEOUT`].
    pub fn message_timeout(mut self, value: Duration) -> Config {
        self.message_timeout = value;
        self
    }

    /// Deadline for a whole HTTP request head; also the keep-alive idle time.
    /// Default [`defaults::HEAD_TIMEOUT`].
    pub fn head_timeout(mut self, value: Duration) -> Config {
        self.head_timeout = value;
        self
    }

    /// Largest HTTP request head. Default [`defaults::MAX_HEAD_BYTES`].
    pub fn max_head_bytes(mut self, value: usize) -> Config {
        self.max_head_bytes = value;
        self
    }

    /// How long to wait for the peer's Close after sending ours.
    /// Default [`defaults::CLOSE_TIMEOUT`].
    pub fn close_timeout(mut self, value: Duration) -> Config {
        self.close_timeout = value;
        self
    }

    /// Upper bound of open WebSocket connections; upgrades beyond it get 503.
    /// Default `None`: bounded only by the process's limits.
    pub fn max_clients(mut self, value: impl Into<Option<usize>>) -> Config {
        self.max_clients = value.into();
        self
    }

    /// Origins allowed besides the request's own host (`*` allows any).
    /// Default empty: gorilla's same-origin rule.
    pub fn allowed_origins(mut self, value: impl IntoIterator<Item = impl Into<String>>) -> Config {
        self.allowed_origins = value.into_iter().map(Into::into).collect();
        self
    }

    /// Subprotocols the server speaks, in order of preference. Default empty.
    pub fn subprotocols(mut self, value: impl IntoIterator<Item = impl Into<String>>) -> Config {
        self.subprotocols = value.into_iter().map(Into::into).collect();
        self
    }

    /// Also send each chat message back to its sender. Default `false`.
    pub fn echo_sender(mut self, value: bool) -> Config {
        self.echo_sender = value;
        self
    }

    /// Serve files from this directory instead of the page embedded in the
    /// binary. Default `None`.
    pub fn static_dir(mut self, value: impl Into<PathBuf>) -> Config {
        self.static_dir = Some(value.into());
        self
    }

    /// Read chunk of each WebSocket connection. Default
    /// [`defaults::READ_BUFFER_BYTES`].
    pub fn read_buffer_bytes(mut self, value: usize) -> Config {
        self.read_buffer_bytes = value;
        self
    }

    /// Stack size of every connection thread. Default
    /// [`defaults::THREAD_STACK_BYTES`].
    pub fn thread_stack_bytes(mut self, value: usize) -> Config {
        self.thread_stack_bytes = value;
        self
    }

    /// Most connection threads the server starts, below what the system
    /// allows (the thread budget it logs at start). Default `None`: the
    /// system's limits alone. Past it, upgrades get 503 with `Retry-After`.
    pub fn max_threads(mut self, value: impl Into<Option<usize>>) -> Config {
        self.max_threads = value.into();
        self
    }

    /// Turns on the server API under `/api/` (see the README's "Server
    /// API"): every request must carry this key in `X-API-Key`. Default
    /// `None`: every `/api/` path answers 404.
    pub fn api_key(mut self, value: impl Into<Option<String>>) -> Config {
        self.api_key = value.into().map(ApiKey);
        self
    }

    /// A function called on each chat client's reader thread for every
    /// text or binary message, before it goes to the room: it relays,
    /// replaces, drops, answers the sender only, or closes the sender (see
    /// [`hook`](crate::hook)). It may block; only its own client waits. A
    /// panic in it closes that client with 1011. Default: none (every
    /// message is relayed).
    ///
    /// ```
    /// use wshub::hook::{Incoming, Verdict};
    /// use wshub::ws::Message;
    /// let config = wshub::Config::default().message_hook(|m: &Incoming<'_>| {
    ///     match m.message.to_text() {
    ///         Ok("/ping") => Verdict::Answer(Message::text("pong")),
    ///         _ => Verdict::Relay,
    ///     }
    /// });
    /// # let _ = config;
    /// ```
    pub fn message_hook(
        mut self,
        hook: impl Fn(&crate::hook::Incoming<'_>) -> crate::hook::Verdict + Send + Sync + 'static,
    ) -> Config {
        self.message_hook = Some(crate::hook::MessageHook(std::sync::Arc::new(hook)));
        self
    }

    /// Messages each room keeps for clients that ask (`?history=K` or
    /// `?history=all` on joining); 0 turns history off. Default
    /// [`defaults::HISTORY`].
    pub fn history(mut self, value: usize) -> Config {
        self.history = value;
        self
    }

    /// Bytes each room's history may hold. Default [`defaults::HISTORY_BYTES`].
    pub fn history_bytes(mut self, value: usize) -> Config {
        self.history_bytes = value;
        self
    }

    /// Messages older than this leave the history; a room without clients
    /// forgets its history once its newest message is this old. Default
    /// [`defaults::HISTORY_AGE`].
    pub fn history_age(mut self, value: Duration) -> Config {
        self.history_age = value;
        self
    }

    /// On shutdown through a [`Handle`](crate::Handle) (SIGTERM in
    /// `wshub serve`), how long to keep serving while draining: `/healthz`
    /// answers 503 at once and new upgrades get 503, and only after this
    /// are the clients closed with 1001. Default zero: at once.
    pub fn drain_timeout(mut self, value: Duration) -> Config {
        self.drain_timeout = value;
        self
    }

    /// Share rooms with other instances through the Redis server at this
    /// URL (`redis://[USER:PASSWORD@]HOST:PORT[/DB]`, or `rediss://…` for
    /// TLS; needs the `redis` cargo feature; the password never reaches a
    /// log line or an error message). A
    /// URL that cannot work fails [`Server::start`](crate::Server::start);
    /// an unreachable server is retried in the background. Default `None`:
    /// no Redis code runs.
    pub fn redis(mut self, value: impl Into<String>) -> Config {
        self.redis = Some(RedisUrl(value.into()));
        self
    }

    /// With a `rediss://` [`redis`](Config::redis) URL: the PEM file of
    /// the CA that signed the Redis server's certificate (a private CA);
    /// without it the system's roots are trusted. Default `None`.
    pub fn redis_ca_file(mut self, value: impl Into<PathBuf>) -> Config {
        self.redis_ca_file = Some(value.into());
        self
    }

    /// Capacity of each event receiver; events beyond it are dropped (and
    /// counted in the log) rather than stalling the hub. Default
    /// [`defaults::EVENT_QUEUE`].
    pub fn event_queue(mut self, value: usize) -> Config {
        self.event_queue = value;
        self
    }

    /// The HMAC secret of HS256 tokens (`--auth-secret-file`; needs the
    /// `jwt` cargo feature): every upgrade must then carry a valid token
    /// (see [`auth`](crate::auth)). Default `None`: no authentication.
    pub fn auth_secret(mut self, value: Secret) -> Config {
        self.auth_secret = Some(value);
        self
    }

    /// The host program's own access decision instead of tokens (not with
    /// `auth_secret`). Default `None`.
    pub fn authorizer(mut self, value: Authorizer) -> Config {
        self.authorizer = Some(value);
        self
    }

    /// Also require a token (or the authorizer's consent) for `/rooms`,
    /// `/rooms/{room}` and `/metrics`. Default `false`: left to the proxy.
    pub fn protect_admin(mut self, value: bool) -> Config {
        self.protect_admin = value;
        self
    }

    /// Messages a client may send per second, on average; a client over
    /// it is closed with 1008 "rate limit". Default `None`: no limit.
    pub fn max_messages_per_second(mut self, value: impl Into<Option<u32>>) -> Config {
        self.max_messages_per_second = value.into();
        self
    }

    /// Messages a client may send at once above that rate (the token
    /// bucket's size). Default `None`: as many as one second allows, and
    /// at least [`defaults::MESSAGE_BURST`].
    pub fn message_burst(mut self, value: impl Into<Option<u32>>) -> Config {
        self.message_burst = value.into();
        self
    }

    /// WebSocket connections one IP address may hold; beyond, upgrades get
    /// 503. Default `None`: no limit.
    pub fn max_connections_per_ip(mut self, value: impl Into<Option<usize>>) -> Config {
        self.max_connections_per_ip = value.into();
        self
    }

    /// Accept permessage-deflate (RFC 7692) from clients that offer it
    /// (every browser does). The server answers `server_no_context_takeover`,
    /// so a broadcast is compressed once for all its compressing receivers.
    /// Default `false`, as in gorilla and uWebSockets.
    pub fn compression(mut self, value: bool) -> Config {
        self.compression = value;
        self
    }

    /// Messages shorter than this go uncompressed. Default
    /// [`defaults::COMPRESSION_MIN_BYTES`].
    pub fn compression_min_bytes(mut self, value: usize) -> Config {
        self.compression_min_bytes = value;
        self
    }

    /// The deflate level, 0 (none) to 9 (smallest). Default
    /// [`defaults::COMPRESSION_LEVEL`].
    pub fn compression_level(mut self, value: u32) -> Config {
        self.compression_level = value;
        self
    }

    /// Let clients keep their compression context between messages
    /// (better ratios for them, at the cost of a 32 KiB inflate window the
    /// server keeps for each such connection, idle or not). Default
    /// `false`: the server asks for `client_no_context_takeover`.
    pub fn compression_client_takeover(mut self, value: bool) -> Config {
        self.compression_client_takeover = value;
        self
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
        if self
            .api_key
            .as_ref()
            .is_some_and(|key| key.0.trim().is_empty())
        {
            return bad("the API key must not be empty");
        }
        if self.max_threads.is_some_and(|max| max < 8) {
            return bad("the thread limit must leave room for at least 8 threads");
        }
        if self.thread_stack_bytes < 32 << 10 {
            return bad("thread stacks need at least 32 KiB");
        }
        Ok(())
    }
}
