//! Who is in a room, as the server tells it: the presence notices a client
//! that joined with `?presence=1` receives, and the JSON of `GET /rooms` and
//! `GET /rooms/{room}` ([`RoomSummary`], [`MemberInfo`], which the host
//! program gets too). Pure functions over what the hub passes in; the hub
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

use crate::id::ClientId;
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

/// A room as the server lists it ([`Handle::rooms`](crate::Handle::rooms),
/// `GET /rooms`): a room with local clients or kept history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoomSummary {
    /// Its name (`""` is the lobby at `/ws`).
    pub name: String,
    /// Clients in it on this instance.
    pub clients: usize,
    /// Messages relayed in it on this instance since it last had clients.
    pub messages: u64,
    /// Messages its history keeps.
    pub history: usize,
}

impl RoomSummary {
    fn to_value(&self) -> serde_json::Value {
        json!({"name": self.name, "clients": self.clients, "messages": self.messages, "history": self.history})
    }
}

/// A client in a room, on this instance or (with Redis) another, as
/// [`Handle::members`](crate::Handle::members) and `GET /rooms/{room}` show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberInfo {
    /// Names the client on every instance: `{instance}:{number}`
    /// (`DELETE /api/rooms/{room}/clients/{id}` takes it).
    pub id: String,
    /// The client, when it is on this instance.
    pub client: Option<ClientId>,
    /// The name it gave itself (`?name=`), or `guest-N`.
    pub name: String,
    /// Its token's subject, when it joined with a token.
    pub sub: Option<String>,
    /// When it joined, in milliseconds since the Unix epoch.
    pub joined_ms: u64,
}

impl MemberInfo {
    fn to_value(&self) -> serde_json::Value {
        let mut v = json!({"id": self.id, "name": self.name, "joined_ms": self.joined_ms});
        if let Some(sub) = &self.sub {
            v["sub"] = json!(sub);
        }
        v
    }
}

/// `GET /rooms`: every room with clients or history.
pub(crate) fn rooms_json(rooms: &[RoomSummary]) -> String {
    let rooms: Vec<serde_json::Value> = rooms.iter().map(RoomSummary::to_value).collect();
    json!({ "rooms": rooms }).to_string()
}

/// What `GET /rooms/{room}` shows.
#[derive(Debug, Clone)]
pub(crate) struct RoomInfo {
    pub summary: RoomSummary,
    pub members: Vec<MemberInfo>,
}

impl RoomInfo {
    /// The JSON answer.
    pub(crate) fn to_json(&self) -> String {
        let mut v = self.summary.to_value();
        v["clients"] = json!(self.members.len().max(self.summary.clients));
        v["members"] = self.members.iter().map(MemberInfo::to_value).collect();
        v.to_string()
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
