//! `mailmerge bounces SOURCE...`: read late bounces and complaints from Maildir folders, mbox
//! files, `.eml` files or an IMAP mailbox, and print one line (a table row, or with `--json` a
//! JSON object) per recipient of each message. Without `--dry-run` the matched rows are marked
//! bounced and hard bounces and complaints suppressed (docs/list-hygiene.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow};
use clap::{ArgMatches, Args, ValueHint, parser::ValueSource};

use mailmerge::bounces::imap::{ImapOptions, ImapUrl, Mailbox};
use mailmerge::bounces::read::{self, Raw};
use mailmerge::bounces::{Disposition, Matcher, Reading};
use mailmerge::suppress::options::{StoreOptions, VerpKeyOptions};
use mailmerge::suppress::{self, SuppressionStore};

/// Where the IMAP password is looked for by default.
pub const PASSWORD_ENV: &str = "MAILMERGE_IMAP_PASSWORD";

/// `bounces`.
#[derive(Args, Debug)]
pub struct BouncesArgs {
    /// Maildir folders, mbox files, single .eml files, or an IMAP mailbox
    /// imaps://USER@HOST[:PORT]/MAILBOX (password from $MAILMERGE_IMAP_PASSWORD or the config
    /// file's imap-password, never the command line).
    #[arg(required = true, value_name = "SOURCE", value_hint = ValueHint::AnyPath)]
    pub paths: Vec<PathBuf>,
    /// Change nothing (no results CSV, journal, suppression list or IMAP watermark): only say
    /// what a real run would do with each report.
    #[arg(long)]
    pub dry_run: bool,
    /// One JSON object per line (per recipient of each message) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Read at most SIZE of each message (bytes, or with K, M, G); the report and the returned
    /// message's headers are at its top, the rest is skipped.
    #[arg(long, value_name = "SIZE", default_value = "1M", value_parser = super::args::parse_size)]
    pub max_report_size: usize,
    /// Environment variable holding the IMAP password.
    #[arg(long, value_name = "NAME", default_value = PASSWORD_ENV)]
    pub imap_password_env: String,
    /// The IMAP password, from the config file only (`imap-password = "..."`); refused on the
    /// command line.
    #[arg(long, hide = true, value_name = "PASSWORD")]
    pub imap_password: Option<String>,
    /// Move each processed IMAP message to FOLDER (created if missing) instead of remembering
    /// the highest UID read.
    #[arg(long, value_name = "FOLDER")]
    pub imap_move_to: Option<String>,
    /// PEM file of extra trusted root certificates for the IMAP server (a private CA);
    /// repeatable.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub tls_ca: Vec<PathBuf>,
    /// The list (it also knows each campaign's results CSV, and the IMAP watermarks).
    #[command(flatten)]
    pub store: StoreOptions,
    /// The key that signed the --return-path tokens.
    #[command(flatten)]
    pub key: VerpKeyOptions,
    /// Config file [default: ./mailmerge.toml if present].
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
}

/// A password typed on the command line ends up in the shell history and in `ps`: refuse it
/// (exit 2) before anything runs. The config file sets the same hidden flag's default.
pub fn refuse_password_on_command_line(m: &ArgMatches) {
    if m.value_source("imap_password") == Some(ValueSource::CommandLine) {
        eprintln!(
            "mailmerge: the IMAP password is never taken from the command line: set \
             {PASSWORD_ENV} (or --imap-password-env NAME) or imap-password in the config file"
        );
        std::process::exit(2);
    }
}

/// Counts for the summary line.
#[derive(Default)]
struct Tally {
    matched: usize,
    missed: usize,
    ignored: usize,
}

/// Prints verdicts as they come.
struct Printer {
    json: bool,
    header_done: bool,
    tally: Tally,
}

impl Printer {
    fn print(&mut self, verdicts: &[Reading]) -> Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        for v in verdicts {
            match &v.disposition {
                Disposition::Matched { .. } => self.tally.matched += 1,
                Disposition::Ignored(_) => self.tally.ignored += 1,
                Disposition::Forged(_) | Disposition::Unmatched(_) => self.tally.missed += 1,
            }
            if self.json {
                writeln!(out, "{}", v.to_json())?;
                continue;
            }
            if !self.header_done {
                writeln!(
                    out,
                    "{:<9} {:<9} {:<4} {:<7} {:<16} {:<32} SOURCE: WHAT",
                    "KIND", "ACTION", "HARD", "STATUS", "CATEGORY", "RECIPIENT"
                )?;
                self.header_done = true;
            }
            writeln!(out, "{}", table_row(v))?;
        }
        Ok(())
    }
}

/// One line of the table: fixed columns, then the source and what happens (or why not).
fn table_row(v: &Reading) -> String {
    let r = v.recipient.as_ref();
    let note = match &v.disposition {
        Disposition::Matched {
            campaign,
            row,
            suppressed,
            ..
        } => {
            let s = if *suppressed { ", suppress" } else { "" };
            format!("campaign {campaign} row {row}{s}")
        }
        d => d.why().to_string(),
    };
    let diag = r.map(|r| r.diagnostic.as_str()).unwrap_or_default();
    let mut line = format!(
        "{:<9} {:<9} {:<4} {:<7} {:<16} {:<32} {}: {note}",
        v.kind.as_str(),
        v.disposition.as_str(),
        if r.is_some_and(|r| r.hard) {
            "yes"
        } else {
            "no"
        },
        r.and_then(|r| r.status)
            .map(|s| s.to_string())
            .unwrap_or("-".into()),
        r.and_then(|r| r.category).map_or("-", |c| c.as_str()),
        r.and_then(|r| r.address.as_deref()).unwrap_or("-"),
        v.source,
    );
    if !diag.is_empty() && !matches!(v.disposition, Disposition::Ignored(_)) {
        line.push_str(" [");
        line.push_str(&diag.chars().take(160).collect::<String>());
        line.push(']');
    }
    printable(&line)
}

/// Control characters from a report (terminal escapes) shown as `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// `bounces SOURCE...`: exit 0 when every report was matched (or ignored), 1 when some were
/// unmatched or forged.
pub async fn bounces(args: BouncesArgs) -> Result<ExitCode> {
    let key = args.key.load().map_err(|e| anyhow!(e))?;
    if key.is_none() {
        eprintln!("mailmerge: no --verp-key: matching by Message-ID and recipient only");
    }
    let location = args.store.location().ok_or_else(|| {
        anyhow!("no home folder for the suppression list: give --suppressions PATH|URL")
    })?;
    let store: Option<Arc<dyn SuppressionStore>> = if args.dry_run {
        suppress::open_read_only(&location).await?
    } else {
        Some(suppress::open(&location).await?)
    };
    let mut matcher = match (&store, args.dry_run) {
        (Some(s), false) => Matcher::new(s.clone(), key.as_deref()).await?,
        (s, _) => Matcher::dry_run(s.clone(), key.as_deref()).await?,
    };
    let mut printer = Printer {
        json: args.json,
        header_done: false,
        tally: Tally::default(),
    };
    let mut imap_done = Vec::new();
    for source in &args.paths {
        let text = source.to_string_lossy();
        if ImapUrl::is_imap(&text) {
            let url = ImapUrl::parse(&text)?;
            let done = read_imap(&url, &args, store.as_deref(), &mut matcher, &mut printer).await?;
            imap_done.push(done);
            continue;
        }
        for raw in read::messages(source, args.max_report_size)? {
            let raw = raw?;
            printer.print(&matcher.apply(&raw).await?)?;
        }
    }
    let files = matcher.finish()?;
    // Only once the results are written: the mailboxes' watermarks, or the moves.
    for done in imap_done {
        done.commit(&args, store.as_deref()).await?;
    }
    let Tally {
        matched,
        missed,
        ignored,
    } = printer.tally;
    let tail = if args.dry_run {
        "dry run: nothing changed".to_string()
    } else {
        format!("{files} results file(s) updated")
    };
    let summary =
        format!("{matched} matched, {missed} unmatched or forged, {ignored} ignored; {tail}");
    if args.json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(if missed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// An IMAP mailbox read: what to record once the results are written.
struct ImapDone {
    url: ImapUrl,
    mailbox: Option<Mailbox>,
    uids: Vec<u32>,
}

impl ImapDone {
    /// Moves the messages read, or records the watermark (nothing in a dry run).
    async fn commit(self, args: &BouncesArgs, store: Option<&dyn SuppressionStore>) -> Result<()> {
        let Some(mut mailbox) = self.mailbox else {
            return Ok(());
        };
        if !args.dry_run {
            if let Some(folder) = &args.imap_move_to {
                mailbox.move_to(&self.uids, folder).await?;
            } else if let (Some(&last_uid), Some(store)) = (self.uids.last(), store) {
                let mark = mailmerge::suppress::Watermark {
                    uidvalidity: mailbox.uidvalidity,
                    last_uid,
                };
                store.set_watermark(&self.url.key(), mark).await?;
            }
        }
        mailbox.close().await;
        Ok(())
    }
}

/// Reads the new messages of one IMAP mailbox through the matcher.
async fn read_imap(
    url: &ImapUrl,
    args: &BouncesArgs,
    store: Option<&dyn SuppressionStore>,
    matcher: &mut Matcher,
    printer: &mut Printer,
) -> Result<ImapDone> {
    let password = std::env::var(&args.imap_password_env)
        .ok()
        .or_else(|| args.imap_password.clone())
        .ok_or_else(|| {
            anyhow!(
                "no IMAP password for {}: set {} or imap-password in the config file",
                url.key(),
                args.imap_password_env
            )
        })?;
    let mut extra_roots = Vec::new();
    for path in &args.tls_ca {
        extra_roots
            .extend(mailmerge::tls_policy::mta_sts::load_pem_certs(path).context("--tls-ca")?);
    }
    let opts = ImapOptions {
        password,
        extra_roots,
        move_to: args.imap_move_to.clone(),
        cap: args.max_report_size,
    };
    let mut mailbox = Mailbox::open(url, &opts).await?;
    let since = match (&args.imap_move_to, store) {
        (None, Some(store)) => store.watermark(&url.key()).await?,
        _ => None,
    };
    let uids = mailbox.uids(since).await?;
    for &uid in &uids {
        let raw: Raw = mailbox.fetch(uid).await?;
        printer.print(&matcher.apply(&raw).await?)?;
    }
    if uids.is_empty() && !args.json {
        eprintln!("mailmerge: {}: no new messages", url.key());
    }
    Ok(ImapDone {
        url: url.clone(),
        mailbox: Some(mailbox),
        uids,
    })
}
