//! The identity of a connection: [`ClientId`], which the hub, the
//! outboxes, the events and the logs all name connections by. Touches
//! nothing.

use std::fmt;

/// Identifies one connection for the lifetime of a server: opaque, shown
/// as `client N` (the server's log names connections the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub(crate) u64);

impl ClientId {
    /// The connection's number, unique for the server's lifetime (the `N`
    /// of `client N`).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}
