//! A DNSSEC-signed DNS hierarchy on loopback, for testing DANE without the Internet.
//!
//! Validating a TLSA answer needs a whole chain of trust: the root's keys, a DS in the parent
//! for each signed child, RRSIGs on every answer, and NSEC records proving what does *not*
//! exist (no TLSA here, no DS there, so that zone is unsigned). The plain [`super::dns`] server
//! serves none of that, so this one serves a small signed tree from one UDP+TCP port:
//!
//! - a root zone `.`, signed with a key made at start: that key is the trust anchor, written
//!   out by [`SignedDnsServer::trust_anchor`] in the format `--dnssec-trust-anchor FILE` takes
//!   (zone-file DNSKEY lines: `. 3600 IN DNSKEY 257 3 13 <base64>`);
//! - child zones, each delegated from the nearest zone above it (`dane.test.` from the root,
//!   where `test.` is just an empty non-terminal; `sub.dane.test.` from `dane.test.`), each
//!   either signed with its own key, with its DS in the parent, or unsigned, with the parent's
//!   signed NSEC at the cut proving there is no DS (RFC 4035 §5.2: a provably insecure
//!   delegation; below an unsigned zone everything is insecure);
//! - MX, A/AAAA and TLSA records put in the deepest zone that holds their name.
//!
//! Everything is signed once at start (ECDSA P-256 / SHA-256, algorithm 13, one combined
//! KSK/ZSK per zone, signatures valid from an hour ago to 30 days ahead) with hickory-proto's
//! signing primitives, and an NSEC chain (RFC 4034 §4) is built per signed zone, so the
//! answers are those of any authoritative server: positive answers with their RRSIG, NODATA with
//! the owner's NSEC, NXDOMAIN with the NSECs covering the name and the wildcard, DS from the
//! parent side of a cut. To script failures, an RRset's signature can be corrupted
//! ([`SignedZones::corrupt_signature`]: bogus), left out ([`SignedZones::strip_signature`]:
//! bogus in a signed zone) or the name can answer SERVFAIL ([`SignedZones::servfail`]).
//! Not supported: wildcards, CNAMEs, NSEC3, referrals to servers elsewhere, zone transfers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::crypto::EcdsaSigningKey;
use hickory_proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS, NSEC, RRSIG, SigInput};
use hickory_proto::dnssec::{Algorithm, DigestType, DnssecSigner, SigningKey, TBS};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::tlsa::{CertUsage, Matching, Selector};
use hickory_proto::rr::rdata::{A, AAAA, MX, NS, SOA, TLSA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType, SerialNumber};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

use crate::tls_policy::dane::Tlsa;

/// TTL of every record served.
const TTL: u32 = 300;
/// SOA minimum, the TTL of NSEC records (RFC 4034 §4).
const NEG_TTL: u32 = 60;

/// The signed server could not be set up.
#[derive(Debug, Error)]
pub enum SignedDnsError {
    /// A name given to [`SignedZones`] is not a valid domain name.
    #[error("invalid domain name {0:?}")]
    Name(String),
    /// Key generation or signing failed.
    #[error("cannot sign the zones: {0}")]
    Sign(String),
    /// Binding the sockets failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One record's data, as given (names are checked by [`SignedDnsServer::start`]).
#[derive(Clone, Debug)]
enum Data {
    Addr(IpAddr),
    Mx(u16, String),
    Tlsa(Tlsa),
    Txt(String),
}

/// What the server serves, built in code: zones, records, and scripted failures.
#[derive(Clone, Debug, Default)]
pub struct SignedZones {
    /// Zone apexes besides the root, and whether each is signed.
    zones: Vec<(String, bool)>,
    /// (owner, data) of the records to serve.
    records: Vec<(String, Data)>,
    corrupt: Vec<(String, RecordType)>,
    strip: Vec<(String, RecordType)>,
    servfail: Vec<(String, RecordType)>,
}

impl SignedZones {
    /// Only the signed root zone.
    pub fn new() -> Self {
        Self::default()
    }

    /// A DNSSEC-signed zone at `apex`, delegated from the nearest zone above with a DS record.
    pub fn signed_zone(&mut self, apex: &str) -> &mut Self {
        self.zones.push((apex.to_string(), true));
        self
    }

    /// An unsigned zone at `apex`, delegated from the nearest zone above without DS (provably
    /// insecure when that zone is signed).
    pub fn unsigned_zone(&mut self, apex: &str) -> &mut Self {
        self.zones.push((apex.to_string(), false));
        self
    }

    /// An A or AAAA record.
    pub fn addr(&mut self, name: &str, ip: IpAddr) -> &mut Self {
        self.records.push((name.to_string(), Data::Addr(ip)));
        self
    }

    /// An MX record (`exchange` must be a valid name).
    pub fn mx(&mut self, name: &str, preference: u16, exchange: &str) -> &mut Self {
        self.records
            .push((name.to_string(), Data::Mx(preference, exchange.to_string())));
        self
    }

    /// A TXT record (one string), e.g. an MTA-STS `_mta-sts` record.
    pub fn txt(&mut self, name: &str, text: &str) -> &mut Self {
        self.records
            .push((name.to_string(), Data::Txt(text.to_string())));
        self
    }

    /// A TLSA record at `_{port}._tcp.{host}`.
    pub fn tlsa(&mut self, host: &str, port: u16, record: &Tlsa) -> &mut Self {
        self.records
            .push((tlsa_owner(host, port), Data::Tlsa(record.clone())));
        self
    }

    /// Serves the RRset `(name, rtype)` with a signature that does not verify (bogus).
    pub fn corrupt_signature(&mut self, name: &str, rtype: RecordType) -> &mut Self {
        self.corrupt.push((name.to_string(), rtype));
        self
    }

    /// Serves the RRset `(name, rtype)` without its RRSIG (bogus in a signed zone).
    pub fn strip_signature(&mut self, name: &str, rtype: RecordType) -> &mut Self {
        self.strip.push((name.to_string(), rtype));
        self
    }

    /// Answers SERVFAIL to queries for `(name, rtype)`.
    pub fn servfail(&mut self, name: &str, rtype: RecordType) -> &mut Self {
        self.servfail.push((name.to_string(), rtype));
        self
    }
}

/// The owner name of the TLSA records for a service: `_{port}._tcp.{host}`.
pub fn tlsa_owner(host: &str, port: u16) -> String {
    format!("_{port}._tcp.{}", host.trim_end_matches('.'))
}

fn fqdn(name: &str) -> Result<Name, SignedDnsError> {
    let trimmed = name.trim_end_matches('.');
    if trimmed.is_empty() {
        return Ok(Name::root());
    }
    Name::from_ascii(format!("{}.", trimmed.to_ascii_lowercase()))
        .map_err(|_| SignedDnsError::Name(name.to_string()))
}

fn sign_err(e: impl std::fmt::Display) -> SignedDnsError {
    SignedDnsError::Sign(e.to_string())
}

/// One zone, fully built: its RRsets, their signatures, its NSEC chain.
struct Zone {
    apex: Name,
    signer: Option<DnssecSigner>,
    rrsets: BTreeMap<Name, BTreeMap<RecordType, Vec<Record>>>,
    sigs: HashMap<(Name, RecordType), Record>,
    nsecs: BTreeMap<Name, Record>,
}

impl Zone {
    fn new(apex: Name, signed: bool) -> Result<Self, SignedDnsError> {
        let signer = if signed {
            let alg = Algorithm::ECDSAP256SHA256;
            let pkcs8 = EcdsaSigningKey::generate_pkcs8(alg).map_err(sign_err)?;
            let key = EcdsaSigningKey::from_pkcs8(&pkcs8, alg).map_err(sign_err)?;
            let dnskey = DNSKEY::from_key(&key.to_public_key().map_err(sign_err)?);
            Some(DnssecSigner::new(
                dnskey,
                Box::new(key),
                apex.clone(),
                Duration::from_secs(30 * 86_400),
            ))
        } else {
            None
        };
        let mut zone = Self {
            apex: apex.clone(),
            signer,
            rrsets: BTreeMap::new(),
            sigs: HashMap::new(),
            nsecs: BTreeMap::new(),
        };
        let ns = Name::from_ascii("ns.test.").map_err(sign_err)?;
        let host = Name::from_ascii("hostmaster.test.").map_err(sign_err)?;
        let soa = SOA::new(ns.clone(), host, 1, 3600, 600, 86_400, NEG_TTL);
        zone.add(apex.clone(), RData::SOA(soa));
        zone.add(apex.clone(), RData::NS(NS(ns)));
        if let Some(dnskey) = zone.signer.as_ref().map(|s| s.dnskey().clone()) {
            zone.add(apex, RData::DNSSEC(DNSSECRData::DNSKEY(dnskey)));
        }
        Ok(zone)
    }

    fn add(&mut self, owner: Name, data: RData) {
        let rtype = data.record_type();
        let ttl = if rtype == RecordType::SOA {
            NEG_TTL
        } else {
            TTL
        };
        let record = Record::from_rdata(owner.clone(), ttl, data);
        self.rrsets
            .entry(owner)
            .or_default()
            .entry(rtype)
            .or_default()
            .push(record);
    }

    /// A delegation point inside this zone (not the apex).
    fn is_cut(&self, owner: &Name) -> bool {
        owner != &self.apex
            && self
                .rrsets
                .get(owner)
                .is_some_and(|t| t.contains_key(&RecordType::NS))
    }

    /// Builds the NSEC chain and signs every authoritative RRset (not the NS of a cut).
    fn sign(
        &mut self,
        corrupt: &HashSet<(Name, RecordType)>,
        strip: &HashSet<(Name, RecordType)>,
    ) -> Result<(), SignedDnsError> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let owners: Vec<Name> = self.rrsets.keys().cloned().collect();
        for (i, owner) in owners.iter().enumerate() {
            let next = owners[(i + 1) % owners.len()].clone();
            let types = self.rrsets[owner].keys().copied();
            let nsec = NSEC::new_cover_self(next, types);
            let record = Record::from_rdata(
                owner.clone(),
                NEG_TTL,
                RData::DNSSEC(DNSSECRData::NSEC(nsec)),
            );
            self.nsecs.insert(owner.clone(), record);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let now = u32::try_from(now).map_err(sign_err)?;
        let mut to_sign: Vec<(Name, RecordType, Vec<Record>)> = Vec::new();
        for (owner, types) in &self.rrsets {
            for (rtype, records) in types {
                if *rtype == RecordType::NS && self.is_cut(owner) {
                    continue;
                }
                to_sign.push((owner.clone(), *rtype, records.clone()));
            }
        }
        for (owner, nsec) in &self.nsecs {
            to_sign.push((owner.clone(), RecordType::NSEC, vec![nsec.clone()]));
        }
        for (owner, rtype, records) in to_sign {
            let key = (owner.clone(), rtype);
            if strip.contains(&key) {
                continue;
            }
            let ttl = records.first().map_or(TTL, |r| r.ttl);
            let input = SigInput {
                type_covered: rtype,
                algorithm: signer.key().algorithm(),
                num_labels: owner.num_labels(),
                original_ttl: ttl,
                sig_expiration: SerialNumber::new(now.saturating_add(30 * 86_400)),
                sig_inception: SerialNumber::new(now.saturating_sub(3600)),
                key_tag: signer.calculate_key_tag().map_err(sign_err)?,
                signer_name: signer.signer_name().clone(),
            };
            let tbs =
                TBS::from_input(&owner, DNSClass::IN, &input, records.iter()).map_err(sign_err)?;
            let mut sig = signer.sign(&tbs).map_err(sign_err)?;
            if corrupt.contains(&key)
                && let Some(b) = sig.last_mut()
            {
                *b ^= 0xff;
            }
            let rrsig = RRSIG::from_sig(input, sig);
            let record = Record::from_rdata(owner, ttl, RData::DNSSEC(DNSSECRData::RRSIG(rrsig)));
            self.sigs.insert(key, record);
        }
        Ok(())
    }

    /// The RRset with its signature, if any.
    fn signed_rrset(&self, owner: &Name, rtype: RecordType) -> Vec<Record> {
        let mut out = self
            .rrsets
            .get(owner)
            .and_then(|t| t.get(&rtype))
            .cloned()
            .unwrap_or_default();
        out.extend(self.sigs.get(&(owner.clone(), rtype)).cloned());
        out
    }

    /// The NSEC record whose owner is `owner` or precedes it (covers it), with its RRSIG.
    fn nsec_for(&self, name: &Name) -> Vec<Record> {
        let Some((owner, nsec)) = self.nsecs.range(..=name.clone()).next_back() else {
            return Vec::new();
        };
        let mut out = vec![nsec.clone()];
        out.extend(self.sigs.get(&(owner.clone(), RecordType::NSEC)).cloned());
        out
    }

    /// Whether some owner lies below `name` (then `name` exists as an empty non-terminal).
    fn is_empty_non_terminal(&self, name: &Name) -> bool {
        self.rrsets
            .keys()
            .any(|owner| owner != name && name.zone_of(owner))
    }

    /// The longest existing ancestor of `name` (an owner or an empty non-terminal).
    fn closest_encloser(&self, name: &Name) -> Name {
        let mut candidate = name.base_name();
        while candidate.num_labels() > self.apex.num_labels() {
            if self.rrsets.contains_key(&candidate) || self.is_empty_non_terminal(&candidate) {
                return candidate;
            }
            candidate = candidate.base_name();
        }
        self.apex.clone()
    }

    /// Fills the answer and authority sections for one query; returns the response code.
    fn respond(&self, qname: &Name, qtype: RecordType, response: &mut Message) -> ResponseCode {
        let mut authority = self.signed_rrset(&self.apex, RecordType::SOA);
        if let Some(types) = self.rrsets.get(qname) {
            if types.contains_key(&qtype) {
                response.add_answers(self.signed_rrset(qname, qtype));
                return ResponseCode::NoError;
            }
            // NODATA: the owner's own NSEC lists what it has.
            authority.extend(self.nsec_for(qname));
            response.add_authorities(authority);
            return ResponseCode::NoError;
        }
        if self.is_empty_non_terminal(qname) {
            authority.extend(self.nsec_for(qname));
            response.add_authorities(authority);
            return ResponseCode::NoError;
        }
        // NXDOMAIN: the NSEC covering the name, and the one covering the wildcard at its
        // closest encloser (often the same record).
        let mut nsecs = self.nsec_for(qname);
        if let Ok(wildcard) = self.closest_encloser(qname).prepend_label("*") {
            for record in self.nsec_for(&wildcard) {
                if !nsecs.contains(&record) {
                    nsecs.push(record);
                }
            }
        }
        authority.extend(nsecs);
        response.add_authorities(authority);
        ResponseCode::NXDomain
    }
}

/// The zones as served, and the scripted failures.
struct Served {
    /// Deepest apex first.
    zones: Vec<Zone>,
    servfail: HashSet<(Name, RecordType)>,
}

impl Served {
    fn build(spec: &SignedZones) -> Result<(Self, String), SignedDnsError> {
        let mut apexes: Vec<(Name, bool)> = vec![(Name::root(), true)];
        for (apex, signed) in &spec.zones {
            let name = fqdn(apex)?;
            if !apexes.iter().any(|(n, _)| n == &name) {
                apexes.push((name, *signed));
            }
        }
        apexes.sort_by_key(|(n, _)| std::cmp::Reverse(n.num_labels()));
        let mut zones = apexes
            .iter()
            .map(|(apex, signed)| Zone::new(apex.clone(), *signed))
            .collect::<Result<Vec<_>, _>>()?;
        // Delegations: NS (and DS for a signed child) in the nearest enclosing zone.
        for i in 0..zones.len() {
            let child = zones[i].apex.clone();
            if child.is_root() {
                continue;
            }
            let ds = match &zones[i].signer {
                Some(signer) => Some(
                    DS::from_key(signer.dnskey().public_key(), &child, DigestType::SHA256)
                        .map_err(sign_err)?,
                ),
                None => None,
            };
            let parent = zones
                .iter()
                .position(|z| z.apex != child && z.apex.zone_of(&child))
                .ok_or_else(|| SignedDnsError::Name(child.to_string()))?;
            let ns = Name::from_ascii("ns.test.").map_err(sign_err)?;
            zones[parent].add(child.clone(), RData::NS(NS(ns)));
            if let Some(ds) = ds {
                zones[parent].add(child, RData::DNSSEC(DNSSECRData::DS(ds)));
            }
        }
        for (owner, data) in &spec.records {
            let data = match data {
                Data::Addr(IpAddr::V4(v4)) => RData::A(A(*v4)),
                Data::Addr(IpAddr::V6(v6)) => RData::AAAA(AAAA(*v6)),
                Data::Mx(preference, exchange) => RData::MX(MX::new(*preference, fqdn(exchange)?)),
                Data::Tlsa(t) => RData::TLSA(TLSA::new(
                    CertUsage::from(t.usage),
                    Selector::from(t.selector),
                    Matching::from(t.matching),
                    t.data.clone(),
                )),
                Data::Txt(text) => RData::TXT(TXT::new(vec![text.clone()])),
            };
            let name = fqdn(owner)?;
            let zone = zones
                .iter_mut()
                .find(|z| z.apex.zone_of(&name))
                .ok_or_else(|| SignedDnsError::Name(owner.clone()))?;
            zone.add(name, data);
        }
        let keys =
            |list: &[(String, RecordType)]| -> Result<HashSet<(Name, RecordType)>, SignedDnsError> {
                list.iter().map(|(n, t)| Ok((fqdn(n)?, *t))).collect()
            };
        let (corrupt, strip) = (keys(&spec.corrupt)?, keys(&spec.strip)?);
        for zone in &mut zones {
            zone.sign(&corrupt, &strip)?;
        }
        let anchor = zones
            .iter()
            .find(|z| z.apex.is_root())
            .and_then(|z| z.signer.as_ref())
            .map(|s| format!(". 3600 IN DNSKEY {}\n", s.dnskey()))
            .ok_or_else(|| SignedDnsError::Sign("no root key".into()))?;
        let served = Self {
            zones,
            servfail: keys(&spec.servfail)?,
        };
        Ok((served, anchor))
    }

    /// The zone that answers `qname`/`qtype`: the deepest enclosing one, except that DS at a
    /// zone apex comes from the parent side of the cut.
    fn zone_for(&self, qname: &Name, qtype: RecordType) -> Option<&Zone> {
        self.zones.iter().find(|z| {
            z.apex.zone_of(qname)
                && !(qtype == RecordType::DS && &z.apex == qname && !qname.is_root())
        })
    }

    /// Builds the reply to one query packet. A UDP reply longer than the client's EDNS payload
    /// size (512 without EDNS) is sent truncated (TC), so the client retries over TCP.
    fn answer(&self, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
        let request = Message::from_vec(packet).ok()?;
        let query = request.queries.first()?.clone();
        let mut response = Message::response(request.metadata.id, OpCode::Query);
        response.metadata.message_type = MessageType::Response;
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = request.metadata.recursion_desired;
        response.metadata.recursion_available = true;
        response.add_query(query.clone());
        let mut max_len = 512;
        if let Some(edns) = &request.edns {
            let mut reply = Edns::new();
            reply.set_max_payload(1232);
            reply.set_dnssec_ok(edns.flags().dnssec_ok);
            response.set_edns(reply);
            max_len = usize::from(edns.max_payload().clamp(512, 1232));
        }
        let qname = query.name().to_lowercase();
        let qtype = query.query_type();
        response.metadata.response_code = if self.servfail.contains(&(qname.clone(), qtype)) {
            ResponseCode::ServFail
        } else {
            match self.zone_for(&qname, qtype) {
                Some(zone) => zone.respond(&qname, qtype, &mut response),
                None => ResponseCode::Refused,
            }
        };
        let bytes = response.to_vec().ok()?;
        if udp && bytes.len() > max_len {
            return response.truncate().to_vec().ok();
        }
        Some(bytes)
    }
}

/// A running signed DNS server; stops when dropped.
pub struct SignedDnsServer {
    addr: SocketAddr,
    trust_anchor: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SignedDnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl SignedDnsServer {
    /// Generates the keys, signs `zones`, and starts on `bind` (port 0 picks a free port), UDP
    /// and TCP on the same port.
    pub async fn start(bind: SocketAddr, zones: &SignedZones) -> Result<Self, SignedDnsError> {
        let (served, trust_anchor) = Served::build(zones)?;
        // UDP and TCP share one port number; with port 0 the TCP side may be taken: retry.
        let mut attempt = 0;
        let (udp, addr, tcp) = loop {
            let udp = UdpSocket::bind(bind).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (Arc::new(udp), addr, tcp),
                Err(_) if bind.port() == 0 && attempt < 20 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        };
        let served = Arc::new(served);
        let s = served.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(reply) = s.answer(&buf[..n], true) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                tokio::spawn(serve_tcp(stream, served.clone()));
            }
        });
        Ok(Self {
            addr,
            trust_anchor,
            tasks: vec![udp_task, tcp_task],
        })
    }

    /// Where the server listens (give this to `--dns`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The trust anchor file's contents: the root zone's DNSKEY as a zone-file line, the
    /// format `--dnssec-trust-anchor FILE` reads.
    pub fn trust_anchor(&self) -> &str {
        &self.trust_anchor
    }

    /// Writes [`Self::trust_anchor`] to `path`.
    pub fn write_trust_anchor(&self, path: &std::path::Path) -> std::io::Result<()> {
        std::fs::write(path, &self.trust_anchor)
    }
}

async fn serve_tcp(mut stream: tokio::net::TcpStream, served: Arc<Served>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut msg).await.is_err() {
            return;
        }
        let Some(reply) = served.answer(&msg, false) else {
            continue;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        if stream.write_all(&n.to_be_bytes()).await.is_err()
            || stream.write_all(&reply).await.is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::dnssec::TrustAnchors;

    use super::*;
    use crate::mx::DnsOptions;
    use crate::sandbox::dns::loopback;
    use crate::tls_policy::dane::{DaneResolver, TlsaLookup};

    #[tokio::test]
    async fn the_trust_anchor_is_one_root_dnskey_line() {
        let server =
            SignedDnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), &SignedZones::new())
                .await
                .unwrap();
        let text = server.trust_anchor();
        assert!(text.starts_with(". 3600 IN DNSKEY 257 3 13 "), "{text}");
        assert_eq!(TrustAnchors::from_str(text).unwrap().len(), 1);
    }

    /// Forty SHA-512 records do not fit a 1232-byte UDP answer: the server sets TC and the
    /// resolver asks again over TCP, where the whole signed RRset validates.
    #[tokio::test]
    async fn large_answers_are_truncated_over_udp_and_served_over_tcp() {
        let records: Vec<Tlsa> = (0u8..40)
            .map(|i| Tlsa {
                usage: 3,
                selector: 1,
                matching: 2,
                data: vec![i; 64],
            })
            .collect();
        let mut zones = SignedZones::new();
        zones
            .signed_zone("big.test")
            .addr("mx.big.test", loopback(1));
        for r in &records {
            zones.tlsa("mx.big.test", 25, r);
        }
        let server = SignedDnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), &zones)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let anchor = dir.path().join("root.key");
        server.write_trust_anchor(&anchor).unwrap();
        let dns = DnsOptions {
            server: Some(server.addr()),
            ..DnsOptions::default()
        };
        let resolver = DaneResolver::new(&dns, Some(&anchor)).unwrap();
        match resolver.tlsa("mx.big.test", 25).await {
            TlsaLookup::Secure(found) => assert_eq!(found.len(), 40),
            other => panic!("expected 40 secure records, got {other:?}"),
        }
    }

    /// Zones inside zones: the chain of trust runs root → dane.test → sub.dane.test, and the
    /// insecure delegation is proven by dane.test's NSEC, not the root's.
    #[tokio::test]
    async fn nested_zones_are_delegated_from_their_parent() {
        let record = Tlsa {
            usage: 3,
            selector: 1,
            matching: 1,
            data: vec![7; 32],
        };
        let mut zones = SignedZones::new();
        zones
            .signed_zone("dane.test")
            .signed_zone("sub.dane.test")
            .unsigned_zone("legacy.dane.test")
            .addr("mx.sub.dane.test", loopback(1))
            .tlsa("mx.sub.dane.test", 25, &record)
            .addr("mx.legacy.dane.test", loopback(1))
            .tlsa("mx.legacy.dane.test", 25, &record);
        let server = SignedDnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), &zones)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let anchor = dir.path().join("root.key");
        server.write_trust_anchor(&anchor).unwrap();
        let dns = DnsOptions {
            server: Some(server.addr()),
            ..DnsOptions::default()
        };
        let resolver = DaneResolver::new(&dns, Some(&anchor)).unwrap();
        assert_eq!(
            resolver.tlsa("mx.sub.dane.test", 25).await,
            TlsaLookup::Secure(vec![record])
        );
        assert_eq!(
            resolver.tlsa("mx.legacy.dane.test", 25).await,
            TlsaLookup::None
        );
    }

    #[tokio::test]
    async fn invalid_names_are_reported() {
        let mut zones = SignedZones::new();
        zones.mx("example.test", 10, "bad..name");
        let err = SignedDnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), &zones)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, SignedDnsError::Name(_)), "{err}");
    }
}
