//! A scriptable SMTP receiver on loopback, for `--sandbox` and the tests.
//!
//! It speaks enough ESMTP to be a realistic MX (EHLO with PIPELINING, SIZE, 8BITMIME,
//! ENHANCEDSTATUSCODES, SMTPUTF8; MAIL/RCPT/DATA/RSET/NOOP/QUIT), records every message and
//! connection, and can store messages as `.eml` files. What it answers per recipient comes from
//! a [`Script`]; the default script reads "magic" local parts so the sandbox can show every
//! outcome: `reject…` (550 5.1.1 at RCPT), `defer…` (450 4.2.1 at RCPT, always),
//! `greylist…` (451 4.7.1 the first time, then accepted), `spam…` (554 5.7.1 after DATA),
//! `drop…` (connection dropped during DATA, first attempt only).
//!
//! It can offer STARTTLS (RFC 3207) with a certificate made at start-up, or offer it and then
//! botch the handshake, so that the client's TLS policy is tested over real sockets. It records
//! which commands arrived together in one read ([`Receiver::command_groups`]), which is how the
//! tests see PIPELINING (RFC 2920) on the wire.
//!
//! Each connection is a `Session`: it greets, then reads one command at a time and answers it
//! (`Session::answer` dispatches on the verb); after STARTTLS a second `Session` runs over the
//! encrypted stream. Like Postfix's smtpd, it sends its replies once every command received so
//! far is answered, so a pipelined group gets its replies in one write.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf,
    WriteHalf,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::smtp::DataPayload;

/// What to do with one recipient / message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// 250 at RCPT and after DATA.
    Accept,
    /// This reply to RCPT TO.
    Rcpt(u16, String),
    /// Accept RCPT, then this reply to the final ".".
    DataEnd(u16, String),
    /// Accept RCPT, then close the connection in the middle of DATA.
    DropInData,
    /// Wait this long before answering RCPT (to trip the client's timeout).
    SlowRcpt(Duration),
    /// Accept and store the message, then wait this long before the final 250: the window in
    /// which a killed sender has delivered a message it never heard about.
    SlowDataEnd(Duration),
}

/// Decides the [`Rule`] for a recipient, given how many times it was seen before (0 = first).
pub type Script = Arc<dyn Fn(&str, usize) -> Rule + Send + Sync>;

/// The default script, driven by the recipient's local part.
pub fn magic_script() -> Script {
    Arc::new(|rcpt: &str, seen: usize| {
        let local = rcpt.split('@').next().unwrap_or("").to_ascii_lowercase();
        if local.starts_with("reject") {
            Rule::Rcpt(550, "5.1.1 no such user here".into())
        } else if local.starts_with("defer") {
            Rule::Rcpt(450, "4.2.1 mailbox temporarily unavailable".into())
        } else if local.starts_with("greylist") && seen == 0 {
            Rule::Rcpt(451, "4.7.1 greylisted, try again later".into())
        } else if local.starts_with("spam") {
            Rule::DataEnd(554, "5.7.1 message rejected as spam".into())
        } else if local.starts_with("drop") && seen == 0 {
            Rule::DropInData
        } else {
            Rule::Accept
        }
    })
}

/// STARTTLS behaviour of the receiver.
#[derive(Clone)]
pub enum StartTls {
    /// Offer STARTTLS and complete the handshake with this configuration.
    Offer(Arc<rustls::ServerConfig>),
    /// Offer STARTTLS, answer 220, then send garbage instead of a TLS handshake.
    Broken,
}

/// How the receiver presents itself.
#[derive(Clone)]
pub struct ReceiverConfig {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// Advertise PIPELINING.
    pub pipelining: bool,
    /// Advertise ENHANCEDSTATUSCODES (and put enhanced codes in replies).
    pub enhanced_codes: bool,
    /// Advertised SIZE limit; bigger messages get 552 5.3.4.
    pub size_limit: Option<usize>,
    /// Reply to the connection instead of `220` (e.g. `421 4.3.2 busy`), then close.
    pub greeting_reject: Option<String>,
    /// After this many messages on one connection, answer `421` and close.
    pub max_messages_per_connection: Option<usize>,
    /// Advertise SMTPUTF8 (RFC 6531).
    pub smtputf8: bool,
    /// Offer STARTTLS (RFC 3207).
    pub starttls: Option<StartTls>,
    /// Per-recipient behaviour.
    pub script: Script,
    /// Write each accepted message to this folder.
    pub store_dir: Option<PathBuf>,
    /// Keep accepted messages (and the command log, and per-recipient attempt counts for the
    /// script) in memory; benchmarks turn it off and only count.
    pub keep_messages: bool,
    /// Counts simultaneous connections; share one gauge between receivers to measure a
    /// total over several hosts.
    pub gauge: Arc<Gauge>,
    /// Advertise CHUNKING (RFC 3030) and take `BDAT`.
    pub chunking: bool,
    /// Answer every command that arrived behind a message's end-of-data dot (before that
    /// message's reply was sent) with `503 5.5.1 Bad sequence of commands`, as some MTAs
    /// hardened against SMTP smuggling do although RFC 2920 §3.1 allows it.
    pub refuse_after_dot: bool,
    /// Advertise PIPELINING but answer `503 5.5.1` to every command that arrived together
    /// with the one before it (a server that objects to pipelining altogether).
    pub refuse_pipelining: bool,
    /// After this many messages in one session, answer MAIL with OpenSMTPD's `452 4.5.3 Too
    /// many recipients: Too many messages sent`, keeping the session open.
    pub session_limit: Option<usize>,
}

/// Simultaneous connections: how many are open now and the most ever open at once.
#[derive(Debug, Default)]
pub struct Gauge {
    open: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    /// The most connections that were open at the same time.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn enter(&self) {
        let now = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            hostname: "mx.sandbox.test".into(),
            pipelining: true,
            enhanced_codes: true,
            size_limit: Some(50 * 1024 * 1024),
            greeting_reject: None,
            max_messages_per_connection: None,
            smtputf8: true,
            starttls: None,
            script: magic_script(),
            store_dir: None,
            keep_messages: true,
            gauge: Arc::default(),
            chunking: false,
            refuse_after_dot: false,
            refuse_pipelining: false,
            session_limit: None,
        }
    }
}

/// One accepted message as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// Connection number (1-based) it arrived on.
    pub connection: usize,
    /// MAIL FROM address.
    pub mail_from: String,
    /// RCPT TO address.
    pub rcpt_to: String,
    /// Message bytes, dot-unstuffed, as the sender meant them.
    pub data: Vec<u8>,
    /// TLS version of the session it arrived on (`None`: plaintext).
    pub tls: Option<String>,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    accepted: usize,
    seen: HashMap<String, usize>,
    commands: Vec<String>,
    groups: Vec<Vec<String>>,
    /// Messages whose final "." arrived together with further commands (RFC 2920 §3.1).
    commands_behind_content: usize,
    accepted_at: Vec<std::time::Instant>,
    /// Per connection number: the client's address and its EHLO name (see [`Receiver::peers`]).
    peers: HashMap<usize, (std::net::IpAddr, Option<String>)>,
    /// Connections already counted out of the [`Gauge`] (at QUIT, before the 221 reply).
    left: std::collections::HashSet<usize>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Listens on `bind` (port 0 picks a free port).
    pub async fn start(bind: SocketAddr, config: ReceiverConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(bind).await?;
        Ok(Self::from_listener(listener, config))
    }

    /// Serves an already bound listener.
    pub fn from_listener(listener: TcpListener, config: ReceiverConfig) -> Self {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let state: Arc<Mutex<State>> = Arc::default();
        let connections = Arc::new(AtomicUsize::new(0));
        let config = Arc::new(config);
        let (s, c) = (state.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                if let Ok(mut st) = s.lock() {
                    st.accepted_at.push(std::time::Instant::now());
                    st.peers.insert(n, (peer.ip(), None));
                }
                let config = config.clone();
                let state = s.clone();
                tokio::spawn(async move {
                    config.gauge.enter();
                    serve(stream, n, config.clone(), state.clone()).await;
                    let left = state.lock().is_ok_and(|mut st| st.left.remove(&n));
                    if !left {
                        config.gauge.leave();
                    }
                });
            }
        });
        Self {
            addr,
            state,
            connections,
            task,
        }
    }

    /// Listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Messages accepted so far.
    pub fn received(&self) -> Vec<Received> {
        self.state
            .lock()
            .map(|s| s.received.clone())
            .unwrap_or_default()
    }

    /// Number of messages accepted (counted even when messages are not kept).
    pub fn accepted(&self) -> usize {
        self.state.lock().map(|s| s.accepted).unwrap_or(0)
    }

    /// How many messages' final "." arrived in the same read as the next commands (a client
    /// announcing its next transaction behind the content, RFC 2920 §3.1).
    pub fn commands_behind_content(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.commands_behind_content)
            .unwrap_or(0)
    }

    /// The commands that arrived together (in one read, before any reply was due), in order.
    /// A pipelining client's `MAIL`, `RCPT` and `DATA` form one group.
    pub fn command_groups(&self) -> Vec<Vec<String>> {
        self.state
            .lock()
            .map(|s| s.groups.clone())
            .unwrap_or_default()
    }

    /// When each connection was accepted, in order.
    pub fn accepted_at(&self) -> Vec<std::time::Instant> {
        self.state
            .lock()
            .map(|s| s.accepted_at.clone())
            .unwrap_or_default()
    }

    /// Per connection, in order: the client's source address and the EHLO name it gave.
    pub fn peers(&self) -> Vec<(std::net::IpAddr, Option<String>)> {
        let mut peers: Vec<_> = self
            .state
            .lock()
            .map(|s| s.peers.clone().into_iter().collect())
            .unwrap_or_default();
        peers.sort_by_key(|(n, _)| *n);
        peers.into_iter().map(|(_, p)| p).collect()
    }

    /// Every command line received, in order, over all connections.
    pub fn commands(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.commands.clone())
            .unwrap_or_default()
    }
}

fn reply(config: &ReceiverConfig, code: u16, enhanced: &str, text: &str) -> String {
    if config.enhanced_codes && !enhanced.is_empty() {
        format!("{code} {enhanced} {text}\r\n")
    } else {
        format!("{code} {text}\r\n")
    }
}

/// Splits "4.7.1 text" into the enhanced code and the rest.
fn split_enhanced(s: &str) -> (&str, &str) {
    match s.split_once(' ') {
        Some((code, rest))
            if code.split('.').count() == 3
                && code.chars().all(|c| c.is_ascii_digit() || c == '.') =>
        {
            (code, rest)
        }
        _ => ("", s),
    }
}

fn extract_path(arg: &str) -> String {
    let start = arg.find('<').map_or(0, |i| i + 1);
    let end = arg[start..].find('>').map_or(arg.len(), |i| start + i);
    arg[start..end].to_string()
}

/// One connection: the plaintext dialogue, then, after STARTTLS, the encrypted one.
async fn serve(
    stream: TcpStream,
    conn: usize,
    config: Arc<ReceiverConfig>,
    state: Arc<Mutex<State>>,
) {
    let Some(mut plain) = session(stream, conn, config.clone(), state.clone(), None).await else {
        return;
    };
    match &config.starttls {
        Some(StartTls::Offer(tls)) => {
            if let Ok(tls) = TlsAcceptor::from(tls.clone()).accept(plain).await {
                let version = crate::smtp::tls::version_name(tls.get_ref().1.protocol_version());
                session(tls, conn, config, state, Some(version)).await;
            }
        }
        Some(StartTls::Broken) => {
            let _ = plain.write_all(b"this is not a TLS handshake\r\n").await;
        }
        None => {}
    }
}

/// Runs the SMTP dialogue over `stream`; returns the stream when the client asked for
/// STARTTLS and was told to go ahead (`tls` is the version when already encrypted).
async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    conn: usize,
    config: Arc<ReceiverConfig>,
    state: Arc<Mutex<State>>,
    tls: Option<String>,
) -> Option<S> {
    let (r, w) = tokio::io::split(stream);
    let mut s = Session {
        r: BufReader::new(r),
        w,
        conn,
        config,
        state,
        tls,
        group: Vec::new(),
        mail_from: None,
        rcpt: None,
        messages: 0,
        line: Vec::new(),
        behind_dot: 0,
        pipelined: false,
        bdat: Vec::new(),
        out: Vec::new(),
    };
    if s.tls.is_none() && !s.greet().await {
        return None;
    }
    loop {
        let text = s.read_command().await?;
        match s.answer(&text).await {
            Next::Reply(out) => s.out.extend_from_slice(out.as_bytes()),
            Next::ReplyNow(out) => {
                if !s.send_now(out.as_bytes()).await {
                    return None;
                }
            }
            Next::Close => return None,
            // Anything the client pipelined after STARTTLS is discarded (RFC 3207 §5).
            Next::StartTls => {
                // The 220 is already out (`on_starttls` sent it with anything pending).
                return Some(s.r.into_inner().unsplit(s.w));
            }
        }
    }
}

/// What the dialogue does after a command.
enum Next {
    /// Send this reply (with the next ones, once every command received is answered), then
    /// read the next command.
    Reply(String),
    /// Send this reply and any before it now (RFC 2920 §3.2: never held back for EHLO, DATA,
    /// NOOP and QUIT), then read the next command.
    ReplyNow(String),
    /// End the session (any last words are already sent).
    Close,
    /// The client was told to start TLS: hand the stream back.
    StartTls,
}

/// One SMTP dialogue (plaintext, or encrypted after STARTTLS): the connection and the
/// transaction in progress.
struct Session<S> {
    r: BufReader<ReadHalf<S>>,
    w: WriteHalf<S>,
    /// Connection number (1-based).
    conn: usize,
    config: Arc<ReceiverConfig>,
    state: Arc<Mutex<State>>,
    /// TLS version when encrypted.
    tls: Option<String>,
    /// Commands of the group arriving now (read together), for [`Receiver::command_groups`].
    group: Vec<String>,
    /// Sender of the transaction in progress.
    mail_from: Option<String>,
    /// The accepted recipient waiting for DATA, with its rule (a later RCPT replaces it).
    rcpt: Option<(String, Rule)>,
    /// Messages received in this session (for the per-connection limit and queue ids).
    messages: usize,
    /// Line buffer, reused for every line read.
    line: Vec<u8>,
    /// Bytes that arrived behind the last end-of-data dot (for `refuse_after_dot`).
    behind_dot: usize,
    /// The command being answered arrived together with the one before it.
    pipelined: bool,
    /// The chunks of the message being received with `BDAT`.
    bdat: Vec<u8>,
    /// Replies not yet sent: they go out together once every command received so far is
    /// answered, or with the reply to EHLO, DATA, NOOP or QUIT (RFC 2920 §3.2, and what
    /// Postfix's smtpd does), so a pipelined group costs one write, not one per command.
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Sends the greeting, or the configured rejection; false when the session ends here.
    async fn greet(&mut self) -> bool {
        if let Some(text) = &self.config.greeting_reject {
            let _ = self.w.write_all(format!("{text}\r\n").as_bytes()).await;
            return false;
        }
        let greet = format!("220 {} ESMTP mailmerge-sandbox\r\n", self.config.hostname);
        self.send_now(greet.as_bytes()).await
    }

    /// Sends the pending replies and then `last`, now; false when the client is gone.
    async fn send_now(&mut self, last: &[u8]) -> bool {
        self.out.extend_from_slice(last);
        self.flush().await
    }

    /// Sends the pending replies; false when the client is gone.
    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let ok = self.w.write_all(&self.out).await.is_ok();
        self.out.clear();
        ok
    }

    /// Before a read that waits for the client (fewer than `need` bytes received and not yet
    /// taken): sends the pending replies, which the client may be waiting for; false when the
    /// client is gone.
    async fn flush_before_waiting(&mut self, need: usize) -> bool {
        self.r.buffer().len() >= need || self.flush().await
    }

    /// Reads one line into `self.line`; false when the client is gone.
    async fn read_line(&mut self) -> bool {
        self.line.clear();
        if !self.flush_before_waiting(1).await {
            return false;
        }
        matches!(self.r.read_until(b'\n', &mut self.line).await, Ok(n) if n > 0)
    }

    /// Reads the next command and logs it, with the group it arrived in; `None` when the
    /// client is gone.
    async fn read_command(&mut self) -> Option<String> {
        self.pipelined = !self.r.buffer().is_empty();
        if !self.read_line().await {
            return None;
        }
        let text = String::from_utf8_lossy(&self.line).trim_end().to_string();
        if self.config.keep_messages {
            self.group.push(text.clone());
        }
        // Nothing more buffered: the commands that arrived together end here.
        let group_ended = self.r.buffer().is_empty();
        if self.config.keep_messages
            && let Ok(mut s) = self.state.lock()
        {
            s.commands.push(text.clone());
            if group_ended {
                s.groups.push(std::mem::take(&mut self.group));
            }
        }
        Some(text)
    }

    /// Answers one command line.
    async fn answer(&mut self, text: &str) -> Next {
        let upper = text.to_ascii_uppercase();
        let behind_dot = self.behind_dot > 0;
        self.behind_dot = self.behind_dot.saturating_sub(self.line.len());
        if (behind_dot && self.config.refuse_after_dot)
            || (self.pipelined && self.config.refuse_pipelining)
        {
            self.mail_from = None;
            self.rcpt = None;
            let text = "Bad sequence of commands";
            return Next::Reply(reply(&self.config, 503, "5.5.1", text));
        }
        if upper.starts_with("BDAT ") && self.config.chunking {
            return self.on_bdat(&upper[5..]).await;
        }
        if upper.starts_with("EHLO") {
            if let Ok(mut s) = self.state.lock()
                && let Some(peer) = s.peers.get_mut(&self.conn)
            {
                peer.1 = Some(text[4..].trim().to_string());
            }
            Next::ReplyNow(self.on_ehlo())
        } else if upper.starts_with("HELO") {
            Next::ReplyNow(format!("250 {}\r\n", self.config.hostname))
        } else if upper.starts_with("MAIL FROM:") {
            self.on_mail(&text[10..]).await
        } else if upper.starts_with("RCPT TO:") {
            Next::Reply(self.on_rcpt(&text[8..]).await)
        } else if upper == "DATA" {
            self.on_data().await
        } else if upper == "RSET" {
            self.mail_from = None;
            self.rcpt = None;
            Next::Reply(reply(&self.config, 250, "2.0.0", "ok"))
        } else if upper == "STARTTLS" {
            self.on_starttls().await
        } else if upper == "NOOP" {
            Next::ReplyNow(reply(&self.config, 250, "2.0.0", "ok"))
        } else if upper == "QUIT" {
            // The connection is over for the client as soon as it reads 221: leave the gauge
            // first, so that a connection it opens right after is never counted with this one.
            if self
                .state
                .lock()
                .is_ok_and(|mut st| st.left.insert(self.conn))
            {
                self.config.gauge.leave();
            }
            let bye = reply(&self.config, 221, "2.0.0", "bye");
            self.send_now(bye.as_bytes()).await;
            Next::Close
        } else {
            Next::Reply(reply(&self.config, 502, "5.5.2", "command not implemented"))
        }
    }

    /// The EHLO reply: the hostname, then the extensions this configuration advertises.
    fn on_ehlo(&self) -> String {
        let config = &self.config;
        let mut ext = vec![config.hostname.clone()];
        if config.pipelining {
            ext.push("PIPELINING".into());
        }
        if let Some(size) = config.size_limit {
            ext.push(format!("SIZE {size}"));
        }
        ext.push("8BITMIME".into());
        if config.enhanced_codes {
            ext.push("ENHANCEDSTATUSCODES".into());
        }
        if config.smtputf8 {
            ext.push("SMTPUTF8".into());
        }
        if config.chunking {
            ext.push("CHUNKING".into());
        }
        if config.starttls.is_some() && self.tls.is_none() {
            ext.push("STARTTLS".into());
        }
        let n = ext.len();
        ext.iter()
            .enumerate()
            .map(|(i, e)| format!("250{}{e}\r\n", if i + 1 == n { ' ' } else { '-' }))
            .collect()
    }

    /// MAIL FROM (`arg` is what follows the colon): starts a transaction, or closes the
    /// connection once it has carried `max_messages_per_connection`.
    async fn on_mail(&mut self, arg: &str) -> Next {
        if let Some(max) = self.config.max_messages_per_connection
            && self.messages >= max
        {
            let text = "too many messages on this connection, closing";
            let bye = reply(&self.config, 421, "4.7.0", text);
            self.send_now(bye.as_bytes()).await;
            return Next::Close;
        }
        if let Some(max) = self.config.session_limit
            && self.messages >= max
        {
            let text = "Too many recipients: Too many messages sent";
            return Next::Reply(reply(&self.config, 452, "4.5.3", text));
        }
        self.mail_from = Some(extract_path(arg));
        self.rcpt = None;
        Next::Reply(reply(&self.config, 250, "2.1.0", "sender ok"))
    }

    /// RCPT TO (`arg` is what follows the colon): the script's rule for the recipient decides
    /// the reply; an accepted recipient waits for DATA with its rule.
    async fn on_rcpt(&mut self, arg: &str) -> String {
        let to = extract_path(arg);
        if self.mail_from.is_none() {
            return reply(&self.config, 503, "5.5.1", "need MAIL first");
        }
        let rule = (self.config.script)(&to, self.times_seen(&to));
        match &rule {
            Rule::Rcpt(code, t) => {
                let (e, t) = split_enhanced(t);
                reply(&self.config, *code, e, t)
            }
            Rule::SlowRcpt(d) => {
                // What is answered goes out before a stall, as Postfix's smtpd flushes its
                // replies before it sleeps.
                self.flush().await;
                tokio::time::sleep(*d).await;
                self.rcpt = Some((to, Rule::Accept));
                reply(&self.config, 250, "2.1.5", "recipient ok")
            }
            _ => {
                self.rcpt = Some((to, rule));
                reply(&self.config, 250, "2.1.5", "recipient ok")
            }
        }
    }

    /// How often this recipient was seen before (0 the first time; for greylisting-style
    /// scripts), and counts this time; not tracked in count-only mode, which must stay small
    /// for benchmarks.
    fn times_seen(&self, to: &str) -> usize {
        if !self.config.keep_messages {
            return 0;
        }
        self.state
            .lock()
            .map(|mut s| {
                let e = s.seen.entry(to.to_ascii_lowercase()).or_default();
                *e += 1;
                *e - 1
            })
            .unwrap_or(0)
    }

    /// DATA: reads the message and gives the reply to its final ".", which ends the
    /// transaction.
    async fn on_data(&mut self) -> Next {
        let (Some(from), Some((to, rule))) = (&self.mail_from, self.rcpt.take()) else {
            return Next::Reply(reply(&self.config, 554, "5.5.1", "no valid recipients"));
        };
        let from = from.clone();
        // Sent at once, with the replies held before it (the dot's, MAIL's, RCPT's): one
        // write for the group.
        if !self
            .send_now(b"354 end data with <CR><LF>.<CR><LF>\r\n")
            .await
        {
            return Next::Close;
        }
        let Some(data) = self.read_message(&rule).await else {
            return Next::Close;
        };
        self.messages += 1;
        self.mail_from = None;
        Next::Reply(self.verdict(from, to, rule, data).await)
    }

    /// Reads the message up to the final "." and dot-unstuffs it; `None` when the client is
    /// gone, or when the rule says to drop the connection ([`Rule::DropInData`]).
    ///
    /// The content is taken a buffer at a time ([`scan_content`] looks only at the lines that
    /// start with a dot); a dot line cut by the end of the buffer is read as a line.
    async fn read_message(&mut self, rule: &Rule) -> Option<Vec<u8>> {
        let mut data = Vec::new();
        // At the start of a line (the DATA command line was the last one read).
        let mut line_start = true;
        loop {
            if !self.flush_before_waiting(1).await {
                return None;
            }
            let buf = self.r.fill_buf().await.ok().filter(|b| !b.is_empty())?;
            let ended = match scan_content(buf, line_start) {
                Scan::End { content, taken } => {
                    data.extend_from_slice(&buf[..content]);
                    self.r.consume(taken);
                    true
                }
                Scan::More(0) => {
                    if !self.read_line().await {
                        return None;
                    }
                    let ended = self.line == b".\r\n" || self.line == b".\n";
                    if !ended {
                        data.extend_from_slice(&self.line);
                        line_start = self.line.ends_with(b"\n");
                    }
                    ended
                }
                Scan::More(taken) => {
                    line_start = buf[taken - 1] == b'\n';
                    data.extend_from_slice(&buf[..taken]);
                    self.r.consume(taken);
                    false
                }
            };
            if *rule == Rule::DropInData && data.len() > 100 {
                return None;
            }
            if ended {
                break;
            }
        }
        self.behind_dot = self.r.buffer().len();
        if !self.r.buffer().is_empty()
            && let Ok(mut s) = self.state.lock()
        {
            s.commands_behind_content += 1;
        }
        data.extend_from_slice(b".\r\n");
        Some(DataPayload::unstuff(&data))
    }

    /// `BDAT <size> [LAST]` (RFC 3030; `args` is what follows the verb): reads exactly `size`
    /// octets, whatever the state of the transaction (§2), and after the last chunk answers
    /// as the final "." is answered.
    async fn on_bdat(&mut self, args: &str) -> Next {
        let mut words = args.split_ascii_whitespace();
        let size = words.next().and_then(|n| n.parse::<usize>().ok());
        let last = words.next() == Some("LAST");
        let Some(size) = size.filter(|n| *n <= 64 * 1024 * 1024) else {
            return Next::Reply(reply(&self.config, 501, "5.5.4", "bad BDAT size"));
        };
        let mut chunk = vec![0; size];
        if !self.flush_before_waiting(size).await {
            return Next::Close;
        }
        if self.r.read_exact(&mut chunk).await.is_err() {
            return Next::Close;
        }
        let (Some(from), Some((to, rule))) = (self.mail_from.clone(), self.rcpt.clone()) else {
            return Next::Reply(reply(&self.config, 554, "5.5.1", "no valid recipients"));
        };
        if rule == Rule::DropInData {
            return Next::Close;
        }
        self.bdat.extend_from_slice(&chunk);
        if !last {
            let text = format!("{size} octets received");
            return Next::Reply(reply(&self.config, 250, "2.0.0", &text));
        }
        let data = std::mem::take(&mut self.bdat);
        (self.messages, self.mail_from, self.rcpt) = (self.messages + 1, None, None);
        Next::Reply(self.verdict(from, to, rule, data).await)
    }

    /// The reply to a message's final ".": too big, refused by the rule, or accepted (kept,
    /// then answered, after a delay under [`Rule::SlowDataEnd`]).
    async fn verdict(&mut self, from: String, to: String, rule: Rule, data: Vec<u8>) -> String {
        if let Some(max) = self.config.size_limit
            && data.len() > max
        {
            return reply(&self.config, 552, "5.3.4", "message too big");
        }
        if let Rule::DataEnd(code, t) = &rule {
            let (e, t) = split_enhanced(t);
            return reply(&self.config, *code, e, t);
        }
        let id = format!("{}.{}", self.conn, self.messages);
        self.keep(from, to, data).await;
        if let Rule::SlowDataEnd(d) = rule {
            self.flush().await;
            tokio::time::sleep(d).await;
        }
        reply(&self.config, 250, "2.0.0", &format!("ok queued as {id}"))
    }

    /// Keeps an accepted message: as a `.eml` file when there is a store folder, and in the
    /// receiver's state (or only counted, when messages are not kept).
    async fn keep(&mut self, from: String, to: String, data: Vec<u8>) {
        if let Some(dir) = &self.config.store_dir {
            let file = dir.join(format!("{}.eml", file_name(&to)));
            let _ = tokio::fs::write(file, &data).await;
        }
        if let Ok(mut s) = self.state.lock() {
            s.accepted += 1;
            if self.config.keep_messages {
                s.received.push(Received {
                    connection: self.conn,
                    mail_from: from,
                    rcpt_to: to,
                    data,
                    tls: self.tls.clone(),
                });
            }
        }
    }

    /// STARTTLS: when offered and not yet encrypted, says go ahead; the caller then hands the
    /// stream over to the TLS handshake.
    async fn on_starttls(&mut self) -> Next {
        if self.config.starttls.is_some() && self.tls.is_none() {
            let ready = reply(&self.config, 220, "2.0.0", "ready to start TLS");
            if !self.send_now(ready.as_bytes()).await {
                return Next::Close;
            }
            return Next::StartTls;
        }
        Next::Reply(reply(&self.config, 502, "5.5.1", "STARTTLS not offered"))
    }
}

/// What [`scan_content`] found in a buffer of message content.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The end-of-data line: the content is the first `content` bytes, and `taken` bytes
    /// (with the dot line) are used up.
    End { content: usize, taken: usize },
    /// No end in the first `n` bytes, which are content; when `n` is short of the buffer, a
    /// line starting with a dot begins there and its end is not buffered yet (with `n` = 0:
    /// read that line whole).
    More(usize),
}

/// Looks for the end of message content (RFC 5321 §4.1.1.4: a line of a single dot, here
/// also with a bare LF) in `buf`; `line_start` says whether `buf` starts a line.
fn scan_content(buf: &[u8], line_start: bool) -> Scan {
    let dot_lines = (line_start && buf.first() == Some(&b'.'))
        .then_some(0)
        .into_iter()
        .chain(memchr::memmem::find_iter(buf, b"\n.").map(|i| i + 1));
    for at in dot_lines {
        match &buf[at + 1..] {
            [] | [b'\r'] => return Scan::More(at),
            [b'\r', b'\n', ..] => {
                return Scan::End {
                    content: at,
                    taken: at + 3,
                };
            }
            [b'\n', ..] => {
                return Scan::End {
                    content: at,
                    taken: at + 2,
                };
            }
            _ => {}
        }
    }
    Scan::More(buf.len())
}

/// A recipient address as a file name: anything but letters, digits and `@.-_+` becomes `_`.
fn file_name(address: &str) -> String {
    address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The content as a line reader takes it: every line up to the first that is a single
    /// dot, dot-unstuffed.
    fn content_by_lines(wire: &[u8]) -> Vec<u8> {
        let mut content = Vec::new();
        for line in wire.split_inclusive(|&b| b == b'\n') {
            if line == b".\r\n" || line == b".\n" {
                break;
            }
            content.extend_from_slice(line);
        }
        content.extend_from_slice(b".\r\n");
        DataPayload::unstuff(&content)
    }

    /// Runs one session over an in-memory stream that moves at most `chunk` bytes at a time,
    /// sending `wire` whole; returns what the client read and the messages received.
    async fn session_over(wire: Vec<u8>, chunk: usize) -> (Vec<u8>, Vec<Received>) {
        let (client, server) = tokio::io::duplex(chunk);
        let state: Arc<Mutex<State>> = Arc::default();
        let config = Arc::new(ReceiverConfig::default());
        let served = tokio::spawn(session(server, 1, config, state.clone(), None));
        let (mut read, mut write) = tokio::io::split(client);
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&wire).await;
            let _ = write.shutdown().await;
        });
        let mut replies = Vec::new();
        read.read_to_end(&mut replies).await.unwrap();
        writer.await.unwrap();
        let _ = served.await;
        let received = state.lock().unwrap().received.clone();
        (replies, received)
    }

    #[tokio::test]
    async fn content_cut_anywhere_reads_as_a_line_reader_reads_it() {
        // Every content of up to 4 bytes over the bytes that matter, followed by the end of
        // data and QUIT, through buffers of 1, 2, 3 and 7 bytes: the message received is the
        // one a line reader sees, and the session goes on to answer QUIT. (The end of data
        // that follows is cut at every place by the small buffers.)
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        let head = b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n";
        for len in 0..=4u32 {
            for n in 0..4usize.pow(len) {
                let content: Vec<u8> = (0..len).map(|k| alphabet[n / 4usize.pow(k) % 4]).collect();
                let mut tail = content.clone();
                tail.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
                let want = content_by_lines(&tail);
                for chunk in [1, 2, 3, 7] {
                    let wire = [&head[..], &tail].concat();
                    let (replies, received) = session_over(wire, chunk).await;
                    let text = String::from_utf8_lossy(&replies);
                    assert_eq!(received.len(), 1, "{content:?} by {chunk}: {text}");
                    assert_eq!(received[0].data, want, "{content:?} by {chunk}");
                    assert!(text.contains("354 "), "{content:?} by {chunk}: {text}");
                    assert!(text.ends_with("221 2.0.0 bye\r\n"), "{content:?}: {text}");
                }
            }
        }
    }

    #[test]
    fn the_end_of_data_is_found_only_at_a_line_start() {
        let end = |content, taken| Scan::End { content, taken };
        let cases: [(&[u8], bool, Scan); 7] = [
            (b"a\r\n.\r\nQUIT", true, end(3, 6)),
            (b".\r\n", true, end(0, 3)),
            (b".\r\n", false, Scan::More(3)),
            (b"a\n.\nb", true, end(2, 4)),
            (b"a\r\n..\r\n", true, Scan::More(7)),
            // A dot line whose end is not buffered yet: the bytes before it are content.
            (b"ab\r\n.\r", true, Scan::More(4)),
            (b".", true, Scan::More(0)),
        ];
        for (buf, line_start, want) in cases {
            let got = scan_content(buf, line_start);
            assert_eq!(got, want, "{:?}", String::from_utf8_lossy(buf));
        }
    }
}
