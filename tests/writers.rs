//! A chat client costs one thread (its reader) until it needs a writer:
//! idle clients get no writer, are kept alive by the server's one
//! keepalive thread, and are closed when they stop answering; a client
//! that falls behind gets its writer and every message, in order. One
//! binary of its own, its tests one at a time: they count this process's
//! threads by name.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The names of this process's threads.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| {
            let comm = task.ok()?.path().join("comm");
            Some(std::fs::read_to_string(comm).ok()?.trim().to_string())
        })
        .collect()
}

/// The id of this process's thread called `name`, if there is one.
fn tid_of(name: &str) -> Option<String> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|task| {
        let path = task.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        (comm.trim() == name).then(|| path.file_name()?.to_str().map(String::from))?
    })
}

fn writers() -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with("wshub-") && n.ends_with("-write"))
        .count()
}

/// The server's threads (the test harness starts and ends threads of its
/// own for the tests waiting their turn).
fn threads() -> usize {
    thread_names()
        .iter()
        .filter(|n| n.starts_with("wshub-"))
        .count()
}

#[test]
fn idle_clients_cost_one_thread_each_and_one_that_falls_behind_gets_a_writer() {
    const N: usize = 200;
    let _serial = serial();
    let server = start(config());
    let base = settled_threads();
    let mut idle = clients(&server, "/ws/idle", N);
    // Each session is running (a client is registered with the hub just
    // before its 101 goes out, and a delivery in between is queued, for a
    // writer): its reader answers a ping.
    for c in idle.iter_mut() {
        answers_a_ping(c);
    }
    // Every client is answered and its upgrade thread has become its
    // reader: N threads, no writer.
    let talker = &mut idle[0];
    talker.send(Message::text("hello all")).unwrap();
    for c in idle.iter_mut().skip(1) {
        assert_eq!(next(c), Message::text("hello all"));
    }
    let grown = threads() - base;
    assert!(grown <= N + 2, "{grown} threads for {N} idle clients");
    assert_eq!(writers(), 0, "idle clients have no writer thread");

    // One stops reading while 4 MiB go to the room: its socket stops
    // taking writes, so it gets a writer (and only it).
    let mut slow = ws(server.local_addr(), "/ws/idle");
    eventually("the slow client joins", || {
        server.handle().client_count() == N + 1
    });
    let big = "x".repeat(256 << 10);
    let handle = server.handle();
    for i in 0..16 {
        handle
            .broadcast("idle", Message::text(format!("{i} {big}")))
            .unwrap();
        // The others keep up.
        for c in idle.iter_mut() {
            assert_eq!(next(c), Message::text(format!("{i} {big}")));
        }
    }
    eventually("the slow client has its writer", || writers() >= 1);
    // Then it reads everything, in order.
    for i in 0..16 {
        assert_eq!(next(&mut slow), Message::text(format!("{i} {big}")));
    }
    for mut c in idle {
        close(&mut c);
    }
    close(&mut slow);
    eventually("every client gone", || handle.client_count() == 0);
    back_to(base);
}

#[test]
fn clients_that_join_with_the_history_and_presence_get_them_without_a_writer() {
    const N: usize = 20;
    let _serial = serial();
    let server = start(config());
    let base = settled_threads();
    let addr = server.local_addr();
    let (mut talker, mut listener) = (ws(addr, "/ws/late"), ws(addr, "/ws/late"));
    for i in 0..N {
        text(&mut talker, &format!("m{i}"));
    }
    for i in 0..N {
        assert_eq!(next(&mut listener), Message::text(format!("m{i}")));
    }
    // As the chat page joins: the whole history and who is there, queued
    // before the 101 goes out and written by the client's own thread.
    let path = "/ws/late?history=all&presence=1&name=late";
    let mut late: Vec<Ws> = (0..5).map(|_| ws(addr, path)).collect();
    for c in late.iter_mut() {
        let mut got = Vec::new();
        while got.len() < N {
            match next(c) {
                Message::Text(t) if t.contains("\"wshub\":\"presence\"") => {}
                other => got.push(other),
            }
        }
        let want: Vec<Message> = (0..N).map(|i| Message::text(format!("m{i}"))).collect();
        assert_eq!(got, want, "the history, in order");
    }
    assert_eq!(writers(), 0, "the history went out without a writer");
    // And they chat on, still without one.
    text(&mut talker, "live");
    for c in late.iter_mut() {
        let live = loop {
            match next(c) {
                Message::Text(t) if t.contains("\"wshub\":\"presence\"") => {}
                other => break other,
            }
        };
        assert_eq!(live, Message::text("live"));
    }
    assert_eq!(writers(), 0);
    for mut c in late.into_iter().chain([talker, listener]) {
        close(&mut c);
    }
    eventually("every client gone", || server.handle().client_count() == 0);
    back_to(base);
}

/// Waits for the server's answer to a ping (written by the session's
/// reader, so the session is running).
fn answers_a_ping(ws: &mut Ws) {
    ws.send(Message::Ping(b"up?".to_vec().into())).unwrap();
    loop {
        match ws.read().expect("the answer to a ping") {
            Message::Pong(p) if p.as_ref() == b"up?" => return,
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The server's threads, once every one it has started carries its own
/// name (a new thread has its creator's until it sets its own).
fn settled_threads() -> usize {
    let me = std::fs::read_to_string("/proc/thread-self/comm").expect("own name");
    let me = me.trim().to_string();
    eventually("the server's threads named", || {
        thread_names().iter().filter(|n| **n == me).count() == 1
    });
    threads()
}

/// Waits (bounded) until the server has no more than `base` threads;
/// names the ones left over if it does not.
fn back_to(base: usize) {
    let deadline = Instant::now() + STEP;
    while threads() > base {
        assert!(
            Instant::now() < deadline,
            "threads not back to {base}: {:?}",
            thread_names()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn writerless_clients_are_pinged_and_one_that_stops_answering_is_closed() {
    let _serial = serial();
    let server = start(
        config()
            .ping_interval(Duration::from_millis(100))
            .pong_timeout(Duration::from_millis(400)),
    );
    let addr = server.local_addr();
    let mut lively = ws(addr, "/ws/keep");
    // Frames read raw: this one never answers a ping.
    let mut silent = raw_ws(addr, "/ws/keep");
    eventually("both join", || server.handle().client_count() == 2);

    // The lively one reads (tungstenite answers each ping with a pong)
    // for ten ping intervals, and is pinged all along, with no writer.
    let began = Instant::now();
    let mut pings = 0;
    while began.elapsed() < Duration::from_secs(1) {
        match lively.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => panic!("the lively client was dropped: {e}"),
        }
    }
    assert!(pings >= 5, "{pings} pings in a second at 100 ms");
    assert_eq!(writers(), 0, "pinged without a writer thread");

    // The silent one never answered: closed with 1001 "ping timeout".
    assert_eq!(raw_close_code(&mut silent), Some(1001));
    // And the lively one is still served.
    server
        .handle()
        .broadcast("keep", Message::text("still here"))
        .unwrap();
    loop {
        match lively.read().expect("still connected") {
            Message::Ping(_) => {}
            m => break assert_eq!(m, Message::text("still here")),
        }
    }
}

#[test]
fn a_thread_from_the_cache_carries_nothing_of_its_previous_client() {
    use wshub::Event;
    use wshub::auth::{Secret, mint_token};
    const SECRET: &[u8] = b"a secret for the thread cache test, 32+";
    let _serial = serial();
    let secret = Secret::new(SECRET);
    let server = start(config().auth_secret(Secret::new(SECRET)));
    let addr = server.local_addr();
    let handle = server.handle();
    let events = server.events();
    let token = |sub: &str| mint_token(&secret, sub, None, Duration::from_secs(600)).unwrap();
    let joined_as = || loop {
        if let Event::Joined { client, sub, .. } = events.recv_timeout(STEP).expect("a join") {
            break (client, sub.map(|s| s.to_string()));
        }
    };

    let mut first = ws(addr, &format!("/ws/a?name=first&token={}", token("one")));
    let (first_id, _) = joined_as();
    let first_thread = tid_of(&format!("wshub-conn-{}", first_id.get())).expect("its thread");
    first.send(Message::text("from the first")).unwrap();
    close(&mut first);
    eventually("the first client is gone", || handle.client_count() == 0);
    let before = settled_threads();

    // The next client's session runs on the thread the first one's ended on.
    let second = ws(addr, &format!("/ws/b?token={}", token("two")));
    let (second_id, sub) = joined_as();
    assert_eq!(
        threads(),
        before,
        "the cached thread was used, none started"
    );
    assert_eq!(
        tid_of(&format!("wshub-conn-{}", second_id.get())),
        Some(first_thread),
        "the same thread, under the second client's name"
    );
    assert_eq!(tid_of(&format!("wshub-conn-{}", first_id.get())), None);
    // Its own token, room and name; nothing of the first's.
    assert_eq!(sub.as_deref(), Some("two"));
    let members = handle.members("b").unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].sub.as_deref(), Some("two"));
    assert_eq!(members[0].name, format!("guest-{}", second_id.get()));
    assert!(handle.members("a").unwrap().is_empty());
    drop(second);
}
