//! The recorder: the one loop that takes the delivery engine's events as they arrive and makes
//! every final outcome durable before anything else happens with it.
//!
//! It takes everything ready, journals the final outcomes in one write, tells the engine how
//! many are recorded (the engine sends no more content until then: the bound on duplicates
//! after a crash, see [`Recorded`]) and only then hands each event on, with its journal
//! offset, to whoever counts and reports. A journal that cannot be written cancels the run:
//! without it a re-run could send twice.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

use super::{Journal, JournalError, RowKey, SYNC_INTERVAL, SYNC_RECORDS};
use crate::delivery::{Event, Recorded};
use crate::outcome::Outcome;

/// Writes the engine's final outcomes to a [`Journal`] as they arrive.
pub struct Recorder {
    journal: Journal,
    recorded: Arc<Recorded>,
    /// The first write error; later outcomes are still handed on, without an offset.
    error: Option<JournalError>,
}

impl Recorder {
    /// Records into `journal`, advancing `recorded` as outcomes reach the OS.
    pub fn new(journal: Journal, recorded: Arc<Recorded>) -> Self {
        Self {
            journal,
            recorded,
            error: None,
        }
    }

    /// Records outcomes decided before delivery (DNS); returns their offsets, in order.
    pub fn record_decided<'a>(
        &mut self,
        outcomes: impl IntoIterator<Item = (RowKey, usize, &'a Outcome)>,
    ) -> Result<Vec<u64>, JournalError> {
        let offsets = outcomes
            .into_iter()
            .map(|(key, row, o)| self.journal.append(&key, row, o))
            .collect();
        self.journal.flush()?;
        Ok(offsets)
    }

    /// Runs until the engine drops its sender. `key_of(row)` gives a row's journal key and
    /// its 1-based row number; `on_event` gets every event in order, with the journal offset
    /// of a final outcome (`None` once the journal has failed). Returns the first journal
    /// error, after the final `fsync`.
    pub async fn run(
        mut self,
        mut events: UnboundedReceiver<Event>,
        key_of: impl Fn(usize) -> (RowKey, usize),
        cancel: &CancellationToken,
        mut on_event: impl FnMut(Event, Option<u64>),
    ) -> Option<JournalError> {
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Vec<Event> = Vec::new();
        loop {
            let first = tokio::select! {
                ev = events.recv() => ev,
                _ = tick.tick() => {
                    if self.journal.sync_pending() {
                        let result = self.journal.flush();
                        self.fail_on(result, cancel);
                    }
                    continue;
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            // Group commit: let the other tasks that are ready (sessions whose replies came
            // in together) report theirs first, so one write records them all.
            tokio::task::yield_now().await;
            while batch.len() < SYNC_RECORDS {
                match events.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            let mut offsets = self.write(&batch, &key_of, cancel).into_iter();
            for ev in batch.drain(..) {
                let offset = match ev {
                    Event::Final { .. } => offsets.next().filter(|_| self.error.is_none()),
                    _ => None,
                };
                on_event(ev, offset);
            }
        }
        // Every row gets its result row even when the journal failed: the error is the
        // caller's to report after the results are written.
        let result = self.journal.sync();
        self.fail_on(result, cancel);
        self.error
    }

    /// Journals a batch's final outcomes in one write; returns their offsets.
    fn write(
        &mut self,
        batch: &[Event],
        key_of: &impl Fn(usize) -> (RowKey, usize),
        cancel: &CancellationToken,
    ) -> Vec<u64> {
        let mut offsets = Vec::with_capacity(batch.len());
        for ev in batch {
            if let Event::Final { row, outcome } = ev {
                let (key, number) = key_of(*row);
                offsets.push(self.journal.append(&key, number, outcome));
            }
        }
        let result = self.journal.flush();
        self.fail_on(result, cancel);
        // Written to the OS: workers may now have the next messages accepted (on failure the
        // run is being cancelled; let the workers wind down).
        self.recorded.advance(offsets.len() as u64);
        offsets
    }

    fn fail_on(&mut self, result: Result<(), JournalError>, cancel: &CancellationToken) {
        if let Err(e) = result {
            // Without a journal a re-run could send twice: stop taking new work.
            self.error.get_or_insert(e);
            cancel.cancel();
        }
    }
}
