//! Shards (`--shard I/N`): N processes (or Kubernetes pods) split one list, each
//! sending only the rows whose destination hashes to its index and writing its own results and
//! journal; `mailmerge merge-results` joins the results back in list order.
//!
//! The hash is FNV-1a (stable across processes and versions, unlike `RandomState`) of
//! [`shard_key`]: the site, so all of one destination's traffic stays in one shard and its
//! connection and rate limits are not multiplied by N. Rows that never reach a site (invalid
//! input, duplicates, suppressed, DNS failures) go by their domain, so the union of the shards
//! still covers every row exactly once. Rows of other shards are left out of this shard's
//! results and plan entirely.
//!
//! One caveat, inherent to keying by site: a domain whose DNS lookup fails in one shard and
//! succeeds in another is placed by domain in the first and by site in the second, so its rows
//! may land in two shards or none; `merge-results` refuses that (exit 2, naming the rows) and
//! re-running the shards concerned settles it.

use std::fmt;

use super::ledger::Ledger;
use super::prepare::Campaign;
use super::route::Routed;
use crate::delivery::SiteWork;
use crate::recipients::Row;

/// This process's share of the list: shard `index` of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based.
    pub index: u32,
    /// Number of shards, at least 1.
    pub count: u32,
}

/// `--shard` as typed: `I/N`, or `auto/N` to take I from `JOB_COMPLETION_INDEX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    /// `None`: `auto`.
    pub index: Option<u32>,
    /// N.
    pub count: u32,
}

/// The variable Kubernetes sets in the pods of an Indexed Campaign.
pub const INDEX_VARIABLE: &str = "JOB_COMPLETION_INDEX";

impl ShardSpec {
    /// Parses `I/N` or `auto/N`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: use I/N (0 <= I < N) or auto/N");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 {
            return Err(bad());
        }
        let index = match i.trim() {
            "auto" => None,
            i => Some(
                i.parse::<u32>()
                    .ok()
                    .filter(|&i| i < count)
                    .ok_or_else(bad)?,
            ),
        };
        Ok(Self { index, count })
    }

    /// The shard, taking `auto`'s index from `env_index` (the value of [`INDEX_VARIABLE`]).
    pub fn resolve(self, env_index: Option<&str>) -> Result<Shard, String> {
        let index = match (self.index, env_index) {
            (Some(i), _) => i,
            (None, Some(v)) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|&i| i < self.count)
                .ok_or_else(|| {
                    format!(
                        "--shard auto/{}: {INDEX_VARIABLE}={v:?} is not in 0..{}",
                        self.count, self.count
                    )
                })?,
            (None, None) => {
                return Err(format!(
                    "--shard auto/{}: {INDEX_VARIABLE} is not set (it is in Kubernetes Indexed Jobs)",
                    self.count
                ));
            }
        };
        Ok(Shard {
            index,
            count: self.count,
        })
    }
}

impl Shard {
    /// Whether this shard sends (and reports) what `key` names.
    pub fn owns(self, key: &str) -> bool {
        fnv1a(key.as_bytes()) % u64::from(self.count) == u64::from(self.index)
    }

    /// `list.results.csv` → `list.results.shard-I-of-N.csv` (the default results path).
    pub fn results_path(self, default: &std::path::Path) -> std::path::PathBuf {
        let stem = default
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        default.with_file_name(format!("{stem}.shard-{}-of-{}.csv", self.index, self.count))
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// 64-bit FNV-1a: a stable hash, the same in every process.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// What routed rows are sharded by: the site's mailbox provider, so that a provider's whole
/// traffic (all its sites) stays in one shard and its limits need no coordination; a site
/// of no known provider by its own name (the MX host set).
pub(super) fn shard_key(site: &SiteWork) -> std::borrow::Cow<'_, str> {
    match &site.provider {
        Some(p) => p.name.as_str().into(),
        // The MX host set, not the site's name: that also names the MTA-STS policy its domains
        // publish, which one shard may have fetched and another not.
        None => crate::mx::site_name(&site.hosts).into(),
    }
}

/// What rows that reach no site are sharded by: their domain (as typed when the address is
/// invalid), which every shard computes the same way without the network.
pub(super) fn domain_key(row: &Row) -> String {
    match &row.status {
        Ok(addr) => addr.domain().to_string(),
        Err(_) => row.email.rsplit_once('@').map_or_else(
            || row.email.trim().to_lowercase(),
            |(_, d)| d.to_lowercase(),
        ),
    }
}

/// Places every row in this shard or another: a routed row by its site's [`shard_key`], a row
/// settled before routing or decided by DNS by its [`domain_key`], a row an earlier run of
/// this shard finished here (its journal has it). Other shards' rows leave the routes and,
/// through the ledger, this run's results and counts.
pub(super) fn select(
    shard: Shard,
    campaign: &Campaign,
    ledger: &mut Ledger,
    mut routed: Routed,
) -> Routed {
    let (mut work, mut hosts) = (Vec::new(), Vec::new());
    for (site, site_hosts) in routed.work.drain(..).zip(routed.hosts.drain(..)) {
        if shard.owns(&shard_key(&site)) {
            work.push(site);
            hosts.push(site_hosts);
        } else {
            for &r in &site.rows {
                ledger.mark_elsewhere(r);
            }
        }
    }
    routed.site_of_row.fill(u32::MAX);
    for (s, site) in work.iter().enumerate() {
        for &r in &site.rows {
            routed.site_of_row[r] = s as u32;
        }
    }
    (routed.work, routed.hosts) = (work, hosts);
    let owns_row = |i: usize| shard.owns(&domain_key(&campaign.list.row(i)));
    routed.decided.retain(|(i, _)| {
        let mine = owns_row(*i);
        if !mine {
            ledger.mark_elsewhere(*i);
        }
        mine
    });
    for i in 0..ledger.len() {
        let settled = !ledger.is_pending(i) && !ledger.is_elsewhere(i);
        if settled && !ledger.is_earlier(i) && !owns_row(i) {
            ledger.mark_elsewhere(i);
        }
    }
    routed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_count_and_auto() {
        let s = ShardSpec::parse("1/3").unwrap();
        assert_eq!(s.resolve(None).unwrap(), Shard { index: 1, count: 3 });
        let auto = ShardSpec::parse("auto/4").unwrap();
        assert_eq!(auto.resolve(Some("2")).unwrap().to_string(), "2/4");
        assert!(auto.resolve(None).is_err());
        assert!(auto.resolve(Some("4")).is_err());
        for bad in ["3/3", "0/0", "1", "x/2", "-1/2"] {
            assert!(ShardSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_key_has_exactly_one_shard_and_the_hash_is_stable() {
        // FNV-1a test vector: the hash must never change between versions.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        for key in ["gmail.com", "mx.example.net", "", "x"] {
            let owners = (0..5)
                .filter(|&index| Shard { index, count: 5 }.owns(key))
                .count();
            assert_eq!(owners, 1, "{key}");
        }
    }

    #[test]
    fn an_unknown_site_is_sharded_by_its_mx_hosts_whatever_policy_its_name_carries() {
        let host = crate::mx::MxHost {
            name: "mx.own.test".into(),
            preference: 10,
            addrs: Vec::new(),
        };
        let site = |name: &str| SiteWork {
            name: name.into(),
            hosts: vec![host.clone()].into(),
            rows: Vec::new(),
            provider: None,
            tls: Default::default(),
        };
        let plain = site("mx.own.test");
        let tagged = site("mx.own.test [mta-sts enforce: mx.own.test]");
        assert_eq!(shard_key(&plain), "mx.own.test");
        assert_eq!(shard_key(&tagged), shard_key(&plain));
    }

    #[test]
    fn the_default_results_path_names_the_shard() {
        let p = Shard { index: 2, count: 8 }.results_path("d/list.results.csv".as_ref());
        assert_eq!(p, std::path::Path::new("d/list.results.shard-2-of-8.csv"));
    }
}
