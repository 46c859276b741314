//! What a reply is about. Every bounce and deferral gets a **category** (the results CSV's
//! `category` column, and what the suppression list trusts), and every failed reply a
//! **scope**: the smallest thing it is a verdict on — this recipient, this message, this
//! session, the sender's rate or reputation at the provider, the whole host, or our own
//! protocol. The delivery engine acts at that scope, never wider (a "too many connections"
//! is not an outage, a 503 about our pipelining is not a bounce).
//!
//! The rules, in order (the first that matches decides; docs/delivery.md lists them):
//! 1. The reply code says the *conversation* went wrong: 500–504 (syntax, unknown or
//!    unimplemented command, bad sequence) → `protocol`, scope [`Scope::Protocol`]. Judged by
//!    the reply code and the command it answers, not the enhanced code alone: Outlook answers
//!    an unknown mailbox at RCPT with `550 5.5.0`, and that is a real `bad-mailbox`.
//! 2. Known throttling texts (Gmail `4.7.28` "unusual rate", Microsoft `4.7.650`/`4.7.651`
//!    "temporarily rate limited", Yahoo `[TS01]`–`[TSS05]`, "too many connections", "too many
//!    messages", "try again later", …) → `throttled`, scope [`Scope::Sender`] (or
//!    [`Scope::Recipient`] for Gmail's `450 4.2.1` "receiving mail at a rate": one mailbox).
//! 3. The enhanced code (RFC 3463): `X.1.1`/`X.1.3`/`X.1.6` bad-mailbox, `X.1.2`/`X.1.10`
//!    bad-domain, `X.2.2` mailbox-full, `X.2.1` bad-mailbox (disabled) when permanent,
//!    `X.3.4`/`X.6.*` content-rejected, `X.7.1` blocked (content-rejected when the text
//!    speaks of spam, content or a virus), `X.7.5`/`X.7.10` tls, `X.7.23`–
//!    `X.7.27`, `X.7.30`, `X.7.515` auth-failed, `X.4.3`/`X.4.4` dns.
//! 4. Words of the text when there is no usable enhanced code ("user unknown", "quota",
//!    "spam", "SPF/DKIM/DMARC", "blocklist", …).
//! 5. Otherwise `other`; a 421 is about the session ([`Scope::Session`]: the server is
//!    closing it), any other reply about the recipient (at RCPT) or the message.

use crate::smtp::{EnhancedCode, Phase};

/// Why a row was not delivered, for people and for the suppression list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// The mailbox does not exist (or is disabled).
    BadMailbox,
    /// The domain does not exist or accepts no mail.
    BadDomain,
    /// Over quota.
    MailboxFull,
    /// The message was refused for what it contains (spam, size, format).
    ContentRejected,
    /// SPF, DKIM or DMARC failed, or the sender lacks them (`5.7.26`, `5.7.515`).
    AuthFailed,
    /// Refused for the sender's reputation or a blocklist.
    Blocked,
    /// The receiver limits our rate or connections.
    Throttled,
    /// TLS could not be negotiated or verified.
    Tls,
    /// Our conversation went wrong (500–504, out-of-step replies): never the recipient's fate.
    Protocol,
    /// DNS could not say where to deliver.
    Dns,
    /// The row itself is unusable (address, missing value, attachment).
    InvalidInput,
    /// Anything else (connection lost, server error, …).
    Other,
}

impl Category {
    /// Name in the results CSV.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::BadMailbox => "bad-mailbox",
            Category::BadDomain => "bad-domain",
            Category::MailboxFull => "mailbox-full",
            Category::ContentRejected => "content-rejected",
            Category::AuthFailed => "auth-failed",
            Category::Blocked => "blocked",
            Category::Throttled => "throttled",
            Category::Tls => "tls",
            Category::Protocol => "protocol",
            Category::Dns => "dns",
            Category::InvalidInput => "invalid-input",
            Category::Other => "other",
        }
    }

    /// Parses the CSV name back.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Every category, in documentation order.
    pub const ALL: [Category; 12] = [
        Category::BadMailbox,
        Category::BadDomain,
        Category::MailboxFull,
        Category::ContentRejected,
        Category::AuthFailed,
        Category::Blocked,
        Category::Throttled,
        Category::Tls,
        Category::Protocol,
        Category::Dns,
        Category::InvalidInput,
        Category::Other,
    ];

    /// A permanent failure of this category says the address itself is bad: the suppression
    /// list may remember it. Never for protocol, throttling, blocking or authentication.
    pub fn is_about_the_address(self) -> bool {
        matches!(self, Category::BadMailbox | Category::BadDomain)
    }
}

/// What a failed reply (or a failed attempt) is a verdict on: the engine acts at this scope
/// and no wider. One type for the crate: [`classify`] gives it for replies, and the delivery
/// verdict (`delivery::action`) adds [`Scope::Site`] for what no reply says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// This recipient (unknown mailbox, mailbox full, one mailbox receiving too fast).
    Recipient,
    /// This message (content, size, authentication).
    Message,
    /// This connection only (421, a lost or confused session, a session that takes no more
    /// messages).
    Session,
    /// The sender's rate or reputation at this provider: slow down or suspend the provider.
    Sender,
    /// Our own protocol: the session is suspect, retry with a more conservative dialect.
    Protocol,
    /// The site as a whole: no MX of it gave a session, or it asked us to go away (421).
    Site,
}

/// A reply's category and scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    /// Why, for the results and the suppression list.
    pub category: Category,
    /// What it is about, for the engine.
    pub scope: Scope,
}

/// Classifies a non-2yz reply to the command of `phase` (see the module doc for the rules).
pub fn classify(
    phase: Option<Phase>,
    code: u16,
    enhanced: Option<EnhancedCode>,
    text: &str,
) -> Classification {
    let lower = text.to_ascii_lowercase();
    let at_rcpt = phase == Some(Phase::RcptTo);
    let verdict = |category, scope| Classification { category, scope };
    // 1. The conversation went wrong. 550 5.5.0 at RCPT is Outlook's unknown mailbox.
    if (500..=504).contains(&code) {
        return verdict(Category::Protocol, Scope::Protocol);
    }
    // 1b. "Too many recipients" before any recipient was named: the session's limit of
    // messages (OpenSMTPD: `452 4.5.3 Too many recipients: Too many messages sent`).
    if phase == Some(Phase::MailFrom)
        && (400..500).contains(&code)
        && code != 421
        && (enhanced.is_some_and(|e| (e.subject, e.detail) == (5, 3))
            || lower.contains("too many messages"))
    {
        return verdict(Category::Throttled, Scope::Session);
    }
    // 2. Throttling, whatever the code.
    if let Some(scope) = throttling(code, enhanced, &lower) {
        return verdict(Category::Throttled, scope);
    }
    let default_scope = match code {
        421 => Scope::Session,
        _ if at_rcpt => Scope::Recipient,
        _ => Scope::Message,
    };
    // 3. The enhanced code, then 4. the words.
    let category = enhanced
        .and_then(|e| by_enhanced(e, code, &lower))
        .or_else(|| by_words(&lower, code, at_rcpt))
        .unwrap_or(Category::Other);
    let scope = match category {
        Category::BadMailbox | Category::BadDomain | Category::MailboxFull => Scope::Recipient,
        Category::Blocked => Scope::Sender,
        Category::Protocol => Scope::Protocol,
        _ => default_scope,
    };
    verdict(category, scope)
}

/// Texts and codes providers use to say "slow down" (REFERENCE: Google's SMTP error
/// reference, Microsoft and Yahoo postmaster pages). `None` when the reply is no throttle.
fn throttling(code: u16, enhanced: Option<EnhancedCode>, lower: &str) -> Option<Scope> {
    // Gmail: one mailbox receiving too fast (450 4.2.1) — about that recipient only; and
    // greylisting, which is about the (sender, recipient) pair: a plain retry.
    if lower.contains("receiving mail at a rate")
        || lower.contains("receivingrate")
        || lower.contains("greylist")
    {
        return Some(Scope::Recipient);
    }
    let code_says =
        enhanced.is_some_and(|e| matches!((e.subject, e.detail), (7, 28) | (7, 650) | (7, 651)));
    const WORDS: [&str; 12] = [
        "rate limit",
        "unusual rate",
        "too many connections",
        "too many concurrent",
        "maximum number of concurrent",
        "exceeded the maximum number of connections",
        "too many messages",
        "maximum number of messages per connection",
        "try again later",
        "temporarily deferred",
        "server busy",
        "too many",
    ];
    let yahoo = [
        "[ts01]", "[ts02]", "[ts03]", "[tss04]", "[tss05]", "[tss09]",
    ];
    let apple = ["[hcm1]", "[bs02]"];
    let words = WORDS.iter().any(|w| lower.contains(w))
        || yahoo.iter().chain(&apple).any(|w| lower.contains(w));
    // A 5yz "too many" is usually about recipients per message (RFC 5321 §4.5.3.1.10).
    let recipients = lower.contains("too many recipients");
    (code_says || (words && !recipients && code < 500)).then_some(Scope::Sender)
}

/// Words of a reputation or blocklist refusal.
const BLOCKLIST: [&str; 6] = [
    "blocklist",
    "blacklist",
    "block list",
    "spamhaus",
    "reputation",
    "blocked",
];

fn by_enhanced(e: EnhancedCode, code: u16, lower: &str) -> Option<Category> {
    let permanent = code >= 500;
    Some(match (e.subject, e.detail) {
        (1, 1 | 3 | 6) => Category::BadMailbox,
        (1, 2 | 10) => Category::BadDomain,
        (2, 2) => Category::MailboxFull,
        (2, 1) if permanent => Category::BadMailbox,
        (3, 4) | (6, _) => Category::ContentRejected,
        (7, 5 | 10) => Category::Tls,
        (7, 23..=27 | 30 | 515) => Category::AuthFailed,
        (7, 1)
            if !BLOCKLIST.iter().any(|w| lower.contains(w))
                && ["spam", "content", "virus"]
                    .iter()
                    .any(|w| lower.contains(w)) =>
        {
            Category::ContentRejected
        }
        (7, 1) => Category::Blocked,
        (4, 3 | 4) => Category::Dns,
        (5, 0) if code == 550 => Category::BadMailbox,
        _ => return None,
    })
}

fn by_words(lower: &str, code: u16, at_rcpt: bool) -> Option<Category> {
    let any = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    Some(
        if any(&[
            "user unknown",
            "unknown user",
            "no such user",
            "does not exist",
            "mailbox unavailable",
            "mailbox not found",
            "recipient rejected",
            "invalid recipient",
            "address rejected",
        ]) {
            Category::BadMailbox
        } else if any(&["quota", "mailbox full", "mailbox is full"]) {
            Category::MailboxFull
        } else if any(&["spf", "dkim", "dmarc", "authenticat", "unauthenticated"]) {
            Category::AuthFailed
        } else if any(&[
            "blocklist",
            "blacklist",
            "block list",
            "spamhaus",
            "reputation",
        ]) {
            Category::Blocked
        } else if any(&["spam", "content", "virus", "message size"]) {
            Category::ContentRejected
        } else if any(&["tls", "starttls", "encryption"]) {
            Category::Tls
        } else if code == 550 && at_rcpt {
            // A bare 550 at RCPT is the classic "no such mailbox".
            Category::BadMailbox
        } else {
            return None;
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::parse_reply;

    /// (phase, reply as the server sent it, category, scope) — real texts where we have them.
    const TABLE: &[(Phase, &str, Category, Scope)] = &[
        (
            Phase::RcptTo,
            "550 5.1.1 no such user here",
            Category::BadMailbox,
            Scope::Recipient,
        ),
        (
            Phase::RcptTo,
            "550 5.5.0 Requested action not taken: mailbox unavailable",
            Category::BadMailbox,
            Scope::Recipient,
        ),
        (
            Phase::RcptTo,
            "550 no such user",
            Category::BadMailbox,
            Scope::Recipient,
        ),
        (
            Phase::RcptTo,
            "550 5.1.2 bad destination system",
            Category::BadDomain,
            Scope::Recipient,
        ),
        (
            Phase::RcptTo,
            "552 5.2.2 mailbox full",
            Category::MailboxFull,
            Scope::Recipient,
        ),
        (
            Phase::MailFrom,
            "503 5.5.1 Bad sequence of commands - pipelined after end of DATA",
            Category::Protocol,
            Scope::Protocol,
        ),
        (
            Phase::RcptTo,
            "500 5.5.2 Syntax error",
            Category::Protocol,
            Scope::Protocol,
        ),
        (
            Phase::Data,
            "502 5.5.1 Command not implemented",
            Category::Protocol,
            Scope::Protocol,
        ),
        (
            Phase::RcptTo,
            "504 5.5.4 bad parameter",
            Category::Protocol,
            Scope::Protocol,
        ),
        (
            Phase::DataEnd,
            "421-4.7.28 Gmail has detected an unusual rate of unsolicited mail\r\n421 4.7.28 originating from your IP. To protect our users, mail has been temporarily rate limited.",
            Category::Throttled,
            Scope::Sender,
        ),
        (
            Phase::RcptTo,
            "450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.",
            Category::Throttled,
            Scope::Recipient,
        ),
        (
            Phase::RcptTo,
            "451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.",
            Category::Throttled,
            Scope::Sender,
        ),
        (
            Phase::Greeting,
            "421 4.3.2 The maximum number of concurrent server connections has exceeded a limit, closing transmission channel",
            Category::Throttled,
            Scope::Sender,
        ),
        (
            Phase::MailFrom,
            "421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints",
            Category::Throttled,
            Scope::Sender,
        ),
        (
            Phase::MailFrom,
            "421 4.7.0 Try again later, closing connection.",
            Category::Throttled,
            Scope::Sender,
        ),
        (
            Phase::DataEnd,
            "550 5.7.26 Unauthenticated email from acme.example is not accepted due to domain's DMARC policy.",
            Category::AuthFailed,
            Scope::Message,
        ),
        (
            Phase::DataEnd,
            "550 5.7.515 Access denied, sending domain does not meet the required authentication level.",
            Category::AuthFailed,
            Scope::Message,
        ),
        (
            Phase::DataEnd,
            "554 5.7.1 message rejected as spam",
            Category::ContentRejected,
            Scope::Message,
        ),
        (
            Phase::RcptTo,
            "554 5.7.1 Service unavailable; client host blocked using Spamhaus",
            Category::Blocked,
            Scope::Sender,
        ),
        (
            Phase::DataEnd,
            "552 5.3.4 message too big",
            Category::ContentRejected,
            Scope::Message,
        ),
        (
            Phase::RcptTo,
            "452 4.5.3 too many recipients",
            Category::Other,
            Scope::Recipient,
        ),
        (
            Phase::MailFrom,
            "452 4.5.3 Too many recipients: Too many messages sent",
            Category::Throttled,
            Scope::Session,
        ),
        (
            Phase::RcptTo,
            "451 4.7.1 greylisted, try again later",
            Category::Throttled,
            Scope::Recipient,
        ),
        (
            Phase::DataEnd,
            "421 4.3.2 closing",
            Category::Other,
            Scope::Session,
        ),
        (
            Phase::RcptTo,
            "450 4.2.0 mailbox temporarily unavailable",
            Category::Other,
            Scope::Recipient,
        ),
    ];

    #[test]
    fn replies_are_judged_by_what_they_are_about() {
        for (phase, raw, category, scope) in TABLE {
            let wire = format!("{raw}\r\n");
            let (reply, _) = parse_reply(wire.as_bytes())
                .unwrap_or_else(|e| panic!("{raw}: {e}"))
                .unwrap_or_else(|| panic!("{raw}: incomplete"));
            let got = classify(Some(*phase), reply.code, reply.enhanced, &reply.text());
            assert_eq!(
                got,
                Classification {
                    category: *category,
                    scope: *scope
                },
                "{phase:?} {raw}"
            );
        }
    }

    #[test]
    fn names_round_trip_and_only_address_categories_are_suppressible() {
        for c in Category::ALL {
            assert_eq!(Category::parse(c.as_str()), Some(c));
        }
        let suppressible: Vec<_> = Category::ALL
            .into_iter()
            .filter(|c| c.is_about_the_address())
            .collect();
        assert_eq!(suppressible, [Category::BadMailbox, Category::BadDomain]);
    }
}
