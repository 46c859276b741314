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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
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
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                if let Ok(mut st) = s.lock() {
                    st.accepted_at.push(std::time::Instant::now());
                }
                let config = config.clone();
                let state = s.clone();
                tokio::spawn(async move {
                    config.gauge.enter();
                    serve(stream, n, config.clone(), state).await;
                    config.gauge.leave();
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
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    if tls.is_none() {
        if let Some(text) = &config.greeting_reject {
            let _ = w.write_all(format!("{text}\r\n").as_bytes()).await;
            return None;
        }
        let greet = format!("220 {} ESMTP mailmerge-sandbox\r\n", config.hostname);
        if w.write_all(greet.as_bytes()).await.is_err() {
            return None;
        }
    }
    let mut group: Vec<String> = Vec::new();
    let mut mail_from: Option<String> = None;
    let mut rcpt: Option<(String, Rule)> = None;
    let mut messages = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        match r.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if config.keep_messages {
            group.push(text.clone());
        }
        let group_ended = r.buffer().is_empty();
        if config.keep_messages
            && let Ok(mut s) = state.lock()
        {
            s.commands.push(text.clone());
            if group_ended {
                s.groups.push(std::mem::take(&mut group));
            }
        }
        let upper = text.to_ascii_uppercase();
        let out = if upper.starts_with("EHLO") {
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
            if config.starttls.is_some() && tls.is_none() {
                ext.push("STARTTLS".into());
            }
            let n = ext.len();
            ext.iter()
                .enumerate()
                .map(|(i, e)| format!("250{}{e}\r\n", if i + 1 == n { ' ' } else { '-' }))
                .collect()
        } else if upper.starts_with("HELO") {
            format!("250 {}\r\n", config.hostname)
        } else if upper.starts_with("MAIL FROM:") {
            if let Some(max) = config.max_messages_per_connection
                && messages >= max
            {
                let _ = w
                    .write_all(
                        reply(
                            &config,
                            421,
                            "4.7.0",
                            "too many messages on this connection, closing",
                        )
                        .as_bytes(),
                    )
                    .await;
                return None;
            }
            mail_from = Some(extract_path(&text[10..]));
            rcpt = None;
            reply(&config, 250, "2.1.0", "sender ok")
        } else if upper.starts_with("RCPT TO:") {
            let to = extract_path(&text[8..]);
            if mail_from.is_none() {
                reply(&config, 503, "5.5.1", "need MAIL first")
            } else {
                // How often this recipient was seen before (for greylisting-style scripts);
                // not tracked in count-only mode, which must stay small for benchmarks.
                let seen = if config.keep_messages {
                    state
                        .lock()
                        .map(|mut s| {
                            let e = s.seen.entry(to.to_ascii_lowercase()).or_default();
                            *e += 1;
                            *e - 1
                        })
                        .unwrap_or(0)
                } else {
                    0
                };
                let rule = (config.script)(&to, seen);
                match &rule {
                    Rule::Rcpt(code, t) => {
                        let (e, t) = split_enhanced(t);
                        reply(&config, *code, e, t)
                    }
                    Rule::SlowRcpt(d) => {
                        tokio::time::sleep(*d).await;
                        rcpt = Some((to, Rule::Accept));
                        reply(&config, 250, "2.1.5", "recipient ok")
                    }
                    _ => {
                        rcpt = Some((to, rule));
                        reply(&config, 250, "2.1.5", "recipient ok")
                    }
                }
            }
        } else if upper == "DATA" {
            match (&mail_from, rcpt.take()) {
                (Some(from), Some((to, rule))) => {
                    if w.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .await
                        .is_err()
                    {
                        return None;
                    }
                    let mut data = Vec::new();
                    let mut dropped = false;
                    loop {
                        line.clear();
                        match r.read_until(b'\n', &mut line).await {
                            Ok(0) | Err(_) => return None,
                            Ok(_) => {}
                        }
                        if line == b".\r\n" || line == b".\n" {
                            if !r.buffer().is_empty()
                                && let Ok(mut s) = state.lock()
                            {
                                s.commands_behind_content += 1;
                            }
                            break;
                        }
                        if rule == Rule::DropInData && data.len() > 100 {
                            dropped = true;
                            break;
                        }
                        data.extend_from_slice(&line);
                    }
                    if dropped {
                        return None;
                    }
                    data.extend_from_slice(b".\r\n");
                    let data = DataPayload::unstuff(&data);
                    messages += 1;
                    let from = from.clone();
                    mail_from = None;
                    if let Some(max) = config.size_limit
                        && data.len() > max
                    {
                        reply(&config, 552, "5.3.4", "message too big")
                    } else if let Rule::DataEnd(code, t) = &rule {
                        let (e, t) = split_enhanced(t);
                        reply(&config, *code, e, t)
                    } else {
                        let id = format!("{conn}.{messages}");
                        if let Some(dir) = &config.store_dir {
                            let safe: String = to
                                .chars()
                                .map(|c| {
                                    if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                                        c
                                    } else {
                                        '_'
                                    }
                                })
                                .collect();
                            let _ = tokio::fs::write(dir.join(format!("{safe}.eml")), &data).await;
                        }
                        if let Ok(mut s) = state.lock() {
                            s.accepted += 1;
                            if config.keep_messages {
                                s.received.push(Received {
                                    connection: conn,
                                    mail_from: from,
                                    rcpt_to: to,
                                    data,
                                    tls: tls.clone(),
                                });
                            }
                        }
                        if let Rule::SlowDataEnd(d) = rule {
                            tokio::time::sleep(d).await;
                        }
                        reply(&config, 250, "2.0.0", &format!("ok queued as {id}"))
                    }
                }
                _ => reply(&config, 554, "5.5.1", "no valid recipients"),
            }
        } else if upper == "RSET" {
            mail_from = None;
            rcpt = None;
            reply(&config, 250, "2.0.0", "ok")
        } else if upper == "STARTTLS" {
            if config.starttls.is_some() && tls.is_none() {
                let ready = reply(&config, 220, "2.0.0", "ready to start TLS");
                if w.write_all(ready.as_bytes()).await.is_err() {
                    return None;
                }
                // Anything the client pipelined after STARTTLS is discarded (RFC 3207 §5).
                return Some(r.into_inner().unsplit(w));
            }
            reply(&config, 502, "5.5.1", "STARTTLS not offered")
        } else if upper == "NOOP" {
            reply(&config, 250, "2.0.0", "ok")
        } else if upper == "QUIT" {
            let _ = w
                .write_all(reply(&config, 221, "2.0.0", "bye").as_bytes())
                .await;
            return None;
        } else {
            reply(&config, 502, "5.5.2", "command not implemented")
        };
        if w.write_all(out.as_bytes()).await.is_err() {
            return None;
        }
    }
}
