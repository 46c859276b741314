//! `--- markdown ---` bodies: the section is rendered by Handlebars first, then read as
//! Markdown (CommonMark with GitHub's tables, strikethrough and autolinks, by `pulldown-cmark`)
//! into the HTML part and, from the same events, the text part ([`super::plain`]).
//!
//! CSV values must stay text. Handlebars escapes every `{{value}}` with [`escape`], which
//! backslash-escapes each ASCII punctuation character (CommonMark §2.4: any of them may be
//! escaped, and an escaped one is never markup), starts every line of a multi-line value with
//! an invisible mark (so no line of a value can begin a heading, list, quote, code block or
//! HTML block) and wraps the value in two more marks (Unicode private-use characters, removed
//! from the output). The marks say, after parsing, which text came from the data:
//!
//! - in ordinary text the parser has already undone the escapes; GitHub-style autolinks are
//!   made only where the template itself wrote the scheme and host (a value never becomes a
//!   link, nor decides where one points);
//! - where the parser keeps text raw (code, raw HTML, `<…>` autolinks) the escapes are undone
//!   here, and in raw HTML the value is HTML-escaped, so it can never become a tag;
//! - a link or image whose destination holds a value must be `http`, `https` or `mailto` (or
//!   relative), or the row is refused: a value cannot make a `javascript:` link.
//!
//! `{{{triple-stash}}}` inserts a value unescaped, as Markdown: only for values you trust.

use pulldown_cmark::{CowStr, Event, LinkType, Options, Parser, Tag, TagEnd, TextMergeStream};

use super::RenderError;

/// Opens a value in the rendered Markdown.
const OPEN: char = '\u{E000}';
/// Closes a value.
const CLOSE: char = '\u{E001}';
/// Starts each line of a multi-line value after the first.
const LINE: char = '\u{E002}';

/// The Markdown extensions of a `--- markdown ---` section.
fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH
}

/// Handlebars escape function of the Markdown registry: the value as literal Markdown text,
/// marked as coming from the data (see the module documentation).
pub(super) fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + value.len() / 4 + 8);
    out.push(OPEN);
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            OPEN | CLOSE | LINE => {}
            '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                // A hard line break (CommonMark §6.7), then the mark that keeps the next line
                // from starting a block.
                out.push_str("\\\n");
                out.push(LINE);
            }
            c if c.is_ascii_punctuation() => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(CLOSE);
    out
}

/// The HTML and text parts of a rendered Markdown body.
pub(super) fn render(src: &str) -> Result<(String, String), RenderError> {
    let mut rewriter = Rewriter::default();
    let mut events = Vec::new();
    for event in TextMergeStream::new(Parser::new_ext(src, options())) {
        rewriter.event(event, &mut events)?;
    }
    let mut html = String::with_capacity(src.len() + src.len() / 2);
    pulldown_cmark::html::push_html(&mut html, events.iter().cloned());
    let text = super::plain::from_markdown(&events);
    Ok((html, text))
}

/// Turns the parser's events into the events both parts are made from: the marks removed,
/// raw text from values unescaped (and HTML-escaped in raw HTML), autolinks added.
#[derive(Default)]
struct Rewriter {
    /// Inside a value (its opening mark seen, not yet its closing one).
    in_value: bool,
    /// Inside a code block: text is raw.
    in_code: bool,
    /// Inside a `<…>` autolink: its text is raw.
    in_autolink: bool,
    /// Inside links and images: no autolinks there.
    in_link: usize,
}

impl Rewriter {
    /// Rewrites one event into `out`.
    fn event<'a>(&mut self, event: Event<'a>, out: &mut Vec<Event<'a>>) -> Result<(), RenderError> {
        match event {
            Event::Text(t) if self.in_code || self.in_autolink => {
                out.push(Event::Text(self.raw(&t, false).into()));
            }
            Event::Text(t) if self.in_link > 0 => out.push(Event::Text(self.plain(&t).0.into())),
            Event::Text(t) => self.autolink(&t, out),
            Event::Code(t) => out.push(Event::Code(self.raw(&t, false).into())),
            Event::Html(t) => out.push(Event::Html(self.raw(&t, true).into())),
            Event::InlineHtml(t) => out.push(Event::InlineHtml(self.raw(&t, true).into())),
            Event::Start(Tag::CodeBlock(kind)) => {
                self.in_code = true;
                let kind = match kind {
                    pulldown_cmark::CodeBlockKind::Fenced(info) => {
                        pulldown_cmark::CodeBlockKind::Fenced(unmark(&info).into())
                    }
                    indented => indented,
                };
                out.push(Event::Start(Tag::CodeBlock(kind)));
            }
            Event::End(TagEnd::CodeBlock) => {
                self.in_code = false;
                out.push(event);
            }
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                title,
                id,
            }) => {
                let dest_url = self.destination(link_type, &dest_url)?;
                self.in_link += 1;
                self.in_autolink = matches!(link_type, LinkType::Autolink | LinkType::Email);
                out.push(Event::Start(Tag::Link {
                    link_type,
                    dest_url,
                    title: unmark(&title).into(),
                    id,
                }));
            }
            Event::Start(Tag::Image {
                link_type,
                dest_url,
                title,
                id,
            }) => {
                let dest_url = self.destination(link_type, &dest_url)?;
                self.in_link += 1;
                out.push(Event::Start(Tag::Image {
                    link_type,
                    dest_url,
                    title: unmark(&title).into(),
                    id,
                }));
            }
            Event::End(TagEnd::Link | TagEnd::Image) => {
                self.in_link = self.in_link.saturating_sub(1);
                self.in_autolink = false;
                out.push(event);
            }
            other => out.push(other),
        }
        Ok(())
    }

    /// Text the parser already unescaped: the marks removed, with the byte ranges (in the
    /// result) that came from values.
    fn plain(&mut self, t: &str) -> (String, Vec<(usize, usize)>) {
        let mut out = String::with_capacity(t.len());
        let mut ranges = Vec::new();
        let mut start = self.in_value.then_some(0);
        for c in t.chars() {
            match c {
                OPEN => {
                    self.in_value = true;
                    start = Some(out.len());
                }
                CLOSE => {
                    self.in_value = false;
                    if let Some(s) = start.take() {
                        ranges.push((s, out.len()));
                    }
                }
                LINE => {}
                c => out.push(c),
            }
        }
        if let Some(s) = start {
            ranges.push((s, out.len()));
        }
        (out, ranges)
    }

    /// Text the parser kept raw (code, HTML, `<…>` autolinks): inside values the escapes
    /// are undone, and with `html` the value is HTML-escaped.
    fn raw(&mut self, t: &str, html: bool) -> String {
        let mut out = String::with_capacity(t.len());
        let mut chars = t.chars();
        while let Some(c) = chars.next() {
            match c {
                OPEN => self.in_value = true,
                CLOSE => self.in_value = false,
                LINE => {}
                '\\' if self.in_value => {
                    // Every backslash in a value is one `escape` added; a last one lost its
                    // character to the end of a code span.
                    if let Some(next) = chars.next() {
                        push_value_char(&mut out, next, html);
                    }
                }
                c if self.in_value => push_value_char(&mut out, c, html),
                c => out.push(c),
            }
        }
        out
    }

    /// A link's or image's destination without the marks. One that holds a value must be
    /// relative or `http`, `https` or `mailto`.
    fn destination<'a>(
        &mut self,
        link_type: LinkType,
        dest: &str,
    ) -> Result<CowStr<'a>, RenderError> {
        let from_data = dest.contains([OPEN, CLOSE]) || self.in_value;
        let url = match link_type {
            LinkType::Autolink | LinkType::Email => {
                let before = self.in_value;
                let url = self.raw(dest, false);
                self.in_value = before;
                url
            }
            _ => unmark(dest),
        };
        if from_data && !safe_destination(&url) {
            return Err(RenderError::UnsafeLink { url });
        }
        Ok(url.into())
    }

    /// Ordinary text: the marks removed, and GitHub-style autolinks made where the template
    /// wrote a URL or address itself.
    fn autolink<'a>(&mut self, t: &str, out: &mut Vec<Event<'a>>) {
        let (text, values) = self.plain(t);
        let from_value = |s: usize, e: usize| values.iter().any(|&(vs, ve)| vs < e && s < ve);
        let mut finder = linkify::LinkFinder::new();
        finder.url_must_have_scheme(false);
        let mut done = 0;
        for link in finder.links(&text) {
            let (s, e) = (link.start(), link.end());
            let found = link.as_str();
            let dest = match link.kind() {
                linkify::LinkKind::Email => {
                    if from_value(s, e) {
                        continue;
                    }
                    format!("mailto:{found}")
                }
                _ => {
                    let lower = found.to_ascii_lowercase();
                    let (dest, rest) =
                        if lower.starts_with("http://") || lower.starts_with("https://") {
                            (found.to_string(), found.find("://").map_or(0, |i| i + 3))
                        } else if lower.starts_with("www.") {
                            (format!("http://{found}"), 0)
                        } else {
                            continue;
                        };
                    // Scheme and host must be the template's own.
                    let host_end = found[rest..]
                        .find(['/', '?', '#'])
                        .map_or(found.len(), |i| rest + i);
                    if from_value(s, s + host_end) {
                        continue;
                    }
                    dest
                }
            };
            if s > done {
                out.push(Event::Text(text[done..s].to_string().into()));
            }
            out.push(Event::Start(Tag::Link {
                link_type: LinkType::Autolink,
                dest_url: dest.into(),
                title: "".into(),
                id: "".into(),
            }));
            out.push(Event::Text(found.to_string().into()));
            out.push(Event::End(TagEnd::Link));
            done = e;
        }
        if done < text.len() {
            out.push(Event::Text(text[done..].to_string().into()));
        }
    }
}

/// One character of a value in raw text, HTML-escaped with `html`.
fn push_value_char(out: &mut String, c: char, html: bool) {
    match c {
        '&' if html => out.push_str("&amp;"),
        '<' if html => out.push_str("&lt;"),
        '>' if html => out.push_str("&gt;"),
        '"' if html => out.push_str("&quot;"),
        '\'' if html => out.push_str("&#39;"),
        c => out.push(c),
    }
}

/// `s` without the marks.
fn unmark(s: &str) -> String {
    s.chars()
        .filter(|c| !matches!(*c, OPEN | CLOSE | LINE))
        .collect()
}

/// True for a relative URL or one whose scheme is `http`, `https` or `mailto`. Browsers drop
/// tabs and line breaks anywhere in a URL and leading controls and spaces, so they are
/// dropped here before the scheme is read.
fn safe_destination(url: &str) -> bool {
    let cleaned: String = url
        .trim_start_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let end = cleaned.find(['/', '?', '#']).unwrap_or(cleaned.len());
    match cleaned[..end].find(':') {
        None => true,
        Some(colon) => {
            let scheme = cleaned[..colon].to_ascii_lowercase();
            matches!(scheme.as_str(), "http" | "https" | "mailto")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders `template` with `{{v}}` replaced by the escaped `value`, as Handlebars does.
    fn with(template: &str, value: &str) -> (String, String) {
        render(&template.replace("{{v}}", &escape(value))).unwrap()
    }

    #[test]
    fn values_are_text_in_every_context() {
        let hostile =
            "<script>alert(1)</script> [x](javascript:alert(1)) **bold** # h &amp; `c` | \\";
        let (html, text) = with("Hi {{v}}!", hostile);
        assert_eq!(
            html,
            "<p>Hi &lt;script&gt;alert(1)&lt;/script&gt; [x](javascript:alert(1)) **bold** # h &amp;amp; `c` | \\!</p>\n"
        );
        assert_eq!(text, format!("Hi {hostile}!\n"));
        // Inside the template's raw HTML, code spans, code blocks and table cells.
        let (html, _) = with(
            "<div title=\"{{v}}\">{{v}}</div>\n",
            "\"><img src=x onerror=alert(1)>",
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(
            html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        let (html, _) = with("A `{{v}}` span\n\n```\n{{v}}\n```\n", "a\\b <i>");
        assert!(html.contains("<code>a\\b &lt;i&gt;</code> span"), "{html}");
        assert!(
            html.contains("<pre><code>a\\b &lt;i&gt;\n</code></pre>"),
            "{html}"
        );
        let (html, _) = with("| a | b |\n|---|---|\n| {{v}} | 2 |\n", "x | y");
        assert!(html.contains("<td>x | y</td><td>2</td>"), "{html}");
    }

    #[test]
    fn a_multi_line_value_never_starts_a_block() {
        let (html, text) = with(
            "{{v}}\n",
            "one\n# two\n    three\n- four\n\n<div>five</div>",
        );
        assert_eq!(
            html,
            "<p>one<br />\n# two<br />\n    three<br />\n- four<br />\n<br />\n&lt;div&gt;five&lt;/div&gt;</p>\n"
        );
        assert_eq!(text, "one\n# two\n    three\n- four\n\n<div>five</div>\n");
    }

    #[test]
    fn links_come_from_the_template_only() {
        // A value that is a URL or an address stays text.
        let (html, _) = with(
            "Visit {{v}} now",
            "https://evil.example/x and www.evil.example and a@evil.example",
        );
        assert!(!html.contains("<a "), "{html}");
        // The template's own URLs and addresses are linked, with a value in the path too.
        let (html, text) = with(
            "See https://acme.example/u/{{v}} or www.acme.example, mail help@acme.example.",
            "a b",
        );
        assert!(
            html.contains("<a href=\"https://acme.example/u/a\">https://acme.example/u/a</a> b"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"http://www.acme.example\">www.acme.example</a>,"),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"mailto:help@acme.example\">help@acme.example</a>."),
            "{html}"
        );
        assert!(
            text.contains(
                "https://acme.example/u/a b or www.acme.example <http://www.acme.example>"
            ),
            "{text}"
        );
        // The host from a value: no link.
        let (html, _) = with("https://{{v}}/path", "evil.example");
        assert!(!html.contains("<a "), "{html}");
        // A destination from the data: http(s) and mailto only.
        let (html, text) = with("[profile]({{v}})", "https://acme.example/p?id=1&x=2");
        assert_eq!(
            html,
            "<p><a href=\"https://acme.example/p?id=1&amp;x=2\">profile</a></p>\n"
        );
        assert_eq!(text, "profile <https://acme.example/p?id=1&x=2>\n");
        for bad in [
            "javascript:alert(1)",
            "JavaScript:alert(1)",
            "data:text/html,x",
            "vbscript:x",
            "%0ajavascript:x",
        ] {
            let e = render(&format!("[x]({})", escape(bad))).unwrap_err();
            assert!(matches!(e, RenderError::UnsafeLink { .. }), "{bad}: {e:?}");
            let e = render(&format!("![x]({})", escape(bad))).unwrap_err();
            assert!(matches!(e, RenderError::UnsafeLink { .. }), "{bad}: {e:?}");
        }
        // White space in a destination is no link at all.
        for bad in [" javascript:alert(1)", "java\tscript:x"] {
            let (html, _) = render(&format!("[x]({})", escape(bad))).unwrap();
            assert!(!html.contains("<a "), "{html}");
        }
        // The template's own destinations are its business.
        assert!(render("[x](cid:logo@x)").is_ok());
    }

    #[test]
    fn tables_strikethrough_and_commonmark() {
        let (html, _) = render("# Title\n\n~~old~~ **new** <https://acme.example>\n\n| a | b |\n|:--|--:|\n| 1 | 2 |\n").unwrap();
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(html.contains("<del>old</del> <strong>new</strong> <a href=\"https://acme.example\">https://acme.example</a>"), "{html}");
        assert!(html.contains("<table>"), "{html}");
        assert!(
            html.contains("<td style=\"text-align: right\">2</td>"),
            "{html}"
        );
    }
}
