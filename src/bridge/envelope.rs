//! The bridge's names and formats in Redis: the channel, stream and
//! presence keys of a room, and the envelope a message crosses in (`WSH1`,
//! its type, the sending instance's id, its bytes unchanged). Pure
//! functions; touches nothing.

use tungstenite::protocol::Message;

/// Prefix of every room's Redis channel.
pub(crate) const CHANNEL_PREFIX: &str = "wshub:room:";

/// The channel of requests between instances (remove a client, a user).
pub(crate) const COMMANDS: &str = "wshub:commands";

/// Messages waiting for the publisher; more are dropped (and counted).
pub(crate) const PUBLISH_QUEUE: usize = 4096;

const MAGIC: &[u8; 4] = b"WSH1";

/// The Redis channel of `room`.
pub(crate) fn channel(room: &str) -> String {
    format!("{CHANNEL_PREFIX}{room}")
}

/// Wraps a message for other instances.
pub(crate) fn encode(instance: &str, message: &Message) -> Option<Vec<u8>> {
    let (kind, bytes): (u8, &[u8]) = match message {
        Message::Text(t) => (1, t.as_bytes()),
        Message::Binary(b) => (2, b),
        _ => return None,
    };
    let id = instance.as_bytes();
    let mut out = Vec::with_capacity(6 + id.len() + bytes.len());
    out.extend_from_slice(MAGIC);
    out.push(kind);
    out.push(u8::try_from(id.len()).ok()?);
    out.extend_from_slice(id);
    out.extend_from_slice(bytes);
    Some(out)
}

/// Unwraps a message from another instance: its instance id and the message.
pub(crate) fn decode(payload: &[u8]) -> Option<(&str, Message)> {
    let rest = payload.strip_prefix(MAGIC)?;
    let (&kind, rest) = rest.split_first()?;
    let (&id_len, rest) = rest.split_first()?;
    let (id, bytes) = rest.split_at_checked(usize::from(id_len))?;
    let id = std::str::from_utf8(id).ok()?;
    let message = match kind {
        1 => Message::text(std::str::from_utf8(bytes).ok()?.to_string()),
        2 => Message::binary(bytes.to_vec()),
        _ => return None,
    };
    Some((id, message))
}

/// The Redis hash of who is in `room`, on every instance: field
/// `{instance}:{client}`, value `{"name":…,"joined_ms":…}`.
pub(crate) fn presence_key(room: &str) -> String {
    format!("wshub:presence:{room}")
}

/// The key an instance keeps alive while it runs; entries of instances
/// whose key has expired are not shown.
pub(crate) fn instance_key(instance: &str) -> String {
    format!("wshub:instance:{instance}")
}

/// How long an instance's presence outlives its last heartbeat: a crashed
/// instance's clients leave every other instance's `/rooms` within this.
pub(crate) const PRESENCE_TTL: std::time::Duration = std::time::Duration::from_secs(6);

/// The Redis stream that keeps `room`'s history.
pub(crate) fn stream(room: &str) -> String {
    format!("wshub:history:{room}")
}
