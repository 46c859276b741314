//! Authenticated transport where the receiver asks for it: which TLS policy governs
//! each MX host of each site, decided once per run before delivery.
//!
//! Opportunistic STARTTLS accepts any certificate, so an attacker on the path can strip
//! STARTTLS or present their own certificate. Receivers that care publish a policy:
//! - [`mta_sts`] (RFC 8461): per recipient domain, a TXT record announces a policy fetched over
//!   HTTPS; in `enforce` mode only the listed MX hosts, with a certificate valid for their name.
//! - [`dane`] (RFC 7672/7671): per MX host, DNSSEC-validated TLSA records the certificate must
//!   match. DANE wins over MTA-STS (RFC 8461 §2).
//!
//! The run's route stage looks the policies up ([`crate::run`]); the delivery engine asks
//! [`SiteTls::rule`] before each connection what the host requires. A host whose policy cannot
//! be met is never used in plaintext or with an unchecked certificate: its rows end `deferred`
//! (category `tls`), and a policy in `testing` mode only reports what would have failed.

pub mod dane;
pub mod mta_sts;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum, ValueHint};
use rustls::ClientConfig;

use mta_sts::{Mode, Policy};

/// `--tls-policy`: whether published policies are honored.
#[derive(ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PolicyMode {
    /// Honor MTA-STS and DANE where a receiver publishes them; `--tls` elsewhere.
    #[default]
    Auto,
    /// Ignore published policies: `--tls` everywhere (no policy lookups).
    Opportunistic,
}

/// The policy flags, defined once (flag, config key and what the run reads).
#[derive(Args, Clone, Debug, PartialEq, Eq)]
pub struct TransportOptions {
    /// Published TLS policies: auto (honor MTA-STS and DANE, else --tls) or opportunistic
    /// (--tls everywhere, no policy lookups). See docs/delivery.md#tls-policies.
    #[arg(long, value_name = "MODE", default_value = "auto", value_enum)]
    pub tls_policy: PolicyMode,
    /// PEM file of extra trusted root certificates (a private PKI) for verified TLS (MTA-STS,
    /// --tls required) and for fetching MTA-STS policies; repeatable.
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub tls_ca: Vec<PathBuf>,
    /// DNSSEC trust anchor for DANE instead of the IANA root keys: a file of DS or DNSKEY
    /// records in zone-file form (a private test root).
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub dnssec_trust_anchor: Option<PathBuf>,
    /// MTA-STS policy cache, kept between runs for each policy's max_age [default:
    /// $XDG_CACHE_HOME/mailmerge/mta-sts.json, else ~/.cache/...; with --sandbox
    /// <--sandbox-dir>.mta-sts.json].
    #[arg(long, value_name = "PATH", value_hint = ValueHint::FilePath)]
    pub mta_sts_cache: Option<PathBuf>,
    /// HTTPS port MTA-STS policies are fetched from (tests).
    #[arg(long, value_name = "PORT", default_value_t = 443, hide = true)]
    pub mta_sts_port: u16,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            tls_policy: PolicyMode::Auto,
            tls_ca: Vec::new(),
            dnssec_trust_anchor: None,
            mta_sts_cache: None,
            mta_sts_port: 443,
        }
    }
}

/// The TLS policy a delivery attempt was made under: the results' `tls_policy` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// No session was attempted, or `--tls disabled` with no published policy.
    None,
    /// No published policy: STARTTLS when offered, any certificate (`--tls opportunistic`).
    Opportunistic,
    /// No published policy, `--tls required`: a verified certificate or no delivery.
    Required,
    /// The domain's MTA-STS policy is in `testing` mode: sent as opportunistic, and what would
    /// have failed under `enforce` is reported.
    MtaStsTesting,
    /// The domain's MTA-STS policy (`enforce`): a listed MX host, a certificate valid for it.
    MtaSts,
    /// DANE: TLS mandatory, the certificate matches the host's DNSSEC-validated TLSA records.
    Dane,
}

impl PolicyKind {
    /// Name in the results CSV and the summary.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::None => "none",
            PolicyKind::Opportunistic => "opportunistic",
            PolicyKind::Required => "required",
            PolicyKind::MtaStsTesting => "mta-sts-testing",
            PolicyKind::MtaSts => "mta-sts",
            PolicyKind::Dane => "dane",
        }
    }

    /// Parses the CSV name back (the journal).
    pub fn parse(s: &str) -> Option<Self> {
        [
            PolicyKind::None,
            PolicyKind::Opportunistic,
            PolicyKind::Required,
            PolicyKind::MtaStsTesting,
            PolicyKind::MtaSts,
            PolicyKind::Dane,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// What DANE says about one MX host.
#[derive(Clone, Debug)]
pub enum DaneHost {
    /// Validated TLSA records with usable ones: TLS with a certificate that matches them
    /// (this configuration checks it).
    Verify(Arc<ClientConfig>),
    /// Validated TLSA records, none usable (RFC 7672 §2.2): TLS mandatory, unauthenticated.
    EncryptOnly,
    /// The TLSA answer is bogus or DNS failed: the host is not used (never a downgrade).
    Unusable(String),
}

/// The DANE state of every MX host with TLSA records (hosts without are absent).
pub type DaneHosts = HashMap<String, DaneHost>;

/// What a site's sessions must meet: its domains' MTA-STS policy and its hosts' DANE state.
#[derive(Clone, Debug, Default)]
pub struct SiteTls {
    /// The MTA-STS policy of the site's domains (`enforce` or `testing`; `none` is absent).
    /// Domains with different policies are different sites.
    pub sts: Option<Arc<Policy>>,
    /// DANE state by MX host name (shared by all sites).
    pub dane: Arc<DaneHosts>,
}

/// What one MX host requires of a session.
#[derive(Clone, Debug)]
pub enum HostRule {
    /// DANE with usable TLSA records: TLS verified by this configuration.
    Dane(Arc<ClientConfig>),
    /// DANE without usable records: TLS mandatory, any certificate.
    DaneEncryptOnly,
    /// MTA-STS `enforce`: TLS with a certificate valid for the host name (Web PKI).
    MtaSts,
    /// Do not connect: why (a bogus TLSA answer, a host the enforced policy does not list).
    Refuse {
        /// The policy that refuses.
        kind: PolicyKind,
        /// Why, for the results CSV.
        why: String,
    },
    /// No published policy applies: the local `--tls` mode. With an MTA-STS `testing` policy,
    /// what `enforce` would have required is checked and reported (`testing` holds the reason
    /// when the host itself is not listed).
    Local {
        /// The domain's policy is in `testing` mode.
        testing: bool,
        /// Why `enforce` would refuse this host before connecting.
        unlisted: Option<String>,
    },
}

impl HostRule {
    /// The policy the session runs under (`local` is the kind of the `--tls` mode).
    pub fn kind(&self, local: PolicyKind) -> PolicyKind {
        match self {
            HostRule::Dane(_) | HostRule::DaneEncryptOnly => PolicyKind::Dane,
            HostRule::MtaSts => PolicyKind::MtaSts,
            HostRule::Refuse { kind, .. } => *kind,
            HostRule::Local { testing: true, .. } => PolicyKind::MtaStsTesting,
            HostRule::Local { testing: false, .. } => local,
        }
    }
}

impl SiteTls {
    /// What MX host `host` requires: DANE first, then the domain's MTA-STS policy.
    pub fn rule(&self, host: &str) -> HostRule {
        match self.dane.get(host) {
            Some(DaneHost::Verify(config)) => return HostRule::Dane(config.clone()),
            Some(DaneHost::EncryptOnly) => return HostRule::DaneEncryptOnly,
            Some(DaneHost::Unusable(why)) => {
                return HostRule::Refuse {
                    kind: PolicyKind::Dane,
                    why: format!("DANE: {host} cannot be authenticated: {why}"),
                };
            }
            None => {}
        }
        let Some(policy) = &self.sts else {
            return HostRule::Local {
                testing: false,
                unlisted: None,
            };
        };
        let unlisted = (!policy.allows_mx(host)).then(|| {
            format!(
                "MTA-STS: {host} is not an MX host of the domain's policy (mx: {})",
                policy.mx.join(", ")
            )
        });
        match (policy.mode, unlisted) {
            (Mode::Enforce, Some(why)) => HostRule::Refuse {
                kind: PolicyKind::MtaSts,
                why,
            },
            (Mode::Enforce, None) => HostRule::MtaSts,
            (_, unlisted) => HostRule::Local {
                testing: policy.mode == Mode::Testing,
                unlisted,
            },
        }
    }

    /// One line for the plan (`check`): the policy the site's sessions run under.
    pub fn describe(&self, hosts: &[crate::mx::MxHost]) -> String {
        let dane = hosts
            .iter()
            .filter(|h| self.dane.contains_key(&h.name))
            .count();
        let mut parts = Vec::new();
        if dane > 0 {
            parts.push(format!("dane ({dane} of {} MX hosts)", hosts.len()));
        }
        if let Some(p) = &self.sts {
            let mode = match p.mode {
                Mode::Enforce => "mta-sts",
                Mode::Testing => "mta-sts-testing",
                Mode::None => "mta-sts-none",
            };
            parts.push(format!("{mode} (mx: {})", p.mx.join(", ")));
        }
        if parts.is_empty() {
            "no published policy".into()
        } else {
            parts.join(", ")
        }
    }

    /// The key that keeps domains with different MTA-STS policies in different sites.
    pub fn site_key(policy: Option<&Policy>) -> Option<String> {
        let p = policy?;
        let mode = match p.mode {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => return None,
        };
        let mut mx = p.mx.clone();
        mx.sort();
        Some(format!("mta-sts {mode}: {}", mx.join(" ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(policy: Option<&str>, dane: &[(&str, DaneHost)]) -> SiteTls {
        SiteTls {
            sts: policy.map(|text| Arc::new(Policy::parse(text).expect("policy"))),
            dane: Arc::new(
                dane.iter()
                    .cloned()
                    .map(|(h, d)| (h.to_string(), d))
                    .collect(),
            ),
        }
    }

    const ENFORCE: &str = "version: STSv1\nmode: enforce\nmx: *.mx.d.test\nmax_age: 86400\n";
    const TESTING: &str = "version: STSv1\nmode: testing\nmx: mx1.d.test\nmax_age: 86400\n";

    #[test]
    fn an_enforced_policy_admits_only_its_mx_hosts_and_requires_verified_tls() {
        let s = site(Some(ENFORCE), &[]);
        assert!(matches!(s.rule("a.mx.d.test"), HostRule::MtaSts));
        let refused = s.rule("other.d.test");
        let HostRule::Refuse { kind, why } = &refused else {
            panic!("{refused:?}");
        };
        assert_eq!(*kind, PolicyKind::MtaSts);
        assert!(
            why.contains("other.d.test") && why.contains("*.mx.d.test"),
            "{why}"
        );
    }

    #[test]
    fn a_testing_policy_sends_locally_and_remembers_an_unlisted_host() {
        let s = site(Some(TESTING), &[]);
        let listed = s.rule("mx1.d.test");
        assert!(matches!(
            listed,
            HostRule::Local {
                testing: true,
                unlisted: None
            }
        ));
        assert_eq!(
            listed.kind(PolicyKind::Opportunistic),
            PolicyKind::MtaStsTesting
        );
        let unlisted = s.rule("mx2.d.test");
        assert!(
            matches!(&unlisted, HostRule::Local { testing: true, unlisted: Some(w) } if w.contains("mx2.d.test")),
            "{unlisted:?}"
        );
    }

    #[test]
    fn dane_wins_over_mta_sts_and_a_bogus_answer_refuses_the_host() {
        let s = site(
            Some(ENFORCE),
            &[
                ("a.mx.d.test", DaneHost::EncryptOnly),
                (
                    "b.mx.d.test",
                    DaneHost::Unusable("RRSIG does not verify".into()),
                ),
            ],
        );
        assert!(matches!(s.rule("a.mx.d.test"), HostRule::DaneEncryptOnly));
        let bogus = s.rule("b.mx.d.test");
        assert!(
            matches!(&bogus, HostRule::Refuse { kind: PolicyKind::Dane, why } if why.contains("RRSIG")),
            "{bogus:?}"
        );
        assert!(matches!(s.rule("c.mx.d.test"), HostRule::MtaSts));
        assert!(s.describe(&[]).contains("mta-sts (mx: *.mx.d.test)"));
    }

    #[test]
    fn without_a_policy_the_local_mode_decides() {
        let s = SiteTls::default();
        let rule = s.rule("mx.d.test");
        assert!(matches!(
            rule,
            HostRule::Local {
                testing: false,
                unlisted: None
            }
        ));
        assert_eq!(rule.kind(PolicyKind::Required), PolicyKind::Required);
        assert_eq!(SiteTls::site_key(None), None);
        let p = Policy::parse(ENFORCE).expect("policy");
        assert_eq!(
            SiteTls::site_key(Some(&p)).as_deref(),
            Some("mta-sts enforce: *.mx.d.test")
        );
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in [
            PolicyKind::None,
            PolicyKind::Opportunistic,
            PolicyKind::Required,
            PolicyKind::MtaStsTesting,
            PolicyKind::MtaSts,
            PolicyKind::Dane,
        ] {
            assert_eq!(PolicyKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(PolicyKind::parse("maybe"), None);
    }
}
