//! The worker's side of provider shaping: what a worker does with the [`Gate`] of its site's
//! provider (with a `--source-ip` pool, the gate of its session's source address) when it
//! needs a connection, when a session is refused, and when a transaction meets a throttling
//! reply. Kept apart from `worker.rs`, which only calls these hooks.
//!
//! The rules: a throttled row is never charged an attempt (it goes back to the front of the
//! queue, for any open session); a session refused while other sessions to the provider work
//! means "too many connections" (one connection fewer, the rows go to the open sessions at
//! once); only when no session at all can be opened is the provider paused as a whole.

use std::time::Duration;

use tokio::time::Instant;

use super::Gate;
use super::action::throttle;
use super::ctx::Ctx;
use super::gate::Reaction;
use super::queue::{QueuedRow, SiteQueue};
use super::session::ConnectFailure;
use super::work::Event;
use crate::outcome::{Outcome, Status};
use crate::smtp::Phase;

/// Waits for a connection slot of `gate` (or of another gate of its provider) to free up (at most until `until`, 250 ms, the
/// deadline or cancellation).
pub(super) async fn wait_for_slot<C>(ctx: &Ctx<C>, gate: &Gate, now: Instant, until: Instant) {
    let wake = until
        .min(now + Duration::from_millis(250))
        .min(ctx.cfg.deadline);
    tokio::select! {
        () = gate.slot_freed(wake) => {}
        () = ctx.cancel.cancelled() => {}
    }
}

/// No session could be opened. `true` when that is the provider limiting connections or
/// throttling (a transient refusal at greeting, or a throttling reply before any message):
/// `gate` (the worker's) has learnt from it, and the row goes back to the queue uncharged.
/// Sessions of the provider's other gates (other source addresses) working also count as
/// "others work": that address alone is refused, the site is not down.
pub(super) fn refused_session<C>(
    ctx: &Ctx<C>,
    (queue, gate): (&SiteQueue, &Gate),
    job: QueuedRow,
    fail: &ConnectFailure,
    holding_slot: bool,
) -> bool {
    let Some((phase, reply)) = fail.reply() else {
        return false;
    };
    let throttled = reply.is_transient() && throttle(phase, reply);
    if !(throttled || (phase == Phase::Greeting && reply.is_transient())) {
        return false;
    }
    let learnt = gate.refused_session(Instant::now(), &reply.text(), holding_slot);
    let other_sources_work = queue
        .gates
        .iter()
        .any(|g| !std::ptr::eq(&**g, gate) && g.open() > 0);
    let others_work = learnt.is_ok() || other_sources_work;
    if !(others_work || throttled) {
        return false;
    }
    uncharged(ctx, job, fail.outcome());
    true
}

/// A transaction that started at `started` met a throttling reply after `sent` transactions
/// on its session: `gate` (the worker's) reacts, and the row goes back to the front of the
/// queue uncharged.
pub(super) fn throttled<C>(
    ctx: &Ctx<C>,
    (queue, gate): (&SiteQueue, &Gate),
    (job, outcome): (QueuedRow, Outcome),
    sent: usize,
    started: Instant,
) -> Reaction {
    let text = match (outcome.code, outcome.enhanced) {
        (Some(code), Some(e)) => format!("{code} {e} {}", outcome.response),
        (Some(code), None) => format!("{code} {}", outcome.response),
        _ => outcome.response.clone(),
    };
    let reaction = gate.throttled(Instant::now(), &text, sent, started);
    uncharged(ctx, job, outcome);
    queue.unclaim(vec![job]);
    reaction
}

/// Reports a row that waits again without an attempt charged (progress, the last reply).
fn uncharged<C>(ctx: &Ctx<C>, job: QueuedRow, mut outcome: Outcome) {
    outcome.status = Status::Deferred;
    outcome.attempts = job.attempts;
    ctx.emit(Event::Retrying {
        row: job.row,
        outcome,
    });
}
