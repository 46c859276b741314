//! Authenticated transport where the receiver asks for it (issue 14): which TLS policy governs
//! each destination, decided once per run before delivery.
//!
//! Opportunistic STARTTLS accepts any certificate, so an attacker on the path can strip
//! STARTTLS or present their own certificate. Receivers that care publish a policy:
//! - [`mta_sts`] (RFC 8461): per recipient domain, a TXT record announces a policy fetched over
//!   HTTPS; in `enforce` mode only the listed MX hosts, with a certificate valid for their name.
//! - [`dane`] (RFC 7672/7671): per MX host, DNSSEC-validated TLSA records the certificate must
//!   match. DANE wins over MTA-STS.

pub mod dane;
pub mod mta_sts;
