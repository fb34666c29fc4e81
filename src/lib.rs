//! wshub: a small, runtime-free WebSocket hub.
//!
//! It serves a chat page, chat rooms at `/ws` and `/ws/{room}`, and an echo
//! endpoint at `/echo` from a plain `std::net::TcpListener`, with blocking
//! [`tungstenite`] and OS threads — the shape of gorilla/websocket's chat
//! example: one hub thread, and per client a reader and a writer thread
//! (a *session*) that talk to the hub over crossbeam channels.
//!
//! ```no_run
//! use wshub::ws::Message;
//! use wshub::{Config, Event, Server};
//!
//! let server = Server::start(Config::default().addr("127.0.0.1:0".parse().unwrap()))?;
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
//! (whose defaults are the constants of [`defaults`]); the [`Events`] a
//! host program subscribes to, each an [`Event`] naming a [`ClientId`];
//! [`Connection`] (the same reader/writer pair on the dialling side, as a
//! thread-safe handle) and [`dial`] (the handshake alone); [`auth`], who
//! may connect where (tokens, or the host program's own decision); the
//! WebSocket types of [`ws`] (tungstenite 0.30's); one [`Error`].
//!
//! Inside, in the order a connection meets them: `server` (listeners, each
//! connection's HTTP life, the upgrade's checks, what a client's reader
//! feeds, thread accounting, shutdown) over `http` (request heads,
//! routing); `session` (a connection's reader and writer threads, the
//! frames, the shared write side, the outbox, how sessions close); `hub`
//! (membership, joins, the fan-out lanes, the Redis bridge's waiting
//! rooms); `client` (the dialling side). The capabilities, each reached
//! through one narrow type: `auth` (`Gate`), `bridge` (`Bridge`), `deflate`
//! (`Inflater`, `compress`), `history` (`Histories`), `presence`, `memory`
//! (`Memory`), `metrics` (`Metrics`), `rate` (`Bucket`).
//!
//! With `default-features = false` the library depends on what a hub
//! needs and nothing the `wshub` binary alone uses (its command line and
//! load generator live in `src/bin/wshub/`).

#![deny(missing_docs)]

mod api;
pub mod auth;
mod bridge;
mod client;
mod config;
mod deflate;
mod error;
mod history;
pub mod hook;
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

pub use client::{ConnectOptions, Connection, Dialed, dial};
pub use config::{Config, defaults};
pub use error::{Error, Result};
pub use hub::{Event, Events};
pub use id::ClientId;
pub use presence::{MemberInfo, RoomSummary};
pub use server::{Handle, Server};
pub use session::close::Ending;

/// The WebSocket types of wshub's API, as tungstenite 0.30 defines them
/// (wshub's own major version follows tungstenite's for these).
pub mod ws {
    pub use tungstenite::protocol::frame::coding::CloseCode;
    pub use tungstenite::protocol::{CloseFrame, Message};
    pub use tungstenite::{Bytes, Utf8Bytes};
}

/// The request-head parser and router, for the fuzz target only: not
/// part of the API.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::http::{Rejection, Route, parse_head, route};
}

/// The README's Rust examples, compiled (and run, unless marked
/// `no_run`) by `cargo test --doc`, so that they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;
