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
//!   `ReaderIo`, which writes them under that lock,
//!   so a pong can never land in the middle of a data frame.
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

use std::io::{self, Read};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Message, WebSocketContext};

use crate::error::is_timeout;
use crate::outbox::{Mailbox, Out, Outbox};
use crate::wire::{Frame, MAX_BATCH, ReaderIo, Wire};

/// A batch of at least this many frames means the connection is busy.
const YIELD_AFTER: usize = 16;

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

/// Timing shared by both threads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub ping_interval: Duration,
    pub close_timeout: Duration,
}

/// Starts threads for [`start`]: the server's are counted against its
/// thread budget, the dialling side's are joined by its `Connection`.
pub(crate) trait Spawn {
    /// Runs `body` on a new thread called `name`.
    fn spawn(&self, name: String, body: Box<dyn FnOnce() + Send>) -> io::Result<()>;
}

/// What a session's reader does with what it reads, and what happens when
/// each thread ends.
pub(crate) struct Handlers<M, E, W> {
    /// Gets every text and binary message; `false` means its destination
    /// is gone, which closes with 1001.
    pub on_message: M,
    /// Runs on the reader's thread after the read loop, with how it ended.
    pub on_end: E,
    /// Runs on the writer's thread when it is done, with the failure that
    /// ended it, if any (a place for guards that must live as long).
    pub on_writer_end: W,
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
    wire: Arc<Wire>,
    mut ctx: Box<WebSocketContext>,
    (outbox, mailbox): (Outbox, Mailbox),
    timing: Timing,
    handlers: Handlers<M, E, W>,
) -> io::Result<()>
where
    M: FnMut(Message) -> bool + Send + 'static,
    E: FnOnce(Ending) + Send + 'static,
    W: FnOnce(Option<String>) + Send + 'static,
{
    let Handlers {
        mut on_message,
        on_end,
        on_writer_end,
    } = handlers;
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
            let ending = read_loop(&reader_wire, &mut ctx, &reader_outbox, timing, |m| {
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

/// The reader loop. Blocks until the connection ends; `on_message` gets
/// every text and binary message and returns `false` when it can take no
/// more (its destination is gone), which closes with 1001. The answer to
/// the peer's Close goes into the connection's own `outbox`, behind what
/// is already queued (an echo of the peer's last message, say).
fn read_loop(
    wire: &Wire,
    ctx: &mut WebSocketContext,
    outbox: &Outbox,
    timing: Timing,
    mut on_message: impl FnMut(Message) -> bool,
) -> Ending {
    loop {
        match ctx.read(&mut ReaderIo(wire)) {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                // Data that arrives after our Close is still delivered: the
                // peer may send until its own Close (RFC 6455 1.4).
                if !on_message(message) {
                    return close_with(
                        wire,
                        outbox,
                        CloseCode::Away,
                        "server shutting down",
                        timing,
                    );
                }
            }
            Ok(Message::Close(frame)) => {
                // Answer with the same code (the wire drops it if this
                // answers our own Close). A full queue means the writer is
                // stuck: answer at once rather than wait behind it.
                if !outbox.push_close(Frame::close(wire.role(), frame.as_ref())) {
                    if let Err(e) = wire.send_close(frame.as_ref()) {
                        return Ending::Dropped(format!("close reply failed: {e}"));
                    }
                }
                return Ending::PeerClosed(frame);
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
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
            let _ = wire.send_close(Some(&close_frame(CloseCode::Away, "ping timeout")));
            wire.shutdown(Shutdown::Both);
            return Ending::WeClosed(CloseCode::Away, "ping timeout".into());
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
        if let Out::Frame(close) = &item {
            if close.is_close() {
                wire.send(batch.iter().flat_map(Out::frames))?;
                return wire.send_close_frame(close).map(|_| ());
            }
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
    let linger = |wait: &mut crate::outbox::Waiter| {
        let deadline = after(timing.close_timeout);
        while !mailbox.is_reader_done() && wait.next(deadline).is_ok() {}
    };
    let close_and_wait = |close: CloseFrame, wait: &mut crate::outbox::Waiter| {
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
        let item = match wait.next(next_ping) {
            Ok(Out::Wake) => continue,
            Ok(item) => item,
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
        while let Some(item) = next.take() {
            match item {
                Out::Frame(f) if f.is_close() => close = Some(f),
                item => {
                    count += item.frames().count();
                    batch.push(item);
                    if count < MAX_BATCH {
                        next = mailbox.try_next();
                    }
                }
            }
        }
        // Out of the queue now, whatever the write does: the bound is on
        // what waits, as with gorilla's channel. (Subtracting after the
        // write would count frames the peer already has while this thread
        // waits to be scheduled.)
        let bytes: usize = batch.iter().flat_map(Out::frames).map(Frame::len).sum();
        mailbox.taken(count, bytes);
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
