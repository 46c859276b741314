//! The sender's memory: what a sending identity has learnt about a receiver, kept across runs
//! and shared by every process sending as that identity (`docs/providers.md`, "What is
//! remembered").
//!
//! Scheduled sending is many runs. Without a memory every run re-offends: it ignores the
//! suspension the last run chose, counts a daily cap per campaign instead of per sending IP,
//! and pays again the refusal that taught the last run a provider's limits. So the engine's
//! per-provider state ([`crate::delivery::Gate`]) starts from what is remembered here and is
//! written back when the run ends, and daily caps are reserved here, atomically, before
//! anything is sent.
//!
//! An identity is a receiver (a provider, or an unknown site by its MX hosts) as seen from
//! one source address ([`Identity`]); limits and reputation are per sending IP. What is
//! kept, and for how long:
//! - **holds**: suspensions and backoff-rule actions in force, until their end time, with the
//!   reply that caused them;
//! - **learnt limits**: the connection limit and messages per connection a refusal taught, the
//!   last rate that was accepted and the rate that drew a throttle, each with when it was
//!   learnt; they relax as they age ([`Learnt::recall`]);
//! - **day counts**: messages sent per identity and UTC day, and the first day the identity
//!   sent (the warm-up day).
//!
//! The store is a small async trait ([`SenderStore`]) with two implementations: an embedded
//! SQLite file ([`sqlite::SqliteSenders`], the default) and a PostgreSQL database shared by a
//! fleet ([`postgres::PgSenders`]), chosen by a [`Location`] ([`open`]).

pub mod options;
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use thiserror::Error;

use crate::provider::caps::Warmup;
use crate::store::Location;

/// A receiver as seen from one source address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The provider's name, or an unknown site's MX host set.
    pub receiver: String,
    /// The source address (`--source-ip`); empty: the machine's default address.
    pub source: String,
}

impl Identity {
    /// The identity of `receiver` from `source` (`None`: the default address).
    pub fn new(receiver: &str, source: Option<std::net::IpAddr>) -> Self {
        Self {
            receiver: receiver.to_string(),
            source: source.map(|a| a.to_string()).unwrap_or_default(),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.source.is_empty() {
            f.write_str(&self.receiver)
        } else {
            write!(f, "{}@{}", self.receiver, self.source)
        }
    }
}

/// What a hold holds back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HoldKind {
    /// No connection at all.
    Suspend,
    /// At most `value` messages a second.
    Rate,
    /// At most `value` connections.
    Connections,
    /// At most `value` messages per connection.
    PerConnection,
}

impl HoldKind {
    /// Name in the store and in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldKind::Suspend => "suspend",
            HoldKind::Rate => "rate",
            HoldKind::Connections => "connections",
            HoldKind::PerConnection => "per-connection",
        }
    }

    /// Parses the name back.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "suspend" => HoldKind::Suspend,
            "rate" => HoldKind::Rate,
            "connections" => HoldKind::Connections,
            "per-connection" => HoldKind::PerConnection,
            _ => return None,
        })
    }
}

/// A backoff action in force until a wall-clock time.
#[derive(Clone, Debug, PartialEq)]
pub struct Hold {
    /// What it holds back.
    pub kind: HoldKind,
    /// The limit (messages/s for a rate, a count otherwise; unused for a suspension).
    pub value: f64,
    /// When it ends (Unix seconds).
    pub until: u64,
    /// The reply that caused it (shortened), for the results and the listing.
    pub cause: String,
}

/// A value learnt from a receiver, and when (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Learnt<T> {
    /// The value.
    pub value: T,
    /// When it was learnt.
    pub at: u64,
}

/// Limits learnt about one identity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Limits {
    /// Connections the receiver allows (a refusal at greeting taught it).
    pub connections: Option<Learnt<usize>>,
    /// Messages per connection it allows ("too many messages" taught it).
    pub per_connection: Option<Learnt<usize>>,
    /// The last rate (messages/s) messages were accepted at.
    pub rate_accepted: Option<Learnt<f64>>,
    /// The rate that drew a throttle (the ceiling the engine probes under).
    pub rate_refused: Option<Learnt<f64>>,
}

/// A learnt connection limit or messages per connection is kept as is for a day, then grows
/// back toward the table's value (one connection, or a quarter more messages, a day), and is
/// forgotten after [`FORGET_AFTER`].
pub const RELAX_AFTER: u64 = 86_400;
/// Anything learnt this long ago is forgotten: the table (or slow start) applies again.
pub const FORGET_AFTER: u64 = 30 * 86_400;
/// No probing above a rate that drew a throttle until this long after it (the next runs of a
/// cron schedule start under it and stay under it).
pub const QUIET_AFTER_THROTTLE: u64 = 3600;
/// A rate that drew a throttle stops being a ceiling after a week.
pub const REFUSED_RATE_KEPT: u64 = 7 * 86_400;

impl Limits {
    /// What a run starting at `now` takes from these limits, given the table's `connections`
    /// and `per_connection`: values in force, relaxed by age, or `None` when forgotten.
    pub fn recall(&self, now: u64, connections: usize, per_connection: usize) -> Recall {
        let age = |at: u64| now.saturating_sub(at);
        let relaxed = |l: &Learnt<usize>, table: usize, grow: fn(usize, u64) -> usize| {
            let a = age(l.at);
            (a < FORGET_AFTER).then(|| {
                let days = a.saturating_sub(RELAX_AFTER) / 86_400 + u64::from(a >= RELAX_AFTER);
                grow(l.value, days).min(table).max(1)
            })
        };
        Recall {
            connections: self
                .connections
                .as_ref()
                .and_then(|l| relaxed(l, connections, |v, d| v.saturating_add(d as usize))),
            per_connection: self.per_connection.as_ref().and_then(|l| {
                relaxed(l, per_connection, |v, d| {
                    (v as f64 * 1.25f64.powi(d.min(64) as i32)).ceil() as usize
                })
            }),
            rate: self
                .rate_accepted
                .filter(|l| age(l.at) < FORGET_AFTER)
                .map(|l| l.value),
            ceiling: self
                .rate_refused
                .filter(|l| age(l.at) < REFUSED_RATE_KEPT)
                .map(|l| (l.value, QUIET_AFTER_THROTTLE.saturating_sub(age(l.at)))),
        }
    }
}

/// The names of the learnt limits in the stores.
pub(crate) const CONNECTIONS: &str = "connections";
pub(crate) const PER_CONNECTION: &str = "per-connection";
pub(crate) const RATE_ACCEPTED: &str = "rate-accepted";
pub(crate) const RATE_REFUSED: &str = "rate-refused";

impl Limits {
    /// Sets the limit a store's row names (`kind`, `value`, learnt `at`); an unknown kind
    /// (written by a newer version) is ignored.
    pub(crate) fn set(&mut self, kind: &str, value: f64, at: u64) {
        let count = Some(Learnt {
            value: value.max(1.0) as usize,
            at,
        });
        let rate = Some(Learnt { value, at });
        match kind {
            CONNECTIONS => self.connections = count,
            PER_CONNECTION => self.per_connection = count,
            RATE_ACCEPTED => self.rate_accepted = rate,
            RATE_REFUSED => self.rate_refused = rate,
            _ => {}
        }
    }

    /// The limits set, as a store's rows: (kind, value, learnt at).
    pub(crate) fn rows(&self) -> Vec<(&'static str, f64, u64)> {
        let count = |kind, l: Option<Learnt<usize>>| l.map(|l| (kind, l.value as f64, l.at));
        let rate = |kind, l: Option<Learnt<f64>>| l.map(|l| (kind, l.value, l.at));
        [
            count(CONNECTIONS, self.connections),
            count(PER_CONNECTION, self.per_connection),
            rate(RATE_ACCEPTED, self.rate_accepted),
            rate(RATE_REFUSED, self.rate_refused),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Water-fills `wanted` over identities with `room` each: one at a time to each in turn.
pub(crate) fn spread(room: &[usize], wanted: usize) -> Vec<usize> {
    let mut got = vec![0; room.len()];
    let mut left = wanted;
    while left > 0 {
        let before = left;
        for (g, r) in got.iter_mut().zip(room) {
            if left > 0 && *g < *r {
                *g += 1;
                left -= 1;
            }
        }
        if left == before {
            break;
        }
    }
    got
}

/// Learnt limits as a run starts from them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recall {
    /// The connection limit to start at.
    pub connections: Option<usize>,
    /// Messages per connection to start at.
    pub per_connection: Option<usize>,
    /// The rate to start at (messages/s): the last accepted one.
    pub rate: Option<f64>,
    /// A rate that drew a throttle, and how many seconds remain before probing above it.
    pub ceiling: Option<(f64, u64)>,
}

/// Everything remembered about one identity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Memory {
    /// Learnt limits.
    pub limits: Limits,
    /// Holds in force.
    pub holds: Vec<Hold>,
    /// The first UTC day it sent (days since 1970), for the warm-up.
    pub first_day: Option<u64>,
    /// Messages counted today.
    pub today: usize,
}

impl Memory {
    /// The suspension in force at `now` that lasts longest, if any.
    pub fn suspension(&self, now: u64) -> Option<&Hold> {
        self.holds
            .iter()
            .filter(|h| h.kind == HoldKind::Suspend && h.until > now)
            .max_by_key(|h| h.until)
    }
}

/// What a run learnt about one identity, to merge into the store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Lesson {
    /// Limits learnt this run (`None`: nothing new).
    pub limits: Limits,
    /// Holds in force when the run ended.
    pub holds: Vec<Hold>,
}

/// How many messages an identity may send a day: `--daily-cap` and the warm-up schedule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CapRule {
    /// `--daily-cap`.
    pub daily: Option<usize>,
    /// `[warmup]`: day → cap, counted from the identity's first day of sending.
    pub warmup: Warmup,
}

impl CapRule {
    /// Whether any cap applies.
    pub fn is_some(&self) -> bool {
        self.daily.is_some() || !self.warmup.0.is_empty()
    }

    /// What an identity that first sent on `first_day` and sent `today` may still send on
    /// `day`, of `wanted` (all of it without a cap).
    pub fn room(&self, day: u64, first_day: Option<u64>, today: usize, wanted: usize) -> usize {
        self.cap(day, first_day)
            .map_or(wanted, |cap| cap.saturating_sub(today))
    }

    /// The cap on `day` for an identity that first sent on `first_day` (`None`: not yet).
    pub fn cap(&self, day: u64, first_day: Option<u64>) -> Option<usize> {
        let nth = first_day.map_or(1, |f| (day.saturating_sub(f) + 1) as u32);
        match (self.daily, self.warmup.cap(nth)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A learnt dialect of one MX address (see [`crate::smtp::Dialect`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialectNote {
    /// MX host name.
    pub host: String,
    /// Its address.
    pub ip: String,
    /// The dialect's name ([`crate::smtp::Dialect::as_str`]).
    pub dialect: String,
    /// What the server did, for the summary.
    pub reason: String,
    /// When it was learnt (Unix seconds).
    pub at: u64,
}

/// How long a learnt dialect is kept: a server upgraded since is tried in full again then.
pub const DIALECT_KEPT: u64 = 30 * 86_400;

/// The sender store cannot be used (a run stops before sending: exit 2).
#[derive(Debug, Error)]
pub enum StateError {
    /// The database cannot be opened, read or written (damaged, locked, unreadable).
    #[error("sender state {place}: {message}")]
    Db {
        /// File or URL.
        place: String,
        /// What went wrong.
        message: String,
    },
    /// The folder for the database cannot be created.
    #[error("sender state {path}: {source}")]
    Io {
        /// Folder.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Written by a newer mailmerge: refused rather than misread or reset.
    #[error(
        "sender state {place}: schema version {found} is newer than this mailmerge knows ({known})"
    )]
    Newer {
        /// File or URL.
        place: String,
        /// Version found.
        found: i64,
        /// Version known.
        known: i64,
    },
}

/// Opens (creating or migrating if needed) the sender store at `location`.
pub async fn open(location: &Location) -> Result<Arc<dyn SenderStore>, StateError> {
    Ok(match location {
        Location::Sqlite(path) => Arc::new(sqlite::SqliteSenders::open(path)?),
        Location::Postgres(url) => Arc::new(postgres::PgSenders::open(url).await?),
    })
}

/// Where the sender's memory lives, and how a run uses it.
#[async_trait]
pub trait SenderStore: Send + Sync {
    /// Where it is (for messages).
    fn place(&self) -> String;

    /// What is remembered of each of `ids` (same order) on UTC `day` at Unix time `now`.
    async fn recall(&self, ids: &[Identity], day: u64, now: u64)
    -> Result<Vec<Memory>, StateError>;

    /// Reserves up to `wanted` messages of `day`'s caps across `group` (one receiver's
    /// identities), spread evenly over those with room, in one atomic step: no two processes
    /// get the same last slot. Returns what each identity got (same order).
    async fn reserve(
        &self,
        day: u64,
        rule: &CapRule,
        group: &[Identity],
        wanted: usize,
    ) -> Result<Vec<usize>, StateError>;

    /// Adds `n` to `day`'s count of each identity (negative: gives back a reservation that was
    /// not used), setting its first day of sending when it had none.
    async fn count(&self, day: u64, counts: &[(Identity, i64)]) -> Result<(), StateError>;

    /// Merges what a run learnt: a newer learnt value replaces an older one, holds keep the
    /// later end, so concurrent runs lose no update.
    async fn remember(&self, lessons: &[(Identity, Lesson)], now: u64) -> Result<(), StateError>;

    /// Everything remembered (for `mailmerge senders`), with `day`'s counts.
    async fn list(&self, day: u64, now: u64) -> Result<Vec<(Identity, Memory)>, StateError>;

    /// Forgets what is remembered of `receiver` (from `source` only, when given): learnt
    /// limits and holds, not the day counts (a cap stays a cap). Returns the identities
    /// cleared.
    async fn forget(&self, receiver: &str, source: Option<&str>) -> Result<usize, StateError>;

    /// Dialects learnt per MX address, younger than [`DIALECT_KEPT`] at `now`.
    async fn dialects(&self, now: u64) -> Result<Vec<DialectNote>, StateError>;

    /// Remembers learnt dialects (a newer note replaces an older one).
    async fn remember_dialects(&self, notes: &[DialectNote]) -> Result<(), StateError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    const T: u64 = 1_796_375_100;

    fn learnt<T>(value: T, at: u64) -> Option<Learnt<T>> {
        Some(Learnt { value, at })
    }

    #[test]
    fn learnt_limits_hold_for_a_day_then_relax_then_are_forgotten() {
        let l = Limits {
            connections: learnt(3, T),
            per_connection: learnt(8, T),
            rate_accepted: learnt(40.0, T),
            rate_refused: learnt(80.0, T),
        };
        let fresh = l.recall(T + 60, 5, 50);
        assert_eq!(fresh.connections, Some(3));
        assert_eq!(fresh.per_connection, Some(8));
        assert_eq!(fresh.rate, Some(40.0));
        assert_eq!(fresh.ceiling, Some((80.0, QUIET_AFTER_THROTTLE - 60)));
        // After a day: one connection more, a quarter more messages; no quiet left.
        let day1 = l.recall(T + DAY, 5, 50);
        assert_eq!((day1.connections, day1.per_connection), (Some(4), Some(10)));
        assert_eq!(day1.ceiling, Some((80.0, 0)));
        // Never above the table.
        assert_eq!(l.recall(T + 10 * DAY, 5, 50).connections, Some(5));
        // The refused rate is a ceiling for a week; everything is forgotten after 30 days.
        assert_eq!(l.recall(T + 8 * DAY, 5, 50).ceiling, None);
        assert_eq!(l.recall(T + 31 * DAY, 5, 50), Recall::default());
    }

    #[test]
    fn spreads_evenly_over_the_room_there_is() {
        assert_eq!(spread(&[10, 10], 5), [3, 2]);
        assert_eq!(spread(&[1, 10], 5), [1, 4]);
        assert_eq!(spread(&[1, 2], 5), [1, 2]);
        assert_eq!(spread(&[], 5), Vec::<usize>::new());
    }

    #[test]
    fn caps_take_the_lower_of_the_daily_cap_and_the_warm_up_day() {
        let rule = CapRule {
            daily: Some(800),
            warmup: "1=100,2=500,3=1000".parse().unwrap(),
        };
        assert_eq!(rule.cap(20, None), Some(100));
        assert_eq!(rule.cap(21, Some(20)), Some(500));
        assert_eq!(rule.cap(22, Some(20)), Some(800));
        assert_eq!(CapRule::default().cap(22, Some(20)), None);
    }

    #[test]
    fn the_longest_suspension_in_force_is_the_one_that_counts() {
        let hold = |kind, until| Hold {
            kind,
            value: 0.0,
            until,
            cause: String::new(),
        };
        let m = Memory {
            holds: vec![
                hold(HoldKind::Suspend, T + 10),
                hold(HoldKind::Rate, T + 99),
                hold(HoldKind::Suspend, T + 50),
            ],
            ..Memory::default()
        };
        assert_eq!(m.suspension(T).map(|h| h.until), Some(T + 50));
        assert!(m.suspension(T + 50).is_none());
        assert_eq!(Identity::new("yahoo", None).to_string(), "yahoo");
        let ip = "192.0.2.1".parse().ok();
        assert_eq!(Identity::new("yahoo", ip).to_string(), "yahoo@192.0.2.1");
    }
}
