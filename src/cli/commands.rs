//! The subcommands: each calls the library and maps its outcome to an exit code (0 all
//! delivered, 1 some not, 2 nothing could be done, 130/143 interrupted).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use clap::CommandFactory;

use mailmerge::campaign_report::{self, ReportOptions};
use mailmerge::dkim::Signer;
use mailmerge::events::{Target, Timeline};
use mailmerge::merge;
use mailmerge::preflight::{SenderCheckOptions, check_sender};
use mailmerge::recipients::{ListOptions, RecipientList};
use mailmerge::sandbox::Sandbox;
use mailmerge::{CancellationToken, RunMode, run_until};

use super::args::{CheckSenderArgs, Cli, Generate, MergeArgs, ReportArgs, RunArgs};
use super::{settings, signals};

/// `run` and `check` (`plan_only`).
pub async fn run(args: RunArgs, plan_only: bool) -> Result<ExitCode> {
    let sandbox = args.sandbox;
    let sandbox_dir = args.sandbox_dir.clone();
    let report_flag = args.report.clone();
    let timings = args.timings;
    let mut cfg = settings::run_config(args, plan_only)?;
    let cancel = CancellationToken::new();
    let sending = cfg.mode == RunMode::Send;
    if report_flag.is_some() && !sending {
        bail!("--report reports what a run delivered: it does nothing with --dry-run or check");
    }
    // The sandbox is where a newcomer starts: it shows the report too.
    let report_path = match report_flag {
        Some(Some(path)) => Some(path),
        Some(None) => Some(campaign_report::default_path(&cfg.results)),
        None => sandbox.then(|| campaign_report::default_path(&cfg.results)),
    };
    // With `--events -` standard output is the event stream's alone.
    let mut out: Box<dyn Write> = if cfg.events == Some(Target::Stdout) {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let signal_exit = sending.then(|| signals::watch(cancel.clone()));
    let _sandbox = if sandbox {
        let sb = Sandbox::start(&sandbox_dir)
            .await
            .context("starting the sandbox servers")?;
        cfg.dns.server = Some(sb.dns.addr());
        cfg.delivery.smtp_port = sb.receiver.addr().port();
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
    let mut report = match run_until(cfg, cancel).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailmerge: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if timings {
        eprint!("{}", report.timings);
    }
    if sandbox {
        explain_sandbox_notes(&mut report.summary.tls_notes);
        explain_sandbox_notes(&mut report.plan.tls_notes);
    }
    if !sending {
        write!(out, "{}", report.plan)?;
        return Ok(exit(report.plan.all_sendable()));
    }
    print_summary(&mut out, &report, &results)?;
    if let Some(path) = report_path {
        write_run_report(&mut out, &results, &report.timeline, &path)?;
    }
    if report.interrupted {
        let code = signal_exit.map_or(0, |c| c.load(Ordering::SeqCst));
        eprintln!(
            "mailmerge: interrupted; unsent rows are `deferred`: run the same command again to send them"
        );
        // Cancelled without a signal: the journal could not be written (reported as an error).
        return Ok(ExitCode::from(if code == 0 { 1 } else { code }));
    }
    Ok(exit(report.summary.all_delivered()))
}

/// What a sending run prints at the end (standard output, or standard error when standard
/// output carries the event stream).
fn print_summary(
    out: &mut dyn Write,
    report: &mailmerge::RunReport,
    results: &Path,
) -> std::io::Result<()> {
    if report.plan.already_done > 0 {
        writeln!(
            out,
            "{} row(s) already delivered or bounced by an earlier run (journal): not sent again",
            report.plan.already_done
        )?;
    }
    write!(out, "{}", report.summary)?;
    if report.newly_suppressed > 0 {
        writeln!(
            out,
            "{} address(es) added to the suppression list (hard bounces)",
            report.newly_suppressed
        )?;
    }
    writeln!(out, "results: {}", results.display())
}

/// `run --report`: the HTML report of the results just written, the run's events marking its
/// timeline. A report that cannot be written is a warning: the run itself is done.
fn write_run_report(
    out: &mut dyn Write,
    results: &Path,
    timeline: &Timeline,
    path: &Path,
) -> std::io::Result<()> {
    let inputs = [results.to_path_buf()];
    match campaign_report::write_report(&inputs, Some(timeline), path, &ReportOptions::default()) {
        Ok(w) => writeln!(out, "report: {} (open it in a browser)", w.path.display()),
        Err(e) => {
            eprintln!("mailmerge: warning: no report: {e}");
            Ok(())
        }
    }
}

/// The sandbox's DNS server does not sign its zones, so DANE is never checked there: say that
/// this is expected instead of passing on the validator's error.
fn explain_sandbox_notes(notes: &mut [String]) {
    for note in notes.iter_mut() {
        if note.starts_with("DANE not checked") {
            *note = "DANE not checked: the sandbox's DNS server does not sign its zones \
                     (DNSSEC), as expected; a real run checks DANE wherever its DNS path \
                     validates DNSSEC"
                .into();
        }
    }
}

/// `report`: 0 written, 2 when the results (or events) cannot be read or the file written.
pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let output = match (&args.output, &args.results[..]) {
        (Some(o), _) => o.clone(),
        (None, [one]) => campaign_report::default_path(one),
        (None, _) => bail!("several results files: name the report with --output"),
    };
    let mut timeline: Option<Timeline> = None;
    for path in &args.events {
        let t = campaign_report::read_events(path)?;
        if t.skipped_lines > 0 {
            eprintln!(
                "mailmerge: {}: {} line(s) that are not mailmerge events skipped",
                path.display(),
                t.skipped_lines
            );
        }
        timeline.get_or_insert_with(Timeline::default).merge(t);
    }
    let opts = ReportOptions {
        max_domains: args.max_domains.max(1),
        ..ReportOptions::default()
    };
    match campaign_report::write_report(&args.results, timeline.as_ref(), &output, &opts) {
        Ok(w) => {
            println!(
                "{} rows reported in {} ({} KB)",
                w.rows,
                w.path.display(),
                w.bytes.div_ceil(1024)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("mailmerge: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `check-sender`.
pub async fn check_sender_command(args: CheckSenderArgs) -> Result<ExitCode> {
    let mut opts = SenderCheckOptions::default();
    opts.dns.server = args.dns;
    opts.dns.timeout = args.dns_timeout;
    opts.dkim_key = match (&args.dkim_key, &args.dkim_selector) {
        (Some(key), Some(selector)) => {
            Some(Signer::from_file(key, selector, None).context("--dkim-key")?)
        }
        (Some(_), None) => bail!("--dkim-key needs --dkim-selector"),
        _ => None,
    };
    opts.dkim_selector = args.dkim_selector;
    let report = check_sender(&args.domain, &opts).await?;
    print!("{report}");
    Ok(exit(report.all_ok()))
}

/// `merge-results`: 0 merged, 2 when the inputs do not match the list (each row exactly once,
/// as the list has it, in list order) or cannot be read.
pub fn merge_results(args: MergeArgs) -> Result<ExitCode> {
    let opts = ListOptions {
        email_column: args.email_column,
        ..ListOptions::default()
    };
    let result = RecipientList::from_path(&args.list, &opts)
        .map_err(|e| e.to_string())
        .and_then(|list| {
            merge::merge_results(&args.results, &list, &args.output).map_err(|e| e.to_string())
        });
    match result {
        Ok(rows) => {
            println!("{rows} rows merged into {}", args.output.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("mailmerge: {e}");
            Ok(ExitCode::from(2))
        }
    }
}

/// `generate man DIR` / `generate completions SHELL`.
pub fn generate(what: Generate) -> Result<ExitCode> {
    let mut cmd = Cli::command();
    match what {
        Generate::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
        }
        Generate::Completions { shell } => {
            clap_complete::generate(shell, &mut cmd, "mailmerge", &mut std::io::stdout());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn exit(success: bool) -> ExitCode {
    if success {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
