//! The per-client message rate limit (`--max-messages-per-second`): a
//! token bucket that refills at the rate and holds a burst.
//!
//! Invariants: one bucket per client, used only by that client's reader
//! thread (no sharing, no lock); a message takes one token; time is read
//! from the monotonic clock (no system call on Linux).
//!
//! May touch: nothing but itself.

use std::time::Instant;

use crate::Config;

/// One client's bucket.
#[derive(Debug)]
pub(crate) struct Bucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// The bucket of `config`'s limit, full; `None` without a limit.
    pub(crate) fn of(config: &Config) -> Option<Bucket> {
        let rate = config.max_messages_per_second?;
        let burst = config
            .message_burst
            .unwrap_or(rate.max(crate::DEFAULT_MESSAGE_BURST));
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
        let config = Config {
            max_messages_per_second: Some(1),
            message_burst: Some(3),
            ..Config::default()
        };
        let mut bucket = Bucket::of(&config).expect("a limit");
        assert!(bucket.take() && bucket.take() && bucket.take());
        // A fourth within the same instant: less than a token has refilled.
        assert!(!bucket.take());
        assert!(Bucket::of(&Config::default()).is_none());
    }
}
