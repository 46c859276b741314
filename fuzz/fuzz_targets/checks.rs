//! The invariants the fuzz targets check, shared with the stable-toolchain property test
//! (`tests/fuzz_props.rs` includes this file), so both exercise exactly the same code.

#![allow(dead_code)]

use std::path::Path;

use mailmerge::message::{MessageOptions, build};
use mailmerge::recipients::{ListOptions, RecipientList};
use mailmerge::smtp::{DataPayload, parse_reply};
use mailmerge::template::MessageTemplate;

/// Any bytes: no panic; a complete reply is stable when re-parsed alone, and every strict
/// prefix of it is "need more bytes" (the client reads replies incrementally).
pub fn smtp_reply(data: &[u8]) {
    let Ok(Some((reply, used))) = parse_reply(data) else {
        return;
    };
    assert!(used > 0 && used <= data.len());
    assert!((200..600).contains(&reply.code));
    assert!(!reply.lines.is_empty());
    assert_eq!(parse_reply(&data[..used]), Ok(Some((reply.clone(), used))));
    for cut in [0, 1, used / 2, used - 1] {
        if cut < used {
            assert_eq!(
                parse_reply(&data[..cut]),
                Ok(None),
                "prefix {cut} of {used}"
            );
        }
    }
    let _ = (reply.text(), reply.is_transient(), reply.is_permanent());
}

/// The fixed template: every column from the data goes into a display name, the Subject, a
/// custom header and the body.
pub const TEMPLATE: &str = "From: Fuzz <fuzz@sender.test>\nTo: {{name}} <{{email}}>\nSubject: {{x}} for {{name}}\nX-Fuzz: {{x}}\n\n{{name}}\n{{x}}\n";

const ALLOWED: &[&str] = &[
    "received",
    "from",
    "to",
    "subject",
    "x-fuzz",
    "message-id",
    "date",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
];

/// First byte: options; the rest: CSV rows under a fixed header (or, when the option byte is
/// odd, a whole file with its own header, read but not rendered). No panic; whatever a row
/// holds, a built message has only the template's headers, one MIME part, the row's address
/// as its only envelope recipient, and a well-formed DATA payload.
/// Returns the number of messages built (so a caller can tell the inputs reached `build`).
pub fn csv_message(data: &[u8]) -> usize {
    let Some((&opt, rest)) = data.split_first() else {
        return 0;
    };
    let opts = ListOptions {
        allow_duplicates: opt & 2 != 0,
        ..ListOptions::default()
    };
    if opt & 1 == 1 {
        if let Ok(list) = RecipientList::from_reader(rest, Path::new("fuzz.csv"), &opts) {
            for (i, row) in list.iter().enumerate() {
                assert_eq!(row.row, i + 1);
            }
        }
        return 0;
    }
    let mut built = 0;
    let mut csv = b"email,name,x\n".to_vec();
    csv.extend_from_slice(rest);
    let list = RecipientList::from_reader(&csv[..], Path::new("fuzz.csv"), &opts)
        .expect("a list with a header is readable");
    let template =
        MessageTemplate::parse(TEMPLATE, Path::new("fuzz.hbs"), Path::new("/")).expect("template");
    template.check_columns(&list.columns).expect("columns");
    for row in list.iter() {
        let Ok(addr) = &row.status else { continue };
        assert!(!addr.to_string().chars().any(char::is_control));
        let Ok(rendered) = template.render(&list.columns, &row.fields) else {
            continue;
        };
        let Ok(msg) = build(rendered, addr, &MessageOptions::default()) else {
            continue;
        };
        assert_eq!(msg.envelope.to, addr.to_string());
        assert_eq!(msg.envelope.from, "fuzz@sender.test");
        let wire = msg.payload.as_bytes();
        assert!(wire.ends_with(b"\r\n.\r\n"));
        // No line of the payload but the last is a lone "." (SMTP smuggling), no bare CR/LF.
        let body = &wire[..wire.len() - 3];
        assert!(!body.windows(5).any(|w| w == b"\r\n.\r\n"));
        for (i, &b) in body.iter().enumerate() {
            if b == b'\n' {
                assert!(i > 0 && body[i - 1] == b'\r', "bare LF");
            }
            if b == b'\r' {
                assert_eq!(body.get(i + 1), Some(&b'\n'), "bare CR");
            }
        }
        let text = DataPayload::unstuff(wire);
        let text = String::from_utf8_lossy(&text);
        let (head, _) = text.split_once("\r\n\r\n").expect("header block");
        let (mut to, mut received) = (0, 0);
        for l in head.split("\r\n").filter(|l| !l.starts_with([' ', '\t'])) {
            let name = l.split(':').next().unwrap_or_default().to_ascii_lowercase();
            assert!(ALLOWED.contains(&name.as_str()), "header {l:?}");
            to += usize::from(name == "to");
            received += usize::from(name == "received");
        }
        // One To, and only our own trace header (first): a row cannot add another.
        assert_eq!((to, received), (1, 1));
        assert!(head.starts_with("Received: from "), "{head}");
        // One part: a single, non-multipart Content-Type in the header block (body text that
        // merely reads "Content-Type: multipart/..." is just text).
        let ct: Vec<&str> = head
            .split("\r\n")
            .filter(|l| l.to_ascii_lowercase().starts_with("content-type:"))
            .collect();
        assert_eq!(ct.len(), 1, "{head}");
        assert!(ct[0].to_ascii_lowercase().contains("text/plain"), "{head}");
        built += 1;
    }
    built
}
