//! MTA-STS (RFC 8461): a recipient domain's published policy, fetched over HTTPS, cached on
//! disk for its `max_age`.
//!
//! Once per destination domain per run, [`StsResolver::lookup`] asks for the `_mta-sts.<domain>`
//! TXT record, then either uses the cached policy (same `id`, unexpired) or fetches
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`. The answer, a [`Lookup`], tells the
//! delivery what to enforce: under [`Mode::Enforce`] only MX hosts that
//! [`Policy::allows_mx`], only with a certificate valid for the host name; under
//! [`Mode::Testing`] deliver as usual and report what would have failed.
//!
//! Parts: [`policy`] (the grammar and MX matching), [`fetch`] (the HTTPS request), `cache`
//! (the JSON file kept between runs).

mod cache;
pub mod fetch;
pub mod policy;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use thiserror::Error;
use tokio_rustls::TlsConnector;

use crate::mx::{DnsOptions, MxResolver, ResolverError};
use cache::{Cache, unix_now};
use fetch::Fetcher;

pub use cache::default_cache_path;
pub use fetch::{DEFAULT_FETCH_TIMEOUT, FetchError, MAX_POLICY_SIZE};
pub use policy::{MAX_AGE_LIMIT, Mode, Policy, PolicyError, TxtError, policy_id};

/// What a domain publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// No `_mta-sts` TXT record (or no valid one), and no cached policy: no MTA-STS.
    NoPolicy,
    /// A policy in force: fetched now, or from the cache (RFC 8461 §5.1) when the TXT `id` is
    /// unchanged and the policy unexpired, or when the TXT record or the policy host cannot be
    /// reached (or the TXT record is gone) while the cached policy is unexpired.
    Policy {
        /// The policy, with `id` the TXT record's id it was fetched under.
        policy: Arc<Policy>,
        /// Whether it came from the cache rather than a fetch in this lookup.
        from_cache: bool,
    },
    /// A TXT record but no policy could be fetched and none is cached, or the TXT lookup failed
    /// temporarily with none cached (RFC 8461 §5: deliver as though the domain had no
    /// MTA-STS). The reason, for the summary.
    Unavailable(String),
}

impl Lookup {
    /// The policy in force, if any.
    pub fn policy(&self) -> Option<&Arc<Policy>> {
        match self {
            Lookup::Policy { policy, .. } => Some(policy),
            _ => None,
        }
    }

    /// Whether delivery must be restricted (a policy in `enforce` mode).
    pub fn enforced(&self) -> bool {
        self.policy().is_some_and(|p| p.mode == Mode::Enforce)
    }
}

/// How to look policies up.
#[derive(Clone, Debug)]
pub struct StsOptions {
    /// The DNS server of the run (`--dns`): both the TXT record and the policy host's address
    /// are asked there.
    pub dns: DnsOptions,
    /// The policy host's HTTPS port: 443, except in tests.
    pub https_port: u16,
    /// The deadline for one whole policy fetch (address lookup, connect, TLS, HTTP, body).
    pub timeout: Duration,
    /// Roots trusted besides the Mozilla roots (`--tls-ca`: a private PKI, or a test CA).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// The cache file kept between runs (see [`default_cache_path`]); `None`: in memory only.
    pub cache: Option<PathBuf>,
}

impl Default for StsOptions {
    fn default() -> Self {
        Self {
            dns: DnsOptions::default(),
            https_port: 443,
            timeout: DEFAULT_FETCH_TIMEOUT,
            extra_roots: Vec::new(),
            cache: None,
        }
    }
}

/// The resolver could not be set up, the cache not saved, or roots not loaded.
#[derive(Debug, Error)]
pub enum StsError {
    /// The DNS resolver could not be built.
    #[error(transparent)]
    Dns(#[from] ResolverError),
    /// rustls refused the configuration or an extra root.
    #[error("cannot set up TLS for MTA-STS: {0}")]
    Tls(#[from] rustls::Error),
    /// The cache file could not be written.
    #[error("cannot write the MTA-STS cache {path}: {source}")]
    CacheWrite {
        /// The cache file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `--tls-ca` file could not be read.
    #[error("cannot read CA file {path}: {source}")]
    CaRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A `--tls-ca` file holds no usable PEM certificate.
    #[error("{path}: {reason}")]
    CaPem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Loads the PEM certificates (`-----BEGIN CERTIFICATE-----`) of a `--tls-ca` file, to trust
/// as extra roots. Other PEM sections (keys, …) are skipped; a file with no certificate, or a
/// malformed one, is an error.
pub fn load_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, StsError> {
    let bytes = std::fs::read(path).map_err(|source| StsError::CaRead {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StsError::CaPem {
            path: path.to_path_buf(),
            reason: format!("malformed PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(StsError::CaPem {
            path: path.to_path_buf(),
            reason: "no PEM certificate (BEGIN CERTIFICATE) found".into(),
        });
    }
    Ok(certs)
}

/// MTA-STS policy lookups for one run, with the cache kept between runs.
pub struct StsResolver {
    dns: MxResolver,
    fetcher: Fetcher,
    cache: Mutex<Cache>,
}

impl StsResolver {
    /// Builds the resolver and reads the cache file (a missing or corrupt one is an empty
    /// cache).
    pub fn new(opts: StsOptions) -> Result<Self, StsError> {
        let dns = MxResolver::new(&opts.dns)?;
        let tls = TlsConnector::from(Arc::new(fetch::client_config(&opts.extra_roots)?));
        Ok(Self {
            fetcher: Fetcher {
                dns: dns.clone(),
                tls,
                port: opts.https_port,
                timeout: opts.timeout,
            },
            dns,
            cache: Mutex::new(Cache::load(opts.cache)),
        })
    }

    fn cached(&self, domain: &str) -> Option<Arc<Policy>> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .valid(domain, unix_now())
    }

    /// Once per domain per run (A-label form): the TXT record, then the cache or HTTPS.
    ///
    /// RFC 8461 §3.1, §3.3 and §5.1: a cached unexpired policy whose id equals the TXT id is
    /// used without fetching; with a different id the policy is fetched and replaces the cached
    /// one, or, if the fetch fails, the cached one stays in force. When the TXT lookup fails or
    /// finds no valid record, an unexpired cached policy stays in force too (the absence of a
    /// usable TXT record does not remove a cached policy).
    pub async fn lookup(&self, domain: &str) -> Lookup {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let cached = self.cached(&domain);
        let use_cache_or = |otherwise: Lookup| match &cached {
            Some(policy) => Lookup::Policy {
                policy: policy.clone(),
                from_cache: true,
            },
            None => otherwise,
        };
        let id = match self.dns.txt(&format!("_mta-sts.{domain}")).await {
            Err(e) => return use_cache_or(Lookup::Unavailable(e)),
            Ok(records) => match policy_id(&records) {
                Ok(id) => id,
                Err(_) => return use_cache_or(Lookup::NoPolicy),
            },
        };
        if let Some(policy) = cached.as_ref().filter(|p| p.id == id) {
            return Lookup::Policy {
                policy: policy.clone(),
                from_cache: true,
            };
        }
        match self.fetcher.fetch(&domain).await {
            Ok(mut policy) => {
                policy.id = id;
                let policy = Arc::new(policy);
                self.cache
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .store(&domain, policy.clone(), unix_now());
                Lookup::Policy {
                    policy,
                    from_cache: false,
                }
            }
            Err(e) => use_cache_or(Lookup::Unavailable(format!(
                "MTA-STS policy of {domain} (id {id}): {e}"
            ))),
        }
    }

    /// Fetches the policy of `domain` over HTTPS now, whatever the TXT record and the cache
    /// say, without caching it (diagnostics). Its `id` is empty.
    pub async fn fetch(&self, domain: &str) -> Result<Policy, FetchError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        self.fetcher.fetch(&domain).await
    }

    /// Persists the cache (once, at the end of the lookups): the unexpired policies, written
    /// atomically; nothing is written when no policy was fetched.
    pub fn save(&self) -> Result<(), StsError> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .save(unix_now())
            .map_err(|source| StsError::CacheWrite {
                path: cache.path().map(Path::to_path_buf).unwrap_or_default(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The run stage spawns lookups on a multi-threaded runtime and shares the resolver.
    #[allow(dead_code)]
    fn lookups_can_be_spawned(resolver: Arc<StsResolver>) {
        fn send<T: Send + 'static>(_: T) {}
        fn shared<T: Send + Sync>() {}
        shared::<StsResolver>();
        send(async move { resolver.lookup("example.com").await });
    }

    #[test]
    fn lookup_helpers() {
        let policy = Arc::new(Policy {
            id: "1".into(),
            mode: Mode::Enforce,
            mx: vec!["mx.example.com".into()],
            max_age: 1,
        });
        let enforced = Lookup::Policy {
            policy: policy.clone(),
            from_cache: false,
        };
        assert!(enforced.enforced());
        assert_eq!(enforced.policy(), Some(&policy));
        let testing = Lookup::Policy {
            policy: Arc::new(Policy {
                mode: Mode::Testing,
                ..(*policy).clone()
            }),
            from_cache: true,
        };
        assert!(!testing.enforced());
        assert!(!Lookup::NoPolicy.enforced());
        assert_eq!(Lookup::Unavailable("x".into()).policy(), None);
    }
}
