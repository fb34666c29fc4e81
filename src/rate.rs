//! The per-client message rate limit (`--max-messages-per-second`): a
//! token bucket that refills at the rate and holds a burst.
//!
//! Invariants: one bucket per client, used only by that client's reader
//! thread (no sharing, no lock); a message takes one token; time is read
//! from the monotonic clock (no system call on Linux).
//!
//! May touch: nothing but itself.

use std::time::Instant;

/// One client's bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket for `rate` messages per second and `burst` at once
    /// (default: a second's worth, at least
    /// [`MESSAGE_BURST`](crate::defaults::MESSAGE_BURST)); `None` without
    /// a rate.
    pub(crate) fn new(rate: Option<u32>, burst: Option<u32>) -> Option<Bucket> {
        let rate = rate?;
        let burst = burst.unwrap_or(rate.max(crate::defaults::MESSAGE_BURST));
        Some(Bucket {
            per_second: f64::from(rate),
            burst: f64::from(burst),
            tokens: f64::from(burst),
            at: Instant::now(),
        })
    }

    /// Takes a token for one message; `false` when the bucket is empty.
    pub(crate) fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_the_burst_then_refuses() {
        let mut bucket = Bucket::new(Some(1), Some(3)).expect("a limit");
        assert!(bucket.take() && bucket.take() && bucket.take());
        // A fourth within the same instant: less than a token has refilled.
        assert!(!bucket.take());
        assert!(Bucket::new(None, Some(3)).is_none());
    }
}
