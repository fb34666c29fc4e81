//! Thread and slot accounting: every connection thread is counted (so
//! shutdown can wait for them and the process stays inside its thread
//! budget), every open WebSocket holds a client slot (`max_clients`) and
//! is admitted only while the budget has room for its thread and the share
//! kept for writers, and every socket stays registered for forced shutdown
//! while a thread of it runs.
//! Each is a guard whose `Drop` gives back what it took. Refusals at the
//! ceiling are counted here and logged once a second (`limits::Refusals`).
//!
//! May touch: `Shared`'s counters and its `live` registry, and the log;
//! nothing else.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use super::limits::{Budget, HTTP_SLACK};
use super::pool::Job;
use super::shared::Shared;
use crate::session::Spawn;

impl Shared {
    /// Runs `body` on a counted connection thread: one waiting in the
    /// thread cache, or a new one if the budget has room.
    pub(super) fn spawn(
        self: &Arc<Self>,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        let job = match self.pool.hand((name, Box::new(body))) {
            Ok(()) => return Ok(()),
            Err(job) => job,
        };
        let guard = self.reserve(0).ok_or_else(|| self.exhausted())?;
        self.start_cached(guard, job)
    }

    /// Starts a thread for `job` (counted by `guard`) that then waits in
    /// the thread cache for more.
    fn start_cached(self: &Arc<Self>, guard: ThreadGuard, job: Job) -> io::Result<()> {
        let shared = self.clone();
        thread::Builder::new()
            .name(job.0.clone())
            .stack_size(self.config.thread_stack_bytes)
            .spawn(move || {
                let _guard = guard;
                shared.pool.work(job, &shared.stopping);
            })?;
        Ok(())
    }

    /// One more counted thread, unless the budget would then have fewer
    /// than `spare` left. Past the budget the kernel refuses a thread's
    /// mappings, and Rust's thread start-up aborts the process: the
    /// server refuses first.
    fn reserve(self: &Arc<Self>, spare: usize) -> Option<ThreadGuard> {
        let mut live = self.lock();
        // The refusal log's thread is not a connection's: no client waits
        // for it to end.
        let reporters = self
            .thread_budget
            .refusals
            .reporters
            .load(Ordering::Relaxed);
        if live.threads.saturating_sub(reporters) + 1 + spare > self.thread_budget.budget.threads {
            return None;
        }
        live.threads += 1;
        Some(ThreadGuard {
            shared: self.clone(),
            reporter: false,
        })
    }

    fn exhausted(&self) -> io::Error {
        let budget = self.thread_budget.budget;
        io::Error::other(format!(
            "thread budget of {} exhausted (limited by {} = {})",
            budget.threads, budget.limit, budget.value
        ))
    }

    /// Starts the thread `guard` counts.
    fn start(
        &self,
        guard: ThreadGuard,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        thread::Builder::new()
            .name(name)
            .stack_size(self.config.thread_stack_bytes)
            .spawn(move || {
                let _guard = guard;
                body();
            })?;
        Ok(())
    }

    /// Takes a WebSocket slot for a client at `ip`, with the thread its
    /// writer will need, or says which limit is reached; `echo` for a
    /// connection to `/echo` (counted apart for `/metrics`).
    pub(super) fn admit(self: &Arc<Self>, echo: bool, ip: IpAddr) -> Result<Admission, Full> {
        if let Some(max) = self.config.max_connections_per_ip {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let held = per_ip.entry(ip).or_insert(0);
            if *held >= max {
                return Err(Full::PerIp(max));
            }
            *held += 1;
        }
        let admission = Admission {
            shared: self.clone(),
            echo,
            ip,
        };
        let before = self.clients.fetch_add(1, Ordering::AcqRel);
        if echo {
            self.echo_clients.fetch_add(1, Ordering::AcqRel);
        }
        // Dropping the admission gives everything back.
        if let Some(max) = self.config.max_clients.filter(|max| before >= *max) {
            return Err(Full::Clients(max));
        }
        // One thread per client (this connection's, already counted), a
        // share kept for writers, and room for a few HTTP requests.
        let budget = self.thread_budget.budget;
        if before >= budget.clients() || self.lock().threads + HTTP_SLACK > budget.threads {
            return Err(Full::Threads(budget));
        }
        Ok(admission)
    }

    /// Counts a refusal at the ceiling, for `reason`. The log gets one
    /// line a second with the count: the refusal that opens a second
    /// starts a thread that writes the line when the second is over (or
    /// at shutdown). That thread is counted (shutdown waits for it) but
    /// neither refused by the budget, which keeps room below every limit
    /// for the server's own threads, nor counted against clients; one
    /// runs at a time (two for a moment as one window follows another).
    pub(super) fn refused(self: &Arc<Self>, reason: &str) {
        if !self.thread_budget.refusals.count(reason) {
            return;
        }
        let guard = {
            let mut live = self.lock();
            live.threads += 1;
            let reporters = &self.thread_budget.refusals.reporters;
            reporters.fetch_add(1, Ordering::Relaxed);
            ThreadGuard {
                shared: self.clone(),
                reporter: true,
            }
        };
        let shared = self.clone();
        let started = self.start(guard, "wshub-refusals".into(), move || {
            shared.wait_unless_stopping(Duration::from_secs(1));
            shared.thread_budget.refusals.log();
        });
        if started.is_err() {
            self.thread_budget.refusals.log();
        }
    }

    /// Waits for `timeout`, or until shutdown begins (seen when a thread
    /// ends, which every shutdown makes happen).
    fn wait_unless_stopping(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut live = self.lock();
        while !self.stopping.load(Ordering::SeqCst) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            live = self
                .changed
                .wait_timeout(live, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Counts a running thread; dropping it (when the thread ends, or when the
/// spawn fails and the closure is dropped) uncounts it.
struct ThreadGuard {
    shared: Arc<Shared>,
    /// The refusal log's thread (see `Shared::refused`).
    reporter: bool,
}

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        let mut live = self.shared.lock();
        live.threads -= 1;
        if self.reporter {
            // Under the same lock as the count, for `reserve`.
            let reporters = &self.shared.thread_budget.refusals.reporters;
            reporters.fetch_sub(1, Ordering::Relaxed);
        }
        drop(live);
        self.shared.changed.notify_all();
    }
}

/// Holds one of the `max_clients` slots while a WebSocket connection lives.
pub(super) struct Admission {
    shared: Arc<Shared>,
    echo: bool,
    ip: IpAddr,
}

impl Admission {
    /// What starts the client's writer, when it needs one.
    pub(super) fn writer_thread(&self) -> WriterThread {
        WriterThread {
            shared: self.shared.clone(),
        }
    }
}

/// Which limit an upgrade ran into.
pub(super) enum Full {
    /// `max_clients`.
    Clients(usize),
    /// The thread budget (no room for one more client's thread).
    Threads(Budget),
    /// `max_connections_per_ip`.
    PerIp(usize),
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.shared.config.max_connections_per_ip.is_some() {
            let mut per_ip = self.shared.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(held) = per_ip.get_mut(&self.ip) {
                *held -= 1;
                if *held == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
        if self.echo {
            self.shared.echo_clients.fetch_sub(1, Ordering::AcqRel);
        }
        self.shared.clients.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Keeps a socket in the registry for forced shutdown while any of its
/// threads runs.
pub(super) struct Registered {
    pub(super) shared: Arc<Shared>,
    pub(super) id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.lock().sockets.remove(&self.id);
    }
}

/// Starts a server session's writer, counted against the thread budget;
/// a writer the budget has no room for is a refusal (counted, logged once
/// a second), and its client is closed.
pub(super) struct WriterThread {
    shared: Arc<Shared>,
}

impl Spawn for WriterThread {
    fn spawn(&self, name: String, body: Box<dyn FnOnce() + Send>) -> io::Result<()> {
        self.shared.spawn(name, body).inspect_err(|_| {
            self.shared
                .refused("no thread for a client's writer (the client is closed)");
        })
    }
}
