//! Hundreds of idle and half-open connections neither stop new clients from
//! being served nor outlive the head deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

#[test]
fn idle_and_half_open_connections_are_closed_by_the_deadline() {
    const EACH: usize = 300;
    let deadline = Duration::from_millis(1500);
    let server = start(config().head_timeout(deadline));
    let addr = server.local_addr();
    let began = Instant::now();
    let mut silent = Vec::new();
    let mut half = Vec::new();
    for _ in 0..EACH {
        silent.push(TcpStream::connect(addr).unwrap());
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: web")
            .unwrap();
        half.push(s);
    }
    // A new visitor is served at once, page and WebSocket alike.
    let served = Instant::now();
    assert_eq!(status(&get(addr, "/", "")), 200);
    let mut c = ws(addr, "/echo");
    text(&mut c, "through the crowd");
    assert_eq!(next(&mut c), Message::text("through the crowd"));
    assert!(
        served.elapsed() < Duration::from_secs(1),
        "took {:?}",
        served.elapsed()
    );
    // Every idle socket is closed by the server after the deadline (silent
    // ones without a word, half-open ones with 408), and none much later.
    for s in silent.iter_mut() {
        s.set_read_timeout(Some(STEP)).unwrap();
        let mut buf = Vec::new();
        assert_eq!(s.read_to_end(&mut buf).unwrap_or(0), 0);
    }
    for s in half.iter_mut() {
        s.set_read_timeout(Some(STEP)).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert_eq!(status(&out), 408, "{out}");
    }
    let took = began.elapsed();
    assert!(
        took >= deadline && took < deadline * 4,
        "closed after {took:?}"
    );
}
