//! Where the state shared across runs lives: the suppression list and the sender's memory
//! each sit in an embedded SQLite file (the default: one machine, no server) or in a
//! PostgreSQL database (a fleet of processes on several machines: every shard, campaign and
//! `mailmerge bounces` sees one list and one memory). `docs/scaling.md` says when to move.
//!
//! A [`Location`] is what `--suppressions`, `--state`, their config-file keys and their
//! environment variables ([`SUPPRESSIONS_ENV`], [`STATE_ENV`]) hold: a `postgres://` or
//! `postgresql://` URL, or a file path. Any other `scheme://` is refused, so a URL of a store
//! this version does not speak never becomes a folder named after its scheme.
//!
//! The openers that turn a location into a store are [`crate::suppress::open`] and
//! [`crate::sender::open`].

pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use postgres::PgUrl;

/// The environment variable `--suppressions` is read from when the flag is not given (the
/// URL with its password can then come from a Kubernetes Secret).
pub const SUPPRESSIONS_ENV: &str = "MAILMERGE_SUPPRESSIONS";
/// The environment variable `--state` is read from when the flag is not given.
pub const STATE_ENV: &str = "MAILMERGE_STATE";

/// Where a store lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// An SQLite database file (created with its folder when missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database (its tables are created and migrated by mailmerge).
    Postgres(PgUrl),
}

impl Location {
    /// Parses a flag, config or environment value: a `postgres://`/`postgresql://` URL, another
    /// `scheme://` (refused), or a file path.
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.trim().is_empty() {
            return Err("empty: give a file path or a postgres:// URL".into());
        }
        match url_scheme(value) {
            None => Ok(Location::Sqlite(PathBuf::from(value))),
            Some(s)
                if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql") =>
            {
                Ok(Location::Postgres(PgUrl::parse(value)?))
            }
            Some(s) => Err(format!(
                "{s}:// is not a store mailmerge speaks: give a file path (SQLite) or a \
                 postgres:// URL"
            )),
        }
    }

    /// Whether `value` is what environment variable `var` holds: a value that came from the
    /// fleet's environment rather than from a flag (`--sandbox` then keeps its own store, so
    /// a demo never writes to the fleet's database).
    pub fn is_from_env(value: &Self, var: &str) -> bool {
        std::env::var(var)
            .ok()
            .and_then(|v| Self::parse(&v).ok())
            .is_some_and(|v| v == *value)
    }

    /// The SQLite file, if it is one.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Location::Sqlite(p) => Some(p),
            Location::Postgres(_) => None,
        }
    }

    /// Where it is, for messages: the file, or the URL without its password or parameters.
    pub fn place(&self) -> String {
        match self {
            Location::Sqlite(p) => p.display().to_string(),
            Location::Postgres(u) => u.place().to_string(),
        }
    }
}

/// The scheme of `value` when it starts like a URL, `scheme://` (RFC 3986 §3.1: a letter,
/// then letters, digits, `+`, `-` or `.`). A Windows drive (`C:\…`) or a relative file
/// named `a:b` is no URL.
pub fn url_scheme(value: &str) -> Option<&str> {
    let (scheme, _) = value.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (first.is_ascii_alphabetic() && rest_ok).then_some(scheme)
}

impl FromStr for Location {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Location::parse(s)
    }
}

impl From<PathBuf> for Location {
    fn from(p: PathBuf) -> Self {
        Location::Sqlite(p)
    }
}

impl From<&Path> for Location {
    fn from(p: &Path) -> Self {
        Location::Sqlite(p.to_path_buf())
    }
}

impl fmt::Debug for Location {
    // Never the password: a `RunConfig` may be printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            Location::Postgres(u) => f.debug_tuple("Postgres").field(&u.place()).finish(),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.place())
    }
}

/// mailmerge's per-user data folder, where the default stores live:
/// `$XDG_DATA_HOME/mailmerge`, else `~/.local/share/mailmerge` (`None`: neither is an
/// absolute path).
pub fn data_dir() -> Option<PathBuf> {
    crate::files::user_dir("XDG_DATA_HOME", ".local/share")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_postgres_other_schemes_are_refused_and_the_rest_are_files() {
        let pg = Location::parse("postgres://mm:secret@db.example.com:5433/mail").unwrap();
        assert!(matches!(pg, Location::Postgres(_)));
        assert_eq!(pg.place(), "postgres://mm@db.example.com:5433/mail");
        assert!(!format!("{pg:?}").contains("secret"));
        let upper = Location::parse("PostgreSQL://db.example.com/mail").unwrap();
        assert!(matches!(upper, Location::Postgres(_)));
        for refused in [
            "mysql://db/x",
            "sqlite:///tmp/x.sqlite",
            "redis://r",
            "file:///x",
        ] {
            let e = Location::parse(refused).unwrap_err();
            assert!(
                e.contains("is not a store mailmerge speaks"),
                "{refused}: {e}"
            );
        }
        for file in [
            "/srv/s.sqlite",
            "s.sqlite",
            "C:\\lists\\s.sqlite",
            "a:b",
            "./x://y",
        ] {
            assert_eq!(
                Location::parse(file).unwrap(),
                Location::Sqlite(file.into()),
                "{file}"
            );
        }
        assert!(Location::parse(" ").is_err());
    }
}
