//! Every default of a [`Config`](crate::Config), as one named constant
//! each: the server, `wshub serve`'s flags and the tests all read them
//! from here, so the three never disagree.
//!
//! The timing defaults are gorilla/websocket's chat example constants
//! (`writeWait`, `pongWait`, `pingPeriod`, the 256-message `send` channel);
//! the size limits are chosen for a hub that relays files.
//!
//! May touch: `/proc/meminfo` (read, for [`max_buffered_bytes`]).

use std::time::Duration;

/// Listen address: every IPv4 interface, port 8080.
pub const ADDR: &str = "0.0.0.0:8080";
/// Bound on every socket write (gorilla's `writeWait`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a peer may stay silent, sending neither data nor pongs
/// (gorilla's `pongWait`).
pub const PONG_TIMEOUT: Duration = Duration::from_secs(60);
/// Interval between pings; below the pong timeout so a live peer always
/// answers in time (gorilla's `pingPeriod`, 9/10 of `pongWait`).
pub const PING_INTERVAL: Duration = Duration::from_secs(54);
/// Per-client send queue, in messages (gorilla's `send` channel).
pub const SEND_QUEUE: usize = 256;
/// Per-client send queue, in bytes of queued frames.
pub const SEND_QUEUE_BYTES: usize = 64 << 20;
/// Largest message accepted from a client.
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// Deadline for a complete HTTP request head (slowloris guard).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest HTTP request head; beyond it the answer is 431.
pub const MAX_HEAD_BYTES: usize = 8 << 10;
/// Time to wait for the peer's answer to a Close we sent.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Read chunk of a WebSocket connection. tungstenite allocates this
/// eagerly per connection (its own default is 128 KiB), so it is small here.
pub const READ_BUFFER_BYTES: usize = 4 << 10;
/// Stack size of the reader and writer threads. Only touched pages count
/// against memory, but the reservation counts against address space.
pub const THREAD_STACK_BYTES: usize = 128 << 10;
/// Time a started message may take to arrive completely (the WebSocket
/// form of slowloris); after it the connection is closed with 1008.
pub const MESSAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// The memory budget where `/proc/meminfo` cannot be read: 1 GiB.
pub const MAX_BUFFERED_BYTES_FALLBACK: usize = 1 << 30;
/// Messages each room keeps for late joiners (`?history=K`); 0 turns
/// history off.
pub const HISTORY: usize = 100;
/// Bytes each room's history may hold.
pub const HISTORY_BYTES: usize = 4 << 20;
/// Age after which a message leaves its room's history (and an empty room
/// its history).
pub const HISTORY_AGE: Duration = Duration::from_secs(3600);
/// Listen backlog: connections the kernel completes and queues before the
/// acceptor takes them. std's own is 128, which 2,000 clients connecting
/// at once overflow (some then stall a second on a SYN retransmit). Linux
/// caps it at `net.core.somaxconn` (4096 by default).
pub const LISTEN_BACKLOG: u32 = 4096;
/// Capacity of each [`Server::events`](crate::Server::events) receiver.
pub const EVENT_QUEUE: usize = 4096;
/// Messages shorter than this are sent uncompressed, with compression on:
/// deflate gains little on them and costs a compression each.
pub const COMPRESSION_MIN_BYTES: usize = 256;
/// The deflate level (1: fastest, gorilla's default too).
pub const COMPRESSION_LEVEL: u32 = 1;
/// Smallest burst of the per-client rate limit when none is given.
pub const MESSAGE_BURST: u32 = 10;

/// The memory budget: a quarter of the machine's memory (`MemTotal` in
/// `/proc/meminfo`), or [`MAX_BUFFERED_BYTES_FALLBACK`] where that is
/// unknown.
pub fn max_buffered_bytes() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib.saturating_mul(1024) / 4)
        })
        .filter(|&bytes| bytes > 0)
        .unwrap_or(MAX_BUFFERED_BYTES_FALLBACK)
}
