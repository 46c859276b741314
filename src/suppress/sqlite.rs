//! The suppression list in an embedded SQLite database: the default, one file in the per-user
//! data folder (`$XDG_DATA_HOME/mailmerge/suppressions.sqlite`).
//!
//! One file, shared safely by several runs at once: WAL journal mode (readers never block the
//! one writer), a busy timeout (a writer waits for another instead of failing), and every
//! change in one `BEGIN IMMEDIATE` transaction. Lookups are batched: [`FIND_CHUNK`] keys per
//! statement, every statement of one call in one read transaction.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params, params_from_iter};

use super::{Entry, Reason, StoreError, SuppressionStore, Watermark, now};

/// How long a writer waits for another before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Keys looked up per statement (SQLite's default limit on host parameters is 32766; a few
/// hundred keeps each statement's plan small and its parameters cheap to bind).
pub const FIND_CHUNK: usize = 500;

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

/// An open SQLite suppression list.
pub struct SqliteSuppressions {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl SqliteSuppressions {
    /// Opens (creating if needed) the database at `path` and its folder.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let db = |e: rusqlite::Error| db_error(path, e);
        let mut conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        crate::store::sqlite::wal_mode(&conn, BUSY_TIMEOUT).map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute_batch(SCHEMA).map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing database read-only (`bounces --dry-run`: nothing is created or
    /// written); `None` when there is no file.
    pub fn open_read_only(path: &Path) -> Result<Option<Self>, StoreError> {
        if !path.is_file() {
            return Ok(None);
        }
        let db = |e: rusqlite::Error| db_error(path, e);
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let conn = Connection::open_with_flags(path, flags).map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        Ok(Some(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        }))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn db(&self, e: rusqlite::Error) -> StoreError {
        db_error(&self.path, e)
    }
}

fn db_error(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Db {
        place: path.display().to_string(),
        message: e.to_string(),
    }
}

/// The entries under `keys`, added to `out`: one statement of up to [`FIND_CHUNK`] keys.
fn find_chunk(
    c: &Connection,
    keys: &[String],
    out: &mut HashMap<String, Entry>,
) -> rusqlite::Result<()> {
    let marks = vec!["?"; keys.len()].join(",");
    let sql = format!(
        "SELECT key, reason, cause, campaign, created FROM suppressions WHERE key IN ({marks})"
    );
    let mut stmt = c.prepare_cached(&sql)?;
    for e in stmt.query_map(params_from_iter(keys), row_entry)? {
        let e = e?;
        out.insert(e.key.clone(), e);
    }
    Ok(())
}

#[async_trait]
impl SuppressionStore for SqliteSuppressions {
    fn place(&self) -> String {
        self.path.display().to_string()
    }

    async fn find(&self, keys: &[String]) -> Result<HashMap<String, Entry>, StoreError> {
        let mut out = HashMap::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let mut conn = self.lock();
        // One read snapshot for every chunk of the call.
        let tx = conn.transaction().map_err(|e| self.db(e))?;
        for chunk in keys.chunks(FIND_CHUNK) {
            find_chunk(&tx, chunk, &mut out).map_err(|e| self.db(e))?;
        }
        tx.commit().map_err(|e| self.db(e))?;
        Ok(out)
    }

    async fn add(&self, entries: &[Entry]) -> Result<usize, StoreError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db(e))?;
        let mut added = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO suppressions (key, reason, cause, campaign, created) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(key) DO NOTHING",
                )
                .map_err(|e| self.db(e))?;
            for e in entries {
                let row = params![e.key, e.reason.as_str(), e.cause, e.campaign, e.created];
                added += stmt.execute(row).map_err(|e| self.db(e))?;
            }
        }
        tx.commit().map_err(|e| self.db(e))?;
        Ok(added)
    }

    async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        self.lock()
            .execute("DELETE FROM suppressions WHERE key = ?1", params![key])
            .map(|n| n > 0)
            .map_err(|e| self.db(e))
    }

    async fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT key, reason, cause, campaign, created FROM suppressions ORDER BY key")
            .map_err(|e| self.db(e))?;
        let rows = stmt.query_map([], row_entry).map_err(|e| self.db(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.db(e))
    }

    async fn register_campaign(&self, id: &str, results: &Path) -> Result<(), StoreError> {
        self.lock()
            .execute(
                "INSERT INTO campaigns (id, results, created) VALUES (?1, ?2, ?3) \
                 ON CONFLICT(id) DO UPDATE SET results = excluded.results",
                params![id, results.to_string_lossy(), now()],
            )
            .map(drop)
            .map_err(|e| self.db(e))
    }

    async fn campaigns(&self) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let conn = self.lock();
        let mut stmt = conn
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

    async fn watermark(&self, mailbox: &str) -> Result<Option<Watermark>, StoreError> {
        self.lock()
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

    async fn set_watermark(&self, mailbox: &str, mark: Watermark) -> Result<(), StoreError> {
        self.lock()
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
    use crate::address::Address;
    use crate::suppress::{lookup, lookup_key};

    fn addr(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn adds_looks_up_by_address_and_domain_and_keeps_the_first_cause() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteSuppressions::open(&dir.path().join("a/b/s.sqlite")).unwrap();
        let e = Entry::new(
            "ann@example.com".into(),
            Reason::HardBounce,
            "550 5.1.1",
            "c1",
        );
        block_on(async {
            assert_eq!(s.add(std::slice::from_ref(&e)).await.unwrap(), 1);
            let again = Entry::new("ann@example.com".into(), Reason::Manual, "later", "");
            assert_eq!(s.add(&[again]).await.unwrap(), 0);
            assert_eq!(lookup(&s, &addr("ANN@example.com")).await.unwrap(), Some(e));
            assert_eq!(lookup(&s, &addr("bob@example.com")).await.unwrap(), None);
            let domain = Entry::new("@example.com".into(), Reason::Manual, "", "");
            s.add(&[domain]).await.unwrap();
            let d = lookup(&s, &addr("bob@example.com")).await.unwrap().unwrap();
            assert_eq!(d.key, "@example.com");
            assert!(s.remove("@example.com").await.unwrap());
            assert!(!s.remove("@example.com").await.unwrap());
            assert_eq!(s.list().await.unwrap().len(), 1);
        });
    }

    #[test]
    fn finds_many_keys_at_once_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteSuppressions::open(&dir.path().join("s.sqlite")).unwrap();
        let entries: Vec<Entry> = (0..3 * FIND_CHUNK)
            .filter(|i| i % 3 == 0)
            .map(|i| Entry::new(format!("u{i}@x.test"), Reason::Manual, "", ""))
            .collect();
        let keys: Vec<String> = (0..3 * FIND_CHUNK)
            .map(|i| format!("u{i}@x.test"))
            .collect();
        block_on(async {
            s.add(&entries).await.unwrap();
            let found = s.find(&keys).await.unwrap();
            assert_eq!(found.len(), FIND_CHUNK);
            assert!(found.contains_key("u3@x.test") && !found.contains_key("u4@x.test"));
            assert!(s.find(&[]).await.unwrap().is_empty());
        });
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
        let mailbox = "imaps://bounces@imap.example.com:993/INBOX";
        let mark = Watermark {
            uidvalidity: 7,
            last_uid: 42,
        };
        block_on(async {
            let s = SqliteSuppressions::open(&path).unwrap();
            assert_eq!(s.list().await.unwrap().len(), 1);
            assert_eq!(s.watermark(mailbox).await.unwrap(), None);
            s.set_watermark(mailbox, mark).await.unwrap();
            let later = Watermark {
                last_uid: 43,
                ..mark
            };
            s.set_watermark(mailbox, later).await.unwrap();
            drop(s);
            let ro = SqliteSuppressions::open_read_only(&path).unwrap().unwrap();
            assert_eq!(ro.watermark(mailbox).await.unwrap().unwrap().last_uid, 43);
            assert!(lookup_key(&ro, "ann@example.com").await.unwrap().is_some());
        });
        let none = SqliteSuppressions::open_read_only(&dir.path().join("none.sqlite"));
        assert!(none.unwrap().is_none());
    }

    #[test]
    fn concurrent_writers_lose_no_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        SqliteSuppressions::open(&path).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for batch in 0..25 {
                        let s = SqliteSuppressions::open(&path).unwrap();
                        let entries: Vec<Entry> = (0..4)
                            .map(|i| {
                                let key = format!("t{t}b{batch}i{i}@example.com");
                                Entry::new(key, Reason::HardBounce, "", "c")
                            })
                            .collect();
                        block_on(s.add(&entries)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = SqliteSuppressions::open(&path).unwrap();
        assert_eq!(block_on(s.list()).unwrap().len(), 400);
    }
}
