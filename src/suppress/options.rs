//! The suppression and VERP options, defined once as clap flags whose long names are also
//! the config-file keys (as [`crate::delivery::DeliveryOptions`] does), and what the library
//! reads from them.

use std::path::{Path, PathBuf};

use clap::{Args, ValueHint};

use crate::store::{Location, SUPPRESSIONS_ENV};

/// `--suppressions PATH|URL`: shared by `run`, `check`, `suppress` and `bounces`.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// Suppression list: an SQLite file (shared safely by runs on one machine) or a
    /// postgres://USER@HOST/DB URL (one list for a fleet; password in the URL or PGPASSWORD)
    /// [default: $XDG_DATA_HOME/mailmerge/suppressions.sqlite, else ~/.local/share/...; with
    /// --sandbox <--sandbox-dir>.suppressions.sqlite].
    #[arg(
        long,
        value_name = "PATH|URL",
        value_hint = ValueHint::FilePath,
        env = SUPPRESSIONS_ENV,
        hide_env_values = true,
        global = true
    )]
    pub suppressions: Option<Location>,
}

impl StoreOptions {
    /// The list to use: the flag (or its environment variable), else the XDG default.
    pub fn location(&self) -> Option<Location> {
        self.suppressions
            .clone()
            .or_else(|| default_path().map(Location::Sqlite))
    }
}

/// `$XDG_DATA_HOME/mailmerge/suppressions.sqlite`, else
/// `$HOME/.local/share/mailmerge/suppressions.sqlite` (XDG Base Directory spec: a relative
/// `XDG_DATA_HOME` is ignored).
pub fn default_path() -> Option<PathBuf> {
    crate::store::data_dir().map(|d| d.join("suppressions.sqlite"))
}

/// `--verp-key` / `--verp-key-file`: the secret that signs VERP tokens (`run`) and checks
/// them (`bounces`).
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct VerpKeyOptions {
    /// Secret key signing the --return-path tokens (HMAC-SHA256); keep it in the config file
    /// or use --verp-key-file.
    #[arg(long, value_name = "KEY", hide_env_values = true)]
    pub verp_key: Option<String>,
    /// File holding the VERP key (surrounding white space ignored).
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub verp_key_file: Option<PathBuf>,
}

impl VerpKeyOptions {
    /// The key bytes, if one was given; a short key is refused.
    pub fn load(&self) -> Result<Option<Vec<u8>>, String> {
        let key = match (&self.verp_key, &self.verp_key_file) {
            (Some(_), Some(_)) => return Err("give --verp-key or --verp-key-file, not both".into()),
            (Some(k), None) => k.trim().as_bytes().to_vec(),
            (None, Some(p)) => read_key(p)?,
            (None, None) => return Ok(None),
        };
        if key.len() < 16 {
            return Err("the VERP key must be at least 16 characters".into());
        }
        Ok(Some(key))
    }
}

fn read_key(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p)
        .map(|k| k.trim_ascii().to_vec())
        .map_err(|e| format!("--verp-key-file {}: {e}", p.display()))
}

/// The suppression options of `run` and `check`.
#[derive(Args, Clone, Debug, Default, PartialEq, Eq)]
pub struct SuppressOptions {
    /// Where the list lives.
    #[command(flatten)]
    pub store: StoreOptions,
    /// Send to suppressed addresses too (transactional mail: receipts, password resets);
    /// hard bounces are still recorded.
    #[arg(long)]
    pub ignore_suppressions: bool,
    /// Envelope sender (MAIL FROM) with a signed per-row token, so that a late bounce finds
    /// its row: e.g. 'bounces+{token}@acme.example' (needs --verp-key). Overrides --from.
    #[arg(long, value_name = "ADDRESS")]
    pub return_path: Option<String>,
    /// The VERP key.
    #[command(flatten)]
    pub key: VerpKeyOptions,
}

/// What a run does with the suppression list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunSuppression {
    /// Where the list lives; `None`: no suppression list (library default, so tests and
    /// embedders opt in; the command line always gives one).
    pub store: Option<Location>,
    /// Look nothing up (still record hard bounces).
    pub ignore: bool,
}
