//! The server's memory budget: one count of everything it buffers on a
//! peer's behalf, against one limit (`Config::max_buffered_bytes`).
//!
//! Two kinds of bytes are counted:
//! * **incoming**: bytes of messages a reader has received but not yet
//!   completed. The reader's `Read` layer ([`Tracker`]) follows the frame
//!   headers going by, so it knows exactly how much of an unfinished
//!   message it holds; a peer that only *announces* a length costs nothing
//!   (tungstenite reserves the announced length, which stays virtual
//!   memory until bytes arrive; the limit on it is `max_message_bytes`).
//! * **queued**: frames on their way to writers. A frame is charged once,
//!   when its message is complete ([`Charge`]), however many queues share
//!   it, and released when the last queue lets go of it.
//!
//! When incoming bytes would take the total over the limit, the reader
//! that pushes it over fails with [`OverBudget`] (the session closes it
//! with 1013 and frees its buffer at once). When the total passes three
//! quarters of the limit (queues grew; the last quarter is for messages
//! being received), the hub evicts the clients with the most bytes queued. Everything is relaxed atomics on paths that already run:
//! no lock, no allocation, no system call per frame.
//!
//! May touch: its own counters; nothing else.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::OpCode;

/// The budget and its counters. One per server, shared by every thread.
#[derive(Debug)]
pub(crate) struct Memory {
    limit: usize,
    used: AtomicUsize,
    /// Connections closed with 1013 for the budget.
    refused: AtomicU64,
    /// Clients evicted because queued frames took the total over.
    evicted: AtomicU64,
}

impl Memory {
    pub(crate) fn new(limit: usize) -> Arc<Memory> {
        Arc::new(Memory {
            limit,
            used: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
        })
    }

    /// Bytes counted now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// How far the total is over what queued frames may fill: three
    /// quarters of the limit. The last quarter is kept for messages being
    /// received, so that queues growing behind slow readers get their
    /// owners evicted before they crowd out the senders.
    pub(crate) fn queue_excess(&self) -> Option<usize> {
        let queue_limit = self.limit - self.limit / 4;
        self.used().checked_sub(queue_limit).filter(|&e| e > 0)
    }

    /// Counts `bytes` more; `false` (and nothing counted) if that would
    /// take the total over the limit.
    fn try_add(&self, bytes: usize) -> bool {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.limit {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    fn add(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Connections refused with 1013 so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn count_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Clients evicted for the budget so far.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    pub(crate) fn count_evicted(&self) {
        self.evicted.fetch_add(1, Ordering::Relaxed);
    }
}

/// A frame's bytes, counted while any queue holds the frame.
#[derive(Debug)]
pub(crate) struct Charge {
    memory: Arc<Memory>,
    bytes: usize,
}

impl Charge {
    /// Counts `bytes` against `memory` until the charge is dropped. Never
    /// refused: the message is already in memory; the hub evicts queues
    /// if the total is over.
    pub(crate) fn new(memory: &Arc<Memory>, bytes: usize) -> Arc<Charge> {
        memory.add(bytes);
        Arc::new(Charge {
            memory: memory.clone(),
            bytes,
        })
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.memory.sub(self.bytes);
    }
}

/// Why a reader stopped: the read layer's own errors, carried inside an
/// `io::Error` through tungstenite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The unfinished message would take the budget over its limit (1013).
    OverBudget {
        /// What the connection held of it.
        held: usize,
    },
    /// A message was started and not finished within the message timeout (1008).
    MessageTimeout,
    /// A compressed message inflates past the message limit (1009).
    TooBig,
    /// A compressed message does not inflate: 1007 for text, 1002 otherwise.
    Corrupt {
        /// Whether the message was text.
        text: bool,
    },
    /// A frame that permessage-deflate forbids (1002).
    Protocol(&'static str),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::OverBudget { held } => {
                write!(f, "server memory budget exhausted ({held} bytes held)")
            }
            Refusal::MessageTimeout => write!(f, "message not completed in time"),
            Refusal::TooBig => write!(f, "inflated message too big"),
            Refusal::Corrupt { .. } => write!(f, "invalid compressed data"),
            Refusal::Protocol(why) => write!(f, "{why}"),
        }
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// The refusal inside `e`, if `e` is one of ours.
    pub(crate) fn of(e: &io::Error) -> Option<Refusal> {
        e.get_ref()?.downcast_ref::<Refusal>().copied()
    }
}

/// Where the tracker is in the byte stream.
#[derive(Debug)]
enum At {
    /// Collecting a frame header (up to 14 bytes).
    Header { buf: [u8; 14], len: u8 },
    /// Inside a payload: bytes left, and whether it counts (data frames).
    Payload { left: u64, data: bool, fin: bool },
}

/// Follows the frames a peer sends, to know how many bytes of an
/// unfinished data message this connection holds, and since when.
#[derive(Debug)]
pub(crate) struct Tracker {
    memory: Option<Arc<Memory>>,
    message_timeout: Duration,
    at: At,
    /// Payload bytes of the unfinished data message.
    held: usize,
    /// When its first frame began.
    since: Option<Instant>,
}

impl Tracker {
    /// A tracker charging `memory` (none: count nothing, as on the
    /// dialling side), refusing messages not finished in `message_timeout`.
    pub(crate) fn new(memory: Option<Arc<Memory>>, message_timeout: Duration) -> Tracker {
        Tracker {
            memory,
            message_timeout,
            at: At::Header {
                buf: [0; 14],
                len: 0,
            },
            held: 0,
            since: None,
        }
    }

    /// When the unfinished message must be complete, if one is unfinished.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.since.and_then(|t| t.checked_add(self.message_timeout))
    }

    /// Takes `bytes` just read; refuses them when the budget cannot hold
    /// what they add to an unfinished message.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        while !bytes.is_empty() {
            match &mut self.at {
                At::Header { buf, len } => {
                    let take = (buf.len() - *len as usize).min(bytes.len());
                    buf[*len as usize..*len as usize + take].copy_from_slice(&bytes[..take]);
                    let have = *len as usize + take;
                    let mut cursor = io::Cursor::new(&buf[..have]);
                    match FrameHeader::parse(&mut cursor) {
                        Ok(Some((header, length))) => {
                            let used = cursor.position() as usize - *len as usize;
                            bytes = &bytes[used..];
                            let data = matches!(header.opcode, OpCode::Data(_));
                            if data && self.since.is_none() {
                                self.since = Some(Instant::now());
                            }
                            self.at = At::Payload {
                                left: length,
                                data,
                                fin: header.is_final,
                            };
                            self.end_of_frame_if_empty();
                        }
                        Ok(None) => {
                            *len = have as u8;
                            bytes = &bytes[take..];
                        }
                        // tungstenite refuses the same bytes and closes.
                        Err(_) => return Ok(()),
                    }
                }
                At::Payload { left, data, .. } => {
                    let take = (*left).min(bytes.len() as u64) as usize;
                    *left -= take as u64;
                    if *data {
                        if let Some(memory) = &self.memory
                            && !memory.try_add(take)
                        {
                            return Err(Refusal::OverBudget {
                                held: self.held + take,
                            });
                        }
                        self.held += take;
                    }
                    bytes = &bytes[take..];
                    self.end_of_frame_if_empty();
                }
            }
        }
        Ok(())
    }

    /// Moves on to the next header once a payload is complete; a final
    /// data frame completes its message.
    fn end_of_frame_if_empty(&mut self) {
        if let At::Payload { left: 0, data, fin } = self.at {
            if data && fin {
                self.release();
            }
            self.at = At::Header {
                buf: [0; 14],
                len: 0,
            };
        }
    }

    /// Forgets the unfinished message (complete, or refused).
    pub(crate) fn release(&mut self) {
        if let Some(memory) = &self.memory {
            memory.sub(self.held);
        }
        self.held = 0;
        self.since = None;
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.release();
    }
}
