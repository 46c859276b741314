//! Results: the last stage. Every row's outcome, in input order, goes to the results CSV and
//! the summary; then the run's recipient hard bounces go to the suppression list, and the
//! campaign is registered there so that `mailmerge bounces` can find its results.
//!
//! Recorded outcomes are read back from the journal as the report is written, so a list of
//! millions of rows never holds its outcomes in memory.

use std::collections::HashMap;
use std::sync::Arc;

use super::ledger::Ledger;
use super::prepare::Campaign;
use super::{RunConfig, RunError, RunMode};
use crate::journal;
use crate::outcome::Outcome;
use crate::report::{self, Summary};
use crate::suppress::{self, Entry, Reason, Store};

/// What the results stage reads besides the ledger.
pub(super) struct Inputs<'a> {
    /// SMTP sessions opened.
    pub connections: usize,
    /// Each routed domain's provider (the `provider` column).
    pub provider_of: &'a HashMap<String, Arc<str>>,
    /// When the run started.
    pub started: std::time::Instant,
    /// Record new suppressions (false when the journal failed: the outcomes are not sure).
    pub record: bool,
}

/// Writes the results (only when sending) and records new suppressions;
/// returns the summary and how many addresses were added to the suppression list.
pub(super) fn write(
    cfg: &RunConfig,
    campaign: &Campaign,
    ledger: &Ledger,
    inputs: Inputs<'_>,
) -> Result<(Summary, usize), RunError> {
    let reader = journal::JournalReader::open(&campaign.journal_path).ok();
    // `None`: another shard's row, left out of the results.
    let outcome = |i: usize| {
        (!ledger.is_elsewhere(i)).then(|| {
            ledger
                .outcome(i, reader.as_ref())
                .unwrap_or_else(super::not_attempted)
        })
    };
    let sending = cfg.mode == RunMode::Send;
    let summary = report::write_results(
        sending.then_some(cfg.results.as_path()),
        cfg.raw_csv,
        &campaign.list,
        &outcome,
        inputs.started.elapsed(),
        inputs.connections,
        inputs.provider_of,
    )
    .map_err(|source| RunError::Results {
        path: cfg.results.clone(),
        source,
    })?;
    let newly_suppressed = if sending && inputs.record {
        record_suppressions(cfg, campaign, &outcome)?
    } else {
        0
    };
    Ok((summary, newly_suppressed))
}

/// Adds the run's recipient hard bounces to the suppression list and registers the campaign;
/// returns how many addresses were new.
fn record_suppressions(
    cfg: &RunConfig,
    campaign: &Campaign,
    outcome: &dyn Fn(usize) -> Option<Outcome>,
) -> Result<usize, RunError> {
    let Some(path) = &cfg.suppress.store else {
        return Ok(0);
    };
    let id = campaign.id(cfg);
    let mut entries = Vec::new();
    for (i, row) in campaign.list.iter().enumerate() {
        let Ok(addr) = &row.status else { continue };
        // `None`: another shard's row.
        let Some(o) = outcome(i) else { continue };
        if suppress::is_recipient_failure(&o) {
            let cause = match (o.code, o.enhanced) {
                (Some(c), Some(e)) => format!("{c} {e} {}", o.response),
                _ => o.response.clone(),
            };
            entries.push(Entry::new(
                suppress::key_of(addr),
                Reason::HardBounce,
                cause,
                &id,
            ));
        }
    }
    let mut store = Store::open(path)?;
    let results = std::path::absolute(&cfg.results).unwrap_or_else(|_| cfg.results.clone());
    store.register_campaign(&id, &results)?;
    Ok(store.add(&entries)?)
}
