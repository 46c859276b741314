//! Triage: one pass over the rows that settles every row that will not be sent (input errors,
//! duplicates, rows an earlier run finished, rows beyond `--limit`) and collects the
//! destination domains of the rest.

use std::collections::BTreeSet;

use super::outcomes::OutcomeStore;
use super::prepare::Campaign;
use super::{RunConfig, problem};
use crate::address::Address;
use crate::outcome::{Outcome, Status, Step};
use crate::report::Plan;

/// The rows after triage.
pub(super) struct Rows {
    /// Every row's outcome so far (pending for the rows still to send).
    pub outcomes: OutcomeStore,
    /// The plan's counts, filled in by each stage.
    pub plan: Plan,
    /// Destination domains of the rows still to send.
    pub domains: BTreeSet<String>,
    /// Per daily-cap key (provider or site): the rows counted against today's cap, to give
    /// back those the run did not send (`--daily-cap`, `--warmup`).
    pub cap_counted: Vec<(String, Vec<usize>)>,
}

/// Settles what can be settled without the network; `suppressed(address)` gives the reason
/// an address is on the suppression list.
pub(super) fn triage(
    cfg: &RunConfig,
    job: &Campaign,
    suppressed: &mut dyn FnMut(&Address) -> Option<String>,
) -> Rows {
    let list = &job.list;
    let mut rows = Rows {
        outcomes: OutcomeStore::new(list.len()),
        plan: Plan {
            rows: list.len(),
            ..Plan::default()
        },
        domains: BTreeSet::new(),
        cap_counted: Vec::new(),
    };
    let per_address = !cfg.list.allow_duplicates;
    let mut budget = cfg.limit.unwrap_or(usize::MAX);
    // `--shard`: rows settled here (never routed) are placed by domain (super::shard).
    let elsewhere = |row: &crate::recipients::Row| {
        cfg.shard
            .is_some_and(|s| !s.owns(&super::shard::domain_key(row)))
    };
    for (i, row) in list.iter().enumerate() {
        if row.status.is_err() && elsewhere(&row) {
            rows.outcomes.set_elsewhere(i);
            continue;
        }
        let addr = match &row.status {
            Ok(addr) => addr,
            Err(e) => {
                let status = if e.status() == "duplicate" {
                    rows.plan.duplicate += 1;
                    Status::Duplicate
                } else {
                    rows.plan.invalid += 1;
                    rows.plan
                        .problems
                        .push(problem(&cfg.recipients, &e.to_string()));
                    Status::Invalid
                };
                rows.outcomes
                    .set_local(i, Outcome::local(status, Step::Input, e.to_string()));
                continue;
            }
        };
        let done = (!job.replay.is_empty())
            .then(|| {
                job.replay
                    .done_at(&job.keys.key(list, i, &row), per_address)
            })
            .flatten();
        if let Some(at) = done {
            rows.outcomes.set_journal(i, at);
            rows.plan.already_done += 1;
        } else if let Some(why) = suppressed(addr) {
            if elsewhere(&row) {
                rows.outcomes.set_elsewhere(i);
                continue;
            }
            rows.outcomes
                .set_local(i, Outcome::local(Status::Suppressed, Step::Suppressed, why));
            rows.plan.suppressed += 1;
        } else if budget == 0 {
            let limit = cfg.limit.unwrap_or_default();
            rows.outcomes.set_local(
                i,
                Outcome::local(
                    Status::Deferred,
                    Step::Limit,
                    format!("not sent: beyond --limit {limit}; a later run sends it"),
                ),
            );
            rows.plan.beyond_limit += 1;
        } else {
            budget -= 1;
            if !rows.domains.contains(addr.domain()) {
                rows.domains.insert(addr.domain().to_string());
            }
        }
    }
    rows
}
