//! Rooms remember and know who is there: history for late joiners
//! (`?history=K|all`), its bounds, and presence (`?presence=1`, `?name=`,
//! `/rooms`).

mod common;

use std::time::Duration;

use common::*;
use tungstenite::Message;

/// Sends `n` texts `{prefix}{i}` from `a`, and waits until `b` has them
/// (so the hub has relayed, and recorded, every one).
fn say(a: &mut Ws, b: &mut Ws, prefix: &str, n: usize) {
    for i in 0..n {
        text(a, &format!("{prefix}{i}"));
    }
    for i in 0..n {
        assert_eq!(next(b), Message::text(format!("{prefix}{i}")));
    }
}

#[test]
fn a_late_joiner_gets_exactly_the_last_k_then_live_messages() {
    let server = start(config().history(5));
    let addr = server.local_addr();
    let (mut a, mut b) = (ws(addr, "/ws/h"), ws(addr, "/ws/h"));
    say(&mut a, &mut b, "m", 10);
    // The room keeps 5; asking for 3 gives the last 3, for all gives 5.
    let mut three = ws(addr, "/ws/h?history=3");
    for i in 7..10 {
        assert_eq!(next(&mut three), Message::text(format!("m{i}")));
    }
    let mut all = ws(addr, "/ws/h?history=all");
    for i in 5..10 {
        assert_eq!(next(&mut all), Message::text(format!("m{i}")));
    }
    let mut plain = ws(addr, "/ws/h");
    text(&mut a, "live");
    for c in [&mut b, &mut three, &mut all, &mut plain] {
        // A plain joiner's first message is the live one: no history.
        assert_eq!(next(c), Message::text("live"));
    }
    assert_eq!(server.handle().history("h").unwrap().len(), 5);
}

#[test]
fn binary_messages_are_replayed_as_binary_and_bytes_bound_the_history() {
    // Room for two 1,004-byte frames (1,000 bytes and a 4-byte header).
    let server = start(config().history_bytes(2100));
    let addr = server.local_addr();
    let (mut a, mut b) = (ws(addr, "/ws/bin"), ws(addr, "/ws/bin"));
    for i in 0..4u8 {
        a.send(Message::binary(vec![i; 1000])).unwrap();
        assert_eq!(next(&mut b), Message::binary(vec![i; 1000]));
    }
    let mut late = ws(addr, "/ws/bin?history=all");
    assert_eq!(next(&mut late), Message::binary(vec![2u8; 1000]));
    assert_eq!(next(&mut late), Message::binary(vec![3u8; 1000]));
    text(&mut a, "then live");
    assert_eq!(next(&mut late), Message::text("then live"));
}

#[test]
fn an_empty_rooms_history_is_dropped_after_its_age() {
    let server = start(config().history_age(Duration::from_millis(200)));
    let handle = server.handle();
    let addr = server.local_addr();
    {
        let (mut a, mut b) = (ws(addr, "/ws/brief"), ws(addr, "/ws/brief"));
        say(&mut a, &mut b, "x", 3);
        close(&mut a);
        close(&mut b);
    }
    eventually("the empty room's history ages out", || {
        handle.history("brief").unwrap().is_empty()
    });
    // Forgotten: no clients, no history, no room.
    assert_eq!(status(&get(addr, "/rooms/brief", "")), 404);
    let mut late = ws(addr, "/ws/brief?history=all");
    let mut other = ws(addr, "/ws/brief");
    text(&mut other, "fresh");
    assert_eq!(next(&mut late), Message::text("fresh"));
}

#[test]
fn a_join_during_a_flood_sees_every_message_once_in_the_rooms_order() {
    const SENDERS: usize = 10;
    const EACH: usize = 200;
    // The test reads the observer and the joiner one after the other:
    // neither may be evicted as a slow reader meanwhile.
    let server = start(config().history(10_000).send_queue(10_000));
    let addr = server.local_addr();
    let events = server.events();
    let mut observer = ws(addr, "/ws/flood");
    let mut senders: Vec<Ws> = (0..SENDERS).map(|_| ws(addr, "/ws/flood")).collect();
    joined(&events, SENDERS + 1);
    let threads: Vec<_> = senders
        .drain(..)
        .enumerate()
        .map(|(s, mut ws)| {
            std::thread::spawn(move || {
                for i in 0..EACH {
                    text(&mut ws, &format!("{s}:{i}"));
                }
                ws
            })
        })
        .collect();
    // Join while they send (after the first messages have gone by).
    let mut seen_by_observer = Vec::new();
    for _ in 0..SENDERS * 5 {
        seen_by_observer.push(next(&mut observer));
    }
    let mut joiner = ws(addr, "/ws/flood?history=all");
    while seen_by_observer.len() < SENDERS * EACH {
        seen_by_observer.push(next(&mut observer));
    }
    let mut seen_by_joiner = Vec::new();
    while seen_by_joiner.len() < SENDERS * EACH {
        seen_by_joiner.push(next(&mut joiner));
    }
    // The joiner's history then live messages are the room's whole order.
    assert!(
        seen_by_joiner == seen_by_observer,
        "the joiner saw another order"
    );
    for t in threads {
        let mut ws = t.join().unwrap();
        close(&mut ws);
    }
}

#[test]
fn presence_notices_come_in_order_with_the_rooms_messages() {
    let server = start(config());
    let addr = server.local_addr();
    let events = server.events();
    let mut p = ws(addr, "/ws/who?presence=1&name=pia");
    let snapshot: serde_json::Value =
        serde_json::from_str(next(&mut p).to_text().unwrap()).unwrap();
    assert_eq!(snapshot["event"], "snapshot");
    assert_eq!(snapshot["names"], serde_json::json!(["pia"]));
    let mut q = ws(addr, "/ws/who?name=quentin%20q");
    joined(&events, 2);
    let join: serde_json::Value = serde_json::from_str(next(&mut p).to_text().unwrap()).unwrap();
    assert_eq!(join["event"], "join");
    assert_eq!(join["name"], "quentin q");
    assert_eq!(join["clients"], 2);
    // /rooms/who lists both, by name.
    let room = json_body(&get(addr, "/rooms/who", ""));
    let mut names: Vec<&str> = room["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["pia", "quentin q"]);
    assert_eq!(room["clients"], 2);
    let rooms = json_body(&get(addr, "/rooms", ""));
    assert_eq!(rooms["rooms"][0]["name"], "who");
    text(&mut q, "hello");
    close(&mut q);
    assert_eq!(next(&mut p), Message::text("hello"));
    let leave: serde_json::Value = serde_json::from_str(next(&mut p).to_text().unwrap()).unwrap();
    assert_eq!(leave["event"], "leave");
    assert_eq!(leave["name"], "quentin q");
    assert_eq!(leave["clients"], 1);
    // A client that did not ask gets no notices: only messages.
    let mut plain = ws(addr, "/ws/who");
    text(&mut p, "to plain");
    assert_eq!(next(&mut plain), Message::text("to plain"));
}

#[test]
fn bad_join_parameters_are_400_and_rooms_follow_the_origin_rule() {
    let server = start(config());
    let addr = server.local_addr();
    let head = |q: &str| status(&handshake(addr, &upgrade_head(addr, &format!("/ws/x?{q}"))));
    assert_eq!(head("history=lots"), 400);
    assert_eq!(head(&format!("name={}", "n".repeat(65))), 400);
    assert_eq!(head("name=a%0Ab"), 400);
    assert_eq!(status(&get(addr, "/rooms/nope", "")), 404);
    assert_eq!(status(&get(addr, "/rooms/bad%20name", "")), 400);
    let foreign = get(addr, "/rooms", "Origin: http://evil.example\r\n");
    assert_eq!(status(&foreign), 403);
}
