//! Message: a rendered template plus the recipient's address become the SMTP envelope and the
//! RFC 5322/MIME bytes (via `mail-builder`), already dot-stuffed for DATA.
//!
//! The envelope recipient is always the row's address: nothing rendered from the CSV can add a
//! recipient, and header values were already checked for line breaks by the template stage.
//! The body is the text and HTML parts as `multipart/alternative`, inside `multipart/related`
//! with the inline images, inside `multipart/mixed` with the attachments; each layer only when
//! it has more than one part.
//! We set Message-ID ourselves, on the sender's domain (mail-builder would use the host name).
//! `List-Unsubscribe`/`List-Unsubscribe-Post` (RFC 2369/8058) are checked and written as they
//! are (never RFC 2047-encoded), and with `--dkim-key` the finished bytes are DKIM-signed here,
//! on the worker thread that built them.
//!
//! Every message starts with one `Received:` trace header recording the submission, as an MTA
//! writes one when it picks a message up (RFC 5321 §4.4): from the list file, by the HELO name,
//! with the run id; `--no-received-header` leaves it out. It goes in before DKIM signing but is
//! not signed: trace headers are not in [`crate::dkim::SIGNED_HEADERS`] (RFC 6376 §5.4.1).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mail_builder::MessageBuilder;
use mail_builder::headers::address::Address as MbAddress;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::mime::{BodyPart, MimePart};
use thiserror::Error;

use crate::address::Address;
use crate::dkim::Signer;
pub use crate::folder::AttachmentDir;
use crate::folder::FolderError;
use crate::smtp::{DataPayload, Envelope};
use crate::template::{InlineImage, Rendered};

/// A message ready to send.
#[derive(Clone, Debug)]
pub struct BuiltMessage {
    /// MAIL FROM / RCPT TO.
    pub envelope: Envelope,
    /// The Message-ID, without angle brackets.
    pub message_id: String,
    /// Domain of the From header's (first) address: Message-ID and DMARC alignment use it.
    pub from_domain: String,
    /// Wire bytes for DATA.
    pub payload: DataPayload,
}

/// Why a rendered message cannot be built (the row becomes `invalid`).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// A From/To/Cc/Reply-To header does not hold valid addresses.
    #[error("header {header}: {reason}")]
    AddressHeader {
        /// Header name.
        header: String,
        /// What is wrong.
        reason: String,
    },
    /// An `Attachment:` value names no readable file inside the attachments folder. One
    /// neutral message for every cause (absent, outside the folder, a symlink out, not a
    /// file), naming the value as given: never the resolved path or the OS error, which would
    /// tell a list's author what exists on this machine.
    #[error("attachment not available: {0}")]
    Attachment(String),
    /// The message is larger than `--max-message-size`.
    #[error("message is {size} bytes, over the limit of {limit} (--max-message-size)")]
    TooLarge {
        /// Built size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// `--from` or the From header gives no usable envelope sender.
    #[error("no valid envelope sender: {0}")]
    Sender(String),
    /// List-Unsubscribe / List-Unsubscribe-Post break RFC 2369 / RFC 8058.
    #[error("{0}")]
    ListUnsubscribe(String),
    /// DKIM signing failed.
    #[error("{0}")]
    Dkim(String),
}

impl From<FolderError> for BuildError {
    fn from(e: FolderError) -> Self {
        match e {
            FolderError::Unavailable(value) => Self::Attachment(value),
            FolderError::TooLarge { size, limit } => Self::TooLarge { size, limit },
        }
    }
}

/// Default `--max-message-size`: far above what receivers accept (Gmail 25 MB, Outlook
/// 35 MB after encoding), low enough that a hostile row cannot exhaust memory.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 25 * 1024 * 1024;

/// Settings that are the same for every message of a run.
#[derive(Clone, Debug)]
pub struct MessageOptions {
    /// Envelope sender override (`--from`); default: the From header's address.
    pub envelope_from: Option<Address>,
    /// DKIM signer (`--dkim-key`); `None` sends unsigned.
    pub dkim: Option<Signer>,
    /// Header templates added to every message by options (e.g. `--list-unsubscribe`), as
    /// (name, Handlebars value); `run` compiles them into the template.
    pub extra_headers: Vec<(String, String)>,
    /// A run's unique prefix for Message-IDs: with it, a row keeps the same Message-ID on
    /// every attempt of the run (a receiver can then spot the copy a lost connection may
    /// have left); without it every message gets a fresh one.
    pub message_id_prefix: Option<String>,
    /// The secret behind each row's Message-ID tag ([`row_message_id`]) when there is no VERP
    /// key: random for every run (the default), so no row's Message-ID can be derived from
    /// another row's. With `--return-path` the VERP key is used instead.
    pub message_id_secret: IdSecret,
    /// Where `Attachment:` files are read from (`None`: the working directory).
    pub attachments: Option<AttachmentDir>,
    /// Largest message built, in bytes (`0`: [`DEFAULT_MAX_MESSAGE_SIZE`]).
    pub max_message_size: usize,
    /// Per-row envelope sender with a signed token (`--return-path`, [`crate::verp`]);
    /// overrides `envelope_from` for the rows of a list.
    pub verp: Option<crate::verp::Verp>,
    /// Start every message with a `Received:` trace header (on by default;
    /// `--no-received-header` turns it off).
    pub received_header: bool,
    /// What the trace header names; the run fills it in from the list file and the HELO name.
    pub trace: Option<Trace>,
    /// The instant `Date:` and `Received:` carry, in seconds since the Unix epoch; `None`: the
    /// moment each message is built. Set for reproducible output and for tests pinned to a date.
    pub date: Option<i64>,
}

impl Default for MessageOptions {
    fn default() -> Self {
        Self {
            envelope_from: None,
            dkim: None,
            extra_headers: Vec::new(),
            message_id_prefix: None,
            message_id_secret: IdSecret::random(),
            attachments: None,
            max_message_size: 0,
            verp: None,
            received_header: true,
            trace: None,
            date: None,
        }
    }
}

/// The `from` and `by` parts of the `Received:` trace header, already made safe to write
/// (see [`Trace::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Where the message came from: the list file's name.
    pub from: String,
    /// Who submitted it: the HELO name.
    pub by: String,
}

impl Trace {
    /// The trace of messages made from the list at `list` and sent with HELO name `helo`. Only
    /// the file's name is kept (never the folder), and both are reduced to a dot-atom (RFC 5322
    /// §3.2.3: letters, digits, `-`, `_`, `.`, and `[]:` for an address literal in HELO) of
    /// at most 64 characters, so neither can break the header or leak a path.
    pub fn new(list: &Path, helo: &str) -> Self {
        let name = list
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self {
            from: dot_atom(&name, "", "list"),
            by: dot_atom(helo, "[]:", "localhost"),
        }
    }
}

/// `value` with every character outside letters, digits, `-`, `_`, `.` and `extra` replaced by
/// `-`, empty dot-separated parts dropped, cut to 64 characters; `fallback` if nothing is left.
fn dot_atom(value: &str, extra: &str, fallback: &str) -> String {
    let mapped: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) || extra.contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut out = String::new();
    for part in mapped.split('.').filter(|p| !p.is_empty()) {
        let sep = usize::from(!out.is_empty());
        if out.len() + sep + part.len() > 64 {
            break;
        }
        if sep == 1 {
            out.push('.');
        }
        out.push_str(part);
    }
    if out.is_empty() {
        fallback.to_string()
    } else {
        out
    }
}

/// The trace header (with its CRLF) for a message of run `run_id`: `Received: from <list> by
/// <helo> (mailmerge) id <run id>; <date>`, folded before `by` and before the date (RFC 5322
/// §2.2.3) so that, for names of ordinary length, no line is longer than 78 characters.
pub fn received_header(trace: &Trace, run_id: &str, now: &Date) -> String {
    format!(
        "Received: from {}\r\n\tby {} (mailmerge) id {};\r\n\t{}\r\n",
        trace.from,
        trace.by,
        dot_atom(run_id, "", "unknown"),
        now.to_rfc822()
    )
}

/// RFC 8058 §3.1: the only value List-Unsubscribe-Post may have.
pub const ONE_CLICK: &str = "List-Unsubscribe=One-Click";

/// Checks and normalizes a List-Unsubscribe value (RFC 2369 §3.2: a comma-separated list of
/// `<URI>`s). Characters a URI cannot hold (non-ASCII, space) are percent-encoded as UTF-8
/// (RFC 3986 §2.1) so the header stays 7-bit and is never RFC 2047-encoded, which would hide
/// the URIs from mailbox providers. Returns the value and whether it has an https URI.
pub fn normalize_list_unsubscribe(value: &str) -> Result<(String, bool), String> {
    let mut uris = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        let Some(open) = rest.strip_prefix('<') else {
            return Err(format!(
                "List-Unsubscribe must be a list of <URI>s (RFC 2369), got {value:?}"
            ));
        };
        let Some(close) = open.find('>') else {
            return Err(format!("List-Unsubscribe: missing '>' in {value:?}"));
        };
        let uri = open[..close].trim();
        let mut enc = String::with_capacity(uri.len());
        for c in uri.chars() {
            if c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"') {
                enc.push(c);
            } else {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    enc.push_str(&format!("%{b:02X}"));
                }
            }
        }
        let scheme = enc.split(':').next().unwrap_or("").to_ascii_lowercase();
        if !matches!(scheme.as_str(), "https" | "http" | "mailto") || !enc.contains(':') {
            return Err(format!(
                "List-Unsubscribe URI {uri:?} must be https: or mailto: (RFC 8058)"
            ));
        }
        uris.push(enc);
        rest = open[close + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    if uris.is_empty() {
        return Err("List-Unsubscribe is empty".into());
    }
    let https = uris
        .iter()
        .any(|u| u[..6.min(u.len())].eq_ignore_ascii_case("https:"));
    let value = uris
        .iter()
        .map(|u| format!("<{u}>"))
        .collect::<Vec<_>>()
        .join(", ");
    Ok((value, https))
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Builds a unique Message-ID on `domain`: a fresh [`new_run_id`] and a process counter.
pub fn new_message_id(domain: &str) -> String {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    format!("{}.{seq:x}@{domain}", new_run_id())
}

/// The secret that keys the per-row Message-ID tag. Never printed.
#[derive(Clone)]
pub struct IdSecret(std::sync::Arc<ring::hmac::Key>);

impl IdSecret {
    /// 256 fresh random bits (one run's secret).
    pub fn random() -> Self {
        let bytes: [u8; 32] = rand::random();
        Self::from_bytes(&bytes)
    }

    /// A given secret (tests, embedders that need reproducible Message-IDs).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(std::sync::Arc::new(crate::verp::key(bytes)))
    }

    /// The HMAC key.
    pub fn key(&self) -> &ring::hmac::Key {
        &self.0
    }
}

impl std::fmt::Debug for IdSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdSecret(..)")
    }
}

/// Hex digits of the per-row Message-ID tag: 80 bits, far beyond guessing.
const ID_TAG_HEX: usize = 20;

/// Row `row`'s Message-ID in the run with prefix `prefix`: `<prefix>.r<row>.<tag>@<domain>`,
/// where the tag is the first 80 bits of HMAC-SHA256(key, "<prefix>.r<row>") in hex. The
/// same on every attempt of the row within the run (Message-ID must not change between
/// retries), and unguessable from any other row's Message-ID: a late report that quotes it
/// proves it was made from this row's copy (`mailmerge bounces`, docs/list-hygiene.md).
pub fn row_message_id(prefix: &str, row: usize, key: &ring::hmac::Key, domain: &str) -> String {
    use std::fmt::Write as _;
    let mut id = format!("{prefix}.r{row}");
    let tag = ring::hmac::sign(key, id.as_bytes());
    id.reserve(ID_TAG_HEX + 2 + domain.len());
    id.push('.');
    for b in &tag.as_ref()[..ID_TAG_HEX / 2] {
        // Writing to a String cannot fail.
        let _ = write!(id, "{b:02x}");
    }
    id.push('@');
    id.push_str(domain);
    id
}

/// True when `id` has the shape of [`row_message_id`]: it carries a per-row tag. Message-IDs
/// made by older versions (`<prefix>.r<row>@<domain>`) do not, and can be derived from another
/// row's, so they are no evidence for a late report.
pub fn has_row_tag(id: &str) -> bool {
    let Some((left, _domain)) = id.rsplit_once('@') else {
        return false;
    };
    let mut parts = left.rsplit('.');
    let (Some(tag), Some(row)) = (parts.next(), parts.next()) else {
        return false;
    };
    tag.len() == ID_TAG_HEX
        && tag.bytes().all(|b| b.is_ascii_hexdigit())
        && row
            .strip_prefix('r')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// One mailbox from a header: optional display name and the address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// Display name, unquoted.
    pub name: Option<String>,
    /// The address.
    pub address: Address,
}

/// [`parse_mailboxes`] for the From header, which is nearly always the same on every row of a
/// run: the last value parsed on this thread is kept with its mailboxes.
fn from_mailboxes(value: &str) -> Result<Vec<Mailbox>, String> {
    thread_local! {
        static LAST_FROM: std::cell::RefCell<Option<(String, Vec<Mailbox>)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST_FROM.with_borrow_mut(|last| {
        if let Some((v, boxes)) = last.as_ref()
            && v == value
        {
            return Ok(boxes.clone());
        }
        let boxes = parse_mailboxes(value)?;
        *last = Some((value.to_string(), boxes.clone()));
        Ok(boxes)
    })
}

/// Parses an address-list header value: `Name <a@b>, "Last, First" <c@d>, e@f`.
pub fn parse_mailboxes(value: &str) -> Result<Vec<Mailbox>, String> {
    if value.contains([',', '"']) {
        return mailboxes(&split_mailboxes(value)?);
    }
    // One mailbox and nothing quoted (`Name <a@b>`, nearly every To): nothing to split.
    if value
        .rfind(['<', '>'])
        .is_some_and(|i| value.as_bytes()[i] == b'<')
    {
        return Err(format!("unbalanced quotes or angle brackets in {value:?}"));
    }
    mailboxes(&[value])
}

/// The mailboxes of the pieces [`split_mailboxes`] gave (blank pieces skipped).
fn mailboxes(items: &[impl AsRef<str>]) -> Result<Vec<Mailbox>, String> {
    let mut out = Vec::new();
    for item in items
        .iter()
        .map(|s| s.as_ref().trim())
        .filter(|s| !s.is_empty())
    {
        let (name, addr) = match (item.rfind('<'), item.ends_with('>')) {
            (Some(open), true) => {
                let name = item[..open].trim().trim_matches('"').replace("\\\"", "\"");
                (
                    (!name.is_empty()).then_some(name),
                    &item[open + 1..item.len() - 1],
                )
            }
            _ => (None, item),
        };
        let address = Address::parse(addr).map_err(|e| e.to_string())?;
        out.push(Mailbox { name, address });
    }
    if out.is_empty() {
        return Err("no address".into());
    }
    Ok(out)
}

/// The mailboxes of an address-list header, split at the commas that separate them.
fn split_mailboxes(value: &str) -> Result<Vec<String>, String> {
    let mut items = Vec::new();
    let (mut cur, mut in_quotes, mut in_angle, mut escaped) = (String::new(), false, false, false);
    for c in value.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ',' if !in_quotes && !in_angle => {
                items.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if in_quotes || in_angle {
        return Err(format!("unbalanced quotes or angle brackets in {value:?}"));
    }
    items.push(cur);
    // A display name written without quotes may contain a comma ("Díaz, PhD <a@b>"): a piece
    // with no @ belongs to the next piece.
    let mut merged: Vec<String> = Vec::new();
    let mut carry = String::new();
    for item in items {
        if item.contains('@') {
            merged.push(std::mem::take(&mut carry) + &item);
        } else {
            carry.push_str(&item);
            carry.push(',');
        }
    }
    if !carry.trim_matches([',', ' ']).is_empty() {
        merged.push(carry.trim_end_matches(',').to_string());
    }
    Ok(merged)
}

fn mb_list(boxes: Vec<Mailbox>) -> MbAddress<'static> {
    let mut list: Vec<MbAddress<'static>> = boxes
        .into_iter()
        .map(|m| MbAddress::new_address(m.name, m.address.to_string()))
        .collect();
    if list.len() == 1 {
        list.remove(0)
    } else {
        MbAddress::new_list(list)
    }
}

/// Content type guessed from a file name (enough for the attachments people send).
fn content_type_for(path: &std::path::Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("csv") => "text/csv",
        Some("html" | "htm") => "text/html",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("zip") => "application/zip",
        Some("ics") => "text/calendar",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

/// Builds the envelope and bytes for one recipient.
pub fn build(
    rendered: Rendered,
    recipient: &Address,
    opts: &MessageOptions,
) -> Result<BuiltMessage, BuildError> {
    build_row(rendered, recipient, opts, None)
}

/// A run's Message-ID prefix: time, process and randomness, unique across runs and hosts.
pub fn new_run_id() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let r: u32 = rand::random();
    format!("{now:x}.{:x}.{r:08x}", std::process::id())
}

/// [`build`] for row `row` of the list: with [`MessageOptions::message_id_prefix`] set, the
/// Message-ID is [`row_message_id`], the same on every attempt of the run.
pub fn build_row(
    rendered: Rendered,
    recipient: &Address,
    opts: &MessageOptions,
    row: Option<usize>,
) -> Result<BuiltMessage, BuildError> {
    let (builder, from_addr) = headers(MessageBuilder::new(), rendered.headers)?;
    let envelope_from = match (&opts.verp, row) {
        (Some(verp), Some(row)) => verp.address(row).map_err(BuildError::Sender)?,
        _ => opts.envelope_from.clone().unwrap_or(from_addr.clone()),
    };
    let message_id = match (&opts.message_id_prefix, row) {
        (Some(prefix), Some(row)) => {
            let key = match &opts.verp {
                Some(v) => v.key(),
                None => opts.message_id_secret.key(),
            };
            row_message_id(prefix, row, key, from_addr.domain())
        }
        _ => new_message_id(from_addr.domain()),
    };
    let mut builder = builder.message_id(message_id.clone());
    if let Some(at) = opts.date {
        builder = builder.date(Date::new(at));
    }
    let limit = match opts.max_message_size {
        0 => DEFAULT_MAX_MESSAGE_SIZE,
        n => n,
    };
    let files = attachments(rendered.attachments, opts, limit)?;
    // The trace header is first in the header block, as an MTA prepends its own; DKIM (below)
    // adds its signature above it and does not sign it.
    let mut bytes = match opts.received_header {
        true => trace_header(opts).into_bytes(),
        false => Vec::new(),
    };
    let trace_len = bytes.len();
    bytes.reserve(2048);
    builder
        .body(body(rendered.text, rendered.html, &rendered.inline, files))
        .write_to(&mut bytes)
        .map_err(|e| BuildError::Sender(e.to_string()))?;
    if bytes.len() - trace_len > limit {
        return Err(BuildError::TooLarge {
            size: bytes.len() - trace_len,
            limit,
        });
    }
    if let Some(signer) = &opts.dkim {
        let header = signer
            .sign(&bytes, from_addr.domain())
            .map_err(|e| BuildError::Dkim(e.to_string()))?;
        bytes.splice(0..0, header.into_bytes());
    }
    Ok(BuiltMessage {
        envelope: Envelope {
            from: envelope_from.to_string(),
            to: recipient.to_string(),
        },
        message_id,
        from_domain: from_addr.domain().to_string(),
        payload: DataPayload::from_vec(bytes),
    })
}

/// Adds the rendered headers: address headers parsed (never raw CSV text), List-Unsubscribe
/// checked (RFC 2369, RFC 8058). Returns the builder and the From address.
fn headers(
    mut builder: MessageBuilder<'static>,
    rendered: Vec<(String, String)>,
) -> Result<(MessageBuilder<'static>, Address), BuildError> {
    let addr_err = |header: &str, reason: String| BuildError::AddressHeader {
        header: header.to_string(),
        reason,
    };
    let mut from_addr: Option<Address> = None;
    let (mut unsubscribe_https, mut one_click) = (None, false);
    for (name, value) in rendered {
        let lower = name.to_ascii_lowercase();
        builder = match lower.as_str() {
            "list-unsubscribe" => {
                let (value, https) =
                    normalize_list_unsubscribe(&value).map_err(BuildError::ListUnsubscribe)?;
                unsubscribe_https = Some(https);
                builder.header("List-Unsubscribe", Raw::new(value))
            }
            "list-unsubscribe-post" => {
                if value.trim() != ONE_CLICK {
                    return Err(BuildError::ListUnsubscribe(format!(
                        "List-Unsubscribe-Post must be exactly {ONE_CLICK:?} (RFC 8058), got {value:?}"
                    )));
                }
                one_click = true;
                builder.header("List-Unsubscribe-Post", Raw::new(ONE_CLICK))
            }
            "from" | "to" | "cc" | "reply-to" | "sender" => {
                let boxes = if lower == "from" {
                    from_mailboxes(&value)
                } else {
                    parse_mailboxes(&value)
                }
                .map_err(|r| addr_err(&name, r))?;
                if lower == "from" {
                    from_addr = Some(boxes[0].address.clone());
                }
                let list = mb_list(boxes);
                match lower.as_str() {
                    "from" => builder.from(list),
                    "to" => builder.to(list),
                    "cc" => builder.cc(list),
                    "reply-to" => builder.reply_to(list),
                    _ => builder.sender(list),
                }
            }
            "subject" => builder.subject(value),
            _ if value.is_ascii() => builder.header(name, Raw::new(value)),
            _ => builder.header(name, Text::new(value)),
        };
    }
    if one_click && unsubscribe_https != Some(true) {
        return Err(BuildError::ListUnsubscribe(
            "List-Unsubscribe-Post (one-click) needs an https URI in List-Unsubscribe (RFC 8058 §3.1)"
                .into(),
        ));
    }
    let from_addr = from_addr.ok_or_else(|| addr_err("From", "missing".into()))?;
    Ok((builder, from_addr))
}

/// The MIME structure of the body (RFC 2046, RFC 2387): the text and HTML parts as
/// `multipart/alternative`; that inside `multipart/related` with the inline images the HTML
/// shows (each with its `Content-ID`); that inside `multipart/mixed` with the attachments.
/// Each layer only when it has more than one part.
fn body<'x>(
    text: Option<String>,
    html: Option<String>,
    images: &'x [Arc<InlineImage>],
    files: Vec<MimePart<'x>>,
) -> MimePart<'x> {
    let mut alternative: Vec<MimePart<'x>> = Vec::with_capacity(2);
    if let Some(text) = text {
        alternative.push(MimePart::new("text/plain", text));
    }
    if let Some(html) = html {
        alternative.push(MimePart::new("text/html", html));
    }
    let mut content = match alternative.len() {
        0 => MimePart::new("text/plain", "\r\n"),
        1 => alternative.remove(0),
        _ => MimePart::new("multipart/alternative", alternative),
    };
    if !images.is_empty() {
        let root_type = match &content.contents {
            BodyPart::Multipart(_) => "multipart/alternative",
            _ => "text/html",
        };
        let mut related = Vec::with_capacity(images.len() + 1);
        related.push(content);
        for image in images {
            // Named, as mail clients name what they list beside the message.
            let name = Path::new(&image.name)
                .file_name()
                .map_or_else(|| image.name.clone(), |n| n.to_string_lossy().into_owned());
            let disposition = ContentType::new("inline").attribute("filename", name);
            related.push(
                MimePart::new(image.content_type.as_str(), image.bytes.as_slice())
                    .header("Content-Disposition", disposition)
                    .cid(image.content_id.as_str()),
            );
        }
        // RFC 2387 §3.1: `type` names the root part's type.
        let related_type = ContentType::new("multipart/related").attribute("type", root_type);
        content = MimePart::new(related_type, related);
    }
    if files.is_empty() {
        return content;
    }
    let mut mixed = Vec::with_capacity(files.len() + 1);
    mixed.push(content);
    mixed.extend(files);
    MimePart::new("multipart/mixed", mixed)
}

/// Reads each file to attach inside the attachments folder, each at most `limit` bytes.
fn attachments(
    files: Vec<PathBuf>,
    opts: &MessageOptions,
    limit: usize,
) -> Result<Vec<MimePart<'static>>, BuildError> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    // Resolved once per message, and only when it has attachments (canonicalizing is a
    // system call; most messages have none).
    let here;
    let dir = match &opts.attachments {
        Some(dir) => dir,
        None => {
            here = AttachmentDir::new(Path::new("."));
            &here
        }
    };
    let mut parts = Vec::with_capacity(files.len());
    for path in files {
        let bytes = dir.read(&path.to_string_lossy(), limit)?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "attachment".into());
        parts.push(MimePart::new(content_type_for(&path), bytes).attachment(file_name));
    }
    Ok(parts)
}

/// The `Received:` header for this run (see [`Trace`]).
fn trace_header(opts: &MessageOptions) -> String {
    let fallback;
    let trace = match &opts.trace {
        Some(t) => t,
        None => {
            fallback = Trace::new(Path::new(""), "localhost");
            &fallback
        }
    };
    let now = opts.date.unwrap_or_else(|| Date::now().date);
    let Some(run_id) = &opts.message_id_prefix else {
        return received_header(trace, &new_run_id(), &Date::new(now));
    };
    // Within a second every message of a run has the same trace header: it is made once.
    thread_local! {
        static LAST: std::cell::RefCell<Option<(i64, Trace, String, String)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((at, t, id, header)) = last.as_ref()
            && (*at, t, id) == (now, trace, run_id)
        {
            return header.clone();
        }
        let header = received_header(trace, run_id, &Date::new(now));
        *last = Some((now, trace.clone(), run_id.clone(), header.clone()));
        header
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(headers: &[(&str, &str)], text: &str) -> Rendered {
        Rendered {
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            text: Some(text.into()),
            html: None,
            attachments: vec![],
            inline: vec![],
        }
    }

    #[test]
    fn one_unquoted_mailbox_parses_as_the_general_splitter_would() {
        for v in [
            "Ann <ann@example.com>",
            "ann@example.com",
            "  Ann   Lee  <ann@example.com>  ",
            "Ann <ann@example.com",
            "Ann ann@example.com>",
            "Ann <ann@example.com> <",
            "<>",
            "",
            " ",
            "nobody",
            "Ann <ann@example.com> trailing",
            "A\\B <a@example.com>",
            "Ann <ann@example>",
        ] {
            let general = split_mailboxes(v).and_then(|items| mailboxes(&items));
            assert_eq!(
                format!("{:?}", parse_mailboxes(v)),
                format!("{general:?}"),
                "{v:?}"
            );
        }
    }

    #[test]
    fn parses_address_lists() {
        let m = parse_mailboxes("\"Lee, Ann\" <ann@example.com>, bob@example.org").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name.as_deref(), Some("Lee, Ann"));
        assert_eq!(m[1].address.to_string(), "bob@example.org");
        assert!(parse_mailboxes("Ann <ann@example.com").is_err());
        let m = parse_mailboxes("Carla Díaz, PhD <carla@example.net>").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].name.as_deref(), Some("Carla Díaz, PhD"));
        assert!(parse_mailboxes("nobody").is_err());
    }

    #[test]
    fn builds_headers_ids_and_envelope() {
        let r = rendered(
            &[
                ("From", "Acme Ünited <news@acme.example>"),
                ("To", "Ann <ann@example.com>"),
                ("Subject", "Grüße"),
                ("X-Campaign", "spring"),
            ],
            "Hi\r\n.dot line\r\n",
        );
        let rcpt = Address::parse("ann@example.com").unwrap();
        let m = build(r, &rcpt, &MessageOptions::default()).unwrap();
        assert_eq!(m.envelope.from, "news@acme.example");
        assert_eq!(m.envelope.to, "ann@example.com");
        assert!(m.message_id.ends_with("@acme.example"));
        let text = String::from_utf8(DataPayload::unstuff(m.payload.as_bytes())).unwrap();
        assert!(text.contains(&format!("Message-ID: <{}>", m.message_id)));
        assert!(text.contains("Subject: =?utf-8?"));
        assert!(text.contains("X-Campaign: spring\r\n"));
        assert!(text.contains("MIME-Version: 1.0"));
        assert!(text.contains("Date: "));
        assert!(text.is_ascii(), "7-bit output expected");
        assert_eq!(text.matches("Message-ID").count(), 1);
    }

    #[test]
    fn each_row_gets_its_own_from_even_when_rows_alternate() {
        let rcpt = Address::parse("ann@example.com").unwrap();
        let opts = MessageOptions::default();
        for from in [
            "News <a@one.example>",
            "b@two.example",
            "News <a@one.example>",
        ] {
            let r = rendered(&[("From", from)], "Hi\r\n");
            let built = build_row(r, &rcpt, &opts, Some(1)).unwrap();
            let want = from
                .rsplit_once('@')
                .map(|(_, d)| d.trim_end_matches('>'))
                .unwrap();
            assert_eq!(built.from_domain, want, "{from}");
            let text = String::from_utf8_lossy(built.payload.as_bytes()).into_owned();
            let line = text.lines().find(|l| l.starts_with("From:")).unwrap();
            assert!(
                line.contains(from.trim_start_matches("News ")),
                "{from}: {line}"
            );
        }
        let bad = rendered(&[("From", "not an address")], "Hi\r\n");
        assert!(build_row(bad, &rcpt, &opts, Some(1)).is_err());
    }

    #[test]
    fn row_message_ids_are_stable_per_row_and_not_derivable_from_another_row() {
        let opts = MessageOptions {
            message_id_prefix: Some("runid.1".into()),
            ..MessageOptions::default()
        };
        let rcpt = Address::parse("ann@example.com").unwrap();
        let id = |row, opts: &MessageOptions| {
            let r = rendered(&[("From", "news@acme.example")], "Hi\r\n");
            build_row(r, &rcpt, opts, Some(row)).unwrap().message_id
        };
        let first = id(7, &opts);
        assert_eq!(
            first,
            id(7, &opts),
            "every attempt of a row: one Message-ID"
        );
        assert!(first.starts_with("runid.1.r7."), "{first}");
        assert!(first.ends_with("@acme.example"), "{first}");
        assert!(has_row_tag(&first), "{first}");
        // Row 8's Message-ID is not row 7's with the number changed, and another run's
        // secret gives another tag.
        let second = id(8, &opts);
        assert_ne!(second, first.replace(".r7.", ".r8."));
        let other_run = MessageOptions {
            message_id_secret: IdSecret::random(),
            ..opts.clone()
        };
        assert_ne!(id(7, &other_run), first);
        assert!(!has_row_tag("runid.1.r7@acme.example"), "the old form");
        assert!(!has_row_tag("runid.1.r7.0123@acme.example"));
        assert!(!has_row_tag("runid.1.x7.0123456789abcdef0123@acme.example"));
    }

    #[test]
    fn envelope_from_override_and_missing_attachment() {
        let mut r = rendered(&[("From", "a@acme.example"), ("To", "b@example.com")], "x");
        let opts = MessageOptions {
            envelope_from: Some(Address::parse("bounces@acme.example").unwrap()),
            ..MessageOptions::default()
        };
        let rcpt = Address::parse("b@example.com").unwrap();
        assert_eq!(
            build(r.clone(), &rcpt, &opts).unwrap().envelope.from,
            "bounces@acme.example"
        );
        r.attachments.push(PathBuf::from("nonexistent/file.pdf"));
        let e = build(r, &rcpt, &opts).unwrap_err();
        assert_eq!(
            e.to_string(),
            "attachment not available: nonexistent/file.pdf"
        );
    }

    /// The header block of an unstuffed message, unfolded, as (name, value) pairs in order.
    fn header_fields(message: &str) -> Vec<(String, String)> {
        let head = message.split("\r\n\r\n").next().unwrap();
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                fields.last_mut().unwrap().1.push_str(line);
            } else {
                let (name, value) = line.split_once(':').unwrap();
                fields.push((name.to_string(), value.trim().to_string()));
            }
        }
        fields
    }

    /// RFC 5322 §3.3 `date-time` as we write it (no comments, no obsolete forms):
    /// `day-name "," day month year hour ":" minute ":" second zone`, where `day` is one or two
    /// digits. Checks the grammar and the ranges, not the calendar.
    fn is_rfc5322_date_time(s: &str) -> bool {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let digits = |t: &str, min: usize, max: usize| {
            (min..=max).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_digit())
        };
        let in_range = |t: &str, hi: u32| t.parse::<u32>().is_ok_and(|n| n <= hi);
        let Some((day_name, rest)) = s.split_once(", ") else {
            return false;
        };
        let parts: Vec<&str> = rest.split(' ').collect();
        let [day, month, year, time, zone] = parts[..] else {
            return false;
        };
        let hms: Vec<&str> = time.split(':').collect();
        let zone_ok = zone.len() == 5
            && matches!(zone.as_bytes()[0], b'+' | b'-')
            && digits(&zone[1..], 4, 4);
        DAYS.contains(&day_name)
            && digits(day, 1, 2)
            && (1..=31).contains(&day.parse::<u32>().unwrap_or(0))
            && MONTHS.contains(&month)
            && digits(year, 4, 4)
            && hms.len() == 3
            && hms.iter().all(|t| digits(t, 2, 2))
            && in_range(hms[0], 23)
            && in_range(hms[1], 59)
            && in_range(hms[2], 60)
            && zone_ok
    }

    #[test]
    fn the_date_time_check_takes_one_and_two_digit_days_and_refuses_the_rest() {
        for good in [
            "Fri, 4 Dec 2026 09:05:00 +0000",
            "Sat, 29 Nov 2026 05:10:00 +0000",
            "Thu, 31 Dec 2026 23:59:60 -0130",
        ] {
            assert!(is_rfc5322_date_time(good), "{good}");
        }
        for bad in [
            "",
            "Fri 4 Dec 2026 09:05:00 +0000",
            "Fri, 004 Dec 2026 09:05:00 +0000",
            "Fri, 0 Dec 2026 09:05:00 +0000",
            "Fri, 4 Dez 2026 09:05:00 +0000",
            "Fri, 4 Dec 26 09:05:00 +0000",
            "Fri, 4 Dec 2026 9:05:00 +0000",
            "Fri, 4 Dec 2026 24:05:00 +0000",
            "Fri, 4 Dec 2026 09:05 +0000",
            "Fri, 4 Dec 2026 09:05:00 GMT",
            "Fri, 4 Dec 2026 09:05:00 +0000 ",
            "Fri, 4  Dec 2026 09:05:00 +0000",
        ] {
            assert!(!is_rfc5322_date_time(bad), "{bad}");
        }
    }

    /// Options with a trace header, messages dated `at`.
    fn traced_at(at: i64) -> MessageOptions {
        MessageOptions {
            message_id_prefix: Some("runid.1".into()),
            trace: Some(Trace::new(
                Path::new("/home/ann/Spring list (final).csv"),
                "mta.acme.example",
            )),
            date: Some(at),
            ..MessageOptions::default()
        }
    }

    /// Builds row 7 with a trace header at `at`: the whole text and its header fields.
    fn received_at(at: i64) -> (String, Vec<(String, String)>) {
        let r = rendered(&[("From", "a@acme.example"), ("To", "b@example.com")], "x");
        let rcpt = Address::parse("b@example.com").unwrap();
        let m = build_row(r, &rcpt, &traced_at(at), Some(7)).unwrap();
        let text = String::from_utf8(DataPayload::unstuff(m.payload.as_bytes())).unwrap();
        let fields = header_fields(&text);
        (text, fields)
    }

    #[test]
    fn received_and_date_carry_an_rfc5322_date_time_on_any_day() {
        // 2026-12-04 09:05:00 UTC (a one-digit day) and 2026-11-29 05:10:00 UTC (two digits).
        for (at, want) in [
            (1_796_375_100, "Fri, 4 Dec 2026 09:05:00 +0000"),
            (1_795_929_000, "Sun, 29 Nov 2026 05:10:00 +0000"),
        ] {
            let (text, fields) = received_at(at);
            let (_, date) = fields[0].1.split_once(';').unwrap();
            assert_eq!(date.trim(), want, "{text}");
            assert!(is_rfc5322_date_time(date.trim()), "{text}");
            let header = fields.iter().find(|f| f.0 == "Date").unwrap();
            assert_eq!(header.1.trim(), want, "{text}");
        }
        // Unpinned, the clock's date passes the same grammar.
        let r = rendered(&[("From", "a@acme.example"), ("To", "b@example.com")], "x");
        let rcpt = Address::parse("b@example.com").unwrap();
        let m = build_row(r, &rcpt, &MessageOptions::default(), Some(1)).unwrap();
        let text = String::from_utf8(DataPayload::unstuff(m.payload.as_bytes())).unwrap();
        let fields = header_fields(&text);
        let (_, date) = fields[0].1.split_once(';').unwrap();
        assert!(is_rfc5322_date_time(date.trim()), "{text}");
    }

    #[test]
    fn a_received_trace_header_comes_first_unless_turned_off() {
        let r = rendered(&[("From", "a@acme.example"), ("To", "b@example.com")], "x");
        let rcpt = Address::parse("b@example.com").unwrap();
        let opts = traced_at(1_796_375_100);
        let (text, fields) = received_at(1_796_375_100);
        assert_eq!(fields[0].0, "Received", "{text}");
        let received = &fields[0].1;
        let (trace, date) = received.split_once(';').unwrap();
        assert_eq!(
            trace,
            "from Spring-list--final-.csv\tby mta.acme.example (mailmerge) id runid.1"
        );
        assert!(is_rfc5322_date_time(date.trim()), "{date:?}");
        assert_eq!(fields.iter().filter(|f| f.0 == "Received").count(), 1);
        // Folded, every line under 78 characters.
        assert!(text.split("\r\n").all(|l| l.len() <= 78), "{text}");
        assert!(text.starts_with("Received: from Spring-list--final-.csv\r\n\tby "));

        // DKIM signs over it: the signature goes above and does not cover Received.
        let pem = include_str!("../tests/fixtures/dkim-ed25519.pem");
        let signed = MessageOptions {
            dkim: Some(Signer::from_pem(pem.as_bytes(), "ed", None).unwrap()),
            ..opts.clone()
        };
        let m = build_row(r.clone(), &rcpt, &signed, Some(7)).unwrap();
        let text = String::from_utf8(DataPayload::unstuff(m.payload.as_bytes())).unwrap();
        let fields = header_fields(&text);
        assert_eq!(fields[0].0, "DKIM-Signature");
        assert_eq!(fields[1].0, "Received");
        let h = fields[0]
            .1
            .split(';')
            .find(|t| t.trim().starts_with("h="))
            .unwrap();
        assert!(!h.to_ascii_lowercase().contains("received"), "{h}");

        // --no-received-header.
        let off = MessageOptions {
            received_header: false,
            ..opts
        };
        let m = build_row(r, &rcpt, &off, Some(7)).unwrap();
        let text = String::from_utf8(DataPayload::unstuff(m.payload.as_bytes())).unwrap();
        assert!(!text.contains("Received"), "{text}");
    }

    #[test]
    fn trace_names_are_reduced_to_safe_dot_atoms() {
        let t = Trace::new(
            Path::new("../x/..list\r\nX-Evil: 1.csv"),
            "host\r\nBcc: e@x",
        );
        assert_eq!(t.from, "list--X-Evil--1.csv");
        assert_eq!(t.by, "host--Bcc:-e-x");
        let t = Trace::new(Path::new("/"), "[192.0.2.1]");
        assert_eq!((t.from.as_str(), t.by.as_str()), ("list", "[192.0.2.1]"));
        let t = Trace::new(Path::new("Grüße.csv"), "");
        assert_eq!((t.from.as_str(), t.by.as_str()), ("Gr--e.csv", "localhost"));
        let long = format!("{}.csv", "a".repeat(100));
        assert_eq!(Trace::new(Path::new(&long), "h").from, "list");
        let long = format!("{}.{}.csv", "a".repeat(40), "b".repeat(40));
        assert_eq!(Trace::new(Path::new(&long), "h").from, "a".repeat(40));
    }

    #[test]
    fn list_unsubscribe_is_checked_and_kept_7bit() {
        let (v, https) =
            normalize_list_unsubscribe("<https://a.example/u/ü 1>,<mailto:u@a.example>").unwrap();
        assert_eq!(v, "<https://a.example/u/%C3%BC%201>, <mailto:u@a.example>");
        assert!(https);
        assert!(
            !normalize_list_unsubscribe("<mailto:u@a.example>")
                .unwrap()
                .1
        );
        assert!(normalize_list_unsubscribe("https://a.example/u").is_err());
        assert!(normalize_list_unsubscribe("<ftp://a.example/u>").is_err());
        assert!(normalize_list_unsubscribe("<https://a.example/u").is_err());
        let rcpt = Address::parse("b@example.com").unwrap();
        let r = rendered(
            &[
                ("From", "a@acme.example"),
                ("To", "b@example.com"),
                ("List-Unsubscribe", "<https://acme.example/u/1>"),
                ("List-Unsubscribe-Post", "yes"),
            ],
            "x",
        );
        let e = build(r, &rcpt, &MessageOptions::default()).unwrap_err();
        assert!(e.to_string().contains("List-Unsubscribe=One-Click"), "{e}");
    }
}
