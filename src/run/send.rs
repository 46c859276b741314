//! Send: hand the routed rows to the delivery engine and record every outcome as it arrives
//! (the journal's [`Recorder`]), with progress alongside. Rows the deadline or an interruption
//! cut off end `deferred`: not journaled as done, so a re-run sends them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::prepare::Job;
use super::route::Routes;
use super::triage::Rows;
use super::{RunConfig, RunError};
use crate::delivery::{self, DeliveryConfig, Event, MessageSource, Outcome, Status, Step};
use crate::journal::{Journal, JournalError, Recorder};
use crate::progress::Progress;
use crate::smtp::{EnhancedCode, TlsPolicy};

/// What sending produced besides the outcomes.
#[derive(Default)]
pub(super) struct Sent {
    /// SMTP sessions opened.
    pub connections: usize,
    /// Messages delivered by this run.
    pub delivered_now: usize,
    /// MX addresses that objected to our pipelining, one summary line each.
    pub dialect_fallbacks: Vec<String>,
    /// Cancelled before every row was tried.
    pub interrupted: bool,
    /// The journal failed during the run (reported after the results are written).
    pub journal_error: Option<JournalError>,
    /// What each mailbox provider did (throttling replies, limits learnt).
    pub providers: Vec<crate::provider::ProviderReport>,
}

/// Delivers the routed rows; every row ends with an outcome in `rows.outcomes`.
pub(super) async fn send(
    cfg: &RunConfig,
    job: &Job,
    rows: &mut Rows,
    routes: Routes,
    source: MessageSource,
    cancel: CancellationToken,
) -> Result<Sent, RunError> {
    let journal = Journal::open_for(
        &job.journal_path,
        &cfg.recipients,
        Some(&job.fingerprint),
        cfg.fresh,
    )?;
    let recorded = Arc::new(delivery::Recorded::default());
    let mut recorder = Recorder::new(journal, recorded.clone());
    let key_of = |i: usize| {
        let row = job.list.row(i);
        (job.keys.key(&job.list, i, &row), row.row)
    };
    let offsets = recorder.record_decided(
        routes
            .decided
            .iter()
            .map(|(i, o)| (key_of(*i).0, key_of(*i).1, o)),
    )?;
    for ((i, o), at) in routes.decided.iter().zip(offsets) {
        rows.outcomes.set_recorded(*i, at, o.clone());
    }
    rows.plan.sites = routes.plan_sites(&HashSet::new(), &cfg.delivery);
    rows.plan.to_send = routes.to_send();

    let mut dcfg = DeliveryConfig::new(
        cfg.delivery.clone(),
        TlsPolicy::new(cfg.delivery.tls, &cfg.tls_extra_roots)?,
    );
    dcfg.recorded = Some(recorded);
    let book = dcfg.book.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    let cancel = cancel.child_token();
    let engine = tokio::spawn(delivery::deliver_until(
        routes.work.clone(),
        source,
        dcfg,
        tx,
        cancel.clone(),
    ));
    let mut progress = Progress::new(
        cfg.progress,
        rows.plan.rows,
        routes
            .work
            .iter()
            .map(|w| (w.name.to_string(), w.rows.len()))
            .collect(),
    );
    progress.providers(book.clone());
    // Rows settled before sending count too: the progress line and the summary count rows.
    progress.settled(Status::Invalid, rows.plan.invalid);
    progress.settled(Status::Duplicate, rows.plan.duplicate);
    progress.settled(Status::Suppressed, rows.plan.suppressed);
    progress.settled(Status::Deferred, rows.plan.beyond_limit);
    progress.earlier(rows.plan.already_done);
    for (_, o) in &routes.decided {
        progress.settled(o.status, 1);
    }
    let mut sent = Sent::default();
    // The last failed attempt of each row still being retried.
    let mut last_try: HashMap<usize, Outcome> = HashMap::new();
    let outcomes = &mut rows.outcomes;
    let journal_error = recorder
        .run(rx, key_of, &cancel, |ev, offset| match ev {
            Event::Final { row, outcome } => {
                if outcome.status == Status::Delivered {
                    sent.delivered_now += 1;
                }
                let was_retrying = last_try.remove(&row).is_some();
                let site = routes
                    .site_of_row
                    .get(row)
                    .copied()
                    .filter(|&s| s != u32::MAX);
                progress.finished(outcome.status, was_retrying, site.map(|s| s as usize));
                match offset {
                    Some(at) => outcomes.set_recorded(row, at, outcome),
                    None => outcomes.set_local(row, outcome),
                }
            }
            Event::Retrying { row, outcome } => {
                let first = last_try.insert(row, outcome).is_none();
                progress.retrying(first);
            }
            Event::Connected { .. } => sent.connections += 1,
            Event::DialectFallback {
                host,
                ip,
                dialect,
                reason,
            } => sent.dialect_fallbacks.push(format!(
                "{host} [{ip}] fell back to {dialect} after {reason:?}"
            )),
        })
        .await;
    let _ = engine.await;
    progress.finish();
    sent.interrupted = cancel.is_cancelled();
    sent.journal_error = journal_error;
    sent.providers = book.reports();
    for i in 0..job.list.len() {
        if outcomes.is_pending(i) {
            outcomes.set_local(i, cut_off(last_try.remove(&i), sent.interrupted));
        }
    }
    Ok(sent)
}

/// A row the deadline or an interruption cut off: deferred, with the last attempt's details
/// when there was one.
fn cut_off(last_try: Option<Outcome>, interrupted: bool) -> Outcome {
    let (step, text, enhanced) = match last_try {
        Some(mut last) => {
            last.status = Status::Deferred;
            return last;
        }
        None if interrupted => (
            Step::Interrupted,
            "run interrupted before this recipient was sent",
            EnhancedCode::new(4, 3, 2),
        ),
        None => (
            Step::Deadline,
            "run deadline reached before this recipient was attempted",
            EnhancedCode::new(4, 4, 7),
        ),
    };
    let mut o = Outcome::local(Status::Deferred, step, text);
    o.enhanced = Some(enhanced);
    o
}
