//! The dialling side: [`dial`] (the opening handshake alone) and
//! [`Connection`] (a session on the result, as a thread-safe handle).
//!
//! May touch: the sockets it dials.

mod connection;
mod dial;

pub use connection::Connection;
pub use dial::{ConnectOptions, Dialed, dial};
