//! The `mailmerge` command: flags → validated [`RunConfig`] → library → exit code.
//!
//! Exit codes: 0 every recipient delivered, 1 some were not (see the results CSV),
//! 2 nothing could be done (unreadable input, template error, bad flag), 130/143 interrupted
//! by SIGINT/SIGTERM (the results CSV and the journal are written first).

// mimalloc: rendering and MIME building allocate a lot of small strings; measured ≈8 % more
// messages/s than the system allocator on the delivery benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};

use anyhow::{Context, Result, bail};
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use mailmerge::address::Address;
use mailmerge::config::FileConfig;
use mailmerge::delivery::RetryPolicy;
use mailmerge::delivery::retry::parse_duration;
use mailmerge::dkim::Signer;
use mailmerge::identity;
use mailmerge::preflight::{SenderCheckOptions, check_sender};
use mailmerge::progress::Mode;
use mailmerge::sandbox::Sandbox;
use mailmerge::smtp::Timeouts;
use mailmerge::{RunConfig, run};

#[derive(Parser, Debug)]
#[command(
    name = "mailmerge",
    version,
    about = "Batch mail merge with direct-to-MX delivery",
    long_about = "Renders one message per CSV row from a Handlebars template and delivers each \
                  straight to the recipient domain's MX hosts, writing one result row per \
                  recipient (delivered, bounced, deferred or invalid) with the exact SMTP reply."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size difference between variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Render and deliver every row of RECIPIENTS with TEMPLATE; write a results CSV.
    Run(RunArgs),
    /// Validate the list, render every message and resolve every domain; print the plan and
    /// send nothing. Exits 1 if any row could not be sent. Takes the same options as `run`.
    Check(RunArgs),
    /// Check the sender domain's DNS (SPF, DKIM, DMARC); print what to publish.
    CheckSender(CheckSenderArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// CSV file with a header row; one recipient per row.
    recipients: PathBuf,
    /// Template: header block, blank line, body (see README "Template format").
    template: PathBuf,
    /// Results CSV [default: <RECIPIENTS stem>.results.csv beside the input].
    #[arg(long, value_name = "PATH")]
    results: Option<PathBuf>,
    /// Use this DNS server (IP:PORT) instead of the system resolver (/etc/resolv.conf).
    #[arg(long, value_name = "IP:PORT")]
    dns: Option<SocketAddr>,
    /// TCP port used when connecting to MX hosts.
    #[arg(long, value_name = "PORT", default_value_t = 25)]
    smtp_port: u16,
    /// Name sent in EHLO [default: this host's FQDN; mailmerge.sandbox.test with --sandbox].
    #[arg(long, value_name = "NAME")]
    helo: Option<String>,
    /// Envelope sender (MAIL FROM) [default: the address in the rendered From header].
    #[arg(long, value_name = "ADDRESS")]
    from: Option<String>,
    /// Simultaneous connections at most per destination site (domains sharing MX hosts).
    #[arg(long, value_name = "N", default_value_t = 10)]
    connections_per_site: usize,
    /// Simultaneous connections at most in total.
    #[arg(long, value_name = "N", default_value_t = 200)]
    max_connections: usize,
    /// Messages sent over one connection before it is closed and a new one opened.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    messages_per_connection: usize,
    /// Column holding the recipient address.
    #[arg(long, value_name = "NAME", default_value = "email")]
    email_column: String,
    /// Send to repeated addresses too (default: first row only; others are `duplicate`).
    #[arg(long)]
    allow_duplicates: bool,
    /// Waits before the 2nd, 3rd, 4th… attempt after a transient failure (ms, s, m, h)
    /// [default: 1m,5m,15m; 1s with --sandbox].
    #[arg(long, value_name = "LIST")]
    retry: Option<String>,
    /// Wall-clock budget of the whole run; what is not delivered by then is `deferred`.
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    deadline: String,
    /// Bound every SMTP phase by this timeout (default: RFC 5321 §4.5.3.2 values, 30 s connect).
    #[arg(long, value_name = "DURATION")]
    smtp_timeout: Option<String>,
    /// TCP connect timeout per MX address (applied after --smtp-timeout).
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    connect_timeout: String,
    /// One phase's timeout, PHASE=DURATION (connect, greeting, command, mail, rcpt, data,
    /// data-block, data-end); may be repeated; applied last.
    #[arg(long = "timeout", value_name = "PHASE=DURATION")]
    timeouts: Vec<String>,
    /// STARTTLS: opportunistic (any certificate, plaintext fallback), required (verified
    /// certificate matching the MX name, else deferred) or disabled.
    #[arg(long, value_name = "MODE", default_value = "opportunistic")]
    tls: String,
    /// Messages at most per site and period, spaced evenly (e.g. 100/min, 5/s).
    #[arg(long, value_name = "N/PERIOD")]
    rate_per_site: Option<String>,
    /// DNS query timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    dns_timeout: String,
    /// Render, resolve and print the delivery plan without connecting to any MX (= `check`).
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run / check: write every rendered message to DIR as <row>-<address>.eml.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Send at most N messages (a canary); the rest stay `deferred` (step `limit`) and a
    /// re-run of the same command continues with the next ones.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Forget earlier runs of this job (empty the journal) and send to every row again.
    #[arg(long)]
    fresh: bool,
    /// The template changed since the journal was started (a fix during a campaign): go on
    /// with the journal instead of refusing; rows already delivered are not sent again.
    #[arg(long)]
    template_changed: bool,
    /// Run the whole job against an embedded loopback DNS server and SMTP receiver.
    #[arg(long)]
    sandbox: bool,
    /// Where --sandbox stores received messages.
    #[arg(long, value_name = "DIR", default_value = "sandbox-mail")]
    sandbox_dir: PathBuf,
    /// No progress output (errors still go to stderr).
    #[arg(long, short)]
    quiet: bool,
    #[command(flatten)]
    deliver: DeliverArgs,
}

/// Deliverability options of `run` (README "Getting delivered").
#[derive(Args, Debug)]
struct DeliverArgs {
    /// Config file of default options [default: ./mailmerge.toml if present].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// DKIM-sign every message with this PEM private key (RSA 2048+ or Ed25519).
    #[arg(long, value_name = "PEM")]
    dkim_key: Option<PathBuf>,
    /// DKIM selector: the key is published at <SELECTOR>._domainkey.<DOMAIN>.
    #[arg(long, value_name = "SELECTOR")]
    dkim_selector: Option<String>,
    /// DKIM signing domain (d=) [default: each message's From domain].
    #[arg(long, value_name = "DOMAIN")]
    dkim_domain: Option<String>,
    /// Add List-Unsubscribe with this URI (templated per row, e.g.
    /// https://acme.example/u/{{token}}); repeat for a mailto: URI. An https URI also adds
    /// List-Unsubscribe-Post: List-Unsubscribe=One-Click (RFC 8058).
    #[arg(long, value_name = "URI")]
    list_unsubscribe: Vec<String>,
}

#[derive(Args, Debug)]
struct CheckSenderArgs {
    /// The domain messages are sent from (the From domain).
    domain: String,
    /// Config file [default: ./mailmerge.toml if present] (uses its dns and dkim-* keys).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Use this DNS server (IP:PORT) instead of the system resolver.
    #[arg(long, value_name = "IP:PORT")]
    dns: Option<SocketAddr>,
    /// DNS query timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    dns_timeout: String,
    /// DKIM selector to look up at <SELECTOR>._domainkey.<DOMAIN>.
    #[arg(long, value_name = "SELECTOR")]
    dkim_selector: Option<String>,
    /// Private key (PEM) whose public half must be the one published.
    #[arg(long, value_name = "PEM")]
    dkim_key: Option<PathBuf>,
}

fn plan(args: &RunArgs) -> Result<RunConfig> {
    let mut cfg = RunConfig::new(args.recipients.clone(), args.template.clone());
    if let Some(r) = &args.results {
        cfg.results = r.clone();
    }
    cfg.list.email_column = args.email_column.clone();
    cfg.list.allow_duplicates = args.allow_duplicates;
    if let Some(f) = &args.from {
        cfg.message.envelope_from =
            Some(Address::parse(f).with_context(|| format!("--from {f:?}"))?);
    }
    cfg.dns.server = args.dns;
    cfg.dns.timeout = parse_duration(&args.dns_timeout).context("--dns-timeout")?;
    cfg.smtp_port = args.smtp_port;
    cfg.helo = match (&args.helo, args.sandbox) {
        (Some(h), _) => h.clone(),
        // The sandbox is a demo on loopback: the host's real name does not matter there.
        (None, true) => "mailmerge.sandbox.test".into(),
        (None, false) => identity::default_helo(),
    };
    if args.connections_per_site == 0
        || args.max_connections == 0
        || args.messages_per_connection == 0
    {
        bail!(
            "--connections-per-site, --max-connections and --messages-per-connection must be at least 1"
        );
    }
    cfg.connections_per_site = args.connections_per_site;
    cfg.max_connections = args.max_connections;
    cfg.messages_per_connection = args.messages_per_connection;
    let retry = match (&args.retry, args.sandbox) {
        (Some(r), _) => r.as_str(),
        (None, true) => "1s",
        (None, false) => "1m,5m,15m",
    };
    cfg.retry = RetryPolicy::parse(retry).context("--retry")?;
    cfg.deadline = parse_duration(&args.deadline).context("--deadline")?;
    if let Some(t) = &args.smtp_timeout {
        cfg.timeouts = Timeouts::uniform(parse_duration(t).context("--smtp-timeout")?);
    }
    cfg.timeouts.connect = parse_duration(&args.connect_timeout).context("--connect-timeout")?;
    for spec in &args.timeouts {
        let (phase, d) = spec
            .split_once('=')
            .with_context(|| format!("--timeout {spec:?}: use PHASE=DURATION"))?;
        let d = parse_duration(d).with_context(|| format!("--timeout {spec:?}"))?;
        cfg.timeouts
            .set(phase, d)
            .with_context(|| format!("--timeout {spec:?}"))?;
    }
    cfg.tls = args.tls.parse().context("--tls")?;
    if let Some(r) = &args.rate_per_site {
        cfg.rate_per_site = Some(r.parse().context("--rate-per-site")?);
    }
    cfg.dry_run = args.dry_run;
    if args.out.is_some() && !args.dry_run {
        bail!("--out writes rendered messages instead of sending: use it with --dry-run or check");
    }
    cfg.eml_out = args.out.clone();
    cfg.limit = args.limit;
    cfg.fresh = args.fresh;
    cfg.template_changed = args.template_changed;
    cfg.progress = if args.quiet { Mode::Quiet } else { Mode::Auto };
    apply_deliverability(&args.deliver, &mut cfg)?;
    Ok(cfg)
}

/// DKIM signer and List-Unsubscribe headers from `--dkim-*` / `--list-unsubscribe`.
fn apply_deliverability(args: &DeliverArgs, cfg: &mut RunConfig) -> Result<()> {
    // Checked here, not with clap's `requires`: one half may come from the config file.
    match (&args.dkim_key, &args.dkim_selector) {
        (Some(key), Some(selector)) => {
            cfg.message.dkim = Some(
                Signer::from_file(key, selector, args.dkim_domain.as_deref())
                    .context("--dkim-key")?,
            );
        }
        (Some(_), None) => bail!("--dkim-key needs --dkim-selector"),
        (None, Some(_)) => bail!("--dkim-selector needs --dkim-key"),
        (None, None) if args.dkim_domain.is_some() => bail!("--dkim-domain needs --dkim-key"),
        (None, None) => {}
    }
    if !args.list_unsubscribe.is_empty() {
        let uris: Vec<&str> = args
            .list_unsubscribe
            .iter()
            .map(|u| u.trim().trim_start_matches('<').trim_end_matches('>'))
            .collect();
        for u in &uris {
            let scheme = u.split(':').next().unwrap_or("").to_ascii_lowercase();
            if !u.contains(':') || !matches!(scheme.as_str(), "https" | "mailto") {
                bail!("--list-unsubscribe {u:?}: give an https: or mailto: URI (RFC 8058)");
            }
        }
        let value = uris
            .iter()
            .map(|u| format!("<{u}>"))
            .collect::<Vec<_>>()
            .join(", ");
        let headers = &mut cfg.message.extra_headers;
        headers.push(("List-Unsubscribe".into(), value));
        if uris
            .iter()
            .any(|u| u.to_ascii_lowercase().starts_with("https:"))
        {
            headers.push((
                "List-Unsubscribe-Post".into(),
                mailmerge::message::ONE_CLICK.into(),
            ));
        }
    }
    Ok(())
}

async fn check_sender_command(args: CheckSenderArgs) -> Result<ExitCode> {
    let mut opts = SenderCheckOptions::default();
    opts.dns.server = args.dns;
    opts.dns.timeout = parse_duration(&args.dns_timeout).context("--dns-timeout")?;
    opts.dkim_selector = args.dkim_selector.clone();
    match (&args.dkim_key, &args.dkim_selector) {
        (Some(key), Some(selector)) => {
            opts.dkim_key = Some(Signer::from_file(key, selector, None).context("--dkim-key")?);
        }
        (Some(_), None) => bail!("--dkim-key needs --dkim-selector"),
        _ => {}
    }
    let report = check_sender(&args.domain, &opts).await?;
    print!("{report}");
    Ok(if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Parses the command line with the config file's options added for every flag the command
/// line does not give (see `mailmerge::config`): flags > config file > defaults.
/// Returns the parsed command line and, when a config file supplied options, a note naming
/// the file and its keys (printed with any later option error).
fn parse_with_config(argv: Vec<std::ffi::OsString>) -> (Cli, Option<String>) {
    let first = Cli::command().get_matches_from(argv.clone());
    let Some((sub, sub_m)) = first.subcommand() else {
        return (
            Cli::from_arg_matches(&first).unwrap_or_else(|e| e.exit()),
            None,
        );
    };
    let explicit = sub_m
        .try_get_one::<PathBuf>("config")
        .ok()
        .flatten()
        .cloned();
    let cwd = std::env::current_dir().unwrap_or_default();
    let Some(path) = FileConfig::locate(explicit.as_deref(), &cwd) else {
        return (
            Cli::from_arg_matches(&first).unwrap_or_else(|e| e.exit()),
            None,
        );
    };
    let file = match FileConfig::load(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mailmerge: {e}");
            std::process::exit(2);
        }
    };
    let cmd = Cli::command();
    let Some(sub_cmd) = cmd.find_subcommand(sub) else {
        return (
            Cli::from_arg_matches(&first).unwrap_or_else(|e| e.exit()),
            None,
        );
    };
    let mut injected = Vec::new();
    let mut used = Vec::new();
    for opt in file.options() {
        let Some(arg) = sub_cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(opt.key.as_str()))
        else {
            continue; // a key for another subcommand
        };
        if sub_m.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
            continue; // the command line wins
        }
        used.push(opt.key.clone());
        injected.extend(opt.to_args().into_iter().map(std::ffi::OsString::from));
    }
    let at = argv
        .iter()
        .position(|a| a.to_str() == Some(sub))
        .map_or(argv.len(), |i| i + 1);
    let mut full = argv[..at].to_vec();
    full.extend(injected);
    full.extend_from_slice(&argv[at..]);
    let note = format!(
        "options {} came from config {}",
        used.join(", "),
        path.display()
    );
    match Cli::command()
        .try_get_matches_from(full)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => (cli, (!used.is_empty()).then_some(note)),
        Err(e) => {
            eprintln!("mailmerge: {note}");
            e.exit()
        }
    }
}

/// First SIGINT/SIGTERM: cancel (stop taking new work, finish in-flight, report). A second
/// one: exit at once; every outcome already written to the journal stays there.
fn watch_signals(cancel: mailmerge::CancellationToken) -> std::sync::Arc<AtomicU8> {
    let exit = std::sync::Arc::new(AtomicU8::new(0));
    let code = exit.clone();
    tokio::spawn(async move {
        let mut received = 0u32;
        loop {
            let Some(c) = next_signal().await else { return };
            received += 1;
            if received > 1 {
                eprintln!("mailmerge: interrupted again, exiting now");
                std::process::exit(i32::from(c));
            }
            code.store(c, Ordering::SeqCst);
            eprintln!(
                "mailmerge: interrupted: no new messages; finishing the ones in flight \
                 (interrupt again to exit now)"
            );
            cancel.cancel();
        }
    });
    exit
}

/// Waits for SIGINT (→ 130) or SIGTERM (→ 143).
#[cfg(unix)]
async fn next_signal() -> Option<u8> {
    use std::sync::OnceLock;
    use tokio::signal::unix::{Signal, SignalKind, signal};
    use tokio::sync::Mutex;
    static SIGNALS: OnceLock<Option<Mutex<(Signal, Signal)>>> = OnceLock::new();
    let signals = SIGNALS.get_or_init(|| {
        Some(Mutex::new((
            signal(SignalKind::interrupt()).ok()?,
            signal(SignalKind::terminate()).ok()?,
        )))
    });
    let mut guard = signals.as_ref()?.lock().await;
    let (int, term) = &mut *guard;
    tokio::select! {
        _ = int.recv() => Some(130),
        _ = term.recv() => Some(143),
    }
}

/// Waits for Ctrl-C (→ 130).
#[cfg(not(unix))]
async fn next_signal() -> Option<u8> {
    tokio::signal::ctrl_c().await.ok().map(|()| 130)
}

async fn run_command(args: RunArgs, check: bool) -> Result<ExitCode> {
    let mut args = args;
    args.dry_run |= check;
    let mut cfg = plan(&args)?;
    let signal_exit = (!cfg.dry_run).then(|| watch_signals(cfg.cancel.clone()));
    let _sandbox = if args.sandbox {
        let sb = Sandbox::start(&args.sandbox_dir)
            .await
            .context("starting the sandbox servers")?;
        cfg.dns.server = Some(sb.dns.addr());
        cfg.smtp_port = sb.receiver.addr().port();
        eprintln!(
            "sandbox: DNS on {}, SMTP receiver on {}, messages stored in {}/",
            sb.dns.addr(),
            sb.receiver.addr(),
            sb.mail_dir.display()
        );
        Some(sb)
    } else {
        None
    };
    let results = cfg.results.clone();
    let dry_run = cfg.dry_run;
    let report = match run(cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailmerge: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if dry_run {
        print!("{}", report.check);
        return Ok(if report.check.all_sendable() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    if report.reused > 0 {
        println!(
            "{} row(s) already delivered or bounced by an earlier run (journal): not sent again",
            report.reused
        );
    }
    print!("{}", report.summary);
    println!("results: {}", results.display());
    if report.interrupted {
        let code = signal_exit.map_or(0, |c| c.load(Ordering::SeqCst));
        eprintln!(
            "mailmerge: interrupted; unsent rows are `deferred`: run the same command again to send them"
        );
        // Cancelled without a signal: the journal could not be written (reported as an error).
        return Ok(ExitCode::from(if code == 0 { 1 } else { code }));
    }
    Ok(if report.summary.all_delivered() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let (cli, config_note) = parse_with_config(std::env::args_os().collect());
    // One process-wide rustls crypto provider, before anything builds a TLS configuration.
    mailmerge::smtp::tls::install_crypto_provider();
    let rt = match mailmerge::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailmerge: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run(args) => rt.block_on(run_command(args, false)),
        Command::Check(args) => rt.block_on(run_command(args, true)),
        Command::CheckSender(args) => rt.block_on(check_sender_command(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mailmerge: {e:#}");
            if let Some(note) = config_note {
                eprintln!("mailmerge: ({note})");
            }
            ExitCode::from(2)
        }
    }
}
