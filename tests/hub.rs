//! The chat hub: relay, rooms, ordering, large messages, slow clients,
//! events and host broadcasts.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::Duration;

use common::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use wshub::Event;

#[test]
fn relays_to_the_others_and_not_the_sender() {
    let server = start(config());
    let events = server.events();
    let addr = server.local_addr();
    let mut a = ws(addr, "/ws");
    let mut b = ws(addr, "/ws");
    let mut c = ws(addr, "/ws");
    joined(&events, 3);
    text(&mut a, "hello from a");
    assert_eq!(next(&mut b), Message::text("hello from a"));
    assert_eq!(next(&mut c), Message::text("hello from a"));
    b.send(Message::binary(vec![0u8, 159, 146, 150])).unwrap();
    assert_eq!(next(&mut a), Message::binary(vec![0u8, 159, 146, 150]));
    assert_eq!(next(&mut c), Message::binary(vec![0u8, 159, 146, 150]));
    // Nothing else is on its way to a: its own text was not echoed back.
    text(&mut c, "marker");
    assert_eq!(next(&mut a), Message::text("marker"));
    for mut s in [a, b, c] {
        close(&mut s);
    }
}

#[test]
fn echo_sender_sends_it_back_too() {
    let server = start(config().echo_sender(true));
    let events = server.events();
    let addr = server.local_addr();
    let mut a = ws(addr, "/ws/r");
    let mut b = ws(addr, "/ws/r");
    joined(&events, 2);
    text(&mut a, "both");
    assert_eq!(next(&mut a), Message::text("both"));
    assert_eq!(next(&mut b), Message::text("both"));
}

#[test]
fn rooms_are_isolated() {
    let server = start(config());
    let events = server.events();
    let addr = server.local_addr();
    let mut lobby = ws(addr, "/ws");
    let mut red1 = ws(addr, "/ws/red");
    let mut red2 = ws(addr, "/ws/red");
    let mut blue = ws(addr, "/ws/blue");
    joined(&events, 4);
    text(&mut red1, "red only");
    assert_eq!(next(&mut red2), Message::text("red only"));
    text(&mut blue, "blue only");
    text(&mut lobby, "lobby only");
    // Each of these would have received the others' messages first, had they leaked.
    text(&mut red2, "red again");
    assert_eq!(next(&mut red1), Message::text("red again"));
    text(&mut lobby, "to nobody");
    text(&mut red1, "for blue? no");
    assert_eq!(next(&mut red2), Message::text("for blue? no"));
    server
        .broadcast("blue", Message::text("host to blue"))
        .unwrap();
    assert_eq!(next(&mut blue), Message::text("host to blue"));
    server
        .broadcast("", Message::text("host to lobby"))
        .unwrap();
    assert_eq!(next(&mut lobby), Message::text("host to lobby"));
}

#[test]
fn five_mib_binary_is_relayed_byte_exact() {
    let server = start(config());
    let events = server.events();
    let addr = server.local_addr();
    let mut a = ws(addr, "/ws/files");
    let mut b = ws(addr, "/ws/files");
    let mut c = ws(addr, "/ws/files");
    joined(&events, 3);
    let payload: Vec<u8> = (0..5 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    a.send(Message::binary(payload.clone())).unwrap();
    for r in [&mut b, &mut c] {
        match next(r) {
            Message::Binary(got) => assert!(got[..] == payload[..], "payload differs"),
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

#[test]
fn hundred_clients_ten_messages_each_exactly_once_in_order() {
    const CLIENTS: usize = 100;
    const MESSAGES: usize = 10;
    // Each client is sent 990 messages while it is still sending its own; on
    // two busy cores its writer may not run for a while. This test is about
    // exactly-once and ordering, so the queue holds them all; eviction of a
    // client that falls behind is tested below.
    let server = start(config().send_queue(CLIENTS * MESSAGES));
    let events = server.events();
    let addr = server.local_addr();
    let mut clients: Vec<Ws> = (0..CLIENTS).map(|_| ws(addr, "/ws/crowd")).collect();
    joined(&events, CLIENTS);
    // Each client sends from its own thread, so the sends really interleave;
    // then each reads what it expects to receive.
    let handles: Vec<_> = clients
        .drain(..)
        .enumerate()
        .map(|(id, mut c)| {
            std::thread::spawn(move || {
                for seq in 0..MESSAGES {
                    text(&mut c, &format!("{id}:{seq}"));
                }
                let mut last: HashMap<usize, usize> = HashMap::new();
                for _ in 0..(CLIENTS - 1) * MESSAGES {
                    let Message::Text(t) = next(&mut c) else {
                        panic!("expected text")
                    };
                    let (from, seq) = t.split_once(':').unwrap();
                    let (from, seq): (usize, usize) = (from.parse().unwrap(), seq.parse().unwrap());
                    assert_ne!(from, id, "own message came back");
                    let expected = last.get(&from).map_or(0, |s| s + 1);
                    assert_eq!(
                        seq, expected,
                        "client {id}: from {from} out of order or duplicated"
                    );
                    last.insert(from, seq);
                }
                assert_eq!(last.len(), CLIENTS - 1);
                assert!(last.values().all(|&s| s == MESSAGES - 1));
                c
            })
        })
        .collect();
    for h in handles {
        let mut c = h.join().expect("client thread");
        close(&mut c);
    }
}

#[test]
fn a_client_that_never_reads_is_dropped_and_the_others_get_everything() {
    const N: usize = 300;
    let server = start(
        config()
            .send_queue(16)
            .write_timeout(Duration::from_millis(500)),
    );
    let events = server.events();
    let addr = server.local_addr();
    let mut sender = ws(addr, "/ws/slow");
    let mut reader = ws(addr, "/ws/slow");
    let stuck = ws(addr, "/ws/slow");
    // The stuck client is the third to join.
    let mut ids = Vec::new();
    while ids.len() < 3 {
        if let Event::Joined { client, .. } = events.recv_timeout(STEP).unwrap() {
            ids.push(client);
        }
    }
    let stuck_id = ids[2];
    let chunk = vec![7u8; 64 << 10];
    // The reader keeps up: the sender stays at most WINDOW messages ahead of
    // it, so only the stuck client's queue can fill.
    const WINDOW: usize = 8;
    let (ack, acks) = crossbeam_channel::unbounded();
    let reading = std::thread::spawn(move || {
        for i in 0..N {
            match next(&mut reader) {
                Message::Binary(b) => {
                    assert_eq!(b.len(), (64 << 10) + 4, "message {i}");
                    assert_eq!(
                        b[64 << 10..],
                        (i as u32).to_be_bytes(),
                        "message {i} out of order"
                    );
                }
                other => panic!("expected binary, got {other:?}"),
            }
            let _ = ack.send(());
        }
        reader
    });
    for i in 0..N as u32 {
        if i as usize >= WINDOW {
            acks.recv_timeout(STEP).expect("reader is receiving");
        }
        let mut m = chunk.clone();
        m.extend_from_slice(&i.to_be_bytes());
        sender.send(Message::binary(m)).unwrap();
    }
    let mut reader = reading.join().expect("the reading client got all messages");
    // The hub let the stuck client go.
    loop {
        match events.recv_timeout(STEP).expect("left event") {
            Event::Left { client, .. } if client == stuck_id => break,
            _ => {}
        }
    }
    // Its socket ends (after whatever the kernel had buffered).
    let mut raw = stuck.into_inner();
    let mut sink = vec![0u8; 1 << 20];
    loop {
        match raw.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    text(&mut sender, "still works");
    assert_eq!(next(&mut reader), Message::text("still works"));
}

#[test]
fn events_report_join_message_and_leave() {
    let server = start(config());
    let events = server.events();
    let addr = server.local_addr();
    let mut a = ws(addr, "/ws/ev");
    let Event::Joined { client, room, .. } = events.recv_timeout(STEP).unwrap() else {
        panic!("join first")
    };
    assert_eq!(&*room, "ev");
    text(&mut a, "hi");
    match events.recv_timeout(STEP).unwrap() {
        Event::Message {
            client: from,
            room,
            message,
        } => {
            assert_eq!(from, client);
            assert_eq!(&*room, "ev");
            assert_eq!(message, Message::text("hi"));
        }
        other => panic!("expected the message, got {other:?}"),
    }
    close(&mut a);
    match events.recv_timeout(STEP).unwrap() {
        Event::Left { client: who, room } => {
            assert_eq!(who, client);
            assert_eq!(&*room, "ev");
        }
        other => panic!("expected leave, got {other:?}"),
    }
}

#[test]
fn host_broadcast_checks_its_arguments() {
    let server = start(config());
    assert!(matches!(
        server.broadcast("no spaces", Message::text("x")),
        Err(wshub::Error::InvalidRoom(_))
    ));
    assert!(matches!(
        server.broadcast("ok", Message::Ping(Default::default())),
        Err(wshub::Error::NotData)
    ));
}

#[test]
fn messages_written_in_one_system_call_arrive_separately_in_order() {
    // Frames that arrive in one read (as from a load generator or a busy
    // client) must each arrive as their own message, in order, and none may
    // wait for a later read (the last one below comes alone).
    let server = start(config());
    let events = server.events();
    let addr = server.local_addr();
    let mut sender = raw_ws(addr, "/ws/batch");
    let mut receiver = ws(addr, "/ws/batch");
    joined(&events, 2);
    // 200: more than one hub burst (64), fewer than the send queue holds
    // (256), so that no scheduling makes the receiver a slow consumer.
    let mut bytes = Vec::new();
    for i in 0..200 {
        let opcode = if i % 3 == 0 {
            OpCode::Data(Data::Binary)
        } else {
            OpCode::Data(Data::Text)
        };
        raw_frame(opcode, format!("m{i}").as_bytes(), true, true)
            .format(&mut bytes)
            .unwrap();
    }
    sender.get_mut().write_all(&bytes).unwrap();
    for i in 0..200 {
        let want = if i % 3 == 0 {
            Message::binary(format!("m{i}").into_bytes())
        } else {
            Message::text(format!("m{i}"))
        };
        assert_eq!(next(&mut receiver), want, "message {i}");
    }
    let mut alone = Vec::new();
    raw_frame(OpCode::Data(Data::Text), b"alone", true, true)
        .format(&mut alone)
        .unwrap();
    sender.get_mut().write_all(&alone).unwrap();
    assert_eq!(next(&mut receiver), Message::text("alone"));
    close(&mut receiver);
}
