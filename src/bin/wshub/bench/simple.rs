//! The echo, idle and churn scenarios.

use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use clap::Args;
use humantime::Duration as HumanDuration;
use serde::Serialize;

use super::raw::{self, Pacer, RawConn, Seen};
use super::{
    Common, Histogram, Percentiles, ProcSample, emit, histogram, interactive, sample, secs,
};

/// Flags of `wshub bench echo`.
#[derive(Debug, Args)]
pub struct EchoArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
}

/// Flags of `wshub bench idle`.
#[derive(Debug, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Clients to connect and hold.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Pause after the last connect before measuring, so the server settles.
    #[arg(long, default_value = "2s")]
    pub settle: HumanDuration,
}

/// Flags of `wshub bench churn`.
#[derive(Debug, Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: Common,
    /// Connections made in parallel.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
}

#[derive(Serialize)]
struct EchoReport<'a> {
    scenario: &'static str,
    label: &'a str,
    size: usize,
    duration_s: f64,
    round_trips: u64,
    round_trips_per_s: f64,
    rtt_us: Percentiles,
    server_cpu_us_per_round_trip: Option<f64>,
}

pub(super) fn echo(args: &EchoArgs) -> Result<(), String> {
    let mut conn = raw::dial(&args.common.url).map_err(|e| e.to_string())?;
    let payload = vec![b'e'; args.size.max(1)];
    let mut scratch = Vec::new();
    let mut hist = histogram();
    let before = args.common.pid.and_then(sample);
    let start = Instant::now();
    let deadline = start + Duration::from(args.common.duration);
    let mut trips = 0u64;
    let mut error = None;
    while Instant::now() < deadline {
        let sent = Instant::now();
        if let Err(e) = round_trip(&mut conn, &payload, &mut scratch) {
            error = Some(e);
            break;
        }
        let _ = hist.record(sent.elapsed().as_nanos().max(1) as u64);
        trips += 1;
    }
    let elapsed = secs(start.elapsed());
    let after = args.common.pid.and_then(sample);
    let _ = conn.writer.close();
    let report = EchoReport {
        scenario: "echo",
        label: &args.common.label,
        size: args.size,
        duration_s: elapsed,
        round_trips: trips,
        round_trips_per_s: trips as f64 / elapsed,
        rtt_us: Percentiles::of(&hist),
        server_cpu_us_per_round_trip: match (before, after) {
            (Some(b), Some(a)) => Some((a.cpu_s - b.cpu_s) * 1e6 / trips.max(1) as f64),
            _ => None,
        },
    };
    println!(
        "echo {} B: {} round trips, {:.0}/s; RTT p50 {} µs p99 {} µs max {} µs",
        args.size,
        trips,
        report.round_trips_per_s,
        report.rtt_us.p50,
        report.rtt_us.p99,
        report.rtt_us.max
    );
    emit(&report);
    error.map_or(Ok(()), Err)
}

/// Sends `payload` and waits for the first data frame back (answering
/// pings meanwhile).
fn round_trip(conn: &mut RawConn, payload: &[u8], scratch: &mut Vec<u8>) -> Result<(), String> {
    conn.writer
        .text(payload, scratch)
        .map_err(|e| e.to_string())?;
    let writer = conn.writer.clone();
    let mut got = false;
    let r = conn.reader.run(|seen| match seen {
        Seen::Data(..) => {
            got = true;
            false
        }
        Seen::Ping(p) => writer.pong(p).is_ok(),
        _ => false,
    });
    if !got {
        return Err(r.err().map_or("server closed".into(), |e| e.to_string()));
    }
    Ok(())
}

#[derive(Serialize)]
struct IdleReport<'a> {
    scenario: &'static str,
    label: &'a str,
    clients: usize,
    connected: usize,
    server_before: Option<ProcSample>,
    server_after: Option<ProcSample>,
    rss_kib_per_connection: Option<f64>,
    threads_per_connection: Option<f64>,
    page_tables_kib_per_connection: Option<f64>,
    kernel_stack_kib_per_connection: Option<f64>,
    kernel_socket_kib_per_connection: Option<f64>,
}

/// TCP memory in the kernel, in KiB (`/proc/net/sockstat`, pages of 4 KiB).
fn tcp_kernel_kib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = s.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = tcp.split_whitespace();
    while let Some(w) = words.next() {
        if w == "mem" {
            return words.next()?.parse::<u64>().ok().map(|pages| pages * 4);
        }
    }
    None
}

pub(super) fn idle(args: &IdleArgs) -> Result<(), String> {
    let before = args.common.pid.and_then(sample);
    let tcp_before = tcp_kernel_kib();
    let (held, failures) = connect_idle(args);
    thread::sleep(args.settle.into());
    let after = args.common.pid.and_then(sample);
    let tcp_after = tcp_kernel_kib();
    let n = held.len().max(1) as f64;
    let per = |f: fn(&ProcSample) -> f64| match (before, after) {
        (Some(b), Some(a)) => Some((f(&a) - f(&b)) / n),
        _ => None,
    };
    let threads = per(|p| p.threads as f64);
    let report = IdleReport {
        scenario: "idle",
        label: &args.common.label,
        clients: args.clients,
        connected: held.len(),
        server_before: before,
        server_after: after,
        rss_kib_per_connection: per(|p| p.rss_kib as f64),
        threads_per_connection: threads,
        page_tables_kib_per_connection: per(|p| p.pte_kib as f64),
        // Linux gives every thread a 16 KiB kernel stack on x86_64 and arm64.
        kernel_stack_kib_per_connection: threads.map(|t| t * 16.0),
        kernel_socket_kib_per_connection: match (tcp_before, tcp_after) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / n),
            _ => None,
        },
    };
    report.print();
    emit(&report);
    drop(held);
    if failures > 0 {
        return Err(format!("{failures} clients could not connect"));
    }
    Ok(())
}

/// Connects --clients bare sockets at --connect-rate: those held, and how
/// many failed (the first three said on stderr).
fn connect_idle(args: &IdleArgs) -> (Vec<TcpStream>, usize) {
    let mut pacer = Pacer::new(args.common.connect_rate);
    let mut held = Vec::with_capacity(args.clients);
    let mut failures = 0;
    for i in 0..args.clients {
        pacer.wait();
        match raw::dial_bare(&args.common.url) {
            Ok(s) => held.push(s),
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("wshub bench: client {i}: {e}");
                }
            }
        }
        if interactive() && i % 500 == 499 {
            eprint!("\rconnected {}/{}", i + 1, args.clients);
        }
    }
    if interactive() {
        eprintln!();
    }
    (held, failures)
}

impl IdleReport<'_> {
    /// The human summary.
    fn print(&self) {
        println!(
            "idle: {} of {} clients connected",
            self.connected, self.clients
        );
        if let Some(r) = self.rss_kib_per_connection {
            println!(
                "  server RSS {:.2} KiB per connection; {:.2} threads per connection; page tables {:.2} KiB; kernel stacks {:.1} KiB; socket buffers {:.2} KiB (both ends, loopback)",
                r,
                self.threads_per_connection.unwrap_or(0.0),
                self.page_tables_kib_per_connection.unwrap_or(0.0),
                self.kernel_stack_kib_per_connection.unwrap_or(0.0),
                self.kernel_socket_kib_per_connection.unwrap_or(0.0),
            );
        }
    }
}

#[derive(Serialize)]
struct ChurnReport<'a> {
    scenario: &'static str,
    label: &'a str,
    workers: usize,
    duration_s: f64,
    sessions: u64,
    failures: u64,
    sessions_per_s: f64,
    session_us: Percentiles,
    server_after: Option<ProcSample>,
}

pub(super) fn churn(args: &ChurnArgs) -> Result<(), String> {
    let start = Instant::now();
    let deadline = start + Duration::from(args.common.duration);
    let failures = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..args.workers.max(1))
        .map(|_| {
            let (url, failures) = (args.common.url.clone(), failures.clone());
            thread::spawn(move || churn_worker(&url, deadline, &failures))
        })
        .collect();
    let mut total = 0;
    let mut hist = histogram();
    for w in workers {
        if let Ok((n, h)) = w.join() {
            total += n;
            let _ = hist.add(&h);
        }
    }
    let elapsed = secs(start.elapsed());
    let report = ChurnReport {
        scenario: "churn",
        label: &args.common.label,
        workers: args.workers,
        duration_s: elapsed,
        sessions: total,
        failures: failures.load(Ordering::Relaxed),
        sessions_per_s: total as f64 / elapsed,
        session_us: Percentiles::of(&hist),
        server_after: args.common.pid.and_then(sample),
    };
    println!(
        "churn: {} sessions ({} failed), {:.0}/s; session p50 {} µs p99 {} µs",
        total, report.failures, report.sessions_per_s, report.session_us.p50, report.session_us.p99
    );
    emit(&report);
    Ok(())
}

/// One worker: sessions back to back until `deadline`; how many completed
/// and how long each took.
fn churn_worker(url: &str, deadline: Instant, failures: &AtomicU64) -> (u64, Histogram) {
    let mut hist = histogram();
    let mut scratch = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        let t0 = Instant::now();
        match one_session(url, &mut scratch) {
            Ok(true) => {
                n += 1;
                let _ = hist.record(t0.elapsed().as_nanos().max(1) as u64);
            }
            _ => {
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    (n, hist)
}

/// Connect, upgrade, one message and its echo, close: whether the echo came.
fn one_session(url: &str, scratch: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut conn = raw::dial(url)?;
    conn.writer.text(b"churn", scratch)?;
    let mut got = false;
    conn.reader.run(|seen| {
        got = matches!(seen, Seen::Data(..));
        false
    })?;
    conn.writer.close()?;
    // Wait for the server's Close (or EOF): a complete session.
    conn.reader.run(|seen| !matches!(seen, Seen::Close(_)))?;
    Ok(got)
}
