//! Daily caps and warm-up as configured: at most N messages a day per sending identity
//! (`--daily-cap`), or what the warm-up schedule allows on the Nth day of sending (`[warmup]`,
//! day → cap). The counting is the sender's memory's ([`crate::sender`]): per provider (or
//! unknown site) and source address, across every campaign of the day.

use thiserror::Error;

/// A `--warmup` schedule that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid warm-up schedule {0:?} (use DAY=CAP,..., e.g. 1=500,2=1000,7=5000)")]
pub struct WarmupError(pub String);

/// Warm-up: from day `.0` (1 = the first day of sending) the cap is `.1`; after the last
/// entry's day plus one week without a later entry, the schedule is over (no cap from it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Warmup(pub Vec<(u32, usize)>);

impl std::str::FromStr for Warmup {
    type Err = WarmupError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || WarmupError(s.into());
        let mut steps = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (d, c) = part.split_once('=').ok_or_else(err)?;
            let day: u32 = d
                .trim()
                .trim_start_matches("day")
                .parse()
                .map_err(|_| err())?;
            let cap: usize = c.trim().parse().map_err(|_| err())?;
            if day == 0 {
                return Err(err());
            }
            steps.push((day, cap));
        }
        steps.sort_unstable();
        Ok(Self(steps))
    }
}

impl Warmup {
    /// The cap on sending day `day` (1-based), `None` before any entry or after the schedule.
    pub fn cap(&self, day: u32) -> Option<usize> {
        let last = self.0.last()?;
        if day > last.0 + 6 {
            return None;
        }
        self.0
            .iter()
            .rev()
            .find(|(d, _)| *d <= day)
            .map(|(_, c)| *c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_schedules_parse_and_step() {
        let w: Warmup = "1=500, 2=1000, day7=5000".parse().unwrap();
        assert_eq!(w.cap(1), Some(500));
        assert_eq!(w.cap(3), Some(1000));
        assert_eq!(w.cap(13), Some(5000));
        assert_eq!(w.cap(14), None, "the schedule is over");
        assert!("0=5".parse::<Warmup>().is_err());
        assert!("1:5".parse::<Warmup>().is_err());
    }
}
