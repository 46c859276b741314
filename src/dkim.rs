//! DKIM signing (RFC 6376) of every message, with RSA-SHA256 or Ed25519-SHA256 (RFC 8463).
//!
//! Why: since 2024 Gmail and Yahoo want bulk mail DKIM-signed by a domain aligned with From.
//! A direct-to-MX sender has no relay to sign for it, so each message is signed right after it
//! is built, on the same worker thread (signing an RSA-2048 message costs ≈0.3 ms: never on the
//! async runtime). Canonicalization is relaxed/relaxed; the signed headers are those of
//! [`SIGNED_HEADERS`] that the message has (absent ones are not listed in `h=`).
//!
//! The crypto is `mail-auth`'s (ring backend). The key is loaded once from a PEM file (PKCS#1
//! `RSA PRIVATE KEY`, or PKCS#8 `PRIVATE KEY` holding RSA or Ed25519) and shared by all threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use mail_auth::common::crypto::{
    Algorithm, DkimKey, Ed25519Key, HashOutput, RsaKey, Sha256, SigningKey,
};
use mail_auth::common::headers::{HeaderWriter, Writable};
use mail_auth::dkim::{Canonicalization, DkimSigner as MaSigner};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use thiserror::Error;

/// Headers signed when present, in this order (RFC 6376 §5.4.1 recommends From plus those a
/// reader sees; RFC 8058 §4 requires both List-Unsubscribe headers to be covered).
pub const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
];

/// The key or the signing settings cannot be used (a setup error: nothing is sent).
#[derive(Debug, Error)]
pub enum DkimError {
    /// The key file is unreadable.
    #[error("cannot read DKIM key {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The PEM holds no usable key.
    #[error("DKIM key {path}: {reason}")]
    Key {
        /// File (or `<memory>`).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Selector or domain is not a valid DNS label/name.
    #[error("invalid DKIM {what} {value:?}")]
    Name {
        /// `selector` or `domain`.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// Signing one message failed.
    #[error("DKIM signing failed: {0}")]
    Sign(String),
}

/// The key algorithm, as named in the DNS record's `k=` tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyType {
    /// RSA, signing with rsa-sha256.
    Rsa,
    /// Ed25519, signing with ed25519-sha256 (RFC 8463).
    Ed25519,
}

impl KeyType {
    /// `k=` value of the DNS record.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Rsa => "rsa",
            KeyType::Ed25519 => "ed25519",
        }
    }
}

/// Lets one loaded key serve every signer (mail-auth's builder takes its key by value).
struct SharedKey(Arc<DkimKey>);

impl SigningKey for SharedKey {
    type Hasher = Sha256;

    fn sign(&self, input: impl Writable) -> mail_auth::Result<Vec<u8>> {
        self.0.sign(input)
    }

    fn hash(&self, data: impl Writable) -> HashOutput {
        self.0.hash(data)
    }

    fn algorithm(&self) -> Algorithm {
        self.0.algorithm()
    }
}

/// A private key with its selector and signing domain; cheap to clone, shared by all threads.
#[derive(Clone)]
pub struct Signer {
    key: Arc<DkimKey>,
    key_type: KeyType,
    /// Public key bytes as published in `p=` (SubjectPublicKeyInfo DER for RSA, the raw 32
    /// bytes for Ed25519).
    public: Arc<[u8]>,
    selector: String,
    /// `d=`; `None` signs with each message's From domain.
    domain: Option<String>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("key_type", &self.key_type)
            .field("selector", &self.selector)
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo, the form `opendkim-genkey` and
/// `openssl rsa -pubout` publish and every verifier accepts.
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    fn der(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = body.len();
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(body);
        out
    }
    // AlgorithmIdentifier { rsaEncryption (1.2.840.113549.1.1.1), NULL }
    const ALG: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut body = ALG.to_vec();
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

/// Strips a SubjectPublicKeyInfo wrapper (RSA or Ed25519) down to the key itself, so that
/// published records can be compared whichever form they use.
pub fn public_key_core(der_or_raw: &[u8]) -> &[u8] {
    // SPKI: SEQUENCE { SEQUENCE alg, BIT STRING { 0x00, key } }
    let parse = |b: &[u8]| -> Option<(usize, usize)> {
        // returns (header length, content length) of the TLV at b
        let first = *b.get(1)?;
        if first < 0x80 {
            Some((2, usize::from(first)))
        } else {
            let n = usize::from(first & 0x7f);
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | usize::from(*b.get(2 + i)?);
            }
            Some((2 + n, len))
        }
    };
    let inner = || -> Option<&[u8]> {
        if der_or_raw.first()? != &0x30 {
            return None;
        }
        let (h, _) = parse(der_or_raw)?;
        let rest = der_or_raw.get(h..)?;
        if rest.first()? != &0x30 {
            return None;
        }
        let (ah, alen) = parse(rest)?;
        let rest = rest.get(ah + alen..)?;
        if rest.first()? != &0x03 {
            return None;
        }
        let (bh, blen) = parse(rest)?;
        rest.get(bh + 1..bh + blen)
    };
    inner().unwrap_or(der_or_raw)
}

impl Signer {
    /// Loads a PEM key file.
    pub fn from_file(path: &Path, selector: &str, domain: Option<&str>) -> Result<Self, DkimError> {
        let pem = std::fs::read(path).map_err(|source| DkimError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_pem(&pem, selector, domain).map_err(|e| match e {
            DkimError::Key { reason, .. } => DkimError::Key {
                path: path.into(),
                reason,
            },
            e => e,
        })
    }

    /// Parses a PEM key: PKCS#1 RSA, or PKCS#8 RSA or Ed25519.
    pub fn from_pem(pem: &[u8], selector: &str, domain: Option<&str>) -> Result<Self, DkimError> {
        let key_err = |reason: String| DkimError::Key {
            path: "<memory>".into(),
            reason,
        };
        if !valid_dns_name(selector) {
            return Err(DkimError::Name {
                what: "selector",
                value: selector.into(),
            });
        }
        let domain = domain.map(|d| d.trim_end_matches('.').to_ascii_lowercase());
        if let Some(d) = &domain
            && !valid_dns_name(d)
        {
            return Err(DkimError::Name {
                what: "domain",
                value: d.clone(),
            });
        }
        let der = PrivateKeyDer::from_pem_slice(pem)
            .map_err(|e| key_err(format!("no private key in PEM ({e})")))?;
        let (key, key_type, public): (DkimKey, KeyType, Vec<u8>) = match der {
            PrivateKeyDer::Pkcs1(_) => {
                let k = RsaKey::<Sha256>::from_key_der(der).map_err(|e| {
                    key_err(format!("RSA key rejected ({e}); use 2048 bits or more"))
                })?;
                let p = rsa_spki(&k.public_key());
                (DkimKey::Rsa(k), KeyType::Rsa, p)
            }
            PrivateKeyDer::Pkcs8(p8) => {
                let bytes = p8.secret_pkcs8_der().to_vec();
                match RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(bytes.clone().into())) {
                    Ok(k) => {
                        let p = rsa_spki(&k.public_key());
                        (DkimKey::Rsa(k), KeyType::Rsa, p)
                    }
                    Err(rsa_err) => match Ed25519Key::from_pkcs8_maybe_unchecked_der(&bytes) {
                        Ok(k) => {
                            let p = k.public_key();
                            (DkimKey::Ed25519(k), KeyType::Ed25519, p)
                        }
                        Err(_) => {
                            return Err(key_err(format!(
                                "PKCS#8 key is neither a usable RSA key ({rsa_err}) nor Ed25519"
                            )));
                        }
                    },
                }
            }
            _ => {
                return Err(key_err(
                    "EC (SEC1) keys cannot sign DKIM: use RSA (2048 bits) or Ed25519".into(),
                ));
            }
        };
        Ok(Self {
            key: Arc::new(key),
            key_type,
            public: public.into(),
            selector: selector.to_string(),
            domain,
        })
    }

    /// RSA or Ed25519.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The selector (`s=`).
    pub fn selector(&self) -> &str {
        &self.selector
    }

    /// The fixed signing domain, if one was given (`--dkim-domain`).
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// The domain a message with this From domain is signed for (`d=`).
    pub fn signing_domain<'a>(&'a self, from_domain: &'a str) -> &'a str {
        self.domain.as_deref().unwrap_or(from_domain)
    }

    /// Public key bytes as published in `p=`.
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The TXT record to publish at `<selector>._domainkey.<domain>`.
    pub fn dns_record(&self) -> String {
        format!(
            "v=DKIM1; k={}; p={}",
            self.key_type.as_str(),
            B64.encode(&self.public)
        )
    }

    /// Signs `message` (RFC 5322 bytes, CRLF line ends) and returns the `DKIM-Signature:`
    /// header, CRLF-terminated, to put in front of it.
    pub fn sign(&self, message: &[u8], from_domain: &str) -> Result<String, DkimError> {
        let present = present_headers(message);
        let headers: Vec<&str> = SIGNED_HEADERS
            .iter()
            .copied()
            .filter(|h| present.iter().any(|p| p.eq_ignore_ascii_case(h)))
            .collect();
        if headers.is_empty() {
            return Err(DkimError::Sign("message has no From header".into()));
        }
        let signature = MaSigner::from_key(SharedKey(self.key.clone()))
            .domain(self.signing_domain(from_domain))
            .selector(self.selector.as_str())
            .headers(headers)
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed)
            .sign(message)
            .map_err(|e| DkimError::Sign(e.to_string()))?;
        Ok(signature.to_header())
    }
}

/// Names of the header fields of a message (up to the first empty line).
fn present_headers(message: &[u8]) -> Vec<&str> {
    let mut names = Vec::new();
    for line in message.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            continue;
        }
        if let Some(colon) = line.iter().position(|b| *b == b':')
            && let Ok(name) = std::str::from_utf8(&line[..colon])
        {
            names.push(name.trim_end());
        }
    }
    names
}

/// Decodes a `p=` value (white space allowed, as in folded TXT records).
pub fn decode_public_key(p: &str) -> Option<Vec<u8>> {
    let clean: String = p.chars().filter(|c| !c.is_whitespace()).collect();
    B64.decode(clean).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519_PEM: &str = include_str!("../tests/fixtures/dkim-ed25519.pem");
    const RSA_PEM: &str = include_str!("../tests/fixtures/dkim-rsa2048.pem");

    #[test]
    fn loads_keys_and_builds_the_dns_record() {
        let ed = Signer::from_pem(ED25519_PEM.as_bytes(), "ed", None).unwrap();
        assert_eq!(ed.key_type(), KeyType::Ed25519);
        assert_eq!(ed.public_key().len(), 32);
        assert!(ed.dns_record().starts_with("v=DKIM1; k=ed25519; p="));
        let rsa = Signer::from_pem(RSA_PEM.as_bytes(), "rsa", Some("Acme.Example.")).unwrap();
        assert_eq!(rsa.key_type(), KeyType::Rsa);
        assert_eq!(rsa.domain(), Some("acme.example"));
        // SPKI form, as `openssl rsa -pubout` writes it: starts with SEQUENCE, rsaEncryption.
        let p = rsa.public_key();
        assert_eq!(p[0], 0x30);
        assert!(
            p.windows(9)
                .any(|w| w == [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01])
        );
        assert!(public_key_core(p).len() < p.len());
        assert_eq!(public_key_core(ed.public_key()), ed.public_key());
    }

    #[test]
    fn rejects_bad_keys_and_names() {
        assert!(matches!(
            Signer::from_pem(b"not a key", "s", None),
            Err(DkimError::Key { .. })
        ));
        assert!(matches!(
            Signer::from_pem(ED25519_PEM.as_bytes(), "bad selector", None),
            Err(DkimError::Name {
                what: "selector",
                ..
            })
        ));
        assert!(matches!(
            Signer::from_pem(ED25519_PEM.as_bytes(), "s", Some("a..b")),
            Err(DkimError::Name { what: "domain", .. })
        ));
        let e = Signer::from_file(Path::new("/nonexistent/key.pem"), "s", None).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/key.pem"), "{e}");
    }

    #[test]
    fn signs_only_the_listed_headers_that_are_present() {
        let msg = b"From: a@acme.example\r\nTo: b@example.com\r\nX-Other: 1\r\n\
                    List-Unsubscribe: <https://acme.example/u/1>\r\n\r\nbody\r\n";
        let ed = Signer::from_pem(ED25519_PEM.as_bytes(), "ed", None).unwrap();
        let h = ed.sign(msg, "acme.example").unwrap();
        assert!(h.starts_with("DKIM-Signature: "), "{h}");
        assert!(h.ends_with("\r\n"));
        let unfolded = h.replace("\r\n", "").replace([' ', '\t'], "");
        assert!(unfolded.contains("a=ed25519-sha256"), "{h}");
        assert!(unfolded.contains("c=relaxed/relaxed"), "{h}");
        assert!(unfolded.contains("d=acme.example"), "{h}");
        assert!(unfolded.contains("s=ed"), "{h}");
        let tags: Vec<&str> = unfolded.split(';').collect();
        let hv = tags.iter().find(|t| t.starts_with("h=")).unwrap();
        let mut names: Vec<String> = hv[2..].split(':').map(str::to_ascii_lowercase).collect();
        names.sort();
        assert_eq!(names, ["from", "list-unsubscribe", "to"]);
    }
}
