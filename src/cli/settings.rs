//! Settings: the parsed flags checked against each other and turned into the one
//! [`RunConfig`] the library runs (ripgrep's low-args → high-args step). Flags whose value is
//! a file (DKIM key) are loaded here, so a bad one stops the run before anything is sent.

use anyhow::{Context, Result, bail};

use mailmerge::address::Address;
use mailmerge::dkim::Signer;
use mailmerge::identity;
use mailmerge::message::AttachmentDir;
use mailmerge::progress::Mode;
use mailmerge::run::shard::INDEX_VARIABLE;
use mailmerge::tls_policy::{self, TransportOptions};
use mailmerge::{RunConfig, RunMode};

use super::args::{DeliverArgs, RunArgs};

/// The run `args` describe (`check` = `plan_only`).
pub fn run_config(args: RunArgs, plan_only: bool) -> Result<RunConfig> {
    let mut cfg = RunConfig::new(args.recipients, args.template);
    if let Some(spec) = args.shard {
        let env = std::env::var(INDEX_VARIABLE).ok();
        let shard = spec.resolve(env.as_deref()).map_err(anyhow::Error::msg)?;
        if args.limit.is_some() {
            bail!("--limit counts rows before they are sharded: use it without --shard");
        }
        cfg.results = shard.results_path(&cfg.results);
        cfg.shard = Some(shard);
    }
    if let Some(r) = args.results {
        cfg.results = r;
    }
    cfg.mode = match (plan_only || args.dry_run, args.out) {
        (true, eml_out) => RunMode::Plan { eml_out },
        (false, None) => RunMode::Send,
        (false, Some(_)) => bail!(
            "--out writes rendered messages instead of sending: use it with --dry-run or check"
        ),
    };
    cfg.list.email_column = args.email_column;
    cfg.list.allow_duplicates = args.allow_duplicates;
    cfg.list.max_field_size = args.max_field_size;
    if let Some(f) = &args.from {
        cfg.message.envelope_from =
            Some(Address::parse(f).with_context(|| format!("--from {f:?}"))?);
    }
    cfg.message.attachments = args.attachments_dir.as_deref().map(AttachmentDir::new);
    cfg.message.max_message_size = args.max_message_size;
    cfg.message.received_header = !args.no_received_header;
    cfg.dns.server = args.dns;
    cfg.dns.timeout = args.dns_timeout;
    cfg.dns.no_private_mx = args.no_private_mx;
    cfg.delivery = args.delivery;
    cfg.delivery.timeouts = args.timeouts.timeouts();
    apply_transport(
        args.transport,
        args.sandbox.then_some(&args.sandbox_dir),
        &mut cfg,
    )?;
    if cfg.delivery.helo.is_none() {
        cfg.delivery.helo = Some(identity::default_helo());
    }
    cfg.limit = args.limit;
    cfg.fresh = args.fresh;
    cfg.template_changed = args.template_changed;
    cfg.journal_repair = args.journal_repair;
    cfg.raw_csv = args.raw_csv;
    if let Some(path) = args.events {
        if cfg.mode != RunMode::Send {
            bail!("--events streams a run's deliveries: it does nothing with --dry-run or check");
        }
        cfg.events = Some(path.into());
    }
    cfg.progress = if args.quiet { Mode::Quiet } else { Mode::Auto };
    apply_deliverability(&args.deliver, &mut cfg)?;
    super::hygiene::apply(
        &args.suppress,
        args.sandbox.then_some(&args.sandbox_dir),
        &mut cfg,
    )?;
    cfg.state = Some(super::senders::state_location(
        &args.state,
        args.sandbox.then_some(&args.sandbox_dir),
    )?);
    cfg.clock = args.state.clock();
    Ok(cfg)
}

/// `--tls-ca` files loaded (a bad one stops the run before anything is sent), and where the
/// MTA-STS cache lives: the flag, beside the sandbox folder with `--sandbox`, else the XDG
/// cache folder (none when there is no home folder: policies are then fetched every run).
fn apply_transport(
    opts: TransportOptions,
    sandbox_dir: Option<&std::path::PathBuf>,
    cfg: &mut RunConfig,
) -> Result<()> {
    for path in &opts.tls_ca {
        let certs = tls_policy::mta_sts::load_pem_certs(path).context("--tls-ca")?;
        cfg.tls_extra_roots.extend(certs);
    }
    if let Some(anchor) = &opts.dnssec_trust_anchor
        && !anchor.is_file()
    {
        bail!("--dnssec-trust-anchor {}: no such file", anchor.display());
    }
    let cache = match (&opts.mta_sts_cache, sandbox_dir) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(dir)) => {
            let mut name = dir.file_name().unwrap_or_default().to_os_string();
            name.push(".mta-sts.json");
            Some(dir.with_file_name(name))
        }
        (None, None) => tls_policy::mta_sts::default_cache_path(),
    };
    cfg.transport = TransportOptions {
        mta_sts_cache: cache,
        ..opts
    };
    Ok(())
}

/// DKIM signer and List-Unsubscribe headers from `--dkim-*` / `--list-unsubscribe`.
fn apply_deliverability(args: &DeliverArgs, cfg: &mut RunConfig) -> Result<()> {
    cfg.message.dkim = signer(
        args.dkim_key.as_deref(),
        args.dkim_selector.as_deref(),
        args.dkim_domain.as_deref(),
    )?;
    if args.list_unsubscribe.is_empty() {
        return Ok(());
    }
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
    Ok(())
}

/// The DKIM signer `--dkim-key`, `--dkim-selector` and `--dkim-domain` describe. Checked here,
/// not with clap's `requires`: one half may come from the config file.
fn signer(
    key: Option<&std::path::Path>,
    selector: Option<&str>,
    domain: Option<&str>,
) -> Result<Option<Signer>> {
    match (key, selector) {
        (Some(key), Some(selector)) => Ok(Some(
            Signer::from_file(key, selector, domain).context("--dkim-key")?,
        )),
        (Some(_), None) => bail!("--dkim-key needs --dkim-selector"),
        (None, Some(_)) => bail!("--dkim-selector needs --dkim-key"),
        (None, None) if domain.is_some() => bail!("--dkim-domain needs --dkim-key"),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::args::{Cli, Command};
    use super::*;

    fn config(flags: &[&str]) -> RunConfig {
        let argv = ["mailmerge", "run", "list.csv", "message.hbs"];
        let cli = Cli::parse_from(argv.iter().chain(flags));
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        run_config(args, false).unwrap()
    }

    #[test]
    fn a_shard_gets_its_own_default_results_and_source_ips_their_helo() {
        let cfg = config(&["--shard", "1/3", "--source-ip", "127.0.0.10=a.example"]);
        assert_eq!(cfg.shard.map(|s| s.to_string()).as_deref(), Some("1/3"));
        assert!(cfg.results.ends_with("list.results.shard-1-of-3.csv"));
        assert_eq!(cfg.delivery.source_ip[0].helo("run"), "a.example");
        let explicit = config(&["--shard", "0/2", "--results", "r0.csv"]);
        assert!(explicit.results.ends_with("r0.csv"));
    }

    #[test]
    fn the_received_trace_header_is_on_unless_turned_off() {
        assert!(config(&[]).message.received_header);
        assert!(!config(&["--no-received-header"]).message.received_header);
    }

    #[test]
    fn tls_ca_files_are_loaded_and_a_bad_one_stops_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let ca = mailmerge::sandbox::tls::TestCa::new().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, ca.root_pem()).unwrap();
        let cfg = config(&["--tls-ca", pem.to_str().unwrap()]);
        assert_eq!(cfg.tls_extra_roots, vec![ca.root()]);
        assert_eq!(cfg.transport.tls_policy, tls_policy::PolicyMode::Auto);
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let argv = ["mailmerge", "run", "l.csv", "t.hbs", "--tls-ca"];
        let cli = Cli::parse_from(argv.iter().copied().chain([junk.to_str().unwrap()]));
        let Command::Run(args) = cli.command else {
            panic!("run expected");
        };
        let e = format!("{:#}", run_config(args, false).unwrap_err());
        assert!(e.contains("--tls-ca") && e.contains("junk.pem"), "{e}");
    }
}
