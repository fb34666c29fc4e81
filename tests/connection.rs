//! The library's thread-safe client handle.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wshub::Ending;
use wshub::ws::{CloseCode, Message};
use wshub::{ConnectOptions, Connection, Error};

#[test]
fn send_receive_from_several_threads_and_close_once() {
    let server = start(config());
    let url = format!("ws://{}/echo", server.local_addr());
    let conn = Arc::new(Connection::connect(&url, &ConnectOptions::default()).unwrap());
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let conn = conn.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    conn.send(Message::text(format!("{t}:{i}"))).unwrap();
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let mut next = [0; 4];
    for _ in 0..200 {
        let Message::Text(t) = conn.recv_timeout(STEP).unwrap().expect("echo") else {
            panic!("text")
        };
        let (t, i) = t.split_once(':').unwrap();
        let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[t], "per-thread order");
        next[t] += 1;
    }
    // A graceful close goes out after everything queued, once.
    conn.send(Message::binary(vec![1, 2, 3])).unwrap();
    conn.close(CloseCode::Normal, "done");
    conn.close(CloseCode::Protocol, "ignored");
    assert!(matches!(
        conn.send(Message::text("late")),
        Err(Error::Closed)
    ));
    assert_eq!(conn.recv().unwrap(), Message::binary(vec![1, 2, 3]));
    match conn.recv().unwrap() {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Normal),
        other => panic!("expected the server's Close, got {other:?}"),
    }
    assert!(matches!(conn.recv(), Err(Error::Closed)));
    assert!(matches!(
        conn.wait(Duration::from_secs(2)),
        Some(Ending::PeerClosed(_))
    ));
}

#[test]
fn refused_and_forbidden_are_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Connection::connect(
        &format!("ws://127.0.0.1:{port}/"),
        &ConnectOptions::default(),
    )
    .err()
    .unwrap();
    assert!(matches!(err, Error::Io(_)), "{err}");
    let server = start(config());
    let options = ConnectOptions {
        origin: Some("http://elsewhere.example".into()),
        ..ConnectOptions::default()
    };
    let err = Connection::connect(&format!("ws://{}/ws", server.local_addr()), &options)
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "server answered 403 Forbidden");
}
