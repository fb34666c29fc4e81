//! wshub: a small, runtime-free WebSocket hub.
//!
//! It serves a chat page, chat rooms at `/ws` and `/ws/{room}`, and an echo
//! endpoint at `/echo` from a plain `std::net::TcpListener`, with blocking
//! [`tungstenite`] and OS threads — the shape of gorilla/websocket's chat
//! example: one hub thread ([`hub`]), and per client a reader and a writer
//! thread ([`client`]) that talk to the hub over crossbeam channels.
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
//! Modules, in the order a connection meets them: [`server`] (listener,
//! shutdown), [`http`] (request heads, routing), `handshake` (the upgrade),
//! [`client`] (reader/writer threads) over `wire` (the shared write side),
//! [`hub`] (rooms, fan-out). [`connection`] is the same reader/writer pair
//! on the dialling side, as a thread-safe handle.

#![warn(missing_docs)]

mod assets;
pub mod bench;
pub mod cli;
pub mod client;
mod config;
pub mod connection;
mod error;
pub mod file_frame;
mod handshake;
pub mod http;
pub mod hub;
pub mod server;
mod wire;

pub use config::*;
pub use connection::{ClientOptions, Connection};
pub use error::{Error, Result};
pub use hub::{ClientId, Event};
pub use server::{Handle, Server};
pub use tungstenite::protocol::frame::coding::CloseCode;
pub use tungstenite::protocol::{CloseFrame, Message};
pub use tungstenite::{Bytes, Utf8Bytes};
