//! Unpredictable numbers — client frame masks, the Redis bridge's instance
//! id — without a random-number crate of wshub's own: SipHash, a keyed
//! pseudorandom function, under the random keys std draws from the
//! operating system for every `RandomState`, over a counter. Touches
//! nothing.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh unpredictable 64-bit value.
pub(crate) fn next_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A fresh frame mask (RFC 6455 5.3: unpredictable for each frame).
pub(crate) fn mask() -> [u8; 4] {
    let [a, b, c, d, ..] = next_u64().to_le_bytes();
    [a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_do_not_repeat() {
        let mut seen: Vec<u64> = (0..1000).map(|_| next_u64()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 1000);
    }
}
