//! Sender: after shard selection, what the sending identities remember
//! ([`crate::sender`]) is applied to this process's sites before anything is sent, and what
//! the run learnt is written back at the end.
//!
//! - A receiver suspended (from every source address) until after the run's deadline gets no
//!   connection: its rows end `deferred`, step `suspended`, saying until when and why.
//! - Daily caps (`--daily-cap`, `[warmup]`) are reserved in the store per identity, in one
//!   atomic step per receiver, before sending: rows beyond what was reserved end `deferred`,
//!   step `cap`; each gate may send what was reserved for its address. When the run ends the
//!   counts are set to what the receivers answered (a killed run keeps its reservation: it
//!   never exceeds a cap, it may send less).
//! - Each gate starts from its identity's learnt limits and holds; the lessons of the run
//!   (limits learnt, holds in force) are merged back.
//! - Sessions with an MX address start in the SMTP dialect an earlier run learnt it needs
//!   (a server that swallows commands behind the dot is not waited on again), for
//!   [`crate::sender::DIALECT_KEPT`].
//!
//! Only this process's sites are seen here, so a shard reserves (and holds back) its own
//! receivers only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::route::Routed;
use super::send::Sent;
use super::{RunConfig, RunError, RunMode};
use crate::clock::hh_mm;
use crate::delivery::{GateMemory, LearntDialect, RecalledHold, SiteWork};
use crate::outcome::{Outcome, Status, Step};
use crate::sender::{CapRule, DialectNote, Identity, Memory, SenderStore};
use crate::smtp::Dialect;
use crate::smtp::EnhancedCode;

/// What the run took from the store, and what it needs to write back.
pub(super) struct Remembered {
    store: Option<Arc<dyn SenderStore>>,
    /// What each identity's gate starts from.
    pub memory: HashMap<Identity, GateMemory>,
    /// Each site's receiver (the provider, or the unknown site's MX hosts) and whether its
    /// identities are per source address (a provider's are), by site index.
    receivers: Vec<(String, bool)>,
    /// Messages reserved per identity under a daily cap.
    reserved: Vec<(Identity, usize)>,
    /// The UTC day reservations and counts are for.
    day: u64,
    /// What the summary (and `check`) says about it.
    pub notes: Vec<String>,
    /// Dialects earlier runs learnt per MX address (not expired): sessions start in them.
    pub dialects: Vec<LearntDialect>,
}

/// A remembered dialect as the engine takes it (`None`: an entry this version cannot read).
fn learnt_dialect(n: &DialectNote) -> Option<LearntDialect> {
    Some(LearntDialect {
        host: n.host.clone(),
        ip: n.ip.parse().ok()?,
        dialect: Dialect::parse(&n.dialect)?,
        learnt_at: UNIX_EPOCH + Duration::from_secs(n.at),
    })
}

/// What the store keeps of a dialect learnt this run.
fn dialect_note((learnt, reason): &(LearntDialect, String)) -> DialectNote {
    DialectNote {
        host: learnt.host.clone(),
        ip: learnt.ip.to_string(),
        dialect: learnt.dialect.as_str().to_string(),
        reason: reason.clone(),
        at: learnt
            .learnt_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// The receiver a site's gate is named for.
fn receiver_of(site: &SiteWork) -> String {
    match &site.provider {
        Some(p) => p.name.clone(),
        None => crate::mx::site_name(&site.hosts),
    }
}

/// Opens the store the run uses, if any: first thing in a run, so that an unusable store stops
/// it before any lookup, let alone any message.
pub(super) async fn open(cfg: &RunConfig) -> Result<Option<Arc<dyn SenderStore>>, RunError> {
    let Some(location) = &cfg.state else {
        return Ok(None);
    };
    Ok(Some(crate::sender::open(location).await?))
}

/// Recalls what each identity of this run's sites remembers, settles the rows of receivers
/// suspended through the deadline and reserves today's caps (moving the rows beyond them
/// to `routed.decided`).
pub(super) async fn recall(
    cfg: &RunConfig,
    store: Option<Arc<dyn SenderStore>>,
    routed: &mut Routed,
) -> Result<Remembered, RunError> {
    let (now, day) = (cfg.clock.unix(), cfg.clock.day());
    let receivers: Vec<(String, bool)> = routed
        .work
        .iter()
        .map(|w| (receiver_of(w), w.provider.is_some()))
        .collect();
    let groups = identities(cfg, routed, &receivers);
    let ids: Vec<Identity> = groups.values().flatten().cloned().collect();
    let memories = match &store {
        Some(s) => s.recall(&ids, day, now).await?,
        None => vec![Memory::default(); ids.len()],
    };
    let by_id: HashMap<Identity, Memory> = ids.into_iter().zip(memories).collect();
    let dialects = match &store {
        Some(s) => s
            .dialects(now)
            .await?
            .iter()
            .filter_map(learnt_dialect)
            .collect(),
        None => Vec::new(),
    };
    let mut out = Remembered {
        dialects,
        store,
        memory: HashMap::new(),
        receivers,
        reserved: Vec::new(),
        day,
        notes: Vec::new(),
    };
    let deadline = now + cfg.delivery.deadline.as_secs();
    let rule = CapRule {
        daily: cfg.delivery.daily_cap,
        warmup: cfg.delivery.warmup.clone().unwrap_or_default(),
    };
    for (receiver, group) in &groups {
        let sites: Vec<usize> = (0..routed.work.len())
            .filter(|&s| out.receivers[s].0 == *receiver)
            .collect();
        if let Some(text) = suspended_through(group, &by_id, now, deadline) {
            hold_back(routed, &sites, Step::Suspended, &text);
            out.notes.push(format!("{receiver}: {text}"));
            continue;
        }
        let budgets = out
            .reserve(cfg, routed, (receiver, group), &sites, &rule, &by_id)
            .await?;
        for (id, budget) in group.iter().zip(budgets) {
            let m = &by_id[id];
            let limits = limits_of(cfg, &routed.work[sites[0]]);
            out.memory
                .insert(id.clone(), gate_memory(m, now, limits, budget));
        }
    }
    Ok(out)
}

/// Each receiver's identities: a provider's per source address of the `--source-ip` pool (its
/// limits are per sending IP), an unknown site's one (its gate serves every address).
fn identities(
    cfg: &RunConfig,
    routed: &Routed,
    receivers: &[(String, bool)],
) -> BTreeMap<String, Vec<Identity>> {
    let mut pool: Vec<Option<std::net::IpAddr>> = Vec::new();
    for ip in &cfg.delivery.source_ip {
        if !pool.contains(&Some(ip.addr)) {
            pool.push(Some(ip.addr));
        }
    }
    if pool.is_empty() {
        pool.push(None);
    }
    let mut groups = BTreeMap::new();
    for (receiver, per_source) in receivers.iter().take(routed.work.len()) {
        groups.entry(receiver.clone()).or_insert_with(|| {
            let sources = if *per_source { &pool[..] } else { &[None][..] };
            sources
                .iter()
                .map(|a| Identity::new(receiver, *a))
                .collect()
        });
    }
    groups
}

/// `suspended until 14:05 UTC by …` when every identity of a receiver is suspended past the
/// run's deadline (the earliest end is when sending could resume).
fn suspended_through(
    group: &[Identity],
    by_id: &HashMap<Identity, Memory>,
    now: u64,
    deadline: u64,
) -> Option<String> {
    let holds: Option<Vec<_>> = group
        .iter()
        .map(|id| by_id[id].suspension(now).filter(|h| h.until > deadline))
        .collect();
    let first = holds?.into_iter().min_by_key(|h| h.until)?;
    Some(format!(
        "suspended until {} by {}",
        hh_mm(first.until),
        first.cause
    ))
}

/// Moves the rows of `sites` to `routed.decided`, `deferred` at `step` with `text`.
fn hold_back(routed: &mut Routed, sites: &[usize], step: Step, text: &str) {
    for &s in sites {
        for row in std::mem::take(&mut routed.work[s].rows) {
            routed.site_of_row[row] = u32::MAX;
            routed.decided.push((row, deferred(step, text.to_string())));
        }
    }
}

fn deferred(step: Step, text: String) -> Outcome {
    let mut o = Outcome::local(Status::Deferred, step, text);
    o.enhanced = Some(EnhancedCode::new(4, 7, 0));
    o
}

/// The table values learnt limits relax toward: the provider's, or the per-site options.
fn limits_of(cfg: &RunConfig, site: &SiteWork) -> (usize, usize) {
    match &site.provider {
        Some(p) => (p.connections, p.messages_per_connection),
        None => (
            cfg.delivery.connections_per_site.get(),
            cfg.delivery.messages_per_connection.get(),
        ),
    }
}

/// What a gate starts from, given its identity's memory at `now`.
fn gate_memory(
    m: &Memory,
    now: u64,
    (connections, per_connection): (usize, usize),
    budget: Option<usize>,
) -> GateMemory {
    GateMemory {
        recall: m.limits.recall(now, connections, per_connection),
        holds: m
            .holds
            .iter()
            .filter(|h| h.until > now)
            .map(|h| RecalledHold {
                kind: h.kind,
                value: h.value,
                remaining: Duration::from_secs(h.until - now),
                cause: h.cause.clone(),
            })
            .collect(),
        budget,
    }
}

impl Remembered {
    /// The identity that sent a message of site `site` from `source`.
    pub(super) fn identity(
        &self,
        site: usize,
        source: Option<std::net::IpAddr>,
    ) -> Option<Identity> {
        let (receiver, per_source) = self.receivers.get(site)?;
        Some(Identity::new(receiver, source.filter(|_| *per_source)))
    }

    /// Under a cap: reserves today's room for the receiver's rows (sending) or reads it
    /// (a plan), holds back the rows beyond it in list order, and returns each identity's
    /// budget (same order as `group`). Without a cap: no budget.
    async fn reserve(
        &mut self,
        cfg: &RunConfig,
        routed: &mut Routed,
        (receiver, group): (&str, &[Identity]),
        sites: &[usize],
        rule: &CapRule,
        by_id: &HashMap<Identity, Memory>,
    ) -> Result<Vec<Option<usize>>, RunError> {
        if !rule.is_some() {
            return Ok(vec![None; group.len()]);
        }
        let mut rows: Vec<usize> = sites
            .iter()
            .flat_map(|&s| routed.work[s].rows.iter().copied())
            .collect();
        rows.sort_unstable();
        let got = match (&self.store, &cfg.mode) {
            (Some(store), RunMode::Send) => {
                store.reserve(self.day, rule, group, rows.len()).await?
            }
            _ => group
                .iter()
                .map(|id| {
                    let m = &by_id[id];
                    let cap = rule.cap(self.day, m.first_day);
                    cap.map_or(rows.len(), |c| c.saturating_sub(m.today))
                })
                .collect(),
        };
        let admitted: usize = got.iter().sum::<usize>().min(rows.len());
        if admitted < rows.len() {
            let cap = rule.cap(self.day, by_id[&group[0]].first_day).unwrap_or(0);
            let text = format!("beyond today's cap of {cap} messages for {receiver}");
            let held: std::collections::HashSet<usize> = rows[admitted..].iter().copied().collect();
            for &s in sites {
                routed.work[s].rows.retain(|r| !held.contains(r));
            }
            for &row in &rows[admitted..] {
                routed.site_of_row[row] = u32::MAX;
                routed
                    .decided
                    .push((row, deferred(Step::Cap, text.clone())));
            }
        }
        if cfg.mode == RunMode::Send {
            self.reserved
                .extend(group.iter().cloned().zip(got.iter().copied()));
        }
        Ok(got.into_iter().map(Some).collect())
    }

    /// Writes back what the run did and learnt: each identity's count for the day becomes
    /// what its receiver answered (`sent.finals`; reservations not used are given back), the
    /// gates' lessons are merged, and the dialects MX addresses were stepped down to kept. Nothing to do without a store or for a plan.
    pub(super) async fn settle(&self, cfg: &RunConfig, sent: &Sent) -> Result<(), RunError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut counts: HashMap<Identity, i64> = sent
            .finals
            .iter()
            .map(|(id, n)| (id.clone(), *n as i64))
            .collect();
        for (id, n) in &self.reserved {
            *counts.entry(id.clone()).or_default() -= *n as i64;
        }
        let counts: Vec<(Identity, i64)> = counts.into_iter().collect();
        store.count(self.day, &counts).await?;
        store.remember(&sent.lessons, cfg.clock.unix()).await?;
        let notes: Vec<DialectNote> = sent.dialects.iter().map(dialect_note).collect();
        store.remember_dialects(&notes).await?;
        Ok(())
    }
}
