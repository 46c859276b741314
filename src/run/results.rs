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
    let rows = campaign.list.len();
    let blocks = rows.div_ceil(BLOCK);
    let mut bounced = Vec::new();
    let written = std::thread::scope(|scope| {
        // Blocks of rows are read back (a `pread` and a parse each, for big lists) and
        // formatted on threads of their own, taking turns, while this one writes them out in
        // list order.
        let threads = FORMATTERS.min(blocks.max(1));
        let mut queues = Vec::with_capacity(threads);
        for first in 0..threads {
            let (tx, rx) = std::sync::mpsc::sync_channel(2);
            queues.push(rx);
            let reader = reader.as_ref();
            let provider_of = inputs.provider_of;
            scope.spawn(move || {
                for b in (first..blocks).step_by(threads) {
                    let range = b * BLOCK..rows.min((b + 1) * BLOCK);
                    let block = format_block(cfg, campaign, ledger, reader, range, provider_of);
                    // The writer stopped (it failed): so does this thread.
                    if tx.send(block).is_err() {
                        return;
                    }
                }
            });
        }
        // Returning drops the receivers, so a thread left behind (the writer failed) stops.
        let bounced = &mut bounced;
        let mut failed = None;
        let ordered = (0..blocks).map_while(|b| match queues[b % threads].recv() {
            Ok(Ok((rows, bounces))) => {
                bounced.extend(bounces);
                Some(rows)
            }
            Ok(Err(e)) => {
                failed = Some(e);
                None
            }
            Err(_) => {
                failed = Some(std::io::Error::other("a results thread stopped"));
                None
            }
        });
        let summary = report::write_results(
            sending.then_some(cfg.results.as_path()),
            cfg.raw_csv,
            &campaign.list,
            ordered,
            inputs.started.elapsed(),
            inputs.connections,
        );
        match failed {
            Some(e) => Err(e),
            None => summary,
        }
    });
    let summary = written.map_err(|source| RunError::Results {
        path: cfg.results.clone(),
        source,
    })?;
    let entries = match sending && inputs.record {
        true => entries(cfg, campaign, bounced),
        false => Vec::new(),
    };
    Ok((summary, entries))
}

/// Rows formatted at a time.
const BLOCK: usize = 1024;

/// Threads that read back and format blocks of results rows.
const FORMATTERS: usize = 2;

/// One block of results rows, formatted, with the hard bounces among them (row, cause).
type Block = std::io::Result<(report::ResultRows, Vec<(usize, String)>)>;

/// Reads back and formats the results rows of `range`.
fn format_block(
    cfg: &RunConfig,
    campaign: &Campaign,
    ledger: &Ledger,
    reader: Option<&journal::JournalReader>,
    range: std::ops::Range<usize>,
    provider_of: &HashMap<String, Arc<str>>,
) -> Block {
    let mut bounced = Vec::new();
    // `None`: another shard's row, left out of the results.
    let mut outcome = |i: usize| {
        let o = read_back(ledger, reader, i)?;
        if suppress::is_recipient_failure(&o) {
            bounced.push((i, cause_of(&o)));
        }
        Some(o)
    };
    let csv = (cfg.mode == RunMode::Send, cfg.raw_csv);
    let rows = report::result_rows(&campaign.list, range, &mut outcome, csv, provider_of)?;
    Ok((rows, bounced))
}

/// Row `i`'s outcome (`None`: another shard's row).
fn read_back(
    ledger: &Ledger,
    reader: Option<&journal::JournalReader>,
    i: usize,
) -> Option<Outcome> {
    (!ledger.is_elsewhere(i)).then(|| {
        ledger
            .outcome(i, reader)
            .unwrap_or_else(super::not_attempted)
    })
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
