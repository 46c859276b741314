//! VERP (variable envelope return path): each message's envelope sender carries a token
//! naming its campaign and row, e.g. `bounces+3fa2b1c0-17-9c0e4d2a11b7f3e8@acme.example`, so a
//! bounce arriving days later is tied to one row without guessing.
//!
//! The token is `CAMPAIGN-ROW-MAC`: the campaign id (8 hex digits), the row number, and the
//! first 64 bits of HMAC-SHA256(key, "CAMPAIGN-ROW") in hex. Only the holder of the key can
//! make a valid token, so a forged bounce cannot put anyone on the suppression list. Lower-case
//! hex survives MTAs that fold the local part's case.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use ring::hmac;
use thiserror::Error;

use crate::address::Address;

/// Placeholder in `--return-path`.
pub const PLACEHOLDER: &str = "{token}";
/// Hex digits of the MAC in a token.
const MAC_HEX: usize = 16;

/// `--return-path` is unusable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerpError {
    /// No `{token}`, or more than one.
    #[error("--return-path {0:?} must contain {{token}} once, e.g. bounces+{{token}}@acme.example")]
    Placeholder(String),
    /// Not an address once the token is in.
    #[error("--return-path {0:?}: {1}")]
    Address(String, String),
}

/// A campaign's return-path template and key.
#[derive(Clone)]
pub struct Verp {
    template: String,
    key: Arc<hmac::Key>,
    /// The campaign id (set by the run from the job, see [`campaign_id`]).
    pub campaign: String,
}

impl fmt::Debug for Verp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Verp")
            .field("template", &self.template)
            .field("campaign", &self.campaign)
            .finish_non_exhaustive()
    }
}

/// The HMAC key from its bytes.
pub fn key(bytes: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, bytes)
}

impl Verp {
    /// Checks the template: `{token}` once, and an address once it is filled in.
    pub fn new(template: &str, key_bytes: &[u8]) -> Result<Self, VerpError> {
        if template.matches(PLACEHOLDER).count() != 1 {
            return Err(VerpError::Placeholder(template.into()));
        }
        let v = Self {
            template: template.trim().to_string(),
            key: Arc::new(key(key_bytes)),
            campaign: "00000000".into(),
        };
        v.address(1)
            .map_err(|e| VerpError::Address(template.into(), e))?;
        Ok(v)
    }

    /// The HMAC key (also keys the per-row Message-ID tag, [`crate::message::row_message_id`]).
    pub fn key(&self) -> &hmac::Key {
        &self.key
    }

    /// The token for `row` of this campaign.
    pub fn token(&self, row: usize) -> String {
        sign(&self.key, &self.campaign, row)
    }

    /// The envelope sender for `row`.
    pub fn address(&self, row: usize) -> Result<Address, String> {
        let a = self.template.replace(PLACEHOLDER, &self.token(row));
        Address::parse(&a).map_err(|e| e.to_string())
    }
}

/// `CAMPAIGN-ROW-MAC`.
pub fn sign(key: &hmac::Key, campaign: &str, row: usize) -> String {
    let body = format!("{campaign}-{row}");
    let tag = hmac::sign(key, body.as_bytes());
    let mac: String = tag.as_ref()[..MAC_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{body}-{mac}")
}

/// A token found in a message, not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// Campaign id.
    pub campaign: String,
    /// Row number.
    pub row: usize,
    /// The token as found.
    pub text: String,
}

impl Token {
    /// True when the MAC is the key's (compared in constant time).
    pub fn verify(&self, key: &hmac::Key) -> bool {
        let expected = sign(key, &self.campaign, self.row);
        let found = self.text.to_ascii_lowercase();
        // Constant time: every byte is compared whatever the first difference.
        expected.len() == found.len()
            && expected
                .bytes()
                .zip(found.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Every token-shaped string in `text` (`8 hex - digits - 16 hex`, bounded by characters that
/// cannot be part of one), in order, without repeats.
pub fn find_tokens(text: &str) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::new();
    let is_part = |c: char| c.is_ascii_alphanumeric() || c == '-';
    for piece in text.split(|c: char| !is_part(c)) {
        // A local part like `bounces-3fa2…` puts a prefix before the token: try every start.
        let parts: Vec<&str> = piece.split('-').collect();
        for w in parts.windows(3) {
            if let Some(t) = parse_token(w[0], w[1], w[2])
                && !out.contains(&t)
            {
                out.push(t);
            }
        }
    }
    out
}

fn parse_token(campaign: &str, row: &str, mac: &str) -> Option<Token> {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(campaign, 8) || !hex(mac, MAC_HEX) || row.is_empty() || row.len() > 12 {
        return None;
    }
    Some(Token {
        campaign: campaign.to_ascii_lowercase(),
        row: row.parse().ok()?,
        text: format!("{campaign}-{row}-{mac}"),
    })
}

/// A campaign's id: 8 hex digits of SHA-256 over the results file's absolute path and the
/// message fingerprint. Re-runs of a job (same results file, same template) keep it, so their
/// tokens stay valid; another template or results file is another campaign.
pub fn campaign_id(results: &Path, fingerprint: &str) -> String {
    let abs = std::path::absolute(results).unwrap_or_else(|_| results.to_path_buf());
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(abs.to_string_lossy().as_bytes());
    ctx.update(b"\0");
    ctx.update(fingerprint.as_bytes());
    ctx.finish().as_ref()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_tokens_are_found_and_verified_forged_ones_are_not() {
        let mut v = Verp::new("bounces+{token}@acme.example", b"0123456789abcdef").unwrap();
        v.campaign = "3fa2b1c0".into();
        let a = v.address(17).unwrap().to_string();
        assert!(a.starts_with("bounces+3fa2b1c0-17-"), "{a}");
        let text = format!("To: <{}>\nX: bounces-{}", a.to_uppercase(), v.token(18));
        let found = find_tokens(&text);
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!((found[0].row, found[1].row), (17, 18));
        assert!(found.iter().all(|t| t.verify(&v.key)));
        let other = key(b"another key of 16+ bytes");
        assert!(!found[0].verify(&other));
        let forged = find_tokens(&a.replace("-17-", "-18-"));
        assert!(!forged[0].verify(&v.key));
    }

    #[test]
    fn the_template_needs_one_placeholder_and_an_address() {
        assert!(Verp::new("bounces@acme.example", b"k").is_err());
        assert!(Verp::new("{token}{token}@acme.example", b"k").is_err());
        assert!(Verp::new("bounces+{token}", b"k").is_err());
        assert_eq!(campaign_id(Path::new("/a/r.csv"), "f").len(), 8);
        assert_ne!(
            campaign_id(Path::new("/a/r.csv"), "f"),
            campaign_id(Path::new("/a/r.csv"), "g")
        );
    }
}
