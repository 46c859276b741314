//! Results: the last stage. Every row's outcome, in input order, goes to the results CSV and
//! the summary; then the run's recipient hard bounces go to the suppression list.
//!
//! Recorded outcomes are read back from the journal as the report is written, so a list of
//! millions of rows never holds its outcomes in memory.

use std::collections::HashMap;
use std::sync::Arc;

use super::prepare::Job;
use super::triage::Rows;
use super::{RunConfig, RunError, RunMode, suppress};
use crate::delivery::{Outcome, Status, Step};
use crate::journal;
use crate::report::{self, Summary};

/// Writes the results (only when sending) and, when `record` (the journal did not fail),
/// records new suppressions; returns the summary and how many addresses were added to the
/// suppression list.
pub(super) fn write(
    cfg: &RunConfig,
    job: &Job,
    rows: &Rows,
    connections: usize,
    provider_of: &HashMap<String, Arc<str>>,
    started: std::time::Instant,
    record: bool,
) -> Result<(Summary, usize), RunError> {
    let reader = journal::JournalReader::open(&job.journal_path).ok();
    // `None`: another shard's row, left out of the results.
    let outcome = |i: usize| {
        (!rows.outcomes.is_elsewhere(i)).then(|| {
            rows.outcomes.get(i, reader.as_ref()).unwrap_or_else(|| {
                Outcome::local(Status::Deferred, Step::Deadline, "not attempted")
            })
        })
    };
    let results = (cfg.mode == RunMode::Send).then_some(cfg.results.as_path());
    let summary = report::write_results(
        results,
        cfg.raw_csv,
        &job.list,
        &outcome,
        started.elapsed(),
        connections,
        provider_of,
    )
    .map_err(|source| RunError::Results {
        path: cfg.results.clone(),
        source,
    })?;
    let newly_suppressed = if record {
        suppress::record(cfg, job, &outcome)?
    } else {
        0
    };
    Ok((summary, newly_suppressed))
}
