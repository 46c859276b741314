//! Reading a report, per recipient. In order, the first that applies decides:
//!
//! 1. an ARF complaint (RFC 5965 / RFC 3798 `report-type=feedback-report`, or its fields in a
//!    text part): one complaint per `Original-Rcpt-To`, else per `Removal-Recipient`, else the
//!    returned message's `X-HmXmrOriginalRecipient` or `To:` (redacted ones name nobody);
//! 2. an RFC 3464 DSN (`message/delivery-status` or `message/global-delivery-status`): every
//!    per-recipient block with `Action: failed` or `delayed` (or, without `Action`, a 5.x.x
//!    or 4.x.x `Status`);
//! 3. an Amazon SES notification in JSON (`notificationType` Bounce or Complaint);
//! 4. the plain-text notice of a known MTA or provider ([`super::patterns::FAMILIES`]): the
//!    failed addresses listed after the family's start line, each with the text that follows
//!    it up to the next address, before the returned message;
//! 5. an automatic reply (RFC 3834 `Auto-Submitted: auto-replied`, `X-Autoreply`,
//!    `Precedence: auto_reply`, vacation subjects): never a bounce;
//! 6. anything else is `other`.
//!
//! Each failed recipient gets its status (RFC 3463), reply code, diagnostic text, whether the
//! failure is final, and a category (the results CSV's, [`crate::classify`]): from the status
//! the report gives, refined when it is generic (`5.0.0`) by a more precise code in the
//! diagnostic or by a phrase of [`super::patterns::REASONS`]. It is **hard** (the address is
//! suppressed) when the failure is final, its category is about the address (`bad-mailbox`,
//! `bad-domain`) and its status is a `5.1.x` addressing status other than 5.1.7/5.1.8
//! ([`crate::suppress::is_recipient_code`]). A complaint always suppresses.
//!
//! The original message's Message-ID comes from the returned `message/rfc822` part, a
//! `text/rfc822-headers` part, or the headers quoted inline.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

use super::patterns::{self, Family, Marker};
use crate::classify::{self, Category};
use crate::smtp::EnhancedCode;
use crate::suppress;
use crate::verp::{self, Token};

/// What a message (or one recipient of it) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A final failure in an RFC 3464 DSN.
    Dsn,
    /// A final failure in a non-standard notice.
    Bounce,
    /// Delivery is delayed and still being tried: not final, nothing to do.
    Delay,
    /// A feedback-loop complaint (ARF, or a provider's JSON).
    Complaint,
    /// An automatic reply (vacation, out of office): never a bounce.
    AutoReply,
    /// Not a report.
    Other,
}

impl Kind {
    /// The name in the output.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dsn => "dsn",
            Kind::Bounce => "bounce",
            Kind::Delay => "delay",
            Kind::Complaint => "complaint",
            Kind::AutoReply => "autoreply",
            Kind::Other => "other",
        }
    }

    /// A final failure (DSN or notice).
    pub fn is_failure(self) -> bool {
        matches!(self, Kind::Dsn | Kind::Bounce)
    }
}

/// One recipient a report is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recipient {
    /// The address, normalized ([`suppress::normalize`]); `None` when the report names none.
    pub address: Option<String>,
    /// Other addresses the report gives for this recipient (a DSN's Final-Recipient when it
    /// differs from the Original-Recipient): a row matches any of them.
    pub aliases: Vec<String>,
    /// Failure, delay or complaint.
    pub kind: Kind,
    /// The status code (RFC 3463) the report gives (a generic `x.0.0` refined by the
    /// diagnostic's own code), if any.
    pub status: Option<EnhancedCode>,
    /// The SMTP reply code in the diagnostic, if any.
    pub code: Option<u16>,
    /// The diagnostic text (remote reply, notice line, feedback type).
    pub diagnostic: String,
    /// Why it failed (failures only).
    pub category: Option<Category>,
    /// The address would be suppressed: a final failure about the address, or a complaint.
    pub hard: bool,
}

/// What one message says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The message as a whole: a failure when any recipient failed.
    pub kind: Kind,
    /// `rfc3464`, `arf`, `amazon-ses-json`, a family of [`patterns::FAMILIES`], or `none`.
    pub format: &'static str,
    /// The recipients it is about (empty: names none).
    pub recipients: Vec<Recipient>,
    /// The Message-ID of the message it is about (without angle brackets).
    pub message_id: Option<String>,
    /// VERP tokens found anywhere in it (not yet verified).
    pub tokens: Vec<Token>,
}

/// The parts of a message that a report is read from.
#[derive(Default)]
struct Parts {
    subject: String,
    from: String,
    /// Addresses of the notice's own headers and of the original's sender: never a failed
    /// recipient.
    own: Vec<String>,
    /// The notice's text parts (HTML turned into text), in order.
    text: String,
    delivery_status: Vec<String>,
    feedback: Option<String>,
    failed_header: Vec<String>,
    /// The returned message's Message-ID and recipients (To, X-HmXmrOriginalRecipient).
    returned_id: Option<String>,
    returned_to: Vec<String>,
    /// RFC 3834 and vendor auto-reply headers say so.
    auto_header: bool,
}

/// Reads a report from a raw message (always: a message that is no report is `other`).
pub fn parse(raw: &[u8]) -> Report {
    let tokens = verp::find_tokens(&String::from_utf8_lossy(raw));
    let mut report = Report {
        kind: Kind::Other,
        format: "none",
        recipients: Vec::new(),
        message_id: None,
        tokens,
    };
    let Some(msg) = MessageParser::default().parse(raw) else {
        return report;
    };
    let parts = collect(&msg);
    let (kind, format, recipients) = read(&parts);
    report.kind = kind;
    report.format = format;
    report.recipients = recipients;
    report.message_id = parts
        .returned_id
        .clone()
        .or_else(|| quoted_message_id(&parts.text))
        .or_else(|| ses_message_id(&parts.text));
    report
}

/// Steps 1 to 6 of the module doc.
fn read(p: &Parts) -> (Kind, &'static str, Vec<Recipient>) {
    if let Some(fields) = &p.feedback {
        return (Kind::Complaint, "arf", complaint(fields, p));
    }
    match dsn(p) {
        // Only delivered/relayed/expanded blocks: a success notice.
        Some(rcpts) if rcpts.is_empty() => return (Kind::Other, "rfc3464", rcpts),
        Some(rcpts) => return (summary_kind(&rcpts, Kind::Dsn), "rfc3464", rcpts),
        None => {}
    }
    if let Some((kind, rcpts)) = ses_json(&p.text) {
        return (kind, "amazon-ses-json", rcpts);
    }
    let family = patterns::FAMILIES
        .iter()
        .filter(|f| f.name != "generic")
        .find(|f| matches_family(f, p));
    if let Some(f) = family {
        let rcpts = notice(f, p);
        return (summary_kind(&rcpts, Kind::Bounce), f.name, rcpts);
    }
    if is_autoreply(p) {
        return (Kind::AutoReply, "autoreply", Vec::new());
    }
    let generic = patterns::FAMILIES.iter().find(|f| f.name == "generic");
    if let Some(f) = generic.filter(|f| matches_family(f, p) && looks_generated(p)) {
        let rcpts = notice(f, p);
        if rcpts
            .iter()
            .any(|r| r.address.is_some() || r.status.is_some())
        {
            return (summary_kind(&rcpts, Kind::Bounce), f.name, rcpts);
        }
    }
    (Kind::Other, "none", Vec::new())
}

/// The message's kind from its recipients': a failure if any failed, else a delay.
fn summary_kind(rcpts: &[Recipient], failure: Kind) -> Kind {
    if rcpts.is_empty() || rcpts.iter().any(|r| r.kind.is_failure()) {
        failure
    } else {
        Kind::Delay
    }
}

/// Gathers headers, text, report parts and the returned message's headers.
fn collect(msg: &Message<'_>) -> Parts {
    let mut p = Parts {
        subject: msg.subject().unwrap_or("").to_lowercase(),
        from: addresses_of(msg.from()).join(" "),
        ..Parts::default()
    };
    if let Some(f) = msg.from().and_then(|a| a.first()) {
        p.from.push(' ');
        p.from
            .push_str(&f.name().unwrap_or_default().to_lowercase());
    }
    for h in [
        "To",
        "Cc",
        "Delivered-To",
        "Return-Path",
        "Reply-To",
        "From",
    ] {
        p.own.extend(raw_addresses(msg.header_raw(h).unwrap_or("")));
    }
    if let Some(v) = msg.header_raw("X-Failed-Recipients") {
        p.failed_header = raw_addresses(v);
    }
    p.auto_header = auto_headers(msg);
    for part in &msg.parts {
        collect_part(part, &mut p);
    }
    if p.feedback.is_none() && p.text.to_lowercase().contains("feedback-type:") {
        // A feedback report whose fields came in a text part.
        let fields = fields(&p.text);
        if fields.iter().any(|(k, _)| k == "feedback-type") {
            p.feedback = Some(p.text.clone());
        }
    }
    p
}

/// One MIME part into [`Parts`].
fn collect_part(part: &mail_parser::MessagePart<'_>, p: &mut Parts) {
    let (ctype, sub) = part
        .content_type()
        .map(|c| {
            (
                c.ctype().to_ascii_lowercase(),
                c.subtype().unwrap_or("").to_ascii_lowercase(),
            )
        })
        .unwrap_or_default();
    let body = || String::from_utf8_lossy(part.contents()).into_owned();
    match (ctype.as_str(), sub.as_str()) {
        ("message", "delivery-status" | "global-delivery-status") => {
            p.delivery_status.push(body());
        }
        ("message", "feedback-report") => p.feedback = Some(body()),
        ("text" | "message", "rfc822-headers" | "global-headers") => returned_headers(&body(), p),
        _ => match &part.body {
            PartType::Message(inner) => returned_message(inner, p),
            PartType::Text(t) => {
                p.text.push_str(t);
                p.text.push('\n');
            }
            PartType::Html(h) => {
                p.text
                    .push_str(&mail_parser::decoders::html::html_to_text(h));
                p.text.push('\n');
            }
            _ => {}
        },
    }
}

/// The returned message (a `message/rfc822` part): its Message-ID, recipients and sender.
fn returned_message(inner: &Message<'_>, p: &mut Parts) {
    if p.returned_id.is_none() {
        p.returned_id = inner.message_id().map(str::to_string);
    }
    p.returned_to.extend(
        raw_addresses(inner.header_raw("X-HmXmrOriginalRecipient").unwrap_or(""))
            .into_iter()
            .chain(addresses_of(inner.to())),
    );
    for h in ["From", "Return-Path", "Sender", "Reply-To"] {
        p.own
            .extend(raw_addresses(inner.header_raw(h).unwrap_or("")));
    }
}

/// The returned message's headers as text (`text/rfc822-headers`).
fn returned_headers(text: &str, p: &mut Parts) {
    let fields = fields(text);
    let get = |n: &str| {
        fields
            .iter()
            .filter(|(k, _)| k == n)
            .flat_map(|(_, v)| raw_addresses(v))
            .collect::<Vec<_>>()
    };
    if p.returned_id.is_none() {
        p.returned_id = header_in(text, "message-id");
    }
    p.returned_to.extend(get("x-hmxmroriginalrecipient"));
    p.returned_to.extend(get("to"));
    for h in ["from", "return-path", "sender", "reply-to"] {
        p.own.extend(get(h));
    }
}

/// RFC 3834 `Auto-Submitted: auto-replied` and the vendor headers vacation programs write.
fn auto_headers(msg: &Message<'_>) -> bool {
    let h = |n: &str| msg.header_raw(n).unwrap_or("").trim().to_ascii_lowercase();
    h("Auto-Submitted").starts_with("auto-replied")
        || !h("X-Autoreply").is_empty()
        || !h("X-Autorespond").is_empty()
        || h("Precedence") == "auto_reply"
        || h("X-Precedence") == "auto_reply"
        || h("X-Autogenerated") == "reply"
}

/// An automatic reply: its headers or subject say so, and it is not from a mail system.
fn is_autoreply(p: &Parts) -> bool {
    let daemon = patterns::DAEMONS.iter().any(|d| p.from.contains(d));
    let subject = patterns::AUTOREPLY_SUBJECTS
        .iter()
        .any(|s| p.subject.contains(s));
    !daemon && (p.auto_header || subject)
}

/// A notice a mail system wrote (not a person's message quoting one).
fn looks_generated(p: &Parts) -> bool {
    patterns::DAEMONS.iter().any(|d| p.from.contains(d))
        || !p.failed_header.is_empty()
        || !p.delivery_status.is_empty()
}

fn matches_family(f: &Family, p: &Parts) -> bool {
    let body = report_region(&p.text).to_lowercase();
    f.markers.iter().any(|m| match m {
        Marker::Body(s) => body.contains(s),
        Marker::Subject(s) => p.subject.contains(s),
        Marker::From(s) => p.from.contains(s),
    })
}

/// ARF: one complaint per complained-about address (or one naming nobody).
fn complaint(fields_text: &str, p: &Parts) -> Vec<Recipient> {
    let fields = fields(fields_text);
    let all = |n: &str| {
        fields
            .iter()
            .filter(|(k, _)| k == n)
            .filter_map(|(_, v)| clean_address(v))
            .collect::<Vec<_>>()
    };
    let feedback = fields
        .iter()
        .find(|(k, _)| k == "feedback-type")
        .map_or("abuse", |(_, v)| v.trim());
    let mut addrs = all("original-rcpt-to");
    if addrs.is_empty() {
        addrs = all("removal-recipient");
    }
    if addrs.is_empty() {
        addrs = p.returned_to.iter().take(1).cloned().collect();
    }
    let one = |address| Recipient {
        address,
        aliases: Vec::new(),
        kind: Kind::Complaint,
        status: None,
        code: None,
        diagnostic: format!("complaint ({feedback})"),
        category: None,
        hard: true,
    };
    if addrs.is_empty() {
        return vec![one(None)];
    }
    dedup(addrs).into_iter().map(|a| one(Some(a))).collect()
}

/// RFC 3464: every per-recipient block that failed or is delayed; `None` when there is no
/// such block (then the text is read as a notice).
fn dsn(p: &Parts) -> Option<Vec<Recipient>> {
    let mut out: Vec<Recipient> = Vec::new();
    let mut success = false;
    for body in &p.delivery_status {
        for block in body.replace("\r\n", "\n").split("\n\n") {
            match dsn_block(block) {
                Some(r) => out.push(r),
                None => success |= is_success_block(block),
            }
        }
    }
    if out.is_empty() {
        return success.then(Vec::new);
    }
    // A block without a diagnostic takes the notice's text about the same address.
    if out.iter().any(|r| r.diagnostic.is_empty()) {
        let texts = blocks(None, p);
        for r in out.iter_mut().filter(|r| r.diagnostic.is_empty()) {
            if let Some((_, t)) = texts.iter().find(|(a, _)| r.address.as_ref() == Some(a)) {
                r.diagnostic = best_line(t);
                *r = finish(r.clone(), r.kind != Kind::Delay);
            }
        }
    }
    Some(out)
}

/// A per-recipient block saying the message got through (`delivered`, `relayed`,
/// `expanded`).
fn is_success_block(block: &str) -> bool {
    fields(block).iter().any(|(k, v)| {
        k == "action"
            && ["delivered", "relayed", "expanded"].contains(&v.to_ascii_lowercase().as_str())
    })
}

/// One per-recipient block of a delivery-status part.
fn dsn_block(block: &str) -> Option<Recipient> {
    let fields = fields(block);
    let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.trim());
    let status = get("status").and_then(|s| find_status(s).map(|(e, _)| e));
    let kind = match get("action").map(str::to_ascii_lowercase).as_deref() {
        Some("failed") => Kind::Dsn,
        Some("delayed") => Kind::Delay,
        Some(_) => return None,
        None => match status.map(|s| s.class) {
            Some(5) => Kind::Dsn,
            Some(4) => Kind::Delay,
            _ => return None,
        },
    };
    let mut addrs: Vec<String> = [
        "original-recipient",
        "final-recipient",
        "x-actual-recipient",
    ]
    .iter()
    .filter_map(|n| get(n).and_then(typed_address))
    .collect();
    addrs = dedup(addrs);
    let diagnostic = get("diagnostic-code")
        .map(|d| d.split_once(';').map_or(d, |(_, t)| t).trim().to_string())
        .unwrap_or_default();
    let r = Recipient {
        address: addrs.first().cloned(),
        aliases: addrs.into_iter().skip(1).collect(),
        kind,
        status,
        code: None,
        diagnostic,
        category: None,
        hard: false,
    };
    Some(finish(r, kind == Kind::Dsn))
}

/// Status refined, reply code, category and the hard verdict (see the module doc).
fn finish(mut r: Recipient, final_failure: bool) -> Recipient {
    let lower = r.diagnostic.to_lowercase();
    r.code = reply_code(&r.diagnostic);
    let in_text = find_status(&r.diagnostic).map(|(e, _)| e);
    let generic = |s: EnhancedCode| s.subject == 0 && s.detail == 0;
    r.status = match (r.status, in_text) {
        (Some(s), Some(d)) if generic(s) && d.class == s.class => Some(d),
        (s, d) => s.or(d),
    };
    let class = r
        .status
        .map(|s| s.class)
        .or(r.code.map(|c| (c / 100) as u8))
        .unwrap_or(if final_failure { 5 } else { 4 });
    let effective = match (r.status, patterns::reason_in(&lower)) {
        (Some(s), Some(p)) if generic(s) => Some(EnhancedCode::new(s.class, p.subject, p.detail)),
        (Some(s), _) => Some(s),
        (None, Some(p)) => Some(EnhancedCode::new(class, p.subject, p.detail)),
        (None, None) => None,
    };
    let code = r.code.unwrap_or(u16::from(class) * 100 + 50);
    let category = classify::classify(None, code, effective, &r.diagnostic).category;
    r.category = Some(category);
    r.hard = final_failure
        && class == 5
        && category.is_about_the_address()
        && effective.is_some_and(suppress::is_recipient_code);
    r
}

/// A non-standard notice of family `f`: its failed recipients, each with its text.
fn notice(f: &Family, p: &Parts) -> Vec<Recipient> {
    let region = report_region(&p.text);
    let lower = region.to_lowercase();
    const PERMANENT: [&str; 6] = [
        "permanent error",
        "failed permanently",
        "permanent failure",
        "permanent fatal error",
        "given up",
        "i'm not going to try again",
    ];
    let permanent = PERMANENT.iter().any(|w| lower.contains(w));
    let delayed = f.delay.iter().any(|d| lower.contains(d))
        || ["delay", "warning:"].iter().any(|w| p.subject.contains(w));
    let final_failure = permanent || !delayed;
    let kind = if final_failure {
        Kind::Bounce
    } else {
        Kind::Delay
    };
    let mut found = blocks(Some(f), p);
    if found.is_empty() {
        let fallback = if p.failed_header.is_empty() {
            p.returned_to.iter().take(1).cloned().collect()
        } else {
            p.failed_header.clone()
        };
        let text = best_line(region);
        found = fallback.into_iter().map(|a| (a, text.clone())).collect();
    }
    if found.is_empty() {
        found.push((String::new(), best_line(region)));
    }
    found
        .into_iter()
        .map(|(address, text)| {
            let r = Recipient {
                address: Some(address).filter(|a| !a.is_empty()),
                aliases: Vec::new(),
                kind,
                status: None,
                code: None,
                diagnostic: best_line(&text),
                category: None,
                hard: false,
            };
            finish(r, final_failure)
        })
        .collect()
}

/// The notice's failed addresses, each with the text that follows it up to the next one
/// (a later mention of the same address adds to its text). `f`'s start line, if it has one,
/// is where the list begins.
fn blocks(f: Option<&Family>, p: &Parts) -> Vec<(String, String)> {
    let region = report_region(&p.text);
    let lines: Vec<&str> = region.lines().collect();
    let start = f
        .filter(|f| !f.start.is_empty())
        .and_then(|f| {
            lines.iter().position(|l| {
                let l = l.to_lowercase();
                f.start.iter().any(|s| l.contains(s))
            })
        })
        .unwrap_or(0);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut current: Option<usize> = None;
    for line in &lines[start..] {
        let addrs = line_addresses(line, &p.own);
        for a in &addrs {
            if !out.iter().any(|(x, _)| x == a) {
                out.push((a.clone(), String::new()));
            }
        }
        if let Some(a) = addrs.first() {
            current = out.iter().position(|(x, _)| x == a);
        }
        if let Some(i) = current {
            let t = &mut out[i].1;
            if t.len() < 4000 {
                t.push_str(line.trim());
                t.push('\n');
            }
        }
    }
    out
}

/// The part of a notice before the returned message.
fn report_region(text: &str) -> &str {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let l = line.to_lowercase();
        if patterns::RETURNED_MESSAGE.iter().any(|m| l.contains(m)) {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

/// The most telling line of a block: the first with a reply or status code, else the first
/// with a known reason phrase, else the block's first line; white space collapsed, at most
/// 500 characters.
fn best_line(block: &str) -> String {
    let lines: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let pick = lines
        .iter()
        .find(|l| find_status(l).is_some() || reply_code_anywhere(l).is_some())
        .or_else(|| {
            lines
                .iter()
                .find(|l| patterns::reason_in(&l.to_lowercase()).is_some())
        })
        .or(lines.first());
    let mut s: String = pick
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    if s.len() > 500 {
        let mut end = 500;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Candidate recipient addresses on a line of a notice: not in quoted header lines of the
/// original (From, Return-Path, Message-ID, …), not a mail system's, not the notice's own.
fn line_addresses(line: &str, own: &[String]) -> Vec<String> {
    let l = line.trim_start().to_ascii_lowercase();
    const SKIP: [&str; 12] = [
        "from:",
        "return-path:",
        "reply-to:",
        "sender:",
        "message-id:",
        "references:",
        "in-reply-to:",
        "received:",
        "cc:",
        "dkim-signature:",
        "x-",
        "list-",
    ];
    if SKIP.iter().any(|h| l.starts_with(h)) {
        return Vec::new();
    }
    raw_addresses(line)
        .into_iter()
        .filter(|a| !own.contains(a) && !is_pointer(&l, a))
        .filter(|a| {
            let local = a.split('@').next().unwrap_or("");
            !matches!(local, "mailer-daemon" | "postmaster" | "mailerdaemon")
        })
        .collect()
}

/// The address is one the notice points to, not one that failed: "please try <new@…>",
/// "forwarded to", "contact help@…" (the words just before it on its line).
fn is_pointer(lower_line: &str, address: &str) -> bool {
    const POINTERS: [&str; 9] = [
        "try",
        "moved to",
        "new address",
        "forward",
        "contact",
        "write to",
        "mail to",
        "send to",
        "reply to",
    ];
    let local = address.split('@').next().unwrap_or(address);
    let Some(at) = lower_line.find(local) else {
        return false;
    };
    let mut from = at.saturating_sub(24);
    while !lower_line.is_char_boundary(from) {
        from -= 1;
    }
    let before = &lower_line[from..at];
    POINTERS.iter().any(|p| before.contains(p))
}

/// Every address-shaped word of a text, normalized, without repeats.
fn raw_addresses(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split(|c: char| c.is_whitespace() || "<>()[]\"',;:".contains(c)) {
        let w = word.trim_matches(|c: char| c == '.' || c == '\'' || c == '`');
        if !w.contains('@') || w.len() > 254 {
            continue;
        }
        if let Ok(a) = suppress::normalize(w)
            && !a.starts_with('@')
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

fn addresses_of(a: Option<&mail_parser::Address<'_>>) -> Vec<String> {
    a.map(|a| {
        a.iter()
            .filter_map(|x| x.address())
            .filter_map(clean_address)
            .collect()
    })
    .unwrap_or_default()
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for a in v {
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// An SES notification (`{"notificationType": "Bounce", ...}`) in the text.
fn ses_json(text: &str) -> Option<(Kind, Vec<Recipient>)> {
    let start = text.find('{')?;
    let v: serde_json::Value = serde_json::from_str(text[start..].trim()).ok()?;
    let str_of =
        |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    match v.get("notificationType")?.as_str()? {
        "Bounce" => {
            let b = v.get("bounce")?;
            let permanent = str_of(b, "bounceType").as_deref() == Some("Permanent");
            let rcpts = b
                .get("bouncedRecipients")?
                .as_array()?
                .iter()
                .map(|r| {
                    let diag = str_of(r, "diagnosticCode").unwrap_or_default();
                    let r = Recipient {
                        address: str_of(r, "emailAddress").and_then(|a| clean_address(&a)),
                        aliases: Vec::new(),
                        kind: Kind::Bounce,
                        status: str_of(r, "status").and_then(|s| find_status(&s).map(|(e, _)| e)),
                        code: None,
                        diagnostic: diag
                            .split_once(';')
                            .map_or(diag.as_str(), |(_, t)| t)
                            .trim()
                            .into(),
                        category: None,
                        hard: false,
                    };
                    finish(r, permanent)
                })
                .collect();
            Some((Kind::Bounce, rcpts))
        }
        "Complaint" => {
            let c = v.get("complaint")?;
            let feedback = str_of(c, "complaintFeedbackType").unwrap_or_else(|| "abuse".into());
            let rcpts = c
                .get("complainedRecipients")?
                .as_array()?
                .iter()
                .map(|r| Recipient {
                    address: str_of(r, "emailAddress").and_then(|a| clean_address(&a)),
                    aliases: Vec::new(),
                    kind: Kind::Complaint,
                    status: None,
                    code: None,
                    diagnostic: format!("complaint ({feedback})"),
                    category: None,
                    hard: true,
                })
                .collect();
            Some((Kind::Complaint, rcpts))
        }
        _ => None,
    }
}

/// The original's Message-ID in an SES notification (`mail.commonHeaders.messageId`).
fn ses_message_id(text: &str) -> Option<String> {
    let start = text.find('{')?;
    let v: serde_json::Value = serde_json::from_str(text[start..].trim()).ok()?;
    let id = v
        .get("mail")?
        .get("commonHeaders")?
        .get("messageId")?
        .as_str()?;
    Some(
        id.trim()
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
    )
    .filter(|s| !s.is_empty())
}

/// A `Message-ID:` line quoted in the notice's text (the returned headers, inline).
fn quoted_message_id(text: &str) -> Option<String> {
    header_in(text, "message-id")
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
        } else if let Some((k, v)) = line.split_once(':')
            && !k.trim().is_empty()
            && !k.contains(' ')
        {
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
            v.split_whitespace()
                .next()
                .unwrap_or("")
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
    suppress::normalize(a).ok().filter(|a| !a.starts_with('@'))
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

/// A three-digit reply code starting the text (`550 5.1.1 …`, `550-5.1.1 …`), else one
/// inside it ([`reply_code_anywhere`]).
fn reply_code(text: &str) -> Option<u16> {
    let t = text.trim_start().trim_start_matches('#');
    let code = t.get(..3)?;
    let next = t.as_bytes().get(3).copied();
    (code.bytes().all(|b| b.is_ascii_digit()) && matches!(next, None | Some(b' ' | b'-')))
        .then(|| code.parse().ok())
        .flatten()
        .filter(|c| (400..600).contains(c))
        .or_else(|| reply_code_anywhere(text))
}

/// A reply code inside a text: `said: 550 5.1.1 …`, `<<< 550 …`, `#550 5.1.1`, `(550)`:
/// three digits 4xx/5xx standing alone, followed by a space or `-` and then a status code
/// or a letter, or by `)`.
fn reply_code_anywhere(text: &str) -> Option<u16> {
    let b = text.as_bytes();
    (0..b.len().saturating_sub(2)).find_map(|i| {
        let digits = &b[i..i + 3];
        if !matches!(digits[0], b'4' | b'5') || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let before_ok =
            i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b"./:-".contains(&b[i - 1]));
        let after = b.get(i + 3).copied();
        let then = b.get(i + 4).copied();
        let after_ok = match after {
            Some(b' ' | b'-') => {
                then.is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, b'4' | b'5'))
            }
            Some(b')') => true,
            _ => false,
        };
        (before_ok && after_ok)
            .then(|| std::str::from_utf8(digits).ok()?.parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_reply_codes_are_found_in_text() {
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
        assert_eq!(reply_code("host mx said: 550 5.1.1 <a@b>"), Some(550));
        assert_eq!(reply_code("#550 5.1.1 RESOLVER ##"), Some(550));
        assert_eq!(reply_code("at 10:00:550 and port 25"), None);
        assert_eq!(reply_code("192.0.2.550 x"), None);
    }

    #[test]
    fn a_generic_status_is_refined_by_the_text_and_only_addressing_failures_are_hard() {
        let r = |status, diag: &str, final_failure| {
            finish(
                Recipient {
                    address: None,
                    aliases: vec![],
                    kind: Kind::Dsn,
                    status,
                    code: None,
                    diagnostic: diag.into(),
                    category: None,
                    hard: false,
                },
                final_failure,
            )
        };
        let generic = Some(EnhancedCode::new(5, 0, 0));
        let a = r(generic, "550 Unrouteable address", true);
        assert_eq!(a.category, Some(Category::BadDomain));
        assert!(a.hard);
        let b = r(generic, "550 5.1.1 mailbox unavailable", true);
        assert_eq!(b.status, Some(EnhancedCode::new(5, 1, 1)));
        assert!(b.hard);
        let full = r(None, "Sorry, mailbox is full", true);
        assert_eq!(full.category, Some(Category::MailboxFull));
        assert!(!full.hard);
        let blocked = r(
            Some(EnhancedCode::new(5, 7, 1)),
            "550 5.7.1 user unknown",
            true,
        );
        assert!(!blocked.hard, "the server's specific status wins");
        assert!(!r(None, "user unknown", false).hard, "not final");
        assert!(
            !r(
                Some(EnhancedCode::new(4, 1, 1)),
                "451 4.1.1 try later",
                true
            )
            .hard
        );
    }
}
