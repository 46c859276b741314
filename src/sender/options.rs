//! The sender-memory flags, defined once as clap flags whose long names are also the
//! config-file keys (as [`crate::delivery::DeliveryOptions`] does).

use std::path::PathBuf;

use clap::{Args, ValueHint};

/// `--state PATH`: shared by `run`, `check` and `senders`.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct StateOptions {
    /// The sender's memory: suspensions, learnt limits and daily counts per provider and
    /// source IP, shared by every run (SQLite) [default: $XDG_DATA_HOME/mailmerge/
    /// senders.sqlite, else ~/.local/share/...; with --sandbox <--sandbox-dir>.senders.sqlite].
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath, global = true)]
    pub state: Option<PathBuf>,
    /// Read the wall clock as this RFC 3339 instant at start (tests; days and suspensions).
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant, hide = true, global = true)]
    pub now: Option<std::time::SystemTime>,
}

impl StateOptions {
    /// The database to use: the flag, else the XDG default.
    pub fn path(&self) -> Option<PathBuf> {
        self.state.clone().or_else(super::sqlite::default_path)
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
