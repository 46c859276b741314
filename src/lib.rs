//! mailmerge: batch mail merge with direct-to-MX delivery.
//!
//! The pipeline, one module per stage, data flowing one way:
//! [`recipients`] (CSV rows) → [`template`] (rendered parts) → [`message`] (envelope + bytes)
//! → [`mx`] (one lookup per domain, grouped into sites) → [`delivery`] (per-site pools over
//! our [`smtp`] client) → [`report`] (results CSV and summary), with [`progress`] alongside.
//! [`run`](mod@run) wires it once, one file per stage; `main.rs` only turns flags into a
//! [`RunConfig`]. Every final outcome is recorded in the [`journal`] as it arrives, so a re-run
//! skips what is done.

pub mod address;
pub mod bounces;
pub mod campaign_report;
pub mod classify;
pub mod clock;
pub mod delivery;
pub mod dkim;
pub mod events;
pub mod files;

pub mod folder;
pub mod identity;
pub mod journal;
pub mod merge;
pub mod message;
pub mod mx;
pub mod outcome;
pub mod preflight;
pub mod preview;
pub mod progress;
pub mod provider;
pub mod recipients;
pub mod report;
pub mod run;
pub mod sandbox;
pub mod sender;
pub mod smtp;
pub mod store;
pub mod suppress;
pub mod template;
pub mod tls_policy;
pub mod units;
pub mod verp;

pub use run::{RunConfig, RunError, RunMode, RunReport, default_results_path, run, run_until};
pub use tokio_util::sync::CancellationToken;

/// The async runtime mailmerge runs on (the binary and the benchmarks use the same one).
///
/// The blocking pool, where messages are rendered, is bounded to twice the cores: rendering is
/// CPU work, so more threads only add memory (each thread's allocator caches), not speed.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads((cpus * 2).max(4))
        .build()
}
