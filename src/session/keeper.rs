//! The keepalive timer for connections that have no writer thread: one
//! thread for the whole server pings each of them every ping interval
//! (through the direct write path, as the hub delivers: a connection
//! that keeps up needs no thread of its own for that), and closes with
//! 1008 "token expired" those whose token ends. A connection whose writer
//! has started leaves the keeper: its writer keeps its own time.
//!
//! May touch: the kept connections' outboxes (pings, the expiry Close).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Timing;
use super::close::Close;
use super::frame::Frame;
use super::outbox::Outbox;

/// Longest sleep of the keeper between two looks at its connections.
const TICK_MAX: Duration = Duration::from_millis(500);

/// The server's keepalive timer. Dropping it stops its thread.
#[derive(Debug)]
pub(crate) struct Keeper {
    shared: Arc<Kept>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Kept {
    connections: Mutex<Vec<Entry>>,
    /// How long the keeper sleeps between looks now, in microseconds: a
    /// connection that needs a shorter tick wakes it.
    tick_us: AtomicU64,
    stop: AtomicBool,
    wake: Condvar,
}

#[derive(Debug)]
struct Entry {
    outbox: Outbox,
    interval: Duration,
    next_ping: Instant,
    expires: Option<Instant>,
}

impl Kept {
    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Keeper {
    /// Starts the keeper's thread.
    pub(crate) fn start() -> std::io::Result<Keeper> {
        let shared = Arc::new(Kept::default());
        let kept = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wshub-keepalive".into())
            .spawn(move || run(&kept))?;
        Ok(Keeper {
            shared,
            thread: Some(thread),
        })
    }

    /// Keeps `outbox`'s connection alive while it has no writer.
    pub(crate) fn keep(&self, outbox: Outbox, timing: Timing) {
        let entry = Entry {
            outbox,
            interval: timing.ping_interval,
            next_ping: Instant::now() + timing.ping_interval,
            expires: timing.expires,
        };
        let tick = tick_for(timing.ping_interval);
        self.shared.lock().push(entry);
        if duration_us(tick) < self.shared.tick_us.load(Ordering::Acquire) {
            self.shared.wake.notify_all();
        }
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The keeper's loop: every tick, each connection still without a
/// writer is pinged when its interval has passed, and closed when its
/// token has ended.
fn run(kept: &Kept) {
    let ping = Frame::ping(tungstenite::protocol::Role::Server);
    let mut connections = kept.lock();
    while !kept.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        connections.retain_mut(|entry| entry.tend(now, &ping));
        let tick = connections
            .iter()
            .map(|e| tick_for(e.interval))
            .min()
            .unwrap_or(TICK_MAX);
        kept.tick_us.store(duration_us(tick), Ordering::Release);
        connections = kept
            .wake
            .wait_timeout(connections, tick)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

/// How often the keeper looks at a connection pinged every `interval`.
fn tick_for(interval: Duration) -> Duration {
    (interval / 4).clamp(Duration::from_millis(5), TICK_MAX)
}

fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Entry {
    /// What is due for this connection; whether the keeper still keeps it.
    fn tend(&mut self, now: Instant, ping: &Frame) -> bool {
        if !self.outbox.writerless() {
            return false;
        }
        if self.expires.is_some_and(|end| now >= end) {
            // The writer this starts sends the Close and lingers.
            self.outbox.close_now(Close::TokenExpired.frame());
            return false;
        }
        if now >= self.next_ping {
            match self.outbox.ping_now(ping) {
                Some(writerless) => {
                    self.next_ping = now + self.interval;
                    return writerless;
                }
                // Not now: again at the next tick.
                None => return true,
            }
        }
        true
    }
}
