//! The waits of this service's own retry loops, one named policy each.
//!
//! The AWS SDK already retries every request ([`crate::aws`]: 3 attempts, exponential backoff
//! with jitter). These loops sit above it and retry what a request that *succeeded* left
//! undone: items a batch call returned unprocessed, and conditional writes that lost a race.
//! Each attempt of such a loop may itself be retried by the SDK; when a loop runs out of
//! attempts the caller answers 503 with `Retry-After`.

use std::time::Duration;

/// How a loop retries: how many attempts, and how long it waits before attempt `n` (from 1):
/// `base × 2^min(n, max_exponent)`, or a random wait up to that with `jitter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The wait before the first retry is twice this.
    pub base: Duration,
    /// The wait stops doubling after this many retries.
    pub max_exponent: u32,
    /// Full jitter: a uniformly random wait up to the computed one, so writers that collided
    /// spread out instead of colliding again in lockstep.
    pub jitter: bool,
}

/// Unprocessed items of `BatchWriteItem` (chunk imports and deletes): 8 attempts, 100 ms to 6.4 s.
pub const BATCH_WRITE: Backoff =
    Backoff { attempts: 8, base: Duration::from_millis(50), max_exponent: 7, jitter: false };

/// Unprocessed keys of `BatchGetItem` (snapshot message chunks): 10 attempts, 50 to 800 ms.
pub const BATCH_GET: Backoff =
    Backoff { attempts: 10, base: Duration::from_millis(25), max_exponent: 5, jitter: false };

/// A PATCH's read-modify-write after a concurrent change: 10 attempts, each after a full-jitter
/// wait up to 20 to 640 ms (about 1.6 s of waiting at most, on average).
pub const PATCH: Backoff = Backoff { attempts: 10, base: Duration::from_millis(10), max_exponent: 6, jitter: true };

impl Backoff {
    /// The wait before attempt `attempt` (0 for the first attempt).
    pub fn delay(&self, attempt: u32) -> Duration {
        if attempt == 0 {
            return Duration::ZERO;
        }
        let cap = self.base.saturating_mul(1 << attempt.min(self.max_exponent));
        if !self.jitter {
            return cap;
        }
        use rand::Rng;
        let millis = rand::rng().random_range(0..=cap.as_millis() as u64);
        Duration::from_millis(millis)
    }

    /// Waits before attempt `attempt` (not at all before the first).
    pub async fn wait(&self, attempt: u32) {
        let delay = self.delay(attempt); // the random generator is not Send: drop it before awaiting
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policies_wait_as_documented() {
        assert_eq!(BATCH_WRITE.delay(0), Duration::ZERO);
        assert_eq!(BATCH_WRITE.delay(1), Duration::from_millis(100));
        assert_eq!(BATCH_WRITE.delay(7), Duration::from_millis(6400));
        assert_eq!(BATCH_GET.delay(1), Duration::from_millis(50));
        assert_eq!(BATCH_GET.delay(9), Duration::from_millis(800), "capped at 2^5");
        for attempt in 1..PATCH.attempts {
            let cap = Duration::from_millis(10 << attempt.min(6));
            assert!(PATCH.delay(attempt) <= cap);
        }
    }
}
