//! The writer thread's half of a session (gorilla's `writePump`): it
//! waits on the connection's mailbox, writes every frame already queued in
//! one vectored system call (batching without merging), sends the pings
//! and the token-expiry Close on its own timer, and after our Close waits
//! for the reader to see the answer. It never touches the context.
//!
//! May touch: the connection's socket (writes and shutdown, through
//! `Wire`), its mailbox.

use std::io;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use tungstenite::protocol::CloseFrame;

use super::Timing;
use super::close::Close;
use super::frame::Frame;
use super::outbox::{Mailbox, Out, Queued, Waiter};
use super::wire::{MAX_BATCH, Wire};

/// A batch of at least this many frames means the connection is busy.
const YIELD_AFTER: usize = 16;

/// The writer takes no more than this out of its queue for one write: a
/// write to a slow reader can hold its frames for the whole write timeout,
/// and the memory budget cannot take them back meanwhile.
pub(crate) const MAX_BATCH_BYTES: usize = 256 << 10;

/// What one turn of the writer decided.
enum Turn {
    /// Go on waiting for the next entry.
    Again,
    /// The connection is over (with the failure that ended it, if any).
    Over(Option<String>),
}

/// The writer's state between turns.
struct Writer<'a> {
    wire: &'a Wire,
    mailbox: &'a Mailbox,
    timing: Timing,
    ping: Frame,
    next_ping: Option<Instant>,
    /// The entries of the write being made (kept to reuse its allocation).
    batch: Vec<Out>,
}

/// The writer loop. Returns when the connection is over, with the socket
/// shut down, and the failure that ended it, if any.
pub(super) fn write_loop(wire: &Wire, mailbox: Mailbox, timing: Timing) -> Option<String> {
    let mut writer = Writer {
        wire,
        mailbox: &mailbox,
        timing,
        ping: Frame::ping(wire.role()),
        next_ping: after(timing.ping_interval),
        batch: Vec::new(),
    };
    let mut wait = mailbox.waiter();
    let problem = loop {
        if let Turn::Over(problem) = writer.turn(&mut wait) {
            break problem;
        }
    };
    wire.shutdown(Shutdown::Both);
    problem
}

impl Writer<'_> {
    /// Signals first (a close request, the reader's end), then the next
    /// entry or timer, then a write of everything already queued.
    fn turn(&mut self, wait: &mut Waiter) -> Turn {
        if let Some(over) = self.signals(wait) {
            return over;
        }
        match self.next(wait) {
            Ok(item) => self.write_batch(item, wait),
            Err(turn) => turn,
        }
    }

    /// A raised signal: a close to send now, or the reader's end (after
    /// which what it queued last — its answer to the peer's Close — goes
    /// out, and the writer stops).
    fn signals(&self, wait: &mut Waiter) -> Option<Turn> {
        if !self.mailbox.take_raised() {
            return None;
        }
        if let Some(close) = self.mailbox.take_close() {
            self.close_and_wait(close, wait);
            return Some(Turn::Over(None));
        }
        if self.mailbox.is_reader_done() {
            let _ = flush_queued(self.mailbox, self.wire);
            return Some(Turn::Over(None));
        }
        None
    }

    /// The next entry, or what the timer (pings and the token's end) or
    /// a gone outbox makes of the wait.
    fn next(&mut self, wait: &mut Waiter) -> Result<Out, Turn> {
        let wake = match (self.next_ping, self.timing.expires) {
            (Some(ping), Some(end)) => Some(ping.min(end)),
            (ping, end) => ping.or(end),
        };
        match wait.next(wake) {
            Ok(Out::Wake) => Err(Turn::Again),
            Ok(item) => Ok(item),
            Err(RecvTimeoutError::Timeout)
                if self.timing.expires.is_some_and(|end| Instant::now() >= end) =>
            {
                self.close_and_wait(Close::TokenExpired.frame(), wait);
                Err(Turn::Over(Some(Close::TokenExpired.reason().to_string())))
            }
            Err(RecvTimeoutError::Timeout) => {
                self.next_ping = after(self.timing.ping_interval);
                match self.wire.send([&self.ping]) {
                    Ok(_) => Err(Turn::Again),
                    Err(e) => Err(Turn::Over(Some(format!("ping failed: {e}")))),
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                self.close_and_wait(Close::GoingAway.frame(), wait);
                Err(Turn::Over(None))
            }
        }
    }

    /// Takes everything already queued after `first`, up to a Close (a
    /// graceful close goes after the data queued before it), and writes
    /// it in one system call; then the Close, if one came.
    fn write_batch(&mut self, first: Out, wait: &mut Waiter) -> Turn {
        let (close, count, taken_bytes) = self.take_batch(first);
        // Out of the queue now, whatever the write does: the bound is on
        // what waits, as with gorilla's channel. (Subtracting after the
        // write would count frames the peer already has while this thread
        // waits to be scheduled.)
        self.mailbox.taken(count, taken_bytes);
        let result = self.wire.send(self.batch.iter().flat_map(Out::frames));
        // On the socket now: the hub may write to this connection itself again.
        let entries = self.batch.iter().filter(|e| !matches!(e, Out::Wake));
        self.mailbox.written(entries.count());
        self.batch.clear();
        if let Err(e) = result {
            return Turn::Over(Some(format!("write failed: {e}")));
        }
        if count >= YIELD_AFTER {
            // Under load: let the hub queue more before the next write, so
            // that each system call carries more frames.
            std::thread::yield_now();
        }
        match close {
            Some(close) => {
                if let Ok(true) = self.wire.send_close_frame(&close) {
                    self.linger(wait);
                }
                Turn::Over(None)
            }
            None => Turn::Again,
        }
    }

    /// Fills the batch from `first` on; the Close that ended it, if any,
    /// and the messages and bytes taken.
    fn take_batch(&mut self, first: Out) -> (Option<Frame>, usize, usize) {
        let mut close = None;
        let mut next = Some(first);
        let (mut count, mut frames, mut taken_bytes) = (0, 0, 0);
        while let Some(item) = next.take() {
            match item {
                Out::Frame(f) if f.is_close() => close = Some(f),
                item => {
                    let (counted, bytes) = item.counted();
                    count += counted;
                    frames += item.frames().count();
                    taken_bytes += bytes;
                    self.batch.push(item);
                    if frames < MAX_BATCH && taken_bytes < MAX_BATCH_BYTES {
                        next = self.mailbox.try_next();
                    }
                }
            }
        }
        (close, count, taken_bytes)
    }

    /// Sends our Close now and, if it went out, lingers.
    fn close_and_wait(&self, close: CloseFrame, wait: &mut Waiter) {
        if let Ok(true) = self.wire.send_close(Some(&close)) {
            self.linger(wait);
        }
    }

    /// After our Close: waits for the reader to see the answer and exit.
    /// Entries still arriving are dropped: nothing goes after a Close.
    fn linger(&self, wait: &mut Waiter) {
        let deadline = after(self.timing.close_timeout);
        while !self.mailbox.is_reader_done() && wait.next(deadline).is_ok() {}
    }
}

/// Writes what is queued right now, up to and including a Close.
fn flush_queued(mailbox: &Mailbox, wire: &Wire) -> io::Result<()> {
    // Past a signal (the reader's end raised it) the rest goes too.
    while let Queued::Written | Queued::Signal = mailbox.write_queued(wire)? {}
    Ok(())
}

/// `interval` from now, if that is a representable time.
fn after(interval: Duration) -> Option<Instant> {
    Instant::now().checked_add(interval)
}
