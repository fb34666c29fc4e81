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

use tungstenite::Bytes;
use tungstenite::protocol::Role;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use crate::connection::{ClientOptions, Opened, open};
use crate::wire::Frame;

/// One dialled connection.
pub(crate) struct RawConn {
    pub reader: RawReader,
    pub writer: RawWriter,
}

/// Opens `url` with up to three retries (a busy server may refuse or reset
/// while its accept queue is full). HTTP answers and bad URLs are final.
fn open_retrying(url: &str) -> io::Result<Opened> {
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    };
    let mut last = None;
    for attempt in 0..4 {
        if attempt > 0 {
            // Back-off between retries of a refused connect, not synchronisation.
            std::thread::sleep(Duration::from_millis(50 << attempt));
        }
        match open(url, &options) {
            Ok(opened) => return Ok(opened),
            Err(crate::Error::Http(status)) => {
                return Err(io::Error::other(format!("server answered {status}")));
            }
            Err(crate::Error::Url(e)) => {
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
    let opened = open_retrying(url)?;
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
        },
        writer: RawWriter {
            stream: Arc::new(Mutex::new(stream)),
        },
    })
}

/// Dials only: the socket after the handshake, no reader buffer (for idle).
pub(crate) fn dial_bare(url: &str) -> io::Result<TcpStream> {
    open_retrying(url).map(|opened| opened.stream)
}

/// What a reader saw.
pub(crate) enum Seen<'a> {
    /// A data frame, and the number of the read that brought its end (frames
    /// of one read arrived together, so one clock reading serves them all).
    Data(&'a [u8], u64),
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
}

impl RawReader {
    /// Calls `each` for every frame until it returns `false`, the peer
    /// closes, or the socket fails. Fragmented messages are not expected
    /// from a server's broadcast and are passed through frame by frame.
    pub(crate) fn run(&mut self, mut each: impl FnMut(Seen<'_>) -> bool) -> io::Result<()> {
        if !self.initial.is_empty() {
            let n = self.initial.len();
            self.buf[..n].copy_from_slice(&self.initial);
            self.end = n;
            self.initial = Vec::new();
        }
        loop {
            // Parse every complete frame already buffered.
            loop {
                let mut cursor = Cursor::new(&self.buf[self.start..self.end]);
                let Some((header, len)) = FrameHeader::parse(&mut cursor)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?
                else {
                    break;
                };
                let head = cursor.position() as usize;
                let len = usize::try_from(len)
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
                if self.end - self.start < head + len {
                    if head + len > self.buf.len() {
                        self.buf.resize(head + len, 0);
                    }
                    break;
                }
                let payload = &self.buf[self.start + head..self.start + head + len];
                let seen = match header.opcode {
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
                if !each(seen) || closed {
                    return Ok(());
                }
            }
            // Move the partial frame to the front, then read more.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
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
    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut s = self
            .stream
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        s.write_all(bytes)
    }

    /// Sends a text message.
    pub(crate) fn text(&self, payload: &[u8], scratch: &mut Vec<u8>) -> io::Result<()> {
        self.frame(OpCode::Data(Data::Text), payload, scratch)
    }

    /// Sends a binary message.
    pub(crate) fn binary(&self, payload: &[u8], scratch: &mut Vec<u8>) -> io::Result<()> {
        self.frame(OpCode::Data(Data::Binary), payload, scratch)
    }

    /// Answers a ping.
    pub(crate) fn pong(&self, payload: &[u8]) -> io::Result<()> {
        let mut scratch = Vec::new();
        self.frame(OpCode::Control(Control::Pong), payload, &mut scratch)
    }

    /// Sends Close 1000.
    pub(crate) fn close(&self) -> io::Result<()> {
        let mut scratch = Vec::new();
        self.frame(
            OpCode::Control(Control::Close),
            &1000u16.to_be_bytes(),
            &mut scratch,
        )
    }

    fn frame(&self, opcode: OpCode, payload: &[u8], scratch: &mut Vec<u8>) -> io::Result<()> {
        scratch.clear();
        Frame::encode(Role::Client, opcode, Bytes::copy_from_slice(payload)).append_to(scratch);
        self.write(scratch)
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
