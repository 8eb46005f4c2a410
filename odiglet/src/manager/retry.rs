//! Retries of failed instrumentations. An attach failure (the kernel refusing a uprobe or a
//! map update under pressure) or an analysis that failed on I/O (a binary still being written
//! into a volume, a transient read error) may succeed later, so the process is examined again
//! with exponential backoff, a bounded number of times. A binary that is simply unsupported
//! (no offsets, Go too old, nothing instrumentable) fails the same way every time and is not
//! retried.

use std::{error::Error, time::Duration};

/// When failed instrumentations are tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failure; doubled after each further one.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Attempts in all, the first included; 1 turns retries off.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 5 s, 10 s, 20 s, 40 s, 80 s: six attempts over about 2.5 minutes.
    fn default() -> Self {
        Self {
            first_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(300),
            max_attempts: 6,
        }
    }
}

impl RetryPolicy {
    /// The wait before the next attempt after `failed` attempts; `None` once they are spent.
    pub fn delay_after(&self, failed: u32) -> Option<Duration> {
        if failed == 0 || failed >= self.max_attempts {
            return None;
        }
        let doublings = (failed - 1).min(31);
        let delay = self
            .first_delay
            .checked_mul(1 << doublings)
            .unwrap_or(self.max_delay);
        Some(delay.min(self.max_delay))
    }

    /// What the instance's message adds to the error of failed attempt number `failed`.
    pub fn describe(&self, failed: u32, transient: bool) -> Option<String> {
        if !transient || self.max_attempts <= 1 {
            return None;
        }
        Some(match self.delay_after(failed) {
            Some(delay) => format!(
                "attempt {failed} of {}; retrying in {} s",
                self.max_attempts,
                delay.as_secs_f64()
            ),
            None => format!("gave up after {failed} attempts"),
        })
    }
}

/// Whether an analysis failure may go away by itself: an I/O error anywhere in its chain.
pub fn is_transient(error: &(dyn Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<std::io::Error>() {
            return true;
        }
        next = error.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stop_after_the_last_attempt() {
        let policy = RetryPolicy {
            first_delay: Duration::from_secs(5),
            max_delay: Duration::from_secs(30),
            max_attempts: 5,
        };
        let delays: Vec<_> = (0..=6).map(|n| policy.delay_after(n)).collect();
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(
            delays,
            [None, secs(5), secs(10), secs(20), secs(30), None, None]
        );
        assert_eq!(
            policy.describe(2, true).as_deref(),
            Some("attempt 2 of 5; retrying in 10 s")
        );
        assert_eq!(
            policy.describe(5, true).as_deref(),
            Some("gave up after 5 attempts")
        );
        assert_eq!(
            policy.describe(1, false),
            None,
            "permanent failures are not retried"
        );
        let huge = RetryPolicy {
            max_attempts: u32::MAX,
            ..policy
        };
        assert_eq!(huge.delay_after(200), secs(30), "no overflow");
        let off = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        assert_eq!((off.delay_after(1), off.describe(1, true)), (None, None));
    }

    #[derive(Debug, thiserror::Error)]
    #[error("cannot analyze")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("no offsets for go1.16")]
    struct Unsupported;

    #[test]
    fn only_io_failures_are_transient() {
        let io = Outer(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(is_transient(&io));
        assert!(!is_transient(&Unsupported));
    }
}
