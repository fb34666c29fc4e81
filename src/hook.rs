//! The host program's message hook ([`Config::message_hook`]): a function
//! called on a chat client's reader thread for each text or binary message
//! before it goes to the hub, which decides what happens to it
//! ([`Verdict`]). It runs on that client's thread, so it may block (ask a
//! database, call a service) without holding up any other client; a panic
//! in it closes only that client (1011) and is logged once.
//!
//! May touch: nothing (it calls the host's function and catches its panic).
//!
//! [`Config::message_hook`]: crate::Config::message_hook

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use tungstenite::protocol::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::id::ClientId;

/// A message a client sent, as the hook sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Incoming<'a> {
    /// Who sent it.
    pub client: ClientId,
    /// To which room (`""` is the lobby).
    pub room: &'a str,
    /// The sender's token subject, when it joined with a token.
    pub sub: Option<&'a str>,
    /// The message, as received.
    pub message: &'a Message,
}

/// What the hook decides for a message.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Verdict {
    /// Relay it to the room unchanged.
    Relay,
    /// Relay this message instead.
    Replace(Message),
    /// Relay nothing.
    Drop,
    /// Relay nothing; send this to the sender only.
    Answer(Message),
    /// Relay nothing; close the sender with this code and reason.
    Close(CloseCode, String),
}

/// The host's hook, shared by every client's reader.
#[derive(Clone)]
pub(crate) struct MessageHook(pub(crate) Arc<dyn Fn(&Incoming<'_>) -> Verdict + Send + Sync>);

impl fmt::Debug for MessageHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MessageHook")
    }
}

impl MessageHook {
    /// The hook's verdict on `incoming`; `None` when it panicked.
    pub(crate) fn judge(&self, incoming: &Incoming<'_>) -> Option<Verdict> {
        catch_unwind(AssertUnwindSafe(|| (self.0)(incoming))).ok()
    }
}
