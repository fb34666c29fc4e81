//! One connection's outbox: the mailbox through which frames reach its
//! writer thread, and the one place where a delivery is counted, bounded,
//! and either queued or refused.
//!
//! The sending half, [`Outbox`], is held by whoever gives the connection
//! something to write: the hub (broadcasts, eviction, shutdown), the
//! connection's own reader (its answer to the peer's Close), and
//! [`Connection::send`](crate::Connection::send) on the dialling side. The
//! receiving half, [`Mailbox`], belongs to the writer alone.
//!
//! What travels:
//! * **Entries** ([`Out`]): a single frame, or a burst the hub shares
//!   between every receiver of a room (a receiver's own frames are skipped
//!   when it reads the burst), or an empty [`Out::Wake`].
//! * **Signals**, ahead of the queue: a request to close now (eviction,
//!   shutdown, a stuck user close) and the news that the reader has ended.
//!   Whoever raises one queues [`Out::Wake`], so the writer waits on its
//!   queue alone: one channel per connection, not four (a select over a
//!   close channel, a done channel and a ping ticker as well costs about
//!   1 KiB per client, and no less CPU per wake-up).
//!
//! # Delivery without a wake-up
//!
//! Waking a sleeping writer thread costs a futex wake and two context
//! switches per delivery, which at light load is most of the server's
//! work. So an outbox made with a direct `Wire` (the server's chat
//! clients) first tries to write an offered entry itself, on the offering
//! thread (the hub): only when nothing is queued or being written for the
//! connection (`pending` is zero), only for entries up to
//! [`DIRECT_MAX_BYTES`], and only if the write lock is free and the socket
//! takes the bytes at once (`Wire::try_send_now`). What the socket does not
//! take is queued as the first entry, so the writer finishes the frame and
//! then owns the connection until its queue is empty again. Pings and
//! Close never take this path; large messages and slow clients keep the
//! queued path. Order holds because the hub is the only thread that offers
//! data to a server client, and the writer lowers `pending` only after the
//! entries it took are on the socket. Until the 101 is out the outbox is
//! not open: deliveries queue without starting a writer, and the
//! connection's own thread writes them ([`Mailbox::open`]).
//!
//! Invariants: [`Outbox::offer`] is the only way counted data gets in, and
//! [`Mailbox::taken`] the only way it is uncounted, so the load is what
//! waits in the queue (as with gorilla's `send` channel). A chat
//! connection's channel is unbounded (a bounded crossbeam channel
//! allocates every slot up front: 12 KiB for 256 entries, which every idle
//! client would pay); its bound is the [`Bound`] checked here, in messages
//! and bytes. Nothing here blocks except [`Outbox::send`], which only the
//! dialling side uses.
//!
//! # The writer, when it is needed
//!
//! A server chat client's writer thread is started by the first thing that
//! needs it ([`Outbox::need_writer`]: an entry queued, a close requested,
//! a ping the socket does not take); a session that never needs one is
//! finished by its reader ([`Outbox::reader_done`]). The starter, set by
//! the session, runs once, whichever comes first.
//!
//! May touch: the channel, the atomics, the close slot and the starter in
//! this file (running the starter starts the writer's thread); with a
//! direct `Wire`, the connection's socket through it (writes by
//! [`Outbox::offer`], the keeper's pings by [`Outbox::ping_now`], the
//! reader's Close by [`Outbox::push_close`] when there is no writer, and a
//! shutdown by [`Outbox::evict`] when half a frame is out); nothing else.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, RecvTimeoutError, Select, SendTimeoutError, Sender, TrySendError, bounded, unbounded,
};
use tungstenite::Bytes;
use tungstenite::protocol::CloseFrame;

use crate::id::ClientId;
use crate::session::frame::Frame;
use crate::session::wire::{Direct, Wire};

/// Largest offer the hub writes itself; larger ones go to the writer (a
/// partial write's rest is copied, so this bounds the copy too).
pub(crate) const DIRECT_MAX_BYTES: usize = 64 << 10;

/// The bit of the outbox's `pending` word that allows direct writes (see
/// [`Mailbox::open`]); the rest of the word counts data entries queued or
/// being written.
const OPEN: usize = 1 << (usize::BITS - 1);

/// Most rounds of writing what was queued before the 101 (see
/// [`Mailbox::open`]) before a writer takes over.
const OPEN_ROUNDS: usize = 8;

/// What [`Mailbox::write_queued`] met in the queue.
pub(crate) enum Queued {
    /// Entries, written.
    Written,
    /// Nothing.
    Nothing,
    /// A raised signal: the writer's to handle.
    Signal,
    /// A Close, written.
    Closed,
}

/// Frames the hub fanned out together, with who sent each (`None`: the
/// host program), shared by every receiver of the room.
pub(crate) type Burst = Arc<[(Option<ClientId>, Frame)]>;

/// One entry of a connection's queue.
#[derive(Clone, Debug)]
pub(crate) enum Out {
    /// One frame: a message from `Connection::send`, a Close.
    Frame(Frame),
    /// Frames the hub fanned out together, shared by every receiver's
    /// queue; those sent by `skip` are not for this receiver.
    Burst {
        frames: Burst,
        skip: Option<ClientId>,
    },
    /// What a joining client gets first (its room's history, a presence
    /// snapshot): counted in bytes but not against the message bound.
    History(Burst),
    /// No frame: wakes the writer to look at its signals.
    Wake,
}

impl Out {
    /// The frames of this entry that go to this connection.
    pub(crate) fn frames(&self) -> impl Iterator<Item = &Frame> {
        let (one, many, skip) = match self {
            Out::Frame(f) => (Some(f), &[][..], None),
            Out::Burst { frames, skip } => (None, &frames[..], *skip),
            Out::History(frames) => (None, &frames[..], None),
            Out::Wake => (None, &[][..], None),
        };
        one.into_iter().chain(burst_frames(many, skip))
    }

    /// What this entry counts in its outbox's load: messages (against the
    /// message bound) and bytes.
    pub(crate) fn counted(&self) -> (usize, usize) {
        let bytes = self.frames().map(Frame::len).sum();
        match self {
            Out::History(_) => (0, bytes),
            // The rest of a frame written in part counts its bytes only,
            // as it was queued (its message was counted when offered).
            Out::Frame(f) if f.is_raw() => (0, bytes),
            _ => (self.frames().count(), bytes),
        }
    }
}

/// The frames of a burst that go to a receiver that skips `skip`'s own.
fn burst_frames(
    frames: &[(Option<ClientId>, Frame)],
    skip: Option<ClientId>,
) -> impl Iterator<Item = &Frame> {
    frames
        .iter()
        .filter(move |(from, _)| skip.is_none() || *from != skip)
        .map(|(_, f)| f)
}

/// How much may wait in one outbox before [`Outbox::offer`] refuses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub messages: usize,
    pub bytes: usize,
}

impl Bound {
    /// No bound beyond the channel's own capacity.
    pub(crate) const NONE: Bound = Bound {
        messages: usize::MAX,
        bytes: usize::MAX,
    };
}

/// Why an offer was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The bound (or the channel) is full: the receiver is not keeping up.
    Full,
    /// The writer is gone.
    Gone,
}

impl State {
    /// Open, with nothing queued or being written: a delivery may be
    /// written directly.
    fn open_and_idle(&self) -> bool {
        self.pending.load(Ordering::SeqCst) == OPEN
    }
}

/// State both halves see.
#[derive(Debug)]
struct State {
    bound: Bound,
    /// Queued and not yet taken by the writer.
    messages: AtomicUsize,
    bytes: AtomicUsize,
    /// Data entries queued or being written by the writer, and the
    /// [`OPEN`] bit: one word, so that the opening thread can open only
    /// when nothing is queued, in one step.
    pending: AtomicUsize,
    /// Refused for good: a full outbox whose writer was asked to close.
    evicted: AtomicBool,
    raised: AtomicBool,
    close: Mutex<Option<CloseFrame>>,
    reader_done: AtomicBool,
    /// Whether the connection has its writer thread (see [`Writer`]).
    writer: AtomicU8,
    /// Starts the writer (`true`) or, when the session ends without ever
    /// needing one, finishes in its place (`false`); taken once.
    starter: Mutex<Option<Slot>>,
}

/// The starter in its slot (opaque to `Debug`).
struct Slot(Starter);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Starter")
    }
}

/// See [`State::starter`].
pub(crate) type Starter = Box<dyn FnOnce(bool) + Send>;

/// The states of a connection's writer thread (`State::writer`).
struct Writer;

impl Writer {
    /// None yet: nothing has needed one.
    const NONE: u8 = 0;
    /// Started (or being started, or its start failed).
    const STARTED: u8 = 1;
    /// The session ended without one.
    const NEVER: u8 = 2;
}

impl State {
    /// The close request's slot, recovered if a panic poisoned it (as
    /// `Wire`'s lock is): an `Option` is never left half-written, and a
    /// panic elsewhere must not make the writer lose a close.
    fn close_slot(&self) -> MutexGuard<'_, Option<CloseFrame>> {
        self.close.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The writer's starter, recovered the same way.
    fn starter_slot(&self) -> MutexGuard<'_, Option<Slot>> {
        self.starter.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending half of a connection's mailbox. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    tx: Sender<Out>,
    state: Arc<State>,
    /// Where [`Outbox::offer`] may write directly (see the module doc).
    direct: Option<Arc<Wire>>,
    /// The queue's own end, to empty it when the client is evicted (only
    /// with `direct`: the server's unbounded queues).
    drain: Option<Receiver<Out>>,
}

/// The writer's half.
pub(crate) struct Mailbox {
    rx: Receiver<Out>,
    state: Arc<State>,
}

/// A new mailbox: unbounded channel with `bound` checked on every offer
/// (the server's clients), or a channel of `capacity` entries on which
/// [`Outbox::send`] blocks (the dialling side). With `direct`, offers may
/// be written at once to that wire; only one thread may then offer.
pub(crate) fn new(
    bound: Bound,
    capacity: Option<usize>,
    direct: Option<Arc<Wire>>,
) -> (Outbox, Mailbox) {
    let (tx, rx) = match capacity {
        Some(n) => bounded(n.max(1)),
        None => unbounded(),
    };
    let state = Arc::new(State {
        bound,
        messages: AtomicUsize::new(0),
        bytes: AtomicUsize::new(0),
        pending: AtomicUsize::new(if direct.is_none() { OPEN } else { 0 }),
        evicted: AtomicBool::new(false),
        raised: AtomicBool::new(false),
        close: Mutex::new(None),
        reader_done: AtomicBool::new(false),
        writer: AtomicU8::new(Writer::NONE),
        starter: Mutex::new(None),
    });
    (
        Outbox {
            tx,
            state: state.clone(),
            drain: direct.as_ref().map(|_| rx.clone()),
            direct,
        },
        Mailbox { rx, state },
    )
}

impl Outbox {
    /// Delivers the frames of `burst` not sent by `skip` — `messages`
    /// frames of `bytes` bytes — to this connection: written at once when
    /// the connection is keeping up (see the module doc), otherwise queued
    /// unless that would take what waits past the bound. Never blocks. (A
    /// direct write touches no reference count: many lanes deliver the same
    /// burst at once.)
    pub(crate) fn offer(
        &self,
        burst: &Burst,
        skip: Option<ClientId>,
        messages: usize,
        bytes: usize,
    ) -> Result<(), Refused> {
        if self.state.evicted.load(Ordering::Relaxed) {
            return Err(Refused::Gone);
        }
        if let Some(written) = self.try_direct(burst, skip, bytes) {
            return written;
        }
        let s = &self.state;
        let queued = s.messages.load(Ordering::Relaxed);
        let queued_bytes = s.bytes.load(Ordering::Relaxed);
        if queued + messages > s.bound.messages
            || queued_bytes.saturating_add(bytes) > s.bound.bytes
        {
            return Err(Refused::Full);
        }
        let entry = Out::Burst {
            frames: burst.clone(),
            skip,
        };
        self.enqueue(entry, messages, bytes)
    }

    /// Writes `burst` (but `skip`'s) at once when that costs no wait:
    /// the outbox is open, nothing is queued or being written, the entry
    /// is small and the socket takes it. `None` when it must be queued;
    /// otherwise what became of it (the rest of a frame the socket took
    /// half of is queued first, whatever the bound says).
    fn try_direct(
        &self,
        burst: &Burst,
        skip: Option<ClientId>,
        bytes: usize,
    ) -> Option<Result<(), Refused>> {
        let wire = self.direct.as_ref()?;
        if bytes > DIRECT_MAX_BYTES || !self.state.open_and_idle() {
            return None;
        }
        let mut queued = Ok(());
        let queue_rest = |rest: Bytes| {
            let len = rest.len();
            queued = self.enqueue(Out::Frame(Frame::raw(rest)), 0, len);
        };
        match wire.try_send_now(burst_frames(burst, skip), queue_rest) {
            Direct::Done => Some(Ok(())),
            Direct::Partial => Some(queued),
            Direct::NotNow => None,
        }
    }

    /// Counts and queues a data entry, and makes sure a writer will take it.
    fn enqueue(&self, entry: Out, messages: usize, bytes: usize) -> Result<(), Refused> {
        let s = &self.state;
        s.messages.fetch_add(messages, Ordering::Relaxed);
        s.bytes.fetch_add(bytes, Ordering::Relaxed);
        let before = s.pending.fetch_add(1, Ordering::SeqCst);
        let queued = self.tx.try_send(entry).map_err(|e| {
            s.pending.fetch_sub(1, Ordering::AcqRel);
            self.uncount(messages, bytes);
            match e {
                TrySendError::Full(_) => Refused::Full,
                TrySendError::Disconnected(_) => Refused::Gone,
            }
        });
        // Before the outbox opens, the connection's own thread writes what
        // was queued (`Mailbox::open`), or starts the writer for it.
        if queued.is_ok() && before & OPEN != 0 {
            self.need_writer();
        }
        queued
    }

    /// Sets how this connection's writer is started when it is first
    /// needed. If it already is (something was queued before), it starts now.
    pub(crate) fn lazy_writer(&self, starter: Starter) {
        let mut slot = self.state.starter_slot();
        if self.state.writer.load(Ordering::Acquire) == Writer::STARTED {
            drop(slot);
            starter(true);
        } else {
            *slot = Some(Slot(starter));
        }
    }

    /// Marks the writer as started (it is started at once, by the caller).
    pub(crate) fn eager_writer(&self) {
        self.state.writer.store(Writer::STARTED, Ordering::Release);
    }

    /// Starts the writer if there is none yet.
    pub(crate) fn need_writer(&self) {
        if self.state.writer.load(Ordering::Acquire) != Writer::NONE {
            return;
        }
        if let Some(Some(Slot(start))) = self.settle(Writer::STARTED) {
            start(true);
        }
    }

    /// Whether the connection has no writer thread yet (nothing has
    /// needed one).
    pub(crate) fn writerless(&self) -> bool {
        self.state.writer.load(Ordering::Acquire) == Writer::NONE
    }

    /// At the reader's end: if no writer was ever needed, none will be —
    /// the reader finishes in its place (the starter runs with `false`)
    /// and this returns true.
    fn finish_without_writer(&self) -> bool {
        let Some(starter) = self.settle(Writer::NEVER) else {
            return false;
        };
        if let Some(Slot(finish)) = starter {
            finish(false);
        }
        true
    }

    /// Moves the writer's state from none to `to`, under the starter's
    /// lock, and takes the starter (if it was set yet); `None` when the
    /// state was not none.
    fn settle(&self, to: u8) -> Option<Option<Slot>> {
        let mut slot = self.state.starter_slot();
        self.state
            .writer
            .compare_exchange(Writer::NONE, to, Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        Some(slot.take())
    }

    /// A ping for a connection without a writer, from the keepalive
    /// timer: written at once when nothing is queued and the socket takes
    /// it. `None` when it could not be, this time (the write lock was
    /// held, the socket full): the timer tries again soon, rather than
    /// give the connection a writer for a moment's contention. Otherwise
    /// whether the connection is still without a writer.
    pub(crate) fn ping_now(&self, ping: &Frame) -> Option<bool> {
        if !self.writerless() {
            return Some(false);
        }
        if let Some(wire) = &self.direct
            && self.state.open_and_idle()
        {
            let queue_rest = |rest: Bytes| {
                let len = rest.len();
                let _ = self.enqueue(Out::Frame(Frame::raw(rest)), 0, len);
            };
            return match wire.try_send_now([ping], queue_rest) {
                Direct::Done => Some(self.writerless()),
                Direct::Partial => Some(false),
                Direct::NotNow => None,
            };
        }
        None
    }

    /// Queues what a joining client gets before anything else, whatever
    /// the message bound (its size is bounded by the history's bounds).
    /// The hub may see the client after its 101 is out: then, like any
    /// delivery, it is written at once when the socket takes it.
    pub(crate) fn preload(&self, frames: Burst) {
        let bytes = frames.iter().map(|(_, f)| f.len()).sum();
        if self.try_direct(&frames, None, bytes).is_none() {
            let _ = self.enqueue(Out::History(frames), 0, bytes);
        }
    }

    /// Queues one data frame, waiting while the channel is full (the
    /// dialling side's back-pressure). Fails only when the writer is gone.
    pub(crate) fn send(&self, frame: Frame) -> Result<(), Refused> {
        let len = frame.len();
        self.state.messages.fetch_add(1, Ordering::Relaxed);
        self.state.bytes.fetch_add(len, Ordering::Relaxed);
        self.state.pending.fetch_add(1, Ordering::AcqRel);
        self.tx.send(Out::Frame(frame)).map_err(|_| {
            self.state.pending.fetch_sub(1, Ordering::AcqRel);
            self.uncount(1, len);
            Refused::Gone
        })
    }

    /// Queues a Close behind what is already queued, waiting at most
    /// `timeout` for room. `false` if it could not be queued in time.
    pub(crate) fn send_close_within(&self, close: Frame, timeout: Duration) -> bool {
        let sent = !matches!(
            self.tx.send_timeout(Out::Frame(close), timeout),
            Err(SendTimeoutError::Timeout(_))
        );
        self.need_writer();
        sent
    }

    /// Sends a Close behind what is already queued, without waiting: at
    /// once from the calling thread (the reader's) when the connection has
    /// no writer and nothing queued, through the queue otherwise. `false`
    /// when the queue is full or gone (the writer is stuck).
    pub(crate) fn push_close(&self, close: Frame) -> bool {
        if let Some(wire) = &self.direct
            && self.writerless()
            && self.state.pending.load(Ordering::Acquire) & !OPEN == 0
            && wire.send_close_frame(&close).is_ok()
        {
            return true;
        }
        let queued = self.tx.try_send(Out::Frame(close)).is_ok();
        self.need_writer();
        queued
    }

    /// Asks the writer to send this Close next and stop; the first request wins.
    pub(crate) fn close_now(&self, frame: CloseFrame) {
        self.state.close_slot().get_or_insert(frame);
        self.raise();
    }

    /// Refuses every later offer, drops what is queued (its memory is
    /// freed now, not when the writer gets to it) and asks the writer to
    /// close with `frame`. True the first time (the one to log).
    pub(crate) fn evict(&self, frame: CloseFrame) -> bool {
        if self.state.evicted.swap(true, Ordering::AcqRel) {
            return false;
        }
        let mut cut = false;
        if let Some(rx) = &self.drain {
            while let Ok(entry) = rx.try_recv() {
                if let Out::Frame(f) = &entry {
                    // The rest of a frame already half on the wire: no
                    // Close can follow it cleanly.
                    cut |= f.is_raw();
                }
                // A Wake and a Close were never counted.
                let close = matches!(&entry, Out::Frame(f) if f.is_close());
                if !close && !matches!(entry, Out::Wake) {
                    let (count, bytes) = entry.counted();
                    self.uncount(count, bytes);
                    self.state.pending.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
        match (&self.direct, cut) {
            (Some(wire), true) => wire.shutdown(std::net::Shutdown::Both),
            _ => self.close_now(frame),
        }
        true
    }

    /// Bytes queued and not yet taken by the writer.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.state.bytes.load(Ordering::Relaxed)
    }

    /// Tells the writer that the reader has exited; with no writer yet,
    /// none is started: the session is finished here instead.
    pub(crate) fn reader_done(&self) {
        if self.finish_without_writer() {
            return;
        }
        self.state.reader_done.store(true, Ordering::Release);
        self.signal();
    }

    /// A guard that tells the writer when the reader ends, however it ends
    /// (a panicking reader included: the writer must not outlive it). A
    /// connection that never needed a writer is finished by the reader.
    pub(crate) fn on_reader_exit(&self) -> ReaderExit {
        ReaderExit(self.clone())
    }

    fn raise(&self) {
        self.signal();
        self.need_writer();
    }

    fn signal(&self) {
        self.state.raised.store(true, Ordering::Release);
        // A full queue needs no nudge: the writer checks the signals
        // before every wait, and a non-empty queue does not wait.
        let _ = self.tx.try_send(Out::Wake);
    }

    fn uncount(&self, messages: usize, bytes: usize) {
        self.state.messages.fetch_sub(messages, Ordering::Relaxed);
        self.state.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// See [`Outbox::on_reader_exit`].
pub(crate) struct ReaderExit(Outbox);

impl Drop for ReaderExit {
    fn drop(&mut self) {
        self.0.reader_done();
    }
}

/// What the writer's wait returned.
pub(crate) type Next = Result<Out, RecvTimeoutError>;

impl Mailbox {
    /// Clears and reports whether a signal was raised since the last call.
    pub(crate) fn take_raised(&self) -> bool {
        self.state.raised.swap(false, Ordering::AcqRel)
    }

    /// The pending close request, if any.
    pub(crate) fn take_close(&self) -> Option<CloseFrame> {
        self.state.close_slot().take()
    }

    /// Whether the reader has exited.
    pub(crate) fn is_reader_done(&self) -> bool {
        self.state.reader_done.load(Ordering::Acquire)
    }

    /// Opens the outbox once the 101 is out: direct writes are allowed
    /// from then on (until then every delivery is queued, and starts no
    /// writer). What was queued meanwhile — a room's history, a presence
    /// snapshot, a quick peer's message — is written first by the calling
    /// thread, the connection's own, which still holds this mailbox (no
    /// writer can have started), until it finds nothing queued and opens
    /// in the same step; so a client that joins with a history needs no
    /// writer for it. More than [`DIRECT_MAX_BYTES`] queued, a raised
    /// signal, or a room busier than [`OPEN_ROUNDS`] writes is left to a
    /// writer, started for it. An error is the socket's.
    pub(crate) fn open(&self, outbox: &Outbox, wire: &Wire) -> io::Result<()> {
        let s = &self.state;
        if s.pending.load(Ordering::SeqCst) & OPEN != 0 {
            // Open from the start: no direct wire (an echo client's).
            return Ok(());
        }
        for _ in 0..OPEN_ROUNDS {
            if s.pending
                .compare_exchange(0, OPEN, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                return Ok(());
            }
            if s.bytes.load(Ordering::Relaxed) > DIRECT_MAX_BYTES {
                break;
            }
            match self.write_queued(wire)? {
                Queued::Written => {}
                // Counted but not in the queue yet: a moment.
                Queued::Nothing => std::thread::yield_now(),
                Queued::Signal => break,
                Queued::Closed => {
                    s.pending.fetch_or(OPEN, Ordering::SeqCst);
                    return Ok(());
                }
            }
        }
        s.pending.fetch_or(OPEN, Ordering::SeqCst);
        outbox.need_writer();
        Ok(())
    }

    /// Writes what is queued now, up to a raised signal or a Close, as
    /// the writer would (counted out, then marked written); what it met.
    pub(crate) fn write_queued(&self, wire: &Wire) -> io::Result<Queued> {
        let (mut batch, mut counted) = (Vec::new(), (0, 0));
        let met = loop {
            match self.try_next() {
                None if batch.is_empty() => break Queued::Nothing,
                None => break Queued::Written,
                Some(Out::Wake) => break Queued::Signal,
                Some(Out::Frame(close)) if close.is_close() => {
                    self.flushed(wire, &batch, counted)?;
                    wire.send_close_frame(&close)?;
                    return Ok(Queued::Closed);
                }
                Some(item) => {
                    let (messages, bytes) = item.counted();
                    counted = (counted.0 + messages, counted.1 + bytes);
                    batch.push(item);
                }
            }
        };
        self.flushed(wire, &batch, counted)?;
        Ok(met)
    }

    /// Writes `batch` (taken out of the queue, `counted` messages and
    /// bytes) and says so, as the writer does.
    fn flushed(&self, wire: &Wire, batch: &[Out], counted: (usize, usize)) -> io::Result<()> {
        self.taken(counted.0, counted.1);
        let result = wire.send(batch.iter().flat_map(Out::frames));
        self.written(batch.len());
        result.map(|_| ())
    }

    /// An entry if one is queued.
    pub(crate) fn try_next(&self) -> Option<Out> {
        self.rx.try_recv().ok()
    }

    /// Tells offerers that `entries` data entries the writer took are now
    /// on the socket (or failed): once none is pending, offers may be
    /// written directly again.
    pub(crate) fn written(&self, entries: usize) {
        self.state.pending.fetch_sub(entries, Ordering::AcqRel);
    }

    /// Uncounts what the writer has taken out of the queue.
    pub(crate) fn taken(&self, messages: usize, bytes: usize) {
        self.state.messages.fetch_sub(messages, Ordering::Relaxed);
        self.state.bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// A waiter for the next entry.
    pub(crate) fn waiter(&self) -> Waiter<'_> {
        let mut select = Select::new_biased();
        select.recv(&self.rx);
        Waiter {
            rx: &self.rx,
            select,
        }
    }
}

/// The writer's wait for its queue.
///
/// Through a `Select` rather than `recv`: `recv` spins and yields the CPU
/// a few times before it sleeps, and with a thread per client thousands of
/// idle writers yielding to each other cost more than the wake-ups they
/// save (measured: +15 % server CPU per delivery at light load).
pub(crate) struct Waiter<'a> {
    rx: &'a Receiver<Out>,
    select: Select<'a>,
}

impl Waiter<'_> {
    /// The next entry, waiting until `deadline` (none: for ever).
    pub(crate) fn next(&mut self, deadline: Option<Instant>) -> Next {
        let op = match deadline {
            Some(deadline) => self
                .select
                .select_deadline(deadline)
                .map_err(|_| RecvTimeoutError::Timeout)?,
            None => self.select.select(),
        };
        op.recv(self.rx).map_err(|_| RecvTimeoutError::Disconnected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::Role;

    fn frame() -> Frame {
        Frame::data(Role::Server, &tungstenite::Message::text("hi")).expect("data")
    }

    fn burst(f: &Frame) -> Burst {
        Arc::from(vec![(None, f.clone())])
    }

    #[test]
    fn the_rest_of_a_frame_written_in_part_counts_as_it_was_queued() {
        // Queued with (0 messages, its bytes) by every direct path; taken
        // with what `counted` says: the two must agree.
        let rest = Out::Frame(Frame::raw(Bytes::from_static(b"abc")));
        assert_eq!(rest.counted(), (0, 3));
    }

    #[test]
    fn offer_refuses_past_the_bound_and_uncounts() {
        let (outbox, mailbox) = new(
            Bound {
                messages: 2,
                bytes: 1 << 20,
            },
            None,
            None,
        );
        let f = frame();
        assert_eq!(outbox.offer(&burst(&f), None, 1, f.len()), Ok(()));
        assert_eq!(outbox.offer(&burst(&f), None, 1, f.len()), Ok(()));
        assert_eq!(
            outbox.offer(&burst(&f), None, 1, f.len()),
            Err(Refused::Full)
        );
        // What the writer takes makes room again.
        assert!(mailbox.try_next().is_some());
        mailbox.taken(1, f.len());
        assert_eq!(outbox.offer(&burst(&f), None, 1, f.len()), Ok(()));
    }

    #[test]
    fn a_lazy_writer_starts_once_when_needed_and_never_when_not() {
        use std::sync::atomic::AtomicUsize;
        let started = Arc::new(AtomicUsize::new(0));
        let (outbox, _mailbox) = new(Bound::NONE, None, None);
        let count = started.clone();
        outbox.lazy_writer(Box::new(move |spawn| {
            assert!(spawn, "a writer was needed");
            count.fetch_add(1, Ordering::SeqCst);
        }));
        assert!(outbox.writerless());
        let f = frame();
        assert_eq!(outbox.offer(&burst(&f), None, 1, f.len()), Ok(()));
        outbox.close_now(crate::session::close::Close::ShuttingDown.frame());
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert!(!outbox.writerless());

        // A session that never needed one is finished by its reader.
        let finished = Arc::new(AtomicUsize::new(0));
        let (outbox, _mailbox) = new(Bound::NONE, None, None);
        let count = finished.clone();
        outbox.lazy_writer(Box::new(move |spawn| {
            assert!(!spawn, "no writer was needed");
            count.fetch_add(1, Ordering::SeqCst);
        }));
        outbox.reader_done();
        outbox.reader_done();
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn offer_to_a_gone_writer_is_refused_as_gone() {
        let (outbox, mailbox) = new(Bound::NONE, None, None);
        drop(mailbox);
        let f = frame();
        assert_eq!(
            outbox.offer(&burst(&f), None, 1, f.len()),
            Err(Refused::Gone)
        );
    }

    #[test]
    fn signals_wake_the_writer() {
        let (outbox, mailbox) = new(Bound::NONE, None, None);
        outbox.eager_writer();
        outbox.reader_done();
        assert!(matches!(mailbox.waiter().next(None), Ok(Out::Wake)));
        assert!(mailbox.take_raised());
        assert!(mailbox.is_reader_done());
        assert!(!mailbox.take_raised());
    }
}
