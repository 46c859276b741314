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

/// A Markdown template with a value in every context: heading, emphasis, code span, table
/// cell, quote, list item, link destination, the template's own raw HTML, an indented code
/// block.
pub const MARKDOWN_TEMPLATE: &str = "From: Fuzz <fuzz@sender.test>\nTo: {{email}}\nSubject: s\n\n\
--- markdown ---\n# Hello {{name}}\n\nDear **{{name}}**, your code is `{{x}}` and _{{x}}_.\n\n\
| Name | Note |\n|------|------|\n| {{name}} | {{x}} |\n\n> {{x}}\n\n\
- {{name}}\n- [Your page](https://acme.example/u/{{x}}) or https://acme.example/help\n\n\
<div title=\"{{x}}\">{{name}}</div>\n\n    {{x}}\n";

/// The tags the Markdown template itself can produce.
const MARKDOWN_TAGS: &[&str] = &[
    "h1",
    "p",
    "strong",
    "em",
    "code",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "blockquote",
    "ul",
    "li",
    "a",
    "div",
    "br",
    "pre",
];

/// First byte ignored; the rest: CSV rows (`email,name,x`) rendered through
/// [`MARKDOWN_TEMPLATE`]. No panic; whatever a row holds, the HTML part has only the
/// template's kinds of tags, links only to the template's destinations, the `div` only its
/// one attribute, and the message is one `multipart/alternative` of a text and an HTML part.
/// Returns the number of messages built.
pub fn markdown_message(data: &[u8]) -> usize {
    let Some((_, rest)) = data.split_first() else {
        return 0;
    };
    let mut csv = b"email,name,x\n".to_vec();
    csv.extend_from_slice(rest);
    let opts = ListOptions {
        allow_duplicates: true,
        ..ListOptions::default()
    };
    let Ok(list) = RecipientList::from_reader(&csv[..], Path::new("fuzz.csv"), &opts) else {
        return 0;
    };
    let template = MessageTemplate::parse(MARKDOWN_TEMPLATE, Path::new("fuzz.hbs"), Path::new("/"))
        .expect("template");
    let mut built = 0;
    for row in list.iter() {
        let Ok(addr) = &row.status else { continue };
        let Ok(rendered) = template.render(&list.columns, &row.fields) else {
            continue;
        };
        let html = rendered.html.clone().expect("an HTML part");
        assert_markup_is_the_templates(&html);
        let Ok(msg) = build(rendered, addr, &MessageOptions::default()) else {
            continue;
        };
        let text = DataPayload::unstuff(msg.payload.as_bytes());
        let text = String::from_utf8_lossy(&text);
        let types: Vec<&str> = text
            .split("\r\n")
            .filter(|l| l.to_ascii_lowercase().starts_with("content-type:"))
            .collect();
        assert_eq!(types.len(), 3, "{text}");
        assert!(types[0].contains("multipart/alternative"), "{text}");
        built += 1;
    }
    built
}

/// Every tag in `html` is one the template makes: data adds none (text `<` is `&lt;`).
fn assert_markup_is_the_templates(html: &str) {
    let mut links = 0;
    for (i, _) in html.match_indices('<') {
        let tag = &html[i..];
        let tag = &tag[..tag.find('>').map_or(tag.len(), |e| e + 1)];
        let name: String = tag[1..]
            .trim_start_matches('/')
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        assert!(
            MARKDOWN_TAGS.contains(&name.as_str()),
            "tag {tag:?} in {html}"
        );
        if name == "a" && !tag.starts_with("</") {
            links += 1;
            let ok = tag == "<a href=\"https://acme.example/help\">"
                || (tag.starts_with("<a href=\"https://acme.example/u/")
                    && tag.matches('"').count() == 2);
            assert!(ok, "link {tag:?} in {html}");
        }
        if name == "div" && !tag.starts_with("</") {
            assert!(
                tag.starts_with("<div title=\"")
                    && tag.ends_with("\">")
                    && tag.matches('"').count() == 2,
                "div {tag:?} in {html}"
            );
        }
    }
    assert!(links <= 2, "{links} links in {html}");
}

/// Any bytes as a server's script: the SMTP client holds a session with a server that greets,
/// then answers each command (or each end of data) with the next piece of `data` (pieces are
/// separated by `0xff`; running out closes the connection). No panic, and the verdicts obey
/// a message is accepted only when its end of data got a piece starting with `2`,
/// and a 500–504 reply or a reply out of step is never judged a bounce.
///
/// An empty piece is a server that skips a reply: under PIPELINING no client can tell that
/// from the next reply in time (it is caught later, out of step), so the fuzzer can "break"
/// the acceptance invariant that way; such a finding is that known limit, not a bug.
pub fn smtp_session(data: &[u8]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(session(data.to_vec()));
}

async fn session(data: Vec<u8>) {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use mailmerge::delivery::{Action, Attempt, SessionFacts, decide};
    use mailmerge::smtp::{Connection, Dialect, Envelope, Timeouts, Transaction};

    let flags = data.first().copied().unwrap_or(0);
    let ends_ok = Arc::new(Mutex::new(Vec::<String>::new()));
    let (client, server) = tokio::io::duplex(4096);
    let srv = tokio::spawn(serve_pieces(server, data, ends_ok.clone()));
    let limits = Timeouts::uniform(Duration::from_secs(10));
    let Ok((mut conn, _)) = Connection::greet(client, limits).await else {
        return;
    };
    let dialect = [Dialect::Full, Dialect::NoAnnounce, Dialect::Lockstep][usize::from(flags % 3)];
    conn.set_dialect(dialect);
    if !matches!(conn.hello("me.test").await, Ok(r) if r.is_positive()) {
        return;
    }
    let payload = DataPayload::from_message(b"Subject: x\r\n\r\n.dot\r\n");
    let envs: Vec<Envelope> = (0..3)
        .map(|i| Envelope {
            from: "a@s.test".into(),
            to: format!("r{i}@d.test"),
        })
        .collect();
    for (i, env) in envs.iter().enumerate() {
        let next = envs
            .get(i + 1)
            .filter(|_| flags & 8 != 0)
            .map(|e| (e, &payload));
        let result = conn.send_then(env, &payload, next).await;
        let facts = SessionFacts {
            dialect,
            transactions: i + 1,
            health: conn.health(),
        };
        let action = decide(Attempt::from(&result), facts);
        match &result {
            Ok(Transaction::Accepted(_)) => {
                assert!(ends_ok.lock().unwrap().contains(&env.to), "{}", env.to);
            }
            Ok(Transaction::Rejected { reply, .. }) if (500..=504).contains(&reply.code) => {
                assert!(!matches!(action, Action::Bounce(_)), "{reply}");
            }
            Err(e) => assert!(!matches!(action, Action::Bounce(_)), "{e}"),
            Ok(_) => {}
        }
        if !action.effects().keep_session {
            break;
        }
    }
    drop(conn);
    let _ = srv.await;
}

/// The scripted server of [`smtp_session`]: greets, then answers every command line (and the
/// end of each message after a piece starting with `354`) with the next piece.
async fn serve_pieces(
    stream: tokio::io::DuplexStream,
    data: Vec<u8>,
    ends_ok: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let mut pieces = data.get(1..).unwrap_or_default().split(|&b| b == 0xff);
    let (mut rcpt, mut in_data) = (String::new(), false);
    if w.write_all(b"220 mx ESMTP\r\n").await.is_err() {
        return;
    }
    let mut line = Vec::new();
    loop {
        line.clear();
        if !matches!(r.read_until(b'\n', &mut line).await, Ok(n) if n > 0) {
            return;
        }
        let text = String::from_utf8_lossy(&line).to_ascii_uppercase();
        let mut end = false;
        if in_data {
            if line != b".\r\n" {
                continue;
            }
            end = true;
        } else if text.starts_with("RCPT") {
            rcpt = String::from_utf8_lossy(&line)
                .split(['<', '>'])
                .nth(1)
                .unwrap_or("")
                .to_string();
        } else if let Some(size) = text.strip_prefix("BDAT ") {
            let n: usize = size
                .split(' ')
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            let mut chunk = vec![0; n.min(1 << 16)];
            if r.read_exact(&mut chunk).await.is_err() {
                return;
            }
            end = true;
        }
        let Some(piece) = pieces.next() else {
            return;
        };
        if end && piece.first() == Some(&b'2') {
            ends_ok.lock().unwrap().push(rcpt.clone());
        }
        in_data = piece.starts_with(b"354");
        if w.write_all(piece).await.is_err() {
            return;
        }
    }
}
