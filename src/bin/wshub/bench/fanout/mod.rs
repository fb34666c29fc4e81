//! The fan-out scenario: N clients in one room, the first S of them
//! sending. Each message carries its send time, sender and sequence number
//! (as hex text, so text-only servers relay it too); every receiver checks
//! per-sender order, counts losses and reorders, and records one-way
//! latency. Flat out, a sender keeps at most `--window` messages not yet
//! received by everyone; the receiver that completes a message wakes it,
//! and it then writes every message the window allows with one system call
//! (each its own frame; `--write-per-message` writes them one by one). At a
//! fixed rate the senders' schedules are spread evenly over one period.
//!
//! The receiving side is one epoll set per reader thread (one per CPU), not
//! a thread per client: with two cores shared with the server, a generator
//! that woke a thread for every delivery would cost more than the server it
//! measures.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::Args;
use humantime::Duration as HumanDuration;
type Histogram = hdrhistogram::Histogram<u64>;
/// A reader thread's receivers' counts and its latency histogram.
type PollerResult = Result<(Vec<ReceiverStats>, Histogram), String>;
use serde::Serialize;
use tungstenite::protocol::frame::coding::{Data, OpCode};

mod receive;
mod send;

use super::raw::{self, Pacer, RawWriter};
use super::{Common, Percentiles, ProcSample, emit, histogram, interactive, sample, secs};
use receive::{Receiver, ReceiverState, poll_receivers};
use send::send;

/// Flags of `wshub bench fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Clients in the room (senders included).
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// How many of them send.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Message size in bytes (at least 28).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages per second per sender; 0 sends flat out within --window.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Flat out: most messages per sender not yet received by everyone.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// The server also delivers each message to its sender (gorilla does).
    #[arg(long)]
    pub echo_sender: bool,
    /// Send binary messages instead of text.
    #[arg(long)]
    pub binary: bool,
    /// Messages look like the chat page's: JSON of --size bytes with an
    /// id, a name and a body of English words (what compression sees in a
    /// real room), instead of a stamp padded with dots.
    #[arg(long)]
    pub json: bool,
    /// Offer permessage-deflate: senders compress every message (as
    /// browsers do) and receivers inflate what comes compressed.
    #[arg(long)]
    pub compression: bool,
    /// Pause between the last connect and the first message, so that every
    /// client has joined the room.
    #[arg(long, default_value = "500ms")]
    pub settle: HumanDuration,
    /// Flat out: write all the messages the window allows at that moment
    /// with one system call (each still its own frame), instead of one
    /// system call per message as a browser sends them. Flatters a server
    /// that batches its reads; reported as such.
    #[arg(long)]
    pub batch_writes: bool,
    /// One system call per message: the default; kept for old scripts.
    #[arg(long, hide = true, conflicts_with = "batch_writes")]
    pub write_per_message: bool,
    /// Threads reading the clients' sockets (each one epoll set); default:
    /// one per CPU.
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(2, |n| n.get()))]
    pub reader_threads: usize,
    /// Another instance of the same hub (e.g. a second wshub sharing rooms
    /// through Redis); clients are spread over --url and these in turn, so
    /// that senders and receivers sit on different instances. Repeatable.
    #[arg(long = "also-url", value_name = "URL")]
    pub also_urls: Vec<String>,
    /// After sending stops, how long to wait for stragglers.
    #[arg(long, default_value = "3s")]
    pub drain: HumanDuration,
}

const HEADER: usize = 28;

/// Where the stamp sits in a `--json` message: `{"id":"` comes first.
const JSON_STAMP_AT: usize = 7;

struct Shared {
    base: Instant,
    senders: usize,
    batch_writes: bool,
    fanout: u32,
    window: u64,
    flat_out: bool,
    /// Per sender, per window slot: receivers that have the message.
    slots: Vec<Vec<AtomicU32>>,
    /// Per sender: messages received by everyone (a prefix).
    done: Vec<AtomicU64>,
    waiting: Vec<AtomicBool>,
    sender_threads: std::sync::OnceLock<Vec<thread::Thread>>,
    /// Per receiver, for the progress line and the drain.
    delivered: Vec<AtomicU64>,
    /// Set before we close the clients ourselves: closes after it are ours.
    stopping: AtomicBool,
    /// Where each message's stamp starts (0, or [`JSON_STAMP_AT`]).
    stamp_at: usize,
    /// Senders deflate their messages (`--compression`, when agreed).
    compress: bool,
}

#[derive(Default)]
struct ReceiverStats {
    delivered: u64,
    lost: u64,
    reordered: u64,
    foreign: u64,
    close: Option<u16>,
    error: Option<String>,
    last: Option<Instant>,
    hist: Option<hdrhistogram::Histogram<u64>>,
    /// Payload bytes of the data frames received, as they came (compressed
    /// or not).
    wire_bytes: u64,
    /// Of the deliveries, those that came compressed.
    compressed: u64,
}

#[derive(Serialize)]
struct Report<'a> {
    scenario: &'static str,
    label: &'a str,
    clients: usize,
    senders: usize,
    size: usize,
    rate: f64,
    window: u64,
    echo_sender: bool,
    duration_s: f64,
    sent: u64,
    expected: u64,
    delivered: u64,
    lost: u64,
    reordered: u64,
    disconnects: BTreeMap<String, u64>,
    deliveries_per_s: f64,
    latency_us: Percentiles,
    server_cpu_s: Option<f64>,
    server_cpu_us_per_delivery: Option<f64>,
    server_before: Option<ProcSample>,
    server_after: Option<ProcSample>,
    json: bool,
    compression: bool,
    /// Payload bytes received per delivery, as they were on the wire.
    wire_bytes_per_delivery: f64,
    /// Share of the deliveries that came compressed.
    compressed_share: f64,
}

fn hex(bytes: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &b in bytes {
        let d = (b as char).to_digit(16)?;
        v = v << 4 | d as u64;
    }
    Some(v)
}

pub(super) fn run(args: &FanoutArgs) -> Result<(), String> {
    let clients = args.clients.max(1);
    let senders = args.senders.min(clients);
    let stamp_at = if args.json { JSON_STAMP_AT } else { 0 };
    if args.size < HEADER + stamp_at + if args.json { 60 } else { 0 } {
        return Err(format!(
            "--size must be at least {}",
            HEADER + stamp_at + if args.json { 60 } else { 0 }
        ));
    }
    let window = args.window.max(1);
    let fanout = (clients - 1 + usize::from(args.echo_sender)) as u32;
    let shared = Arc::new(Shared {
        base: Instant::now(),
        senders,
        batch_writes: args.batch_writes,
        fanout,
        window,
        flat_out: args.rate <= 0.0,
        slots: (0..senders)
            .map(|_| (0..window).map(|_| AtomicU32::new(0)).collect())
            .collect(),
        done: (0..senders).map(|_| AtomicU64::new(0)).collect(),
        waiting: (0..senders).map(|_| AtomicBool::new(false)).collect(),
        sender_threads: std::sync::OnceLock::new(),
        delivered: (0..clients).map(|_| AtomicU64::new(0)).collect(),
        stopping: AtomicBool::new(false),
        stamp_at,
        compress: args.compression,
    });

    // Connect everyone. The receiving side is a few epoll threads, not a
    // thread per client: a generator that woke one thread per delivery would
    // spend more CPU than the server it measures (and on loopback the
    // server's write pays for every wake-up of a sleeping reader).
    let mut pacer = Pacer::new(args.common.connect_rate);
    let mut writers = Vec::with_capacity(clients);
    let mut sockets = Vec::with_capacity(clients);
    let pollers = args.reader_threads.max(1).min(clients);
    let mut groups: Vec<Vec<Receiver>> = (0..pollers).map(|_| Vec::new()).collect();
    for id in 0..clients {
        pacer.wait();
        let urls = 1 + args.also_urls.len();
        let url = match id % urls {
            0 => &args.common.url,
            k => &args.also_urls[k - 1],
        };
        let conn =
            raw::dial_offering(url, args.compression).map_err(|e| format!("client {id}: {e}"))?;
        if args.compression && !conn.compressed {
            return Err(format!(
                "client {id}: the server declined permessage-deflate (is --compression on?)"
            ));
        }
        sockets.push(conn.reader.shutdown_handle().map_err(|e| e.to_string())?);
        writers.push(conn.writer.clone());
        groups[id % pollers].push(Receiver {
            reader: conn.reader,
            writer: conn.writer,
            state: ReceiverState::new(id, !args.echo_sender && id < senders, senders),
        });
        if interactive() && id % 100 == 99 {
            eprint!("\rconnected {}/{clients}", id + 1);
        }
    }
    let readers: Vec<JoinHandle<PollerResult>> = groups
        .into_iter()
        .enumerate()
        .map(|(k, group)| {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("recv-{k}"))
                .spawn(move || poll_receivers(group, &shared))
                .map_err(|e| format!("cannot start a reader thread: {e}"))
        })
        .collect::<Result<_, _>>()?;
    if interactive() {
        eprintln!("\rconnected {clients}/{clients}");
    }
    thread::sleep(args.settle.into());

    let before = args.common.pid.and_then(sample);
    let start = Instant::now();
    let deadline = start + Duration::from(args.common.duration);
    let size = args.size;
    let (rate, binary, json) = (args.rate, args.binary, args.json);
    let sender_handles: Vec<JoinHandle<u64>> = (0..senders)
        .map(|s| {
            let (shared, writer) = (shared.clone(), writers[s].clone());
            thread::Builder::new()
                .name(format!("send-{s}"))
                .spawn(move || {
                    let payload = send::Payload { size, binary, json };
                    send(s, &shared, &writer, payload, rate, start, deadline)
                })
                .map_err(|e| format!("cannot start a sender: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let _ = shared
        .sender_threads
        .set(sender_handles.iter().map(|h| h.thread().clone()).collect());

    // Progress while sending.
    while Instant::now() < deadline {
        thread::sleep(
            Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
        );
        if interactive() {
            let d: u64 = shared
                .delivered
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .sum();
            let t = secs(start.elapsed());
            eprint!("\r{t:5.1}s  {d} deliveries  {:.0}/s   ", d as f64 / t);
        }
    }
    let sent: u64 = sender_handles
        .into_iter()
        .map(|h| h.join().unwrap_or(0))
        .sum();
    let expected = sent * fanout as u64;
    let drain_until = Instant::now() + Duration::from(args.drain);
    while Instant::now() < drain_until {
        let d: u64 = shared
            .delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum();
        if d >= expected {
            break;
        }
        thread::sleep(Duration::from_millis(5));
    }
    let after = args.common.pid.and_then(sample);
    if interactive() {
        eprintln!();
    }
    shared.stopping.store(true, Ordering::Release);
    for w in &writers {
        let _ = w.close();
    }
    for s in &sockets {
        let _ = s.shutdown(std::net::Shutdown::Both);
    }
    let mut total = ReceiverStats {
        hist: Some(histogram()),
        ..ReceiverStats::default()
    };
    let mut disconnects = BTreeMap::new();
    for r in readers {
        let (stats, h) = match r.join() {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err("a reader thread panicked".into()),
        };
        if let Some(t) = total.hist.as_mut() {
            let _ = t.add(&h);
        }
        for st in stats {
            total.delivered += st.delivered;
            total.lost += st.lost;
            total.reordered += st.reordered;
            total.foreign += st.foreign;
            total.wire_bytes += st.wire_bytes;
            total.compressed += st.compressed;
            total.last = total.last.max(st.last);
            if let Some(code) = st.close {
                *disconnects.entry(code.to_string()).or_insert(0) += 1;
            }
            if let Some(e) = st.error {
                *disconnects.entry(format!("error: {e}")).or_insert(0) += 1;
            }
        }
    }
    let hist = total.hist.take().unwrap_or_else(histogram);
    let elapsed = total.last.map_or(secs(deadline - start), |l| {
        secs(l.saturating_duration_since(start)).max(1e-9)
    });
    // Whatever was not delivered by the end was lost, gap or not.
    let lost = expected.saturating_sub(total.delivered).max(total.lost);
    let cpu = match (before, after) {
        (Some(b), Some(a)) => Some(a.cpu_s - b.cpu_s),
        _ => None,
    };
    let report = Report {
        scenario: "fanout",
        label: &args.common.label,
        clients,
        senders,
        size,
        rate,
        window,
        echo_sender: args.echo_sender,
        duration_s: secs(Duration::from(args.common.duration)),
        sent,
        expected,
        delivered: total.delivered,
        lost,
        reordered: total.reordered,
        disconnects,
        deliveries_per_s: total.delivered as f64 / elapsed,
        latency_us: Percentiles::of(&hist),
        server_cpu_s: cpu,
        server_cpu_us_per_delivery: cpu.map(|c| c * 1e6 / (total.delivered.max(1)) as f64),
        server_before: before,
        server_after: after,
        json: args.json,
        compression: args.compression,
        wire_bytes_per_delivery: total.wire_bytes as f64 / total.delivered.max(1) as f64,
        compressed_share: total.compressed as f64 / total.delivered.max(1) as f64,
    };
    println!(
        "fanout {} clients, {} senders, {} B, {}: sent {} expected {} delivered {} lost {} reordered {}",
        clients,
        senders,
        size,
        if rate > 0.0 {
            format!("{rate}/s each")
        } else {
            format!("flat out, window {window}")
        },
        report.sent,
        report.expected,
        report.delivered,
        report.lost,
        report.reordered
    );
    println!(
        "  {:.0} deliveries/s; latency p50 {} µs p90 {} µs p99 {} µs max {} µs{}",
        report.deliveries_per_s,
        report.latency_us.p50,
        report.latency_us.p90,
        report.latency_us.p99,
        report.latency_us.max,
        report
            .server_cpu_us_per_delivery
            .map_or(String::new(), |c| format!(
                "; server CPU {c:.3} µs/delivery"
            ))
    );
    if !report.disconnects.is_empty() {
        println!("  disconnects: {:?}", report.disconnects);
    }
    if total.foreign > 0 {
        println!(
            "  {} messages not from this benchmark were ignored",
            total.foreign
        );
    }
    emit(&report);
    Ok(())
}
