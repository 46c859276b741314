//! Preflight of the sender's own domain (`mailmerge check-sender DOMAIN`): is it set up to be
//! trusted by Gmail, Yahoo and the rest before the first message leaves?
//!
//! Why: a direct-to-MX sender is judged on its domain's DNS. Since 2024 bulk senders need SPF
//! and DKIM and a DMARC policy aligned with From; a missing record means the spam folder or a
//! 5.7.x rejection. This module looks the records up and, for each one missing or wrong, says
//! what to publish:
//!
//! - **SPF** (RFC 7208): exactly one `v=spf1` TXT record at the domain, not ending in `+all`.
//! - **DKIM** (RFC 6376 §3.6): the TXT record at `<selector>._domainkey.<domain>` with a
//!   non-empty `p=`; with `--dkim-key`, its public key must be the one published.
//! - **DMARC** (RFC 7489 §6.1): one `v=DMARC1` TXT record with a `p=` tag at
//!   `_dmarc.<domain>`, or else at the parent domain's (our simplified organizational domain:
//!   the last two labels; a registry suffix such as `co.uk` is not recognised).

use std::fmt;

use crate::dkim::{Signer, decode_public_key, public_key_core};
use crate::mx::{DnsOptions, MxResolver, ResolverError};

/// What a check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordState {
    /// Published and usable.
    Ok,
    /// Not published.
    Missing,
    /// Published but wrong (duplicate, revoked, mismatching key, no policy).
    Wrong,
    /// Could not be checked (temporary DNS failure).
    Unknown,
    /// Not asked for (no `--dkim-selector`).
    Skipped,
}

impl RecordState {
    fn as_str(self) -> &'static str {
        match self {
            RecordState::Ok => "ok",
            RecordState::Missing => "missing",
            RecordState::Wrong => "wrong",
            RecordState::Unknown => "unknown",
            RecordState::Skipped => "skipped",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug)]
pub struct Finding {
    /// `SPF`, `DKIM` or `DMARC`.
    pub check: &'static str,
    /// The verdict.
    pub verdict: RecordState,
    /// What was found, or why it is wrong.
    pub detail: String,
    /// Zone-file line to publish, when something is missing or wrong.
    pub publish: Option<String>,
}

/// The whole preflight.
#[derive(Clone, Debug)]
pub struct SenderReport {
    /// Domain checked.
    pub domain: String,
    /// SPF, DKIM, DMARC, in that order.
    pub findings: Vec<Finding>,
}

impl SenderReport {
    /// True when nothing is missing, wrong or unknown (a skipped check does not count).
    pub fn all_ok(&self) -> bool {
        self.findings
            .iter()
            .all(|f| matches!(f.verdict, RecordState::Ok | RecordState::Skipped))
    }

    /// The finding of one check.
    pub fn finding(&self, check: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.check == check)
    }
}

impl fmt::Display for SenderReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sender domain {}:", self.domain)?;
        for x in &self.findings {
            writeln!(f, "  {:<6} {:<8} {}", x.check, x.verdict.as_str(), x.detail)?;
            if let Some(p) = &x.publish {
                writeln!(f, "         publish: {p}")?;
            }
        }
        if self.all_ok() {
            writeln!(f, "all set")
        } else {
            writeln!(
                f,
                "some records are missing or wrong: publish the lines above"
            )
        }
    }
}

/// What to check besides the domain.
#[derive(Clone, Debug, Default)]
pub struct SenderCheckOptions {
    /// DNS server and timeouts.
    pub dns: DnsOptions,
    /// DKIM selector to look up.
    pub dkim_selector: Option<String>,
    /// The private key messages are signed with: its public half must be published.
    pub dkim_key: Option<Signer>,
}

/// A zone-file TXT line; values over 255 octets are split into several strings (RFC 1035
/// §3.3.14: a TXT record is a list of strings of at most 255 octets each).
pub fn zone_line(name: &str, value: &str) -> String {
    let strings: Vec<String> = value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        "{}. IN TXT {}",
        name.trim_end_matches('.'),
        strings.join(" ")
    )
}

/// Value of tag `name` in a `tag=value; …` record (DKIM, DMARC).
fn tag<'a>(record: &'a str, name: &str) -> Option<&'a str> {
    record.split(';').find_map(|t| {
        let (k, v) = t.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn starts_with_ci(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn unknown(check: &'static str, e: String) -> Finding {
    Finding {
        check,
        verdict: RecordState::Unknown,
        detail: e,
        publish: None,
    }
}

async fn check_spf(r: &MxResolver, domain: &str) -> Finding {
    let records = match r.txt(domain).await {
        Ok(t) => t,
        Err(e) => return unknown("SPF", e),
    };
    let spf: Vec<&String> = records
        .iter()
        .filter(|t| {
            let t = t.trim();
            starts_with_ci(t, "v=spf1") && (t.len() == 6 || t.as_bytes()[6] == b' ')
        })
        .collect();
    let publish = zone_line(
        domain,
        "v=spf1 ip4:<your sending IPv4> ip6:<your sending IPv6> -all",
    );
    match spf.as_slice() {
        [] => Finding {
            check: "SPF",
            verdict: RecordState::Missing,
            detail: format!("no v=spf1 TXT record at {domain}"),
            publish: Some(publish),
        },
        [one] if one.trim_end().ends_with("+all") => Finding {
            check: "SPF",
            verdict: RecordState::Wrong,
            detail: format!("{one:?} ends in +all: it lets anyone send as {domain}"),
            publish: Some(publish),
        },
        [one] => Finding {
            check: "SPF",
            verdict: RecordState::Ok,
            detail: (*one).clone(),
            publish: None,
        },
        many => Finding {
            check: "SPF",
            verdict: RecordState::Wrong,
            detail: format!(
                "{} v=spf1 records at {domain}: RFC 7208 §3.2 allows one (SPF permerror); merge them",
                many.len()
            ),
            publish: None,
        },
    }
}

async fn check_dkim(r: &MxResolver, domain: &str, opts: &SenderCheckOptions) -> Finding {
    let Some(selector) = &opts.dkim_selector else {
        return Finding {
            check: "DKIM",
            verdict: RecordState::Skipped,
            detail: "not checked: give --dkim-selector (and --dkim-key to compare keys)".into(),
            publish: None,
        };
    };
    let name = format!("{selector}._domainkey.{domain}");
    let publish = Some(match &opts.dkim_key {
        Some(k) => zone_line(&name, &k.dns_record()),
        None => zone_line(&name, "v=DKIM1; k=rsa; p=<base64 public key>"),
    });
    let records = match r.txt(&name).await {
        Ok(t) => t,
        Err(e) => return unknown("DKIM", e),
    };
    let Some(record) = records.iter().find(|t| tag(t, "p").is_some()) else {
        return Finding {
            check: "DKIM",
            verdict: RecordState::Missing,
            detail: format!("no DKIM key record (with p=) at {name}"),
            publish,
        };
    };
    let p = tag(record, "p").unwrap_or("");
    if p.is_empty() {
        return Finding {
            check: "DKIM",
            verdict: RecordState::Wrong,
            detail: format!("{name} has an empty p=: the key is revoked (RFC 6376 §3.6.1)"),
            publish,
        };
    }
    let Some(published) = decode_public_key(p) else {
        return Finding {
            check: "DKIM",
            verdict: RecordState::Wrong,
            detail: format!("{name}: p= is not valid base64"),
            publish,
        };
    };
    let Some(key) = &opts.dkim_key else {
        return Finding {
            check: "DKIM",
            verdict: RecordState::Ok,
            detail: format!("key published at {name} (not compared: no --dkim-key)"),
            publish: None,
        };
    };
    let k = tag(record, "k").unwrap_or("rsa");
    if !k.eq_ignore_ascii_case(key.key_type().as_str())
        || public_key_core(&published) != public_key_core(key.public_key())
    {
        return Finding {
            check: "DKIM",
            verdict: RecordState::Wrong,
            detail: format!(
                "the key at {name} does not match --dkim-key: receivers will fail every signature"
            ),
            publish,
        };
    }
    Finding {
        check: "DKIM",
        verdict: RecordState::Ok,
        detail: format!("{name} publishes the public half of --dkim-key ({k})"),
        publish: None,
    }
}

async fn check_dmarc(r: &MxResolver, domain: &str) -> Finding {
    let labels: Vec<&str> = domain.split('.').collect();
    let org = (labels.len() > 2).then(|| labels[labels.len() - 2..].join("."));
    let publish = Some(zone_line(
        &format!("_dmarc.{domain}"),
        &format!("v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}"),
    ));
    for at in std::iter::once(domain.to_string()).chain(org) {
        let name = format!("_dmarc.{at}");
        let records = match r.txt(&name).await {
            Ok(t) => t,
            Err(e) => return unknown("DMARC", e),
        };
        let dmarc: Vec<&String> = records
            .iter()
            .filter(|t| starts_with_ci(t.trim(), "v=DMARC1"))
            .collect();
        match dmarc.as_slice() {
            [] => continue,
            [one] => {
                return match tag(one, "p") {
                    Some(p) if ["none", "quarantine", "reject"].contains(&p) => Finding {
                        check: "DMARC",
                        verdict: RecordState::Ok,
                        detail: if at == domain {
                            (*one).clone()
                        } else {
                            format!("{one} (inherited from {at})")
                        },
                        publish: None,
                    },
                    _ => Finding {
                        check: "DMARC",
                        verdict: RecordState::Wrong,
                        detail: format!("{name}: {one:?} has no valid p= policy"),
                        publish,
                    },
                };
            }
            many => {
                return Finding {
                    check: "DMARC",
                    verdict: RecordState::Wrong,
                    detail: format!(
                        "{} DMARC records at {name}: receivers ignore them all (RFC 7489 §6.6.3)",
                        many.len()
                    ),
                    publish,
                };
            }
        }
    }
    Finding {
        check: "DMARC",
        verdict: RecordState::Missing,
        detail: format!("no v=DMARC1 TXT record at _dmarc.{domain}"),
        publish,
    }
}

/// Looks up SPF, DKIM and DMARC for `domain`.
pub async fn check_sender(
    domain: &str,
    opts: &SenderCheckOptions,
) -> Result<SenderReport, ResolverError> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let r = MxResolver::new(&opts.dns)?;
    let (spf, dkim, dmarc) = tokio::join!(
        check_spf(&r, &domain),
        check_dkim(&r, &domain, opts),
        check_dmarc(&r, &domain)
    );
    Ok(SenderReport {
        domain,
        findings: vec![spf, dkim, dmarc],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_lines_split_long_values() {
        let long = "p=".to_string() + &"A".repeat(400);
        let line = zone_line("s._domainkey.acme.test", &long);
        assert!(line.starts_with("s._domainkey.acme.test. IN TXT \"p=AAA"));
        assert_eq!(line.matches('"').count(), 4, "two strings");
        assert_eq!(tag("v=DKIM1; k=ed25519; p=abc", "P"), Some("abc"));
    }
}
