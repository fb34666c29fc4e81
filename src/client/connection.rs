//! A thread-safe handle for one client-side WebSocket connection: dial a
//! `ws://` URL, then `send`, `recv` and `close` from any thread.
//!
//! It runs the same session (reader and writer threads, see `session`) as
//! the server's clients: the reader delivers messages to a channel that
//! [`Connection::recv`] reads, the writer takes frames from an outbox of
//! `send_queue` entries that [`Connection::send`] fills (and waits on when
//! it is full). The handshake is `dial`'s.
//!
//! May touch: its own socket (through its `Wire`), threads and channels,
//! and the log (a failed writer, at debug level); on [`Connection::send`]
//! with deflate agreed, the calling thread's compressor
//! (`deflate::compress`); nothing else.

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, unbounded};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use crate::client::dial::{ConnectOptions, Dialed, dial};
use crate::deflate::{self, Inflater};
use crate::session::close::{self, Ending};
use crate::session::frame::Frame;
use crate::session::outbox::{self, Bound, Outbox};
use crate::session::wire::Wire;
use crate::session::{self, Parts, Spawn, Stop, Target, Timing};
use crate::{Error, Result};

/// One open WebSocket connection. All methods take `&self`; share it
/// between threads with an `Arc`.
pub struct Connection {
    wire: Arc<Wire>,
    outbox: Outbox,
    inbox: Receiver<Message>,
    closing: AtomicBool,
    write_timeout: Duration,
    subprotocol: Option<String>,
    threads: Threads,
    /// Disconnects once both threads have finished.
    finished: Receiver<()>,
    ending: Arc<Mutex<Option<Ending>>>,
}

/// `mutex` locked, recovered if a panic poisoned it (as `Wire`'s lock
/// is): what these mutexes guard (thread handles, how the connection
/// ended) is never left half-updated, and a panic elsewhere must not make
/// the connection lose a join or its ending.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The session's threads, kept for joining.
#[derive(Default)]
struct Threads(Mutex<Vec<JoinHandle<()>>>);

impl Spawn for Threads {
    fn spawn(&self, name: String, body: Box<dyn FnOnce() + Send>) -> std::io::Result<()> {
        let handle = thread::Builder::new().name(name).spawn(body)?;
        // Even after a panic elsewhere: a handle left out is never joined.
        lock(&self.0).push(handle);
        Ok(())
    }
}

impl Threads {
    fn join(&self) {
        let threads: Vec<_> = lock(&self.0).drain(..).collect();
        for t in threads {
            let _ = t.join();
        }
    }
}

impl Connection {
    /// Dials `url` (`ws://host[:port][/path][?query]`) and completes the
    /// opening handshake.
    pub fn connect(url: &str, options: &ConnectOptions) -> Result<Connection> {
        Connection::start(dial(url, options)?, options)
    }

    fn start(dialed: Dialed, options: &ConnectOptions) -> Result<Connection> {
        let Dialed {
            stream,
            rest,
            subprotocol,
            deflate,
        } = dialed;
        stream.set_read_timeout(Some(options.pong_timeout))?;
        let wire = Arc::new(Wire::new(stream, Role::Client, options.write_timeout)?);
        let (ctx, inflater) = reader_state(&wire, rest, deflate, options);
        let timing = Timing {
            ping_interval: options.ping_interval,
            close_timeout: options.close_timeout,
            pong_timeout: options.pong_timeout,
            // The dialling side trusts its server: no message timeout.
            message_timeout: Duration::MAX,
            expires: None,
        };
        let mailbox = outbox::new(Bound::NONE, Some(options.send_queue), None);
        let outbox = mailbox.0.clone();
        // Unbounded: the reader must never block on a slow consumer while
        // owning the only path by which pongs are answered.
        let (inbox_tx, inbox_rx) = unbounded::<Message>();
        let ending = Arc::new(Mutex::new(None));
        let (finished_tx, finished_rx) = bounded::<()>(0);
        let writer_finished = finished_tx.clone();
        let inbox = Inbox {
            messages: inbox_tx,
            ending: ending.clone(),
            _finished: finished_tx,
        };
        let threads = Threads::default();
        let parts = Parts {
            inflater,
            read_bytes: crate::defaults::READ_BUFFER_BYTES,
            wire: wire.clone(),
            ctx,
            mailbox,
            memory: None,
        };
        let on_writer_end = move |problem: Option<String>| {
            let _finished = writer_finished;
            if let Some(problem) = problem {
                log::debug!("connection writer: {problem}");
            }
        };
        let started = session::start(&threads, "wshub-conn", parts, timing, inbox, on_writer_end);
        if let Err(e) = started {
            wire.shutdown(Shutdown::Both);
            threads.join();
            return Err(e.into());
        }
        Ok(Connection {
            wire,
            outbox,
            inbox: inbox_rx,
            closing: AtomicBool::new(false),
            write_timeout: options.write_timeout,
            subprotocol,
            threads,
            finished: finished_rx,
            ending,
        })
    }

    /// The frame for `message`: deflated when the server agreed to it and
    /// the message is long enough for that to pay.
    fn encode(&self, message: &Message) -> Option<Frame> {
        let plain = || Frame::data(Role::Client, message);
        let Some(agreement) = self.wire.deflate() else {
            return plain();
        };
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Data(Data::Text), t.as_bytes()),
            Message::Binary(b) => (OpCode::Data(Data::Binary), &b[..]),
            _ => return None,
        };
        if payload.len() < crate::defaults::COMPRESSION_MIN_BYTES
            || !agreement.may_compress(payload.len())
        {
            return plain();
        }
        match deflate::compress(payload, crate::defaults::COMPRESSION_LEVEL) {
            Some(compressed) => Some(Frame::encode_compressed(
                Role::Client,
                opcode,
                compressed.into(),
            )),
            None => plain(),
        }
    }

    /// Queues a text or binary message; blocks while the send queue is full.
    pub fn send(&self, message: Message) -> Result<()> {
        let frame = self.encode(&message).ok_or(Error::NotData)?;
        if self.closing.load(Ordering::Acquire) || self.wire.close_sent() {
            return Err(Error::Closed);
        }
        self.outbox.send(frame).map_err(|_| Error::Closed)
    }

    /// The next message from the server. The last one is always
    /// `Message::Close` (with the close frame, if there was one); after it,
    /// `Err(Error::Closed)`.
    pub fn recv(&self) -> Result<Message> {
        self.inbox.recv().map_err(|_| Error::Closed)
    }

    /// Like [`recv`](Self::recv), giving `Ok(None)` after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        match self.inbox.recv_timeout(timeout) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Closed),
        }
    }

    /// The channel behind [`recv`](Self::recv), for `select!`.
    pub fn incoming(&self) -> &Receiver<Message> {
        &self.inbox
    }

    /// The subprotocol the server chose, if any.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Starts the close handshake after every message already sent.
    /// Idempotent: later calls (or a close that already happened) do
    /// nothing. Use [`wait`](Self::wait) to see it end.
    pub fn close(&self, code: CloseCode, reason: &str) {
        if self.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        let close = close::frame(code, reason);
        let frame = Frame::close(Role::Client, Some(&close));
        // Behind the queued messages; if the queue does not move within a
        // write timeout the writer is stuck, and the Close jumps the queue.
        if !self.outbox.send_close_within(frame, self.write_timeout) {
            self.outbox.close_now(close);
        }
    }

    /// Waits for both threads to finish (after a close, the server's
    /// close, or a dropped connection), at most `timeout`; then forces the
    /// socket shut. Returns how the connection ended, if it has.
    pub fn wait(&self, timeout: Duration) -> Option<Ending> {
        // Nothing is ever sent: this returns when both threads are gone.
        if let Err(RecvTimeoutError::Timeout) = self.finished.recv_timeout(timeout) {
            self.wire.shutdown(Shutdown::Both);
        }
        self.threads.join();
        lock(&self.ending).clone()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close(CloseCode::Away, "");
        let _ = self.wait(Duration::from_millis(1500));
    }
}

/// The reader's protocol state: the context and, with deflate agreed,
/// the inflater (what came after the head goes through it).
fn reader_state(
    wire: &Wire,
    rest: Vec<u8>,
    deflate: Option<crate::deflate::Agreement>,
    options: &ConnectOptions,
) -> (Box<WebSocketContext>, Option<Box<Inflater>>) {
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(crate::defaults::READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(Some(options.max_message_bytes))
        .max_frame_size(Some(options.max_message_bytes));
    match deflate {
        Some(agreement) => {
            wire.set_deflate(agreement);
            let mut inflater = Inflater::new(Role::Client, options.max_message_bytes, agreement);
            inflater.preload(&rest);
            let ctx = WebSocketContext::new(Role::Client, Some(ws_config));
            (Box::new(ctx), Some(Box::new(inflater)))
        }
        None => {
            let ctx = WebSocketContext::from_partially_read(rest, Role::Client, Some(ws_config));
            (Box::new(ctx), None)
        }
    }
}

/// Where a connection's reader puts what it reads: the channel
/// [`Connection::recv`] reads, and at the end how it ended (then a Close
/// message in the channel).
struct Inbox {
    messages: Sender<Message>,
    ending: Arc<Mutex<Option<Ending>>>,
    /// Dropped when the reader is done (`Connection::wait` sees it).
    _finished: Sender<()>,
}

impl Target for Inbox {
    fn deliver(&mut self, message: Message) -> std::result::Result<(), Stop> {
        self.messages.send(message).map_err(|_| Stop::Gone)
    }

    fn ended(self, end: Ending) {
        let close = match &end {
            Ending::PeerClosed(frame) => frame.clone(),
            Ending::WeClosed(code, reason) => Some(close::frame(*code, reason)),
            Ending::Dropped(_) => None,
        };
        // Recorded even if a panic poisoned the lock: `wait` reports it.
        *lock(&self.ending) = Some(end);
        let _ = self.messages.send(Message::Close(close));
    }
}
