//! The SMTP client, split by protocol phase, each phase with its own timeout.
//!
//! Generic over the stream so that tests can drive it over any duplex pipe and TLS can wrap a
//! TCP stream. A rejected recipient or message is a value ([`Transaction::Rejected`]), not an
//! error: the connection stays usable (after `RSET`) for the next message. Errors
//! ([`ClientError`]) mean the connection itself is gone or unusable.

use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, timeout};

use super::command::Command;
use super::data::DataPayload;
use super::reply::{Reply, ReplyError, parse_reply};

mod transaction;

pub use transaction::BEHIND_DOT_WAIT;
use transaction::Group;

/// Per-phase timeouts. Defaults are RFC 5321 §4.5.3.2's minimums, except connect (Postfix's 30 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Waiting for the 220 greeting (RFC: 5 min).
    pub greeting: Duration,
    /// EHLO/HELO/STARTTLS/RSET/NOOP/QUIT replies (RFC 5321 gives 5 min for MAIL; we use it here).
    pub command: Duration,
    /// MAIL FROM reply (5 min).
    pub mail: Duration,
    /// RCPT TO reply (5 min).
    pub rcpt: Duration,
    /// DATA → 354 (2 min).
    pub data_init: Duration,
    /// Writing each block of the message (3 min).
    pub data_block: Duration,
    /// Reply to the final "." (10 min).
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(60 * m);
        Self {
            connect: Duration::from_secs(30),
            greeting: min(5),
            command: min(5),
            mail: min(5),
            rcpt: min(5),
            data_init: min(2),
            data_block: min(3),
            data_end: min(10),
        }
    }
}

impl Timeouts {
    /// Every phase bounded by the same duration (tests, and `--timeout` style overrides).
    pub fn uniform(d: Duration) -> Self {
        Self {
            connect: d,
            greeting: d,
            command: d,
            mail: d,
            rcpt: d,
            data_init: d,
            data_block: d,
            data_end: d,
        }
    }
}

/// A `--timeout` phase name that does not exist.
#[derive(Debug, Error, PartialEq, Eq)]
#[error(
    "unknown timeout phase {0:?} (use connect, greeting, command, mail, rcpt, data, data-block or data-end)"
)]
pub struct UnknownPhase(pub String);

impl Timeouts {
    /// Sets one phase's timeout by the name used on the command line (`--timeout data-end=2m`).
    pub fn set(&mut self, phase: &str, d: Duration) -> Result<(), UnknownPhase> {
        let slot = match phase.trim().to_ascii_lowercase().as_str() {
            "connect" => &mut self.connect,
            "greeting" => &mut self.greeting,
            "command" | "ehlo" | "starttls" | "rset" | "quit" => &mut self.command,
            "mail" => &mut self.mail,
            "rcpt" => &mut self.rcpt,
            "data" | "data-init" => &mut self.data_init,
            "data-block" => &mut self.data_block,
            "data-end" => &mut self.data_end,
            _ => return Err(UnknownPhase(phase.to_string())),
        };
        *slot = d;
        Ok(())
    }
}

/// The step of the SMTP dialogue; outcomes and errors record which one failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// TCP connect.
    Connect,
    /// 220 greeting.
    Greeting,
    /// EHLO (or the HELO fallback).
    Ehlo,
    /// STARTTLS and the TLS handshake.
    StartTls,
    /// MAIL FROM.
    MailFrom,
    /// RCPT TO.
    RcptTo,
    /// DATA up to the 354.
    Data,
    /// Sending the message and the reply to the final ".".
    DataEnd,
    /// RSET between transactions.
    Rset,
    /// QUIT.
    Quit,
}

impl Phase {
    /// Lower-case name used in the results CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Greeting => "greeting",
            Phase::Ehlo => "ehlo",
            Phase::StartTls => "starttls",
            Phase::MailFrom => "mail",
            Phase::RcptTo => "rcpt",
            Phase::Data => "data",
            Phase::DataEnd => "data-end",
            Phase::Rset => "rset",
            Phase::Quit => "quit",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The connection failed or became unusable.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No reply (or write) within the phase's timeout.
    #[error("timed out after {after:?} during {phase}")]
    Timeout {
        /// Phase that timed out.
        phase: Phase,
        /// The timeout that expired.
        after: Duration,
    },
    /// Socket error.
    #[error("network error during {phase}: {source}")]
    Io {
        /// Phase in progress.
        phase: Phase,
        /// Underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection.
    #[error("connection closed by server during {phase}")]
    Closed {
        /// Phase in progress.
        phase: Phase,
    },
    /// The TLS handshake after STARTTLS failed (bad certificate, no common cipher, garbage).
    #[error("TLS handshake failed: {source}")]
    Tls {
        /// What rustls reported.
        #[source]
        source: std::io::Error,
    },
    /// The server sent something that is not an SMTP reply.
    #[error("protocol error during {phase}: {source}")]
    Protocol {
        /// Phase in progress.
        phase: Phase,
        /// What was wrong with the bytes.
        #[source]
        source: ReplyError,
    },
    /// A reply that cannot answer the command it would belong to (a 354 to MAIL, a 250 to
    /// DATA), or one that came when none was owed (after the greeting, a second reply to the
    /// end of data): the dialogue is out of step and nothing more it says can be trusted.
    #[error("reply out of step during {phase}: {what}")]
    OutOfStep {
        /// Phase in progress.
        phase: Phase,
        /// The reply (shortened), or what arrived.
        what: String,
    },
    /// The connection was lost while the replies to a pipelined group were awaited: some
    /// servers hang up on pipelining they do not accept.
    #[error("connection lost right after a pipelined group, during {phase}")]
    GroupDropped {
        /// Phase whose reply was awaited.
        phase: Phase,
    },
    /// The commands pipelined behind a message's end of data got no reply within `after` of
    /// the reply to that end of data: the server swallowed them (some read past the dot and
    /// drop what follows), and would only answer when its own timeout closes the session.
    #[error("no reply to the commands pipelined behind the final dot within {after:?}")]
    Unanswered {
        /// How long the reply was awaited after the reply to the end of data.
        after: Duration,
    },
}

impl ClientError {
    /// The phase in which the connection failed.
    pub fn phase(&self) -> Phase {
        match self {
            ClientError::Timeout { phase, .. }
            | ClientError::Io { phase, .. }
            | ClientError::Closed { phase }
            | ClientError::Protocol { phase, .. }
            | ClientError::OutOfStep { phase, .. }
            | ClientError::GroupDropped { phase } => *phase,
            ClientError::Tls { .. } => Phase::StartTls,
            ClientError::Unanswered { .. } => Phase::MailFrom,
        }
    }
}

/// What the server advertised in its EHLO reply (RFC 5321 §4.1.1.1 and extensions).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// True when the session was opened with EHLO (false after a HELO fallback).
    pub esmtp: bool,
    /// RFC 2920.
    pub pipelining: bool,
    /// RFC 1870; `Some(0)` means "no fixed limit".
    pub size: Option<u64>,
    /// RFC 6152.
    pub eight_bit_mime: bool,
    /// RFC 6531.
    pub smtputf8: bool,
    /// RFC 2034.
    pub enhanced_status_codes: bool,
    /// RFC 3207.
    pub starttls: bool,
    /// RFC 3030 (`BDAT`).
    pub chunking: bool,
}

impl Capabilities {
    /// Reads the keywords of an EHLO reply (the first line is the server's name).
    pub fn from_ehlo(reply: &Reply) -> Self {
        let mut caps = Capabilities {
            esmtp: true,
            ..Default::default()
        };
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "STARTTLS" => caps.starttls = true,
                "CHUNKING" => caps.chunking = true,
                _ => {}
            }
        }
        caps
    }
}

/// How much a session pipelines. RFC 2920 allows all of it, but servers hardened
/// against SMTP smuggling refuse some (one answers every command sent behind the end-of-data
/// dot with `503 5.5.1`), so each MX address starts at [`Dialect::Full`] and falls back a step
/// each time it objects, for the rest of the run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dialect {
    /// PIPELINING, with the next transaction's commands behind the end of data (RFC 2920
    /// §3.1), and CHUNKING (RFC 3030) when offered.
    #[default]
    Full,
    /// PIPELINING of one transaction's MAIL, RCPT and DATA (or BDAT) only.
    NoAnnounce,
    /// One command, one reply: no PIPELINING, no CHUNKING.
    Lockstep,
}

impl Dialect {
    /// The next more conservative dialect; `None` for [`Dialect::Lockstep`].
    pub fn fallback(self) -> Option<Self> {
        match self {
            Dialect::Full => Some(Dialect::NoAnnounce),
            Dialect::NoAnnounce => Some(Dialect::Lockstep),
            Dialect::Lockstep => None,
        }
    }

    /// Name in the run summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Full => "pipelining",
            Dialect::NoAnnounce => "pipelining-without-announcing",
            Dialect::Lockstep => "no-pipelining",
        }
    }

    /// Parses [`Dialect::as_str`] back (a remembered dialect).
    pub fn parse(s: &str) -> Option<Self> {
        [Dialect::Full, Dialect::NoAnnounce, Dialect::Lockstep]
            .into_iter()
            .find(|d| d.as_str() == s)
    }
}

impl std::fmt::Display for Dialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The envelope of one transaction (RFC 5321 §2.3.1), kept apart from the message headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Reverse path (MAIL FROM).
    pub from: String,
    /// Forward path (RCPT TO): one recipient per personalised message.
    pub to: String,
}

impl Envelope {
    /// True when either address has non-ASCII characters (needs SMTPUTF8, RFC 6531).
    pub fn needs_smtputf8(&self) -> bool {
        !self.from.is_ascii() || !self.to.is_ascii()
    }
}

/// Result of one mail transaction on a live connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transaction {
    /// The final "." was answered 2yz.
    Accepted(Reply),
    /// The server refused at `phase`; the connection is still usable after RSET.
    Rejected {
        /// Which command was refused.
        phase: Phase,
        /// The refusal.
        reply: Reply,
    },
}

/// An open SMTP session over `S`.
pub struct Connection<S> {
    stream: S,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    timeouts: Timeouts,
    caps: Capabilities,
    /// Transactions started on this connection (for the per-connection cap and the report).
    transactions: usize,
    /// A transaction ended on this connection: the next one starts with RSET.
    pending_rset: bool,
    /// The next transaction's commands already went out behind the last message (RFC 2920
    /// §3.1); their replies are still to be read.
    announced: Option<Announced>,
    /// How much this session pipelines.
    dialect: Dialect,
    /// Whether `BDAT` may be used when the server offers CHUNKING.
    chunking: bool,
    /// What became of the session after the last verdict.
    health: Health,
    /// What put the session out of step, for [`Health::OutOfStep`].
    surplus: String,
    /// The last transaction's commands rode behind the previous message's end of data.
    behind_dot: bool,
}

/// What the client knows of a session after a message was accepted: a surplus reply or a
/// close noticed then does not undo the delivery, but the session must not carry another
/// transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Health {
    /// Nothing wrong noticed.
    #[default]
    InStep,
    /// The server sent a reply nothing asked for ([`Connection::out_of_step`] says what).
    OutOfStep,
    /// The server closed the connection, or it failed.
    Closed,
}

/// A transaction whose commands were sent behind the previous message.
struct Announced {
    /// Its envelope, to check that the next `send` is for it.
    from: String,
    to: String,
    /// Sent for `BDAT` (MAIL, RCPT) rather than `DATA` (MAIL, RCPT, DATA).
    bdat: bool,
    /// When the reply to the end of data it rode behind arrived: its own replies are due
    /// right behind it (see [`BEHIND_DOT_WAIT`]).
    answered_at: Option<Instant>,
    /// Its replies, when they had to be read before it was sent (to confirm a refusal of the
    /// message it rode behind).
    replies: Option<Group>,
}

/// Bytes written per write while sending a large message.
const WRITE_BLOCK: usize = 64 * 1024;

/// A reply as a short, printable text for error messages.
fn brief(reply: &Reply) -> String {
    let text = reply.to_string();
    match text.char_indices().nth(120) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

fn rejected(phase: Phase, reply: Reply) -> Transaction {
    Transaction::Rejected { phase, reply }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Wraps a connected stream and reads the greeting. A non-2yz greeting is returned as the
    /// reply for the caller to judge (try the next MX on 4yz/5yz).
    pub async fn greet(stream: S, timeouts: Timeouts) -> Result<(Self, Reply), ClientError> {
        let mut conn = Self::resume(stream, timeouts);
        let reply = conn.read_reply(Phase::Greeting, timeouts.greeting).await?;
        Ok((conn, reply))
    }

    /// Wraps a stream in the middle of a session (after the STARTTLS handshake): no greeting is
    /// read and nothing learnt before is kept (RFC 3207 §4.2); the caller must EHLO again.
    pub fn resume(stream: S, timeouts: Timeouts) -> Self {
        Self {
            stream,
            rbuf: Vec::with_capacity(4096),
            wbuf: Vec::with_capacity(512),
            timeouts,
            caps: Capabilities::default(),
            transactions: 0,
            pending_rset: false,
            announced: None,
            dialect: Dialect::Full,
            chunking: true,
            health: Health::InStep,
            surplus: String::new(),
            behind_dot: false,
        }
    }

    /// The underlying stream (e.g. to ask which TLS version was negotiated).
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The capabilities learnt from the last EHLO.
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// Number of transactions attempted on this connection.
    pub fn transactions(&self) -> usize {
        self.transactions
    }

    /// What became of the session after the last transaction: anything but
    /// [`Health::InStep`] means it must not be used again.
    pub fn health(&self) -> Health {
        self.health
    }

    /// What the server sent out of step after the last message was accepted (see
    /// [`Health::OutOfStep`]), shortened; empty otherwise.
    pub fn out_of_step(&self) -> &str {
        &self.surplus
    }

    /// How much this session pipelines.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Sets how much this session pipelines (kept across STARTTLS by the caller).
    pub fn set_dialect(&mut self, dialect: Dialect) {
        self.dialect = dialect;
    }

    /// Allows or forbids `BDAT` (it is used when the server offers CHUNKING, the dialect
    /// pipelines and this is on, which it is by default).
    pub fn set_chunking(&mut self, on: bool) {
        self.chunking = on;
    }

    /// True when the next message goes out with `BDAT` rather than `DATA`.
    pub fn uses_bdat(&self) -> bool {
        self.chunking && self.caps.chunking && self.caps.esmtp && self.dialect != Dialect::Lockstep
    }

    fn pipelining(&self) -> bool {
        self.caps.pipelining && self.dialect != Dialect::Lockstep
    }

    /// Sends EHLO, falling back to HELO when the server refuses EHLO with 5yz (RFC 5321
    /// §3.2). Returns the final reply; a non-2yz reply means the session cannot be used.
    pub async fn hello(&mut self, name: &str) -> Result<Reply, ClientError> {
        let t = self.timeouts.command;
        let reply = self.command(Command::Ehlo(name), Phase::Ehlo, t).await?;
        if reply.is_positive() {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(reply);
        }
        if reply.code >= 500 {
            let reply = self.command(Command::Helo(name), Phase::Ehlo, t).await?;
            self.caps = Capabilities::default();
            return Ok(reply);
        }
        Ok(reply)
    }

    /// Sends STARTTLS and returns the reply; on 220 the caller performs the handshake over
    /// [`Connection::into_stream`] and must EHLO again (RFC 3207 §4.2).
    pub async fn starttls(&mut self) -> Result<Reply, ClientError> {
        let t = self.timeouts.command;
        self.command(Command::StartTls, Phase::StartTls, t).await
    }

    /// Gives up the stream (for the TLS handshake). Buffered unread bytes are discarded, as
    /// RFC 3207 §5 requires against command injection.
    pub fn into_stream(self) -> (S, Timeouts) {
        (self.stream, self.timeouts)
    }

    /// True when the next transaction's commands were already sent (see
    /// [`Connection::send_then`]): the connection must then be dropped rather than QUIT.
    pub fn has_announced(&self) -> bool {
        self.announced.is_some()
    }

    fn mail_command<'a>(&self, envelope: &'a Envelope, payload: &DataPayload) -> Command<'a> {
        Command::MailFrom {
            from: &envelope.from,
            size: self.caps.size.map(|_| payload.message_len()),
            smtputf8: self.caps.smtputf8 && envelope.needs_smtputf8(),
        }
    }

    /// MAIL and RCPT, and DATA unless the message goes with `BDAT`.
    fn queue_transaction(&mut self, envelope: &Envelope, payload: &DataPayload, bdat: bool) {
        let mail = self.mail_command(envelope, payload);
        self.queue(&mail);
        self.queue(&Command::RcptTo(&envelope.to));
        if !bdat {
            self.queue(&Command::Data);
        }
    }

    /// RSET; returns the reply (a non-2yz means the connection should be dropped).
    pub async fn rset(&mut self) -> Result<Reply, ClientError> {
        let t = self.timeouts.command;
        self.command(Command::Rset, Phase::Rset, t).await
    }

    /// QUIT, best effort: the reply is read but a failure is not interesting.
    pub async fn quit(mut self) {
        if self.announced.is_some() {
            // The server may be waiting for content: closing is the only safe way out.
            let _ = self.stream.shutdown().await;
            return;
        }
        let t = self.timeouts.command.min(Duration::from_secs(5));
        let _ = self.command(Command::Quit, Phase::Quit, t).await;
        let _ = self.stream.shutdown().await;
    }

    fn queue(&mut self, cmd: &Command<'_>) {
        use std::io::Write;
        // Writing into a Vec cannot fail.
        let _ = write!(self.wbuf, "{cmd}\r\n");
    }

    async fn flush(&mut self, phase: Phase, limit: Duration) -> Result<(), ClientError> {
        let buf = std::mem::take(&mut self.wbuf);
        let res = write_all(&mut self.stream, &buf, phase, limit).await;
        self.wbuf = buf;
        self.wbuf.clear();
        res?;
        flush_stream(&mut self.stream, phase, limit).await
    }

    async fn command(
        &mut self,
        cmd: Command<'_>,
        phase: Phase,
        limit: Duration,
    ) -> Result<Reply, ClientError> {
        // One command, one reply: nothing else may be waiting.
        self.in_step(phase).await?;
        self.queue(&cmd);
        self.flush(phase, limit).await?;
        self.expect(phase, limit, false).await
    }

    /// Reads the reply to the command of `phase` and checks that it can answer it: only DATA
    /// may be answered 3yz, and DATA never 2yz. `in_group`: the reply is one of a pipelined
    /// group's, so a lost connection is [`ClientError::GroupDropped`].
    async fn expect(
        &mut self,
        phase: Phase,
        limit: Duration,
        in_group: bool,
    ) -> Result<Reply, ClientError> {
        let reply = match self.read_reply(phase, limit).await {
            Err(ClientError::Closed { .. } | ClientError::Io { .. }) if in_group => {
                return Err(ClientError::GroupDropped { phase });
            }
            other => other?,
        };
        let fits = match phase {
            Phase::Data => !reply.is_positive(),
            _ => !reply.is_intermediate(),
        };
        if !fits {
            let what = format!("{} cannot answer {phase}", brief(&reply));
            return Err(ClientError::OutOfStep { phase, what });
        }
        Ok(reply)
    }

    /// Fails with [`ClientError::OutOfStep`] when the server sent anything while no reply
    /// was owed (checked before anything is written, and after the reply to the end of
    /// data): such bytes would otherwise be taken as the answer to what we send next. The
    /// task first yields once, so that the runtime's I/O driver has seen whatever reached the
    /// socket (a read that found less than it asked for leaves the stream marked "not
    /// ready" until then).
    async fn in_step(&mut self, phase: Phase) -> Result<(), ClientError> {
        tokio::task::yield_now().await;
        self.poll_unsolicited(phase)?;
        if self.rbuf.is_empty() {
            return Ok(());
        }
        let what = match parse_reply(&self.rbuf) {
            Ok(Some((reply, _))) => format!("unsolicited reply {}", brief(&reply)),
            _ => format!("{} unsolicited bytes", self.rbuf.len()),
        };
        Err(ClientError::OutOfStep { phase, what })
    }

    /// Takes whatever the server has already sent, without waiting.
    fn poll_unsolicited(&mut self, phase: Phase) -> Result<(), ClientError> {
        use std::task::{Context, Poll, Waker};
        let mut chunk = [0u8; 512];
        let mut buf = tokio::io::ReadBuf::new(&mut chunk);
        let mut cx = Context::from_waker(Waker::noop());
        match std::pin::Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf) {
            Poll::Pending => Ok(()),
            Poll::Ready(Ok(())) if buf.filled().is_empty() => Err(ClientError::Closed { phase }),
            Poll::Ready(Ok(())) => {
                self.rbuf.extend_from_slice(buf.filled());
                Ok(())
            }
            Poll::Ready(Err(source)) => Err(ClientError::Io { phase, source }),
        }
    }

    async fn read_reply(&mut self, phase: Phase, limit: Duration) -> Result<Reply, ClientError> {
        let fut = async {
            loop {
                match parse_reply(&self.rbuf) {
                    Ok(Some((reply, used))) => {
                        self.rbuf.drain(..used);
                        return Ok(reply);
                    }
                    Ok(None) => {}
                    Err(source) => return Err(ClientError::Protocol { phase, source }),
                }
                let mut chunk = [0u8; 4096];
                let n = self
                    .stream
                    .read(&mut chunk)
                    .await
                    .map_err(|source| ClientError::Io { phase, source })?;
                if n == 0 {
                    return Err(ClientError::Closed { phase });
                }
                self.rbuf.extend_from_slice(&chunk[..n]);
            }
        };
        timeout(limit, fut)
            .await
            .map_err(|_| ClientError::Timeout {
                phase,
                after: limit,
            })?
    }
}

async fn write_all<S: AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &[u8],
    phase: Phase,
    limit: Duration,
) -> Result<(), ClientError> {
    match timeout(limit, stream.write_all(buf)).await {
        Err(_) => Err(ClientError::Timeout {
            phase,
            after: limit,
        }),
        Ok(Err(source)) => Err(ClientError::Io { phase, source }),
        Ok(Ok(())) => Ok(()),
    }
}

async fn flush_stream<S: AsyncWrite + Unpin>(
    stream: &mut S,
    phase: Phase,
    limit: Duration,
) -> Result<(), ClientError> {
    match timeout(limit, stream.flush()).await {
        Err(_) => Err(ClientError::Timeout {
            phase,
            after: limit,
        }),
        Ok(Err(source)) => Err(ClientError::Io { phase, source }),
        Ok(Ok(())) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader, duplex};

    /// A tiny scripted peer over an in-memory pipe: answers each line with the next reply.
    async fn peer(
        server: tokio::io::DuplexStream,
        greeting: &'static str,
        mut answers: Vec<(&'static str, &'static str)>,
    ) -> Vec<String> {
        let (r, mut w) = tokio::io::split(server);
        let mut r = BufReader::new(r);
        w.write_all(greeting.as_bytes()).await.unwrap();
        let mut seen = Vec::new();
        answers.reverse();
        let mut in_data = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap() == 0 {
                return seen;
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    seen.push("<end-of-data>".into());
                    let (_, ans) = answers.pop().unwrap();
                    w.write_all(ans.as_bytes()).await.unwrap();
                }
                continue;
            }
            seen.push(line.trim_end().to_string());
            let (expect, ans) = answers.pop().unwrap();
            assert!(line.starts_with(expect), "{line:?} vs {expect}");
            if ans.starts_with("354") {
                in_data = true;
            }
            w.write_all(ans.as_bytes()).await.unwrap();
            if expect == "QUIT" {
                return seen;
            }
        }
    }

    fn envelope() -> Envelope {
        Envelope {
            from: "news@sender.test".into(),
            to: "ann@example.test".into(),
        }
    }

    #[tokio::test]
    async fn rejected_rcpt_leaves_connection_usable() {
        let (client, server) = duplex(64 * 1024);
        let script = vec![
            ("EHLO", "250-mx\r\n250 SIZE 1000\r\n"),
            ("MAIL FROM:<news@sender.test> SIZE=", "250 2.1.0 ok\r\n"),
            ("RCPT TO:", "550 5.1.1 no such user\r\n"),
            ("RSET", "250 2.0.0 ok\r\n"),
            ("MAIL FROM:", "250 ok\r\n"),
            ("RCPT TO:", "250 ok\r\n"),
            ("DATA", "354 go\r\n"),
            ("", "250 2.0.0 queued as X\r\n"),
            ("QUIT", "221 bye\r\n"),
        ];
        let server = tokio::spawn(peer(server, "220 mx ESMTP\r\n", script));
        let (mut c, greet) = Connection::greet(client, Timeouts::uniform(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(greet.code, 220);
        c.hello("me.test").await.unwrap();
        assert_eq!(c.capabilities().size, Some(1000));
        let payload = DataPayload::from_message(b"Subject: hi\r\n\r\nbody\r\n");
        let t = c.send(&envelope(), &payload).await.unwrap();
        match t {
            Transaction::Rejected { phase, reply } => {
                assert_eq!(phase, Phase::RcptTo);
                assert_eq!(reply.code, 550);
            }
            other => panic!("{other:?}"),
        }
        // The second transaction starts with RSET on its own (no PIPELINING here).
        let t = c.send(&envelope(), &payload).await.unwrap();
        assert!(matches!(t, Transaction::Accepted(r) if r.text() == "queued as X"));
        c.quit().await;
        let seen = server.await.unwrap();
        assert!(seen.contains(&"<end-of-data>".to_string()));
    }

    #[tokio::test]
    async fn pipelined_rejection_is_attributed_to_the_right_command() {
        let (client, server) = duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(server);
            let mut r = BufReader::new(r);
            w.write_all(b"220 hi\r\n").await.unwrap();
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            w.write_all(b"250-mx\r\n250 PIPELINING\r\n").await.unwrap();
            // All three commands arrive before any reply is sent.
            let mut got = Vec::new();
            for _ in 0..3 {
                let mut l = String::new();
                r.read_line(&mut l).await.unwrap();
                got.push(l);
            }
            w.write_all(b"250 ok\r\n450 4.2.0 greylisted\r\n554 5.5.1 no valid recipients\r\n")
                .await
                .unwrap();
            // The refusal is confirmed in step by a RSET sent alone.
            let mut l = String::new();
            r.read_line(&mut l).await.unwrap();
            got.push(l);
            w.write_all(b"250 2.0.0 ok\r\n").await.unwrap();
            got
        });
        let (mut c, _) = Connection::greet(client, Timeouts::uniform(Duration::from_secs(5)))
            .await
            .unwrap();
        c.hello("me.test").await.unwrap();
        assert!(c.capabilities().pipelining);
        let t = c
            .send(&envelope(), &DataPayload::from_message(b"x\r\n"))
            .await
            .unwrap();
        let got = server.await.unwrap();
        assert_eq!(got[2], "DATA\r\n");
        assert_eq!(got[3], "RSET\r\n");
        match t {
            Transaction::Rejected { phase, reply } => {
                assert_eq!(phase, Phase::RcptTo);
                assert!(reply.is_transient());
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_server_times_out_in_the_phase_it_stalled() {
        let (client, _server) = duplex(1024);
        let t = Timeouts {
            greeting: Duration::from_secs(300),
            ..Timeouts::default()
        };
        let err = match Connection::greet(client, t).await {
            Err(e) => e,
            Ok(_) => panic!("greeting should time out"),
        };
        assert!(matches!(
            err,
            ClientError::Timeout { phase: Phase::Greeting, after } if after == Duration::from_secs(300)
        ));
    }

    #[test]
    fn each_phase_timeout_can_be_set_by_name() {
        let mut t = Timeouts::default();
        t.set("connect", Duration::from_secs(5)).unwrap();
        t.set("data-end", Duration::from_secs(120)).unwrap();
        assert_eq!(t.connect, Duration::from_secs(5));
        assert_eq!(t.data_end, Duration::from_secs(120));
        assert_eq!(
            t.greeting,
            Duration::from_secs(300),
            "others keep RFC values"
        );
        assert!(t.set("lunch", Duration::from_secs(1)).is_err());
    }

    /// A pipelining server that records what arrived in each read and answers a script of
    /// replies, one per command or message.
    async fn pipelining_peer(
        server: tokio::io::DuplexStream,
        replies: Vec<&'static str>,
    ) -> (Vec<String>, usize) {
        let (r, mut w) = tokio::io::split(server);
        let mut r = BufReader::new(r);
        w.write_all(b"220 hi\r\n").await.unwrap();
        let mut replies = replies.into_iter();
        let mut seen = Vec::new();
        let mut messages = 0;
        let mut in_data = false;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).await.unwrap() == 0 {
                return (seen, messages);
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    messages += 1;
                    seen.push(format!(
                        "<end>{}",
                        if r.buffer().is_empty() { "" } else { "+more" }
                    ));
                    w.write_all(replies.next().unwrap().as_bytes())
                        .await
                        .unwrap();
                }
                continue;
            }
            let cmd = line.trim_end().to_string();
            seen.push(cmd.clone());
            let reply = replies.next().unwrap_or("221 bye\r\n");
            if reply.starts_with("354") {
                in_data = true;
            }
            w.write_all(reply.as_bytes()).await.unwrap();
            if cmd == "QUIT" {
                return (seen, messages);
            }
        }
    }

    /// Greets and says EHLO over `client`.
    async fn hello(client: tokio::io::DuplexStream) -> Connection<tokio::io::DuplexStream> {
        let (mut c, _) = Connection::greet(client, Timeouts::uniform(Duration::from_secs(5)))
            .await
            .unwrap();
        c.hello("me.test").await.unwrap();
        c
    }

    fn env(to: &str) -> Envelope {
        Envelope {
            from: "news@sender.test".into(),
            to: to.into(),
        }
    }

    #[tokio::test]
    async fn the_next_transaction_rides_behind_the_message_and_a_rejection_there_is_handled() {
        let (client, server) = duplex(64 * 1024);
        let replies = vec![
            "250-mx\r\n250 PIPELINING\r\n",
            // a: MAIL RCPT DATA, message (with b's commands behind it)
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 2.0.0 a queued\r\n",
            // b: announced; RCPT refused, DATA refused
            "250 ok\r\n",
            "550 5.1.1 no b\r\n",
            "554 5.5.1 no valid recipients\r\n",
            // c: RSET first (b left a transaction open), then MAIL RCPT DATA, message
            "250 ok\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 2.0.0 c queued\r\n",
        ];
        let server = tokio::spawn(pipelining_peer(server, replies));
        let mut c = hello(client).await;
        let p = DataPayload::from_message(b"Subject: x\r\n\r\nbody\r\n");
        let (a, b, cc) = (env("a@d.test"), env("b@d.test"), env("c@d.test"));
        let r = c.send_then(&a, &p, Some((&b, &p))).await.unwrap();
        assert!(
            matches!(r, Transaction::Accepted(ref x) if x.text() == "a queued"),
            "{r:?}"
        );
        assert!(c.has_announced());
        let r = c.send_then(&b, &p, Some((&cc, &p))).await.unwrap();
        assert!(
            matches!(r, Transaction::Rejected { phase: Phase::RcptTo, ref reply } if reply.code == 550),
            "{r:?}"
        );
        assert!(
            !c.has_announced(),
            "nothing rides behind a message that was not sent"
        );
        let r = c.send_then(&cc, &p, None).await.unwrap();
        assert!(matches!(r, Transaction::Accepted(_)), "{r:?}");
        c.quit().await;
        let (seen, messages) = server.await.unwrap();
        assert_eq!(messages, 2);
        assert_eq!(
            seen,
            vec![
                "EHLO me.test",
                "MAIL FROM:<news@sender.test>",
                "RCPT TO:<a@d.test>",
                "DATA",
                "<end>+more",
                "MAIL FROM:<news@sender.test>",
                "RCPT TO:<b@d.test>",
                "DATA",
                "RSET",
                "MAIL FROM:<news@sender.test>",
                "RCPT TO:<c@d.test>",
                "DATA",
                "<end>",
                "QUIT",
            ]
        );
    }

    #[tokio::test]
    async fn a_connection_given_up_after_announcing_is_closed_without_sending_an_empty_message() {
        let (client, server) = duplex(64 * 1024);
        let replies = vec![
            "250-mx\r\n250 PIPELINING\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 2.0.0 a queued\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
        ];
        let server = tokio::spawn(pipelining_peer(server, replies));
        let mut c = hello(client).await;
        let p = DataPayload::from_message(b"x\r\n");
        let (a, b) = (env("a@d.test"), env("b@d.test"));
        c.send_then(&a, &p, Some((&b, &p))).await.unwrap();
        // b is never sent (say, the run was interrupted): no QUIT, no ".", just a close.
        c.quit().await;
        let (seen, messages) = server.await.unwrap();
        assert_eq!(messages, 1, "the announced message was never completed");
        assert!(!seen.iter().any(|l| l == "QUIT"), "{seen:?}");
    }

    #[tokio::test]
    async fn sending_another_envelope_than_announced_resyncs_with_rset() {
        let (client, server) = duplex(64 * 1024);
        let replies = vec![
            "250-mx\r\n250 PIPELINING\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 a queued\r\n",
            // b announced, but the server refuses its MAIL: nothing is waiting for content
            "451 4.3.0 try later\r\n",
            "503 need MAIL\r\n",
            "503 need MAIL\r\n",
            // RSET, then c
            "250 ok\r\n",
            "250 ok\r\n",
            "250 ok\r\n",
            "354 go\r\n",
            "250 c queued\r\n",
        ];
        let server = tokio::spawn(pipelining_peer(server, replies));
        let mut c = hello(client).await;
        let p = DataPayload::from_message(b"x\r\n");
        let (a, b, cc) = (env("a@d.test"), env("b@d.test"), env("c@d.test"));
        c.send_then(&a, &p, Some((&b, &p))).await.unwrap();
        let r = c.send(&cc, &p).await.unwrap();
        assert!(
            matches!(r, Transaction::Accepted(ref x) if x.text() == "c queued"),
            "{r:?}"
        );
        drop(c);
        let (seen, _) = server.await.unwrap();
        assert_eq!(seen[8], "RSET", "{seen:?}");
        assert_eq!(seen[10], "RCPT TO:<c@d.test>", "{seen:?}");
    }

    #[tokio::test]
    async fn ehlo_refused_falls_back_to_helo() {
        let (client, server) = duplex(4096);
        let script = vec![
            ("EHLO", "502 5.5.1 command not implemented\r\n"),
            ("HELO me.test", "250 hello\r\n"),
        ];
        let server = tokio::spawn(peer(server, "220 old\r\n", script));
        let (mut c, _) = Connection::greet(client, Timeouts::uniform(Duration::from_secs(5)))
            .await
            .unwrap();
        let r = c.hello("me.test").await.unwrap();
        assert!(r.is_positive());
        assert!(!c.capabilities().esmtp);
        drop(c);
        let seen = server.await.unwrap();
        assert_eq!(seen, vec!["EHLO me.test", "HELO me.test"]);
    }

    #[tokio::test]
    async fn server_closing_mid_data_is_an_error_in_data_end() {
        let (client, server) = duplex(64);
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(server);
            let mut r = BufReader::new(r);
            w.write_all(b"220 hi\r\n").await.unwrap();
            for reply in ["250 mx\r\n", "250 ok\r\n", "250 ok\r\n", "354 go\r\n"] {
                let mut l = String::new();
                r.read_line(&mut l).await.unwrap();
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            let mut l = String::new();
            r.read_line(&mut l).await.unwrap();
            // drop both halves: connection lost mid-DATA
        });
        let (mut c, _) = Connection::greet(client, Timeouts::uniform(Duration::from_secs(5)))
            .await
            .unwrap();
        c.hello("me").await.unwrap();
        let big = vec![b'x'; 10_000];
        let err = c
            .send(&envelope(), &DataPayload::from_message(&big))
            .await
            .unwrap_err();
        assert_eq!(err.phase(), Phase::DataEnd);
    }
}
