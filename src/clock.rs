//! Wall-clock time for what outlives a run: UTC days (daily caps, warm-up), the end times of
//! suspensions, when a limit was learnt. One [`Clock`] per run, so that a test can pin a run
//! to a fixed instant (and the next run to a later one) instead of depending on the date or
//! the time of day. Durations inside a run use the monotonic clock, as before.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The run's wall clock: the system's, or one that started at a fixed instant and advances
/// with the monotonic clock from there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// `(fixed start, when it was fixed)`; `None`: the system clock.
    pinned: Option<(SystemTime, Instant)>,
}

impl Clock {
    /// A clock that reads `start` now and advances from there.
    pub fn starting_at(start: SystemTime) -> Self {
        Self {
            pinned: Some((start, Instant::now())),
        }
    }

    /// A clock that reads `secs` seconds since the Unix epoch now.
    pub fn starting_at_unix(secs: u64) -> Self {
        Self::starting_at(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// The time now.
    pub fn now(&self) -> SystemTime {
        match self.pinned {
            Some((start, at)) => start + at.elapsed(),
            None => SystemTime::now(),
        }
    }

    /// Seconds since the Unix epoch now.
    pub fn unix(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// The Unix time `d` from now, rounded up to the second (an end time is better told late
    /// than early).
    pub fn unix_after(&self, d: Duration) -> u64 {
        (self.now() + d)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| t.as_secs() + u64::from(t.subsec_nanos() > 0))
    }

    /// Today (UTC), in days since 1970.
    pub fn day(&self) -> u64 {
        self.unix() / 86_400
    }
}

/// `HH:MM UTC` of a Unix time, as the summary and results say when a suspension ends.
pub fn hh_mm(unix: u64) -> String {
    format!("{:02}:{:02} UTC", unix / 3600 % 24, unix / 60 % 60)
}

/// RFC 3339 (UTC, seconds) of a Unix time.
pub fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_clock_reads_its_instant_and_days_and_advances() {
        // 2026-12-04 23:59:59 UTC: the last second of day 20_791.
        let c = Clock::starting_at_unix(1_796_428_799);
        assert_eq!(c.day(), 20_791);
        assert!(c.unix() >= 1_796_428_799);
        assert_eq!(hh_mm(1_796_428_799), "23:59 UTC");
        assert_eq!(rfc3339(1_796_428_799), "2026-12-04T23:59:59Z");
        assert_eq!(Clock::starting_at_unix(1_796_428_800).day(), 20_792);
    }
}
