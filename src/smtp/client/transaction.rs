//! One mail transaction over a [`Connection`], and the rules that attribute every reply to
//! the command it answers (docs/delivery.md, "Which reply answers which command").
//!
//! A verdict on a row comes only from a reply read in its turn, after its command went out:
//! - before anything is written (a command, a pipelined group, each block of the message, the
//!   block that ends it), whatever the server has already sent is *early*: it cannot answer
//!   what we are about to send, so the session ends out of step ([`ClientError::OutOfStep`]);
//! - a reply that cannot answer its command (a 354 to MAIL, a 2yz to DATA) is out of step;
//! - a refusal becomes a verdict only once the session proves in step after it: a RSET sent
//!   alone is answered 2yz with nothing behind it (or, when the next transaction already rode
//!   behind the refused message, its replies fit). A reply left over from a server that got
//!   out of step arrives before that RSET's reply (TCP keeps order) and ends the session;
//! - a 2yz to the end of data is a delivery, whatever follows; what follows (a surplus reply,
//!   a close) only ends the session ([`Health`]).
//!
//! After a message whose end of data carried the next transaction's commands (RFC 2920 §3.1),
//! the reply to that MAIL is due right behind the reply to the dot. A server that swallowed
//! them never answers: [`BEHIND_DOT_WAIT`] after the dot's reply the session ends with
//! [`ClientError::Unanswered`] instead of waiting for the server's own timeout.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, timeout_at};

use super::{
    Announced, ClientError, Connection, Dialect, Envelope, Health, Phase, Transaction, WRITE_BLOCK,
    brief, rejected, write_all,
};
use crate::smtp::command::Command;
use crate::smtp::data::DataPayload;
use crate::smtp::reply::{EnhancedCode, Reply};

/// How long the reply to a MAIL pipelined behind a message's end of data may lag behind the
/// reply to that end of data before the commands are taken as swallowed (capped by the `mail`
/// timeout). A server answers pipelined commands in order, so that reply normally follows
/// within milliseconds; 5 s leaves room for sender checks done at MAIL (SPF and DNS
/// blocklist lookups, including one lost DNS query retried after a resolver's usual 1–5 s),
/// and is an order of magnitude below the minute a server like chasquid waits before it drops
/// a silent session. Taking a slow server for one that swallows costs little: that session
/// ends, its rows go again at once uncounted, and the address is sent one transaction per
/// round trip for the rest of the run.
pub const BEHIND_DOT_WAIT: Duration = Duration::from_secs(5);

/// The replies to one pipelined group: MAIL, RCPT and DATA (no DATA with `BDAT`), read up to
/// a 421 (the server is closing: nothing more will come).
pub(super) struct Group {
    /// The reply to MAIL.
    mail: Reply,
    /// The reply to RCPT, unless MAIL got a 421.
    rcpt: Option<Reply>,
    /// The reply to DATA, unless an earlier one was a 421 or the message goes with `BDAT`.
    data: Option<Reply>,
}

impl Group {
    /// The 421 among the replies, with the command it answered.
    fn closing(&self) -> Option<(Phase, &Reply)> {
        [
            (Phase::MailFrom, Some(&self.mail)),
            (Phase::RcptTo, self.rcpt.as_ref()),
            (Phase::Data, self.data.as_ref()),
        ]
        .into_iter()
        .find_map(|(phase, r)| r.filter(|r| r.code == 421).map(|r| (phase, r)))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Runs one mail transaction: MAIL, RCPT, DATA, message (or MAIL, RCPT, `BDAT n LAST`
    /// and the unstuffed message when the server offers CHUNKING, RFC 3030). With PIPELINING
    /// the commands go out in one write (RFC 2920) and the replies are read in order. From
    /// the second transaction on, a RSET goes first (in the same write when pipelining, so
    /// reuse costs no extra round trip); a refused RSET is reported as rejected at
    /// [`Phase::Rset`].
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        payload: &DataPayload,
    ) -> Result<Transaction, ClientError> {
        self.send_then(envelope, payload, None).await
    }

    /// [`Connection::send`], and when the dialect is [`Dialect::Full`], the server offers
    /// PIPELINING and `next` is given, the next transaction's commands go out in the same
    /// write as this message's content (RFC 2920 §3.1: message content may be the first
    /// "command" of a group). The following call must then be for `next`'s envelope. One
    /// write and one read per message instead of two of each.
    ///
    /// A connection given up after announcing must be dropped, not QUIT: the server may be
    /// waiting for message content, and only closing the connection cancels it safely.
    ///
    /// Any reply out of step (early, surplus, or one that cannot answer its command) ends
    /// with [`ClientError::OutOfStep`] before anything more is sent, unless the message was
    /// already accepted: then the result is [`Transaction::Accepted`] and
    /// [`Connection::health`] says the session cannot carry another one.
    pub async fn send_then(
        &mut self,
        envelope: &Envelope,
        payload: &DataPayload,
        next: Option<(&Envelope, &DataPayload)>,
    ) -> Result<Transaction, ClientError> {
        self.usable()?;
        self.transactions += 1;
        let bdat = self.uses_bdat();
        let group = match self.take_announced(envelope, bdat).await? {
            Ok(group) => group,
            Err(refused) => return Ok(refused),
        };
        self.behind_dot = group.is_some();
        let refused = match group {
            Some(group) => self.judge_group(group).await?,
            None => self.send_envelope(envelope, payload, bdat).await?,
        };
        if let Some(refused) = refused {
            return Ok(refused);
        }
        let next = next.filter(|_| self.announcing());
        self.content(payload, bdat, next).await?;
        self.end_of_data().await
    }

    /// Fails when an earlier transaction left the session unusable.
    fn usable(&self) -> Result<(), ClientError> {
        match self.health {
            Health::InStep => Ok(()),
            Health::OutOfStep => Err(ClientError::OutOfStep {
                phase: Phase::MailFrom,
                what: self.surplus.clone(),
            }),
            Health::Closed => Err(ClientError::Closed {
                phase: Phase::MailFrom,
            }),
        }
    }

    /// A new transaction's envelope, pipelined or in lockstep; `Some` when it was refused.
    async fn send_envelope(
        &mut self,
        envelope: &Envelope,
        payload: &DataPayload,
        bdat: bool,
    ) -> Result<Option<Transaction>, ClientError> {
        let rset = self.pending_rset;
        self.pending_rset = true;
        // Nothing is owed: anything the server sent meanwhile is early.
        self.in_step(Phase::MailFrom).await?;
        if self.pipelining() {
            self.pipelined_envelope(envelope, payload, rset, bdat).await
        } else {
            self.lockstep_envelope(envelope, payload, rset, bdat).await
        }
    }

    /// Settles the transaction announced behind the last message: `Ok(Some(replies))` when
    /// it is this one; `Ok(None)` when nothing was announced, or another one was (its replies
    /// are read and the session goes on with RSET); `Err` with a 421 when the server is
    /// closing.
    async fn take_announced(
        &mut self,
        envelope: &Envelope,
        bdat: bool,
    ) -> Result<Result<Option<Group>, Transaction>, ClientError> {
        let Some(a) = self.announced.take() else {
            return Ok(Ok(None));
        };
        let this = a.from == envelope.from && a.to == envelope.to && a.bdat == bdat;
        let group = self.announced_replies(a).await?;
        self.pending_rset = true;
        if this {
            return Ok(Ok(Some(group)));
        }
        if group.data.as_ref().is_some_and(Reply::is_intermediate) {
            // Never send an empty message: drop the connection instead.
            return Err(ClientError::Closed { phase: Phase::Data });
        }
        if group.closing().is_some() {
            let closing = Reply::local(421, EnhancedCode::new(4, 3, 2), "closing");
            return Ok(Err(rejected(Phase::Rset, closing)));
        }
        Ok(Ok(None))
    }

    /// The replies to the commands that rode behind the last message: read earlier, or now.
    /// The reply to MAIL is due [`BEHIND_DOT_WAIT`] after the reply to that message's end of
    /// data (or the `mail` timeout, if shorter); without it the commands were swallowed.
    async fn announced_replies(&mut self, a: Announced) -> Result<Group, ClientError> {
        if let Some(group) = a.replies {
            return Ok(group);
        }
        let wait = BEHIND_DOT_WAIT.min(self.timeouts.mail);
        let due = a.answered_at.unwrap_or_else(Instant::now) + wait;
        let mail = match timeout_at(due, self.expect(Phase::MailFrom, wait, true)).await {
            Ok(Err(ClientError::Timeout { .. })) | Err(_) => {
                return Err(ClientError::Unanswered { after: wait });
            }
            Ok(mail) => mail?,
        };
        self.group_rest(mail, a.bdat).await
    }

    /// RSET (when due), MAIL, RCPT and DATA (not with `BDAT`) in one write; their replies.
    async fn pipelined_envelope(
        &mut self,
        envelope: &Envelope,
        payload: &DataPayload,
        rset: bool,
        bdat: bool,
    ) -> Result<Option<Transaction>, ClientError> {
        let t = self.timeouts;
        if rset {
            self.queue(&Command::Rset);
        }
        self.queue_transaction(envelope, payload, bdat);
        self.flush(Phase::MailFrom, t.command).await?;
        if rset {
            let r = self.expect(Phase::Rset, t.command, true).await?;
            if !r.is_positive() {
                if r.code != 421 {
                    // Keep the session in step, then give up on it.
                    self.read_group(bdat).await?;
                }
                return Ok(Some(rejected(Phase::Rset, r)));
            }
        }
        let group = self.read_group(bdat).await?;
        self.judge_group(group).await
    }

    /// Reads the replies to a pipelined MAIL, RCPT and DATA (not with `BDAT`).
    async fn read_group(&mut self, bdat: bool) -> Result<Group, ClientError> {
        let mail = self
            .expect(Phase::MailFrom, self.timeouts.mail, true)
            .await?;
        self.group_rest(mail, bdat).await
    }

    /// The replies after MAIL's: a 421 means the server is closing the connection (RFC 5321
    /// §3.8), so the replies still pending will never come.
    async fn group_rest(&mut self, mail: Reply, bdat: bool) -> Result<Group, ClientError> {
        let t = self.timeouts;
        let mut group = Group {
            mail,
            rcpt: None,
            data: None,
        };
        if group.mail.code == 421 {
            return Ok(group);
        }
        let rcpt = self.expect(Phase::RcptTo, t.rcpt, true).await?;
        let closing = rcpt.code == 421;
        group.rcpt = Some(rcpt);
        if !bdat && !closing {
            group.data = Some(self.expect(Phase::Data, t.data_init, true).await?);
        }
        Ok(group)
    }

    /// RSET (when due), MAIL, RCPT and DATA (not with `BDAT`) one at a time, stopping at the
    /// first refusal.
    async fn lockstep_envelope(
        &mut self,
        envelope: &Envelope,
        payload: &DataPayload,
        rset: bool,
        bdat: bool,
    ) -> Result<Option<Transaction>, ClientError> {
        let t = self.timeouts;
        if rset {
            let r = self.command(Command::Rset, Phase::Rset, t.command).await?;
            if !r.is_positive() {
                return Ok(Some(rejected(Phase::Rset, r)));
            }
        }
        let mail = self.mail_command(envelope, payload);
        let mail = self.command(mail, Phase::MailFrom, t.mail).await?;
        let mut group = Group {
            mail,
            rcpt: None,
            data: None,
        };
        if group.mail.is_positive() {
            let rcpt = Command::RcptTo(&envelope.to);
            let rcpt = self.command(rcpt, Phase::RcptTo, t.rcpt).await?;
            let go_on = rcpt.is_positive() && !bdat;
            group.rcpt = Some(rcpt);
            if go_on {
                let data = self.command(Command::Data, Phase::Data, t.data_init);
                group.data = Some(data.await?);
            }
        }
        self.judge_group(group).await
    }

    /// The first refusal among a group's replies, if any, made a verdict (see
    /// [`Connection::confirm`]). A server that wrongly accepted DATA after refusing every
    /// recipient gets an empty message, so that the session stays in step (RFC 2920 §3.1).
    async fn judge_group(&mut self, group: Group) -> Result<Option<Transaction>, ClientError> {
        if let Some((phase, reply)) = group.closing() {
            return Ok(Some(rejected(phase, reply.clone())));
        }
        let Group { mail, rcpt, data } = group;
        let data_ok = data.as_ref().is_some_and(Reply::is_intermediate);
        let refused = if !mail.is_positive() {
            Some((Phase::MailFrom, mail))
        } else if let Some(r) = rcpt.filter(|r| !r.is_positive()) {
            Some((Phase::RcptTo, r))
        } else {
            data.filter(|d| !d.is_intermediate())
                .map(|d| (Phase::Data, d))
        };
        let Some((phase, reply)) = refused else {
            return Ok(None);
        };
        if data_ok {
            let t = self.timeouts;
            self.in_step(Phase::DataEnd).await?;
            self.wbuf.extend_from_slice(b".\r\n");
            self.flush(Phase::DataEnd, t.data_block).await?;
            self.expect(Phase::DataEnd, t.data_end, false).await?;
        }
        self.confirm(phase, reply).await.map(Some)
    }

    /// A refusal becomes the verdict only when the session is in step after it: nothing
    /// more has arrived, and a RSET sent alone is answered 2yz with nothing behind it. A
    /// reply the server owed to something else (a 354 it sent after refusing DATA, a second
    /// reply to RCPT) reaches us before that RSET's reply, so it cannot pass for it unless it
    /// is itself a 2yz; then it is caught when the RSET's own reply follows. The next
    /// transaction needs no RSET of its own.
    async fn confirm(&mut self, phase: Phase, reply: Reply) -> Result<Transaction, ClientError> {
        let t = self.timeouts.command;
        let r = self.command(Command::Rset, Phase::Rset, t).await?;
        if !r.is_positive() {
            let what = format!("{} to the RSET after a refusal", brief(&r));
            return Err(match r.code {
                421 => ClientError::Closed { phase: Phase::Rset },
                _ => ClientError::OutOfStep {
                    phase: Phase::Rset,
                    what,
                },
            });
        }
        self.settle(Phase::Rset).await?;
        self.pending_rset = false;
        Ok(rejected(phase, reply))
    }

    /// After a verdict, when nothing more is owed: a reply now is surplus (`Err`); a close
    /// only ends the session ([`Health::Closed`]) and leaves the verdict standing.
    async fn settle(&mut self, phase: Phase) -> Result<(), ClientError> {
        match self.in_step(phase).await {
            Err(e @ ClientError::OutOfStep { .. }) => Err(e),
            Err(_) => {
                self.health = Health::Closed;
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// Reads the reply to the end of data. A 2yz is the delivery, whatever the session does
    /// next (a surplus reply or a close only end it: [`Connection::health`]). A refusal is
    /// confirmed in step (by the replies of the transaction announced behind it, else by
    /// [`Connection::confirm`]) before it is returned.
    async fn end_of_data(&mut self) -> Result<Transaction, ClientError> {
        let end = self
            .expect(Phase::DataEnd, self.timeouts.data_end, false)
            .await?;
        let announced = self.announced.take();
        if end.is_positive() {
            match announced {
                Some(mut a) => {
                    a.answered_at = Some(Instant::now());
                    self.announced = Some(a);
                }
                // A second reply to the end of data would answer our next command.
                None => self.after_verdict().await,
            }
            return Ok(Transaction::Accepted(end));
        }
        if end.code == 421 {
            self.announced = announced;
            return Ok(rejected(Phase::DataEnd, end));
        }
        match announced {
            Some(a) => {
                self.settle_announced(a).await?;
                Ok(rejected(Phase::DataEnd, end))
            }
            None => self.confirm(Phase::DataEnd, end).await,
        }
    }

    /// The message the transaction `a` rode behind was refused: that refusal is a verdict
    /// only if the replies to `a`'s commands, due right behind it, fit them and nothing
    /// follows. They are kept for when `a` is sent.
    async fn settle_announced(&mut self, mut a: Announced) -> Result<(), ClientError> {
        a.answered_at = Some(Instant::now());
        let (from, to, bdat) = (a.from.clone(), a.to.clone(), a.bdat);
        let group = self.announced_replies(a).await?;
        self.announced = Some(Announced {
            from,
            to,
            bdat,
            answered_at: None,
            replies: Some(group),
        });
        self.settle(Phase::DataEnd).await
    }

    /// Notes what the session is after a message was accepted and nothing more is owed.
    async fn after_verdict(&mut self) {
        if let Err(ClientError::OutOfStep { what, .. }) = self.settle(Phase::DataEnd).await {
            self.surplus = what;
            self.health = Health::OutOfStep;
        }
    }

    /// Writes the message (stuffed after DATA's 354, or `BDAT n LAST` and the raw message),
    /// and behind it, when given, the next transaction's commands. Before each write, the
    /// server must have sent nothing: a reply now would be early.
    async fn content(
        &mut self,
        payload: &DataPayload,
        bdat: bool,
        next: Option<(&Envelope, &DataPayload)>,
    ) -> Result<(), ClientError> {
        let limit = self.timeouts.data_block;
        self.in_step(Phase::DataEnd).await?;
        if bdat {
            let size = payload.raw_len();
            self.queue(&Command::Bdat { size, last: true });
            for segment in payload.raw_segments() {
                self.buffer_content(segment, limit).await?;
            }
        } else {
            self.buffer_content(payload.as_bytes(), limit).await?;
        }
        if let Some((env, pl)) = next {
            // The "." (or BDAT LAST) ends this transaction, so the next one needs no RSET.
            self.queue_transaction(env, pl, bdat);
            self.announced = Some(Announced {
                from: env.from.clone(),
                to: env.to.clone(),
                bdat,
                answered_at: None,
                replies: None,
            });
            self.pending_rset = false;
        }
        self.flush(Phase::DataEnd, limit).await
    }

    /// Adds message bytes to the write buffer, writing out full blocks: the buffer never
    /// holds much more than one block, whatever the message size.
    async fn buffer_content(&mut self, bytes: &[u8], limit: Duration) -> Result<(), ClientError> {
        if self.wbuf.len() + bytes.len() <= WRITE_BLOCK {
            self.wbuf.extend_from_slice(bytes);
            return Ok(());
        }
        self.flush(Phase::DataEnd, limit).await?;
        for block in bytes.chunks(WRITE_BLOCK) {
            self.in_step(Phase::DataEnd).await?;
            write_all(&mut self.stream, block, Phase::DataEnd, limit).await?;
        }
        self.in_step(Phase::DataEnd).await
    }

    /// True when the last transaction's commands had ridden behind the previous message's
    /// end of data: a refusal of them is a refusal of commands sent behind the dot.
    pub fn last_behind_dot(&self) -> bool {
        self.behind_dot
    }

    /// True when the session's dialect lets the next transaction's commands ride behind the
    /// end of data (the server offers PIPELINING and the dialect is [`Dialect::Full`]).
    pub fn announcing(&self) -> bool {
        self.pipelining() && self.dialect == Dialect::Full
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, duplex};

    use super::*;
    use crate::smtp::Timeouts;

    /// What the scripted peer does after a command or a message's end.
    struct Step {
        /// Waited (in the runtime's time) before answering.
        delay: u64,
        /// Sent as it is (several replies, or none).
        answer: &'static str,
    }

    fn say(answer: &'static str) -> Step {
        Step { delay: 0, answer }
    }

    /// A peer over a pipe that offers PIPELINING, answers each command line and each message
    /// end with the next step, and, when `swallow`, drops whatever arrived with a message's
    /// final dot (as a server that reads past the dot does). Returns the lines it read.
    async fn peer(server: DuplexStream, steps: Vec<Step>, swallow: bool) -> Vec<String> {
        let (r, mut w) = tokio::io::split(server);
        let mut r = BufReader::new(r);
        let mut steps: VecDeque<Step> = steps.into();
        w.write_all(b"220 mx\r\n").await.unwrap();
        let (mut seen, mut in_data) = (Vec::new(), false);
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return seen;
            }
            let ends = in_data && line == ".\r\n";
            if in_data && !ends {
                continue;
            }
            seen.push(line.trim_end().to_string());
            if ends && swallow {
                let n = r.buffer().len();
                std::pin::Pin::new(&mut r).consume(n);
            }
            let reply = match line.get(..4) {
                Some("EHLO") => say("250-mx\r\n250 PIPELINING\r\n"),
                _ => steps.pop_front().unwrap_or(say("")),
            };
            tokio::time::sleep(Duration::from_secs(reply.delay)).await;
            in_data = reply.answer.starts_with("354") || (in_data && !ends);
            w.write_all(reply.answer.as_bytes()).await.unwrap();
        }
    }

    async fn open(steps: Vec<Step>, swallow: bool) -> Connection<DuplexStream> {
        let (client, server) = duplex(64 * 1024);
        tokio::spawn(peer(server, steps, swallow));
        let limits = Timeouts::uniform(Duration::from_secs(60));
        let (mut c, _) = Connection::greet(client, limits).await.unwrap();
        c.hello("me.test").await.unwrap();
        c
    }

    fn env(to: &str) -> Envelope {
        Envelope {
            from: "news@sender.test".into(),
            to: to.into(),
        }
    }

    fn payload() -> DataPayload {
        DataPayload::from_message(b"Subject: x\r\n\r\nbody\r\n")
    }

    /// The first message's steps: MAIL, RCPT, DATA, end of data.
    fn accepted() -> Vec<Step> {
        [
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 2.0.0 a queued\r\n",
        ]
        .into_iter()
        .map(say)
        .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn commands_swallowed_behind_the_dot_are_noticed_at_the_wait_after_the_dots_reply() {
        let mut c = open(accepted(), true).await;
        let (a, b, p) = (env("a@d.test"), env("b@d.test"), payload());
        let r = c.send_then(&a, &p, Some((&b, &p))).await.unwrap();
        assert!(matches!(r, Transaction::Accepted(_)), "{r:?}");
        let answered = Instant::now();
        // Whatever the worker does before sending b, the wait counts from the dot's reply.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let err = c.send_then(&b, &p, None).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Unanswered { after } if after == BEHIND_DOT_WAIT),
            "{err}"
        );
        assert_eq!(answered.elapsed(), BEHIND_DOT_WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_mail_reply_behind_the_dot_that_takes_a_few_seconds_is_waited_for() {
        let mut steps = accepted();
        steps.push(Step {
            delay: 4,
            answer: "250 ok\r\n",
        });
        steps.extend(["250 ok\r\n", "354 go\r\n", "250 2.0.0 b queued\r\n"].map(say));
        let mut c = open(steps, false).await;
        let (a, b, p) = (env("a@d.test"), env("b@d.test"), payload());
        c.send_then(&a, &p, Some((&b, &p))).await.unwrap();
        let r = c.send_then(&b, &p, None).await.unwrap();
        assert!(
            matches!(r, Transaction::Accepted(ref x) if x.text() == "b queued"),
            "{r:?}"
        );
    }

    #[tokio::test]
    async fn a_reply_that_came_before_the_message_went_out_is_early_and_nothing_is_sent() {
        let steps = ["250 ok\r\n", "250 ok\r\n", "354 go\r\n250 2.0.0 early\r\n"]
            .into_iter()
            .map(say)
            .collect();
        let mut c = open(steps, false).await;
        let err = c.send(&env("a@d.test"), &payload()).await.unwrap_err();
        assert!(
            matches!(err, ClientError::OutOfStep { phase: Phase::DataEnd, ref what }
                if what.contains("250 2.0.0 early")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_refusal_is_returned_only_after_a_rset_answered_in_step() {
        // RCPT refused, DATA refused (in step): the RSET sent alone confirms it.
        let steps = [
            "250 ok\r\n",
            "550 5.1.1 no such user\r\n",
            "554 5.5.1 no rcpt\r\n",
        ];
        let mut steps: Vec<Step> = steps.into_iter().map(say).collect();
        steps.push(say("250 2.0.0 reset\r\n"));
        let (client, server) = duplex(64 * 1024);
        let seen = tokio::spawn(peer(server, steps, false));
        let limits = Timeouts::uniform(Duration::from_secs(60));
        let (mut c, _) = Connection::greet(client, limits).await.unwrap();
        c.hello("me.test").await.unwrap();
        let r = c.send(&env("a@d.test"), &payload()).await.unwrap();
        assert!(
            matches!(r, Transaction::Rejected { phase: Phase::RcptTo, ref reply } if reply.code == 550),
            "{r:?}"
        );
        drop(c);
        let seen = seen.await.unwrap();
        assert_eq!(seen[4..], ["RSET"], "{seen:?}");
    }

    #[tokio::test]
    async fn a_354_left_over_behind_a_refusal_voids_it() {
        // DATA answered "550 5.1.1" and then "354": the 354 comes where the RSET's reply is due.
        let steps = ["250 ok\r\n", "250 ok\r\n", "550 5.1.1 extra\r\n354 go\r\n"];
        let mut c = open(steps.into_iter().map(say).collect(), false).await;
        let err = c.send(&env("a@d.test"), &payload()).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::OutOfStep {
                    phase: Phase::Rset,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_surplus_reply_after_the_250_to_the_data_leaves_it_a_delivery() {
        let mut steps = accepted();
        steps.pop();
        steps.push(say("250 2.0.0 queued\r\n250 2.0.0 stray\r\n"));
        let mut c = open(steps, false).await;
        let (a, p) = (env("a@d.test"), payload());
        let r = c.send(&a, &p).await.unwrap();
        assert!(matches!(r, Transaction::Accepted(ref x) if x.text() == "queued"));
        assert_eq!(c.health(), Health::OutOfStep);
        assert!(c.out_of_step().contains("stray"), "{}", c.out_of_step());
        // The session carries nothing more.
        let err = c.send(&env("b@d.test"), &p).await.unwrap_err();
        assert!(matches!(err, ClientError::OutOfStep { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_refused_message_is_judged_only_once_the_commands_behind_it_are_answered_in_step() {
        // a's end of data is refused; b rode behind it and its replies are shifted by one (a
        // second reply to a's end of data): the refusal of a is not a verdict.
        let mut steps = accepted();
        steps.pop();
        steps.push(say("554 5.7.1 spam\r\n250 2.0.0 queued after all\r\n"));
        steps.extend(["250 ok\r\n", "250 ok\r\n", "354 go\r\n"].map(say));
        let mut c = open(steps, false).await;
        let (a, b, p) = (env("a@d.test"), env("b@d.test"), payload());
        let err = c.send_then(&a, &p, Some((&b, &p))).await.unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::OutOfStep {
                    phase: Phase::Data,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_refused_message_with_the_next_transaction_behind_it_keeps_that_ones_replies() {
        let mut steps = accepted();
        steps.pop();
        steps.push(say("554 5.7.1 spam\r\n"));
        steps.extend(["250 ok\r\n", "250 ok\r\n", "354 go\r\n", "250 b queued\r\n"].map(say));
        let mut c = open(steps, false).await;
        let (a, b, p) = (env("a@d.test"), env("b@d.test"), payload());
        let r = c.send_then(&a, &p, Some((&b, &p))).await.unwrap();
        assert!(
            matches!(r, Transaction::Rejected { phase: Phase::DataEnd, ref reply } if reply.code == 554),
            "{r:?}"
        );
        let r = c.send_then(&b, &p, None).await.unwrap();
        assert!(
            matches!(r, Transaction::Accepted(ref x) if x.text() == "b queued"),
            "{r:?}"
        );
    }
}
