//! permessage-deflate (RFC 7692) with `--compression`: negotiation, what
//! compressing and plain receivers get, one compression per broadcast,
//! decompression bombs, and the frames the extension forbids. Compressed
//! frames are built and read here with flate2 over raw sockets, so every
//! bit on the wire is checked, and sent by the project's own client side
//! (`Connection` with `compression`).

mod common;

use std::net::TcpStream;

use common::deflate::{client_frame, deflate, next_data, raw_offering};
use common::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tungstenite::Message;
use tungstenite::protocol::frame::FrameSocket;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use wshub::{Config, ConnectOptions, Connection};

fn compressing() -> Config {
    config().compression(true)
}

fn extension_of(head: &str) -> Option<String> {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("sec-websocket-extensions:")
                .map(str::to_string)
        })
        .map(|v| v.trim().to_string())
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .unwrap();
    out
}

/// The close code the server sends next.
fn close_of(socket: &mut FrameSocket<TcpStream>) -> u16 {
    loop {
        let frame = socket.read(None).expect("a frame").expect("a Close first");
        if frame.header().opcode == OpCode::Control(Control::Close) {
            let p = frame.payload();
            return u16::from_be_bytes([p[0], p[1]]);
        }
    }
}

fn chat_json(i: usize) -> String {
    serde_json::json!({
        "type": "chat",
        "id": format!("m{i}"),
        "name": "alice",
        "body": format!("message {i}: the deploy of build 4711 is done, dashboards are green, \
                         nothing more to do today; see the runbook for the rollback steps, \
                         and the release notes for what changed in the API since last week; \
                         questions go to the ops channel, as always"),
        "at": "2026-12-01T09:30:00.000Z",
    })
    .to_string()
}

#[test]
fn the_server_answers_no_context_takeover_and_declines_what_it_cannot_honour() {
    let server = start(compressing());
    let addr = server.local_addr();
    let (head, _) = raw_offering(addr, "/ws/n", "permessage-deflate; client_max_window_bits");
    assert_eq!(
        extension_of(&head).as_deref(),
        Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
    );
    // An offer with an unknown parameter, then a valid one: the second wins.
    let (head, _) = raw_offering(
        addr,
        "/ws/n",
        "permessage-deflate; x_unknown, permessage-deflate; server_max_window_bits=10",
    );
    let answer = extension_of(&head).expect("an answer");
    assert!(answer.contains("server_max_window_bits=10"), "{answer}");
    // Nothing acceptable: no extension, the connection goes on plain.
    let (head, mut plain) = raw_offering(
        addr,
        "/ws/n",
        "permessage-deflate; server_max_window_bits=99",
    );
    assert_eq!(extension_of(&head), None, "{head}");
    plain
        .send(client_frame(
            OpCode::Data(Data::Text),
            false,
            true,
            b"plain".to_vec(),
        ))
        .unwrap();
    // Without --compression nothing is negotiated.
    let off = start(config());
    let (head, _) = raw_offering(off.local_addr(), "/ws/n", "permessage-deflate");
    assert_eq!(extension_of(&head), None, "{head}");
}

#[test]
fn a_compressed_message_arrives_unchanged_plain_and_compressed_where_agreed() {
    let server = start(compressing());
    let addr = server.local_addr();
    let events = server.events();
    let sender = Connection::connect(
        &format!("ws://{addr}/ws/mix"),
        &ConnectOptions {
            compression: true,
            ..ConnectOptions::default()
        },
    )
    .expect("the project's client, compressing");
    let mut plain = ws(addr, "/ws/mix");
    let (_, mut deflating) = raw_offering(addr, "/ws/mix", "permessage-deflate");
    joined(&events, 3);
    let text = chat_json(1);
    assert!(text.len() >= wshub::defaults::COMPRESSION_MIN_BYTES);
    sender.send(Message::text(text.as_str())).unwrap();
    // The plain receiver gets the text unchanged.
    assert_eq!(next(&mut plain), Message::text(text.as_str()));
    // The compressing one gets it deflated (RSV1), and it inflates to the text.
    let frame = next_data(&mut deflating);
    assert!(frame.header().rsv1, "not compressed: {frame:?}");
    assert!(frame.payload().len() < text.len());
    assert_eq!(inflate(frame.payload()), text.as_bytes());
    // It really came compressed: the server inflated one message.
    let m = scrape(addr);
    assert_eq!(m.get("wshub_deflate_messages_total{direction=in}"), 1.0);
    assert_eq!(
        m.get("wshub_deflate_bytes_total{direction=in,stage=uncompressed}"),
        text.len() as f64
    );
    // Short messages go uncompressed (below --compression-min-bytes).
    sender.send(Message::text("short")).unwrap();
    let frame = next_data(&mut deflating);
    assert!(!frame.header().rsv1);
    assert_eq!(frame.payload(), b"short");
}

#[test]
fn a_fragmented_compressed_message_from_a_raw_client_is_inflated() {
    let server = start(compressing());
    let addr = server.local_addr();
    let events = server.events();
    let (_, mut sender) = raw_offering(addr, "/ws/frag", "permessage-deflate");
    let mut plain = ws(addr, "/ws/frag");
    joined(&events, 2);
    let text = (0..20).map(chat_json).collect::<Vec<_>>().join("\n");
    let deflated = deflate(text.as_bytes());
    let (a, b) = deflated.split_at(deflated.len() / 3);
    sender
        .send(client_frame(
            OpCode::Data(Data::Text),
            true,
            false,
            a.to_vec(),
        ))
        .unwrap();
    sender
        .send(client_frame(
            OpCode::Control(Control::Ping),
            false,
            true,
            b"mid".to_vec(),
        ))
        .unwrap();
    sender
        .send(client_frame(
            OpCode::Data(Data::Continue),
            false,
            true,
            b.to_vec(),
        ))
        .unwrap();
    assert_eq!(next(&mut plain), Message::text(text.as_str()));
}

#[test]
fn a_broadcast_to_100_compressing_receivers_is_deflated_once() {
    let server = start(compressing().max_clients(200));
    let addr = server.local_addr();
    let events = server.events();
    let mut receivers: Vec<FrameSocket<TcpStream>> = (0..100)
        .map(|_| raw_offering(addr, "/ws/big", "permessage-deflate").1)
        .collect();
    joined(&events, 100);
    let text = chat_json(7);
    server
        .broadcast("big", Message::text(text.as_str()))
        .unwrap();
    let mut first: Option<Vec<u8>> = None;
    for r in &mut receivers {
        let frame = next_data(r);
        assert!(frame.header().rsv1);
        let bytes = frame.payload().to_vec();
        match &first {
            None => first = Some(bytes),
            Some(f) => assert_eq!(f, &bytes, "receivers got different bytes"),
        }
    }
    assert_eq!(inflate(&first.unwrap()), text.as_bytes());
    let m = scrape(addr);
    assert_eq!(m.get("wshub_deflate_messages_total{direction=out}"), 1.0);
    assert_eq!(m.get("wshub_deflate_negotiated_total"), 100.0);
}

#[test]
fn corrupt_data_closes_with_1007_for_text_and_1002_for_binary() {
    let server = start(compressing());
    let addr = server.local_addr();
    for (opcode, code) in [(Data::Text, 1007), (Data::Binary, 1002)] {
        let (_, mut s) = raw_offering(addr, "/echo", "permessage-deflate");
        s.send(client_frame(
            OpCode::Data(opcode),
            true,
            true,
            vec![0xff; 32],
        ))
        .unwrap();
        assert_eq!(close_of(&mut s), code, "{opcode:?}");
    }
}

#[test]
fn rsv1_on_a_control_frame_a_continuation_or_without_the_extension_is_1002() {
    let server = start(compressing());
    let addr = server.local_addr();
    let (_, mut s) = raw_offering(addr, "/echo", "permessage-deflate");
    s.send(client_frame(
        OpCode::Control(Control::Ping),
        true,
        true,
        vec![],
    ))
    .unwrap();
    assert_eq!(close_of(&mut s), 1002);
    let (_, mut s) = raw_offering(addr, "/echo", "permessage-deflate");
    s.send(client_frame(
        OpCode::Data(Data::Text),
        false,
        false,
        b"a".to_vec(),
    ))
    .unwrap();
    s.send(client_frame(
        OpCode::Data(Data::Continue),
        true,
        true,
        deflate(b"b"),
    ))
    .unwrap();
    assert_eq!(close_of(&mut s), 1002);
    let mut s = raw_ws(addr, "/echo");
    s.send(client_frame(
        OpCode::Data(Data::Text),
        true,
        true,
        deflate(b"not agreed"),
    ))
    .unwrap();
    assert_eq!(close_of(&mut s), 1002);
}

/// The server process's resident set, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn a_deflate_bomb_gets_1009_without_the_server_holding_what_it_inflates_to() {
    const INFLATED: usize = 64 << 20;
    let served = serve_process(&["--compression", "--max-message-bytes", "1MiB"], &[]);
    let pid = served.process.id();
    let bomb = deflate(&vec![0u8; INFLATED]);
    assert!(bomb.len() < 128 << 10, "a bomb: {} bytes", bomb.len());
    let before = rss_of(pid);
    let (_, mut s) = raw_offering(served.addr, "/echo", "permessage-deflate");
    s.send(client_frame(OpCode::Data(Data::Binary), true, true, bomb))
        .unwrap();
    assert_eq!(close_of(&mut s), 1009);
    let after = rss_of(pid);
    assert!(
        after < before + (32 << 20),
        "RSS grew from {before} to {after} bytes for a {INFLATED}-byte bomb"
    );
    // The server goes on serving.
    let mut echo = ws(served.addr, "/echo");
    text(&mut echo, "still here");
    assert_eq!(next(&mut echo), Message::text("still here"));
}

#[test]
fn with_client_takeover_allowed_the_servers_window_follows_the_clients() {
    let server = start(compressing().compression_client_takeover(true));
    let addr = server.local_addr();
    let events = server.events();
    let (head, mut sender) = raw_offering(addr, "/ws/ctx", "permessage-deflate");
    assert_eq!(
        extension_of(&head).as_deref(),
        Some("permessage-deflate; server_no_context_takeover")
    );
    let mut plain = ws(addr, "/ws/ctx");
    joined(&events, 2);
    // One compressor for both messages, never reset: the second refers
    // back into the first, as a browser's would.
    let mut c = Compress::new(Compression::default(), false);
    for i in 0..2 {
        let text = chat_json(i);
        let mut out = Vec::with_capacity(4096);
        let before = c.total_in();
        c.compress_vec(text.as_bytes(), &mut out, FlushCompress::Sync)
            .unwrap();
        assert_eq!((c.total_in() - before) as usize, text.len());
        out.truncate(out.len() - 4);
        sender
            .send(client_frame(OpCode::Data(Data::Text), true, true, out))
            .unwrap();
        assert_eq!(next(&mut plain), Message::text(text.as_str()));
    }
}
