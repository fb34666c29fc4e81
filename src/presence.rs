//! Who is in a room, as the server tells it: the presence notices a client
//! that joined with `?presence=1` receives, and the JSON of `GET /rooms` and
//! `GET /rooms/{room}`. Pure functions over what the hub passes in; the hub
//! decides when they are sent.
//!
//! Notices are text messages `{"wshub":"presence","event":…}`: `snapshot`
//! (who is there, to the joiner only), `join` and `leave` (to every
//! presence client of the room, in order with the room's messages).
//!
//! May touch: nothing outside this file.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;
use tungstenite::protocol::{Message, Role};

use crate::session::frame::Frame;

/// A member as presence shows it.
pub(crate) struct Present<'a> {
    pub name: &'a str,
    pub joined: SystemTime,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn notice(value: serde_json::Value) -> (Frame, Message) {
    let message = Message::text(value.to_string());
    let frame = Frame::data(Role::Server, &message).expect("a text message is data");
    (frame, message)
}

/// `join` or `leave` of `name`, with the room's count after it.
pub(crate) fn change(event: &str, name: &str, clients: usize) -> (Frame, Message) {
    notice(json!({"wshub": "presence", "event": event, "name": name, "clients": clients}))
}

/// Who is there, for a presence client that just joined.
pub(crate) fn snapshot<'a>(members: impl Iterator<Item = Present<'a>>) -> (Frame, Message) {
    let names: Vec<&str> = members.map(|m| m.name).collect();
    notice(
        json!({"wshub": "presence", "event": "snapshot", "names": names, "clients": names.len()}),
    )
}

/// One room's line in `GET /rooms`.
pub(crate) struct RoomSummary<'a> {
    pub name: &'a str,
    pub clients: usize,
    pub relayed: u64,
    pub history: usize,
}

/// `GET /rooms`: every room with clients or history.
pub(crate) fn rooms_json<'a>(rooms: impl Iterator<Item = RoomSummary<'a>>) -> String {
    let rooms: Vec<serde_json::Value> = rooms
        .map(|r| {
            json!({"name": r.name, "clients": r.clients, "messages": r.relayed, "history": r.history})
        })
        .collect();
    json!({ "rooms": rooms }).to_string()
}

/// What `GET /rooms/{room}` shows.
#[derive(Debug, Clone)]
pub(crate) struct RoomInfo {
    pub name: String,
    pub clients: usize,
    pub relayed: u64,
    pub history: usize,
    /// Names and join times (milliseconds since the epoch).
    pub members: Vec<(String, u64)>,
}

impl RoomInfo {
    /// The JSON answer.
    pub(crate) fn to_json(&self) -> String {
        let members: Vec<serde_json::Value> = self
            .members
            .iter()
            .map(|(name, joined_ms)| json!({"name": name, "joined_ms": joined_ms}))
            .collect();
        json!({
            "name": self.name,
            "clients": self.clients,
            "messages": self.relayed,
            "history": self.history,
            "members": members,
        })
        .to_string()
    }
}

/// A name a client may give itself: 1–64 characters, none of them control
/// characters.
pub(crate) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count()) && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_are_the_documented_json() {
        let (_, m) = change("join", "ana \"quoted\"", 2);
        let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        assert_eq!(v["wshub"], "presence");
        assert_eq!(v["event"], "join");
        assert_eq!(v["name"], "ana \"quoted\"");
        assert_eq!(v["clients"], 2);
        assert!(valid_name("ana"));
        assert!(!valid_name(""));
        assert!(!valid_name("a\nb"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
