//! Mailbox providers: the companies behind many MX host names (Google, Microsoft, Yahoo, …)
//! whose limits apply per sending IP to the provider as a whole, not per MX host or per site.
//!
//! A provider is recognised by the suffix of its sites' MX host names (KumoMTA's provider
//! rules do the same): every Microsoft 365 tenant has its own
//! `<tenant>.mail.protection.outlook.com`, yet they share one set of limits. The built-in
//! table ([`builtin`]) carries the limits large senders use (KumoMTA's shaping data); users
//! override or add providers with `[provider.NAME]` in `mailmerge.toml` (the hidden
//! `--provider` flag carries them). What the engine learns while it sends (a connection limit,
//! a slower rate, a suspension) lives in the engine's [`crate::delivery::Gate`]; the backoff rules that turn a
//! provider's reply text into an action live in [`rules`]; daily caps and warm-up in [`caps`].

pub mod caps;
pub mod rules;

use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use crate::mx::MxHost;
use crate::units::Rate;

pub use rules::{BackoffRule, RuleAction};

/// A `--provider` / `[provider.NAME]` value that does not parse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProviderError {
    /// Not a TOML table of the known keys.
    #[error("invalid provider {0}")]
    Syntax(String),
    /// A `rate` that does not parse.
    #[error("invalid provider {name}: {source}")]
    Rate {
        /// The provider.
        name: String,
        /// Why.
        #[source]
        source: crate::units::RateError,
    },
    /// No name, or no MX suffix for a provider that is not built in.
    #[error(
        "invalid provider {0}: needs a name and mx_suffixes (unless it overrides a built-in one)"
    )]
    Incomplete(String),
}

/// One provider: how to recognise it and the limits that apply to it as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderSpec {
    /// Name shown in progress, the summary and the results' `provider` column.
    pub name: String,
    /// MX host name suffixes (`google.com` matches `aspmx.l.google.com`), lower case.
    pub mx_suffixes: Vec<String>,
    /// Simultaneous connections at most (per source IP).
    pub connections: usize,
    /// Messages over one connection before it is closed and a new one opened.
    pub messages_per_connection: usize,
    /// A hard cap on the message rate (the AIMD never goes above it); `None`: none.
    pub rate: Option<Rate>,
}

/// What the user wrote for one provider (every key optional, so that a built-in one can be
/// changed one value at a time).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct SpecInput {
    name: Option<String>,
    mx_suffixes: Option<Vec<String>>,
    connections: Option<usize>,
    messages_per_connection: Option<usize>,
    rate: Option<String>,
}

/// A user's provider definition: a built-in one changed, or a new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderOverride {
    name: String,
    mx_suffixes: Option<Vec<String>>,
    connections: Option<usize>,
    messages_per_connection: Option<usize>,
    rate: Option<Rate>,
}

/// Parses a `--provider` value: the inside of a TOML inline table, e.g.
/// `name = "acme", mx_suffixes = ["mx.acme.example"], connections = 2, rate = "10/s"`.
pub fn parse_provider(s: &str) -> Result<ProviderOverride, ProviderError> {
    let wrapped = format!("p = {{ {s} }}");
    #[derive(Deserialize)]
    struct W {
        p: SpecInput,
    }
    let w: W = toml::from_str(&wrapped).map_err(|e| ProviderError::Syntax(e.message().into()))?;
    let i = w.p;
    let name = i
        .name
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| ProviderError::Incomplete(s.into()))?;
    let rate = match i.rate {
        Some(r) => Some(r.parse().map_err(|source| ProviderError::Rate {
            name: name.clone(),
            source,
        })?),
        None => None,
    };
    let nonzero = |n: Option<usize>| n.map(|n| n.max(1));
    Ok(ProviderOverride {
        name,
        mx_suffixes: i
            .mx_suffixes
            .map(|v| v.iter().map(|s| normalise(s)).collect()),
        connections: nonzero(i.connections),
        messages_per_connection: nonzero(i.messages_per_connection),
        rate,
    })
}

/// Lower case, no leading or trailing dot.
fn normalise(name: &str) -> String {
    name.trim().trim_matches('.').to_ascii_lowercase()
}

/// KumoMTA's default limits for any provider: 10 connections, 100 messages per connection.
const DEFAULT_CONNECTIONS: usize = 10;
const DEFAULT_PER_CONNECTION: usize = 100;

/// The built-in providers (REFERENCE: KumoMTA's shaping data).
pub fn builtin() -> Vec<ProviderSpec> {
    let p = |name: &str, suffixes: &[&str], connections, per_connection| ProviderSpec {
        name: name.into(),
        mx_suffixes: suffixes.iter().map(|s| s.to_string()).collect(),
        connections,
        messages_per_connection: per_connection,
        rate: None,
    };
    vec![
        p(
            "google",
            &["google.com", "googlemail.com", "smtp.goog"],
            5,
            50,
        ),
        p("microsoft", &["outlook.com", "hotmail.com"], 5, 50),
        p("yahoo", &["yahoodns.net"], DEFAULT_CONNECTIONS, 20),
        p("apple", &["mail.icloud.com", "me.com"], 10, 5),
        p("comcast", &["comcast.net"], 25, DEFAULT_PER_CONNECTION),
        p("gmx", &["gmx.net", "web.de", "gmx.com"], 4, 20),
        p(
            "orange",
            &["orange.fr", "wanadoo.fr"],
            3,
            DEFAULT_PER_CONNECTION,
        ),
        p("mimecast", &["mimecast.com"], 10, 100),
        p(
            "proofpoint",
            &["pphosted.com", "ppe-hosted.com"],
            DEFAULT_CONNECTIONS,
            DEFAULT_PER_CONNECTION,
        ),
    ]
}

/// The providers in force: the built-in table with the user's overrides applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Providers {
    specs: Vec<Arc<ProviderSpec>>,
}

impl Default for Providers {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl Providers {
    /// The built-in table changed by `overrides` (same name: changed; new name: added).
    pub fn new(overrides: &[ProviderOverride]) -> Self {
        let mut specs = builtin();
        for o in overrides {
            let at = specs.iter().position(|s| s.name == o.name);
            let spec = match at {
                Some(i) => &mut specs[i],
                None => {
                    specs.push(ProviderSpec {
                        name: o.name.clone(),
                        mx_suffixes: Vec::new(),
                        connections: DEFAULT_CONNECTIONS,
                        messages_per_connection: DEFAULT_PER_CONNECTION,
                        rate: None,
                    });
                    specs.last_mut().expect("just pushed")
                }
            };
            if let Some(v) = &o.mx_suffixes {
                spec.mx_suffixes.clone_from(v);
            }
            spec.connections = o.connections.unwrap_or(spec.connections);
            spec.messages_per_connection = o
                .messages_per_connection
                .unwrap_or(spec.messages_per_connection);
            spec.rate = o.rate.or(spec.rate);
        }
        Self {
            specs: specs.into_iter().map(Arc::new).collect(),
        }
    }

    /// Every provider, built-in first.
    pub fn specs(&self) -> &[Arc<ProviderSpec>] {
        &self.specs
    }

    /// The provider whose suffix matches `host` (the longest matching suffix wins, so a
    /// user's `eu.mimecast.com` beats the built-in `mimecast.com`).
    pub fn for_host(&self, host: &str) -> Option<&Arc<ProviderSpec>> {
        let host = normalise(host);
        self.specs
            .iter()
            .filter_map(|p| {
                let best = p
                    .mx_suffixes
                    .iter()
                    .filter(|s| {
                        !s.is_empty()
                            && (host == **s
                                || host
                                    .strip_suffix(s.as_str())
                                    .is_some_and(|rest| rest.ends_with('.')))
                    })
                    .map(String::len)
                    .max()?;
                Some((best, p))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, p)| p)
    }

    /// The provider of a site: that of its first MX host that has one.
    pub fn for_hosts(&self, hosts: &[MxHost]) -> Option<&Arc<ProviderSpec>> {
        hosts.iter().find_map(|h| self.for_host(&h.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_names_map_to_their_provider() {
        let p = Providers::default();
        let name = |h: &str| p.for_host(h).map(|s| s.name.as_str());
        assert_eq!(name("gmail-smtp-in.l.google.com."), Some("google"));
        assert_eq!(name("ASPMX.L.GOOGLE.COM"), Some("google"));
        assert_eq!(name("alt1.aspmx.l.google.com"), Some("google"));
        assert_eq!(name("mx1.smtp.goog"), Some("google"));
        assert_eq!(
            name("acme-example.mail.protection.outlook.com"),
            Some("microsoft")
        );
        assert_eq!(name("eur.olc.protection.outlook.com"), Some("microsoft"));
        assert_eq!(name("mta5.am0.yahoodns.net"), Some("yahoo"));
        assert_eq!(name("mx01.mail.icloud.com"), Some("apple"));
        assert_eq!(name("mx0a-001.pphosted.com"), Some("proofpoint"));
        assert_eq!(name("mx00.emig.gmx.net"), Some("gmx"));
        assert_eq!(name("notgoogle.com"), None, "a suffix matches whole labels");
        assert_eq!(name("mx.example.com"), None);
    }

    #[test]
    fn built_in_limits_follow_kumomta() {
        let p = Providers::default();
        let get = |n: &str| p.specs().iter().find(|s| s.name == n).cloned().unwrap();
        assert_eq!(
            (
                get("google").connections,
                get("google").messages_per_connection
            ),
            (5, 50)
        );
        assert_eq!(get("yahoo").messages_per_connection, 20);
        assert_eq!(
            (
                get("apple").connections,
                get("apple").messages_per_connection
            ),
            (10, 5)
        );
        assert_eq!(get("orange").connections, 3);
        assert_eq!(
            (get("gmx").connections, get("gmx").messages_per_connection),
            (4, 20)
        );
    }

    #[test]
    fn overrides_change_a_built_in_provider_or_add_one() {
        let google = parse_provider(r#"name = "google", connections = 2, rate = "100/s""#).unwrap();
        let acme =
            parse_provider(r#"name = "acme", mx_suffixes = ["MX.Acme.Example."], connections = 3"#)
                .unwrap();
        let p = Providers::new(&[google, acme]);
        let g = p.for_host("aspmx.l.google.com").unwrap();
        assert_eq!((g.connections, g.messages_per_connection), (2, 50));
        assert_eq!(g.rate, "100/s".parse().ok());
        let a = p.for_host("in1.mx.acme.example").unwrap();
        assert_eq!((a.name.as_str(), a.connections), ("acme", 3));
        assert!(parse_provider("connections = 3").is_err());
        assert!(parse_provider(r#"name = "x", rate = "fast""#).is_err());
        assert!(parse_provider(r#"name = "x", colour = 1"#).is_err());
    }
}
