//! The engine's entry points: [`deliver`] and [`deliver_until`] (over TCP) and
//! [`deliver_with`] (over any [`Connect`]or) build one queue per site with its gates, spawn the
//! site's workers interleaved across sites, and stop at the deadline, at cancellation (plus
//! grace) or when every row has its final outcome.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;

use super::connect::{Connect, TcpConnector};
use super::ctx::Ctx;
use super::gate::START_RATE;
use super::queue::SiteQueue;
use super::work::{Event, MessageSource, SiteWork};
use super::{DeliveryConfig, Gate, GateLimits, worker};
use crate::provider::rules::rules_in_force;
use crate::provider::{BackoffRule, ProviderSpec};

/// Delivers every row of every site; returns when all rows have a final outcome or the
/// deadline (plus grace) has passed.
pub async fn deliver(
    sites: Vec<SiteWork>,
    source: MessageSource,
    cfg: DeliveryConfig,
    events: mpsc::UnboundedSender<Event>,
) {
    deliver_until(sites, source, cfg, events, CancellationToken::new()).await;
}

/// [`deliver`], stoppable: once `cancel` fires no new transaction starts, the ones in flight
/// get `cfg.grace` to finish, and the rows not finished get no [`Event::Final`] (the caller
/// reports them).
pub async fn deliver_until(
    sites: Vec<SiteWork>,
    source: MessageSource,
    cfg: DeliveryConfig,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    deliver_with(TcpConnector, sites, source, cfg, events, cancel).await;
}

/// [`deliver_until`] over connections that `connector` opens (tests use in-memory ones).
pub async fn deliver_with<C: Connect>(
    connector: C,
    sites: Vec<SiteWork>,
    source: MessageSource,
    cfg: DeliveryConfig,
    events: mpsc::UnboundedSender<Event>,
    cancel: CancellationToken,
) {
    let hard_stop = cfg.deadline + cfg.grace;
    let grace = cfg.grace;
    let queues = site_queues(sites, &cfg);
    cfg.book.report_changes_to(&events);
    let ctx = Arc::new(Ctx::new(cfg, source, events, cancel.clone(), connector));
    // Interleave sites so that the first connections go to many sites, not one.
    let mut set = JoinSet::new();
    let max_workers = queues.iter().map(|(_, n)| *n).max().unwrap_or(0);
    for round in 0..max_workers {
        for (q, n) in &queues {
            if round < *n {
                set.spawn(worker::run(ctx.clone(), q.clone()));
            }
        }
    }
    let all_done = async { while set.join_next().await.is_some() {} };
    let cancelled = async {
        cancel.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = all_done => {}
        () = sleep_until(hard_stop) => {}
        () = cancelled => {}
    }
}

/// One queue per site, each with its gates (shared by the sites of one provider), and the
/// number of workers to start for it.
fn site_queues(sites: Vec<SiteWork>, cfg: &DeliveryConfig) -> Vec<(Arc<SiteQueue>, usize)> {
    let rules: Arc<[BackoffRule]> = rules_in_force(&cfg.options.backoff).into();
    let mut by_provider: HashMap<String, Arc<[Arc<Gate>]>> = HashMap::new();
    let mut by_hosts: HashMap<String, Arc<[Arc<Gate>]>> = HashMap::new();
    let o = &cfg.options;
    sites
        .into_iter()
        .map(|work| {
            let gates = match &work.provider {
                Some(p) => by_provider
                    .entry(p.name.clone())
                    .or_insert_with(|| provider_gates(p, cfg, &rules))
                    .clone(),
                // Sites of one MX host set (split only by their domains' MTA-STS policy)
                // share its gate: `--connections-per-site` is about the hosts.
                None => by_hosts
                    .entry(crate::mx::site_name(&work.hosts))
                    .or_insert_with_key(|hosts| site_gate(hosts, cfg, &rules))
                    .clone(),
            };
            let workers = (gate_connections(&work, o) * gates.len()).min(work.rows.len());
            (Arc::new(SiteQueue::new(work, gates)), workers)
        })
        .collect()
}

/// The gate of an unknown site, named for its MX host set (`hosts`): the per-site options, and
/// registered in the book. Sites of one MX host set (split only by their domains' MTA-STS
/// policy) share it: `--connections-per-site` is about the hosts.
fn site_gate(hosts: &str, cfg: &DeliveryConfig, rules: &Arc<[BackoffRule]>) -> Arc<[Arc<Gate>]> {
    let o = &cfg.options;
    let limits = GateLimits {
        connections: o.connections_per_site.get(),
        messages_per_connection: o.messages_per_connection.get(),
        cap: o.rate_per_site,
        start: o
            .rate_per_site
            .map(|r| r.count as f64 / r.per.as_secs_f64()),
    };
    let g = Arc::new(Gate::new(hosts.into(), false, limits, rules.clone()));
    recall(&g, cfg);
    cfg.book.add(g.clone());
    vec![g].into()
}

/// A provider's gates: one, or one per `--source-ip` address (its limits are per sending IP),
/// each registered in the book.
fn provider_gates(
    p: &ProviderSpec,
    cfg: &DeliveryConfig,
    rules: &Arc<[BackoffRule]>,
) -> Arc<[Arc<Gate>]> {
    let limits = GateLimits {
        connections: p.connections,
        messages_per_connection: p.messages_per_connection,
        cap: p.rate,
        start: Some(START_RATE),
    };
    let gate = Gate::new(p.name.as_str().into(), true, limits, rules.clone());
    let gates: Vec<Arc<Gate>> = if cfg.sources.is_empty() {
        vec![Arc::new(gate)]
    } else {
        cfg.sources
            .ips()
            .iter()
            .map(|ip| Arc::new(gate.for_source(ip.index, ip.addr)))
            .collect()
    };
    for g in &gates {
        recall(g, cfg);
        cfg.book.add(g.clone());
    }
    gates.into()
}

/// Starts `gate` from what its identity remembers, if anything.
fn recall(gate: &Gate, cfg: &DeliveryConfig) {
    if let Some(m) = cfg.memory.get(&gate.identity()) {
        gate.recall(m, tokio::time::Instant::now());
    }
}

/// Workers for a site per gate: its provider's connection limit, else
/// `--connections-per-site`.
fn gate_connections(work: &SiteWork, o: &super::DeliveryOptions) -> usize {
    work.provider
        .as_ref()
        .map_or(o.connections_per_site.get(), |p| p.connections)
}

/// The real engine against simulated MX hosts (see [`super::sim`]), under paused time.
#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::IpAddr;
    use std::num::NonZeroUsize;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::delivery::options::DeliveryOptions;
    use crate::delivery::retry::RetryPolicy;
    use crate::delivery::sim::Sim;
    use crate::message::BuiltMessage;
    use crate::mx::MxHost;
    use crate::outcome::{Outcome, Status, Step};
    use crate::smtp::{DataPayload, EnhancedCode, Envelope, Phase, TlsPolicy};

    const RCPTS: [&str; 3] = ["a@sim.test", "b@sim.test", "c@sim.test"];
    const MX1: [u8; 4] = [192, 0, 2, 1];
    const MX2: [u8; 4] = [192, 0, 2, 2];

    fn source() -> MessageSource {
        Arc::new(|row| {
            Ok(BuiltMessage {
                envelope: Envelope {
                    from: "news@sender.test".into(),
                    to: RCPTS[row].into(),
                },
                message_id: format!("{row}@sender.test"),
                from_domain: "sender.test".into(),
                payload: DataPayload::from_message(b"Subject: hi\r\n\r\nhello\r\n"),
            })
        })
    }

    fn mx(name: &str, preference: u16, ip: [u8; 4]) -> MxHost {
        MxHost {
            name: name.into(),
            preference,
            addrs: vec![IpAddr::from(ip)],
        }
    }

    /// What the engine reported.
    struct Run {
        events: Vec<Event>,
    }

    impl Run {
        fn finals(&self) -> HashMap<usize, &Outcome> {
            let mut out = HashMap::new();
            for e in &self.events {
                if let Event::Final { row, outcome, .. } = e {
                    assert!(
                        out.insert(*row, outcome).is_none(),
                        "row {row} settled twice"
                    );
                }
            }
            out
        }

        fn retries(&self) -> Vec<(usize, &Outcome)> {
            let mut out = Vec::new();
            for e in &self.events {
                if let Event::Retrying { row, outcome } = e {
                    out.push((*row, outcome));
                }
            }
            out
        }

        fn sessions(&self) -> usize {
            let connected = |e: &&Event| matches!(e, Event::Connected { .. });
            self.events.iter().filter(connected).count()
        }
    }

    /// Delivers every recipient of [`RCPTS`] (the first `rows`) to `hosts` over `sim`, one
    /// connection at a time, with `options` adjusted by `tune`.
    async fn deliver(
        sim: &Sim,
        hosts: Vec<MxHost>,
        rows: usize,
        tune: impl FnOnce(&mut DeliveryOptions),
    ) -> Run {
        let mut options = DeliveryOptions {
            connections_per_site: NonZeroUsize::MIN,
            ..DeliveryOptions::default()
        };
        tune(&mut options);
        let cfg = DeliveryConfig::new(options, TlsPolicy::default());
        let site = SiteWork {
            name: "sim".into(),
            hosts: hosts.into(),
            rows: (0..rows).collect(),
            provider: None,
            tls: Default::default(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        deliver_with(sim.clone(), vec![site], source(), cfg, tx, cancel).await;
        let mut events = Vec::new();
        while let Ok(e) = rx.try_recv() {
            events.push(e);
        }
        Run { events }
    }

    #[tokio::test(start_paused = true)]
    async fn a_4yz_at_rcpt_is_retried_after_the_wait_and_delivered_on_the_second_attempt() {
        let sim = Sim::new(
            |a| (a.verb == "RCPT" && a.tries == 0).then_some("451 4.7.1 greylisted, try again"),
            &[],
        );
        let (t0, wall) = (Instant::now(), std::time::Instant::now());
        let run = deliver(&sim, vec![mx("mx.sim.test", 10, MX1)], 1, |_| {}).await;
        let finals = run.finals();
        assert_eq!(finals[&0].status, Status::Delivered, "{:?}", run.events);
        assert_eq!(finals[&0].attempts, 2);
        let retries = run.retries();
        assert_eq!(retries.len(), 1);
        let (row, first) = retries[0];
        assert_eq!(
            (row, first.status, first.attempts),
            (0, Status::Deferred, 1)
        );
        assert_eq!(
            (first.step, first.code),
            (Step::Smtp(Phase::RcptTo), Some(451))
        );
        let accepted = sim.accepted();
        assert_eq!(accepted.len(), 1);
        assert!(
            accepted[0].at >= t0 + Duration::from_secs(60),
            "delivered after the first retry delay (1m)"
        );
        assert!(wall.elapsed() < Duration::from_secs(30), "virtual time");
    }

    #[tokio::test(start_paused = true)]
    async fn a_421_pauses_the_site_and_the_rows_are_delivered_after_the_pause() {
        let sim = Sim::new(
            |a| {
                (a.conn == 0 && a.verb == "MAIL")
                    .then_some("421 4.3.0 shutting down for maintenance")
            },
            &[],
        );
        let t0 = Instant::now();
        let run = deliver(&sim, vec![mx("mx.sim.test", 10, MX1)], 3, |_| {}).await;
        let finals = run.finals();
        let attempts: Vec<(Status, u32)> = (0..3)
            .map(|r| (finals[&r].status, finals[&r].attempts))
            .collect();
        assert_eq!(
            attempts,
            vec![
                (Status::Delivered, 2),
                (Status::Delivered, 1),
                (Status::Delivered, 1)
            ],
            "only the row that met the 421 used an attempt; the rest of its batch waited"
        );
        let retries = run.retries();
        assert_eq!(retries.len(), 1);
        assert_eq!((retries[0].0, retries[0].1.code), (0, Some(421)));
        assert_eq!(retries[0].1.step, Step::Smtp(Phase::MailFrom));
        assert_eq!((run.sessions(), sim.connections()), (2, 2));
        for m in sim.accepted() {
            assert_eq!(m.conn, 1, "{m:?}");
            assert!(
                m.at >= t0 + Duration::from_secs(60),
                "not before the pause ends: {m:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttling_421_slows_the_site_without_charging_an_attempt_or_pausing_it() {
        let sim = Sim::new(
            |a| {
                (a.conn == 0 && a.verb == "MAIL")
                    .then_some("421 4.7.0 Try again later, closing connection")
            },
            &[],
        );
        let t0 = Instant::now();
        let run = deliver(&sim, vec![mx("mx.sim.test", 10, MX1)], 3, |_| {}).await;
        let finals = run.finals();
        for r in 0..3 {
            assert_eq!(
                (finals[&r].status, finals[&r].attempts),
                (Status::Delivered, 1)
            );
        }
        let retries = run.retries();
        assert_eq!(retries.len(), 1, "reported, uncharged");
        assert_eq!((retries[0].1.code, retries[0].1.attempts), (Some(421), 0));
        assert_eq!(sim.connections(), 2);
        let last = sim.accepted().iter().map(|m| m.at).max().unwrap();
        assert!(
            last < t0 + Duration::from_secs(5),
            "slowed (to 5/s), not paused for the retry wait: {:?}",
            last - t0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_550_at_rcpt_bounces_and_the_next_message_goes_over_the_same_connection() {
        let sim = Sim::new(
            |a| (a.verb == "RCPT" && a.rcpt == "b@sim.test").then_some("550 5.1.1 no such user"),
            &[],
        );
        let run = deliver(&sim, vec![mx("mx.sim.test", 10, MX1)], 3, |_| {}).await;
        let finals = run.finals();
        assert_eq!(finals[&0].status, Status::Delivered);
        assert_eq!(finals[&2].status, Status::Delivered);
        let b = finals[&1];
        assert_eq!(
            (b.status, b.attempts, b.code),
            (Status::Bounced, 1, Some(550))
        );
        assert_eq!(b.step, Step::Smtp(Phase::RcptTo));
        assert_eq!(b.enhanced, Some(EnhancedCode::new(5, 1, 1)));
        assert!(run.retries().is_empty());
        assert_eq!((run.sessions(), sim.connections()), (1, 1));
        let rcpts: Vec<(usize, String)> = sim
            .accepted()
            .into_iter()
            .map(|m| (m.conn, m.rcpt))
            .collect();
        assert_eq!(
            rcpts,
            vec![(0, "a@sim.test".into()), (0, "c@sim.test".into())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_address_that_refuses_is_passed_over_for_the_next_mx() {
        let sim = Sim::new(|_| None, &[IpAddr::from(MX1)]);
        let hosts = vec![mx("mx1.sim.test", 10, MX1), mx("mx2.sim.test", 20, MX2)];
        let run = deliver(&sim, hosts, 3, |_| {}).await;
        let finals = run.finals();
        for row in 0..3 {
            assert_eq!(finals[&row].status, Status::Delivered);
            assert_eq!(finals[&row].mx_host.as_deref(), Some("mx2.sim.test"));
            assert_eq!(finals[&row].attempts, 1);
        }
        assert!(run.retries().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn when_no_mx_answers_every_row_shares_the_failure_until_the_deadline() {
        let sim = Sim::new(|_| None, &[IpAddr::from(MX1)]);
        let run = deliver(&sim, vec![mx("mx.sim.test", 10, MX1)], 3, |o| {
            o.retry = RetryPolicy::parse("1m").unwrap();
            o.deadline = Duration::from_secs(150);
        })
        .await;
        let finals = run.finals();
        for row in 0..3 {
            let o = finals[&row];
            assert_eq!(
                (o.status, o.step),
                (Status::Deferred, Step::Smtp(Phase::Connect))
            );
            assert_eq!(o.enhanced, Some(EnhancedCode::new(4, 4, 1)));
            assert_eq!(
                o.attempts, 3,
                "tried at 0, 1m and 2m; 3m is past the deadline"
            );
        }
        assert_eq!(run.retries().len(), 6);
        assert_eq!(sim.connections(), 0);
    }
}
