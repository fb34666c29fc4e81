//! The reader's half of a session (gorilla's `readPump`, on the thread
//! that runs the session's `Reader`): the `Read + Write` view
//! tungstenite's context gets of the socket
//! ([`ReadSide`]: reads with no lock held, through the memory tracker and,
//! with permessage-deflate, the inflater; writes — the context's pongs —
//! through the [`Wire`] lock), the read loop that hands each message to
//! the session's [`Target`], and how a failed read or a refused message
//! becomes our Close.
//!
//! May touch: the connection's socket (reads; writes through `Wire`), its
//! outbox (our Close, behind what is queued), its context.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::error::ProtocolError;
use tungstenite::protocol::{Message, WebSocketConfig, WebSocketContext};

use super::close::{Close, Ending};
use super::frame::Frame;
use super::outbox::Outbox;
use super::wire::Wire;
use super::{Stop, Target, Timing};
use crate::deflate::Inflater;
use crate::error::is_timeout;
use crate::memory::{Memory, Refusal, Tracker};

/// How much tungstenite's context asks for per read, and so the buffer it
/// keeps for the connection's life (touched by its first read). Small, so
/// that an idle client holds little: when more is waiting, [`ReadSide`]
/// takes it in one system call of up to `read_bytes` into a buffer that
/// lives only until handed out.
pub(crate) const CONTEXT_READ_BYTES: usize = 512;

/// The `Read + Write` view tungstenite's reader gets: reads block on the
/// socket with no lock held and pass through the connection's tracker;
/// writes (pongs) go through the [`Wire`] lock.
pub(super) struct ReadSide<'a> {
    wire: &'a Wire,
    /// Bytes read beyond what the context asked for, handed out from
    /// `spill_at`; freed once handed out, so that nothing of a busy
    /// moment stays with an idle client.
    spill: Vec<u8>,
    spill_at: usize,
    /// The last read filled what was asked: more may be waiting.
    more: bool,
    /// The most one read from the socket takes (`--read-buffer-bytes`).
    read_bytes: usize,
    tracker: Tracker,
    pong_timeout: Duration,
    /// The socket's read timeout now.
    timeout: Duration,
    /// With permessage-deflate: the peer's bytes go through it, and the
    /// context (and the tracker) see the plain frames it makes.
    inflater: Option<Box<Inflater>>,
}

impl<'a> ReadSide<'a> {
    pub(super) fn new(
        (wire, read_bytes): (&'a Wire, usize),
        memory: Option<Arc<Memory>>,
        timing: Timing,
        inflater: Option<Box<Inflater>>,
    ) -> ReadSide<'a> {
        ReadSide {
            wire,
            spill: Vec::new(),
            spill_at: 0,
            more: false,
            read_bytes,
            tracker: Tracker::new(memory, timing.message_timeout),
            pong_timeout: timing.pong_timeout,
            timeout: timing.pong_timeout,
            inflater,
        }
    }
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

    /// The next bytes from the socket into `buf`: what an earlier read
    /// spilled, or, when the last read filled what was asked, whatever is
    /// waiting (up to `read_bytes`, in one system call that does not
    /// block), or else one blocking read.
    fn read_socket(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // The unfinished message's deadline holds for every read, also
        // those that find bytes waiting.
        if self
            .tracker
            .deadline()
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(io::Error::other(Refusal::MessageTimeout));
        }
        if self.spill_at < self.spill.len() {
            return Ok(self.unspill(buf));
        }
        if self.more && buf.len() < self.read_bytes {
            let mut spill = Vec::with_capacity(self.read_bytes);
            let flags = rustix::net::RecvFlags::DONTWAIT;
            match rustix::net::recv(
                self.wire.stream(),
                rustix::buffer::spare_capacity(&mut spill),
                flags,
            ) {
                Ok((0, _)) => return Ok(0),
                Ok((n, _)) => {
                    self.more = n == self.read_bytes;
                    self.spill = spill;
                    self.spill_at = 0;
                    return Ok(self.unspill(buf));
                }
                Err(rustix::io::Errno::AGAIN) => self.more = false,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let n = self.read_waiting(buf)?;
        self.more = n == buf.len();
        Ok(n)
    }

    /// Hands out spilled bytes; frees the spill once it is all out.
    fn unspill(&mut self, buf: &mut [u8]) -> usize {
        let rest = &self.spill[self.spill_at..];
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.spill_at += n;
        if self.spill_at == self.spill.len() {
            self.spill = Vec::new();
            self.spill_at = 0;
        }
        n
    }

    /// One blocking read from the socket, under the pong timeout and the
    /// unfinished message's deadline.
    fn read_waiting(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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

/// The reader loop. Blocks until the connection ends; `target` gets
/// every text and binary message and returns a [`Stop`] when it takes no
/// more. The answer to the peer's Close goes into the connection's own
/// `outbox`, behind what is already queued (an echo of the peer's last
/// message, say).
pub(super) fn read_loop(
    io: &mut ReadSide<'_>,
    ctx: &mut WebSocketContext,
    outbox: &Outbox,
    timing: Timing,
    memory: Option<Arc<Memory>>,
    target: &mut impl Target,
) -> Ending {
    let wire = io.wire;
    loop {
        match ctx.read(io) {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                // Data that arrives after our Close is still delivered: the
                // peer may send until its own Close (RFC 6455 1.4).
                match target.deliver(message) {
                    Ok(()) => {}
                    Err(Stop::Gone) => {
                        return close_with(wire, outbox, Close::ShuttingDown, timing);
                    }
                    Err(Stop::Close(close)) => return close_with(wire, outbox, close, timing),
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
            Err(tungstenite::Error::Io(e)) => {
                let Some(refusal) = Refusal::of(&e) else {
                    return fail(wire, outbox, tungstenite::Error::Io(e), timing);
                };
                // Free what the refused message holds at once, not after
                // the close handshake's linger.
                *ctx = WebSocketContext::new(
                    wire.role(),
                    Some(WebSocketConfig::default().read_buffer_size(64)),
                );
                io.tracker.release();
                if let (Refusal::OverBudget { .. }, Some(memory)) = (refusal, &memory) {
                    memory.count_refused();
                }
                return close_with(wire, outbox, refused(refusal), timing);
            }
            Err(e) => return fail(wire, outbox, e, timing),
        }
    }
}

/// The Close for a message the reader's layers refused.
fn refused(refusal: Refusal) -> Close {
    match refusal {
        Refusal::OverBudget { .. } => Close::OverBudget(refusal.to_string()),
        Refusal::TooBig => Close::TooBig(refusal.to_string()),
        Refusal::Corrupt { text: true } => Close::InvalidData(refusal.to_string()),
        Refusal::Corrupt { .. } | Refusal::Protocol(_) => Close::Protocol(refusal.to_string()),
        Refusal::MessageTimeout => Close::MessageTimeout,
    }
}

/// Maps a read error to the close code RFC 6455 asks for, and closes.
fn fail(wire: &Wire, outbox: &Outbox, err: tungstenite::Error, timing: Timing) -> Ending {
    use tungstenite::Error as E;
    let close = match err {
        E::Io(e) if is_timeout(&e) => {
            // Silent for a whole pong timeout: the peer is probably gone, so
            // do not wait for an answer to the Close.
            let _ = wire.send_close(Some(&Close::PingTimeout.frame()));
            wire.shutdown(Shutdown::Both);
            return Ending::closed(&Close::PingTimeout);
        }
        E::ConnectionClosed | E::AlreadyClosed => {
            return Ending::Dropped("connection closed".into());
        }
        E::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            return Ending::Dropped("closed without a Close frame".into());
        }
        E::Io(e) => return Ending::Dropped(e.to_string()),
        E::Capacity(e) => Close::TooBig(e.to_string()),
        E::Utf8(_) => Close::InvalidData("invalid UTF-8 in text".to_string()),
        E::Protocol(e) => Close::Protocol(e.to_string()),
        e => Close::Internal(e.to_string()),
    };
    close_with(wire, outbox, close, timing)
}

/// Queues our Close behind what is already queued (the echo of the last
/// good message goes out first), then lingers: drains what the peer still
/// sends (its Close answer, or the rest of a frame we refused) until it
/// closes or `close_timeout` passes. Closing with unread bytes pending would
/// make the kernel send a reset, which can destroy our Close in flight. The
/// writer half-closes the socket right after the Close, so the peer sees
/// the end promptly.
pub(super) fn close_with(wire: &Wire, outbox: &Outbox, close: Close, timing: Timing) -> Ending {
    let frame = close.frame();
    // The writer is stuck or gone when the queue refuses: no waiting behind it.
    let sent = outbox.push_close(Frame::close(wire.role(), Some(&frame)))
        || wire.send_close(Some(&frame)).is_ok();
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
    Ending::closed(&close)
}
