//! What the engine learns about MX addresses during a run, shared by every worker of every site:
//! addresses that refused or timed out recently are skipped while another one is available
//! (RFC 5321 §4.5.4.1: remember unreachable hosts), and addresses whose TLS handshake failed
//! get plaintext for the rest of the run (opportunistic mode only, as Postfix does).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::mx::MxHost;

/// How long an address that refused or timed out is skipped.
const DEAD_FOR: Duration = Duration::from_secs(60);

/// Per-address state for the run.
#[derive(Debug, Default)]
pub(super) struct Hosts {
    /// Addresses that refused or timed out, and until when they are skipped.
    dead: Mutex<HashMap<IpAddr, Instant>>,
    /// Addresses whose TLS handshake failed: plaintext from now on.
    no_tls: Mutex<HashSet<IpAddr>>,
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
    fn a_broken_tls_address_is_remembered() {
        let h = Hosts::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        assert!(!h.tls_broken(ip));
        h.remember_tls_broken(ip);
        assert!(h.tls_broken(ip));
    }
}
