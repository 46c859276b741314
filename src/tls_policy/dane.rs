//! DANE for SMTP (RFC 7672, RFC 7671): DNSSEC-validated TLSA records of an MX host and the
//! certificate check they imply.
//!
//! Why it exists: opportunistic STARTTLS can be stripped or answered with any certificate by
//! whoever sits on the path. An MX host whose zone is DNSSEC-signed can publish TLSA records at
//! `_25._tcp.<host>`; once they validate, TLS is mandatory for that host and the certificate
//! must match one of them. Two halves:
//!
//! - [`DaneResolver`] asks DNS with hickory's in-process DNSSEC validation (from the IANA root
//!   anchors, or a private root given with `--dnssec-trust-anchor`) and sorts the answer into a
//!   [`TlsaLookup`]: secure records, no DANE (proven absent, or an unsigned zone), bogus, or a
//!   temporary failure. The last two never mean "no DANE": the caller defers the host.
//! - [`client_config`] builds a rustls configuration whose verifier accepts the server's chain
//!   only if it matches a usable TLSA record (RFC 7672 §3.1): DANE-EE(3) against the leaf with no
//!   name or expiry check; DANE-TA(2) against a certificate of the chain (or a bare public key)
//!   that the leaf must chain to, with the leaf valid for the MX host name. PKIX-TA(0) and
//!   PKIX-EE(1) are not usable for SMTP (RFC 7672 §3.1.3), nor are unknown selectors or matching
//!   types. The handshake signatures are verified as always.

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hickory_proto::dnssec::{Proof, TrustAnchors};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ResolveHosts, ResolverOpts};
use hickory_resolver::net::{DnsError, NetError};
use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, Der, ServerName, TrustAnchor, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use thiserror::Error;

use crate::mx::DnsOptions;

/// Certificate usage DANE-TA: a trust anchor the chain must lead to.
pub const DANE_TA: u8 = 2;
/// Certificate usage DANE-EE: the server's own certificate or key.
pub const DANE_EE: u8 = 3;

/// One TLSA record (RFC 6698): usage, selector, matching type, data.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Tlsa {
    /// Certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0: the full certificate (DER); 1: its SubjectPublicKeyInfo (DER).
    pub selector: u8,
    /// 0: the selected bytes themselves; 1: their SHA-256; 2: their SHA-512.
    pub matching: u8,
    /// Certificate association data.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Whether SMTP can use this record (RFC 7672 §3.1): DANE-TA or DANE-EE, selector 0 or 1,
    /// matching type 0, 1 or 2.
    pub fn is_usable(&self) -> bool {
        matches!(self.usage, DANE_TA | DANE_EE) && self.selector <= 1 && self.matching <= 2
    }

    /// The record that `cert` satisfies with this usage, selector and matching type (what a
    /// receiver would publish; the sandbox and tests use it).
    pub fn from_certificate(
        usage: u8,
        selector: u8,
        matching: u8,
        cert: &CertificateDer<'_>,
    ) -> Result<Self, DaneError> {
        let selected = select(selector, cert).ok_or_else(|| {
            DaneError::Certificate(format!(
                "cannot select part {selector} of the certificate (selector 0 or 1, parsable DER)"
            ))
        })?;
        let data = digest_for(matching, &selected).ok_or_else(|| {
            DaneError::Certificate(format!("unknown TLSA matching type {matching}"))
        })?;
        Ok(Self {
            usage,
            selector,
            matching,
            data,
        })
    }

    /// Whether `cert` matches this record's selector, matching type and data (usage aside).
    pub fn matches(&self, cert: &CertificateDer<'_>) -> bool {
        select(self.selector, cert)
            .and_then(|selected| digest_for(self.matching, &selected))
            .is_some_and(|d| d == self.data)
    }
}

/// Presentation format, as in a zone file: `3 1 1 0a1b…`.
impl fmt::Display for Tlsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.usage, self.selector, self.matching)?;
        for b in &self.data {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The usable records among `records` (usages 2/3, selectors 0/1, matching types 0/1/2).
pub fn usable(records: &[Tlsa]) -> Vec<Tlsa> {
    records.iter().filter(|r| r.is_usable()).cloned().collect()
}

/// The bytes a selector picks out of a certificate: the whole DER, or its SPKI (with the outer
/// SEQUENCE, as RFC 6698 §2.1.2 hashes it). `None` for an unknown selector or unparsable DER.
fn select<'a>(selector: u8, cert: &'a CertificateDer<'_>) -> Option<Cow<'a, [u8]>> {
    match selector {
        0 => Some(Cow::Borrowed(cert.as_ref())),
        1 => {
            let anchor = webpki::anchor_from_trusted_cert(cert).ok()?;
            Some(Cow::Owned(
                webpki::spki_for_anchor(&anchor).as_ref().to_vec(),
            ))
        }
        _ => None,
    }
}

/// Applies a matching type; `None` for an unknown one.
fn digest_for(matching: u8, selected: &[u8]) -> Option<Vec<u8>> {
    match matching {
        0 => Some(selected.to_vec()),
        1 => Some(digest::digest(&digest::SHA256, selected).as_ref().to_vec()),
        2 => Some(digest::digest(&digest::SHA512, selected).as_ref().to_vec()),
        _ => None,
    }
}

/// What DNSSEC says about `_25._tcp.<host>` TLSA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsaLookup {
    /// Validated (secure) TLSA records: DANE applies. May contain only unusable records (then
    /// RFC 7672 §2.2 says TLS is still mandatory but unauthenticated); all records are kept,
    /// [`usable`] filters them.
    Secure(Vec<Tlsa>),
    /// No TLSA, proven (secure NXDOMAIN/NODATA) or in an insecure (unsigned) zone: no DANE.
    None,
    /// The answer failed validation (bad signature, missing RRSIG in a signed zone, a broken
    /// chain of trust): the host must not be used. The text says why, for the results CSV.
    Bogus(String),
    /// Temporary DNS failure (SERVFAIL, timeout): the host cannot be judged now; like
    /// [`TlsaLookup::Bogus`] it must never be taken as "no DANE".
    Failed(String),
}

/// DANE could not be set up, or a certificate did not match.
#[derive(Debug, Error)]
pub enum DaneError {
    /// The `--dnssec-trust-anchor` file is unreadable, malformed, or has no root key.
    #[error("cannot use DNSSEC trust anchor {}: {reason}", path.display())]
    TrustAnchor {
        /// The file given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The validating resolver could not be built.
    #[error("cannot set up the DNSSEC-validating resolver: {0}")]
    Resolver(String),
    /// [`client_config`] was given no usable record: the caller must decide (RFC 7672 §2.2:
    /// mandatory but unauthenticated TLS).
    #[error("no usable TLSA record (DANE-TA(2) or DANE-EE(3), selector 0/1, matching type 0/1/2)")]
    NoUsableRecords,
    /// rustls refused the configuration.
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// A certificate could not be parsed or selected.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The server's chain matched none of the host's TLSA records (reported by the handshake).
    #[error("DANE: the certificate of {host} matches none of its TLSA records: {detail}")]
    Mismatch {
        /// The MX host.
        host: String,
        /// Which records were tried and why they failed.
        detail: String,
    },
}

/// A resolver that validates DNSSEC in-process, for TLSA lookups.
#[derive(Clone)]
pub struct DaneResolver {
    resolver: Arc<TokioResolver>,
}

/// Reads a trust anchor file: zone-file lines of DNSKEY records, e.g.
/// `. 3600 IN DNSKEY 257 3 13 <base64 key>` (hickory's trust anchor format; DS lines are not
/// supported). At least one key must belong to the root zone `.`, since validation starts there.
pub fn load_trust_anchor(path: &Path) -> Result<TrustAnchors, DaneError> {
    let anchors = TrustAnchors::from_file(path).map_err(|e| DaneError::TrustAnchor {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if anchors.is_empty() {
        return Err(DaneError::TrustAnchor {
            path: path.to_path_buf(),
            reason: "no DNSKEY record for the root zone \".\"".into(),
        });
    }
    Ok(anchors)
}

/// The DNSSEC status of a set of answer records (RRSIGs aside): the weakest proof wins.
fn weakest_proof<'a>(records: impl Iterator<Item = &'a Record>) -> Option<Proof> {
    records
        .filter(|r| r.record_type() != RecordType::RRSIG)
        .map(|r| r.proof)
        .min()
}

impl DaneResolver {
    /// `dns`: the DNS server to ask (None = system resolv.conf) and its timeouts;
    /// `trust_anchor`: a file of DNSKEY records for a private root (see [`load_trust_anchor`];
    /// None = the IANA root anchors built into hickory).
    pub fn new(dns: &DnsOptions, trust_anchor: Option<&Path>) -> Result<Self, DaneError> {
        let anchors = match trust_anchor {
            Some(path) => load_trust_anchor(path)?,
            None => TrustAnchors::default(),
        };
        let mut ropts = ResolverOpts::default();
        ropts.timeout = dns.timeout;
        ropts.attempts = dns.attempts;
        ropts.ndots = 0;
        ropts.edns0 = true;
        ropts.validate = true;
        ropts.cache_size = 4096;
        // /etc/hosts entries carry no DNSSEC status: never let them stand in for DNS here.
        ropts.use_hosts_file = ResolveHosts::Never;
        let resolver = crate::mx::resolver_builder(dns.server)
            .map_err(DaneError::Resolver)?
            .with_options(ropts)
            .with_trust_anchor(Arc::new(anchors))
            .build()
            .map_err(|e| DaneError::Resolver(e.to_string()))?;
        Ok(Self {
            resolver: Arc::new(resolver),
        })
    }

    /// Whether DNSSEC validation works at all on this path. The root zone's SOA must validate:
    /// that needs the root DNSKEY RRset to match the trust anchor *and* a signature made with it,
    /// so a server that strips RRSIGs (or serves no DNSSEC, like the `--sandbox` one) fails here.
    /// (The root DNSKEY RRset alone would not do: keys that are themselves trust anchors are
    /// accepted without a signature.) When it fails, the caller turns DANE off for the run with
    /// a warning, as Postfix treats a non-validating resolver: everything insecure.
    pub async fn available(&self) -> Result<(), String> {
        match self.resolver.lookup(Name::root(), RecordType::SOA).await {
            Ok(lookup) => {
                let soa = lookup
                    .answers()
                    .iter()
                    .filter(|r| r.record_type() == RecordType::SOA);
                match weakest_proof(soa) {
                    Some(Proof::Secure) => Ok(()),
                    Some(proof) => Err(format!(
                        "the root zone's SOA is not DNSSEC-validated (status {proof})"
                    )),
                    None => Err("no SOA record for the root zone".into()),
                }
            }
            Err(e) => Err(format!("cannot validate the root zone with DNSSEC: {e}")),
        }
    }

    /// TLSA records for SMTP at `host` (`_{port}._tcp.{host}`, port 25 normally), validated.
    ///
    /// A temporary failure of the TLSA query is forgiven in one case: when the host's own address
    /// records are provably insecure (an unsigned zone cannot carry DANE, RFC 7672 §2.2.2), the
    /// answer is [`TlsaLookup::None`], so a broken name server of an unsigned zone does not hold
    /// mail back. The extra query happens only after a failure.
    pub async fn tlsa(&self, host: &str, port: u16) -> TlsaLookup {
        let host = host.trim_end_matches('.');
        let Ok(name) = Name::from_ascii(format!("_{port}._tcp.{host}.")) else {
            return TlsaLookup::Failed(format!("invalid host name {host:?} for a TLSA lookup"));
        };
        let result = classify(
            self.resolver.lookup(name.clone(), RecordType::TLSA).await,
            &name,
        );
        if matches!(result, TlsaLookup::Failed(_)) && self.host_insecure(host).await {
            return TlsaLookup::None;
        }
        result
    }

    /// Whether the host's address records are validated as insecure (unsigned zone).
    async fn host_insecure(&self, host: &str) -> bool {
        let Ok(name) = Name::from_ascii(format!("{host}.")) else {
            return false;
        };
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Ok(lookup) = self.resolver.lookup(name.clone(), rtype).await {
                let addrs = lookup.answers().iter().filter(|r| r.record_type() == rtype);
                return weakest_proof(addrs) == Some(Proof::Insecure);
            }
        }
        false
    }
}

/// Sorts a validated TLSA lookup into the four cases.
fn classify(result: Result<hickory_resolver::lookup::Lookup, NetError>, name: &Name) -> TlsaLookup {
    match result {
        Ok(lookup) => {
            let answers = lookup.answers();
            let records: Vec<Tlsa> = answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TLSA(t) => Some(Tlsa {
                        usage: t.cert_usage.into(),
                        selector: t.selector.into(),
                        matching: t.matching.into(),
                        data: t.cert_data.clone(),
                    }),
                    _ => None,
                })
                .collect();
            if records.is_empty() {
                return TlsaLookup::None;
            }
            // Every record of the answer (a CNAME on the way included) must be secure.
            match weakest_proof(answers.iter()) {
                Some(Proof::Secure) => TlsaLookup::Secure(records),
                Some(Proof::Insecure) => TlsaLookup::None,
                Some(Proof::Bogus) => {
                    TlsaLookup::Bogus(format!("DNSSEC validation of {name} TLSA failed"))
                }
                Some(Proof::Indeterminate) | None => TlsaLookup::Failed(format!(
                    "DNSSEC status of {name} TLSA could not be determined"
                )),
            }
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(_))) => TlsaLookup::None,
        Err(NetError::Dns(DnsError::DnssecBogus)) => TlsaLookup::Bogus(format!(
            "DNSSEC validation of {name} TLSA failed (bogus signature or broken chain of trust)"
        )),
        Err(NetError::Dns(DnsError::Nsec { proof, .. })) => match proof {
            Proof::Secure | Proof::Insecure => TlsaLookup::None,
            Proof::Bogus => TlsaLookup::Bogus(format!(
                "DNSSEC denial of existence for {name} TLSA failed validation"
            )),
            Proof::Indeterminate => TlsaLookup::Failed(format!(
                "DNSSEC status of the denial for {name} TLSA could not be determined"
            )),
        },
        Err(NetError::Dns(DnsError::ResponseCode(code))) => TlsaLookup::Failed(format!(
            "TLSA lookup for {name}: DNS server answered {code}"
        )),
        Err(NetError::Timeout) => TlsaLookup::Failed(format!("TLSA lookup for {name} timed out")),
        Err(e) => TlsaLookup::Failed(format!("TLSA lookup for {name}: {e}")),
    }
}

/// A rustls client configuration whose verifier accepts the server's chain only if it matches
/// one of `records` by RFC 7671/7672 rules; `host` is the MX host name, the reference identifier
/// for DANE-TA(2) (RFC 7672 §3.2.2); DANE-EE(3) skips name and expiry checks. Unusable records
/// are ignored; with none usable this is [`DaneError::NoUsableRecords`]. A mismatch fails the
/// handshake with a [`DaneError::Mismatch`] text naming DANE.
pub fn client_config(records: &[Tlsa], host: &str) -> Result<Arc<ClientConfig>, DaneError> {
    let records = usable(records);
    if records.is_empty() {
        return Err(DaneError::NoUsableRecords);
    }
    crate::smtp::tls::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = DaneVerifier {
        records,
        host: host.trim_end_matches('.').to_ascii_lowercase(),
        provider: provider.clone(),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The RFC 7671 matcher behind [`client_config`].
#[derive(Debug)]
struct DaneVerifier {
    /// Usable records only.
    records: Vec<Tlsa>,
    host: String,
    provider: Arc<CryptoProvider>,
}

/// The contents of a DER SEQUENCE (what `TrustAnchor::subject_public_key_info` holds).
fn der_sequence_contents(der: &[u8]) -> Option<&[u8]> {
    let (&tag, rest) = der.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() == len).then_some(rest)
}

impl DaneVerifier {
    /// DANE-TA: the leaf must chain (webpki path building, expiry checked) to `anchors` and be
    /// valid for the host name.
    fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        anchors: &[TrustAnchor<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| format!("cannot parse the server certificate: {e}"))?;
        ee.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| format!("the chain does not lead to the TLSA trust anchor: {e}"))?;
        let name = ServerName::try_from(self.host.as_str())
            .map_err(|_| format!("{:?} is not a DNS name", self.host))?;
        ee.verify_is_valid_for_subject_name(&name)
            .map_err(|e| format!("certificate not valid for {}: {e}", self.host))
    }

    /// One DANE-TA record: a chain certificate it matches becomes the only trust anchor; a
    /// `2 1 0` record (the full public key) is a trust anchor by itself, named after each
    /// issuer in the chain so path building can reach it.
    fn verify_ta(
        &self,
        record: &Tlsa,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), String> {
        let mut last_err = None;
        for ta in intermediates.iter().filter(|c| record.matches(c)) {
            let anchor = match webpki::anchor_from_trusted_cert(ta) {
                Ok(a) => a,
                Err(e) => {
                    last_err = Some(format!("matching certificate unparsable: {e}"));
                    continue;
                }
            };
            match self.verify_chain(end_entity, intermediates, &[anchor], now) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
        }
        if record.selector == 1
            && record.matching == 0
            && let Some(spki) = der_sequence_contents(&record.data)
        {
            let anchors: Vec<TrustAnchor<'_>> = std::iter::once(end_entity)
                .chain(intermediates)
                .filter_map(|c| webpki::EndEntityCert::try_from(c).ok())
                .map(|c| TrustAnchor {
                    subject: Der::from(c.issuer().to_vec()),
                    subject_public_key_info: Der::from(spki),
                    name_constraints: None,
                })
                .collect();
            match self.verify_chain(end_entity, intermediates, &anchors, now) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| "no certificate of the chain matches".into()))
    }
}

impl ServerCertVerifier for DaneVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // DANE-EE first: cheap, and no name or expiry check (RFC 7672 §3.1.1).
        if self
            .records
            .iter()
            .any(|r| r.usage == DANE_EE && r.matches(end_entity))
        {
            return Ok(ServerCertVerified::assertion());
        }
        let mut failures = Vec::new();
        for record in self.records.iter().filter(|r| r.usage == DANE_TA) {
            match self.verify_ta(record, end_entity, intermediates, now) {
                Ok(()) => return Ok(ServerCertVerified::assertion()),
                Err(e) => failures.push(format!(
                    "{} {} {}: {e}",
                    record.usage, record.selector, record.matching
                )),
            }
        }
        let ee = self.records.iter().filter(|r| r.usage == DANE_EE).count();
        if ee > 0 {
            failures.insert(0, format!("{ee} DANE-EE record(s) do not match the leaf"));
        }
        Err(rustls::Error::Other(rustls::OtherError(Arc::new(
            DaneError::Mismatch {
                host: self.host.clone(),
                detail: failures.join("; "),
            },
        ))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    use super::*;
    use crate::sandbox::dns::{DnsServer, Zone, loopback};
    use crate::sandbox::dnssec::{SignedDnsServer, SignedZones, tlsa_owner};

    // ---- the certificate matcher ----

    fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    }

    fn intermediate(root: &CertifiedIssuer<'static, KeyPair>) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test intermediate");
        CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), root).unwrap()
    }

    fn leaf(
        names: &[&str],
        issuer: &CertifiedIssuer<'static, KeyPair>,
        expired: bool,
    ) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        params
            .signed_by(&KeyPair::generate().unwrap(), issuer)
            .unwrap()
            .der()
            .clone()
    }

    fn self_signed(names: &[&str], expired: bool) -> CertificateDer<'static> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .clone()
    }

    fn record(usage: u8, selector: u8, matching: u8, cert: &CertificateDer<'_>) -> Tlsa {
        Tlsa::from_certificate(usage, selector, matching, cert).unwrap()
    }

    /// Runs the verifier of `client_config`'s kind on a presented chain.
    fn check(records: &[Tlsa], host: &str, chain: &[CertificateDer<'_>]) -> Result<(), String> {
        let verifier = DaneVerifier {
            records: usable(records),
            host: host.to_string(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let name = ServerName::try_from(host.to_string()).unwrap();
        verifier
            .verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    const HOST: &str = "mx.dane.test";

    #[test]
    fn dane_ee_spki_sha256_matches() {
        let cert = self_signed(&[HOST], false);
        let r = record(3, 1, 1, &cert);
        assert_eq!(r.data.len(), 32);
        check(&[r], HOST, &[cert]).unwrap();
    }

    #[test]
    fn dane_ee_full_certificate_exact_match() {
        let cert = self_signed(&[HOST], false);
        let r = record(3, 0, 0, &cert);
        assert_eq!(r.data, cert.as_ref());
        check(&[r], HOST, &[cert]).unwrap();
    }

    #[test]
    fn dane_ee_sha512_matches() {
        let cert = self_signed(&[HOST], false);
        for selector in [0, 1] {
            let r = record(3, selector, 2, &cert);
            assert_eq!(r.data.len(), 64);
            check(&[r], HOST, std::slice::from_ref(&cert)).unwrap();
        }
    }

    #[test]
    fn a_mismatch_fails_naming_dane() {
        let presented = self_signed(&[HOST], false);
        let other = self_signed(&[HOST], false);
        let err = check(&[record(3, 1, 1, &other)], HOST, &[presented]).unwrap_err();
        assert!(err.contains("DANE"), "{err}");
        assert!(err.contains(HOST), "{err}");
    }

    #[test]
    fn dane_ee_ignores_name_and_expiry() {
        let cert = self_signed(&["elsewhere.test"], true);
        check(&[record(3, 1, 1, &cert)], HOST, &[cert]).unwrap();
    }

    #[test]
    fn dane_ta_matches_an_intermediate() {
        let root = ca("test root");
        let inter = intermediate(&root);
        let cert = leaf(&[HOST], &inter, false);
        let chain = [cert, inter.der().clone()];
        check(&[record(2, 0, 1, inter.der())], HOST, &chain).unwrap();
        check(&[record(2, 1, 1, inter.der())], HOST, &chain).unwrap();
    }

    #[test]
    fn dane_ta_matches_the_root_sent_in_the_chain() {
        let root = ca("test root");
        let inter = intermediate(&root);
        let chain = [
            leaf(&[HOST], &inter, false),
            inter.der().clone(),
            root.der().clone(),
        ];
        check(&[record(2, 1, 2, root.der())], HOST, &chain).unwrap();
    }

    #[test]
    fn dane_ta_full_public_key_need_not_be_in_the_chain() {
        // `2 1 0`: the record holds the trust anchor's whole SPKI (RFC 7671 §5.2.3), so the
        // server may leave the root out of its chain.
        let root = ca("test root");
        let inter = intermediate(&root);
        let chain = [leaf(&[HOST], &inter, false), inter.der().clone()];
        check(&[record(2, 1, 0, root.der())], HOST, &chain).unwrap();
        // …but a hash of it cannot be turned into a key.
        let err = check(&[record(2, 1, 1, root.der())], HOST, &chain).unwrap_err();
        assert!(err.contains("DANE"), "{err}");
    }

    #[test]
    fn dane_ta_requires_the_host_name() {
        let root = ca("test root");
        let chain = [leaf(&["other.test"], &root, false), root.der().clone()];
        let err = check(&[record(2, 0, 1, root.der())], HOST, &chain).unwrap_err();
        assert!(
            err.contains("DANE") && err.contains("not valid for"),
            "{err}"
        );
        // A wildcard covering the host is fine.
        let chain = [leaf(&["*.dane.test"], &root, false), root.der().clone()];
        check(&[record(2, 0, 1, root.der())], HOST, &chain).unwrap();
    }

    #[test]
    fn dane_ta_checks_expiry_unlike_dane_ee() {
        let root = ca("test root");
        let chain = [leaf(&[HOST], &root, true), root.der().clone()];
        let err = check(&[record(2, 0, 1, root.der())], HOST, &chain).unwrap_err();
        assert!(err.contains("DANE"), "{err}");
        check(&[record(3, 1, 1, &chain[0])], HOST, &chain).unwrap();
    }

    #[test]
    fn dane_ta_does_not_match_the_leaf_itself() {
        let root = ca("test root");
        let cert = leaf(&[HOST], &root, false);
        let chain = [cert.clone(), root.der().clone()];
        assert!(check(&[record(2, 0, 1, &cert)], HOST, &chain).is_err());
    }

    #[test]
    fn pkix_usages_and_unknown_types_are_unusable() {
        let cert = self_signed(&[HOST], false);
        let pkix_ee = record(1, 1, 1, &cert);
        let pkix_ta = record(0, 1, 1, &cert);
        let mut bad_selector = record(3, 1, 1, &cert);
        bad_selector.selector = 2;
        let mut bad_matching = record(3, 1, 1, &cert);
        bad_matching.matching = 3;
        let unusable = [pkix_ee, pkix_ta, bad_selector, bad_matching];
        assert!(unusable.iter().all(|r| !r.is_usable()));
        assert!(usable(&unusable).is_empty());
        assert!(matches!(
            client_config(&unusable, HOST),
            Err(DaneError::NoUsableRecords)
        ));
        // An unusable record that would match does not rescue a usable one that does not.
        let other = self_signed(&[HOST], false);
        let mut records = unusable.to_vec();
        records.push(record(3, 1, 1, &other));
        assert!(check(&records, HOST, &[cert]).is_err());
    }

    #[test]
    fn presentation_format() {
        let r = Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![0x0a, 0xff],
        };
        assert_eq!(r.to_string(), "3 1 1 0aff");
    }

    // ---- TLSA lookups against the signed DNS server ----

    fn dns(server: SocketAddr) -> DnsOptions {
        DnsOptions {
            server: Some(server),
            timeout: Duration::from_secs(5),
            attempts: 1,
            concurrency: 4,
            ..DnsOptions::default()
        }
    }

    struct Fixture {
        server: SignedDnsServer,
        _dir: tempfile::TempDir,
        anchor: PathBuf,
        records: Vec<Tlsa>,
    }

    impl Fixture {
        fn resolver(&self) -> DaneResolver {
            DaneResolver::new(&dns(self.server.addr()), Some(&self.anchor)).unwrap()
        }
    }

    async fn fixture() -> Fixture {
        let cert = self_signed(&[HOST], false);
        let records = vec![record(3, 1, 1, &cert), record(3, 0, 2, &cert)];
        let mut zones = SignedZones::new();
        zones
            .signed_zone("dane.test")
            .unsigned_zone("unsigned.test")
            .mx("dane.test", 10, HOST)
            .addr(HOST, loopback(1))
            .tlsa(HOST, 25, &records[0])
            .tlsa(HOST, 25, &records[1])
            .addr("bogus.dane.test", loopback(1))
            .tlsa("bogus.dane.test", 25, &records[0])
            .corrupt_signature(&tlsa_owner("bogus.dane.test", 25), RecordType::TLSA)
            .addr("stripped.dane.test", loopback(1))
            .tlsa("stripped.dane.test", 25, &records[0])
            .strip_signature(&tlsa_owner("stripped.dane.test", 25), RecordType::TLSA)
            .addr("plain.dane.test", loopback(1))
            .addr(&tlsa_owner("nodata.dane.test", 25), loopback(1))
            .addr("failing.dane.test", loopback(1))
            .servfail(&tlsa_owner("failing.dane.test", 25), RecordType::TLSA)
            .addr("mx.unsigned.test", loopback(1))
            .tlsa("mx.unsigned.test", 25, &records[0])
            .addr("failing.unsigned.test", loopback(1))
            .servfail(&tlsa_owner("failing.unsigned.test", 25), RecordType::TLSA)
            // Negative controls: the same shapes with their proofs broken.
            .addr("forged.dane.test", loopback(1))
            .strip_signature("forged.dane.test", RecordType::NSEC)
            .unsigned_zone("forged.test")
            .addr("mx.forged.test", loopback(1))
            .tlsa("mx.forged.test", 25, &records[0])
            .corrupt_signature("forged.test", RecordType::NSEC);
        let server = SignedDnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), &zones)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let anchor = dir.path().join("root.key");
        server.write_trust_anchor(&anchor).unwrap();
        Fixture {
            server,
            _dir: dir,
            anchor,
            records,
        }
    }

    fn sorted(mut v: Vec<Tlsa>) -> Vec<Tlsa> {
        v.sort_by(|a, b| {
            (a.usage, a.selector, a.matching, &a.data)
                .cmp(&(b.usage, b.selector, b.matching, &b.data))
        });
        v
    }

    #[tokio::test]
    async fn validation_works_against_the_signed_server() {
        let f = fixture().await;
        let resolver = f.resolver();
        resolver.available().await.unwrap();
        match resolver.tlsa(HOST, 25).await {
            TlsaLookup::Secure(found) => assert_eq!(sorted(found), sorted(f.records.clone())),
            other => panic!("expected secure TLSA, got {other:?}"),
        }
        // The trailing dot makes no difference.
        assert!(matches!(
            resolver.tlsa("mx.dane.test.", 25).await,
            TlsaLookup::Secure(_)
        ));
    }

    #[tokio::test]
    async fn a_bad_signature_is_bogus() {
        let f = fixture().await;
        let resolver = f.resolver();
        // The chain of trust works for the good name, so the failure below is the signature.
        assert!(matches!(
            resolver.tlsa(HOST, 25).await,
            TlsaLookup::Secure(_)
        ));
        match resolver.tlsa("bogus.dane.test", 25).await {
            TlsaLookup::Bogus(why) => assert!(why.contains("_25._tcp.bogus.dane.test"), "{why}"),
            other => panic!("expected bogus, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_missing_signature_in_a_signed_zone_is_bogus() {
        let f = fixture().await;
        let resolver = f.resolver();
        assert!(matches!(
            resolver.tlsa(HOST, 25).await,
            TlsaLookup::Secure(_)
        ));
        assert!(matches!(
            resolver.tlsa("stripped.dane.test", 25).await,
            TlsaLookup::Bogus(_)
        ));
    }

    #[tokio::test]
    async fn proven_absence_in_a_signed_zone_is_no_dane() {
        let f = fixture().await;
        let resolver = f.resolver();
        // NXDOMAIN, proven by NSEC (the usual case: no `_25._tcp` at all).
        assert_eq!(resolver.tlsa("plain.dane.test", 25).await, TlsaLookup::None);
        // NODATA: the name exists without TLSA.
        assert_eq!(
            resolver.tlsa("nodata.dane.test", 25).await,
            TlsaLookup::None
        );
        // Another port, no records.
        assert_eq!(resolver.tlsa(HOST, 587).await, TlsaLookup::None);
    }

    #[tokio::test]
    async fn an_unproven_denial_is_bogus() {
        let f = fixture().await;
        let resolver = f.resolver();
        // The NXDOMAIN for forged.dane.test's TLSA comes with an unsigned NSEC: an attacker
        // could make that up, so it proves nothing.
        assert!(matches!(
            resolver.tlsa("forged.dane.test", 25).await,
            TlsaLookup::Bogus(_)
        ));
    }

    #[tokio::test]
    async fn tlsa_in_an_unsigned_zone_is_no_dane() {
        let f = fixture().await;
        let resolver = f.resolver();
        assert_eq!(
            resolver.tlsa("mx.unsigned.test", 25).await,
            TlsaLookup::None
        );
        // Only because the root proves the delegation has no DS: with that proof's signature
        // broken, the same unsigned answer is bogus.
        assert!(matches!(
            resolver.tlsa("mx.forged.test", 25).await,
            TlsaLookup::Bogus(_)
        ));
    }

    #[tokio::test]
    async fn servfail_defers_a_signed_host_but_not_an_unsigned_one() {
        let f = fixture().await;
        let resolver = f.resolver();
        match resolver.tlsa("failing.dane.test", 25).await {
            TlsaLookup::Failed(why) => assert!(
                why.contains("SERVFAIL") || why.contains("Server Failure"),
                "{why}"
            ),
            other => panic!("expected a temporary failure, got {other:?}"),
        }
        assert_eq!(
            resolver.tlsa("failing.unsigned.test", 25).await,
            TlsaLookup::None
        );
    }

    #[tokio::test]
    async fn the_wrong_trust_anchor_makes_everything_bogus_never_none() {
        let f = fixture().await;
        let other =
            SignedDnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), &SignedZones::new())
                .await
                .unwrap();
        let path = f._dir.path().join("other.key");
        other.write_trust_anchor(&path).unwrap();
        let resolver = DaneResolver::new(&dns(f.server.addr()), Some(&path)).unwrap();
        assert!(resolver.available().await.is_err());
        assert!(matches!(
            resolver.tlsa(HOST, 25).await,
            TlsaLookup::Bogus(_)
        ));
        assert!(matches!(
            resolver.tlsa("plain.dane.test", 25).await,
            TlsaLookup::Bogus(_)
        ));
    }

    #[tokio::test]
    async fn a_server_without_dnssec_is_not_available() {
        let mut zone = Zone::new();
        zone.mx("example.test", 10, "mx.example.test")
            .addr("mx.example.test", loopback(1))
            .exists("_25._tcp.mx.example.test");
        let plain = DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zone)
            .await
            .unwrap();
        let resolver = DaneResolver::new(&dns(plain.addr()), None).unwrap();
        let err = resolver.available().await.unwrap_err();
        assert!(!err.is_empty());
        // Nothing it says can be validated: never "no DANE" (the caller must check
        // `available` first and turn DANE off).
        assert!(matches!(
            resolver.tlsa("mx.example.test", 25).await,
            TlsaLookup::Bogus(_)
        ));
    }

    #[test]
    fn trust_anchor_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        assert!(matches!(
            load_trust_anchor(&missing),
            Err(DaneError::TrustAnchor { .. })
        ));
        let garbage = dir.path().join("garbage.key");
        std::fs::write(&garbage, "this is not a zone file line\n").unwrap();
        assert!(load_trust_anchor(&garbage).is_err());
        // A key for another zone only: validation could never start at the root.
        let not_root = dir.path().join("not-root.key");
        std::fs::write(
            &not_root,
            "dane.test. 3600 IN DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==\n",
        )
        .unwrap();
        let Err(err) = load_trust_anchor(&not_root) else {
            panic!("a non-root key was accepted");
        };
        let err = err.to_string();
        assert!(err.contains("root"), "{err}");
    }
}
