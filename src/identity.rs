//! Sender identity: the names a receiver checks before it trusts a direct-to-MX sender.
//!
//! Why: DMARC passes only when SPF (checked on the envelope sender's domain) or DKIM (the `d=`
//! domain) is *aligned* with the From domain (RFC 7489 §3.1), and receivers such as Gmail
//! penalise an EHLO name that is not a fully-qualified domain name. These checks cost nothing
//! and turn a silent spam-folder placement into a warning before the run.
//!
//! Alignment rule used here (DMARC "relaxed" alignment, simplified): two domains are aligned
//! when they are equal or one is a subdomain of the other (`bounces.acme.example` and
//! `acme.example` are; `acme.example` and `acme-mail.example` are not). The exact rule compares
//! organizational domains via the Public Suffix List; ours never warns wrongly on same-domain
//! setups and needs no list, but does not see that `a.acme.example` and `b.acme.example` share
//! one organization (it warns; use one parent domain to silence it).

/// Whether `a` and `b` are aligned (same domain, or one a subdomain of the other).
pub fn aligned(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('.').to_ascii_lowercase();
    let b = b.trim_end_matches('.').to_ascii_lowercase();
    a == b || a.ends_with(&format!(".{b}")) || b.ends_with(&format!(".{a}"))
}

/// Warnings about one message's identity: envelope sender and DKIM domain vs From domain.
pub fn alignment_warnings(
    from_domain: &str,
    envelope_domain: &str,
    dkim_domain: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    if !aligned(from_domain, envelope_domain) {
        out.push(format!(
            "envelope sender domain {envelope_domain} is not aligned with the From domain \
             {from_domain}: SPF cannot pass DMARC for these messages (use --from on \
             {from_domain} or a subdomain of it)"
        ));
    }
    if let Some(d) = dkim_domain
        && !aligned(from_domain, d)
    {
        out.push(format!(
            "DKIM signing domain {d} is not aligned with the From domain {from_domain}: the \
             signature cannot pass DMARC (use --dkim-domain {from_domain}, or leave it out)"
        ));
    }
    out
}

/// Whether `name` looks like a fully-qualified domain name (has a dot, no trailing one, is not
/// an address literal).
pub fn is_fqdn(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    name.contains('.')
        && !name.starts_with('[')
        && name.parse::<std::net::IpAddr>().is_err()
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// The warning for an EHLO name that is not a FQDN, if it is not.
pub fn helo_warning(name: &str) -> Option<String> {
    (!is_fqdn(name)).then(|| {
        format!(
            "EHLO name {name:?} is not a fully-qualified domain name: many receivers (Gmail, \
             Yahoo) distrust or reject it. Set --helo to the FQDN whose A record is this host's \
             sending address and whose PTR points back to it"
        )
    })
}

/// Finds the FQDN of host `short` in an `/etc/hosts` text: the first dotted name on a line that
/// also lists `short` (what `hostname -f` does on most systems).
pub fn fqdn_from_hosts(hosts: &str, short: &str) -> Option<String> {
    hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let names: Vec<&str> = l.split_whitespace().skip(1).collect();
            let listed = names.iter().any(|n| {
                n.eq_ignore_ascii_case(short)
                    || n.split('.')
                        .next()
                        .is_some_and(|h| h.eq_ignore_ascii_case(short))
            });
            if !listed {
                return None;
            }
            names
                .iter()
                .find(|n| {
                    is_fqdn(n)
                        && n.split('.')
                            .next()
                            .is_some_and(|h| h.eq_ignore_ascii_case(short))
                })
                .map(|n| n.to_ascii_lowercase())
        })
        .next()
}

/// The default EHLO name: this host's FQDN — the host name if it has a dot, else the dotted
/// name `/etc/hosts` gives it, else the bare host name (and [`helo_warning`] will say so).
pub fn default_helo() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    if is_fqdn(&host) {
        return host;
    }
    std::fs::read_to_string("/etc/hosts")
        .ok()
        .and_then(|h| fqdn_from_hosts(&h, &host))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_is_same_domain_or_subdomain() {
        assert!(aligned("acme.example", "acme.example"));
        assert!(aligned("Acme.Example.", "bounces.acme.example"));
        assert!(aligned("news.acme.example", "acme.example"));
        assert!(!aligned("acme.example", "acme-mail.example"));
        assert!(!aligned("acme.example", "notacme.example"));
        assert!(
            alignment_warnings("acme.example", "b.acme.example", Some("acme.example")).is_empty()
        );
        let w = alignment_warnings("acme.example", "esp.example", Some("esp.example"));
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("envelope sender domain esp.example"));
        assert!(w[1].contains("DKIM signing domain esp.example"));
    }

    #[test]
    fn fqdn_rules_and_helo_warning() {
        assert!(is_fqdn("mail.acme.example"));
        assert!(!is_fqdn("localhost"));
        assert!(!is_fqdn("127.0.0.1"));
        assert!(!is_fqdn("[127.0.0.1]"));
        assert!(helo_warning("mail.acme.example").is_none());
        assert!(
            helo_warning("box")
                .unwrap()
                .contains("not a fully-qualified")
        );
    }

    #[test]
    fn finds_the_fqdn_in_a_hosts_file() {
        let hosts = "127.0.0.1 localhost\n# 10.0.0.1 box.wrong.example\n\
                     192.0.2.10 box.acme.example box\n";
        assert_eq!(
            fqdn_from_hosts(hosts, "box").as_deref(),
            Some("box.acme.example")
        );
        assert_eq!(fqdn_from_hosts(hosts, "other"), None);
    }
}
