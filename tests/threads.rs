//! After hundreds of connections that misbehave in every way, the server's
//! threads and file descriptors return to their baseline, and a
//! well-behaved client chatting throughout loses nothing.
//!
//! One test in its own binary: it counts the threads of this whole process.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::{Data, OpCode};

fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line[8..].trim().parse().unwrap()
}

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn misbehaving_connections_leave_no_threads_or_fds_behind() {
    const PER_KIND: usize = 400;
    let server = start(
        config()
            .head_timeout(Duration::from_millis(500))
            .close_timeout(Duration::from_millis(300)),
    );
    let addr = server.local_addr();
    let (base_threads, base_fds) = (threads(), fds());

    // Two well-behaved clients chat through all of it.
    let mut alice = ws(addr, "/ws/steady");
    let mut bob = ws(addr, "/ws/steady");
    let events = server.events();
    let chat = std::thread::spawn(move || {
        for i in 0..200 {
            text(&mut alice, &format!("msg {i}"));
            if i % 20 == 0 {
                std::thread::yield_now();
            }
        }
        alice
    });

    let kinds: Vec<Box<dyn Fn() + Send + Sync>> = vec![
        // Disconnects mid-head.
        Box::new(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let _ = s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgr");
        }),
        // Garbage instead of HTTP.
        Box::new(move || {
            let _ = http(addr, b"\x00\x01\x02garbage\r\n\r\n");
        }),
        // Garbage after the handshake.
        Box::new(move || {
            let (mut s, _) = raw_ws(addr, "/ws/steady").into_inner();
            let _ = s.write_all(&[0xff; 64]);
        }),
        // A truncated frame, then gone.
        Box::new(move || {
            let mut s = raw_ws(addr, "/echo");
            let mut bytes = Vec::new();
            raw_frame(OpCode::Data(Data::Binary), &[9u8; 500], true, true)
                .format(&mut bytes)
                .unwrap();
            let _ = s.get_mut().write_all(&bytes[..100]);
        }),
        // Closes the socket without a Close frame.
        Box::new(move || {
            let mut c = ws(addr, "/ws/steady");
            text(&mut c, "drive-by");
        }),
        // A proper close.
        Box::new(move || {
            let mut c = ws(addr, "/echo");
            text(&mut c, "ping");
            assert_eq!(next(&mut c), Message::text("ping"));
            close(&mut c);
        }),
        // Silent until the head deadline.
        Box::new(move || {
            let _s = TcpStream::connect(addr).unwrap();
        }),
    ];
    let kinds = std::sync::Arc::new(kinds);
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let kinds = kinds.clone();
            std::thread::spawn(move || {
                for i in 0..PER_KIND * kinds.len() / 4 {
                    kinds[(i + w) % kinds.len()]();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker");
    }
    let mut alice = chat.join().unwrap();
    // Bob got every one of Alice's messages, in order, among the drive-bys.
    let mut expected = 0;
    while expected < 200 {
        if let Message::Text(t) = next(&mut bob)
            && t.starts_with("msg ")
        {
            assert_eq!(t.as_str(), format!("msg {expected}"));
            expected += 1;
        }
    }
    close(&mut alice);
    close(&mut bob);
    // Our own sockets count in this process's fds too.
    drop((alice, bob, events));

    eventually("threads back to baseline", || threads() <= base_threads);
    eventually("fds back to baseline", || fds() <= base_fds);
    assert_eq!(server.handle().client_count(), 0);
}
