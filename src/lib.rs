//! wshub: a small, runtime-free WebSocket hub.
//!
//! It serves a chat page, chat rooms at `/ws` and `/ws/{room}`, and an echo
//! endpoint at `/echo` from a plain `std::net::TcpListener`, with blocking
//! [`tungstenite`] and OS threads — the shape of gorilla/websocket's chat
//! example: one hub thread, and per client a reader and a writer thread
//! (a *session*) that talk to the hub over crossbeam channels.
//!
//! ```no_run
//! use wshub::{Config, Event, Message, Server};
//!
//! let server = Server::start(Config { addr: "127.0.0.1:0".parse().unwrap(), ..Config::default() })?;
//! let events = server.events();
//! println!("chat at http://{}/", server.local_addr());
//! server.broadcast("ops", Message::text("hello from the host program"))?;
//! if let Ok(Event::Joined { client, room, .. }) = events.recv() {
//!     println!("{client} joined {room:?}");
//! }
//! server.shutdown(); // closes every client with 1001 and joins every thread
//! # Ok::<(), wshub::Error>(())
//! ```
//!
//! The public API: [`Server`] and its [`Handle`], configured by [`Config`]
//! (whose defaults are the `DEFAULT_*` constants); the [`Event`]s a host
//! program receives; [`Connection`] (the same reader/writer pair on the
//! dialling side, as a thread-safe handle) and [`dial`] (the handshake
//! alone); [`file_frame`], the chat page's file messages; [`auth`], who
//! may connect where (tokens, or the host program's own decision); one
//! [`Error`].
//!
//! Inside, in the order a connection meets them: `server` (listener, each
//! connection's HTTP life, the upgrade, thread accounting, shutdown),
//! `http` (request heads, routing), `handshake` (the upgrade's checks),
//! `session` (reader/writer threads) over `wire` (the shared write side)
//! and `outbox` (what waits for the writer), `hub` (rooms, fan-out).
//!
//! With `default-features = false` the library depends on what a hub
//! needs and nothing the `wshub` binary alone uses (its command line and
//! load generator live in `src/bin/wshub/`).

#![warn(missing_docs)]

pub mod auth;
mod bridge;
mod client;
mod config;
mod deflate;
mod error;
mod history;
mod http;
mod hub;
mod id;
mod memory;
mod metrics;
mod presence;
mod random;
mod rate;
mod server;
mod session;

pub use client::Connection;
pub use client::{ConnectOptions, Dialed, dial};
pub use config::{
    Config, DEFAULT_ADDR, DEFAULT_CLOSE_TIMEOUT, DEFAULT_COMPRESSION_LEVEL,
    DEFAULT_COMPRESSION_MIN_BYTES, DEFAULT_EVENT_QUEUE, DEFAULT_HEAD_TIMEOUT, DEFAULT_HISTORY,
    DEFAULT_HISTORY_AGE, DEFAULT_HISTORY_BYTES, DEFAULT_LISTEN_BACKLOG,
    DEFAULT_MAX_BUFFERED_BYTES_FALLBACK, DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MESSAGE_BURST, DEFAULT_MESSAGE_TIMEOUT, DEFAULT_PING_INTERVAL, DEFAULT_PONG_TIMEOUT,
    DEFAULT_READ_BUFFER_BYTES, DEFAULT_SEND_QUEUE, DEFAULT_SEND_QUEUE_BYTES,
    DEFAULT_THREAD_STACK_BYTES, DEFAULT_WRITE_TIMEOUT, default_max_buffered_bytes,
};
pub use crossbeam_channel::Receiver;
pub use error::{Error, Result};
pub use hub::Event;
pub use id::ClientId;
pub use server::{Handle, Server};
pub use session::close::Ending;
pub use tungstenite::protocol::frame::coding::CloseCode;
pub use tungstenite::protocol::{CloseFrame, Message};
pub use tungstenite::{Bytes, Utf8Bytes};

/// The request-head parser and router, for the fuzz target only: not
/// part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::http::{Rejection, Route, parse_head, route};
}
