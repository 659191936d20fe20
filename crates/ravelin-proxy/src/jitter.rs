//! Randomness for jitter (breaker cooldowns, retry backoff): a per-thread xorshift generator
//! seeded from std's per-process random keys. Not cryptographic; it only has to keep many
//! proxies (or many requests) from acting in lockstep.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// A random `u64`.
pub(crate) fn next_u64() -> u64 {
    STATE
        .try_with(|state| {
            let mut x = state.get();
            if x == 0 {
                // `RandomState::new` draws fresh keys per call; `| 1` keeps xorshift off zero.
                x = RandomState::new().hash_one(0x5eed_u64) | 1;
            }
            // xorshift64: never 0 from a non-zero state.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            state.set(x);
            x
        })
        // Only during thread teardown; any value will do there.
        .unwrap_or(0x9e37_79b9_7f4a_7c15)
}

/// A uniformly random duration in `[0, max]` (full jitter), at nanosecond resolution.
pub(crate) fn up_to(max: Duration) -> Duration {
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    match nanos.checked_add(1) {
        Some(span) => Duration::from_nanos(next_u64() % span),
        None => Duration::from_nanos(next_u64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_to_stays_in_range_and_varies() {
        let max = Duration::from_millis(250);
        let draws: Vec<Duration> = (0..1000).map(|_| up_to(max)).collect();
        assert!(draws.iter().all(|d| *d <= max));
        // Spread over the range, not stuck at one end.
        assert!(draws.iter().any(|d| *d < max / 4));
        assert!(draws.iter().any(|d| *d > max / 4 * 3));
        assert_eq!(up_to(Duration::ZERO), Duration::ZERO);
        assert!(up_to(Duration::MAX) <= Duration::MAX);
    }
}
