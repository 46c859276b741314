//! Retry policy: how long to wait before the next attempt, as a pure function of the attempt
//! number, so it can be tested without a clock.

use std::time::Duration;

use crate::units::{DurationError, parse_duration};

/// Waits before the 2nd, 3rd, … attempt; the last one repeats until the run's deadline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    delays: Vec<Duration>,
}

impl RetryPolicy {
    /// A policy from explicit delays (an empty list means "never retry").
    pub fn new(delays: Vec<Duration>) -> Self {
        Self { delays }
    }

    /// Parses a comma-separated list, e.g. `1m,5m,15m`.
    pub fn parse(s: &str) -> Result<Self, DurationError> {
        if s.trim().is_empty() || s.trim() == "none" {
            return Ok(Self::new(Vec::new()));
        }
        s.split(',')
            .map(parse_duration)
            .collect::<Result<_, _>>()
            .map(Self::new)
    }

    /// The wait after attempt `attempt` (1-based) failed transiently, before the next one.
    /// `None` when the policy has no retries at all.
    pub fn delay_after(&self, attempt: u32) -> Option<Duration> {
        let last = self.delays.len().checked_sub(1)?;
        let i = usize::try_from(attempt.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .min(last);
        Some(self.delays[i])
    }
}

impl Default for RetryPolicy {
    /// Greylisting usually clears after one to five minutes; then back off.
    fn default() -> Self {
        Self::new(vec![
            Duration::from_secs(60),
            Duration::from_secs(5 * 60),
            Duration::from_secs(15 * 60),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_follow_the_list_then_repeat_the_last() {
        let p = RetryPolicy::parse("1m,5m,15m").unwrap();
        assert_eq!(p.delay_after(1), Some(Duration::from_secs(60)));
        assert_eq!(p.delay_after(2), Some(Duration::from_secs(300)));
        assert_eq!(p.delay_after(3), Some(Duration::from_secs(900)));
        assert_eq!(p.delay_after(9), Some(Duration::from_secs(900)));
        assert_eq!(RetryPolicy::parse("none").unwrap().delay_after(1), None);
    }

    #[test]
    fn a_list_with_an_empty_entry_is_refused() {
        assert!(RetryPolicy::parse("1m,,2m").is_err());
    }
}
