//! Suppression, the run's side of it: **screen** looks each row up in the
//! suppression list before anything is sent (triage marks hits `suppressed`), and **record**
//! adds this run's hard bounces for a recipient reason
//! ([`crate::suppress::is_recipient_failure`]) at the end, and registers the campaign so that
//! `mailmerge bounces` can find its results.

use super::prepare::Campaign;
use super::{RunConfig, RunError, RunMode};
use crate::address::Address;
use crate::outcome::Outcome;
use crate::suppress::{self, Entry, Reason, Store};
use crate::verp;

/// This job's campaign id ([`verp::campaign_id`]).
pub(super) fn campaign(cfg: &RunConfig, job: &Campaign) -> String {
    verp::campaign_id(&cfg.results, &job.fingerprint)
}

/// Looks addresses up in the list; `None` when the run has no list or ignores it.
pub(super) struct Screen {
    store: Option<Store>,
    /// A lookup failed mid-run: reported once the triage is over.
    pub error: Option<suppress::StoreError>,
}

impl Screen {
    /// Opens the list the run uses.
    pub(super) fn open(cfg: &RunConfig) -> Result<Self, RunError> {
        let store = match (&cfg.suppress.store, cfg.suppress.ignore) {
            (Some(path), false) => Some(Store::open(path)?),
            _ => None,
        };
        Ok(Self { store, error: None })
    }

    /// The `response` text of a suppressed address, `None` when it may be sent to.
    pub(super) fn check(&mut self, a: &Address) -> Option<String> {
        match self.store.as_ref()?.lookup(a) {
            Ok(hit) => hit.map(|e| e.describe()),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }
}

/// Adds the run's recipient hard bounces to the list; returns how many were new.
pub(super) fn record(
    cfg: &RunConfig,
    job: &Campaign,
    outcome: &dyn Fn(usize) -> Option<Outcome>,
) -> Result<usize, RunError> {
    let Some(path) = &cfg.suppress.store else {
        return Ok(0);
    };
    if cfg.mode != RunMode::Send {
        return Ok(0);
    }
    let campaign = campaign(cfg, job);
    let mut entries = Vec::new();
    for (i, row) in job.list.iter().enumerate() {
        let Ok(addr) = &row.status else { continue };
        // `None`: another shard's row.
        let Some(o) = outcome(i) else { continue };
        if suppress::is_recipient_failure(&o) {
            let cause = match (o.code, o.enhanced) {
                (Some(c), Some(e)) => format!("{c} {e} {}", o.response),
                _ => o.response.clone(),
            };
            let key = suppress::key_of(addr);
            entries.push(Entry::new(key, Reason::HardBounce, cause, &campaign));
        }
    }
    let mut store = Store::open(path)?;
    let results = std::path::absolute(&cfg.results).unwrap_or_else(|_| cfg.results.clone());
    store.register_campaign(&campaign, &results)?;
    Ok(store.add(&entries)?)
}
