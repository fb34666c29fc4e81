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
//! * The writer **waits on its queue alone** (plus the ping deadline): close
//!   requests and the reader's end are `Signals` it checks before every
//!   wait, nudged by an empty `Out::Wake` entry. A connection then needs
//!   one channel instead of four (about 1 KiB less per idle client).
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

use std::io::Read;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender};
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
    /// No frame: wakes the writer to look at its [`Signals`].
    Wake,
}

impl Out {
    /// The frames of this entry that go to this connection.
    pub(crate) fn frames(&self) -> impl Iterator<Item = &Frame> {
        let (one, many, skip) = match self {
            Out::Frame(f) => (Some(f), &[][..], None),
            Out::Burst { frames, skip } => (None, &frames[..], *skip),
            Out::Wake => (None, &[][..], None),
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

/// What reaches the writer ahead of its queue: a request to close now
/// (eviction, shutdown, a stuck user close) and the news that the reader
/// has ended. Whoever raises one then queues [`Out::Wake`], so the writer
/// blocks on its queue alone, and a connection allocates one channel rather
/// than four (a select over a close channel, a done channel and a ping
/// ticker as well cost about 1 KiB per client, and no less CPU per wake-up).
#[derive(Debug, Default)]
pub(crate) struct Signals {
    raised: AtomicBool,
    close: Mutex<Option<CloseFrame>>,
    reader_done: AtomicBool,
}

impl Signals {
    /// Asks the writer to send this Close next and stop; the first request wins.
    pub(crate) fn close(&self, frame: CloseFrame, queue: &Sender<Out>) {
        if let Ok(mut slot) = self.close.lock() {
            slot.get_or_insert(frame);
        }
        self.raise(queue);
    }

    /// Tells the writer that the reader has exited.
    pub(crate) fn reader_done(&self, queue: &Sender<Out>) {
        self.reader_done.store(true, Ordering::Release);
        self.raise(queue);
    }

    fn raise(&self, queue: &Sender<Out>) {
        self.raised.store(true, Ordering::Release);
        // A full queue needs no nudge: the writer checks the signals
        // before every wait, and a non-empty queue does not wait.
        let _ = queue.try_send(Out::Wake);
    }

    /// A guard that tells the writer when the reader ends, however it ends
    /// (a panicking reader included: the writer must not outlive it).
    pub(crate) fn on_reader_exit(self: Arc<Self>, queue: Sender<Out>) -> ReaderExit {
        ReaderExit {
            signals: self,
            queue,
        }
    }

    fn take_close(&self) -> Option<CloseFrame> {
        self.close.lock().ok().and_then(|mut slot| slot.take())
    }

    fn is_reader_done(&self) -> bool {
        self.reader_done.load(Ordering::Acquire)
    }
}

/// See [`Signals::on_reader_exit`].
pub(crate) struct ReaderExit {
    signals: Arc<Signals>,
    queue: Sender<Out>,
}

impl Drop for ReaderExit {
    fn drop(&mut self) {
        self.signals.reader_done(&self.queue);
    }
}

/// What the writer listens to.
pub(crate) struct WriterInputs {
    /// Frames to send, in order. A Close frame among them is a graceful
    /// close: everything queued before it is sent first.
    pub queue: Receiver<Out>,
    /// Close requests and the reader's end, ahead of the queue.
    pub signals: Arc<Signals>,
    /// Queued but not yet written; the writer subtracts what it wrote.
    pub load: Arc<Load>,
}

/// `interval` from now, if that is a representable time.
fn after(interval: Duration) -> Option<Instant> {
    Instant::now().checked_add(interval)
}

/// The writer's wait for its queue.
///
/// Through a `Select` rather than `recv`: `recv` spins and yields the CPU
/// a few times before it sleeps, and with a thread per client thousands of
/// idle writers yielding to each other cost more than the wake-ups they
/// save (measured: +15 % server CPU per delivery at light load).
struct QueueWait<'a> {
    queue: &'a Receiver<Out>,
    select: Select<'a>,
}

impl<'a> QueueWait<'a> {
    fn new(queue: &'a Receiver<Out>) -> QueueWait<'a> {
        let mut select = Select::new_biased();
        select.recv(queue);
        QueueWait { queue, select }
    }

    /// The next entry, waiting until `deadline` (none: for ever).
    fn next(&mut self, deadline: Option<Instant>) -> Result<Out, RecvTimeoutError> {
        let op = match deadline {
            Some(deadline) => self
                .select
                .select_deadline(deadline)
                .map_err(|_| RecvTimeoutError::Timeout)?,
            None => self.select.select(),
        };
        op.recv(self.queue)
            .map_err(|_| RecvTimeoutError::Disconnected)
    }
}

/// The writer loop. Returns when the connection is over, with the socket
/// shut down.
pub(crate) fn write_loop(wire: &Wire, inputs: WriterInputs, timing: Timing) -> Option<String> {
    let WriterInputs {
        queue,
        signals,
        load,
    } = inputs;
    let ping = Frame::ping(wire.role());
    let mut next_ping = after(timing.ping_interval);
    let mut batch: Vec<Out> = Vec::new();
    let mut wait = QueueWait::new(&queue);
    // After our Close: wait for the reader to see the answer and exit.
    // Entries still arriving are dropped: nothing goes after a Close.
    let linger = |wait: &mut QueueWait| {
        let deadline = after(timing.close_timeout);
        while !signals.is_reader_done() && wait.next(deadline).is_ok() {}
    };
    let close_and_wait = |close: CloseFrame, wait: &mut QueueWait| {
        if let Ok(true) = wire.send_close(Some(&close)) {
            linger(wait);
        }
    };
    let problem = loop {
        if signals.raised.swap(false, Ordering::AcqRel) {
            if let Some(close) = signals.take_close() {
                close_and_wait(close, &mut wait);
                break None;
            }
            if signals.is_reader_done() {
                // Send what the reader queued last (its answer to the
                // peer's Close), then stop.
                let _ = flush_queued(wire, &queue);
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
                        next = queue.try_recv().ok();
                    }
                }
            }
        }
        // Out of the queue now, whatever the write does: the bound is on
        // what waits, as with gorilla's channel. (Subtracting after the
        // write would count frames the peer already has while this thread
        // waits to be scheduled.)
        let bytes: usize = batch.iter().flat_map(Out::frames).map(Frame::len).sum();
        load.sub(count, bytes);
        let result = wire.send(batch.iter().flat_map(Out::frames));
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
