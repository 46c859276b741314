//! The delivery settings a user chooses, defined once: each field is a command-line flag (its
//! doc comment is the `--help` text, its attribute the default), a config-file key (the flag's
//! long name, see `docs/configuration.md`) and what the engine reads. [`Default`] is the flags'
//! defaults, so no default is written twice.

use std::num::NonZeroUsize;
use std::time::Duration;

use clap::{ArgAction, Args, Parser};

use super::retry::RetryPolicy;
use crate::provider::caps::Warmup;
use crate::provider::rules::parse_rule;
use crate::provider::{BackoffRule, ProviderOverride, parse_provider};
use crate::smtp::{Timeouts, TlsMode};
use crate::units::Rate;
use crate::units::parse_duration;

/// How to deliver: hosts, connections, retries, budget, TLS, pace.
#[derive(Args, Clone, Debug, PartialEq)]
pub struct DeliveryOptions {
    /// Name sent in EHLO [default: this host's FQDN; mailmerge.sandbox.test with --sandbox].
    #[arg(long, value_name = "NAME")]
    pub helo: Option<String>,
    /// TCP port used when connecting to MX hosts.
    #[arg(long, value_name = "PORT", default_value_t = 25)]
    pub smtp_port: u16,
    /// Simultaneous connections at most per destination site (domains sharing MX hosts).
    #[arg(long, value_name = "N", default_value = "10")]
    pub connections_per_site: NonZeroUsize,
    /// Simultaneous connections at most in total.
    #[arg(long, value_name = "N", default_value = "200")]
    pub max_connections: NonZeroUsize,
    /// Messages sent over one connection before it is closed and a new one opened.
    #[arg(long, value_name = "N", default_value = "1000")]
    pub messages_per_connection: NonZeroUsize,
    /// Waits before the 2nd, 3rd, 4th… attempt after a transient failure (ms, s, m, h; `none`
    /// never retries) [1s with --sandbox].
    #[arg(long, value_name = "LIST", default_value = "1m,5m,15m", value_parser = RetryPolicy::parse)]
    pub retry: RetryPolicy,
    /// Wall-clock budget of the whole run; what is not delivered by then is `deferred`.
    #[arg(long, value_name = "DURATION", default_value = "30m", value_parser = parse_duration)]
    pub deadline: Duration,
    /// STARTTLS: opportunistic (any certificate, plaintext fallback), required (verified
    /// certificate matching the MX name, else deferred) or disabled.
    #[arg(long, value_name = "MODE", default_value = "opportunistic", value_enum)]
    pub tls: TlsMode,
    /// Never use BDAT (RFC 3030 CHUNKING), even where offered: send every message with DATA
    /// (a receiver whose CHUNKING is broken).
    #[arg(long)]
    pub no_chunking: bool,
    /// Messages at most per site and period, spaced evenly (e.g. 100/min, 5/s).
    #[arg(long, value_name = "N/PERIOD")]
    pub rate_per_site: Option<Rate>,
    /// Local address new connections leave from, with the EHLO name its PTR record gives
    /// [default HELO: --helo]; repeat for a pool (each new connection takes the least-used
    /// address; one that cannot be bound is skipped for the run). See docs/scaling.md.
    #[arg(long, value_name = "ADDR[=HELO]", value_parser = super::source_ip::SourceIp::parse)]
    pub source_ip: Vec<super::source_ip::SourceIp>,
    /// Messages at most per provider per day (UTC), counted across runs; the rest end
    /// `deferred` (step `cap`) and a later day's run sends them.
    #[arg(long, value_name = "N")]
    pub daily_cap: Option<usize>,
    /// Warm-up schedule, DAY=CAP,... (day 1 = the first day of sending): the daily cap per
    /// provider while the sending IP warms up (the config's `[warmup]` table).
    #[arg(long, value_name = "SCHEDULE", hide = true)]
    pub warmup: Option<Warmup>,
    /// A mailbox provider, changed or added (the config's `[provider.NAME]` tables), as a TOML
    /// inline table's inside: `name = "acme", mx_suffixes = ["mx.acme.example"], connections = 2`.
    #[arg(long, value_name = "TABLE", hide = true, action = ArgAction::Append, value_parser = parse_provider)]
    pub provider: Vec<ProviderOverride>,
    /// A backoff rule (the config's `[[backoff]]` tables), as a TOML inline table's inside:
    /// `pattern = "[TS03]", provider = "yahoo", rate = "10/min", duration = "30m"`.
    #[arg(long, value_name = "TABLE", hide = true, action = ArgAction::Append, value_parser = parse_rule)]
    pub backoff: Vec<BackoffRule>,
    /// Per-phase SMTP timeouts (set from `--smtp-timeout`, `--connect-timeout`, `--timeout`).
    #[arg(skip)]
    pub timeouts: Timeouts,
}

impl Default for DeliveryOptions {
    /// The flags' defaults (the attributes above).
    fn default() -> Self {
        #[derive(Parser)]
        struct Defaults {
            #[command(flatten)]
            options: DeliveryOptions,
        }
        Defaults::parse_from(["mailmerge"]).options
    }
}

impl DeliveryOptions {
    /// The EHLO name, `localhost` when none was chosen (the binary always chooses one).
    pub fn helo(&self) -> &str {
        self.helo.as_deref().unwrap_or("localhost")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_flags_defaults() {
        let d = DeliveryOptions::default();
        assert_eq!(d.smtp_port, 25);
        assert_eq!(d.connections_per_site.get(), 10);
        assert_eq!(d.max_connections.get(), 200);
        assert_eq!(d.messages_per_connection.get(), 1000);
        assert_eq!(d.deadline, Duration::from_secs(30 * 60));
        assert_eq!(d.retry, RetryPolicy::default());
        assert_eq!(d.tls, TlsMode::Opportunistic);
        assert_eq!(d.rate_per_site, None);
        assert_eq!(d.timeouts, Timeouts::default());
        assert_eq!((d.daily_cap, d.warmup), (None, None));
        assert!(d.provider.is_empty() && d.backoff.is_empty());
    }
}
