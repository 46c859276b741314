//! Every row's final outcome while a run is under way, in as little memory as a list of
//! millions of rows needs.
//!
//! Big lists keep only an offset into the journal for recorded outcomes (8 bytes per row; the
//! report reads them back); lists up to [`OutcomeStore::IN_MEMORY_ROWS`] rows keep the
//! outcomes themselves, which is faster.

use crate::journal;
use crate::outcome::Outcome;

/// One slot per row: pending, decided, an outcome kept here, or a journal offset.
pub(super) struct OutcomeStore {
    slots: Vec<u64>,
    locals: Vec<Outcome>,
    in_memory: bool,
}

impl OutcomeStore {
    const PENDING: u64 = u64::MAX;
    const DECIDED: u64 = u64::MAX - 1;
    /// Another shard's row (`--shard`): not in this run's results.
    const ELSEWHERE: u64 = u64::MAX - 2;
    const LOCAL: u64 = 1 << 63;
    /// Up to this many rows, outcomes stay in memory (≈ 300 bytes each).
    const IN_MEMORY_ROWS: usize = 100_000;

    pub(super) fn new(rows: usize) -> Self {
        Self {
            slots: vec![Self::PENDING; rows],
            locals: Vec::new(),
            in_memory: rows <= Self::IN_MEMORY_ROWS,
        }
    }

    /// A journaled outcome: kept by value for small lists, by offset for big ones.
    pub(super) fn set_recorded(&mut self, i: usize, offset: u64, o: Outcome) {
        if self.in_memory {
            self.set_local(i, o);
        } else {
            self.set_journal(i, offset);
        }
    }

    /// No outcome yet.
    pub(super) fn is_pending(&self, i: usize) -> bool {
        self.slots[i] == Self::PENDING
    }

    /// Decided, to be stored shortly (keeps the row out of "pending").
    pub(super) fn set_decided(&mut self, i: usize) {
        self.slots[i] = Self::DECIDED;
    }

    /// Another shard's row: left out of this run.
    pub(super) fn set_elsewhere(&mut self, i: usize) {
        self.slots[i] = Self::ELSEWHERE;
    }

    /// Another shard's row.
    pub(super) fn is_elsewhere(&self, i: usize) -> bool {
        self.slots[i] == Self::ELSEWHERE
    }

    pub(super) fn set_local(&mut self, i: usize, o: Outcome) {
        self.slots[i] = Self::LOCAL | self.locals.len() as u64;
        self.locals.push(o);
    }

    pub(super) fn set_journal(&mut self, i: usize, offset: u64) {
        self.slots[i] = offset;
    }

    pub(super) fn get(&self, i: usize, reader: Option<&journal::JournalReader>) -> Option<Outcome> {
        match self.slots[i] {
            Self::PENDING | Self::DECIDED | Self::ELSEWHERE => None,
            s if s & Self::LOCAL != 0 => self.locals.get((s & !Self::LOCAL) as usize).cloned(),
            offset => reader?.outcome_at(offset),
        }
    }
}
