//! The sender's memory in PostgreSQL: one memory for every process sending as the same
//! identities (the shards of a Job, several CronJobs on the same IPs), with exactly the
//! semantics of the SQLite store ([`super::sqlite`]).
//!
//! How concurrent writers stay correct:
//! - Every write transaction first takes a transaction-level advisory lock per receiver it
//!   touches, in ascending key order ([`lock_receivers`]). Reservations of one receiver's
//!   daily cap are therefore serialized across processes: each reads the counts committed
//!   before it (`READ COMMITTED` takes a new snapshot per statement) and adds to them, so no
//!   two processes are given the same last slot. The locks end with the transaction.
//! - Within a transaction rows are written in sorted order, and expired holds are swept with
//!   `SKIP LOCKED`: no two writers wait on each other in a cycle.
//! - Merges are conditional upserts (a newer learnt value, a later hold end wins), so two runs'
//!   lessons merge field by field whatever order they commit in.
//! - Reads (`recall`, `list`) run in one `REPEATABLE READ` read-only transaction and fetch all
//!   identities at once (arrays joined with `unnest`), not one query per identity.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use tokio_postgres::{GenericClient, IsolationLevel, Transaction};

use super::{
    CapRule, DIALECT_KEPT, DialectNote, Hold, HoldKind, Identity, Lesson, Memory, SenderStore,
    StateError, spread,
};
use crate::store::postgres::{self as pg, PgUrl, SchemaError, lock_key, text};

/// The name of the memory's tables in `mailmerge_schema`.
const COMPONENT: &str = "senders";

/// The advisory lock class of the per-receiver locks (`pg_advisory_xact_lock(class, key)`).
const RECEIVER_LOCK: i32 = 0x6d6d_0001;

/// The migrations: step `i` takes the schema from version `i` to `i + 1`.
const STEPS: &[&str] = &["
CREATE TABLE IF NOT EXISTS mailmerge_sender_limits (
    receiver TEXT COLLATE \"C\" NOT NULL,
    source   TEXT COLLATE \"C\" NOT NULL,
    kind     TEXT COLLATE \"C\" NOT NULL,
    value    DOUBLE PRECISION NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (receiver, source, kind)
);
CREATE TABLE IF NOT EXISTS mailmerge_sender_holds (
    receiver TEXT COLLATE \"C\" NOT NULL,
    source   TEXT COLLATE \"C\" NOT NULL,
    kind     TEXT COLLATE \"C\" NOT NULL,
    value    DOUBLE PRECISION NOT NULL,
    until    BIGINT NOT NULL,
    cause    TEXT NOT NULL,
    PRIMARY KEY (receiver, source, kind)
);
CREATE TABLE IF NOT EXISTS mailmerge_sender_days (
    receiver TEXT COLLATE \"C\" NOT NULL,
    source   TEXT COLLATE \"C\" NOT NULL,
    day      BIGINT NOT NULL,
    sent     BIGINT NOT NULL,
    PRIMARY KEY (receiver, source, day)
);
CREATE TABLE IF NOT EXISTS mailmerge_sender_first_days (
    receiver TEXT COLLATE \"C\" NOT NULL,
    source   TEXT COLLATE \"C\" NOT NULL,
    day      BIGINT NOT NULL,
    PRIMARY KEY (receiver, source)
);
CREATE TABLE IF NOT EXISTS mailmerge_sender_dialects (
    host     TEXT COLLATE \"C\" NOT NULL,
    ip       TEXT COLLATE \"C\" NOT NULL,
    dialect  TEXT NOT NULL,
    reason   TEXT NOT NULL,
    at       BIGINT NOT NULL,
    PRIMARY KEY (host, ip)
);
"];

/// An open PostgreSQL sender store.
pub struct PgSenders {
    pool: Pool,
    place: String,
}

impl PgSenders {
    /// Connects, and creates or migrates the store's tables; refuses tables a newer mailmerge
    /// wrote.
    pub async fn open(url: &PgUrl) -> Result<Self, StateError> {
        let place = url.place().to_string();
        let pool = match pg::open_migrated(url, COMPONENT, STEPS).await {
            Ok(pool) => pool,
            Err(SchemaError::Db(message)) => return Err(StateError::Db { place, message }),
            Err(SchemaError::Newer { found, known }) => {
                return Err(StateError::Newer {
                    place,
                    found: found.into(),
                    known: known.into(),
                });
            }
        };
        Ok(Self { pool, place })
    }

    async fn client(&self) -> Result<Object, StateError> {
        self.pool.get().await.map_err(|e| StateError::Db {
            place: self.place.clone(),
            message: pg::describe_pool(&e),
        })
    }

    fn db(&self, e: tokio_postgres::Error) -> StateError {
        StateError::Db {
            place: self.place.clone(),
            message: pg::describe(&e),
        }
    }
}

/// Takes the advisory lock of each receiver in `receivers` (distinct keys, ascending: two
/// transactions locking several receivers never wait on each other in a cycle).
async fn lock_receivers<'a>(
    tx: &Transaction<'_>,
    receivers: impl IntoIterator<Item = &'a str>,
) -> Result<(), tokio_postgres::Error> {
    let keys: BTreeSet<i32> = receivers.into_iter().map(lock_key).collect();
    for key in keys {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&RECEIVER_LOCK, &key],
        )
        .await?;
    }
    Ok(())
}

/// The identities as the two arrays the queries join with `unnest`.
fn id_arrays(ids: &[Identity]) -> (Vec<String>, Vec<String>) {
    ids.iter()
        .map(|id| {
            (
                text(&id.receiver).into_owned(),
                text(&id.source).into_owned(),
            )
        })
        .unzip()
}

/// `(receiver, source) IN` the identities of arrays `$1`, `$2`.
const IN_IDS: &str = "(receiver, source) IN (SELECT * FROM unnest($1::text[], $2::text[]))";

/// Everything remembered of `ids` on `day` at `now`, by identity (absent: nothing).
async fn memories(
    c: &impl GenericClient,
    ids: &[Identity],
    day: u64,
    now: u64,
) -> Result<HashMap<Identity, Memory>, tokio_postgres::Error> {
    let (receivers, sources) = id_arrays(ids);
    let (day, now) = (day as i64, now as i64);
    let mut out: HashMap<Identity, Memory> = HashMap::new();
    let id = |r: &tokio_postgres::Row| Identity {
        receiver: r.get(0),
        source: r.get(1),
    };
    let sql = format!(
        "SELECT receiver, source, kind, value, at FROM mailmerge_sender_limits WHERE {IN_IDS}"
    );
    for r in c.query(&sql, &[&receivers, &sources]).await? {
        let at: i64 = r.get(4);
        let m = out.entry(id(&r)).or_default();
        m.limits.set(r.get(2), r.get(3), at.max(0) as u64);
    }
    let sql = format!(
        "SELECT receiver, source, kind, value, until, cause FROM mailmerge_sender_holds \
         WHERE {IN_IDS} AND until > $3 ORDER BY receiver, source, kind"
    );
    for r in c.query(&sql, &[&receivers, &sources, &now]).await? {
        let Some(kind) = HoldKind::parse(r.get(2)) else {
            continue;
        };
        let until: i64 = r.get(4);
        out.entry(id(&r)).or_default().holds.push(Hold {
            kind,
            value: r.get(3),
            until: until.max(0) as u64,
            cause: r.get(5),
        });
    }
    let sql =
        format!("SELECT receiver, source, day FROM mailmerge_sender_first_days WHERE {IN_IDS}");
    for r in c.query(&sql, &[&receivers, &sources]).await? {
        let first: i64 = r.get(2);
        out.entry(id(&r)).or_default().first_day = Some(first.max(0) as u64);
    }
    let sql = format!(
        "SELECT receiver, source, sent FROM mailmerge_sender_days WHERE {IN_IDS} AND day = $3"
    );
    for r in c.query(&sql, &[&receivers, &sources, &day]).await? {
        let sent: i64 = r.get(2);
        out.entry(id(&r)).or_default().today = sent.max(0) as usize;
    }
    Ok(out)
}

/// Adds `n` to `day`'s count of `id` (never below zero), and sets its first day.
async fn add_count(
    tx: &Transaction<'_>,
    day: u64,
    id: &Identity,
    n: i64,
) -> Result<(), tokio_postgres::Error> {
    let (receiver, source, day) = (text(&id.receiver), text(&id.source), day as i64);
    tx.execute(
        "INSERT INTO mailmerge_sender_days (receiver, source, day, sent) \
         VALUES ($1, $2, $3, GREATEST($4::bigint, 0)) \
         ON CONFLICT (receiver, source, day) \
         DO UPDATE SET sent = GREATEST(mailmerge_sender_days.sent + $4::bigint, 0)",
        &[&receiver.as_ref(), &source.as_ref(), &day, &n],
    )
    .await?;
    if n > 0 {
        tx.execute(
            "INSERT INTO mailmerge_sender_first_days (receiver, source, day) \
             VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&receiver.as_ref(), &source.as_ref(), &day],
        )
        .await?;
    }
    Ok(())
}

/// Merges what one identity learnt: the newer limit, the later hold end wins.
async fn merge(
    tx: &Transaction<'_>,
    id: &Identity,
    lesson: &Lesson,
    now: u64,
) -> Result<(), tokio_postgres::Error> {
    let (receiver, source) = (text(&id.receiver), text(&id.source));
    let (receiver, source) = (receiver.as_ref(), source.as_ref());
    for (kind, value, at) in lesson.limits.rows() {
        tx.execute(
            "INSERT INTO mailmerge_sender_limits (receiver, source, kind, value, at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (receiver, source, kind) \
             DO UPDATE SET value = excluded.value, at = excluded.at \
             WHERE excluded.at >= mailmerge_sender_limits.at",
            &[&receiver, &source, &kind, &value, &(at as i64)],
        )
        .await?;
    }
    let mut holds: Vec<&Hold> = lesson.holds.iter().filter(|h| h.until > now).collect();
    holds.sort_by_key(|h| h.kind.as_str());
    for h in holds {
        tx.execute(
            "INSERT INTO mailmerge_sender_holds (receiver, source, kind, value, until, cause) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (receiver, source, kind) \
             DO UPDATE SET value = excluded.value, until = excluded.until, \
             cause = excluded.cause WHERE excluded.until > mailmerge_sender_holds.until",
            &[
                &receiver,
                &source,
                &h.kind.as_str(),
                &h.value,
                &(h.until as i64),
                &text(&h.cause).as_ref(),
            ],
        )
        .await?;
    }
    Ok(())
}

impl PgSenders {
    /// A read-only `REPEATABLE READ` transaction's worth of [`memories`].
    async fn read(
        &self,
        ids: &[Identity],
        day: u64,
        now: u64,
    ) -> Result<HashMap<Identity, Memory>, StateError> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.db(e))?;
        let out = memories(&*tx, ids, day, now)
            .await
            .map_err(|e| self.db(e))?;
        tx.commit().await.map_err(|e| self.db(e))?;
        Ok(out)
    }

    /// Every identity anything is remembered of on `day` at `now`, sorted.
    async fn identities(&self, day: u64, now: u64) -> Result<Vec<Identity>, StateError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT receiver, source FROM mailmerge_sender_limits \
                 UNION SELECT receiver, source FROM mailmerge_sender_holds WHERE until > $1 \
                 UNION SELECT receiver, source FROM mailmerge_sender_days WHERE day = $2 \
                 UNION SELECT receiver, source FROM mailmerge_sender_first_days ORDER BY 1, 2",
                &[&(now as i64), &(day as i64)],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(rows
            .iter()
            .map(|r| Identity {
                receiver: r.get(0),
                source: r.get(1),
            })
            .collect())
    }
}

#[async_trait]
impl SenderStore for PgSenders {
    fn place(&self) -> String {
        self.place.clone()
    }

    async fn recall(
        &self,
        ids: &[Identity],
        day: u64,
        now: u64,
    ) -> Result<Vec<Memory>, StateError> {
        let found = self.read(ids, day, now).await?;
        Ok(ids
            .iter()
            .map(|id| found.get(id).cloned().unwrap_or_default())
            .collect())
    }

    async fn reserve(
        &self,
        day: u64,
        rule: &CapRule,
        group: &[Identity],
        wanted: usize,
    ) -> Result<Vec<usize>, StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let db = |e| self.db(e);
        lock_receivers(&tx, group.iter().map(|id| id.receiver.as_str()))
            .await
            .map_err(db)?;
        let found = memories(&*tx, group, day, 0).await.map_err(db)?;
        let room: Vec<usize> = group
            .iter()
            .map(|id| {
                let m = found.get(id).cloned().unwrap_or_default();
                rule.room(day, m.first_day, m.today, wanted)
            })
            .collect();
        let got = spread(&room, wanted);
        for (id, n) in group.iter().zip(&got).filter(|(_, n)| **n > 0) {
            add_count(&tx, day, id, *n as i64).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(got)
    }

    async fn count(&self, day: u64, counts: &[(Identity, i64)]) -> Result<(), StateError> {
        let mut counts: Vec<&(Identity, i64)> = counts.iter().filter(|(_, n)| *n != 0).collect();
        if counts.is_empty() {
            return Ok(());
        }
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        lock_receivers(&tx, counts.iter().map(|(id, _)| id.receiver.as_str()))
            .await
            .map_err(|e| self.db(e))?;
        for (id, n) in counts {
            add_count(&tx, day, id, *n).await.map_err(|e| self.db(e))?;
        }
        tx.commit().await.map_err(|e| self.db(e))
    }

    async fn remember(&self, lessons: &[(Identity, Lesson)], now: u64) -> Result<(), StateError> {
        let mut lessons: Vec<&(Identity, Lesson)> = lessons.iter().collect();
        lessons.sort_by(|a, b| a.0.cmp(&b.0));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let db = |e| self.db(e);
        lock_receivers(&tx, lessons.iter().map(|(id, _)| id.receiver.as_str()))
            .await
            .map_err(db)?;
        for (id, lesson) in lessons {
            merge(&tx, id, lesson, now).await.map_err(db)?;
        }
        // Holds that ended: swept, skipping rows another writer holds (never waited on).
        tx.execute(
            "DELETE FROM mailmerge_sender_holds WHERE ctid IN (SELECT ctid FROM \
             mailmerge_sender_holds WHERE until <= $1 FOR UPDATE SKIP LOCKED)",
            &[&(now as i64)],
        )
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn list(&self, day: u64, now: u64) -> Result<Vec<(Identity, Memory)>, StateError> {
        let ids = self.identities(day, now).await?;
        let mut found = self.read(&ids, day, now).await?;
        Ok(ids
            .into_iter()
            .map(|id| {
                let m = found.remove(&id).unwrap_or_default();
                (id, m)
            })
            .collect())
    }

    async fn forget(&self, receiver: &str, source: Option<&str>) -> Result<usize, StateError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        let db = |e| self.db(e);
        lock_receivers(&tx, [receiver]).await.map_err(db)?;
        let (receiver, source) = (text(receiver), source.map(text));
        let mut cleared = BTreeSet::new();
        for table in ["mailmerge_sender_limits", "mailmerge_sender_holds"] {
            let sql = format!(
                "DELETE FROM {table} WHERE receiver = $1 AND ($2::text IS NULL OR source = $2) \
                 RETURNING source"
            );
            let source = source.as_deref();
            for r in tx
                .query(&sql, &[&receiver.as_ref(), &source])
                .await
                .map_err(db)?
            {
                cleared.insert(r.get::<_, String>(0));
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(cleared.len())
    }

    async fn dialects(&self, now: u64) -> Result<Vec<DialectNote>, StateError> {
        let client = self.client().await?;
        let since = now.saturating_sub(DIALECT_KEPT) as i64;
        let rows = client
            .query(
                "SELECT host, ip, dialect, reason, at FROM mailmerge_sender_dialects \
                 WHERE at > $1 ORDER BY host, ip",
                &[&since],
            )
            .await
            .map_err(|e| self.db(e))?;
        Ok(rows
            .iter()
            .map(|r| DialectNote {
                host: r.get(0),
                ip: r.get(1),
                dialect: r.get(2),
                reason: r.get(3),
                at: r.get::<_, i64>(4).max(0) as u64,
            })
            .collect())
    }

    async fn remember_dialects(&self, notes: &[DialectNote]) -> Result<(), StateError> {
        if notes.is_empty() {
            return Ok(());
        }
        // Sorted (stably: of two notes for one address the later still comes last).
        let mut notes: Vec<&DialectNote> = notes.iter().collect();
        notes.sort_by(|a, b| (&a.host, &a.ip).cmp(&(&b.host, &b.ip)));
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| self.db(e))?;
        for n in notes {
            tx.execute(
                "INSERT INTO mailmerge_sender_dialects (host, ip, dialect, reason, at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (host, ip) DO UPDATE SET \
                 dialect = excluded.dialect, reason = excluded.reason, at = excluded.at \
                 WHERE excluded.at >= mailmerge_sender_dialects.at",
                &[
                    &text(&n.host).as_ref(),
                    &text(&n.ip).as_ref(),
                    &text(&n.dialect).as_ref(),
                    &text(&n.reason).as_ref(),
                    &(n.at as i64),
                ],
            )
            .await
            .map_err(|e| self.db(e))?;
        }
        tx.commit().await.map_err(|e| self.db(e))
    }
}
