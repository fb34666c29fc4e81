//! The crate's one error type, and how a socket error is classified.
//! Connection threads do not return errors to anyone (they log and close);
//! these are what the public API can fail with. Touches nothing else.

use std::io;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the public API can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket or file operation failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The WebSocket protocol layer (tungstenite) failed.
    #[error("WebSocket error: {0}")]
    WebSocket(#[from] tungstenite::Error),
    /// A [`Config`](crate::Config) value cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A room name is not 1–64 of `A-Z a-z 0-9 _ . -`.
    #[error("invalid room name {0:?}: use 1-64 of A-Z a-z 0-9 _ . -")]
    InvalidRoom(String),
    /// Only text and binary messages can be sent as data.
    #[error("only text and binary messages can be sent")]
    NotData,
    /// The server or connection has shut down.
    #[error("closed")]
    Closed,
    /// A URL the client cannot dial.
    #[error("bad URL {0}")]
    Url(String),
    /// The server answered the upgrade with this HTTP status instead of 101.
    #[error("server answered {0} {reason}", reason = status_reason(*.0))]
    Status(u16),
    /// The server's answer to the upgrade is not a valid WebSocket handshake.
    #[error("handshake failed: {0}")]
    Handshake(String),
}

fn status_reason(status: u16) -> &'static str {
    tungstenite::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// True for the error a socket timeout (`SO_RCVTIMEO`, `SO_SNDTIMEO`)
/// gives: `WouldBlock` on Unix, `TimedOut` on Windows.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}
