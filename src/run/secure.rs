//! Secure: the TLS policies receivers publish, looked up once per run between the
//! MX lookups and the grouping into sites: each routed domain's MTA-STS policy (RFC 8461) and
//! each MX host's DANE TLSA records (RFC 7672), so that the delivery engine only has to ask
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

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{RunConfig, RunError};
use crate::mx::Route;
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

/// Looks up the policies of every routed domain and MX host (nothing with `--tls-policy
/// opportunistic`).
pub(super) async fn lookup(
    cfg: &RunConfig,
    routes: &HashMap<String, Route>,
) -> Result<Policies, RunError> {
    let opts = &cfg.transport;
    if opts.tls_policy == PolicyMode::Opportunistic {
        return Ok(Policies::default());
    }
    let domains: Vec<String> = routes
        .iter()
        .filter(|(_, r)| matches!(r, Route::Hosts(_)))
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
    let sts = mta_sts(cfg, domains, &mut notes).await?;
    let dane = dane_hosts(cfg, hosts, &mut notes).await?;
    Ok(Policies {
        sts,
        dane: Arc::new(dane),
        notes,
    })
}

/// Each domain's MTA-STS policy, at most `--dns` concurrency lookups at once; the cache is
/// saved afterwards.
async fn mta_sts(
    cfg: &RunConfig,
    domains: Vec<String>,
    notes: &mut Vec<String>,
) -> Result<HashMap<String, Arc<Policy>>, RunError> {
    let resolver = Arc::new(
        StsResolver::new(StsOptions {
            dns: cfg.dns.clone(),
            https_port: cfg.transport.mta_sts_port,
            timeout: FETCH_TIMEOUT,
            extra_roots: cfg.tls_extra_roots.clone(),
            cache: cfg.transport.mta_sts_cache.clone(),
        })
        .map_err(|e| RunError::TlsPolicy(format!("MTA-STS: {e}")))?,
    );
    let limit = Arc::new(Semaphore::new(cfg.dns.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for domain in domains {
        let (resolver, limit) = (resolver.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let found = resolver.lookup(&domain).await;
            (domain, found)
        });
    }
    let mut out = HashMap::new();
    let mut unavailable = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let Ok((domain, found)) = done else { continue };
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
    if let Err(e) = resolver.save() {
        notes.push(format!("MTA-STS cache not saved: {e}"));
    }
    Ok(out)
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
    let limit = Arc::new(Semaphore::new(cfg.dns.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for host in hosts {
        let (resolver, limit) = (resolver.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let found = resolver.tlsa(&host, SMTP_PORT).await;
            (host, found)
        });
    }
    let mut out = DaneHosts::new();
    while let Some(done) = tasks.join_next().await {
        let Ok((host, found)) = done else { continue };
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
