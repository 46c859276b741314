//! The HTTPS fetch of a policy file (RFC 8461 §3.3):
//! `https://mta-sts.<domain>/.well-known/mta-sts.txt`.
//!
//! Why by hand on hyper rather than through a general HTTP client: the RFC asks for things such
//! clients do differently by default (redirects MUST NOT be followed, HTTP caching MUST NOT be
//! used), and the policy host must be resolved through the run's own DNS server (`--dns`) so
//! that a run and its tests see one consistent DNS. So the connection is ours: the address
//! from [`MxResolver`], TCP to the configured port, rustls (ring, the Mozilla roots plus any
//! `--tls-ca` roots, the host name checked), then one HTTP/1.1 GET through hyper. The whole
//! fetch has one deadline, and the body is read up to [`MAX_POLICY_SIZE`] and no further.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, LOCATION, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::policy::{Policy, PolicyError};
use crate::mx::MxResolver;

/// Where the policy file lives on the policy host.
pub const WELL_KNOWN_PATH: &str = "/.well-known/mta-sts.txt";

/// The largest policy body read (RFC 8461 §3.3 suggests 64 KiB); a larger one is refused.
pub const MAX_POLICY_SIZE: usize = 64 * 1024;

/// The default deadline for a whole fetch: address lookup, connect, TLS, request, body.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why no policy could be fetched.
#[derive(Debug, Error)]
pub enum FetchError {
    /// `mta-sts.<domain>` is not a valid DNS name.
    #[error("{0:?} is not a valid host name")]
    HostName(String),
    /// The address lookup of the policy host failed temporarily.
    #[error("{0}")]
    Dns(String),
    /// The policy host has no address.
    #[error("{0} has no address")]
    NoAddress(String),
    /// No address of the policy host accepted a connection.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, expired, …).
    #[error("TLS with {host}: {source}")]
    Tls {
        /// The policy host.
        host: String,
        /// Why (rustls' error inside).
        source: io::Error,
    },
    /// The HTTP exchange failed (malformed response, connection closed early).
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built (cannot happen for a valid host name).
    #[error("HTTP request: {0}")]
    Request(#[from] hyper::http::Error),
    /// A 3xx answer: RFC 8461 §3.3 says redirects MUST NOT be followed.
    #[error("HTTP {status} redirect to {location:?}, not followed (RFC 8461 §3.3)")]
    Redirect {
        /// The status code.
        status: u16,
        /// The `Location` header, if any.
        location: String,
    },
    /// Any other status than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The media type is not `text/plain`.
    #[error("media type {0:?} is not text/plain")]
    MediaType(String),
    /// The body is larger than [`MAX_POLICY_SIZE`].
    #[error("policy larger than {MAX_POLICY_SIZE} bytes")]
    TooLarge,
    /// Reading the body failed.
    #[error("reading the policy: {0}")]
    Body(hyper::Error),
    /// The body is not UTF-8 text.
    #[error("policy is not UTF-8 text")]
    NotUtf8,
    /// The body is not a valid policy.
    #[error("invalid policy: {0}")]
    Policy(#[from] PolicyError),
    /// The fetch did not finish within the deadline.
    #[error("no policy within {0:?}")]
    Timeout(Duration),
}

/// The rustls configuration for policy hosts: ring, the Mozilla roots plus `extra_roots`.
pub(crate) fn client_config(
    extra_roots: &[CertificateDer<'static>],
) -> Result<ClientConfig, rustls::Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in extra_roots {
        roots.add(cert.clone())?;
    }
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Fetches policy files: one GET per call, no connection reuse, no HTTP cache.
pub(crate) struct Fetcher {
    pub(crate) dns: MxResolver,
    pub(crate) tls: TlsConnector,
    pub(crate) port: u16,
    pub(crate) timeout: Duration,
}

/// Aborts the task driving an HTTP connection when the fetch ends, however it ends (including
/// being dropped by the deadline), so that no connection outlives its fetch.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Fetcher {
    /// Fetches and parses the policy of `domain` (A-label, lower case). The policy's `id` is
    /// left empty.
    pub(crate) async fn fetch(&self, domain: &str) -> Result<Policy, FetchError> {
        let host = format!("mta-sts.{domain}");
        tokio::time::timeout(self.timeout, self.fetch_from(&host))
            .await
            .map_err(|_| FetchError::Timeout(self.timeout))?
    }

    /// One GET of the policy from `host` over a TLS connection of our own (no redirects, no
    /// pool): connect, send, check the status and media type, read the body capped.
    async fn fetch_from(&self, host: &str) -> Result<Policy, FetchError> {
        let tls = self.connect(host).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(FetchError::Http)?;
        let _driver = AbortOnDrop(tokio::spawn(connection).abort_handle());
        let request = Request::get(WELL_KNOWN_PATH)
            .header(HOST, host)
            .header(
                USER_AGENT,
                concat!("mailmerge/", env!("CARGO_PKG_VERSION"), " (MTA-STS)"),
            )
            .body(Empty::<Bytes>::new())?;
        let response = sender.send_request(request).await?;
        check_response(&response)?;
        let text = read_capped(response.into_body()).await?;
        Ok(Policy::parse(&text)?)
    }

    /// A TLS connection to the first address of `host` (from the run's DNS) that accepts one,
    /// its certificate verified for `host`.
    async fn connect(
        &self,
        host: &str,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, FetchError> {
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| FetchError::HostName(host.to_string()))?;
        let addrs = self
            .dns
            .host_addresses(host)
            .await
            .map_err(FetchError::Dns)?;
        let mut last_error = None;
        for ip in addrs {
            let addr = SocketAddr::new(ip, self.port);
            match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    return self.tls.connect(server_name, tcp).await.map_err(|source| {
                        FetchError::Tls {
                            host: host.to_string(),
                            source,
                        }
                    });
                }
                Err(source) => last_error = Some(FetchError::Connect { addr, source }),
            }
        }
        Err(last_error.unwrap_or_else(|| FetchError::NoAddress(host.to_string())))
    }
}

/// Refuses anything but a `200` with media type `text/plain` and no announced body over the
/// cap (RFC 8461 §3.3: redirects are not followed).
fn check_response<B>(response: &hyper::Response<B>) -> Result<(), FetchError> {
    let header = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &hyper::header::HeaderValue| {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            })
    };
    let status = response.status();
    if status.is_redirection() {
        return Err(FetchError::Redirect {
            status: status.as_u16(),
            location: header(LOCATION).unwrap_or_default(),
        });
    }
    if status != StatusCode::OK {
        return Err(FetchError::Status(status.as_u16()));
    }
    let media_type = header(CONTENT_TYPE).unwrap_or_default();
    if !is_text_plain(&media_type) {
        return Err(FetchError::MediaType(media_type));
    }
    let declared = header(CONTENT_LENGTH).and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_POLICY_SIZE as u64) {
        return Err(FetchError::TooLarge);
    }
    Ok(())
}

/// The body as text, refused as soon as it grows past [`MAX_POLICY_SIZE`].
async fn read_capped(mut body: hyper::body::Incoming) -> Result<String, FetchError> {
    let mut text = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(FetchError::Body)?;
        if let Some(data) = frame.data_ref() {
            if text.len() + data.len() > MAX_POLICY_SIZE {
                return Err(FetchError::TooLarge);
            }
            text.extend_from_slice(data);
        }
    }
    String::from_utf8(text).map_err(|_| FetchError::NotUtf8)
}

/// Whether a `Content-Type` value's media type is `text/plain` (parameters such as `charset`
/// allowed, case-insensitive).
fn is_text_plain(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/plain"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_media_type_must_be_text_plain_with_any_parameters() {
        for ok in [
            "text/plain",
            "TEXT/Plain",
            "text/plain; charset=utf-8",
            " text/plain ;charset=\"us-ascii\"",
        ] {
            assert!(is_text_plain(ok), "{ok:?}");
        }
        for bad in [
            "",
            "text/html",
            "text/plain-ish",
            "application/octet-stream",
        ] {
            assert!(!is_text_plain(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_client_config_builds_with_and_without_extra_roots() {
        assert!(client_config(&[]).is_ok());
        let ca = crate::sandbox::tls::TestCa::new().unwrap();
        assert!(client_config(&[ca.root()]).is_ok());
    }
}
