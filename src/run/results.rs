//! Results: the last stage. Every row's outcome, in input order, goes to the results CSV and
//! the summary; then the run's recipient hard bounces go to the suppression list, and the
//! campaign is registered there so that `mailmerge bounces` can find its results.
//!
//! Recorded outcomes are read back from the journal as the report is written, so a list of
//! millions of rows never holds its outcomes in memory.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use super::ledger::Ledger;
use super::prepare::Campaign;
use super::{RunConfig, RunError, RunMode};
use crate::journal;
use crate::outcome::Outcome;
use crate::report::{self, Summary};
use crate::suppress::{self, Entry, Reason, SuppressionStore};

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

/// Writes the results (only when sending) and returns the summary, and the suppression
/// entries the run's recipient hard bounces call for (only when sending and `record`: the
/// journal did not fail), found in the same pass.
pub(super) fn write(
    cfg: &RunConfig,
    campaign: &Campaign,
    ledger: &Ledger,
    inputs: Inputs<'_>,
) -> Result<(Summary, Vec<Entry>), RunError> {
    let reader = journal::JournalReader::open(&campaign.journal_path).ok();
    let sending = cfg.mode == RunMode::Send;
    let bounced = RefCell::new(Vec::new());
    // `None`: another shard's row, left out of the results.
    let outcome = |i: usize| {
        let o = (!ledger.is_elsewhere(i)).then(|| {
            ledger
                .outcome(i, reader.as_ref())
                .unwrap_or_else(super::not_attempted)
        })?;
        if suppress::is_recipient_failure(&o) {
            bounced.borrow_mut().push((i, cause_of(&o)));
        }
        Some(o)
    };
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
    let entries = match sending && inputs.record {
        true => entries(cfg, campaign, bounced.into_inner()),
        false => Vec::new(),
    };
    Ok((summary, entries))
}

/// What a suppression entry records of a hard bounce: the reply with its codes.
fn cause_of(o: &Outcome) -> String {
    match (o.code, o.enhanced) {
        (Some(c), Some(e)) => format!("{c} {e} {}", o.response),
        _ => o.response.clone(),
    }
}

/// The suppression entries of the rows that hard-bounced (row index, cause).
fn entries(cfg: &RunConfig, campaign: &Campaign, bounced: Vec<(usize, String)>) -> Vec<Entry> {
    let id = campaign.id(cfg);
    bounced
        .into_iter()
        .filter_map(|(i, cause)| {
            let addr = campaign.list.row(i).status.ok()?;
            Some(Entry::new(
                suppress::key_of(&addr),
                Reason::HardBounce,
                cause,
                &id,
            ))
        })
        .collect()
}

/// Adds `entries` to the suppression list and registers the campaign (so `mailmerge bounces`
/// finds its results); returns how many addresses were new. Nothing without a list or when
/// only planning.
pub(super) async fn record(
    cfg: &RunConfig,
    campaign: &Campaign,
    store: Option<&dyn SuppressionStore>,
    entries: &[Entry],
) -> Result<usize, RunError> {
    let Some(store) = store.filter(|_| cfg.mode == RunMode::Send) else {
        return Ok(0);
    };
    let results = std::path::absolute(&cfg.results).unwrap_or_else(|_| cfg.results.clone());
    store.register_campaign(&campaign.id(cfg), &results).await?;
    Ok(store.add(entries).await?)
}
