//! Send: hand the routed rows to the delivery engine and record every outcome as it arrives
//! (the journal's [`Recorder`]), with progress alongside. Rows the deadline or an interruption
//! cut off end `deferred`: not journaled as done, so a re-run sends them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::outcomes::OutcomeStore;
use super::prepare::Campaign;
use super::route::Routes;
use super::triage::Rows;
use super::{RunConfig, RunError};
use crate::delivery::ProviderBook;
use crate::delivery::{self, DeliveryConfig, Event, MessageSource};
use crate::journal::{Journal, JournalError, Recorder};
use crate::outcome::{Outcome, Status, Step};
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
    pub providers: Vec<crate::delivery::ProviderReport>,
}

/// Delivers the routed rows; every row ends with an outcome in `rows.outcomes`.
pub(super) async fn send(
    cfg: &RunConfig,
    job: &Campaign,
    rows: &mut Rows,
    routes: Routes,
    source: MessageSource,
    cancel: CancellationToken,
    events: &mut (dyn FnMut(&Event) + Send),
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
    let offsets = recorder.record_decided(routes.decided.iter().map(|(i, o)| {
        let (key, number) = key_of(*i);
        (key, number, o)
    }))?;
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
    let mut tally = Tally {
        sent: Sent::default(),
        last_try: HashMap::new(),
        progress: progress(cfg, rows, &routes, &book),
        outcomes: &mut rows.outcomes,
        site_of_row: &routes.site_of_row,
        events,
    };
    let journal_error = recorder
        .run(rx, key_of, &cancel, |ev, offset| tally.event(ev, offset))
        .await;
    let _ = engine.await;
    tally.progress.finish();
    let mut sent = tally.sent;
    sent.interrupted = cancel.is_cancelled();
    sent.journal_error = journal_error;
    sent.providers = book.reports();
    for i in 0..job.list.len() {
        if tally.outcomes.is_pending(i) {
            let o = cut_off(tally.last_try.remove(&i), sent.interrupted);
            tally.outcomes.set_local(i, o);
        }
    }
    Ok(sent)
}

/// Progress over the whole list: rows settled before sending count too, so the progress line
/// and the summary count the same rows.
fn progress(cfg: &RunConfig, rows: &Rows, routes: &Routes, book: &ProviderBook) -> Progress {
    let sites = routes
        .work
        .iter()
        .map(|w| (w.name.to_string(), w.rows.len()))
        .collect();
    let mut progress = Progress::new(cfg.progress, rows.plan.rows, sites);
    progress.providers(book.clone());
    progress.settled(Status::Invalid, rows.plan.invalid);
    progress.settled(Status::Duplicate, rows.plan.duplicate);
    progress.settled(Status::Suppressed, rows.plan.suppressed);
    progress.settled(Status::Deferred, rows.plan.beyond_limit);
    progress.earlier(rows.plan.already_done);
    for (_, o) in &routes.decided {
        progress.settled(o.status, 1);
    }
    progress
}

/// What the engine reported, counted as the recorder hands each event on.
struct Tally<'a> {
    sent: Sent,
    /// The last failed attempt of each row still being retried.
    last_try: HashMap<usize, Outcome>,
    progress: Progress,
    outcomes: &'a mut OutcomeStore,
    /// Each row's site index, `u32::MAX` for none.
    site_of_row: &'a [u32],
    /// Sees every event first (`--events`, the report's timeline).
    events: &'a mut (dyn FnMut(&Event) + Send),
}

impl Tally<'_> {
    /// One event; `offset` is where a final outcome sits in the journal.
    fn event(&mut self, ev: Event, offset: Option<u64>) {
        (self.events)(&ev);
        match ev {
            Event::Final { row, outcome } => {
                if outcome.status == Status::Delivered {
                    self.sent.delivered_now += 1;
                }
                let was_retrying = self.last_try.remove(&row).is_some();
                let site = self
                    .site_of_row
                    .get(row)
                    .copied()
                    .filter(|&s| s != u32::MAX);
                let site = site.map(|s| s as usize);
                self.progress.finished(outcome.status, was_retrying, site);
                match offset {
                    Some(at) => self.outcomes.set_recorded(row, at, outcome),
                    None => self.outcomes.set_local(row, outcome),
                }
            }
            Event::Retrying { row, outcome } => {
                let first = self.last_try.insert(row, outcome).is_none();
                self.progress.retrying(first);
            }
            Event::Connected { .. } => self.sent.connections += 1,
            Event::DialectFallback {
                host,
                ip,
                dialect,
                reason,
            } => self.sent.dialect_fallbacks.push(format!(
                "{host} [{ip}] fell back to {dialect} after {reason:?}"
            )),
            Event::Gate { .. } => {}
        }
    }
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
