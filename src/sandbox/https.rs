//! A small HTTPS server on loopback that stands in for MTA-STS policy hosts
//! (`mta-sts.<domain>`), for the tests.
//!
//! One server serves any number of host names: the TLS certificate is chosen by SNI (issued on
//! the spot by a [`TestCa`]) and the answer by the `Host` header. Each host can be scripted to
//! misbehave the ways RFC 8461 §3.3 says a sender must survive: redirects, error statuses, the
//! wrong media type, an oversize body, a certificate for another name, or no answer at all.
//! Requests and TLS handshakes are counted per host, so that tests can assert that a cached
//! policy was not fetched again. The HTTP side is written by hand (HTTP/1.1, one request per
//! connection, then close): the point is to control the bytes, not to be a web server.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::tls::{CertError, Identity, TestCa};

/// How a host answers `GET /.well-known/mta-sts.txt` (any path, in fact).
#[derive(Clone, Debug)]
pub enum Reply {
    /// 200, `text/plain`, this body (with a `Content-Length`).
    Policy(String),
    /// Any status, media type and body (with a `Content-Length`): 404, `text/html`, …
    Content {
        /// The status code.
        status: u16,
        /// The `Content-Type` header (none when empty).
        content_type: String,
        /// The body.
        body: Vec<u8>,
    },
    /// `301 Moved Permanently` to this URL.
    Redirect(String),
    /// 200, `text/plain`, this many bytes of policy-looking lines, with no `Content-Length`
    /// (the body ends when the connection closes), so the client must count as it reads.
    Oversize(usize),
    /// Reads the request and never answers (the connection stays open).
    Hang,
}

/// The state of one host name.
struct Host {
    reply: Reply,
    cert: Arc<CertifiedKey>,
    requests: usize,
    handshakes: usize,
}

#[derive(Debug)]
struct State {
    hosts: Mutex<HashMap<String, Host>>,
    /// Presented when the client sends no SNI or an unknown name.
    fallback: Arc<CertifiedKey>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("reply", &self.reply)
            .field("requests", &self.requests)
            .field("handshakes", &self.handshakes)
            .finish()
    }
}

fn normalise(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Picks the certificate by SNI and counts handshakes.
#[derive(Debug)]
struct BySni(Arc<State>);

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut hosts = self.0.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        match hello
            .server_name()
            .and_then(|n| hosts.get_mut(&normalise(n)))
        {
            Some(host) => {
                host.handshakes += 1;
                Some(host.cert.clone())
            }
            None => Some(self.0.fallback.clone()),
        }
    }
}

fn certified_key(identity: &Identity) -> Result<Arc<CertifiedKey>, CertError> {
    let key = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(identity.key.clone_key()))?;
    Ok(Arc::new(CertifiedKey::new(identity.chain.clone(), key)))
}

/// A running HTTPS server; stops (with every connection) when dropped.
pub struct HttpsServer {
    addr: SocketAddr,
    ca: Arc<TestCa>,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpsServer {
    /// Starts the server on `bind` (port 0 for a free one), with certificates from `ca`.
    /// No host is served until [`HttpsServer::serve`] names it.
    pub async fn start(bind: SocketAddr, ca: Arc<TestCa>) -> std::io::Result<Self> {
        let fallback = ca
            .issue(&["unknown-host.invalid"])
            .and_then(|id| certified_key(&id))
            .map_err(std::io::Error::other)?;
        let state = Arc::new(State {
            hosts: Mutex::new(HashMap::new()),
            fallback,
        });
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(std::io::Error::other)?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(BySni(state.clone())));
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, acceptor, state.clone()));
        Ok(Self {
            addr,
            ca,
            state,
            task,
        })
    }

    /// The address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port listened on (the resolver's `https_port`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The CA that signs the certificates (its root is what clients must trust).
    pub fn ca(&self) -> &Arc<TestCa> {
        &self.ca
    }

    /// Serves `host` with `reply`, replacing any earlier reply. The first call for a host issues
    /// its certificate (valid for `host`); later calls keep the certificate.
    pub fn serve(&self, host: &str, reply: Reply) -> Result<(), CertError> {
        let name = normalise(host);
        let mut hosts = self.lock();
        if let Some(h) = hosts.get_mut(&name) {
            h.reply = reply;
            return Ok(());
        }
        let cert = certified_key(&self.ca.issue(&[name.as_str()])?)?;
        hosts.insert(
            name,
            Host {
                reply,
                cert,
                requests: 0,
                handshakes: 0,
            },
        );
        Ok(())
    }

    /// Makes `host` (already served) present a certificate for `names` instead of its own: a
    /// certificate that does not match the name the client asked for.
    pub fn present_cert_for(&self, host: &str, names: &[&str]) -> Result<(), CertError> {
        let cert = certified_key(&self.ca.issue(names)?)?;
        if let Some(h) = self.lock().get_mut(&normalise(host)) {
            h.cert = cert;
        }
        Ok(())
    }

    /// Makes `host` (already served) present `identity` (e.g. a certificate of another CA, or
    /// a self-signed one).
    pub fn present_identity(&self, host: &str, identity: &Identity) -> Result<(), CertError> {
        let cert = certified_key(identity)?;
        if let Some(h) = self.lock().get_mut(&normalise(host)) {
            h.cert = cert;
        }
        Ok(())
    }

    /// HTTP requests received for `host` (by its `Host` header).
    pub fn requests(&self, host: &str) -> usize {
        self.lock().get(&normalise(host)).map_or(0, |h| h.requests)
    }

    /// TLS handshakes begun for `host` (by SNI), whether or not they succeeded.
    pub fn handshakes(&self, host: &str) -> usize {
        self.lock()
            .get(&normalise(host))
            .map_or(0, |h| h.handshakes)
    }

    /// Requests received for all hosts.
    pub fn total_requests(&self) -> usize {
        self.lock().values().map(|h| h.requests).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Host>> {
        self.state
            .hosts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<State>) {
    // Connections are tasks of this set: aborting the loop drops the set, which aborts them.
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors or the like: wait rather than spin.
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            continue;
        };
        connections.spawn(serve_connection(stream, acceptor.clone(), state.clone()));
    }
}

/// The largest request head read.
const MAX_HEAD: usize = 16 * 1024;

async fn serve_connection(stream: TcpStream, acceptor: TlsAcceptor, state: Arc<State>) {
    let Ok(mut tls) = acceptor.accept(stream).await else {
        return;
    };
    let sni = tls.get_ref().1.server_name().map(normalise);
    let mut head = Vec::new();
    let mut chunk = [0u8; 2048];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tls.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
        if head.len() > MAX_HEAD {
            return;
        }
    }
    let head = String::from_utf8_lossy(&head);
    let host = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("host"))
        .map(|(_, value)| {
            let value = value.trim();
            // Drop a port ("host:8443"), keeping the name.
            normalise(value.rsplit_once(':').map_or(value, |(name, _)| name))
        })
        .or(sni);
    let reply = {
        let mut hosts = state.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        match host.and_then(|h| hosts.get_mut(&h)) {
            Some(h) => {
                h.requests += 1;
                h.reply.clone()
            }
            None => Reply::Content {
                status: 404,
                content_type: "text/plain".into(),
                body: b"no such host\n".to_vec(),
            },
        }
    };
    let _ = match reply {
        Reply::Policy(body) => respond(&mut tls, 200, "text/plain", body.as_bytes(), &[]).await,
        Reply::Content {
            status,
            content_type,
            body,
        } => respond(&mut tls, status, &content_type, &body, &[]).await,
        Reply::Redirect(location) => {
            respond(&mut tls, 301, "text/plain", b"", &[("Location", &location)]).await
        }
        Reply::Oversize(size) => oversize(&mut tls, size).await,
        Reply::Hang => std::future::pending().await,
    };
    let _ = tls.shutdown().await;
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn respond<W: AsyncWriteExt + Unpin>(
    out: &mut W,
    status: u16,
    content_type: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    out.write_all(head.as_bytes()).await?;
    out.write_all(body).await?;
    out.flush().await
}

async fn oversize<W: AsyncWriteExt + Unpin>(out: &mut W, size: usize) -> std::io::Result<()> {
    out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
        .await?;
    let mut body = b"version: STSv1\r\nmode: enforce\r\nmax_age: 86400\r\n".to_vec();
    while body.len() < size {
        body.extend_from_slice(b"mx: filler.example.test\r\n");
    }
    body.truncate(size);
    for piece in body.chunks(4096) {
        out.write_all(piece).await?;
    }
    out.flush().await
}
