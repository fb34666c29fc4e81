//! Thread and slot accounting: every connection thread is counted (so
//! shutdown can wait for them and the process stays inside its thread
//! budget), every open WebSocket holds a client slot (`max_clients`), and
//! every socket stays registered for forced shutdown while a thread of it
//! runs. Each is a guard whose `Drop` gives back what it took.
//!
//! May touch: `Shared`'s counters and its `live` registry; nothing else.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;

use super::shared::Shared;
use crate::session::Spawn;

impl Shared {
    /// Spawns a counted connection thread.
    pub(super) fn spawn(
        self: &Arc<Self>,
        name: String,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<()> {
        {
            let mut live = self.lock();
            // Past the budget the kernel refuses the thread's mappings, and
            // Rust's thread start-up aborts the process: refuse first.
            if live.threads >= self.thread_budget {
                return Err(io::Error::other(format!(
                    "thread budget of {} exhausted (see vm.max_map_count)",
                    self.thread_budget
                )));
            }
            live.threads += 1;
        }
        let guard = ThreadGuard(self.clone());
        thread::Builder::new()
            .name(name)
            .stack_size(self.config.thread_stack_bytes)
            .spawn(move || {
                let _guard = guard;
                body();
            })?;
        Ok(())
    }

    /// Takes a WebSocket slot for a client at `ip`, or says which limit
    /// is reached; `echo` for a connection to `/echo` (counted apart for
    /// `/metrics`).
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
        // The writer needs one more thread; keep room for a few HTTP requests.
        let threads_full = self.lock().threads + 8 > self.thread_budget;
        if threads_full || self.config.max_clients.is_some_and(|max| before >= max) {
            // Dropping the admission gives everything back.
            return Err(Full::Clients(self.config.max_clients));
        }
        Ok(admission)
    }
}

/// Counts a running thread; dropping it (when the thread ends, or when the
/// spawn fails and the closure is dropped) uncounts it.
struct ThreadGuard(Arc<Shared>);

impl Drop for ThreadGuard {
    fn drop(&mut self) {
        self.0.lock().threads -= 1;
        self.0.changed.notify_all();
    }
}

/// Holds one of the `max_clients` slots while a WebSocket connection lives.
pub(super) struct Admission {
    shared: Arc<Shared>,
    echo: bool,
    ip: IpAddr,
}

/// Which limit an upgrade ran into.
pub(super) enum Full {
    /// `max_clients` (or the thread budget, with `None` or below it).
    Clients(Option<usize>),
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

/// The server's threads for a session: counted like every connection thread.
impl Spawn for Arc<Shared> {
    fn spawn(&self, name: String, body: Box<dyn FnOnce() + Send>) -> io::Result<()> {
        Shared::spawn(self, name, body)
    }
}
