//! Suppression-list screening against PostgreSQL: a list of `MAILMERGE_BENCH_N` rows (default
//! 1,000,000) screened against a suppression list of as many entries, the way a run's triage
//! does it (2,048 rows per bulk `find`, each row's address key plus its domain's `@domain` key
//! once per batch), on a throwaway cluster of its own (initdb in a temp dir, loopback; the
//! test harness's `tests/support/postgres.rs`). The same screening against the embedded
//! SQLite list follows, for comparison. It prints the time to fill each list and to screen.
//!
//! `cargo bench --bench postgres`; `MAILMERGE_BENCH_N=100000` for a quicker run. Without the
//! server binaries (Debian's `postgresql`) it says so and measures SQLite only.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use mailmerge::store::PgUrl;
use mailmerge::suppress::postgres::PgSuppressions;
use mailmerge::suppress::sqlite::SqliteSuppressions;
use mailmerge::suppress::{Entry, Reason, SuppressionStore};

/// The few helpers of the MTA test harness that the cluster's harness uses.
mod mta {
    use std::net::{IpAddr, SocketAddr, TcpListener};
    use std::path::PathBuf;

    pub fn is_root() -> bool {
        std::process::Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    }

    pub fn find(what: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
        let found = candidates.iter().find(|p| p.exists()).cloned();
        if found.is_none() {
            eprintln!("SKIPPED PostgreSQL: {what} not found (looked for {candidates:?})");
        }
        found
    }

    pub fn free_port(ip: IpAddr) -> u16 {
        TcpListener::bind(SocketAddr::new(ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0)
    }
}

/// The test harness's throwaway cluster.
#[path = "../tests/support/postgres.rs"]
#[allow(dead_code)]
mod postgres;

/// Rows of the list, and entries of the suppression list.
fn n() -> usize {
    std::env::var("MAILMERGE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Row `i` of the list: 1,000 domains.
fn address(i: usize) -> (String, String) {
    let domain = format!("d{}.example.com", i % 1000);
    (format!("user{i}@{domain}"), domain)
}

/// The suppression list: every other address of the list and as many that are not in it
/// (half of the rows are suppressed), plus two whole domains.
fn entries(n: usize) -> Vec<Entry> {
    (0..n)
        .map(|j| {
            let i = if j % 2 == 0 { j } else { n + j };
            Entry::new(address(i).0, Reason::HardBounce, "550 5.1.1", "bench")
        })
        .chain(
            ["@d7.example.com", "@d8.example.com"]
                .map(|d| Entry::new(d.to_string(), Reason::Manual, "", "")),
        )
        .collect()
}

/// Screens `n` rows as triage does; returns the rows suppressed.
async fn screen(store: &dyn SuppressionStore, n: usize) -> usize {
    let mut suppressed = 0;
    let rows: Vec<usize> = (0..n).collect();
    for batch in rows.chunks(2048) {
        let mut keys = Vec::with_capacity(batch.len() + 1000);
        let mut domains = HashSet::new();
        let addrs: Vec<(String, String)> = batch.iter().map(|&i| address(i)).collect();
        for (a, d) in &addrs {
            keys.push(a.clone());
            if domains.insert(d.clone()) {
                keys.push(format!("@{d}"));
            }
        }
        let found = store.find(&keys).await.expect("find");
        suppressed += addrs
            .iter()
            .filter(|(a, d)| found.contains_key(a) || found.contains_key(&format!("@{d}")))
            .count();
    }
    suppressed
}

/// Fills `store` and screens the list against it, printing both times.
async fn measure(name: &str, store: Arc<dyn SuppressionStore>, n: usize) {
    let list = entries(n);
    let t = Instant::now();
    for chunk in list.chunks(100_000) {
        store.add(chunk).await.expect("add");
    }
    let filled = t.elapsed();
    let t = Instant::now();
    let suppressed = screen(store.as_ref(), n).await;
    let took = t.elapsed();
    println!(
        "{name}: filled {} entries in {:.1} s; screened {n} rows in {:.2} s ({:.0} rows/s), {suppressed} suppressed",
        list.len(),
        filled.as_secs_f64(),
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

fn main() {
    let n = n();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        if let Some(pg) = postgres::Postgres::start() {
            let url = PgUrl::parse(&pg.url()).expect("url");
            let store = PgSuppressions::open(&url).await.expect("open");
            measure("postgresql", Arc::new(store), n).await;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteSuppressions::open(&dir.path().join("s.sqlite")).expect("open");
        measure("sqlite", Arc::new(store), n).await;
    });
}
