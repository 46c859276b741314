//! The suppression list: addresses (and domains) that no campaign sends to again, kept across
//! campaigns in an embedded SQLite database (`docs/list-hygiene.md`).
//!
//! One file, shared safely by several runs at once: WAL journal mode (readers never block the
//! one writer), a busy timeout (a writer waits for another instead of failing), and every
//! change in one `BEGIN IMMEDIATE` transaction. Entries are keyed by the normalized address
//! ([`normalize`]), or `@domain` for a whole domain. The database also remembers each
//! campaign's results CSV, so that `mailmerge bounces` can find the row a late bounce is for.

mod classify;
mod csvio;
pub mod options;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use thiserror::Error;

use crate::address::{self, Address};

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
    /// The database cannot be opened, read or written.
    #[error("suppression list {path}: {source}")]
    Db {
        /// Database file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
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

/// How long a writer waits for another before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS suppressions (
    key      TEXT PRIMARY KEY NOT NULL,
    reason   TEXT NOT NULL,
    cause    TEXT NOT NULL DEFAULT '',
    campaign TEXT NOT NULL DEFAULT '',
    created  TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS campaigns (
    id       TEXT PRIMARY KEY NOT NULL,
    results  TEXT NOT NULL,
    created  TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS imap_watermarks (
    mailbox     TEXT PRIMARY KEY NOT NULL,
    uidvalidity INTEGER NOT NULL,
    last_uid    INTEGER NOT NULL,
    updated     TEXT NOT NULL
) WITHOUT ROWID;
";

/// An open suppression store.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database at `path` and its folder.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = |source| StoreError::Db {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        // WAL: one writer and any number of readers at once; survives a crash mid-write.
        let _mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute_batch(SCHEMA).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing database read-only (`bounces --dry-run`: nothing is created or
    /// written); `None` when there is no file.
    pub fn open_read_only(path: &Path) -> Result<Option<Self>, StoreError> {
        if !path.is_file() {
            return Ok(None);
        }
        let db = |source| StoreError::Db {
            path: path.to_path_buf(),
            source,
        };
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let conn = Connection::open_with_flags(path, flags).map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        Ok(Some(Self {
            conn,
            path: path.to_path_buf(),
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// The entry suppressing `a`: its own, else its domain's.
    pub fn lookup(&self, a: &Address) -> Result<Option<Entry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT key, reason, cause, campaign, created FROM suppressions \
                 WHERE key = ?1 OR key = ?2 ORDER BY length(key) DESC LIMIT 1",
            )
            .map_err(|e| self.db(e))?;
        stmt.query_row(params![key_of(a), format!("@{}", a.domain())], row_entry)
            .optional()
            .map_err(|e| self.db(e))
    }

    /// The entry under exactly `key` (a normalized address or `@domain`), if any.
    pub fn lookup_key(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        self.conn
            .query_row(
                "SELECT key, reason, cause, campaign, created FROM suppressions WHERE key = ?1",
                params![key],
                row_entry,
            )
            .optional()
            .map_err(|e| self.db(e))
    }

    /// Adds the entries in one transaction; a key already present keeps its first entry
    /// (the original cause is the useful one). Returns how many were new.
    pub fn add(&mut self, entries: &[Entry]) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let db = |source| StoreError::Db {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut added = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO suppressions (key, reason, cause, campaign, created) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(key) DO NOTHING",
                )
                .map_err(db)?;
            for e in entries {
                added += stmt
                    .execute(params![
                        e.key,
                        e.reason.as_str(),
                        e.cause,
                        e.campaign,
                        e.created
                    ])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)?;
        Ok(added)
    }

    /// Removes a key; true when it was there.
    pub fn remove(&mut self, key: &str) -> Result<bool, StoreError> {
        self.conn
            .execute("DELETE FROM suppressions WHERE key = ?1", params![key])
            .map(|n| n > 0)
            .map_err(|e| self.db(e))
    }

    /// Every entry, by key.
    pub fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, reason, cause, campaign, created FROM suppressions ORDER BY key")
            .map_err(|e| self.db(e))?;
        let rows = stmt.query_map([], row_entry).map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    /// Remembers that campaign `id` writes its results to `results`.
    pub fn register_campaign(&mut self, id: &str, results: &Path) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO campaigns (id, results, created) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(id) DO UPDATE SET results = excluded.results",
                params![id, results.to_string_lossy(), now()],
            )
            .map(drop)
            .map_err(|e| self.db(e))
    }

    /// Every known campaign: (id, results CSV).
    pub fn campaigns(&self) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, results FROM campaigns ORDER BY created DESC")
            .map_err(|e| self.db(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    PathBuf::from(r.get::<_, String>(1)?),
                ))
            })
            .map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }
}

/// Where `mailmerge bounces` stopped reading an IMAP mailbox: the mailbox's UIDVALIDITY and
/// the highest UID processed (RFC 3501 §2.3.1.1: UIDs only grow while UIDVALIDITY stays).
/// Kept apart from the list's own methods: a store on another database implements these two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watermark {
    /// The mailbox's UIDVALIDITY when it was read.
    pub uidvalidity: u32,
    /// The highest UID processed.
    pub last_uid: u32,
}

impl Store {
    /// The watermark of `mailbox` (`imaps://user@host:port/NAME`), if it was read before.
    pub fn watermark(&self, mailbox: &str) -> Result<Option<Watermark>, StoreError> {
        self.conn
            .query_row(
                "SELECT uidvalidity, last_uid FROM imap_watermarks WHERE mailbox = ?1",
                params![mailbox],
                |r| {
                    Ok(Watermark {
                        uidvalidity: r.get(0)?,
                        last_uid: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(|e| self.db(e))
    }

    /// Records how far `mailbox` has been read.
    pub fn set_watermark(&mut self, mailbox: &str, mark: Watermark) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO imap_watermarks (mailbox, uidvalidity, last_uid, updated) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT(mailbox) DO UPDATE SET \
                 uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, \
                 updated = excluded.updated",
                params![mailbox, mark.uidvalidity, mark.last_uid, now()],
            )
            .map(drop)
            .map_err(|e| self.db(e))
    }
}

fn row_entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let reason: String = r.get(1)?;
    Ok(Entry {
        key: r.get(0)?,
        // An unknown reason (written by a newer version) still suppresses.
        reason: Reason::parse(&reason).unwrap_or(Reason::Manual),
        cause: r.get(2)?,
        campaign: r.get(3)?,
        created: r.get(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[test]
    fn normalizes_case_brackets_and_domains() {
        assert_eq!(normalize(" <Ann@Example.COM> ").unwrap(), "ann@example.com");
        assert_eq!(normalize("@Example.COM").unwrap(), "@example.com");
        assert!(normalize("no-at-sign").is_err());
    }

    #[test]
    fn adds_looks_up_by_address_and_domain_and_keeps_the_first_cause() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("a/b/s.sqlite")).unwrap();
        let e = Entry::new(
            "ann@example.com".into(),
            Reason::HardBounce,
            "550 5.1.1",
            "c1",
        );
        assert_eq!(s.add(std::slice::from_ref(&e)).unwrap(), 1);
        let again = Entry::new("ann@example.com".into(), Reason::Manual, "later", "");
        assert_eq!(s.add(&[again]).unwrap(), 0);
        assert_eq!(s.lookup(&addr("ANN@example.com")).unwrap(), Some(e));
        assert_eq!(s.lookup(&addr("bob@example.com")).unwrap(), None);
        s.add(&[Entry::new("@example.com".into(), Reason::Manual, "", "")])
            .unwrap();
        let d = s.lookup(&addr("bob@example.com")).unwrap().unwrap();
        assert_eq!(d.key, "@example.com");
        assert!(s.remove("@example.com").unwrap());
        assert!(!s.remove("@example.com").unwrap());
        assert_eq!(s.list().unwrap().len(), 1);
    }

    #[test]
    fn a_list_of_an_older_version_gains_the_imap_watermarks_and_keeps_its_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            // The schema before the watermark table existed, with one entry.
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE suppressions (key TEXT PRIMARY KEY NOT NULL, reason TEXT NOT NULL, \
                 cause TEXT NOT NULL DEFAULT '', campaign TEXT NOT NULL DEFAULT '', \
                 created TEXT NOT NULL) WITHOUT ROWID;
                 CREATE TABLE campaigns (id TEXT PRIMARY KEY NOT NULL, results TEXT NOT NULL, \
                 created TEXT NOT NULL) WITHOUT ROWID;
                 INSERT INTO suppressions VALUES ('ann@example.com', 'manual', '', '', 'x');",
            )
            .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.list().unwrap().len(), 1);
        let mailbox = "imaps://bounces@imap.example.com:993/INBOX";
        assert_eq!(s.watermark(mailbox).unwrap(), None);
        let mark = Watermark {
            uidvalidity: 7,
            last_uid: 42,
        };
        s.set_watermark(mailbox, mark).unwrap();
        s.set_watermark(
            mailbox,
            Watermark {
                last_uid: 43,
                ..mark
            },
        )
        .unwrap();
        drop(s);
        let ro = Store::open_read_only(&path).unwrap().unwrap();
        assert_eq!(ro.watermark(mailbox).unwrap().unwrap().last_uid, 43);
        assert!(ro.lookup_key("ann@example.com").unwrap().is_some());
        assert!(
            Store::open_read_only(&dir.path().join("none.sqlite"))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn concurrent_writers_lose_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        Store::open(&path).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for batch in 0..25 {
                        let mut s = Store::open(&path).unwrap();
                        let entries: Vec<Entry> = (0..4)
                            .map(|i| {
                                let key = format!("t{t}b{batch}i{i}@example.com");
                                Entry::new(key, Reason::HardBounce, "", "c")
                            })
                            .collect();
                        s.add(&entries).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(Store::open(&path).unwrap().list().unwrap().len(), 400);
    }
}
