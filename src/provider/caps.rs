//! Daily caps and warm-up: at most N messages a day per provider (`--daily-cap`), or what the
//! warm-up schedule allows on the Nth day of sending (`[warmup]`, day → cap), counted across
//! runs in a small state file beside the journal (`<results>.journal.caps.json`).
//!
//! A row is counted when it is handed to the engine, so a cap is never exceeded even when a run
//! is killed; when the run ends, its rows that were handed over but got no final answer from
//! the receiver (`deferred`) are given back, so a message counts once, on the day it is
//! delivered or bounced. Rows beyond today's cap end `deferred` with step `cap` and the next
//! day's run sends them. Days are UTC calendar days.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
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

/// Today's counts, kept across runs.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct CapBook {
    /// First UTC day anything was sent (days since 1970), for the warm-up.
    pub first_day: Option<u64>,
    /// The day `sent` counts.
    pub day: u64,
    /// Messages handed to the engine today, per provider.
    pub sent: BTreeMap<String, usize>,
}

/// The state file beside a journal.
pub fn path_beside(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".caps.json");
    PathBuf::from(name)
}

/// Today (UTC), in days since 1970.
pub fn today() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

impl CapBook {
    /// Reads the book (an unreadable or missing one starts afresh), for `day`.
    pub fn load(path: &Path, day: u64) -> Self {
        let mut book: CapBook = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if book.day != day {
            book.day = day;
            book.sent.clear();
        }
        book
    }

    /// Writes the book (never through a link: [`crate::files::write`]).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        crate::files::write(path, &text)
    }

    /// Today's cap: the lower of `daily` and the warm-up's.
    pub fn cap(&self, daily: Option<usize>, warmup: &Warmup) -> Option<usize> {
        let day = self
            .first_day
            .map_or(1, |f| (self.day.saturating_sub(f) + 1) as u32);
        match (daily, warmup.cap(day)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gives back `n` messages counted for `provider` today that were not sent after all.
    pub fn refund(&mut self, provider: &str, n: usize) {
        if let Some(sent) = self.sent.get_mut(provider) {
            *sent = sent.saturating_sub(n);
        }
    }

    /// Admits up to `wanted` messages for `provider` under `cap`; returns how many.
    pub fn admit(&mut self, provider: &str, wanted: usize, cap: Option<usize>) -> usize {
        let sent = self.sent.entry(provider.to_string()).or_default();
        let n = cap.map_or(wanted, |c| wanted.min(c.saturating_sub(*sent)));
        *sent += n;
        if n > 0 && self.first_day.is_none() {
            self.first_day = Some(self.day);
        }
        n
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

    #[test]
    fn caps_count_across_runs_of_a_day_and_reset_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.caps.json");
        let mut b = CapBook::load(&path, 100);
        assert_eq!(b.admit("google", 8, Some(5)), 5);
        b.save(&path).unwrap();
        let mut b = CapBook::load(&path, 100);
        assert_eq!(b.admit("google", 8, Some(5)), 0, "same day: nothing left");
        assert_eq!(b.admit("yahoo", 2, Some(5)), 2);
        b.save(&path).unwrap();
        let mut b = CapBook::load(&path, 101);
        assert_eq!(b.admit("google", 8, Some(5)), 5, "next day");
        let w: Warmup = "1=1,2=3".parse().unwrap();
        assert_eq!(b.cap(None, &w), Some(3), "second day of sending");
        assert_eq!(b.cap(Some(2), &w), Some(2));
    }
}
