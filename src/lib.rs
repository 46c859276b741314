//! mailmerge: batch mail merge with direct-to-MX delivery.
//!
//! The pipeline, one module per stage, data flowing one way:
//! [`recipients`] (CSV rows) → [`template`] (rendered parts) → [`message`] (envelope + bytes)
//! → [`mx`] (one lookup per domain, grouped into sites) → [`delivery`] (per-site pools over
//! our [`smtp`] client) → [`report`] (results CSV and summary), with [`progress`] alongside.
//! [`run`] wires it once; `main.rs` only turns flags into a [`RunConfig`].

pub mod address;
pub mod config;
pub mod delivery;
pub mod dkim;
pub mod identity;
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

use delivery::{
    DeliveryConfig, Event, MessageSource, Outcome, RetryPolicy, SiteWork, Status, Step,
};
use message::MessageOptions;
use mx::{DnsOptions, MxResolver, Route};
use recipients::{ListOptions, RecipientList};
use report::Summary;
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
    /// Resolve and render only; print the plan.
    pub dry_run: bool,
    /// Progress display.
    pub progress: progress::Mode,
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
            dry_run: false,
            progress: progress::Mode::Auto,
        }
    }
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
    /// The per-row outcomes, in input order.
    pub outcomes: Vec<Outcome>,
    /// Delivery plan (sites and their row counts), for `--dry-run`.
    pub plan: Vec<(String, Vec<String>, usize)>,
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

    let mut outcomes: Vec<Option<Outcome>> = vec![None; list.rows.len()];
    for (i, row) in list.rows.iter().enumerate() {
        if let Err(e) = &row.status {
            let status = if e.status() == "duplicate" {
                Status::Duplicate
            } else {
                Status::Invalid
            };
            outcomes[i] = Some(Outcome::local(status, Step::Input, e.to_string()));
        }
    }
    let domains: BTreeSet<String> = list
        .rows
        .iter()
        .filter_map(|r| r.status.as_ref().ok().map(|a| a.domain().to_string()))
        .collect();
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
    for (i, row) in list.rows.iter().enumerate() {
        let Ok(addr) = &row.status else { continue };
        let route = routes.get(addr.domain());
        match route.and_then(dns_outcome) {
            Some(o) => outcomes[i] = Some(o),
            None => match site_of.get(addr.domain()) {
                Some(&s) => work[s].rows.push(i),
                None => {
                    outcomes[i] = Some(Outcome::local(
                        Status::Deferred,
                        Step::Dns,
                        "no DNS answer for the domain",
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
        .collect();

    let source: MessageSource = {
        let list = list.clone();
        let template = template.clone();
        let opts = cfg.message.clone();
        let warnings = warnings.clone();
        Arc::new(move |i: usize| {
            let row = &list.rows[i];
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
            let built = message::build(rendered, addr, &opts).map_err(|e| {
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
    if cfg.dry_run {
        // Render every message (catches per-row problems) without connecting anywhere.
        let rows: Vec<usize> = work.iter().flat_map(|w| w.rows.iter().copied()).collect();
        let src = source.clone();
        let results = tokio::task::spawn_blocking(move || {
            use rayon::prelude::*;
            rows.par_iter()
                .map(|&r| (r, src(r).err()))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for (r, err) in results {
            if let Some(o) = err {
                outcomes[r] = Some(*o);
            }
        }
    } else {
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
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let engine = tokio::spawn(delivery::deliver(work, source, dcfg, tx));
        let mut progress = progress::Progress::new(cfg.progress, to_send);
        let mut last_try: HashMap<usize, Outcome> = HashMap::new();
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Final { row, outcome } => {
                    let was = last_try.remove(&row).is_some();
                    progress.finished(outcome.status, was);
                    outcomes[row] = Some(outcome);
                }
                Event::Retrying { row, outcome } => {
                    let first = last_try.insert(row, outcome).is_none();
                    progress.retrying(first);
                }
                Event::Connected { .. } => connections += 1,
            }
        }
        let _ = engine.await;
        progress.finish();
        // Rows the deadline cut off: deferred, with the last attempt's details if any.
        for (i, o) in outcomes.iter_mut().enumerate() {
            if o.is_none() {
                *o = Some(match last_try.remove(&i) {
                    Some(mut last) => {
                        last.status = Status::Deferred;
                        last
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
                });
            }
        }
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Outcome::local(Status::Deferred, Step::Deadline, "not attempted"))
        })
        .collect();
    let summary = Summary::new(&list, &outcomes, started.elapsed(), connections);
    if !cfg.dry_run {
        report::write_results(&cfg.results, &list, &outcomes).map_err(|source| {
            RunError::Results {
                path: cfg.results.clone(),
                source,
            }
        })?;
    }
    Ok(RunReport {
        summary,
        outcomes,
        plan,
        warnings: warnings.take(),
    })
}
