//! What a domain publishes for MTA-STS, as text: the `_mta-sts` TXT record (RFC 8461 §3.1) and
//! the policy file (§3.2), and the MX host matching a policy implies (§4.1).
//!
//! Kept apart from the fetching and caching so that the grammar can be tested on its own, with
//! the RFC's examples and with the malformed inputs real domains publish. Parsing follows the
//! ABNF but is lenient where leniency cannot weaken a policy: LF or CRLF line endings, blank
//! lines, whitespace around separators, and the case of key names and of the `mode` value.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The largest `max_age` (RFC 8461 §3.2: "maximum value of 31557600", about a year). Larger
/// values are clamped to it.
pub const MAX_AGE_LIMIT: u64 = 31_557_600;

/// A policy's `mode`: what a sender does when a delivery would not satisfy the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only the listed MX hosts, only over TLS with a certificate valid for the host name;
    /// otherwise the message is not delivered (deferred).
    Enforce,
    /// Deliver as without a policy, and report what would have failed.
    Testing,
    /// The domain has withdrawn its policy: deliver as without one.
    None,
}

impl Mode {
    /// The policy file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Testing => "testing",
            Mode::None => "none",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An MTA-STS policy (RFC 8461 §3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The `id` of the TXT record under which the policy was fetched (empty for a policy only
    /// parsed, see [`Policy::parse`]).
    pub id: String,
    /// `mode`.
    pub mode: Mode,
    /// `mx` patterns, lower case, without a trailing dot: `mail.example.com` or
    /// `*.example.net`. Empty only when the mode is `none`.
    pub mx: Vec<String>,
    /// `max_age` in seconds, at most [`MAX_AGE_LIMIT`].
    pub max_age: u64,
}

/// A policy file that is not a valid STSv1 policy.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    /// A line that is not `key: value`.
    #[error("line {0} is not a \"key: value\" field")]
    Syntax(usize),
    /// A required field is absent.
    #[error("no {0:?} field")]
    Missing(&'static str),
    /// `version` is not `STSv1`.
    #[error("unsupported version {0:?} (expected STSv1)")]
    Version(String),
    /// `mode` is not enforce, testing or none.
    #[error("invalid mode {0:?}")]
    Mode(String),
    /// `max_age` is not 1 to 10 digits.
    #[error("invalid max_age {0:?}")]
    MaxAge(String),
    /// An `mx` value that is not a host name or a `*.` wildcard pattern.
    #[error("invalid mx pattern {0:?}")]
    Mx(String),
}

impl Policy {
    /// Parses a policy file (RFC 8461 §3.2). The `id` is left empty: it comes from the TXT
    /// record, not the file.
    ///
    /// Lines end in CRLF or LF; blank lines are skipped; unknown keys are ignored; for a
    /// repeated key other than `mx` the first one counts. `mx` may be absent only in mode
    /// `none` (as the RFC's ABNF allows). A `max_age` above [`MAX_AGE_LIMIT`] is clamped.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let mut version = None;
        let mut mode = None;
        let mut max_age = None;
        let mut mx = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(PolicyError::Syntax(i + 1));
            };
            let key = key.trim();
            if !is_field_name(key) {
                return Err(PolicyError::Syntax(i + 1));
            }
            let value = value.trim();
            match key.to_ascii_lowercase().as_str() {
                "version" if version.is_none() => version = Some(value),
                "mode" if mode.is_none() => mode = Some(value),
                "max_age" if max_age.is_none() => max_age = Some(value),
                "mx" => mx.push(mx_pattern(value)?),
                _ => {}
            }
        }
        let version = version.ok_or(PolicyError::Missing("version"))?;
        if !version.eq_ignore_ascii_case("STSv1") {
            return Err(PolicyError::Version(version.to_string()));
        }
        let mode_text = mode.ok_or(PolicyError::Missing("mode"))?;
        let mode = match mode_text.to_ascii_lowercase().as_str() {
            "enforce" => Mode::Enforce,
            "testing" => Mode::Testing,
            "none" => Mode::None,
            _ => return Err(PolicyError::Mode(mode_text.to_string())),
        };
        let max_age_text = max_age.ok_or(PolicyError::Missing("max_age"))?;
        let max_age = parse_max_age(max_age_text)
            .ok_or_else(|| PolicyError::MaxAge(max_age_text.to_string()))?;
        if mx.is_empty() && mode != Mode::None {
            return Err(PolicyError::Missing("mx"));
        }
        Ok(Policy {
            id: String::new(),
            mode,
            mx,
            max_age,
        })
    }

    /// Whether `host` (an MX host name, A-label form) matches one of the `mx` patterns
    /// (RFC 8461 §4.1): case-insensitively, ignoring a trailing dot, a `*.` pattern matching
    /// exactly one more leftmost label (`*.example.com` matches `mx.example.com`, but neither
    /// `example.com` nor `a.b.example.com`).
    pub fn allows_mx(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            return false;
        }
        self.mx
            .iter()
            .any(|pattern| match pattern.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(first, rest)| !first.is_empty() && rest == suffix),
                None => *pattern == host,
            })
    }
}

/// `max_age`: 1 to 10 digits (the ABNF's `1*10DIGIT`), clamped to [`MAX_AGE_LIMIT`].
fn parse_max_age(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().map(|v| v.min(MAX_AGE_LIMIT))
}

/// An `mx` value: `["*."] Domain`, normalised to lower case without a trailing dot.
fn mx_pattern(value: &str) -> Result<String, PolicyError> {
    let bad = || PolicyError::Mx(value.to_string());
    let lower = value.trim_end_matches('.').to_ascii_lowercase();
    let domain = lower.strip_prefix("*.").unwrap_or(&lower);
    if domain.is_empty() || domain.len() > 253 {
        return Err(bad());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !domain.split('.').all(label_ok) {
        return Err(bad());
    }
    Ok(lower)
}

/// A field name of the TXT record or the policy file (the ABNF's `sts-ext-name`):
/// `(ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")`.
fn is_field_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && name.len() <= 32
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Why a domain's `_mta-sts` TXT records announce no policy.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum TxtError {
    /// No record starts with `v=STSv1;`.
    #[error("no STSv1 record")]
    NoRecord,
    /// More than one record starts with `v=STSv1;` (RFC 8461 §3.1: no policy then).
    #[error("{0} STSv1 records (exactly one is allowed)")]
    Several(usize),
    /// The one STSv1 record does not follow the grammar.
    #[error("invalid STSv1 record {0:?}")]
    Invalid(String),
}

/// The policy `id` announced by a domain's `_mta-sts` TXT records (each record's strings
/// already joined, as [`crate::mx::MxResolver::txt`] returns them).
///
/// RFC 8461 §3.1: records that do not begin with `v=STSv1;` are discarded; anything but exactly
/// one remaining, syntactically valid record means the domain has no available policy.
pub fn policy_id(records: &[String]) -> Result<String, TxtError> {
    let sts: Vec<&String> = records.iter().filter(|r| is_sts_record(r)).collect();
    match sts.as_slice() {
        [] => Err(TxtError::NoRecord),
        [one] => parse_txt(one).ok_or_else(|| TxtError::Invalid(one.to_string())),
        several => Err(TxtError::Several(several.len())),
    }
}

/// Whether a TXT record begins with `v=STSv1` and then `;` (whitespace allowed around).
fn is_sts_record(record: &str) -> bool {
    record
        .trim_start()
        .strip_prefix("v=STSv1")
        .is_some_and(|rest| rest.trim_start().starts_with(';'))
}

/// The `id` of one STSv1 record: `v=STSv1; id=<1-32 alnum>;` with any extension fields
/// (`name=value`) in any order, whitespace tolerated around `;` and `=`, the final `;`
/// optional. The first `id` counts. `None` when the record does not follow the grammar.
fn parse_txt(record: &str) -> Option<String> {
    let mut fields = record.trim().split(';').map(str::trim);
    if fields.next()? != "v=STSv1" {
        return None;
    }
    let fields: Vec<&str> = fields.collect();
    let mut id = None;
    for (i, field) in fields.iter().enumerate() {
        if field.is_empty() {
            // Only the optional final ";" leaves an empty field.
            if i + 1 == fields.len() {
                continue;
            }
            return None;
        }
        let (name, value) = field.split_once('=')?;
        let (name, value) = (name.trim(), value.trim());
        if !is_field_name(name)
            || value.is_empty()
            || !value
                .bytes()
                .all(|b| (0x21..=0x7e).contains(&b) && b != b'=')
        {
            return None;
        }
        if name == "id" && id.is_none() {
            if value.len() > 32 || !value.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return None;
            }
            id = Some(value.to_string());
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_rfc_example_policy_parses() {
        // RFC 8461 §3.2, with CRLF line endings as the RFC writes them.
        let text = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n\
                    mx: *.example.net\r\nmx: backupmx.example.com\r\nmax_age: 604800\r\n";
        let p = Policy::parse(text).unwrap();
        assert_eq!(p.mode, Mode::Enforce);
        assert_eq!(
            p.mx,
            ["mail.example.com", "*.example.net", "backupmx.example.com"]
        );
        assert_eq!(p.max_age, 604_800);
        assert_eq!(p.id, "");
    }

    #[test]
    fn lf_endings_blank_lines_whitespace_unknown_keys_and_case_are_tolerated() {
        let text = "\n  version :  STSv1\nMode: Testing \n\nmx:MAIL.Example.COM.\n\
                    max_age:86400\nrua: ignored\nfoo-bar.baz: x y z\n";
        let p = Policy::parse(text).unwrap();
        assert_eq!(p.mode, Mode::Testing);
        assert_eq!(p.mx, ["mail.example.com"]);
        assert_eq!(p.max_age, 86_400);
        // No final line ending at all.
        let p = Policy::parse("version: STSv1\nmode: none\nmax_age: 0").unwrap();
        assert_eq!((p.mode, p.max_age, p.mx.len()), (Mode::None, 0, 0));
    }

    #[test]
    fn the_first_of_repeated_fields_counts_except_mx() {
        let text = "version: STSv1\nmode: testing\nmode: enforce\nmax_age: 10\nmax_age: 20\n\
                    mx: a.example.com\nmx: b.example.com\n";
        let p = Policy::parse(text).unwrap();
        assert_eq!((p.mode, p.max_age), (Mode::Testing, 10));
        assert_eq!(p.mx, ["a.example.com", "b.example.com"]);
    }

    #[test]
    fn max_age_is_digits_only_and_clamped_to_a_year() {
        let with_age = |age: &str| {
            Policy::parse(&format!(
                "version: STSv1\nmode: enforce\nmx: m.example.com\nmax_age: {age}\n"
            ))
        };
        assert_eq!(with_age("31557600").unwrap().max_age, MAX_AGE_LIMIT);
        assert_eq!(with_age("31557601").unwrap().max_age, MAX_AGE_LIMIT);
        assert_eq!(with_age("9999999999").unwrap().max_age, MAX_AGE_LIMIT);
        for bad in ["", "-1", "+5", "1.5", "1e6", "0x10", "12345678901", "ten"] {
            assert_eq!(
                with_age(bad),
                Err(PolicyError::MaxAge(bad.to_string())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn invalid_policies_are_errors() {
        let cases: &[(&str, PolicyError)] = &[
            ("", PolicyError::Missing("version")),
            (
                "<html><body>Not found</body></html>",
                PolicyError::Syntax(1),
            ),
            (
                "version: STSv1\nthis line has no colon\n",
                PolicyError::Syntax(2),
            ),
            ("version: STSv1\nbad key: x\n", PolicyError::Syntax(2)),
            (
                "version: STSv2\nmode: enforce\nmx: a.example.com\nmax_age: 1\n",
                PolicyError::Version("STSv2".into()),
            ),
            (
                "version: STSv1\nmode: report\nmx: a.example.com\nmax_age: 1\n",
                PolicyError::Mode("report".into()),
            ),
            (
                "version: STSv1\nmx: a.example.com\nmax_age: 1\n",
                PolicyError::Missing("mode"),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.example.com\n",
                PolicyError::Missing("max_age"),
            ),
            (
                "version: STSv1\nmode: enforce\nmax_age: 1\n",
                PolicyError::Missing("mx"),
            ),
            (
                "version: STSv1\nmode: testing\nmax_age: 1\n",
                PolicyError::Missing("mx"),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: mail.*.example.com\nmax_age: 1\n",
                PolicyError::Mx("mail.*.example.com".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: *.\nmax_age: 1\n",
                PolicyError::Mx("*.".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a..example.com\nmax_age: 1\n",
                PolicyError::Mx("a..example.com".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmx: a.example.com b.example.com\nmax_age: 1\n",
                PolicyError::Mx("a.example.com b.example.com".into()),
            ),
            (
                "version: STSv1\nmode: enforce\nmx:\nmax_age: 1\n",
                PolicyError::Mx("".into()),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Policy::parse(text).as_ref(), Err(want), "{text:?}");
        }
    }

    fn policy(mx: &[&str]) -> Policy {
        Policy {
            id: "1".into(),
            mode: Mode::Enforce,
            mx: mx.iter().map(|s| s.to_string()).collect(),
            max_age: 1,
        }
    }

    #[test]
    fn mx_matching_follows_section_4_1() {
        let p = policy(&["mail.example.com", "*.example.net"]);
        assert!(p.allows_mx("mail.example.com"));
        assert!(p.allows_mx("MAIL.Example.COM."));
        assert!(!p.allows_mx("mail.example.com.evil.test"));
        assert!(!p.allows_mx("xmail.example.com"));
        assert!(!p.allows_mx("other.example.com"));
        // RFC 8461 §4.1: "*.example.com" matches "mail.example.com" but not "example.com"
        // nor "foo.bar.example.com".
        assert!(p.allows_mx("mx1.example.net"));
        assert!(p.allows_mx("MX1.EXAMPLE.NET."));
        assert!(!p.allows_mx("example.net"));
        assert!(!p.allows_mx("foo.bar.example.net"));
        assert!(!p.allows_mx(".example.net"));
        assert!(!p.allows_mx("mx1.example.net.evil.test"));
        assert!(!p.allows_mx(""));
        assert!(!p.allows_mx("."));
        assert!(!policy(&[]).allows_mx("mail.example.com"));
    }

    #[test]
    fn the_rfc_example_txt_record_gives_its_id() {
        assert_eq!(
            policy_id(&records(&["v=STSv1; id=20160831085700Z;"])),
            Ok("20160831085700Z".into())
        );
    }

    #[test]
    fn txt_records_tolerate_whitespace_extensions_and_other_records() {
        for record in [
            "v=STSv1;id=abc",
            "v=STSv1; id=abc",
            "  v=STSv1 ;  id = abc ;  ",
            "v=STSv1; ext_1.a-b=some!value; id=abc;",
            "v=STSv1; id=abc; id=second;",
        ] {
            assert_eq!(
                policy_id(&records(&[record])),
                Ok("abc".into()),
                "{record:?}"
            );
        }
        // Records that are not STSv1 are discarded before counting.
        assert_eq!(
            policy_id(&records(&["v=spf1 -all", "v=STSv1; id=1;", "hello"])),
            Ok("1".into())
        );
        assert_eq!(
            policy_id(&records(&[&format!("v=STSv1; id={};", "a".repeat(32))])),
            Ok("a".repeat(32))
        );
    }

    #[test]
    fn no_several_or_invalid_txt_records_mean_no_policy() {
        assert_eq!(policy_id(&[]), Err(TxtError::NoRecord));
        assert_eq!(
            policy_id(&records(&["v=spf1 -all", "v=STSv2; id=1;", "v=STSv1"])),
            Err(TxtError::NoRecord)
        );
        assert_eq!(
            policy_id(&records(&["v=STSv1; id=1;", "v=STSv1; id=2;"])),
            Err(TxtError::Several(2))
        );
        for bad in [
            "v=STSv1;",
            "v=STSv1; id=;",
            "v=STSv1; id=a-b;",
            "v=STSv1; id=a b;",
            &format!("v=STSv1; id={};", "a".repeat(33)),
            "v=STSv1; ; id=1;",
            "v=STSv1; id=1;;",
            "v=STSv1; noequals; id=1;",
            "v=STSv1; _bad=1; id=1;",
            "v=STSv1; ext=a=b; id=1;",
            "v=STSv1; ext=; id=1;",
            "v=STSv1; ext=caf\u{e9}; id=1;",
            "v=STSv1x; id=1;",
        ] {
            let got = policy_id(&records(&[bad]));
            assert!(
                matches!(got, Err(TxtError::Invalid(_)) | Err(TxtError::NoRecord)),
                "{bad:?} → {got:?}"
            );
        }
    }
}
