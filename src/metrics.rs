//! The server's counters and `GET /metrics` in the Prometheus text
//! exposition format (version 0.0.4).
//!
//! [`Metrics`] is a set of atomics that the threads which already run
//! bump as they go: readers per message received, each fan-out lane once
//! per burst (not per delivery), the connection thread per refusal, the
//! reader per close. Nothing here locks, allocates or makes a system call
//! on those paths; rendering (`render`) does all of that, once per scrape,
//! and reads the rest — rooms, history, the Redis bridge, threads, file
//! descriptors, RSS — from where it already lives.
//!
//! Invariants: counters only grow; every series has a `# HELP` and a
//! `# TYPE` line; names carry the `wshub_` prefix, base units (bytes,
//! seconds) and `_total` for counters.
//!
//! May touch: its own atomics; `/proc/self` when rendering.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// The `Content-Type` of the exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// HTTP statuses counted by name; any other is counted as `other`.
const STATUSES: [u16; 13] = [
    400, 401, 403, 404, 405, 408, 413, 414, 426, 429, 431, 500, 503,
];

/// Close codes counted by number; any other is counted as `other`. 1005
/// stands for a Close without a code, 1006 for a connection that dropped
/// without one.
const CODES: [u16; 12] = [
    1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1013,
];

/// A counter per label value of a small, fixed set (plus `other`).
struct Labelled<const N: usize> {
    keys: [u16; N],
    counts: [AtomicU64; N],
    other: AtomicU64,
}

impl<const N: usize> Labelled<N> {
    fn new(keys: [u16; N]) -> Self {
        Labelled {
            keys,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            other: AtomicU64::new(0),
        }
    }

    fn count(&self, key: u16) {
        let slot = match self.keys.iter().position(|k| *k == key) {
            Some(i) => &self.counts[i],
            None => &self.other,
        };
        slot.fetch_add(1, Ordering::Relaxed);
    }

    /// Every label value with its count, `other` last.
    fn each(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.keys
            .iter()
            .zip(&self.counts)
            .map(|(k, c)| (k.to_string(), c.load(Ordering::Relaxed)))
            .chain(std::iter::once((
                "other".to_string(),
                self.other.load(Ordering::Relaxed),
            )))
    }
}

/// A count and a byte sum, on a cache line of their own: the hub, the
/// lanes and the readers bump different pairs without contending for one
/// line.
#[repr(align(128))]
#[derive(Default)]
struct Pair {
    count: AtomicU64,
    bytes: AtomicU64,
}

impl Pair {
    fn add(&self, count: usize, bytes: usize) {
        self.count.fetch_add(count as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// `add` for a pair only one thread ever writes: a plain load and
    /// store, without the locked read-modify-write (readers may see the
    /// count a moment before the bytes, as with `add`).
    fn add_single_writer(&self, count: usize, bytes: usize) {
        let c = self.count.load(Ordering::Relaxed);
        self.count.store(c + count as u64, Ordering::Relaxed);
        let b = self.bytes.load(Ordering::Relaxed);
        self.bytes.store(b + bytes as u64, Ordering::Relaxed);
    }
}

/// Who sent the Close that ended a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    /// The peer closed (or dropped the connection).
    Peer,
    /// The server closed.
    Server,
}

/// The server's counters, shared by every thread (`Arc<Metrics>`).
pub(crate) struct Metrics {
    /// Counted by the hub, once per burst.
    received: Pair,
    /// Counted by the echo sessions' readers.
    echo_received: Pair,
    /// Counted by each lane, once per burst: one pair per lane, each
    /// written by its lane's thread alone.
    delivered: [Pair; crate::hub::fanout::MAX_LANES],
    /// Counted by the echo sessions' readers.
    echo_delivered: Pair,
    deliveries_refused: AtomicU64,
    evicted_queue_full: AtomicU64,
    upgrades: AtomicU64,
    ping_timeouts: AtomicU64,
    rate_limited: AtomicU64,
    deflate_negotiated: AtomicU64,
    /// Messages deflated (once per broadcast), and their bytes before/after.
    deflated_out: Pair,
    deflated_out_before: AtomicU64,
    /// Messages inflated, their bytes as received and inflated.
    inflated_in: Pair,
    inflated_in_after: AtomicU64,
    http_refused: Labelled<13>,
    handshakes_refused: Labelled<13>,
    closed_by_peer: Labelled<12>,
    closed_by_server: Labelled<12>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            received: Pair::default(),
            echo_received: Pair::default(),
            delivered: Default::default(),
            echo_delivered: Pair::default(),
            deliveries_refused: AtomicU64::new(0),
            evicted_queue_full: AtomicU64::new(0),
            upgrades: AtomicU64::new(0),
            ping_timeouts: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            deflate_negotiated: AtomicU64::new(0),
            deflated_out: Pair::default(),
            deflated_out_before: AtomicU64::new(0),
            inflated_in: Pair::default(),
            inflated_in_after: AtomicU64::new(0),
            http_refused: Labelled::new(STATUSES),
            handshakes_refused: Labelled::new(STATUSES),
            closed_by_peer: Labelled::new(CODES),
            closed_by_server: Labelled::new(CODES),
        }
    }
}

impl Metrics {
    /// `messages` chat messages of `bytes` payload bytes that clients sent
    /// (one call per hub burst, on the hub thread only).
    pub(crate) fn received(&self, messages: usize, bytes: usize) {
        if messages > 0 {
            self.received.add_single_writer(messages, bytes);
        }
    }

    /// `messages` frames of `bytes` in all handed to clients' outboxes by
    /// `lane` (one call per burst, on that lane's thread only).
    pub(crate) fn delivered(&self, lane: usize, messages: usize, bytes: usize) {
        if messages > 0
            && let Some(pair) = self.delivered.get(lane)
        {
            pair.add_single_writer(messages, bytes);
        }
    }

    /// One message echoed on `/echo`: `payload` bytes read, `frame` bytes
    /// written back.
    pub(crate) fn echoed(&self, payload: usize, frame: Option<usize>) {
        self.echo_received.add(1, payload);
        if let Some(frame) = frame {
            self.echo_delivered.add(1, frame);
        }
    }

    /// Deliveries refused by full outboxes, and how many of those clients
    /// were evicted for it (one call per burst and lane).
    pub(crate) fn refused(&self, refused: usize, evicted: usize) {
        if refused > 0 {
            self.deliveries_refused
                .fetch_add(refused as u64, Ordering::Relaxed);
            self.evicted_queue_full
                .fetch_add(evicted as u64, Ordering::Relaxed);
        }
    }

    /// A WebSocket handshake completed.
    pub(crate) fn upgraded(&self) {
        self.upgrades.fetch_add(1, Ordering::Relaxed);
    }

    /// An HTTP request refused with `status`; `handshake` when it asked
    /// for a WebSocket upgrade.
    pub(crate) fn http_refused(&self, status: u16, handshake: bool) {
        self.http_refused.count(status);
        if handshake {
            self.handshakes_refused.count(status);
        }
    }

    /// A connection ended with `code` (1005: no code, 1006: dropped).
    pub(crate) fn closed(&self, side: Side, code: u16) {
        match side {
            Side::Peer => self.closed_by_peer.count(code),
            Side::Server => self.closed_by_server.count(code),
        }
    }

    /// A client closed for not answering pings.
    pub(crate) fn ping_timeout(&self) {
        self.ping_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection agreed to permessage-deflate.
    pub(crate) fn deflate_negotiated(&self) {
        self.deflate_negotiated.fetch_add(1, Ordering::Relaxed);
    }

    /// A message deflated for sending: `before` payload bytes became `after`.
    pub(crate) fn deflated_out(&self, before: usize, after: usize) {
        self.deflated_out.add(1, after);
        self.deflated_out_before
            .fetch_add(before as u64, Ordering::Relaxed);
    }

    /// A compressed message received: `compressed` bytes inflated to `inflated`.
    pub(crate) fn inflated_in(&self, compressed: usize, inflated: usize) {
        self.inflated_in.add(1, compressed);
        self.inflated_in_after
            .fetch_add(inflated as u64, Ordering::Relaxed);
    }

    /// A client closed for sending faster than its rate limit.
    pub(crate) fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }
}

/// What `render` reads from elsewhere at scrape time.
pub(crate) struct Snapshot {
    /// Open connections on `/ws` and `/ws/{room}`.
    pub chat_clients: usize,
    /// Open connections on `/echo`.
    pub echo_clients: usize,
    /// Rooms with local clients.
    pub rooms: usize,
    /// Messages and bytes kept in room histories (`None`: history off).
    pub history: Option<(usize, usize)>,
    /// Bytes buffered for clients now, and the budget.
    pub buffered: (usize, usize),
    /// Connections refused (1013) and clients evicted (1008) for the
    /// memory budget.
    pub memory_refused: u64,
    pub memory_evicted: u64,
    /// With Redis: connected, published, received, dropped.
    pub redis: Option<(bool, u64, u64, u64)>,
    /// Whether shutdown has begun.
    pub draining: bool,
}

/// One metric family's `# HELP` and `# TYPE` lines.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{name} {value}");
}

fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    sample(out, name, value);
}

fn labelled<const N: usize>(
    out: &mut String,
    name: &str,
    label: &str,
    help: &str,
    counts: &Labelled<N>,
) {
    family(out, name, "counter", help);
    for (key, n) in counts.each() {
        let _ = writeln!(out, "{name}{{{label}=\"{key}\"}} {n}");
    }
}

impl Metrics {
    /// The whole exposition: these counters, `snap`, and the process's
    /// threads, file descriptors and RSS.
    pub(crate) fn render(&self, snap: &Snapshot) -> String {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let sum = |a: &AtomicU64, b: &AtomicU64| load(a) + load(b);
        let lanes =
            |f: fn(&Pair) -> &AtomicU64| self.delivered.iter().map(|p| load(f(p))).sum::<u64>();
        let mut out = String::with_capacity(8192);
        family(
            &mut out,
            "wshub_build_info",
            "gauge",
            "Always 1; the version of this build in the label.",
        );
        let _ = writeln!(
            out,
            "wshub_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        family(
            &mut out,
            "wshub_clients",
            "gauge",
            "Open WebSocket connections, by endpoint.",
        );
        let _ = writeln!(
            out,
            "wshub_clients{{endpoint=\"ws\"}} {}",
            snap.chat_clients
        );
        let _ = writeln!(
            out,
            "wshub_clients{{endpoint=\"echo\"}} {}",
            snap.echo_clients
        );
        single(
            &mut out,
            "wshub_rooms",
            "gauge",
            "Rooms with clients on this instance.",
            snap.rooms,
        );
        single(
            &mut out,
            "wshub_draining",
            "gauge",
            "1 once shutdown has begun (/healthz answers 503).",
            u8::from(snap.draining),
        );
        single(
            &mut out,
            "wshub_upgrades_total",
            "counter",
            "WebSocket handshakes completed.",
            load(&self.upgrades),
        );
        single(
            &mut out,
            "wshub_messages_received_total",
            "counter",
            "Text and binary messages read from clients (/ws and /echo).",
            sum(&self.received.count, &self.echo_received.count),
        );
        single(
            &mut out,
            "wshub_received_bytes_total",
            "counter",
            "Payload bytes of the messages read from clients.",
            sum(&self.received.bytes, &self.echo_received.bytes),
        );
        single(
            &mut out,
            "wshub_messages_delivered_total",
            "counter",
            "Messages handed to clients' send queues (one per receiver).",
            lanes(|p| &p.count) + load(&self.echo_delivered.count),
        );
        single(
            &mut out,
            "wshub_delivered_bytes_total",
            "counter",
            "Frame bytes of the messages handed to clients' send queues.",
            lanes(|p| &p.bytes) + load(&self.echo_delivered.bytes),
        );
        single(
            &mut out,
            "wshub_deliveries_refused_total",
            "counter",
            "Deliveries refused because the receiver's send queue was full.",
            load(&self.deliveries_refused),
        );
        single(
            &mut out,
            "wshub_evicted_queue_full_total",
            "counter",
            "Clients closed with 1008 because their send queue was full.",
            load(&self.evicted_queue_full),
        );
        single(
            &mut out,
            "wshub_ping_timeouts_total",
            "counter",
            "Clients closed because they answered no ping within the pong timeout.",
            load(&self.ping_timeouts),
        );
        single(
            &mut out,
            "wshub_rate_limited_total",
            "counter",
            "Clients closed with 1008 for sending faster than --max-messages-per-second.",
            load(&self.rate_limited),
        );
        single(
            &mut out,
            "wshub_deflate_negotiated_total",
            "counter",
            "Connections that agreed to permessage-deflate.",
            load(&self.deflate_negotiated),
        );
        family(
            &mut out,
            "wshub_deflate_messages_total",
            "counter",
            "Messages deflated for sending (once per broadcast) and compressed messages received.",
        );
        let _ = writeln!(
            out,
            "wshub_deflate_messages_total{{direction=\"out\"}} {}",
            load(&self.deflated_out.count)
        );
        let _ = writeln!(
            out,
            "wshub_deflate_messages_total{{direction=\"in\"}} {}",
            load(&self.inflated_in.count)
        );
        family(
            &mut out,
            "wshub_deflate_bytes_total",
            "counter",
            "Payload bytes of compressed messages, before (uncompressed) and after (compressed) deflate, by direction.",
        );
        for (direction, uncompressed, compressed) in [
            ("out", &self.deflated_out_before, &self.deflated_out.bytes),
            ("in", &self.inflated_in_after, &self.inflated_in.bytes),
        ] {
            for (stage, n) in [("uncompressed", uncompressed), ("compressed", compressed)] {
                let _ = writeln!(
                    out,
                    "wshub_deflate_bytes_total{{direction=\"{direction}\",stage=\"{stage}\"}} {}",
                    load(n)
                );
            }
        }
        labelled(
            &mut out,
            "wshub_http_refused_total",
            "status",
            "HTTP requests answered with an error status, by status.",
            &self.http_refused,
        );
        labelled(
            &mut out,
            "wshub_handshakes_refused_total",
            "status",
            "WebSocket upgrade requests refused, by HTTP status.",
            &self.handshakes_refused,
        );
        family(
            &mut out,
            "wshub_closes_total",
            "counter",
            "WebSocket connections ended, by close code and by who closed (1005: no code, 1006: dropped).",
        );
        for (by, counts) in [
            ("peer", &self.closed_by_peer),
            ("server", &self.closed_by_server),
        ] {
            for (code, n) in counts.each() {
                let _ = writeln!(out, "wshub_closes_total{{by=\"{by}\",code=\"{code}\"}} {n}");
            }
        }
        single(
            &mut out,
            "wshub_buffered_bytes",
            "gauge",
            "Bytes held for clients now (messages being read, frames queued).",
            snap.buffered.0,
        );
        single(
            &mut out,
            "wshub_buffered_bytes_limit",
            "gauge",
            "The memory budget for buffered bytes (--max-buffered-bytes).",
            snap.buffered.1,
        );
        single(
            &mut out,
            "wshub_memory_refused_total",
            "counter",
            "Connections closed with 1013 because a message would exceed the memory budget.",
            snap.memory_refused,
        );
        single(
            &mut out,
            "wshub_memory_evicted_total",
            "counter",
            "Clients closed with 1008 because queued frames exceeded the memory budget.",
            snap.memory_evicted,
        );
        if let Some((entries, bytes)) = snap.history {
            single(
                &mut out,
                "wshub_history_messages",
                "gauge",
                "Messages kept in room histories.",
                entries,
            );
            single(
                &mut out,
                "wshub_history_bytes",
                "gauge",
                "Frame bytes kept in room histories.",
                bytes,
            );
        }
        if let Some((up, published, received, dropped)) = snap.redis {
            single(
                &mut out,
                "wshub_redis_connected",
                "gauge",
                "1 while both of the Redis bridge's connections are up.",
                u8::from(up),
            );
            single(
                &mut out,
                "wshub_redis_published_total",
                "counter",
                "Messages published to Redis for other instances.",
                published,
            );
            single(
                &mut out,
                "wshub_redis_received_total",
                "counter",
                "Messages received from other instances through Redis.",
                received,
            );
            single(
                &mut out,
                "wshub_redis_dropped_total",
                "counter",
                "Messages that did not cross instances (queue full, Redis away too long).",
                dropped,
            );
        }
        let process = Process::read();
        single(
            &mut out,
            "wshub_process_threads",
            "gauge",
            "Threads of the process.",
            process.threads,
        );
        single(
            &mut out,
            "wshub_process_open_fds",
            "gauge",
            "Open file descriptors of the process.",
            process.fds,
        );
        single(
            &mut out,
            "wshub_process_resident_memory_bytes",
            "gauge",
            "Resident set size of the process.",
            process.rss,
        );
        out
    }
}

/// What the kernel says of this process (zeros where it says nothing).
#[derive(Default)]
struct Process {
    threads: u64,
    fds: u64,
    rss: u64,
}

impl Process {
    fn read() -> Process {
        let mut p = Process::default();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let mut words = line.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("Threads:"), Some(n)) => p.threads = n.parse().unwrap_or(0),
                    (Some("VmRSS:"), Some(kib)) => p.rss = kib.parse::<u64>().unwrap_or(0) * 1024,
                    _ => {}
                }
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // Less the descriptor of the directory being read.
            p.fds = (dir.count() as u64).saturating_sub(1);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_statuses_and_codes_count_as_other() {
        let m = Metrics::default();
        m.http_refused(404, false);
        m.http_refused(418, true);
        m.closed(Side::Peer, 4000);
        let out = m.render(&Snapshot {
            chat_clients: 0,
            echo_clients: 0,
            rooms: 0,
            history: None,
            buffered: (0, 1),
            memory_refused: 0,
            memory_evicted: 0,
            redis: None,
            draining: false,
        });
        assert!(out.contains("wshub_http_refused_total{status=\"404\"} 1\n"));
        assert!(out.contains("wshub_http_refused_total{status=\"other\"} 1\n"));
        assert!(out.contains("wshub_handshakes_refused_total{status=\"other\"} 1\n"));
        assert!(out.contains("wshub_handshakes_refused_total{status=\"404\"} 0\n"));
        assert!(out.contains("wshub_closes_total{by=\"peer\",code=\"other\"} 1\n"));
        assert!(!out.contains("wshub_redis_"));
    }
}
