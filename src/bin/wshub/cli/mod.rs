//! The command line: `wshub serve` (the server, its flags mapped onto
//! [`Config`]) and `wshub client` (a command-line WebSocket client).
//!
//! Defaults shown by `--help` come from the library's `wshub::defaults`,
//! so the flags and the library cannot disagree. This module only parses;
//! each subcommand runs from its own file.

mod client;
mod logging;
mod publish;
mod serve;

pub use logging::LogFormat;

use std::process::ExitCode;

use std::net::SocketAddr;
use std::path::PathBuf;

use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand};
use humantime::Duration as HumanDuration;

use wshub::*;

/// A small, runtime-free WebSocket hub: chat rooms, an echo endpoint and a
/// chat page, on plain threads.
#[derive(Debug, Parser)]
#[command(name = "wshub", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the chat page, /ws, /ws/{room} and /echo.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(Box<ServeArgs>),
    /// Talk to any WebSocket server: stdin lines go out as text messages,
    /// received text is printed one message per line.
    Client(ClientArgs),
    /// Load generator: measure this or any other WebSocket server.
    Bench(crate::bench::BenchArgs),
    /// Print an access token for `serve --auth-secret-file` (HS256 JWT).
    Token(TokenArgs),
    /// Publish one message into a room through a server's API (`serve
    /// --api-key-file`); prints the server's JSON answer.
    Publish(publish::PublishArgs),
}

/// Flags of `wshub token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The secret `serve --auth-secret-file` reads.
    #[arg(long, value_name = "PATH")]
    pub secret_file: PathBuf,
    /// Who the token is for (the `sub` claim).
    #[arg(long)]
    pub sub: String,
    /// Rooms it grants, comma-separated names or patterns (`team-*`; the
    /// lobby is `''` or `*`). Without it: every room.
    #[arg(long, value_delimiter = ',')]
    pub rooms: Option<Vec<String>>,
    /// How long it is valid (its `exp`).
    #[arg(long, default_value = "1h")]
    pub ttl: HumanDuration,
}

/// Shown after `wshub serve --help`.
const SERVE_EXAMPLES: &str = "\
Examples:
  wshub serve                                   chat on http://localhost:8080/
  wshub serve --addr 127.0.0.1:9000 --echo-sender

Several instances behind one address, sharing rooms through Redis:
  wshub serve --addr 127.0.0.1:8081 --redis redis://127.0.0.1:6379
  wshub serve --addr 127.0.0.1:8082 --redis redis://127.0.0.1:6379
  and nginx in front of the two, with TLS: deploy/nginx.conf.

Only holders of a token may join, each where the token allows:
  head -c 32 /dev/urandom > secret && chmod 600 secret
  wshub serve --auth-secret-file secret
  wshub token --secret-file secret --sub alice --rooms 'ops,team-*' --ttl 1h
  then open http://localhost:8080/#room=ops&token=<the token>";

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::Client(args) => client::run(&args),
        Command::Bench(args) => crate::bench::run(&args),
        Command::Token(args) => token(&args),
        Command::Publish(args) => publish::run(&args),
    }
}

/// `wshub token`: prints the token on stdout.
fn token(args: &TokenArgs) -> ExitCode {
    let secret = match read_secret(&args.secret_file) {
        Ok(secret) => secret,
        Err(e) => {
            eprintln!("wshub token: {e}");
            return ExitCode::FAILURE;
        }
    };
    match wshub::auth::mint_token(&secret, &args.sub, args.rooms.as_deref(), args.ttl.into()) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wshub token: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A secret file's bytes, less one trailing newline (`openssl rand -hex
/// 32 > secret` writes one); empty is an error.
pub fn read_secret(path: &std::path::Path) -> Result<wshub::auth::Secret, String> {
    let mut bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("{}: the secret is empty", path.display()));
    }
    Ok(wshub::auth::Secret::new(bytes))
}

/// Flags of `wshub client`.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The server, e.g. ws://localhost:8080/ws/ops
    pub url: String,
    /// Ask a wshub room for its last K messages first (K or "all"; adds ?history=K to the URL).
    #[arg(long, value_name = "K")]
    pub history: Option<String>,
    /// Send this file first, as a file message (u16 LE name length, UTF-8 name, bytes).
    #[arg(long, value_name = "PATH")]
    pub send_file: Option<PathBuf>,
    /// Save received file messages into this directory (never overwriting).
    #[arg(long, value_name = "DIR")]
    pub save_dir: Option<PathBuf>,
    /// Send --text this often.
    #[arg(long, requires = "text")]
    pub every: Option<HumanDuration>,
    /// The text --every sends.
    #[arg(long, requires = "every")]
    pub text: Option<String>,
    /// Do not read stdin: run until Ctrl-C or until the server closes.
    #[arg(long)]
    pub no_stdin: bool,
    /// Origin header to send (browsers always send one; servers may check it).
    #[arg(long)]
    pub origin: Option<String>,
    /// Offer this subprotocol. Repeatable.
    #[arg(long = "subprotocol", value_name = "NAME")]
    pub subprotocols: Vec<String>,
    /// Extra request header. Repeatable.
    #[arg(long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Largest message accepted from the server.
    #[arg(long, default_value_t = ByteSize(defaults::MAX_MESSAGE_BYTES as u64))]
    pub max_message_bytes: ByteSize,
    /// Offer permessage-deflate (messages go compressed when the server agrees).
    #[arg(long)]
    pub compression: bool,
    /// Send this access token (Authorization: Bearer), for a server with
    /// --auth-secret-file.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Log level for the client's own diagnostics.
    #[arg(long, default_value = "warn")]
    pub log_level: log::LevelFilter,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected 'Name: value'"))?;
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("{s:?}: bad header name"));
    }
    Ok((name.to_string(), value.trim().to_string()))
}

/// Flags of `wshub serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; repeat it to listen on several (e.g.
    /// `--addr 0.0.0.0:8080 --addr [::]:8080`).
    #[arg(long, default_value = defaults::ADDR)]
    pub addr: Vec<SocketAddr>,
    /// Listen backlog (capped by the kernel's net.core.somaxconn).
    #[arg(long, default_value_t = defaults::LISTEN_BACKLOG)]
    pub listen_backlog: u32,
    /// Bound on every write to a client; slower clients are dropped.
    #[arg(long, default_value_t = defaults::WRITE_TIMEOUT.into())]
    pub write_timeout: HumanDuration,
    /// Close a client from which nothing (data or pong) arrives for this long.
    #[arg(long, default_value_t = defaults::PONG_TIMEOUT.into())]
    pub pong_timeout: HumanDuration,
    /// How often to ping each client (must be below --pong-timeout).
    #[arg(long, default_value_t = defaults::PING_INTERVAL.into())]
    pub ping_interval: HumanDuration,
    /// Messages queued for one client before it is evicted (close 1008).
    #[arg(long, default_value_t = defaults::SEND_QUEUE)]
    pub send_queue: usize,
    /// Bytes queued for one client before it is evicted (close 1008).
    #[arg(long, default_value_t = ByteSize(defaults::SEND_QUEUE_BYTES as u64))]
    pub send_queue_bytes: ByteSize,
    /// Largest message accepted from a client; larger closes with 1009.
    #[arg(long, default_value_t = ByteSize(defaults::MAX_MESSAGE_BYTES as u64))]
    pub max_message_bytes: ByteSize,
    /// Most bytes buffered for all clients together (messages being received,
    /// frames queued); past it messages get 1013 and the largest queues are
    /// evicted [default: a quarter of the machine's memory].
    #[arg(long)]
    pub max_buffered_bytes: Option<ByteSize>,
    /// A message not complete this long after its first byte closes its connection with 1008.
    #[arg(long, default_value_t = defaults::MESSAGE_TIMEOUT.into())]
    pub message_timeout: HumanDuration,
    /// Deadline for a complete HTTP request head (also the keep-alive idle time).
    #[arg(long, default_value_t = defaults::HEAD_TIMEOUT.into())]
    pub head_timeout: HumanDuration,
    /// Largest HTTP request head; larger gets 431.
    #[arg(long, default_value_t = ByteSize(defaults::MAX_HEAD_BYTES as u64))]
    pub max_head_bytes: ByteSize,
    /// How long to wait for a client's answer to our Close.
    #[arg(long, default_value_t = defaults::CLOSE_TIMEOUT.into())]
    pub close_timeout: HumanDuration,
    /// Most open WebSocket connections; more get 503 with Retry-After [default: no limit].
    #[arg(long)]
    pub max_clients: Option<usize>,
    /// Allow browser pages from this origin (e.g. `http://example.com:3000`); `*` allows any. Repeatable.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    pub allowed_origins: Vec<String>,
    /// A subprotocol the server speaks, in order of preference. Repeatable.
    #[arg(long = "subprotocol", value_name = "NAME")]
    pub subprotocols: Vec<String>,
    /// Also send each chat message back to its sender.
    #[arg(long)]
    pub echo_sender: bool,
    /// Serve files from this directory instead of the built-in page.
    #[arg(long, value_name = "DIR")]
    pub static_dir: Option<PathBuf>,
    /// Read chunk per connection (allocated for each one).
    #[arg(long, default_value_t = ByteSize(defaults::READ_BUFFER_BYTES as u64))]
    pub read_buffer_bytes: ByteSize,
    /// Stack size of each connection thread.
    #[arg(long, default_value_t = ByteSize(defaults::THREAD_STACK_BYTES as u64))]
    pub thread_stack_bytes: ByteSize,
    /// Most connection threads, below what the system allows (the thread
    /// budget logged at start) [default: the system's limits].
    #[arg(long, value_name = "N")]
    pub max_threads: Option<usize>,
    /// On SIGTERM, keep serving this long with /healthz at 503 and new upgrades
    /// refused, before closing clients with 1001 (0: at once).
    #[arg(long, default_value = "0s")]
    pub drain_timeout: HumanDuration,
    /// Messages each room keeps for clients that join with ?history=K (0: none).
    #[arg(long, default_value_t = defaults::HISTORY)]
    pub history: usize,
    /// Bytes each room's history may hold.
    #[arg(long, default_value_t = ByteSize(defaults::HISTORY_BYTES as u64))]
    pub history_bytes: ByteSize,
    /// Messages older than this leave the history (an empty room's history goes too).
    #[arg(long, default_value_t = defaults::HISTORY_AGE.into())]
    pub history_age: HumanDuration,
    /// Share rooms with other instances through Redis:
    /// redis://[USER:PASSWORD@]HOST:PORT[/DB], or rediss://… for TLS.
    /// Several instances behind one address (an nginx upstream) then act as
    /// one hub. The password never appears in logs (shown as ***).
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// With a rediss:// URL: trust the CA in this PEM file (a private CA)
    /// instead of the system's roots.
    #[arg(long, value_name = "PATH", requires = "redis")]
    pub redis_ca_file: Option<PathBuf>,
    /// Require an HS256 token (JWT) signed with this file's secret for
    /// every upgrade: ?token=, Authorization: Bearer, or a bearer.<token>
    /// subprotocol. Tokens come from `wshub token`.
    #[arg(long, value_name = "PATH")]
    pub auth_secret_file: Option<PathBuf>,
    /// Turn on the server API under /api/ (publish into rooms, read
    /// history, list members, remove clients): requests must carry this
    /// file's key in X-API-Key. Without it /api/ answers 404.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,
    /// Also require a token for /rooms and /metrics (otherwise left to the proxy).
    #[arg(long)]
    pub protect_admin: bool,
    /// Messages a client may send per second; faster closes it with 1008.
    #[arg(long, value_name = "N")]
    pub max_messages_per_second: Option<u32>,
    /// Messages a client may send at once above that rate [default: the
    /// rate, at least 10].
    #[arg(long, value_name = "N", requires = "max_messages_per_second")]
    pub message_burst: Option<u32>,
    /// WebSocket connections one IP address may hold; more get 503.
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Accept permessage-deflate from clients that offer it (browsers do);
    /// each broadcast is compressed once for all compressing receivers.
    #[arg(long)]
    pub compression: bool,
    /// Messages shorter than this go uncompressed.
    #[arg(long, default_value_t = defaults::COMPRESSION_MIN_BYTES)]
    pub compression_min_bytes: usize,
    /// Deflate level, 0-9.
    #[arg(long, default_value_t = defaults::COMPRESSION_LEVEL,
          value_parser = clap::value_parser!(u32).range(0..=9))]
    pub compression_level: u32,
    /// Let clients keep their compression context between messages
    /// (better ratios; costs a 32 KiB window per such connection).
    #[arg(long)]
    pub compression_client_takeover: bool,
    /// Log level: off, error, warn, info, debug or trace.
    #[arg(long, default_value = "info")]
    pub log_level: log::LevelFilter,
    /// Log lines as text, or as one JSON object per line (time, level,
    /// message, and client, peer and room where there is one).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl ServeArgs {
    /// The [`Config`] these flags describe.
    pub fn config(&self) -> Config {
        let bytes = |b: ByteSize| usize::try_from(b.as_u64()).unwrap_or(usize::MAX);
        let mut config = Config::default()
            .extra_addrs(self.addr.iter().skip(1).copied())
            .listen_backlog(self.listen_backlog)
            .write_timeout(self.write_timeout.into())
            .pong_timeout(self.pong_timeout.into())
            .ping_interval(self.ping_interval.into())
            .send_queue(self.send_queue)
            .send_queue_bytes(bytes(self.send_queue_bytes))
            .max_message_bytes(bytes(self.max_message_bytes))
            .message_timeout(self.message_timeout.into())
            .head_timeout(self.head_timeout.into())
            .max_head_bytes(bytes(self.max_head_bytes))
            .close_timeout(self.close_timeout.into())
            .max_clients(self.max_clients)
            .allowed_origins(self.allowed_origins.clone())
            .subprotocols(self.subprotocols.clone())
            .echo_sender(self.echo_sender)
            .read_buffer_bytes(bytes(self.read_buffer_bytes))
            .thread_stack_bytes(bytes(self.thread_stack_bytes))
            .max_threads(self.max_threads)
            .drain_timeout(self.drain_timeout.into())
            .history(self.history)
            .history_bytes(bytes(self.history_bytes))
            .history_age(self.history_age.into())
            .protect_admin(self.protect_admin)
            .max_messages_per_second(self.max_messages_per_second)
            .message_burst(self.message_burst)
            .max_connections_per_ip(self.max_connections_per_ip)
            .compression(self.compression)
            .compression_min_bytes(self.compression_min_bytes)
            .compression_level(self.compression_level)
            .compression_client_takeover(self.compression_client_takeover);
        // The --auth-secret-file is read by `serve`, which can report a failure.
        if let Some(&addr) = self.addr.first() {
            config = config.addr(addr);
        }
        if let Some(bytes_max) = self.max_buffered_bytes {
            config = config.max_buffered_bytes(bytes(bytes_max));
        }
        if let Some(dir) = &self.static_dir {
            config = config.static_dir(dir);
        }
        if let Some(url) = &self.redis {
            config = config.redis(url);
        }
        if let Some(ca) = &self.redis_ca_file {
            config = config.redis_ca_file(ca);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse() {
        assert_eq!(
            parse_header("X-Token: a:b "),
            Ok(("X-Token".into(), "a:b".into()))
        );
        assert!(parse_header("nocolon").is_err());
        assert!(parse_header("bad name: x").is_err());
    }

    #[test]
    fn defaults_match_config() {
        let cli = Cli::parse_from(["wshub", "serve"]);
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let from_flags = format!("{:?}", args.config());
        let from_lib = format!("{:?}", Config::default());
        assert_eq!(from_flags, from_lib);
    }

    #[test]
    fn sizes_and_durations_parse() {
        let cli = Cli::parse_from([
            "wshub",
            "serve",
            "--max-message-bytes",
            "1 MiB",
            "--pong-timeout",
            "2s",
            "--ping-interval",
            "500ms",
        ]);
        let Command::Serve(args) = cli.command else {
            panic!("serve")
        };
        let expected = Config::default()
            .max_message_bytes(1 << 20)
            .pong_timeout(std::time::Duration::from_secs(2))
            .ping_interval(std::time::Duration::from_millis(500));
        assert_eq!(format!("{:?}", args.config()), format!("{expected:?}"));
    }
}
