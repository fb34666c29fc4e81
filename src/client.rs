//! One WebSocket connection as two threads: the reader (gorilla's
//! `readPump`) and the writer (`writePump`). Used by the server for every hub
//! and echo client, and by [`Connection`](crate::Connection) on the client side.
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
//!   The queue holds `Out` entries: a single frame, or a burst the hub
//!   shares between all receivers of a room (frames from this client itself
//!   are skipped). A busy writer yields after a large batch so that the next
//!   system call carries more frames.
//! * **Close** is tracked by `Wire`: whoever sends our Close (the reader
//!   answering the peer or failing the connection, the writer on eviction or
//!   shutdown) marks it, and nothing is written after it; the peer's Close is
//!   answered, and a failed connection closed, *behind* what is already
//!   queued, and the writer half-closes right after our Close. The reader exits on
//!   the peer's Close, an error, or EOF; the writer exits when the reader is
//!   gone (a dropped channel), after its own Close has been answered or
//!   `close_timeout` passed, or on a failed write — and then shuts the socket
//!   down so that a reader blocked in `read` wakes up.
//!
//! Keepalive: the socket's read timeout is the pong timeout, so a peer that
//! sends nothing at all — neither data nor pongs to our pings — for that long
//! makes `read` fail, and the reader closes the connection.

use std::io::Read;
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select_biased, tick};
use tungstenite::error::ProtocolError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Message, WebSocketContext};

use crate::hub::ClientId;
use crate::wire::{Frame, MAX_BATCH, ReaderIo, Wire};

/// A batch of at least this many frames means the connection is busy.
const YIELD_AFTER: usize = 16;

/// One entry of a connection's send queue.
#[derive(Clone, Debug)]
pub(crate) enum Out {
    /// One frame: an echo, a message from `Connection::send`, a Close.
    Frame(Frame),
    /// Frames the hub fanned out together, shared by every receiver's
    /// queue; those sent by `skip` are not for this receiver.
    Burst {
        frames: Arc<[(Option<ClientId>, Frame)]>,
        skip: Option<ClientId>,
    },
}

impl Out {
    /// The frames of this entry that go to this connection.
    pub(crate) fn frames(&self) -> impl Iterator<Item = &Frame> {
        let (one, many, skip) = match self {
            Out::Frame(f) => (Some(f), &[][..], None),
            Out::Burst { frames, skip } => (None, &frames[..], *skip),
        };
        one.into_iter().chain(
            many.iter()
                .filter(move |(from, _)| skip.is_none() || *from != skip)
                .map(|(_, f)| f),
        )
    }
}

/// What is queued for a connection and not yet written: the hub's bound
/// on a slow client. Whoever queues adds; the writer subtracts.
#[derive(Debug, Default)]
pub(crate) struct Load {
    pub messages: AtomicUsize,
    pub bytes: AtomicUsize,
}

impl Load {
    pub(crate) fn add(&self, messages: usize, bytes: usize) -> (usize, usize) {
        (
            self.messages.fetch_add(messages, Ordering::Relaxed),
            self.bytes.fetch_add(bytes, Ordering::Relaxed),
        )
    }

    pub(crate) fn sub(&self, messages: usize, bytes: usize) {
        self.messages.fetch_sub(messages, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// How a connection ended, as the reader saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// The reader loop. Blocks until the connection ends; `on_message` gets
/// every text and binary message and returns `false` when it can take no
/// more (its destination is gone), which closes with 1001. `queue` is the
/// connection's own send queue: the answer to the peer's Close goes behind
/// what is already queued (an echo of the peer's last message, say).
pub(crate) fn read_loop(
    wire: &Wire,
    ctx: &mut WebSocketContext,
    queue: &Sender<Out>,
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
                        queue,
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
                if queue
                    .try_send(Out::Frame(Frame::close(wire.role(), frame.as_ref())))
                    .is_err()
                {
                    if let Err(e) = wire.send_close(frame.as_ref()) {
                        return Ending::Dropped(format!("close reply failed: {e}"));
                    }
                }
                return Ending::PeerClosed(frame);
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
            Err(e) => return fail(wire, queue, e, timing),
        }
    }
}

/// Maps a read error to the close code RFC 6455 asks for, and closes.
fn fail(wire: &Wire, queue: &Sender<Out>, err: tungstenite::Error, timing: Timing) -> Ending {
    use tungstenite::Error as E;
    let (code, reason) = match err {
        E::Io(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
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
    close_with(wire, queue, code, &reason, timing)
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
    queue: &Sender<Out>,
    code: CloseCode,
    reason: &str,
    timing: Timing,
) -> Ending {
    let close = close_frame(code, reason);
    let sent = match queue.try_send(Out::Frame(Frame::close(wire.role(), Some(&close)))) {
        Ok(()) => true,
        // The writer is stuck or gone: no waiting behind it.
        Err(_) => wire.send_close(Some(&close)).is_ok(),
    };
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
fn flush_queued(wire: &Wire, queue: &Receiver<Out>) -> std::io::Result<()> {
    let mut batch = Vec::new();
    while let Ok(item) = queue.try_recv() {
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

pub(crate) fn close_frame(code: CloseCode, reason: &str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.to_string().into(),
    }
}

/// What the writer listens to.
pub(crate) struct WriterInputs {
    /// Frames to send, in order. A Close frame among them is a graceful
    /// close: everything queued before it is sent first.
    pub queue: Receiver<Out>,
    /// A request to close with this frame (eviction, shutdown, user close).
    pub control: Receiver<CloseFrame>,
    /// Disconnects when the reader has exited.
    pub reader_done: Receiver<()>,
    /// Queued but not yet written; the writer subtracts what it wrote.
    pub load: Arc<Load>,
}

/// The writer loop. Returns when the connection is over, with the socket
/// shut down.
pub(crate) fn write_loop(wire: &Wire, inputs: WriterInputs, timing: Timing) -> Option<String> {
    let WriterInputs {
        queue,
        control,
        reader_done,
        load,
    } = inputs;
    let ticker = tick(timing.ping_interval);
    let ping = Frame::ping(wire.role());
    let mut batch: Vec<Out> = Vec::new();
    let close_and_wait = |close: CloseFrame| {
        if let Ok(true) = wire.send_close(Some(&close)) {
            // The reader sees the answer and exits, which disconnects reader_done.
            let _ = reader_done.recv_timeout(timing.close_timeout);
        }
    };
    let problem = loop {
        select_biased! {
            recv(control) -> close => {
                match close {
                    Ok(close) => close_and_wait(close),
                    // Dropped without a word: the hub let go of a client
                    // whose reader has ended. As below.
                    Err(_) => drop(flush_queued(wire, &queue)),
                }
                break None;
            }
            recv(reader_done) -> _ => {
                // The reader is gone; send what it queued last (its answer
                // to the peer's Close), then stop.
                let _ = flush_queued(wire, &queue);
                break None;
            }
            recv(queue) -> item => {
                let Ok(item) = item else {
                    close_and_wait(close_frame(CloseCode::Away, "going away"));
                    break None;
                };
                // Take everything already queued, up to a Close (a graceful
                // close goes after the data queued before it).
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
                                next = queue.try_recv().ok();
                            }
                        }
                    }
                }
                // Out of the queue now, whatever the write does: the bound is
                // on what waits, as with gorilla's channel. (Subtracting after
                // the write would count frames the peer already has while
                // this thread waits to be scheduled.)
                let bytes: usize = batch.iter().flat_map(Out::frames).map(Frame::len).sum();
                load.sub(count, bytes);
                let result = wire.send(batch.iter().flat_map(Out::frames));
                batch.clear();
                if let Err(e) = result {
                    break Some(format!("write failed: {e}"));
                }
                if count >= YIELD_AFTER {
                    // Under load: let the hub queue more before the next
                    // write, so that each system call carries more frames.
                    std::thread::yield_now();
                }
                if let Some(close) = close {
                    if let Ok(true) = wire.send_close_frame(&close) {
                        let _ = reader_done.recv_timeout(timing.close_timeout);
                    }
                    break None;
                }
            }
            recv(ticker) -> _ => {
                if let Err(e) = wire.send([&ping]) {
                    break Some(format!("ping failed: {e}"));
                }
            }
        }
    };
    wire.shutdown(Shutdown::Both);
    problem
}
