//! One site's queue of rows, shared by the site's workers: which rows are ready, which wait for
//! their retry time, how many are in flight, and the site-wide state that gates new connections
//! (the pause after a 421 or an unreachable site, and its back-off).
//!
//! The provider-wide limits (connections, rate, messages per connection, suspensions) are
//! the queue's [`Gate`], shared by every site of the provider.
//!
//! Plain state behind a mutex, no I/O and no waiting, so the scheduling rules are tested here
//! with a paused clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::engine::SiteWork;
use super::retry::RetryPolicy;
use crate::provider::Gate;

/// One row to deliver, with its attempts so far.
#[derive(Clone, Copy, Debug)]
pub(super) struct Job {
    /// Row index (as handed in).
    pub(super) row: usize,
    /// Attempts made (each transient failure adds one).
    pub(super) attempts: u32,
    /// Not to be tried before this instant (the retry delay).
    pub(super) not_before: Instant,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Job>,
    waiting: Vec<Job>,
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
    Jobs(Vec<Job>),
    /// Nothing to take before this instant (or until jobs in flight settle).
    Wait(Instant),
    /// Every row of the site has a final outcome.
    Done,
}

/// A site's work and its queue state.
pub(super) struct SiteQueue {
    /// The site (name, MX hosts, rows).
    pub(super) work: SiteWork,
    /// The limits of the site's provider (shared with its other sites), or the site's own.
    pub(super) gate: Arc<Gate>,
    state: Mutex<QueueState>,
}

impl SiteQueue {
    /// A queue with every row of `work` ready now, sending under `gate`.
    pub(super) fn new(work: SiteWork, gate: Arc<Gate>) -> Self {
        let now = Instant::now();
        let state = QueueState {
            ready: work
                .rows
                .iter()
                .map(|&row| Job {
                    row,
                    attempts: 0,
                    not_before: now,
                })
                .collect(),
            ..QueueState::default()
        };
        Self {
            work,
            gate,
            state: Mutex::new(state),
        }
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
            let jobs: Vec<Job> = st.ready.drain(..n).collect();
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

    /// Claims every ready job (circuit breaker: they share the site's fate).
    pub(super) fn drain_ready(&self) -> Vec<Job> {
        let mut st = self.lock();
        let jobs: Vec<Job> = st.ready.drain(..).collect();
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
    pub(super) fn retry(&self, job: Job) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        st.waiting.push(job);
    }

    /// Puts claimed jobs back at the front of the queue, in their order (so that the next
    /// session starts with the oldest, and no job is starved behind a failing one).
    pub(super) fn unclaim(&self, jobs: Vec<Job>) {
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
        let limits = crate::provider::GateLimits {
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
            },
            gate,
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
