//! The memory budget (`max_buffered_bytes`): partial messages past it get
//! 1013, queues past it lose their largest, a stalled message gets 1008,
//! and an announced length costs nothing. The tests read this process's
//! RSS, so they run one at a time.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;
use wshub::Event;

const MIB: usize = 1 << 20;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's resident memory, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: usize = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// An upgraded socket to `path`, for writing frames by hand.
fn raw(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let (stream, rest) = raw_ws(addr, path).into_inner();
    assert!(rest.is_empty());
    stream
}

/// The header of a masked binary frame announcing `len` bytes (mask 0, so
/// the payload goes as it is).
fn binary_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x82, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// Reads frames until a Close; its code.
fn close_code_of(stream: &mut TcpStream) -> u16 {
    stream.set_read_timeout(Some(STEP)).unwrap();
    let mut socket = tungstenite::protocol::frame::FrameSocket::new(stream.try_clone().unwrap());
    raw_close_code(&mut socket).expect("a Close with a code")
}

/// One round trip a → b in `room`; how long it took.
fn round_trip(a: &mut Ws, b: &mut Ws, i: usize) -> Duration {
    let started = Instant::now();
    text(a, &format!("still here {i}"));
    assert_eq!(next(b), Message::text(format!("still here {i}")));
    started.elapsed()
}

#[test]
fn partial_messages_past_the_budget_get_1013_and_others_keep_chatting() {
    let _serial = serial();
    const BUDGET: usize = 32 * MIB;
    const BOMBS: usize = 20;
    const HELD: usize = 7 * MIB;
    // The refused bombs' writes are drained while they go on.
    let server = start(
        config()
            .max_buffered_bytes(BUDGET)
            .close_timeout(Duration::from_secs(5)),
    );
    let handle = server.handle();
    let addr = server.local_addr();
    let events = server.events();
    let mut a = ws(addr, "/ws/calm");
    let mut b = ws(addr, "/ws/calm");
    joined(&events, 2);
    let before = rss();
    let chunk = vec![0x5a_u8; 64 << 10];
    let mut bombs = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..BOMBS {
        let mut bomb = raw(addr, "/ws/bomb");
        // 7 MiB of an announced 8 MiB, then held open.
        bomb.write_all(&binary_header(8 * MIB as u64)).unwrap();
        let mut sent = 0;
        while sent < HELD {
            if bomb.write_all(&chunk).is_err() {
                break;
            }
            sent += chunk.len();
        }
        // The first ones fit and are counted whole; every later one pushes
        // the total over and is refused.
        let fit = BUDGET / HELD;
        if i < fit {
            eventually("the bomb counted", || {
                handle.buffered_bytes() >= (i + 1) * HELD
            });
        } else {
            eventually("the bomb refused", || {
                handle.refused_for_memory() == (i + 1 - fit) as u64
            });
        }
        slowest = slowest.max(round_trip(&mut a, &mut b, i));
        bombs.push(bomb);
    }
    let fit = BUDGET / HELD;
    assert_eq!(handle.refused_for_memory(), (BOMBS - fit) as u64);
    assert!(
        handle.buffered_bytes() <= BUDGET,
        "{}",
        handle.buffered_bytes()
    );
    for (i, bomb) in bombs.iter_mut().enumerate().skip(fit) {
        assert_eq!(close_code_of(bomb), 1013, "bomb {i}");
    }
    let grown = rss().saturating_sub(before);
    eprintln!("RSS grew by {} MiB", grown / MIB);
    // Without the budget this would be 20 × 7 MiB = 140 MiB.
    assert!(grown < BUDGET + 32 * MIB, "RSS grew by {} MiB", grown / MIB);
    // The chat in another room never waited on the bombs.
    assert!(
        slowest < Duration::from_secs(1),
        "a round trip took {slowest:?}"
    );
    close(&mut a);
    close(&mut b);
}

#[test]
fn slow_readers_are_evicted_to_keep_queues_under_the_budget() {
    let _serial = serial();
    const BUDGET: usize = 16 * MIB;
    const N: usize = 300;
    const SIZE: usize = 64 << 10;
    // Only the budget bounds the queues here.
    let server = start(
        config()
            .max_buffered_bytes(BUDGET)
            .send_queue(1 << 20)
            .send_queue_bytes(1 << 30)
            .write_timeout(Duration::from_secs(2)),
    );
    let handle = server.handle();
    let addr = server.local_addr();
    let events = server.events();
    let mut rooms = Vec::new();
    for r in 0..3 {
        let path = format!("/ws/slow{r}");
        let sender = ws(addr, &path);
        let fast = ws(addr, &path);
        let slow: Vec<Ws> = (0..2).map(|_| ws(addr, &path)).collect();
        rooms.push((sender, fast, slow));
    }
    joined(&events, 12);
    let body = |r: usize, i: usize| -> Vec<u8> {
        let mut m = vec![r as u8; SIZE];
        m[..4].copy_from_slice(&(i as u32).to_be_bytes());
        m
    };
    let mut threads = Vec::new();
    let mut slow_readers = Vec::new();
    for (r, (mut sender, mut fast, slow)) in rooms.into_iter().enumerate() {
        slow_readers.extend(slow);
        // The sender stays at most WINDOW messages ahead of its fast
        // reader (an application's acknowledgements, say): however busy
        // the machine, the fast reader is never the one furthest behind.
        const WINDOW: usize = 16;
        let (credit, credits) = std::sync::mpsc::channel();
        for _ in 0..WINDOW {
            credit.send(()).unwrap();
        }
        threads.push(std::thread::spawn(move || {
            for i in 0..N {
                assert_eq!(
                    next(&mut fast),
                    Message::binary(body(r, i)),
                    "room {r} message {i}"
                );
                let _ = credit.send(());
            }
            fast
        }));
        threads.push(std::thread::spawn(move || {
            for i in 0..N {
                credits.recv_timeout(STEP).expect("the fast reader reads");
                sender.send(Message::binary(body(r, i))).unwrap();
            }
            sender
        }));
    }
    // While they run, what the server holds stays near the budget: frames
    // in writes already under way (at most a batch per slow writer) cannot
    // be taken back, and a burst per room is charged before the hub sees it.
    let mut peak = 0;
    while threads.iter().any(|t| !t.is_finished()) {
        peak = peak.max(handle.buffered_bytes());
        // A sampling period, not a synchronisation.
        std::thread::sleep(Duration::from_millis(1));
    }
    for t in threads {
        t.join()
            .expect("every fast reader got every message, in order");
    }
    assert!(handle.evicted_for_memory() >= 1, "nobody was evicted");
    assert!(peak <= BUDGET + 12 * MIB, "peak {} MiB", peak / MIB);
    eventually("the evicted writers let go", || {
        handle.buffered_bytes() <= BUDGET
    });
    // An evicted slow reader leaves its room (its writer sent the Close,
    // or gave up on its blocked write).
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Event::Left { .. } = events.recv_timeout(left).expect("an evicted reader leaves") {
            break;
        }
    }
    drop(slow_readers);
}

#[test]
fn a_message_not_finished_in_time_gets_1008() {
    let _serial = serial();
    let server = start(config().message_timeout(Duration::from_millis(300)));
    let mut stalled = raw(server.local_addr(), "/ws/slowloris");
    let mut frame = binary_header(1000);
    frame.extend_from_slice(&[1u8; 10]);
    stalled.write_all(&frame).unwrap();
    let started = Instant::now();
    assert_eq!(close_code_of(&mut stalled), 1008);
    // Within twice the timeout (the socket's timeout comes down by halves).
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn an_announced_length_costs_no_memory() {
    let _serial = serial();
    const CLIENTS: usize = 100;
    let server = start(config());
    let handle = server.handle();
    let addr = server.local_addr();
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| raw(addr, "/ws/announce")).collect();
    let events = server.events();
    let _ = events.try_iter().count();
    let before = rss();
    // 100 × 16 MiB announced; one byte of each sent, so that the server's
    // count says when every header has been read.
    for c in &mut clients {
        let mut frame = binary_header(16 * MIB as u64);
        frame.push(7);
        c.write_all(&frame).unwrap();
    }
    eventually("every header read", || handle.buffered_bytes() == CLIENTS);
    let grown = rss().saturating_sub(before);
    assert!(grown < 8 * MIB, "RSS grew by {} KiB", grown / 1024);
}
