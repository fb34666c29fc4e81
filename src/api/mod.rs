//! The server API under `/api/` (`Config::api_key`): what a backend in any
//! language asks of the hub over HTTP — publish into a room, read its
//! history, list rooms and members, remove a client or every client of a
//! token subject. Each route is one [`Handle`] call; this module only maps
//! requests onto them and answers onto JSON. The socket side (reading the
//! body, writing the answer) is the server's `server::api`.
//!
//! Invariants: the key is compared in constant time and never logged;
//! every answer is JSON (`{"error": …}` for a failure); a route's answer
//! depends on nothing but the request and the `Handle`.
//!
//! May touch: the server through its `Handle`.

use std::sync::Arc;

use serde_json::json;
use subtle::ConstantTimeEq;
use tungstenite::http::{Method, StatusCode};
use tungstenite::protocol::Message;

use crate::Handle;
use crate::http::valid_room;
use crate::presence;

/// One API request, as read from the connection.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    pub query: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// The answer to an API request.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    /// JSON (empty for 204).
    pub body: String,
    /// With 405: the methods the path takes.
    pub allow: Option<&'static str>,
    /// The route's name in `wshub_api_requests_total`.
    pub route: &'static str,
}

impl Answer {
    fn ok(route: &'static str, body: serde_json::Value) -> Answer {
        Answer {
            status: StatusCode::OK,
            body: body.to_string(),
            allow: None,
            route,
        }
    }

    /// A failure: `{"error": why}`.
    pub(crate) fn error(route: &'static str, status: StatusCode, why: &str) -> Answer {
        Answer {
            status,
            body: json!({ "error": why }).to_string(),
            allow: None,
            route,
        }
    }
}

/// What a path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /api/rooms/{room}/messages`.
    Publish(Arc<str>),
    /// `GET /api/rooms/{room}/messages`.
    History(Arc<str>),
    /// `GET /api/rooms`.
    Rooms,
    /// `GET /api/rooms/{room}`.
    Room(Arc<str>),
    /// `DELETE /api/rooms/{room}/clients/{id}`.
    RemoveClient(Arc<str>, String),
    /// `DELETE /api/users/{sub}`.
    RemoveUser(String),
}

impl Endpoint {
    /// Its name in `wshub_api_requests_total`.
    pub(crate) fn route(&self) -> &'static str {
        match self {
            Endpoint::Publish(_) => "publish",
            Endpoint::History(_) => "history",
            Endpoint::Rooms => "rooms",
            Endpoint::Room(_) => "room",
            Endpoint::RemoveClient(..) => "remove_client",
            Endpoint::RemoveUser(_) => "remove_user",
        }
    }

    /// Whether the request's body is its input (the others take none).
    pub(crate) fn takes_body(&self) -> bool {
        matches!(self, Endpoint::Publish(_))
    }
}

/// Whether `given` (the `X-API-Key` header) is `expected`, compared in
/// constant time (only the length can be learnt by timing).
pub(crate) fn key_matches(expected: &str, given: Option<&[u8]>) -> bool {
    given.is_some_and(|given| bool::from(expected.as_bytes().ct_eq(given)))
}

/// Which endpoint `method` and `path` name, or the answer that says why
/// none: 404 for an unknown path, 405 (with `Allow`) for a known path and
/// another method, 400 for a bad room name.
pub(crate) fn endpoint(method: &Method, path: &str) -> Result<Endpoint, Answer> {
    let segments: Vec<String> = path
        .trim_start_matches("/api/")
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let (endpoint, allow) = match segments.as_slice() {
        ["rooms"] => (Endpoint::Rooms, "GET"),
        ["rooms", room] => (Endpoint::Room(room_of(room)?), "GET"),
        ["rooms", room, "messages"] if method == Method::POST => {
            (Endpoint::Publish(room_of(room)?), "GET, POST")
        }
        ["rooms", room, "messages"] => (Endpoint::History(room_of(room)?), "GET, POST"),
        ["rooms", room, "clients", id] if !id.is_empty() => (
            Endpoint::RemoveClient(room_of(room)?, id.to_string()),
            "DELETE",
        ),
        ["users", sub] if !sub.is_empty() => (Endpoint::RemoveUser(sub.to_string()), "DELETE"),
        _ => {
            return Err(Answer::error(
                "other",
                StatusCode::NOT_FOUND,
                "no such API route",
            ));
        }
    };
    let wanted = match endpoint {
        Endpoint::Publish(_) => Method::POST,
        Endpoint::RemoveClient(..) | Endpoint::RemoveUser(_) => Method::DELETE,
        _ => Method::GET,
    };
    if *method != wanted {
        let mut answer = Answer::error(
            endpoint.route(),
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("method {method} not allowed here"),
        );
        answer.allow = Some(allow);
        return Err(answer);
    }
    Ok(endpoint)
}

fn room_of(room: &str) -> Result<Arc<str>, Answer> {
    if valid_room(room) {
        Ok(room.into())
    } else {
        Err(Answer::error(
            "other",
            StatusCode::BAD_REQUEST,
            "room names are 1-64 of A-Z a-z 0-9 _ . -",
        ))
    }
}

/// Answers `call` to `endpoint` through `handle`.
pub(crate) fn answer(handle: &Handle, endpoint: Endpoint, call: &Call<'_>) -> Answer {
    let route = endpoint.route();
    let result = match endpoint {
        Endpoint::Publish(room) => publish(handle, &room, call),
        Endpoint::History(room) => history(handle, &room, call.query),
        Endpoint::Rooms => handle
            .rooms()
            .map(|rooms| Answer::ok(route, json!({ "rooms": summaries(&rooms) }))),
        Endpoint::Room(room) => handle.room(&room).map(|info| match info {
            Some(info) => Answer {
                status: StatusCode::OK,
                body: info.to_json(),
                allow: None,
                route,
            },
            None => Answer::error(route, StatusCode::NOT_FOUND, "no such room"),
        }),
        Endpoint::RemoveClient(room, id) => {
            let reason = param(call.query, "reason").unwrap_or_else(|| "removed".into());
            handle.remove(&room, &id, &reason).map(|found| match found {
                true => Answer {
                    status: StatusCode::NO_CONTENT,
                    body: String::new(),
                    allow: None,
                    route,
                },
                false => Answer::error(route, StatusCode::NOT_FOUND, "no such client in the room"),
            })
        }
        Endpoint::RemoveUser(sub) => {
            let reason = param(call.query, "reason").unwrap_or_else(|| "removed".into());
            handle
                .remove_user(&sub, &reason)
                .map(|closed| Answer::ok(route, json!({ "sub": sub, "closed": closed })))
        }
    };
    result.unwrap_or_else(|e| match e {
        crate::Error::Closed => Answer::error(
            route,
            StatusCode::SERVICE_UNAVAILABLE,
            "the hub did not answer",
        ),
        e => Answer::error(route, StatusCode::BAD_REQUEST, &e.to_string()),
    })
}

fn summaries(rooms: &[presence::RoomSummary]) -> serde_json::Value {
    let json: serde_json::Value =
        serde_json::from_str(&presence::rooms_json(rooms)).unwrap_or_default();
    json["rooms"].clone()
}

/// `POST /api/rooms/{room}/messages`: text for `text/*` and
/// `application/json` (which must be UTF-8), binary otherwise.
fn publish(handle: &Handle, room: &str, call: &Call<'_>) -> crate::Result<Answer> {
    let route = "publish";
    let message = if is_text(call.content_type) {
        match std::str::from_utf8(call.body) {
            Ok(text) => Message::text(text),
            Err(_) => {
                let why = "a text message (by its Content-Type) must be UTF-8";
                return Ok(Answer::error(route, StatusCode::BAD_REQUEST, why));
            }
        }
    } else {
        Message::binary(call.body.to_vec())
    };
    let delivered = handle.publish(room, message)?;
    Ok(Answer::ok(
        route,
        json!({ "room": room, "delivered": delivered }),
    ))
}

/// Whether a `Content-Type` makes a text message.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(value) = content_type else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/") || mime == "application/json"
}

/// `GET /api/rooms/{room}/messages?limit=K`: the last K kept, oldest first.
fn history(handle: &Handle, room: &str, query: Option<&str>) -> crate::Result<Answer> {
    let route = "history";
    let limit = match param(query, "limit").map(|l| l.parse::<usize>()) {
        None => usize::MAX,
        Some(Ok(limit)) => limit,
        Some(Err(_)) => {
            let why = "limit is a number of messages";
            return Ok(Answer::error(route, StatusCode::BAD_REQUEST, why));
        }
    };
    let messages = handle.history(room)?;
    let skip = messages.len().saturating_sub(limit);
    let entries: Vec<serde_json::Value> = messages[skip..]
        .iter()
        .filter_map(|m| match m {
            Message::Text(text) => Some(json!({"type": "text", "data": text.as_str()})),
            Message::Binary(data) => Some(json!({
                "type": "binary",
                "data_base64": data_encoding::BASE64.encode(data),
            })),
            _ => None,
        })
        .collect();
    Ok(Answer::ok(route, serde_json::Value::Array(entries)))
}

/// The value of `name` in a query string.
fn param(query: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_endpoints_and_methods() {
        let room = |r: &str| Arc::<str>::from(r);
        let get = Method::GET;
        assert_eq!(endpoint(&get, "/api/rooms").unwrap(), Endpoint::Rooms);
        assert_eq!(
            endpoint(&get, "/api/rooms/a").unwrap(),
            Endpoint::Room(room("a"))
        );
        assert_eq!(
            endpoint(&Method::POST, "/api/rooms/a/messages").unwrap(),
            Endpoint::Publish(room("a"))
        );
        assert_eq!(
            endpoint(&Method::DELETE, "/api/users/auth0%7C42").unwrap(),
            Endpoint::RemoveUser("auth0|42".into())
        );
        let wrong = endpoint(&Method::PUT, "/api/rooms/a/messages").unwrap_err();
        assert_eq!(wrong.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong.allow, Some("GET, POST"));
        assert_eq!(
            endpoint(&get, "/api/nothing").unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        let bad = endpoint(&get, "/api/rooms/no%20spaces").unwrap_err();
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn keys_match_only_exactly() {
        assert!(key_matches("s3cret", Some(b"s3cret")));
        assert!(!key_matches("s3cret", Some(b"s3cre")));
        assert!(!key_matches("s3cret", Some(b"s3cret ")));
        assert!(!key_matches("s3cret", None));
    }

    #[test]
    fn content_types_decide_text_or_binary() {
        assert!(is_text(Some("text/plain; charset=utf-8")));
        assert!(is_text(Some("Application/JSON")));
        assert!(!is_text(Some("application/octet-stream")));
        assert!(!is_text(None));
    }
}
