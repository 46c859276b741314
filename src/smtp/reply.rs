//! SMTP replies as values: the three-digit code, the RFC 3463 enhanced status code when the
//! server gave one, and the text lines.
//!
//! Callers branch on [`Reply::is_transient`] / [`Reply::is_permanent`], never on strings. The
//! parser is incremental ([`parse_reply`] reports `Ok(None)` until a whole reply is buffered), so
//! the client can read pipelined replies straight out of its socket buffer.

use std::fmt;

use thiserror::Error;

/// An RFC 3463 enhanced status code, `class.subject.detail` (e.g. `5.1.1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EnhancedCode {
    /// 2 success, 4 persistent transient failure, 5 permanent failure.
    pub class: u8,
    /// Subject (0–999).
    pub subject: u16,
    /// Detail (0–999).
    pub detail: u16,
}

impl EnhancedCode {
    /// Builds a code; used for the locally generated outcomes (e.g. null MX → `5.1.10`).
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }

    /// Parses `x.y.z` at the start of `text`; returns the code and the remaining text.
    fn parse_prefix(text: &str) -> Option<(Self, &str)> {
        let end = text.find(' ').unwrap_or(text.len());
        let token = &text[..end];
        let mut parts = token.split('.');
        let class: u8 = parse_digits(parts.next()?, 1)?;
        let subject: u16 = parse_digits(parts.next()?, 3)?;
        let detail: u16 = parse_digits(parts.next()?, 3)?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) {
            return None;
        }
        Some((
            Self {
                class,
                subject,
                detail,
            },
            text[end..].trim_start(),
        ))
    }
}

fn parse_digits<T: std::str::FromStr>(s: &str, max_len: usize) -> Option<T> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One complete (possibly multi-line) SMTP reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code (RFC 5321 §4.2).
    pub code: u16,
    /// The enhanced status code, when the first line carried one.
    pub enhanced: Option<EnhancedCode>,
    /// Text of each line, without the code, the separator and the enhanced code.
    pub lines: Vec<String>,
}

impl Reply {
    /// A reply made up locally (not received), e.g. for a null-MX bounce.
    pub fn local(code: u16, enhanced: EnhancedCode, text: impl Into<String>) -> Self {
        Self {
            code,
            enhanced: Some(enhanced),
            lines: vec![text.into()],
        }
    }

    /// 2yz.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 3yz: the server wants more (354 after DATA).
    pub fn is_intermediate(&self) -> bool {
        (300..400).contains(&self.code)
    }

    /// A failure that may succeed later: a 4yz reply. The reply code decides, as in Postfix: a
    /// 5yz is never retried whatever its enhanced code says (RFC 3463 §3 requires the two to
    /// agree; when a server gets that wrong, the reply code is what the server committed to).
    /// The one exception is "too many recipients" (RFC 5321 §4.5.3.1.10: 552 was used for it
    /// historically, and the client must then retry later).
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code) || self.is_too_many_recipients()
    }

    /// A failure that will not succeed on retry: a 5yz reply (see [`Reply::is_transient`]).
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code) && !self.is_too_many_recipients()
    }

    /// 452/552 with enhanced code x.5.3 ("too many recipients", RFC 3463).
    fn is_too_many_recipients(&self) -> bool {
        matches!(self.code, 452 | 552)
            && self
                .enhanced
                .is_some_and(|e| e.subject == 5 && e.detail == 3)
    }

    /// All lines joined with a space: what goes in the results CSV.
    pub fn text(&self) -> String {
        self.lines.join(" ")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = self.enhanced {
            write!(f, " {e}")?;
        }
        let text = self.text();
        if !text.is_empty() {
            write!(f, " {text}")?;
        }
        Ok(())
    }
}

/// A byte sequence that is not an SMTP reply.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// The line does not start with three digits followed by space, `-` or end of line.
    #[error("malformed reply line {0:?}")]
    Malformed(String),
    /// Lines of one multi-line reply carried different codes.
    #[error("reply lines disagree on the code ({first} then {then})")]
    CodeMismatch {
        /// Code of the first line.
        first: u16,
        /// Code of the offending line.
        then: u16,
    },
    /// A reply grew beyond any sane size (defends against a server streaming garbage).
    #[error("reply longer than {0} bytes")]
    TooLong(usize),
    /// One reply had more lines than any real server sends (EHLO replies have about 20).
    #[error("reply of more than {0} lines")]
    TooManyLines(usize),
    /// One line of a reply was longer than any real server sends.
    #[error("reply line longer than {0} bytes")]
    LineTooLong(usize),
}

/// A server's bytes as text safe for any report or terminal: invalid UTF-8 is shown escaped
/// (`\xNN`) and control characters (C0, DEL, C1: a NUL, an escape sequence, a CR that would
/// break a CSV cell) become `\xNN` / `\u{NN}` too. Printable text, any script, is kept.
pub fn printable(bytes: &[u8]) -> String {
    // Nearly every reply is printable ASCII: taken as it is.
    if bytes.iter().all(|b| (0x20..0x7f).contains(b)) {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Upper bound on one reply; EHLO replies are a few hundred bytes.
pub const MAX_REPLY_LEN: usize = 64 * 1024;

/// Upper bound on the lines of one reply (a hostile server cannot make us collect
/// an endless multi-line reply).
pub const MAX_REPLY_LINES: usize = 100;

/// Upper bound on one reply line, CRLF included (RFC 5321 §4.5.3.1.5 says 512; we allow more).
pub const MAX_LINE_LEN: usize = 4096;

/// Parses one reply from the front of `buf`.
///
/// Returns `Ok(Some((reply, consumed)))` when a complete reply is present, `Ok(None)` when more
/// bytes are needed. Lines may end in CRLF or a bare LF (tolerated, as Postfix does).
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, ReplyError> {
    let mut pos = 0;
    let mut code: Option<u16> = None;
    let mut enhanced = None;
    let mut lines = Vec::new();
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if buf.len() > MAX_REPLY_LEN {
                return Err(ReplyError::TooLong(MAX_REPLY_LEN));
            }
            if buf.len() - pos > MAX_LINE_LEN {
                return Err(ReplyError::LineTooLong(MAX_LINE_LEN));
            }
            return Ok(None);
        };
        if nl >= MAX_LINE_LEN {
            return Err(ReplyError::LineTooLong(MAX_LINE_LEN));
        }
        if lines.len() >= MAX_REPLY_LINES {
            return Err(ReplyError::TooManyLines(MAX_REPLY_LINES));
        }
        let mut line = &buf[pos..pos + nl];
        pos += nl + 1;
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        let text = printable(line);
        let bytes = line;
        if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
            return Err(ReplyError::Malformed(text));
        }
        let this_code = u16::from(bytes[0] - b'0') * 100
            + u16::from(bytes[1] - b'0') * 10
            + u16::from(bytes[2] - b'0');
        if !(200..600).contains(&this_code) {
            return Err(ReplyError::Malformed(text));
        }
        let (last, rest) = match bytes.get(3) {
            None => (true, ""),
            Some(b' ') => (true, &text[4..]),
            Some(b'-') => (false, &text[4..]),
            Some(_) => return Err(ReplyError::Malformed(text)),
        };
        match code {
            None => code = Some(this_code),
            Some(first) if first != this_code => {
                return Err(ReplyError::CodeMismatch {
                    first,
                    then: this_code,
                });
            }
            Some(_) => {}
        }
        // RFC 2034 §4: every line carries the enhanced code; we keep the first and strip it
        // from all lines so that the text reads cleanly.
        let mut rest = rest;
        if let Some((e, after)) = EnhancedCode::parse_prefix(rest)
            && (u16::from(e.class) == this_code / 100 || (e.class != 2 && this_code >= 400))
        {
            if enhanced.is_none() && lines.is_empty() {
                enhanced = Some(e);
            }
            rest = after;
        }
        lines.push(rest.to_string());
        if last {
            let code = code.unwrap_or(this_code);
            return Ok(Some((
                Reply {
                    code,
                    enhanced,
                    lines,
                },
                pos,
            )));
        }
        if pos > MAX_REPLY_LEN {
            return Err(ReplyError::TooLong(MAX_REPLY_LEN));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Reply {
        let (r, used) = parse_reply(s.as_bytes()).unwrap().unwrap();
        assert_eq!(used, s.len());
        r
    }

    #[test]
    fn single_line_with_enhanced_code() {
        let r = parse("550 5.1.1 <bob@example.com>: user unknown\r\n");
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced, Some(EnhancedCode::new(5, 1, 1)));
        assert_eq!(r.text(), "<bob@example.com>: user unknown");
        assert!(r.is_permanent());
        assert!(!r.is_transient());
    }

    #[test]
    fn multi_line_ehlo_with_empty_last_line() {
        // smtp-sink ends its EHLO reply with a bare "250 " line.
        let r = parse("250-mx.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 \r\n");
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, vec!["mx.test", "PIPELINING", "8BITMIME", ""]);
        assert!(r.is_positive());
    }

    #[test]
    fn incomplete_reply_needs_more_bytes() {
        assert_eq!(parse_reply(b"250-first\r\n250 sec").unwrap(), None);
        assert_eq!(parse_reply(b"").unwrap(), None);
    }

    #[test]
    fn pipelined_replies_are_consumed_one_at_a_time() {
        let buf = b"250 2.1.0 ok\r\n451 4.7.1 greylisted\r\n554 5.5.1 no valid rcpt\r\n";
        let (a, n) = parse_reply(buf).unwrap().unwrap();
        let (b, m) = parse_reply(&buf[n..]).unwrap().unwrap();
        let (c, _) = parse_reply(&buf[n + m..]).unwrap().unwrap();
        assert!(a.is_positive());
        assert!(b.is_transient());
        assert_eq!(b.enhanced, Some(EnhancedCode::new(4, 7, 1)));
        assert!(c.is_permanent());
    }

    #[test]
    fn the_reply_code_decides_not_a_disagreeing_enhanced_code() {
        // A 5yz is never retried, even when its enhanced code says 4.x.x …
        let r = parse("550 4.2.2 mailbox full\r\n");
        assert!(r.is_permanent() && !r.is_transient());
        assert_eq!(
            r.enhanced,
            Some(EnhancedCode::new(4, 2, 2)),
            "still reported as sent"
        );
        // … and a 4yz is retried even when it says 5.x.x.
        let r = parse("450 5.7.1 try later\r\n");
        assert!(r.is_transient() && !r.is_permanent());
        // A mismatched class digit is not taken as an enhanced code at all.
        let r = parse("250 5.0.0 odd\r\n");
        assert_eq!(r.enhanced, None);
        assert_eq!(r.text(), "5.0.0 odd");
        // 552 5.5.3 "too many recipients" must be retried later, not bounced.
        let r = parse("552 5.5.3 too many recipients\r\n");
        assert!(r.is_transient());
        assert!(!r.is_permanent());
    }

    #[test]
    fn malformed_and_mismatched_lines_are_errors() {
        assert!(matches!(
            parse_reply(b"hello\r\n"),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(b"25x ok\r\n"),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(b"250-a\r\n251 b\r\n"),
            Err(ReplyError::CodeMismatch { .. })
        ));
        assert!(matches!(
            parse_reply(b"250*x\r\n"),
            Err(ReplyError::Malformed(_))
        ));
    }

    #[test]
    fn bare_lf_and_code_only_lines_are_accepted() {
        let r = parse("220\n");
        assert_eq!(r.code, 220);
        assert_eq!(r.lines, vec![""]);
    }

    #[test]
    fn overlong_reply_is_rejected() {
        let junk = vec![b'a'; MAX_REPLY_LEN + 10];
        assert!(matches!(parse_reply(&junk), Err(ReplyError::TooLong(_))));
    }

    #[test]
    fn endless_lines_and_endless_multi_line_replies_are_rejected_early() {
        let long = format!("250 {}", "x".repeat(MAX_LINE_LEN));
        assert!(matches!(
            parse_reply(long.as_bytes()),
            Err(ReplyError::LineTooLong(_))
        ));
        let complete = format!("{long}\r\n");
        assert!(matches!(
            parse_reply(complete.as_bytes()),
            Err(ReplyError::LineTooLong(_))
        ));
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert!(matches!(
            parse_reply(many.as_bytes()),
            Err(ReplyError::TooManyLines(_))
        ));
        let ok = format!("{}250 last\r\n", "250-x\r\n".repeat(MAX_REPLY_LINES - 1));
        assert!(matches!(parse_reply(ok.as_bytes()), Ok(Some(_))));
    }

    #[test]
    fn display_round_trips_the_essentials() {
        let r = parse("421 4.3.2 shutting down\r\n");
        assert_eq!(r.to_string(), "421 4.3.2 shutting down");
    }
}
