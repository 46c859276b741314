//! The pipeline, wired once: **prepare** (list, template, journal of earlier runs) → **triage**
//! (rows that cannot or need not be sent, suppressed addresses) → **route** (one MX lookup per
//! domain, rows grouped into sites and providers) → **shard** (with `--shard`, every row
//! placed in this process or another) → **sender** (what the sending identities remember:
//! suspensions, learnt limits, today's caps, for this process's receivers) → **send** (the delivery engine, every outcome journaled as it arrives) or **plan** (render
//! everything, connect nowhere) → **results** (results CSV, summary, new suppressions, and
//! what the run learnt about its receivers written back).
//!
//! Each stage is a file of its own and takes and returns values. The one thing several stages
//! write is the [`ledger::Ledger`], and only through its two verbs: settle a row (which counts
//! it) or mark it another shard's.

mod ledger;
mod plan;
mod prepare;
mod results;
mod route;
mod secure;
mod send;
mod sender;
pub mod shard;
mod source;
mod timings;
mod triage;

pub use timings::Timings;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::delivery::DeliveryOptions;
use crate::message::MessageOptions;
use crate::mx::DnsOptions;
use crate::recipients::ListOptions;
use crate::report::{Plan, Summary};
use crate::{journal, mx, progress, recipients, smtp, template};

/// Everything a run needs, validated.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The CSV list.
    pub recipients: PathBuf,
    /// The template file.
    pub template: PathBuf,
    /// Where the results CSV goes.
    pub results: PathBuf,
    /// Send, or only plan.
    pub mode: RunMode,
    /// CSV reading options.
    pub list: ListOptions,
    /// Message options (envelope sender, DKIM, extra headers).
    pub message: MessageOptions,
    /// DNS options.
    pub dns: DnsOptions,
    /// How to deliver (connections, retries, deadline, TLS, timeouts).
    pub delivery: DeliveryOptions,
    /// Roots trusted for verified TLS (`--tls required`, MTA-STS) and for fetching MTA-STS
    /// policies, besides the Mozilla roots: `--tls-ca`, loaded (a private or test CA).
    pub tls_extra_roots: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// Published TLS policies: whether to honor them, the DNSSEC trust anchor, the MTA-STS
    /// cache.
    pub transport: crate::tls_policy::TransportOptions,
    /// Progress display.
    pub progress: progress::Mode,
    /// Ignore (and empty) the journal of earlier runs: send to everyone again.
    pub fresh: bool,
    /// Send at most this many messages (a canary); the rest stay `deferred` (step `limit`).
    pub limit: Option<usize>,
    /// Go on with a journal written for another version of the template (a fix during a
    /// campaign) instead of refusing.
    pub template_changed: bool,
    /// Skip damaged journal records (their rows are sent again) instead of stopping.
    pub journal_repair: bool,
    /// Write results cells as they are, without defusing spreadsheet formulas.
    pub raw_csv: bool,
    /// The suppression list: skip suppressed rows, record hard bounces.
    pub suppress: crate::suppress::RunSuppression,
    /// `--shard I/N`: send and report only this shard's rows.
    pub shard: Option<shard::Shard>,
    /// The sender's memory (suspensions, learnt limits, daily counts: [`crate::sender`]);
    /// `None`: none (library default; the command line always gives one).
    pub state: Option<crate::store::Location>,
    /// The wall clock: days for caps, end times of suspensions (pinned in tests).
    pub clock: crate::clock::Clock,
    /// `--events`: where the JSON Lines event stream goes (none: not written).
    pub events: Option<crate::events::Target>,
}

/// What a run does once the rows are routed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RunMode {
    /// Deliver, journal and write the results CSV.
    #[default]
    Send,
    /// Render every message and print the plan; connect nowhere (`check`, `--dry-run`).
    Plan {
        /// Write each rendered message here as `<row>-<address>.eml`.
        eml_out: Option<PathBuf>,
    },
}

impl RunConfig {
    /// A configuration with defaults for everything but the files.
    pub fn new(recipients: PathBuf, template: PathBuf) -> Self {
        let results = default_results_path(&recipients);
        Self {
            recipients,
            template,
            results,
            mode: RunMode::Send,
            list: ListOptions::default(),
            message: MessageOptions::default(),
            dns: DnsOptions::default(),
            delivery: DeliveryOptions::default(),
            tls_extra_roots: Vec::new(),
            transport: Default::default(),
            progress: progress::Mode::Auto,
            fresh: false,
            limit: None,
            template_changed: false,
            journal_repair: false,
            raw_csv: false,
            suppress: Default::default(),
            shard: None,
            state: None,
            clock: crate::clock::Clock::default(),
            events: None,
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
    /// A published-policy lookup cannot be set up (e.g. an unreadable trust anchor).
    #[error("{0}")]
    TlsPolicy(String),
    /// The suppression list cannot be read or written.
    #[error(transparent)]
    Suppressions(#[from] crate::suppress::StoreError),
    /// The sender's memory cannot be read or written.
    #[error(transparent)]
    State(#[from] crate::sender::StateError),
    /// The event stream cannot be opened.
    #[error(transparent)]
    Events(#[from] crate::events::EventsError),
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
    /// Counts and timing (a plan-only run counts what the rows would get).
    pub summary: Summary,
    /// What the run planned: counts by status, sites, connections, problems.
    pub plan: Plan,
    /// The run was cancelled (SIGINT/SIGTERM, or the journal failed) before it finished.
    pub interrupted: bool,
    /// Sender-identity warnings (EHLO name, DMARC alignment), each also printed once.
    pub warnings: Vec<String>,
    /// Addresses this run added to the suppression list (hard bounces).
    pub newly_suppressed: usize,
    /// What the engine's events add to the results for the report's timeline.
    pub timeline: crate::events::Timeline,
    /// How long each stage took (`run --timings`).
    pub timings: Timings,
}

/// Runs the whole pipeline.
pub async fn run(cfg: RunConfig) -> Result<RunReport, RunError> {
    run_until(cfg, CancellationToken::new()).await
}

/// [`run`], stoppable: once `cancel` fires no new message starts, the ones in flight finish,
/// and the rest are reported `deferred` (a re-run sends them).
pub async fn run_until(cfg: RunConfig, cancel: CancellationToken) -> Result<RunReport, RunError> {
    let started = std::time::Instant::now();
    let mut timings = Timings::new(started);
    let warnings = Warnings::default();
    let campaign = prepare::prepare(&cfg, &warnings)?;
    timings.lap("prepare");
    let suppressions = open_suppressions(&cfg).await?;
    let screen = triage::Screen::new(&cfg, suppressions.as_ref());
    let senders = sender::open(&cfg).await?;
    timings.lap("open stores");
    // MX lookups start as triage names each domain to send to.
    let (found, lookups) = route::Lookups::start(&cfg)?;
    let triage::Triaged {
        mut ledger,
        domains,
    } = triage::triage(&cfg, &campaign, &screen, found).await?;
    timings.lap("triage");
    let mut routed = route::route(&cfg, &campaign, &ledger, (domains, lookups)).await?;
    timings.lap("route (DNS)");
    if let Some(s) = cfg.shard {
        routed = shard::select(s, &campaign, &mut ledger, routed);
    }
    let remembered = sender::recall(&cfg, senders, &mut routed).await?;
    timings.lap("recall");
    let provider_of = std::mem::take(&mut routed.provider_of);
    let tls_notes = std::mem::take(&mut routed.tls_notes);
    let built_keys = (cfg.mode == RunMode::Send).then(Arc::default);
    let source = source::message_source(&cfg, &campaign, &warnings, built_keys.clone());
    let target = cfg.events.as_ref().filter(|_| cfg.mode == RunMode::Send);
    let mut events = crate::events::EventStream::open(target, &campaign.list, &provider_of)?;
    let mut sent = match &cfg.mode {
        RunMode::Plan { eml_out } => {
            let out = eml_out.as_deref();
            plan::plan(&cfg, &campaign, out, &mut ledger, routed, source).await?
        }
        RunMode::Send => {
            let on_event = &mut |ev: &_| events.event(ev);
            let run = (
                routed,
                (source, built_keys.unwrap_or_default()),
                &remembered,
            );
            send::send(&cfg, &campaign, &mut ledger, run, cancel, on_event).await?
        }
    };
    timings.lap(if cfg.mode == RunMode::Send {
        "send"
    } else {
        "plan"
    });
    timings.connected_at(sent.first_connection);
    let inputs = results::Inputs {
        connections: sent.connections,
        provider_of: &provider_of,
        started,
        record: sent.journal_error.is_none(),
    };
    let (summary, bounced) = results::write(&cfg, &campaign, &ledger, inputs)?;
    let list = suppressions.as_deref();
    let newly_suppressed = results::record(&cfg, &campaign, list, &bounced).await?;
    if cfg.mode == RunMode::Send {
        remembered.settle(&cfg, &sent).await?;
    }
    timings.lap("results");
    if let Some(e) = sent.journal_error.take() {
        return Err(e.into());
    }
    let plan = Plan {
        tls_notes: tls_notes.clone(),
        sender_notes: remembered.notes.clone(),
        ..ledger.plan(&cfg.recipients)
    };
    let summary = Summary {
        tls_notes,
        sender_notes: remembered.notes,
        ended_at: cfg.clock.unix(),
        ..summary
    };
    let ends = (&warnings, newly_suppressed, timings);
    Ok(report(sent, plan, summary, events, ends))
}

/// The run's report: what sending (or planning) produced, closed with the event stream's
/// summary line.
fn report(
    sent: send::Sent,
    plan: Plan,
    summary: Summary,
    events: crate::events::EventStream,
    (warnings, newly_suppressed, timings): (&Warnings, usize, Timings),
) -> RunReport {
    let summary = Summary {
        delivered_now: sent.delivered_now,
        dialect_fallbacks: sent.dialect_fallbacks,
        providers: sent.providers,
        ..summary
    };
    let (timeline, events_error) = events.finish(&summary, sent.interrupted);
    if let Some(e) = events_error {
        warnings.add(e.to_string());
    }
    RunReport {
        summary,
        plan: Plan {
            sites: sent.sites,
            to_send: sent.to_send,
            ..plan
        },
        interrupted: sent.interrupted,
        warnings: warnings.take(),
        newly_suppressed,
        timeline,
        timings,
    }
}

/// The suppression list the run reads and adds to, if it has one.
async fn open_suppressions(
    cfg: &RunConfig,
) -> Result<Option<Arc<dyn crate::suppress::SuppressionStore>>, RunError> {
    let Some(location) = &cfg.suppress.store else {
        return Ok(None);
    };
    Ok(Some(crate::suppress::open(location).await?))
}

/// The outcome of a row that was never tried: the deadline came first, or it is a plan.
fn not_attempted() -> crate::outcome::Outcome {
    use crate::outcome::{Outcome, Status, Step};
    Outcome::local(Status::Deferred, Step::Deadline, "not attempted")
}

/// Distinct warnings of a run: each is printed to stderr the first time it occurs.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

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

/// `list.csv:3: problem` from a row error or render outcome that starts with `line N: `.
fn problem(path: &std::path::Path, text: &str) -> String {
    match text.strip_prefix("line ") {
        Some(rest) => format!("{}:{rest}", path.display()),
        None => format!("{}: {text}", path.display()),
    }
}
