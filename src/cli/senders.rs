//! `mailmerge senders`: what the sender's memory holds per provider and source IP (learnt
//! limits, suspensions, today's count, the warm-up day), and `--clear` for the operator who
//! fixed a reputation problem with a provider; and where `run` keeps that memory.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::{Args, ValueHint};

use mailmerge::clock::{hh_mm, rfc3339};
use mailmerge::provider::rules::show_rate;
use mailmerge::sender::options::StateOptions;
use mailmerge::sender::{Identity, Memory};
use mailmerge::store::{Location, STATE_ENV};

/// `senders`.
#[derive(Args, Debug)]
pub struct SendersArgs {
    /// Forget what is remembered of this provider (or unknown site): learnt limits and
    /// suspensions; today's counts stay (a cap stays a cap).
    #[arg(long, value_name = "PROVIDER")]
    pub clear: Option<String>,
    /// With --clear: only from this source IP.
    #[arg(long, value_name = "IP", requires = "clear")]
    pub source: Option<String>,
    /// The store.
    #[command(flatten)]
    pub state: StateOptions,
    /// Config file [default: ./mailmerge.toml if present] (uses its state key).
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
}

/// The store `run` uses: `--state`, else beside the sandbox folder with `--sandbox` (a demo
/// must not teach the real memory anything), else the per-user default.
pub fn state_location(opts: &StateOptions, sandbox_dir: Option<&PathBuf>) -> Result<Location> {
    let given = opts.state.as_ref();
    let flag = given.filter(|p| sandbox_dir.is_none() || !Location::is_from_env(p, STATE_ENV));
    match (flag, sandbox_dir) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(dir)) => {
            let mut name = dir.file_name().unwrap_or_default().to_os_string();
            name.push(".senders.sqlite");
            Ok(dir.with_file_name(name).into())
        }
        (None, None) => opts
            .location()
            .ok_or_else(|| anyhow!("no home folder for the sender state: give --state PATH|URL")),
    }
}

/// `senders [--clear PROVIDER [--source IP]]`.
pub async fn senders(args: SendersArgs) -> Result<ExitCode> {
    let location = state_location(&args.state, None)?;
    let store = mailmerge::sender::open(&location).await?;
    let clock = args.state.clock();
    if let Some(receiver) = &args.clear {
        let n = store.forget(receiver, args.source.as_deref()).await?;
        println!(
            "cleared {n} sending identit{} of {receiver}",
            if n == 1 { "y" } else { "ies" }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (day, now) = (clock.day(), clock.unix());
    let all = store.list(day, now).await?;
    if all.is_empty() {
        println!("nothing remembered yet ({})", store.place());
    }
    for (id, m) in &all {
        println!("{}", describe(id, m, day, now));
    }
    Ok(ExitCode::SUCCESS)
}

/// One identity, one block: `yahoo@192.0.2.1: today 120 sent, warm-up day 3` and what it has
/// learnt and holds, each with when.
fn describe(id: &Identity, m: &Memory, day: u64, now: u64) -> String {
    let mut out = format!("{id}: today {} sent", m.today);
    if let Some(first) = m.first_day {
        let _ = write!(out, ", warm-up day {}", day.saturating_sub(first) + 1);
    }
    for h in &m.holds {
        let _ = write!(
            out,
            "\n  {} until {} ({}) by {}",
            match h.kind {
                mailmerge::sender::HoldKind::Suspend => "suspended".to_string(),
                mailmerge::sender::HoldKind::Rate => format!("rate held at {}", show_rate(h.value)),
                k => format!("{} held at {}", k.as_str(), h.value),
            },
            hh_mm(h.until),
            rfc3339(h.until),
            h.cause
        );
    }
    let l = &m.limits;
    let since = |at: u64| format!("learnt {}", rfc3339(at.min(now)));
    if let Some(c) = l.connections {
        let _ = write!(out, "\n  connections {} ({})", c.value, since(c.at));
    }
    if let Some(c) = l.per_connection {
        let _ = write!(
            out,
            "\n  messages per connection {} ({})",
            c.value,
            since(c.at)
        );
    }
    if let Some(r) = l.rate_accepted {
        let _ = write!(
            out,
            "\n  rate accepted {} ({})",
            show_rate(r.value),
            since(r.at)
        );
    }
    if let Some(r) = l.rate_refused {
        let _ = write!(
            out,
            "\n  rate refused {} ({})",
            show_rate(r.value),
            since(r.at)
        );
    }
    out
}
