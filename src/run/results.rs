//! Results: the last stage. Every row's outcome, in input order, goes to the results CSV and
//! the summary; then the run's recipient hard bounces go to the suppression list.
//!
//! Recorded outcomes are read back from the journal as the report is written, so a list of
//! millions of rows never holds its outcomes in memory.

use std::collections::HashMap;
use std::sync::Arc;

use super::prepare::Campaign;
use super::triage::Rows;
use super::{RunConfig, RunError, RunMode, suppress};
use crate::journal;
use crate::outcome::{Outcome, Status, Step};
use crate::provider::caps::{self, CapBook};
use crate::report::{self, Summary};

/// Writes the results (only when sending) and, when `record` (the journal did not fail),
/// records new suppressions; returns the summary and how many addresses were added to the
/// suppression list.
pub(super) fn write(
    cfg: &RunConfig,
    job: &Campaign,
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
    if cfg.mode == RunMode::Send {
        refund_caps(job, rows, &outcome);
    }
    let newly_suppressed = if record {
        suppress::record(cfg, job, &outcome)?
    } else {
        0
    };
    Ok((summary, newly_suppressed))
}

/// Gives back to today's daily caps the rows that were counted but got no final answer from a
/// receiver (`deferred`: a later run sends them and counts them then). A cap file that cannot
/// be written keeps the rows counted: the cap errs on the side of sending less.
fn refund_caps(job: &Campaign, rows: &Rows, outcome: &dyn Fn(usize) -> Option<Outcome>) {
    if rows.cap_counted.is_empty() {
        return;
    }
    let path = caps::path_beside(&job.journal_path);
    let mut book = CapBook::load(&path, caps::today());
    for (key, counted) in &rows.cap_counted {
        let unsent = counted
            .iter()
            .filter(|&&r| outcome(r).is_some_and(|o| o.status == Status::Deferred))
            .count();
        book.refund(key, unsent);
    }
    let _ = book.save(&path);
}
