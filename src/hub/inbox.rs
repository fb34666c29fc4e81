//! How the hub waits for its next message: while messages have been coming
//! in quick succession, it spins for a moment before it sleeps.
//!
//! A thread that sleeps on a channel is woken by its sender with a system
//! call, and then has to be scheduled; on the machines measured that costs
//! more time, and more CPU, than spinning through a gap of a few tens of
//! microseconds (BENCHMARKS.md: one client's round trips through the hub
//! doubled, and the server's CPU per round trip fell by a third). So the hub
//! keeps an estimate of the gap between the end of its work and the next
//! message; when that is short it spins up to twice the gap (at most
//! [`SPIN_MAX`]) before it sleeps, and when it is long — light or no traffic —
//! it sleeps at once, so an idle or lightly loaded server spends nothing
//! on spinning. With one CPU there is nothing to gain (the sender needs the
//! CPU the spinner holds), and it never spins.
//!
//! Invariants: messages are taken in the channel's order, one at a time,
//! exactly as a plain `recv` would; spinning never outlasts [`SPIN_MAX`].
//!
//! May touch: the hub's inbox (receiving only).

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

/// The longest the hub spins for a message before it sleeps.
pub(crate) const SPIN_MAX: Duration = Duration::from_micros(50);

/// Gaps longer than this count as this long (so that a pause does not
/// keep the hub from spinning for long once traffic is quick again).
const GAP_CAP: Duration = Duration::from_micros(200);

/// The hub's way of waiting: its estimate of the gap between messages.
#[derive(Debug)]
pub(crate) struct Inbox<T> {
    rx: Receiver<T>,
    /// Recent gaps between the end of the hub's work and the next
    /// message, averaged (each new gap weighs a quarter).
    gap: Duration,
    /// Whether spinning can pay at all (more than one CPU).
    spins: bool,
}

impl<T> Inbox<T> {
    /// Waits on `rx`; spins only with more than one CPU.
    pub(crate) fn new(rx: Receiver<T>) -> Inbox<T> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Inbox {
            rx,
            gap: GAP_CAP,
            spins: cpus > 1,
        }
    }

    /// The next message, waiting at most `timeout` for it.
    pub(crate) fn next(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let start = Instant::now();
        let spin = self.spin_for();
        if !spin.is_zero() {
            loop {
                match self.rx.try_recv() {
                    Ok(msg) => {
                        self.learn(start.elapsed());
                        return Ok(msg);
                    }
                    Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                    Err(TryRecvError::Empty) if start.elapsed() >= spin => break,
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                }
            }
        }
        let got = self.rx.recv_timeout(timeout);
        if !matches!(got, Err(RecvTimeoutError::Disconnected)) {
            self.learn(start.elapsed());
        }
        got
    }

    /// The next message if there is one now, as `try_recv`.
    pub(crate) fn try_next(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// How long to spin before sleeping: up to twice the usual gap, when
    /// that is short; nothing otherwise.
    fn spin_for(&self) -> Duration {
        if !self.spins || self.gap > SPIN_MAX {
            return Duration::ZERO;
        }
        (self.gap * 2).min(SPIN_MAX)
    }

    /// Takes in one more gap.
    fn learn(&mut self, gap: Duration) {
        self.gap = (self.gap * 3 + gap.min(GAP_CAP)) / 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::unbounded;

    fn inbox(spins: bool) -> (crossbeam_channel::Sender<u32>, Inbox<u32>) {
        let (tx, rx) = unbounded();
        let mut inbox = Inbox::new(rx);
        inbox.spins = spins;
        (tx, inbox)
    }

    #[test]
    fn quick_messages_make_it_spin_and_a_pause_makes_it_sleep_at_once() {
        let (tx, mut inbox) = inbox(true);
        assert_eq!(
            inbox.spin_for(),
            Duration::ZERO,
            "no spinning from the start"
        );
        for i in 0..16 {
            tx.send(i).unwrap();
            assert_eq!(inbox.next(Duration::from_secs(1)), Ok(i));
        }
        let spin = inbox.spin_for();
        assert!(!spin.is_zero() && spin <= SPIN_MAX, "spins {spin:?}");
        // A pause of a whole timeout: the next wait sleeps at once.
        assert_eq!(
            inbox.next(Duration::from_millis(5)),
            Err(RecvTimeoutError::Timeout)
        );
        tx.send(99).unwrap();
        assert_eq!(inbox.next(Duration::from_secs(1)), Ok(99));
        for _ in 0..3 {
            inbox.learn(GAP_CAP * 10);
        }
        assert_eq!(inbox.spin_for(), Duration::ZERO);
    }

    #[test]
    fn with_one_cpu_it_never_spins() {
        let (tx, mut inbox) = inbox(false);
        for i in 0..16 {
            tx.send(i).unwrap();
            assert_eq!(inbox.next(Duration::from_secs(1)), Ok(i));
        }
        assert_eq!(inbox.spin_for(), Duration::ZERO);
    }

    #[test]
    fn a_closed_channel_ends_the_wait_while_spinning() {
        let (tx, mut inbox) = inbox(true);
        inbox.gap = Duration::from_micros(10);
        drop(tx);
        assert_eq!(
            inbox.next(Duration::from_secs(1)),
            Err(RecvTimeoutError::Disconnected)
        );
    }
}
