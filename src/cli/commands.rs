//! The subcommands: each calls the library and maps its outcome to an exit code (0 all
//! delivered, 1 some not, 2 nothing could be done, 130/143 interrupted).

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::{Context, Result, bail};
use clap::CommandFactory;

use mailmerge::dkim::Signer;
use mailmerge::merge;
use mailmerge::preflight::{SenderCheckOptions, check_sender};
use mailmerge::recipients::{ListOptions, RecipientList};
use mailmerge::sandbox::Sandbox;
use mailmerge::{CancellationToken, RunMode, run_until};

use super::args::{CheckSenderArgs, Cli, Generate, MergeArgs, RunArgs};
use super::{settings, signals};

/// `run` and `check` (`plan_only`).
pub async fn run(args: RunArgs, plan_only: bool) -> Result<ExitCode> {
    let sandbox = args.sandbox;
    let sandbox_dir = args.sandbox_dir.clone();
    let mut cfg = settings::run_config(args, plan_only)?;
    let cancel = CancellationToken::new();
    let sending = cfg.mode == RunMode::Send;
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
    let report = match run_until(cfg, cancel).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mailmerge: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    if !sending {
        print!("{}", report.plan);
        return Ok(exit(report.plan.all_sendable()));
    }
    if report.plan.already_done > 0 {
        println!(
            "{} row(s) already delivered or bounced by an earlier run (journal): not sent again",
            report.plan.already_done
        );
    }
    print!("{}", report.summary);
    if report.newly_suppressed > 0 {
        println!(
            "{} address(es) added to the suppression list (hard bounces)",
            report.newly_suppressed
        );
    }
    println!("results: {}", results.display());
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
