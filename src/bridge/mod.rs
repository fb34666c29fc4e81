//! The Redis bridge: several wshub instances share their rooms through
//! Redis pub/sub (`Config::redis`), as Centrifugo's Redis engine and
//! socket.io's Redis adapter do.
//!
//! The hub reaches it through one narrow type, [`Bridge`]: `subscribe` /
//! `unsubscribe` when a room gets its first local client or loses its last,
//! and `publish` for every message sent to a room on this instance (by a
//! client or the host program). None of them waits: publishing is a
//! `try_send` into a bounded queue (what does not fit is dropped and
//! counted), subscriptions go through an unbounded queue of small commands.
//! Two threads do the Redis work with the `redis` crate's blocking API: the
//! publisher (one connection, `PUBLISH`) and the subscriber (another
//! connection in pub/sub mode, with a read timeout so that it notices room
//! changes and shutdown). Messages from other instances go into the hub's
//! inbox (through [`ToHub`]), and are delivered to local clients only.
//!
//! On the wire: channel `wshub:room:{room}`, payload `WSH1`, one byte of
//! message type (1 text, 2 binary), one byte of instance-id length, the
//! instance id, then the message's bytes unchanged. An instance drops its
//! own messages when they come back.
//!
//! Reaching Redis: `redis://[user:password@]host:port[/db]` or
//! `rediss://…` (TLS through rustls, with `Config::redis_ca_file` for a
//! private CA). Passwords never reach a log line or an error: they show
//! as `***`. Every command has a timeout, so a Redis that accepts and
//! then says nothing costs one attempt, not a thread.
//!
//! Redis going away: local delivery is not touched (nothing here blocks the
//! hub); each connection logs the loss once, retries on a timer of its own
//! (100 ms, doubling, capped at 2 s — a deadline no message or room change
//! moves), and logs when it is back; the subscriber then subscribes to the
//! current rooms again and catches up on their streams. What is said while
//! Redis is unreachable waits in the publisher's backlog (up to 4096
//! messages) and is sent first, in order, once it is back.
//!
//! May touch: its Redis connections, the hub's inbox (sending only).

// Without the `redis` feature only the hub-facing half is used.
#![cfg_attr(not(feature = "redis"), allow(dead_code, unused_imports))]

#[cfg(feature = "redis")]
mod common;
mod envelope;
mod handle;
#[cfg(feature = "redis")]
mod lookup;
#[cfg(feature = "redis")]
mod publisher;
#[cfg(feature = "redis")]
mod start;
#[cfg(feature = "redis")]
mod subscriber;

#[cfg(feature = "redis")]
pub(crate) use self::start::start;
pub(crate) use handle::{Bridge, FromBridge, RemoteClient, ToHub, View};

/// Without the `redis` feature there is no bridge to start.
#[cfg(not(feature = "redis"))]
pub(crate) fn start(
    _url: &str,
    _ca_file: Option<&std::path::Path>,
    _hub: ToHub,
    _memory: std::sync::Arc<crate::memory::Memory>,
    _history: crate::history::Bounds,
    _instance: std::sync::Arc<str>,
) -> crate::Result<Bridge> {
    Err(crate::Error::Config(
        "this build has no Redis support (the `redis` cargo feature)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::envelope::{decode, encode};
    use tungstenite::protocol::Message;

    #[test]
    fn envelopes_keep_bytes_types_and_origin() {
        let text = Message::text("héllo");
        let wrapped = encode("abc", &text).expect("data");
        assert_eq!(decode(&wrapped), Some(("abc", text)));
        let binary = Message::binary(vec![0u8, 255, 10]);
        let wrapped = encode("i2", &binary).expect("data");
        assert_eq!(decode(&wrapped), Some(("i2", binary)));
        assert!(decode(b"WSH1").is_none());
        assert!(decode(b"something else").is_none());
        assert!(encode("x", &Message::Ping(Default::default())).is_none());
    }
}
