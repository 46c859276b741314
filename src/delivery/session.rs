//! Opening an SMTP session to a site: try its MX addresses in order (skipping those known to be
//! failing), connect, read the greeting, EHLO, STARTTLS per the TLS policy and EHLO again; and,
//! once a session is open, the checks that refuse a message locally before it is sent (SIZE,
//! SMTPUTF8).
//!
//! Every failure here is about one address, so the next address is tried; only when none gives
//! a session does the worker hear about it, as a [`ConnectFailure`] carrying the last reason.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use rustls::ClientConfig;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::timeout;

use super::connect::{Connect, ConnectError};
use super::ctx::Ctx;
use super::hosts::Probe;
use super::source_ip::{Lease, SourceIp};
use super::work::{Event, SiteWork};
use crate::message::BuiltMessage;
use crate::mx::MxHost;
use crate::outcome::{Outcome, Status, Step};
use crate::smtp::{Connection, EnhancedCode, MaybeTls, Phase, Reply, TlsMode};
use crate::tls_policy::{HostRule, PolicyKind};

/// An SMTP connection over a connector's stream, plaintext until STARTTLS.
pub(super) type MxConnection<S> = Connection<MaybeTls<S>>;

/// An open, greeted, EHLO'd session with one MX.
pub(super) struct Session<S> {
    /// The connection.
    pub(super) conn: MxConnection<S>,
    /// MX host name (for outcomes).
    pub(super) host: String,
    /// The address connected to.
    pub(super) ip: IpAddr,
    /// TLS version, `None` in plaintext.
    pub(super) tls: Option<String>,
    /// The `--source-ip` address this session left from (held until the session ends).
    pub(super) source: Option<Lease>,
    /// The TLS policy the session met.
    pub(super) policy: PolicyKind,
    /// Under an MTA-STS `testing` policy: what `enforce` would have refused.
    pub(super) tls_note: Option<String>,
    /// This session's leave to pipeline behind the final dot before the address has answered
    /// such commands (see [`Hosts::may_announce`](super::hosts::Hosts::may_announce)).
    pub(super) probe: Option<Probe>,
    /// This session's share of `--max-connections`.
    _permit: OwnedSemaphorePermit,
}

impl<S> Session<S> {
    /// Fills in where an outcome happened: this session's host, address and TLS version.
    pub(super) fn stamp(&self, outcome: &mut Outcome) {
        outcome.mx_host = Some(self.host.clone());
        outcome.mx_ip = Some(self.ip);
        outcome.tls.clone_from(&self.tls);
        outcome.source_ip = self.source.as_ref().map(|s| s.ip().addr);
        outcome.tls_policy = self.policy;
        outcome.tls_note.clone_from(&self.tls_note);
    }
}

/// Why no session could be opened: the last failure seen over all MX addresses.
pub(super) struct ConnectFailure {
    step: Phase,
    reply: Option<Reply>,
    text: String,
    host: Option<String>,
    ip: Option<IpAddr>,
    /// The source address tried (`--source-ip`).
    source: Option<IpAddr>,
    /// The TLS policy of the host tried.
    policy: PolicyKind,
}

impl ConnectFailure {
    /// A failure before any address was tried.
    fn before_connecting(text: &str) -> Self {
        Self {
            step: Phase::Connect,
            reply: None,
            text: text.into(),
            host: None,
            ip: None,
            source: None,
            policy: PolicyKind::None,
        }
    }

    /// The reply that refused the session, if a server answered (greeting, EHLO, STARTTLS),
    /// and the phase it answered.
    pub(super) fn reply(&self) -> Option<(Phase, &Reply)> {
        self.reply.as_ref().map(|r| (self.step, r))
    }

    /// The (deferred) outcome every row waiting for the site gets.
    pub(super) fn outcome(&self) -> Outcome {
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
        o.source_ip = self.source;
        o.tls_policy = self.policy;
        o
    }
}

/// Opens a session with the first address of `site` that gives one, leaving from the source
/// address of pool index `source` (the one whose provider gate gave the connection slot), or
/// from the least-used one when `None`.
pub(super) async fn open_session<C: Connect>(
    ctx: &Ctx<C>,
    site: &SiteWork,
    source: Option<usize>,
) -> Result<Session<C::Stream>, ConnectFailure> {
    let permit = ctx
        .connections
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| ConnectFailure::before_connecting("shutting down"))?;
    let mut last = ConnectFailure::before_connecting("no MX address to try");
    for (host, ip) in ctx.hosts.candidates(&site.hosts) {
        match try_address(ctx, site, (host, ip), source).await {
            Ok(Opened {
                conn,
                tls,
                source,
                policy,
                tls_note,
            }) => {
                ctx.emit(Event::Connected {
                    site: site.name.clone(),
                });
                return Ok(Session {
                    conn,
                    host: host.name.clone(),
                    ip,
                    tls,
                    source,
                    policy,
                    tls_note,
                    probe: None,
                    _permit: permit,
                });
            }
            Err(f) => last = f,
        }
    }
    Err(last)
}

/// A session with one MX address, leaving from a source address of the pool (when there is
/// one): a source that cannot be bound is marked unusable for the run and the next one tried
/// (unless the session must leave from `only` that one).
async fn try_address<C: Connect>(
    ctx: &Ctx<C>,
    site: &SiteWork,
    (host, ip): (&MxHost, IpAddr),
    only: Option<usize>,
) -> Result<Opened<C::Stream>, ConnectFailure> {
    let rule = site.tls.rule(&host.name);
    let policy = rule.kind(local_kind(ctx.cfg.tls.mode));
    if let HostRule::Refuse { why, .. } = &rule {
        // The published policy rules this host out: it is not even connected to.
        let mut f = ConnectFailure::before_connecting(why.as_str());
        (f.step, f.host, f.ip, f.policy) =
            (Phase::StartTls, Some(host.name.clone()), Some(ip), policy);
        return Err(f);
    }
    loop {
        let source = lease_source(ctx, host, ip, only).map_err(|f| *f)?;
        let to = Target {
            host,
            ip,
            source: source.as_ref().map(Lease::ip),
            tls: TlsPlan::new(ctx, &rule, policy),
        };
        let want_tls = to.tls.mandatory
            || (ctx.cfg.tls.mode != TlsMode::Disabled && !ctx.hosts.tls_broken(ip));
        let result = match connect_one(ctx, &to, want_tls).await {
            Err(Failed::Tls(f))
                if !to.tls.mandatory && ctx.cfg.tls.mode == TlsMode::Opportunistic =>
            {
                // RFC 3207 leaves it to the client; like Postfix, retry in plaintext on a new
                // connection and do not try TLS with this address again during the run.
                ctx.hosts.remember_tls_broken(ip);
                to.tls
                    .would_fail(|| format!("TLS handshake failed: {}", f.text));
                connect_one(ctx, &to, false).await
            }
            other => other,
        };
        match result {
            Ok((mut conn, tls)) => {
                conn.set_dialect(ctx.hosts.dialect(ip));
                conn.set_chunking(!ctx.cfg.options.no_chunking);
                if tls.is_none() {
                    let offered = conn.capabilities().starttls;
                    to.tls.would_fail(|| match offered {
                        true => format!("{} was sent to without TLS (--tls)", host.name),
                        false => format!("{} offered no STARTTLS", host.name),
                    });
                }
                let tls_note = to.tls.note();
                return Ok(Opened {
                    conn,
                    tls,
                    source,
                    policy,
                    tls_note,
                });
            }
            Err(Failed::Bind(index)) => ctx.cfg.sources.mark_unusable(index),
            Err(Failed::Next(f) | Failed::Tls(f)) => return Err(f),
        }
    }
}

/// A new session and what it met.
struct Opened<S> {
    conn: MxConnection<S>,
    tls: Option<String>,
    source: Option<Lease>,
    policy: PolicyKind,
    tls_note: Option<String>,
}

/// The policy kind of the `--tls` mode alone.
fn local_kind(mode: TlsMode) -> PolicyKind {
    match mode {
        TlsMode::Opportunistic => PolicyKind::Opportunistic,
        TlsMode::Required => PolicyKind::Required,
        TlsMode::Disabled => PolicyKind::None,
    }
}

/// How one connection uses TLS, from the host's [`HostRule`] and the `--tls` mode.
struct TlsPlan {
    /// The policy, for outcomes.
    policy: PolicyKind,
    /// No plaintext, no fallback: STARTTLS must be offered and the handshake succeed.
    mandatory: bool,
    /// The rustls configuration (its verifier is the policy's certificate check).
    config: Arc<ClientConfig>,
    /// Under an MTA-STS `testing` policy: what `enforce` would have refused.
    testing: Option<Testing>,
}

/// What an MTA-STS `testing` session notices.
struct Testing {
    /// The first reason `enforce` would have refused (an unlisted host, no STARTTLS, …).
    first: Mutex<Option<String>>,
    /// The Web PKI verdict on the certificate, filled in during the handshake.
    certificate: Arc<Mutex<Option<String>>>,
}

impl TlsPlan {
    fn new<C>(ctx: &Ctx<C>, rule: &HostRule, policy: PolicyKind) -> Self {
        let tls = &ctx.cfg.tls;
        let (mandatory, config, testing) = match rule {
            HostRule::Dane(config) => (true, config.clone(), None),
            HostRule::DaneEncryptOnly => (true, tls.any_certificate(), None),
            HostRule::MtaSts => (true, tls.verified(), None),
            HostRule::Local {
                testing: true,
                unlisted,
            } if tls.mode != TlsMode::Required => {
                let (config, certificate) = tls.probing();
                let first = Mutex::new(unlisted.clone());
                (false, config, Some(Testing { first, certificate }))
            }
            HostRule::Local { .. } | HostRule::Refuse { .. } => {
                (tls.mode == TlsMode::Required, tls.client_config(), None)
            }
        };
        Self {
            policy,
            mandatory,
            config,
            testing,
        }
    }

    /// Under a `testing` policy, notes the first reason `enforce` would have refused.
    fn would_fail(&self, why: impl FnOnce() -> String) {
        if let Some(t) = &self.testing {
            let mut first = t.first.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(why);
        }
    }

    /// What `enforce` would have refused, as the results' `tls_policy_note`.
    fn note(&self) -> Option<String> {
        let t = self.testing.as_ref()?;
        let first = t.first.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let verdict = t
            .certificate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        first
            .or(verdict)
            .map(|why| format!("MTA-STS testing: enforce would have refused: {why}"))
    }

    /// Why the session may not go on in plaintext.
    fn no_starttls(&self, host: &str) -> String {
        match self.policy {
            PolicyKind::Dane => format!("{host} does not offer STARTTLS, and DANE requires TLS"),
            PolicyKind::MtaSts => format!(
                "{host} does not offer STARTTLS, and the domain's MTA-STS policy requires TLS"
            ),
            _ => format!("{host} does not offer STARTTLS and --tls required is set"),
        }
    }
}

/// The source address for a new connection to `ip`: `None` without a pool; the address of
/// index `only` when given (per-source provider limits: the worker holds a connection slot
/// of that address's gate), else the least-used one; an error when that address, or every
/// one, is unusable or of the other family.
fn lease_source<C: Connect>(
    ctx: &Ctx<C>,
    host: &MxHost,
    ip: IpAddr,
    only: Option<usize>,
) -> Result<Option<Lease>, Box<ConnectFailure>> {
    let pool = &ctx.cfg.sources;
    if pool.is_empty() {
        return Ok(None);
    }
    let allowed =
        |s: &SourceIp| s.addr.is_ipv4() == ip.is_ipv4() && only.is_none_or(|i| i == s.index);
    match pool.lease_where(allowed) {
        Some(lease) => Ok(Some(lease)),
        None => Err(Box::new(ConnectFailure {
            host: Some(host.name.clone()),
            ip: Some(ip),
            ..ConnectFailure::before_connecting(&format!(
                "no usable --source-ip address to reach {ip} from (unbindable or other family)"
            ))
        })),
    }
}

/// Why one address did not give a session.
enum Failed {
    /// The source address (its pool index) cannot be bound here: try another source.
    Bind(usize),
    /// Try the next address.
    Next(ConnectFailure),
    /// The TLS handshake failed (opportunistic mode retries in plaintext).
    Tls(ConnectFailure),
}

/// The address being tried.
struct Target<'h> {
    host: &'h MxHost,
    ip: IpAddr,
    /// The source address to leave from (`--source-ip`).
    source: Option<&'h SourceIp>,
    /// How TLS is used.
    tls: TlsPlan,
}

impl Target<'_> {
    fn fail(&self, step: Phase, reply: Option<Reply>, text: String) -> Failed {
        Failed::Next(self.failure(step, reply, text))
    }

    fn failure(&self, step: Phase, reply: Option<Reply>, text: String) -> ConnectFailure {
        ConnectFailure {
            step,
            reply,
            text,
            host: Some(self.host.name.clone()),
            ip: Some(self.ip),
            source: self.source.map(|s| s.addr),
            policy: self.tls.policy,
        }
    }

    /// The EHLO name: the source address's, else the run's.
    fn helo<'a>(&'a self, run_helo: &'a str) -> &'a str {
        self.source.map_or(run_helo, |s| s.helo(run_helo))
    }
}

/// Connects to one address: greeting, EHLO, and STARTTLS + EHLO again when `want_tls` and
/// offered. Returns the session and its TLS version.
async fn connect_one<C: Connect>(
    ctx: &Ctx<C>,
    to: &Target<'_>,
    want_tls: bool,
) -> Result<(MxConnection<C::Stream>, Option<String>), Failed> {
    let stream = dial(ctx, to).await?;
    let (mut conn, greeting) = Connection::greet(MaybeTls::Plain(stream), ctx.cfg.options.timeouts)
        .await
        .map_err(|e| to.fail(e.phase(), None, e.to_string()))?;
    if !greeting.is_positive() {
        // 4yz/5yz greeting: this host will not talk to us now; try the next MX.
        conn.quit().await;
        return Err(to.fail(Phase::Greeting, Some(greeting), String::new()));
    }
    hello(&mut conn, to.helo(ctx.cfg.options.helo()), to).await?;
    if want_tls && conn.capabilities().starttls {
        conn = starttls(ctx, conn, to).await?;
    }
    let tls = conn.stream().tls_version();
    if to.tls.mandatory && tls.is_none() {
        conn.quit().await;
        let text = to.tls.no_starttls(&to.host.name);
        return Err(to.fail(Phase::StartTls, None, text));
    }
    Ok((conn, tls))
}

/// Connects, bounded by the connect timeout; an address that refuses or does not answer is
/// skipped for a while.
async fn dial<C: Connect>(ctx: &Ctx<C>, to: &Target<'_>) -> Result<C::Stream, Failed> {
    let limit = ctx.cfg.options.timeouts.connect;
    let addr = SocketAddr::new(to.ip, ctx.cfg.options.smtp_port);
    let dialled = ctx.connector.connect_from(&to.host.name, addr, to.source);
    let text = match timeout(limit, dialled).await {
        Ok(Ok(stream)) => return Ok(stream),
        // The source, not the MX, is at fault: no mark against the MX address.
        Ok(Err(ConnectError::Bind(_))) => {
            return Err(Failed::Bind(to.source.map_or(0, |s| s.index)));
        }
        Err(_) => format!("connect to {addr} timed out after {limit:?}"),
        Ok(Err(ConnectError::Connect(e))) => format!("connect to {addr}: {e}"),
    };
    ctx.hosts.mark_dead(to.ip);
    Err(to.fail(Phase::Connect, None, text))
}

/// STARTTLS, the handshake and EHLO again. A refused STARTTLS goes on in plaintext unless TLS
/// is required.
async fn starttls<C: Connect>(
    ctx: &Ctx<C>,
    mut conn: MxConnection<C::Stream>,
    to: &Target<'_>,
) -> Result<MxConnection<C::Stream>, Failed> {
    let reply = conn
        .starttls()
        .await
        .map_err(|e| to.fail(e.phase(), None, e.to_string()))?;
    if reply.code == 220 {
        let config = to.tls.config.clone();
        let mut conn = crate::smtp::tls::handshake(conn, config, &to.host.name, to.ip)
            .await
            .map_err(|e| Failed::Tls(to.failure(Phase::StartTls, None, e.to_string())))?;
        // RFC 3207 §4.2: forget what the plaintext EHLO said and ask again.
        hello(&mut conn, to.helo(ctx.cfg.options.helo()), to).await?;
        return Ok(conn);
    }
    if to.tls.mandatory {
        conn.quit().await;
        return Err(to.fail(Phase::StartTls, Some(reply), String::new()));
    }
    to.tls
        .would_fail(|| format!("{} refused STARTTLS: {reply}", to.host.name));
    // Opportunistic and STARTTLS refused: go on in plaintext on this session.
    Ok(conn)
}

/// EHLO (or HELO); a refusal or a lost connection means this address cannot be used.
async fn hello<S>(conn: &mut MxConnection<S>, name: &str, to: &Target<'_>) -> Result<(), Failed>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match conn.hello(name).await {
        Ok(r) if r.is_positive() => Ok(()),
        Ok(r) => Err(to.fail(Phase::Ehlo, Some(r), String::new())),
        Err(e) => Err(to.fail(e.phase(), None, e.to_string())),
    }
}

/// Checks what the session offers against the message before sending (RFC 1870, RFC 6531).
pub(super) fn local_refusal<S>(session: &Session<S>, msg: &BuiltMessage) -> Option<Outcome>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
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
