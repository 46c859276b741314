//! List hygiene on the command line: `mailmerge suppress list|add|remove|import|export`, and
//! how the suppression/VERP flags of `run` become the [`RunConfig`]'s settings
//! (docs/list-hygiene.md). `bounces` is in [`super::bounces`].

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueHint};

use mailmerge::RunConfig;
use mailmerge::files::NewFile;
use mailmerge::store::{Location, SUPPRESSIONS_ENV};
use mailmerge::suppress::options::{StoreOptions, SuppressOptions};
use mailmerge::suppress::{self, Entry, Reason, SuppressionStore};
use mailmerge::verp::Verp;

/// `suppress`.
#[derive(Args, Debug)]
pub struct SuppressArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: SuppressAction,
    /// The list.
    #[command(flatten)]
    pub store: StoreOptions,
    /// Config file [default: ./mailmerge.toml if present] (uses its suppressions key).
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath, global = true)]
    pub config: Option<PathBuf>,
}

/// The `suppress` actions.
#[derive(Subcommand, Debug)]
pub enum SuppressAction {
    /// Print every entry as CSV (address, reason, cause, campaign, created).
    List,
    /// Suppress addresses, or whole domains written @domain.
    Add {
        /// Addresses or @domains.
        #[arg(required = true)]
        addresses: Vec<String>,
        /// Why.
        #[arg(long, default_value = "manual")]
        reason: Reason,
        /// A note kept with the entry.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Take addresses (or @domains) off the list.
    Remove {
        /// Addresses or @domains.
        #[arg(required = true)]
        addresses: Vec<String>,
    },
    /// Add the addresses of a CSV file, e.g. another tool's unsubscribe export. A whole
    /// domain only on rows whose `kind` column says `domain`; a line that cannot be used is
    /// reported with its number and skipped.
    Import {
        /// CSV file with a header row.
        #[arg(value_hint = ValueHint::FilePath)]
        file: PathBuf,
        /// Column holding the addresses.
        #[arg(long, default_value = "address")]
        column: String,
        /// Reason for rows without a `reason` column.
        #[arg(long, default_value = "unsubscribe")]
        reason: Reason,
    },
    /// Write every entry as CSV to FILE (or stdout when omitted or `-`), formula-like cells
    /// defused with a leading apostrophe.
    Export {
        /// Output file.
        #[arg(value_hint = ValueHint::FilePath)]
        file: Option<PathBuf>,
    },
}

/// The suppression and VERP flags of `run`/`check` into `cfg`. `--sandbox` keeps its list
/// beside the sandbox folder (`sandbox-mail.suppressions.sqlite`) unless `--suppressions` says
/// otherwise: a demo must not suppress real
/// addresses.
pub fn apply(
    opts: &SuppressOptions,
    sandbox_dir: Option<&PathBuf>,
    cfg: &mut RunConfig,
) -> Result<()> {
    let given = opts.store.suppressions.as_ref();
    let flag =
        given.filter(|p| sandbox_dir.is_none() || !Location::is_from_env(p, SUPPRESSIONS_ENV));
    cfg.suppress.store = match (flag, sandbox_dir) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(dir)) => {
            // Beside the folder, not in it: the folder holds only received messages.
            let mut name = dir.file_name().unwrap_or_default().to_os_string();
            name.push(".suppressions.sqlite");
            Some(dir.with_file_name(name).into())
        }
        (None, None) => Some(opts.store.location().ok_or_else(|| {
            anyhow!("no home folder for the suppression list: give --suppressions PATH|URL")
        })?),
    };
    cfg.suppress.ignore = opts.ignore_suppressions;
    let key = opts.key.load().map_err(|e| anyhow!(e))?;
    if let Some(template) = &opts.return_path {
        let Some(key) = key else {
            bail!("--return-path needs --verp-key or --verp-key-file (the tokens are signed)");
        };
        cfg.message.verp = Some(Verp::new(template, &key)?);
    }
    Ok(())
}

/// Opens the list named by the flags (or the default one).
pub async fn open(store: &StoreOptions) -> Result<Arc<dyn SuppressionStore>> {
    let location = store.location().ok_or_else(|| {
        anyhow!("no home folder for the suppression list: give --suppressions PATH|URL")
    })?;
    Ok(suppress::open(&location).await?)
}

/// `suppress ...`.
pub async fn suppress(args: SuppressArgs) -> Result<ExitCode> {
    let store = open(&args.store).await?;
    match args.action {
        SuppressAction::List => export(store.as_ref(), None).await?,
        SuppressAction::Export { file } => export(store.as_ref(), file.as_deref()).await?,
        SuppressAction::Add {
            addresses,
            reason,
            note,
        } => {
            let entries = addresses
                .iter()
                .map(|a| {
                    Ok(Entry::new(
                        suppress::normalize(a)?,
                        reason,
                        note.clone(),
                        "",
                    ))
                })
                .collect::<Result<Vec<_>, suppress::StoreError>>()?;
            let n = store.add(&entries).await?;
            println!("{n} added, {} already suppressed", entries.len() - n);
        }
        SuppressAction::Remove { addresses } => {
            let mut missing = 0;
            for a in &addresses {
                if !store.remove(&suppress::normalize(a)?).await? {
                    eprintln!("mailmerge: {a} was not suppressed");
                    missing += 1;
                }
            }
            println!("{} removed", addresses.len() - missing);
        }
        SuppressAction::Import {
            file,
            column,
            reason,
        } => {
            let name = file.display().to_string();
            let input = std::fs::File::open(&file).with_context(|| format!("opening {name}"))?;
            let got = suppress::import_csv(input, &name, &column, reason)?;
            for s in &got.skipped {
                eprintln!("mailmerge: {name}: skipped {s}");
            }
            for n in &got.notes {
                eprintln!("mailmerge: {name}: {n}");
            }
            let n = store.add(&got.entries).await?;
            println!(
                "{n} added, {} already suppressed, {} skipped",
                got.entries.len() - n,
                got.skipped.len()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(store: &dyn SuppressionStore, file: Option<&Path>) -> Result<()> {
    let entries = store.list().await?;
    match file.filter(|f| f.as_os_str() != "-") {
        Some(f) => {
            // A temporary file renamed into place: never written through a link.
            let mut out =
                NewFile::create(f).with_context(|| format!("creating {}", f.display()))?;
            suppress::export_csv(&entries, &mut out, &f.display().to_string())?;
            out.commit()
                .with_context(|| format!("writing {}", f.display()))?;
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            suppress::export_csv(&entries, &mut lock, "stdout")?;
            lock.flush()?;
        }
    }
    Ok(())
}
