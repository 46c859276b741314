//! What the engine learns about MX addresses during a run, shared by every worker of every site:
//! addresses that refused or timed out recently are skipped while another one is available
//! (RFC 5321 §4.5.4.1: remember unreachable hosts), and addresses whose TLS handshake failed
//! get plaintext for the rest of the run (opportunistic mode only, as Postfix does).
//!
//! Also, per address, for the rest of the run: the SMTP [`Dialect`] it tolerates
//! (lowered a step each time it objects to our pipelining), and a lower messages-per-connection
//! limit when it told us that a session takes no more messages.
//!
//! Commands pipelined behind the final dot are sent to an address by one session at a time
//! (the one holding its [`Probe`]) until the address has answered some: a server that swallows
//! them then stalls that one session, not every session to it at once (docs/delivery.md,
//! "Silence behind the dot").
//!
//! What was learnt about dialects can outlive the run: each step down is a [`LearntDialect`],
//! reported as it happens in [`super::Event::DialectFallback`], and a run can start from
//! earlier ones ([`super::DeliveryConfig::dialects`]), so that it never meets the same
//! objection twice.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::mx::MxHost;
use crate::smtp::Dialect;

/// How long an address that refused or timed out is skipped.
const DEAD_FOR: Duration = Duration::from_secs(60);

/// The dialect an MX address was found to need: what a sender state store keeps between runs,
/// keyed by (`host`, `ip`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LearntDialect {
    /// The MX host name the address was reached as.
    pub host: String,
    /// The address; a run applies the dialect to every session with it.
    pub ip: IpAddr,
    /// The most its sessions may pipeline.
    pub dialect: Dialect,
    /// When it was learnt (wall clock: it is compared across runs to let it expire).
    pub learnt_at: SystemTime,
}

impl LearntDialect {
    /// The run summary's line for this step down, given what the server did (`objection`):
    /// `mx.example [192.0.2.1]: does not answer commands pipelined behind the final dot;
    /// sent one transaction per round trip from then on`.
    pub fn summary_line(&self, objection: &str) -> String {
        let now = match self.dialect {
            Dialect::Full => "pipelined fully again",
            Dialect::NoAnnounce => "sent one transaction per round trip from then on",
            Dialect::Lockstep => "sent one command per round trip from then on",
        };
        format!("{} [{}]: {objection}; {now}", self.host, self.ip)
    }
}

/// Per-address state for the run.
#[derive(Debug, Default)]
pub(super) struct Hosts {
    /// Addresses that refused or timed out, and until when they are skipped.
    dead: Mutex<HashMap<IpAddr, Instant>>,
    /// Addresses whose TLS handshake failed: plaintext from now on.
    no_tls: Mutex<HashSet<IpAddr>>,
    /// Addresses that objected to a dialect: the one they get now (absent: the fullest).
    dialects: Mutex<HashMap<IpAddr, LearntDialect>>,
    /// Addresses whose sessions take fewer messages than `--messages-per-connection`.
    per_connection: Mutex<HashMap<IpAddr, usize>>,
    /// What each address has shown of commands pipelined behind the final dot.
    behind_dot: Arc<Mutex<HashMap<IpAddr, BehindDot>>>,
}

/// Commands pipelined behind the final dot, as far as one address has shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BehindDot {
    /// Not answered yet: one session (holding the [`Probe`]) sends them.
    Probing,
    /// Answered at least once, in step: every session sends them.
    Answered,
}

/// A session's leave to pipeline commands behind the final dot to an address that has not yet
/// answered any. One session per address holds it at a time; it is given back when dropped
/// (with its session), so another session may try.
#[derive(Debug)]
pub(super) struct Probe {
    /// The map it is an entry of.
    behind_dot: Arc<Mutex<HashMap<IpAddr, BehindDot>>>,
    /// The address it is about.
    ip: IpAddr,
}

impl Drop for Probe {
    fn drop(&mut self) {
        let mut behind_dot = lock(&self.behind_dot);
        if behind_dot.get(&self.ip) == Some(&BehindDot::Probing) {
            behind_dot.remove(&self.ip);
        }
    }
}

/// A poisoned lock means a worker panicked; the sets themselves are still consistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hosts {
    /// Every address of `hosts`, in try order, without those that failed recently, unless
    /// that leaves nothing to try.
    pub(super) fn candidates<'h>(&self, hosts: &'h [MxHost]) -> Vec<(&'h MxHost, IpAddr)> {
        let all: Vec<(&MxHost, IpAddr)> = hosts
            .iter()
            .flat_map(|h| h.addrs.iter().map(move |ip| (h, *ip)))
            .collect();
        let now = Instant::now();
        let dead = lock(&self.dead);
        let alive: Vec<(&MxHost, IpAddr)> = all
            .iter()
            .copied()
            .filter(|(_, ip)| dead.get(ip).is_none_or(|until| *until <= now))
            .collect();
        if alive.is_empty() { all } else { alive }
    }

    /// `ip` refused or timed out: skip it for a while.
    pub(super) fn mark_dead(&self, ip: IpAddr) {
        lock(&self.dead).insert(ip, Instant::now() + DEAD_FOR);
    }

    /// True when a TLS handshake with `ip` failed earlier in the run.
    pub(super) fn tls_broken(&self, ip: IpAddr) -> bool {
        lock(&self.no_tls).contains(&ip)
    }

    /// The TLS handshake with `ip` failed: plaintext from now on.
    pub(super) fn remember_tls_broken(&self, ip: IpAddr) {
        lock(&self.no_tls).insert(ip);
    }

    /// Per-address state that starts from dialects learnt earlier (by an earlier run).
    pub(super) fn with_dialects(learnt: &[LearntDialect]) -> Self {
        let hosts = Self::default();
        hosts.remember_dialects(learnt);
        hosts
    }

    /// Takes dialects learnt earlier: each address gets the more conservative of what it has
    /// and what it is given.
    pub(super) fn remember_dialects(&self, learnt: &[LearntDialect]) {
        let mut dialects = lock(&self.dialects);
        for l in learnt {
            let keep = dialects
                .get(&l.ip)
                .is_some_and(|now| now.dialect >= l.dialect);
            if !keep {
                dialects.insert(l.ip, l.clone());
            }
        }
    }

    /// The dialect new sessions with `ip` speak.
    pub(super) fn dialect(&self, ip: IpAddr) -> Dialect {
        lock(&self.dialects)
            .get(&ip)
            .map_or(Dialect::default(), |l| l.dialect)
    }

    /// A session with `ip` (reached as `host`) speaking `from` failed on our protocol: `ip`
    /// gets the next more conservative dialect. Returns what was learnt when this call
    /// lowered it (not when another session already had, or when there is nothing left to
    /// fall back to).
    pub(super) fn fall_back(&self, ip: IpAddr, host: &str, from: Dialect) -> Option<LearntDialect> {
        let mut dialects = lock(&self.dialects);
        let now = dialects.get(&ip).map_or(Dialect::default(), |l| l.dialect);
        if now != from {
            return None;
        }
        let learnt = LearntDialect {
            host: host.to_string(),
            ip,
            dialect: from.fallback()?,
            learnt_at: SystemTime::now(),
        };
        dialects.insert(ip, learnt.clone());
        Some(learnt)
    }

    /// Whether a session with `ip` may pipeline the next transaction behind the final dot: the
    /// address's dialect allows it, and it has answered such commands before, or no other
    /// session is trying (then this one takes the [`Probe`], kept in `probe`), or this one is.
    pub(super) fn may_announce(&self, ip: IpAddr, probe: &mut Option<Probe>) -> bool {
        if self.dialect(ip) != Dialect::Full {
            return false;
        }
        if probe.is_some() {
            return true;
        }
        let mut behind_dot = lock(&self.behind_dot);
        match behind_dot.get(&ip) {
            Some(BehindDot::Answered) => true,
            Some(BehindDot::Probing) => false,
            None => {
                behind_dot.insert(ip, BehindDot::Probing);
                *probe = Some(Probe {
                    behind_dot: self.behind_dot.clone(),
                    ip,
                });
                true
            }
        }
    }

    /// `ip` answered commands pipelined behind the final dot, in step: every session with it
    /// may pipeline them from now on.
    pub(super) fn answered_behind_dot(&self, ip: IpAddr) {
        lock(&self.behind_dot).insert(ip, BehindDot::Answered);
    }

    /// `ip` takes at most `n` messages per session (at least one).
    pub(super) fn limit_messages(&self, ip: IpAddr, n: usize) {
        let mut limits = lock(&self.per_connection);
        let limit = limits.entry(ip).or_insert(usize::MAX);
        *limit = (*limit).min(n.max(1));
    }

    /// The messages per session `ip` takes, when it said so.
    pub(super) fn messages_per_connection(&self, ip: IpAddr) -> Option<usize> {
        lock(&self.per_connection).get(&ip).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, addrs: &[[u8; 4]]) -> MxHost {
        MxHost {
            name: name.into(),
            preference: 10,
            addrs: addrs.iter().map(|a| IpAddr::from(*a)).collect(),
        }
    }

    fn ips(c: &[(&MxHost, IpAddr)]) -> Vec<IpAddr> {
        c.iter().map(|(_, ip)| *ip).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn failed_addresses_are_skipped_for_a_while_unless_nothing_else_is_left() {
        let hosts = [
            host("a", &[[10, 0, 0, 1], [10, 0, 0, 2]]),
            host("b", &[[10, 0, 0, 3]]),
        ];
        let h = Hosts::default();
        let [one, two, three] = [[10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]].map(IpAddr::from);
        assert_eq!(
            ips(&h.candidates(&hosts)),
            vec![one, two, three],
            "try order"
        );
        h.mark_dead(one);
        h.mark_dead(three);
        assert_eq!(ips(&h.candidates(&hosts)), vec![two]);
        h.mark_dead(two);
        assert_eq!(
            ips(&h.candidates(&hosts)),
            vec![one, two, three],
            "all failed: try them all"
        );
        tokio::time::advance(DEAD_FOR).await;
        assert_eq!(ips(&h.candidates(&hosts)), vec![one, two, three]);
    }

    #[test]
    fn an_address_falls_back_one_dialect_at_a_time_and_only_once_per_objection() {
        let h = Hosts::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        let down = |from| h.fall_back(ip, "mx.test", from).map(|l| l.dialect);
        assert_eq!(h.dialect(ip), Dialect::Full);
        assert_eq!(down(Dialect::Full), Some(Dialect::NoAnnounce));
        // A second session that was opened before the fallback reports the same objection.
        assert_eq!(down(Dialect::Full), None);
        assert_eq!(h.dialect(ip), Dialect::NoAnnounce);
        assert_eq!(down(Dialect::NoAnnounce), Some(Dialect::Lockstep));
        assert_eq!(down(Dialect::Lockstep), None);
        assert_eq!(h.dialect(ip), Dialect::Lockstep);
        assert_eq!(h.dialect(IpAddr::from([10, 0, 0, 2])), Dialect::Full);
    }

    #[test]
    fn learnt_dialects_go_out_and_come_back_in_the_most_conservative_form() {
        let first = Hosts::default();
        let (a, b) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let before = SystemTime::now();
        let learnt: Vec<LearntDialect> = [
            first.fall_back(a, "mx1.test", Dialect::Full),
            first.fall_back(b, "mx2.test", Dialect::Full),
            first.fall_back(b, "mx2.test", Dialect::NoAnnounce),
        ]
        .into_iter()
        .flatten()
        .collect();
        let got: Vec<(&str, IpAddr, Dialect)> = learnt
            .iter()
            .map(|l| (l.host.as_str(), l.ip, l.dialect))
            .collect();
        assert_eq!(
            got,
            vec![
                ("mx1.test", a, Dialect::NoAnnounce),
                ("mx2.test", b, Dialect::NoAnnounce),
                ("mx2.test", b, Dialect::Lockstep)
            ]
        );
        assert!(learnt.iter().all(|l| l.learnt_at >= before));
        // The next run starts where this one ended, whatever the order it is handed them in;
        // a less conservative entry never raises an address's dialect.
        let mut reversed = learnt.clone();
        reversed.reverse();
        let next = Hosts::with_dialects(&reversed);
        assert_eq!(next.dialect(a), Dialect::NoAnnounce);
        assert_eq!(next.dialect(b), Dialect::Lockstep);
        assert_eq!(next.fall_back(b, "mx2.test", Dialect::Full), None);
        assert_eq!(
            learnt[0].summary_line("does not answer commands pipelined behind the final dot"),
            "mx1.test [10.0.0.1]: does not answer commands pipelined behind the final dot; \
             sent one transaction per round trip from then on"
        );
    }

    #[test]
    fn one_session_at_a_time_pipelines_behind_the_dot_until_the_address_has_answered() {
        let h = Hosts::default();
        let (ip, other) = (IpAddr::from([10, 0, 0, 1]), IpAddr::from([10, 0, 0, 2]));
        let (mut a, mut b, mut c) = (None, None, None);
        assert!(h.may_announce(ip, &mut a), "the first session tries");
        assert!(a.is_some());
        assert!(!h.may_announce(ip, &mut b), "the others wait");
        assert!(b.is_none());
        assert!(h.may_announce(ip, &mut a), "the one trying goes on");
        assert!(h.may_announce(other, &mut c), "another address has its own");
        // The session trying ends before an answer: another one may try.
        drop(a.take());
        assert!(h.may_announce(ip, &mut b));
        h.answered_behind_dot(ip);
        drop(b.take());
        let mut d = None;
        assert!(h.may_announce(ip, &mut d), "answered: every session");
        assert!(h.may_announce(ip, &mut a));
        assert!(d.is_none() && a.is_none(), "no probe needed any more");
        // An address that fell back pipelines nothing behind the dot, answered or not.
        h.fall_back(ip, "mx.test", Dialect::Full);
        assert!(!h.may_announce(ip, &mut d));
    }

    #[test]
    fn the_messages_per_connection_limit_only_goes_down() {
        let h = Hosts::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert_eq!(h.messages_per_connection(ip), None);
        h.limit_messages(ip, 20);
        h.limit_messages(ip, 50);
        assert_eq!(h.messages_per_connection(ip), Some(20));
        h.limit_messages(ip, 0);
        assert_eq!(h.messages_per_connection(ip), Some(1));
    }

    #[test]
    fn a_broken_tls_address_is_remembered() {
        let h = Hosts::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert!(!h.tls_broken(ip));
        h.remember_tls_broken(ip);
        assert!(h.tls_broken(ip));
    }
}
