//! Caps: after shard selection, hold back the rows beyond today's cap of their provider (or
//! unknown site) (`--daily-cap`, `--warmup`) and count the rest against it; when the run
//! ends, give back what was counted but got no final answer. Only this process's sites are
//! seen here, so a shard counts (and holds back) its own providers only.

use std::collections::{HashMap, HashSet};

use super::ledger::Ledger;
use super::prepare::Campaign;
use super::route::Routed;
use super::{RunConfig, RunError, RunMode};
use crate::journal::JournalReader;
use crate::outcome::{Outcome, Status, Step};
use crate::provider::caps::{self, CapBook};
use crate::smtp::EnhancedCode;

/// What the caps counted: per cap key (provider or site), the rows handed to the engine.
#[derive(Debug, Default)]
pub(super) struct Counted(Vec<(String, Vec<usize>)>);

/// Moves the rows beyond today's cap from their sites to `routed.decided` (`deferred`, step
/// `cap`), in list order across the sites of one provider, and counts the rest in the state
/// file beside the journal (not in a plan, which sends nothing). Returns what it counted.
pub(super) fn admit(
    cfg: &RunConfig,
    campaign: &Campaign,
    routed: &mut Routed,
) -> Result<Counted, RunError> {
    let o = &cfg.delivery;
    let warmup = o.warmup.clone().unwrap_or_default();
    if o.daily_cap.is_none() && warmup.0.is_empty() {
        return Ok(Counted::default());
    }
    let path = caps::path_beside(&campaign.journal_path);
    let mut book = CapBook::load(&path, caps::today());
    let cap = book.cap(o.daily_cap, &warmup);
    let mut counted = Counted::default();
    for (key, site_ids) in cap_keys(routed) {
        let mut all: Vec<usize> = site_ids
            .iter()
            .flat_map(|&s| routed.work[s].rows.iter().copied())
            .collect();
        all.sort_unstable();
        let admitted = book.admit(&key, all.len(), cap);
        let held: HashSet<usize> = all[admitted..].iter().copied().collect();
        for &s in &site_ids {
            routed.work[s].rows.retain(|r| !held.contains(r));
        }
        for &row in &all[admitted..] {
            routed.site_of_row[row] = u32::MAX;
            let text = format!(
                "beyond today's cap of {} messages for {key}",
                cap.unwrap_or(0)
            );
            let mut o = Outcome::local(Status::Deferred, Step::Cap, text);
            o.enhanced = Some(EnhancedCode::new(4, 7, 0));
            routed.decided.push((row, o));
        }
        all.truncate(admitted);
        counted.0.push((key, all));
    }
    if cfg.mode == RunMode::Send {
        book.save(&path).map_err(|source| RunError::Results {
            path: path.clone(),
            source,
        })?;
    }
    Ok(counted)
}

/// The sites sharing each cap: a provider's sites together, an unknown site alone; sorted by
/// key so that admission is the same in every run.
fn cap_keys(routed: &Routed) -> Vec<(String, Vec<usize>)> {
    let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (s, w) in routed.work.iter().enumerate() {
        let key = w
            .provider
            .as_ref()
            .map_or(w.name.to_string(), |p| p.name.clone());
        by_key.entry(key).or_default().push(s);
    }
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort();
    keys
}

/// Gives back to today's caps the rows that were counted but got no final answer from a
/// receiver (`deferred`: a later run sends them and counts them then). A cap file that cannot
/// be written keeps the rows counted: the cap errs on the side of sending less.
pub(super) fn refund(campaign: &Campaign, counted: &Counted, ledger: &Ledger) {
    if counted.0.is_empty() {
        return;
    }
    let reader = JournalReader::open(&campaign.journal_path).ok();
    let path = caps::path_beside(&campaign.journal_path);
    let mut book = CapBook::load(&path, caps::today());
    for (key, rows) in &counted.0 {
        let unsent = rows
            .iter()
            .filter(|&&r| {
                ledger
                    .outcome(r, reader.as_ref())
                    .is_none_or(|o| o.status == Status::Deferred)
            })
            .count();
        book.refund(key, unsent);
    }
    let _ = book.save(&path);
}
