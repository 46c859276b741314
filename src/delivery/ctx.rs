//! What every worker of a run shares and reports through ([`Ctx`]): the configuration, the
//! message source, the event channel, the global connection limit, per-address state, and the
//! log where the worker that settles a row records its outcome.

use std::sync::Arc;

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
            connector,
        }
    }

    /// Reports an event.
    pub(super) fn emit(&self, e: Event) {
        // The receiver lives until the engine returns; a send error only happens at shutdown.
        let _ = self.events.send(e);
    }

    /// The row is settled (now: its `finished_at`), its outcome recorded (written out by
    /// [`Ctx::written_out`]).
    pub(super) fn final_outcome(&self, queue: &SiteQueue, job: QueuedRow, mut outcome: Outcome) {
        outcome.finished_at = Some(crate::outcome::now());
        let at = self
            .cfg
            .recorded
            .as_ref()
            .and_then(|log| log.record(job.row, &outcome));
        queue.complete();
        self.emit(Event::Final {
            row: job.row,
            outcome,
            at,
        });
    }

    /// Every outcome recorded so far is written out (no-op without a log): a session calls
    /// this before it sends more content, the bound on duplicates after a crash.
    pub(super) async fn written_out(&self) {
        if let Some(log) = &self.cfg.recorded
            && log.pending()
        {
            // Group commit: the other sessions whose replies came in together record theirs
            // first, and one write covers them all.
            tokio::task::yield_now().await;
            log.write_out();
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
