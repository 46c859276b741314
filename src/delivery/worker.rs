//! A worker: one connection slot of one site. It takes a batch of rows from the site's queue,
//! renders them (opening a session meanwhile), and sends them one by one over its session,
//! applying [`decide`] on each attempt. It keeps its session across batches, closes it
//! when there is nothing to send for a while, and stops at the deadline or on cancellation.
//!
//! A worker sends under the provider gate whose connection slot it holds (with a
//! `--source-ip` pool, the gate of one source address, and its session leaves from that
//! address): pacing, acceptances and throttles all go to that gate.
//!
//! This file only sequences the steps; what an answer means is decided in [`super::action`],
//! how a session is opened in [`super::session`], and the queue rules live in [`super::queue`].

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinError;
use tokio::time::{Instant, sleep_until};

use super::Gate;
use super::action::{Action, Attempt, Rest, Row, SessionFacts, decide};
use super::connect::Connect;
use super::ctx::Ctx;
use super::gate::{Reaction, Slot};
use super::queue::{Next, QueuedRow, SiteQueue};
use super::session::{ConnectFailure, Session, local_refusal, open_session};
use super::shaping;
use super::work::Event;
use crate::clock::hh_mm;
use crate::message::BuiltMessage;
use crate::outcome::{Outcome, Status, Step};
use crate::smtp::{ClientError, DataPayload, EnhancedCode, Envelope, Health, Phase, Transaction};

/// A row's message, or why it cannot be sent.
type Built = Result<BuiltMessage, Box<Outcome>>;

/// A session opened while a batch rendered, not yet used.
type Opened<S> = Option<Result<Session<S>, ConnectFailure>>;

/// What the batch does after one message.
enum Flow {
    /// On to the next message.
    Next,
    /// Stop: this job (when still unsent) and the rest of the batch go back to the queue.
    Requeue(Option<QueuedRow>),
    /// Stop: the rest of the batch, and every job ready for the site, fail like this.
    SameFate(Outcome),
}

struct Worker<C: Connect> {
    ctx: Arc<Ctx<C>>,
    queue: Arc<SiteQueue>,
    /// The open session, kept across batches.
    session: Option<Session<C::Stream>>,
    /// The provider connection slot this worker's session (open or being reopened) uses;
    /// its gate is the one the session sends under.
    slot: Option<Slot>,
}

/// Runs one worker of `queue`'s site until the site is done, the deadline passes or the run
/// is cancelled.
pub(super) async fn run<C: Connect>(ctx: Arc<Ctx<C>>, queue: Arc<SiteQueue>) {
    let mut w = Worker {
        ctx,
        queue,
        session: None,
        slot: None,
    };
    while let Some(jobs) = w.next_jobs().await {
        w.batch(jobs).await;
        if w.session.is_none() {
            w.slot = None;
        }
    }
    w.close().await;
}

impl<C: Connect> Worker<C> {
    /// The gate this worker sends under: its slot's (the first of the queue's without one).
    fn gate(&self) -> Arc<Gate> {
        self.slot
            .as_ref()
            .map_or(self.queue.first_gate(), Slot::gate)
            .clone()
    }

    /// The source address (pool index) the worker's sessions leave from, when its gate is
    /// one address's.
    fn source(&self) -> Option<usize> {
        self.slot
            .as_ref()
            .and_then(|s| s.gate().source.map(|(i, _)| i))
    }

    /// Whether the worker's source address turned out unusable (it could not be bound).
    fn source_lost(&self) -> bool {
        self.source()
            .is_some_and(|i| !self.ctx.cfg.sources.is_usable(i))
    }

    /// Waits for the next batch; `None` when there is no more work for this worker.
    async fn next_jobs(&mut self) -> Option<Vec<QueuedRow>> {
        loop {
            let now = Instant::now();
            if now >= self.ctx.cfg.deadline || self.ctx.cancel.is_cancelled() {
                return None;
            }
            if self.session.is_none() && self.slot.is_none() && self.queue.has_ready(now) {
                let pool = &self.ctx.cfg.sources;
                let usable = |g: &Gate| g.source.is_none_or(|(i, _)| pool.is_usable(i));
                match self.queue.try_slot(now, usable) {
                    Ok(slot) => self.slot = Some(slot),
                    Err(until) if until >= self.ctx.cfg.deadline && self.settle_suspended(now) => {
                        continue;
                    }
                    Err(until) => {
                        let gate = self.queue.first_gate();
                        shaping::wait_for_slot(&self.ctx, gate, now, until).await;
                        continue;
                    }
                }
            }
            let max = self.ctx.cfg.batch.max(1);
            match self.queue.take(max, now, self.session.is_some()) {
                Next::Done => return None,
                Next::Jobs(jobs) if self.session.is_none() && self.slot.is_none() => {
                    self.queue.unclaim(jobs); // became ready meanwhile: get a slot first
                }
                Next::Jobs(jobs) => return Some(jobs),
                Next::Wait(until) => {
                    if self.session.is_none() {
                        self.slot = None;
                    }
                    self.wait(now, until).await;
                }
            }
        }
    }

    /// Every gate of the site is suspended by a rule past the run's deadline: the rows not in
    /// flight end now, `deferred` at step `suspended`, saying until when and why, instead of
    /// waiting for the deadline. `false` when that is not the case.
    fn settle_suspended(&mut self, now: Instant) -> bool {
        let Some((left, cause)) = self.queue.suspended(now) else {
            return false;
        };
        let until = hh_mm(self.ctx.cfg.clock.unix_after(left));
        let text = format!("suspended until {until} by {cause}");
        for job in self.queue.drain_all() {
            let mut o = Outcome::local(Status::Deferred, Step::Suspended, text.clone());
            o.enhanced = Some(EnhancedCode::new(4, 7, 0));
            self.ctx.final_outcome(&self.queue, job, o);
        }
        true
    }

    /// Nothing to take before `until`: a session is not kept idle through a long wait, and
    /// the queue is looked at again at least every 250 ms.
    async fn wait(&mut self, now: Instant, until: Instant) {
        if until > now + Duration::from_secs(2) {
            self.close().await;
            self.slot = None;
        }
        let wake = until
            .min(now + Duration::from_millis(250))
            .min(self.ctx.cfg.deadline);
        tokio::select! {
            () = sleep_until(wake) => {}
            () = self.ctx.cancel.cancelled() => {}
        }
    }

    /// QUITs the session, if any.
    async fn close(&mut self) {
        if let Some(s) = self.session.take() {
            s.conn.quit().await;
        }
    }

    /// Renders the batch and sends it, message by message.
    async fn batch(&mut self, jobs: Vec<QueuedRow>) {
        let (rendered, mut opened) = self.render_and_open(&jobs).await;
        let built = match rendered {
            Ok(b) => b,
            Err(e) => {
                for job in jobs {
                    let why = format!("rendering failed: {e}");
                    let outcome = Outcome::local(Status::Invalid, Step::Render, why);
                    self.ctx.final_outcome(&self.queue, job, outcome);
                }
                return;
            }
        };
        if matches!(opened, Some(Ok(_))) {
            self.session = opened.take().and_then(Result::ok);
            self.queue.healthy();
        }
        let mut batch = jobs.into_iter().zip(built).peekable();
        while let Some((job, built)) = batch.next() {
            let next = batch.peek().map(|(_, b)| b);
            match self.message(job, built, next, &mut opened).await {
                Flow::Next => {}
                Flow::Requeue(job) => {
                    let rest = job.into_iter().chain(batch.map(|(j, _)| j));
                    self.queue.unclaim(rest.collect());
                    return;
                }
                Flow::SameFate(outcome) => {
                    // Circuit breaker: no MX of this site answers, so every job ready for it
                    // shares this failure and waits for the next retry round.
                    for (j, _) in batch {
                        self.ctx.transient(&self.queue, j, outcome.clone());
                    }
                    for j in self.queue.drain_ready() {
                        self.ctx.transient(&self.queue, j, outcome.clone());
                    }
                    return;
                }
            }
        }
    }

    /// Renders the batch on the blocking pool. A worker without a session opens one
    /// meanwhile, so the first message goes out one connect + greeting + EHLO after the
    /// batch is taken, not after it is rendered.
    async fn render_and_open(
        // `&mut`: a shared borrow of the worker would make the future need a `Sync` stream.
        &mut self,
        jobs: &[QueuedRow],
    ) -> (Result<Vec<Built>, JoinError>, Opened<C::Stream>) {
        let source = self.ctx.source.clone();
        let rows: Vec<usize> = jobs.iter().map(|j| j.row).collect();
        let render = tokio::task::spawn_blocking(move || {
            rows.into_iter().map(|r| source(r)).collect::<Vec<_>>()
        });
        if self.session.is_none() {
            let open = open_session(&self.ctx, &self.queue.work, self.source());
            let (r, o) = tokio::join!(render, open);
            (r, Some(o))
        } else {
            (render.await, None)
        }
    }

    /// One message of the batch; `next` is the one after it, if any.
    async fn message(
        &mut self,
        job: QueuedRow,
        built: Built,
        next: Option<&Built>,
        opened: &mut Opened<C::Stream>,
    ) -> Flow {
        if self.ctx.cancel.is_cancelled() {
            // Stop taking new work: this job and the rest of the batch stay unsent.
            return Flow::Requeue(Some(job));
        }
        let msg = match built {
            Ok(m) => m,
            Err(outcome) => {
                self.ctx.final_outcome(&self.queue, job, *outcome);
                return Flow::Next;
            }
        };
        self.retire_if_used_up().await;
        if let Err(fail) = self.ensure_session(opened).await {
            if self.source_lost() {
                // Its address cannot be bound here: the row waits, uncharged, for a slot
                // of another address's gate.
                self.slot = None;
                return Flow::Requeue(Some(job));
            }
            let holding = self.slot.is_some();
            let gate = self.gate();
            if shaping::refused_session(&self.ctx, (&self.queue, &gate), job, &fail, holding) {
                // The provider limits connections: give up this one, the open ones go on.
                self.slot = None;
                return Flow::Requeue(Some(job));
            }
            let action = decide(Attempt::NoSession, SessionFacts::default());
            return self.apply(job, action, fail.outcome());
        }
        self.send(job, &msg, next).await
    }

    /// A session that carried `--messages-per-connection` messages is closed.
    async fn retire_if_used_up(&mut self) {
        if self
            .session
            .as_ref()
            .is_some_and(|s| s.conn.transactions() >= session_cap(&self.ctx, &self.gate(), s))
        {
            self.close().await;
        }
    }

    /// Makes sure a session is open: the one opened while the batch rendered, or a new one.
    /// `Err` when no MX of the site gave one, with why.
    async fn ensure_session(
        &mut self,
        opened: &mut Opened<C::Stream>,
    ) -> Result<(), ConnectFailure> {
        if self.session.is_some() {
            return Ok(());
        }
        let attempt = match opened.take() {
            Some(o) => o,
            None => open_session(&self.ctx, &self.queue.work, self.source()).await,
        };
        match attempt {
            Ok(s) => {
                self.queue.healthy();
                self.session = Some(s);
                Ok(())
            }
            Err(fail) => Err(fail),
        }
    }

    /// Sends one message over the open session and applies the decision.
    async fn send(&mut self, job: QueuedRow, msg: &BuiltMessage, next: Option<&Built>) -> Flow {
        let gate = self.gate();
        let (ctx, queue) = (&self.ctx, &self.queue);
        let Some(s) = self.session.as_mut() else {
            return Flow::Next;
        };
        if let Some(mut refused) = local_refusal(s, msg) {
            refused.attempts = job.attempts + 1;
            s.stamp(&mut refused);
            ctx.final_outcome(queue, job, refused);
            return Flow::Next;
        }
        if !pace(ctx, &gate).await {
            // No slot before the deadline (a suspension, today's cap spent for this address):
            // the session and its connection slot go, and the rows wait for another gate's
            // slot or the deadline report.
            self.close().await;
            self.slot = None;
            return Flow::Requeue(Some(job));
        }
        let started = Instant::now();
        let next = announce(ctx, &gate, s, next);
        // The bound on duplicates after a crash: the last message accepted on this session
        // is written out before another one can be.
        ctx.written_out().await;
        let result = s.conn.send_then(&msg.envelope, &msg.payload, next).await;
        let outcome = transaction_outcome(s, job, msg, &result);
        let facts = SessionFacts {
            dialect: s.conn.dialect(),
            transactions: s.conn.transactions(),
            health: s.conn.health(),
        };
        let action = decide(Attempt::from(&result), facts);
        learn(ctx, s, action, &result);
        if facts.health != Health::InStep {
            // Out of step or closed after its verdict: it carries nothing more.
            self.session = None;
        }
        match action {
            Action::Throttled { .. } => {
                return self.throttled((job, outcome), action, started).await;
            }
            Action::Delivered | Action::DeliveredOutOfStep | Action::DeliveredLast => {
                gate.accepted(Instant::now());
            }
            _ => {}
        }
        self.apply(job, action, outcome)
    }

    /// A throttling reply: the worker's provider gate reacts, the row waits uncharged; the session
    /// ends when the server closes it or the reaction asks for a new one.
    async fn throttled(
        &mut self,
        row: (QueuedRow, Outcome),
        action: Action,
        started: Instant,
    ) -> Flow {
        let sent = self.session.as_ref().map_or(0, |s| s.conn.transactions());
        let gate = self.gate();
        let reaction = shaping::throttled(&self.ctx, (&self.queue, &gate), row, sent, started);
        if !action.effects().keep_session {
            self.session = None;
        }
        match reaction {
            Reaction::Connections(_) => {
                self.close().await;
                self.slot = None;
                Flow::Requeue(None)
            }
            Reaction::PerConnection(_) => {
                self.close().await;
                Flow::Next
            }
            _ if self.session.is_some() => Flow::Next,
            _ => Flow::Requeue(None),
        }
    }

    /// Does what `action` says to the session, the site, the row and the rest of the batch.
    fn apply(&mut self, job: QueuedRow, action: Action, outcome: Outcome) -> Flow {
        let effects = action.effects();
        if !effects.keep_session {
            // Dropped, not QUIT: the server is gone, closing, or out of step.
            self.session = None;
        }
        if effects.pause_site {
            self.queue.pause(&self.ctx.cfg.options.retry);
        }
        if effects.row == Row::Again {
            // Not counted: the row keeps its attempts. Reported as retrying all the same, so
            // that a row the deadline cuts off says what happened, not "not attempted".
            let row = job.row;
            self.ctx.emit(Event::Retrying { row, outcome });
            return Flow::Requeue(Some(job));
        }
        let flow = match effects.rest {
            Rest::GoOn => Flow::Next,
            Rest::Requeue => Flow::Requeue(None),
            Rest::SameFate => Flow::SameFate(outcome.clone()),
        };
        match effects.row {
            Row::Final(status) => {
                let outcome = Outcome { status, ..outcome };
                self.ctx.final_outcome(&self.queue, job, outcome);
            }
            Row::Retry => self.ctx.transient(&self.queue, job, outcome),
            Row::Again => {}
            Row::Requeue => self.queue.unclaim(vec![job]),
        }
        flow
    }
}

/// Waits for this message's slot under the provider's rate (or `--rate-per-site`) and any
/// suspension; `false` when there is none before the deadline.
async fn pace<C>(ctx: &Ctx<C>, gate: &Gate) -> bool {
    let now = Instant::now();
    let slot = gate.send_slot(now);
    if slot >= ctx.cfg.deadline {
        return false;
    }
    if slot > now {
        sleep_until(slot).await;
    }
    true
}

/// When the next message of the batch will surely go over this session, it is announced
/// behind this one's content (one write and one read per message), if the address allows it:
/// until it has answered commands pipelined behind the dot, only one session does so (see
/// [`super::hosts::Probe`]).
fn announce<'m, C: Connect>(
    ctx: &Ctx<C>,
    gate: &Gate,
    s: &mut Session<C::Stream>,
    next: Option<&'m Built>,
) -> Option<(&'m Envelope, &'m DataPayload)> {
    match next {
        Some(Ok(m))
            if !gate.paced()
                && s.conn.announcing()
                && s.conn.transactions() + 1 < session_cap(ctx, gate, s)
                && local_refusal(s, m).is_none()
                && ctx.hosts.may_announce(s.ip, &mut s.probe) =>
        {
            Some((&m.envelope, &m.payload))
        }
        _ => None,
    }
}

/// Messages a session with this host may carry: the provider's messages per connection (for
/// an unknown site, `--messages-per-connection`), or less when the host said so (see
/// [`learn`]).
fn session_cap<C: Connect>(ctx: &Ctx<C>, gate: &Gate, s: &Session<C::Stream>) -> usize {
    let max = gate.messages_per_connection();
    ctx.hosts
        .messages_per_connection(s.ip)
        .map_or(max, |n| n.min(max))
}

/// What the run learns about the session's address from an attempt: it answered commands
/// pipelined behind the dot (every session may send them now), it objected to our dialect (it
/// gets a more conservative one, and the summary says so), or its sessions take fewer messages
/// than we sent.
fn learn<C: Connect>(
    ctx: &Ctx<C>,
    s: &mut Session<C::Stream>,
    action: Action,
    result: &Result<Transaction, ClientError>,
) {
    if s.conn.last_behind_dot()
        && matches!(
            action,
            Action::Delivered | Action::DeliveredLast | Action::Bounce(_) | Action::Retry(_)
        )
    {
        // Its commands rode behind the last dot and were answered in step.
        ctx.hosts.answered_behind_dot(s.ip);
        s.probe = None;
    }
    match action {
        Action::Fallback | Action::DeliveredOutOfStep => {
            if let Some(learnt) = ctx.hosts.fall_back(s.ip, &s.host, s.conn.dialect()) {
                let reason = objection(s, result);
                ctx.emit(Event::DialectFallback { learnt, reason });
            }
        }
        Action::SessionFull => {
            let carried = s.conn.transactions().saturating_sub(1);
            ctx.hosts.limit_messages(s.ip, carried);
        }
        _ => {}
    }
}

/// What the server did that made its address fall back, as the summary says it.
fn objection<S>(s: &Session<S>, result: &Result<Transaction, ClientError>) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let behind_dot = s.conn.last_behind_dot();
    let said = |r: &dyn std::fmt::Display| {
        let r: String = r.to_string().chars().take(120).collect();
        format!("{r:?}")
    };
    match result {
        Err(ClientError::Unanswered { .. }) => {
            "does not answer commands pipelined behind the final dot".into()
        }
        Err(ClientError::GroupDropped { .. }) if behind_dot => {
            "closed the connection on commands pipelined behind the final dot".into()
        }
        Err(ClientError::GroupDropped { .. }) => {
            "closed the connection on a pipelined group of commands".into()
        }
        Err(ClientError::OutOfStep { what, .. }) => format!("answered out of step ({what})"),
        Err(e) => format!("failed: {}", said(e)),
        Ok(Transaction::Accepted(_)) => format!(
            "answered out of step after accepting a message ({})",
            s.conn.out_of_step()
        ),
        Ok(Transaction::Rejected { reply, .. }) if behind_dot => format!(
            "refused commands pipelined behind the final dot with {}",
            said(reply)
        ),
        Ok(Transaction::Rejected { reply, .. }) => {
            format!("refused pipelined commands with {}", said(reply))
        }
    }
}

/// What the transaction's result says, for the results CSV; the status is the decision's.
fn transaction_outcome<S>(
    s: &Session<S>,
    job: QueuedRow,
    msg: &BuiltMessage,
    result: &Result<Transaction, ClientError>,
) -> Outcome {
    let mut base = Outcome::local(Status::Deferred, Step::Smtp(Phase::DataEnd), String::new());
    s.stamp(&mut base);
    base.message_id = Some(msg.message_id.clone());
    base.attempts = job.attempts + 1;
    match result {
        Ok(Transaction::Accepted(reply)) => Outcome {
            code: Some(reply.code),
            enhanced: reply.enhanced,
            response: reply.text(),
            ..base
        },
        Ok(Transaction::Rejected { phase, reply }) => Outcome {
            step: Step::Smtp(*phase),
            code: Some(reply.code),
            enhanced: reply.enhanced,
            response: reply.text(),
            ..base
        },
        Err(e) => Outcome {
            step: Step::Smtp(e.phase()),
            enhanced: Some(error_code(e)),
            response: e.to_string(),
            ..base
        },
    }
}

/// The enhanced code a broken session is reported with (RFC 3463): 4.5.0, a protocol error,
/// when the server's replies made no sense (the `protocol` category); else 4.4.2, bad
/// connection.
fn error_code(e: &ClientError) -> EnhancedCode {
    match e {
        ClientError::Protocol { .. }
        | ClientError::OutOfStep { .. }
        | ClientError::GroupDropped { .. }
        | ClientError::Unanswered { .. } => EnhancedCode::new(4, 5, 0),
        _ => EnhancedCode::new(4, 4, 2),
    }
}

/// The worker against a simulated MX (see [`super::sim`]), under paused time.
#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::IpAddr;
    use std::num::NonZeroUsize;

    use tokio::sync::mpsc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::delivery::options::DeliveryOptions;
    use crate::delivery::sim::Sim;
    use crate::delivery::{DeliveryConfig, LearntDialect, MessageSource, SiteWork, deliver_with};
    use crate::mx::MxHost;
    use crate::smtp::{BEHIND_DOT_WAIT, Dialect, TlsPolicy};

    /// Row `n` goes to `r{n}@sim.test`.
    fn source() -> MessageSource {
        Arc::new(|row| {
            Ok(BuiltMessage {
                envelope: Envelope {
                    from: "news@sender.test".into(),
                    to: format!("r{row}@sim.test"),
                },
                message_id: format!("{row}@sender.test"),
                from_domain: "sender.test".into(),
                payload: DataPayload::from_message(b"Subject: hi\r\n\r\nhello\r\n"),
            })
        })
    }

    /// The simulated MX's address.
    const MX: [u8; 4] = [192, 0, 2, 1];

    /// Delivers `rows` rows to one simulated MX over at most `connections` sessions at once,
    /// starting from the dialects `learnt` earlier.
    async fn deliver_learnt(
        sim: &Sim,
        rows: usize,
        connections: usize,
        learnt: Vec<LearntDialect>,
    ) -> Vec<Event> {
        let options = DeliveryOptions {
            connections_per_site: NonZeroUsize::new(connections).unwrap(),
            ..DeliveryOptions::default()
        };
        let site = SiteWork {
            name: "sim".into(),
            hosts: vec![MxHost {
                name: "mx.sim.test".into(),
                preference: 10,
                addrs: vec![IpAddr::from(MX)],
            }]
            .into(),
            rows: (0..rows).collect(),
            provider: None,
            tls: Default::default(),
        };
        let mut cfg = DeliveryConfig::new(options, TlsPolicy::default());
        cfg.dialects = learnt;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        deliver_with(sim.clone(), vec![site], source(), cfg, tx, cancel).await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        events
    }

    #[tokio::test(start_paused = true)]
    async fn an_mx_that_swallows_commands_behind_the_dot_costs_one_wait_and_no_duplicate() {
        let sim = Sim::swallowing();
        let t0 = Instant::now();
        let events = deliver_learnt(&sim, 40, 2, Vec::new()).await;
        let mut settled = HashSet::new();
        for e in &events {
            if let Event::Final { row, outcome, .. } = e {
                assert_eq!(
                    (outcome.status, outcome.attempts),
                    (Status::Delivered, 1),
                    "{events:#?}"
                );
                assert!(settled.insert(*row), "row {row} settled twice");
            }
        }
        assert_eq!(settled.len(), 40);
        let accepted = sim.accepted();
        let copies: HashSet<&str> = accepted.iter().map(|m| m.rcpt.as_str()).collect();
        assert_eq!(
            (accepted.len(), copies.len()),
            (40, 40),
            "each message once"
        );
        let fallbacks: Vec<(&LearntDialect, &str)> = events
            .iter()
            .filter_map(|e| match e {
                Event::DialectFallback { learnt, reason } => Some((learnt, reason.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(fallbacks.len(), 1, "{fallbacks:?}");
        let (learnt, reason) = fallbacks[0];
        assert_eq!(learnt.dialect, Dialect::NoAnnounce);
        assert_eq!(
            reason,
            "does not answer commands pipelined behind the final dot"
        );
        // One session at a time pipelines behind the dot until the address has answered such
        // commands: only that one lost its group and was closed (one connection more), while
        // the other went on in step. It noticed the silence one wait after its first message;
        // nothing waited for the server's own timeout (the `mail` one, 5 min).
        assert_eq!(sim.swallowed(), 1, "sessions that lost a group");
        assert_eq!(sim.connections(), 3, "one session closed and replaced");
        assert!(accepted.iter().all(|m| !m.behind_dot));
        let last = accepted.iter().map(|m| m.at).max().unwrap();
        assert!(last >= t0 + BEHIND_DOT_WAIT, "{:?}", last - t0);
        assert!(last < t0 + 2 * BEHIND_DOT_WAIT, "{:?}", last - t0);
    }

    #[tokio::test(start_paused = true)]
    async fn once_one_session_has_been_answered_behind_the_dot_every_session_pipelines_there() {
        let sim = Sim::new(|_| None, &[]);
        let events = deliver_learnt(&sim, 60, 3, Vec::new()).await;
        let delivered = events
            .iter()
            .filter(|e| matches!(e, Event::Final { outcome, .. } if outcome.status == Status::Delivered))
            .count();
        assert_eq!(delivered, 60);
        assert_eq!(sim.connections(), 3, "no session given up");
        let accepted = sim.accepted();
        for conn in 0..3 {
            let ours: Vec<_> = accepted.iter().filter(|m| m.conn == conn).collect();
            let behind = ours.iter().filter(|m| m.behind_dot).count();
            // Each session's first message goes alone; of the rest, all but the first of each
            // batch after the one that proved it ride behind a dot.
            assert!(
                ours.len() > 1 && behind + 4 >= ours.len(),
                "connection {conn}: {behind} of {} behind the dot",
                ours.len()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_starts_in_the_learnt_dialect_never_waits_on_the_silence() {
        let sim = Sim::swallowing();
        let learnt = LearntDialect {
            host: "mx.sim.test".into(),
            ip: IpAddr::from(MX),
            dialect: Dialect::NoAnnounce,
            learnt_at: std::time::SystemTime::now(),
        };
        let t0 = Instant::now();
        let events = deliver_learnt(&sim, 40, 2, vec![learnt]).await;
        let finals = events
            .iter()
            .filter(|e| matches!(e, Event::Final { outcome, .. } if outcome.status == Status::Delivered))
            .count();
        assert_eq!(finals, 40);
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::DialectFallback { .. })),
            "nothing to learn again"
        );
        assert_eq!(sim.connections(), 2, "no session given up");
        let last = sim.accepted().iter().map(|m| m.at).max().unwrap();
        assert!(last < t0 + BEHIND_DOT_WAIT, "{:?}", last - t0);
    }
}
