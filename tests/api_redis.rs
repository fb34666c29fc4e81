//! The server API across instances sharing rooms through a real
//! `redis-server` of each test's own: a publish on one instance reaches
//! the room on the others and their history, survives a Redis outage, and
//! removals reach clients held by another instance. Without a
//! `redis-server` binary the tests say so and pass; CI installs one.

mod common;

use std::time::{Duration, Instant};

use common::api::*;
use common::redis::Redis;
use common::*;
use serde_json::json;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use wshub::Server;
use wshub::auth::Secret;

const SECRET: &[u8] = b"the api redis tests' secret, 32 bytes";

fn instances(redis: &Redis, n: usize, config: impl Fn() -> wshub::Config) -> Vec<Server> {
    let servers: Vec<Server> = (0..n).map(|_| start(config().redis(redis.url()))).collect();
    for s in &servers {
        let h = s.handle();
        eventually("the bridge is connected", || {
            h.redis_connected() == Some(true)
        });
    }
    servers
}

fn token(sub: &str) -> String {
    wshub::auth::mint_token(&Secret::new(SECRET), sub, None, Duration::from_secs(3600))
        .expect("a token")
}

fn closed_with(ws: &mut Ws) -> (CloseCode, String) {
    match next(ws) {
        Message::Close(Some(frame)) => (frame.code, frame.reason.as_str().to_string()),
        other => panic!("expected a Close with a code, got {other:?}"),
    }
}

#[test]
fn a_publish_on_one_instance_reaches_the_room_on_another_and_its_history() {
    let Some(redis) = Redis::start() else { return };
    let servers = instances(&redis, 2, api_config);
    let (a, b) = (servers[0].local_addr(), servers[1].local_addr());
    let mut on_b = clients(&servers[1], "/ws/news", 1).remove(0);
    redis.wait_subscribers("news", 1);
    let (api_a, api_b) = (Api::new(a), Api::new(b));

    // Nobody on A: delivered to no local client, yet B's client gets it.
    assert_eq!(
        api_a.publish("news", "from A's API").expect(200),
        json!({"room": "news", "delivered": 0})
    );
    assert_eq!(next(&mut on_b), Message::text("from A's API"));
    let bytes: Vec<u8> = (0..=255u8).collect();
    api_a.publish_binary("news", &bytes).expect(200);
    assert_eq!(next(&mut on_b), Message::binary(bytes.clone()));

    // B's history has both, as B's own clients would see them.
    let expected = json!([
        {"type": "text", "data": "from A's API"},
        {"type": "binary", "data_base64": data_encoding_base64(&bytes)},
    ]);
    assert_eq!(api_b.get("/api/rooms/news/messages").expect(200), expected);
    let mut late = ws(b, "/ws/news?history=all");
    assert_eq!(next(&mut late), Message::text("from A's API"));
    assert_eq!(next(&mut late), Message::binary(bytes));
    // And A's.
    assert_eq!(api_a.get("/api/rooms/news/messages").expect(200), expected);
}

/// Standard base64 with padding, written out here rather than taken from
/// the server's own encoder.
fn data_encoding_base64(bytes: &[u8]) -> String {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn a_publish_while_redis_is_down_reaches_local_clients_at_once_and_the_other_instance_after() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let servers = instances(&redis, 2, api_config);
    let a = servers[0].local_addr();
    let mut on_a = clients(&servers[0], "/ws/r", 1).remove(0);
    let mut on_b = clients(&servers[1], "/ws/r", 1).remove(0);
    redis.wait_subscribers("r", 2);
    let api = Api::new(a);
    api.publish("r", "before").expect(200);
    assert_eq!(next(&mut on_a), Message::text("before"));
    assert_eq!(next(&mut on_b), Message::text("before"));

    redis.kill();
    let handle = servers[0].handle();
    eventually("A notices", || handle.redis_connected() == Some(false));
    let started = Instant::now();
    assert_eq!(
        api.publish("r", "during").expect(200),
        json!({"room": "r", "delivered": 1})
    );
    assert_eq!(next(&mut on_a), Message::text("during"));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "local delivery took {took:?}"
    );

    redis.run();
    for s in &servers {
        let h = s.handle();
        eventually("the bridges are back", || h.redis_connected() == Some(true));
    }
    // B gets what was published meanwhile, once, before what comes after.
    assert_eq!(next(&mut on_b), Message::text("during"));
    redis.wait_subscribers("r", 2);
    api.publish("r", "after").expect(200);
    assert_eq!(next(&mut on_b), Message::text("after"));
    assert_eq!(next(&mut on_a), Message::text("after"));
}

#[test]
fn removing_a_client_held_by_another_instance_closes_it_with_1008() {
    let Some(redis) = Redis::start() else { return };
    let servers = instances(&redis, 2, api_config);
    let (a, b) = (servers[0].local_addr(), servers[1].local_addr());
    let mut target = ws(b, "/ws/r?name=target");
    let mut stays = ws(b, "/ws/r?name=stays");
    let mut on_a = ws(a, "/ws/r?name=on-a");
    let api = Api::new(a);
    // A lists B's clients, with B's instance in their ids.
    let id = api.member_id("r", "target");
    api.member_id("r", "stays");
    assert_eq!(
        id.split_once(':').map(|(i, _)| i),
        Some(servers[1].handle().instance_id()),
        "{id}"
    );
    redis.wait_subscribers("r", 2);
    let reply = api.delete(&format!("/api/rooms/r/clients/{id}?reason=moderated"));
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(reply.body.is_empty());
    assert_eq!(
        closed_with(&mut target),
        (CloseCode::Policy, "moderated".to_string())
    );
    eventually("A no longer lists it", || {
        api.members("r").iter().all(|m| m["name"] != "target")
    });
    // The others chat on, across the instances.
    text(&mut on_a, "still here");
    assert_eq!(next(&mut stays), Message::text("still here"));
    // Not in that room: 404, from either instance.
    api.delete(&format!("/api/rooms/elsewhere/clients/{id}"))
        .expect(404);
    Api::new(b)
        .delete(&format!("/api/rooms/r/clients/{id}"))
        .expect(404);
}

#[test]
fn removing_a_user_from_one_instance_closes_its_connections_on_every_instance() {
    let Some(redis) = Redis::start() else { return };
    let servers = instances(&redis, 2, || api_config().auth_secret(Secret::new(SECRET)));
    let (a, b) = (servers[0].local_addr(), servers[1].local_addr());
    let (alice, bob) = (token("alice"), token("bob"));
    let mut alice_a = ws(a, &format!("/ws/ops?name=alice-a&token={alice}"));
    let mut alice_b = ws(b, &format!("/ws/dev?name=alice-b&token={alice}"));
    let mut alice_b2 = ws(b, &format!("/ws/ops?name=alice-b2&token={alice}"));
    let mut bob_a = ws(a, &format!("/ws/ops?name=bob-a&token={bob}"));
    let mut bob_b = ws(b, &format!("/ws/ops?name=bob-b&token={bob}"));
    let api = Api::new(a);
    for (room, name) in [
        ("ops", "alice-a"),
        ("dev", "alice-b"),
        ("ops", "alice-b2"),
        ("ops", "bob-a"),
        ("ops", "bob-b"),
    ] {
        api.member_id(room, name);
    }
    redis.wait_subscribers("ops", 2);
    // Closed here: the one on A.
    assert_eq!(
        api.delete("/api/users/alice").expect(200),
        json!({"sub": "alice", "closed": 1})
    );
    for ws in [&mut alice_a, &mut alice_b, &mut alice_b2] {
        assert_eq!(closed_with(ws).0, CloseCode::Policy);
    }
    // Bob, on both instances, chats on.
    text(&mut bob_a, "bob on A");
    assert_eq!(next(&mut bob_b), Message::text("bob on A"));
    text(&mut bob_b, "bob on B");
    assert_eq!(next(&mut bob_a), Message::text("bob on B"));
    eventually("only bob is listed", || {
        let ops: Vec<_> = api
            .members("ops")
            .iter()
            .map(|m| m["sub"].clone())
            .collect();
        ops == [json!("bob"), json!("bob")] && api.members("dev").is_empty()
    });
}
