//! Delivery: per-site worker pools that keep SMTP connections open and send many messages over
//! each, trying MX hosts in order and retrying transient failures until the run's deadline.
//!
//! The engine does not know about CSV or templates: it is handed, per site, the row numbers to
//! deliver and a [`MessageSource`] that builds a row's message on demand (on the blocking pool,
//! so rendering never stalls the async runtime, and only the messages in flight are in memory).
//! Every row handed in produces exactly one [`Event::Final`], unless the deadline cuts the run
//! short, in which case the caller reports the remaining rows as deferred.
//!
//! Sessions use STARTTLS according to the [`TlsPolicy`]. A site that answers 421 or whose MX
//! hosts all fail is paused (no new connections) for the next retry delay, and an optional
//! [`Rate`] spaces messages to a site evenly.

pub mod limits;
pub mod options;
pub mod outcome;
pub mod retry;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::message::BuiltMessage;
use crate::mx::MxHost;
use crate::smtp::{
    ClientError, Connection, EnhancedCode, MaybeTls, Phase, Reply, TlsMode, TlsPolicy, Transaction,
};
pub use limits::Rate;
pub use options::DeliveryOptions;
pub use outcome::{Outcome, Status, Step};
pub use retry::RetryPolicy;

/// Builds the message for a row, or says why the row cannot be sent.
pub type MessageSource = Arc<dyn Fn(usize) -> Result<BuiltMessage, Box<Outcome>> + Send + Sync>;

/// How to deliver: the user's [`DeliveryOptions`] and what the run derives from them.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// What the user chose (connections, retries, timeouts, TLS mode, pace).
    pub options: DeliveryOptions,
    /// No new attempt starts after this instant (the run's start + `options.deadline`).
    pub deadline: Instant,
    /// In-flight transactions are cut this long after the deadline.
    pub grace: Duration,
    /// Messages rendered per batch by a worker.
    pub batch: usize,
    /// STARTTLS policy: `options.tls` with the trusted roots, built once.
    pub tls: TlsPolicy,
    /// Set by whoever records outcomes durably (the journal): a worker does not send the
    /// next message's content until every final outcome reported so far is recorded, so a
    /// crash can cost at most one accepted-but-unrecorded message per connection.
    pub recorded: Option<Arc<Recorded>>,
}

impl DeliveryConfig {
    /// A configuration starting now: the deadline is `options.deadline` from now, in-flight
    /// messages get a tenth of it (at most 30 s) past it.
    pub fn new(options: DeliveryOptions, tls: TlsPolicy) -> Self {
        let budget = options.deadline;
        Self {
            options,
            deadline: Instant::now() + budget,
            grace: Duration::from_secs(30).min(budget / 10 + Duration::from_secs(1)),
            batch: 16,
            tls,
            recorded: None,
        }
    }
}

/// How many of the engine's [`Event::Final`]s have been recorded durably.
///
/// The engine numbers final outcomes in the order it sends them; the recorder calls
/// [`Recorded::advance`] after writing each batch.
#[derive(Debug, Default)]
pub struct Recorded {
    count: std::sync::atomic::AtomicU64,
    notify: tokio::sync::Notify,
}

impl Recorded {
    /// `n` more final outcomes (in event order) are recorded.
    pub fn advance(&self, n: u64) {
        self.count.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Final outcomes recorded so far.
    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until at least `n` final outcomes are recorded.
    async fn wait_for(&self, n: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() >= n {
                return;
            }
            notified.await;
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self::new(DeliveryOptions::default(), TlsPolicy::default())
    }
}

/// What the engine reports while it runs.
#[derive(Clone, Debug)]
pub enum Event {
    /// A transient failure; the row will be tried again.
    Retrying {
        /// Row index (as handed in).
        row: usize,
        /// What happened on this attempt.
        outcome: Outcome,
    },
    /// The row's final outcome.
    Final {
        /// Row index.
        row: usize,
        /// Outcome.
        outcome: Outcome,
    },
    /// A new SMTP session was opened.
    Connected {
        /// Site name.
        site: Arc<str>,
    },
}

/// One site's work: its hosts and the rows to deliver there.
#[derive(Clone, Debug)]
pub struct SiteWork {
    /// Site name (for progress and logs).
    pub name: Arc<str>,
    /// MX hosts in try order.
    pub hosts: Arc<[MxHost]>,
    /// Rows to deliver.
    pub rows: Vec<usize>,
}

#[derive(Clone, Copy, Debug)]
struct Job {
    row: usize,
    attempts: u32,
    not_before: Instant,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<Job>,
    waiting: Vec<Job>,
    in_flight: usize,
    /// No new connection to this site before this instant (after a 421, or when no MX
    /// answered): sessions already open may go on.
    paused_until: Option<Instant>,
    /// Consecutive site failures (421, no MX reachable); reset by a successful connection.
    failures: u32,
    /// Earliest start of the next message under `--rate-per-site`.
    next_send: Option<Instant>,
}

enum Next {
    Jobs(Vec<Job>),
    Wait(Instant),
    Done,
}

struct SiteQueue {
    work: SiteWork,
    state: Mutex<QueueState>,
}

impl SiteQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A poisoned lock means a worker panicked; the state itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims up to `max` ready jobs. A worker without a session gets none while the site is
    /// paused.
    fn take(&self, max: usize, now: Instant, has_session: bool) -> Next {
        let mut st = self.lock();
        let mut i = 0;
        while i < st.waiting.len() {
            if st.waiting[i].not_before <= now {
                let job = st.waiting.swap_remove(i);
                st.ready.push_back(job);
            } else {
                i += 1;
            }
        }
        if !st.ready.is_empty() {
            if !has_session
                && let Some(until) = st.paused_until
                && until > now
            {
                return Next::Wait(until);
            }
            let n = max.min(st.ready.len());
            let jobs: Vec<Job> = st.ready.drain(..n).collect();
            st.in_flight += jobs.len();
            return Next::Jobs(jobs);
        }
        if let Some(next) = st.waiting.iter().map(|j| j.not_before).min() {
            return Next::Wait(next);
        }
        if st.in_flight > 0 {
            return Next::Wait(now + Duration::from_millis(50));
        }
        Next::Done
    }

    /// Claims every ready job (circuit breaker: they share the site's fate).
    fn drain_ready(&self) -> Vec<Job> {
        let mut st = self.lock();
        let jobs: Vec<Job> = st.ready.drain(..).collect();
        st.in_flight += jobs.len();
        jobs
    }

    /// The site failed as a whole (421, or no MX answered): pause new connections for the
    /// retry delay that matches the number of consecutive failures.
    fn pause(&self, retry: &RetryPolicy) {
        let mut st = self.lock();
        st.failures += 1;
        if let Some(delay) = retry.delay_after(st.failures) {
            let until = Instant::now() + delay;
            st.paused_until = Some(st.paused_until.map_or(until, |p| p.max(until)));
        }
    }

    /// A session was opened: the site is healthy again.
    fn healthy(&self) {
        self.lock().failures = 0;
    }

    /// Reserves the start time of the next message under a rate limit.
    fn send_slot(&self, rate: Rate) -> Instant {
        let mut st = self.lock();
        let (slot, next) = limits::take_slot(st.next_send, Instant::now(), rate.interval());
        st.next_send = Some(next);
        slot
    }

    fn complete(&self) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
    }

    fn retry(&self, job: Job) {
        let mut st = self.lock();
        st.in_flight = st.in_flight.saturating_sub(1);
        st.waiting.push(job);
    }

    /// Puts claimed jobs back at the front of the queue, in their order (so that the next
    /// session starts with the oldest, and no job is starved behind a failing one).
    fn unclaim(&self, jobs: Vec<Job>) {
        let mut st = self.lock();
        for job in jobs.into_iter().rev() {
            st.in_flight = st.in_flight.saturating_sub(1);
            st.ready.push_front(job);
        }
    }
}

struct Ctx {
    cfg: DeliveryConfig,
    source: MessageSource,
    events: mpsc::UnboundedSender<Event>,
    connections: Arc<Semaphore>,
    /// Addresses that refused or timed out recently: skipped while another is available.
    dead: Mutex<HashMap<IpAddr, Instant>>,
    /// Cancelled on SIGINT/SIGTERM: workers take no new job, in-flight ones finish.
    cancel: CancellationToken,
    /// Final outcomes sent so far (see [`Recorded`]).
    finals: Mutex<u64>,
    /// Addresses whose TLS handshake failed: plaintext for the rest of the run
    /// (opportunistic mode only).
    no_tls: Mutex<HashSet<IpAddr>>,
}

impl Ctx {
    fn emit(&self, e: Event) {
        // The receiver lives until the engine returns; a send error only happens at shutdown.
        let _ = self.events.send(e);
    }

    fn final_outcome(&self, queue: &SiteQueue, job: Job, outcome: Outcome) {
        queue.complete();
        // Numbered and sent under one lock, so event order is number order.
        let mut finals = self.finals.lock().unwrap_or_else(|e| e.into_inner());
        *finals += 1;
        self.emit(Event::Final {
            row: job.row,
            outcome,
        });
    }

    /// Waits until every final outcome sent so far is recorded (no-op without a recorder).
    async fn wait_recorded(&self) {
        if let Some(r) = &self.cfg.recorded {
            let sent = *self.finals.lock().unwrap_or_else(|e| e.into_inner());
            r.wait_for(sent).await;
        }
    }

    /// A transient failure: retry later, or give up as deferred when the deadline is near.
    fn transient(&self, queue: &SiteQueue, mut job: Job, mut outcome: Outcome) {
        job.attempts += 1;
        outcome.attempts = job.attempts;
        let now = Instant::now();
        match self.cfg.options.retry.delay_after(job.attempts) {
            Some(delay) if now + delay < self.cfg.deadline => {
                outcome.status = Status::Deferred;
                job.not_before = now + delay;
                queue.retry(job);
                self.emit(Event::Retrying {
                    row: job.row,
                    outcome,
                });
            }
            _ => {
                outcome.status = Status::Deferred;
                self.final_outcome(queue, job, outcome);
            }
        }
    }

    fn is_dead(&self, ip: IpAddr) -> bool {
        let dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        dead.get(&ip).is_some_and(|until| *until > Instant::now())
    }

    fn mark_dead(&self, ip: IpAddr) {
        let mut dead = self.dead.lock().unwrap_or_else(|e| e.into_inner());
        dead.insert(ip, Instant::now() + Duration::from_secs(60));
    }

    fn tls_broken(&self, ip: IpAddr) -> bool {
        let set = self.no_tls.lock().unwrap_or_else(|e| e.into_inner());
        set.contains(&ip)
    }

    fn remember_tls_broken(&self, ip: IpAddr) {
        let mut set = self.no_tls.lock().unwrap_or_else(|e| e.into_inner());
        set.insert(ip);
    }
}

type MxConnection = Connection<MaybeTls<TcpStream>>;

/// An open, greeted, EHLO'd session with one MX.
struct Session {
    conn: MxConnection,
    host: String,
    ip: IpAddr,
    /// TLS version, `None` in plaintext.
    tls: Option<String>,
    _permit: OwnedSemaphorePermit,
}

/// Why no session could be opened: the last failure seen over all MX addresses.
struct ConnectFailure {
    step: Phase,
    reply: Option<Reply>,
    text: String,
    host: Option<String>,
    ip: Option<IpAddr>,
}

impl ConnectFailure {
    fn outcome(&self) -> Outcome {
        let mut o = match &self.reply {
            Some(r) => Outcome::from_reply(Status::Deferred, Step::Smtp(self.step), r),
            None => Outcome::local(Status::Deferred, Step::Smtp(self.step), self.text.clone()),
        };
        if o.enhanced.is_none() && self.reply.is_none() {
            // RFC 3463 4.4.1: no answer from host; 4.4.2: bad connection; 4.7.5: cryptographic
            // failure (TLS).
            o.enhanced = Some(match self.step {
                Phase::Connect => EnhancedCode::new(4, 4, 1),
                Phase::StartTls => EnhancedCode::new(4, 7, 5),
                _ => EnhancedCode::new(4, 4, 2),
            });
        }
        o.mx_host = self.host.clone();
        o.mx_ip = self.ip;
        o
    }
}

async fn open_session(ctx: &Ctx, site: &SiteWork) -> Result<Session, ConnectFailure> {
    let permit = ctx
        .connections
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ConnectFailure {
            step: Phase::Connect,
            reply: None,
            text: "shutting down".into(),
            host: None,
            ip: None,
        })?;
    let mut last = ConnectFailure {
        step: Phase::Connect,
        reply: None,
        text: "no MX address to try".into(),
        host: None,
        ip: None,
    };
    let all: Vec<(&MxHost, IpAddr)> = site
        .hosts
        .iter()
        .flat_map(|h| h.addrs.iter().map(move |ip| (h, *ip)))
        .collect();
    // Skip addresses that failed recently, unless that leaves nothing to try.
    let alive: Vec<(&MxHost, IpAddr)> = all
        .iter()
        .copied()
        .filter(|(_, ip)| !ctx.is_dead(*ip))
        .collect();
    let candidates = if alive.is_empty() { all } else { alive };
    for (host, ip) in candidates {
        let want_tls = ctx.cfg.tls.mode != TlsMode::Disabled && !ctx.tls_broken(ip);
        let result = match connect_one(ctx, host, ip, want_tls).await {
            Err(Failed::Tls(_)) if ctx.cfg.tls.mode == TlsMode::Opportunistic => {
                // RFC 3207 leaves it to the client; like Postfix, retry in plaintext on a new
                // connection and do not try TLS with this address again during the run.
                ctx.remember_tls_broken(ip);
                connect_one(ctx, host, ip, false).await
            }
            other => other,
        };
        match result {
            Ok((conn, tls)) => {
                ctx.emit(Event::Connected {
                    site: site.name.clone(),
                });
                return Ok(Session {
                    conn,
                    host: host.name.clone(),
                    ip,
                    tls,
                    _permit: permit,
                });
            }
            Err(Failed::Next(f) | Failed::Tls(f)) => last = f,
        }
    }
    Err(last)
}

/// Why one address did not give a session.
enum Failed {
    /// Try the next address.
    Next(ConnectFailure),
    /// The TLS handshake failed (opportunistic mode retries in plaintext).
    Tls(ConnectFailure),
}

/// Connects to one address: greeting, EHLO, and STARTTLS + EHLO again when `want_tls` and
/// offered. Returns the session and its TLS version.
async fn connect_one(
    ctx: &Ctx,
    host: &MxHost,
    ip: IpAddr,
    want_tls: bool,
) -> Result<(MxConnection, Option<String>), Failed> {
    let t = ctx.cfg.options.timeouts;
    let fail = |step, reply: Option<Reply>, text: String| ConnectFailure {
        step,
        reply,
        text,
        host: Some(host.name.clone()),
        ip: Some(ip),
    };
    let addr = SocketAddr::new(ip, ctx.cfg.options.smtp_port);
    let stream = match timeout(t.connect, TcpStream::connect(addr)).await {
        Err(_) => {
            ctx.mark_dead(ip);
            return Err(Failed::Next(fail(
                Phase::Connect,
                None,
                format!("connect to {addr} timed out after {:?}", t.connect),
            )));
        }
        Ok(Err(e)) => {
            ctx.mark_dead(ip);
            return Err(Failed::Next(fail(
                Phase::Connect,
                None,
                format!("connect to {addr}: {e}"),
            )));
        }
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    let (mut conn, greeting) = Connection::greet(MaybeTls::Plain(stream), t)
        .await
        .map_err(|e| Failed::Next(fail(e.phase(), None, e.to_string())))?;
    if !greeting.is_positive() {
        // 4yz/5yz greeting: this host will not talk to us now; try the next MX.
        conn.quit().await;
        return Err(Failed::Next(fail(
            Phase::Greeting,
            Some(greeting),
            String::new(),
        )));
    }
    hello(&mut conn, ctx.cfg.options.helo(), &fail).await?;
    let required = ctx.cfg.tls.mode == TlsMode::Required;
    if want_tls && conn.capabilities().starttls {
        let reply = conn
            .starttls()
            .await
            .map_err(|e| Failed::Next(fail(e.phase(), None, e.to_string())))?;
        if reply.code == 220 {
            let config = ctx.cfg.tls.client_config();
            conn = crate::smtp::tls::handshake(conn, config, &host.name, ip)
                .await
                .map_err(|e| Failed::Tls(fail(Phase::StartTls, None, e.to_string())))?;
            // RFC 3207 §4.2: forget what the plaintext EHLO said and ask again.
            hello(&mut conn, ctx.cfg.options.helo(), &fail).await?;
        } else if required {
            conn.quit().await;
            return Err(Failed::Next(fail(
                Phase::StartTls,
                Some(reply),
                String::new(),
            )));
        }
        // Opportunistic and STARTTLS refused: go on in plaintext on this session.
    }
    let tls = conn.stream().tls_version();
    if required && tls.is_none() {
        conn.quit().await;
        return Err(Failed::Next(fail(
            Phase::StartTls,
            None,
            format!(
                "{} does not offer STARTTLS and --tls required is set",
                host.name
            ),
        )));
    }
    Ok((conn, tls))
}

/// EHLO (or HELO); a refusal or a lost connection means this address cannot be used.
async fn hello(
    conn: &mut MxConnection,
    name: &str,
    fail: &impl Fn(Phase, Option<Reply>, String) -> ConnectFailure,
) -> Result<(), Failed> {
    match conn.hello(name).await {
        Ok(r) if r.is_positive() => Ok(()),
        Ok(r) => Err(Failed::Next(fail(Phase::Ehlo, Some(r), String::new()))),
        Err(e) => Err(Failed::Next(fail(e.phase(), None, e.to_string()))),
    }
}

/// Checks what the session offers against the message before sending (RFC 1870, RFC 6531).
fn local_refusal(session: &Session, msg: &BuiltMessage) -> Option<Outcome> {
    let caps = session.conn.capabilities();
    if let Some(limit) = caps.size
        && limit > 0
        && msg.payload.message_len() as u64 > limit
    {
        return Some(Outcome::from_reply(
            Status::Bounced,
            Step::Local,
            &Reply::local(
                552,
                EnhancedCode::new(5, 3, 4),
                format!(
                    "message is {} bytes, {} accepts at most {limit} (SIZE)",
                    msg.payload.message_len(),
                    session.host
                ),
            ),
        ));
    }
    if msg.envelope.needs_smtputf8() && !caps.smtputf8 {
        return Some(Outcome::from_reply(
            Status::Bounced,
            Step::Local,
            &Reply::local(
                553,
                EnhancedCode::new(5, 6, 7),
                format!(
                    "non-ASCII address needs SMTPUTF8, which {} does not offer",
                    session.host
                ),
            ),
        ));
    }
    None
}

async fn worker(ctx: Arc<Ctx>, queue: Arc<SiteQueue>) {
    let mut session: Option<Session> = None;
    loop {
        let now = Instant::now();
        if now >= ctx.cfg.deadline || ctx.cancel.is_cancelled() {
            break;
        }
        let jobs = match queue.take(ctx.cfg.batch.max(1), now, session.is_some()) {
            Next::Done => break,
            Next::Wait(until) => {
                if until > now + Duration::from_secs(2)
                    && let Some(s) = session.take()
                {
                    s.conn.quit().await;
                }
                tokio::select! {
                    () = sleep_until(
                        until
                            .min(now + Duration::from_millis(250))
                            .min(ctx.cfg.deadline),
                    ) => {}
                    () = ctx.cancel.cancelled() => {}
                }
                continue;
            }
            Next::Jobs(jobs) => jobs,
        };
        let source = ctx.source.clone();
        let rows: Vec<usize> = jobs.iter().map(|j| j.row).collect();
        let render = tokio::task::spawn_blocking(move || {
            rows.into_iter().map(|r| source(r)).collect::<Vec<_>>()
        });
        // A worker without a session opens one while its first batch renders, so the first
        // message goes out one connect + greeting + EHLO after the batch is taken, not after.
        let (rendered, mut opened) = if session.is_none() {
            let (r, o) = tokio::join!(render, open_session(&ctx, &queue.work));
            (r, Some(o))
        } else {
            (render.await, None)
        };
        let built = match rendered {
            Ok(b) => b,
            Err(e) => {
                for job in jobs {
                    ctx.final_outcome(
                        &queue,
                        job,
                        Outcome::local(
                            Status::Invalid,
                            Step::Render,
                            format!("rendering failed: {e}"),
                        ),
                    );
                }
                continue;
            }
        };
        if matches!(opened, Some(Ok(_))) {
            session = opened.take().and_then(Result::ok);
            queue.healthy();
        }
        let mut batch = jobs.into_iter().zip(built).peekable();
        while let Some((job, built)) = batch.next() {
            if ctx.cancel.is_cancelled() {
                // Stop taking new work: this job and the rest of the batch stay unsent.
                queue.unclaim(
                    std::iter::once(job)
                        .chain(batch.by_ref().map(|(j, _)| j))
                        .collect(),
                );
                break;
            }
            let msg = match built {
                Ok(m) => m,
                Err(outcome) => {
                    ctx.final_outcome(&queue, job, *outcome);
                    continue;
                }
            };
            if session.as_ref().is_some_and(|s| {
                s.conn.transactions() >= ctx.cfg.options.messages_per_connection.get()
            }) && let Some(s) = session.take()
            {
                s.conn.quit().await;
            }
            if session.is_none() {
                let attempt = match opened.take() {
                    Some(o) => o,
                    None => open_session(&ctx, &queue.work).await,
                };
                match attempt {
                    Ok(s) => {
                        queue.healthy();
                        session = Some(s);
                    }
                    Err(fail) => {
                        queue.pause(&ctx.cfg.options.retry);
                        // Circuit breaker: no MX of this site answers, so every job ready for it
                        // shares this failure and waits for the next retry round.
                        let outcome = fail.outcome();
                        ctx.transient(&queue, job, outcome.clone());
                        for (j, _) in batch.by_ref() {
                            ctx.transient(&queue, j, outcome.clone());
                        }
                        for j in queue.drain_ready() {
                            ctx.transient(&queue, j, outcome.clone());
                        }
                        break;
                    }
                }
            }
            let Some(s) = session.as_mut() else { continue };
            if let Some(mut refused) = local_refusal(s, &msg) {
                refused.attempts = job.attempts + 1;
                refused.mx_host = Some(s.host.clone());
                refused.mx_ip = Some(s.ip);
                refused.tls = s.tls.clone();
                ctx.final_outcome(&queue, job, refused);
                continue;
            }
            if let Some(rate) = ctx.cfg.options.rate_per_site {
                let slot = queue.send_slot(rate);
                if slot >= ctx.cfg.deadline {
                    // No slot before the deadline: leave the rest for the deadline report.
                    let rest = std::iter::once(job).chain(batch.by_ref().map(|(j, _)| j));
                    queue.unclaim(rest.collect::<Vec<_>>());
                    break;
                }
                sleep_until(slot).await;
            }
            // When the next message of the batch will surely go over this session, announce it
            // behind this one's content (one write and one read per message).
            let next = match batch.peek() {
                Some((_, Ok(m)))
                    if ctx.cfg.options.rate_per_site.is_none()
                        && s.conn.transactions() + 1
                            < ctx.cfg.options.messages_per_connection.get()
                        && local_refusal(s, m).is_none() =>
                {
                    Some((&m.envelope, &m.payload))
                }
                _ => None,
            };
            // The bound on duplicates after a crash: the last message accepted on this
            // session is recorded before another one can be.
            ctx.wait_recorded().await;
            let result = s.conn.send_then(&msg.envelope, &msg.payload, next).await;
            let mut base =
                Outcome::local(Status::Deferred, Step::Smtp(Phase::DataEnd), String::new());
            base.mx_host = Some(s.host.clone());
            base.mx_ip = Some(s.ip);
            base.message_id = Some(msg.message_id.clone());
            base.attempts = job.attempts + 1;
            base.tls = s.tls.clone();
            match result {
                Ok(Transaction::Accepted(reply)) => {
                    let o = Outcome {
                        status: Status::Delivered,
                        code: Some(reply.code),
                        enhanced: reply.enhanced,
                        response: reply.text(),
                        ..base
                    };
                    ctx.final_outcome(&queue, job, o);
                }
                Ok(Transaction::Rejected { phase, reply }) => {
                    let o = Outcome {
                        step: Step::Smtp(phase),
                        code: Some(reply.code),
                        enhanced: reply.enhanced,
                        response: reply.text(),
                        ..base
                    };
                    // 421: the server is closing the session (RFC 5321 §3.8); a refused RSET
                    // means the session is confused. Either way, start a new one.
                    let closing = reply.code == 421;
                    if closing || phase == Phase::Rset {
                        session = None;
                    }
                    if closing {
                        // The site asked us to go away: no new connection for a while, and
                        // the rest of this batch waits for it (or for another open session).
                        queue.pause(&ctx.cfg.options.retry);
                        ctx.transient(&queue, job, o);
                        let rest: Vec<Job> = batch.by_ref().map(|(j, _)| j).collect();
                        queue.unclaim(rest);
                        break;
                    }
                    if reply.is_permanent() && phase != Phase::Rset {
                        ctx.final_outcome(
                            &queue,
                            job,
                            Outcome {
                                status: Status::Bounced,
                                ..o
                            },
                        );
                    } else {
                        ctx.transient(&queue, job, o);
                    }
                }
                Err(e) => {
                    // The connection is gone. Whatever the phase, the message was not
                    // confirmed: retry (a drop after the final "." can duplicate, RFC 5321 §4.1.1.4).
                    session = None;
                    let o = Outcome {
                        step: Step::Smtp(e.phase()),
                        enhanced: Some(EnhancedCode::new(4, 4, 2)),
                        response: e.to_string(),
                        ..base
                    };
                    ctx.transient(&queue, job, o);
                    if matches!(e, ClientError::Timeout { .. } | ClientError::Closed { .. }) {
                        // Put the rest of the batch back; another session takes it.
                        let rest: Vec<Job> = batch.by_ref().map(|(j, _)| j).collect();
                        queue.unclaim(rest);
                        break;
                    }
                }
            }
        }
    }
    if let Some(s) = session.take() {
        s.conn.quit().await;
    }
}

/// Delivers every row of every site; returns when all rows have a final outcome or the
/// deadline (plus grace) has passed.
pub async fn deliver(
    sites: Vec<SiteWork>,
    source: MessageSource,
    cfg: DeliveryConfig,
    events: mpsc::UnboundedSender<Event>,
) {
    deliver_until(sites, source, cfg, events, CancellationToken::new()).await;
}

/// [`deliver`], stoppable: once `cancel` fires no new transaction starts, the ones in flight
/// get `cfg.grace` to finish, and the rows not finished get no [`Event::Final`] (the caller
/// reports them).
pub async fn deliver_until(
    sites: Vec<SiteWork>,
    source: MessageSource,
    cfg: DeliveryConfig,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    let hard_stop = cfg.deadline + cfg.grace;
    let grace = cfg.grace;
    let ctx = Arc::new(Ctx {
        cancel: cancel.clone(),
        connections: Arc::new(Semaphore::new(cfg.options.max_connections.get())),
        cfg,
        source,
        events,
        dead: Mutex::default(),
        no_tls: Mutex::default(),
        finals: Mutex::new(0),
    });
    let mut set = JoinSet::new();
    // Interleave sites so that the first connections go to many sites, not one.
    let mut queues = Vec::new();
    for work in sites {
        let n = ctx
            .cfg
            .options
            .connections_per_site
            .get()
            .min(work.rows.len());
        let now = Instant::now();
        let state = QueueState {
            ready: work
                .rows
                .iter()
                .map(|&row| Job {
                    row,
                    attempts: 0,
                    not_before: now,
                })
                .collect(),
            ..QueueState::default()
        };
        queues.push((
            Arc::new(SiteQueue {
                work,
                state: Mutex::new(state),
            }),
            n,
        ));
    }
    let max_workers = queues.iter().map(|(_, n)| *n).max().unwrap_or(0);
    for round in 0..max_workers {
        for (q, n) in &queues {
            if round < *n {
                set.spawn(worker(ctx.clone(), q.clone()));
            }
        }
    }
    let all_done = async { while set.join_next().await.is_some() {} };
    let cancelled = async {
        cancel.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = all_done => {}
        () = sleep_until(hard_stop) => {}
        () = cancelled => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(rows: usize) -> SiteQueue {
        let now = Instant::now();
        SiteQueue {
            work: SiteWork {
                name: "site".into(),
                hosts: Vec::new().into(),
                rows: (0..rows).collect(),
            },
            state: Mutex::new(QueueState {
                ready: (0..rows)
                    .map(|row| Job {
                        row,
                        attempts: 0,
                        not_before: now,
                    })
                    .collect(),
                ..QueueState::default()
            }),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_paused_site_feeds_open_sessions_only_and_backs_off_further_each_time() {
        let q = queue(4);
        let retry = RetryPolicy::parse("1m,5m").unwrap();
        let t0 = Instant::now();
        q.pause(&retry);
        assert!(matches!(q.take(1, t0, false), Next::Wait(u) if u == t0 + Duration::from_secs(60)));
        assert!(
            matches!(q.take(1, t0, true), Next::Jobs(j) if j.len() == 1),
            "a session already open may go on"
        );
        q.pause(&retry);
        assert!(
            matches!(q.take(1, t0, false), Next::Wait(u) if u == t0 + Duration::from_secs(300)),
            "second consecutive failure: the next wait"
        );
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(matches!(q.take(1, Instant::now(), false), Next::Jobs(_)));
        q.healthy();
        q.pause(&retry);
        let now = Instant::now();
        assert!(
            matches!(q.take(1, now, false), Next::Wait(u) if u == now + Duration::from_secs(60)),
            "a successful connection resets the back-off"
        );
    }

    #[test]
    fn unclaimed_jobs_keep_their_order() {
        let q = queue(3);
        let Next::Jobs(jobs) = q.take(3, Instant::now(), true) else {
            panic!("jobs expected");
        };
        q.unclaim(jobs);
        let Next::Jobs(again) = q.take(3, Instant::now(), true) else {
            panic!("jobs expected");
        };
        let rows: Vec<usize> = again.iter().map(|j| j.row).collect();
        assert_eq!(rows, vec![0, 1, 2]);
    }
}
