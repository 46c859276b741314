//! MX: where to deliver each destination domain (RFC 5321 §5.1), looked up once per domain.
//!
//! The answer for a domain is a [`Route`]: an ordered list of MX hosts with their addresses
//! (equal preferences shuffled, as RFC 5321 requires), or the reason there is none (null MX per
//! RFC 7505, NXDOMAIN, a temporary DNS failure). Domains whose MX host sets are identical are
//! grouped into one [`Site`], so that e.g. hundreds of domains hosted by one provider share one
//! connection pool and one politeness limit (as KumoMTA does).
//!
//! Lookups sit behind the [`Resolve`] trait so that what consumes routes can be tested with a
//! fixed table instead of a DNS server.
//!
//! Addresses no SMTP server can be reached at are left out of every route ([`unusable`]): the
//! "this network" block 0.0.0.0/8, the reserved block 240.0.0.0/4 with the broadcast address,
//! multicast, and IPv6's unspecified and multicast addresses (also as IPv4-mapped IPv6); with
//! [`DnsOptions::no_private_mx`], also private, loopback, link-local and shared addresses for
//! domains under public names ([`is_public_name`]). A domain whose MX hosts have only such
//! addresses has no address to deliver to, as if they had none ([`Route::NoAddress`]).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::{ResolverBuilder, TokioResolver};
use rand::seq::SliceRandom;
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One MX host with its addresses, in the order they are to be tried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MxHost {
    /// Host name, lower case, no trailing dot.
    pub name: String,
    /// MX preference (0 for an implicit MX).
    pub preference: u16,
    /// Addresses to try, in order.
    pub addrs: Vec<IpAddr>,
}

/// Where mail for a domain goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Deliver to these hosts, in this order.
    Hosts(Arc<[MxHost]>),
    /// `MX 0 .`: the domain accepts no mail (RFC 7505) → bounce 556 5.1.10.
    NullMx,
    /// NXDOMAIN → bounce 5.1.2.
    NoSuchDomain,
    /// MX hosts (or the implicit MX) have no address → bounce 5.4.4.
    NoAddress(String),
    /// SERVFAIL, timeout, … → defer 4.4.3 and retry later.
    TempFail(String),
}

/// The resolver could not be created.
#[derive(Debug, Error)]
pub enum ResolverError {
    /// System configuration unreadable.
    #[error("cannot set up DNS resolver: {0}")]
    Setup(String),
}

/// What DNS server to ask.
#[derive(Clone, Debug)]
pub struct DnsOptions {
    /// `--dns`: this server instead of /etc/resolv.conf.
    pub server: Option<SocketAddr>,
    /// Per-query timeout.
    pub timeout: Duration,
    /// Queries per name server before giving up.
    pub attempts: usize,
    /// At most this many domains resolved at once.
    pub concurrency: usize,
    /// `--no-private-mx`: for domains under public names, leave out MX addresses in private,
    /// loopback, link-local and shared ranges (see [`unusable`]).
    pub no_private_mx: bool,
}

impl Default for DnsOptions {
    fn default() -> Self {
        Self {
            server: None,
            timeout: Duration::from_secs(5),
            attempts: 2,
            concurrency: 64,
            no_private_mx: false,
        }
    }
}

/// Where MX answers come from: [`MxResolver`] asks DNS; a map of domain → [`Route`] answers
/// from a fixed table (tests, or answers known in advance).
pub trait Resolve: Send + Sync {
    /// Resolves one domain (A-label form) to a route.
    fn route(&self, domain: &str) -> impl Future<Output = Route> + Send;

    /// Resolves many domains, each exactly once. The default asks one at a time.
    fn routes(&self, domains: Vec<String>) -> impl Future<Output = HashMap<String, Route>> + Send {
        async move {
            let mut out = HashMap::with_capacity(domains.len());
            for domain in domains {
                let route = self.route(&domain).await;
                out.insert(domain, route);
            }
            out
        }
    }
}

impl Resolve for MxResolver {
    fn route(&self, domain: &str) -> impl Future<Output = Route> + Send {
        MxResolver::route(self, domain)
    }

    fn routes(&self, domains: Vec<String>) -> impl Future<Output = HashMap<String, Route>> + Send {
        MxResolver::routes(self, domains)
    }
}

/// A fixed table: a domain not in it does not exist (NXDOMAIN).
impl Resolve for HashMap<String, Route> {
    fn route(&self, domain: &str) -> impl Future<Output = Route> + Send {
        std::future::ready(self.get(domain).cloned().unwrap_or(Route::NoSuchDomain))
    }
}

/// MX resolution with the run-long cache.
#[derive(Clone)]
pub struct MxResolver {
    resolver: Arc<TokioResolver>,
    concurrency: usize,
    /// See [`DnsOptions::no_private_mx`].
    no_private_mx: bool,
}

enum Lookup<T> {
    Found(Vec<T>),
    NoRecords,
    NxDomain,
    Temp(String),
}

fn classify<T>(
    res: Result<hickory_resolver::lookup::Lookup, NetError>,
    pick: impl Fn(&RData) -> Option<T>,
) -> Lookup<T> {
    match res {
        Ok(lookup) => {
            let found: Vec<T> = lookup
                .answers()
                .iter()
                .filter_map(|r| pick(&r.data))
                .collect();
            if found.is_empty() {
                Lookup::NoRecords
            } else {
                Lookup::Found(found)
            }
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => {
            if nr.response_code == ResponseCode::NXDomain {
                Lookup::NxDomain
            } else {
                Lookup::NoRecords
            }
        }
        Err(NetError::Dns(DnsError::ResponseCode(code))) => {
            Lookup::Temp(format!("DNS server answered {code}"))
        }
        Err(NetError::Timeout) => Lookup::Temp("DNS query timed out".into()),
        Err(e) => Lookup::Temp(e.to_string()),
    }
}

/// A resolver builder for every resolver of ours (MX, MTA-STS, DANE): the given server over
/// UDP and TCP, or the system's configuration (`None`), options left to the caller.
///
/// hickory also builds a TLS configuration for DNS over TLS with every resolver, by default
/// from the system's root certificates (parsing every root: a tenth of the start-up of
/// `--limit 1`, with three resolvers per run). We only speak plain DNS, so ours trusts no
/// root: nothing to load, and a DNS-over-TLS server would be refused, never trusted.
pub(crate) fn resolver_builder(
    server: Option<SocketAddr>,
) -> Result<ResolverBuilder<TokioRuntimeProvider>, String> {
    let builder = match server {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            let config = ResolverConfig::from_name_servers(vec![ns]);
            TokioResolver::builder_with_config(config, Default::default())
        }
        None => TokioResolver::builder_tokio().map_err(|e| e.to_string())?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let no_roots = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(builder.with_tls_config(no_roots))
}

impl MxResolver {
    /// Builds the resolver: the given server (UDP+TCP) or the system's configuration.
    pub fn new(opts: &DnsOptions) -> Result<Self, ResolverError> {
        let mut ropts = ResolverOpts::default();
        ropts.timeout = opts.timeout;
        ropts.attempts = opts.attempts;
        ropts.cache_size = 65_536;
        // Every name we ask is absolute; never append search domains.
        ropts.ndots = 0;
        let resolver = resolver_builder(opts.server)
            .map_err(ResolverError::Setup)?
            .with_options(ropts)
            .build()
            .map_err(|e| ResolverError::Setup(e.to_string()))?;
        Ok(Self {
            resolver: Arc::new(resolver),
            concurrency: opts.concurrency.max(1),
            no_private_mx: opts.no_private_mx,
        })
    }

    async fn addresses(&self, host: &str) -> Lookup<IpAddr> {
        let fqdn = format!("{host}.");
        let (a, aaaa) = tokio::join!(
            self.resolver.lookup(fqdn.as_str(), RecordType::A),
            self.resolver.lookup(fqdn.as_str(), RecordType::AAAA)
        );
        let a = classify(a, |d| match d {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        });
        let aaaa = classify(aaaa, |d| match d {
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        });
        // IPv4 first, then IPv6: a host is reachable if either works (RFC 5321 §5.1 leaves
        // the order between families to the client).
        match (a, aaaa) {
            (Lookup::Found(mut v4), Lookup::Found(v6)) => {
                v4.extend(v6);
                Lookup::Found(v4)
            }
            (Lookup::Found(v), _) | (_, Lookup::Found(v)) => Lookup::Found(v),
            (Lookup::Temp(e), _) | (_, Lookup::Temp(e)) => Lookup::Temp(e),
            (Lookup::NxDomain, _) => Lookup::NxDomain,
            _ => Lookup::NoRecords,
        }
    }

    /// Addresses of one host name (A, then AAAA), e.g. an MTA-STS policy host, without those
    /// never connected to ([`unusable`]): empty when the name does not exist or has no such
    /// address; a temporary failure (SERVFAIL, timeout) → `Err`
    /// with the reason.
    pub async fn host_addresses(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        match self.addresses(host.trim_end_matches('.')).await {
            Lookup::Found(mut addrs) => {
                addrs.retain(|ip| unusable(*ip, false).is_none());
                Ok(addrs)
            }
            Lookup::NoRecords | Lookup::NxDomain => Ok(Vec::new()),
            Lookup::Temp(e) => Err(format!("address lookup for {host}: {e}")),
        }
    }

    /// Resolves one domain (A-label form) to a route.
    pub async fn route(&self, domain: &str) -> Route {
        let fqdn = format!("{domain}.");
        let mx = classify(
            self.resolver.lookup(fqdn.as_str(), RecordType::MX).await,
            |d| match d {
                RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                _ => None,
            },
        );
        let records: Vec<(u16, String)> = match mx {
            Lookup::NxDomain => return Route::NoSuchDomain,
            Lookup::Temp(e) => return Route::TempFail(format!("MX lookup for {domain}: {e}")),
            // RFC 5321 §5.1: no MX → the domain itself is the implicit MX, preference 0.
            Lookup::NoRecords => vec![(0, domain.to_string())],
            Lookup::Found(v) => v,
        };
        let names: Vec<(u16, String)> = records
            .into_iter()
            .map(|(p, n)| (p, n.trim_end_matches('.').to_ascii_lowercase()))
            .collect();
        if names.iter().all(|(_, n)| n.is_empty()) {
            return Route::NullMx;
        }
        let mut hosts = Vec::new();
        let mut temp = None;
        for (preference, name) in names.into_iter().filter(|(_, n)| !n.is_empty()) {
            match self.addresses(&name).await {
                Lookup::Found(addrs) => hosts.push(MxHost {
                    name,
                    preference,
                    addrs,
                }),
                Lookup::Temp(e) => temp = Some(format!("address lookup for {name}: {e}")),
                _ => {}
            }
        }
        let private_too = self.no_private_mx && is_public_name(domain);
        let (mut hosts, left_out) = usable_hosts(hosts, private_too);
        if hosts.is_empty() {
            return match (temp, left_out) {
                (Some(e), _) => Route::TempFail(e),
                (None, Some(why)) => Route::NoAddress(format!(
                    "no usable address for any MX host of {domain}: {why} (never connected to)"
                )),
                (None, None) => {
                    Route::NoAddress(format!("no address (A/AAAA) for any MX host of {domain}"))
                }
            };
        }
        order_hosts(&mut hosts, &mut rand::rng());
        Route::Hosts(hosts.into())
    }

    /// TXT records of `name`, each record's strings joined (RFC 7208 §3.3). No such name or no
    /// TXT record → empty; a temporary failure (SERVFAIL, timeout) → `Err` with the reason.
    pub async fn txt(&self, name: &str) -> Result<Vec<String>, String> {
        let fqdn = format!("{}.", name.trim_end_matches('.'));
        let res = self.resolver.lookup(fqdn.as_str(), RecordType::TXT).await;
        match classify(res, |d| match d {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<String>(),
            ),
            _ => None,
        }) {
            Lookup::Found(v) => Ok(v),
            Lookup::NoRecords | Lookup::NxDomain => Ok(Vec::new()),
            Lookup::Temp(e) => Err(format!("TXT lookup for {name}: {e}")),
        }
    }

    /// Resolves many domains, each exactly once, at most `concurrency` at a time.
    pub async fn routes(
        &self,
        domains: impl IntoIterator<Item = String>,
    ) -> HashMap<String, Route> {
        self.routes_as_named(names_of(domains)).await
    }

    /// [`MxResolver::routes`] for domains named one by one while other work goes on (the
    /// run's triage names each as it finds it): each lookup starts when its domain arrives,
    /// and the answers are returned once the sender is dropped. A domain named twice is
    /// looked up once.
    pub async fn routes_as_named(
        &self,
        domains: tokio::sync::mpsc::UnboundedReceiver<String>,
    ) -> HashMap<String, Route> {
        let me = self.clone();
        each_named(domains, self.concurrency, move |domain| {
            let me = me.clone();
            async move { me.route(&domain).await }
        })
        .await
    }
}

/// `names`, all named at once, for [`each_named`].
pub fn names_of(
    names: impl IntoIterator<Item = String>,
) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for name in names {
        let _ = tx.send(name);
    }
    rx
}

/// Runs `lookup` once for each distinct name received, at most `concurrency` at a time, each
/// as soon as its name arrives; the answers, by name, once the sender is dropped. A lookup
/// that panics has no answer.
pub async fn each_named<T, F, Fut>(
    mut names: tokio::sync::mpsc::UnboundedReceiver<String>,
    concurrency: usize,
    lookup: F,
) -> HashMap<String, T>
where
    T: Send + 'static,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set = JoinSet::new();
    let mut named = std::collections::HashSet::new();
    while let Some(name) = names.recv().await {
        if !named.insert(name.clone()) {
            continue;
        }
        let sem = sem.clone();
        let found = lookup(name.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            (name, found.await)
        });
    }
    let mut out = HashMap::new();
    while let Some(res) = set.join_next().await {
        if let Ok((name, answer)) = res {
            out.insert(name, answer);
        }
    }
    out
}

/// `hosts` without the addresses no connection is made to (see [`unusable`]; `private_too`:
/// private ranges too), and without the hosts left with no address; with the first address
/// left out, and why (`mx.example.test 0.0.0.0 is a "this network" address`).
fn usable_hosts(hosts: Vec<MxHost>, private_too: bool) -> (Vec<MxHost>, Option<String>) {
    let mut left_out = None;
    let kept = hosts
        .into_iter()
        .filter_map(|mut h| {
            h.addrs.retain(|ip| match unusable(*ip, private_too) {
                Some(why) => {
                    left_out.get_or_insert_with(|| format!("{} {ip} is {why}", h.name));
                    false
                }
                None => true,
            });
            (!h.addrs.is_empty()).then_some(h)
        })
        .collect();
    (kept, left_out)
}

/// Why no SMTP connection is ever made to `ip` (a phrase: "a multicast address"), or `None`
/// when it may be. Always left out: 0.0.0.0/8 ("this network", RFC 791/1122: not a
/// destination), 240.0.0.0/4 with the broadcast address 255.255.255.255 (reserved, not
/// routed), 224.0.0.0/4 (multicast), `::` (unspecified) and ff00::/8 (multicast); an
/// IPv4-mapped IPv6 address (`::ffff:0.0.0.0`) is judged as the IPv4 address it maps.
/// With `private_too`, also the addresses no Internet host reaches: 10/8, 172.16/12,
/// 192.168/16 (RFC 1918), 100.64/10 (shared, RFC 6598), 127/8 and `::1` (loopback),
/// 169.254/16 and fe80::/10 (link-local), fc00::/7 (unique local). Loopback is usable by
/// default: the sandbox and local test servers listen there.
pub fn unusable(ip: IpAddr, private_too: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => unusable_v4(v4, private_too),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => unusable_v4(v4, private_too),
            None => unusable_v6(v6, private_too),
        },
    }
}

fn unusable_v4(ip: Ipv4Addr, private_too: bool) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    let always = if a == 0 {
        Some("a \"this network\" address (0.0.0.0/8)")
    } else if ip.is_broadcast() {
        Some("the broadcast address")
    } else if a >= 240 {
        Some("a reserved address (240.0.0.0/4)")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else {
        None
    };
    if always.is_some() || !private_too {
        return always;
    }
    if ip.is_private() {
        Some("a private address (RFC 1918)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("a shared address (100.64.0.0/10)")
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_link_local() {
        Some("a link-local address")
    } else {
        None
    }
}

fn unusable_v6(ip: Ipv6Addr, private_too: bool) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if !private_too {
        None
    } else if ip.is_loopback() {
        Some("a loopback address")
    } else if ip.is_unique_local() {
        Some("a unique local address (fc00::/7)")
    } else if ip.is_unicast_link_local() {
        Some("a link-local address")
    } else {
        None
    }
}

/// Special-use and never-delegated top-level names (RFC 2606, 6761, 6762, 8375; ICANN's
/// `.internal` and its names held back for collisions): mail for them stays on private
/// networks, so `--no-private-mx` leaves their private addresses alone.
const PRIVATE_NAMES: &[&str] = &[
    "test",
    "example",
    "invalid",
    "localhost",
    "local",
    "internal",
    "home.arpa",
    "corp",
    "home",
    "mail",
];

/// True when `domain` is under a public name, not under one of [`PRIVATE_NAMES`].
pub fn is_public_name(domain: &str) -> bool {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    !PRIVATE_NAMES
        .iter()
        .any(|p| d == *p || d.ends_with(&format!(".{p}")))
}

/// Sorts by preference and shuffles each run of equal preference (RFC 5321 §5.1: "MUST be
/// randomized" to spread load across equal hosts).
pub fn order_hosts<R: rand::Rng + ?Sized>(hosts: &mut [MxHost], rng: &mut R) {
    hosts.sort_by_key(|h| h.preference);
    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts[start].preference;
        let end = hosts[start..]
            .iter()
            .position(|h| h.preference != pref)
            .map_or(hosts.len(), |i| start + i);
        hosts[start..end].shuffle(rng);
        start = end;
    }
}

/// Domains sharing one set of MX hosts, delivered through one pool.
#[derive(Clone, Debug)]
pub struct Site {
    /// Stable name: the sorted MX host names joined by `,`.
    pub name: String,
    /// Hosts in try order (from the first domain that produced this site).
    pub hosts: Arc<[MxHost]>,
    /// Domains in this site.
    pub domains: Vec<String>,
}

/// The key two domains must share to be one site.
pub fn site_name(hosts: &[MxHost]) -> String {
    let mut names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

/// Groups routable domains into sites, in a stable (name) order.
pub fn group_sites(routes: &HashMap<String, Route>) -> Vec<Site> {
    group_sites_by(routes, |_| None)
}

/// Groups routable domains into sites like [`group_sites`], but domains with the same MX hosts
/// and a different `tag` (their published TLS policy) stay apart: the site is named
/// `hosts [tag]`.
pub fn group_sites_by(
    routes: &HashMap<String, Route>,
    tag: impl Fn(&str) -> Option<String>,
) -> Vec<Site> {
    let mut sites: BTreeMap<String, Site> = BTreeMap::new();
    let mut domains: Vec<(&String, &Route)> = routes.iter().collect();
    domains.sort_by(|a, b| a.0.cmp(b.0));
    for (domain, route) in domains {
        if let Route::Hosts(hosts) = route {
            let name = match tag(domain) {
                Some(tag) => format!("{} [{tag}]", site_name(hosts)),
                None => site_name(hosts),
            };
            sites
                .entry(name.clone())
                .or_insert_with(|| Site {
                    name,
                    hosts: hosts.clone(),
                    domains: Vec::new(),
                })
                .domains
                .push(domain.clone());
        }
    }
    sites.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn host(name: &str, preference: u16) -> MxHost {
        MxHost {
            name: name.into(),
            preference,
            addrs: vec![],
        }
    }

    #[test]
    fn orders_by_preference_and_shuffles_ties() {
        let mut firsts = std::collections::HashSet::new();
        for seed in 0..64 {
            let mut hosts = vec![host("c", 20), host("a", 10), host("b", 10), host("d", 5)];
            order_hosts(&mut hosts, &mut rand::rngs::StdRng::seed_from_u64(seed));
            let prefs: Vec<u16> = hosts.iter().map(|h| h.preference).collect();
            assert_eq!(prefs, vec![5, 10, 10, 20]);
            assert_eq!(hosts[0].name, "d");
            assert_eq!(hosts[3].name, "c");
            firsts.insert(hosts[1].name.clone());
        }
        // Both equal-preference hosts come first sometimes.
        assert_eq!(firsts.len(), 2);
    }

    #[tokio::test]
    async fn a_fixed_table_resolves_like_dns_and_unknown_domains_do_not_exist() {
        let provider: Arc<[MxHost]> = vec![host("mx1.p.test", 10)].into();
        let mut table = HashMap::new();
        table.insert("a.test".to_string(), Route::Hosts(provider.clone()));
        table.insert("b.test".to_string(), Route::Hosts(provider));
        table.insert("null.test".to_string(), Route::NullMx);
        let domains = ["a.test", "b.test", "null.test", "gone.test"].map(String::from);
        let routes = Resolve::routes(&table, domains.to_vec()).await;
        assert_eq!(routes.len(), 4);
        assert_eq!(routes["gone.test"], Route::NoSuchDomain);
        assert_eq!(routes["null.test"], Route::NullMx);
        let sites = group_sites(&routes);
        assert_eq!(sites.len(), 1);
        assert_eq!(sites[0].domains, vec!["a.test", "b.test"]);
    }

    #[test]
    fn domains_with_the_same_mx_set_share_a_site() {
        let provider: Arc<[MxHost]> = vec![host("mx1.p.test", 10), host("mx2.p.test", 20)].into();
        let provider_swapped: Arc<[MxHost]> =
            vec![host("mx2.p.test", 10), host("mx1.p.test", 10)].into();
        let own: Arc<[MxHost]> = vec![host("mail.own.test", 10)].into();
        let mut routes = HashMap::new();
        routes.insert("a.test".to_string(), Route::Hosts(provider.clone()));
        routes.insert("b.test".to_string(), Route::Hosts(provider_swapped));
        routes.insert("own.test".to_string(), Route::Hosts(own));
        routes.insert("gone.test".to_string(), Route::NoSuchDomain);
        let sites = group_sites(&routes);
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[1].name, "mx1.p.test,mx2.p.test");
        assert_eq!(sites[1].domains, vec!["a.test", "b.test"]);
        assert_eq!(sites[0].domains, vec!["own.test"]);
    }

    #[test]
    fn addresses_no_server_is_reached_at_are_never_used() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for (addr, always, private) in [
            ("0.0.0.0", true, true),
            ("0.1.2.3", true, true),
            ("255.255.255.255", true, true),
            ("240.0.0.1", true, true),
            ("224.0.0.251", true, true),
            ("239.255.255.250", true, true),
            ("::", true, true),
            ("ff02::1", true, true),
            ("::ffff:0.0.0.0", true, true),
            ("::ffff:224.0.0.1", true, true),
            ("10.1.2.3", false, true),
            ("172.16.0.1", false, true),
            ("192.168.1.1", false, true),
            ("100.64.0.1", false, true),
            ("127.0.0.40", false, true),
            ("169.254.1.1", false, true),
            ("::1", false, true),
            ("fd00::25", false, true),
            ("fe80::1", false, true),
            ("::ffff:10.0.0.1", false, true),
            ("192.0.2.25", false, false),
            ("100.128.0.1", false, false),
            ("2001:db8::25", false, false),
            ("172.32.0.1", false, false),
        ] {
            assert_eq!(unusable(ip(addr), false).is_some(), always, "{addr}");
            assert_eq!(
                unusable(ip(addr), true).is_some(),
                private,
                "{addr} (private too)"
            );
        }
    }

    #[test]
    fn a_domain_under_a_special_use_name_is_not_public() {
        for d in [
            "a.test",
            "example",
            "x.EXAMPLE.",
            "mx.home.arpa",
            "intranet.corp",
        ] {
            assert!(!is_public_name(d), "{d}");
        }
        for d in ["example.com", "gmail.com", "latest", "contest.org", "arpa"] {
            assert!(is_public_name(d), "{d}");
        }
    }

    #[test]
    fn hosts_keep_their_usable_addresses_and_the_first_left_out_says_why() {
        let with = |name: &str, addrs: &[&str]| MxHost {
            name: name.into(),
            preference: 10,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        };
        let hosts = vec![
            with("mx1.d.test", &["0.0.0.0"]),
            with("mx2.d.test", &["224.0.0.1", "192.0.2.7"]),
        ];
        let (kept, why) = usable_hosts(hosts.clone(), false);
        assert_eq!(kept, vec![with("mx2.d.test", &["192.0.2.7"])]);
        assert_eq!(
            why.as_deref(),
            Some("mx1.d.test 0.0.0.0 is a \"this network\" address (0.0.0.0/8)")
        );
        let (kept, _) = usable_hosts(vec![with("mx.d.test", &["10.0.0.1"])], false);
        assert_eq!(kept.len(), 1, "private addresses are usable by default");
        let (kept, why) = usable_hosts(vec![with("mx.d.test", &["10.0.0.1"])], true);
        assert!(kept.is_empty());
        assert_eq!(
            why.as_deref(),
            Some("mx.d.test 10.0.0.1 is a private address (RFC 1918)")
        );
    }

    #[test]
    fn domains_with_the_same_mx_set_and_different_tags_are_different_sites() {
        let shared: Arc<[MxHost]> = vec![host("mx.p.test", 10)].into();
        let mut routes = HashMap::new();
        for d in ["plain.test", "sts1.test", "sts2.test"] {
            routes.insert(d.to_string(), Route::Hosts(shared.clone()));
        }
        let sites = group_sites_by(&routes, |d| d.starts_with("sts").then(|| "enforce".into()));
        assert_eq!(sites.len(), 2);
        assert_eq!(sites[0].name, "mx.p.test");
        assert_eq!(sites[0].domains, vec!["plain.test"]);
        assert_eq!(sites[1].name, "mx.p.test [enforce]");
        assert_eq!(sites[1].domains, vec!["sts1.test", "sts2.test"]);
    }
}
