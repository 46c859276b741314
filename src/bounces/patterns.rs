//! The bounce formats of the MTAs and providers in one table: how each family's notice is
//! recognised, where its list of failed recipients starts, where the returned message starts,
//! and what says "delayed, still trying" rather than "failed". Then the phrases that say why a
//! delivery failed when no status code does.
//!
//! Every entry comes from the family's documented or widely reproduced notice text (the texts
//! in `tests/fixtures/bounces/corpus/` are written from them). All matching is on lower-cased
//! text. The parser ([`super::parse`]) uses the first family whose marker matches; families
//! with more specific markers come first (Yahoo's notice is qmail's, mail.ru's is Exim's).

use crate::smtp::EnhancedCode;

/// Where a marker is looked for.
#[derive(Clone, Copy, Debug)]
pub enum Marker {
    /// In the notice's text (the report part, before the returned message).
    Body(&'static str),
    /// In the Subject header.
    Subject(&'static str),
    /// In the From header (address or display name).
    From(&'static str),
}

/// One family of non-standard failure notices.
#[derive(Debug)]
pub struct Family {
    /// Name in the output (`format`).
    pub name: &'static str,
    /// Any of these says the message is this family's notice.
    pub markers: &'static [Marker],
    /// The failed recipients are listed after the first line holding one of these (the text
    /// before is a preamble that may name other addresses); empty: from the top.
    pub start: &'static [&'static str],
    /// Any of these in the notice says it is a delay warning, not a final failure.
    pub delay: &'static [&'static str],
}

use Marker::{Body, From, Subject};

/// The families, most specific first.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "google-groups",
        markers: &[Body("the group you tried to contact")],
        start: &[],
        delay: &[],
    },
    Family {
        name: "gmail",
        markers: &[
            Body("delivery to the following recipient failed permanently"),
            Body("delivery to the following recipients failed permanently"),
            Body("technical details of permanent failure"),
            Body("delivery to the following recipient has been delayed"),
            Body("your message wasn't delivered to"),
            Body("** address not found **"),
            Body("** message blocked **"),
            Body("** message not delivered **"),
            Body("** delivery incomplete **"),
        ],
        start: &[],
        delay: &[
            "has been delayed",
            "delivery incomplete",
            "will retry",
            "technical details of temporary failure",
        ],
    },
    Family {
        name: "yahoo",
        markers: &[
            Body("sorry, we were unable to deliver your message to the following address"),
            Body("message from yahoo.com"),
            From("yahoo"),
        ],
        start: &["unable to deliver", "following address"],
        delay: &[
            "will keep trying",
            "we'll keep trying",
            "will continue to attempt",
        ],
    },
    Family {
        name: "mail.ru",
        markers: &[From("mail.ru"), Body("сервером mail.ru")],
        start: &["address(es) failed", "following address"],
        delay: &[
            "has not yet been delivered",
            "delivery attempts will continue",
        ],
    },
    Family {
        name: "qmail",
        markers: &[
            Body("this is the qmail-send program"),
            Body("qmail-send program at"),
            Body("i wasn't able to deliver your message to the following addresses"),
        ],
        start: &["following addresses"],
        delay: &["temporary error", "i'm still trying"],
    },
    Family {
        name: "opensmtpd",
        markers: &[
            Body("this is the mailer-daemon, please do not reply to this email"),
            Body("an error has occurred while attempting to deliver a message for"),
        ],
        start: &["following list of recipients"],
        delay: &[
            "delivery attempts will continue",
            "temporarily failed",
            "has been delayed",
        ],
    },
    Family {
        name: "exim",
        markers: &[
            Body("this message was created automatically by mail delivery software"),
            Body("the following address(es) failed"),
            Body("could not be delivered to one or more of its"),
            Body("has not yet been delivered to one or more of its"),
        ],
        start: &[
            "address(es) failed",
            "has not yet been delivered is",
            "have not yet been delivered are",
        ],
        delay: &[
            "has not yet been delivered",
            "delivery attempts will continue",
            "this warning may be repeated",
        ],
    },
    Family {
        name: "postfix",
        markers: &[
            Body("this is the mail system at host"),
            Body("this is the postfix program at host"),
            Body("i'm sorry to have to inform you that your message could not"),
        ],
        start: &["could not be delivered", "could not", "is delayed"],
        delay: &[
            "this is a warning only",
            "delayed mail",
            "message could not be delivered for",
            "is still being retried",
            "will keep trying",
        ],
    },
    Family {
        name: "sendmail",
        markers: &[
            Body("----- the following addresses had permanent fatal errors -----"),
            Body("----- transcript of session follows -----"),
            Body("----- the following addresses had transient non-fatal errors -----"),
            Subject("returned mail:"),
            Subject("warning: could not send message for past"),
        ],
        start: &[
            "had permanent fatal errors",
            "transcript of session follows",
        ],
        delay: &[
            "this is a warning message only",
            "will keep trying until message is",
            "transient non-fatal errors",
            "warning: could not send message",
            "message could not be delivered for",
        ],
    },
    Family {
        name: "exchange2007",
        markers: &[
            Body("delivery has failed to these recipients or groups"),
            Body("delivery is delayed to these recipients or groups"),
            Body("diagnostic information for administrators"),
            Body("couldn't be delivered"),
            Body("remote server returned '"),
        ],
        start: &[
            "delivery has failed to these recipients",
            "delivery is delayed to these recipients",
            "couldn't be delivered",
        ],
        delay: &[
            "delivery is delayed",
            "delay notification",
            "will continue to try",
        ],
    },
    Family {
        name: "exchange2003",
        markers: &[
            Body("your message did not reach some or all of the intended recipients"),
            Body("the following recipient(s) cannot be reached"),
            Body("the following recipient(s) could not be reached"),
        ],
        start: &["cannot be reached", "could not be reached"],
        delay: &[
            "could not be delivered in the time",
            "delivery has been delayed",
        ],
    },
    Family {
        name: "lotus-notes",
        markers: &[
            Body("was not delivered to:"),
            Subject("delivery failure report"),
            Subject("delivery_failure"),
            Body("not listed in domino directory"),
        ],
        start: &["was not delivered to"],
        delay: &[],
    },
    Family {
        name: "amazon-ses",
        markers: &[
            From("amazonses.com"),
            Body("an error occurred while trying to deliver the mail to the following recipients"),
        ],
        start: &["following recipients"],
        delay: &[],
    },
    Family {
        name: "kddi",
        markers: &[
            Body("could not be delivered to: <"),
            Body("your mail sent on"),
        ],
        start: &["could not be delivered to"],
        delay: &[],
    },
    Family {
        name: "imail",
        markers: &[Body("body of message generated response")],
        start: &["generated response"],
        delay: &[],
    },
    Family {
        name: "groupwise",
        markers: &[Body(
            "the message that you sent was undeliverable to the following",
        )],
        start: &["undeliverable to the following"],
        delay: &[],
    },
    Family {
        name: "messaging-server",
        markers: &[
            Body("this report relates to a message you sent with the following header fields"),
            Body("your message cannot be delivered to the following recipients"),
        ],
        start: &["cannot be delivered to the following recipients"],
        delay: &["delivery is delayed", "will continue trying"],
    },
    Family {
        name: "courier",
        markers: &[Body("running the courier mail server")],
        start: &["was not delivered", "could not be delivered"],
        delay: &["has not been delivered yet", "will keep trying"],
    },
    Family {
        name: "mcafee",
        markers: &[Body(
            "--- the following addresses had delivery problems ---",
        )],
        start: &["had delivery problems"],
        delay: &[],
    },
    Family {
        name: "generic",
        markers: &[
            Body("could not be delivered to the following recipient"),
            Body("delivery to the following recipients failed"),
            Body("delivery to the following recipient failed"),
            Body("was undeliverable"),
            Body("undeliverable to the following"),
            Body("message could not be delivered to"),
            Body("unable to deliver your message"),
            Body("permanent error"),
            Body("delivery failed"),
            Subject("undeliverable"),
            Subject("undelivered mail"),
            Subject("delivery status notification (failure)"),
            Subject("delivery failure"),
            Subject("mail delivery failed"),
            Subject("failure notice"),
            Subject("returned mail"),
            Subject("non remis"),
            Subject("unzustellbar"),
            Subject("nicht zustellbar"),
        ],
        start: &[],
        delay: &[
            "will keep trying",
            "still trying",
            "delivery is delayed",
            "has been delayed",
            "delayed mail",
            "warning only",
            "not yet been delivered",
        ],
    },
];

/// Lines that start the returned (original) message inside a plain-text notice: nothing after
/// one is about the failure, and the addresses there are the original's headers.
pub const RETURNED_MESSAGE: &[&str] = &[
    "below this line is a copy of the message",
    "this is a copy of the message",
    "copy of the message's headers",
    "----- original message follows -----",
    "----- unsent message follows -----",
    "----- message header follows -----",
    "original message headers:",
    "original message follows",
    "below is a copy of the original message",
    "the header of the original message is following",
    "possibly truncated original message follows",
    "------- returned message --------",
    "--- original message ---",
    "----- original message -----",
    "this is a copy of the headers that were received",
    "--- the header of the original message",
    "original message:",
    "returned message:",
];

/// What a phrase of a failure text means when no (or only a generic) status code says it: the
/// status it stands for (RFC 3463), which then decides the category like a server's code
/// would. First match wins, so more specific phrases come first.
pub const REASONS: &[(&str, EnhancedCode)] = &[
    // The address moved (5.1.6).
    ("has moved", code(5, 1, 6)),
    ("mailbox has moved", code(5, 1, 6)),
    ("no longer with", code(5, 1, 6)),
    // Over quota (5.2.2): before "mailbox unavailable", which some notices append.
    ("mailbox is full", code(5, 2, 2)),
    ("mailbox full", code(5, 2, 2)),
    ("mailbox size limit exceeded", code(5, 2, 2)),
    ("quota exceeded", code(5, 2, 2)),
    ("over quota", code(5, 2, 2)),
    ("exceeded storage allocation", code(5, 2, 2)),
    ("exceeds the quota", code(5, 2, 2)),
    ("their mailbox is full", code(5, 2, 2)),
    ("insufficient system storage", code(4, 3, 1)),
    // Disabled or suspended accounts (5.2.1): not suppressed, they may come back.
    ("account has been disabled", code(5, 2, 1)),
    ("account is disabled", code(5, 2, 1)),
    ("mailbox disabled", code(5, 2, 1)),
    ("account has been suspended", code(5, 2, 1)),
    ("account is inactive", code(5, 2, 1)),
    // Spam, content, size (5.7.1 content, 5.3.4).
    ("message too large", code(5, 3, 4)),
    ("message size exceeds", code(5, 3, 4)),
    ("message is too big", code(5, 3, 4)),
    ("virus", code(5, 7, 1)),
    ("spam", code(5, 7, 1)),
    // Authentication (5.7.26).
    ("dmarc", code(5, 7, 26)),
    ("spf", code(5, 7, 26)),
    ("dkim", code(5, 7, 26)),
    // Blocked for reputation or policy (5.7.1).
    ("blacklist", code(5, 7, 1)),
    ("blocklist", code(5, 7, 1)),
    ("spamhaus", code(5, 7, 1)),
    ("reputation", code(5, 7, 1)),
    ("relay access denied", code(5, 7, 1)),
    ("relaying denied", code(5, 7, 1)),
    ("not permitted to relay", code(5, 7, 1)),
    ("you may not have permission", code(5, 7, 1)),
    ("blocked", code(5, 7, 1)),
    ("access denied", code(5, 7, 1)),
    // No such domain (5.1.2).
    ("host unknown", code(5, 1, 2)),
    ("host not found", code(5, 1, 2)),
    ("unknown host", code(5, 1, 2)),
    ("domain not found", code(5, 1, 2)),
    ("no such domain", code(5, 1, 2)),
    ("domain does not exist", code(5, 1, 2)),
    ("remote domain doesnt exist", code(5, 1, 2)),
    ("remote domain doesn't exist", code(5, 1, 2)),
    ("unrouteable address", code(5, 1, 2)),
    ("unroutable address", code(5, 1, 2)),
    ("name service error", code(5, 1, 2)),
    ("domain name not found", code(5, 1, 2)),
    ("no mx", code(5, 1, 2)),
    (
        "all relevant mx records point to non-existent hosts",
        code(5, 1, 2),
    ),
    ("dns error", code(5, 1, 2)),
    // No such mailbox (5.1.1).
    ("user unknown", code(5, 1, 1)),
    ("unknown user", code(5, 1, 1)),
    ("no such user", code(5, 1, 1)),
    ("no such mailbox", code(5, 1, 1)),
    ("no such recipient", code(5, 1, 1)),
    ("no mailbox here by that name", code(5, 1, 1)),
    ("mailbox not found", code(5, 1, 1)),
    ("mailbox unavailable", code(5, 1, 1)),
    ("mailbox does not exist", code(5, 1, 1)),
    ("recipient not found", code(5, 1, 1)),
    ("recipnotfound", code(5, 1, 1)),
    ("recipientnotfound", code(5, 1, 1)),
    ("unknown recipient", code(5, 1, 1)),
    ("invalid recipient", code(5, 1, 1)),
    ("invalid mailbox", code(5, 1, 1)),
    ("recipient address rejected", code(5, 1, 1)),
    ("user not found", code(5, 1, 1)),
    ("address not found", code(5, 1, 1)),
    ("address couldn't be found", code(5, 1, 1)),
    (
        "account that you tried to reach does not exist",
        code(5, 1, 1),
    ),
    ("doesn't have a", code(5, 1, 1)),
    ("not listed in domino directory", code(5, 1, 1)),
    ("not listed in public name & address book", code(5, 1, 1)),
    ("e-mail account does not exist", code(5, 1, 1)),
    ("email account does not exist", code(5, 1, 1)),
    ("wasn't found at", code(5, 1, 1)),
    ("does not exist", code(5, 1, 1)),
    ("doesn't exist", code(5, 1, 1)),
    ("bad destination mailbox", code(5, 1, 1)),
    // Transient conditions that end a delivery attempt (4.4.x).
    ("retry timeout exceeded", code(4, 4, 7)),
    ("message expired", code(4, 4, 7)),
    ("too long in the queue", code(4, 4, 7)),
    ("connection timed out", code(4, 4, 1)),
    ("connection refused", code(4, 4, 1)),
    ("timed out", code(4, 4, 1)),
];

const fn code(class: u8, subject: u16, detail: u16) -> EnhancedCode {
    EnhancedCode {
        class,
        subject,
        detail,
    }
}

/// The status a failure text stands for ([`REASONS`]), if any phrase matches.
pub fn reason_in(lower: &str) -> Option<EnhancedCode> {
    REASONS
        .iter()
        .find(|(p, _)| lower.contains(p))
        .map(|&(_, c)| c)
}

/// Headers and subjects that mark an automatic reply (RFC 3834 and the non-standard ones
/// vacation programs and Exchange write). An auto-reply is never a bounce.
pub const AUTOREPLY_SUBJECTS: &[&str] = &[
    "out of office",
    "out of the office",
    "automatic reply",
    "auto reply",
    "autoreply",
    "auto-reply",
    "auto:",
    "vacation",
    "away from my mail",
    "abwesenheit",
    "absence",
    "réponse automatique",
    "respuesta automática",
    "risposta automatica",
    "automatisch antwoord",
    "on leave",
];

/// Words in a sender address that mean a mail system, not a person.
pub const DAEMONS: &[&str] = &[
    "mailer-daemon",
    "postmaster",
    "mail delivery",
    "mail system",
    "microsoftexchange",
    "maildelivery",
    "bounce",
    "mdaemon",
];
