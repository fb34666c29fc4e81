//! The thread cache: a connection thread that has finished its work waits
//! a little (`CACHE_IDLE`) for the next instead of ending, and a new
//! connection's work goes to a waiting thread before a thread is started
//! for it — a session then costs no thread start (no `clone`, no stack or
//! signal stack mapped and unmapped). At most `CACHE_MAX` threads wait;
//! a waiting thread still counts against the thread budget. Work is a
//! closure that owns everything of its connection, so a thread carries
//! nothing from one connection to the next but its stack memory; it takes
//! the new work's name.
//!
//! May touch: the threads it caches (their names), nothing else.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

/// Most threads waiting for work.
pub(super) const CACHE_MAX: usize = 32;

/// How long a thread waits for work before it ends.
pub(super) const CACHE_IDLE: Duration = Duration::from_secs(1);

/// Work for a connection thread: its name, and what it runs.
pub(super) type Job = (String, Box<dyn FnOnce() + Send>);

/// The cache of waiting threads.
pub(super) struct Pool {
    /// A rendezvous channel: a send succeeds only into a waiting thread.
    tx: Sender<Option<Job>>,
    rx: Receiver<Option<Job>>,
    waiting: AtomicUsize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("waiting", &self.waiting.load(Ordering::Relaxed))
            .finish()
    }
}

impl Default for Pool {
    fn default() -> Pool {
        let (tx, rx) = bounded(0);
        Pool {
            tx,
            rx,
            waiting: AtomicUsize::new(0),
        }
    }
}

impl Pool {
    /// Hands `job` to a waiting thread; gives it back when none waits.
    pub(super) fn hand(&self, job: Job) -> Result<(), Job> {
        match self.tx.try_send(Some(job)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                Err(job.expect("a job was sent"))
            }
        }
    }

    /// Runs `first` on the calling thread, then the work handed to it
    /// while it waits in the cache; returns when it has waited
    /// `CACHE_IDLE` for nothing, when the cache is full, or once
    /// `stopping` is set.
    pub(super) fn work(&self, first: Job, stopping: &AtomicBool) {
        let mut job = first;
        loop {
            run(job);
            if stopping.load(Ordering::SeqCst) {
                return;
            }
            if self.waiting.fetch_add(1, Ordering::AcqRel) >= CACHE_MAX {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                return;
            }
            let next = self.rx.recv_timeout(CACHE_IDLE);
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            match next {
                Ok(Some(next)) => job = next,
                _ => return,
            }
        }
    }

    /// Lets every waiting thread end (at shutdown).
    pub(super) fn release(&self) {
        while self.tx.try_send(None).is_ok() {}
    }
}

/// Runs one job under its own name (a thread's name is at most 15 bytes).
fn run((name, body): Job) {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    if let Ok(name) = CString::new(&name[..end]) {
        let _ = rustix::thread::set_name(&name);
    }
    body();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_waiting_thread_takes_the_next_job_and_no_thread_takes_it_when_none_waits() {
        let pool = Arc::new(Pool::default());
        let stopping = Arc::new(AtomicBool::new(false));
        // No thread waits: the job comes back.
        let back = pool.hand(("none".into(), Box::new(|| {})));
        assert!(back.is_err());
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = {
            let (pool, stopping, tx) = (pool.clone(), stopping.clone(), tx.clone());
            std::thread::spawn(move || {
                let first: Job = ("first".into(), Box::new(move || tx.send(1).unwrap()));
                pool.work(first, &stopping);
            })
        };
        assert_eq!(rx.recv().unwrap(), 1);
        // The same thread, now waiting, takes the second job.
        let mut job: Job = ("second".into(), Box::new(move || tx.send(2).unwrap()));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while let Err(back) = pool.hand(job) {
            assert!(std::time::Instant::now() < deadline, "no thread waited");
            job = back;
            std::thread::yield_now();
        }
        assert_eq!(rx.recv().unwrap(), 2);
        stopping.store(true, Ordering::SeqCst);
        pool.release();
        worker.join().unwrap();
    }
}
