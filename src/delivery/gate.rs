//! What the engine learns about one provider (at one source address, with a `--source-ip`
//! pool) while it sends, shared by every worker of every site of that provider: the [`Gate`]. It hands out connection slots (at most the learnt
//! connection limit, new ones spaced out so that a limit is met by one refusal, not ten),
//! message slots (the learnt rate), and the messages-per-connection limit; it takes the
//! signals (accepted, throttled, refused at greeting) and adapts:
//!
//! - **rate, AIMD:** a throttle halves the rate (multiplicative decrease) and remembers the
//!   rate that was too fast as a ceiling; clean acceptance raises it again (additive increase),
//!   quickly up to three quarters of the ceiling, then slowly, probing.
//! - **connections:** a refusal at greeting while other sessions work lowers the limit to
//!   those sessions; after a quiet minute it grows by one again, up to the provider's limit.
//! - **messages per connection:** "too many messages" lowers it to what the session carried.
//! - **rules** ([`super::rules`]) override all three for their duration, or suspend.
//!
//! A provider's limits apply per sending IP: with a `--source-ip` pool the engine gives each
//! provider one gate per source address ([`Gate::for_source`]: the same limits and rules,
//! state of its own, named `google@192.0.2.1`), so that a throttle or a block of one address
//! slows or stops that address only. Without a pool there is one gate per provider.
//! Unknown sites get a gate of their own with the per-site limits of the command line.
//! Everything here is plain state behind a mutex, tested with a paused clock.
//!
//! A gate reports each change of its state that an operator would want to see (slowed,
//! suspended, a limit lowered, resumed: [`GateChange`]) on the run's event channel, once the
//! engine has told it where ([`Gate::report_changes_to`]).

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedSender, WeakUnboundedSender};
use tokio::time::Instant;

use super::work::Event;

use crate::provider::rules::{BackoffRule, Signal, show_rate, signal};
use crate::sender::{self, HoldKind, Learnt, Lesson, Limits, Recall};
use crate::units::Rate;

/// A new concurrent connection to a known provider at most this often (KumoMTA's "100 new
/// connections a minute" kept loosely). Unknown sites are not spaced: like Postfix, their
/// connections open at once up to the site's limit, and a refusal lowers the limit.
const CONNECT_SPACING: Duration = Duration::from_millis(100);
/// After a decrease, no message for this many intervals of the new rate (at most a second),
/// so that the receiver's bucket refills a little before the next one.
const RECOVERY_INTERVALS: f64 = 5.0;
/// Starting rate for a known provider (KumoMTA's default `max_message_rate`, 100/s): the rate
/// additive increase is scaled by, and where an unremembered provider's slow start ends.
pub const START_RATE: f64 = 100.0;
/// Where a provider nothing is remembered of starts (slow start): a tenth of [`START_RATE`],
/// raised by half every second messages are accepted at it, until the first throttle.
pub const SLOW_START_RATE: f64 = 10.0;
/// Slow start's growth per clean second: by half (doubling overshoots a limit by up to 2×,
/// enough to drain a receiver's burst allowance and earn a penalty box).
const SLOW_START_GROWTH: f64 = 1.5;
/// After a throttle the rate stays under this share of the rate that drew it for
/// [`crate::sender::QUIET_AFTER_THROTTLE`]; only then does it probe above.
const QUIET_SHARE: f64 = 0.85;
/// Never slower than this (one message a minute) unless a rule says so.
const MIN_RATE: f64 = 1.0 / 60.0;
/// A connection limit learnt from a refusal grows again after this long without one.
const CONNECTIONS_QUIET: Duration = Duration::from_secs(60);
/// What "not today" is to a gate whose daily budget is spent.
const SPENT: Duration = Duration::from_secs(86_400);

/// A gate's configured limits.
#[derive(Clone, Debug, PartialEq)]
pub struct GateLimits {
    /// Simultaneous connections at most.
    pub connections: usize,
    /// Messages per connection at most.
    pub messages_per_connection: usize,
    /// A hard cap on the rate (never exceeded).
    pub cap: Option<Rate>,
    /// The rate to start at (messages/s), `None`: unpaced until a throttle.
    pub start: Option<f64>,
}

/// A rate limit in force because of a rule, until an instant.
#[derive(Clone, Copy, Debug)]
struct Hold<T> {
    value: T,
    until: Instant,
}

fn held<T: Copy>(h: Option<Hold<T>>, now: Instant) -> Option<T> {
    h.filter(|h| h.until > now).map(|h| h.value)
}

#[derive(Debug)]
struct State {
    open: usize,
    connections: usize,
    connections_cut_at: Option<Instant>,
    connections_hold: Option<Hold<usize>>,
    last_grant: Option<Instant>,
    per_connection: usize,
    per_connection_hold: Option<Hold<usize>>,
    /// Messages per second; `None`: unpaced.
    rate: Option<f64>,
    ceiling: Option<f64>,
    rate_hold: Option<Hold<f64>>,
    next_send: Option<Instant>,
    last_change: Instant,
    last_decrease: Option<Instant>,
    /// A throttle of a message that started before this was paced at a rate already
    /// decreased for: an echo (the end of the last decrease's recovery pause, before which only
    /// slots reserved at the old rate start).
    echoes_until: Option<Instant>,
    /// Decreases since the last accepted message: the ceiling is set by the first of them
    /// only (a penalty box refuses everything, whatever the rate).
    streak: bool,
    suspended_until: Option<Instant>,
    /// The rule suspension in force (its end and the reply that caused it), as against the
    /// short pauses when no session opens.
    rule_suspension: Option<(Instant, String)>,
    /// The reply that caused the rate, connection or per-connection hold in force.
    hold_cause: String,
    /// Doubling the rate every clean second: nothing refused yet.
    slow_start: bool,
    /// When the ceiling was set (a throttle), for what is remembered.
    ceiling_at: Option<Instant>,
    /// No rate above [`QUIET_SHARE`] of the ceiling before this.
    probe_after: Option<Instant>,
    /// When a refusal taught the connection limit this run.
    connections_learnt: Option<Instant>,
    /// When "too many messages" taught messages per connection this run.
    per_connection_learnt: Option<Instant>,
    /// Messages it may still start today under a daily cap; `None`: no cap.
    budget: Option<usize>,
    /// Consecutive times no session at all could be opened.
    failures: u32,
    throttles: usize,
    replies: BTreeMap<String, usize>,
    rule_hits: Vec<(usize, Instant)>,
    accepted: VecDeque<Instant>,
    delivered: usize,
}

/// Whether messages were accepted at no less than three quarters of `rate` lately (over the
/// acceptances of the last two seconds): only then is the rate what limits sending.
fn rate_in_use(accepted: &VecDeque<Instant>, rate: f64, now: Instant) -> bool {
    let Some(first) = accepted.front() else {
        return false;
    };
    let span = now.saturating_duration_since(*first).as_secs_f64();
    let n = accepted.len();
    n >= 2 && span > 0.0 && (n - 1) as f64 / span >= 0.75 * rate
}

/// One provider's (or unknown site's) shared sending state.
#[derive(Debug)]
pub struct Gate {
    /// Provider name (or site name for an unknown site).
    pub name: Arc<str>,
    /// Whether this is a provider (rules by provider name apply, it is listed in reports).
    pub known: bool,
    /// The `--source-ip` address (its pool index and address) this gate is for; `None`: all
    /// the run's connections to the provider.
    pub source: Option<(usize, IpAddr)>,
    limits: GateLimits,
    rules: Arc<[BackoffRule]>,
    state: Mutex<State>,
    /// Shared by the gates of one provider's source addresses: a worker waiting for any of
    /// them wakes when one frees a slot.
    freed: Arc<Notify>,
    /// Where state changes are reported ([`Gate::report_changes_to`]); weak, so that a gate
    /// kept in the [`ProviderBook`] does not hold the run's event channel open.
    changes: OnceLock<WeakUnboundedSender<Event>>,
}

/// A change of a gate's state, reported as [`Event::Gate`].
#[derive(Clone, Debug, PartialEq)]
pub enum GateChange {
    /// The message rate was lowered to this (messages/s): a throttle halved it, or a rule set it.
    Slowed {
        /// Messages per second now.
        rate: f64,
    },
    /// No new session (and no message) before this time: a rule, or no session could be
    /// opened at all.
    Suspended {
        /// When the suspension ends.
        until: SystemTime,
    },
    /// At most this many simultaneous connections now.
    ConnectionsLowered {
        /// The new limit.
        to: usize,
    },
    /// At most this many messages per connection now.
    PerConnectionLowered {
        /// The new limit.
        to: usize,
    },
    /// A suspension ended: the next session was let through.
    Resumed,
}

/// A connection slot of a gate; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(Arc<Gate>);

impl Slot {
    /// The gate this slot is of.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.open = st.open.saturating_sub(1);
        drop(st);
        self.0.freed.notify_waiters();
    }
}

/// What a throttling reply did to the provider (for tests and logs).
#[derive(Clone, Debug, PartialEq)]
pub enum Reaction {
    /// A rule acted (its index in the rules in force).
    Rule(usize),
    /// The rate was halved to this (messages/s).
    Slowed(f64),
    /// An echo of a throttle already acted on: nothing more.
    Echo,
    /// One connection fewer: this many now.
    Connections(usize),
    /// Fewer messages per connection: this many now.
    PerConnection(usize),
}

impl Gate {
    /// A gate with `limits`, acting on `rules`.
    pub fn new(name: Arc<str>, known: bool, limits: GateLimits, rules: Arc<[BackoffRule]>) -> Self {
        Self::with_state(name, known, limits, rules, Arc::new(Notify::new()))
    }

    /// A fresh gate of the same provider, limits and rules for the source address `addr`
    /// (pool index `index`): its own state, and the same wake-ups as `self`.
    pub fn for_source(&self, index: usize, addr: IpAddr) -> Self {
        let mut g = Self::with_state(
            self.name.clone(),
            self.known,
            self.limits.clone(),
            self.rules.clone(),
            self.freed.clone(),
        );
        g.source = Some((index, addr));
        g
    }

    fn with_state(
        name: Arc<str>,
        known: bool,
        limits: GateLimits,
        rules: Arc<[BackoffRule]>,
        freed: Arc<Notify>,
    ) -> Self {
        let now = Instant::now();
        let state = State {
            open: 0,
            connections: limits.connections.max(1),
            connections_cut_at: None,
            connections_hold: None,
            last_grant: None,
            per_connection: limits.messages_per_connection.max(1),
            per_connection_hold: None,
            rate: limits
                .start
                .map(|s| cap(if known { SLOW_START_RATE.min(s) } else { s }, limits.cap)),
            ceiling: None,
            rate_hold: None,
            next_send: None,
            last_change: now,
            last_decrease: None,
            echoes_until: None,
            streak: false,
            suspended_until: None,
            rule_suspension: None,
            hold_cause: String::new(),
            slow_start: known && limits.start.is_some(),
            ceiling_at: None,
            probe_after: None,
            connections_learnt: None,
            per_connection_learnt: None,
            budget: None,
            failures: 0,
            throttles: 0,
            replies: BTreeMap::new(),
            rule_hits: Vec::new(),
            accepted: VecDeque::new(),
            delivered: 0,
        };
        Self {
            name,
            known,
            source: None,
            limits,
            rules,
            state: Mutex::new(state),
            freed,
            changes: OnceLock::new(),
        }
    }

    /// Reports this gate's state changes as [`Event::Gate`] on `events` from now on (once per
    /// gate; later calls change nothing).
    pub fn report_changes_to(&self, events: &UnboundedSender<Event>) {
        let _ = self.changes.set(events.downgrade());
    }

    /// Reports a change, with the reply that caused it.
    fn changed(&self, change: GateChange, reply: Option<&str>) {
        if let Some(tx) = self.changes.get().and_then(WeakUnboundedSender::upgrade) {
            let _ = tx.send(Event::Gate {
                gate: self.label(),
                provider: self.name.clone(),
                known: self.known,
                change,
                reply: reply.map(str::to_string),
                at: crate::outcome::now(),
            });
        }
    }

    /// The name shown in progress and the summary: the provider's, with the source address
    /// when the gate is one address's (`google@192.0.2.1`).
    pub fn label(&self) -> String {
        match self.source {
            Some((_, addr)) => format!("{}@{addr}", self.name),
            None => self.name.to_string(),
        }
    }

    /// The sending identity this gate's state belongs to.
    pub fn identity(&self) -> sender::Identity {
        sender::Identity::new(&self.name, self.source.map(|(_, a)| a))
    }

    /// The rule suspension in force at `now`: how long it still lasts and the reply that
    /// caused it.
    pub fn rule_suspension(&self, now: Instant) -> Option<(Duration, String)> {
        let st = self.lock();
        let (until, cause) = st.rule_suspension.as_ref().filter(|(u, _)| *u > now)?;
        Some((*until - now, cause.clone()))
    }

    /// Connection slots in use.
    pub fn open(&self) -> usize {
        self.lock().open
    }

    /// Whether the gate is suspended (a rule, or no session could be opened) at `now`.
    pub fn suspended(&self, now: Instant) -> bool {
        self.lock().suspended_until.is_some_and(|u| u > now)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a worker panicked; the state itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection slot now, or the instant to ask again.
    pub fn try_slot(self: &Arc<Self>, now: Instant) -> Result<Slot, Instant> {
        let mut st = self.lock();
        if let Some(until) = st.suspended_until.filter(|u| *u > now) {
            return Err(until);
        }
        if st.suspended_until.take().is_some() {
            self.changed(GateChange::Resumed, None);
        }
        if st.budget == Some(0) {
            // Today's cap is spent for this address: no new session (another gate of the
            // provider may still have room).
            return Err(now + SPENT);
        }
        st.grow_connections(now, self.limits.connections);
        let limit = held(st.connections_hold, now).unwrap_or(st.connections);
        if st.open >= limit {
            return Err(now + Duration::from_millis(250));
        }
        if self.known
            && st.open > 0
            && let Some(last) = st.last_grant
            && now < last + CONNECT_SPACING
        {
            return Err(last + CONNECT_SPACING);
        }
        st.open += 1;
        st.last_grant = Some(now);
        Ok(Slot(self.clone()))
    }

    /// Waits until a slot may have been freed (or `until`).
    pub async fn slot_freed(&self, until: Instant) {
        tokio::select! {
            () = self.freed.notified() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }

    /// Messages one connection may carry now.
    pub fn messages_per_connection(&self) -> usize {
        let st = self.lock();
        held(st.per_connection_hold, Instant::now()).unwrap_or(st.per_connection)
    }

    /// Whether messages are paced (then the next one is not announced ahead).
    pub fn paced(&self) -> bool {
        let st = self.lock();
        st.rate.is_some() || st.suspended_until.is_some_and(|u| u > Instant::now())
    }

    /// Reserves the start time of the next message (the rate, a suspension), and takes one
    /// message of today's budget under a cap: with none left, an instant a day away.
    pub fn send_slot(&self, now: Instant) -> Instant {
        let mut st = self.lock();
        match st.budget {
            Some(0) => return now + SPENT,
            Some(ref mut n) => *n -= 1,
            None => {}
        }
        let earliest = st.suspended_until.map_or(now, |u| u.max(now));
        let Some(rate) = held(st.rate_hold, now).or(st.rate) else {
            return earliest;
        };
        let slot = st.next_send.map_or(earliest, |n| n.max(earliest));
        st.next_send = Some(slot + Duration::from_secs_f64(1.0 / rate.max(MIN_RATE / 60.0)));
        slot
    }

    /// A message was accepted: additive increase, at most once a second.
    pub fn accepted(&self, now: Instant) {
        let mut st = self.lock();
        st.delivered += 1;
        st.failures = 0;
        st.streak = false;
        st.accepted.push_back(now);
        while st
            .accepted
            .front()
            .is_some_and(|t| *t + Duration::from_secs(2) < now)
        {
            st.accepted.pop_front();
        }
        if held(st.rate_hold, now).is_some() || now < st.last_change + Duration::from_secs(1) {
            return;
        }
        let Some(rate) = st.rate else { return };
        if !rate_in_use(&st.accepted, rate, now) {
            // Sending is limited by something else (connections, the receiver's speed): a
            // higher rate would be one nobody has tried, so it is not learnt (RFC 7661's rule
            // for congestion windows).
            return;
        }
        let step = match st.ceiling {
            None => self.limits.start.unwrap_or(START_RATE) * 0.05,
            Some(c) if rate < 0.75 * c => 0.2 * c,
            Some(c) => (0.01 * c).max(0.5),
        };
        let mut target = match st.ceiling {
            _ if st.slow_start => rate * SLOW_START_GROWTH,
            Some(c) if rate < 0.75 * c => (rate + step).min(0.75 * c),
            _ => rate + step,
        };
        if let Some(c) = st.ceiling
            && st.probe_after.is_some_and(|t| now < t)
        {
            // Quiet after a throttle: stay under the rate that drew it.
            target = target.min(QUIET_SHARE * c).max(rate);
        }
        st.rate = Some(cap(target, self.limits.cap));
        st.last_change = now;
    }

    /// A session could not be opened because the provider refused it at greeting (or with
    /// a throttling reply before any message). `Ok(n)`: other sessions work, the connection
    /// limit is now `n`; `Err(until)`: none does, the provider is paused until then.
    pub fn refused_session(
        &self,
        now: Instant,
        text: &str,
        holding_slot: bool,
    ) -> Result<usize, Instant> {
        let mut st = self.lock();
        st.count_throttle(text);
        let others = st.open.saturating_sub(usize::from(holding_slot));
        if others > 0 {
            if others < st.connections {
                self.changed(GateChange::ConnectionsLowered { to: others }, Some(text));
            }
            st.connections = others;
            st.connections_cut_at = Some(now);
            st.connections_learnt = Some(now);
            return Ok(others);
        }
        st.failures += 1;
        let wait = Duration::from_secs(1) * 2u32.saturating_pow(st.failures.min(8));
        let until = now + wait;
        st.suspended_until = Some(st.suspended_until.map_or(until, |u| u.max(until)));
        self.suspended_change(until, now, text);
        Err(until)
    }

    /// Reports a suspension until `until` (an instant of the engine's clock, `now` being now).
    fn suspended_change(&self, until: Instant, now: Instant, reply: &str) {
        let until = SystemTime::now() + until.saturating_duration_since(now);
        self.changed(GateChange::Suspended { until }, Some(reply));
    }

    /// A throttling reply during a transaction that started at `started`; `sent` messages
    /// went over the session.
    pub fn throttled(&self, now: Instant, text: &str, sent: usize, started: Instant) -> Reaction {
        let lower = text.to_ascii_lowercase();
        let mut st = self.lock();
        st.count_throttle(text);
        if let Some(i) = self.rule_for(&mut st, &lower, now) {
            self.apply_rule(&mut st, i, now, text);
            return Reaction::Rule(i);
        }
        let reaction = match signal(&lower) {
            Signal::Connections => {
                let n = st.open.saturating_sub(1).max(1);
                st.connections = st.connections.min(n);
                st.connections_cut_at = Some(now);
                st.connections_learnt = Some(now);
                Reaction::Connections(st.connections)
            }
            Signal::MessagesPerConnection => {
                let n = sent.saturating_sub(1).max(1);
                st.per_connection = st.per_connection.min(n);
                st.per_connection_learnt = Some(now);
                Reaction::PerConnection(st.per_connection)
            }
            Signal::Rate => self.slow_down(&mut st, now, started),
        };
        let change = match reaction {
            Reaction::Slowed(rate) => Some(GateChange::Slowed { rate }),
            Reaction::Connections(to) => Some(GateChange::ConnectionsLowered { to }),
            Reaction::PerConnection(to) => Some(GateChange::PerConnectionLowered { to }),
            Reaction::Echo | Reaction::Rule(_) => None,
        };
        if let Some(change) = change {
            self.changed(change, Some(text));
        }
        reaction
    }

    /// Multiplicative decrease, once per excess: a message that started before the last
    /// decrease was sent at the old rate, so its throttle is an echo of that one.
    fn slow_down(&self, st: &mut State, now: Instant, started: Instant) -> Reaction {
        if st.echoes_until.is_some_and(|d| started < d) {
            return Reaction::Echo;
        }
        let current = st.rate.unwrap_or_else(|| {
            // Unpaced until now: what was accepted over the last two seconds (at least 10/s,
            // so that a throttle early in a run does not crawl).
            (st.accepted.len() as f64 / 2.0).max(10.0)
        });
        if !st.streak {
            let ceiling = st.ceiling.map_or(current, |c| c.min(current));
            st.ceiling = Some(ceiling.max(MIN_RATE));
            st.ceiling_at = Some(now);
            st.probe_after = Some(now + Duration::from_secs(crate::sender::QUIET_AFTER_THROTTLE));
        }
        st.streak = true;
        st.slow_start = false;
        let rate = (current / 2.0).max(MIN_RATE);
        st.rate = Some(cap(rate, self.limits.cap));
        let recovery = now + Duration::from_secs_f64((RECOVERY_INTERVALS / rate).min(1.0));
        st.next_send = Some(recovery);
        st.last_decrease = Some(now);
        st.echoes_until = Some(recovery);
        st.last_change = now;
        Reaction::Slowed(rate)
    }

    /// The first rule matching `lower` that has now matched often enough.
    fn rule_for(&self, st: &mut State, lower: &str, now: Instant) -> Option<usize> {
        let provider = self.known.then_some(&*self.name);
        let i = self.rules.iter().position(|r| r.matches(provider, lower))?;
        let hour = Duration::from_secs(3600);
        st.rule_hits.retain(|(_, at)| *at + hour > now);
        st.rule_hits.push((i, now));
        let hits = st.rule_hits.iter().filter(|(r, _)| *r == i).count();
        (hits >= self.rules[i].times as usize).then_some(i)
    }

    fn apply_rule(&self, st: &mut State, i: usize, now: Instant, text: &str) {
        let a = &self.rules[i].action;
        let until = now + a.duration;
        let cause = cause_of(text);
        if a.suspend {
            st.suspended_until = Some(st.suspended_until.map_or(until, |u| u.max(until)));
            if st.rule_suspension.as_ref().is_none_or(|(u, _)| *u < until) {
                st.rule_suspension = Some((until, cause.clone()));
            }
            self.suspended_change(until, now, text);
        }
        if a.rate.is_some() || a.connections.is_some() || a.messages_per_connection.is_some() {
            st.hold_cause = cause;
            st.slow_start = false;
        }
        if let Some(r) = a.rate {
            let value = r.count as f64 / r.per.as_secs_f64();
            st.rate_hold = Some(Hold { value, until });
            // After the hold, ramp up from there.
            st.rate = Some(value);
            st.ceiling = Some(st.ceiling.map_or(value * 4.0, |c| c.max(value)));
            st.next_send = Some(now + Duration::from_secs_f64(1.0 / value));
            st.last_change = until;
            self.changed(GateChange::Slowed { rate: value }, Some(text));
        }
        if let Some(n) = a.connections {
            st.connections_hold = Some(Hold { value: n, until });
            self.changed(GateChange::ConnectionsLowered { to: n }, Some(text));
        }
        if let Some(n) = a.messages_per_connection {
            st.per_connection_hold = Some(Hold { value: n, until });
            self.changed(GateChange::PerConnectionLowered { to: n }, Some(text));
        }
    }

    /// Starts from what is remembered of this gate's identity: learnt limits (a remembered
    /// connection limit is not raised again this run; age relaxes it between runs), a ceiling
    /// and its quiet time, holds in force, and today's budget under a cap.
    pub fn recall(&self, m: &GateMemory, now: Instant) {
        let mut st = self.lock();
        let r = &m.recall;
        if let Some(n) = r.connections {
            st.connections = n.clamp(1, self.limits.connections.max(1));
        }
        if let Some(n) = r.per_connection {
            st.per_connection = n.clamp(1, self.limits.messages_per_connection.max(1));
        }
        match (r.rate, r.ceiling) {
            (rate, Some((c, quiet))) => {
                let start = rate.unwrap_or(c / 2.0).min(QUIET_SHARE * c);
                st.rate = Some(cap(start.max(MIN_RATE), self.limits.cap));
                st.ceiling = Some(c.max(MIN_RATE));
                st.probe_after = Some(now + Duration::from_secs(quiet));
                st.slow_start = false;
            }
            (Some(rate), None) if st.rate.is_some() => {
                st.rate = Some(cap(rate.max(MIN_RATE), self.limits.cap));
            }
            _ => {}
        }
        for h in &m.holds {
            let until = now + h.remaining;
            match h.kind {
                HoldKind::Suspend => {
                    st.suspended_until = Some(st.suspended_until.map_or(until, |u| u.max(until)));
                    st.rule_suspension = Some((until, h.cause.clone()));
                }
                HoldKind::Rate => {
                    st.rate_hold = Some(Hold {
                        value: h.value,
                        until,
                    });
                    st.rate = Some(h.value);
                    st.slow_start = false;
                }
                HoldKind::Connections => {
                    st.connections_hold = Some(Hold {
                        value: h.value as usize,
                        until,
                    });
                }
                HoldKind::PerConnection => {
                    st.per_connection_hold = Some(Hold {
                        value: h.value as usize,
                        until,
                    });
                }
            }
            if h.kind != HoldKind::Suspend {
                st.hold_cause.clone_from(&h.cause);
            }
        }
        st.budget = m.budget;
    }

    /// What this run taught about the gate's identity, with wall-clock times (`wall` is the
    /// Unix time at `now`): limits learnt this run (not those it started from) and holds in
    /// force.
    pub fn lesson(&self, now: Instant, wall: u64) -> Lesson {
        let st = self.lock();
        let at = |t: Instant| wall.saturating_sub(now.saturating_duration_since(t).as_secs());
        let until = |t: Instant| {
            let left = t.saturating_duration_since(now);
            wall + left.as_secs() + u64::from(left.subsec_nanos() > 0)
        };
        let limits = Limits {
            connections: st.connections_learnt.map(|t| Learnt {
                value: st.connections,
                at: at(t),
            }),
            per_connection: st.per_connection_learnt.map(|t| Learnt {
                value: st.per_connection,
                at: at(t),
            }),
            rate_accepted: st
                .rate
                .filter(|_| st.delivered > 0 && held(st.rate_hold, now).is_none())
                .map(|value| Learnt { value, at: wall }),
            rate_refused: st
                .ceiling
                .zip(st.ceiling_at)
                .map(|(value, t)| Learnt { value, at: at(t) }),
        };
        let mut holds = Vec::new();
        if let Some((u, cause)) = st.rule_suspension.as_ref().filter(|(u, _)| *u > now) {
            holds.push(sender::Hold {
                kind: HoldKind::Suspend,
                value: 0.0,
                until: until(*u),
                cause: cause.clone(),
            });
        }
        let kept = [
            (HoldKind::Rate, st.rate_hold.map(|h| (h.value, h.until))),
            (
                HoldKind::Connections,
                st.connections_hold.map(|h| (h.value as f64, h.until)),
            ),
            (
                HoldKind::PerConnection,
                st.per_connection_hold.map(|h| (h.value as f64, h.until)),
            ),
        ];
        for (kind, h) in kept {
            if let Some((value, u)) = h.filter(|(_, u)| *u > now) {
                holds.push(sender::Hold {
                    kind,
                    value,
                    until: until(u),
                    cause: st.hold_cause.clone(),
                });
            }
        }
        Lesson { limits, holds }
    }

    /// One line for progress: `ok 120/s, 5 conns`, `slowed to 10/min`, `suspended until 14:05`.
    pub fn status(&self, now: Instant) -> String {
        let st = self.lock();
        if let Some(until) = st.suspended_until.filter(|u| *u > now) {
            let by = match &st.rule_suspension {
                Some((u, cause)) if *u >= until => format!(" by {cause}"),
                _ => String::new(),
            };
            return format!("suspended until {}{by}", wall_clock(until - now));
        }
        let rate = held(st.rate_hold, now).or(st.rate);
        let conns = held(st.connections_hold, now).unwrap_or(st.connections);
        let pace = rate.map_or("unpaced".to_string(), show_rate);
        if st.last_decrease.is_some() || st.rate_hold.is_some_and(|h| h.until > now) {
            format!("slowed to {pace}, {}/{conns} conns", st.open)
        } else {
            format!("{pace}, {}/{conns} conns", st.open)
        }
    }

    /// What the summary says about this gate.
    pub fn report(&self) -> ProviderReport {
        let st = self.lock();
        ProviderReport {
            name: self.label(),
            suspended: st.suspended_until.is_some_and(|u| u > Instant::now()),
            suspension: st
                .rule_suspension
                .as_ref()
                .filter(|(u, _)| *u > Instant::now())
                .map(|(u, cause)| (*u - Instant::now(), cause.clone())),
            delivered: st.delivered,
            throttles: st.throttles,
            replies: st.replies.clone(),
            connections: st.connections,
            messages_per_connection: st.per_connection,
            rate: st.rate,
        }
    }
}

impl State {
    fn count_throttle(&mut self, text: &str) {
        self.throttles += 1;
        let key: String = text.chars().take(72).collect();
        *self.replies.entry(key).or_default() += 1;
    }

    /// After a quiet minute, one more connection (up to the configured limit).
    fn grow_connections(&mut self, now: Instant, max: usize) {
        if self.connections < max
            && self
                .connections_cut_at
                .is_some_and(|at| now >= at + CONNECTIONS_QUIET)
        {
            self.connections += 1;
            self.connections_cut_at = Some(now);
        }
    }
}

/// The cause a hold remembers: the reply's first line, white space folded, at most 100
/// characters.
fn cause_of(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(100)
        .collect()
}

/// A hold remembered from an earlier run, as a gate takes it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecalledHold {
    /// What it holds back.
    pub kind: HoldKind,
    /// Its limit (messages/s, or a count).
    pub value: f64,
    /// How long it still lasts.
    pub remaining: Duration,
    /// The reply that caused it.
    pub cause: String,
}

/// What a gate starts from: what is remembered of its identity, and today's budget.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateMemory {
    /// Learnt limits, relaxed by age.
    pub recall: Recall,
    /// Holds in force.
    pub holds: Vec<RecalledHold>,
    /// Messages it may send today under a daily cap (its reservation); `None`: no cap.
    pub budget: Option<usize>,
}

fn cap(rate: f64, cap: Option<Rate>) -> f64 {
    match cap {
        Some(c) => rate.min(c.count as f64 / c.per.as_secs_f64()),
        None => rate,
    }
}

/// `HH:MM` (UTC) of the instant `ahead` from now.
fn wall_clock(ahead: Duration) -> String {
    let at = SystemTime::now() + ahead;
    let secs = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    crate::clock::hh_mm(secs)
}

/// The end-of-run account of one provider.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProviderReport {
    /// Provider (or site) name; `provider@source-ip` for one source address's gate.
    pub name: String,
    /// Messages it accepted this run.
    pub delivered: usize,
    /// Throttling replies it gave.
    pub throttles: usize,
    /// Those replies (first 72 characters) and how often each came.
    pub replies: BTreeMap<String, usize>,
    /// Connection limit at the end.
    pub connections: usize,
    /// Messages per connection at the end.
    pub messages_per_connection: usize,
    /// Rate at the end (messages/s), `None`: unpaced.
    pub rate: Option<f64>,
    /// Suspended at the end (a rule, or no session could be opened).
    pub suspended: bool,
    /// A rule's suspension in force at the end: how long it still lasts, and the reply that
    /// caused it.
    pub suspension: Option<(Duration, String)>,
}

/// Every gate of a run, for progress and the summary; clones share it.
#[derive(Clone, Debug, Default)]
pub struct ProviderBook(Arc<Mutex<Vec<Arc<Gate>>>>);

impl PartialEq for ProviderBook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl ProviderBook {
    /// Adds a gate.
    pub fn add(&self, gate: Arc<Gate>) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(gate);
    }

    /// Has every gate report its state changes on `events` ([`Gate::report_changes_to`]).
    pub fn report_changes_to(&self, events: &UnboundedSender<Event>) {
        let gates = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for g in gates.iter() {
            g.report_changes_to(events);
        }
    }

    /// Known providers' status lines (`google: 120/s, 5/5 conns`).
    pub fn status_lines(&self) -> Vec<String> {
        let now = Instant::now();
        let gates = self.0.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .iter()
            .filter(|g| g.known)
            .map(|g| format!("{}: {}", g.label(), g.status(now)))
            .collect()
    }

    /// Every gate's lesson, by identity (`wall`: the Unix time now).
    pub fn lessons(&self, wall: u64) -> Vec<(sender::Identity, Lesson)> {
        let now = Instant::now();
        let gates = self.0.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .iter()
            .map(|g| (g.identity(), g.lesson(now, wall)))
            .collect()
    }

    /// Reports of the known providers and of any site that throttled.
    pub fn reports(&self) -> Vec<ProviderReport> {
        let gates = self.0.lock().unwrap_or_else(|e| e.into_inner());
        gates
            .iter()
            .map(|g| (g.known, g.report()))
            .filter(|(known, r)| *known || r.throttles > 0)
            .map(|(_, r)| r)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::rules::builtin_rules;

    /// A known provider's gate; paced at `start` from the first message (past slow start).
    fn gate(connections: usize, start: Option<f64>) -> Arc<Gate> {
        let g = fresh(connections, start);
        {
            let mut st = g.lock();
            st.rate = start;
            st.slow_start = false;
        }
        g
    }

    /// A known provider's gate as a run with nothing remembered starts it.
    fn fresh(connections: usize, start: Option<f64>) -> Arc<Gate> {
        let limits = GateLimits {
            connections,
            messages_per_connection: 50,
            cap: None,
            start,
        };
        Arc::new(Gate::new(
            "yahoo".into(),
            true,
            limits,
            builtin_rules().into(),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn with_nothing_remembered_the_rate_starts_low_and_grows_by_half_until_a_throttle() {
        let g = fresh(5, Some(START_RATE));
        let mut now = Instant::now();
        assert_eq!(g.report().rate, Some(SLOW_START_RATE));
        for want in [15.0, 22.5, 33.75] {
            feed(&g, &mut now, 1.01);
            assert!(
                (g.report().rate.unwrap() - want).abs() < 1e-6,
                "{:?}",
                g.report()
            );
        }
        let started = now;
        now += Duration::from_millis(10);
        assert_eq!(
            g.throttled(now, "421 4.7.0 Try again later", 1, started),
            Reaction::Slowed(33.75 / 2.0)
        );
        feed(&g, &mut now, 1.01);
        let rate = g.report().rate.unwrap();
        assert!(
            rate < 33.75 && rate > 33.75 / 2.0,
            "AIMD from there, not doubling: {rate}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_of_messages_paced_before_a_decrease_are_echoes() {
        let g = gate(5, Some(80.0));
        let t0 = Instant::now();
        let text = "421 4.7.0 Try again later";
        assert_eq!(g.throttled(t0, text, 1, t0), Reaction::Slowed(40.0));
        // Slots reserved at 80/s start during the recovery pause (5 intervals of 40/s).
        let paced_before = t0 + Duration::from_millis(50);
        assert_eq!(
            g.throttled(paced_before, text, 1, paced_before),
            Reaction::Echo
        );
        let after = t0 + Duration::from_millis(130);
        assert_eq!(g.throttled(after, text, 1, after), Reaction::Slowed(20.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_starts_from_what_is_remembered_and_teaches_what_it_learnt() {
        let g = fresh(5, Some(START_RATE));
        let now = Instant::now();
        g.recall(
            &GateMemory {
                recall: Recall {
                    connections: Some(3),
                    per_connection: Some(20),
                    rate: Some(60.0),
                    ceiling: Some((80.0, 600)),
                },
                holds: vec![RecalledHold {
                    kind: HoldKind::Suspend,
                    value: 0.0,
                    remaining: Duration::from_secs(90),
                    cause: "421 4.7.0 [TSS04] deferred".into(),
                }],
                budget: Some(1),
            },
            now,
        );
        assert_eq!(g.try_slot(now).unwrap_err(), now + Duration::from_secs(90));
        assert!(
            g.status(now).contains("by 421 4.7.0 [TSS04]"),
            "{}",
            g.status(now)
        );
        let later = now + Duration::from_secs(91);
        let r = g.report();
        assert_eq!(
            (r.connections, r.messages_per_connection, r.rate),
            (3, 20, Some(60.0))
        );
        // One message of budget: then no slot and no message until tomorrow.
        let slot = g.try_slot(later).unwrap();
        assert!(g.send_slot(later) < later + Duration::from_secs(1));
        assert!(g.send_slot(later) >= later + SPENT);
        drop(slot);
        assert!(g.try_slot(later).is_err(), "budget spent");
        // The lesson: the suspension still in force (at `now`), not the limits recalled.
        let lesson = g.lesson(now, 1_000_000);
        assert_eq!(lesson.limits.connections, None);
        assert_eq!(lesson.limits.rate_refused, None);
        assert_eq!(lesson.holds.len(), 1);
        assert_eq!(lesson.holds[0].until, 1_000_090);
        // A refusal while another session works teaches a connection limit.
        let g = fresh(5, Some(START_RATE));
        let _a = g.try_slot(now).unwrap();
        let _b = g.try_slot(now + CONNECT_SPACING).unwrap();
        assert_eq!(g.refused_session(now, "421 too many", true), Ok(1));
        let lesson = g.lesson(now + Duration::from_secs(5), 1_000_000);
        assert_eq!(
            lesson.limits.connections,
            Some(Learnt {
                value: 1,
                at: 999_995
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slots_are_limited_spaced_and_freed_on_drop() {
        let g = gate(2, None);
        let t0 = Instant::now();
        let a = g.try_slot(t0).unwrap();
        assert_eq!(
            g.try_slot(t0).unwrap_err(),
            t0 + CONNECT_SPACING,
            "spaced out"
        );
        let t1 = t0 + CONNECT_SPACING;
        let _b = g.try_slot(t1).unwrap();
        assert!(g.try_slot(t1 + CONNECT_SPACING).is_err(), "limit 2");
        drop(a);
        assert!(g.try_slot(t1 + CONNECT_SPACING).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_sites_connections_open_at_once_up_to_its_limit() {
        let limits = GateLimits {
            connections: 3,
            messages_per_connection: 100,
            cap: None,
            start: None,
        };
        let g = Arc::new(Gate::new(
            "mx.site.test".into(),
            false,
            limits,
            Vec::new().into(),
        ));
        let t0 = Instant::now();
        let slots: Vec<Slot> = (0..3).map(|_| g.try_slot(t0).unwrap()).collect();
        assert!(g.try_slot(t0).is_err(), "limit 3");
        drop(slots);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_at_greeting_lowers_the_limit_or_pauses_when_nothing_works() {
        let g = gate(5, None);
        let t0 = Instant::now();
        let mut slots = Vec::new();
        for i in 0..4u32 {
            slots.push(g.try_slot(t0 + CONNECT_SPACING * i).unwrap());
        }
        let now = t0 + CONNECT_SPACING * 4;
        assert_eq!(
            g.refused_session(now, "421 4.7.0 too many connections", true),
            Ok(3)
        );
        slots.pop();
        assert!(
            g.try_slot(now + CONNECT_SPACING).is_err(),
            "3 open, limit 3"
        );
        drop(slots);
        let s = g.try_slot(now + CONNECT_SPACING).unwrap();
        let paused = g
            .refused_session(now, "421 try again later", true)
            .unwrap_err();
        assert_eq!(paused, now + Duration::from_secs(2));
        drop(s);
        assert_eq!(
            g.try_slot(now).unwrap_err(),
            paused,
            "the provider is paused"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn aimd_halves_once_per_burst_and_ramps_back_up() {
        let g = gate(5, Some(100.0));
        let t0 = Instant::now();
        let before = t0 - Duration::from_millis(1);
        let text = "421 4.7.0 Try again later";
        assert_eq!(g.throttled(t0, text, 1, before), Reaction::Slowed(50.0));
        assert_eq!(
            g.throttled(t0, text, 1, before),
            Reaction::Echo,
            "sent before it"
        );
        assert_eq!(
            g.send_slot(t0),
            t0 + Duration::from_millis(100),
            "recovery: 5 intervals"
        );
        let mut now = t0;
        // Accepted as fast as the gate allows: the rate is what limits, so it grows.
        for expected in [70.0, 75.0] {
            feed(&g, &mut now, 1.01);
            let rate = g.report().rate.unwrap();
            assert!(
                (rate - expected).abs() < 1e-6,
                "fast to 3/4 of the ceiling: {rate}"
            );
        }
        feed(&g, &mut now, 1.01);
        assert!(
            (g.report().rate.unwrap() - 76.0).abs() < 1e-6,
            "then 1% of it a second"
        );
        assert!(
            g.status(now).starts_with("slowed to 76/s"),
            "{}",
            g.status(now)
        );
    }

    /// Messages accepted at the gate's current rate for `secs` seconds from `now`.
    fn feed(g: &Gate, now: &mut Instant, secs: f64) {
        let end = *now + Duration::from_secs_f64(secs);
        while *now < end {
            *now += Duration::from_secs_f64(1.0 / g.report().rate.unwrap());
            g.accepted(*now);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_that_is_not_what_limits_sending_is_not_raised() {
        let g = gate(5, Some(100.0));
        let mut now = Instant::now();
        for _ in 0..50 {
            now += Duration::from_millis(100);
            g.accepted(now);
        }
        assert_eq!(g.report().rate, Some(100.0), "10/s accepted: 100/s untried");
        feed(&g, &mut now, 2.5);
        let rate = g.report().rate.unwrap();
        assert!(rate > 100.0, "sending at the rate: it grows ({rate})");
    }

    #[tokio::test(start_paused = true)]
    async fn rules_act_at_their_count_and_suspend_or_slow() {
        let g = gate(5, Some(100.0));
        let now = Instant::now();
        let r = g.throttled(
            now,
            "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred",
            3,
            now,
        );
        assert!(matches!(r, Reaction::Rule(_)));
        let until = g.try_slot(now).unwrap_err();
        assert_eq!(until, now + Duration::from_secs(7200));
        assert!(
            g.status(now).starts_with("suspended until "),
            "{}",
            g.status(now)
        );
        let g = gate(5, Some(100.0));
        g.throttled(
            now,
            "421 4.7.0 [TS03] All messages from x will be permanently deferred",
            3,
            now,
        );
        assert_eq!(g.status(now), "slowed to 10/min, 0/5 conns");
        let g = gate(5, Some(100.0));
        let text = "451 4.7.500 Server busy. Please try again later";
        let later = now + Duration::from_secs(1);
        assert!(matches!(
            g.throttled(now, text, 1, now),
            Reaction::Slowed(_)
        ));
        assert_eq!(g.throttled(later, text, 1, later), Reaction::Slowed(25.0));
        assert!(
            matches!(g.throttled(later, text, 1, later), Reaction::Rule(_)),
            "third time"
        );
        assert_eq!(g.report().throttles, 3);
    }

    /// The changes reported on the event channel so far: (label, change, reply).
    fn drain(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<Event>,
    ) -> Vec<(String, GateChange, Option<String>)> {
        let mut seen = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if let Event::Gate {
                gate,
                change,
                reply,
                ..
            } = ev
            {
                seen.push((gate, change, reply));
            }
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn state_changes_are_reported_on_the_event_channel_once_each() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let g = gate(5, Some(100.0));
        g.report_changes_to(&tx);
        let t0 = Instant::now();
        let busy = "421 4.7.0 Try again later";
        g.throttled(t0, busy, 1, t0 - Duration::from_millis(1));
        g.throttled(t0, busy, 1, t0 - Duration::from_millis(1));
        let seen = drain(&mut rx);
        assert_eq!(
            seen,
            vec![(
                "yahoo".into(),
                GateChange::Slowed { rate: 50.0 },
                Some(busy.into())
            )],
            "the echo changes nothing and is not reported"
        );
        let tss04 = "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred";
        g.throttled(t0, tss04, 3, t0);
        let seen = drain(&mut rx);
        assert!(
            matches!(&seen[..], [(_, GateChange::Suspended { .. }, Some(r))] if r == tss04),
            "{seen:?}"
        );
        let until = g.try_slot(t0).unwrap_err();
        assert!(drain(&mut rx).is_empty(), "still suspended: nothing new");
        let slot = g.try_slot(until).unwrap();
        assert_eq!(
            drain(&mut rx),
            vec![("yahoo".into(), GateChange::Resumed, None)]
        );
        let _other = g.try_slot(until + CONNECT_SPACING).unwrap();
        assert!(drain(&mut rx).is_empty(), "resumed once");
        g.throttled(
            until,
            "421 4.7.0 Too many messages on this connection",
            9,
            until,
        );
        assert!(matches!(
            drain(&mut rx)[..],
            [(_, GateChange::PerConnectionLowered { to: 8 }, _)]
        ));
        assert_eq!(
            g.refused_session(until, "421 4.7.0 too many connections", false),
            Ok(2)
        );
        assert!(matches!(
            drain(&mut rx)[..],
            [(_, GateChange::ConnectionsLowered { to: 2 }, _)]
        ));
        drop(slot);
        // The gate holds the channel weakly: once the engine's sender is gone, it is closed.
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_messages_lowers_messages_per_connection() {
        let g = gate(5, None);
        let now = Instant::now();
        let r = g.throttled(
            now,
            "421 4.7.0 Too many messages on this connection",
            21,
            now,
        );
        assert_eq!(r, Reaction::PerConnection(20));
        assert_eq!(g.messages_per_connection(), 20);
    }
}
