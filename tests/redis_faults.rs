//! The Redis bridge under faults, with traffic flowing through them as a
//! busy deployment causes them: a broker restarted while clients on both
//! instances keep talking, a broker that comes up only after the
//! instances, a flapping broker, and one that accepts connections and
//! never answers. Real `redis-server` processes on loopback; without one
//! the tests skip (and `make test` says so), except under CI.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::redis::Redis;
use common::*;
use tungstenite::Message;
use wshub::Server;

/// What the bridge promises: once Redis is reachable again, both
/// connections are back and delivery across instances resumes within the
/// backoff cap (2 s) plus one second.
const RECOVERY: Duration = Duration::from_secs(3);

/// How often each talking client sends.
const EVERY: Duration = Duration::from_millis(120);

fn instance(url: &str) -> Server {
    start(config().redis(url.to_string()))
}

/// A client that says `{tag}:{i}` every [`EVERY`] until `stop`; joined
/// to the number of messages it sent.
fn talker(addr: SocketAddr, room: &str, tag: &'static str, stop: Arc<AtomicBool>) -> Talker {
    let mut ws = ws(addr, &format!("/ws/{room}"));
    let sent = Arc::new(AtomicUsize::new(0));
    let count = sent.clone();
    let thread = std::thread::spawn(move || {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            text(&mut ws, &format!("{tag}:{i}"));
            i += 1;
            count.store(i, Ordering::Relaxed);
            std::thread::sleep(EVERY);
        }
        close(&mut ws);
        i
    });
    Talker { sent, thread }
}

struct Talker {
    sent: Arc<AtomicUsize>,
    thread: JoinHandle<usize>,
}

/// A client that records every `{tag}:{i}` it gets, with when, until it
/// has `{tag}:{last}` where `last` is set (or a read times out).
fn listener(addr: SocketAddr, room: &str, tag: &'static str, last: Arc<AtomicUsize>) -> Heard {
    let mut ws = ws(addr, &format!("/ws/{room}"));
    std::thread::spawn(move || {
        let mut got = Vec::new();
        loop {
            let Ok(Message::Text(t)) = ws.read() else {
                return got;
            };
            let Some(i) = t.strip_prefix(&format!("{tag}:")) else {
                continue;
            };
            let i: usize = i.parse().expect("a number");
            got.push((i, Instant::now()));
            if i + 1 >= last.load(Ordering::Relaxed) {
                return got;
            }
        }
    })
}

type Heard = JoinHandle<Vec<(usize, Instant)>>;

/// Asserts `heard` is strictly increasing (nothing twice, order kept).
fn in_order(heard: &[(usize, Instant)], what: &str) {
    for pair in heard.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "{what}: {} came after {} (twice or out of order)",
            pair[1].0,
            pair[0].0
        );
    }
}

/// Waits until `i` messages of `talker` have been sent.
fn wait_sent(talker: &Talker, i: usize) {
    eventually(&format!("{i} messages sent"), || {
        talker.sent.load(Ordering::Relaxed) >= i
    });
}

/// Two instances, a room with a talker and a listener on each.
struct Pair {
    servers: [Server; 2],
    stop: Arc<AtomicBool>,
    last: [Arc<AtomicUsize>; 2],
    talkers: Vec<Talker>,
    heard: Vec<Heard>,
}

impl Pair {
    fn start(url: &str) -> Pair {
        Pair {
            servers: [instance(url), instance(url)],
            stop: Arc::new(AtomicBool::new(false)),
            last: [
                Arc::new(AtomicUsize::new(usize::MAX)),
                Arc::new(AtomicUsize::new(usize::MAX)),
            ],
            talkers: Vec::new(),
            heard: Vec::new(),
        }
    }

    /// Listeners first (B hears A, A hears B), then the talkers.
    fn talk(&mut self, room: &str) {
        self.listen(room);
        self.speak(room);
    }

    /// A listener on each instance for the other's talker.
    fn listen(&mut self, room: &str) {
        let [a, b] = [0, 1].map(|i| self.servers[i].local_addr());
        self.heard
            .push(listener(b, room, "a", self.last[0].clone()));
        self.heard
            .push(listener(a, room, "b", self.last[1].clone()));
    }

    /// A talker on each instance.
    fn speak(&mut self, room: &str) {
        let [a, b] = [0, 1].map(|i| self.servers[i].local_addr());
        self.talkers.push(talker(a, room, "a", self.stop.clone()));
        self.talkers.push(talker(b, room, "b", self.stop.clone()));
    }

    fn connected(&self) -> bool {
        self.servers
            .iter()
            .all(|s| s.handle().redis_connected() == Some(true))
    }

    /// Stops the talkers; what each listener heard of the other side's
    /// talker, and how many that talker sent.
    fn finish(mut self) -> Vec<(Vec<(usize, Instant)>, usize)> {
        self.stop.store(true, Ordering::Relaxed);
        let sent: Vec<usize> = self
            .talkers
            .drain(..)
            .map(|t| t.thread.join().expect("talker"))
            .collect();
        for (last, &n) in self.last.iter().zip(&sent) {
            last.store(n, Ordering::Relaxed);
        }
        self.heard
            .drain(..)
            .map(|h| h.join().expect("listener"))
            .zip(sent)
            .collect()
    }
}

#[test]
fn a_busy_room_recovers_from_a_redis_restart_and_gets_the_outage_once_in_order() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let mut pair = Pair::start(&redis.url());
    eventually("both bridges connected", || pair.connected());
    pair.listen("busy");
    redis.wait_subscribers("busy", 2);
    pair.speak("busy");
    wait_sent(&pair.talkers[0], 5);

    // Killed while both sides keep talking; back after a while of it.
    redis.kill();
    let sent_at_kill = pair.talkers[0].sent.load(Ordering::Relaxed);
    wait_sent(&pair.talkers[0], sent_at_kill + 12);
    redis.run();
    let up = Instant::now();
    eventually("both bridges back", || pair.connected());
    let back = up.elapsed();
    let sent_at_up = pair.talkers[0].sent.load(Ordering::Relaxed);
    wait_sent(&pair.talkers[0], sent_at_up + 30);

    for (side, (heard, sent)) in pair.finish().into_iter().enumerate() {
        let what = ["B hearing A", "A hearing B"][side];
        in_order(&heard, what);
        // Everything, once, in order: before, during (the backlog) and
        // after — but for what Redis had taken and not yet passed on when
        // it was killed (it keeps nothing: no persistence), at most the
        // last two messages sent before the kill.
        let numbers: Vec<usize> = heard.iter().map(|h| h.0).collect();
        let in_flight = sent_at_kill.saturating_sub(2)..sent_at_kill;
        let expected: Vec<usize> = (0..sent)
            .filter(|i| !in_flight.contains(i) || numbers.contains(i))
            .collect();
        assert_eq!(numbers, expected, "{what}");
        // The outage's first message crossed within the bound of Redis
        // being reachable again.
        let at = numbers
            .iter()
            .position(|&n| n == sent_at_kill + 1)
            .expect("the outage's messages crossed");
        let (_, first_after) = heard[at];
        assert!(
            first_after.saturating_duration_since(up) <= RECOVERY,
            "{what}: delivery resumed {:?} after Redis was back",
            first_after.saturating_duration_since(up)
        );
    }
    assert!(back <= RECOVERY, "the bridges took {back:?} to reconnect");
}

#[test]
fn a_redis_that_comes_up_after_the_instances_carries_a_talking_room_within_the_bound() {
    // A port with nothing on it yet; Redis comes up there later.
    let Some(mut redis) = Redis::reserve(Default::default()) else {
        return;
    };
    let mut pair = Pair::start(&redis.url());
    pair.talk("early");
    wait_sent(&pair.talkers[0], 12);
    assert!(!pair.connected());
    redis.run();
    let up = Instant::now();
    eventually("both bridges connected", || pair.connected());
    let sent_at_up = pair.talkers[0].sent.load(Ordering::Relaxed);
    wait_sent(&pair.talkers[0], sent_at_up + 30);
    for (side, (heard, sent)) in pair.finish().into_iter().enumerate() {
        let what = ["B hearing A", "A hearing B"][side];
        in_order(&heard, what);
        let &(_, first) = heard.first().unwrap_or_else(|| panic!("{what}: nothing"));
        assert!(
            first.saturating_duration_since(up) <= RECOVERY,
            "{what}: delivery started {:?} after Redis came up",
            first.saturating_duration_since(up)
        );
        // Nothing said once the bridges were up is missing.
        no_gap_after(&heard, sent_at_up, sent, what);
    }
}

/// Every message numbered from `from` to `sent` was heard, once, in order.
fn no_gap_after(heard: &[(usize, Instant)], from: usize, sent: usize, what: &str) {
    let tail: Vec<usize> = heard.iter().map(|h| h.0).filter(|&i| i >= from).collect();
    assert_eq!(tail, (from..sent).collect::<Vec<_>>(), "{what}");
}

#[test]
fn a_flapping_redis_duplicates_nothing_keeps_each_senders_order_and_ends_reconnected() {
    let Some(mut redis) = Redis::start() else {
        return;
    };
    let mut pair = Pair::start(&redis.url());
    eventually("both bridges connected", || pair.connected());
    pair.talk("flap");
    redis.wait_subscribers("flap", 2);
    for _ in 0..3 {
        let sent = pair.talkers[0].sent.load(Ordering::Relaxed);
        wait_sent(&pair.talkers[0], sent + 4);
        redis.kill();
        let sent = pair.talkers[0].sent.load(Ordering::Relaxed);
        wait_sent(&pair.talkers[0], sent + 4);
        redis.run();
    }
    let up = Instant::now();
    eventually("both bridges back", || pair.connected());
    assert!(
        up.elapsed() <= RECOVERY,
        "reconnected after {:?}",
        up.elapsed()
    );
    let sent_at_up = pair.talkers[0].sent.load(Ordering::Relaxed);
    wait_sent(&pair.talkers[0], sent_at_up + 20);
    for (side, (heard, sent)) in pair.finish().into_iter().enumerate() {
        let what = ["B hearing A", "A hearing B"][side];
        in_order(&heard, what);
        no_gap_after(&heard, sent_at_up, sent, what);
    }
}

#[test]
fn a_redis_that_never_answers_holds_up_no_local_chat_and_is_retried() {
    // Accepts connections, reads what it is sent, answers nothing.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("redis://{}", silent.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in silent.incoming() {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, Ordering::Relaxed);
            std::thread::spawn(move || std::io::copy(&mut conn, &mut std::io::sink()));
        }
    });
    let server = instance(&url);
    let addr = server.local_addr();
    let (mut a, mut b) = (ws(addr, "/ws/local"), ws(addr, "/ws/local"));
    let started = Instant::now();
    let mut i = 0;
    // Chat for as long as several attempts take: each message crosses
    // locally at once.
    while started.elapsed() < Duration::from_secs(6) {
        let sent = Instant::now();
        text(&mut a, &format!("local {i}"));
        assert_eq!(next(&mut b), Message::text(format!("local {i}")));
        assert!(
            sent.elapsed() < Duration::from_millis(500),
            "a local message took {:?}",
            sent.elapsed()
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    // Each attempt was given up within its timeout and made again.
    assert!(
        accepted.load(Ordering::Relaxed) >= 4,
        "{} connection attempts in 6 s",
        accepted.load(Ordering::Relaxed)
    );
    assert_eq!(server.handle().redis_connected(), Some(false));
    let health = get(addr, "/healthz", "");
    assert!(health.contains(r#""redis":"disconnected""#), "{health}");
    close(&mut a);
    close(&mut b);
}
