//! The server API under `/api/` (`Config::api_key`), spoken by a real HTTP
//! client (ureq) to an in-process server on loopback, with tungstenite
//! clients in the rooms: every route's answer and every refusal, the
//! message types a publish makes, history, removing clients by id and by
//! token subject, a hundred concurrent publishers beside a chat, the
//! request counter, what the log never holds, and `wshub publish`.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::api::*;
use common::*;
use serde_json::json;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use wshub::Server;
use wshub::auth::Secret;

const SECRET: &[u8] = b"the api tests' token secret, 32 bytes";

fn served() -> (Server, Api) {
    let server = start(api_config());
    let api = Api::new(server.local_addr());
    (server, api)
}

/// A token for `sub`, valid for an hour in every room.
fn token(sub: &str) -> String {
    wshub::auth::mint_token(&Secret::new(SECRET), sub, None, Duration::from_secs(3600))
        .expect("a token")
}

/// The next data message, which must be text; its text.
fn next_text(ws: &mut Ws) -> String {
    match next(ws) {
        Message::Text(t) => t.as_str().to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The server's Close: its code and reason.
fn closed_with(ws: &mut Ws) -> (CloseCode, String) {
    match next(ws) {
        Message::Close(Some(frame)) => (frame.code, frame.reason.as_str().to_string()),
        other => panic!("expected a Close with a code, got {other:?}"),
    }
}

/// `Allow`'s methods, as a sorted list.
fn allowed(reply: &Reply) -> Vec<String> {
    let allow = reply
        .allow
        .as_deref()
        .unwrap_or_else(|| panic!("no Allow in {reply:?}"));
    let mut methods: Vec<String> = allow.split(',').map(|m| m.trim().to_string()).collect();
    methods.sort();
    methods
}

fn messages(room: &str) -> String {
    format!("/api/rooms/{room}/messages")
}

/// Sends `raw` and reads the whole answer, which must end (the server
/// closing) within [`STEP`]; the answer and how long it took.
fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> (String, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    let started = Instant::now();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    if let Err(e) = s.read_to_end(&mut out) {
        panic!(
            "no complete answer within {STEP:?} ({e}): {}",
            String::from_utf8_lossy(&out)
        );
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn without_an_api_key_configured_every_api_path_is_404_and_nothing_is_published() {
    let server = start(config());
    let addr = server.local_addr();
    let api = Api::new(addr);
    let mut clients = clients(&server, "/ws/r", 2);
    for (method, path) in [
        ("GET", "/api/rooms"),
        ("GET", "/api/rooms/r"),
        ("GET", "/api/rooms/r/messages"),
        ("DELETE", "/api/users/alice"),
        ("DELETE", "/api/rooms/r/clients/x:1"),
        ("GET", "/api/nothing"),
    ] {
        let reply = api.request(method, path, None, None);
        assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
    }
    let reply = api.publish("r", "must not arrive");
    assert_eq!(reply.status, 404, "{reply:?}");
    // The publish reached nobody: the first thing the other client gets
    // is a chat message sent after it.
    text(&mut clients[0], "chat");
    assert_eq!(next_text(&mut clients[1]), "chat");
    assert!(
        server
            .history("r")
            .unwrap()
            .iter()
            .all(|m| m != &Message::text("must not arrive"))
    );
}

#[test]
fn a_missing_or_wrong_key_is_401_on_every_route_and_changes_nothing() {
    let (server, _) = served();
    let addr = server.local_addr();
    let mut member = ws(addr, "/ws/r?name=alice");
    let id = Api::new(addr).member_id("r", "alice");
    let longer = format!("{KEY}x");
    let wrong = [
        None,
        Some("wrong"),
        Some(""),
        Some(&KEY[..KEY.len() - 1]),
        Some(&longer[..]),
    ];
    for key in wrong {
        let api = Api::keyed(addr, key);
        let requests = [
            ("GET", "/api/rooms".to_string(), None),
            ("GET", "/api/rooms/r".to_string(), None),
            ("GET", messages("r"), None),
            ("POST", messages("r"), Some(&b"not published"[..])),
            ("DELETE", format!("/api/rooms/r/clients/{id}"), None),
            ("DELETE", "/api/users/alice".to_string(), None),
        ];
        for (method, path, body) in requests {
            let reply = api.request(method, &path, Some("text/plain"), body);
            assert_eq!(reply.status, 401, "key {key:?}: {method} {path}: {reply:?}");
            reply.error();
        }
    }
    // Nothing was published, and the client is still there.
    assert_eq!(Api::new(addr).get(&messages("r")).expect(200), json!([]));
    Api::new(addr).publish("r", "the real one").expect(200);
    assert_eq!(next_text(&mut member), "the real one");
}

#[test]
fn publish_answers_the_room_and_how_many_local_clients_it_reached() {
    let (server, api) = served();
    let mut two = clients(&server, "/ws/ops", 2);
    let reply = api.publish("ops", "deploy finished");
    assert_eq!(
        reply.expect(200),
        json!({"room": "ops", "delivered": 2}),
        "{reply:?}"
    );
    for ws in &mut two {
        assert_eq!(next_text(ws), "deploy finished");
    }
    // A room without clients: delivered to none (and kept in its history).
    assert_eq!(
        api.publish("empty", "anyone?").expect(200),
        json!({"room": "empty", "delivered": 0})
    );
}

#[test]
fn the_content_type_makes_a_text_or_a_binary_message_with_the_bytes_unchanged() {
    let (server, api) = served();
    let mut client = clients(&server, "/ws/t", 1).remove(0);
    let bytes: Vec<u8> = (0..=255u8).chain([0, 255, 13, 10]).collect();
    let cases: [(Option<&str>, &[u8], bool); 7] = [
        (
            Some("text/plain; charset=utf-8"),
            "héllo ✓ \u{1F600}".as_bytes(),
            true,
        ),
        (
            Some("application/json"),
            br#"{"event":"deploy","n":42}"#,
            true,
        ),
        (Some("text/html"), b"<b>bold</b>", true),
        (Some("Text/Plain"), b"upper case type", true),
        (Some("application/octet-stream"), &bytes, false),
        (Some("image/png"), b"\x89PNG\r\n", false),
        // No Content-Type: binary, even for bytes that are valid UTF-8.
        (None, b"plain ascii, but binary", false),
    ];
    for (content_type, body, is_text) in cases {
        let reply = api.post(&messages("t"), content_type, body);
        reply.expect(200);
        let expected = if is_text {
            Message::text(std::str::from_utf8(body).unwrap())
        } else {
            Message::binary(body.to_vec())
        };
        assert_eq!(next(&mut client), expected, "Content-Type {content_type:?}");
    }
}

#[test]
fn a_text_body_that_is_not_utf8_is_400_and_nothing_is_sent() {
    let (server, api) = served();
    let mut client = clients(&server, "/ws/t", 1).remove(0);
    let reply = api.post(&messages("t"), Some("text/plain"), b"ok \xff\xfe not utf-8");
    reply.expect(400);
    let reply = api.post(&messages("t"), Some("application/json"), b"\"\xc3\x28\"");
    reply.expect(400);
    assert_eq!(api.get(&messages("t")).expect(200), json!([]));
    // The same bytes as binary are fine.
    api.post(&messages("t"), None, b"ok \xff\xfe").expect(200);
    assert_eq!(next(&mut client), Message::binary(b"ok \xff\xfe".to_vec()));
}

#[test]
fn a_bad_room_name_is_400_on_every_room_route() {
    let (_server, api) = served();
    let long = "a".repeat(65);
    for room in ["no%20spaces", "sl%2Fash", &long, "caf%C3%A9", "bang!"] {
        for (method, path, body) in [
            ("POST", messages(room), Some(&b"x"[..])),
            ("GET", messages(room), None),
            ("GET", format!("/api/rooms/{room}"), None),
            ("DELETE", format!("/api/rooms/{room}/clients/x:1"), None),
        ] {
            let reply = api.request(method, &path, Some("text/plain"), body);
            assert_eq!(reply.status, 400, "{method} {path}: {reply:?}");
            reply.error();
        }
    }
    // The longest name is fine.
    api.publish(&"a".repeat(64), "x").expect(200);
}

#[test]
fn a_publish_without_a_content_length_is_411() {
    let (server, api) = served();
    let addr = server.local_addr();
    // Chunked, as ureq sends a body of unknown length.
    let mut body: &[u8] = b"chunked body";
    let request = ureq::http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{}", messages("r")))
        .header("X-API-Key", KEY)
        .header("Content-Type", "text/plain");
    let mut response = agent()
        .run(
            request
                .body(ureq::SendBody::from_reader(&mut body))
                .unwrap(),
        )
        .expect("an answer");
    assert_eq!(response.status().as_u16(), 411);
    let error: serde_json::Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert!(error["error"].is_string(), "{error}");
    // No length at all.
    let (answer, _) = raw_exchange(
        addr,
        format!(
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {KEY}\r\n\
             Content-Type: text/plain\r\n\r\n",
            messages("r")
        )
        .as_bytes(),
    );
    assert_eq!(status(&answer), 411, "{answer}");
    assert!(json_body(&answer)["error"].is_string(), "{answer}");
    assert_eq!(api.get(&messages("r")).expect(200), json!([]));
}

#[test]
fn a_body_over_the_message_limit_is_413_from_its_length_without_reading_it() {
    let server = start(api_config().max_message_bytes(1024));
    let addr = server.local_addr();
    let api = Api::new(addr);
    let mut client = clients(&server, "/ws/big", 1).remove(0);
    // One byte over: refused; exactly at the limit: published.
    api.post(&messages("big"), None, &[7u8; 1025]).expect(413);
    api.post(&messages("big"), None, &[8u8; 1024]).expect(200);
    assert_eq!(next(&mut client), Message::binary(vec![8u8; 1024]));
    // A terabyte announced, three bytes sent: the answer comes from the
    // length alone, at once, while the rest of the body never arrives.
    let (answer, took) = raw_exchange(
        addr,
        format!(
            "POST {} HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {KEY}\r\n\
             Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\nabc",
            messages("big"),
            1u64 << 40
        )
        .as_bytes(),
    );
    assert_eq!(status(&answer), 413, "{answer}");
    assert!(
        answer.contains("Content-Type: application/json"),
        "{answer}"
    );
    assert!(json_body(&answer)["error"].is_string(), "{answer}");
    assert!(took < Duration::from_secs(3), "the 413 took {took:?}");
    // Only the one message at the limit is in the history.
    assert_eq!(
        api.get(&messages("big"))
            .expect(200)
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn other_methods_are_405_with_allow() {
    let (_server, api) = served();
    for (method, path, allow) in [
        ("PUT", "/api/rooms/r/messages", &["GET", "POST"][..]),
        ("DELETE", "/api/rooms/r/messages", &["GET", "POST"]),
        ("PATCH", "/api/rooms/r/messages", &["GET", "POST"]),
        ("POST", "/api/rooms", &["GET"]),
        ("DELETE", "/api/rooms", &["GET"]),
        ("POST", "/api/rooms/r", &["GET"]),
        ("DELETE", "/api/rooms/r", &["GET"]),
        ("GET", "/api/rooms/r/clients/x:1", &["DELETE"]),
        ("POST", "/api/rooms/r/clients/x:1", &["DELETE"]),
        ("GET", "/api/users/alice", &["DELETE"]),
        ("PUT", "/api/users/alice", &["DELETE"]),
    ] {
        let body = matches!(method, "PUT" | "POST" | "PATCH").then_some(&b"x"[..]);
        let reply = api.request(method, path, Some("text/plain"), body);
        assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
        reply.error();
        assert_eq!(allowed(&reply), allow, "{method} {path}");
    }
}

#[test]
fn an_unknown_api_path_is_404() {
    let (_server, api) = served();
    for (method, path) in [
        ("GET", "/api/"),
        ("GET", "/api/nothing"),
        ("GET", "/api/rooms/r/messages/extra"),
        ("GET", "/api/rooms/r/members"),
        ("DELETE", "/api/rooms/r/clients"),
        ("DELETE", "/api/users"),
        ("POST", "/api/publish"),
    ] {
        let reply = api.request(method, path, None, None);
        assert_eq!(reply.status, 404, "{method} {path}: {reply:?}");
        reply.error();
    }
}

#[test]
fn history_lists_what_the_room_kept_oldest_first_and_limit_takes_the_newest() {
    let (server, api) = served();
    api.publish("h", "one").expect(200);
    api.publish_binary("h", &[0, 1, 2, 255]).expect(200);
    // A client's own message goes into the same history, in its place.
    let mut two = clients(&server, "/ws/h", 2);
    let [a, b] = &mut two[..] else { unreachable!() };
    text(a, "from a client");
    assert_eq!(next_text(b), "from a client");
    api.publish_binary("h", b"\xfb\xff").expect(200);
    let all = json!([
        {"type": "text", "data": "one"},
        {"type": "binary", "data_base64": "AAEC/w=="},
        {"type": "text", "data": "from a client"},
        {"type": "binary", "data_base64": "+/8="},
    ]);
    assert_eq!(api.get(&messages("h")).expect(200), all);
    assert_eq!(
        api.get(&format!("{}?limit=2", messages("h"))).expect(200),
        json!([all[2], all[3]])
    );
    assert_eq!(
        api.get(&format!("{}?limit=100", messages("h"))).expect(200),
        all
    );
    assert_eq!(
        api.get(&format!("{}?limit=0", messages("h"))).expect(200),
        json!([])
    );
    // A room that never had anything.
    assert_eq!(api.get(&messages("never")).expect(200), json!([]));
}

#[test]
fn a_client_joining_with_history_gets_what_was_published() {
    let (server, api) = served();
    api.publish("late", "published before anyone came")
        .expect(200);
    api.publish_binary("late", &[1, 2, 3]).expect(200);
    let mut late = ws(server.local_addr(), "/ws/late?history=10");
    assert_eq!(next_text(&mut late), "published before anyone came");
    assert_eq!(next(&mut late), Message::binary(vec![1u8, 2, 3]));
    // Then live ones.
    api.publish("late", "live").expect(200);
    assert_eq!(next_text(&mut late), "live");
}

#[test]
fn rooms_and_a_room_list_counts_and_members() {
    let (server, api) = served();
    let addr = server.local_addr();
    let events = server.events();
    let mut ana = ws(addr, "/ws/ops?name=ana");
    let mut bo = ws(addr, "/ws/ops?name=bo");
    let _cy = ws(addr, "/ws/dev?name=cy");
    joined(&events, 3);
    text(&mut ana, "hello");
    assert_eq!(next_text(&mut bo), "hello");
    api.publish("ops", "from the API").expect(200);
    assert_eq!(next_text(&mut bo), "from the API");
    let rooms = api.get("/api/rooms").expect(200);
    let mut listed = rooms["rooms"].as_array().expect("a list of rooms").clone();
    listed.sort_by_key(|r| r["name"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        listed,
        [
            json!({"name": "dev", "clients": 1, "messages": 0, "history": 0}),
            json!({"name": "ops", "clients": 2, "messages": 2, "history": 2}),
        ]
    );
    let room = api.get("/api/rooms/ops").expect(200);
    assert_eq!(room["name"], "ops");
    assert_eq!(room["clients"], 2);
    assert_eq!(room["messages"], 2);
    assert_eq!(room["history"], 2);
    let members = room["members"].as_array().expect("members");
    let names: Vec<&str> = members
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ana", "bo"], "oldest first");
    for m in members {
        let id = m["id"].as_str().expect("an id");
        let (instance, n) = id.split_once(':').expect("instance:n");
        assert!(!instance.is_empty() && n.parse::<u64>().is_ok(), "{id}");
        assert!(m["joined_ms"].is_u64(), "{m}");
        // Nobody joined with a token.
        assert!(m.get("sub").is_none(), "{m}");
        assert_eq!(m.as_object().unwrap().len(), 3, "{m}");
    }
    assert_ne!(members[0]["id"], members[1]["id"]);
    // A room with neither clients nor history.
    api.get("/api/rooms/nobody-here").expect(404);
    // A room with history and no clients is there.
    api.publish("quiet", "kept").expect(200);
    let quiet = api.get("/api/rooms/quiet").expect(200);
    assert_eq!(quiet["clients"], 0);
    assert_eq!(quiet["history"], 1);
    assert_eq!(quiet["members"], json!([]));
}

#[test]
fn members_that_joined_with_a_token_show_its_subject() {
    let server = start(api_config().auth_secret(Secret::new(SECRET)));
    let addr = server.local_addr();
    let api = Api::new(addr);
    let _alice = ws(addr, &format!("/ws/ops?name=ali&token={}", token("alice")));
    let member = api.member("ops", "ali");
    assert_eq!(member["sub"], "alice", "{member}");
}

#[test]
fn removing_a_client_by_id_closes_it_with_1008_and_the_reason_while_the_others_keep_chatting() {
    let (server, api) = served();
    let addr = server.local_addr();
    let mut mallory = ws(addr, "/ws/r?name=mallory");
    let mut alice = ws(addr, "/ws/r?name=alice");
    let mut bob = ws(addr, "/ws/r?name=bob");
    let id = api.member_id("r", "mallory");
    api.member_id("r", "bob");
    let reply = api.delete(&format!(
        "/api/rooms/r/clients/{id}?reason=spam%20and%20abuse"
    ));
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(reply.body.is_empty(), "{reply:?}");
    assert_eq!(
        closed_with(&mut mallory),
        (CloseCode::Policy, "spam and abuse".to_string())
    );
    eventually("mallory is gone from the room", || {
        api.members("r").iter().all(|m| m["name"] != "mallory")
    });
    text(&mut alice, "still here");
    assert_eq!(next_text(&mut bob), "still here");
    text(&mut bob, "me too");
    assert_eq!(next_text(&mut alice), "me too");
    // Without a reason: "removed".
    let id = api.member_id("r", "bob");
    assert_eq!(
        api.delete(&format!("/api/rooms/r/clients/{id}")).status,
        204
    );
    assert_eq!(
        closed_with(&mut bob),
        (CloseCode::Policy, "removed".to_string())
    );
    // Gone: removing it again is 404.
    eventually("bob is gone", || {
        api.members("r").iter().all(|m| m["name"] != "bob")
    });
    api.delete(&format!("/api/rooms/r/clients/{id}"))
        .expect(404);
}

#[test]
fn removing_a_client_that_is_not_in_the_room_is_404() {
    let (server, api) = served();
    let addr = server.local_addr();
    let mut elsewhere = ws(addr, "/ws/other?name=eve");
    let id = api.member_id("other", "eve");
    let instance = id.split_once(':').unwrap().0.to_string();
    for path in [
        // Its id, but another room.
        format!("/api/rooms/r/clients/{id}"),
        format!("/api/rooms/r/clients/{instance}:999999"),
        format!("/api/rooms/other/clients/{instance}:999999"),
        "/api/rooms/other/clients/not-an-id".to_string(),
        "/api/rooms/other/clients/elsewhere:1".to_string(),
    ] {
        let reply = api.delete(&path);
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
        reply.error();
    }
    // Eve was not touched.
    api.publish("other", "still connected").expect(200);
    assert_eq!(next_text(&mut elsewhere), "still connected");
}

#[test]
fn removing_a_user_closes_each_of_its_connections_in_every_room_and_no_others() {
    let server = start(api_config().auth_secret(Secret::new(SECRET)));
    let addr = server.local_addr();
    let api = Api::new(addr);
    let (alice, bob) = (token("alice"), token("bob"));
    let mut alice_ops = ws(addr, &format!("/ws/ops?name=a1&token={alice}"));
    let mut alice_dev = ws(addr, &format!("/ws/dev?name=a2&token={alice}"));
    let mut alice_ops_2 = ws(addr, &format!("/ws/ops?name=a3&token={alice}"));
    let mut bob_ops = ws(addr, &format!("/ws/ops?name=b1&token={bob}"));
    let mut bob_dev = ws(addr, &format!("/ws/dev?name=b2&token={bob}"));
    api.member_id("ops", "b1");
    api.member_id("dev", "b2");
    api.member_id("ops", "a3");
    api.member_id("dev", "a2");
    api.member_id("ops", "a1");
    let reply = api.delete("/api/users/alice");
    assert_eq!(
        reply.expect(200),
        json!({"sub": "alice", "closed": 3}),
        "{reply:?}"
    );
    for ws in [&mut alice_ops, &mut alice_dev, &mut alice_ops_2] {
        assert_eq!(closed_with(ws).0, CloseCode::Policy);
    }
    // Bob chats on in both rooms.
    api.publish("ops", "ops goes on").expect(200);
    assert_eq!(next_text(&mut bob_ops), "ops goes on");
    api.publish("dev", "dev goes on").expect(200);
    assert_eq!(next_text(&mut bob_dev), "dev goes on");
    eventually("only bob is left", || {
        api.members("ops").len() == 1 && api.members("dev").len() == 1
    });
    // A subject with no connections.
    assert_eq!(
        api.delete("/api/users/nobody").expect(200),
        json!({"sub": "nobody", "closed": 0})
    );
    assert_eq!(
        api.delete("/api/users/alice").expect(200),
        json!({"sub": "alice", "closed": 0})
    );
}

#[test]
fn a_hundred_concurrent_publishers_beside_a_chat_lose_nothing_and_keep_each_publishers_order() {
    const PUBLISHERS: usize = 100;
    const EACH: usize = 20;
    const CHATS: usize = 50;
    let (server, _) = served();
    let addr = server.local_addr();
    let events = server.events();
    let (a, b) = (ws(addr, "/ws/busy"), ws(addr, "/ws/busy"));
    joined(&events, 2);

    // Each chat client reads everything, and says its next line each time
    // another 40 publications have reached it (so the chat runs through
    // the publishing); what it heard, by sender.
    let chatter = |mut ws: Ws, me: &'static str| {
        std::thread::spawn(move || {
            let mut published: HashMap<usize, Vec<usize>> = HashMap::new();
            let mut chat = Vec::new();
            let (mut heard, mut said) = (0, 0);
            while heard < PUBLISHERS * EACH || chat.len() < CHATS {
                if said < CHATS && heard >= said * (PUBLISHERS * EACH / CHATS) {
                    text(&mut ws, &format!("{me}:{said}"));
                    said += 1;
                    continue;
                }
                let t = next_text(&mut ws);
                if let Some(rest) = t.strip_prefix('p') {
                    let (p, i) = rest.split_once(':').expect("p{n}:{i}");
                    published
                        .entry(p.parse().unwrap())
                        .or_default()
                        .push(i.parse().unwrap());
                    heard += 1;
                } else {
                    let (from, i) = t.split_once(':').expect("{who}:{i}");
                    assert_ne!(from, me, "{me} got its own chat back");
                    chat.push(i.parse::<usize>().unwrap());
                }
            }
            while said < CHATS {
                text(&mut ws, &format!("{me}:{said}"));
                said += 1;
            }
            (published, chat, ws)
        })
    };
    let (a, b) = (chatter(a, "a"), chatter(b, "b"));

    let start = Arc::new(Barrier::new(PUBLISHERS));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let start = start.clone();
            std::thread::spawn(move || {
                let api = Api::new(addr);
                start.wait();
                for i in 0..EACH {
                    let reply = api.publish("busy", &format!("p{p}:{i}"));
                    assert_eq!(
                        reply.expect(200),
                        json!({"room": "busy", "delivered": 2}),
                        "publisher {p}, message {i}"
                    );
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().expect("a publisher");
    }
    for (side, handle) in [("a", a), ("b", b)] {
        let (published, chat, mut ws) = handle.join().expect("a chat client");
        assert_eq!(published.len(), PUBLISHERS, "{side}: publishers heard");
        for (p, got) in &published {
            assert_eq!(
                got,
                &(0..EACH).collect::<Vec<_>>(),
                "{side}: publisher {p}'s messages (each once, in order)"
            );
        }
        assert_eq!(chat, (0..CHATS).collect::<Vec<_>>(), "{side}: the chat");
        close(&mut ws);
    }
}

#[test]
fn api_requests_are_counted_by_route_and_status() {
    let (server, api) = served();
    let addr = server.local_addr();
    let count = |route: &str, status: u16| {
        scrape(addr)
            .samples
            .get(&format!(
                "wshub_api_requests_total{{route={route},status={status}}}"
            ))
            .copied()
            .unwrap_or(0.0)
    };
    for i in 0..3 {
        api.publish("m", &format!("{i}")).expect(200);
    }
    api.post(&messages("m"), Some("text/plain"), b"\xff")
        .expect(400);
    api.get(&messages("m")).expect(200);
    api.get("/api/rooms").expect(200);
    api.get("/api/rooms/m").expect(200);
    api.get("/api/rooms/none").expect(404);
    api.delete("/api/rooms/m/clients/x:1").expect(404);
    api.delete("/api/users/u").expect(200);
    api.get("/api/unknown").expect(404);
    api.request("PUT", &messages("m"), None, Some(b"x"))
        .expect(405);
    Api::keyed(addr, None).get("/api/rooms").expect(401);
    Api::keyed(addr, Some("nope")).publish("m", "x").expect(401);

    assert_eq!(count("publish", 200), 3.0);
    assert_eq!(count("publish", 400), 1.0);
    assert_eq!(count("history", 200), 1.0);
    assert_eq!(count("rooms", 200), 1.0);
    assert_eq!(count("room", 200), 1.0);
    assert_eq!(count("room", 404), 1.0);
    assert_eq!(count("remove_client", 404), 1.0);
    assert_eq!(count("remove_user", 200), 1.0);
    assert_eq!(count("other", 404), 1.0);
    // A 405 and the 401s, under whichever route the server files them.
    let scraped = scrape(addr);
    let total = |status: &str| -> f64 {
        scraped
            .samples
            .iter()
            .filter(|(k, _)| {
                k.starts_with("wshub_api_requests_total{")
                    && k.ends_with(&format!("status={status}}}"))
            })
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(total("405"), 1.0);
    assert_eq!(total("401"), 2.0);
    assert_eq!(scraped.types["wshub_api_requests"], "counter");
    // Every API request, counted once.
    assert_eq!(
        scraped
            .samples
            .iter()
            .filter(|(k, _)| k.starts_with("wshub_api_requests_total{"))
            .map(|(_, v)| v)
            .sum::<f64>(),
        14.0
    );
}

/// A file in the test's temporary directory holding `contents`.
fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("api-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn the_key_and_query_strings_never_reach_the_log() {
    let key_file = temp_file("log-key", format!("{KEY}\n").as_bytes());
    let served = serve_process(
        &[
            "--api-key-file",
            key_file.to_str().unwrap(),
            "--log-level",
            "trace",
        ],
        &[],
    );
    let addr = served.addr;
    let api = Api::new(addr);
    let mut member = ws(addr, "/ws/r?name=victim");
    let id = api.member_id("r", "victim");
    api.post(
        "/api/rooms/r/messages?q1=query-marker-one",
        Some("text/plain"),
        b"hi",
    )
    .expect(200);
    assert_eq!(next_text(&mut member), "hi");
    api.get("/api/rooms/r/messages?limit=5&q2=query-marker-two")
        .expect(200);
    api.get("/api/rooms?q3=query-marker-three").expect(200);
    assert_eq!(
        api.delete(&format!(
            "/api/rooms/r/clients/{id}?reason=bye&q4=query-marker-four"
        ))
        .status,
        204
    );
    api.delete("/api/users/someone?q5=query-marker-five")
        .expect(200);
    api.get("/api/nothing?q6=query-marker-six").expect(404);
    Api::keyed(addr, Some("a-wrong-key-marker"))
        .get("/api/rooms?q7=query-marker-seven")
        .expect(401);
    let mut process = served.process;
    assert!(
        Command::new("kill")
            .args(["-TERM", &process.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let _ = process.wait();
    // Every line, up to the end of the process's stderr.
    let mut log = Vec::new();
    while let Ok(line) = served.log.recv_timeout(STEP) {
        log.push(line);
    }
    assert!(
        log.iter().any(|l| l.contains("api")),
        "API requests are logged at trace level: {log:?}"
    );
    for line in served.head.iter().chain(&log) {
        for secret in [KEY, "a-wrong-key-marker", "query-marker"] {
            assert!(!line.contains(secret), "{secret:?} in the log: {line}");
        }
    }
    let _ = std::fs::remove_file(key_file);
}

/// `wshub publish ARGS` with `stdin`, once it has exited (bounded):
/// its status code, stdout and stderr.
fn publish_cli(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let mut child = Proc(
        Command::new(BIN)
            .arg("publish")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wshub publish starts"),
    );
    let out = child.stdout.take().unwrap();
    let err = child.stderr.take().unwrap();
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let (out, err) = (read(Box::new(out)), read(Box::new(err)));
    {
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin);
    }
    let mut code = None;
    eventually("wshub publish exits", || {
        code = child.try_wait().unwrap().map(|s| s.code().unwrap_or(-1));
        code.is_some()
    });
    (code.unwrap(), out.join().unwrap(), err.join().unwrap())
}

#[test]
fn wshub_publish_sends_a_message_and_prints_the_answer() {
    let (server, _) = served();
    let addr = server.local_addr();
    let key_file = temp_file("cli-key", format!("{KEY}\n").as_bytes());
    let key = key_file.to_str().unwrap();
    let url = format!("http://{addr}");
    let mut client = clients(&server, "/ws/ops", 1).remove(0);

    // The message as an argument: text.
    let (code, out, err) = publish_cli(
        &[
            "--url",
            &url,
            "--room",
            "ops",
            "--api-key-file",
            key,
            "deploy 42 ✓",
        ],
        b"",
    );
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON on stdout");
    assert_eq!(answer, json!({"room": "ops", "delivered": 1}));
    assert_eq!(next(&mut client), Message::text("deploy 42 ✓"));

    // From stdin with `-`, and binary.
    let bytes = [0u8, 1, 2, 255, 10];
    let (code, _, err) = publish_cli(
        &[
            "--url",
            &format!("{url}/"),
            "--room",
            "ops",
            "--api-key-file",
            key,
            "--binary",
            "-",
        ],
        &bytes,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(next(&mut client), Message::binary(bytes.to_vec()));

    // No MESSAGE: stdin too, as text, unchanged.
    let (code, _, err) = publish_cli(
        &["--url", &url, "--room", "ops", "--api-key-file", key],
        b"line one\nline two\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(next(&mut client), Message::text("line one\nline two\n"));
    let _ = std::fs::remove_file(key_file);
}

#[test]
fn wshub_publish_exits_1_with_the_status_and_error_when_refused() {
    let (server, api) = served();
    let addr = server.local_addr();
    let url = format!("http://{addr}");
    let wrong = temp_file("wrong-key", b"not the key\n");
    let (code, out, err) = publish_cli(
        &[
            "--url",
            &url,
            "--room",
            "ops",
            "--api-key-file",
            wrong.to_str().unwrap(),
            "x",
        ],
        b"",
    );
    assert_eq!(code, 1, "stdout {out:?}, stderr {err:?}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("401"), "{err}");
    // No key at all.
    let (code, _, err) = publish_cli(&["--url", &url, "--room", "ops", "x"], b"");
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    // A bad room.
    let key = temp_file("right-key", KEY.as_bytes());
    let keyed = |url: &str, room: &str| {
        let args = [
            "--url",
            url,
            "--room",
            room,
            "--api-key-file",
            key.to_str().unwrap(),
            "x",
        ];
        publish_cli(&args, b"")
    };
    let (code, _, err) = keyed(&url, "no spaces");
    assert_eq!(code, 1);
    assert!(err.contains("400"), "{err}");
    // Nothing was published.
    assert_eq!(api.get(&messages("ops")).expect(200), json!([]));
    // Nobody listening there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (code, _, err) = keyed(&nowhere, "ops");
    assert_eq!(code, 1);
    assert!(!err.is_empty());
    let _ = std::fs::remove_file(wrong);
    let _ = std::fs::remove_file(key);
}
