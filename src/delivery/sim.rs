//! An in-memory MX for the engine's tests: a [`Connect`]or whose connections are tokio duplex
//! pipes to a scripted SMTP responder in the same runtime, so the real engine (queues, workers,
//! sessions, the client) runs without sockets and under paused time, where retry waits and site
//! pauses pass instantly.
//!
//! The responder speaks enough SMTP for the client: EHLO (PIPELINING, ENHANCEDSTATUSCODES, no
//! STARTTLS), MAIL, RCPT, DATA (554 when no recipient was accepted), the message up to ".",
//! RSET and QUIT. A rule chooses other replies; a 421 closes the connection after it is sent.
//! A swallowing MX ([`Sim::swallowing`]) drops whatever arrived with a message's final dot,
//! as a server that reads past the dot does.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream, duplex};
use tokio::time::Instant;

use super::connect::Connect;

/// What the responder is about to answer.
pub(crate) struct Ask<'a> {
    /// Connection number, from 0 in the order they were opened.
    pub(crate) conn: usize,
    /// `MAIL`, `RCPT`, `DATA`, or `.` for the end of data.
    pub(crate) verb: &'a str,
    /// The transaction's recipient (empty for MAIL).
    pub(crate) rcpt: &'a str,
    /// How many times this verb was answered for this recipient before, on any connection.
    pub(crate) tries: usize,
}

/// Chooses a reply (without the final CRLF), or `None` for the usual positive one.
type Rule = Box<dyn Fn(&Ask<'_>) -> Option<&'static str> + Send + Sync>;

/// A message the responder accepted.
#[derive(Clone, Debug)]
pub(crate) struct Accepted {
    /// Connection it came over.
    pub(crate) conn: usize,
    /// Its recipient.
    pub(crate) rcpt: String,
    /// When (virtual time).
    pub(crate) at: Instant,
    /// Its MAIL arrived together with the previous message's final dot (pipelined behind it).
    pub(crate) behind_dot: bool,
}

/// The simulated MX; clones share it.
#[derive(Clone)]
pub(crate) struct Sim(Arc<Inner>);

struct Inner {
    rule: Rule,
    /// Drop what arrived with each message's final dot.
    swallow: bool,
    refused: HashSet<IpAddr>,
    connections: AtomicUsize,
    /// Final dots that had commands behind them which were dropped (when `swallow`).
    swallowed: AtomicUsize,
    tries: Mutex<HashMap<(String, String), usize>>,
    accepted: Mutex<Vec<Accepted>>,
}

impl Sim {
    /// A responder answering by `rule`; connections to `refused` addresses are refused.
    pub(crate) fn new(
        rule: impl Fn(&Ask<'_>) -> Option<&'static str> + Send + Sync + 'static,
        refused: &[IpAddr],
    ) -> Self {
        Self::build(Box::new(rule), refused, false)
    }

    fn build(rule: Rule, refused: &[IpAddr], swallow: bool) -> Self {
        Self(Arc::new(Inner {
            rule,
            swallow,
            refused: refused.iter().copied().collect(),
            connections: AtomicUsize::new(0),
            swallowed: AtomicUsize::new(0),
            tries: Mutex::default(),
            accepted: Mutex::default(),
        }))
    }

    /// An MX that answers every command as usual but drops whatever arrived together with
    /// a message's final dot (the commands pipelined behind it are never answered).
    pub(crate) fn swallowing() -> Self {
        Self::build(Box::new(|_| None), &[], true)
    }

    /// Connections opened so far.
    pub(crate) fn connections(&self) -> usize {
        self.0.connections.load(Ordering::SeqCst)
    }

    /// Sessions' worth of commands dropped behind a final dot so far (see [`Sim::swallowing`]).
    pub(crate) fn swallowed(&self) -> usize {
        self.0.swallowed.load(Ordering::SeqCst)
    }

    /// Messages accepted so far, in order.
    pub(crate) fn accepted(&self) -> Vec<Accepted> {
        self.0.accepted.lock().unwrap().clone()
    }
}

impl Connect for Sim {
    type Stream = DuplexStream;

    async fn connect(&self, _host: &str, addr: SocketAddr) -> io::Result<DuplexStream> {
        if self.0.refused.contains(&addr.ip()) {
            return Err(io::ErrorKind::ConnectionRefused.into());
        }
        let conn = self.0.connections.fetch_add(1, Ordering::SeqCst);
        let (client, server) = duplex(64 * 1024);
        tokio::spawn(serve(self.0.clone(), conn, server));
        Ok(client)
    }
}

impl Inner {
    /// The rule's reply, or `usual`, with its CRLF.
    fn answer(&self, conn: usize, verb: &str, rcpt: &str, usual: &str) -> String {
        let tries = {
            let mut t = self.tries.lock().unwrap();
            let n = t.entry((verb.into(), rcpt.into())).or_default();
            *n += 1;
            *n - 1
        };
        let ask = Ask {
            conn,
            verb,
            rcpt,
            tries,
        };
        format!("{}\r\n", (self.rule)(&ask).unwrap_or(usual))
    }
}

/// One connection's dialogue.
async fn serve(sim: Arc<Inner>, conn: usize, stream: DuplexStream) -> io::Result<()> {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    w.write_all(b"220 mx.sim.test ESMTP\r\n").await?;
    let (mut rcpt, mut accepted) = (String::new(), false);
    // Whether the bytes after the last final dot had arrived with it, and the transaction
    // being read started with them.
    let (mut after_dot, mut behind_dot) = (false, false);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.split([' ', ':', '\r']).next().unwrap_or("");
        let dot_was_last = std::mem::take(&mut after_dot);
        let reply = match verb.to_ascii_uppercase().as_str() {
            "EHLO" => "250-mx.sim.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n".into(),
            "MAIL" => {
                (rcpt, accepted, behind_dot) = (String::new(), false, dot_was_last);
                sim.answer(conn, "MAIL", "", "250 2.1.0 ok")
            }
            "RCPT" => {
                rcpt = line.split(['<', '>']).nth(1).unwrap_or("").to_string();
                let reply = sim.answer(conn, "RCPT", &rcpt, "250 2.1.5 ok");
                accepted = reply.starts_with('2');
                reply
            }
            "DATA" if !accepted => "554 5.5.1 no valid recipients\r\n".into(),
            "DATA" => sim.answer(conn, "DATA", &rcpt, "354 go ahead"),
            "RSET" => {
                (rcpt, accepted) = (String::new(), false);
                "250 2.0.0 ok\r\n".into()
            }
            "QUIT" => {
                w.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => "502 5.5.2 not implemented\r\n".into(),
        };
        w.write_all(reply.as_bytes()).await?;
        let reply = if reply.starts_with("354") {
            let end = message(&sim, (conn, behind_dot), &rcpt, &mut r).await?;
            w.write_all(end.as_bytes()).await?;
            (accepted, after_dot) = (false, !r.buffer().is_empty());
            end
        } else {
            reply
        };
        if reply.starts_with("421") {
            return Ok(());
        }
    }
}

/// Reads the message up to "." and returns the reply to it.
async fn message(
    sim: &Inner,
    (conn, behind_dot): (usize, bool),
    rcpt: &str,
    r: &mut BufReader<tokio::io::ReadHalf<DuplexStream>>,
) -> io::Result<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if line == ".\r\n" {
            break;
        }
    }
    let behind = r.buffer().len();
    if sim.swallow && behind > 0 {
        sim.swallowed.fetch_add(1, Ordering::SeqCst);
        std::pin::Pin::new(&mut *r).consume(behind);
    }
    let end = sim.answer(conn, ".", rcpt, "250 2.0.0 queued");
    if end.starts_with('2') {
        sim.accepted.lock().unwrap().push(Accepted {
            conn,
            rcpt: rcpt.to_string(),
            at: Instant::now(),
            behind_dot,
        });
    }
    Ok(end)
}
