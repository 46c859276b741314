//! Previews for `check --out DIR` and `run --dry-run --out DIR`: beside each `.eml` written,
//! an `.html` file a browser opens directly, showing the message's HTML part as the recipient
//! would see it, inline images included.
//!
//! The preview is made from the built message itself (parsed back with `mail-parser`), so it
//! shows exactly what would be sent: the HTML part, or the text part as HTML when there is
//! none, with every `cid:` URL of an inline image replaced by a `data:` URL of that image
//! (a browser cannot resolve `cid:` outside a mail client).

use std::path::{Path, PathBuf};

use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};

/// The preview's path: the `.eml` path with the extension `.html`.
pub fn path_for(eml: &Path) -> PathBuf {
    eml.with_extension("html")
}

/// Writes the preview of `message` (the bytes of the `.eml` at `eml`) beside it.
pub fn write_beside(eml: &Path, message: &[u8]) -> std::io::Result<()> {
    crate::files::write(&path_for(eml), html_preview(message).as_bytes())
}

/// An HTML page showing `message`: its HTML part (or its text part as HTML), images inline.
pub fn html_preview(message: &[u8]) -> String {
    let Some(parsed) = MessageParser::default().parse(message) else {
        return page("", "<p>(not a message)</p>");
    };
    let mut html = parsed
        .body_html(0)
        .map(|h| h.into_owned())
        .unwrap_or_default();
    for part in &parsed.parts {
        let (Some(id), Some(ct)) = (part.content_id(), part.content_type()) else {
            continue;
        };
        let cid = format!("cid:{}", id.trim_start_matches('<').trim_end_matches('>'));
        if !html.contains(&cid) {
            continue;
        }
        let mime = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("octet-stream"));
        let data = base64::engine::general_purpose::STANDARD.encode(part.contents());
        html = html.replace(&cid, &format!("data:{mime};base64,{data}"));
    }
    page(parsed.subject().unwrap_or(""), &html)
}

/// A page with title `title` (escaped) and body `html`, declared UTF-8.
fn page(title: &str, html: &str) -> String {
    let title = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!("<!DOCTYPE html>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n{html}")
}
