//! Shutdown: every client gets 1001, every thread is joined, quickly, even
//! with peers that never answer.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use wshub::{Event, Server};

#[test]
fn shutdown_closes_every_client_with_1001() {
    let server = start(config());
    let events = server.events();
    let addr = server.local_addr();
    let chat = ws(addr, "/ws/a");
    let mut echo = ws(addr, "/echo");
    let lobby = ws(addr, "/ws");
    assert!(matches!(
        events.recv_timeout(STEP).unwrap(),
        Event::Joined { .. }
    ));
    assert!(matches!(
        events.recv_timeout(STEP).unwrap(),
        Event::Joined { .. }
    ));
    // The echo client is registered once its first echo comes back.
    text(&mut echo, "up");
    assert_eq!(next(&mut echo), tungstenite::Message::text("up"));
    // Clients read in their own threads, as a real client would, so that
    // they answer the Close while shutdown waits.
    let readers: Vec<_> = [chat, echo, lobby]
        .into_iter()
        .map(|mut c| std::thread::spawn(move || close_code(&mut c)))
        .collect();
    let began = Instant::now();
    server.shutdown();
    let took = began.elapsed();
    for r in readers {
        assert_eq!(r.join().unwrap(), Some(CloseCode::Away));
    }
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
}

#[test]
fn shutdown_is_bounded_with_peers_that_never_answer() {
    let server = start(config());
    let addr = server.local_addr();
    // A WebSocket peer that never reads, one idle HTTP connection, one mid-head.
    let _mute = raw_ws(addr, "/ws");
    let _idle = TcpStream::connect(addr).unwrap();
    let mut partial = TcpStream::connect(addr).unwrap();
    partial.write_all(b"GET / HTTP/1.1\r\n").unwrap();
    // Ensure all three are accepted before shutting down.
    assert_eq!(status(&get(addr, "/", "")), 200);
    let began = Instant::now();
    server.shutdown();
    let took = began.elapsed();
    assert!(took < Duration::from_secs(2), "shutdown took {took:?}");
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after shutdown"
    );
}

#[test]
fn handle_shutdown_ends_run() {
    let server = start(config());
    let handle = server.handle();
    let addr = server.local_addr();
    let runner = std::thread::spawn(move || server.run());
    let mut c = ws(addr, "/ws");
    handle.shutdown();
    handle.shutdown(); // idempotent
    assert_eq!(close_code(&mut c), Some(CloseCode::Away));
    runner.join().expect("run returned");
}

#[test]
fn dropping_the_server_shuts_it_down() {
    let server = Server::start(config()).unwrap();
    let addr = server.local_addr();
    let mut c = ws(addr, "/echo");
    let reader = std::thread::spawn(move || close_code(&mut c));
    drop(server);
    assert_eq!(reader.join().unwrap(), Some(CloseCode::Away));
}
