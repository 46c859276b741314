//! What happened to one recipient: the status, the step that decided it, the exact SMTP
//! truth (code, enhanced code, text, MX host and IP) and when it was decided, for the results
//! CSV, the journal and the event stream.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::smtp::{EnhancedCode, Phase, Reply};
use crate::tls_policy::PolicyKind;

/// Final status of a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The MX accepted the message (2yz after DATA).
    Delivered,
    /// Permanently refused (5yz, null MX, NXDOMAIN, …): do not retry.
    Bounced,
    /// Not delivered yet for a transient reason; a later run retries it.
    Deferred,
    /// The row cannot be sent (bad address, missing value, …).
    Invalid,
    /// Same address as an earlier row; sent once.
    Duplicate,
    /// On the suppression list (hard bounce, unsubscribe, complaint, manual): not sent.
    Suppressed,
}

impl Status {
    /// Name in the results CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Bounced => "bounced",
            Status::Deferred => "deferred",
            Status::Invalid => "invalid",
            Status::Duplicate => "duplicate",
            Status::Suppressed => "suppressed",
        }
    }

    /// Parses the CSV name back.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "delivered" => Status::Delivered,
            "bounced" => Status::Bounced,
            "deferred" => Status::Deferred,
            "invalid" => Status::Invalid,
            "duplicate" => Status::Duplicate,
            "suppressed" => Status::Suppressed,
            _ => return None,
        })
    }

    /// All statuses, in report order.
    pub const ALL: [Status; 6] = [
        Status::Delivered,
        Status::Bounced,
        Status::Deferred,
        Status::Invalid,
        Status::Duplicate,
        Status::Suppressed,
    ];
}

/// The step that produced the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Reading the CSV row / checking the address.
    Input,
    /// Rendering or building the message.
    Render,
    /// MX / address lookup.
    Dns,
    /// A step of the SMTP dialogue.
    Smtp(Phase),
    /// A local decision before sending (size limit, SMTPUTF8 not offered).
    Local,
    /// The run's deadline ended the retries.
    Deadline,
    /// Not attempted: beyond `--limit` (a later run sends it).
    Limit,
    /// Not attempted: beyond today's cap for the provider (`--daily-cap`, warm-up); the next
    /// day's run sends it.
    Cap,
    /// Not attempted or not finished: the run was interrupted (SIGINT/SIGTERM).
    Interrupted,
    /// Not attempted: the address is on the suppression list.
    Suppressed,
    /// Not attempted: the receiver is suspended (from every source address) past the run's
    /// deadline, by a backoff rule an earlier run (or this one) applied.
    Suspended,
    /// A bounce that arrived after the MX had accepted the message (`mailmerge bounces`).
    LateBounce,
}

impl Step {
    /// Name in the results CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Input => "input",
            Step::Render => "render",
            Step::Dns => "dns",
            Step::Smtp(p) => p.as_str(),
            Step::Local => "local",
            Step::Deadline => "deadline",
            Step::Limit => "limit",
            Step::Cap => "cap",
            Step::Interrupted => "interrupted",
            Step::Suppressed => "suppressed",
            Step::Suspended => "suspended",
            Step::LateBounce => "late-bounce",
        }
    }

    /// Parses the CSV name back (used when a journal is replayed).
    pub fn parse(s: &str) -> Option<Self> {
        const PHASES: [Phase; 10] = [
            Phase::Connect,
            Phase::Greeting,
            Phase::Ehlo,
            Phase::StartTls,
            Phase::MailFrom,
            Phase::RcptTo,
            Phase::Data,
            Phase::DataEnd,
            Phase::Rset,
            Phase::Quit,
        ];
        Some(match s {
            "input" => Step::Input,
            "render" => Step::Render,
            "dns" => Step::Dns,
            "local" => Step::Local,
            "deadline" => Step::Deadline,
            "limit" => Step::Limit,
            "cap" => Step::Cap,
            "interrupted" => Step::Interrupted,
            "suppressed" => Step::Suppressed,
            "suspended" => Step::Suspended,
            "late-bounce" => Step::LateBounce,
            _ => Step::Smtp(PHASES.into_iter().find(|p| p.as_str() == s)?),
        })
    }
}

/// The result for one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Final status.
    pub status: Status,
    /// Which step decided it.
    pub step: Step,
    /// SMTP reply code (received, or generated locally for DNS outcomes).
    pub code: Option<u16>,
    /// RFC 3463 enhanced status code.
    pub enhanced: Option<EnhancedCode>,
    /// Server text or our reason.
    pub response: String,
    /// MX host that answered.
    pub mx_host: Option<String>,
    /// Its address.
    pub mx_ip: Option<IpAddr>,
    /// The local address the session left from (`--source-ip`), `None` when the OS chose.
    pub source_ip: Option<IpAddr>,
    /// Delivery attempts made (0 when nothing was tried).
    pub attempts: u32,
    /// Message-ID of the message sent.
    pub message_id: Option<String>,
    /// TLS version used, when the session was encrypted.
    pub tls: Option<String>,
    /// The TLS policy the last attempt ran under.
    pub tls_policy: PolicyKind,
    /// Under an MTA-STS `testing` policy: what `enforce` would have refused.
    pub tls_note: Option<String>,
    /// When the outcome was decided (the `finished_at` column), to the millisecond: set when
    /// the outcome is made, and again by the engine when a row becomes final. `None` only for
    /// outcomes read back from a journal written before this field existed.
    pub finished_at: Option<SystemTime>,
}

impl Outcome {
    /// An outcome without SMTP details (input and render problems).
    pub fn local(status: Status, step: Step, response: impl Into<String>) -> Self {
        Self {
            status,
            step,
            code: None,
            enhanced: None,
            response: response.into(),
            mx_host: None,
            mx_ip: None,
            source_ip: None,
            attempts: 0,
            message_id: None,
            tls: None,
            tls_policy: PolicyKind::None,
            tls_note: None,
            finished_at: Some(now()),
        }
    }

    /// An outcome from a reply (received or generated).
    pub fn from_reply(status: Status, step: Step, reply: &Reply) -> Self {
        Self {
            code: Some(reply.code),
            enhanced: reply.enhanced,
            response: reply.text(),
            ..Self::local(status, step, String::new())
        }
    }
}

/// The current time, cut to whole milliseconds: what `finished_at` holds, so that an outcome
/// written to the journal (in RFC 3339 with milliseconds) reads back equal.
pub fn now() -> SystemTime {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UNIX_EPOCH + Duration::from_millis(since.as_millis() as u64)
}

/// `2026-03-01T09:30:00.125Z`: RFC 3339, UTC, milliseconds (the `finished_at` format).
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses an RFC 3339 UTC time as [`format_time`] writes it (any number of fraction digits).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_at_round_trips_through_its_text_form() {
        let t = UNIX_EPOCH + Duration::from_millis(1_772_357_400_125);
        assert_eq!(format_time(t), "2026-03-01T09:30:00.125Z");
        assert_eq!(parse_time("2026-03-01T09:30:00.125Z"), Some(t));
        assert_eq!(
            parse_time("2026-03-01T09:30:00Z"),
            Some(t - Duration::from_millis(125))
        );
        assert_eq!(parse_time("yesterday"), None);
        let n = now();
        assert_eq!(parse_time(&format_time(n)), Some(n), "whole milliseconds");
    }
}
