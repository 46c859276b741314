//! Route: one MX lookup per destination domain (RFC 5321 §5.1), domains with the same MX
//! hosts grouped into sites, every row still to send placed in its site. Rows whose domain
//! has no usable route (null MX, NXDOMAIN, no address, DNS failure) are decided here; the
//! sending stage settles them in the ledger (after journaling them).
//!
//! Each site is matched to its mailbox provider by its MX host names ([`crate::provider`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::ledger::Ledger;
use super::prepare::Campaign;
use super::secure;
use super::triage::Domains;
use super::{RunConfig, RunError};
use crate::delivery::{DeliveryOptions, SiteWork};
use crate::mx::{self, MxResolver, Route};
use crate::outcome::{Outcome, Status, Step};
use crate::provider::Providers;
use crate::report::PlanSite;
use crate::smtp::{EnhancedCode, Reply};
use crate::tls_policy::mta_sts::Lookup;

/// The rows still to send, by site, and the rows DNS decided.
pub(super) struct Routed {
    /// Per site: its hosts and rows, as the delivery engine takes them.
    pub work: Vec<SiteWork>,
    /// Per site: its MX hosts as shown in the plan (`name (pref N)`).
    pub hosts: Vec<Vec<String>>,
    /// Each row's site index (for progress), `u32::MAX` for none: 4 bytes per row.
    pub site_of_row: Vec<u32>,
    /// Rows decided without sending (by DNS, later by a daily cap), not yet settled: the
    /// sending stage journals them first.
    pub decided: Vec<(usize, Outcome)>,
    /// Each routed domain's provider (the results' `provider` column).
    pub provider_of: HashMap<String, Arc<str>>,
    /// What the published-policy lookups found worth saying (the summary's `tls:` lines).
    pub tls_notes: Vec<String>,
}

impl Routed {
    /// Rows the engine will be handed.
    pub fn to_send(&self) -> usize {
        self.work.iter().map(|w| w.rows.len()).sum()
    }

    /// The plan's sites: messages and estimated connections, rows in `invalid` left out.
    pub fn plan_sites(&self, invalid: &HashSet<usize>, opts: &DeliveryOptions) -> Vec<PlanSite> {
        let per_site = opts.connections_per_site.get();
        let per_connection = opts.messages_per_connection.get();
        self.work
            .iter()
            .zip(&self.hosts)
            .filter_map(|(w, hosts)| {
                let n = w.rows.iter().filter(|r| !invalid.contains(r)).count();
                (n > 0).then(|| PlanSite {
                    name: w.name.to_string(),
                    hosts: hosts.clone(),
                    messages: n,
                    connections: per_site.min(n).max(n.div_ceil(per_connection)),
                    tls_policy: w.tls.describe(&w.hosts),
                })
            })
            .collect()
    }
}

/// What DNS says of one domain: its route, and its MTA-STS answer when it has MX hosts (and
/// policies are looked up).
type Answer = (Route, Option<Lookup>);

/// Lookups under way for the domains named so far: they start before routing, as triage finds
/// each domain to send to. A domain's MTA-STS lookup follows its MX answer.
pub(super) struct Lookups {
    task: tokio::task::JoinHandle<HashMap<String, Answer>>,
    sts: Option<secure::Sts>,
}

impl Lookups {
    /// Starts a resolver that looks up each domain named on the returned sender.
    pub(super) fn start(cfg: &RunConfig) -> Result<(UnboundedSender<String>, Self), RunError> {
        let resolver = MxResolver::new(&cfg.dns)?;
        let sts = secure::Sts::new(cfg)?;
        let (found, named) = tokio::sync::mpsc::unbounded_channel();
        let (concurrency, policies) = (cfg.dns.concurrency, sts.clone());
        let task = tokio::spawn(mx::each_named(named, concurrency, move |domain| {
            let (resolver, policies) = (resolver.clone(), policies.clone());
            async move {
                let route = resolver.route(&domain).await;
                let sts = match (&route, policies) {
                    (Route::Hosts(_), Some(p)) => Some(p.lookup(&domain).await),
                    _ => None,
                };
                (route, sts)
            }
        }));
        Ok((found, Self { task, sts }))
    }

    /// The answers, once the sender is dropped (none if the runtime is shutting down: route
    /// then looks up what is missing): the routes, and the MTA-STS resolver with what it
    /// found.
    async fn answers(
        self,
    ) -> (
        HashMap<String, Route>,
        (Option<secure::Sts>, HashMap<String, Lookup>),
    ) {
        let answers = self
            .task
            .await
            .unwrap_or_else(|e| match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => HashMap::new(),
            });
        let mut routes = HashMap::with_capacity(answers.len());
        let mut sts = HashMap::new();
        for (domain, (route, found)) in answers {
            if let Some(found) = found {
                sts.insert(domain.clone(), found);
            }
            routes.insert(domain, route);
        }
        (routes, (self.sts, sts))
    }
}

/// Routes the rows the ledger still has pending, given their domains and the MX lookups
/// started for them (a domain left without an answer is looked up now).
pub(super) async fn route(
    cfg: &RunConfig,
    campaign: &Campaign,
    ledger: &Ledger,
    (domains, lookups): (Domains, Lookups),
) -> Result<Routed, RunError> {
    let (mut routes, sts) = lookups.answers().await;
    let missing: Vec<String> = domains
        .names
        .iter()
        .filter(|d| !routes.contains_key(*d))
        .cloned()
        .collect();
    if !missing.is_empty() {
        routes.extend(MxResolver::new(&cfg.dns)?.routes(missing).await);
    }
    let policies = secure::lookup(cfg, &routes, sts).await?;
    let sites = mx::group_sites_by(&routes, |d| policies.site_key(d));
    let site_of: HashMap<&str, usize> = sites
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.domains.iter().map(move |d| (d.as_str(), i)))
        .collect();
    let providers = Providers::new(&cfg.delivery.provider);
    let mut out = Routed {
        work: sites
            .iter()
            .map(|s| SiteWork {
                name: s.name.as_str().into(),
                hosts: s.hosts.clone(),
                rows: Vec::new(),
                provider: providers.for_hosts(&s.hosts).cloned(),
                tls: policies.site(&s.domains),
            })
            .collect(),
        hosts: sites
            .iter()
            .map(|s| {
                s.hosts
                    .iter()
                    .map(|h| format!("{} (pref {})", h.name, h.preference))
                    .collect()
            })
            .collect(),
        site_of_row: vec![u32::MAX; campaign.list.len()],
        decided: Vec::new(),
        provider_of: HashMap::new(),
        tls_notes: policies.notes.clone(),
    };
    for (site, work) in sites.iter().zip(&out.work) {
        if let Some(p) = &work.provider {
            let name: Arc<str> = p.name.as_str().into();
            for d in &site.domains {
                out.provider_of.insert(d.clone(), name.clone());
            }
        }
    }
    // Each pending row's domain is triage's: no row is read again.
    for i in (0..campaign.list.len()).filter(|&i| ledger.is_pending(i)) {
        let Some(domain) = domains.of_row(i) else {
            continue;
        };
        let route = routes.get(domain);
        let site = site_of.get(domain);
        match (route.and_then(dns_outcome), site) {
            (None, Some(&s)) => {
                out.work[s].rows.push(i);
                out.site_of_row[i] = s as u32;
            }
            (decided, _) => {
                let o = decided.unwrap_or_else(|| {
                    Outcome::local(Status::Deferred, Step::Dns, "no DNS answer for the domain")
                });
                out.decided.push((i, o));
            }
        }
    }
    Ok(out)
}

/// The outcome of a domain that DNS already settled, `None` when it has MX hosts.
fn dns_outcome(route: &Route) -> Option<Outcome> {
    let (status, code, e, text) = match route {
        Route::Hosts(_) => return None,
        Route::NullMx => (
            Status::Bounced,
            556,
            EnhancedCode::new(5, 1, 10),
            "domain publishes a null MX (RFC 7505): it accepts no mail".to_string(),
        ),
        Route::NoSuchDomain => (
            Status::Bounced,
            550,
            EnhancedCode::new(5, 1, 2),
            "domain does not exist (NXDOMAIN)".to_string(),
        ),
        Route::NoAddress(t) => (Status::Bounced, 550, EnhancedCode::new(5, 4, 4), t.clone()),
        Route::TempFail(t) => (Status::Deferred, 451, EnhancedCode::new(4, 4, 3), t.clone()),
    };
    Some(Outcome::from_reply(
        status,
        Step::Dns,
        &Reply::local(code, e, text),
    ))
}
