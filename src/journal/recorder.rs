//! The recorder: where final outcomes become durable, and the loop that hands the delivery
//! engine's events on.
//!
//! The worker that settles a row records its outcome itself: the [`Recorder`] is the engine's
//! [`OutcomeLog`]. A record is added under a lock, and before that worker's session sends
//! another message's content, every record added so far is written out, in one `write`
//! (whichever session needs it first writes the others' too: group commit). That is the bound
//! on duplicates after a crash (one accepted but unrecorded message per connection), and it
//! costs no thread hop per message: before, every outcome woke the pipeline's thread to write
//! it, and the session waited for that thread's answer. [`Recorder::run`] hands every event
//! on, a batch at a time, with the journal offset its worker got, to whoever counts and
//! reports, writes out what idle sessions left, and sees that records do not wait long for
//! `fsync`. A journal that cannot be written cancels the run: without it a re-run could send
//! twice.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;
use tokio_util::sync::CancellationToken;

use super::{Journal, JournalError, RowKey, SYNC_INTERVAL};
use crate::delivery::{Event, OutcomeLog};
use crate::outcome::Outcome;

/// How long [`Recorder::run`] lets events gather after the first one of a batch: under load
/// the pipeline's thread wakes once per batch, not once per message. Nothing waits for it:
/// the records are already written.
const GATHER: Duration = Duration::from_millis(1);

/// A row's journal key and its 1-based row number, from its index.
pub type KeyOf = Box<dyn Fn(usize) -> (RowKey, usize) + Send + Sync>;

/// Records final outcomes in a [`Journal`], from any thread.
pub struct Recorder {
    state: Mutex<State>,
    key_of: KeyOf,
    cancel: CancellationToken,
}

struct State {
    journal: Journal,
    /// The first write error; nothing is recorded after it.
    error: Option<JournalError>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder").finish_non_exhaustive()
    }
}

impl Recorder {
    /// Records into `journal`; `key_of(row)` gives a row's journal key and row number. A
    /// write error cancels `cancel`.
    pub fn new(journal: Journal, key_of: KeyOf, cancel: CancellationToken) -> Self {
        Self {
            state: Mutex::new(State {
                journal,
                error: None,
            }),
            key_of,
            cancel,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the journal as consistent as a crash would.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records outcomes decided before delivery (DNS), in one write; their offsets, in order.
    pub fn record_decided<'a>(
        &self,
        outcomes: impl IntoIterator<Item = (usize, &'a Outcome)>,
    ) -> Result<Vec<u64>, JournalError> {
        let keyed: Vec<_> = outcomes
            .into_iter()
            .map(|(i, o)| ((self.key_of)(i), o))
            .collect();
        let mut state = self.state();
        let offsets = keyed
            .iter()
            .map(|((key, number), o)| state.journal.append(key, *number, o))
            .collect();
        state.journal.flush()?;
        Ok(offsets)
    }

    /// Hands on every event the engine sends, until it drops its sender; a final outcome's
    /// carries its journal offset (`None` once the journal has failed). Returns the first
    /// journal error, after the final, waited-for `fsync`.
    pub async fn run(
        &self,
        mut events: UnboundedReceiver<Event>,
        mut on_event: impl FnMut(Event),
    ) -> Option<JournalError> {
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::new();
        let mut open = true;
        while open {
            let first = tokio::select! {
                ev = events.recv() => ev,
                _ = tick.tick() => {
                    // Asks for the `fsync` of records written a while ago.
                    self.flush_if(Journal::sync_pending);
                    continue;
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            tokio::time::sleep(GATHER).await;
            loop {
                match events.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            // The batch's records are in the file before it is handed on (the last record of
            // a session that sends nothing more waits for no one else); an offset past what
            // was written (the journal failed) is dropped, so the row keeps its outcome by
            // value.
            self.write_out();
            let written = self.state().journal.written_end();
            for mut ev in batch.drain(..) {
                if let Event::Final { at, .. } = &mut ev {
                    *at = at.filter(|&a| a < written);
                }
                on_event(ev);
            }
        }
        // Every row gets its result row even when the journal failed: the error is the
        // caller's to report after the results are written.
        let mut state = self.state();
        if state.error.is_none()
            && let Err(e) = state.journal.sync()
        {
            state.error = Some(e);
        }
        state.error.take()
    }

    /// [`Journal::flush`] when `due` says the journal has something to do and it has not
    /// failed: a write error cancels the run (without a journal a re-run could send twice).
    fn flush_if(&self, due: fn(&Journal) -> bool) {
        let mut state = self.state();
        if state.error.is_none()
            && due(&state.journal)
            && let Err(e) = state.journal.flush()
        {
            state.error = Some(e);
            self.cancel.cancel();
        }
    }
}

impl OutcomeLog for Recorder {
    fn record(&self, row: usize, outcome: &Outcome) -> Option<u64> {
        thread_local! {
            static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        // The key and the line are made before the lock: the other workers record meanwhile.
        let (key, number) = (self.key_of)(row);
        LINE.with_borrow_mut(|line| {
            super::encode(&key, number, outcome, line);
            let mut state = self.state();
            if state.error.is_some() {
                return None;
            }
            Some(state.journal.append_encoded(line))
        })
    }

    fn pending(&self) -> bool {
        let state = self.state();
        state.error.is_none() && state.journal.unwritten()
    }

    fn write_out(&self) {
        self.flush_if(Journal::unwritten);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::journal::JournalReader;
    use crate::outcome::{Status, Step};

    fn key(i: usize) -> (RowKey, usize) {
        let key = RowKey {
            addr: format!("u{i}@x.test"),
            hash: 0,
            occurrence: 0,
        };
        (key, i + 1)
    }

    /// Runs `recorder` over `events` until they end: the first journal error, and each final
    /// outcome's row and offset as handed on.
    async fn hand_on(
        recorder: &Recorder,
        events: UnboundedReceiver<Event>,
    ) -> (Option<JournalError>, Vec<(usize, Option<u64>)>) {
        let mut handed_on = Vec::new();
        let error = recorder
            .run(events, |ev| {
                if let Event::Final { row, at, .. } = ev {
                    handed_on.push((row, at));
                }
            })
            .await;
        (error, handed_on)
    }

    /// Workers on several threads record at once (as the engine's do): every record is
    /// whole, at the offset its worker was given, and events are handed on with it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_record_concurrently_and_each_offset_reads_back_its_own_outcome() {
        const THREADS: usize = 4;
        const EACH: usize = 300;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.csv.journal");
        let journal = Journal::open(&path, Path::new("l.csv"), false).unwrap();
        let cancel = CancellationToken::new();
        let recorder = Arc::new(Recorder::new(journal, Box::new(key), cancel.clone()));
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (recorder, tx) = (recorder.clone(), tx.clone());
                std::thread::spawn(move || {
                    for k in 0..EACH {
                        let row = t * EACH + k;
                        let outcome =
                            Outcome::local(Status::Deferred, Step::Deadline, format!("row {row}"));
                        let at = recorder.record(row, &outcome);
                        tx.send(Event::Final { row, outcome, at }).unwrap();
                    }
                })
            })
            .collect();
        drop(tx);
        let (error, handed_on) = hand_on(&recorder, rx).await;
        for w in workers {
            w.join().unwrap();
        }
        assert!(error.is_none(), "{error:?}");
        assert!(!cancel.is_cancelled());
        assert_eq!(
            handed_on.len(),
            THREADS * EACH,
            "every event handed on once"
        );
        let reader = JournalReader::open(&path).unwrap();
        let mut offsets = std::collections::HashSet::new();
        for (row, at) in handed_on {
            let at = at.expect("recorded");
            assert!(offsets.insert(at), "offset {at} given twice");
            let o = reader.outcome_at(at).expect("a whole record at its offset");
            assert_eq!(o.response, format!("row {row}"));
        }
    }

    /// A write that fails (a full disk) cancels the run, and the outcomes whose records it
    /// lost are handed on without an offset: their rows keep the outcome by value.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_write_cancels_and_hands_the_lost_outcomes_on_without_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.csv.journal");
        let mut journal = Journal::open(&path, Path::new("l.csv"), false).unwrap();
        // /dev/full: every write fails with ENOSPC.
        journal.file = std::fs::OpenOptions::new()
            .append(true)
            .open("/dev/full")
            .unwrap();
        journal.syncer = None;
        let cancel = CancellationToken::new();
        let recorder = Recorder::new(journal, Box::new(key), cancel.clone());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let outcome = Outcome::local(Status::Deferred, Step::Deadline, "lost");
        let at = recorder.record(0, &outcome);
        assert!(at.is_some(), "added, not yet written");
        assert!(recorder.pending());
        tx.send(Event::Final {
            row: 0,
            outcome,
            at,
        })
        .unwrap();
        drop(tx);
        let (error, handed_on) = hand_on(&recorder, rx).await;
        assert!(matches!(error, Some(JournalError::Io { .. })), "{error:?}");
        assert!(cancel.is_cancelled(), "the run stops taking new work");
        assert_eq!(handed_on, vec![(0, None)]);
    }
}
