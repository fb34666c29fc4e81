//! The echo endpoint, close codes for bad input, and keepalive.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

#[test]
fn echo_keeps_type_and_content() {
    let server = start(config());
    let mut c = ws(server.local_addr(), "/echo");
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let cases = [
        Message::text("hello"),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::binary(vec![0, 1, 2, 255]),
        Message::text("ünïcødé ✓"),
        Message::binary(big),
    ];
    for m in cases.iter() {
        c.send(m.clone()).unwrap();
    }
    for m in cases.iter() {
        assert_eq!(&next(&mut c), m);
    }
    // A ping is answered with a pong carrying the same payload.
    c.send(Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    loop {
        match c.read().unwrap() {
            Message::Pong(p) => {
                assert_eq!(&p[..], b"are you there");
                break;
            }
            Message::Ping(_) => {}
            other => panic!("expected pong, got {other:?}"),
        }
    }
    c.close(None).unwrap();
    assert_eq!(
        close_code(&mut c),
        None,
        "an empty Close is answered with an empty Close"
    );
}

#[test]
fn fragmented_message_is_reassembled() {
    let server = start(config());
    let mut s = raw_ws(server.local_addr(), "/echo");
    s.send(raw_frame(OpCode::Data(Data::Text), b"hel", false, true))
        .unwrap();
    s.send(raw_frame(OpCode::Control(Control::Ping), b"", true, true))
        .unwrap();
    s.send(raw_frame(OpCode::Data(Data::Continue), b"lo", true, true))
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        let f = s.read(None).unwrap().expect("frame");
        got.push((f.header().opcode, f.payload().to_vec()));
    }
    assert_eq!(got[0].0, OpCode::Control(Control::Pong));
    assert_eq!(got[1], (OpCode::Data(Data::Text), b"hello".to_vec()));
}

#[test]
fn normal_close_is_answered_with_1000() {
    let server = start(config());
    let mut c = ws(server.local_addr(), "/ws");
    c.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    assert_eq!(close_code(&mut c), Some(CloseCode::Normal));
}

#[test]
fn invalid_utf8_text_closes_with_1007() {
    let server = start(config());
    for path in ["/echo", "/ws"] {
        let mut s = raw_ws(server.local_addr(), path);
        s.send(raw_frame(
            OpCode::Data(Data::Text),
            &[0xce, 0xba, 0xe1, 0xbd, 0xff],
            true,
            true,
        ))
        .unwrap();
        assert_eq!(raw_close_code(&mut s), Some(1007), "{path}");
    }
}

#[test]
fn oversized_message_closes_with_1009() {
    let server = start(config().max_message_bytes(1000));
    let addr = server.local_addr();
    // One big frame: refused from its header alone.
    let mut s = raw_ws(addr, "/echo");
    s.send(raw_frame(
        OpCode::Data(Data::Binary),
        &[1u8; 1001],
        true,
        true,
    ))
    .unwrap();
    assert_eq!(raw_close_code(&mut s), Some(1009));
    // Fragments that add up past the limit.
    let mut s = raw_ws(addr, "/ws");
    s.send(raw_frame(
        OpCode::Data(Data::Text),
        &[b'a'; 600],
        false,
        true,
    ))
    .unwrap();
    s.send(raw_frame(
        OpCode::Data(Data::Continue),
        &[b'a'; 600],
        true,
        true,
    ))
    .unwrap();
    assert_eq!(raw_close_code(&mut s), Some(1009));
    // Exactly at the limit is fine.
    let mut c = ws(addr, "/echo");
    c.send(Message::binary(vec![2u8; 1000])).unwrap();
    assert_eq!(next(&mut c), Message::binary(vec![2u8; 1000]));
}

#[test]
fn protocol_violations_close_with_1002() {
    let server = start(config());
    let addr = server.local_addr();
    let cases: Vec<(&str, tungstenite::protocol::frame::Frame)> = vec![
        (
            "unmasked frame",
            raw_frame(OpCode::Data(Data::Text), b"hi", true, false),
        ),
        (
            "reserved opcode",
            raw_frame(OpCode::Data(Data::Reserved(3)), b"", true, true),
        ),
        (
            "reserved control opcode",
            raw_frame(OpCode::Control(Control::Reserved(11)), b"", true, true),
        ),
        (
            "fragmented ping",
            raw_frame(OpCode::Control(Control::Ping), b"", false, true),
        ),
        (
            "ping over 125 bytes",
            raw_frame(OpCode::Control(Control::Ping), &[0u8; 126], true, true),
        ),
        (
            "continuation with nothing to continue",
            raw_frame(OpCode::Data(Data::Continue), b"x", true, true),
        ),
        (
            "close code 1005 on the wire",
            raw_frame(
                OpCode::Control(Control::Close),
                &1005u16.to_be_bytes(),
                true,
                true,
            ),
        ),
    ];
    for (what, frame) in cases {
        let mut s = raw_ws(addr, "/echo");
        s.send(frame).unwrap();
        assert_eq!(raw_close_code(&mut s), Some(1002), "{what}");
    }
    let mut s = raw_ws(addr, "/echo");
    let mut rsv = raw_frame(OpCode::Data(Data::Text), b"x", true, true);
    rsv.header_mut().rsv1 = true;
    s.send(rsv).unwrap();
    assert_eq!(
        raw_close_code(&mut s),
        Some(1002),
        "RSV1 without an extension"
    );
}

#[test]
fn keepalive_closes_a_silent_peer_and_keeps_a_live_one() {
    let server = start(
        config()
            .ping_interval(Duration::from_millis(200))
            .pong_timeout(Duration::from_millis(600)),
    );
    let addr = server.local_addr();
    // tungstenite's client answers pings by itself while we read.
    let mut live = ws(addr, "/echo");
    // The silent one never reads, so it never sends a pong.
    let mut silent = raw_ws(addr, "/echo");
    let began = Instant::now();
    let mut pings = 0;
    while began.elapsed() < Duration::from_millis(1500) {
        live.get_mut()
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        match live.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("the live client was dropped: {e}"),
        }
    }
    assert!(
        pings >= 3,
        "only {pings} pings in 1.5 s at a 200 ms interval"
    );
    live.get_mut().set_read_timeout(Some(STEP)).unwrap();
    text(&mut live, "still here");
    assert_eq!(next(&mut live), Message::text("still here"));
    // The silent one got pings, then a Close 1001 after the pong timeout.
    assert_eq!(raw_close_code(&mut silent), Some(1001));
}
