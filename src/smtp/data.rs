//! The DATA payload: a message made safe for the wire once, off the network path.
//!
//! RFC 5321 §4.5.2: every line ends in CRLF, a line starting with "." gets one more ".", and the
//! payload ends with CRLF "." CRLF. Doing this when the message is built (on a CPU thread) lets
//! the SMTP client write the bytes as they are.
//!
//! CHUNKING (RFC 3030) sends the message as it is, without stuffing or terminator: rather than
//! keep a second copy, [`DataPayload::raw_segments`] walks the stuffed bytes and skips the dots
//! stuffing added, and [`DataPayload::raw_len`] (counted once, at build time) is the `BDAT` size.

/// Dot-stuffed, CRLF-normalized message bytes ending in `CRLF.CRLF`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataPayload {
    bytes: Vec<u8>,
    /// Size of the message before stuffing, for `SIZE=` (RFC 1870 counts the message itself).
    message_len: usize,
    /// Size of the CRLF-normalized message without stuffing or terminator (the `BDAT` size).
    raw_len: usize,
}

impl DataPayload {
    /// Normalizes line endings (bare LF or CR → CRLF), stuffs dots and appends the terminator.
    pub fn from_message(message: &[u8]) -> Self {
        let mut out = Vec::with_capacity(message.len() + message.len() / 64 + 8);
        let mut at_line_start = true;
        let mut stuffed = 0;
        let mut rest = message;
        // A line at a time: the bytes up to the next CR or LF are copied whole.
        while let Some(&first) = rest.first() {
            if at_line_start && first == b'.' {
                out.push(b'.');
                stuffed += 1;
            }
            match memchr::memchr2(b'\r', b'\n', rest) {
                Some(end) => {
                    out.extend_from_slice(&rest[..end]);
                    out.extend_from_slice(b"\r\n");
                    let crlf = rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n');
                    rest = &rest[end + 1 + usize::from(crlf)..];
                    at_line_start = true;
                }
                None => {
                    out.extend_from_slice(rest);
                    rest = &[];
                    at_line_start = false;
                }
            }
        }
        if !at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        let raw_len = out.len() - stuffed;
        out.extend_from_slice(b".\r\n");
        Self {
            bytes: out,
            message_len: message.len(),
            raw_len,
        }
    }

    /// [`DataPayload::from_message`], taking the message: one already in CRLF with no line
    /// starting with a dot (what the message builder writes, nearly always) only gets its
    /// terminator, without a copy.
    pub fn from_vec(mut message: Vec<u8>) -> Self {
        if !is_wire_ready(&message) {
            return Self::from_message(&message);
        }
        let len = message.len();
        message.extend_from_slice(b".\r\n");
        Self {
            bytes: message,
            message_len: len,
            raw_len: len,
        }
    }

    /// Size of the message as `BDAT` sends it: CRLF-normalized, not stuffed, no terminator.
    pub fn raw_len(&self) -> usize {
        self.raw_len
    }

    /// The message as `BDAT` sends it, as slices of the stuffed bytes: each slice ends where a
    /// stuffing dot was, and the terminator is left out. Their lengths add up to
    /// [`DataPayload::raw_len`].
    pub fn raw_segments(&self) -> impl Iterator<Item = &[u8]> {
        let body = &self.bytes[..self.bytes.len() - 3];
        let mut rest = body;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            // A line that starts with "." was stuffed: its first dot is not the message's.
            let start = usize::from(rest[0] == b'.');
            let from = &rest[start..];
            let end = from
                .windows(2)
                .position(|w| w == b"\n.")
                .map_or(from.len(), |p| p + 1);
            let (seg, tail) = from.split_at(end);
            rest = tail;
            Some(seg)
        })
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

/// True when `m` needs neither line-ending fixes nor stuffing: every CR is followed by LF,
/// every LF follows a CR, no line starts with a dot, and it is empty or ends in CRLF.
fn is_wire_ready(m: &[u8]) -> bool {
    if m.first() == Some(&b'.') || !(m.is_empty() || m.ends_with(b"\r\n")) {
        return false;
    }
    let mut at = 0;
    while let Some(i) = memchr::memchr2(b'\r', b'\n', &m[at..]) {
        let i = at + i;
        if m[i] == b'\n' || m.get(i + 1) != Some(&b'\n') || m.get(i + 2) == Some(&b'.') {
            return false;
        }
        at = i + 2;
    }
    true
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
    fn raw_segments_give_back_the_normalized_message_without_stuffing() {
        for msg in [
            &b"Subject: x\r\n\r\n.hidden\r\nok\r\n.\r\n"[..],
            b".first\n..two\n.\nlast",
            b"",
            b"plain\r\n",
            b"a\rb.\r\n.",
        ] {
            let p = DataPayload::from_message(msg);
            let raw: Vec<u8> = p.raw_segments().flatten().copied().collect();
            assert_eq!(raw, DataPayload::unstuff(p.as_bytes()), "{msg:?}");
            assert_eq!(raw.len(), p.raw_len(), "{msg:?}");
        }
    }

    #[test]
    fn every_line_ending_and_dot_position_normalizes_and_unstuffs_back() {
        // Every message of up to 6 bytes over the alphabet that matters.
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        for len in 0..=6u32 {
            for n in 0..4usize.pow(len) {
                let msg: Vec<u8> = (0..len).map(|k| alphabet[n / 4usize.pow(k) % 4]).collect();
                let p = DataPayload::from_message(&msg);
                assert_eq!(DataPayload::from_vec(msg.clone()), p, "{msg:?}");
                let bytes = p.as_bytes();
                assert!(
                    bytes.ends_with(b"\r\n.\r\n") || bytes == b".\r\n",
                    "{msg:?}"
                );
                // Every CR is followed by LF and every LF preceded by CR.
                for (i, b) in bytes.iter().enumerate() {
                    match b {
                        b'\r' => assert_eq!(bytes.get(i + 1), Some(&b'\n'), "{msg:?}"),
                        b'\n' => assert_eq!(bytes[i - 1], b'\r', "{msg:?}"),
                        _ => {}
                    }
                }
                // Unstuffed, the lines are the message's lines.
                let raw: Vec<u8> = p.raw_segments().flatten().copied().collect();
                assert_eq!(raw.len(), p.raw_len(), "{msg:?}");
                let text = String::from_utf8(msg.clone()).expect("ascii");
                let mut expected = text
                    .replace("\r\n", "\n")
                    .replace('\r', "\n")
                    .replace('\n', "\r\n");
                if !expected.is_empty() && !expected.ends_with("\r\n") {
                    expected.push_str("\r\n");
                }
                assert_eq!(String::from_utf8(raw).expect("ascii"), expected, "{msg:?}");
            }
        }
    }

    #[test]
    fn empty_message_is_just_the_terminator() {
        assert_eq!(DataPayload::from_message(b"").as_bytes(), b".\r\n");
    }
}
