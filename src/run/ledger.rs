//! The run's ledger: every row's final outcome and the plan's counts, owned in one place.
//!
//! Stages hand rows to the ledger and nothing else keeps a count: a row is **settled** once
//! (its outcome kept here, or where the journal holds it) and counted at that moment by
//! [`PlanCount::of`], or it is **another shard's** and left out of this run's results and
//! counts. Marking a settled row as another shard's takes its count back here, so no stage
//! ever adds or subtracts a counter by hand.
//!
//! It is small enough for lists of millions of rows: 9 bytes per row (a slot and a count
//! class); outcomes of big lists stay in the journal and are read back by offset when the
//! results are written, and lists up to [`Ledger::IN_MEMORY_ROWS`] rows keep outcomes here,
//! which is faster.

use crate::journal;
use crate::outcome::{Outcome, Status};
use crate::report::{Plan, PlanCount};

/// Every row's outcome so far, and the counts that follow from them.
pub(super) struct Ledger {
    /// Per row: pending, another shard's, an index into `locals`, or a journal offset.
    slots: Vec<u64>,
    /// Per row: the plan count it is in (`NOT_COUNTED` while pending, or for another shard's).
    counted: Vec<u8>,
    /// Outcomes kept in memory.
    locals: Vec<Outcome>,
    /// Keep journaled outcomes in memory too (small lists).
    in_memory: bool,
    /// Rows per plan count, indexed by `PlanCount as usize`.
    counts: [usize; PlanCount::ALL.len()],
    /// Invalid rows' reasons (`line N: …`), by row, for the plan's problem list.
    problems: Vec<(usize, String)>,
}

impl Ledger {
    const PENDING: u64 = u64::MAX;
    /// Another shard's row (`--shard`): not in this run's results.
    const ELSEWHERE: u64 = u64::MAX - 1;
    const LOCAL: u64 = 1 << 63;
    const NOT_COUNTED: u8 = u8::MAX;
    /// Up to this many rows, outcomes stay in memory (≈ 300 bytes each).
    const IN_MEMORY_ROWS: usize = 100_000;

    /// A ledger of `rows` pending rows.
    pub(super) fn new(rows: usize) -> Self {
        let in_memory = rows <= Self::IN_MEMORY_ROWS;
        Self {
            slots: vec![Self::PENDING; rows],
            counted: vec![Self::NOT_COUNTED; rows],
            // Room for every row's outcome up front, so that the vector is never moved as it
            // grows (its pages are only touched as outcomes arrive).
            locals: Vec::with_capacity(if in_memory { rows } else { 0 }),
            in_memory,
            counts: [0; PlanCount::ALL.len()],
            problems: Vec::new(),
        }
    }

    /// Rows in the list (this shard's and others').
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Settles row `i` with an outcome kept in memory.
    pub(super) fn settle(&mut self, i: usize, o: Outcome) {
        self.count(i, PlanCount::of(&o), &o);
        self.slots[i] = Self::LOCAL | self.locals.len() as u64;
        self.locals.push(o);
    }

    /// Settles row `i` with an outcome the journal holds at `offset`: kept by value for small
    /// lists, by offset for big ones.
    pub(super) fn settle_recorded(&mut self, i: usize, offset: u64, o: Outcome) {
        if self.in_memory {
            self.settle(i, o);
        } else {
            self.count(i, PlanCount::of(&o), &o);
            self.slots[i] = offset;
        }
    }

    /// Settles row `i` as finished by an earlier run; its outcome is in the journal at
    /// `offset`.
    pub(super) fn settle_earlier(&mut self, i: usize, offset: u64) {
        self.counted[i] = PlanCount::AlreadyDone as u8;
        self.counts[PlanCount::AlreadyDone as usize] += 1;
        self.slots[i] = offset;
    }

    /// Lists a problem of row `i` (`line N: …`) that does not decide its outcome (a row DNS
    /// settled also fails to render: the plan says so, a run would not get that far).
    pub(super) fn note_problem(&mut self, i: usize, text: String) {
        self.problems.push((i, text));
    }

    /// Row `i` belongs to another shard: out of this run's results and counts.
    pub(super) fn mark_elsewhere(&mut self, i: usize) {
        if let Some(c) = PlanCount::ALL.get(usize::from(self.counted[i])) {
            self.counts[*c as usize] -= 1;
        }
        self.counted[i] = Self::NOT_COUNTED;
        self.slots[i] = Self::ELSEWHERE;
    }

    /// No outcome yet (and not another shard's).
    pub(super) fn is_pending(&self, i: usize) -> bool {
        self.slots[i] == Self::PENDING
    }

    /// Another shard's row.
    pub(super) fn is_elsewhere(&self, i: usize) -> bool {
        self.slots[i] == Self::ELSEWHERE
    }

    /// Whether row `i` was settled as finished by an earlier run.
    pub(super) fn is_earlier(&self, i: usize) -> bool {
        self.counted[i] == PlanCount::AlreadyDone as u8
    }

    /// Row `i`'s outcome, `None` while pending or for another shard's row; `reader` reads
    /// outcomes kept in the journal.
    pub(super) fn outcome(
        &self,
        i: usize,
        reader: Option<&journal::JournalReader>,
    ) -> Option<Outcome> {
        match self.slots[i] {
            Self::PENDING | Self::ELSEWHERE => None,
            s if s & Self::LOCAL != 0 => self.locals.get((s & !Self::LOCAL) as usize).cloned(),
            offset => reader?.outcome_at(offset),
        }
    }

    /// Rows settled so far in `count`.
    pub(super) fn count_of(&self, count: PlanCount) -> usize {
        self.counts[count as usize]
    }

    /// The plan's counts and problems (`file:line: problem`, in list order) for this run's
    /// rows; sites and messages to send are the sending stage's to fill in.
    pub(super) fn plan(&self, list_path: &std::path::Path) -> Plan {
        let mut plan = Plan {
            rows: self.slots.iter().filter(|&&s| s != Self::ELSEWHERE).count(),
            ..Plan::default()
        };
        for c in PlanCount::ALL {
            plan.add(c, self.counts[c as usize]);
        }
        let mut problems: Vec<&(usize, String)> = self
            .problems
            .iter()
            .filter(|(i, _)| !self.is_elsewhere(*i))
            .collect();
        problems.sort_by_key(|(i, _)| *i);
        plan.problems = problems
            .into_iter()
            .map(|(_, text)| super::problem(list_path, text))
            .collect();
        plan
    }

    fn count(&mut self, i: usize, c: Option<PlanCount>, o: &Outcome) {
        debug_assert!(self.is_pending(i), "row {i} settled twice");
        if let Some(c) = c {
            self.counted[i] = c as u8;
            self.counts[c as usize] += 1;
        }
        if o.status == Status::Invalid {
            self.problems.push((i, o.response.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Step;

    fn invalid(text: &str) -> Outcome {
        Outcome::local(Status::Invalid, Step::Input, text)
    }

    #[test]
    fn settling_counts_once_and_another_shards_row_takes_its_count_back() {
        let mut l = Ledger::new(4);
        l.settle(0, invalid("line 2: no @"));
        l.settle(1, Outcome::local(Status::Suppressed, Step::Suppressed, "x"));
        l.settle_earlier(2, 17);
        assert_eq!(l.count_of(PlanCount::Invalid), 1);
        assert_eq!(l.count_of(PlanCount::Suppressed), 1);
        assert_eq!(l.count_of(PlanCount::AlreadyDone), 1);
        assert!(l.is_pending(3) && l.is_earlier(2));

        l.mark_elsewhere(0);
        l.mark_elsewhere(3);
        assert_eq!(l.count_of(PlanCount::Invalid), 0);
        assert!(l.is_elsewhere(0) && l.outcome(0, None).is_none());
        let plan = l.plan(std::path::Path::new("list.csv"));
        assert_eq!((plan.rows, plan.invalid, plan.suppressed), (2, 0, 1));
        assert!(plan.problems.is_empty(), "{:?}", plan.problems);
    }

    #[test]
    fn problems_come_in_list_order_with_the_file_name() {
        let mut l = Ledger::new(3);
        l.settle(2, invalid("line 4: empty name"));
        l.settle(0, invalid("line 2: no @"));
        let plan = l.plan(std::path::Path::new("list.csv"));
        assert_eq!(
            plan.problems,
            ["list.csv:2: no @", "list.csv:4: empty name"]
        );
    }

    #[test]
    fn big_lists_keep_recorded_outcomes_in_the_journal_only() {
        let mut l = Ledger::new(Ledger::IN_MEMORY_ROWS + 1);
        l.settle_recorded(
            5,
            1234,
            Outcome::local(
                Status::Delivered,
                Step::Smtp(crate::smtp::Phase::DataEnd),
                "ok",
            ),
        );
        assert!(!l.is_pending(5));
        assert!(l.locals.is_empty());
        assert!(l.outcome(5, None).is_none(), "read back from the journal");
    }
}
