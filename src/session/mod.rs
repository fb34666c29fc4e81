//! One WebSocket session as a reader thread (gorilla's `readPump`,
//! `reader`) and a writer thread (`writePump`, `writer`), over the
//! connection's shared write side (`wire`), the frames that travel to it
//! (`frame`) and the mailbox they wait in (`outbox`); how sessions end is
//! `close`; the keepalive of sessions without a writer is `keeper`.
//! [`start_writer`] arranges the writer and gives back the [`Reader`],
//! which the caller runs on a thread it already has: the server runs it on
//! the connection's HTTP thread, and starts a chat client's writer only
//! when the client first needs one ([`WriterStart::Lazy`]: a write its
//! socket does not take at once, a Close, a ping it cannot take) — a
//! client that keeps up costs one thread. [`start`] starts both at once,
//! the reader on a thread of its own too: [`Connection`](crate::Connection)
//! on the dialling side.
//! Each message the reader reads goes to the session's [`Target`]: the
//! hub, the peer itself (echo), or the dialling side's receive channel.
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
//!   down so that a reader blocked in `read` wakes up. A session whose writer
//!   was never needed is ended by its reader: it sends its Close (or its
//!   answer) itself, then shuts the socket down.
//! * **Half a frame**: a direct write the socket took only in part queues
//!   its rest under the write lock, and every other write waits behind it
//!   (a pong is dropped) until the writer has sent it.
//!
//! Keepalive: the socket's read timeout is the pong timeout, so a peer that
//! sends nothing at all — neither data nor pongs to our pings — for that long
//! makes `read` fail, and the reader closes the connection. Pings come from
//! the writer's timer, or, for a session without one, from the keeper.
//!
//! May touch: the connection's `Wire`, its outbox, its context; what a
//! message means is the caller's (its [`Target`]).

pub(crate) mod close;
pub(crate) mod frame;
mod keeper;
pub(crate) mod outbox;
mod reader;
pub(crate) use reader::CONTEXT_READ_BYTES;
pub(crate) mod wire;
mod writer;

use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::protocol::{Message, WebSocketContext};

use crate::deflate::Inflater;
use crate::memory::Memory;
use close::{Close, Ending};
pub(crate) use keeper::Keeper;
use outbox::{Mailbox, Outbox};
use reader::{ReadSide, read_loop};
use wire::Wire;
pub(crate) use writer::MAX_BATCH_BYTES;
use writer::write_loop;

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

/// Starts threads for [`start`]: the server's are counted against its
/// thread budget, the dialling side's are joined by its `Connection`.
pub(crate) trait Spawn {
    /// Runs `body` on a new thread called `name`.
    fn spawn(&self, name: String, body: Box<dyn FnOnce() + Send>) -> io::Result<()>;
}

/// Where a session's reader hands what it reads: each text and binary
/// message, and how the connection ended. A server's chat client hands
/// its messages to the hub and an echo client back to the peer
/// (`server::relay`); a dialled [`Connection`](crate::Connection) to its
/// receive channel.
pub(crate) trait Target: Send + 'static {
    /// One text or binary message; a [`Stop`] ends the session.
    fn deliver(&mut self, message: Message) -> Result<(), Stop>;
    /// On the reader's thread, after the read loop, with how it ended.
    fn ended(self, ending: Ending);
}

/// Why a [`Target`] wants no more messages.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    /// Their destination is gone (the hub stopped): close with 1001.
    Gone,
    /// The client broke a rule: close with this.
    Close(Close),
}

/// What a session runs on.
pub(crate) struct Parts {
    /// The socket's shared write side.
    pub wire: Arc<Wire>,
    /// The reader's protocol state (boxed: see [`Reader`]).
    pub ctx: Box<WebSocketContext>,
    /// The writer's queue, both ends.
    pub mailbox: (Outbox, Mailbox),
    /// The budget incoming messages count against (none: count nothing).
    pub memory: Option<Arc<Memory>>,
    /// With permessage-deflate agreed: the layer that inflates the peer's
    /// compressed messages below the context.
    pub inflater: Option<Box<Inflater>>,
    /// The most one read from the socket takes (`--read-buffer-bytes`).
    pub read_bytes: usize,
}

/// When a session's writer thread starts.
pub(crate) enum WriterStart<'a> {
    /// At once, on a thread from this spawner (the dialling side, echo
    /// clients).
    Now(&'a dyn Spawn),
    /// When the connection first needs one (a write the socket does not
    /// take at once, a Close, a ping it cannot take), on a thread from this
    /// spawner; until then the keeper pings it, and a session that never
    /// needs one ends without it. Only for outboxes with a direct wire.
    Lazy(Box<dyn Spawn + Send>, &'a Keeper),
}

/// Starts (or arranges) a session's writer, called `{name}-write`, and
/// returns its reader, for the caller to run on a thread of its choosing
/// — the server runs it on the connection's own thread, which read the
/// HTTP request. The reader hands what it reads to `target`;
/// `on_writer_end` runs when the writer is done (on its thread, or on the
/// reader's when there never was one), with the failure that ended it, if
/// any (a place for guards that must live as long).
///
/// If a writer to start now cannot be, the peer gets 1013 "server
/// overloaded" and the error is returned; the caller undoes whatever it
/// registered.
pub(crate) fn start_writer<T, W>(
    start: WriterStart<'_>,
    name: &str,
    parts: Parts,
    timing: Timing,
    target: T,
    on_writer_end: W,
) -> io::Result<Reader<T>>
where
    T: Target,
    W: FnOnce(Option<String>) + Send + 'static,
{
    let Parts {
        wire,
        ctx,
        mailbox: (outbox, mailbox),
        memory,
        inflater,
        read_bytes,
    } = parts;
    let name = format!("{name}-write");
    match start {
        WriterStart::Now(spawner) => {
            outbox.eager_writer();
            let writer_wire = wire.clone();
            let writer = spawner.spawn(
                name,
                Box::new(move || on_writer_end(write_loop(&writer_wire, mailbox, timing))),
            );
            if let Err(e) = writer {
                let _ = wire.send_close(Some(&Close::Overloaded.frame()));
                return Err(e);
            }
        }
        WriterStart::Lazy(spawner, keeper) => {
            let starter = lazy_starter(spawner, name, wire.clone(), mailbox, timing, on_writer_end);
            outbox.lazy_writer(starter);
            keeper.keep(outbox.clone(), timing);
        }
    }
    Ok(Reader(Some(ReaderParts {
        wire,
        ctx,
        outbox,
        memory,
        inflater,
        read_bytes,
        timing,
        target,
    })))
}

/// What starts a lazy writer (`true`) or, when the session ends without
/// having needed one, does what its end would have (`false`): the socket
/// shut down, `on_writer_end`. A writer that cannot be started leaves the
/// connection unwritable: it is shut down, and the reader ends.
fn lazy_starter<W>(
    spawner: Box<dyn Spawn + Send>,
    name: String,
    wire: Arc<Wire>,
    mailbox: Mailbox,
    timing: Timing,
    on_writer_end: W,
) -> outbox::Starter
where
    W: FnOnce(Option<String>) + Send + 'static,
{
    Box::new(move |spawn: bool| {
        if !spawn {
            drop(mailbox);
            wire.shutdown(Shutdown::Both);
            on_writer_end(None);
            return;
        }
        let writer_wire = wire.clone();
        let body = Box::new(move || on_writer_end(write_loop(&writer_wire, mailbox, timing)));
        if let Err(e) = spawner.spawn(name, body) {
            // The spawner reports it (the server: once a second, counted).
            log::debug!("no thread for a connection's writer ({e}): closing it");
            wire.shutdown(Shutdown::Both);
        }
    })
}

/// Starts a session's writer, then its reader, each on a thread of its
/// own from `spawner` (the dialling side's): [`start_writer`], with the
/// reader on a thread called `{name}-read`.
///
/// If the reader cannot be started, the peer gets 1013 "server
/// overloaded", the writer is released, and the error is returned.
pub(crate) fn start<T, W>(
    spawner: &dyn Spawn,
    name: &str,
    parts: Parts,
    timing: Timing,
    target: T,
    on_writer_end: W,
) -> io::Result<()>
where
    T: Target,
    W: FnOnce(Option<String>) + Send + 'static,
{
    let start = WriterStart::Now(spawner);
    let reader = start_writer(start, name, parts, timing, target, on_writer_end)?;
    // A reader dropped unrun (the spawn failed) closes with 1013 and
    // releases the writer.
    spawner.spawn(format!("{name}-read"), Box::new(move || reader.run()))
}

/// A session's reader, its writer already running: [`Reader::run`] reads
/// until the connection ends. Dropped without running, it closes the
/// connection with 1013 "server overloaded" and releases the writer.
pub(crate) struct Reader<T: Target>(Option<ReaderParts<T>>);

struct ReaderParts<T> {
    wire: Arc<Wire>,
    /// Boxed: moved to the thread that runs it, it would otherwise be
    /// copied through the thread start-up's frames.
    ctx: Box<WebSocketContext>,
    outbox: Outbox,
    memory: Option<Arc<Memory>>,
    inflater: Option<Box<Inflater>>,
    read_bytes: usize,
    timing: Timing,
    target: T,
}

impl<T: Target> Reader<T> {
    /// Reads on the calling thread until the connection ends, hands each
    /// message to the target and then how it ended, and tells the writer.
    pub(crate) fn run(mut self) {
        let Some(parts) = self.0.take() else {
            return;
        };
        let ReaderParts {
            wire,
            mut ctx,
            outbox,
            memory,
            inflater,
            read_bytes,
            timing,
            mut target,
        } = parts;
        // Dropped after `ended` (the writer outlives what the reader
        // says), and by a panic too.
        let _exit = outbox.on_reader_exit();
        let mut io = ReadSide::new((&wire, read_bytes), memory.clone(), timing, inflater);
        let ending = read_loop(&mut io, &mut ctx, &outbox, timing, memory, &mut target);
        target.ended(ending);
    }
}

impl<T: Target> Drop for Reader<T> {
    fn drop(&mut self) {
        if let Some(parts) = self.0.take() {
            let _ = parts.wire.send_close(Some(&Close::Overloaded.frame()));
            parts.outbox.reader_done();
        }
    }
}
