//! The command line as typed: every flag with its help text, value type and default. Values
//! are parsed into their types here, at the edge (durations, TLS mode, rates, non-zero
//! counts), so a bad value is refused before anything runs. Delivery flags are defined once,
//! in [`DeliveryOptions`]; the config file sets defaults for these same flags
//! ([`super::config_file`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueHint};
use clap_complete::Shell;

use mailmerge::delivery::DeliveryOptions;
use mailmerge::run::shard::ShardSpec;
use mailmerge::smtp::Timeouts;
use mailmerge::units::parse_duration;

/// The whole command line.
#[derive(Parser, Debug)]
#[command(
    name = "mailmerge",
    version,
    about = "Batch mail merge with direct-to-MX delivery",
    long_about = "Renders one message per CSV row from a Handlebars template and delivers each \
                  straight to the recipient domain's MX hosts, writing one result row per \
                  recipient (delivered, bounced, deferred or invalid) with the exact SMTP reply."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Render and deliver every row of RECIPIENTS with TEMPLATE; write a results CSV.
    Run(RunArgs),
    /// Validate the list, render every message and resolve every domain; print the plan and
    /// send nothing. Exits 1 if any row could not be sent. Takes the same options as `run`.
    Check(RunArgs),
    /// Check the sender domain's DNS (SPF, DKIM, DMARC); print what to publish.
    CheckSender(CheckSenderArgs),
    /// Manage the suppression list: addresses no campaign sends to (docs/list-hygiene.md).
    Suppress(super::hygiene::SuppressArgs),
    /// Read late bounces and complaints (Maildir folders, mbox or .eml files, an IMAP
    /// mailbox); mark their rows bounced in the campaign's results CSV and suppress the
    /// addresses. --dry-run only says what it would do.
    Bounces(super::bounces::BouncesArgs),
    /// What is remembered per provider and source IP (learnt limits, suspensions, today's
    /// counts, warm-up day); clear an entry with --clear.
    Senders(super::senders::SendersArgs),
    /// Join the results of `run --shard 0/N` … `N-1/N` into one results CSV in the list's
    /// order. Exits 2, naming the rows, unless every row of LIST appears exactly once, with
    /// LIST's address and values, in LIST's order within each input.
    MergeResults(MergeArgs),
    /// Write an HTML report of a results CSV (or of a sharded campaign's results): totals,
    /// providers, domains, why not delivered, a timeline, TLS. One self-contained file.
    Report(ReportArgs),
    /// Write the man pages or print shell completions (generated from these definitions).
    Generate(GenerateArgs),
}

/// `run` and `check`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// CSV file with a header row; one recipient per row.
    #[arg(value_hint = ValueHint::FilePath)]
    pub recipients: PathBuf,
    /// Template: header block, blank line, body (see docs/templates.md).
    #[arg(value_hint = ValueHint::FilePath)]
    pub template: PathBuf,
    /// Results CSV [default: <RECIPIENTS stem>.results.csv beside the input].
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub results: Option<PathBuf>,
    /// Use this DNS server (IP:PORT) instead of the system resolver (/etc/resolv.conf).
    #[arg(long, value_name = "IP:PORT")]
    pub dns: Option<SocketAddr>,
    /// DNS query timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub dns_timeout: Duration,
    /// For domains under public names, never connect to MX addresses in private, loopback,
    /// link-local or shared ranges (a domain left with none bounces, 5.4.4).
    #[arg(long)]
    pub no_private_mx: bool,
    /// Envelope sender (MAIL FROM) [default: the address in the rendered From header].
    #[arg(long, value_name = "ADDRESS")]
    pub from: Option<String>,
    /// Column holding the recipient address.
    #[arg(long, value_name = "NAME", default_value = "email")]
    pub email_column: String,
    /// Send to repeated addresses too (default: first row only; others are `duplicate`).
    #[arg(long)]
    pub allow_duplicates: bool,
    /// Largest CSV field accepted (bytes, or with K, M, G); a row with a longer one is
    /// `invalid`.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = parse_size)]
    pub max_field_size: usize,
    /// How to deliver.
    #[command(flatten)]
    pub delivery: DeliveryOptions,
    /// SMTP timeouts.
    #[command(flatten)]
    pub timeouts: TimeoutArgs,
    /// Published TLS policies (MTA-STS, DANE) and trusted roots.
    #[command(flatten)]
    pub transport: mailmerge::tls_policy::TransportOptions,
    /// Folder that `Attachment:` files are read from; a value naming anything outside it
    /// (absolute, `..`, a symlink out) makes the row invalid [default: the template's folder].
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub attachments_dir: Option<PathBuf>,
    /// Largest message built, attachments included (bytes, or with K, M, G); a row whose
    /// message is larger is `invalid`.
    #[arg(long, value_name = "SIZE", default_value = "25M", value_parser = parse_size)]
    pub max_message_size: usize,
    /// Render, resolve and print the delivery plan without connecting to any MX (= `check`).
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run / check: write every rendered message to DIR as <row>-<address>.eml.
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub out: Option<PathBuf>,
    /// Send at most N messages (a canary); the rest stay `deferred` (step `limit`) and a
    /// re-run of the same command continues with the next ones.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Forget earlier runs of this job (empty the journal) and send to every row again.
    #[arg(long)]
    pub fresh: bool,
    /// The template changed since the journal was started (a fix during a campaign): go on
    /// with the journal instead of refusing; rows already delivered are not sent again.
    #[arg(long)]
    pub template_changed: bool,
    /// A damaged journal record stops the run (exit 2); with this flag damaged records are
    /// skipped and their rows sent again.
    #[arg(long)]
    pub journal_repair: bool,
    /// Leave out the `Received:` trace header that records the submission (list file, HELO
    /// name, run id and time) at the top of every message.
    #[arg(long)]
    pub no_received_header: bool,
    /// Write results cells exactly as they are. By default a cell that a spreadsheet would run
    /// as a formula (starting with =, +, -, @, tab or CR) gets a leading apostrophe.
    #[arg(long)]
    pub raw_csv: bool,
    /// Send (or with check, plan) only shard I of N: the rows whose destination site hashes to
    /// I, so each destination stays in one shard. `auto/N` takes I from JOB_COMPLETION_INDEX
    /// (Kubernetes Indexed Jobs). Results go to <RECIPIENTS stem>.results.shard-I-of-N.csv
    /// unless --results is given; join them with merge-results (docs/scaling.md).
    #[arg(long, value_name = "I/N", value_parser = ShardSpec::parse)]
    pub shard: Option<ShardSpec>,
    /// When the run ends, write an HTML report of its results (docs/results.md#the-html-report)
    /// to PATH [default: <results stem>.html beside the results; --sandbox writes it anyway].
    #[arg(long, value_name = "PATH", num_args = 0..=1, value_hint = ValueHint::FilePath)]
    pub report: Option<Option<PathBuf>>,
    /// Write the run's events as JSON Lines to PATH (`-`: standard output, and the summary
    /// goes to standard error): every attempt's outcome, provider state changes, a summary.
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub events: Option<PathBuf>,
    /// At the end, print to standard error how long each stage took and when the first SMTP
    /// session opened (where start-up time goes).
    #[arg(long)]
    pub timings: bool,
    /// Run the whole job against an embedded loopback DNS server and SMTP receiver.
    #[arg(long)]
    pub sandbox: bool,
    /// Where --sandbox stores received messages.
    #[arg(long, value_name = "DIR", default_value = "sandbox-mail", value_hint = ValueHint::DirPath)]
    pub sandbox_dir: PathBuf,
    /// No progress output (errors still go to stderr).
    #[arg(long, short)]
    pub quiet: bool,
    /// Deliverability options.
    #[command(flatten)]
    pub deliver: DeliverArgs,
    /// Suppression list and VERP return path (docs/list-hygiene.md).
    #[command(flatten)]
    pub suppress: mailmerge::suppress::options::SuppressOptions,
    /// The sender's memory (docs/providers.md).
    #[command(flatten)]
    pub state: mailmerge::sender::options::StateOptions,
}

/// The three ways to set SMTP timeouts, applied in this order.
#[derive(Args, Debug)]
pub struct TimeoutArgs {
    /// Bound every SMTP phase by this timeout [default: RFC 5321 §4.5.3.2 values, 30 s connect].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub smtp_timeout: Option<Duration>,
    /// TCP connect timeout per MX address (applied after --smtp-timeout) [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,
    /// One phase's timeout, PHASE=DURATION (connect, greeting, command, mail, rcpt, data,
    /// data-block, data-end); may be repeated; applied last.
    #[arg(long = "timeout", value_name = "PHASE=DURATION", value_parser = phase_timeout)]
    pub timeout: Vec<(String, Duration)>,
}

impl TimeoutArgs {
    /// The per-phase timeouts these flags give.
    pub fn timeouts(&self) -> Timeouts {
        let mut t = self
            .smtp_timeout
            .map_or_else(Timeouts::default, Timeouts::uniform);
        if let Some(d) = self.connect_timeout {
            t.connect = d;
        }
        for (phase, d) in &self.timeout {
            // Phase names were checked when the flag was parsed.
            let _ = t.set(phase, *d);
        }
        t
    }
}

/// Parses a size: bytes, or a number with K, M or G (binary multiples; a trailing B or iB is
/// allowed): `25M`, `1MiB`, `500000`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (num, shift) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 10),
        Some((i, 'M' | 'm')) => (&t[..i], 20),
        Some((i, 'G' | 'g')) => (&t[..i], 30),
        _ => (t, 0),
    };
    num.trim()
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!("invalid size {s:?} (use bytes or a number with K, M or G, e.g. 25M)")
        })
}

/// Parses `PHASE=DURATION`, checking the phase name.
fn phase_timeout(spec: &str) -> Result<(String, Duration), String> {
    let (phase, d) = spec
        .split_once('=')
        .ok_or_else(|| format!("{spec:?}: use PHASE=DURATION"))?;
    let d = parse_duration(d).map_err(|e| e.to_string())?;
    Timeouts::default()
        .set(phase, d)
        .map_err(|e| e.to_string())?;
    Ok((phase.to_string(), d))
}

/// Deliverability options of `run` (docs/deliverability.md).
#[derive(Args, Debug)]
pub struct DeliverArgs {
    /// Config file of default options [default: ./mailmerge.toml if present].
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// DKIM-sign every message with this PEM private key (RSA 2048+ or Ed25519).
    #[arg(long, value_name = "PEM", value_hint = ValueHint::FilePath)]
    pub dkim_key: Option<PathBuf>,
    /// DKIM selector: the key is published at <SELECTOR>._domainkey.<DOMAIN>.
    #[arg(long, value_name = "SELECTOR")]
    pub dkim_selector: Option<String>,
    /// DKIM signing domain (d=) [default: each message's From domain].
    #[arg(long, value_name = "DOMAIN")]
    pub dkim_domain: Option<String>,
    /// Add List-Unsubscribe with this URI (templated per row, e.g.
    /// https://acme.example/u/{{token}}); repeat for a mailto: URI. An https URI also adds
    /// List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058).
    #[arg(long, value_name = "URI")]
    pub list_unsubscribe: Vec<String>,
}

/// `check-sender`.
#[derive(Args, Debug)]
pub struct CheckSenderArgs {
    /// The domain messages are sent from (the From domain).
    pub domain: String,
    /// Config file [default: ./mailmerge.toml if present] (uses its dns and dkim-* keys).
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// Use this DNS server (IP:PORT) instead of the system resolver.
    #[arg(long, value_name = "IP:PORT")]
    pub dns: Option<SocketAddr>,
    /// DNS query timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub dns_timeout: Duration,
    /// DKIM selector to look up at <SELECTOR>._domainkey.<DOMAIN>.
    #[arg(long, value_name = "SELECTOR")]
    pub dkim_selector: Option<String>,
    /// Private key (PEM) whose public half must be the one published.
    #[arg(long, value_name = "PEM", value_hint = ValueHint::FilePath)]
    pub dkim_key: Option<PathBuf>,
}

/// `merge-results`.
#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shards' results CSVs (any order).
    #[arg(required = true, value_hint = ValueHint::FilePath)]
    pub results: Vec<PathBuf>,
    /// The list the shards were run on (gives the rows, their order, and the address and
    /// values each result row must have).
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub list: PathBuf,
    /// The merged results CSV.
    #[arg(long, short, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub output: PathBuf,
    /// Column of LIST holding the recipient address (as given to `run`).
    #[arg(long, value_name = "NAME", default_value = "email")]
    pub email_column: String,
}

/// `report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The results CSV; or the results of every shard of one campaign, added up.
    #[arg(required = true, value_hint = ValueHint::FilePath)]
    pub results: Vec<PathBuf>,
    /// The HTML file [default: <RESULTS stem>.html beside it; needed with several files].
    #[arg(long, short, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub output: Option<PathBuf>,
    /// The run's event stream (`run --events FILE`; one per shard): the timeline then marks
    /// every throttling reply and provider state change, not only what the results show.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub events: Vec<PathBuf>,
    /// Domains (and providers or sites) listed at most in the tables: those with the most rows.
    #[arg(long, value_name = "N", default_value_t = 500)]
    pub max_domains: usize,
}

/// `generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What to generate.
    #[command(subcommand)]
    pub what: Generate,
}

/// Generated documentation.
#[derive(Subcommand, Debug)]
pub enum Generate {
    /// Write mailmerge.1 and one page per subcommand (mailmerge-run.1, …) into DIR.
    Man {
        /// Folder for the pages.
        #[arg(value_hint = ValueHint::DirPath)]
        dir: PathBuf,
    },
    /// Print the completion script for SHELL on stdout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: Shell,
    },
}
