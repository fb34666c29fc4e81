//! The server's counters and `GET /metrics` in the Prometheus text
//! exposition format (version 0.0.4).
//!
//! [`Metrics`] is a set of atomics that the threads which already run
//! bump as they go: readers per message received, each fan-out lane once
//! per burst (not per delivery), the connection thread per refusal, the
//! reader per close. Nothing here locks, allocates or makes a system call
//! on those paths; each lane has a pair of counters on a cache line of its
//! own, written by that lane's thread alone ([`LANES`] of them: a number
//! this module owns, and which `hub::fanout` checks its lane count against;
//! nothing here imports the hub).
//!
//! Rendering (`render`) allocates and reads `/proc`, once per scrape. It is
//! one loop over [`FAMILIES`], a table of every metric family in the order
//! of the exposition: name, type, help, and how to read its samples from
//! the counters, from the [`Snapshot`] of what lives elsewhere (clients,
//! rooms, history, the memory budget, the Redis bridge) and from the
//! process (threads, file descriptors, RSS). [`Samples`] writes them: the
//! `# HELP` and `# TYPE` lines before a family's first sample, then one
//! line per sample, labels in the order given.
//!
//! Invariants: counters only grow; every series has a `# HELP` and a
//! `# TYPE` line, and a family without samples (Redis or history off) is
//! left out whole; names carry the `wshub_` prefix, base units (bytes,
//! seconds) and `_total` for counters (and only for them).
//!
//! May touch: its own atomics; `/proc/self` when rendering.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::deflate;

/// The `Content-Type` of the exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Fan-out lanes counted apart, each on a pair of counters of its own: the
/// most lanes the hub may run (`hub::fanout` checks its `MAX_LANES` against
/// this when it compiles).
pub(crate) const LANES: usize = 4;

/// HTTP statuses counted by name; any other is counted as `other`.
const STATUSES: [u16; 13] = [
    400, 401, 403, 404, 405, 408, 413, 414, 426, 429, 431, 500, 503,
];

/// Close codes counted by number; any other is counted as `other`. 1005
/// stands for a Close without a code, 1006 for a connection that dropped
/// without one.
/// Statuses the server API answers with, as labels.
const API_STATUSES: [u16; 12] = [200, 204, 400, 401, 404, 405, 411, 413, 415, 500, 503, 504];

/// The server API's routes, as labels (`other`: no route matched).
pub(crate) const API_ROUTES: [&str; 7] = [
    "publish",
    "history",
    "rooms",
    "room",
    "remove_client",
    "remove_user",
    "other",
];

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
    delivered: [Pair; LANES],
    /// Counted by the echo sessions' readers.
    echo_delivered: Pair,
    deliveries_refused: AtomicU64,
    evicted_queue_full: AtomicU64,
    upgrades: AtomicU64,
    ping_timeouts: AtomicU64,
    rate_limited: AtomicU64,
    /// What permessage-deflate did, counted by `deflate` where it happens.
    pub(crate) deflate: Arc<deflate::Counts>,
    http_refused: Labelled<13>,
    /// Per route of `API_ROUTES`, by status.
    api_requests: [Labelled<12>; 7],
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
            deflate: Arc::default(),
            http_refused: Labelled::new(STATUSES),
            api_requests: std::array::from_fn(|_| Labelled::new(API_STATUSES)),
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

    /// A server API request to `route` (one of `API_ROUTES`) answered
    /// with `status`.
    pub(crate) fn api_request(&self, route: &str, status: u16) {
        let i = API_ROUTES.iter().position(|r| *r == route);
        self.api_requests[i.unwrap_or(API_ROUTES.len() - 1)].count(status);
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

/// A family's `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

use Kind::{Counter, Gauge};

/// How a family reads its samples at scrape time (none: the family is
/// left out).
type Read = fn(&Scrape, &mut Samples);

/// A metric family: its name, type, help, and how to read its samples.
type Family = (&'static str, Kind, &'static str, Read);

/// Every family, in the order of the exposition.
static FAMILIES: &[Family] = &[
    (
        "wshub_build_info",
        Gauge,
        "Always 1; the version of this build in the label.",
        |_, o| o.labelled(&[("version", env!("CARGO_PKG_VERSION"))], 1),
    ),
    (
        "wshub_clients",
        Gauge,
        "Open WebSocket connections, by endpoint.",
        |s, o| {
            o.labelled(&[("endpoint", "ws")], s.snap.chat_clients as u64);
            o.labelled(&[("endpoint", "echo")], s.snap.echo_clients as u64);
        },
    ),
    (
        "wshub_rooms",
        Gauge,
        "Rooms with clients on this instance.",
        |s, o| o.one(s.snap.rooms as u64),
    ),
    (
        "wshub_draining",
        Gauge,
        "1 once shutdown has begun (/healthz answers 503).",
        |s, o| o.one(u64::from(s.snap.draining)),
    ),
    (
        "wshub_upgrades_total",
        Counter,
        "WebSocket handshakes completed.",
        |s, o| o.one(load(&s.m.upgrades)),
    ),
    (
        "wshub_messages_received_total",
        Counter,
        "Text and binary messages read from clients (/ws and /echo).",
        |s, o| o.one(load(&s.m.received.count) + load(&s.m.echo_received.count)),
    ),
    (
        "wshub_received_bytes_total",
        Counter,
        "Payload bytes of the messages read from clients.",
        |s, o| o.one(load(&s.m.received.bytes) + load(&s.m.echo_received.bytes)),
    ),
    (
        "wshub_messages_delivered_total",
        Counter,
        "Messages handed to clients' send queues (one per receiver).",
        |s, o| o.one(s.delivered(|p| &p.count)),
    ),
    (
        "wshub_delivered_bytes_total",
        Counter,
        "Frame bytes of the messages handed to clients' send queues.",
        |s, o| o.one(s.delivered(|p| &p.bytes)),
    ),
    (
        "wshub_deliveries_refused_total",
        Counter,
        "Deliveries refused because the receiver's send queue was full.",
        |s, o| o.one(load(&s.m.deliveries_refused)),
    ),
    (
        "wshub_evicted_queue_full_total",
        Counter,
        "Clients closed with 1008 because their send queue was full.",
        |s, o| o.one(load(&s.m.evicted_queue_full)),
    ),
    (
        "wshub_ping_timeouts_total",
        Counter,
        "Clients closed because they answered no ping within the pong timeout.",
        |s, o| o.one(load(&s.m.ping_timeouts)),
    ),
    (
        "wshub_rate_limited_total",
        Counter,
        "Clients closed with 1008 for sending faster than --max-messages-per-second.",
        |s, o| o.one(load(&s.m.rate_limited)),
    ),
    (
        "wshub_deflate_negotiated_total",
        Counter,
        "Connections that agreed to permessage-deflate.",
        |s, o| o.one(load(&s.m.deflate.negotiated)),
    ),
    (
        "wshub_deflate_messages_total",
        Counter,
        "Messages deflated for sending (once per broadcast) and compressed messages received.",
        |s, o| {
            o.labelled(&[("direction", "out")], load(&s.m.deflate.deflated));
            o.labelled(&[("direction", "in")], load(&s.m.deflate.inflated));
        },
    ),
    (
        "wshub_deflate_bytes_total",
        Counter,
        "Payload bytes of compressed messages, before (uncompressed) and after (compressed) deflate, by direction.",
        |s, o| {
            let d = &s.m.deflate;
            for (direction, uncompressed, compressed) in [
                ("out", &d.deflated_plain, &d.deflated_compressed),
                ("in", &d.inflated_plain, &d.inflated_compressed),
            ] {
                for (stage, n) in [("uncompressed", uncompressed), ("compressed", compressed)] {
                    o.labelled(&[("direction", direction), ("stage", stage)], load(n));
                }
            }
        },
    ),
    (
        "wshub_api_requests_total",
        Counter,
        "Server API requests (/api/), by route and status.",
        |s, o| {
            for (route, counts) in API_ROUTES.iter().zip(&s.m.api_requests) {
                o.each(&[("route", route)], "status", counts);
            }
        },
    ),
    (
        "wshub_http_refused_total",
        Counter,
        "HTTP requests answered with an error status, by status.",
        |s, o| o.each(&[], "status", &s.m.http_refused),
    ),
    (
        "wshub_handshakes_refused_total",
        Counter,
        "WebSocket upgrade requests refused, by HTTP status.",
        |s, o| o.each(&[], "status", &s.m.handshakes_refused),
    ),
    (
        "wshub_closes_total",
        Counter,
        "WebSocket connections ended, by close code and by who closed (1005: no code, 1006: dropped).",
        |s, o| {
            o.each(&[("by", "peer")], "code", &s.m.closed_by_peer);
            o.each(&[("by", "server")], "code", &s.m.closed_by_server);
        },
    ),
    (
        "wshub_buffered_bytes",
        Gauge,
        "Bytes held for clients now (messages being read, frames queued).",
        |s, o| o.one(s.snap.buffered.0 as u64),
    ),
    (
        "wshub_buffered_bytes_limit",
        Gauge,
        "The memory budget for buffered bytes (--max-buffered-bytes).",
        |s, o| o.one(s.snap.buffered.1 as u64),
    ),
    (
        "wshub_memory_refused_total",
        Counter,
        "Connections closed with 1013 because a message would exceed the memory budget.",
        |s, o| o.one(s.snap.memory_refused),
    ),
    (
        "wshub_memory_evicted_total",
        Counter,
        "Clients closed with 1008 because queued frames exceeded the memory budget.",
        |s, o| o.one(s.snap.memory_evicted),
    ),
    (
        "wshub_history_messages",
        Gauge,
        "Messages kept in room histories.",
        |s, o| o.maybe(s.snap.history.map(|(entries, _)| entries as u64)),
    ),
    (
        "wshub_history_bytes",
        Gauge,
        "Frame bytes kept in room histories.",
        |s, o| o.maybe(s.snap.history.map(|(_, bytes)| bytes as u64)),
    ),
    (
        "wshub_redis_connected",
        Gauge,
        "1 while both of the Redis bridge's connections are up.",
        |s, o| o.maybe(s.snap.redis.map(|r| u64::from(r.0))),
    ),
    (
        "wshub_redis_published_total",
        Counter,
        "Messages published to Redis for other instances.",
        |s, o| o.maybe(s.snap.redis.map(|r| r.1)),
    ),
    (
        "wshub_redis_received_total",
        Counter,
        "Messages received from other instances through Redis.",
        |s, o| o.maybe(s.snap.redis.map(|r| r.2)),
    ),
    (
        "wshub_redis_dropped_total",
        Counter,
        "Messages that did not cross instances (queue full, Redis away too long).",
        |s, o| o.maybe(s.snap.redis.map(|r| r.3)),
    ),
    (
        "wshub_process_threads",
        Gauge,
        "Threads of the process.",
        |s, o| o.one(s.process.threads),
    ),
    (
        "wshub_process_open_fds",
        Gauge,
        "Open file descriptors of the process.",
        |s, o| o.one(s.process.fds),
    ),
    (
        "wshub_process_resident_memory_bytes",
        Gauge,
        "Resident set size of the process.",
        |s, o| o.one(s.process.rss),
    ),
];

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// What one scrape reads from.
struct Scrape<'a> {
    m: &'a Metrics,
    snap: &'a Snapshot,
    process: Process,
}

impl Scrape<'_> {
    /// One field of the delivered pairs, summed over the lanes and echo.
    fn delivered(&self, field: fn(&Pair) -> &AtomicU64) -> u64 {
        let lanes: u64 = self.m.delivered.iter().map(|p| load(field(p))).sum();
        lanes + load(field(&self.m.echo_delivered))
    }
}

/// One family's samples being written: its `# HELP` and `# TYPE` lines go
/// out with the first sample, so a family without samples is left out.
struct Samples<'a> {
    out: &'a mut String,
    family: &'a Family,
    started: bool,
}

impl Samples<'_> {
    /// The family's only sample, unlabelled.
    fn one(&mut self, value: u64) {
        self.labelled(&[], value);
    }

    /// `one`, or nothing (the family left out) for `None`.
    fn maybe(&mut self, value: Option<u64>) {
        if let Some(value) = value {
            self.one(value);
        }
    }

    /// A sample for each of `counts`' label values, `label="value"` after
    /// the `fixed` labels.
    fn each<const N: usize>(&mut self, fixed: &[(&str, &str)], label: &str, counts: &Labelled<N>) {
        for (key, n) in counts.each() {
            let mut labels = fixed.to_vec();
            labels.push((label, &key));
            self.labelled(&labels, n);
        }
    }

    /// A sample with `labels` (none: the bare name).
    fn labelled(&mut self, labels: &[(&str, &str)], value: u64) {
        let (name, kind, help, _) = *self.family;
        let out = &mut *self.out;
        if !self.started {
            self.started = true;
            let kind = match kind {
                Counter => "counter",
                Gauge => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        }
        out.push_str(name);
        for (i, (key, label)) in labels.iter().enumerate() {
            let open = if i == 0 { '{' } else { ',' };
            let _ = write!(out, "{open}{key}=\"{label}\"");
        }
        if !labels.is_empty() {
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

impl Metrics {
    /// The whole exposition: these counters, `snap`, and the process's
    /// threads, file descriptors and RSS.
    pub(crate) fn render(&self, snap: &Snapshot) -> String {
        self.exposition(snap, Process::read())
    }

    /// `render`, with what the kernel said of the process.
    fn exposition(&self, snap: &Snapshot, process: Process) -> String {
        let scrape = Scrape {
            m: self,
            snap,
            process,
        };
        let mut out = String::with_capacity(8192);
        for family in FAMILIES {
            let mut samples = Samples {
                out: &mut out,
                family,
                started: false,
            };
            (family.3)(&scrape, &mut samples);
        }
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

    /// Counters and a snapshot with distinct non-zero values in every family.
    fn busy() -> (Metrics, Snapshot) {
        let m = Metrics::default();
        m.received(3, 300);
        for _ in 0..2 {
            m.echoed(7, Some(9));
        }
        m.echoed(5, None);
        for lane in 0..LANES {
            m.delivered(lane, 10 + lane, 1000 + 100 * lane);
        }
        m.refused(11, 4);
        for _ in 0..13 {
            m.upgraded();
        }
        for (i, s) in STATUSES.iter().chain(&[418, 599]).enumerate() {
            for _ in 0..=i {
                m.http_refused(*s, i % 2 == 0);
            }
        }
        for (i, c) in CODES.iter().chain(&[4000, 3000]).enumerate() {
            for _ in 0..=i {
                m.closed(Side::Peer, *c);
            }
            for _ in 0..=2 * i {
                m.closed(Side::Server, *c);
            }
        }
        m.ping_timeout();
        m.ping_timeout();
        for _ in 0..5 {
            m.rate_limited();
        }
        for _ in 0..6 {
            m.deflate.negotiated();
        }
        m.deflate.deflated(1000, 100);
        m.deflate.deflated(2000, 150);
        m.deflate.inflated(70, 700);
        let snap = Snapshot {
            chat_clients: 21,
            echo_clients: 22,
            rooms: 23,
            history: Some((24, 2500)),
            buffered: (26, 27),
            memory_refused: 28,
            memory_evicted: 29,
            redis: Some((true, 30, 31, 32)),
            draining: true,
        };
        (m, snap)
    }

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
        assert!(!out.contains("wshub_history_"));
    }

    /// Every series the busy scrape must show, in this order.
    #[test]
    fn every_family_renders_in_order() {
        let (m, snap) = busy();
        let process = Process {
            threads: 3,
            fds: 7,
            rss: 4096,
        };
        let out = m.exposition(&snap, process);
        let mut at = 0;
        for line in [
            "wshub_build_info{version=\"",
            "# HELP wshub_clients Open WebSocket connections, by endpoint.\n",
            "# TYPE wshub_clients gauge\nwshub_clients{endpoint=\"ws\"} 21\n",
            "wshub_clients{endpoint=\"echo\"} 22\n",
            "wshub_rooms 23\n",
            "wshub_draining 1\n",
            "# TYPE wshub_upgrades_total counter\nwshub_upgrades_total 13\n",
            "wshub_messages_received_total 6\n",
            "wshub_received_bytes_total 319\n",
            "wshub_messages_delivered_total 48\n",
            "wshub_delivered_bytes_total 4618\n",
            "wshub_deliveries_refused_total 11\n",
            "wshub_evicted_queue_full_total 4\n",
            "wshub_ping_timeouts_total 2\n",
            "wshub_rate_limited_total 5\n",
            "wshub_deflate_negotiated_total 6\n",
            "wshub_deflate_messages_total{direction=\"out\"} 2\n",
            "wshub_deflate_messages_total{direction=\"in\"} 1\n",
            "wshub_deflate_bytes_total{direction=\"out\",stage=\"uncompressed\"} 3000\n",
            "wshub_deflate_bytes_total{direction=\"in\",stage=\"compressed\"} 70\n",
            "wshub_http_refused_total{status=\"400\"} 1\n",
            "wshub_http_refused_total{status=\"other\"} 29\n",
            "wshub_handshakes_refused_total{status=\"503\"} 13\n",
            "wshub_closes_total{by=\"peer\",code=\"1000\"} 1\n",
            "wshub_closes_total{by=\"server\",code=\"other\"} 52\n",
            "wshub_buffered_bytes 26\n",
            "wshub_buffered_bytes_limit 27\n",
            "wshub_memory_refused_total 28\n",
            "wshub_memory_evicted_total 29\n",
            "wshub_history_messages 24\n",
            "wshub_history_bytes 2500\n",
            "wshub_redis_connected 1\n",
            "wshub_redis_published_total 30\n",
            "wshub_redis_received_total 31\n",
            "wshub_redis_dropped_total 32\n",
            "wshub_process_threads 3\n",
            "wshub_process_open_fds 7\n",
            "# TYPE wshub_process_resident_memory_bytes gauge\nwshub_process_resident_memory_bytes 4096\n",
        ] {
            match out[at..].find(line) {
                Some(i) => at += i + line.len(),
                None => panic!("{line:?} missing or out of order in:\n{out}"),
            }
        }
        assert_eq!(at, out.len(), "more after the last family:\n{out}");
        assert_eq!(out.matches("# HELP ").count(), FAMILIES.len());
    }

    #[test]
    fn families_follow_the_naming_rules() {
        let mut names = std::collections::HashSet::new();
        for &(name, kind, help, _) in FAMILIES {
            assert!(name.starts_with("wshub_"), "{name}");
            assert_eq!(name.ends_with("_total"), kind == Counter, "{name}");
            assert!(!help.is_empty() && !help.contains('\n'), "{name}");
            assert!(names.insert(name), "{name} twice");
        }
    }
}
