//! The fan-out scenario: N clients in one room, the first S of them
//! sending. Each message carries its send time, sender and sequence number
//! (as hex text, so text-only servers relay it too); every receiver checks
//! per-sender order, counts losses and reorders, and records one-way
//! latency. Flat out, a sender keeps at most `--window` messages not yet
//! received by everyone; the receiver that completes a message wakes it,
//! and it then writes what the window allows, one system call per message
//! as a browser sends them (`--batch-writes`: all of them with one system
//! call, each its own frame). At a fixed rate the senders' schedules are
//! spread evenly over one period.
//!
//! The receiving side is one epoll set per reader thread (one per CPU), not
//! a thread per client: with two cores shared with the server, a generator
//! that woke a thread for every delivery would cost more than the server it
//! measures.
//!
//! A [`Run`] goes through its phases in turn: connect every client and
//! start the reader threads, measure (the senders, then the drain), stop,
//! and add up the receivers' counts into the report.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::Args;
use humantime::Duration as HumanDuration;
use serde::Serialize;
use tungstenite::protocol::frame::coding::{Data, OpCode};

mod receive;
mod send;

use super::raw::{self, Pacer, RawConn, RawWriter};
use super::{
    Common, Histogram, Percentiles, ProcSample, emit, histogram, interactive, sample, secs,
};
use receive::{Receiver, ReceiverState, poll_receivers};
use send::send;

/// A reader thread's receivers' counts and its latency histogram.
type PollerResult = Result<(Vec<ReceiverStats>, Histogram), String>;

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

impl Shared {
    fn new(args: &FanoutArgs, clients: usize, senders: usize, stamp_at: usize) -> Shared {
        let window = args.window.max(1);
        Shared {
            base: Instant::now(),
            senders,
            batch_writes: args.batch_writes,
            fanout: (clients - 1 + usize::from(args.echo_sender)) as u32,
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
        }
    }

    /// Deliveries so far, all receivers together (as far as published).
    fn delivered_so_far(&self) -> u64 {
        self.delivered
            .iter()
            .map(|d| d.load(Ordering::Relaxed))
            .sum()
    }
}

/// What one receiver saw (or, in [`Totals`], all of them).
#[derive(Default)]
struct ReceiverStats {
    delivered: u64,
    lost: u64,
    reordered: u64,
    foreign: u64,
    close: Option<u16>,
    error: Option<String>,
    last: Option<Instant>,
    /// Payload bytes of the data frames received, as they came (compressed
    /// or not).
    wire_bytes: u64,
    /// Of the deliveries, those that came compressed.
    compressed: u64,
}

/// Every receiver's counts added up, with all deliveries' latency and the
/// disconnects by close code or error.
struct Totals {
    /// The sums; `last` is the last delivery of all (`close` and `error`
    /// stay unset: they go to `disconnects`).
    sum: ReceiverStats,
    hist: Histogram,
    disconnects: BTreeMap<String, u64>,
}

impl Totals {
    /// Waits for every reader thread and adds up what its receivers saw.
    fn collect(readers: Vec<JoinHandle<PollerResult>>) -> Result<Totals, String> {
        let mut total = Totals {
            sum: ReceiverStats::default(),
            hist: histogram(),
            disconnects: BTreeMap::new(),
        };
        for r in readers {
            let (stats, h) = match r.join() {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("a reader thread panicked".into()),
            };
            let _ = total.hist.add(&h);
            for st in stats {
                total.add(st);
            }
        }
        Ok(total)
    }

    fn add(&mut self, st: ReceiverStats) {
        let sum = &mut self.sum;
        sum.delivered += st.delivered;
        sum.lost += st.lost;
        sum.reordered += st.reordered;
        sum.foreign += st.foreign;
        sum.wire_bytes += st.wire_bytes;
        sum.compressed += st.compressed;
        sum.last = sum.last.max(st.last);
        if let Some(code) = st.close {
            *self.disconnects.entry(code.to_string()).or_insert(0) += 1;
        }
        if let Some(e) = st.error {
            *self.disconnects.entry(format!("error: {e}")).or_insert(0) += 1;
        }
    }
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

impl Report<'_> {
    /// The human summary; `foreign` counts the messages ignored.
    fn print(&self, foreign: u64) {
        println!(
            "fanout {} clients, {} senders, {} B, {}: sent {} expected {} delivered {} lost {} reordered {}",
            self.clients,
            self.senders,
            self.size,
            if self.rate > 0.0 {
                format!("{}/s each", self.rate)
            } else {
                format!("flat out, window {}", self.window)
            },
            self.sent,
            self.expected,
            self.delivered,
            self.lost,
            self.reordered
        );
        println!(
            "  {:.0} deliveries/s; latency p50 {} µs p90 {} µs p99 {} µs max {} µs{}",
            self.deliveries_per_s,
            self.latency_us.p50,
            self.latency_us.p90,
            self.latency_us.p99,
            self.latency_us.max,
            self.server_cpu_us_per_delivery
                .map_or(String::new(), |c| format!(
                    "; server CPU {c:.3} µs/delivery"
                ))
        );
        if !self.disconnects.is_empty() {
            println!("  disconnects: {:?}", self.disconnects);
        }
        if foreign > 0 {
            println!("  {foreign} messages not from this benchmark were ignored");
        }
    }
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
    let run = Run::new(args)?;
    let clients = run.connect()?;
    thread::sleep(args.settle.into());
    let measured = run.measure(&clients.writers)?;
    run.stop(&clients);
    let totals = Totals::collect(clients.readers)?;
    let foreign = totals.sum.foreign;
    let report = run.report(&measured, totals);
    report.print(foreign);
    emit(&report);
    Ok(())
}

/// One run of the scenario: its flags and what its threads share.
struct Run<'a> {
    args: &'a FanoutArgs,
    clients: usize,
    shared: Arc<Shared>,
}

/// The connected clients.
struct Clients {
    /// Per client, its writer (a sender's is also its sending side).
    writers: Vec<RawWriter>,
    /// Per client, its socket, to shut down at the end.
    sockets: Vec<TcpStream>,
    /// The reader threads, each with its group of clients.
    readers: Vec<JoinHandle<PollerResult>>,
}

/// What [`Run::measure`] saw: when sending ran, what was sent and the
/// server's /proc before and after.
struct Measured {
    start: Instant,
    deadline: Instant,
    sent: u64,
    expected: u64,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
}

impl Run<'_> {
    fn new(args: &FanoutArgs) -> Result<Run<'_>, String> {
        let clients = args.clients.max(1);
        let senders = args.senders.min(clients);
        let stamp_at = if args.json { JSON_STAMP_AT } else { 0 };
        let min_size = HEADER + stamp_at + if args.json { 60 } else { 0 };
        if args.size < min_size {
            return Err(format!("--size must be at least {min_size}"));
        }
        Ok(Run {
            args,
            clients,
            shared: Arc::new(Shared::new(args, clients, senders, stamp_at)),
        })
    }

    /// Connects everyone. The receiving side is a few epoll threads, not a
    /// thread per client: a generator that woke one thread per delivery
    /// would spend more CPU than the server it measures (and on loopback the
    /// server's write pays for every wake-up of a sleeping reader).
    fn connect(&self) -> Result<Clients, String> {
        let (clients, senders) = (self.clients, self.shared.senders);
        let mut pacer = Pacer::new(self.args.common.connect_rate);
        let mut writers = Vec::with_capacity(clients);
        let mut sockets = Vec::with_capacity(clients);
        let pollers = self.args.reader_threads.max(1).min(clients);
        let mut groups: Vec<Vec<Receiver>> = (0..pollers).map(|_| Vec::new()).collect();
        for id in 0..clients {
            pacer.wait();
            let conn = self.dial(id)?;
            sockets.push(conn.reader.shutdown_handle().map_err(|e| e.to_string())?);
            writers.push(conn.writer.clone());
            groups[id % pollers].push(Receiver {
                reader: conn.reader,
                writer: conn.writer,
                state: ReceiverState::new(id, !self.args.echo_sender && id < senders, senders),
            });
            if interactive() && id % 100 == 99 {
                eprint!("\rconnected {}/{clients}", id + 1);
            }
        }
        let readers = self.start_readers(groups)?;
        if interactive() {
            eprintln!("\rconnected {clients}/{clients}");
        }
        Ok(Clients {
            writers,
            sockets,
            readers,
        })
    }

    /// Dials client `id`: on --url, or on an --also-url in turn.
    fn dial(&self, id: usize) -> Result<RawConn, String> {
        let args = self.args;
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
        Ok(conn)
    }

    /// One reader thread per group of receivers.
    fn start_readers(
        &self,
        groups: Vec<Vec<Receiver>>,
    ) -> Result<Vec<JoinHandle<PollerResult>>, String> {
        groups
            .into_iter()
            .enumerate()
            .map(|(k, group)| {
                let shared = self.shared.clone();
                thread::Builder::new()
                    .name(format!("recv-{k}"))
                    .spawn(move || poll_receivers(group, &shared))
                    .map_err(|e| format!("cannot start a reader thread: {e}"))
            })
            .collect()
    }

    /// Sends for --duration (progress on a terminal), then waits up to
    /// --drain for the stragglers.
    fn measure(&self, writers: &[RawWriter]) -> Result<Measured, String> {
        let before = self.args.common.pid.and_then(sample);
        let start = Instant::now();
        let deadline = start + Duration::from(self.args.common.duration);
        let schedule = send::Schedule {
            rate: self.args.rate,
            start,
            deadline,
        };
        let senders = self.start_senders(writers, schedule)?;
        self.show_progress(start, deadline);
        let sent: u64 = senders.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        let expected = sent * self.shared.fanout as u64;
        self.drain(expected);
        let after = self.args.common.pid.and_then(sample);
        if interactive() {
            eprintln!();
        }
        Ok(Measured {
            start,
            deadline,
            sent,
            expected,
            before,
            after,
        })
    }

    /// One thread per sender, each on its client's writer.
    fn start_senders(
        &self,
        writers: &[RawWriter],
        schedule: send::Schedule,
    ) -> Result<Vec<JoinHandle<u64>>, String> {
        let args = self.args;
        let payload = send::Payload {
            size: args.size,
            binary: args.binary,
            json: args.json,
        };
        let handles: Vec<JoinHandle<u64>> = (0..self.shared.senders)
            .map(|s| {
                let (shared, writer) = (self.shared.clone(), writers[s].clone());
                thread::Builder::new()
                    .name(format!("send-{s}"))
                    .spawn(move || send(s, &shared, &writer, payload, schedule))
                    .map_err(|e| format!("cannot start a sender: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let _ = self
            .shared
            .sender_threads
            .set(handles.iter().map(|h| h.thread().clone()).collect());
        Ok(handles)
    }

    /// Until `deadline`: on a terminal, the deliveries so far twice a second.
    fn show_progress(&self, start: Instant, deadline: Instant) {
        while Instant::now() < deadline {
            thread::sleep(
                Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now())),
            );
            if interactive() {
                let d = self.shared.delivered_so_far();
                let t = secs(start.elapsed());
                eprint!("\r{t:5.1}s  {d} deliveries  {:.0}/s   ", d as f64 / t);
            }
        }
    }

    /// Waits until `expected` deliveries, or --drain has passed.
    fn drain(&self, expected: u64) {
        let drain_until = Instant::now() + Duration::from(self.args.drain);
        while Instant::now() < drain_until {
            if self.shared.delivered_so_far() >= expected {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Closes every client; the reader threads then end.
    fn stop(&self, clients: &Clients) {
        self.shared.stopping.store(true, Ordering::Release);
        for w in &clients.writers {
            let _ = w.close();
        }
        for s in &clients.sockets {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn report(&self, m: &Measured, total: Totals) -> Report<'_> {
        let (args, sum) = (self.args, &total.sum);
        let elapsed = sum.last.map_or(secs(m.deadline - m.start), |l| {
            secs(l.saturating_duration_since(m.start)).max(1e-9)
        });
        // Whatever was not delivered by the end was lost, gap or not.
        let lost = m.expected.saturating_sub(sum.delivered).max(sum.lost);
        let cpu = match (m.before, m.after) {
            (Some(b), Some(a)) => Some(a.cpu_s - b.cpu_s),
            _ => None,
        };
        let per_delivery = |x: f64| x / sum.delivered.max(1) as f64;
        Report {
            scenario: "fanout",
            label: &args.common.label,
            clients: self.clients,
            senders: self.shared.senders,
            size: args.size,
            rate: args.rate,
            window: self.shared.window,
            echo_sender: args.echo_sender,
            duration_s: secs(Duration::from(args.common.duration)),
            sent: m.sent,
            expected: m.expected,
            delivered: sum.delivered,
            lost,
            reordered: sum.reordered,
            deliveries_per_s: sum.delivered as f64 / elapsed,
            latency_us: Percentiles::of(&total.hist),
            server_cpu_s: cpu,
            server_cpu_us_per_delivery: cpu.map(|c| per_delivery(c * 1e6)),
            server_before: m.before,
            server_after: m.after,
            json: args.json,
            compression: args.compression,
            wire_bytes_per_delivery: per_delivery(sum.wire_bytes as f64),
            compressed_share: per_delivery(sum.compressed as f64),
            disconnects: total.disconnects,
        }
    }
}
