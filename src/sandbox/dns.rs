//! A small authoritative DNS server on loopback (UDP and TCP), for `--sandbox` and the tests.
//!
//! It answers from an in-memory zone built in code: MX, A, AAAA and TXT records per name, plus
//! scripted failures (SERVFAIL, or no answer at all so the client times out). Unknown names
//! get NXDOMAIN, known names without the asked type get an empty NOERROR answer with an SOA,
//! exactly the distinctions RFC 5321 §5.1 makes. Every query is counted, so tests can assert
//! "one MX lookup per domain".

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// What the server does for one name.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    /// MX records: (preference, exchange). An exchange of "." is a null MX (RFC 7505).
    pub mx: Vec<(u16, String)>,
    /// Addresses (A or AAAA by family).
    pub addrs: Vec<IpAddr>,
    /// TXT strings.
    pub txt: Vec<String>,
    /// Answer SERVFAIL to every query for this name.
    pub servfail: bool,
    /// Never answer (the resolver times out).
    pub silent: bool,
    /// Answer NXDOMAIN even when a catch-all MX is set.
    pub nxdomain: bool,
}

/// The zone data: lower-case names without the trailing dot.
#[derive(Clone, Debug, Default)]
pub struct Zone {
    entries: HashMap<String, Entry>,
    /// When set, any unknown name gets `MX 10 <host>` (used by `--sandbox`).
    catch_all_mx: Option<String>,
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Zone {
    /// An empty zone: everything is NXDOMAIN.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&mut self, name: &str) -> &mut Entry {
        self.entries.entry(key(name)).or_default()
    }

    /// Adds an MX record.
    pub fn mx(&mut self, name: &str, preference: u16, exchange: &str) -> &mut Self {
        self.entry(name).mx.push((preference, exchange.to_string()));
        self
    }

    /// Publishes the null MX `MX 0 .` (RFC 7505).
    pub fn null_mx(&mut self, name: &str) -> &mut Self {
        self.mx(name, 0, ".")
    }

    /// Adds an A or AAAA record.
    pub fn addr(&mut self, name: &str, ip: IpAddr) -> &mut Self {
        self.entry(name).addrs.push(ip);
        self
    }

    /// Adds a TXT record.
    pub fn txt(&mut self, name: &str, text: &str) -> &mut Self {
        self.entry(name).txt.push(text.to_string());
        self
    }

    /// Makes the name exist with no records (NOERROR, empty answers).
    pub fn exists(&mut self, name: &str) -> &mut Self {
        self.entry(name);
        self
    }

    /// Answers SERVFAIL for this name.
    pub fn servfail(&mut self, name: &str) -> &mut Self {
        self.entry(name).servfail = true;
        self
    }

    /// Answers NXDOMAIN for this name (overrides the catch-all).
    pub fn nxdomain(&mut self, name: &str) -> &mut Self {
        self.entry(name).nxdomain = true;
        self
    }

    /// Never answers for this name.
    pub fn silent(&mut self, name: &str) -> &mut Self {
        self.entry(name).silent = true;
        self
    }

    /// Every unknown name gets `MX 10 host` (the sandbox's "every domain is ours").
    pub fn catch_all_mx(&mut self, host: &str) -> &mut Self {
        self.catch_all_mx = Some(host.to_string());
        self
    }
}

/// Queries received, by (lower-case name, type).
pub type QueryLog = Arc<Mutex<HashMap<(String, RecordType), usize>>>;

/// A running DNS server; stops when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    queries: QueryLog,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl DnsServer {
    /// Starts on `bind` (port 0 picks a free port), UDP and TCP on the same port.
    pub async fn start(bind: SocketAddr, zone: Zone) -> std::io::Result<Self> {
        // UDP and TCP must share one port number. With port 0 the UDP port is free, but the
        // same TCP port may be taken (e.g. by a client connection's ephemeral port): try again.
        let mut attempt = 0;
        let (udp, addr, tcp) = loop {
            let udp = UdpSocket::bind(bind).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => break (Arc::new(udp), addr, tcp),
                Err(_) if bind.port() == 0 && attempt < 20 => attempt += 1,
                Err(e) => return Err(e),
            }
        };
        let zone = Arc::new(zone);
        let queries: QueryLog = Arc::default();
        let (z, q) = (zone.clone(), queries.clone());
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(reply) = answer(&z, &q, &buf[..n]) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let (z, q) = (zone, queries.clone());
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                tokio::spawn(serve_tcp(stream, z.clone(), q.clone()));
            }
        });
        Ok(Self {
            addr,
            queries,
            tasks: vec![udp_task, tcp_task],
        })
    }

    /// Where the server listens (give this to `--dns`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many queries of `rtype` were received for `name`.
    pub fn query_count(&self, name: &str, rtype: RecordType) -> usize {
        self.queries
            .lock()
            .map_or(0, |q| q.get(&(key(name), rtype)).copied().unwrap_or(0))
    }

    /// Total queries of `rtype` for all names.
    pub fn total_queries(&self, rtype: RecordType) -> usize {
        self.queries.lock().map_or(0, |q| {
            q.iter()
                .filter(|((_, t), _)| *t == rtype)
                .map(|(_, n)| n)
                .sum()
        })
    }
}

async fn serve_tcp(mut stream: tokio::net::TcpStream, zone: Arc<Zone>, queries: QueryLog) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut msg).await.is_err() {
            return;
        }
        let Some(reply) = answer(&zone, &queries, &msg) else {
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

fn name(s: &str) -> Option<Name> {
    if s == "." {
        return Some(Name::root());
    }
    Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).ok()
}

/// Builds the reply to one query; `None` means "stay silent".
fn answer(zone: &Zone, queries: &QueryLog, packet: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    let query = request.queries.first()?.clone();
    let qname = key(&query.name().to_ascii());
    let qtype = query.query_type();
    if let Ok(mut log) = queries.lock() {
        *log.entry((qname.clone(), qtype)).or_default() += 1;
    }
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.message_type = MessageType::Response;
    response.metadata.authoritative = true;
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.add_query(query.clone());
    let catch_all;
    let entry = match zone.entries.get(&qname) {
        Some(e) => e,
        None => match &zone.catch_all_mx {
            Some(host) => {
                catch_all = Entry {
                    mx: vec![(10, host.clone())],
                    ..Entry::default()
                };
                &catch_all
            }
            None => {
                response.metadata.response_code = ResponseCode::NXDomain;
                response.add_authority(soa_record());
                return response.to_vec().ok();
            }
        },
    };
    if entry.silent {
        return None;
    }
    if entry.nxdomain {
        response.metadata.response_code = ResponseCode::NXDomain;
        response.add_authority(soa_record());
        return response.to_vec().ok();
    }
    if entry.servfail {
        response.metadata.response_code = ResponseCode::ServFail;
        return response.to_vec().ok();
    }
    let answers = records(entry, query.name(), qtype)?;
    if answers.is_empty() {
        response.add_authority(soa_record());
    } else {
        response.add_answers(answers);
    }
    response.to_vec().ok()
}

/// The records of `entry` of type `qtype`, owned by `owner` (`None`: an MX host name that is
/// not a valid name, the query goes unanswered).
fn records(entry: &Entry, owner: &Name, qtype: RecordType) -> Option<Vec<Record>> {
    let rr = |data| Record::from_rdata(owner.clone(), 300, data);
    Some(match qtype {
        RecordType::MX => entry
            .mx
            .iter()
            .map(|(pref, host)| Some(rr(RData::MX(MX::new(*pref, name(host)?)))))
            .collect::<Option<_>>()?,
        RecordType::A => entry
            .addrs
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V4(v4) => Some(rr(RData::A(A(*v4)))),
                IpAddr::V6(_) => None,
            })
            .collect(),
        RecordType::AAAA => entry
            .addrs
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(rr(RData::AAAA(AAAA(*v6)))),
                IpAddr::V4(_) => None,
            })
            .collect(),
        // A TXT string is at most 255 octets: long values (DKIM keys) are split.
        RecordType::TXT => entry
            .txt
            .iter()
            .map(|t| {
                let chunks = t.as_bytes().chunks(255);
                rr(RData::TXT(TXT::new(
                    chunks
                        .map(|c| String::from_utf8_lossy(c).into_owned())
                        .collect(),
                )))
            })
            .collect(),
        _ => Vec::new(),
    })
}

fn soa_record() -> Record {
    let zone = Name::from_ascii("test.").unwrap_or_else(|_| Name::root());
    let ns = Name::from_ascii("ns.test.").unwrap_or_else(|_| Name::root());
    let host = Name::from_ascii("hostmaster.test.").unwrap_or_else(|_| Name::root());
    Record::from_rdata(
        zone,
        60,
        RData::SOA(SOA::new(ns, host, 1, 3600, 600, 86400, 60)),
    )
}

/// Loopback addresses for servers that must look like different hosts.
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// IPv6 loopback.
pub fn loopback6() -> IpAddr {
    IpAddr::V6(Ipv6Addr::LOCALHOST)
}
