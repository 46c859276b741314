//! Triage: one pass over the rows that settles every row that will not be sent (input errors,
//! duplicates, rows an earlier run finished, addresses on the suppression list, rows beyond
//! `--limit`) and collects the destination domains of the rest. It knows nothing of shards:
//! the shard stage places every row afterwards.

use std::collections::BTreeSet;

use super::ledger::Ledger;
use super::prepare::Campaign;
use super::{RunConfig, RunError};
use crate::address::Address;
use crate::outcome::{Outcome, Status, Step};
use crate::suppress::Store;

/// The rows after triage: the ledger with every row settled that will not be sent, and the
/// destination domains of the rest (still pending).
pub(super) struct Triaged {
    /// Every row; the ones to send still pending.
    pub ledger: Ledger,
    /// Destination domains of the pending rows.
    pub domains: BTreeSet<String>,
}

/// Settles what can be settled without the network, looking each address to send up in the
/// suppression list.
pub(super) fn triage(
    cfg: &RunConfig,
    campaign: &Campaign,
    screen: &Screen,
) -> Result<Triaged, RunError> {
    let list = &campaign.list;
    let mut ledger = Ledger::new(list.len());
    let mut domains = BTreeSet::new();
    let per_address = !cfg.list.allow_duplicates;
    let mut budget = cfg.limit.unwrap_or(usize::MAX);
    for (i, row) in list.iter().enumerate() {
        let addr = match &row.status {
            Ok(addr) => addr,
            Err(e) => {
                let status = if e.status() == "duplicate" {
                    Status::Duplicate
                } else {
                    Status::Invalid
                };
                ledger.settle(i, Outcome::local(status, Step::Input, e.to_string()));
                continue;
            }
        };
        let done = (!campaign.replay.is_empty())
            .then(|| {
                let key = campaign.keys.key(list, i, &row);
                campaign.replay.done_at(&key, per_address)
            })
            .flatten();
        if let Some(at) = done {
            ledger.settle_earlier(i, at);
        } else if let Some(why) = screen.check(addr)? {
            ledger.settle(i, Outcome::local(Status::Suppressed, Step::Suppressed, why));
        } else if budget == 0 {
            let limit = cfg.limit.unwrap_or_default();
            let text = format!("not sent: beyond --limit {limit}; a later run sends it");
            ledger.settle(i, Outcome::local(Status::Deferred, Step::Limit, text));
        } else {
            budget -= 1;
            if !domains.contains(addr.domain()) {
                domains.insert(addr.domain().to_string());
            }
        }
    }
    Ok(Triaged { ledger, domains })
}

/// The suppression list as triage reads it; empty when the run has none or ignores it.
pub(super) struct Screen {
    store: Option<Store>,
}

impl Screen {
    /// Opens the list the run uses.
    pub(super) fn open(cfg: &RunConfig) -> Result<Self, RunError> {
        let store = match (&cfg.suppress.store, cfg.suppress.ignore) {
            (Some(path), false) => Some(Store::open(path)?),
            _ => None,
        };
        Ok(Self { store })
    }

    /// Why `a` must not be sent to (the `response` text of a suppressed row), `None` when it
    /// may be.
    fn check(&self, a: &Address) -> Result<Option<String>, RunError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        Ok(store.lookup(a)?.map(|e| e.describe()))
    }
}
