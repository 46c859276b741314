//! Quantities as they are typed in options and the provider table: message rates (`100/min`)
//! and durations (`30s`, `1h 30m`). A leaf: the options, the provider table, the backoff rules
//! and the delivery engine all read these values, and this module reads none of them.

use std::str::FromStr;
use std::time::Duration;

use thiserror::Error;

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

/// A `--retry` or duration value that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid duration {0:?} (use a number with ms, s, m or h, e.g. 30s or 5m)")]
pub struct DurationError(pub String);

/// Parses a duration as humantime does (`500ms`, `30s`, `5m`, `2h`, `1h 30m`); a bare number
/// means seconds.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|_| DurationError(s.to_string()))
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
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("5 min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("m").is_err());
    }
}
