//! One site's queue of rows, shared by the site's workers: which rows are ready, which wait for
//! their retry time, how many are in flight, and the site-wide state that gates new connections
//! (the pause after a 421 or an unreachable site, and its back-off).
//!
//! The provider's limits (connections, rate, messages per connection, suspensions) are the
//! queue's [`Gate`]s, shared by every site of the provider: one, or with a `--source-ip`
//! pool one per source address (a provider's limits and reputation are per sending IP).
//! [`SiteQueue::try_slot`] picks the gate a new connection goes under, and so its source.
//!
//! Plain state behind a mutex, no I/O and no waiting, so the scheduling rules are tested here
//! with a paused clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::Gate;
use super::gate::Slot;
use super::retry::RetryPolicy;
use super::work::SiteWork;

/// One row to deliver, with its attempts so far.
#[derive(Clone, Copy, Debug)]
pub(super) struct QueuedRow {
    /// Row index (as handed in).
    pub(super) row: usize,
    /// Attempts made (each transient failure adds one).
    pub(super) attempts: u32,
    /// Not to be tried before this instant (the retry delay).
    pub(super) not_before: Instant,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<QueuedRow>,
    waiting: Vec<QueuedRow>,
    in_flight: usize,
    /// No new connection to this site before this instant (after a 421, or when no MX
    /// answered): sessions already open may go on.
    paused_until: Option<Instant>,
    /// Consecutive site failures (421, no MX reachable); reset by a successful connection.
    failures: u32,
}

/// What a worker gets from [`SiteQueue::take`].
pub(super) enum Next {
    /// Jobs to send, now claimed by the worker.
    Jobs(Vec<QueuedRow>),
    /// Nothing to take before this instant (or until jobs in flight settle).
    Wait(Instant),
    /// Every row of the site has a final outcome.
    Done,
}

/// A site's work and its queue state.
pub(super) struct SiteQueue {
    /// The site (name, MX hosts, rows).
    pub(super) work: SiteWork,
    /// The limits of the site's provider (shared with its other sites), or the site's own:
    /// one gate, or one per source address (then gate `i` is for source index `i`).
    pub(super) gates: Arc<[Arc<Gate>]>,
    state: Mutex<QueueState>,
}

impl SiteQueue {
    /// A queue with every row of `work` ready now, sending under `gates` (at least one).
    pub(super) fn new(work: SiteWork, gates: Arc<[Arc<Gate>]>) -> Self {
        assert!(!gates.is_empty(), "a site sends under at least one gate");
        let now = Instant::now();
        let state = QueueState {
            ready: work
                .rows
                .iter()
                .map(|&row| QueuedRow {
                    row,
                    attempts: 0,
                    not_before: now,
                })
                .collect(),
            ..QueueState::default()
        };
        Self {
            work,
            gates,
            state: Mutex::new(state),
        }
    }

    /// The gate a worker without a connection slot paces by (the only one, or the first).
    pub(super) fn first_gate(&self) -> &Arc<Gate> {
        &self.gates[0]
    }

    /// A connection slot for a new session: of the least-used gate that gives one now among
    /// those `usable` accepts (all of them when it accepts none, so that the failure is seen),
    /// or the instant to ask again. The slot's gate says which source address to lease.
    pub(super) fn try_slot(
        &self,
        now: Instant,
        usable: impl Fn(&Gate) -> bool,
    ) -> Result<Slot, Instant> {
        let mut gates: Vec<&Arc<Gate>> = self.gates.iter().filter(|g| usable(g)).collect();
        if gates.is_empty() {
            gates = self.gates.iter().collect();
        }
        // Stable: ties go to the lower source index.
        gates.sort_by_key(|g| g.open());
        let mut again: Option<Instant> = None;
        for g in gates {
            match g.try_slot(now) {
                Ok(slot) => return Ok(slot),
                Err(at) => again = Some(again.map_or(at, |a| a.min(at))),
            }
        }
        Err(again.unwrap_or(now + Duration::from_millis(250)))
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // A poisoned lock means a worker panicked; the state itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims up to `max` ready jobs. A worker without a session gets none while the site is
    /// paused.
    pub(super) fn take(&self, max: usize, now: Instant, has_session: bool) -> Next {
        let mut st = self.lock();
        let mut i = 0;
        while i < st.waiting.len() {
            if st.waiting[i].not_before <= now {
                let job = st.waiting.swap_remove(i);
                st.ready.push_back(job);
            } else {
                i += 1;
            }
        }
        if !st.ready.is_empty() {
            if !has_session
                && let Some(until) = st.paused_until
                && until > now
            {
                return Next::Wait(until);
            }
            let n = max.min(st.ready.len());
            let jobs: Vec<QueuedRow> = st.ready.drain(..n).collect();
            st.in_flight += jobs.len();
            return Next::Jobs(jobs);
        }
        if let Some(next) = st.waiting.iter().map(|j| j.not_before).min() {
            return Next::Wait(next);
        }
        if st.in_flight > 0 {
            return Next::Wait(now + Duration::from_millis(50));
        }
        Next::Done
    }

    /// Whether a job is ready now (a worker without a session asks before taking a
    /// connection slot of the provider).
    pub(super) fn has_ready(&self, now: Instant) -> bool {
        let st = self.lock();
        !st.ready.is_empty() || st.waiting.iter().any(|j| j.not_before <= now)
    }

    /// Claims every job not in flight, ready or waiting (the site's gates are all suspended
    /// past the deadline: none of them will be sent by this run).
    pub(super) fn drain_all(&self) -> Vec<QueuedRow> {
        let mut st = self.lock();
        let mut jobs: Vec<QueuedRow> = st.ready.drain(..).collect();
        jobs.append(&mut st.waiting);
        st.in_flight += jobs.len();
        jobs
    }

    /// How long the suspension that holds every gate of the site lasts at `now`, and the
    /// reply that caused the one ending first, when all are suspended by a rule.
    pub(super) fn suspended(&self, now: Instant) -> Option<(std::time::Duration, String)> {
        let each: Option<Vec<_>> = self.gates.iter().map(|g| g.rule_suspension(now)).collect();
        each?.into_iter().min_by_key(|(left, _)| *left)
    }

    /// Claims every ready job (circuit breaker: they share the site's fate).
    pub(super) fn drain_ready(&self) -> Vec<QueuedRow> {
        let mut st = self.lock();
        let jobs: Vec<QueuedRow> = st.ready.drain(..).collect();
        st.in_flight += jobs.len();
        jobs
    }

    /// The site failed as a whole (421, or no MX answered): pause new connections for the
    /// retry delay that matches the number of consecutive failures.
    pub(super) fn pause(&self, retry: &RetryPolicy) {
        let mut st = self.lock();
        st.failures += 1;
        if let Some(delay) = retry.delay_after(st.failures) {
            let until = Instant::now() + delay;
            st.paused_until = Some(st.paused_until.map_or(until, |p| p.max(until)));
        }
    }

    /// A session was opened: the site is healthy again.
    pub(super) fn healthy(&self) {
        self.lock().failures = 0;
    }

    /// A claimed job got its final outcome.
    pub(super) fn complete(&self) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
    }

    /// A claimed job waits for its retry time.
    pub(super) fn retry(&self, job: QueuedRow) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        st.waiting.push(job);
    }

    /// Puts claimed jobs back at the front of the queue, in their order (so that the next
    /// session starts with the oldest, and no job is starved behind a failing one).
    pub(super) fn unclaim(&self, jobs: Vec<QueuedRow>) {
        let mut st = self.lock();
        for job in jobs.into_iter().rev() {
            st.in_flight = st.in_flight.saturating_sub(1);
            st.ready.push_front(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(rows: usize) -> SiteQueue {
        let limits = crate::delivery::GateLimits {
            connections: 1,
            messages_per_connection: 1,
            cap: None,
            start: None,
        };
        let gate = Arc::new(Gate::new("site".into(), false, limits, Vec::new().into()));
        SiteQueue::new(
            SiteWork {
                name: "site".into(),
                hosts: Vec::new().into(),
                rows: (0..rows).collect(),
                provider: None,
                tls: Default::default(),
            },
            vec![gate].into(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_site_feeds_open_sessions_only_and_backs_off_further_each_time() {
        let q = queue(4);
        let retry = RetryPolicy::parse("1m,5m").unwrap();
        let t0 = Instant::now();
        q.pause(&retry);
        assert!(matches!(q.take(1, t0, false), Next::Wait(u) if u == t0 + Duration::from_secs(60)));
        assert!(
            matches!(q.take(1, t0, true), Next::Jobs(j) if j.len() == 1),
            "a session already open may go on"
        );
        q.pause(&retry);
        assert!(
            matches!(q.take(1, t0, false), Next::Wait(u) if u == t0 + Duration::from_secs(300)),
            "second consecutive failure: the next wait"
        );
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(matches!(q.take(1, Instant::now(), false), Next::Jobs(_)));
        q.healthy();
        q.pause(&retry);
        let now = Instant::now();
        assert!(
            matches!(q.take(1, now, false), Next::Wait(u) if u == now + Duration::from_secs(60)),
            "a successful connection resets the back-off"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slot_comes_from_the_least_used_gate_that_gives_one() {
        let limits = crate::delivery::GateLimits {
            connections: 2,
            messages_per_connection: 1,
            cap: None,
            start: None,
        };
        let base = Gate::new("p".into(), true, limits, Vec::new().into());
        let ip = |o: u8| std::net::IpAddr::from([127, 0, 0, o]);
        let gates: Vec<Arc<Gate>> = (0..2)
            .map(|i| Arc::new(base.for_source(i, ip(10 + i as u8))))
            .collect();
        let q = SiteQueue::new(queue(1).work, gates.clone().into());
        let now = Instant::now();
        let source = |s: &Slot| s.gate().source.map(|(i, _)| i);
        let a = q.try_slot(now, |_| true).unwrap();
        let b = q.try_slot(now, |_| true).unwrap();
        assert_eq!((source(&a), source(&b)), (Some(0), Some(1)), "spread");
        assert_eq!(gates[1].label(), "p@127.0.0.11");
        drop((a, b));
        let only_second = q.try_slot(now, |g| g.source.is_some_and(|(i, _)| i == 1));
        assert_eq!(only_second.map(|s| source(&s)), Ok(Some(1)), "usable only");
        // No session at all opens from source 0: it alone is suspended.
        assert!(gates[0].refused_session(now, "421 go away", false).is_err());
        assert!(gates[0].suspended(now) && !gates[1].suspended(now));
        for _ in 0..3 {
            let s = q
                .try_slot(now + Duration::from_millis(200), |_| true)
                .unwrap();
            assert_eq!(source(&s), Some(1));
        }
    }

    #[test]
    fn unclaimed_jobs_keep_their_order() {
        let q = queue(3);
        let Next::Jobs(jobs) = q.take(3, Instant::now(), true) else {
            panic!("jobs expected");
        };
        q.unclaim(jobs);
        let Next::Jobs(again) = q.take(3, Instant::now(), true) else {
            panic!("jobs expected");
        };
        let rows: Vec<usize> = again.iter().map(|j| j.row).collect();
        assert_eq!(rows, vec![0, 1, 2]);
    }
}
