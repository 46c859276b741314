//! Source-IP pools (`--source-ip ADDR[=HELO]`): the local addresses new connections
//! leave from, each with the EHLO name its PTR record matches.
//!
//! Every new connection takes a [`Lease`] on the least-used usable address (ties go round
//! robin), binds it before connecting and says its EHLO name; the lease is held for the
//! session's life, so "used" counts open sessions. An address that cannot be bound (not
//! configured on this host) is marked unusable for the rest of the run and the others carry
//! on. Outcomes record the address in the results' `source_ip` column.
//!
//! Each address has a stable [`SourceIp::index`]: a provider's limits are per sending IP, so
//! the engine keeps one provider gate per index, and a session to a provider leases the
//! address whose gate gave it a connection slot (see [`SourcePool::lease_where`]).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// One configured source address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SourceIp {
    /// Position in the pool (the order of the `--source-ip` flags): a small key for per-IP
    /// state such as limits.
    pub index: usize,
    /// The local address to bind.
    pub addr: IpAddr,
    /// EHLO name to send from this address (its PTR name); `None`: the run's `--helo`.
    pub helo: Option<String>,
}

impl SourceIp {
    /// Parses `ADDR` or `ADDR=HELO` (the index is set by the pool).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (addr, helo) = match spec.split_once('=') {
            Some((a, h)) => (a.trim(), Some(h.trim())),
            None => (spec.trim(), None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{spec:?}: use ADDR or ADDR=HELO (an IPv4 or IPv6 address)"))?;
        let helo = match helo {
            Some("") => return Err(format!("{spec:?}: empty EHLO name after '='")),
            Some(h) if h.contains(char::is_whitespace) => {
                return Err(format!("{spec:?}: the EHLO name cannot contain spaces"));
            }
            h => h.map(str::to_string),
        };
        Ok(Self {
            index: 0,
            addr,
            helo,
        })
    }

    /// The EHLO name to send from this address.
    pub fn helo<'a>(&'a self, run_helo: &'a str) -> &'a str {
        self.helo.as_deref().unwrap_or(run_helo)
    }
}

impl fmt::Display for SourceIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.helo {
            Some(h) => write!(f, "{}={h}", self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// The run's source addresses and how much each is used. Empty: connections leave from
/// whatever address the OS picks.
#[derive(Debug, Default)]
pub struct SourcePool {
    ips: Vec<SourceIp>,
    /// Open sessions per address.
    in_use: Vec<AtomicUsize>,
    /// Could not be bound: not used again this run.
    unusable: Vec<AtomicBool>,
    /// Round-robin start among equally used addresses.
    next: AtomicUsize,
}

impl SourcePool {
    /// A pool of `ips` (indexes are assigned in order; a repeated address is kept once).
    pub fn new(ips: &[SourceIp]) -> Arc<Self> {
        let mut unique: Vec<SourceIp> = Vec::new();
        for ip in ips {
            if !unique.iter().any(|u| u.addr == ip.addr) {
                unique.push(SourceIp {
                    index: unique.len(),
                    ..ip.clone()
                });
            }
        }
        Arc::new(Self {
            in_use: unique.iter().map(|_| AtomicUsize::new(0)).collect(),
            unusable: unique.iter().map(|_| AtomicBool::new(false)).collect(),
            ips: unique,
            next: AtomicUsize::new(0),
        })
    }

    /// No address configured: the OS chooses.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }

    /// The configured addresses, by index.
    pub fn ips(&self) -> &[SourceIp] {
        &self.ips
    }

    /// The least-used usable address (ties round robin), `None` when none is left.
    pub fn lease(self: &Arc<Self>) -> Option<Lease> {
        self.lease_where(|_| true)
    }

    /// [`Self::lease`] among the addresses `allowed` accepts.
    ///
    /// Per-source provider limits: a session to a provider passes a filter that accepts only
    /// the address whose gate gave it its connection slot.
    pub fn lease_where(self: &Arc<Self>, allowed: impl Fn(&SourceIp) -> bool) -> Option<Lease> {
        let n = self.ips.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let pick = (0..n)
            .map(|k| (start + k) % n)
            .filter(|&i| !self.unusable[i].load(Ordering::Relaxed) && allowed(&self.ips[i]))
            .min_by_key(|&i| self.in_use[i].load(Ordering::Relaxed))?;
        self.in_use[pick].fetch_add(1, Ordering::Relaxed);
        Some(Lease {
            pool: self.clone(),
            index: pick,
        })
    }

    /// `ip` cannot be bound on this host: skip it for the rest of the run.
    pub fn mark_unusable(&self, index: usize) {
        if let Some(flag) = self.unusable.get(index) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the address of `index` may still be used.
    pub fn is_usable(&self, index: usize) -> bool {
        self.unusable
            .get(index)
            .is_some_and(|u| !u.load(Ordering::Relaxed))
    }

    /// Addresses still usable.
    pub fn usable(&self) -> usize {
        self.unusable
            .iter()
            .filter(|u| !u.load(Ordering::Relaxed))
            .count()
    }
}

/// One session's use of a source address; released when dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<SourcePool>,
    index: usize,
}

impl Lease {
    /// The address leased.
    pub fn ip(&self) -> &SourceIp {
        &self.pool.ips[self.index]
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.in_use[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(specs: &[&str]) -> Arc<SourcePool> {
        let ips: Vec<SourceIp> = specs.iter().map(|s| SourceIp::parse(s).unwrap()).collect();
        SourcePool::new(&ips)
    }

    #[test]
    fn parses_address_and_optional_helo() {
        let a = SourceIp::parse("192.0.2.1=mta1.example.com").unwrap();
        assert_eq!(a.addr.to_string(), "192.0.2.1");
        assert_eq!(a.helo(""), "mta1.example.com");
        let b = SourceIp::parse("[2001:db8::1]").unwrap();
        assert_eq!(b.helo("run.example"), "run.example");
        assert!(SourceIp::parse("mta1.example.com").is_err());
        assert!(SourceIp::parse("192.0.2.1=").is_err());
    }

    #[test]
    fn leases_spread_over_the_least_used_addresses() {
        let p = pool(&["127.0.0.10=a", "127.0.0.11=b", "127.0.0.10=dup"]);
        assert_eq!(p.ips().len(), 2);
        let first = p.lease().unwrap();
        let second = p.lease().unwrap();
        assert_ne!(first.ip().index, second.ip().index);
        drop(first);
        let third = p.lease().unwrap();
        assert_ne!(third.ip().index, second.ip().index);
    }

    #[test]
    fn an_unusable_address_is_skipped_and_an_empty_pool_leases_nothing() {
        let p = pool(&["127.0.0.10", "127.0.0.11"]);
        p.mark_unusable(0);
        for _ in 0..4 {
            assert_eq!(p.lease().unwrap().ip().index, 1);
        }
        p.mark_unusable(1);
        assert!(p.lease().is_none());
        assert_eq!(p.usable(), 0);
        assert!(pool(&[]).lease().is_none());
    }
}
