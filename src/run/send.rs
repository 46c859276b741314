//! Send: hand the routed rows to the delivery engine, whose workers record every final outcome
//! in the journal as they get it (the journal's [`Recorder`]), and count the events, with
//! progress alongside. Rows the deadline or an interruption cut off end `deferred`: not
//! journaled as done, so a re-run sends them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ledger::Ledger;
use super::prepare::Campaign;
use super::route::Routed;
use super::sender::Remembered;
use super::source::BuiltKeys;
use super::{RunConfig, RunError};
use crate::delivery::{self, DeliveryConfig, Event, MessageSource};
use crate::delivery::{LearntDialect, ProviderBook};
use crate::journal::{Journal, JournalError, Recorder};
use crate::outcome::{Outcome, Status, Step};
use crate::progress::Progress;
use crate::report::PlanCount;
use crate::sender::{Identity, Lesson};
use crate::smtp::{EnhancedCode, TlsPolicy};

/// What sending produced besides the outcomes.
#[derive(Default)]
pub(super) struct Sent {
    /// The sites the rows went to (the plan's view of them).
    pub sites: Vec<crate::report::PlanSite>,
    /// Messages handed to the engine.
    pub to_send: usize,
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
    /// Messages each sending identity's receiver answered for good (delivered or refused).
    pub finals: HashMap<Identity, usize>,
    /// What each gate learnt, for the sender's memory.
    pub lessons: Vec<(Identity, Lesson)>,
    /// Dialects MX addresses were stepped down to, with what the server did.
    pub dialects: Vec<(LearntDialect, String)>,
    /// When the first SMTP session opened.
    pub first_connection: Option<std::time::Instant>,
}

/// Delivers the routed rows; every row of this run ends settled in the ledger.
pub(super) async fn send(
    cfg: &RunConfig,
    job: &Campaign,
    ledger: &mut Ledger,
    (routes, (source, built), remembered): (Routed, (MessageSource, Arc<BuiltKeys>), &Remembered),
    cancel: CancellationToken,
    events: &mut (dyn FnMut(&Event) + Send),
) -> Result<Sent, RunError> {
    let journal = Journal::open_for(
        &job.journal_path,
        &cfg.recipients,
        Some(&job.fingerprint),
        cfg.fresh,
    )?;
    let cancel = cancel.child_token();
    let (list, keys) = (job.list.clone(), job.keys.clone());
    // The message source left the key of each row it built; others are read again.
    let key_of = Box::new(move |i: usize| {
        built.take(i).unwrap_or_else(|| {
            let row = list.row(i);
            (keys.key(&list, i, &row), row.row)
        })
    });
    let recorder = Arc::new(Recorder::new(journal, key_of, cancel.clone()));
    let decided = routes.decided.iter().map(|(i, o)| (*i, o));
    let offsets = recorder.record_decided(decided)?;
    for ((i, o), at) in routes.decided.iter().zip(offsets) {
        ledger.settle_recorded(*i, at, o.clone());
    }
    let mut dcfg = DeliveryConfig::new(
        cfg.delivery.clone(),
        TlsPolicy::new(cfg.delivery.tls, &cfg.tls_extra_roots)?,
    );
    dcfg.recorded = Some(recorder.clone());
    dcfg.memory = Arc::new(remembered.memory.clone());
    dcfg.dialects.clone_from(&remembered.dialects);
    dcfg.clock = cfg.clock;
    let book = dcfg.book.clone();
    let progress = progress(cfg, ledger, &routes, &book);
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = tokio::spawn(delivery::deliver_until(
        routes.work.clone(),
        source,
        dcfg,
        tx,
        cancel.clone(),
    ));
    let mut tally = Tally {
        sent: Sent {
            sites: routes.plan_sites(&HashSet::new(), &cfg.delivery),
            to_send: routes.to_send(),
            ..Sent::default()
        },
        last_try: HashMap::new(),
        progress,
        ledger,
        site_of_row: &routes.site_of_row,
        remembered,
        events,
    };
    let journal_error = recorder.run(rx, |ev| tally.event(ev)).await;
    let _ = engine.await;
    tally.progress.finish();
    let mut sent = tally.sent;
    sent.interrupted = cancel.is_cancelled();
    sent.journal_error = journal_error;
    sent.providers = book.reports();
    sent.lessons = book.lessons(cfg.clock.unix());
    for i in 0..tally.ledger.len() {
        if tally.ledger.is_pending(i) {
            let o = cut_off(tally.last_try.remove(&i), sent.interrupted);
            tally.ledger.settle(i, o);
        }
    }
    Ok(sent)
}

/// Progress over this run's rows: rows settled before sending (in the ledger, or decided and
/// about to be) count too, so the progress line and the summary count the same rows.
fn progress(cfg: &RunConfig, ledger: &Ledger, routes: &Routed, book: &ProviderBook) -> Progress {
    let sites = routes
        .work
        .iter()
        .map(|w| (w.name.to_string(), w.rows.len()))
        .collect();
    let rows = (0..ledger.len())
        .filter(|&i| !ledger.is_elsewhere(i))
        .count();
    let mut progress = Progress::new(cfg.progress, rows, sites);
    progress.providers(book.clone());
    progress.settled(Status::Invalid, ledger.count_of(PlanCount::Invalid));
    progress.settled(Status::Duplicate, ledger.count_of(PlanCount::Duplicate));
    progress.settled(Status::Suppressed, ledger.count_of(PlanCount::Suppressed));
    progress.settled(Status::Deferred, ledger.count_of(PlanCount::BeyondLimit));
    progress.earlier(ledger.count_of(PlanCount::AlreadyDone));
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
    ledger: &'a mut Ledger,
    /// Each row's site index, `u32::MAX` for none.
    site_of_row: &'a [u32],
    /// Names each site's sending identities (the sender's memory counts per identity).
    remembered: &'a Remembered,
    /// Sees every event first (`--events`, the report's timeline).
    events: &'a mut (dyn FnMut(&Event) + Send),
}

impl Tally<'_> {
    /// One event (a final outcome's says where it sits in the journal).
    fn event(&mut self, ev: Event) {
        (self.events)(&ev);
        match ev {
            Event::Final { row, outcome, at } => {
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
                self.count_final(site, &outcome);
                match at {
                    Some(at) => self.ledger.settle_recorded(row, at, outcome),
                    None => self.ledger.settle(row, outcome),
                }
            }
            Event::Retrying { row, outcome } => {
                let first = self.last_try.insert(row, outcome).is_none();
                self.progress.retrying(first);
            }
            Event::Connected { .. } => {
                self.sent.connections += 1;
                let first = &mut self.sent.first_connection;
                first.get_or_insert_with(std::time::Instant::now);
            }
            Event::DialectFallback { learnt, reason } => {
                let line = learnt.summary_line(&reason);
                self.sent.dialect_fallbacks.push(line);
                self.sent.dialects.push((learnt, reason));
            }
            Event::Gate { .. } => {}
        }
    }
}

impl Tally<'_> {
    /// Counts a message its receiver answered for good against the sending identity (the
    /// daily count): delivered, or refused in the SMTP dialogue.
    fn count_final(&mut self, site: Option<usize>, o: &Outcome) {
        let answered = matches!(o.step, Step::Smtp(_))
            && matches!(o.status, Status::Delivered | Status::Bounced);
        let Some(id) = site
            .filter(|_| answered)
            .and_then(|s| self.remembered.identity(s, o.source_ip))
        else {
            return;
        };
        *self.sent.finals.entry(id).or_default() += 1;
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
