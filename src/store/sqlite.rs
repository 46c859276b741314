//! What the two embedded SQLite stores (the suppression list and the sender's memory) share
//! when they open their file: several runs at once (the shards of one cluster, cron jobs that
//! overlap) may open a new file at the same moment.

use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

/// Puts the database in WAL mode (one writer and any number of readers at once; survives a
/// crash mid-write), waiting up to `patience` for another connection.
///
/// Switching a new file to WAL does not wait through the busy timeout as other statements
/// do: when two processes open a new file together, one of them is told `database is
/// locked` at once (seen in about one open in five in a loop of two processes). So the
/// switch is retried here until it succeeds or `patience` runs out.
pub fn wal_mode(conn: &Connection, patience: Duration) -> rusqlite::Result<()> {
    let until = Instant::now() + patience;
    loop {
        match conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(e) if is_busy(&e) && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_that_race_on_a_new_file_all_get_wal_mode() {
        // Two connections opening one new file from two threads, many times over: every
        // one gets WAL mode and creates its table (without the retry, some are refused).
        for _ in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("race.sqlite");
            let open = |path: std::path::PathBuf| {
                std::thread::spawn(move || -> rusqlite::Result<String> {
                    let conn = Connection::open(&path)?;
                    conn.busy_timeout(Duration::from_secs(30))?;
                    wal_mode(&conn, Duration::from_secs(30))?;
                    conn.execute_batch("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)")?;
                    conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                })
            };
            let (a, b) = (open(path.clone()), open(path.clone()));
            for t in [a, b] {
                assert_eq!(t.join().unwrap().unwrap(), "wal");
            }
        }
    }
}
