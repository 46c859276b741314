//! The sender's memory in an embedded SQLite database: the default, beside the suppression list
//! in the per-user data folder (`$XDG_DATA_HOME/mailmerge/senders.sqlite`).
//!
//! Shared safely by runs at once as the suppression list is: WAL mode, a busy timeout, and
//! every change a read-modify-write inside one `BEGIN IMMEDIATE` transaction (so a cap's last
//! slot goes to one process, and two runs' lessons merge field by field). The schema carries a
//! version (`PRAGMA user_version`): an older file is migrated in place, a newer one or one that
//! is not a database is refused with an error, never silently reset.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior, params};

use super::{
    CapRule, DIALECT_KEPT, DialectNote, Hold, HoldKind, Identity, Lesson, Limits, Memory,
    SenderStore, StateError, spread,
};

/// The schema this version writes.
const VERSION: i64 = 1;

/// How long a writer waits for another before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS limits (
    receiver TEXT NOT NULL,
    source   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    value    REAL NOT NULL,
    at       INTEGER NOT NULL,
    PRIMARY KEY (receiver, source, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS holds (
    receiver TEXT NOT NULL,
    source   TEXT NOT NULL,
    kind     TEXT NOT NULL,
    value    REAL NOT NULL,
    until    INTEGER NOT NULL,
    cause    TEXT NOT NULL,
    PRIMARY KEY (receiver, source, kind)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS days (
    receiver TEXT NOT NULL,
    source   TEXT NOT NULL,
    day      INTEGER NOT NULL,
    sent     INTEGER NOT NULL,
    PRIMARY KEY (receiver, source, day)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS first_days (
    receiver TEXT NOT NULL,
    source   TEXT NOT NULL,
    day      INTEGER NOT NULL,
    PRIMARY KEY (receiver, source)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dialects (
    host     TEXT NOT NULL,
    ip       TEXT NOT NULL,
    dialect  TEXT NOT NULL,
    reason   TEXT NOT NULL,
    at       INTEGER NOT NULL,
    PRIMARY KEY (host, ip)
) WITHOUT ROWID;
";

/// An open SQLite sender store.
pub struct SqliteSenders {
    conn: Mutex<Connection>,
    path: PathBuf,
}

/// `$XDG_DATA_HOME/mailmerge/senders.sqlite` (beside the suppression list's default).
pub fn default_path() -> Option<PathBuf> {
    crate::store::data_dir().map(|d| d.join("senders.sqlite"))
}

impl SqliteSenders {
    /// Opens (creating if needed) the database at `path` and its folder, migrating an older
    /// schema; refuses a file that is not such a database.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let place = path.display().to_string();
        let db = |e: rusqlite::Error| StateError::Db {
            place: place.clone(),
            message: e.to_string(),
        };
        let mut conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        crate::store::sqlite::wal_mode(&conn, BUSY_TIMEOUT).map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let found: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db)?;
        if found > VERSION {
            return Err(StateError::Newer {
                place,
                found,
                known: VERSION,
            });
        }
        tx.execute_batch(SCHEMA).map_err(db)?;
        tx.pragma_update(None, "user_version", VERSION)
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn db(&self, e: rusqlite::Error) -> StateError {
        StateError::Db {
            place: self.place(),
            message: e.to_string(),
        }
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StateError> {
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| self.db(e))?;
        let out = f(&tx).map_err(|e| self.db(e))?;
        tx.commit().map_err(|e| self.db(e))?;
        Ok(out)
    }
}

/// Everything about `id` on `day`.
fn memory(c: &Connection, id: &Identity, day: u64, now: u64) -> rusqlite::Result<Memory> {
    let key = params![id.receiver, id.source];
    let mut limits = Limits::default();
    let mut stmt =
        c.prepare_cached("SELECT kind, value, at FROM limits WHERE receiver = ?1 AND source = ?2")?;
    let rows = stmt.query_map(key, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, f64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    for row in rows {
        let (kind, value, at) = row?;
        limits.set(&kind, value, at.max(0) as u64);
    }
    let mut stmt = c.prepare_cached(
        "SELECT kind, value, until, cause FROM holds \
         WHERE receiver = ?1 AND source = ?2 AND until > ?3",
    )?;
    let holds = stmt
        .query_map(params![id.receiver, id.source, now as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, f64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?
        .filter_map(|row| match row {
            Ok((kind, value, until, cause)) => HoldKind::parse(&kind).map(|kind| {
                Ok(Hold {
                    kind,
                    value,
                    until: until.max(0) as u64,
                    cause,
                })
            }),
            Err(e) => Some(Err(e)),
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let first_day: Option<i64> = c
        .query_row(
            "SELECT day FROM first_days WHERE receiver = ?1 AND source = ?2",
            key,
            |r| r.get(0),
        )
        .optional()?;
    let today: Option<i64> = c
        .query_row(
            "SELECT sent FROM days WHERE receiver = ?1 AND source = ?2 AND day = ?3",
            params![id.receiver, id.source, day as i64],
            |r| r.get(0),
        )
        .optional()?;
    Ok(Memory {
        limits,
        holds,
        first_day: first_day.map(|d| d.max(0) as u64),
        today: today.unwrap_or(0).max(0) as usize,
    })
}

/// Adds `n` to `day`'s count of `id` (never below zero), and sets its first day.
fn add_count(c: &Connection, day: u64, id: &Identity, n: i64) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO days (receiver, source, day, sent) VALUES (?1, ?2, ?3, max(?4, 0)) \
         ON CONFLICT (receiver, source, day) DO UPDATE SET sent = max(sent + ?4, 0)",
    )?
    .execute(params![id.receiver, id.source, day as i64, n])?;
    if n > 0 {
        c.prepare_cached(
            "INSERT INTO first_days (receiver, source, day) VALUES (?1, ?2, ?3) \
             ON CONFLICT DO NOTHING",
        )?
        .execute(params![id.receiver, id.source, day as i64])?;
    }
    Ok(())
}

/// Merges one learnt limit: the newer value wins.
fn merge_limit(
    c: &Connection,
    id: &Identity,
    kind: &str,
    value: f64,
    at: u64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO limits (receiver, source, kind, value, at) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (receiver, source, kind) DO UPDATE SET value = excluded.value, \
         at = excluded.at WHERE excluded.at >= limits.at",
    )?
    .execute(params![id.receiver, id.source, kind, value, at as i64])
    .map(drop)
}

/// Merges one hold: the later end wins.
fn merge_hold(c: &Connection, id: &Identity, h: &Hold) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO holds (receiver, source, kind, value, until, cause) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
         ON CONFLICT (receiver, source, kind) DO UPDATE SET value = excluded.value, \
         until = excluded.until, cause = excluded.cause WHERE excluded.until > holds.until",
    )?
    .execute(params![
        id.receiver,
        id.source,
        h.kind.as_str(),
        h.value,
        h.until as i64,
        h.cause
    ])
    .map(drop)
}

#[async_trait]
impl SenderStore for SqliteSenders {
    fn place(&self) -> String {
        self.path.display().to_string()
    }

    async fn recall(
        &self,
        ids: &[Identity],
        day: u64,
        now: u64,
    ) -> Result<Vec<Memory>, StateError> {
        let conn = self.lock();
        ids.iter()
            .map(|id| memory(&conn, id, day, now).map_err(|e| self.db(e)))
            .collect()
    }

    async fn reserve(
        &self,
        day: u64,
        rule: &CapRule,
        group: &[Identity],
        wanted: usize,
    ) -> Result<Vec<usize>, StateError> {
        self.write(|tx| {
            let mut room = Vec::with_capacity(group.len());
            for id in group {
                let m = memory(tx, id, day, 0)?;
                room.push(rule.room(day, m.first_day, m.today, wanted));
            }
            let got = spread(&room, wanted);
            for (id, n) in group.iter().zip(&got) {
                if *n > 0 {
                    add_count(tx, day, id, *n as i64)?;
                }
            }
            Ok(got)
        })
    }

    async fn count(&self, day: u64, counts: &[(Identity, i64)]) -> Result<(), StateError> {
        self.write(|tx| {
            for (id, n) in counts.iter().filter(|(_, n)| *n != 0) {
                add_count(tx, day, id, *n)?;
            }
            Ok(())
        })
    }

    async fn remember(&self, lessons: &[(Identity, Lesson)], now: u64) -> Result<(), StateError> {
        self.write(|tx| {
            for (id, lesson) in lessons {
                for (kind, value, at) in lesson.limits.rows() {
                    merge_limit(tx, id, kind, value, at)?;
                }
                for h in lesson.holds.iter().filter(|h| h.until > now) {
                    merge_hold(tx, id, h)?;
                }
            }
            tx.execute("DELETE FROM holds WHERE until <= ?1", params![now as i64])?;
            Ok(())
        })
    }

    async fn list(&self, day: u64, now: u64) -> Result<Vec<(Identity, Memory)>, StateError> {
        let conn = self.lock();
        let ids: Vec<Identity> = conn
            .prepare(
                "SELECT receiver, source FROM limits UNION SELECT receiver, source FROM holds \
                 WHERE until > ?1 UNION SELECT receiver, source FROM days WHERE day = ?2 \
                 UNION SELECT receiver, source FROM first_days ORDER BY 1, 2",
            )
            .and_then(|mut s| {
                s.query_map(params![now as i64, day as i64], |r| {
                    Ok(Identity {
                        receiver: r.get(0)?,
                        source: r.get(1)?,
                    })
                })?
                .collect()
            })
            .map_err(|e| self.db(e))?;
        ids.into_iter()
            .map(|id| {
                let m = memory(&conn, &id, day, now).map_err(|e| self.db(e))?;
                Ok((id, m))
            })
            .collect()
    }

    async fn forget(&self, receiver: &str, source: Option<&str>) -> Result<usize, StateError> {
        self.write(|tx| {
            let mut ids = std::collections::BTreeSet::new();
            for table in ["limits", "holds"] {
                let sql = format!(
                    "DELETE FROM {table} WHERE receiver = ?1 AND (?2 IS NULL OR source = ?2) \
                     RETURNING source"
                );
                let mut stmt = tx.prepare(&sql)?;
                let rows = stmt.query_map(params![receiver, source], |r| r.get::<_, String>(0))?;
                for s in rows {
                    ids.insert(s?);
                }
            }
            Ok(ids.len())
        })
    }

    async fn dialects(&self, now: u64) -> Result<Vec<DialectNote>, StateError> {
        let conn = self.lock();
        let since = now.saturating_sub(DIALECT_KEPT) as i64;
        conn.prepare(
            "SELECT host, ip, dialect, reason, at FROM dialects WHERE at > ?1 ORDER BY host, ip",
        )
        .and_then(|mut s| {
            s.query_map(params![since], |r| {
                Ok(DialectNote {
                    host: r.get(0)?,
                    ip: r.get(1)?,
                    dialect: r.get(2)?,
                    reason: r.get(3)?,
                    at: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })?
            .collect()
        })
        .map_err(|e| self.db(e))
    }

    async fn remember_dialects(&self, notes: &[DialectNote]) -> Result<(), StateError> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO dialects (host, ip, dialect, reason, at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (host, ip) DO UPDATE SET dialect = excluded.dialect, \
                 reason = excluded.reason, at = excluded.at WHERE excluded.at >= dialects.at",
            )?;
            for n in notes {
                stmt.execute(params![n.host, n.ip, n.dialect, n.reason, n.at as i64])?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sender::Learnt;

    const T: u64 = 1_796_375_100;
    const DAY: u64 = T / 86_400;

    fn id(receiver: &str, source: &str) -> Identity {
        Identity {
            receiver: receiver.into(),
            source: source.into(),
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn remembers_limits_holds_and_counts_and_forgets_on_request() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteSenders::open(&dir.path().join("x/senders.sqlite")).unwrap();
        let yahoo = id("yahoo", "");
        let lesson = Lesson {
            limits: Limits {
                connections: Some(Learnt { value: 3, at: T }),
                rate_refused: Some(Learnt { value: 80.0, at: T }),
                ..Limits::default()
            },
            holds: vec![Hold {
                kind: HoldKind::Suspend,
                value: 0.0,
                until: T + 7200,
                cause: "421 4.7.0 [TSS04]".into(),
            }],
        };
        rt().block_on(async {
            s.remember(&[(yahoo.clone(), lesson)], T).await.unwrap();
            let rule = CapRule {
                daily: Some(5),
                ..CapRule::default()
            };
            assert_eq!(
                s.reserve(DAY, &rule, std::slice::from_ref(&yahoo), 3)
                    .await
                    .unwrap(),
                [3]
            );
            assert_eq!(
                s.reserve(DAY, &rule, std::slice::from_ref(&yahoo), 3)
                    .await
                    .unwrap(),
                [2]
            );
            s.count(DAY, &[(yahoo.clone(), -1)]).await.unwrap();
            let m = &s
                .recall(std::slice::from_ref(&yahoo), DAY, T + 60)
                .await
                .unwrap()[0];
            assert_eq!(m.today, 4);
            assert_eq!(m.first_day, Some(DAY));
            assert_eq!(m.limits.connections.map(|l| l.value), Some(3));
            assert_eq!(m.suspension(T + 60).map(|h| h.until), Some(T + 7200));
            // Past its end the hold is gone; the day count stays after a forget.
            assert!(
                s.recall(std::slice::from_ref(&yahoo), DAY, T + 7200)
                    .await
                    .unwrap()[0]
                    .holds
                    .is_empty()
            );
            assert_eq!(s.forget("yahoo", None).await.unwrap(), 1);
            let m = &s
                .recall(std::slice::from_ref(&yahoo), DAY, T + 60)
                .await
                .unwrap()[0];
            assert_eq!((m.limits.connections, m.holds.len(), m.today), (None, 0, 4));
        });
    }

    #[test]
    fn an_older_lesson_does_not_replace_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteSenders::open(&dir.path().join("s.sqlite")).unwrap();
        let g = id("google", "192.0.2.1");
        let lesson = |value, at| Lesson {
            limits: Limits {
                per_connection: Some(Learnt { value, at }),
                ..Limits::default()
            },
            holds: Vec::new(),
        };
        rt().block_on(async {
            s.remember(&[(g.clone(), lesson(7, T + 10))], T)
                .await
                .unwrap();
            s.remember(&[(g.clone(), lesson(40, T))], T).await.unwrap();
            let m = &s.recall(&[g], DAY, T).await.unwrap()[0];
            assert_eq!(m.limits.per_connection.map(|l| l.value), Some(7));
        });
    }

    #[test]
    fn a_file_that_is_not_a_database_or_is_newer_is_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.sqlite");
        std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
        let err = SqliteSenders::open(&junk).err().unwrap().to_string();
        assert!(err.contains("junk.sqlite"), "{err}");
        assert_eq!(
            std::fs::read(&junk).unwrap(),
            vec![0x5a; 8192],
            "left as it was"
        );

        let newer = dir.path().join("newer.sqlite");
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let err = SqliteSenders::open(&newer).err().unwrap();
        assert!(matches!(err, StateError::Newer { found: 2, .. }), "{err}");
    }

    #[test]
    fn concurrent_reservations_never_give_away_more_than_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sqlite");
        SqliteSenders::open(&path).unwrap();
        let rule = CapRule {
            daily: Some(300),
            ..CapRule::default()
        };
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (path, rule) = (path.clone(), rule.clone());
                std::thread::spawn(move || {
                    let s = SqliteSenders::open(&path).unwrap();
                    let g = [id("gmx", "")];
                    let rt = rt();
                    (0..20)
                        .map(|_| rt.block_on(s.reserve(DAY, &rule, &g, 7)).unwrap()[0])
                        .sum::<usize>()
                })
            })
            .collect();
        let got: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(got, 300);
        let s = SqliteSenders::open(&path).unwrap();
        let m = rt().block_on(s.recall(&[id("gmx", "")], DAY, T)).unwrap();
        assert_eq!(m[0].today, 300);
    }
}
