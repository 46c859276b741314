//! The sender-memory flags, defined once as clap flags whose long names are also the
//! config-file keys (as [`crate::delivery::DeliveryOptions`] does).

use clap::{Args, ValueHint};

use crate::store::{Location, STATE_ENV};

/// `--state PATH|URL`: shared by `run`, `check` and `senders`.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct StateOptions {
    /// The sender's memory: suspensions, learnt limits and daily counts per provider and
    /// source IP, shared by every run: an SQLite file, or a postgres://USER@HOST/DB URL shared
    /// by a fleet (may be the suppression list's database) [default: $XDG_DATA_HOME/mailmerge/
    /// senders.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.senders.sqlite].
    #[arg(
        long,
        value_name = "PATH|URL",
        value_hint = ValueHint::FilePath,
        env = STATE_ENV,
        hide_env_values = true,
        global = true
    )]
    pub state: Option<Location>,
    /// Read the wall clock as this RFC 3339 instant at start (tests; days and suspensions).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant, hide = true, global = true)]
    pub now: Option<std::time::SystemTime>,
}

impl StateOptions {
    /// The store to use: the flag (or its environment variable), else the XDG default.
    pub fn location(&self) -> Option<Location> {
        self.state
            .clone()
            .or_else(|| super::sqlite::default_path().map(Location::Sqlite))
    }

    /// The clock runs read.
    pub fn clock(&self) -> crate::clock::Clock {
        self.now
            .map(crate::clock::Clock::starting_at)
            .unwrap_or_default()
    }
}

fn parse_instant(s: &str) -> Result<std::time::SystemTime, String> {
    humantime::parse_rfc3339(s).map_err(|e| format!("{s:?}: {e}"))
}
