//! The write side of one WebSocket connection, shared by its reader and
//! writer threads (the frames it writes are `frame`'s).
//!
//! Every byte that goes onto a connection's socket goes through [`Wire`],
//! under its one mutex, one whole frame batch at a time: that is what keeps
//! the reader's automatic pongs and the writer's data frames from
//! interleaving mid-frame. The mutex is only ever held while *writing*
//! (bounded by the write timeout), never while reading. `Wire` also records
//! whether our Close has gone out, after which nothing else may be written.
//!
//! Besides the blocking writes of the connection's own threads, a
//! non-blocking one ([`Wire::try_send_now`]): `try_lock` and
//! `send(MSG_DONTWAIT)`, for the hub to deliver to a connection that keeps
//! up without waking its writer thread (see `outbox`). It never waits —
//! not for the lock, not for the socket — and reports what it could not
//! write.
//!
//! May touch: the connection's socket (writes and shutdown).

use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::AtomicU8;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tungstenite::Bytes;
use tungstenite::protocol::Role;
use tungstenite::protocol::frame::CloseFrame;

use super::frame::Frame;
use crate::deflate::Agreement;
use crate::error::is_timeout;

/// Frames written per system call at most (two slices each, under IOV_MAX).
pub(crate) const MAX_BATCH: usize = 64;

/// Why a write other than the queue's waits while half a frame is out.
const HALF_FRAME: &str = "half a frame is on the wire; the writer finishes it first";

/// What [`Wire::try_send_now`] did.
#[derive(Debug)]
pub(crate) enum Direct {
    /// Everything went out (or was dropped: our Close went first, or the
    /// socket failed).
    Done,
    /// The socket took only the first bytes; the rest went to the queue.
    Partial,
    /// Nothing was written: the lock was held or the socket was full.
    NotNow,
}

/// One connection's socket and the lock that serialises writes to it.
#[derive(Debug)]
pub(crate) struct Wire {
    stream: TcpStream,
    role: Role,
    write_timeout: Duration,
    state: Mutex<WriteState>,
    /// Mirrors "close sent or broken" so the reader can check it without
    /// waiting for a writer that holds the lock.
    done: AtomicBool,
    /// With permessage-deflate agreed: the window (bits) our deflated
    /// frames may use; 0 without it.
    deflate: AtomicU8,
}

#[derive(Debug, Default)]
struct WriteState {
    close_sent: bool,
    /// Set after a failed write: the stream may hold half a frame.
    broken: bool,
    /// A direct write left half a frame on the stream: its rest is the
    /// first entry of the connection's queue, and nothing but that rest
    /// may be written next.
    partial: bool,
}

/// What a locked write is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WriteKind {
    /// Data or pings; `rest_first`: they begin with the rest of a frame a
    /// direct write left half done.
    Data { rest_first: bool },
    /// Our Close.
    Close,
    /// The reader's pongs: dropped while half a frame is out.
    Pong,
}

impl Wire {
    pub(crate) fn new(stream: TcpStream, role: Role, write_timeout: Duration) -> io::Result<Wire> {
        stream.set_write_timeout(Some(write_timeout))?;
        Ok(Wire {
            stream,
            role,
            write_timeout,
            state: Mutex::new(WriteState::default()),
            done: AtomicBool::new(false),
            deflate: AtomicU8::new(0),
        })
    }

    /// From now on, frames that have a deflated form go out deflated
    /// (set once, after the handshake agreed to permessage-deflate).
    pub(crate) fn set_deflate(&self, agreement: Agreement) {
        self.deflate
            .store(agreement.send_window_bits, Ordering::Release);
    }

    /// What the peer agreed to, for choosing frames.
    pub(crate) fn deflate(&self) -> Option<Agreement> {
        match self.deflate.load(Ordering::Acquire) {
            0 => None,
            bits => Some(Agreement {
                send_window_bits: bits,
                peer_takes_over: false,
            }),
        }
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub(crate) fn role(&self) -> Role {
        self.role
    }

    fn lock(&self) -> MutexGuard<'_, WriteState> {
        // A panic while writing leaves nothing half-updated in WriteState.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True once our Close is on the wire (or the wire failed).
    pub(crate) fn close_sent(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Writes data or ping frames, all in as few system calls as possible.
    /// Returns `Ok(false)` if they were dropped because a Close went first.
    pub(crate) fn send<'a>(&self, frames: impl IntoIterator<Item = &'a Frame>) -> io::Result<bool> {
        let agreement = self.deflate();
        let mut frames = frames.into_iter().peekable();
        let rest_first = frames.peek().is_some_and(|f| f.is_raw());
        self.locked_write(WriteKind::Data { rest_first }, || {
            let mut slices = [IoSlice::new(&[]); 2 * MAX_BATCH];
            let mut n = 0;
            for frame in frames {
                for s in frame.for_receiver(agreement).slices() {
                    if !s.is_empty() {
                        slices[n] = s;
                        n += 1;
                    }
                }
                if n >= slices.len() - 1 {
                    self.write_all(&mut slices[..n])?;
                    n = 0;
                }
            }
            if n > 0 {
                self.write_all(&mut slices[..n])?;
            }
            Ok(())
        })
    }

    /// Writes our Close unless one already went out. Returns whether it wrote.
    pub(crate) fn send_close(&self, close: Option<&CloseFrame>) -> io::Result<bool> {
        self.send_close_frame(&Frame::close(self.role, close))
    }

    /// [`send_close`](Self::send_close) for an already encoded Close.
    /// Nothing may follow a Close: the FIN tells the peer so at once,
    /// while reading goes on until its answer.
    pub(crate) fn send_close_frame(&self, frame: &Frame) -> io::Result<bool> {
        self.locked_write(WriteKind::Close, || self.write_all(&mut frame.slices()))
    }

    /// Writes bytes tungstenite's reader produced (pongs). They are dropped
    /// after our Close, which is when tungstenite would stop sending them too.
    pub(crate) fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.locked_write(WriteKind::Pong, || {
            self.write_all(&mut [IoSlice::new(bytes)])
        })
        .map(|_| ())
    }

    /// Writes `frames` now if that costs no wait: the write lock is free
    /// and the socket takes the bytes without blocking (`MSG_DONTWAIT`).
    /// The caller must know that nothing else is queued for this
    /// connection, so that order holds. What the socket did not take goes
    /// to `queue_rest`, called with the lock held (so that nothing can be
    /// queued or written before it), and comes back as
    /// [`Direct::Partial`]; until the writer has written it, other writes
    /// wait behind it. Frames after our Close are dropped, as by
    /// [`send`](Self::send).
    #[cfg(unix)]
    pub(crate) fn try_send_now<'a>(
        &self,
        frames: impl IntoIterator<Item = &'a Frame>,
        queue_rest: impl FnOnce(Bytes),
    ) -> Direct {
        use rustix::io::Errno;
        use rustix::net::{SendAncillaryBuffer, SendFlags, sendmsg};
        let mut state = match self.state.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Direct::NotNow,
        };
        if state.close_sent || state.broken {
            return Direct::Done;
        }
        if state.partial {
            return Direct::NotNow;
        }
        let agreement = self.deflate();
        let mut slices = [IoSlice::new(&[]); 2 * MAX_BATCH];
        let mut n = 0;
        for frame in frames {
            if n + 2 > slices.len() {
                return Direct::NotNow;
            }
            for s in frame.for_receiver(agreement).slices() {
                if !s.is_empty() {
                    slices[n] = s;
                    n += 1;
                }
            }
        }
        let slices = &slices[..n];
        let total: usize = slices.iter().map(|s| s.len()).sum();
        let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
        match sendmsg(
            &self.stream,
            slices,
            &mut SendAncillaryBuffer::default(),
            flags,
        ) {
            Ok(written) if written == total => Direct::Done,
            Ok(written) => {
                let mut rest = Vec::with_capacity(total - written);
                let mut skip = written;
                for s in slices {
                    if skip >= s.len() {
                        skip -= s.len();
                    } else {
                        rest.extend_from_slice(&s[skip..]);
                        skip = 0;
                    }
                }
                state.partial = true;
                queue_rest(Bytes::from(rest));
                Direct::Partial
            }
            Err(e) if e == Errno::WOULDBLOCK || e == Errno::INTR => Direct::NotNow,
            Err(_) => {
                // As a failed blocking write: nothing more goes out, and the
                // reader wakes up to end the connection.
                state.broken = true;
                self.done.store(true, Ordering::Release);
                self.shutdown(Shutdown::Both);
                Direct::Done
            }
        }
    }

    /// Without `MSG_DONTWAIT` every write goes through the writer thread.
    #[cfg(not(unix))]
    pub(crate) fn try_send_now<'a>(
        &self,
        _frames: impl IntoIterator<Item = &'a Frame>,
        _queue_rest: impl FnOnce(Bytes),
    ) -> Direct {
        Direct::NotNow
    }

    /// Runs `write` under the lock, unless our Close is out or an earlier
    /// write failed (then `Ok(false)`). While half a frame is out, only a
    /// write that begins with its rest goes (a pong is dropped, anything
    /// else fails with `WouldBlock`). A Close is marked as sent before it
    /// is written, and the socket half-closed after. A failed write marks
    /// the wire broken: the stream may hold half a frame.
    fn locked_write(
        &self,
        kind: WriteKind,
        write: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<bool> {
        let mut state = self.lock();
        if state.close_sent || state.broken {
            return Ok(false);
        }
        if state.partial {
            match kind {
                WriteKind::Data { rest_first: true } => state.partial = false,
                WriteKind::Pong => return Ok(false),
                // Only the queue's writer may go on from half a frame.
                _ => return Err(io::Error::new(io::ErrorKind::WouldBlock, HALF_FRAME)),
            }
        }
        let closing = kind == WriteKind::Close;
        if closing {
            state.close_sent = true;
            self.done.store(true, Ordering::Release);
        }
        let result = write();
        if result.is_err() {
            state.broken = true;
            self.done.store(true, Ordering::Release);
        }
        if closing {
            self.shutdown(Shutdown::Write);
        }
        result.map(|()| true)
    }

    /// Wakes the other thread out of any blocking call on this socket.
    pub(crate) fn shutdown(&self, how: Shutdown) {
        // NotConnected only means the peer or the other thread was first.
        let _ = self.stream.shutdown(how);
    }

    /// `write_all` for vectored writes, bounded by the write timeout in total
    /// rather than per system call. Called with the lock held.
    fn write_all(&self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        let deadline = Instant::now() + self.write_timeout;
        let mut shortened = false;
        let result = loop {
            if bufs.is_empty() {
                break Ok(());
            }
            match (&self.stream).write_vectored(bufs) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    IoSlice::advance_slices(&mut bufs, n);
                    if !bufs.is_empty() {
                        // Partial write: the peer is slow. Shrink the socket's
                        // timeout to what is left of this batch's budget.
                        let left = deadline.saturating_duration_since(Instant::now());
                        if left.is_zero() {
                            break Err(timed_out());
                        }
                        self.stream.set_write_timeout(Some(left))?;
                        shortened = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => break Err(timed_out()),
                Err(e) => break Err(e),
            }
        };
        if shortened {
            self.stream.set_write_timeout(Some(self.write_timeout))?;
        }
        result
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "write timed out")
}
