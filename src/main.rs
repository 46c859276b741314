//! The `mailmerge` command: flags → validated [`RunConfig`] → library → exit code.
//!
//! Exit codes: 0 every recipient delivered, 1 some were not (see the results CSV),
//! 2 nothing could be done (unreadable input, template error, bad flag).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Name sent in EHLO [default: this machine's host name].
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
    /// DNS query timeout.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    dns_timeout: String,
    /// Render, resolve and print the delivery plan without connecting to any MX.
    #[arg(long)]
    dry_run: bool,
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
    cfg.helo = args.helo.clone().unwrap_or_else(identity::default_helo);
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
    cfg.dry_run = args.dry_run;
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

async fn run_command(args: RunArgs) -> Result<ExitCode> {
    let mut cfg = plan(&args)?;
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
        println!("delivery plan (nothing sent):");
        for (site, hosts, n) in &report.plan {
            println!("  site {site}: {n} message(s) via {}", hosts.join(", "));
        }
        for o in report
            .outcomes
            .iter()
            .filter(|o| o.step != mailmerge::delivery::Step::Deadline)
        {
            if o.status != mailmerge::delivery::Status::Deferred || o.code.is_some() {
                println!(
                    "  {}: {} {}",
                    o.status.as_str(),
                    o.code.map(|c| c.to_string()).unwrap_or_default(),
                    o.response
                );
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", report.summary);
    println!("results: {}", results.display());
    Ok(if report.summary.all_delivered() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let (cli, config_note) = parse_with_config(std::env::args_os().collect());
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailmerge: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run(args) => rt.block_on(run_command(args)),
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
