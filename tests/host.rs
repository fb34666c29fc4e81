//! What a host program can do to single clients through its `Handle`:
//! send to one, close one, close every connection of a token subject,
//! and see the rooms and their members (with ids and subjects).

mod common;

use std::time::Duration;

use common::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;
use wshub::Event;
use wshub::auth::{Secret, mint_token};

const SECRET: &[u8] = b"a secret for the host tests, 32+ bytes";

fn token(sub: &str) -> String {
    mint_token(&Secret::new(SECRET), sub, None, Duration::from_secs(600)).unwrap()
}

/// A first client of room `r` and its id, then `others` more clients.
fn room_with_first(server: &wshub::Server, others: usize) -> (Ws, wshub::ClientId, Vec<Ws>) {
    let events = server.events();
    let first = ws(server.local_addr(), "/ws/r");
    let id = joins(&events, 1)[0].0;
    (first, id, clients(server, "/ws/r", others))
}

/// The client ids of the next `n` joins, with their subjects.
fn joins(events: &wshub::Events, n: usize) -> Vec<(wshub::ClientId, Option<String>)> {
    let mut out = Vec::new();
    while out.len() < n {
        if let Event::Joined { client, sub, .. } = events.recv_timeout(STEP).expect("join") {
            out.push((client, sub.map(|s| s.to_string())));
        }
    }
    out
}

#[test]
fn send_to_reaches_one_client_in_order_with_its_room() {
    let server = start(config());
    let (mut ana, a, others) = room_with_first(&server, 1);
    let [mut ben] = others.try_into().expect("one");
    let handle = server.handle();

    handle.broadcast("r", Message::text("to all 1")).unwrap();
    assert!(handle.send_to(a, Message::text("to ana")).unwrap());
    handle.broadcast("r", Message::text("to all 2")).unwrap();
    assert_eq!(next(&mut ana), Message::text("to all 1"));
    assert_eq!(next(&mut ana), Message::text("to ana"));
    assert_eq!(next(&mut ana), Message::text("to all 2"));
    assert_eq!(next(&mut ben), Message::text("to all 1"));
    assert_eq!(next(&mut ben), Message::text("to all 2"));
    // An unknown client is reported, not an error.
    drop(ana);
    eventually("ana leaves", || server.handle().client_count() == 1);
    assert!(!handle.send_to(a, Message::text("late")).unwrap());
}

#[test]
fn disconnect_closes_one_client_with_the_hosts_code() {
    let server = start(config());
    let (mut ana, a, others) = room_with_first(&server, 2);
    let [mut ben, mut cy] = others.try_into().expect("two");

    let closed = server
        .handle()
        .disconnect(a, CloseCode::Policy, "be nice")
        .unwrap();
    assert!(closed);
    // Out of the room at once: not listed, not addressable again.
    let handle = server.handle();
    let listed = handle.members("r").unwrap();
    assert!(listed.iter().all(|m| m.client != Some(a)), "{listed:?}");
    assert!(!handle.send_to(a, Message::text("gone?")).unwrap());
    match next(&mut ana) {
        Message::Close(Some(f)) => {
            assert_eq!(f.code, CloseCode::Policy);
            assert_eq!(f.reason.as_str(), "be nice");
        }
        other => panic!("expected a Close, got {other:?}"),
    }
    ben.send(Message::text("we carry on")).unwrap();
    assert_eq!(next(&mut cy), Message::text("we carry on"));
}

#[test]
fn disconnect_user_closes_every_connection_of_the_subject_in_every_room() {
    let server = start(config().auth_secret(Secret::new(SECRET)));
    let addr = server.local_addr();
    let events = server.events();
    let mut bad1 = ws(addr, &format!("/ws/one?token={}", token("mallory")));
    let mut bad2 = ws(addr, &format!("/ws/two?token={}", token("mallory")));
    let mut good = ws(addr, &format!("/ws/one?token={}", token("alice")));
    let subs: Vec<Option<String>> = joins(&events, 3).into_iter().map(|j| j.1).collect();
    assert_eq!(
        subs.iter()
            .filter(|s| s.as_deref() == Some("mallory"))
            .count(),
        2
    );

    assert_eq!(server.handle().disconnect_user("mallory").unwrap(), 2);
    for bad in [&mut bad1, &mut bad2] {
        assert_eq!(close_code(bad), Some(CloseCode::Policy));
    }
    server
        .broadcast("one", Message::text("alice stays"))
        .unwrap();
    assert_eq!(next(&mut good), Message::text("alice stays"));
    assert_eq!(server.handle().disconnect_user("nobody").unwrap(), 0);
}

#[test]
fn rooms_and_members_name_each_client_with_its_id_and_subject() {
    let server = start(config().auth_secret(Secret::new(SECRET)));
    let addr = server.local_addr();
    let events = server.events();
    let _a = ws(addr, &format!("/ws/lab?name=ana&token={}", token("u-ana")));
    let _b = ws(addr, &format!("/ws/lab?name=ben&token={}", token("u-ben")));
    let _c = ws(addr, &format!("/ws/hall?token={}", token("u-cy")));
    let ids = joins(&events, 3);
    let handle = server.handle();

    let rooms = handle.rooms().unwrap();
    let names: Vec<(&str, usize)> = rooms.iter().map(|r| (r.name.as_str(), r.clients)).collect();
    assert_eq!(names, [("hall", 1), ("lab", 2)]);

    let members = handle.members("lab").unwrap();
    let shown: Vec<(&str, Option<&str>)> = members
        .iter()
        .map(|m| (m.name.as_str(), m.sub.as_deref()))
        .collect();
    assert_eq!(shown, [("ana", Some("u-ana")), ("ben", Some("u-ben"))]);
    for m in &members {
        let client = m.client.expect("a local member");
        assert!(ids.iter().any(|(id, _)| *id == client));
        assert_eq!(m.id, format!("{}:{}", handle.instance_id(), client.get()));
    }
    assert!(handle.members("empty").unwrap().is_empty());
}
