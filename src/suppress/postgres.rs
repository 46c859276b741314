//! The suppression list in PostgreSQL: one list for every process of a fleet (the shards of
//! an Indexed Job, campaigns on several hosts, `mailmerge bounces` beside them), with exactly
//! the semantics of the SQLite list ([`super::sqlite`]).
//!
//! - A lookup is one statement per [`FIND_CHUNK`] keys (`key = ANY($1)`, the primary key's
//!   index); a call of several chunks reads them in one `REPEATABLE READ` read-only
//!   transaction, so it sees one snapshot as SQLite's read transaction does.
//! - `add` inserts [`ADD_CHUNK`] entries per statement (`unnest` of arrays), `ON CONFLICT DO
//!   NOTHING` so the first entry for a key is kept, all in one transaction. Keys are sorted
//!   first: two processes adding overlapping keys take their row locks in the same order and
//!   never deadlock.
//! - A bounce committed by one process is seen by every lookup that starts after the commit
//!   (`READ COMMITTED`, PostgreSQL's default, takes a new snapshot per statement).
//! - Keys and campaign ids sort by code point (`COLLATE "C"`), as in SQLite, whatever the
//!   database's collation.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;

use super::{Entry, Reason, StoreError, SuppressionStore, Watermark, now};
use crate::store::postgres::{self as pg, Access, PgUrl, SchemaError, text};

/// Keys looked up per statement (one array parameter; the server's plan stays an index probe
/// per key).
pub const FIND_CHUNK: usize = 10_000;

/// Entries inserted per statement.
pub const ADD_CHUNK: usize = 5_000;

/// The name of the list's tables in `mailmerge_schema`.
const COMPONENT: &str = "suppressions";

/// The migrations: step `i` takes the schema from version `i` to `i + 1`.
const STEPS: &[&str] = &["
CREATE TABLE IF NOT EXISTS mailmerge_suppressions (
    key      TEXT COLLATE \"C\" PRIMARY KEY,
    reason   TEXT NOT NULL,
    cause    TEXT NOT NULL DEFAULT '',
    campaign TEXT NOT NULL DEFAULT '',
    created  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS mailmerge_campaigns (
    id       TEXT COLLATE \"C\" PRIMARY KEY,
    results  TEXT NOT NULL,
    created  TEXT COLLATE \"C\" NOT NULL
);
CREATE TABLE IF NOT EXISTS mailmerge_imap_watermarks (
    mailbox     TEXT PRIMARY KEY,
    uidvalidity BIGINT NOT NULL,
    last_uid    BIGINT NOT NULL,
    updated     TEXT NOT NULL
);
"];

/// An open PostgreSQL suppression list.
pub struct PgSuppressions {
    pool: Pool,
    place: String,
}

impl PgSuppressions {
    /// Connects, and creates or migrates the list's tables.
    pub async fn open(url: &PgUrl) -> Result<Self, StoreError> {
        let place = url.place().to_string();
        let pool = pg::open_migrated(url, COMPONENT, STEPS)
            .await
            .map_err(|e| StoreError::Db {
                place: place.clone(),
                message: schema_message(e),
            })?;
        Ok(Self { pool, place })
    }

    /// Connects with every transaction read-only (`bounces --dry-run`); `None` when the list's
    /// tables were never created.
    pub async fn open_read_only(url: &PgUrl) -> Result<Option<Self>, StoreError> {
        let place = url.place().to_string();
        let db = |message: String| StoreError::Db {
            place: place.clone(),
            message,
        };
        let pool = pg::connect(url, Access::ReadOnly).await.map_err(db)?;
        let client = pool.get().await.map_err(|e| db(pg::describe_pool(&e)))?;
        let found = pg::version(&client, COMPONENT)
            .await
            .map_err(|e| db(schema_message(e)))?;
        match found {
            None => Ok(None),
            Some(v) if v > STEPS.len() as i32 => Err(db(schema_message(SchemaError::Newer {
                found: v,
                known: STEPS.len() as i32,
            }))),
            Some(_) => Ok(Some(Self { pool, place })),
        }
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| self.error(pg::describe_pool(&e)))
    }

    fn error(&self, message: String) -> StoreError {
        StoreError::Db {
            place: self.place.clone(),
            message,
        }
    }

    fn db(&self, e: tokio_postgres::Error) -> StoreError {
        self.error(pg::describe(&e))
    }
}

fn schema_message(e: SchemaError) -> String {
    match e {
        SchemaError::Db(m) => m,
        SchemaError::Newer { found, known } => format!(
            "the list's schema version {found} is newer than this mailmerge knows ({known})"
        ),
    }
}

const FIND: &str =
    "SELECT key, reason, cause, campaign, created FROM mailmerge_suppressions WHERE key = ANY($1)";

/// Inserts one chunk (keys unique and sorted); returns how many were new.
const INSERT: &str = "INSERT INTO mailmerge_suppressions (key, reason, cause, campaign, created) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
     ON CONFLICT (key) DO NOTHING";

fn row_entry(r: &tokio_postgres::Row) -> Entry {
    let reason: String = r.get(1);
    Entry {
        key: r.get(0),
        // An unknown reason (written by a newer version) still suppresses.
        reason: Reason::parse(&reason).unwrap_or(Reason::Manual),
        cause: r.get(2),
        campaign: r.get(3),
        created: r.get(4),
    }
}

/// One chunk of entries as the five arrays of [`INSERT`].
fn columns(chunk: &[&Entry]) -> [Vec<String>; 5] {
    let mut cols: [Vec<String>; 5] = Default::default();
    for e in chunk {
        cols[0].push(text(&e.key).into_owned());
        cols[1].push(e.reason.as_str().to_string());
        cols[2].push(text(&e.cause).into_owned());
        cols[3].push(text(&e.campaign).into_owned());
        cols[4].push(text(&e.created).into_owned());
    }
    cols
}

#[async_trait]
impl SuppressionStore for PgSuppressions {
    fn place(&self) -> String {
        self.place.clone()
    }

    async fn find(&self, keys: &[String]) -> Result<HashMap<String, Entry>, StoreError> {
        let mut out = HashMap::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let mut client = self.client().await?;
        if keys.len() <= FIND_CHUNK {
            // One statement: one snapshot, one round trip.
            let stmt = client.prepare_cached(FIND).await.map_err(|e| self.db(e))?;
            for r in client
                .query(&stmt, &[&keys])
                .await
                .map_err(|e| self.db(e))?
            {
                let e = row_entry(&r);
                out.insert(e.key.clone(), e);
            }
            return Ok(out);
        }
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.db(e))?;
        let stmt = tx.prepare_cached(FIND).await.map_err(|e| self.db(e))?;
        for chunk in keys.chunks(FIND_CHUNK) {
            for r in tx.query(&stmt, &[&chunk]).await.map_err(|e| self.db(e))? {
                let e = row_entry(&r);
                out.insert(e.key.clone(), e);
            }
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(out)
    }

    async fn add(&self, entries: &[Entry]) -> Result<usize, StoreError> {
        // The first entry of a key wins, as one insert per entry in order would have it.
        let mut seen = HashSet::new();
        let mut batch: Vec<&Entry> = entries
            .iter()
            .filter(|e| seen.insert(e.key.as_str()))
            .collect();
        batch.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let stmt = tx.prepare_cached(INSERT).await.map_err(|e| self.db(e))?;
        let mut added = 0;
        for chunk in batch.chunks(ADD_CHUNK) {
            let cols = columns(chunk);
            let params: Vec<&(dyn ToSql + Sync)> =
                cols.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            added += tx.execute(&stmt, &params).await.map_err(|e| self.db(e))? as usize;
        }
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(added)
    }

    async fn remove(&self, key: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM mailmerge_suppressions WHERE key = $1",
                &[&text(key).as_ref()],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(n > 0)
    }

    async fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT key, reason, cause, campaign, created FROM mailmerge_suppressions \
                 ORDER BY key",
                &[],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(rows.iter().map(row_entry).collect())
    }

    async fn register_campaign(&self, id: &str, results: &Path) -> Result<(), StoreError> {
        let client = self.client().await?;
        let results = results.to_string_lossy();
        client
            .execute(
                "INSERT INTO mailmerge_campaigns (id, results, created) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET results = excluded.results",
                &[&text(id).as_ref(), &text(&results).as_ref(), &now()],
            )
            .await
            .map(drop)
            .map_err(|e| self.db(e))
    }

    async fn campaigns(&self) -> Result<Vec<(String, PathBuf)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, results FROM mailmerge_campaigns ORDER BY created DESC",
                &[],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), PathBuf::from(r.get::<_, String>(1))))
            .collect())
    }

    async fn watermark(&self, mailbox: &str) -> Result<Option<Watermark>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT uidvalidity, last_uid FROM mailmerge_imap_watermarks WHERE mailbox = $1",
                &[&text(mailbox).as_ref()],
            )
            .await
            .map_err(|e| self.db(e))?;
        let Some(r) = row else { return Ok(None) };
        let uid = |i: usize| {
            u32::try_from(r.get::<_, i64>(i))
                .map_err(|_| self.error(format!("a watermark of {mailbox} is out of range")))
        };
        Ok(Some(Watermark {
            uidvalidity: uid(0)?,
            last_uid: uid(1)?,
        }))
    }

    async fn set_watermark(&self, mailbox: &str, mark: Watermark) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO mailmerge_imap_watermarks (mailbox, uidvalidity, last_uid, updated) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (mailbox) DO UPDATE SET \
                 uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, \
                 updated = excluded.updated",
                &[
                    &text(mailbox).as_ref(),
                    &i64::from(mark.uidvalidity),
                    &i64::from(mark.last_uid),
                    &now(),
                ],
            )
            .await
            .map(drop)
            .map_err(|e| self.db(e))
    }
}
