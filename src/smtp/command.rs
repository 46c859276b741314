//! SMTP commands as types. Each renders itself with `Display` (without the CRLF, which the
//! client appends), so the wire format of a command lives in exactly one place.

use std::fmt;

/// One client command (RFC 5321 §4.1 plus the ESMTP parameters we use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `EHLO <domain>`
    Ehlo(&'a str),
    /// `HELO <domain>`, the fallback when EHLO is refused.
    Helo(&'a str),
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `MAIL FROM:<reverse-path>` with optional ESMTP parameters.
    MailFrom {
        /// Envelope sender; empty for the null reverse path.
        from: &'a str,
        /// `SIZE=` (RFC 1870) when the server advertised SIZE.
        size: Option<usize>,
        /// `SMTPUTF8` (RFC 6531) when the envelope needs it and the server offers it.
        smtputf8: bool,
    },
    /// `RCPT TO:<forward-path>`
    RcptTo(&'a str),
    /// `DATA`
    Data,
    /// `BDAT <size> [LAST]` (RFC 3030): the next `size` octets are message content.
    Bdat {
        /// Octets in this chunk.
        size: usize,
        /// This chunk ends the message.
        last: bool,
    },
    /// `RSET`, between transactions on a reused connection.
    Rset,
    /// `NOOP`, to probe a pooled connection.
    Noop,
    /// `QUIT`
    Quit,
}

impl Command<'_> {
    /// The verb, for error messages and the results CSV ("which step failed").
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Ehlo(_) => "EHLO",
            Command::Helo(_) => "HELO",
            Command::StartTls => "STARTTLS",
            Command::MailFrom { .. } => "MAIL FROM",
            Command::RcptTo(_) => "RCPT TO",
            Command::Data => "DATA",
            Command::Bdat { .. } => "BDAT",
            Command::Rset => "RSET",
            Command::Noop => "NOOP",
            Command::Quit => "QUIT",
        }
    }
}

impl fmt::Display for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Ehlo(name) => write!(f, "EHLO {name}"),
            Command::Helo(name) => write!(f, "HELO {name}"),
            Command::StartTls => f.write_str("STARTTLS"),
            Command::MailFrom {
                from,
                size,
                smtputf8,
            } => {
                write!(f, "MAIL FROM:<{from}>")?;
                if let Some(size) = size {
                    write!(f, " SIZE={size}")?;
                }
                if *smtputf8 {
                    f.write_str(" SMTPUTF8")?;
                }
                Ok(())
            }
            Command::RcptTo(to) => write!(f, "RCPT TO:<{to}>"),
            Command::Data => f.write_str("DATA"),
            Command::Bdat { size, last } => {
                write!(f, "BDAT {size}")?;
                if *last {
                    f.write_str(" LAST")?;
                }
                Ok(())
            }
            Command::Rset => f.write_str("RSET"),
            Command::Noop => f.write_str("NOOP"),
            Command::Quit => f.write_str("QUIT"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_render_as_on_the_wire() {
        assert_eq!(Command::Ehlo("mx.test").to_string(), "EHLO mx.test");
        assert_eq!(
            Command::MailFrom {
                from: "a@b.test",
                size: Some(1234),
                smtputf8: true
            }
            .to_string(),
            "MAIL FROM:<a@b.test> SIZE=1234 SMTPUTF8"
        );
        assert_eq!(
            Command::MailFrom {
                from: "",
                size: None,
                smtputf8: false
            }
            .to_string(),
            "MAIL FROM:<>"
        );
        assert_eq!(
            Command::RcptTo("x@y.test").to_string(),
            "RCPT TO:<x@y.test>"
        );
        assert_eq!(Command::Data.verb(), "DATA");
        let bdat = Command::Bdat {
            size: 42,
            last: true,
        };
        assert_eq!(bdat.to_string(), "BDAT 42 LAST");
    }
}
