//! The suppression list: addresses (and domains) that no campaign sends to again, kept across
//! campaigns (`docs/list-hygiene.md`).
//!
//! Entries are keyed by the normalized address ([`normalize`]), or `@domain` for a whole
//! domain. The store also remembers each campaign's results CSV, so that `mailmerge bounces`
//! can find the row a late bounce is for, and how far it read each IMAP mailbox. It sits
//! behind a small async trait ([`SuppressionStore`]) with two implementations: an embedded
//! SQLite file ([`sqlite::SqliteSuppressions`], the default) and a PostgreSQL database shared by
//! a fleet ([`postgres::PgSuppressions`]), chosen by a [`Location`] ([`open`]). Lookups come in
//! bulk ([`SuppressionStore::find`]): a run screens its whole list in chunks, never one read per
//! row.

mod classify;
mod csvio;
pub mod options;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use thiserror::Error;

use crate::address::{self, Address};
use crate::store::Location;

pub use classify::{is_recipient_code, is_recipient_failure};
pub use csvio::{export_csv, import_csv};
pub use options::{RunSuppression, default_path};

/// Why an address is suppressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A permanent failure for a recipient reason (bad mailbox, bad domain).
    HardBounce,
    /// The recipient unsubscribed (imported from an unsubscribe export).
    Unsubscribe,
    /// The recipient reported a message as spam (an ARF feedback report).
    Complaint,
    /// Added by hand (`mailmerge suppress add`).
    Manual,
}

impl Reason {
    /// Name in the database, the CSV export and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::HardBounce => "hard-bounce",
            Reason::Unsubscribe => "unsubscribe",
            Reason::Complaint => "complaint",
            Reason::Manual => "manual",
        }
    }

    /// Parses the name back.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim() {
            "hard-bounce" => Reason::HardBounce,
            "unsubscribe" => Reason::Unsubscribe,
            "complaint" => Reason::Complaint,
            "manual" => Reason::Manual,
            _ => return None,
        })
    }
}

impl std::str::FromStr for Reason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Reason::parse(s)
            .ok_or_else(|| format!("{s:?}: use hard-bounce, unsubscribe, complaint or manual"))
    }
}

/// One suppressed address or domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Normalized address, or `@domain`.
    pub key: String,
    /// Why.
    pub reason: Reason,
    /// The reply or report that caused it (SMTP reply, DSN diagnostic, note).
    pub cause: String,
    /// Campaign id it came from (empty when added by hand or imported).
    pub campaign: String,
    /// When it was added (RFC 3339, UTC).
    pub created: String,
}

impl Entry {
    /// A new entry dated now.
    pub fn new(key: String, reason: Reason, cause: impl Into<String>, campaign: &str) -> Self {
        Self {
            key,
            reason,
            cause: cause.into(),
            campaign: campaign.to_string(),
            created: now(),
        }
    }

    /// `hard-bounce since 2026-11-02T10:00:00Z (campaign 3fa2b1c0): 550 5.1.1 no such user`,
    /// the text a suppressed row carries in its `response` column.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "suppressed: {} since {}",
            self.reason.as_str(),
            self.created
        );
        if !self.campaign.is_empty() {
            s.push_str(&format!(" (campaign {})", self.campaign));
        }
        if !self.cause.is_empty() {
            s.push_str(": ");
            s.push_str(&self.cause);
        }
        s
    }
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The suppression store cannot be used.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database cannot be opened, read or written (or reached: a server).
    #[error("suppression list {place}: {message}")]
    Db {
        /// Database file or server.
        place: String,
        /// What went wrong.
        message: String,
    },
    /// The folder for the database cannot be created.
    #[error("suppression list {path}: {source}")]
    Io {
        /// Folder.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// An address or domain that cannot be a key.
    #[error("{value:?} is not an address or @domain: {reason}")]
    Key {
        /// What was given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A CSV file for `import`/`export` is unusable.
    #[error("{path}: {message}")]
    Csv {
        /// File.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Normalizes an address or `@domain` into a key: the domain in lower-case A-label form (as
/// [`Address::parse`] gives it) and the local part lower-cased. RFC 5321 lets a local part be
/// case-sensitive, but no mailbox provider treats `Ann@` and `ann@` as two people, and a
/// suppression list must not miss a bounce because of case.
pub fn normalize(input: &str) -> Result<String, StoreError> {
    let s = input.trim().trim_start_matches('<').trim_end_matches('>');
    let refuse = |reason: String| StoreError::Key {
        value: input.to_string(),
        reason,
    };
    if let Some(domain) = s.strip_prefix('@') {
        let d = address::normalize_domain(domain).map_err(|e| refuse(e.to_string()))?;
        return Ok(format!("@{d}"));
    }
    let a = Address::parse(s).map_err(|e| refuse(e.to_string()))?;
    Ok(key_of(&a))
}

/// The key of a parsed address.
pub fn key_of(a: &Address) -> String {
    format!("{}@{}", a.local().to_lowercase(), a.domain())
}

/// Where `mailmerge bounces` stopped reading an IMAP mailbox: the mailbox's UIDVALIDITY and
/// the highest UID processed (RFC 3501 §2.3.1.1: UIDs only grow while UIDVALIDITY stays).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermark {
    /// The mailbox's UIDVALIDITY when it was read.
    pub uidvalidity: u32,
    /// The highest UID processed.
    pub last_uid: u32,
}

/// Where the suppression list lives.
#[async_trait]
pub trait SuppressionStore: Send + Sync {
    /// Where it is (a file, a server), for messages.
    fn place(&self) -> String;

    /// The entries under any of `keys` (normalized addresses and `@domain`s), by key: a few
    /// reads for many keys, never one per key.
    async fn find(&self, keys: &[String]) -> Result<HashMap<String, Entry>, StoreError>;

    /// Adds the entries in one transaction; a key already present keeps its first entry (the
    /// original cause is the useful one). Returns how many were new.
    async fn add(&self, entries: &[Entry]) -> Result<usize, StoreError>;

    /// Removes a key; true when it was there.
    async fn remove(&self, key: &str) -> Result<bool, StoreError>;

    /// Every entry, by key.
    async fn list(&self) -> Result<Vec<Entry>, StoreError>;

    /// Remembers that campaign `id` writes its results to `results`.
    async fn register_campaign(&self, id: &str, results: &Path) -> Result<(), StoreError>;

    /// Every known campaign: (id, results CSV), newest first.
    async fn campaigns(&self) -> Result<Vec<(String, PathBuf)>, StoreError>;

    /// The watermark of `mailbox` (`imaps://user@host:port/NAME`), if it was read before.
    async fn watermark(&self, mailbox: &str) -> Result<Option<Watermark>, StoreError>;

    /// Records how far `mailbox` has been read.
    async fn set_watermark(&self, mailbox: &str, mark: Watermark) -> Result<(), StoreError>;
}

/// Opens (creating or migrating if needed) the list at `location`.
pub async fn open(location: &Location) -> Result<Arc<dyn SuppressionStore>, StoreError> {
    Ok(match location {
        Location::Sqlite(path) => Arc::new(sqlite::SqliteSuppressions::open(path)?),
        Location::Postgres(url) => Arc::new(postgres::PgSuppressions::open(url).await?),
    })
}

/// Opens the list at `location` for reading only (`bounces --dry-run`): nothing is created,
/// migrated or written; `None` when there is no list there yet.
pub async fn open_read_only(
    location: &Location,
) -> Result<Option<Arc<dyn SuppressionStore>>, StoreError> {
    Ok(match location {
        Location::Sqlite(path) => sqlite::SqliteSuppressions::open_read_only(path)?
            .map(|s| Arc::new(s) as Arc<dyn SuppressionStore>),
        Location::Postgres(url) => postgres::PgSuppressions::open_read_only(url)
            .await?
            .map(|s| Arc::new(s) as Arc<dyn SuppressionStore>),
    })
}

/// The entry suppressing `a`: its own, else its domain's.
pub async fn lookup(
    store: &dyn SuppressionStore,
    a: &Address,
) -> Result<Option<Entry>, StoreError> {
    let (own, domain) = (key_of(a), format!("@{}", a.domain()));
    let mut found = store.find(&[own.clone(), domain.clone()]).await?;
    Ok(found.remove(&own).or_else(|| found.remove(&domain)))
}

/// The entry under exactly `key`, if any.
pub async fn lookup_key(
    store: &dyn SuppressionStore,
    key: &str,
) -> Result<Option<Entry>, StoreError> {
    Ok(store.find(&[key.to_string()]).await?.remove(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_brackets_and_domains() {
        assert_eq!(normalize(" <Ann@Example.COM> ").unwrap(), "ann@example.com");
        assert_eq!(normalize("@Example.COM").unwrap(), "@example.com");
        assert!(normalize("no-at-sign").is_err());
    }
}
