//! Route: one MX lookup per destination domain (RFC 5321 §5.1), domains with the same MX
//! hosts grouped into sites, every row still to send placed in its site. Rows whose domain
//! has no usable route (null MX, NXDOMAIN, no address, DNS failure) are decided here.
//!
//! Each site is matched to its mailbox provider by its MX host names ([`crate::provider`]),
//! and rows beyond today's cap for their provider (`--daily-cap`, `--warmup`) are decided
//! here too: `deferred`, step `cap`, sent by a later day's run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::prepare::Campaign;
use super::secure;
use super::triage::Rows;
use super::{RunConfig, RunError};
use crate::delivery::{DeliveryOptions, SiteWork};
use crate::mx::{self, MxResolver, Route};
use crate::outcome::{Outcome, Status, Step};
use crate::provider::Providers;
use crate::provider::caps::{self, CapBook};
use crate::report::PlanSite;
use crate::smtp::{EnhancedCode, Reply};

/// The rows still to send, by site.
pub(super) struct Routes {
    /// Per site: its hosts and rows, as the delivery engine takes them.
    pub work: Vec<SiteWork>,
    /// Per site: its MX hosts as shown in the plan (`name (pref N)`).
    pub hosts: Vec<Vec<String>>,
    /// Each row's site index (for progress), `u32::MAX` for none: 4 bytes per row.
    pub site_of_row: Vec<u32>,
    /// Outcomes decided by DNS or a daily cap, not yet stored (the send stage journals them
    /// first).
    pub decided: Vec<(usize, Outcome)>,
    /// Each routed domain's provider (the results' `provider` column).
    pub provider_of: HashMap<String, Arc<str>>,
    /// What the published-policy lookups found worth saying (the summary's `tls:` lines).
    pub tls_notes: Vec<String>,
}

impl Routes {
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

/// Resolves every domain once and routes the pending rows.
pub(super) async fn route(
    cfg: &RunConfig,
    job: &Campaign,
    rows: &mut Rows,
) -> Result<Routes, RunError> {
    let resolver = MxResolver::new(&cfg.dns)?;
    let routes = resolver.routes(std::mem::take(&mut rows.domains)).await;
    let policies = secure::lookup(cfg, &routes).await?;
    let sites = mx::group_sites_by(&routes, |d| policies.site_key(d));
    let site_of: HashMap<&str, usize> = sites
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.domains.iter().map(move |d| (d.as_str(), i)))
        .collect();
    let providers = Providers::new(&cfg.delivery.provider);
    let mut out = Routes {
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
        site_of_row: vec![u32::MAX; job.list.len()],
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
    for (i, row) in job.list.iter().enumerate() {
        if !rows.outcomes.is_pending(i) {
            continue;
        }
        let Ok(addr) = &row.status else { continue };
        let route = routes.get(addr.domain());
        count_dns(&mut rows.plan, route);
        let site = site_of.get(addr.domain());
        match (route.and_then(dns_outcome), site) {
            (None, Some(&s)) => {
                out.work[s].rows.push(i);
                out.site_of_row[i] = s as u32;
            }
            (decided, _) => {
                let o = decided.unwrap_or_else(|| {
                    Outcome::local(Status::Deferred, Step::Dns, "no DNS answer for the domain")
                });
                rows.outcomes.set_decided(i);
                out.decided.push((i, o));
            }
        }
    }
    apply_caps(cfg, job, &mut out, rows)?;
    Ok(out)
}

/// Holds back the rows beyond today's cap of their provider (or unknown site), in list
/// order, and counts the rest against it in the state file beside the journal (not in a
/// plan, which sends nothing).
fn apply_caps(
    cfg: &RunConfig,
    job: &Campaign,
    out: &mut Routes,
    rows: &mut Rows,
) -> Result<(), RunError> {
    let o = &cfg.delivery;
    let warmup = o.warmup.clone().unwrap_or_default();
    if o.daily_cap.is_none() && warmup.0.is_empty() {
        return Ok(());
    }
    let path = caps::path_beside(&job.journal_path);
    let mut book = CapBook::load(&path, caps::today());
    let cap = book.cap(o.daily_cap, &warmup);
    // Sites of one provider share its cap: admit in list order across them.
    let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
    for (s, w) in out.work.iter().enumerate() {
        let key = w
            .provider
            .as_ref()
            .map_or(w.name.to_string(), |p| p.name.clone());
        by_key.entry(key).or_default().push(s);
    }
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort();
    for (key, site_ids) in keys {
        let mut all: Vec<(usize, usize)> = site_ids
            .iter()
            .flat_map(|&s| out.work[s].rows.iter().map(move |&r| (r, s)))
            .collect();
        all.sort_unstable();
        let admitted = book.admit(&key, all.len(), cap);
        let counted = all[..admitted].iter().map(|(r, _)| *r).collect();
        let held: HashSet<usize> = all[admitted..].iter().map(|(r, _)| *r).collect();
        for &s in &site_ids {
            out.work[s].rows.retain(|r| !held.contains(r));
        }
        for &(row, _) in &all[admitted..] {
            out.site_of_row[row] = u32::MAX;
            rows.outcomes.set_decided(row);
            let mut o = Outcome::local(
                Status::Deferred,
                Step::Cap,
                format!(
                    "beyond today's cap of {} messages for {key}",
                    cap.unwrap_or(0)
                ),
            );
            o.enhanced = Some(EnhancedCode::new(4, 7, 0));
            out.decided.push((row, o));
        }
        rows.cap_counted.push((key, counted));
    }
    if cfg.mode == super::RunMode::Send {
        book.save(&path).map_err(|source| RunError::Results {
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}

fn count_dns(plan: &mut crate::report::Plan, route: Option<&Route>) {
    match route {
        Some(Route::NullMx) => plan.null_mx += 1,
        Some(Route::NoSuchDomain) => plan.nxdomain += 1,
        Some(Route::NoAddress(_)) => plan.no_address += 1,
        Some(Route::TempFail(_)) | None => plan.dns_tempfail += 1,
        Some(Route::Hosts(_)) => {}
    }
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
