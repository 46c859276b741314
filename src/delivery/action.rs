//! The decision on one delivery attempt: what the server's answer (or a broken session) means
//! for the row, the session, the rest of the batch and the site, as one pure function.
//!
//! The worker sends and applies; this file decides. Keeping the decision free of I/O makes every
//! rule one row of the table test below, and a new rule (a provider's throttling reply, a
//! protocol error that must not bounce) one match arm and one table row. Each [`Action`] names
//! the [`Scope`] it is about, and [`Action::effects`] spells out what it does at every scope,
//! so the worker never re-derives a decision from reply codes.
//!
//! What a reply is about comes from [`crate::classify::classify`] (one [`Scope`] type for the
//! crate): a 5yz is a bounce only when it is about the recipient or the message. A reply that
//! says the conversation went wrong (500–504), one out of step, or a drop right after a
//! pipelined group is our session's failure: the host falls back to a more
//! conservative [`Dialect`] and the row goes at once over a new session, uncounted; only when
//! [`Dialect::Lockstep`] fails too does the row end, deferred. A message whose end of data was
//! answered 2yz is delivered even when the session turns out out of step right after
//! ([`SessionFacts::health`]).

pub use crate::classify::Scope;
use crate::classify::classify;
use crate::outcome::Status;
use crate::smtp::{ClientError, Dialect, Health, Phase, Reply, Transaction};

/// What one attempt came to, as far as the verdict is concerned.
#[derive(Clone, Copy, Debug)]
pub enum Attempt<'a> {
    /// No address of the site gave a session (every MX refused, timed out, failed to greet or
    /// to say EHLO, or failed the TLS policy).
    NoSession,
    /// The server answered the transaction: it accepted the message at the end of data, or it
    /// refused one command (the phase says which).
    Answered(&'a Transaction),
    /// The session broke during the transaction: timeout, close, socket or protocol error.
    Broke(&'a ClientError),
}

impl<'a> From<&'a Result<Transaction, ClientError>> for Attempt<'a> {
    fn from(result: &'a Result<Transaction, ClientError>) -> Self {
        match result {
            Ok(t) => Attempt::Answered(t),
            Err(e) => Attempt::Broke(e),
        }
    }
}

/// What the verdict needs to know about the session the attempt was made on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionFacts {
    /// The dialect the session spoke.
    pub dialect: Dialect,
    /// Transactions started on it, this one included.
    pub transactions: usize,
    /// What the session was found to be after the attempt's verdict.
    pub health: Health,
}

/// What to do after one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The end of data was answered 2yz: the row is delivered.
    Delivered,
    /// The end of data was answered 2yz, then the server sent a reply nothing asked for: the
    /// row is delivered all the same (that 2yz came in its turn), but the session is out of
    /// step. As [`Action::Fallback`] for everything else: the session is dropped, the host
    /// falls back to a more conservative dialect, the rest of the batch goes at once over a
    /// new session, uncounted.
    DeliveredOutOfStep,
    /// The end of data was answered 2yz, then the server closed the session: the row is
    /// delivered; the rest of the batch goes over a new session.
    DeliveredLast,
    /// A permanent refusal (5yz, RFC 5321 §4.2.1) about the recipient or the message at MAIL,
    /// RCPT, DATA or the end of data: the row bounces and is never retried; the session goes
    /// on with the next message.
    Bounce(Scope),
    /// Any other refusal of those commands (4yz, or 452/552 x.5.3 "too many recipients", RFC
    /// 5321 §4.5.3.1.10): the row is tried again after its retry delay (the attempt counts
    /// against its budget); the session goes on.
    Retry(Scope),
    /// The session cannot be trusted any more but nothing says the host is failing (a refused
    /// RSET, a socket error, garbage): the row is retried later, the session is dropped and the
    /// rest of the batch goes on over a new one.
    Reconnect(Scope),
    /// The server objected to how we talk (500–504, a reply out of step, a drop right after a
    /// pipelined group, no reply to the commands pipelined behind the final dot): the session
    /// is dropped, the host falls back to a more conservative
    /// dialect, and the row and the rest of the batch go at once over a new session; the
    /// attempt is not counted.
    Fallback,
    /// As [`Action::Fallback`], but the session already spoke [`Dialect::Lockstep`]: the row
    /// ends deferred (category `protocol`), never bounced.
    ProtocolFailed,
    /// The session takes no more messages (OpenSMTPD's `452 4.5.3 ... Too many messages sent`
    /// at MAIL): it is closed, the host's messages per connection are lowered, and the row and
    /// the rest of the batch go at once over a new session; the attempt is not counted.
    SessionFull,
    /// The session timed out or was closed by the server: the row is retried later (a drop
    /// after the final "." can duplicate, RFC 5321 §4.1.1.4, but nothing confirmed it), the
    /// session is dropped, and the rest of the batch goes back to the queue for any session.
    SessionLost,
    /// 421, at any command: the server closes the session and wants us gone for a while (RFC
    /// 5321 §3.8). As [`Action::SessionLost`], and no new connection to the site until the
    /// retry delay for its consecutive failures has passed.
    PauseSite,
    /// A throttling reply (classify: category throttled, scope sender; transient): the
    /// provider is slowed (see [`crate::delivery::Gate::throttled`]), the row goes back to
    /// the queue without counting an attempt, and the session is dropped when the server
    /// closes it (`closing`, a 421) or kept for the rest of the batch.
    Throttled {
        /// The server closes the session (421).
        closing: bool,
    },
    /// No MX of the site gave a session (circuit breaker): the site is paused and the row, the
    /// rest of the batch and every row ready for the site share the failure (each is retried
    /// later, each attempt counted).
    Unreachable,
}

/// What becomes of the row an action is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// A final outcome with this status.
    Final(Status),
    /// Another attempt after the retry delay (or `deferred` when the deadline comes first).
    Retry,
    /// Another attempt at once, over a new session; this one is not counted.
    Again,
    /// Back to the front of the queue at once, attempts unchanged (a throttle).
    Requeue,
}

/// What becomes of the rest of the worker's batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rest {
    /// Sent next, by this worker.
    GoOn,
    /// Back to the front of the site's queue, attempts unchanged.
    Requeue,
    /// Each row, and every row ready for the site, fails like this one.
    SameFate,
}

/// An action's effect at each scope, in the order the worker applies them: the session, the
/// site, the row, the rest of the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Effects {
    /// Whether the session is kept for the next message.
    pub keep_session: bool,
    /// Whether the site gets no new connection for its next retry delay.
    pub pause_site: bool,
    /// The row.
    pub row: Row,
    /// The rest of the batch.
    pub rest: Rest,
}

impl Action {
    /// What the action is about.
    pub fn scope(self) -> Scope {
        match self {
            Action::Delivered | Action::DeliveredOutOfStep | Action::DeliveredLast => {
                Scope::Message
            }
            Action::Bounce(s) | Action::Retry(s) | Action::Reconnect(s) => s,
            Action::Fallback | Action::ProtocolFailed => Scope::Protocol,
            Action::SessionFull | Action::SessionLost => Scope::Session,
            Action::PauseSite | Action::Unreachable => Scope::Site,
            Action::Throttled { .. } => Scope::Sender,
        }
    }

    /// What the action does.
    pub fn effects(self) -> Effects {
        let deferred = Row::Final(Status::Deferred);
        let delivered = Row::Final(Status::Delivered);
        let (keep_session, pause_site, row, rest) = match self {
            Action::Delivered => (true, false, delivered, Rest::GoOn),
            Action::DeliveredOutOfStep => (false, false, delivered, Rest::Requeue),
            Action::DeliveredLast => (false, false, delivered, Rest::GoOn),
            Action::Bounce(_) => (true, false, Row::Final(Status::Bounced), Rest::GoOn),
            Action::Retry(_) => (true, false, Row::Retry, Rest::GoOn),
            Action::Reconnect(_) => (false, false, Row::Retry, Rest::GoOn),
            Action::Fallback | Action::SessionFull => (false, false, Row::Again, Rest::Requeue),
            Action::ProtocolFailed => (false, false, deferred, Rest::Requeue),
            Action::SessionLost => (false, false, Row::Retry, Rest::Requeue),
            Action::PauseSite => (false, true, Row::Retry, Rest::Requeue),
            Action::Unreachable => (false, true, Row::Retry, Rest::SameFate),
            Action::Throttled { closing: true } => (false, false, Row::Requeue, Rest::Requeue),
            Action::Throttled { closing: false } => (true, false, Row::Requeue, Rest::GoOn),
        };
        Effects {
            keep_session,
            pause_site,
            row,
            rest,
        }
    }
}

/// The verdict on one attempt made on a session described by `facts`.
pub fn decide(attempt: Attempt<'_>, facts: SessionFacts) -> Action {
    match attempt {
        Attempt::NoSession => Action::Unreachable,
        Attempt::Answered(Transaction::Accepted(_)) => match facts.health {
            Health::InStep => Action::Delivered,
            Health::OutOfStep => Action::DeliveredOutOfStep,
            Health::Closed => Action::DeliveredLast,
        },
        Attempt::Answered(Transaction::Rejected { phase, reply }) => refused(*phase, reply, facts),
        Attempt::Broke(e) => broke(e, facts),
    }
}

/// Our protocol failed on this session: fall back, unless there is nothing left to fall to.
fn protocol(facts: SessionFacts) -> Action {
    match facts.dialect.fallback() {
        Some(_) => Action::Fallback,
        None => Action::ProtocolFailed,
    }
}

/// A command of the transaction was refused.
fn refused(phase: Phase, reply: &Reply, facts: SessionFacts) -> Action {
    if throttle(phase, reply) {
        return Action::Throttled {
            closing: reply.code == 421,
        };
    }
    if reply.code == 421 {
        return Action::PauseSite;
    }
    if phase == Phase::Rset {
        // Not about the message, so never a bounce: the session is confused, start a new one.
        return Action::Reconnect(Scope::Protocol);
    }
    let scope = classify(Some(phase), reply.code, reply.enhanced, &reply.text()).scope;
    match scope {
        Scope::Protocol => return protocol(facts),
        // On a fresh session the limit cannot be the session's: an ordinary deferral.
        Scope::Session if phase == Phase::MailFrom && facts.transactions > 1 => {
            return Action::SessionFull;
        }
        _ => {}
    }
    if reply.is_permanent() {
        Action::Bounce(scope)
    } else {
        Action::Retry(scope)
    }
}

/// Whether a refusal is the provider throttling the sender (not about this recipient or
/// message): transient, and [`crate::classify`] says throttled at the sender's scope.
pub fn throttle(phase: Phase, reply: &Reply) -> bool {
    use crate::classify::{Category, Scope as About, classify};
    let v = classify(Some(phase), reply.code, reply.enhanced, &reply.text());
    reply.is_transient() && v.category == Category::Throttled && v.scope == About::Sender
}

/// The connection failed mid-transaction.
fn broke(e: &ClientError, facts: SessionFacts) -> Action {
    match e {
        // Gone or silent: another session (maybe to another MX) takes the rest of the batch.
        ClientError::Timeout { .. } | ClientError::Closed { .. } => Action::SessionLost,
        ClientError::Io { .. } | ClientError::Tls { .. } => Action::Reconnect(Scope::Session),
        ClientError::Protocol { .. } => Action::Reconnect(Scope::Protocol),
        ClientError::OutOfStep { .. }
        | ClientError::GroupDropped { .. }
        | ClientError::Unanswered { .. } => protocol(facts),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::smtp::{ReplyError, parse_reply};

    fn reply(wire: &str) -> Reply {
        let wire = format!("{wire}\r\n");
        match parse_reply(wire.as_bytes()) {
            Ok(Some((r, _))) => r,
            other => panic!("{wire:?}: {other:?}"),
        }
    }

    fn accepted(wire: &str) -> Result<Transaction, ClientError> {
        Ok(Transaction::Accepted(reply(wire)))
    }

    fn refused(phase: Phase, wire: &str) -> Result<Transaction, ClientError> {
        Ok(Transaction::Rejected {
            phase,
            reply: reply(wire),
        })
    }

    fn timeout(phase: Phase) -> Result<Transaction, ClientError> {
        Err(ClientError::Timeout {
            phase,
            after: Duration::from_secs(300),
        })
    }

    fn closed(phase: Phase) -> Result<Transaction, ClientError> {
        Err(ClientError::Closed { phase })
    }

    fn io(phase: Phase) -> Result<Transaction, ClientError> {
        let source = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        Err(ClientError::Io { phase, source })
    }

    fn garbage(phase: Phase) -> Result<Transaction, ClientError> {
        let source = ReplyError::Malformed("HTTP/1.1 400".into());
        Err(ClientError::Protocol { phase, source })
    }

    fn out_of_step(phase: Phase) -> Result<Transaction, ClientError> {
        let what = "250 ok cannot answer data".into();
        Err(ClientError::OutOfStep { phase, what })
    }

    fn group_dropped(phase: Phase) -> Result<Transaction, ClientError> {
        Err(ClientError::GroupDropped { phase })
    }

    fn unanswered() -> Result<Transaction, ClientError> {
        let after = Duration::from_secs(5);
        Err(ClientError::Unanswered { after })
    }

    fn tls() -> Result<Transaction, ClientError> {
        let source = std::io::Error::other("handshake");
        Err(ClientError::Tls { source })
    }

    use Action::*;
    use Phase::*;
    use Scope::*;

    /// (what happened, the action). `None` is "no session could be opened".
    fn table() -> Vec<(Option<Result<Transaction, ClientError>>, Action)> {
        let at = |r, a| (Some(r), a);
        vec![
            at(accepted("250 2.0.0 Ok: queued as 4F2"), Delivered),
            // 5yz: bounce, whatever command was refused — except RSET.
            at(refused(RcptTo, "550 5.1.1 no such user"), Bounce(Recipient)),
            at(
                refused(RcptTo, "550-5.1.1 no such user\r\n550 5.1.1 see docs"),
                Bounce(Recipient),
            ),
            // Scopes come from classify: a 5.7.1 refusal is about the sender.
            at(
                refused(MailFrom, "553 5.7.1 sender refused"),
                Bounce(Sender),
            ),
            at(
                refused(Data, "554 5.5.1 no valid recipients"),
                Bounce(Message),
            ),
            at(
                refused(DataEnd, "552 5.3.4 message too big"),
                Bounce(Message),
            ),
            at(
                refused(DataEnd, "550 5.7.26 unauthenticated mail"),
                Bounce(Message),
            ),
            at(
                refused(DataEnd, "550 5.7.515 bulk sender requirements"),
                Bounce(Message),
            ),
            at(
                refused(MailFrom, "550 5.2.1 ReceivingRatePerm"),
                Bounce(Recipient),
            ),
            // 500–504 say the conversation went wrong, not the recipient: our
            // session's failure, never a bounce; Outlook's 550 5.5.0 is a real bounce.
            at(
                refused(RcptTo, "503 5.5.1 Bad sequence of commands"),
                Fallback,
            ),
            at(refused(MailFrom, "500 5.5.2 syntax error"), Fallback),
            at(refused(Data, "502 5.5.1 not implemented"), Fallback),
            at(refused(DataEnd, "504 5.5.4 bad parameter"), Fallback),
            at(
                refused(
                    RcptTo,
                    "550 5.5.0 Requested action not taken: mailbox unavailable",
                ),
                Bounce(Recipient),
            ),
            // A reply out of step, or a drop right after a pipelined group: the same.
            at(out_of_step(Data), Fallback),
            at(group_dropped(RcptTo), Fallback),
            // Commands pipelined behind the final dot that got no reply: the same.
            at(unanswered(), Fallback),
            // OpenSMTPD's per-session limit, at MAIL on a used session: a new session.
            at(
                refused(
                    MailFrom,
                    "452 4.5.3 Too many recipients: Too many messages sent",
                ),
                SessionFull,
            ),
            // The reply code decides, not the enhanced code (see Reply::is_transient).
            at(refused(RcptTo, "550 4.2.1 mailbox busy"), Bounce(Recipient)),
            at(refused(RcptTo, "450 5.2.1 mailbox busy"), Retry(Recipient)),
            // 4yz: retry this row; the session goes on.
            at(
                refused(RcptTo, "451 4.7.1 greylisted, try again"),
                Retry(Recipient),
            ),
            at(
                refused(RcptTo, "450 4.2.1 receiving mail at a rate"),
                Retry(Recipient),
            ),
            at(refused(MailFrom, "451 4.3.0 try later"), Retry(Message)),
            at(refused(Data, "451 4.3.0 try later"), Retry(Message)),
            at(
                refused(DataEnd, "451 4.7.650 rate limited"),
                Throttled { closing: false },
            ),
            at(
                refused(DataEnd, "452 4.3.1 insufficient storage"),
                Retry(Message),
            ),
            // "Too many recipients" is transient whether 452 or 552 (RFC 5321 §4.5.3.1.10).
            at(
                refused(RcptTo, "452 4.5.3 too many recipients"),
                Retry(Recipient),
            ),
            at(
                refused(RcptTo, "552 5.5.3 too many recipients"),
                Retry(Recipient),
            ),
            // Neither 2yz nor 4yz nor 5yz: not a bounce.
            at(refused(Data, "250 ok"), Retry(Message)),
            // A provider throttling the sender: slow the provider, no attempt counted.
            at(
                refused(MailFrom, "421 4.7.0 Try again later, closing connection"),
                Throttled { closing: true },
            ),
            at(
                refused(RcptTo, "421 4.7.28 unusual rate of unsolicited mail"),
                Throttled { closing: true },
            ),
            at(
                refused(Data, "421 4.3.2 too many connections"),
                Throttled { closing: true },
            ),
            at(
                refused(DataEnd, "421 4.7.0 [TSS04] temporarily deferred"),
                Throttled { closing: true },
            ),
            at(
                refused(
                    MailFrom,
                    "451 4.7.650 temporarily rate limited due to IP reputation",
                ),
                Throttled { closing: false },
            ),
            // Any other 421: the site asks us to go away.
            at(refused(MailFrom, "421 4.3.0 shutting down"), PauseSite),
            at(refused(Rset, "421 4.3.2 closing"), PauseSite),
            // A refused RSET: new session, never a bounce.
            at(refused(Rset, "500 5.5.1 what?"), Reconnect(Protocol)),
            at(refused(Rset, "451 4.3.0 later"), Reconnect(Protocol)),
            // The connection broke.
            at(timeout(DataEnd), SessionLost),
            at(timeout(RcptTo), SessionLost),
            at(closed(MailFrom), SessionLost),
            at(closed(DataEnd), SessionLost),
            at(io(DataEnd), Reconnect(Session)),
            at(tls(), Reconnect(Session)),
            at(garbage(RcptTo), Reconnect(Protocol)),
            (None, Unreachable),
        ]
    }

    /// A used session in the default dialect.
    const USED: SessionFacts = SessionFacts {
        dialect: Dialect::Full,
        transactions: 3,
        health: Health::InStep,
    };

    #[test]
    fn each_answer_gets_its_action() {
        let mut wrong = Vec::new();
        for (happened, expected) in table() {
            let action = match &happened {
                Some(result) => decide(Attempt::from(result), USED),
                None => decide(Attempt::NoSession, USED),
            };
            if action != expected {
                wrong.push(format!("{happened:?}: {action:?}, expected {expected:?}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn what_the_session_was_decides_between_fallback_and_giving_up() {
        let at = |dialect, transactions| SessionFacts {
            dialect,
            transactions,
            health: Health::InStep,
        };
        let after = |health| SessionFacts { health, ..USED };
        let queued = accepted("250 2.0.0 queued");
        let bad_sequence = refused(RcptTo, "503 5.5.1 Bad sequence of commands");
        let too_many = refused(
            MailFrom,
            "452 4.5.3 Too many recipients: Too many messages sent",
        );
        let rows = [
            (&bad_sequence, at(Dialect::NoAnnounce, 1), Fallback),
            (&bad_sequence, at(Dialect::Lockstep, 1), ProtocolFailed),
            (
                &out_of_step(MailFrom),
                at(Dialect::Lockstep, 2),
                ProtocolFailed,
            ),
            // The very first MAIL of a session refused so: not the session's limit.
            (&too_many, at(Dialect::Full, 1), Retry(Session)),
            (&too_many, at(Dialect::Lockstep, 7), SessionFull),
            // A 2yz to the end of data is a delivery, whatever the session does next.
            (&queued, after(Health::InStep), Delivered),
            (&queued, after(Health::OutOfStep), DeliveredOutOfStep),
            (&queued, after(Health::Closed), DeliveredLast),
        ];
        for (happened, facts, expected) in rows {
            let action = decide(Attempt::from(happened), facts);
            assert_eq!(action, expected, "{happened:?} on {facts:?}");
        }
    }

    #[test]
    fn each_action_does_what_its_scope_implies() {
        let effects = |keep_session, pause_site, row, rest| Effects {
            keep_session,
            pause_site,
            row,
            rest,
        };
        let (delivered, bounced) = (Row::Final(Status::Delivered), Row::Final(Status::Bounced));
        // (action, scope, keep the session, pause the site, the row, the rest of the batch)
        let table = [
            (
                Delivered,
                Message,
                effects(true, false, delivered, Rest::GoOn),
            ),
            (
                DeliveredOutOfStep,
                Message,
                effects(false, false, delivered, Rest::Requeue),
            ),
            (
                DeliveredLast,
                Message,
                effects(false, false, delivered, Rest::GoOn),
            ),
            (
                Bounce(Recipient),
                Recipient,
                effects(true, false, bounced, Rest::GoOn),
            ),
            (
                Bounce(Message),
                Message,
                effects(true, false, bounced, Rest::GoOn),
            ),
            (
                Retry(Recipient),
                Recipient,
                effects(true, false, Row::Retry, Rest::GoOn),
            ),
            (
                Reconnect(Protocol),
                Protocol,
                effects(false, false, Row::Retry, Rest::GoOn),
            ),
            (
                Reconnect(Session),
                Session,
                effects(false, false, Row::Retry, Rest::GoOn),
            ),
            (
                Fallback,
                Protocol,
                effects(false, false, Row::Again, Rest::Requeue),
            ),
            (
                ProtocolFailed,
                Protocol,
                effects(false, false, Row::Final(Status::Deferred), Rest::Requeue),
            ),
            (
                SessionFull,
                Session,
                effects(false, false, Row::Again, Rest::Requeue),
            ),
            (
                SessionLost,
                Session,
                effects(false, false, Row::Retry, Rest::Requeue),
            ),
            (
                PauseSite,
                Site,
                effects(false, true, Row::Retry, Rest::Requeue),
            ),
            (
                Unreachable,
                Site,
                effects(false, true, Row::Retry, Rest::SameFate),
            ),
            (
                Throttled { closing: true },
                Sender,
                effects(false, false, Row::Requeue, Rest::Requeue),
            ),
            (
                Throttled { closing: false },
                Sender,
                effects(true, false, Row::Requeue, Rest::GoOn),
            ),
        ];
        for (action, scope, expected) in table {
            assert_eq!(action.scope(), scope, "{action:?}");
            assert_eq!(action.effects(), expected, "{action:?}");
        }
    }
}
