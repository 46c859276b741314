//! Certificates made on the spot for the sandbox receiver's STARTTLS, and for tests.
//!
//! Real MX hosts present anything from a valid chain to a self-signed certificate. The sandbox
//! needs both: [`self_signed`] (what opportunistic TLS must accept) and a [`TestCa`] whose root
//! can be given to `--tls required` so that verified TLS is tested without reaching the public
//! roots. Keys are ECDSA P-256, generated with `rcgen` in about a millisecond.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use thiserror::Error;

/// A certificate could not be made or loaded.
#[derive(Debug, Error)]
pub enum CertError {
    /// rcgen failed (bad name, key generation).
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("cannot use certificate: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A server certificate with its key, in the forms rustls and files want.
pub struct Identity {
    /// Leaf first, then the chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8 private key.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The leaf certificate in PEM (for Postfix's `smtpd_tls_cert_file`).
    pub cert_pem: String,
    /// The key in PEM.
    pub key_pem: String,
}

impl Identity {
    /// A rustls server configuration presenting this identity.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, CertError> {
        crate::smtp::tls::install_crypto_provider();
        let cfg = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )?;
        Ok(Arc::new(cfg))
    }
}

/// A self-signed certificate for `names` (what many real MX hosts present).
pub fn self_signed(names: &[&str]) -> Result<Identity, CertError> {
    let key = KeyPair::generate()?;
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = CertificateParams::new(names)?.self_signed(&key)?;
    Ok(Identity {
        chain: vec![cert.der().clone()],
        key: PrivatePkcs8KeyDer::from(key.serialize_der()),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A throw-away certificate authority: its root goes to `--tls required`'s extra roots, and it
/// signs server certificates for the test MX names.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA named "mailmerge test CA".
    pub fn new() -> Result<Self, CertError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "mailmerge test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        Ok(Self { issuer })
    }

    /// The root certificate to trust.
    pub fn root(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// The root certificate in PEM (what a `--tls-ca` file holds).
    pub fn root_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names`, signed by this CA.
    pub fn issue(&self, names: &[&str]) -> Result<Identity, CertError> {
        let key = KeyPair::generate()?;
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let cert = CertificateParams::new(names)?.signed_by(&key, &self.issuer)?;
        Ok(Identity {
            chain: vec![cert.der().clone(), self.root()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
