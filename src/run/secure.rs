//! Secure: the TLS policies receivers publish, looked up once per run before the grouping into
//! sites: each routed domain's MTA-STS policy (RFC 8461), looked up as soon as its MX answer
//! comes in ([`Sts`], during triage), and each MX host's DANE TLSA records (RFC 7672), so that
//! the delivery engine only has to ask
//! [`SiteTls::rule`](crate::tls_policy::SiteTls::rule) before each connection.
//!
//! DANE needs DNSSEC answers validated here, from the root trust anchor (or
//! `--dnssec-trust-anchor`). When the DNS path cannot be validated at all (a resolver that
//! strips DNSSEC, the sandbox's server), DANE is off for the run and the summary says so, as
//! Postfix treats a non-validating resolver; once validation works, a bogus or failed TLSA
//! answer makes that host unusable rather than unauthenticated.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::{RunConfig, RunError};
use crate::mx::{self, Route};
use crate::tls_policy::dane::{self, DaneResolver, TlsaLookup};
use crate::tls_policy::mta_sts::{Lookup, Mode, Policy, StsOptions, StsResolver};
use crate::tls_policy::{DaneHost, DaneHosts, PolicyMode, SiteTls};

/// How long fetching one MTA-STS policy may take (RFC 8461 §3.3 suggests a minute at most).
const FETCH_TIMEOUT: Duration = Duration::from_secs(20);

/// The port TLSA records are published for (`_25._tcp.<mx>`), whatever port the run connects
/// to.
const SMTP_PORT: u16 = 25;

/// The run's published policies.
#[derive(Debug, Default)]
pub(super) struct Policies {
    /// Each domain's MTA-STS policy in force (`enforce` or `testing`).
    pub sts: HashMap<String, Arc<Policy>>,
    /// The DANE state of MX hosts that publish TLSA records.
    pub dane: Arc<DaneHosts>,
    /// What the summary should say about the lookups (DANE off, unfetchable policies).
    pub notes: Vec<String>,
}

impl Policies {
    /// What a site whose domains are `domains` (all with the same MTA-STS key) requires.
    pub fn site(&self, domains: &[String]) -> Arc<SiteTls> {
        Arc::new(SiteTls {
            sts: domains.first().and_then(|d| self.sts.get(d)).cloned(),
            dane: self.dane.clone(),
        })
    }

    /// The key that keeps `domain` apart from domains with another MTA-STS policy.
    pub fn site_key(&self, domain: &str) -> Option<String> {
        SiteTls::site_key(self.sts.get(domain).map(|p| &**p))
    }
}

/// A run's MTA-STS lookups: one resolver (and its cache) for every domain.
#[derive(Clone)]
pub(super) struct Sts(Arc<StsResolver>);

impl Sts {
    /// The resolver; `None` with `--tls-policy opportunistic` (no policy is looked up).
    pub fn new(cfg: &RunConfig) -> Result<Option<Self>, RunError> {
        if cfg.transport.tls_policy == PolicyMode::Opportunistic {
            return Ok(None);
        }
        let resolver = StsResolver::new(StsOptions {
            dns: cfg.dns.clone(),
            https_port: cfg.transport.mta_sts_port,
            timeout: FETCH_TIMEOUT,
            extra_roots: cfg.tls_extra_roots.clone(),
            cache: cfg.transport.mta_sts_cache.clone(),
        })
        .map_err(|e| RunError::TlsPolicy(format!("MTA-STS: {e}")))?;
        Ok(Some(Self(Arc::new(resolver))))
    }

    /// `domain`'s policy.
    pub async fn lookup(&self, domain: &str) -> Lookup {
        self.0.lookup(domain).await
    }
}

/// The policies of every routed domain and MX host (nothing with `--tls-policy
/// opportunistic`). `sts` holds the MTA-STS answers found already; a routed domain without
/// one is looked up now.
pub(super) async fn lookup(
    cfg: &RunConfig,
    routes: &HashMap<String, Route>,
    (resolver, mut sts): (Option<Sts>, HashMap<String, Lookup>),
) -> Result<Policies, RunError> {
    let Some(resolver) = resolver else {
        return Ok(Policies::default());
    };
    let missing: Vec<String> = routes
        .iter()
        .filter(|(d, r)| matches!(r, Route::Hosts(_)) && !sts.contains_key(*d))
        .map(|(d, _)| d.clone())
        .collect();
    let hosts: BTreeSet<String> = routes
        .values()
        .filter_map(|r| match r {
            Route::Hosts(h) => Some(h.iter().map(|h| h.name.clone())),
            _ => None,
        })
        .flatten()
        .collect();
    let mut notes = Vec::new();
    let looked_up = mx::each_named(mx::names_of(missing), cfg.dns.concurrency, |domain| {
        let resolver = resolver.clone();
        async move { resolver.lookup(&domain).await }
    });
    sts.extend(looked_up.await);
    let sts = policies_in_force(&resolver, routes, sts, &mut notes);
    let dane = dane_hosts(cfg, hosts, &mut notes).await?;
    Ok(Policies {
        sts,
        dane: Arc::new(dane),
        notes,
    })
}

/// The policies in force of the routed domains (a domain without MX hosts has none), with
/// the policies that could not be fetched named in `notes`; the cache is saved.
fn policies_in_force(
    resolver: &Sts,
    routes: &HashMap<String, Route>,
    found: HashMap<String, Lookup>,
    notes: &mut Vec<String>,
) -> HashMap<String, Arc<Policy>> {
    let mut out = HashMap::new();
    let mut unavailable = Vec::new();
    for (domain, found) in found {
        if !matches!(routes.get(&domain), Some(Route::Hosts(_))) {
            continue;
        }
        match found {
            Lookup::Policy { policy, .. } if policy.mode != Mode::None => {
                out.insert(domain, policy);
            }
            Lookup::Unavailable(why) => unavailable.push(format!("{domain} ({why})")),
            Lookup::Policy { .. } | Lookup::NoPolicy => {}
        }
    }
    unavailable.sort();
    if !unavailable.is_empty() {
        notes.push(format!(
            "MTA-STS policy announced but not fetched, sent as without one (RFC 8461 §5): {}",
            unavailable.join(", ")
        ));
    }
    if let Err(e) = resolver.0.save() {
        notes.push(format!("MTA-STS cache not saved: {e}"));
    }
    out
}

/// The DANE state of each MX host that has TLSA records; none when DNSSEC cannot be validated
/// on this DNS path.
async fn dane_hosts(
    cfg: &RunConfig,
    hosts: BTreeSet<String>,
    notes: &mut Vec<String>,
) -> Result<DaneHosts, RunError> {
    if hosts.is_empty() {
        return Ok(DaneHosts::new());
    }
    let anchor = cfg.transport.dnssec_trust_anchor.as_deref();
    let resolver = Arc::new(
        DaneResolver::new(&cfg.dns, anchor)
            .map_err(|e| RunError::TlsPolicy(format!("DANE: {e}")))?,
    );
    if let Err(why) = resolver.available().await {
        notes.push(format!(
            "DANE not checked: DNSSEC cannot be validated on this DNS path ({why})"
        ));
        return Ok(DaneHosts::new());
    }
    let found = mx::each_named(mx::names_of(hosts), cfg.dns.concurrency, |host| {
        let resolver = resolver.clone();
        async move { resolver.tlsa(&host, SMTP_PORT).await }
    });
    let mut out = DaneHosts::new();
    for (host, found) in found.await {
        if let Some(state) = dane_state(&host, found) {
            out.insert(host, state);
        }
    }
    Ok(out)
}

/// What a TLSA answer means for a host: `None` when DANE does not apply.
fn dane_state(host: &str, found: TlsaLookup) -> Option<DaneHost> {
    Some(match found {
        TlsaLookup::None => return None,
        TlsaLookup::Bogus(why) => DaneHost::Unusable(format!("TLSA answer is bogus: {why}")),
        TlsaLookup::Failed(why) => DaneHost::Unusable(format!("TLSA lookup failed: {why}")),
        TlsaLookup::Secure(records) => {
            let usable = dane::usable(&records);
            if usable.is_empty() {
                DaneHost::EncryptOnly
            } else {
                match dane::client_config(&usable, host) {
                    Ok(config) => DaneHost::Verify(config),
                    Err(e) => DaneHost::Unusable(e.to_string()),
                }
            }
        }
    })
}
