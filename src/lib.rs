//! mailmerge: batch mail merge with direct-to-MX delivery.
//!
//! The pipeline, one module per stage, data flowing one way:
//! [`recipients`] (CSV rows) → [`template`] (rendered parts) → [`message`] (envelope + bytes)
//! → [`mx`] (one lookup per domain, grouped into sites) → [`delivery`] (per-site pools over
//! our [`smtp`] client) → [`report`] (results CSV and summary), with [`progress`] alongside.
//! [`run`] wires it once; `main.rs` only turns flags into a [`RunConfig`]. Every final outcome
//! is recorded in the [`journal`] as it arrives, so a re-run skips what is done.

pub mod address;
pub mod config;
pub mod delivery;
pub mod dkim;
pub mod identity;
pub mod journal;
pub mod message;
pub mod mx;
pub mod preflight;
pub mod progress;
pub mod recipients;
pub mod report;
pub mod sandbox;
pub mod smtp;
pub mod template;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;
pub use tokio_util::sync::CancellationToken;

use delivery::{
    DeliveryConfig, Event, MessageSource, Outcome, RetryPolicy, SiteWork, Status, Step,
};
use journal::{Journal, RowKeys};
use message::MessageOptions;
use mx::{DnsOptions, MxResolver, Route};
use recipients::{ListOptions, RecipientList};
use report::{Plan, PlanSite, Summary};
use smtp::{EnhancedCode, Reply, Timeouts};
use template::MessageTemplate;

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The CSV list.
    pub recipients: PathBuf,
    /// The template file.
    pub template: PathBuf,
    /// Where the results CSV goes.
    pub results: PathBuf,
    /// CSV reading options.
    pub list: ListOptions,
    /// Message options (envelope sender).
    pub message: MessageOptions,
    /// DNS options.
    pub dns: DnsOptions,
    /// EHLO name.
    pub helo: String,
    /// MX port.
    pub smtp_port: u16,
    /// Connection caps.
    pub connections_per_site: usize,
    /// Global connection cap.
    pub max_connections: usize,
    /// Messages per connection.
    pub messages_per_connection: usize,
    /// SMTP timeouts.
    pub timeouts: Timeouts,
    /// Retry waits.
    pub retry: RetryPolicy,
    /// Wall-clock budget of the run.
    pub deadline: Duration,
    /// STARTTLS policy (`--tls`).
    pub tls: smtp::TlsMode,
    /// Roots trusted under `--tls required` besides the Mozilla roots (a private or test CA).
    pub tls_extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// `--rate-per-site`: messages at most per period to one site.
    pub rate_per_site: Option<delivery::Rate>,
    /// Resolve and render only; print the plan.
    pub dry_run: bool,
    /// Progress display.
    pub progress: progress::Mode,
    /// Ignore (and empty) the journal of earlier runs: send to everyone again.
    pub fresh: bool,
    /// Send at most this many messages (a canary); the rest stay `deferred` (step `limit`).
    pub limit: Option<usize>,
    /// With `dry_run`: write each rendered message here as `<row>-<address>.eml`.
    pub eml_out: Option<PathBuf>,
    /// Cancelled on SIGINT/SIGTERM: stop taking new work, finish in-flight, report.
    pub cancel: CancellationToken,
    /// Go on with a journal written for another version of the template (a fix during a
    /// campaign) instead of refusing.
    pub template_changed: bool,
}

impl RunConfig {
    /// A configuration with defaults for everything but the files.
    pub fn new(recipients: PathBuf, template: PathBuf) -> Self {
        let results = default_results_path(&recipients);
        Self {
            recipients,
            template,
            results,
            list: ListOptions::default(),
            message: MessageOptions::default(),
            dns: DnsOptions::default(),
            helo: "localhost".into(),
            smtp_port: 25,
            connections_per_site: 10,
            max_connections: 200,
            messages_per_connection: 1000,
            timeouts: Timeouts::default(),
            retry: RetryPolicy::default(),
            deadline: Duration::from_secs(30 * 60),
            tls: smtp::TlsMode::default(),
            tls_extra_roots: Vec::new(),
            rate_per_site: None,
            dry_run: false,
            progress: progress::Mode::Auto,
            fresh: false,
            limit: None,
            eml_out: None,
            cancel: CancellationToken::new(),
            template_changed: false,
        }
    }
}

/// The async runtime mailmerge runs on (the binary and the benchmarks use the same one).
///
/// The blocking pool, where messages are rendered, is bounded to twice the cores: rendering is
/// CPU work, so more threads only add memory (each thread's allocator caches), not speed.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads((cpus * 2).max(4))
        .build()
}

/// `list.csv` → `list.results.csv` beside it.
pub fn default_results_path(recipients: &std::path::Path) -> PathBuf {
    let stem = recipients
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "recipients".into());
    recipients.with_file_name(format!("{stem}.results.csv"))
}

/// The run could not happen at all (exit code 2).
#[derive(Debug, Error)]
pub enum RunError {
    /// The list is unreadable.
    #[error(transparent)]
    List(#[from] recipients::ListError),
    /// The template is unusable.
    #[error(transparent)]
    Template(#[from] template::TemplateError),
    /// DNS resolver setup failed.
    #[error(transparent)]
    Resolver(#[from] mx::ResolverError),
    /// The journal cannot be read or written.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// `--out` folder cannot be written.
    #[error("cannot write {path}: {source}")]
    Out {
        /// File or folder.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS configuration cannot be built (e.g. an unusable extra root).
    #[error(transparent)]
    Tls(#[from] smtp::tls::TlsSetupError),
    /// The results file cannot be written.
    #[error("cannot write results {path}: {source}")]
    Results {
        /// File.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What a finished run reports.
#[derive(Debug)]
pub struct RunReport {
    /// Counts and timing.
    pub summary: Summary,
    /// Delivery plan (sites and their row counts), for `--dry-run`.
    pub plan: Vec<(String, Vec<String>, usize)>,
    /// The preflight plan: counts by status the rows would get, sites, connections.
    pub check: Plan,
    /// The run was cancelled (SIGINT/SIGTERM) before it finished.
    pub interrupted: bool,
    /// Rows skipped because an earlier run delivered or bounced them (journal).
    pub reused: usize,
    /// Sender-identity warnings (EHLO name, DMARC alignment), each also printed once.
    pub warnings: Vec<String>,
}

/// Distinct warnings of a run: each is printed to stderr the first time it occurs.
#[derive(Clone, Default)]
struct Warnings(Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    fn add(&self, w: String) {
        if let Ok(mut seen) = self.0.lock()
            && !seen.contains(&w)
        {
            eprintln!("mailmerge: warning: {w}");
            seen.push(w);
        }
    }

    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// Warns once per distinct misalignment between From, envelope sender and DKIM `d=`.
fn check_identity(built: &message::BuiltMessage, opts: &MessageOptions, warnings: &Warnings) {
    let envelope_domain = built.envelope.from.rsplit_once('@').map_or("", |(_, d)| d);
    let dkim_domain = opts
        .dkim
        .as_ref()
        .map(|s| s.signing_domain(&built.from_domain));
    for w in identity::alignment_warnings(&built.from_domain, envelope_domain, dkim_domain) {
        warnings.add(w);
    }
}

fn dns_outcome(route: &Route) -> Option<Outcome> {
    let (status, code, e, text) = match route {
        Route::Hosts(_) => return None,
        Route::NullMx => (
            Status::Bounced,
            556,
            EnhancedCode::new(5, 1, 10),
            "domain publishes a null MX (RFC 7505): it accepts no mail".to_string(),
        ),
        Route::NoSuchDomain => (
            Status::Bounced,
            550,
            EnhancedCode::new(5, 1, 2),
            "domain does not exist (NXDOMAIN)".to_string(),
        ),
        Route::NoAddress(t) => (Status::Bounced, 550, EnhancedCode::new(5, 4, 4), t.clone()),
        Route::TempFail(t) => (Status::Deferred, 451, EnhancedCode::new(4, 4, 3), t.clone()),
    };
    Some(Outcome::from_reply(
        status,
        Step::Dns,
        &Reply::local(code, e, text),
    ))
}

/// `list.csv:3: problem` from a row error or render outcome that starts with `line N: `.
fn problem(path: &std::path::Path, text: &str) -> String {
    match text.strip_prefix("line ") {
        Some(rest) => format!("{}:{rest}", path.display()),
        None => format!("{}: {text}", path.display()),
    }
}

/// File name for a `--out` message: row number and a filesystem-safe address.
fn eml_name(row: usize, email: &str) -> String {
    let safe: String = email
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{row:06}-{safe}.eml")
}

/// Runs the whole pipeline.
pub async fn run(cfg: RunConfig) -> Result<RunReport, RunError> {
    let started = std::time::Instant::now();
    let warnings = Warnings::default();
    if let Some(w) = identity::helo_warning(&cfg.helo) {
        warnings.add(w);
    }
    let deadline = tokio::time::Instant::now() + cfg.deadline;
    let list = Arc::new(RecipientList::from_path(&cfg.recipients, &cfg.list)?);
    let mut template = MessageTemplate::from_path(&cfg.template)?;
    for (name, value) in &cfg.message.extra_headers {
        template.add_header(name, value, "the --list-unsubscribe option")?;
    }
    let template = Arc::new(template);
    template.check_columns(&list.columns)?;
    let mut check = Plan {
        rows: list.len(),
        ..Plan::default()
    };

    // Earlier runs of this job: rows delivered or bounced are done (README "Re-running safely").
    let journal_path = journal::path_for(&cfg.results);
    let keys = RowKeys::new(&list, cfg.list.allow_duplicates);
    let replay = if cfg.fresh {
        journal::Replay::default()
    } else {
        journal::load(&journal_path)?
    };
    let per_address = !cfg.list.allow_duplicates;
    // Which message this run sends: the same list with another template is a new campaign,
    // not a re-run (README "Re-running safely").
    let fingerprint = journal::fingerprint(
        std::iter::once(template.source().as_bytes()).chain(
            cfg.message
                .extra_headers
                .iter()
                .flat_map(|(n, v)| [n.as_bytes(), v.as_bytes()]),
        ),
    );
    if let Some(recorded) = &replay.template
        && *recorded != fingerprint
        && !cfg.template_changed
    {
        return Err(journal::JournalError::OtherTemplate {
            path: journal_path.clone(),
        }
        .into());
    }

    let mut outcomes = OutcomeStore::new(list.len());
    let mut reused = 0;
    let mut budget = cfg.limit.unwrap_or(usize::MAX);
    // One pass over the rows: input errors, rows done by earlier runs, the --limit, and the
    // destination domains of the rows still to send.
    let mut domains: BTreeSet<String> = BTreeSet::new();
    for (i, row) in list.iter().enumerate() {
        match &row.status {
            Err(e) => {
                let status = if e.status() == "duplicate" {
                    check.duplicate += 1;
                    Status::Duplicate
                } else {
                    check.invalid += 1;
                    check
                        .problems
                        .push(problem(&cfg.recipients, &e.to_string()));
                    Status::Invalid
                };
                outcomes.set_local(i, Outcome::local(status, Step::Input, e.to_string()));
            }
            Ok(addr) => {
                let done = if replay.is_empty() {
                    None
                } else {
                    replay.done_at(&keys.key(&list, i, &row), per_address)
                };
                if let Some(at) = done {
                    outcomes.set_journal(i, at);
                    reused += 1;
                } else if budget == 0 {
                    let limit = cfg.limit.unwrap_or_default();
                    outcomes.set_local(
                        i,
                        Outcome::local(
                            Status::Deferred,
                            Step::Limit,
                            format!("not sent: beyond --limit {limit}; a later run sends it"),
                        ),
                    );
                    check.beyond_limit += 1;
                } else {
                    budget -= 1;
                    if !domains.contains(addr.domain()) {
                        domains.insert(addr.domain().to_string());
                    }
                }
            }
        }
    }
    check.already_done = reused;
    let resolver = MxResolver::new(&cfg.dns)?;
    let routes = resolver.routes(domains).await;
    let sites = mx::group_sites(&routes);
    let site_of: HashMap<&str, usize> = sites
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.domains.iter().map(move |d| (d.as_str(), i)))
        .collect();
    let mut work: Vec<SiteWork> = sites
        .iter()
        .map(|s| SiteWork {
            name: s.name.as_str().into(),
            hosts: s.hosts.clone(),
            rows: Vec::new(),
        })
        .collect();
    // Each row's site (for progress), u32::MAX for none: 4 bytes per row.
    let mut site_of_row: Vec<u32> = vec![u32::MAX; list.len()];
    // Outcomes decided before any connection (DNS), to journal once the journal is open.
    let mut decided: Vec<(usize, Outcome)> = Vec::new();
    for (i, row) in list.iter().enumerate() {
        if !outcomes.is_pending(i) {
            continue;
        }
        let Ok(addr) = &row.status else { continue };
        let route = routes.get(addr.domain());
        match route {
            Some(Route::NullMx) => check.null_mx += 1,
            Some(Route::NoSuchDomain) => check.nxdomain += 1,
            Some(Route::NoAddress(_)) => check.no_address += 1,
            Some(Route::TempFail(_)) | None => check.dns_tempfail += 1,
            Some(Route::Hosts(_)) => {}
        }
        match route.and_then(dns_outcome) {
            Some(o) => {
                outcomes.set_decided(i);
                decided.push((i, o));
            }
            None => match site_of.get(addr.domain()) {
                Some(&s) => {
                    work[s].rows.push(i);
                    site_of_row[i] = s as u32;
                }
                None => {
                    outcomes.set_decided(i);
                    decided.push((
                        i,
                        Outcome::local(Status::Deferred, Step::Dns, "no DNS answer for the domain"),
                    ));
                }
            },
        }
    }
    let plan = sites
        .iter()
        .zip(&work)
        .map(|(s, w)| {
            (
                s.name.clone(),
                s.hosts
                    .iter()
                    .map(|h| format!("{} (pref {})", h.name, h.preference))
                    .collect(),
                w.rows.len(),
            )
        })
        .collect::<Vec<_>>();

    let source: MessageSource = {
        let list = list.clone();
        let template = template.clone();
        let mut opts = cfg.message.clone();
        opts.message_id_prefix
            .get_or_insert_with(message::new_run_id);
        let warnings = warnings.clone();
        Arc::new(move |i: usize| {
            let row = list.row(i);
            let addr = row.status.as_ref().map_err(|e| {
                Box::new(Outcome::local(Status::Invalid, Step::Input, e.to_string()))
            })?;
            let rendered = template.render(&list.columns, &row.fields).map_err(|e| {
                Box::new(Outcome::local(
                    Status::Invalid,
                    Step::Render,
                    format!("line {}: {e}", row.line),
                ))
            })?;
            let built = message::build_row(rendered, addr, &opts, Some(row.row)).map_err(|e| {
                Box::new(Outcome::local(
                    Status::Invalid,
                    Step::Render,
                    format!("line {}: {e}", row.line),
                ))
            })?;
            check_identity(&built, &opts, &warnings);
            Ok(built)
        })
    };

    let to_send: usize = work.iter().map(|w| w.rows.len()).sum();
    let mut connections = 0;
    let mut interrupted = false;
    let mut journal_failure = None;
    let mut delivered_now = 0;
    if cfg.dry_run {
        // Render every message (catches per-row problems) without connecting anywhere.
        if let Some(dir) = &cfg.eml_out {
            std::fs::create_dir_all(dir).map_err(|source| RunError::Out {
                path: dir.clone(),
                source,
            })?;
        }
        // Every message is rendered, including those whose domain already failed in DNS (a
        // missing value is a problem of its own); only those that would be sent go to --out.
        let rows: Vec<(usize, bool)> = work
            .iter()
            .flat_map(|w| w.rows.iter().map(|&r| (r, true)))
            .chain(decided.iter().map(|(r, _)| (*r, false)))
            .collect();
        let src = source.clone();
        let out = cfg.eml_out.clone();
        let list_for_names = list.clone();
        let names = move |r: usize| {
            let row = list_for_names.row(r);
            eml_name(row.row, &row.email)
        };
        let results = tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            rows.par_iter()
                .map(|&(r, would_send)| match src(r) {
                    Err(o) => (r, Some(*o), None),
                    Ok(msg) => {
                        let err = out.as_ref().filter(|_| would_send).and_then(|dir| {
                            let path = dir.join(names(r));
                            let bytes = smtp::DataPayload::unstuff(msg.payload.as_bytes());
                            std::fs::write(&path, bytes).err().map(|e| (path, e))
                        });
                        (r, None, err)
                    }
                })
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        let mut invalid_rows = std::collections::HashSet::new();
        for (r, err, write_err) in results {
            if let Some((path, source)) = write_err {
                return Err(RunError::Out { path, source });
            }
            if let Some(o) = err {
                check.problems.push(problem(&cfg.recipients, &o.response));
                check.invalid += 1;
                invalid_rows.insert(r);
                outcomes.set_local(r, o);
            }
        }
        for (i, o) in decided {
            if !invalid_rows.contains(&i) {
                outcomes.set_local(i, o);
            }
        }
        let rendered_invalid_sendable = work
            .iter()
            .flat_map(|w| &w.rows)
            .filter(|r| invalid_rows.contains(r))
            .count();
        check.problems.sort_by_key(|p| {
            // Keep problems in file order: the line number follows the path.
            p.strip_prefix(&format!("{}:", cfg.recipients.display()))
                .and_then(|rest| rest.split(':').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        });
        check.sites = check_sites(&plan, &work, &invalid_rows, &cfg);
        check.to_send = to_send - rendered_invalid_sendable;
    } else {
        let mut journal = Journal::open_for(
            &journal_path,
            &cfg.recipients,
            Some(&fingerprint),
            cfg.fresh,
        )?;
        for (i, o) in decided {
            let row = list.row(i);
            let at = journal.append(&keys.key(&list, i, &row), row.row, &o);
            outcomes.set_recorded(i, at, o);
        }
        journal.flush()?;
        check.sites = check_sites(&plan, &work, &Default::default(), &cfg);
        check.to_send = to_send;
        let recorded = Arc::new(delivery::Recorded::default());
        let dcfg = DeliveryConfig {
            helo: cfg.helo.clone(),
            smtp_port: cfg.smtp_port,
            connections_per_site: cfg.connections_per_site,
            max_connections: cfg.max_connections,
            messages_per_connection: cfg.messages_per_connection,
            timeouts: cfg.timeouts,
            retry: cfg.retry.clone(),
            deadline,
            grace: Duration::from_secs(30).min(cfg.deadline / 10 + Duration::from_secs(1)),
            batch: 16,
            tls: smtp::TlsPolicy::new(cfg.tls, &cfg.tls_extra_roots)?,
            rate_per_site: cfg.rate_per_site,
            recorded: Some(recorded.clone()),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cancel = cfg.cancel.child_token();
        let engine = tokio::spawn(delivery::deliver_until(
            work,
            source,
            dcfg,
            tx,
            cancel.clone(),
        ));
        let mut progress = progress::Progress::new(
            cfg.progress,
            to_send,
            plan.iter().map(|(name, _, n)| (name.clone(), *n)).collect(),
        );
        let mut last_try: HashMap<usize, Outcome> = HashMap::new();
        let mut journal_error = None;
        let mut tick = tokio::time::interval(journal::SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Vec<Event> = Vec::new();
        loop {
            // Take everything that is ready, journal it in one write, then count it.
            let first = tokio::select! {
                ev = rx.recv() => ev,
                _ = tick.tick() => {
                    if journal.sync_pending()
                        && let Err(e) = journal.flush()
                    {
                        journal_error.get_or_insert(e);
                        cancel.cancel();
                    }
                    continue;
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < journal::SYNC_RECORDS {
                match rx.try_recv() {
                    Ok(ev) => batch.push(ev),
                    Err(_) => break,
                }
            }
            let mut offsets = Vec::with_capacity(batch.len());
            for ev in &batch {
                if let Event::Final { row, outcome } = ev {
                    let r = list.row(*row);
                    offsets.push(journal.append(&keys.key(&list, *row, &r), r.row, outcome));
                }
            }
            let mut offsets = offsets.into_iter();
            if let Err(e) = journal.flush() {
                // Without a journal a re-run could send twice: stop taking new work.
                journal_error.get_or_insert(e);
                cancel.cancel();
            }
            // Written to the OS: workers may now have the next messages accepted (on failure
            // the run is being cancelled; let the workers wind down).
            recorded.advance(offsets.len() as u64);
            for ev in batch.drain(..) {
                match ev {
                    Event::Final { row, outcome } => {
                        if outcome.status == Status::Delivered {
                            delivered_now += 1;
                        }
                        let was = last_try.remove(&row).is_some();
                        let site = site_of_row.get(row).copied().filter(|&s| s != u32::MAX);
                        progress.finished(outcome.status, was, site.map(|s| s as usize));
                        match offsets.next() {
                            Some(at) if journal_error.is_none() => {
                                outcomes.set_recorded(row, at, outcome)
                            }
                            _ => outcomes.set_local(row, outcome),
                        }
                    }
                    Event::Retrying { row, outcome } => {
                        let first = last_try.insert(row, outcome).is_none();
                        progress.retrying(first);
                    }
                    Event::Connected { .. } => connections += 1,
                }
            }
        }
        let _ = engine.await;
        progress.finish();
        interrupted = cancel.is_cancelled();
        // Rows the deadline (or an interruption) cut off: deferred, with the last attempt's
        // details if any. Not journaled as done: a re-run sends them.
        for i in 0..list.len() {
            if outcomes.is_pending(i) {
                let o = match last_try.remove(&i) {
                    Some(mut last) => {
                        last.status = Status::Deferred;
                        last
                    }
                    None if interrupted => {
                        let mut d = Outcome::local(
                            Status::Deferred,
                            Step::Interrupted,
                            "run interrupted before this recipient was sent",
                        );
                        d.enhanced = Some(EnhancedCode::new(4, 3, 2));
                        d
                    }
                    None => {
                        let mut d = Outcome::local(
                            Status::Deferred,
                            Step::Deadline,
                            "run deadline reached before this recipient was attempted",
                        );
                        d.enhanced = Some(EnhancedCode::new(4, 4, 7));
                        d
                    }
                };
                outcomes.set_local(i, o);
            }
        }
        // Even when the journal failed, every row still gets its result row: the error is
        // returned after the report is written.
        if let Err(e) = journal.sync() {
            journal_error.get_or_insert(e);
        }
        journal_failure = journal_error;
    }
    // Recorded outcomes are read back from the journal as the report is written, in input
    // order, so a list of millions of rows never holds its outcomes in memory.
    let reader = journal::JournalReader::open(&journal_path).ok();
    let outcome = |i: usize| {
        outcomes
            .get(i, reader.as_ref())
            .unwrap_or_else(|| Outcome::local(Status::Deferred, Step::Deadline, "not attempted"))
    };
    let results = (!cfg.dry_run).then_some(cfg.results.as_path());
    let summary = report::write_results(results, &list, &outcome, started.elapsed(), connections)
        .map_err(|source| RunError::Results {
        path: cfg.results.clone(),
        source,
    })?;
    let summary = Summary {
        delivered_now,
        ..summary
    };
    if let Some(e) = journal_failure {
        return Err(e.into());
    }
    Ok(RunReport {
        summary,
        plan,
        check,
        interrupted,
        reused,
        warnings: warnings.take(),
    })
}

/// Every row's final outcome. Big lists keep only an offset into the journal for recorded
/// outcomes (8 bytes per row; the report reads them back); lists up to
/// [`OutcomeStore::IN_MEMORY_ROWS`] rows keep the outcomes themselves, which is faster.
struct OutcomeStore {
    slots: Vec<u64>,
    locals: Vec<Outcome>,
    in_memory: bool,
}

impl OutcomeStore {
    const PENDING: u64 = u64::MAX;
    const DECIDED: u64 = u64::MAX - 1;
    const LOCAL: u64 = 1 << 63;
    /// Up to this many rows, outcomes stay in memory (≈ 300 bytes each).
    const IN_MEMORY_ROWS: usize = 100_000;

    fn new(rows: usize) -> Self {
        Self {
            slots: vec![Self::PENDING; rows],
            locals: Vec::new(),
            in_memory: rows <= Self::IN_MEMORY_ROWS,
        }
    }

    /// A journaled outcome: kept by value for small lists, by offset for big ones.
    fn set_recorded(&mut self, i: usize, offset: u64, o: Outcome) {
        if self.in_memory {
            self.set_local(i, o);
        } else {
            self.set_journal(i, offset);
        }
    }

    /// No outcome yet.
    fn is_pending(&self, i: usize) -> bool {
        self.slots[i] == Self::PENDING
    }

    /// Decided, to be stored shortly (keeps the row out of "pending").
    fn set_decided(&mut self, i: usize) {
        self.slots[i] = Self::DECIDED;
    }

    fn set_local(&mut self, i: usize, o: Outcome) {
        self.slots[i] = Self::LOCAL | self.locals.len() as u64;
        self.locals.push(o);
    }

    fn set_journal(&mut self, i: usize, offset: u64) {
        self.slots[i] = offset;
    }

    fn get(&self, i: usize, reader: Option<&journal::JournalReader>) -> Option<Outcome> {
        match self.slots[i] {
            Self::PENDING | Self::DECIDED => None,
            s if s & Self::LOCAL != 0 => self.locals.get((s & !Self::LOCAL) as usize).cloned(),
            offset => reader?.outcome_at(offset),
        }
    }
}

/// The plan's sites, with messages and estimated connections (rows that would be invalid
/// left out).
fn check_sites(
    plan: &[(String, Vec<String>, usize)],
    work: &[SiteWork],
    invalid: &std::collections::HashSet<usize>,
    cfg: &RunConfig,
) -> Vec<PlanSite> {
    plan.iter()
        .zip(work)
        .filter_map(|((name, hosts, _), w)| {
            let n = w.rows.iter().filter(|r| !invalid.contains(r)).count();
            (n > 0).then(|| {
                let workers = cfg.connections_per_site.max(1).min(n);
                let connections = workers.max(n.div_ceil(cfg.messages_per_connection.max(1)));
                PlanSite {
                    name: name.clone(),
                    hosts: hosts.clone(),
                    messages: n,
                    connections,
                }
            })
        })
        .collect()
}
