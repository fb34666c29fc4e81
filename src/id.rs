//! The identity of a connection: [`ClientId`], which the hub, the
//! outboxes, the events and the logs all name connections by. Touches
//! nothing.

use std::fmt;

/// Identifies one connection for the lifetime of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {}", self.0)
    }
}
