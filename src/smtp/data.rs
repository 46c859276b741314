//! The DATA payload: a message made safe for the wire once, off the network path.
//!
//! RFC 5321 §4.5.2: every line ends in CRLF, a line starting with "." gets one more ".", and the
//! payload ends with CRLF "." CRLF. Doing this when the message is built (on a CPU thread) lets
//! the SMTP client write the bytes as they are.

/// Dot-stuffed, CRLF-normalized message bytes ending in `CRLF.CRLF`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPayload {
    bytes: Vec<u8>,
    /// Size of the message before stuffing, for `SIZE=` (RFC 1870 counts the message itself).
    message_len: usize,
}

impl DataPayload {
    /// Normalizes line endings (bare LF or CR → CRLF), stuffs dots and appends the terminator.
    pub fn from_message(message: &[u8]) -> Self {
        let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
        let mut at_line_start = true;
        let mut i = 0;
        while i < message.len() {
            let b = message[i];
            match b {
                b'\r' => {
                    out.extend_from_slice(b"\r\n");
                    if message.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                    at_line_start = true;
                }
                b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    at_line_start = true;
                }
                _ => {
                    if at_line_start && b == b'.' {
                        out.push(b'.');
                    }
                    out.push(b);
                    at_line_start = false;
                }
            }
            i += 1;
        }
        if !at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        Self {
            bytes: out,
            message_len: message.len(),
        }
    }

    /// The bytes to write after the 354 reply, terminator included.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Size of the unstuffed message.
    pub fn message_len(&self) -> usize {
        self.message_len
    }

    /// Reverses the stuffing (for receivers and tests): strips the terminator and leading dots.
    pub fn unstuff(wire: &[u8]) -> Vec<u8> {
        let body = wire.strip_suffix(b".\r\n").unwrap_or(wire);
        let mut out = Vec::with_capacity(body.len());
        for line in body.split_inclusive(|&b| b == b'\n') {
            let line = line.strip_prefix(b".").unwrap_or(line);
            out.extend_from_slice(line);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuffs_leading_dots_and_terminates() {
        let p = DataPayload::from_message(b"Subject: x\r\n\r\n.hidden\r\nok\r\n.\r\n");
        assert_eq!(
            p.as_bytes(),
            b"Subject: x\r\n\r\n..hidden\r\nok\r\n..\r\n.\r\n"
        );
        assert_eq!(
            DataPayload::unstuff(p.as_bytes()),
            b"Subject: x\r\n\r\n.hidden\r\nok\r\n.\r\n"
        );
    }

    #[test]
    fn normalizes_bare_lf_and_cr_and_missing_final_newline() {
        let p = DataPayload::from_message(b"a\nb\rc\r\n.d");
        assert_eq!(p.as_bytes(), b"a\r\nb\r\nc\r\n..d\r\n.\r\n");
        assert_eq!(p.message_len(), 9);
    }

    #[test]
    fn empty_message_is_just_the_terminator() {
        assert_eq!(DataPayload::from_message(b"").as_bytes(), b".\r\n");
    }
}
