//! Recognizing a report: an RFC 3464 DSN (`multipart/report; report-type=delivery-status`),
//! an RFC 5965 ARF complaint (`report-type=feedback-report`), or a plain-text bounce of the
//! kind qmail, older Exchange and hand-rolled MTAs send (a status code such as `5.1.1` in the
//! text, the original headers quoted below it).

use mail_parser::{MessageParser, MimeHeaders, PartType};

use crate::smtp::EnhancedCode;
use crate::verp::{self, Token};

/// What a report says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Delivery failed for good (`Action: failed`, a 5.x.x status).
    Bounce,
    /// Delivery is delayed (`Action: delayed`, 4.x.x): not final, nothing to do.
    Delay,
    /// The recipient complained (ARF feedback report).
    Complaint,
}

/// A bounce or complaint, as read from one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// What happened.
    pub kind: Kind,
    /// `rfc3464`, `arf` or `plain-text`.
    pub format: &'static str,
    /// Final-Recipient, Original-Recipient (or the addresses a plain-text bounce names).
    pub recipients: Vec<String>,
    /// SMTP reply code from the Diagnostic-Code, if any.
    pub code: Option<u16>,
    /// The DSN's Status (RFC 3463).
    pub status: Option<EnhancedCode>,
    /// Diagnostic-Code text, feedback type, or the plain-text line with the status.
    pub diagnostic: String,
    /// The Message-ID of the message that bounced (without angle brackets).
    pub message_id: Option<String>,
    /// VERP tokens found anywhere in the report (not yet verified).
    pub tokens: Vec<Token>,
}

/// Reads a report from a raw message; `None` when it is not one.
pub fn parse(raw: &[u8]) -> Option<Report> {
    let msg = MessageParser::default().parse(raw)?;
    let mut report = Report {
        kind: Kind::Bounce,
        format: "plain-text",
        recipients: Vec::new(),
        code: None,
        status: None,
        diagnostic: String::new(),
        message_id: None,
        tokens: verp::find_tokens(&String::from_utf8_lossy(raw)),
    };
    let mut structured = false;
    let mut texts = String::new();
    for part in &msg.parts {
        let (ctype, sub) = part
            .content_type()
            .map(|c| {
                (
                    c.ctype().to_ascii_lowercase(),
                    c.subtype().unwrap_or("").to_ascii_lowercase(),
                )
            })
            .unwrap_or_default();
        let body = String::from_utf8_lossy(part.contents());
        match (ctype.as_str(), sub.as_str()) {
            ("message", "delivery-status" | "global-delivery-status") => {
                structured |= delivery_status(&body, &mut report);
            }
            ("message", "feedback-report") => {
                structured = true;
                feedback_report(&body, &mut report);
            }
            ("text", "rfc822-headers") | ("message", "rfc822-headers") => {
                report.message_id = report
                    .message_id
                    .take()
                    .or_else(|| header_in(&body, "message-id"));
            }
            _ => {
                if let PartType::Message(inner) = &part.body {
                    let id = inner.message_id().map(str::to_string);
                    report.message_id = report.message_id.take().or(id);
                } else if ctype == "text" || ctype.is_empty() {
                    texts.push_str(&body);
                    texts.push('\n');
                }
            }
        }
    }
    if !structured && !plain_text(&msg, &texts, &mut report) {
        return None;
    }
    if report.message_id.is_none() {
        report.message_id = header_in(&texts, "message-id");
    }
    Some(report)
}

/// Fields of a DSN's per-recipient block (RFC 3464 §2.3); true when one says failed/delayed.
fn delivery_status(body: &str, r: &mut Report) -> bool {
    let mut found = false;
    for block in body.replace("\r\n", "\n").split("\n\n") {
        let fields = fields(block);
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        let Some(action) = get("action") else {
            continue;
        };
        let kind = match action.trim().to_ascii_lowercase().as_str() {
            "failed" => Kind::Bounce,
            "delayed" => Kind::Delay,
            _ => continue,
        };
        // The first failed recipient wins; a delay only counts when nothing failed.
        if found && !(r.kind == Kind::Delay && kind == Kind::Bounce) {
            continue;
        }
        found = true;
        r.kind = kind;
        r.format = "rfc3464";
        r.recipients.clear();
        for n in [
            "final-recipient",
            "original-recipient",
            "x-actual-recipient",
        ] {
            if let Some(a) = get(n).and_then(typed_address)
                && !r.recipients.contains(&a)
            {
                r.recipients.push(a);
            }
        }
        let diag = get("diagnostic-code").map(|d| d.split_once(';').map_or(d, |(_, t)| t).trim());
        r.diagnostic = diag.unwrap_or_default().to_string();
        // Exim and others write a generic `Status: 5.0.0`; the remote reply is more precise.
        let status = get("status").and_then(|s| find_status(s).map(|(e, _)| e));
        let from_reply = find_status(&r.diagnostic).map(|(e, _)| e);
        r.status = match (status, from_reply) {
            (Some(s), Some(d)) if s.subject == 0 && s.detail == 0 && d.class == s.class => Some(d),
            (s, d) => s.or(d),
        };
        r.code = reply_code(&r.diagnostic);
    }
    found
}

/// An ARF report's fields (RFC 5965 §3.1).
fn feedback_report(body: &str, r: &mut Report) {
    let fields = fields(body);
    let get = |n: &str| {
        fields
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.trim().to_string())
    };
    r.kind = Kind::Complaint;
    r.format = "arf";
    r.diagnostic = format!(
        "complaint ({})",
        get("feedback-type").unwrap_or_else(|| "abuse".into())
    );
    if let Some(a) = get("original-rcpt-to").and_then(|a| clean_address(&a)) {
        r.recipients.push(a);
    }
}

/// A plain-text bounce: a sender or subject that says so, and a status code in the text.
fn plain_text(msg: &mail_parser::Message<'_>, text: &str, r: &mut Report) -> bool {
    let from = msg
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.address())
        .unwrap_or("");
    let subject = msg.subject().unwrap_or("").to_ascii_lowercase();
    let daemon = [
        "mailer-daemon",
        "postmaster",
        "mail delivery",
        "microsoftexchange",
    ]
    .iter()
    .any(|d| from.to_ascii_lowercase().contains(d));
    let says = [
        "undeliver",
        "failure",
        "delivery status",
        "returned mail",
        "not delivered",
        "failed",
    ]
    .iter()
    .any(|w| subject.contains(w));
    if !(daemon || says) {
        return false;
    }
    let Some((status, line)) = text
        .lines()
        .find_map(|l| find_status(l).map(|(e, _)| (e, l)))
    else {
        return false;
    };
    r.status = Some(status);
    r.kind = if status.class == 5 {
        Kind::Bounce
    } else {
        Kind::Delay
    };
    r.diagnostic = line.trim().to_string();
    r.code = reply_code(&r.diagnostic);
    r.recipients = addresses_in(text);
    true
}

/// `Name: value` fields with folded continuation lines, names lower-cased.
fn fields(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    out
}

/// A header's value in quoted header text (the original message's headers).
fn header_in(text: &str, name: &str) -> Option<String> {
    fields(text)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| {
            v.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .filter(|v| !v.is_empty())
}

/// `rfc822; user@example.com` → the address.
fn typed_address(v: &str) -> Option<String> {
    clean_address(v.split_once(';').map_or(v, |(_, a)| a))
}

fn clean_address(v: &str) -> Option<String> {
    let a = v
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    crate::suppress::normalize(a).ok()
}

/// The first `c.s.d` status code (class 2, 4 or 5) in `s` and where it starts.
pub fn find_status(s: &str) -> Option<(EnhancedCode, usize)> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if !matches!(c, b'2' | b'4' | b'5') || b.get(i + 1) != Some(&b'.') {
            continue;
        }
        if i > 0 && (b[i - 1].is_ascii_digit() || b[i - 1] == b'.') {
            continue;
        }
        let rest = &s[i..];
        let end = rest
            .find(|ch: char| !(ch.is_ascii_digit() || ch == '.'))
            .unwrap_or(rest.len());
        let token = rest[..end].trim_end_matches('.');
        let mut it = token.split('.');
        let parse = |p: Option<&str>, max: usize| {
            p.filter(|p| !p.is_empty() && p.len() <= max)
                .and_then(|p| p.parse::<u16>().ok())
        };
        if let (Some(class), Some(sub), Some(det), None) = (
            parse(it.next(), 1),
            parse(it.next(), 3),
            parse(it.next(), 3),
            it.next(),
        ) {
            return Some((EnhancedCode::new(class as u8, sub, det), i));
        }
    }
    None
}

/// A three-digit reply code starting the text (`550 5.1.1 …`, `550-5.1.1 …`).
fn reply_code(text: &str) -> Option<u16> {
    let t = text.trim_start();
    let code = t.get(..3)?;
    let next = t.as_bytes().get(3).copied();
    (code.bytes().all(|b| b.is_ascii_digit()) && matches!(next, None | Some(b' ' | b'-')))
        .then(|| code.parse().ok())
        .flatten()
        .filter(|c| (200..600).contains(c))
}

/// Addresses named in a plain-text bounce, skipping the quoted headers of the original
/// (From, Return-Path, Reply-To, Sender, Message-ID) and daemon addresses.
fn addresses_in(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let l = line.trim_start().to_ascii_lowercase();
        if [
            "from:",
            "return-path:",
            "reply-to:",
            "sender:",
            "message-id:",
            "references:",
            "in-reply-to:",
        ]
        .iter()
        .any(|h| l.starts_with(h))
        {
            continue;
        }
        for word in line.split(|c: char| c.is_whitespace() || "<>()[]\"',;:".contains(c)) {
            let w = word.trim_matches('.');
            if !w.contains('@') || w.to_ascii_lowercase().contains("mailer-daemon") {
                continue;
            }
            if let Ok(a) = crate::suppress::normalize(w)
                && !a.starts_with('@')
                && !out.contains(&a)
            {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_found_in_text() {
        let (e, _) =
            find_status("Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound'").unwrap();
        assert_eq!(e, EnhancedCode::new(5, 1, 1));
        assert_eq!(
            find_status("(#5.1.10)").unwrap().0,
            EnhancedCode::new(5, 1, 10)
        );
        assert!(find_status("version 1.5.1.1 and 3.2").is_none());
        assert_eq!(reply_code("550-5.1.1 no"), Some(550));
        assert_eq!(reply_code("5.1.1 no"), None);
    }
}
