//! Recipient address syntax (RFC 5321 §4.1.2 Mailbox, RFC 5322 §3.4.1) and IDNA.
//!
//! Obviously broken addresses are caught here, without DNS, so that they become `invalid` rows
//! with a reason instead of failed SMTP transactions. Internationalized domains are converted to
//! A-labels (UTS #46 / IDNA 2008) because DNS and a plain SMTP server only speak ASCII; a
//! non-ASCII local part is kept and flagged, since it needs SMTPUTF8 (RFC 6531) at delivery.

use std::fmt;

use thiserror::Error;

/// A syntactically valid mailbox, domain in lower-case A-label form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    local: String,
    domain: String,
}

/// Why a string is not a usable mailbox.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AddressError {
    /// Nothing there.
    #[error("address is empty")]
    Empty,
    /// No `@`.
    #[error("no @ in address {0:?}")]
    NoAt(String),
    /// Local part empty, too long, or with characters not allowed unquoted.
    #[error("invalid local part in {0:?}: {1}")]
    LocalPart(String, &'static str),
    /// Domain fails IDNA or hostname rules.
    #[error("invalid domain in {0:?}: {1}")]
    Domain(String, &'static str),
    /// Address literals (`user@[192.0.2.1]`) are not delivered by a direct-to-MX batch sender.
    #[error("address literal domains are not supported: {0:?}")]
    Literal(String),
    /// Longer than RFC 5321 §4.5.3.1.3 allows for a path.
    #[error("address longer than 254 octets")]
    TooLong,
}

/// RFC 5322 `atext` plus `.` (dot-atom), the unquoted local-part characters.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "!#$%&'*+-/=?^_`{|}~".contains(c)
        || (!c.is_ascii() && !c.is_control())
}

impl Address {
    /// Parses and normalises `input` (surrounding white space is ignored).
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(AddressError::Empty);
        }
        if s.chars().any(|c| c.is_control()) {
            return Err(AddressError::LocalPart(s.into(), "control characters"));
        }
        let Some(at) = s.rfind('@') else {
            return Err(AddressError::NoAt(s.into()));
        };
        let (local, domain) = (&s[..at], &s[at + 1..]);
        Self::check_local(s, local)?;
        if domain.starts_with('[') {
            return Err(AddressError::Literal(s.into()));
        }
        let domain = normalize_domain(domain).map_err(|why| AddressError::Domain(s.into(), why))?;
        if local.len() + 1 + domain.len() > 254 {
            return Err(AddressError::TooLong);
        }
        Ok(Self {
            local: local.to_string(),
            domain,
        })
    }

    fn check_local(whole: &str, local: &str) -> Result<(), AddressError> {
        let err = |why| Err(AddressError::LocalPart(whole.into(), why));
        if local.is_empty() {
            return err("empty");
        }
        if local.len() > 64 {
            return err("longer than 64 octets");
        }
        if local.starts_with('"') {
            // quoted-string: printable ASCII/UTF-8 except unescaped `"` and `\`.
            if local.len() < 2 || !local.ends_with('"') {
                return err("unterminated quotes");
            }
            let inner = &local[1..local.len() - 1];
            let mut escaped = false;
            for c in inner.chars() {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => return err("unescaped quote"),
                    _ => {}
                }
            }
            if escaped {
                return err("dangling backslash");
            }
            return Ok(());
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return err("misplaced dot");
        }
        if let Some(c) = local.chars().find(|&c| c != '.' && !is_atext(c)) {
            return match c {
                ' ' => err("contains a space"),
                '<' | '>' | '(' | ')' | ',' | ';' | ':' | '[' | ']' | '@' | '\\' | '"' => {
                    err("contains a special character")
                }
                _ => err("contains a character not allowed"),
            };
        }
        Ok(())
    }

    /// The local part as given.
    pub fn local(&self) -> &str {
        &self.local
    }

    /// The domain in lower-case ASCII (A-labels).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// True when the local part is not ASCII (delivery needs SMTPUTF8).
    pub fn needs_smtputf8(&self) -> bool {
        !self.local.is_ascii()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Lower-cases and IDNA-encodes a domain, then checks RFC 1035 host syntax.
pub fn normalize_domain(domain: &str) -> Result<String, &'static str> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.is_empty() {
        return Err("empty");
    }
    let ascii = match ldh_ascii(domain) {
        Some(lower) => lower,
        None => idna::domain_to_ascii(domain).map_err(|_| "not a valid international domain")?,
    };
    if ascii.len() > 253 {
        return Err("longer than 253 octets");
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err("needs at least one dot");
    }
    for label in &labels {
        if label.is_empty() {
            return Err("empty label");
        }
        if label.len() > 63 {
            return Err("label longer than 63 octets");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("label with characters other than letters, digits and '-'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("label starts or ends with '-'");
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("numeric top-level label");
    }
    Ok(ascii)
}

/// The common case without the IDNA machinery: a domain of ASCII letters, digits, hyphens and
/// dots, none of its labels an A-label (`xn--`, which IDNA must decode to check), is its own
/// ASCII form once lower-cased. `None` for anything else.
fn ldh_ascii(domain: &str) -> Option<String> {
    let ldh = domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let a_label = domain
        .split('.')
        .any(|l| l.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("xn--")));
    (ldh && !a_label).then(|| domain.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_ascii_domains_skip_idna_and_come_out_as_idna_gives_them() {
        for d in [
            "Example.COM",
            "d0.test",
            "a-b.c-d.example",
            "ab--cd.example",
            "-lead.example",
            "trail-.example",
            "a..b",
            ".a.b",
            "123.456",
            "x.y.z.w.example",
        ] {
            let fast = ldh_ascii(d).expect("plain ASCII");
            assert_eq!(Ok(fast), idna::domain_to_ascii(d).map_err(|_| ()), "{d}");
        }
        for d in [
            "xn--mnchen-3ya.de",
            "XN--abc.example",
            "bücher.example",
            "a_b.example",
            "a b.example",
        ] {
            assert!(ldh_ascii(d).is_none(), "{d} must go through IDNA");
        }
        assert_eq!(
            normalize_domain("XN--MNCHEN-3YA.De").as_deref(),
            Ok("xn--mnchen-3ya.de")
        );
    }

    #[test]
    fn accepts_and_normalises() {
        let a = Address::parse("  Ann.Lee+tag@Example.COM ").unwrap();
        assert_eq!(a.to_string(), "Ann.Lee+tag@example.com");
        let a = Address::parse("\"john smith\"@example.test").unwrap();
        assert_eq!(a.local(), "\"john smith\"");
    }

    #[test]
    fn idn_domain_becomes_a_labels() {
        let a = Address::parse("kunde@bücher.example").unwrap();
        assert_eq!(a.domain(), "xn--bcher-kva.example");
        assert!(!a.needs_smtputf8());
        let a = Address::parse("müller@example.test").unwrap();
        assert!(a.needs_smtputf8());
    }

    #[test]
    fn rejects_broken_addresses_with_a_reason() {
        for (bad, want) in [
            ("", "empty"),
            ("plainaddress", "no @"),
            ("@example.com", "empty"),
            ("a..b@example.com", "misplaced dot"),
            ("a b@example.com", "space"),
            ("a@localhost", "at least one dot"),
            ("a@exa_mple.com", "letters, digits"),
            ("a@-x.com", "'-'"),
            ("a@[192.0.2.1]", "literal"),
            ("a@b.com\r\nBcc: x@y.com", "control"),
            ("a<b@example.com", "special"),
        ] {
            let err = Address::parse(bad).unwrap_err().to_string();
            assert!(err.contains(want), "{bad:?}: {err}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Address::parse(&long).is_err());
    }
}
