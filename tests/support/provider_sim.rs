//! An in-process mailbox-provider simulator: a loopback SMTP server that enforces per-sender
//! limits the way the big providers do, with their real multi-line throttling texts.
//!
//! - **concurrent connections**, counted per sending (peer) IP: one too many is refused at
//!   greeting (Microsoft's 4.3.2 text);
//! - **messages per connection:** one too many is refused at MAIL and the connection closed;
//! - **rate:** a token bucket (rate, burst); an empty bucket answers MAIL with the provider's
//!   rate-limit text; a sender that keeps pushing (3 throttles within 2 s) is put in a penalty
//!   box where every MAIL is throttled for a while;
//! - **unknown mailboxes** are refused at RCPT with `550-5.1.1` (multi-line);
//! - a **script** can answer the first N MAIL commands with a given text (rule tests), and a
//!   **peer script** every MAIL from one sending IP (a provider blocking one source address).
//!
//! The rate bucket and the penalty box are the provider's as a whole (all peers share them).
//!
//! Several simulators may share one port on different 127.0.0.x addresses (mailmerge connects
//! to one `--smtp-port`).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A provider's limits and texts.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Name (for printing).
    pub name: &'static str,
    /// Concurrent connections allowed per sending IP.
    pub connections: usize,
    /// Messages allowed per connection.
    pub per_connection: usize,
    /// Token bucket: messages per second…
    pub rate: f64,
    /// …and burst.
    pub burst: f64,
    /// Greeting when over the connection limit (421, closes).
    pub busy_greeting: String,
    /// Reply to MAIL over the per-connection limit (closes when 421).
    pub too_many_messages: String,
    /// Reply to MAIL when the bucket is empty (closes when 421).
    pub rate_reply: String,
    /// Throttles within `penalty_window` that put the sender in the penalty box.
    pub penalty_after: usize,
    /// See `penalty_after`.
    pub penalty_window: Duration,
    /// How long the penalty box lasts.
    pub penalty: Duration,
    /// Local parts (before @) that do not exist.
    pub unknown: HashSet<String>,
    /// Answer the first `.0` MAIL commands with `.1` (counts as a throttle).
    pub script: Option<(usize, String)>,
    /// Answer every MAIL from the peer address `.0` with `.1` (counts as a throttle).
    pub peer_script: Option<(IpAddr, String)>,
    /// Refuse every greeting with this until this long after start.
    pub refuse_greetings_for: Option<(Duration, String)>,
    /// Counts greeted connections together with other simulators given the same gauge (one
    /// provider's several MX hosts).
    pub gauge: Arc<Gauge>,
}

/// Greeted connections open now over several simulators, and the most ever open at once.
#[derive(Debug, Default)]
pub struct Gauge {
    open: AtomicUsize,
    peak: AtomicUsize,
}

impl Gauge {
    /// The most greeted connections open at the same time.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
}

/// Google's texts (Gmail SMTP error reference).
pub const GOOGLE_RATE: &str = "421-4.7.0 Try again later, closing connection. This is a\r\n421 4.7.0 temporary rate limit of this sender. - gsmtp";
/// Microsoft's texts.
pub const MS_CONNECTIONS: &str = "421-4.3.2 The maximum number of concurrent server connections has exceeded\r\n421 4.3.2 a limit, closing transmission channel";
/// Too many messages on one connection.
pub const TOO_MANY_MESSAGES: &str =
    "421-4.7.0 Too many messages on this connection, closing\r\n421 4.7.0 transmission channel";

impl SimConfig {
    /// Generous limits; tighten them per test.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            connections: 50,
            per_connection: 100_000,
            rate: 1e9,
            burst: 1e9,
            busy_greeting: MS_CONNECTIONS.into(),
            too_many_messages: TOO_MANY_MESSAGES.into(),
            rate_reply: GOOGLE_RATE.into(),
            penalty_after: 3,
            penalty_window: Duration::from_secs(2),
            penalty: Duration::from_secs(3),
            unknown: HashSet::new(),
            script: None,
            peer_script: None,
            refuse_greetings_for: None,
            gauge: Arc::default(),
        }
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
    throttles: Vec<Instant>,
    boxed_until: Option<Instant>,
}

/// What the simulator saw.
#[derive(Debug, Default)]
pub struct SimStats {
    /// Connections accepted (greeted with 220).
    pub sessions: AtomicUsize,
    /// Highest number of concurrent greeted connections (all peers).
    pub max_concurrent: AtomicUsize,
    /// Highest number of concurrent greeted connections from each peer address.
    pub max_concurrent_by_peer: Mutex<HashMap<IpAddr, usize>>,
    /// Throttling replies sent (greeting refusals, rate, per connection, script).
    pub throttles: AtomicUsize,
    /// Greetings refused for the connection limit.
    pub refused_greetings: AtomicUsize,
    /// Messages refused for the per-connection limit.
    pub per_connection_refusals: AtomicUsize,
    /// Unknown mailboxes refused.
    pub unknown_refused: AtomicUsize,
    /// Highest number of messages accepted on one connection.
    pub max_per_connection: AtomicUsize,
    /// Throttling reply texts sent (first line).
    pub replies: Mutex<Vec<String>>,
    /// Recipients accepted, in order, with when.
    pub accepted: Mutex<Vec<(String, Instant)>>,
}

struct Shared {
    config: SimConfig,
    started: Instant,
    open: AtomicUsize,
    /// Open connections per peer address (greeted or not).
    by_peer: Mutex<HashMap<IpAddr, usize>>,
    mails: AtomicUsize,
    bucket: Mutex<Bucket>,
    stats: Arc<SimStats>,
}

/// A running simulator.
pub struct ProviderSim {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it saw.
    pub stats: Arc<SimStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ProviderSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProviderSim {
    /// Starts a simulator on `ip:port` (`port` 0: any).
    pub async fn start(ip: IpAddr, port: u16, config: SimConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(SocketAddr::new(ip, port)).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(SimStats::default());
        let shared = Arc::new(Shared {
            bucket: Mutex::new(Bucket {
                tokens: config.burst,
                at: Instant::now(),
                throttles: Vec::new(),
                boxed_until: None,
            }),
            config,
            started: Instant::now(),
            open: AtomicUsize::new(0),
            by_peer: Mutex::new(HashMap::new()),
            mails: AtomicUsize::new(0),
            stats: stats.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _ = serve(shared, stream, peer.ip()).await;
                });
            }
        });
        Ok(Self { addr, stats, task })
    }

    /// Messages accepted.
    pub fn accepted(&self) -> usize {
        self.stats.accepted.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Throttling replies sent.
    pub fn throttles(&self) -> usize {
        self.stats.throttles.load(Ordering::SeqCst)
    }
}

/// Counts one open connection (of a peer address) while it lives.
struct Open<'a>(&'a Shared, IpAddr);

/// Counts one greeted connection in the [`Gauge`] while it lives.
struct Greeted<'a>(&'a Gauge);

impl<'a> Greeted<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        let now = gauge.open.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.peak.fetch_max(now, Ordering::SeqCst);
        Self(gauge)
    }
}

impl Drop for Greeted<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        let mut by_peer = self.0.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by_peer.get_mut(&self.1) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Shared {
    /// Counts a new connection from `peer`: (open in all, open from `peer`).
    fn opened(&self, peer: IpAddr) -> (usize, usize) {
        let all = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        let mut by_peer = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        let n = by_peer.entry(peer).or_default();
        *n += 1;
        (all, *n)
    }

    /// Records the peaks of a greeted connection.
    fn greeted(&self, all: usize, from_peer: usize, peer: IpAddr) {
        self.stats.sessions.fetch_add(1, Ordering::SeqCst);
        self.stats.max_concurrent.fetch_max(all, Ordering::SeqCst);
        if let Ok(mut peaks) = self.stats.max_concurrent_by_peer.lock() {
            let e = peaks.entry(peer).or_default();
            *e = (*e).max(from_peer);
        }
    }

    fn throttle(&self, text: &str) -> String {
        self.stats.throttles.fetch_add(1, Ordering::SeqCst);
        let first = text.lines().next().unwrap_or_default().to_string();
        if let Ok(mut r) = self.stats.replies.lock() {
            r.push(first);
        }
        format!("{text}\r\n")
    }

    /// Takes a token, or says why not (the rate text), with the penalty box.
    fn take_token(&self) -> Option<String> {
        let c = &self.config;
        let now = Instant::now();
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let refill = now.duration_since(b.at).as_secs_f64() * c.rate;
        b.tokens = (b.tokens + refill).min(c.burst.max(1.0));
        b.at = now;
        let boxed = b.boxed_until.is_some_and(|u| u > now);
        if !boxed && b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return None;
        }
        b.throttles
            .retain(|t| now.duration_since(*t) < c.penalty_window);
        b.throttles.push(now);
        if b.throttles.len() >= c.penalty_after && !boxed {
            b.boxed_until = Some(now + c.penalty);
        }
        Some(self.throttle(&c.rate_reply))
    }
}

/// One connection's dialogue.
async fn serve(sim: Arc<Shared>, stream: TcpStream, peer: IpAddr) -> std::io::Result<()> {
    let c = &sim.config;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    if let Some((d, text)) = &c.refuse_greetings_for
        && sim.started.elapsed() < *d
    {
        w.write_all(sim.throttle(text).as_bytes()).await?;
        return Ok(());
    }
    let (open, from_peer) = sim.opened(peer);
    let _guard = Open(&sim, peer);
    if from_peer > c.connections {
        sim.stats.refused_greetings.fetch_add(1, Ordering::SeqCst);
        w.write_all(sim.throttle(&c.busy_greeting).as_bytes())
            .await?;
        return Ok(());
    }
    sim.greeted(open, from_peer, peer);
    let mut greeted = Some(Greeted::enter(&c.gauge));
    w.write_all(format!("220 mx.{}.test ESMTP ready\r\n", c.name).as_bytes())
        .await?;
    let (mut on_conn, mut rcpt, mut mail_ok) = (0usize, None::<String>, false);
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let upper = line.to_ascii_uppercase();
        let reply = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            "250-mx.sim.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 ENHANCEDSTATUSCODES\r\n"
                .to_string()
        } else if upper.starts_with("MAIL") {
            rcpt = None;
            mail_ok = false;
            let n = sim.mails.fetch_add(1, Ordering::SeqCst);
            match (&c.script, &c.peer_script) {
                (Some((first, text)), _) if n < *first => sim.throttle(text),
                (_, Some((from, text))) if *from == peer => sim.throttle(text),
                _ if on_conn >= c.per_connection => {
                    sim.stats
                        .per_connection_refusals
                        .fetch_add(1, Ordering::SeqCst);
                    sim.throttle(&c.too_many_messages)
                }
                _ => match sim.take_token() {
                    Some(refusal) => refusal,
                    None => {
                        mail_ok = true;
                        "250 2.1.0 Sender OK\r\n".into()
                    }
                },
            }
        } else if upper.starts_with("RCPT") {
            let addr = line.split(['<', '>']).nth(1).unwrap_or("").to_string();
            let local = addr.split('@').next().unwrap_or("").to_string();
            if !mail_ok {
                "503 5.5.1 Need MAIL command\r\n".into()
            } else if c.unknown.contains(&local) {
                sim.stats.unknown_refused.fetch_add(1, Ordering::SeqCst);
                format!(
                    "550-5.1.1 The email account that you tried to reach does not exist.\r\n\
                     550 5.1.1 <{addr}>: Recipient address rejected: User unknown\r\n"
                )
            } else {
                rcpt = Some(addr);
                "250 2.1.5 Recipient OK\r\n".into()
            }
        } else if upper.starts_with("DATA") {
            if rcpt.is_some() {
                w.write_all(b"354 Start mail input\r\n").await?;
                read_message(&mut r).await?;
                on_conn += 1;
                sim.stats
                    .max_per_connection
                    .fetch_max(on_conn, Ordering::SeqCst);
                if let (Some(a), Ok(mut acc)) = (rcpt.take(), sim.stats.accepted.lock()) {
                    acc.push((a, Instant::now()));
                }
                "250 2.0.0 OK queued\r\n".into()
            } else {
                "554 5.5.1 No valid recipients\r\n".into()
            }
        } else if upper.starts_with("RSET") || upper.starts_with("NOOP") {
            rcpt = None;
            "250 2.0.0 OK\r\n".into()
        } else if upper.starts_with("QUIT") {
            drop(_guard);
            greeted.take();
            w.write_all(b"221 2.0.0 Bye\r\n").await?;
            return Ok(());
        } else {
            "502 5.5.2 Command not implemented\r\n".into()
        };
        w.write_all(reply.as_bytes()).await?;
        if reply.starts_with("421") {
            return Ok(());
        }
    }
}

/// Reads a message up to the lone dot.
async fn read_message<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == b".\r\n" {
            return Ok(());
        }
    }
}
