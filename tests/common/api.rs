//! The server API (`/api/`) spoken by a real HTTP client (ureq, an
//! independent implementation): a key of the tests' own, requests with it,
//! without it or with another, and each answer as its status, the headers
//! the contract names, and its body.
#![allow(dead_code)]

use std::net::SocketAddr;

use wshub::Config;

use super::{STEP, config, eventually};

/// The key every API test's server is configured with.
pub const KEY: &str = "the-tests-api-key-7f3a9c1e5b";

/// [`config`] with the server API on, keyed with [`KEY`].
pub fn api_config() -> Config {
    config().api_key(KEY.to_string())
}

/// One answer of the API.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub allow: Option<String>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, after checking the answer says it is JSON.
    pub fn json(&self) -> serde_json::Value {
        assert_eq!(
            self.content_type.as_deref(),
            Some("application/json"),
            "not JSON: {self:?}"
        );
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `error` of a `{"error": "…"}` answer (a non-empty message, and
    /// nothing else in the object).
    pub fn error(&self) -> String {
        let json = self.json();
        let error = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {json}"));
        assert!(!error.is_empty(), "an empty error message: {json}");
        assert_eq!(json.as_object().map(|o| o.len()), Some(1), "{json}");
        error.to_string()
    }

    /// Asserts the status, and that a failure is a JSON error; the body
    /// as JSON (`Null` for an empty one).
    pub fn expect(&self, status: u16) -> serde_json::Value {
        assert_eq!(self.status, status, "{self:?}: {}", self.text());
        if status >= 400 {
            self.error();
        }
        if self.body.is_empty() {
            serde_json::Value::Null
        } else {
            self.json()
        }
    }
}

/// A client of one server's API.
pub struct Api {
    agent: ureq::Agent,
    base: String,
    key: Option<String>,
}

/// An agent that answers every status as a response (not an error), and
/// bounds each exchange by [`STEP`].
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(STEP))
        .build()
        .into()
}

impl Api {
    /// A client that sends [`KEY`].
    pub fn new(addr: SocketAddr) -> Api {
        Api::keyed(addr, Some(KEY))
    }

    /// A client that sends `key` (or no `X-API-Key` at all).
    pub fn keyed(addr: SocketAddr, key: Option<&str>) -> Api {
        Api {
            agent: agent(),
            base: format!("http://{addr}"),
            key: key.map(str::to_string),
        }
    }

    /// `method path` with `body` (and its `Content-Type`, if any).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Option<&[u8]>,
    ) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(key) = &self.key {
            request = request.header("X-API-Key", key);
        }
        if let Some(content_type) = content_type {
            request = request.header("Content-Type", content_type);
        }
        let result = match body {
            Some(body) => self.agent.run(request.body(body).unwrap()),
            None => self.agent.run(request.body(()).unwrap()),
        };
        let mut response =
            result.unwrap_or_else(|e| panic!("{method} {path}: no HTTP answer: {e}"));
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .map(|v| v.to_str().expect("an ASCII header").to_string())
        };
        let (content_type, allow) = (header("content-type"), header("allow"));
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .unwrap_or_else(|e| panic!("{method} {path}: reading the body: {e}"));
        Reply {
            status: response.status().as_u16(),
            content_type,
            allow,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None, None)
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, None, None)
    }

    pub fn post(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
        self.request("POST", path, content_type, Some(body))
    }

    /// Publishes `text` into `room` as a text message.
    pub fn publish(&self, room: &str, text: &str) -> Reply {
        self.post(
            &format!("/api/rooms/{room}/messages"),
            Some("text/plain; charset=utf-8"),
            text.as_bytes(),
        )
    }

    /// Publishes `bytes` into `room` as a binary message.
    pub fn publish_binary(&self, room: &str, bytes: &[u8]) -> Reply {
        self.post(
            &format!("/api/rooms/{room}/messages"),
            Some("application/octet-stream"),
            bytes,
        )
    }

    /// `GET /api/rooms/{room}`'s members.
    pub fn members(&self, room: &str) -> Vec<serde_json::Value> {
        let reply = self.get(&format!("/api/rooms/{room}"));
        if reply.status == 404 {
            return Vec::new();
        }
        reply.expect(200)["members"]
            .as_array()
            .unwrap_or_else(|| panic!("no members in {}", reply.text()))
            .clone()
    }

    /// The member of `room` named `name`, once the room lists it.
    pub fn member(&self, room: &str, name: &str) -> serde_json::Value {
        let mut found = None;
        eventually(&format!("{name} listed in {room}"), || {
            found = self
                .members(room)
                .into_iter()
                .find(|m| m["name"].as_str() == Some(name));
            found.is_some()
        });
        found.unwrap()
    }

    /// The `id` of the member of `room` named `name`.
    pub fn member_id(&self, room: &str, name: &str) -> String {
        let member = self.member(room, name);
        member["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {member}"))
            .to_string()
    }
}
