//! Per-site politeness limits as pure values: the `--rate-per-site` message rate and the slot
//! arithmetic that spaces messages out, testable without a clock or a server.

use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

/// A message rate, e.g. `100/min`: at most `count` messages per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Messages allowed…
    pub count: u32,
    /// …per this period.
    pub per: Duration,
}

/// A `--rate-per-site` value that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid rate {0:?} (use N/s, N/min or N/h, e.g. 100/min)")]
pub struct RateError(pub String);

impl FromStr for Rate {
    type Err = RateError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RateError(s.to_string());
        let (n, unit) = s.trim().split_once('/').ok_or_else(err)?;
        let count: u32 = n.trim().parse().map_err(|_| err())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(err()),
        };
        if count == 0 {
            return Err(err());
        }
        Ok(Rate { count, per })
    }
}

impl Rate {
    /// The spacing between two messages: the rate is enforced evenly (no bursts), so
    /// `100/min` sends one message every 600 ms.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

/// When the next message may start, given the earliest free slot (`next_free`, if any
/// message was sent before) and the time now; returns the slot to use and the next free one.
pub fn take_slot(
    next_free: Option<Instant>,
    now: Instant,
    interval: Duration,
) -> (Instant, Instant) {
    let slot = next_free.map_or(now, |n| n.max(now));
    (slot, slot + interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            "100/min".parse::<Rate>(),
            Ok(Rate {
                count: 100,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(
            "5/s".parse::<Rate>().map(|r| r.interval()),
            Ok(Duration::from_millis(200))
        );
        assert_eq!(
            "3600/h".parse::<Rate>().map(|r| r.interval()),
            Ok(Duration::from_secs(1))
        );
        for bad in ["100", "0/min", "x/min", "10/day", "/s"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn slots_are_spaced_by_the_interval_and_never_in_the_past() {
        let t0 = Instant::now();
        let i = Duration::from_millis(600);
        let (s1, n1) = take_slot(None, t0, i);
        assert_eq!((s1, n1), (t0, t0 + i));
        // A second message right away waits for the next slot.
        let (s2, n2) = take_slot(Some(n1), t0, i);
        assert_eq!((s2, n2), (t0 + i, t0 + 2 * i));
        // After a long pause no credit is saved up: the slot is now.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(take_slot(Some(n2), later, i).0, later);
    }
}
