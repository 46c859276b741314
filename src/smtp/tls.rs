//! STARTTLS (RFC 3207) for the client: the TLS policy, the certificate verification it implies,
//! the handshake, and a stream type that is either plain or encrypted.
//!
//! Why a policy and not just "TLS on": MX hosts very often present certificates that do not
//! verify (self-signed, wrong name, expired), and an opportunistic MTA that refused them would
//! fall back to plaintext anyway, which is worse. So, as Postfix's `smtp_tls_security_level =
//! may` does, [`TlsMode::Opportunistic`] encrypts whenever STARTTLS is offered and accepts any
//! certificate (the handshake signatures are still checked); [`TlsMode::Required`] verifies the
//! chain against the Mozilla roots (plus any extra roots given) and the MX host name, and never
//! sends in plaintext; [`TlsMode::Disabled`] never sends STARTTLS.

use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, ProtocolVersion, RootCertStore, SignatureScheme,
};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::client::{ClientError, Connection, Phase};

/// Installs ring as the process-wide rustls crypto provider. Idempotent; call it once at
/// start-up (and in tests) so that no two crates can pull different default providers, which
/// makes rustls panic when a configuration is built.
pub fn install_crypto_provider() {
    // Err means a provider is already installed: fine either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    install_crypto_provider();
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// `--tls`: when to use STARTTLS.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// Use TLS whenever offered, accept any certificate; fall back to plaintext when the
    /// handshake fails.
    #[default]
    #[value(alias = "may")]
    Opportunistic,
    /// Verified TLS or no delivery (the message is deferred).
    #[value(alias = "verify")]
    Required,
    /// Never STARTTLS.
    #[value(aliases = ["none", "off"])]
    Disabled,
}

/// A `--tls` value that is not one of the three modes.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid TLS mode {0:?} (use opportunistic, required or disabled)")]
pub struct TlsModeError(pub String);

impl FromStr for TlsMode {
    type Err = TlsModeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "opportunistic" | "may" => Ok(TlsMode::Opportunistic),
            "required" | "verify" => Ok(TlsMode::Required),
            "disabled" | "none" | "off" => Ok(TlsMode::Disabled),
            _ => Err(TlsModeError(s.to_string())),
        }
    }
}

/// The TLS side of a delivery configuration: the mode and the two rustls configurations.
#[derive(Clone, Debug)]
pub struct TlsPolicy {
    /// When to use STARTTLS.
    pub mode: TlsMode,
    opportunistic: Arc<ClientConfig>,
    verified: Arc<ClientConfig>,
    /// The Web PKI check `verified` uses (Mozilla roots plus the extra ones), for probing a
    /// certificate under an MTA-STS `testing` policy; `None` when it could not be built.
    webpki: Option<Arc<WebPkiServerVerifier>>,
}

/// A TLS configuration could not be built.
#[derive(Debug, Error)]
pub enum TlsSetupError {
    /// rustls refused the configuration (e.g. no protocol version in common with the provider).
    #[error("cannot set up TLS: {0}")]
    Config(#[from] rustls::Error),
    /// The certificate verifier could not be built from the trusted roots.
    #[error("cannot set up certificate verification: {0}")]
    Verifier(String),
}

impl TlsPolicy {
    /// Builds the policy. `extra_roots` are trusted besides the Mozilla roots under
    /// [`TlsMode::Required`] and MTA-STS (a private CA, or a test CA).
    pub fn new(
        mode: TlsMode,
        extra_roots: &[CertificateDer<'static>],
    ) -> Result<Self, TlsSetupError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in extra_roots {
            roots.add(cert.clone())?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| TlsSetupError::Verifier(e.to_string()))?;
        let verified = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_webpki_verifier(webpki.clone())
            .with_no_client_auth();
        let opportunistic = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert { provider }))
            .with_no_client_auth();
        Ok(Self {
            mode,
            opportunistic: Arc::new(opportunistic),
            verified: Arc::new(verified),
            webpki: Some(webpki),
        })
    }

    /// Any certificate (opportunistic TLS; DANE hosts whose TLSA records are all unusable).
    pub fn any_certificate(&self) -> Arc<ClientConfig> {
        self.opportunistic.clone()
    }

    /// A certificate that chains to a trusted root and is valid for the host name (`--tls
    /// required`, MTA-STS `enforce`).
    pub fn verified(&self) -> Arc<ClientConfig> {
        self.verified.clone()
    }

    /// Any certificate, but the Web PKI verdict on it is kept in the returned slot (`None`
    /// when it was valid for the host name): what an MTA-STS `testing` policy reports.
    pub fn probing(&self) -> (Arc<ClientConfig>, Arc<Mutex<Option<String>>>) {
        let verdict = Arc::new(Mutex::new(None));
        let Some(webpki) = &self.webpki else {
            return (self.opportunistic.clone(), verdict);
        };
        let mut config = (*self.opportunistic).clone();
        config.dangerous().set_certificate_verifier(Arc::new(Probe {
            webpki: webpki.clone(),
            verdict: verdict.clone(),
        }));
        (Arc::new(config), verdict)
    }

    /// The rustls configuration this mode uses.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        match self.mode {
            TlsMode::Required => self.verified.clone(),
            _ => self.opportunistic.clone(),
        }
    }
}

impl Default for TlsPolicy {
    fn default() -> Self {
        // Building from the bundled roots and the ring provider cannot fail; if it ever did,
        // degrade to no TLS rather than panic.
        Self::new(TlsMode::Opportunistic, &[]).unwrap_or_else(|_| {
            let cfg = Arc::new(
                ClientConfig::builder_with_provider(provider())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map(|b| {
                        b.with_root_certificates(RootCertStore::empty())
                            .with_no_client_auth()
                    })
                    .unwrap_or_else(|_| {
                        ClientConfig::builder()
                            .with_root_certificates(RootCertStore::empty())
                            .with_no_client_auth()
                    }),
            );
            Self {
                mode: TlsMode::Disabled,
                opportunistic: cfg.clone(),
                verified: cfg,
                webpki: None,
            }
        })
    }
}

/// Opportunistic TLS: any certificate is accepted (RFC 7435 "opportunistic security"), but the
/// handshake signatures are verified so the session keys really belong to the peer we talk to.
#[derive(Debug)]
struct AcceptAnyCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
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

/// Accepts any certificate like [`AcceptAnyCert`], but records what the Web PKI check said of
/// it: the MTA-STS `testing` mode sends as today and reports what `enforce` would refuse.
#[derive(Debug)]
struct Probe {
    webpki: Arc<WebPkiServerVerifier>,
    verdict: Arc<Mutex<Option<String>>>,
}

impl ServerCertVerifier for Probe {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Err(e) = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            let mut verdict = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
            *verdict = Some(format!(
                "certificate not valid for {}: {e}",
                server_name.to_str()
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A connection's stream: plaintext until STARTTLS succeeds.
pub enum MaybeTls<S> {
    /// Plaintext.
    Plain(S),
    /// After a successful STARTTLS handshake.
    Tls(Box<TlsStream<S>>),
}

impl<S> MaybeTls<S> {
    /// The negotiated protocol version (`TLSv1.3`, `TLSv1.2`), or `None` in plaintext.
    pub fn tls_version(&self) -> Option<String> {
        match self {
            MaybeTls::Plain(_) => None,
            MaybeTls::Tls(t) => Some(version_name(t.get_ref().1.protocol_version())),
        }
    }
}

/// `TLSv1.3` style names for the results CSV.
pub fn version_name(v: Option<ProtocolVersion>) -> String {
    match v {
        Some(ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
        Some(ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
        Some(other) => format!("{other:?}"),
        None => "TLS".into(),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The name the certificate is checked against: the MX host name (RFC 7672 §3.2.2 uses the
/// MX name too), or its address when the name is not a valid DNS name.
fn server_name(host: &str, fallback: std::net::IpAddr) -> ServerName<'static> {
    ServerName::try_from(host.to_string()).unwrap_or_else(|_| ServerName::from(fallback))
}

/// Performs the TLS handshake on a connection whose STARTTLS was just answered 220, and returns
/// the session over TLS with its capabilities forgotten (RFC 3207 §4.2: the caller must EHLO
/// again). The handshake is bounded by the command timeout.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    conn: Connection<MaybeTls<S>>,
    config: Arc<ClientConfig>,
    host: &str,
    ip: std::net::IpAddr,
) -> Result<Connection<MaybeTls<S>>, ClientError> {
    let (stream, timeouts) = conn.into_stream();
    let MaybeTls::Plain(plain) = stream else {
        return Err(ClientError::Tls {
            source: io::Error::other("STARTTLS on a session that is already encrypted"),
        });
    };
    let limit: Duration = timeouts.command;
    let connector = TlsConnector::from(config);
    let tls = tokio::time::timeout(limit, connector.connect(server_name(host, ip), plain))
        .await
        .map_err(|_| ClientError::Timeout {
            phase: Phase::StartTls,
            after: limit,
        })?
        .map_err(|source| ClientError::Tls { source })?;
    Ok(Connection::resume(MaybeTls::Tls(Box::new(tls)), timeouts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, duplex};

    use crate::smtp::Timeouts;

    #[test]
    fn modes_parse() {
        assert_eq!("required".parse(), Ok(TlsMode::Required));
        assert_eq!("Opportunistic".parse(), Ok(TlsMode::Opportunistic));
        assert_eq!("disabled".parse(), Ok(TlsMode::Disabled));
        assert!("sometimes".parse::<TlsMode>().is_err());
    }

    /// A server that advertises SIZE 10 in plaintext and PIPELINING (no SIZE) after TLS: the
    /// client must forget the first EHLO once encrypted (RFC 3207 §4.2).
    #[tokio::test]
    async fn capabilities_are_forgotten_after_the_handshake() {
        let identity = crate::sandbox::tls::self_signed(&["mx.caps.test"]).unwrap();
        let server_cfg = identity.server_config().unwrap();
        let (client, server) = duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut s = BufReader::new(server);
            s.write_all(b"220 mx ESMTP\r\n").await.unwrap();
            let mut line = String::new();
            s.read_line(&mut line).await.unwrap();
            assert!(line.starts_with("EHLO"));
            s.write_all(b"250-mx\r\n250-SIZE 10\r\n250 STARTTLS\r\n")
                .await
                .unwrap();
            line.clear();
            s.read_line(&mut line).await.unwrap();
            assert_eq!(line, "STARTTLS\r\n");
            s.write_all(b"220 go ahead\r\n").await.unwrap();
            let tls = tokio_rustls::TlsAcceptor::from(server_cfg)
                .accept(s.into_inner())
                .await
                .unwrap();
            let mut t = BufReader::new(tls);
            line.clear();
            t.read_line(&mut line).await.unwrap();
            assert!(line.starts_with("EHLO"), "EHLO again over TLS: {line:?}");
            t.write_all(b"250-mx\r\n250 PIPELINING\r\n").await.unwrap();
            t.flush().await.unwrap();
            line.clear();
            let _ = t.read_line(&mut line).await;
        });
        let timeouts = Timeouts::uniform(Duration::from_secs(5));
        let (mut c, _) = Connection::greet(MaybeTls::Plain(client), timeouts)
            .await
            .unwrap();
        c.hello("me.test").await.unwrap();
        assert_eq!(c.capabilities().size, Some(10));
        assert_eq!(c.starttls().await.unwrap().code, 220);
        let policy = TlsPolicy::new(TlsMode::Opportunistic, &[]).unwrap();
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        let mut c = handshake(c, policy.client_config(), "mx.caps.test", ip)
            .await
            .unwrap();
        assert_eq!(c.capabilities(), &Default::default());
        c.hello("me.test").await.unwrap();
        assert_eq!(c.capabilities().size, None, "plaintext SIZE forgotten");
        assert!(c.capabilities().pipelining);
        assert_eq!(c.stream().tls_version().as_deref(), Some("TLSv1.3"));
        c.quit().await;
        server.await.unwrap();
    }
}
