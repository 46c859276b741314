//! What every worker of a run shares and reports through ([`Ctx`]): the configuration, the
//! message source, the event channel, the global connection limit, per-address state, and the
//! numbering of final outcomes that the journal's durability bound relies on.

use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::DeliveryConfig;
use super::hosts::Hosts;
use super::queue::{QueuedRow, SiteQueue};
use super::work::{Event, MessageSource};
use crate::outcome::{Outcome, Status};

/// What every worker shares.
pub(super) struct Ctx<C> {
    /// The configuration.
    pub(super) cfg: DeliveryConfig,
    /// Builds each row's message.
    pub(super) source: MessageSource,
    events: mpsc::UnboundedSender<Event>,
    /// `--max-connections`: a session holds a permit.
    pub(super) connections: Arc<Semaphore>,
    /// What was learnt about MX addresses.
    pub(super) hosts: Hosts,
    /// Cancelled on SIGINT/SIGTERM: workers take no new job, in-flight ones finish.
    pub(super) cancel: CancellationToken,
    /// Final outcomes sent so far (see [`super::Recorded`]).
    finals: Mutex<u64>,
    /// Opens connections.
    pub(super) connector: C,
}

impl<C> Ctx<C> {
    /// The context of one engine run: `--max-connections` permits, nothing learnt yet.
    pub(super) fn new(
        cfg: DeliveryConfig,
        source: MessageSource,
        events: mpsc::UnboundedSender<Event>,
        cancel: CancellationToken,
        connector: C,
    ) -> Self {
        Self {
            cancel,
            hosts: Hosts::with_dialects(&cfg.dialects),
            connections: Arc::new(Semaphore::new(cfg.options.max_connections.get())),
            cfg,
            source,
            events,
            finals: Mutex::new(0),
            connector,
        }
    }

    /// Reports an event.
    pub(super) fn emit(&self, e: Event) {
        // The receiver lives until the engine returns; a send error only happens at shutdown.
        let _ = self.events.send(e);
    }

    /// The row is settled (now: its `finished_at`).
    pub(super) fn final_outcome(&self, queue: &SiteQueue, job: QueuedRow, mut outcome: Outcome) {
        outcome.finished_at = Some(crate::outcome::now());
        queue.complete();
        // Numbered and sent under one lock, so event order is number order.
        let mut finals = self.finals.lock().unwrap_or_else(|e| e.into_inner());
        *finals += 1;
        self.emit(Event::Final {
            row: job.row,
            outcome,
        });
    }

    /// Waits until every final outcome sent so far is recorded (no-op without a recorder).
    pub(super) async fn wait_recorded(&self) {
        if let Some(r) = &self.cfg.recorded {
            let sent = *self.finals.lock().unwrap_or_else(|e| e.into_inner());
            r.wait_for(sent).await;
        }
    }

    /// A transient failure: retry later, or give up as deferred when the deadline is near.
    pub(super) fn transient(&self, queue: &SiteQueue, mut job: QueuedRow, mut outcome: Outcome) {
        job.attempts += 1;
        outcome.attempts = job.attempts;
        outcome.status = Status::Deferred;
        let now = Instant::now();
        match self.cfg.options.retry.delay_after(job.attempts) {
            Some(delay) if now + delay < self.cfg.deadline => {
                job.not_before = now + delay;
                queue.retry(job);
                self.emit(Event::Retrying {
                    row: job.row,
                    outcome,
                });
            }
            _ => self.final_outcome(queue, job, outcome),
        }
    }
}
