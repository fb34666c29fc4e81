//! Several instances sharing rooms through a real `redis-server` on a
//! free loopback port (each test starts its own, and stops it). Without a
//! `redis-server` binary the tests say so and pass; CI installs one.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::*;
use tungstenite::Message;
use wshub::{Event, Server};

fn instance(redis: &Redis) -> Server {
    start(config().redis(redis.url()))
}

fn addrs(servers: &[Server]) -> Vec<SocketAddr> {
    servers.iter().map(Server::local_addr).collect()
}

/// Waits until every instance's bridge is connected.
fn wait_connected(servers: &[Server]) {
    for s in servers {
        let h = s.handle();
        eventually("the bridge is connected", || {
            h.redis_connected() == Some(true)
        });
    }
}

#[test]
fn messages_cross_three_instances_exactly_once_in_per_sender_order() {
    let Some(redis) = Redis::start() else { return };
    let servers: Vec<Server> = (0..3).map(|_| instance(&redis)).collect();
    wait_connected(&servers);
    // Two clients on each instance.
    let mut clients: Vec<Ws> = addrs(&servers)
        .iter()
        .flat_map(|&a| [ws(a, "/ws/x"), ws(a, "/ws/x")])
        .collect();
    redis.wait_subscribers("x", 3);
    const EACH: usize = 20;
    let n = clients.len();
    for i in 0..EACH {
        for (c, ws) in clients.iter_mut().enumerate() {
            text(ws, &format!("{c}:{i}"));
        }
    }
    for (me, ws) in clients.iter_mut().enumerate() {
        let mut next_of: HashMap<usize, usize> = HashMap::new();
        for _ in 0..(n - 1) * EACH {
            let Message::Text(t) = next(ws) else {
                panic!("client {me}: expected text")
            };
            let (from, i) = t.split_once(':').expect("from:i");
            let (from, i): (usize, usize) = (from.parse().unwrap(), i.parse().unwrap());
            assert_ne!(from, me, "client {me} got its own message back");
            let expected = next_of.entry(from).or_insert(0);
            assert_eq!(
                i, *expected,
                "client {me}: from {from} out of order or twice"
            );
            *expected += 1;
        }
        assert!(
            next_of.values().all(|&k| k == EACH),
            "client {me}: {next_of:?}"
        );
    }
    for ws in &mut clients {
        close(ws);
    }
}

#[test]
fn rooms_stay_isolated_across_instances() {
    let Some(redis) = Redis::start() else { return };
    let servers: Vec<Server> = (0..2).map(|_| instance(&redis)).collect();
    wait_connected(&servers);
    let [a, b] = addrs(&servers)[..] else {
        unreachable!()
    };
    let (mut a1, mut a2) = (ws(a, "/ws/one"), ws(a, "/ws/two"));
    let (mut b1, mut b2) = (ws(b, "/ws/one"), ws(b, "/ws/two"));
    redis.wait_subscribers("one", 2);
    redis.wait_subscribers("two", 2);
    text(&mut a1, "for one");
    assert_eq!(next(&mut b1), Message::text("for one"));
    text(&mut a2, "for two");
    // Room two's first message is its own: nothing of room one crossed.
    assert_eq!(next(&mut b2), Message::text("for two"));
    for ws in [&mut a1, &mut a2, &mut b1, &mut b2] {
        close(ws);
    }
}

#[test]
fn five_mib_binary_crosses_byte_exact() {
    let Some(redis) = Redis::start() else { return };
    let servers: Vec<Server> = (0..2).map(|_| instance(&redis)).collect();
    wait_connected(&servers);
    let [a, b] = addrs(&servers)[..] else {
        unreachable!()
    };
    let (mut sender, mut receiver) = (ws(a, "/ws/big"), ws(b, "/ws/big"));
    redis.wait_subscribers("big", 2);
    let body: Vec<u8> = (0..5 << 20).map(|i: u32| (i % 251) as u8).collect();
    sender.send(Message::binary(body.clone())).unwrap();
    match next(&mut receiver) {
        Message::Binary(got) => assert!(got[..] == body[..], "5 MiB changed on the way"),
        other => panic!("expected binary, got {other:?}"),
    }
    close(&mut sender);
    close(&mut receiver);
}

#[test]
fn host_broadcasts_cross_and_remote_messages_are_events() {
    let Some(redis) = Redis::start() else { return };
    let servers: Vec<Server> = (0..2).map(|_| instance(&redis)).collect();
    wait_connected(&servers);
    let b = servers[1].local_addr();
    let events = servers[1].events();
    let mut listener = ws(b, "/ws/news");
    redis.wait_subscribers("news", 1);
    servers[0]
        .broadcast("news", Message::text("from the host on A"))
        .unwrap();
    assert_eq!(next(&mut listener), Message::text("from the host on A"));
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left).expect("a remote event") {
            Event::Remote { room, message, .. } => {
                assert_eq!(&*room, "news");
                assert_eq!(message, Message::text("from the host on A"));
                break;
            }
            _ => continue,
        }
    }
    close(&mut listener);
}

#[test]
fn an_emptied_room_is_unsubscribed() {
    let Some(redis) = Redis::start() else { return };
    let server = instance(&redis);
    wait_connected(std::slice::from_ref(&server));
    let channels = || redis.cli(&["PUBSUB", "CHANNELS", "wshub:room:*"]);
    let mut c = ws(server.local_addr(), "/ws/lonely");
    eventually("subscribed while a client is there", || {
        channels() == ["wshub:room:lonely"]
    });
    close(&mut c);
    eventually("unsubscribed when it left", || channels().is_empty());
}

#[test]
fn killing_redis_keeps_local_delivery_and_what_was_said_meanwhile_crosses_once_after() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let servers: Vec<Server> = (0..2).map(|_| instance(&redis)).collect();
    wait_connected(&servers);
    let [a, b] = addrs(&servers)[..] else {
        unreachable!()
    };
    let (mut a1, mut a2, mut b1) = (ws(a, "/ws/r"), ws(a, "/ws/r"), ws(b, "/ws/r"));
    redis.wait_subscribers("r", 2);
    text(&mut a1, "before");
    assert_eq!(next(&mut a2), Message::text("before"));
    assert_eq!(next(&mut b1), Message::text("before"));

    redis.kill();
    let handle = servers[1].handle();
    eventually("B notices", || handle.redis_connected() == Some(false));
    let during = scrape(b);
    assert_eq!(during.get("wshub_redis_connected"), 0.0);
    assert_eq!(during.get("wshub_redis_received_total"), 1.0);
    assert_eq!(scrape(a).get("wshub_redis_published_total"), 1.0);
    // Local delivery goes on, without waiting on Redis.
    for i in 0..50 {
        let started = Instant::now();
        text(&mut a1, &format!("local {i}"));
        assert_eq!(next(&mut a2), Message::text(format!("local {i}")));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    redis.run();
    wait_connected(&servers);
    redis.wait_subscribers("r", 2);
    text(&mut a1, "after");
    assert_eq!(next(&mut a2), Message::text("after"));
    // A kept what its clients said during the outage and sent it when Redis
    // came back: b1 gets all of it, once each, in order, then "after".
    for i in 0..50 {
        assert_eq!(next(&mut b1), Message::text(format!("local {i}")));
    }
    assert_eq!(next(&mut b1), Message::text("after"));
    let after = scrape(b);
    assert_eq!(after.get("wshub_redis_connected"), 1.0);
    assert_eq!(after.get("wshub_redis_received_total"), 52.0);
    assert_eq!(after.get("wshub_redis_dropped_total"), 0.0);
    for ws in [&mut a1, &mut a2, &mut b1] {
        close(ws);
    }
}

#[test]
fn a_joiner_on_another_instance_gets_the_rooms_history_from_redis() {
    let Some(redis) = Redis::start() else { return };
    let servers: Vec<Server> = (0..2).map(|_| instance(&redis)).collect();
    wait_connected(&servers);
    let [a, b] = addrs(&servers)[..] else {
        unreachable!()
    };
    let (mut a1, mut a2) = (ws(a, "/ws/told"), ws(a, "/ws/told"));
    for i in 0..5 {
        text(&mut a1, &format!("said on A {i}"));
        assert_eq!(next(&mut a2), Message::text(format!("said on A {i}")));
    }
    // B has never had a client in this room: its first joiner's history
    // comes from the room's stream in Redis.
    eventually("the stream holds them", || {
        redis.cli(&["XLEN", "wshub:history:told"]) == ["5"]
    });
    let mut late = ws(b, "/ws/told?history=3");
    for i in 2..5 {
        assert_eq!(next(&mut late), Message::text(format!("said on A {i}")));
    }
    redis.wait_subscribers("told", 2);
    text(&mut a1, "live");
    assert_eq!(next(&mut late), Message::text("live"));
}

/// `wshub serve` as a process of its own (so that it can be killed).
fn instance_process(redis: &Redis) -> (Proc, SocketAddr) {
    let served = serve_process(&["--redis", &redis.url()], &[]);
    let log = served.log;
    std::thread::spawn(move || for _ in log {});
    (served.process, served.addr)
}

fn names_in(addr: SocketAddr, room: &str) -> Vec<String> {
    let response = get(addr, &format!("/rooms/{room}"), "");
    let Some(body) = response.split("\r\n\r\n").nth(1) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let mut names: Vec<String> = v["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The next presence notice `ws` receives, as JSON.
fn notice(ws: &mut Ws) -> serde_json::Value {
    let m = next(ws);
    let v: serde_json::Value = serde_json::from_str(m.to_text().expect("text")).expect("JSON");
    assert_eq!(v["wshub"], "presence", "{v}");
    v
}

#[test]
fn presence_spans_instances_and_a_killed_instances_clients_leave_it() {
    let Some(redis) = Redis::start() else { return };
    let (mut a_process, a) = instance_process(&redis);
    let b_server = instance(&redis);
    wait_connected(std::slice::from_ref(&b_server));
    let b = b_server.local_addr();
    let _ann = ws(a, "/ws/p?name=ann");
    eventually("ann is in the room's shared presence", || {
        names_in(a, "p") == ["ann"]
    });
    // bea, on B, sees ann (on A) in her snapshot, and cal joining on A.
    let mut bea = ws(b, "/ws/p?name=bea&presence=1");
    let snapshot = notice(&mut bea);
    assert_eq!(snapshot["event"], "snapshot");
    let mut names: Vec<&str> = snapshot["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ann", "bea"]);
    redis.wait_subscribers("p", 2);
    let _cal = ws(a, "/ws/p?name=cal");
    let join = notice(&mut bea);
    assert_eq!(
        (&join["event"], &join["name"], &join["clients"]),
        (&"join".into(), &"cal".into(), &3.into())
    );
    eventually("both instances list all three", || {
        names_in(a, "p") == ["ann", "bea", "cal"] && names_in(b, "p") == ["ann", "bea", "cal"]
    });
    // A crashes: no goodbye. Its clients leave B's view within the
    // presence lifetime (6 s), with no help from A.
    a_process.kill().unwrap();
    let _ = a_process.wait();
    let killed = Instant::now();
    let mut left: Vec<String> = (0..2)
        .map(|_| {
            let v = notice(&mut bea);
            assert_eq!(v["event"], "leave", "{v}");
            v["name"].as_str().unwrap().to_string()
        })
        .collect();
    left.sort();
    assert_eq!(left, ["ann", "cal"]);
    eventually("they are gone from B's room", || {
        names_in(b, "p") == ["bea"]
    });
    assert!(
        killed.elapsed() < Duration::from_secs(9),
        "{:?}",
        killed.elapsed()
    );
}

#[test]
fn stopping_one_instance_leaves_the_others_chatting() {
    let Some(redis) = Redis::start() else { return };
    let mut servers: Vec<Server> = (0..3).map(|_| instance(&redis)).collect();
    wait_connected(&servers);
    let addrs = addrs(&servers);
    let mut clients: Vec<Ws> = addrs.iter().map(|&a| ws(a, "/ws/s")).collect();
    redis.wait_subscribers("s", 3);
    let first = servers.remove(0);
    first.shutdown();
    redis.wait_subscribers("s", 2);
    let mut gone = clients.remove(0);
    assert_eq!(
        close_code(&mut gone),
        Some(tungstenite::protocol::frame::coding::CloseCode::Away)
    );
    text(&mut clients[0], "still on");
    assert_eq!(next(&mut clients[1]), Message::text("still on"));
    text(&mut clients[1], "and back");
    assert_eq!(next(&mut clients[0]), Message::text("and back"));
    for ws in &mut clients {
        close(ws);
    }
}

#[test]
fn a_bad_redis_url_fails_at_start_and_an_unreachable_one_is_retried() {
    let bad = Server::start(config().redis("http://localhost:6379"));
    match bad {
        Err(wshub::Error::Config(why)) => assert!(why.contains("--redis"), "{why}"),
        Err(e) => panic!("expected a configuration error, got {e}"),
        Ok(_) => panic!("a server started with an http:// Redis URL"),
    }
    // Nothing listens on port 1: the server starts, serves locally, retries.
    let server = start(config().redis("redis://127.0.0.1:1"));
    assert_eq!(server.handle().redis_connected(), Some(false));
    // Still healthy: it serves its own clients; the body says why not more.
    let health = get(server.local_addr(), "/healthz", "");
    assert_eq!(status(&health), 200);
    assert!(health.contains(r#""redis":"disconnected""#), "{health}");
    let addr = server.local_addr();
    let events = server.events();
    let (mut a, mut b) = (ws(addr, "/ws/alone"), ws(addr, "/ws/alone"));
    joined(&events, 2);
    text(&mut a, "no Redis needed");
    assert_eq!(next(&mut b), Message::text("no Redis needed"));
    close(&mut a);
    close(&mut b);
}
