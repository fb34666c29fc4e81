//! `wshub bench`: a load generator for any WebSocket server, and the
//! measurements behind BENCHMARKS.md.
//!
//! Scenarios: `fanout` (N clients in one room, S of them sending, flat out
//! with a window or at a fixed rate), `echo` (one client, ping-pong),
//! `idle` (N connected clients, the server's memory per connection) and
//! `churn` (connect, upgrade, one message, close, as fast as possible).
//! Every run is bounded in time, prints a human summary and one JSON line,
//! and, given `--pid`, reads the server's CPU time and memory from /proc.
//!
//! The generator's own client code is in `raw`: it parses frames in place,
//! reads many sockets per thread through epoll and frames a sender's
//! messages into a buffer it reuses (written one message per system call,
//! or in batches with `fanout --batch-writes`), so that it is not the
//! bottleneck it measures.

mod fanout;
mod raw;
mod simple;

use std::time::Duration;

use clap::{Args, Subcommand};
use humantime::Duration as HumanDuration;
use serde::Serialize;

pub use fanout::FanoutArgs;
pub use simple::{ChurnArgs, EchoArgs, IdleArgs};

/// `wshub bench` and its scenarios.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which measurement.
    #[command(subcommand)]
    pub scenario: Scenario,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Scenario {
    /// N clients in one room, S senders; deliveries/s and one-way latency.
    Fanout(FanoutArgs),
    /// One client, one message in flight: round trips/s and RTT.
    Echo(EchoArgs),
    /// Connect N clients and hold them: the server's memory per connection.
    Idle(IdleArgs),
    /// Connect, upgrade, exchange one message, close: handshakes/s.
    Churn(ChurnArgs),
}

/// Flags every scenario takes.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// WebSocket URL: a room (e.g. ws://127.0.0.1:8080/ws/bench) or an echo endpoint.
    #[arg(long)]
    pub url: String,
    /// The server's process id, to read its CPU time, memory and threads from /proc.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Most new connections per second.
    #[arg(long, default_value_t = 2000)]
    pub connect_rate: u32,
    /// A label copied into the JSON line (e.g. the server's name).
    #[arg(long, default_value = "")]
    pub label: String,
    /// How long the measurement runs.
    #[arg(long, default_value = "10s")]
    pub duration: HumanDuration,
}

/// Runs a scenario; the exit code.
pub fn run(args: &BenchArgs) -> std::process::ExitCode {
    // Thousands of sockets: take the hard limit.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let result = match &args.scenario {
        Scenario::Fanout(a) => fanout::run(a),
        Scenario::Echo(a) => simple::echo(a),
        Scenario::Idle(a) => simple::idle(a),
        Scenario::Churn(a) => simple::churn(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wshub bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram) -> Percentiles {
        let us = |ns: u64| (ns as f64 / 1000.0 * 10.0).round() / 10.0;
        Percentiles {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            max: us(h.max()),
        }
    }
}

/// Latencies in nanoseconds.
pub(crate) type Histogram = hdrhistogram::Histogram<u64>;

/// Nanosecond histogram, 1 ns to 100 s, three significant digits.
pub(crate) fn histogram() -> Histogram {
    hdrhistogram::Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// A server process as /proc shows it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct ProcSample {
    /// User + system CPU seconds so far.
    pub cpu_s: f64,
    pub rss_kib: u64,
    pub threads: u64,
    /// Page tables.
    pub pte_kib: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`.
pub(crate) fn sample(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|f| f.parse::<f64>().ok());
    // Linux reports these in USER_HZ, which is 100 on every mainstream architecture.
    let cpu_s = (ticks(14)? + ticks(15)?) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(ProcSample {
        cpu_s,
        rss_kib: field("VmRSS:")?,
        threads: field("Threads:")?,
        pte_kib: field("VmPTE:").unwrap_or(0),
    })
}

/// Prints the JSON line.
pub(crate) fn emit(report: &impl Serialize) {
    match serde_json::to_string(report) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("wshub bench: cannot write JSON: {e}"),
    }
}

/// True when stderr is a terminal (progress lines go there).
pub(crate) fn interactive() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}
