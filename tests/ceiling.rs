//! At the ceiling of its thread budget the server refuses upgrades with
//! 503 and `Retry-After`, keeps every client it holds chatting, admits a
//! new client as soon as one leaves, never aborts, gives back every thread,
//! and logs its refusals once a second with a count.
//!
//! In its own binary, its tests taking turns: one counts this process's
//! threads (by name, the harness's own coming and going meanwhile).

mod common;

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The names of process `pid`'s connection threads (HTTP connections and
/// readers `wshub-conn-{id}`, writers `wshub-{id}-write`, the refusal
/// log's `wshub-refusals`), if it has any.
fn connection_threads(pid: &str) -> Option<Vec<String>> {
    let names: Vec<String> = all_threads(pid)
        .into_iter()
        .filter(|name| {
            let rest = name.strip_prefix("wshub-").unwrap_or("");
            rest.starts_with("conn")
                || rest.starts_with("refusals")
                || rest.starts_with(|c: char| c.is_ascii_digit())
        })
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The names of process `pid`'s threads.
fn all_threads(pid: &str) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|comm| comm.trim().to_string())
        .collect()
}

/// This process's threads that are a server's.
fn server_threads() -> usize {
    let names = all_threads("self");
    names.iter().filter(|n| n.starts_with("wshub")).count()
}

/// An upgrade the server refused: its status and `Retry-After`.
#[derive(Debug)]
struct Refused {
    status: u16,
    retry_after: Option<String>,
}

impl Refused {
    /// A 503 that says when to come back, as every refusal at the ceiling is.
    fn assert_unavailable(&self) {
        assert_eq!(self.status, 503, "{self:?}");
        let seconds = self.retry_after.as_deref().map(str::parse::<u64>);
        assert!(matches!(seconds, Some(Ok(1..))), "{self:?}");
    }
}

/// An upgrade to `path`: the client, or how the server refused it. Any
/// other ending (a reset, a connection that hangs) fails the test.
fn upgrade(addr: SocketAddr, path: &str) -> Result<Ws, Refused> {
    match try_ws(addr, path, &[]) {
        Ok(ws) => Ok(ws),
        Err(tungstenite::Error::Http(response)) => Err(Refused {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(String::from),
        }),
        Err(e) => panic!("upgrade to {path}: neither a client nor a refusal: {e}"),
    }
}

/// Clients of `path` until the server refuses one (at most `most`).
fn fill(addr: SocketAddr, path: &str, most: usize) -> (Vec<Ws>, Refused) {
    let mut held = Vec::new();
    while held.len() < most {
        match upgrade(addr, path) {
            Ok(ws) => held.push(ws),
            Err(refused) => return (held, refused),
        }
    }
    panic!("{most} clients and no refusal");
}

/// `from` says something; every other client hears it.
fn chat(clients: &mut [Ws], from: usize, what: &str) {
    clients[from].send(Message::text(what)).unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        if i != from {
            assert_eq!(next(c), Message::text(what), "client {i} of {from}");
        }
    }
}

#[test]
fn at_the_ceiling_upgrades_get_503_held_clients_chat_and_a_leaver_makes_room() {
    let _serial = serial();
    let server = start(config().max_threads(64));
    let addr = server.local_addr();
    // The server's threads, once they have their names (a new thread has
    // its creator's until it sets its own): other tests' threads come and
    // go meanwhile.
    let me = std::fs::read_to_string("/proc/thread-self/comm").unwrap();
    eventually("the server's threads named", || {
        all_threads("self")
            .iter()
            .filter(|n| **n == me.trim())
            .count()
            == 1
    });
    let base = server_threads();

    let (mut held, refused) = fill(addr, "/ws/full", 64);
    refused.assert_unavailable();
    // 64 threads: 8 kept for HTTP requests, 8 for the writers of clients
    // that fall behind, one per client.
    assert_eq!(held.len(), 48);
    for _ in 0..5 {
        upgrade(addr, "/ws/full").unwrap_err().assert_unavailable();
    }
    // Every held client keeps chatting: the first and the last speak.
    chat(&mut held, 0, "from the first");
    chat(&mut held, 47, "from the last");

    // One leaves: a new client gets in once its threads have ended, and
    // until then every attempt is a 503.
    close(&mut held.pop().unwrap());
    let deadline = Instant::now() + STEP;
    let newcomer = loop {
        match upgrade(addr, "/ws/full") {
            Ok(ws) => break ws,
            Err(refused) => refused.assert_unavailable(),
        }
        assert!(Instant::now() < deadline, "no room after a client left");
    };
    held.push(newcomer);
    chat(&mut held, 47, "from the newcomer");
    upgrade(addr, "/ws/full").unwrap_err().assert_unavailable();

    for mut c in held {
        close(&mut c);
    }
    eventually("every client gone", || server.handle().client_count() == 0);
    eventually("threads back to baseline", || server_threads() <= base);
    assert_eq!(connection_threads("self"), None);
}

/// `wshub serve` with at most `files` open files, so that the open-file
/// limit sets the ceiling: the clients it says it has room for.
fn serve_with_files(files: usize, args: &[&str]) -> (Served, usize) {
    let script = format!("ulimit -n {files} && exec \"$0\" \"$@\"");
    let served = serve_process_via(&["/bin/sh", "-c", &script], args);
    let line = served
        .head
        .iter()
        .find(|l| l.contains("thread budget"))
        .expect("the start-up line");
    assert!(line.contains("limited by RLIMIT_NOFILE"), "{line}");
    let room = line
        .split("room for about ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a client count");
    (served, room)
}

/// Like `serve_process`, with the binary run through `wrapper` (its
/// arguments then the binary's).
fn serve_process_via(wrapper: &[&str], args: &[&str]) -> Served {
    let mut command = std::process::Command::new(wrapper[0]);
    command
        .args(&wrapper[1..])
        .arg(BIN)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .args(args)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null());
    let mut process = Proc(command.spawn().expect("wshub starts"));
    let log = lines(process.stderr.take().expect("stderr"));
    let mut head = Vec::new();
    let deadline = Instant::now() + STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = log.recv_timeout(left).expect("the listening line");
        head.push(line.clone());
        if let Some(addr) = line.split("listening on ").nth(1) {
            let addr = addr.trim().parse().expect("an address");
            return Served {
                process,
                addr,
                log,
                head,
            };
        }
    }
}

#[test]
fn after_churn_the_ceiling_refuses_with_503_and_the_process_never_aborts() {
    const SESSIONS: usize = 3000;
    let _serial = serial();
    let (mut served, room) = serve_with_files(600, &[]);
    let (addr, pid) = (served.addr, served.process.id().to_string());
    assert!(room > 400, "room for {room} clients");

    // Short sessions, four at a time: glibc's cache of ended threads'
    // stacks fills.
    let workers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for i in 0..SESSIONS / 4 {
                    let mut c = ws(addr, "/echo");
                    c.send(Message::text(format!("{i}"))).unwrap();
                    assert_eq!(next(&mut c), Message::text(format!("{i}")));
                    close(&mut c);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("every short session went through");
    }

    // Then up to the ceiling, and 20 past it.
    let (held, refused) = fill(addr, "/ws/idle", room + 1);
    refused.assert_unavailable();
    assert_eq!(held.len(), room, "the start-up line's count");
    for _ in 0..19 {
        upgrade(addr, "/ws/idle").unwrap_err().assert_unavailable();
    }
    assert!(served.process.try_wait().unwrap().is_none(), "it exited");

    drop(held);
    // Its own threads (hub, lanes, acceptor, signals) remain: the
    // connections' are gone.
    let deadline = Instant::now() + STEP;
    while let Some(left) = connection_threads(&pid) {
        assert!(Instant::now() < deadline, "threads left: {left:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(served.process.try_wait().unwrap().is_none(), "it exited");
}

#[test]
fn refusals_are_logged_once_a_second_with_their_count() {
    const BEYOND: usize = 100;
    let _serial = serial();
    let served = serve_process(&["--max-threads", "64"], &[]);
    let (held, _) = fill(served.addr, "/ws/full", 64);
    assert_eq!(held.len(), 48);
    // The first refusal opened a window; start counting from a fresh one.
    let mut counted = refusal_counts(&served, 1);
    assert_eq!(counted.iter().sum::<usize>(), 1);

    let started = Instant::now();
    for _ in 0..BEYOND {
        upgrade(served.addr, "/ws/full")
            .unwrap_err()
            .assert_unavailable();
    }
    let took = started.elapsed();
    counted = refusal_counts(&served, BEYOND);
    // A line a second at most (the refusals may straddle two windows).
    let most = took.as_secs() as usize + 2;
    assert!(
        counted.len() <= most,
        "{} lines for {BEYOND} refusals in {took:?}: {counted:?}",
        counted.len()
    );
}

/// The counts of the refusal lines the server logs until they add up to
/// `total` (bounded: a line comes within a second of its window's start).
fn refusal_counts(served: &Served, total: usize) -> Vec<usize> {
    let mut counts = Vec::new();
    let deadline = Instant::now() + STEP;
    while counts.iter().sum::<usize>() < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = served
            .log
            .recv_timeout(left.max(Duration::from_millis(1)))
            .unwrap_or_else(|_| panic!("refusal lines for {total}, got {counts:?}"));
        let Some(rest) = line.split("refused ").nth(1) else {
            continue;
        };
        let count = rest.split(' ').next().and_then(|n| n.parse().ok());
        let count = count.unwrap_or_else(|| panic!("no count in {line:?}"));
        assert!(
            line.contains("in the last second: at the thread budget of 64"),
            "{line}"
        );
        counts.push(count);
    }
    counts
}
