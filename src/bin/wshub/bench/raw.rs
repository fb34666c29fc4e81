//! The load generator's own client side: a socket after the opening
//! handshake, a frame reader that parses in place (tungstenite's
//! `FrameHeader::parse` over a large buffer, no allocation per message) and
//! a locked writer for masked client frames and pongs.
//!
//! Lean on purpose: at millions of deliveries a second the generator shares
//! two cores with the server, so per-message work here must stay small.

use std::io::{self, Cursor, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use wshub::{ConnectOptions, Dialed, dial as open};

/// One dialled connection.
pub(crate) struct RawConn {
    pub reader: RawReader,
    pub writer: RawWriter,
    /// Whether the server agreed to permessage-deflate.
    pub compressed: bool,
}

/// Opens `url` with up to three retries (a busy server may refuse or reset
/// while its accept queue is full). HTTP answers and bad URLs are final.
fn open_retrying(url: &str, compression: bool) -> io::Result<Dialed> {
    let options = ConnectOptions {
        connect_timeout: Duration::from_secs(10),
        compression,
        ..ConnectOptions::default()
    };
    let mut last = None;
    for attempt in 0..4 {
        if attempt > 0 {
            // Back-off between retries of a refused connect, not synchronisation.
            std::thread::sleep(Duration::from_millis(50 << attempt));
        }
        match open(url, &options) {
            Ok(opened) => return Ok(opened),
            Err(e @ wshub::Error::Status(_)) => {
                return Err(io::Error::other(e.to_string()));
            }
            Err(wshub::Error::Url(e)) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(io::Error::other(last.map_or_else(
        || "connect failed".to_string(),
        |e| e.to_string(),
    )))
}

/// Dials `url`: a reader with its buffer and a writer.
pub(crate) fn dial(url: &str) -> io::Result<RawConn> {
    dial_offering(url, false)
}

/// Dials `url`, offering permessage-deflate when `compression` (see
/// [`RawConn::compressed`] for the answer).
pub(crate) fn dial_offering(url: &str, compression: bool) -> io::Result<RawConn> {
    let opened = open_retrying(url, compression)?;
    let compressed = opened.compressed();
    let stream = opened.stream;
    stream.set_read_timeout(None)?;
    let read_half = stream.try_clone()?;
    Ok(RawConn {
        reader: RawReader {
            stream: read_half,
            buf: vec![0; 256 << 10],
            start: 0,
            end: 0,
            initial: opened.rest,
            reads: 0,
            ended: false,
        },
        writer: RawWriter {
            stream: Arc::new(Mutex::new(stream)),
        },
        compressed,
    })
}

/// Dials only: the socket after the handshake, no reader buffer (for idle).
pub(crate) fn dial_bare(url: &str) -> io::Result<TcpStream> {
    open_retrying(url, false).map(|opened| opened.stream)
}

/// What a reader saw.
pub(crate) enum Seen<'a> {
    /// A data frame, and the number of the read that brought its end (frames
    /// of one read arrived together, so one clock reading serves them all).
    Data(&'a [u8], u64),
    /// The same, with RSV1 set: a permessage-deflate message.
    Compressed(&'a [u8], u64),
    Ping(&'a [u8]),
    Close(Option<u16>),
    Other,
}

pub(crate) struct RawReader {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    initial: Vec<u8>,
    reads: u64,
    ended: bool,
}

/// What [`RawReader::poll`] left behind.
pub(crate) enum Polled {
    /// Everything the socket had is handled; wait for it to be readable.
    Pending,
    /// The callback stopped, the peer closed, or the socket reached its end.
    Ended,
}

impl RawReader {
    /// Calls `each` for every frame until it returns `false`, the peer
    /// closes, or the socket fails. Fragmented messages are not expected
    /// from a server's broadcast and are passed through frame by frame.
    pub(crate) fn run(&mut self, mut each: impl FnMut(Seen<'_>) -> bool) -> io::Result<()> {
        loop {
            if !self.parse_buffered(&mut each)? {
                return Ok(());
            }
            let n = match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.end += n;
            self.reads += 1;
        }
    }

    /// Like [`run`](Self::run) for a socket watched by epoll (edge
    /// triggered): handles what is buffered and what the socket has now,
    /// without blocking. The socket itself stays blocking for its writer;
    /// reads here pass `MSG_DONTWAIT`.
    pub(crate) fn poll(&mut self, mut each: impl FnMut(Seen<'_>) -> bool) -> io::Result<Polled> {
        loop {
            if !self.parse_buffered(&mut each)? {
                return Ok(Polled::Ended);
            }
            let space = self.buf.len() - self.end;
            let n = match rustix::net::recv(
                &self.stream,
                &mut self.buf[self.end..],
                rustix::net::RecvFlags::DONTWAIT,
            ) {
                Ok((_, 0)) => return Ok(Polled::Ended),
                Ok((_, n)) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Ok(Polled::Pending),
                Err(e) => return Err(e.into()),
            };
            self.end += n;
            self.reads += 1;
            if n < space {
                // A short read emptied the socket; more data raises a new
                // edge, so there is no need to read again for EAGAIN.
                return Ok(if self.parse_buffered(&mut each)? {
                    Polled::Pending
                } else {
                    Polled::Ended
                });
            }
        }
    }

    /// The socket, for epoll.
    pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.stream.as_fd()
    }

    /// Handles every complete frame buffered, then moves a partial frame to
    /// the front (growing the buffer if it cannot hold it). False when
    /// `each` declined or a Close came (and, after a Close, on every call).
    fn parse_buffered(&mut self, each: &mut impl FnMut(Seen<'_>) -> bool) -> io::Result<bool> {
        if self.ended {
            return Ok(false);
        }
        if !self.initial.is_empty() {
            let n = self.initial.len();
            self.buf[..n].copy_from_slice(&self.initial);
            self.end = n;
            self.initial = Vec::new();
        }
        loop {
            let mut cursor = Cursor::new(&self.buf[self.start..self.end]);
            let Some((header, len)) = FrameHeader::parse(&mut cursor)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
            else {
                break;
            };
            let head = cursor.position() as usize;
            let len =
                usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            if self.end - self.start < head + len {
                if head + len > self.buf.len() {
                    self.buf.resize(head + len, 0);
                }
                break;
            }
            let payload = &self.buf[self.start + head..self.start + head + len];
            let seen = match header.opcode {
                OpCode::Data(Data::Text | Data::Binary | Data::Continue) if header.rsv1 => {
                    Seen::Compressed(payload, self.reads)
                }
                OpCode::Data(Data::Text | Data::Binary | Data::Continue) => {
                    Seen::Data(payload, self.reads)
                }
                OpCode::Control(Control::Ping) => Seen::Ping(payload),
                OpCode::Control(Control::Close) => Seen::Close(
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
                ),
                _ => Seen::Other,
            };
            let closed = matches!(seen, Seen::Close(_));
            self.start += head + len;
            // A Close ends the stream; a `false` only ends this call.
            self.ended = closed;
            if !each(seen) || closed {
                return Ok(false);
            }
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        Ok(true)
    }

    /// Unblocks a `run` on another thread.
    pub(crate) fn shutdown_handle(&self) -> io::Result<TcpStream> {
        self.stream.try_clone()
    }
}

/// Writes masked client frames; cloneable, serialised by a lock.
#[derive(Clone)]
pub(crate) struct RawWriter {
    stream: Arc<Mutex<TcpStream>>,
}

impl RawWriter {
    /// Writes bytes of whole frames.
    pub(crate) fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut s = self
            .stream
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        s.write_all(bytes)
    }

    /// Appends a masked frame to `out`, to be written later, alone or with
    /// others, by [`write_all`](Self::write_all).
    pub(crate) fn append(opcode: OpCode, payload: &[u8], out: &mut Vec<u8>) {
        Self::append_frame(opcode, false, payload, out);
    }

    /// [`append`](Self::append), with RSV1 (a deflated message) as given.
    pub(crate) fn append_frame(opcode: OpCode, rsv1: bool, payload: &[u8], out: &mut Vec<u8>) {
        let mask: [u8; 4] = rand::random();
        let header = FrameHeader {
            opcode,
            rsv1,
            mask: Some(mask),
            ..FrameHeader::default()
        };
        // Formatting into a Vec cannot fail.
        let _ = header.format(payload.len() as u64, out);
        let start = out.len();
        out.extend_from_slice(payload);
        // Indexing by i & 3 lets the compiler vectorise this (16 MiB payloads).
        for (i, b) in out[start..].iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
    }

    /// Sends a text message.
    pub(crate) fn text(&self, payload: &[u8], scratch: &mut Vec<u8>) -> io::Result<()> {
        self.frame(OpCode::Data(Data::Text), payload, scratch)
    }

    /// Answers a ping.
    pub(crate) fn pong(&self, payload: &[u8]) -> io::Result<()> {
        self.frame(OpCode::Control(Control::Pong), payload, &mut Vec::new())
    }

    /// Sends Close 1000.
    pub(crate) fn close(&self) -> io::Result<()> {
        self.frame(
            OpCode::Control(Control::Close),
            &1000u16.to_be_bytes(),
            &mut Vec::new(),
        )
    }

    fn frame(&self, opcode: OpCode, payload: &[u8], scratch: &mut Vec<u8>) -> io::Result<()> {
        scratch.clear();
        RawWriter::append(opcode, payload, scratch);
        self.write_all(scratch)
    }
}

/// Paces new connections to at most `per_second`.
pub(crate) struct Pacer {
    started: Instant,
    per_second: u32,
    count: u64,
}

impl Pacer {
    pub(crate) fn new(per_second: u32) -> Pacer {
        Pacer {
            started: Instant::now(),
            per_second: per_second.max(1),
            count: 0,
        }
    }

    pub(crate) fn wait(&mut self) {
        self.count += 1;
        let due =
            self.started + Duration::from_secs_f64(self.count as f64 / self.per_second as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}
