//! What the engine learns about MX addresses during a run, shared by every worker of every site:
//! addresses that refused or timed out recently are skipped while another one is available
//! (RFC 5321 §4.5.4.1: remember unreachable hosts), and addresses whose TLS handshake failed
//! get plaintext for the rest of the run (opportunistic mode only, as Postfix does).
//!
//! Also, per address, for the rest of the run: the SMTP [`Dialect`] it tolerates
//! (lowered a step each time it objects to our pipelining), and a lower messages-per-connection
//! limit when it told us that a session takes no more messages.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::mx::MxHost;
use crate::smtp::Dialect;

/// How long an address that refused or timed out is skipped.
const DEAD_FOR: Duration = Duration::from_secs(60);

/// Per-address state for the run.
#[derive(Debug, Default)]
pub(super) struct Hosts {
    /// Addresses that refused or timed out, and until when they are skipped.
    dead: Mutex<HashMap<IpAddr, Instant>>,
    /// Addresses whose TLS handshake failed: plaintext from now on.
    no_tls: Mutex<HashSet<IpAddr>>,
    /// Addresses that objected to a dialect: the one they get now (absent: the fullest).
    dialects: Mutex<HashMap<IpAddr, Dialect>>,
    /// Addresses whose sessions take fewer messages than `--messages-per-connection`.
    per_connection: Mutex<HashMap<IpAddr, usize>>,
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

    /// The dialect new sessions with `ip` speak.
    pub(super) fn dialect(&self, ip: IpAddr) -> Dialect {
        lock(&self.dialects).get(&ip).copied().unwrap_or_default()
    }

    /// A session with `ip` speaking `from` failed on our protocol: `ip` gets the next more
    /// conservative dialect. Returns it when this call lowered it (not when another session
    /// already had, or when there is nothing left to fall back to).
    pub(super) fn fall_back(&self, ip: IpAddr, from: Dialect) -> Option<Dialect> {
        let mut dialects = lock(&self.dialects);
        let now = dialects.entry(ip).or_default();
        if *now != from {
            return None;
        }
        *now = from.fallback()?;
        Some(*now)
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
        assert_eq!(h.dialect(ip), Dialect::Full);
        assert_eq!(h.fall_back(ip, Dialect::Full), Some(Dialect::NoAnnounce));
        // A second session that was opened before the fallback reports the same objection.
        assert_eq!(h.fall_back(ip, Dialect::Full), None);
        assert_eq!(h.dialect(ip), Dialect::NoAnnounce);
        assert_eq!(
            h.fall_back(ip, Dialect::NoAnnounce),
            Some(Dialect::Lockstep)
        );
        assert_eq!(h.fall_back(ip, Dialect::Lockstep), None);
        assert_eq!(h.dialect(ip), Dialect::Lockstep);
        assert_eq!(h.dialect(IpAddr::from([10, 0, 0, 2])), Dialect::Full);
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
