//! The write side of one WebSocket connection, shared by its reader and
//! writer threads, and the pre-encoded frames that travel to it.
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
//! [`Frame`] is a complete frame, header and payload, encoded once: a server
//! frame is unmasked, so one broadcast frame serves every receiver, and
//! cloning it is a reference-count bump on the payload.

use std::io::{self, IoSlice, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::AtomicU8;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tungstenite::Bytes;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame as TFrame, FrameHeader};
use tungstenite::protocol::{Message, Role};

use crate::deflate::{self, Agreement};
use crate::error::is_timeout;
use crate::memory::{Charge, Memory};
use crate::metrics::Metrics;

/// Frames written per system call at most (two slices each, under IOV_MAX).
pub(crate) const MAX_BATCH: usize = 64;

/// A complete WebSocket frame ready for the wire.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    head: [u8; 14],
    head_len: u8,
    close: bool,
    body: Bytes,
    /// Counts the frame against the server's memory budget while any
    /// queue holds it (see `memory`); shared by every clone.
    charge: Option<Arc<Charge>>,
    /// With compression on: the same message deflated, made once by the
    /// first writer to a compressing receiver and shared by every clone.
    deflated: Option<Arc<Deflated>>,
}

/// A message's deflated frame, made at most once.
pub(crate) struct Deflated {
    frame: OnceLock<Option<Frame>>,
    level: u32,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Deflated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflated")
            .field("frame", &self.frame)
            .field("level", &self.level)
            .finish_non_exhaustive()
    }
}

impl Frame {
    /// Encodes a frame for `role`. Server frames share `payload`; client
    /// frames are masked, which costs one copy.
    pub(crate) fn encode(role: Role, opcode: OpCode, payload: Bytes) -> Frame {
        Frame::encode_with(role, opcode, false, payload)
    }

    /// [`encode`](Self::encode), with RSV1 as given (a message deflated
    /// by the sender).
    fn encode_with(role: Role, opcode: OpCode, rsv1: bool, payload: Bytes) -> Frame {
        let close = opcode == OpCode::Control(Control::Close);
        let header = FrameHeader {
            opcode,
            rsv1,
            ..FrameHeader::default()
        };
        let mut frame = TFrame::from_payload(header, payload);
        if role == Role::Client {
            frame.header_mut().mask = Some(crate::random::mask());
            let mut out = Vec::with_capacity(frame.len());
            // Formatting into a Vec cannot fail.
            let _ = frame.format(&mut out);
            return Frame {
                head: [0; 14],
                head_len: 0,
                close,
                body: Bytes::from(out),
                charge: None,
                deflated: None,
            };
        }
        let mut head = [0u8; 14];
        let mut cursor = io::Cursor::new(&mut head[..]);
        let len = frame.payload().len() as u64;
        // A header is at most 10 bytes unmasked: writing into 14 cannot fail.
        let _ = frame.header().format(len, &mut cursor);
        let head_len = cursor.position() as u8;
        Frame {
            head,
            head_len,
            close,
            body: frame.into_payload(),
            charge: None,
            deflated: None,
        }
    }

    /// Bytes already encoded (the unwritten rest of a partial write): they
    /// go out as they are.
    pub(crate) fn raw(bytes: Bytes) -> Frame {
        Frame {
            head: [0; 14],
            head_len: 0,
            close: false,
            body: bytes,
            charge: None,
            deflated: None,
        }
    }

    /// A server data frame whose deflated form is made when a compressing
    /// receiver first needs it, at `level`.
    pub(crate) fn make_deflatable(&mut self, level: u32, metrics: &Arc<Metrics>) {
        if self.head_len > 0 && !self.close && self.head[1] & 0x80 == 0 {
            self.deflated = Some(Arc::new(Deflated {
                frame: OnceLock::new(),
                level,
                metrics: metrics.clone(),
            }));
        }
    }

    /// The frame to write to a receiver that agreed to `agreement`: the
    /// deflated form when there is one and it may be used, else this.
    pub(crate) fn for_receiver(&self, agreement: Option<Agreement>) -> &Frame {
        let (Some(agreement), Some(deflated)) = (agreement, &self.deflated) else {
            return self;
        };
        if !agreement.may_compress(self.body.len()) {
            return self;
        }
        let made = deflated.frame.get_or_init(|| {
            let compressed = deflate::compress(&self.body, deflated.level)?;
            deflated
                .metrics
                .deflated_out(self.body.len(), compressed.len());
            let opcode = OpCode::from(self.head[0] & 0x0f);
            Some(Frame::encode_compressed(
                Role::Server,
                opcode,
                Bytes::from(compressed),
            ))
        });
        made.as_ref().unwrap_or(self)
    }

    /// Makes the deflated form now, if this frame may have one: for a
    /// burst that several lanes deliver at once, so that none of them
    /// waits for another to finish compressing it.
    pub(crate) fn prepare_deflated(&self) {
        let any = Agreement {
            send_window_bits: 15,
            peer_takes_over: false,
        };
        let _ = self.for_receiver(Some(any));
    }

    /// A frame with RSV1 set, for a message deflated by the sender
    /// (masked for a client, as `encode` does).
    pub(crate) fn encode_compressed(role: Role, opcode: OpCode, payload: Bytes) -> Frame {
        Frame::encode_with(role, opcode, true, payload)
    }

    /// The same frame, not counted against the memory budget (for copies
    /// kept outside any queue, such as a room's history).
    pub(crate) fn uncharged(&self) -> Frame {
        Frame {
            charge: None,
            ..self.clone()
        }
    }

    /// Counts this frame against `memory` until its last clone is gone.
    pub(crate) fn charged(mut self, memory: &Arc<Memory>) -> Frame {
        self.charge = Some(Charge::new(memory, self.len()));
        self
    }

    /// Encodes a text or binary message; other kinds are refused.
    pub(crate) fn data(role: Role, message: &Message) -> Option<Frame> {
        match message {
            Message::Text(t) => Some(Frame::encode(
                role,
                OpCode::Data(Data::Text),
                t.clone().into(),
            )),
            Message::Binary(b) => Some(Frame::encode(role, OpCode::Data(Data::Binary), b.clone())),
            _ => None,
        }
    }

    /// Encodes a Close frame (code and reason, or empty).
    pub(crate) fn close(role: Role, close: Option<&CloseFrame>) -> Frame {
        let mut payload = Vec::new();
        if let Some(c) = close {
            payload.extend_from_slice(&u16::from(c.code).to_be_bytes());
            // Control payloads are capped at 125 bytes; cut the reason on a char boundary.
            let mut reason: &str = &c.reason;
            while reason.len() > 123 {
                let mut end = 123;
                while !reason.is_char_boundary(end) {
                    end -= 1;
                }
                reason = &reason[..end];
            }
            payload.extend_from_slice(reason.as_bytes());
        }
        Frame::encode(role, OpCode::Control(Control::Close), Bytes::from(payload))
    }

    /// Encodes an empty Ping.
    pub(crate) fn ping(role: Role) -> Frame {
        Frame::encode(role, OpCode::Control(Control::Ping), Bytes::new())
    }

    /// True for the bytes [`Frame::raw`] made.
    pub(crate) fn is_raw(&self) -> bool {
        self.head_len == 0 && !self.close
    }

    /// True for a Close frame: nothing may follow it on the wire.
    pub(crate) fn is_close(&self) -> bool {
        self.close
    }

    /// Bytes on the wire.
    pub(crate) fn len(&self) -> usize {
        self.head_len as usize + self.body.len()
    }

    fn slices(&self) -> [IoSlice<'_>; 2] {
        [
            IoSlice::new(&self.head[..self.head_len as usize]),
            IoSlice::new(&self.body),
        ]
    }
}

/// What [`Wire::try_send_now`] did.
#[derive(Debug)]
pub(crate) enum Direct {
    /// Everything went out (or was dropped: our Close went first, or the
    /// socket failed).
    Done,
    /// The socket took only the first bytes; these are the rest.
    Partial(Bytes),
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
        self.locked_write(false, || {
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
        self.locked_write(true, || self.write_all(&mut frame.slices()))
    }

    /// Writes bytes tungstenite's reader produced (pongs). They are dropped
    /// after our Close, which is when tungstenite would stop sending them too.
    pub(crate) fn send_raw(&self, bytes: &[u8]) -> io::Result<()> {
        self.locked_write(false, || self.write_all(&mut [IoSlice::new(bytes)]))
            .map(|_| ())
    }

    /// Writes `frames` now if that costs no wait: the write lock is free
    /// and the socket takes the bytes without blocking (`MSG_DONTWAIT`).
    /// The caller must know that nothing else is queued for this
    /// connection, so that order holds. What the socket did not take comes
    /// back as [`Direct::Partial`], to be written before anything else.
    /// Frames after our Close are dropped, as by [`send`](Self::send).
    #[cfg(unix)]
    pub(crate) fn try_send_now<'a>(&self, frames: impl IntoIterator<Item = &'a Frame>) -> Direct {
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
                Direct::Partial(Bytes::from(rest))
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
    pub(crate) fn try_send_now<'a>(&self, _frames: impl IntoIterator<Item = &'a Frame>) -> Direct {
        Direct::NotNow
    }

    /// Runs `write` under the lock, unless our Close is out or an earlier
    /// write failed (then `Ok(false)`). `closing` marks our Close as sent
    /// before writing it and half-closes after. A failed write marks the
    /// wire broken: the stream may hold half a frame.
    fn locked_write(
        &self,
        closing: bool,
        write: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<bool> {
        let mut state = self.lock();
        if state.close_sent || state.broken {
            return Ok(false);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::CloseCode;

    fn wire_bytes(f: &Frame) -> Vec<u8> {
        f.slices().iter().flat_map(|s| s.to_vec()).collect()
    }

    #[test]
    fn server_frames_match_rfc_examples() {
        // RFC 6455 5.7: unmasked "Hello".
        let f = Frame::encode(
            Role::Server,
            OpCode::Data(Data::Text),
            Bytes::from_static(b"Hello"),
        );
        assert_eq!(wire_bytes(&f), b"\x81\x05Hello");
        // 256 bytes binary uses the 16-bit length form.
        let f = Frame::encode(
            Role::Server,
            OpCode::Data(Data::Binary),
            Bytes::from(vec![0u8; 256]),
        );
        assert_eq!(&wire_bytes(&f)[..4], b"\x82\x7e\x01\x00");
        assert_eq!(f.len(), 260);
    }

    #[test]
    fn close_reason_is_capped_at_a_char_boundary() {
        let reason = "é".repeat(100);
        let cf = CloseFrame {
            code: CloseCode::Normal,
            reason: reason.into(),
        };
        let f = Frame::close(Role::Server, Some(&cf));
        let bytes = wire_bytes(&f);
        assert!(bytes.len() - 2 <= 125);
        assert!(std::str::from_utf8(&bytes[4..]).is_ok());
    }

    #[test]
    fn client_frames_are_masked() {
        let f = Frame::encode(
            Role::Client,
            OpCode::Data(Data::Text),
            Bytes::from_static(b"Hello"),
        );
        let b = wire_bytes(&f);
        assert_eq!(b[0], 0x81);
        assert_eq!(b[1], 0x85);
        let mask = &b[2..6];
        let unmasked: Vec<u8> = b[6..]
            .iter()
            .enumerate()
            .map(|(i, x)| x ^ mask[i % 4])
            .collect();
        assert_eq!(unmasked, b"Hello");
    }
}
