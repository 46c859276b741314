//! The text part, when the template does not write one: laid out from a Markdown body's
//! events, or derived from an HTML body by `html2text`. Either way it reads as plain text:
//! links as `text <url>`, tables in aligned columns, list items with `-` or numbers, and no
//! markup characters (`**`, `#`, `` ` ``) that the reader would have to skip.
//!
//! The Markdown layout is written here rather than by rendering the HTML part to text again,
//! because it runs for every row and must stay cheap (a Markdown message costs at most twice
//! a hand-written one; `benches/render.rs`); `html2text` parses a whole HTML document, which
//! costs several times that, and is used for HTML bodies and raw HTML blocks inside Markdown.

use pulldown_cmark::{Alignment, Event, HeadingLevel, Tag, TagEnd};
use unicode_width::UnicodeWidthStr;

/// Width given to `html2text`: wide enough that it never wraps. Paragraphs stay one line, as
/// in the Markdown layout; the reader's mail client wraps them, and a URL is never broken
/// (long lines are soft-broken by the quoted-printable encoding, RFC 2045 §6.7).
const WRAP: usize = 10_000;

/// Width of a thematic break (`---`) in the text part.
const RULE: usize = 40;

/// The text part of an HTML body.
pub(super) fn from_html(html: &str) -> String {
    let text = html2text::config::with_decorator(Decorator::default())
        .allow_width_overflow()
        .no_link_wrapping()
        .link_footnotes(false)
        .string_from_read(html.as_bytes(), WRAP)
        .unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// `html2text` decorations for a text part: no emphasis marks, links as `text <url>`, images
/// as their alt text.
#[derive(Clone, Debug, Default)]
struct Decorator {
    /// Destinations of the links being rendered, innermost last.
    links: Vec<String>,
}

impl html2text::render::TextDecorator for Decorator {
    type Annotation = ();

    fn decorate_link_start(&mut self, url: &str) -> (String, ()) {
        self.links.push(url.to_string());
        (String::new(), ())
    }
    fn decorate_link_end(&mut self) -> String {
        match self.links.pop() {
            Some(url) if shown(&url) => format!(" <{url}>"),
            _ => String::new(),
        }
    }
    fn decorate_em_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_em_end(&self) -> String {
        String::new()
    }
    fn decorate_strong_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strong_end(&self) -> String {
        String::new()
    }
    fn decorate_strikeout_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strikeout_end(&self) -> String {
        String::new()
    }
    fn decorate_code_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_code_end(&self) -> String {
        String::new()
    }
    fn decorate_preformat_first(&self) {}
    fn decorate_preformat_cont(&self) {}
    fn decorate_image(&mut self, _src: &str, title: &str) -> (String, ()) {
        (title.to_string(), ())
    }
    fn header_prefix(&self, _level: usize) -> String {
        String::new()
    }
    fn quote_prefix(&self) -> String {
        "> ".into()
    }
    fn unordered_item_prefix(&self) -> String {
        "- ".into()
    }
    fn ordered_item_prefix(&self, i: i64) -> String {
        format!("{i}. ")
    }
    fn make_subblock_decorator(&self) -> Self {
        Self::default()
    }
    fn finalise(&mut self, _urls: Vec<String>) -> Vec<html2text::render::TaggedLine<()>> {
        Vec::new()
    }
}

/// Whether a link's destination is worth showing after its text: not an anchor in the
/// message, not an inline image, not empty.
fn shown(url: &str) -> bool {
    !(url.is_empty()
        || url.starts_with('#')
        || url.get(..4).is_some_and(|s| s.eq_ignore_ascii_case("cid:")))
}

/// The text part of a Markdown body, from the events its HTML part was made from.
pub(super) fn from_markdown(events: &[Event<'_>]) -> String {
    let mut w = Writer::default();
    for event in events {
        w.event(event);
    }
    let mut out = w.out;
    let trimmed = out.trim_end().len();
    out.truncate(trimmed);
    out.push('\n');
    out
}

/// A table being collected: its rows are laid out when it ends.
#[derive(Default)]
struct Table {
    /// Column alignments.
    align: Vec<Alignment>,
    /// Rows of cells; the first is the header.
    rows: Vec<Vec<String>>,
}

/// Lays out text from Markdown events.
#[derive(Default)]
struct Writer {
    /// The text so far.
    out: String,
    /// Line prefixes in force (quotes, list-item indents, code indent), outermost first.
    prefixes: Vec<String>,
    /// Line breaks owed before the next text: 1 ends the line, 2 leaves a blank line.
    owed: usize,
    /// How many of the prefixes the owed blank line keeps (those in force where the block
    /// ended: a blank line inside a quote keeps its `>`, the one before the quote does not).
    blank_depth: Option<usize>,
    /// The next text starts a line (its prefixes not written yet).
    at_line_start: bool,
    /// Each open list's next number (`None`: a bullet list).
    lists: Vec<Option<u64>>,
    /// A list item's marker was just written: its first paragraph follows on that line.
    item_open: bool,
    /// Open links: destination and where their text starts (in `out` or the current cell).
    links: Vec<(String, usize)>,
    /// Open heading: level and where its text starts.
    heading: Option<(HeadingLevel, usize)>,
    /// The table being collected.
    table: Option<Table>,
    /// A raw HTML block being collected, turned into text when it ends.
    html: Option<String>,
}

impl Writer {
    /// Handles one event.
    fn event(&mut self, event: &Event<'_>) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(*tag),
            Event::Text(t) | Event::Code(t) => self.text(t),
            Event::Html(t) => {
                if let Some(buf) = self.html.as_mut() {
                    buf.push_str(t);
                } else {
                    let text = from_html(t);
                    self.block();
                    self.text(text.trim_end());
                }
            }
            Event::InlineHtml(t)
                if t.trim_start()
                    .get(..3)
                    .is_some_and(|s| s.eq_ignore_ascii_case("<br")) =>
            {
                self.line()
            }
            Event::SoftBreak | Event::HardBreak => self.hard_break(),
            Event::Rule => {
                self.block();
                self.text(&"-".repeat(RULE));
                self.block();
            }
            Event::TaskListMarker(done) => self.text(if *done { "[x] " } else { "[ ] " }),
            _ => {}
        }
    }

    /// A tag opens.
    fn start(&mut self, tag: &Tag<'_>) {
        match tag {
            Tag::Paragraph if !self.item_open => self.block(),
            Tag::Heading { level, .. } => {
                self.block();
                self.flush();
                self.heading = Some((*level, self.out.len()));
            }
            Tag::BlockQuote(_) => {
                self.block();
                self.prefixes.push("> ".into());
            }
            Tag::CodeBlock(_) => {
                self.block();
                self.prefixes.push("    ".into());
            }
            Tag::HtmlBlock => self.html = Some(String::new()),
            Tag::List(first) => {
                if self.lists.is_empty() {
                    self.block();
                } else {
                    self.line();
                }
                self.lists.push(*first);
            }
            Tag::Item => self.item(),
            Tag::Table(align) => {
                self.block();
                self.table = Some(Table {
                    align: align.clone(),
                    rows: Vec::new(),
                });
            }
            Tag::TableHead | Tag::TableRow => {
                if let Some(t) = self.table.as_mut() {
                    t.rows.push(Vec::new());
                }
            }
            Tag::TableCell => {
                if let Some(row) = self.table.as_mut().and_then(|t| t.rows.last_mut()) {
                    row.push(String::new());
                }
            }
            Tag::Link { dest_url, .. } => {
                if self.cell().is_none() {
                    // Owed line breaks go before the link's text, not into it.
                    self.flush();
                }
                let at = self.sink_len();
                self.links.push((dest_url.to_string(), at));
            }
            _ => {}
        }
    }

    /// A tag closes.
    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => self.block(),
            TagEnd::Heading(_) => {
                if let Some((level, at)) = self.heading.take() {
                    let width = self.out[at..].width();
                    let mark = match level {
                        HeadingLevel::H1 => "=",
                        HeadingLevel::H2 => "-",
                        _ => "",
                    };
                    if !mark.is_empty() {
                        self.line();
                        self.text(&mark.repeat(width.max(1)));
                    }
                }
                self.block();
            }
            TagEnd::BlockQuote(_) | TagEnd::CodeBlock => {
                self.prefixes.pop();
                self.block();
            }
            TagEnd::HtmlBlock => {
                if let Some(html) = self.html.take() {
                    let text = from_html(&html);
                    self.block();
                    self.text(text.trim_end());
                    self.block();
                }
            }
            TagEnd::List(_) => {
                self.lists.pop();
                if self.lists.is_empty() {
                    self.block();
                } else {
                    self.line();
                }
            }
            TagEnd::Item => {
                self.prefixes.pop();
                self.item_open = false;
                self.line();
            }
            TagEnd::Table => {
                if let Some(table) = self.table.take() {
                    for line in layout(&table) {
                        self.text(&line);
                        self.line();
                    }
                }
                self.block();
            }
            TagEnd::Link => {
                if let Some((dest, at)) = self.links.pop() {
                    let sink = self.sink();
                    let text = sink.get(at..).unwrap_or("").trim();
                    let same = text == dest || dest.strip_prefix("mailto:") == Some(text);
                    if shown(&dest) && !same {
                        sink.push_str(&format!(" <{dest}>"));
                    }
                }
            }
            _ => {}
        }
    }

    /// A list item: its marker on a new line, then an indent for its continuation lines.
    fn item(&mut self) {
        self.line();
        let marker = match self.lists.last_mut() {
            Some(Some(n)) => {
                let m = format!("{n}. ");
                *n += 1;
                m
            }
            _ => "- ".to_string(),
        };
        self.text(&marker);
        self.prefixes.push(" ".repeat(marker.len()));
        self.item_open = true;
    }

    /// Text: into the current table cell, or onto the current line (each `\n` in it starts a
    /// new line with the prefixes).
    fn text(&mut self, t: &str) {
        if let Some(cell) = self.cell() {
            cell.push_str(t);
            return;
        }
        for (i, part) in t.split('\n').enumerate() {
            if i > 0 {
                self.line();
            }
            if !part.is_empty() {
                self.flush();
                self.out.push_str(part);
                self.item_open = false;
            }
        }
    }

    /// The current table cell, if inside one.
    fn cell(&mut self) -> Option<&mut String> {
        self.table.as_mut()?.rows.last_mut()?.last_mut()
    }

    /// Where text goes now: the current cell or the output.
    fn sink(&mut self) -> &mut String {
        match self
            .table
            .as_mut()
            .and_then(|t| t.rows.last_mut())
            .and_then(|r| r.last_mut())
        {
            Some(cell) => cell,
            None => &mut self.out,
        }
    }

    /// The length of [`Writer::sink`].
    fn sink_len(&mut self) -> usize {
        self.sink().len()
    }

    /// Ends the current line (in a table cell: a space).
    fn line(&mut self) {
        if let Some(cell) = self.cell() {
            cell.push(' ');
            return;
        }
        if !self.out.is_empty() {
            self.owed = self.owed.max(1);
        }
        self.at_line_start = true;
    }

    /// A line break in the text: each one counts (two in a row leave a blank line).
    fn hard_break(&mut self) {
        if let Some(cell) = self.cell() {
            cell.push(' ');
            return;
        }
        self.owed += 1;
        self.at_line_start = true;
    }

    /// Ends the current block: a blank line before the next text.
    fn block(&mut self) {
        if !self.out.is_empty() {
            self.owed = 2;
            let depth = self.prefixes.len();
            self.blank_depth = Some(self.blank_depth.map_or(depth, |d| d.min(depth)));
        }
        self.at_line_start = true;
    }

    /// Writes the owed line breaks and the prefixes of a new line.
    fn flush(&mut self) {
        let prefix: String = self.prefixes.concat();
        for i in 0..self.owed {
            if i > 0 {
                let depth = self.blank_depth.unwrap_or(0).min(self.prefixes.len());
                self.out
                    .push_str(self.prefixes[..depth].concat().trim_end());
            }
            self.out.push('\n');
        }
        self.blank_depth = None;
        if self.owed > 0 || (self.at_line_start && self.out.is_empty()) {
            self.out.push_str(&prefix);
        }
        self.owed = 0;
        self.at_line_start = false;
    }
}

/// A table's lines: columns as wide as their widest cell, aligned as the table says, two
/// spaces apart, and a line of `-` under the header.
fn layout(table: &Table) -> Vec<String> {
    let columns = table.rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; columns];
    for row in &table.rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.trim().width());
        }
    }
    let mut lines = Vec::with_capacity(table.rows.len() + 1);
    for (r, row) in table.rows.iter().enumerate() {
        let cells: Vec<String> = (0..columns)
            .map(|i| {
                let cell = row.get(i).map_or("", |c| c.trim());
                let pad = widths[i] - cell.width();
                match table.align.get(i) {
                    Some(Alignment::Right) => format!("{}{cell}", " ".repeat(pad)),
                    Some(Alignment::Center) => {
                        format!("{}{cell}{}", " ".repeat(pad / 2), " ".repeat(pad - pad / 2))
                    }
                    _ => format!("{cell}{}", " ".repeat(pad)),
                }
            })
            .collect();
        lines.push(cells.join("  ").trim_end().to_string());
        if r == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            lines.push(rule.join("  "));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulldown_cmark::{Options, Parser};

    fn md(src: &str) -> String {
        let events: Vec<Event<'_>> =
            Parser::new_ext(src, Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH).collect();
        from_markdown(&events)
    }

    #[test]
    fn markdown_reads_as_plain_text() {
        let src = "# Your plan\n\nHello **Ann**, _welcome_ ~~back~~.\nSee [the docs](https://acme.example/docs) or <https://acme.example>.\n\n## Prices\n\n| Plan | Price |\n|:-----|------:|\n| Pro | 12 € |\n| Team plan | 120 € |\n\n- one\n- two\n  continued\n\n1. first\n2. second\n\n> quoted\n>\n> more\n\n    code line\n\n---\n\n![Acme logo](cid:x@y) `inline code`\n";
        assert_eq!(
            md(src),
            "Your plan\n=========\n\nHello Ann, welcome back.\nSee the docs <https://acme.example/docs> or https://acme.example.\n\nPrices\n------\n\nPlan       Price\n---------  -----\nPro         12 €\nTeam plan  120 €\n\n- one\n- two\n  continued\n\n1. first\n2. second\n\n> quoted\n>\n> more\n\n    code line\n\n----------------------------------------\n\nAcme logo inline code\n"
        );
    }

    #[test]
    fn loose_and_nested_lists_and_html_blocks() {
        assert_eq!(
            md(
                "- a\n- b\n  - c\n  - d\n\n1. x\n\n2. y\n\n<p>Raw <b>html</b> <a href=\"https://x.example\">link</a></p>\n\nend"
            ),
            "- a\n- b\n  - c\n  - d\n\n1. x\n\n2. y\n\nRaw html link <https://x.example>\n\nend\n"
        );
    }

    #[test]
    fn html_reads_as_plain_text() {
        let html = "<h1>Hello</h1><p>Dear <b>Ann</b>, see <a href=\"https://acme.example/a\">your account</a> and <a href=\"#top\">top</a>.</p><ul><li>one</li><li>two</li></ul><img src=\"cid:logo@x\" alt=\"Acme\"><table><tr><th>Plan</th><th>Price</th></tr><tr><td>Pro</td><td>12</td></tr></table><script>var x;</script>";
        let text = from_html(html);
        assert!(
            text.starts_with(
                "Hello\n\nDear Ann, see your account <https://acme.example/a> and top.\n"
            ),
            "{text}"
        );
        assert!(text.contains("- one\n- two"), "{text}");
        assert!(text.contains("Acme"), "{text}");
        assert!(text.contains("Plan") && text.contains("Pro"), "{text}");
        for mark in ["**", "#", "<", "var x"] {
            assert!(
                !text.replace("<https://acme.example/a>", "").contains(mark),
                "{mark:?} in {text}"
            );
        }
    }
}
