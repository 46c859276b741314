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
    let rows = campaign.list.len();
    std::thread::scope(|scope| {
        // Outcomes are read back (a `pread` and a parse each) on a thread of their own, in
        // list order and a block ahead, while this one writes the rows.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Option<Outcome>>>(2);
        let reader = reader.as_ref();
        scope.spawn(move || {
            for start in (0..rows).step_by(READ_AHEAD) {
                let block = (start..rows.min(start + READ_AHEAD))
                    .map(|i| read_back(ledger, reader, i))
                    .collect();
                if tx.send(block).is_err() {
                    return;
                }
            }
        });
        let ahead = RefCell::new(ReadAhead {
            rx,
            next: 0,
            block: Vec::new().into_iter(),
        });
        // `None`: another shard's row, left out of the results.
        let outcome = |i: usize| {
            let read = ahead
                .borrow_mut()
                .take(i)
                .unwrap_or_else(|| read_back(ledger, reader, i));
            let o = read?;
            if suppress::is_recipient_failure(&o) {
                bounced.borrow_mut().push((i, cause_of(&o)));
            }
            Some(o)
        };
        // Returning drops the receiver, so a reader left behind (the writer failed) stops.
        report::write_results(
            sending.then_some(cfg.results.as_path()),
            cfg.raw_csv,
            &campaign.list,
            &outcome,
            inputs.started.elapsed(),
            inputs.connections,
            inputs.provider_of,
        )
    })
    .map_err(|source| RunError::Results {
        path: cfg.results.clone(),
        source,
    })
    .map(|summary| {
        let entries = match sending && inputs.record {
            true => entries(cfg, campaign, bounced.into_inner()),
            false => Vec::new(),
        };
        (summary, entries)
    })
}

/// Rows whose outcomes are read back at a time, ahead of the writer.
const READ_AHEAD: usize = 1024;

/// The outcomes the reading thread sent, in list order.
struct ReadAhead {
    rx: std::sync::mpsc::Receiver<Vec<Option<Outcome>>>,
    /// The row of the next outcome in `block`.
    next: usize,
    block: std::vec::IntoIter<Option<Outcome>>,
}

impl ReadAhead {
    /// Row `i`'s outcome as read ahead; `None` when it was not (asked for out of list order,
    /// or the reading thread stopped): the caller reads it itself.
    fn take(&mut self, i: usize) -> Option<Option<Outcome>> {
        while self.next <= i {
            let o = match self.block.next() {
                Some(o) => o,
                None => {
                    self.block = self.rx.recv().ok()?.into_iter();
                    self.block.next()?
                }
            };
            self.next += 1;
            if self.next == i + 1 {
                return Some(o);
            }
        }
        None
    }
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

#[cfg(test)]
mod read_ahead_tests {
    use super::*;
    use crate::outcome::{Status, Step};

    fn numbered(n: usize) -> Option<Outcome> {
        Some(Outcome::local(
            Status::Deferred,
            Step::Deadline,
            n.to_string(),
        ))
    }

    #[test]
    fn outcomes_come_back_for_their_own_rows_whatever_is_asked() {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        tx.send((0..3).map(numbered).collect()).unwrap();
        tx.send(vec![numbered(3), None, numbered(5)]).unwrap();
        drop(tx);
        let mut ahead = ReadAhead {
            rx,
            next: 0,
            block: Vec::new().into_iter(),
        };
        let text = |o: Option<Option<Outcome>>| o.map(|o| o.map(|o| o.response));
        assert_eq!(text(ahead.take(0)), Some(Some("0".into())));
        // Row 1 is skipped; row 3 comes from the next block.
        assert_eq!(text(ahead.take(3)), Some(Some("3".into())));
        // Asked out of order: not read ahead, the caller reads it.
        assert_eq!(text(ahead.take(2)), None);
        assert_eq!(text(ahead.take(4)), Some(None));
        assert_eq!(text(ahead.take(5)), Some(Some("5".into())));
        // Past the end: nothing more comes.
        assert_eq!(text(ahead.take(6)), None);
    }
}
