//! One WebSocket session as two threads: the reader (gorilla's `readPump`)
//! and the writer (`writePump`). [`start`] starts the pair; the server uses
//! it for every hub and echo client, [`Connection`](crate::Connection) on
//! the dialling side.
//!
//! # How one socket is shared by two threads
//!
//! tungstenite's `WebSocket` cannot be split: its `read()` also writes (pong
//! and close replies), a `Mutex<WebSocket>` held across a blocking read
//! starves the writer, and two `WebSocket`s over cloned sockets interleave
//! bytes. So the parts are taken apart:
//!
//! * The **reader owns the `WebSocketContext`** outright — no lock — and
//!   blocks in `ctx.read()` on the socket. The context keeps partial frames
//!   between reads and enforces the size, UTF-8 and protocol rules.
//! * **Every write goes through `Wire`**, whose mutex is held only for the
//!   duration of one write of whole frames (bounded by the write timeout).
//!   The context's automatic pongs reach the socket through
//!   `ReadSide`, which writes them under that lock,
//!   so a pong can never land in the middle of a data frame. `ReadSide`'s
//!   reads pass through the connection's `memory::Tracker`: the memory
//!   budget and the message timeout are enforced below the context.
//! * The **writer never touches the context**: data frames arrive already
//!   encoded (`Frame`), and it encodes its own pings and Close. It takes
//!   every frame already queued and writes them in one vectored system call —
//!   batching without merging: each message keeps its own frame and type.
//!   Its queue is the connection's `outbox` (entries, signals and the
//!   bound live there). A busy writer yields after a large batch so that
//!   the next system call carries more frames.
//! * **Close** is tracked by `Wire`: whoever sends our Close (the reader
//!   answering the peer or failing the connection, the writer on eviction or
//!   shutdown) marks it, and nothing is written after it; the peer's Close is
//!   answered, and a failed connection closed, *behind* what is already
//!   queued, and the writer half-closes right after our Close. The reader exits on
//!   the peer's Close, an error, or EOF; the writer exits when the reader is
//!   gone (its signal), after its own Close has been answered or
//!   `close_timeout` passed, or on a failed write — and then shuts the socket
//!   down so that a reader blocked in `read` wakes up.
//!
//! Keepalive: the socket's read timeout is the pong timeout, so a peer that
//! sends nothing at all — neither data nor pongs to our pings — for that long
//! makes `read` fail, and the reader closes the connection.
//!
//! May touch: the connection's `Wire`, its outbox, its context; what a
//! message means is the caller's (`on_message`).

pub(crate) mod outbox;
pub(crate) mod wire;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Message, WebSocketConfig, WebSocketContext};

use crate::deflate::Inflater;
use crate::error::is_timeout;
use crate::memory::{Memory, Refusal, Tracker};
use crate::session::outbox::{Mailbox, Out, Outbox};
use crate::session::wire::{Frame, MAX_BATCH, Wire};

/// A batch of at least this many frames means the connection is busy.
const YIELD_AFTER: usize = 16;

/// The writer takes no more than this out of its queue for one write: a
/// write to a slow reader can hold its frames for the whole write timeout,
/// and the memory budget cannot take them back meanwhile.
pub(crate) const MAX_BATCH_BYTES: usize = 256 << 10;

/// How a connection ended, as the reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The peer sent Close (code and reason, if any).
    PeerClosed(Option<CloseFrame>),
    /// We closed with this code and reason.
    WeClosed(CloseCode, String),
    /// The connection dropped without a close handshake.
    Dropped(String),
}

impl std::fmt::Display for Ending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ending::PeerClosed(Some(c)) => write!(
                f,
                "peer closed with {} {:?}",
                u16::from(c.code),
                c.reason.as_str()
            ),
            Ending::PeerClosed(None) => write!(f, "peer closed with no code"),
            Ending::WeClosed(code, reason) => {
                write!(f, "closed with {} {reason:?}", u16::from(*code))
            }
            Ending::Dropped(why) => write!(f, "dropped: {why}"),
        }
    }
}

/// The reason of the Close sent to a peer silent for a pong timeout.
pub(crate) const PING_TIMEOUT: &str = "ping timeout";

/// Timing shared by both threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub ping_interval: Duration,
    pub close_timeout: Duration,
    /// The socket's read timeout when no message is unfinished.
    pub pong_timeout: Duration,
    /// How long a started message may take to complete.
    pub message_timeout: Duration,
    /// When the client's access ends (its token's `exp`): the writer
    /// closes with 1008 "token expired" then.
    pub expires: Option<Instant>,
}

/// The reason of the Close sent when a client's token expires.
pub(crate) const TOKEN_EXPIRED: &str = "token expired";

/// Starts threads for [`start`]: the server's are counted against its
/// thread budget, the dialling side's are joined by its `Connection`.
pub(crate) trait Spawn {
    /// Runs `body` on a new thread called `name`.
    fn spawn(&self, name: String, body: Box<dyn FnOnce() + Send>) -> io::Result<()>;
}

/// What a session's reader does with what it reads, and what happens when
/// each thread ends.
pub(crate) struct Handlers<M, E, W> {
    /// Gets every text and binary message; an `Err` ends the session
    /// (see [`Stop`]).
    pub on_message: M,
    /// Runs on the reader's thread after the read loop, with how it ended.
    pub on_end: E,
    /// Runs on the writer's thread when it is done, with the failure that
    /// ended it, if any (a place for guards that must live as long).
    pub on_writer_end: W,
}

/// Why `on_message` wants no more messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stop {
    /// Their destination is gone (the hub stopped): close with 1001.
    Gone,
    /// The client broke a rule: close with this code and reason.
    Close(CloseCode, &'static str),
}

/// What a session runs on.
pub(crate) struct Parts {
    /// The socket's shared write side.
    pub wire: Arc<Wire>,
    /// The reader's protocol state (boxed: moved into the reader's thread,
    /// it would otherwise be copied through the thread start-up's frames).
    pub ctx: Box<WebSocketContext>,
    /// The writer's queue, both ends.
    pub mailbox: (Outbox, Mailbox),
    /// The budget incoming messages count against (none: count nothing).
    pub memory: Option<Arc<Memory>>,
    /// With permessage-deflate agreed: the layer that inflates the peer's
    /// compressed messages below the context.
    pub inflater: Option<Box<Inflater>>,
}

/// Starts a session's writer, then its reader, each on a thread of its
/// own from `spawner`. `name` becomes `{name}-write` and `{name}-read`.
///
/// If the reader cannot be started, the peer gets 1013 "server
/// overloaded", the writer is released, and the error is returned; the
/// caller undoes whatever it registered.
pub(crate) fn start<M, E, W>(
    spawner: &dyn Spawn,
    name: &str,
    parts: Parts,
    timing: Timing,
    handlers: Handlers<M, E, W>,
) -> io::Result<()>
where
    M: FnMut(Message) -> Result<(), Stop> + Send + 'static,
    E: FnOnce(Ending) + Send + 'static,
    W: FnOnce(Option<String>) + Send + 'static,
{
    let Handlers {
        mut on_message,
        on_end,
        on_writer_end,
    } = handlers;
    let Parts {
        wire,
        mut ctx,
        mailbox: (outbox, mailbox),
        memory,
        inflater,
    } = parts;
    let writer_wire = wire.clone();
    let writer = spawner.spawn(
        format!("{name}-write"),
        Box::new(move || on_writer_end(write_loop(&writer_wire, mailbox, timing))),
    );
    if let Err(e) = writer {
        let _ = wire.send_close(Some(&close_frame(CloseCode::Again, "server overloaded")));
        return Err(e);
    }
    let (reader_wire, reader_outbox) = (wire.clone(), outbox.clone());
    let reader = spawner.spawn(
        format!("{name}-read"),
        Box::new(move || {
            // Dropped after `on_end`: the writer outlives what the reader says.
            let _exit = reader_outbox.on_reader_exit();
            let mut io = ReadSide {
                wire: &reader_wire,
                tracker: Tracker::new(memory.clone(), timing.message_timeout),
                pong_timeout: timing.pong_timeout,
                timeout: timing.pong_timeout,
                inflater,
            };
            let ending = read_loop(&mut io, &mut ctx, &reader_outbox, timing, memory, |m| {
                on_message(m)
            });
            on_end(ending);
        }),
    );
    if let Err(e) = reader {
        let _ = wire.send_close(Some(&close_frame(CloseCode::Again, "server overloaded")));
        outbox.reader_done();
        return Err(e);
    }
    Ok(())
}

/// The `Read + Write` view tungstenite's reader gets: reads block on the
/// socket with no lock held and pass through the connection's tracker;
/// writes (pongs) go through the [`Wire`] lock.
struct ReadSide<'a> {
    wire: &'a Wire,
    tracker: Tracker,
    pong_timeout: Duration,
    /// The socket's read timeout now.
    timeout: Duration,
    /// With permessage-deflate: the peer's bytes go through it, and the
    /// context (and the tracker) see the plain frames it makes.
    inflater: Option<Box<Inflater>>,
}

impl Read for ReadSide<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(mut inflater) = self.inflater.take() else {
            let n = self.read_socket(buf)?;
            self.tracker.feed(&buf[..n]).map_err(io::Error::other)?;
            return Ok(n);
        };
        let result = self.read_inflated(&mut inflater, buf);
        self.inflater = Some(inflater);
        result
    }
}

impl ReadSide<'_> {
    /// The plain frames the inflater makes of the peer's bytes. Until it
    /// has some, `buf` (the context's own buffer) takes the next read.
    fn read_inflated(&mut self, inflater: &mut Inflater, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = inflater.read_out(buf);
            if n > 0 {
                self.tracker.feed(&buf[..n]).map_err(io::Error::other)?;
                return Ok(n);
            }
            if inflater.has_work() {
                inflater.work()?;
                continue;
            }
            let got = self.read_socket(buf)?;
            if got == 0 {
                return Ok(0);
            }
            inflater.feed(&buf[..got])?;
        }
    }

    /// One read from the socket, under the pong timeout and the unfinished
    /// message's deadline.
    fn read_socket(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // An unfinished message must be complete by its deadline: the
            // socket's timeout comes down towards it, by halves (a system
            // call per halving, not per read), so a stalled message ends
            // within twice the time it had left.
            let wanted = match self.tracker.deadline() {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::other(Refusal::MessageTimeout));
                    }
                    if left * 2 <= self.timeout {
                        left
                    } else {
                        self.timeout
                    }
                }
                None => self.pong_timeout,
            };
            if wanted != self.timeout {
                self.wire.stream().set_read_timeout(Some(wanted))?;
                self.timeout = wanted;
            }
            match self.wire.stream().read(buf) {
                Ok(n) => return Ok(n),
                // The shortened timeout ran out: the deadline decides.
                Err(e) if is_timeout(&e) && self.timeout < self.pong_timeout => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Write for ReadSide<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.wire.send_raw(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reader loop. Blocks until the connection ends; `on_message` gets
/// every text and binary message and returns a [`Stop`] when it takes no
/// more. The answer to
/// the peer's Close goes into the connection's own `outbox`, behind what
/// is already queued (an echo of the peer's last message, say).
fn read_loop(
    io: &mut ReadSide<'_>,
    ctx: &mut WebSocketContext,
    outbox: &Outbox,
    timing: Timing,
    memory: Option<Arc<Memory>>,
    mut on_message: impl FnMut(Message) -> Result<(), Stop>,
) -> Ending {
    let wire = io.wire;
    loop {
        match ctx.read(io) {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                // Data that arrives after our Close is still delivered: the
                // peer may send until its own Close (RFC 6455 1.4).
                match on_message(message) {
                    Ok(()) => {}
                    Err(Stop::Gone) => {
                        return close_with(
                            wire,
                            outbox,
                            CloseCode::Away,
                            "server shutting down",
                            timing,
                        );
                    }
                    Err(Stop::Close(code, reason)) => {
                        return close_with(wire, outbox, code, reason, timing);
                    }
                }
            }
            Ok(Message::Close(frame)) => {
                // Answer with the same code (the wire drops it if this
                // answers our own Close). A full queue means the writer is
                // stuck: answer at once rather than wait behind it.
                if !outbox.push_close(Frame::close(wire.role(), frame.as_ref()))
                    && let Err(e) = wire.send_close(frame.as_ref())
                {
                    return Ending::Dropped(format!("close reply failed: {e}"));
                }
                return Ending::PeerClosed(frame);
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Err(tungstenite::Error::Io(e)) if Refusal::of(&e).is_some() => {
                // Free what the refused message holds at once, not after
                // the close handshake's linger.
                *ctx = WebSocketContext::new(
                    wire.role(),
                    Some(WebSocketConfig::default().read_buffer_size(64)),
                );
                io.tracker.release();
                let (code, reason) = match Refusal::of(&e) {
                    Some(refusal @ Refusal::OverBudget { .. }) => {
                        if let Some(memory) = &memory {
                            memory.count_refused();
                        }
                        (CloseCode::Again, refusal.to_string())
                    }
                    Some(refusal @ Refusal::TooBig) => (CloseCode::Size, refusal.to_string()),
                    Some(refusal @ Refusal::Corrupt { text: true }) => {
                        (CloseCode::Invalid, refusal.to_string())
                    }
                    Some(refusal @ (Refusal::Corrupt { .. } | Refusal::Protocol(_))) => {
                        (CloseCode::Protocol, refusal.to_string())
                    }
                    _ => (CloseCode::Policy, "message timeout".to_string()),
                };
                return close_with(wire, outbox, code, &reason, timing);
            }
            Err(e) => return fail(wire, outbox, e, timing),
        }
    }
}

/// Maps a read error to the close code RFC 6455 asks for, and closes.
fn fail(wire: &Wire, outbox: &Outbox, err: tungstenite::Error, timing: Timing) -> Ending {
    use tungstenite::Error as E;
    let (code, reason) = match err {
        E::Io(e) if is_timeout(&e) => {
            // Silent for a whole pong timeout: the peer is probably gone, so
            // do not wait for an answer to the Close.
            let _ = wire.send_close(Some(&close_frame(CloseCode::Away, PING_TIMEOUT)));
            wire.shutdown(Shutdown::Both);
            return Ending::WeClosed(CloseCode::Away, PING_TIMEOUT.into());
        }
        E::ConnectionClosed | E::AlreadyClosed => {
            return Ending::Dropped("connection closed".into());
        }
        E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            return Ending::Dropped("closed without a Close frame".into());
        }
        E::Io(e) => return Ending::Dropped(e.to_string()),
        E::Capacity(e) => (CloseCode::Size, e.to_string()),
        E::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8 in text".to_string()),
        E::Protocol(e) => (CloseCode::Protocol, e.to_string()),
        e => (CloseCode::Error, e.to_string()),
    };
    close_with(wire, outbox, code, &reason, timing)
}

/// Queues our Close behind what is already queued (the echo of the last
/// good message goes out first), then lingers: drains what the peer still
/// sends (its Close answer, or the rest of a frame we refused) until it
/// closes or `close_timeout` passes. Closing with unread bytes pending would
/// make the kernel send a reset, which can destroy our Close in flight. The
/// writer half-closes the socket right after the Close, so the peer sees
/// the end promptly.
fn close_with(
    wire: &Wire,
    outbox: &Outbox,
    code: CloseCode,
    reason: &str,
    timing: Timing,
) -> Ending {
    let close = close_frame(code, reason);
    // The writer is stuck or gone when the queue refuses: no waiting behind it.
    let sent = outbox.push_close(Frame::close(wire.role(), Some(&close)))
        || wire.send_close(Some(&close)).is_ok();
    if sent {
        let deadline = Instant::now() + timing.close_timeout;
        let mut sink = [0u8; 512];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || wire.stream().set_read_timeout(Some(left)).is_err() {
                break;
            }
            match wire.stream().read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
    Ending::WeClosed(code, reason.to_string())
}

/// Writes what is queued right now, up to and including a Close.
fn flush_queued(wire: &Wire, mailbox: &Mailbox) -> io::Result<()> {
    let mut batch = Vec::new();
    while let Some(item) = mailbox.try_next() {
        if let Out::Frame(close) = &item
            && close.is_close()
        {
            wire.send(batch.iter().flat_map(Out::frames))?;
            return wire.send_close_frame(close).map(|_| ());
        }
        batch.push(item);
    }
    wire.send(batch.iter().flat_map(Out::frames)).map(|_| ())
}

/// A Close frame's code and reason.
pub(crate) fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.to_string().into(),
    }
}

/// `interval` from now, if that is a representable time.
fn after(interval: Duration) -> Option<Instant> {
    Instant::now().checked_add(interval)
}

/// The writer loop. Returns when the connection is over, with the socket
/// shut down, and the failure that ended it, if any.
fn write_loop(wire: &Wire, mailbox: Mailbox, timing: Timing) -> Option<String> {
    let ping = Frame::ping(wire.role());
    let mut next_ping = after(timing.ping_interval);
    let mut batch: Vec<Out> = Vec::new();
    let mut wait = mailbox.waiter();
    // After our Close: wait for the reader to see the answer and exit.
    // Entries still arriving are dropped: nothing goes after a Close.
    let linger = |wait: &mut crate::session::outbox::Waiter| {
        let deadline = after(timing.close_timeout);
        while !mailbox.is_reader_done() && wait.next(deadline).is_ok() {}
    };
    let close_and_wait = |close: CloseFrame, wait: &mut crate::session::outbox::Waiter| {
        if let Ok(true) = wire.send_close(Some(&close)) {
            linger(wait);
        }
    };
    let problem = loop {
        if mailbox.take_raised() {
            if let Some(close) = mailbox.take_close() {
                close_and_wait(close, &mut wait);
                break None;
            }
            if mailbox.is_reader_done() {
                // Send what the reader queued last (its answer to the
                // peer's Close), then stop.
                let _ = flush_queued(wire, &mailbox);
                break None;
            }
        }
        // The writer's timer serves both the pings and the token's end.
        let wake = match (next_ping, timing.expires) {
            (Some(ping), Some(end)) => Some(ping.min(end)),
            (ping, end) => ping.or(end),
        };
        let item = match wait.next(wake) {
            Ok(Out::Wake) => continue,
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout)
                if timing.expires.is_some_and(|end| Instant::now() >= end) =>
            {
                close_and_wait(close_frame(CloseCode::Policy, TOKEN_EXPIRED), &mut wait);
                break Some(TOKEN_EXPIRED.to_string());
            }
            Err(RecvTimeoutError::Timeout) => {
                next_ping = after(timing.ping_interval);
                if let Err(e) = wire.send([&ping]) {
                    break Some(format!("ping failed: {e}"));
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                close_and_wait(close_frame(CloseCode::Away, "going away"), &mut wait);
                break None;
            }
        };
        // Take everything already queued, up to a Close (a graceful close
        // goes after the data queued before it).
        let mut close = None;
        let mut next = Some(item);
        let mut count = 0;
        let mut frames = 0;
        let mut taken_bytes = 0;
        while let Some(item) = next.take() {
            match item {
                Out::Frame(f) if f.is_close() => close = Some(f),
                item => {
                    let (counted, bytes) = item.counted();
                    count += counted;
                    frames += item.frames().count();
                    taken_bytes += bytes;
                    batch.push(item);
                    if frames < MAX_BATCH && taken_bytes < MAX_BATCH_BYTES {
                        next = mailbox.try_next();
                    }
                }
            }
        }
        // Out of the queue now, whatever the write does: the bound is on
        // what waits, as with gorilla's channel. (Subtracting after the
        // write would count frames the peer already has while this thread
        // waits to be scheduled.)
        mailbox.taken(count, taken_bytes);
        let result = wire.send(batch.iter().flat_map(Out::frames));
        // On the socket now: the hub may write to this connection itself again.
        mailbox.written(batch.iter().filter(|e| !matches!(e, Out::Wake)).count());
        batch.clear();
        if let Err(e) = result {
            break Some(format!("write failed: {e}"));
        }
        if count >= YIELD_AFTER {
            // Under load: let the hub queue more before the next write, so
            // that each system call carries more frames.
            std::thread::yield_now();
        }
        if let Some(close) = close {
            if let Ok(true) = wire.send_close_frame(&close) {
                linger(&mut wait);
            }
            break None;
        }
    };
    wire.shutdown(Shutdown::Both);
    problem
}
