//! The message template: a header block, a blank line, then the body, all Handlebars.
//!
//! Parsed and compiled once, rendered per recipient. Header values and the text body are
//! rendered without HTML escaping (a subject must never read `&amp;`); the HTML body is escaped;
//! a Markdown body is escaped for Markdown and then made into the HTML and text parts
//! ([`markdown`]). Before anything is sent, every variable the template uses is checked against
//! the CSV columns, so a typo stops the run with the template line instead of producing blank
//! messages, and the template's shape is checked so that no row can make rendering recurse or
//! grow without bound ([`bounds`]).
//!
//! Format (see docs/templates.md):
//!
//! ```text
//! From: Acme Billing <billing@acme.example>
//! To: {{name}} <{{email}}>
//! Subject: Your invoice {{invoice}}
//! Attachment: invoices/{{invoice}}.pdf
//!
//! --- text ---
//! Hello {{name}}, ...
//! --- html ---
//! <p>Hello {{name}}, ...</p> <img src="{{inline "logo.png"}}" alt="Acme">
//! ```
//!
//! or, instead of both parts, `--- markdown ---` and a Markdown body. Without section markers
//! the whole body is the text part. With an HTML or Markdown body and no `--- text ---`, the
//! text part is derived from it ([`plain`]), so such a message is always
//! `multipart/alternative`.

mod bounds;
mod flat;
mod inline;
mod markdown;
mod plain;

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Context, Handlebars, JsonValue, Template};
use thiserror::Error;

pub use bounds::{MAX_DEPTH, MAX_EACH_NESTING, MAX_EXPANDED, MAX_RENDERED};
pub use inline::{InlineImage, MAX_IMAGE};

use crate::folder::AttachmentDir;

/// Registry names of the body sections (see [`bounds::RESERVED`]: no partial can name them).
const TEXT: &str = "mailmerge:text";
/// The HTML section's registry name.
const HTML: &str = "mailmerge:html";
/// The Markdown section's registry name.
const MARKDOWN: &str = "mailmerge:markdown";

/// Header names the message stage generates itself; a template may not set them.
const RESERVED_HEADERS: &[&str] = &[
    "message-id",
    "date",
    "mime-version",
    "bcc",
    "return-path",
    "received",
    "dkim-signature",
];

/// Headers holding address lists: CSV values in them are quoted when they contain address
/// syntax, so a value can never add or change an address (see [`address_escape`]).
const ADDRESS_HEADERS: &[&str] = &["from", "to", "cc", "reply-to", "sender"];

/// True for header names the message stage generates or that only MTAs may add.
fn is_reserved(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&lower.as_str()) || lower.starts_with("content-")
}

/// Escaping for values inserted into address headers (`{{name}} <{{email}}>`): a value with
/// RFC 5322 specials (`()<>[]:;\,"`) becomes one quoted string, so "Bob <x@evil.example>, Ann"
/// is a display name, not two more recipients. Plain addresses and names pass unchanged.
pub fn address_escape(value: &str) -> String {
    if !value.contains(['(', ')', '<', '>', '[', ']', ':', ';', '\\', ',', '"']) {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Pseudo-header naming a file to attach (repeatable, templated, relative to the template).
pub const ATTACHMENT_HEADER: &str = "Attachment";

/// Built-in helpers whose bare name is not a variable.
const HELPERS: &[&str] = &[
    "if", "unless", "each", "with", "lookup", "log", "eq", "ne", "gt", "gte", "lt", "lte", "and",
    "or", "not", "len", "else", "this", "inline",
];

/// The template cannot be used; nothing is sent.
#[derive(Debug, Error)]
pub enum TemplateError {
    /// File unreadable.
    #[error("cannot read template {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The header block / body layout is wrong.
    #[error("{path}:{line}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// Line in the file.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Handlebars syntax error.
    #[error("{path}:{line}:{column}: template syntax error: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Line in the file.
        line: usize,
        /// Column.
        column: usize,
        /// Parser message.
        reason: String,
    },
    /// A variable that is not a CSV column.
    #[error(
        "{path}:{line}: the template uses {{{{{variable}}}}} but the CSV has no such column (columns: {columns})"
    )]
    UnknownColumn {
        /// The file.
        path: PathBuf,
        /// Line in the file.
        line: usize,
        /// Variable name.
        variable: String,
        /// Columns the CSV has.
        columns: String,
    },
}

/// One recipient's row cannot be rendered: the row becomes `invalid`.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A column used outside any conditional is empty in this row.
    #[error("column {column:?} is empty but the template needs it (template line {line})")]
    MissingValue {
        /// Column.
        column: String,
        /// Template line.
        line: usize,
    },
    /// A CSV value would put a line break or control character into a header.
    #[error("header {header} would contain a line break or control character (from the CSV data)")]
    HeaderInjection {
        /// Header name.
        header: String,
    },
    /// Handlebars failed at render time.
    #[error("template render failed: {0}")]
    Render(String),
    /// The rendered message would be larger than [`MAX_RENDERED`] (e.g. loops over a wide
    /// row with long values).
    #[error("the rendered message would be larger than {limit} bytes (the limit per message)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A link or image in a Markdown body whose destination comes from the CSV data has a
    /// scheme other than http, https or mailto.
    #[error(
        "a link in the Markdown body would point to {url:?}, from the CSV data: only http, https and mailto links may come from the data"
    )]
    UnsafeLink {
        /// The destination.
        url: String,
    },
}

/// Where a variable is used.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VarUse {
    /// The column name.
    name: String,
    /// File line of the use.
    line: usize,
    /// Used only inside a conditional or loop: may be empty.
    optional: bool,
    /// Where it is written: the template file, or the option that added a header
    /// (`--list-unsubscribe`); set after collection, for error messages.
    origin: Option<PathBuf>,
}

/// A header line of the template.
#[derive(Clone, Debug)]
struct HeaderTemplate {
    /// The header's name as written.
    name: String,
    /// Its registry name.
    key: String,
    /// Compiled in the `addr` registry (an address-list header).
    address: bool,
}

/// A compiled template, shared by all rendering threads.
#[derive(Debug)]
pub struct MessageTemplate {
    /// Headers, attachments and the text body: no escaping.
    plain: Handlebars<'static>,
    /// The HTML body: HTML escaping.
    html: Handlebars<'static>,
    /// Address headers: values quoted when they hold address syntax.
    addr: Handlebars<'static>,
    /// The Markdown body: Markdown escaping ([`markdown::escape`]).
    md: Handlebars<'static>,
    /// Header lines in template order.
    headers: Vec<HeaderTemplate>,
    /// Registry names of the `Attachment:` lines.
    attachments: Vec<String>,
    /// A `--- text ---` section was compiled.
    has_text: bool,
    /// A `--- html ---` section was compiled.
    has_html: bool,
    /// A `--- markdown ---` section was compiled.
    has_markdown: bool,
    /// `{{inline}}` uses found while compiling: (file name, file line).
    inline_uses: Vec<(String, usize)>,
    /// The inline images, read once when the template is loaded.
    images: Vec<Arc<InlineImage>>,
    /// Variables used, for the column check.
    vars: Vec<VarUse>,
    /// The template's folder.
    base_dir: PathBuf,
    /// The template file (for messages).
    path: PathBuf,
    /// The template text as read (for the journal's fingerprint of the message).
    source: String,
    /// The parts that are only text and column values, by registry name ([`flat`]).
    flat: HashMap<String, flat::Flat>,
}

/// A rendered message, ready for the message builder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// Headers in template order (name as written, value single-line).
    pub headers: Vec<(String, String)>,
    /// text/plain body.
    pub text: Option<String>,
    /// text/html body.
    pub html: Option<String>,
    /// Files to attach (resolved against the template's folder).
    pub attachments: Vec<PathBuf>,
    /// Images the HTML body shows through `cid:` URLs (only those this row's HTML uses).
    pub inline: Vec<Arc<InlineImage>>,
}

impl Rendered {
    /// First header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn registry(escape: bool) -> Handlebars<'static> {
    let mut h = Handlebars::new();
    h.set_strict_mode(true);
    if !escape {
        h.register_escape_fn(handlebars::no_escape);
    }
    h
}

impl MessageTemplate {
    /// Loads and compiles a template file.
    pub fn from_path(path: &Path) -> Result<Self, TemplateError> {
        let src = std::fs::read_to_string(path).map_err(|source| TemplateError::Io {
            path: path.into(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&src, path, &base)
    }

    /// The folder `Attachment:` values are relative to unless `--attachments-dir` says
    /// otherwise: the template's own.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Compiles template source; `path` is for messages, `base_dir` resolves attachments.
    ///
    /// The steps: find the blank line that ends the header block, unfold and compile the
    /// headers, check From and To are there, then split the body into its text and HTML
    /// sections and compile those.
    pub fn parse(src: &str, path: &Path, base_dir: &Path) -> Result<Self, TemplateError> {
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        let lines: Vec<&str> = src.split('\n').map(|l| l.trim_end_matches('\r')).collect();
        let Some(blank) = lines.iter().position(|l| l.is_empty()) else {
            return Err(format_error(
                path,
                lines.len(),
                "no blank line after the header block (a template is headers, a blank line, then the body)".into(),
            ));
        };
        let header_lines = unfold_headers(&lines[..blank], path)?;
        let mut template = Self::empty(src, path, base_dir);
        for (line, text) in &header_lines {
            template.compile_header(*line, text)?;
        }
        template.require_headers()?;
        for section in body_sections(&lines, blank + 1) {
            template.compile_section(section)?;
        }
        template.load_images()?;
        template.flatten();
        Ok(template)
    }

    /// Reads every image `{{inline}}` names, once, from the template's folder, and gives the
    /// HTML and Markdown registries the helper that writes their `cid:` URLs.
    fn load_images(&mut self) -> Result<(), TemplateError> {
        let mut urls = HashMap::new();
        if !self.inline_uses.is_empty() {
            let folder = AttachmentDir::new(&self.base_dir);
            for (name, line) in std::mem::take(&mut self.inline_uses) {
                if urls.contains_key(&name) {
                    continue;
                }
                let image = InlineImage::load(&folder, &name)
                    .map_err(|reason| format_error(&self.path, line, reason))?;
                urls.insert(name, image.url());
                // The same picture under two names is one part.
                if !self.images.iter().any(|i| i.content_id == image.content_id) {
                    self.images.push(Arc::new(image));
                }
            }
        }
        let helper = inline::InlineHelper {
            urls: Arc::new(urls),
        };
        self.html
            .register_helper(inline::HELPER, Box::new(helper.clone()));
        self.md.register_helper(inline::HELPER, Box::new(helper));
        Ok(())
    }

    /// A template with nothing compiled yet: the four registries (text, HTML-escaped,
    /// address-quoting, Markdown-escaped) are filled by [`MessageTemplate::parse`]'s steps.
    fn empty(src: &str, path: &Path, base_dir: &Path) -> Self {
        let mut addr = registry(false);
        addr.register_escape_fn(address_escape);
        let mut md = registry(false);
        md.register_escape_fn(markdown::escape);
        Self {
            plain: registry(false),
            html: registry(true),
            addr,
            md,
            headers: Vec::new(),
            attachments: Vec::new(),
            has_text: false,
            has_html: false,
            has_markdown: false,
            inline_uses: Vec::new(),
            images: Vec::new(),
            vars: Vec::new(),
            base_dir: base_dir.to_path_buf(),
            path: path.to_path_buf(),
            source: src.to_string(),
            flat: HashMap::new(),
        }
    }

    /// Finds the parts [`flat`] renders without the engine; run once every part is compiled.
    fn flatten(&mut self) {
        let parts = self
            .headers
            .iter()
            .map(|h| (h.key.as_str(), self.registry_of(h)))
            .chain(self.attachments.iter().map(|k| (k.as_str(), &self.plain)))
            .chain([
                (TEXT, &self.plain),
                (HTML, &self.html),
                (MARKDOWN, &self.md),
            ]);
        self.flat = parts
            .filter_map(|(key, reg)| {
                Some((key.to_string(), flat::Flat::of(reg.get_template(key)?)?))
            })
            .collect();
    }

    /// The registry a header is compiled in.
    fn registry_of(&self, h: &HeaderTemplate) -> &Handlebars<'static> {
        if h.address { &self.addr } else { &self.plain }
    }

    /// Compiles one (unfolded) header line of the template, `Name: value` at file line
    /// `line`: a header of the message, or an `Attachment:` naming a file to attach.
    fn compile_header(&mut self, line: usize, text: &str) -> Result<(), TemplateError> {
        let Some((name, value)) = text.split_once(':') else {
            return Err(format_error(
                &self.path,
                line,
                format!("not a header line (Name: value): {text:?}"),
            ));
        };
        let name = name.trim_end();
        if let Some(reason) = header_name_problem(name) {
            return Err(format_error(&self.path, line, reason));
        }
        let key = format!(
            "{}h{}",
            bounds::RESERVED,
            self.headers.len() + self.attachments.len()
        );
        let address = ADDRESS_HEADERS.contains(&name.to_ascii_lowercase().as_str());
        let reg = if address {
            &mut self.addr
        } else {
            &mut self.plain
        };
        let source = Source {
            text: value.trim(),
            path: &self.path,
            first_line: line,
        };
        compile_into(reg, &key, &source, &mut self.vars, None)?;
        if name.eq_ignore_ascii_case(ATTACHMENT_HEADER) {
            self.attachments.push(key);
        } else {
            self.headers.push(HeaderTemplate {
                name: name.to_string(),
                key,
                address,
            });
        }
        Ok(())
    }

    /// Every message needs a From and a To header; checked once the header block is read.
    fn require_headers(&self) -> Result<(), TemplateError> {
        for required in ["From", "To"] {
            if !self
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(required))
            {
                return Err(format_error(
                    &self.path,
                    1,
                    format!("the header block needs a {required}: header"),
                ));
            }
        }
        Ok(())
    }

    /// Compiles one body section into its registry; each kind may appear once, and a
    /// Markdown body (which makes the HTML part) not together with an HTML one.
    fn compile_section(&mut self, section: Section) -> Result<(), TemplateError> {
        let marker = section.first_line - 1;
        let (seen, reg, key, images) = match section.kind {
            SectionKind::Text => (&mut self.has_text, &mut self.plain, TEXT, None),
            SectionKind::Html => (
                &mut self.has_html,
                &mut self.html,
                HTML,
                Some(&mut self.inline_uses),
            ),
            SectionKind::Markdown => (
                &mut self.has_markdown,
                &mut self.md,
                MARKDOWN,
                Some(&mut self.inline_uses),
            ),
        };
        if *seen {
            return Err(format_error(
                &self.path,
                marker,
                format!("second --- {} --- section", section.kind.name()),
            ));
        }
        *seen = true;
        if self.has_html && self.has_markdown {
            return Err(format_error(
                &self.path,
                marker,
                "a template has --- html --- or --- markdown ---, not both (the Markdown body makes the HTML part)".into(),
            ));
        }
        let newline = if section.kind == SectionKind::Markdown {
            "\n"
        } else {
            "\r\n"
        };
        let body = section.lines.join(newline);
        let source = Source {
            text: &body,
            path: &self.path,
            first_line: section.first_line,
        };
        compile_into(reg, key, &source, &mut self.vars, images)
    }

    /// The template text as read from the file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Adds a header template given by an option (e.g. `--list-unsubscribe`), rendered per
    /// recipient like the template's own headers. `origin` names the option in error messages.
    /// Refused when the template already sets that header (one of the two would be lost).
    pub fn add_header(
        &mut self,
        name: &str,
        value: &str,
        origin: &str,
    ) -> Result<(), TemplateError> {
        let origin_path = PathBuf::from(origin);
        if self
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
        {
            return Err(TemplateError::Format {
                path: self.path.clone(),
                line: 1,
                reason: format!("header {name} is set both here and by {origin}: keep one"),
            });
        }
        let key = format!(
            "{}x{}",
            bounds::RESERVED,
            self.headers.len() + self.attachments.len()
        );
        let source = Source {
            text: value,
            path: &origin_path,
            first_line: 1,
        };
        compile_into(&mut self.plain, &key, &source, &mut self.vars, None)?;
        self.headers.push(HeaderTemplate {
            name: name.to_string(),
            key,
            address: false,
        });
        self.flatten();
        Ok(())
    }

    /// Refuses the template when it uses a variable the CSV does not have (exit 2, nothing sent).
    pub fn check_columns(&self, columns: &[String]) -> Result<(), TemplateError> {
        for v in &self.vars {
            if !columns.iter().any(|c| c == &v.name) {
                return Err(TemplateError::UnknownColumn {
                    path: v.origin.clone().unwrap_or_else(|| self.path.clone()),
                    line: v.line,
                    variable: v.name.clone(),
                    columns: columns.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Builds the per-row data handed to Handlebars: every column as a string.
    pub fn data(columns: &[String], fields: &[String]) -> JsonValue {
        let map: serde_json::Map<String, JsonValue> = columns
            .iter()
            .zip(fields)
            .map(|(c, f)| (c.clone(), JsonValue::String(f.clone())))
            .collect();
        JsonValue::Object(map)
    }

    /// Renders one recipient's message. Whatever this row's data does to the template engine,
    /// the answer is the row's message or the reason it has none: the template's shape is
    /// bounded when it is loaded, the output while rendering, and a panic in the engine on
    /// this row's data becomes this row's error, not the run's end.
    pub fn render(&self, columns: &[String], fields: &[String]) -> Result<Rendered, RenderError> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.render_row(columns, fields)
        }))
        .unwrap_or_else(|_| {
            Err(RenderError::Render(
                "the template engine failed on this row's data".into(),
            ))
        })
    }

    /// [`MessageTemplate::render`]: the values checked, then every part rendered against one
    /// [`bounds::Budget`].
    fn render_row(&self, columns: &[String], fields: &[String]) -> Result<Rendered, RenderError> {
        self.check_values(columns, fields)?;
        let row = RowData {
            columns,
            fields,
            ctx: OnceCell::new(),
        };
        let mut budget = bounds::Budget::new();
        let mut headers = Vec::with_capacity(self.headers.len());
        for h in &self.headers {
            let value = self.part(self.registry_of(h), &h.key, &row, &mut budget)?;
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(RenderError::HeaderInjection {
                    header: h.name.clone(),
                });
            }
            headers.push((h.name.clone(), value.trim().to_string()));
        }
        let mut attachments = Vec::with_capacity(self.attachments.len());
        for key in &self.attachments {
            let value = self.part(&self.plain, key, &row, &mut budget)?;
            if value.chars().any(char::is_control) {
                return Err(RenderError::HeaderInjection {
                    header: ATTACHMENT_HEADER.into(),
                });
            }
            // Resolved inside the attachments folder when the message is built.
            attachments.push(PathBuf::from(value.trim()));
        }
        let (text, html) = self.bodies(&row, &mut budget)?;
        let inline = match &html {
            Some(html) => self
                .images
                .iter()
                .filter(|i| html.contains(&i.url()))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        Ok(Rendered {
            headers,
            text,
            html,
            attachments,
            inline,
        })
    }

    /// An empty value for a variable used outside any conditional makes the row invalid.
    fn check_values(&self, columns: &[String], fields: &[String]) -> Result<(), RenderError> {
        for v in self.vars.iter().filter(|v| !v.optional) {
            let empty = columns
                .iter()
                .position(|c| c == &v.name)
                .and_then(|i| fields.get(i))
                .is_none_or(|f| f.trim().is_empty());
            if empty {
                return Err(RenderError::MissingValue {
                    column: v.name.clone(),
                    line: v.line,
                });
            }
        }
        Ok(())
    }

    /// The text and HTML bodies: as written, made from the Markdown body, and the text part
    /// derived from the HTML one when the template has none. Line ends are CRLF.
    fn bodies(
        &self,
        row: &RowData<'_>,
        budget: &mut bounds::Budget,
    ) -> Result<(Option<String>, Option<String>), RenderError> {
        let mut text = match self.has_text {
            true => Some(self.part(&self.plain, TEXT, row, budget)?),
            false => None,
        };
        let mut html = match self.has_html {
            true => Some(self.part(&self.html, HTML, row, budget)?),
            false => None,
        };
        if self.has_markdown {
            let src = self.part(&self.md, MARKDOWN, row, budget)?;
            let (md_html, md_text) = markdown::render(&src)?;
            budget.charge(md_html.len() + md_text.len())?;
            html = Some(crlf(&md_html));
            text = text.or(Some(crlf(&md_text)));
        }
        if let (None, Some(h)) = (&text, &html) {
            let derived = plain::from_html(h);
            budget.charge(derived.len())?;
            text = Some(crlf(&derived));
        }
        Ok((text, html))
    }

    /// Renders part `key` of `reg` for one row: by substitution when it is [`flat`], else by
    /// the engine (the row's data built once, on first need).
    fn part(
        &self,
        reg: &Handlebars<'static>,
        key: &str,
        row: &RowData<'_>,
        budget: &mut bounds::Budget,
    ) -> Result<String, RenderError> {
        // The text registry escapes nothing: its values are copied without a call.
        let escape = match std::ptr::eq(reg, &self.plain) {
            true => flat::Escape::None,
            false => flat::Escape::With(reg.get_escape_fn()),
        };
        if let Some(rendered) = self
            .flat
            .get(key)
            .and_then(|f| f.render(row.columns, row.fields, &escape, budget))
        {
            return rendered;
        }
        let ctx = row
            .ctx
            .get_or_init(|| Context::from(Self::data(row.columns, row.fields)));
        budget.render(reg, key, ctx)
    }

    /// Variables the template uses, with the first line each appears on.
    pub fn variables(&self) -> BTreeMap<&str, usize> {
        let mut out = BTreeMap::new();
        for v in &self.vars {
            out.entry(v.name.as_str()).or_insert(v.line);
        }
        out
    }
}

/// One row's values while its message renders.
struct RowData<'a> {
    /// The list's columns.
    columns: &'a [String],
    /// This row's fields.
    fields: &'a [String],
    /// The engine's data for the row, built only if a part needs the engine.
    ctx: OnceCell<Context>,
}

/// A [`TemplateError::Format`]: the template's layout is wrong at `line`.
fn format_error(path: &Path, line: usize, reason: String) -> TemplateError {
    TemplateError::Format {
        path: path.into(),
        line,
        reason,
    }
}

/// The header block as logical lines, each with the file line it starts on: RFC 5322
/// folding undone (a continuation line starts with white space and joins the line before).
fn unfold_headers(lines: &[&str], path: &Path) -> Result<Vec<(usize, String)>, TemplateError> {
    let mut logical: Vec<(usize, String)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with([' ', '\t']) {
            match logical.last_mut() {
                Some((_, prev)) => {
                    prev.push(' ');
                    prev.push_str(l.trim_start());
                }
                None => {
                    return Err(format_error(
                        path,
                        i + 1,
                        "continuation line before any header".into(),
                    ));
                }
            }
        } else {
            logical.push((i + 1, (*l).to_string()));
        }
    }
    Ok(logical)
}

/// Why `name` cannot be set by a template header, if it cannot: not a valid field name, or
/// a header mailmerge generates itself.
fn header_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || !name.bytes().all(|b| (33..=126).contains(&b) && b != b':') {
        return Some(format!("invalid header name {name:?}"));
    }
    if is_reserved(name) {
        return Some(format!(
            "header {name} is generated by mailmerge and cannot be set in the template"
        ));
    }
    None
}

/// The kind of a body section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SectionKind {
    /// `--- text ---`: the text/plain part.
    Text,
    /// `--- html ---`: the text/html part.
    Html,
    /// `--- markdown ---`: both parts, from Markdown.
    Markdown,
}

impl SectionKind {
    /// The name in the section's marker.
    fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Html => "html",
            Self::Markdown => "markdown",
        }
    }

    /// The kind a marker line starts, if it is one.
    fn of_marker(line: &str) -> Option<Self> {
        match line.trim() {
            "--- text ---" => Some(Self::Text),
            "--- html ---" => Some(Self::Html),
            "--- markdown ---" => Some(Self::Markdown),
            _ => None,
        }
    }
}

/// One part of the body, between section markers.
struct Section<'a> {
    /// Which part it is.
    kind: SectionKind,
    /// File line of the section's first line.
    first_line: usize,
    /// Its lines.
    lines: Vec<&'a str>,
}

/// Splits the body (`lines` from index `body_start`) at its `--- text ---`, `--- html ---`
/// and `--- markdown ---` markers. Without markers the whole body is one text section; blank
/// lines before the first marker are not a section of their own.
fn body_sections<'a>(lines: &[&'a str], body_start: usize) -> Vec<Section<'a>> {
    let section = |kind, first_line| Section {
        kind,
        first_line,
        lines: Vec::new(),
    };
    let mut sections = Vec::new();
    let mut current = section(SectionKind::Text, body_start + 1);
    let mut explicit = false;
    for (i, l) in lines.iter().enumerate().skip(body_start) {
        if let Some(kind) = SectionKind::of_marker(l) {
            if explicit || current.lines.iter().any(|l| !l.trim().is_empty()) {
                sections.push(std::mem::replace(&mut current, section(kind, i + 2)));
            } else {
                current = section(kind, i + 2);
            }
            explicit = true;
        } else {
            current.lines.push(l);
        }
    }
    sections.push(current);
    sections
}

/// Template source to compile: its text, the file it is in and the file line of its first
/// line (error messages give file lines).
struct Source<'a> {
    /// The text.
    text: &'a str,
    /// The template file (or the option that gave the text).
    path: &'a Path,
    /// File line of the text's first line.
    first_line: usize,
}

impl Source<'_> {
    /// The file line of `line` of the text.
    fn file_line(&self, line: usize) -> usize {
        line + self.first_line - 1
    }
}

/// Compiles `src` as template `key` and records the variables used. The template's shape
/// must pass [`bounds::check`]; `{{inline}}` uses are recorded in `images`, or refused when
/// `images` is `None` (a header or the text body: no HTML to show an image in).
fn compile_into(
    reg: &mut Handlebars<'static>,
    key: &str,
    src: &Source<'_>,
    vars: &mut Vec<VarUse>,
    images: Option<&mut Vec<(String, usize)>>,
) -> Result<(), TemplateError> {
    let tpl = Template::compile(src.text).map_err(|e| TemplateError::Syntax {
        path: src.path.into(),
        line: e.pos().map_or(src.first_line, |(l, _)| src.file_line(l)),
        column: e.pos().map_or(0, |(_, c)| c),
        reason: e.reason().to_string(),
    })?;
    bounds::check(&tpl).map_err(|e| format_error(src.path, src.file_line(e.line), e.reason))?;
    let mut used = Vec::new();
    inline::uses(&tpl, &mut used)
        .map_err(|(line, reason)| format_error(src.path, src.file_line(line), reason))?;
    match images {
        Some(images) => {
            images.extend(
                used.into_iter()
                    .map(|(name, line)| (name, src.file_line(line))),
            );
        }
        None => {
            if let Some((_, line)) = used.first() {
                return Err(format_error(
                    src.path,
                    src.file_line(*line),
                    "{{inline}} shows an image in an HTML or Markdown body, not in a header or the text part".into(),
                ));
            }
        }
    }
    let before = vars.len();
    collect_vars(&tpl, src.first_line, false, vars);
    for v in &mut vars[before..] {
        v.origin = Some(src.path.to_path_buf());
    }
    reg.register_template(key, tpl);
    Ok(())
}

/// `s` with every line ending (LF, CR or CRLF) as CRLF.
fn crlf(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 32);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\r\n");
            }
            '\n' => out.push_str("\r\n"),
            c => out.push(c),
        }
    }
    out
}

fn param_var(p: &Parameter) -> Option<String> {
    match p {
        Parameter::Name(n) => Some(n.clone()),
        Parameter::Path(handlebars::Path::Relative((segs, _))) => match segs.first() {
            Some(handlebars::PathSeg::Named(n)) => Some(n.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn collect_vars(tpl: &Template, first_line: usize, optional: bool, out: &mut Vec<VarUse>) {
    for (i, el) in tpl.elements.iter().enumerate() {
        let line = tpl
            .mapping
            .get(i)
            .map_or(first_line, |m| m.0 + first_line - 1);
        let mut push = |name: Option<String>, optional: bool| {
            if let Some(name) = name
                && !name.starts_with('@')
                && !HELPERS.contains(&name.as_str())
            {
                out.push(VarUse {
                    name,
                    line,
                    optional,
                    origin: None,
                });
            }
        };
        match el {
            TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                if h.params.is_empty() && h.hash.is_empty() {
                    push(param_var(&h.name), optional);
                } else {
                    for p in h.params.iter().chain(h.hash.values()) {
                        push(param_var(p), optional);
                    }
                }
            }
            TemplateElement::HelperBlock(h) => {
                for p in h.params.iter().chain(h.hash.values()) {
                    push(param_var(p), true);
                }
                let name = param_var(&h.name).unwrap_or_default();
                // each/with change the context: names inside are not columns.
                if name != "each" && name != "with" {
                    for inner in [&h.template, &h.inverse].into_iter().flatten() {
                        collect_vars(inner, first_line, true, out);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "From: Acme <news@acme.example>\nTo: {{name}} <{{email}}>\nSubject: Hi {{name}} & co\n  folded\nX-Campaign: spring\n\n--- text ---\nHello {{name}}, <b>{{plan}}</b>\n{{#if vip}}VIP {{vip_code}}{{/if}}\n--- html ---\n<p>Hello {{name}}</p>\n";

    fn cols() -> Vec<String> {
        ["email", "name", "plan", "vip", "vip_code"]
            .map(String::from)
            .to_vec()
    }

    fn tpl() -> MessageTemplate {
        MessageTemplate::parse(SRC, Path::new("t.hbs"), Path::new("")).unwrap()
    }

    #[test]
    fn text_and_headers_are_not_html_escaped_but_html_is() {
        let fields = ["a@example.com", "Tom & <Jerry>", "Pro", "", ""].map(String::from);
        let r = tpl().render(&cols(), &fields).unwrap();
        assert_eq!(r.header("subject"), Some("Hi Tom & <Jerry> & co folded"));
        // In an address header a value with address syntax is quoted (one display name).
        assert_eq!(r.header("To"), Some("\"Tom & <Jerry>\" <a@example.com>"));
        assert_eq!(
            r.text.as_deref(),
            Some("Hello Tom & <Jerry>, <b>Pro</b>\r\n")
        );
        assert!(r.html.unwrap().contains("Tom &amp; &lt;Jerry&gt;"));
    }

    #[test]
    fn empty_required_value_makes_the_row_invalid_but_conditionals_may_be_empty() {
        let fields = ["a@example.com", "", "Pro", "", ""].map(String::from);
        let err = tpl().render(&cols(), &fields).unwrap_err();
        assert_eq!(
            err,
            RenderError::MissingValue {
                column: "name".into(),
                line: 2
            }
        );
    }

    #[test]
    fn crlf_in_a_value_cannot_reach_the_header_block() {
        let fields =
            ["a@example.com", "x\r\nBcc: victim@example.net", "P", "", ""].map(String::from);
        let err = tpl().render(&cols(), &fields).unwrap_err();
        assert!(matches!(err, RenderError::HeaderInjection { header } if header == "To"));
    }

    #[test]
    fn a_value_with_address_syntax_stays_one_display_name() {
        let fields = [
            "a@example.com",
            "Bob <evil@attacker.example>, Ann",
            "P",
            "",
            "",
        ]
        .map(String::from);
        let r = tpl().render(&cols(), &fields).unwrap();
        let to = r.header("To").unwrap();
        assert_eq!(to, "\"Bob <evil@attacker.example>, Ann\" <a@example.com>");
        let boxes = crate::message::parse_mailboxes(to).unwrap();
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        assert_eq!(boxes[0].address.to_string(), "a@example.com");
        // Outside address headers the value is text, kept as is.
        assert_eq!(
            r.header("Subject"),
            Some("Hi Bob <evil@attacker.example>, Ann & co folded")
        );
        assert_eq!(
            address_escape("Ann \"Q\" Lee, PhD"),
            "\"Ann \\\"Q\\\" Lee, PhD\""
        );
        assert_eq!(address_escape("ann@example.com"), "ann@example.com");
        let e = MessageTemplate::parse(
            "From: a@b.test\nTo: x@y.test\nContent-Disposition: attachment\n\nb",
            Path::new("t"),
            Path::new(""),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("t:3: header Content-Disposition"),
            "{e}"
        );
    }

    #[test]
    fn unknown_column_is_refused_with_its_line() {
        let err = tpl()
            .check_columns(&[
                "email".into(),
                "name".into(),
                "vip".into(),
                "vip_code".into(),
            ])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.hbs:8: the template uses {{plan}} but the CSV has no such column (columns: email, name, vip, vip_code)"
        );
    }

    #[test]
    fn an_unknown_column_in_an_option_header_names_the_option() {
        let mut t = tpl();
        t.add_header(
            "List-Unsubscribe",
            "<https://acme.example/u/{{tok}}>",
            "--list-unsubscribe",
        )
        .unwrap();
        let err = t.check_columns(&cols()).unwrap_err().to_string();
        assert!(
            err.starts_with("--list-unsubscribe:1: the template uses {{tok}}"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_reports_the_file_line() {
        let src = "From: a@b.test\nTo: {{email}}\n\nline one\n{{#if x}}unclosed\n";
        let err = MessageTemplate::parse(src, Path::new("t.hbs"), Path::new("")).unwrap_err();
        assert!(
            matches!(err, TemplateError::Syntax { line, .. } if line >= 4),
            "{err}"
        );
    }

    #[test]
    fn layout_errors() {
        let e = MessageTemplate::parse(
            "From: a@b.test\nTo: x@y.test\nbody",
            Path::new("t"),
            Path::new(""),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no blank line"));
        let e = MessageTemplate::parse(
            "From: a@b.test\nMessage-ID: <x@y>\nTo: x@y.test\n\nb",
            Path::new("t"),
            Path::new(""),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("t:2: header Message-ID is generated")
        );
        let e = MessageTemplate::parse("From: a@b.test\n\nb", Path::new("t"), Path::new(""))
            .unwrap_err();
        assert!(e.to_string().contains("needs a To: header"));
    }

    #[test]
    fn markdown_makes_both_parts_unless_the_template_writes_the_text() {
        let src = "From: a@b.test\nTo: {{email}}\n\n--- markdown ---\n# Hi {{name}}\n\n*Thanks*\n";
        let t = MessageTemplate::parse(src, Path::new("t"), Path::new("")).unwrap();
        let cols = ["email", "name"].map(String::from);
        let r = t
            .render(&cols, &["a@example.com", "A_n*n"].map(String::from))
            .unwrap();
        assert_eq!(
            r.html.as_deref(),
            Some("<h1>Hi A_n*n</h1>\r\n<p><em>Thanks</em></p>\r\n")
        );
        assert_eq!(
            r.text.as_deref(),
            Some("Hi A_n*n\r\n========\r\n\r\nThanks\r\n")
        );
        let src =
            "From: a@b.test\nTo: {{email}}\n\n--- text ---\nHand-written\n--- markdown ---\n*x*\n";
        let t = MessageTemplate::parse(src, Path::new("t"), Path::new("")).unwrap();
        let r = t
            .render(&cols, &["a@example.com", "A"].map(String::from))
            .unwrap();
        assert_eq!(r.text.as_deref(), Some("Hand-written"));
        assert_eq!(r.html.as_deref(), Some("<p><em>x</em></p>\r\n"));
        let e = MessageTemplate::parse(
            "From: a@b.test\nTo: x@y.test\n\n--- html ---\n<p>x</p>\n--- markdown ---\n*x*\n",
            Path::new("t"),
            Path::new(""),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("t:6: a template has --- html --- or --- markdown ---, not both"),
            "{e}"
        );
    }

    #[test]
    fn inline_images_are_read_once_with_the_template_and_only_in_html_bodies() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logo.png"), inline::tests::PNG).unwrap();
        let src = "From: a@b.test\nTo: {{email}}\n\n--- html ---\n{{#if logo}}<img src=\"{{inline \"logo.png\"}}\">{{/if}}<p>x</p>\n";
        let t = MessageTemplate::parse(src, Path::new("t"), dir.path()).unwrap();
        // Gone from disk after loading: rows still carry it, read once with the template.
        std::fs::remove_file(dir.path().join("logo.png")).unwrap();
        let cols = ["email", "logo"].map(String::from);
        for i in 0..3 {
            let r = t
                .render(&cols, &[format!("a{i}@example.com"), "y".into()])
                .unwrap();
            assert_eq!(r.inline.len(), 1);
            assert_eq!(r.inline[0].bytes, inline::tests::PNG);
            assert!(
                r.html
                    .unwrap()
                    .contains(&format!("<img src=\"{}\">", r.inline[0].url()))
            );
            assert_eq!(r.text.as_deref(), Some("x\r\n"), "derived from the HTML");
        }
        // A row whose HTML does not show it does not carry it.
        let r = t
            .render(&cols, &["a@example.com".into(), String::new()])
            .unwrap();
        assert!(r.inline.is_empty());
        // Not loadable: refused with the template line.
        let e = MessageTemplate::parse(src, Path::new("t"), dir.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t:5: inline image not available: logo.png (images are read from the template's folder)"
        );
        for (src, line) in [
            (
                "From: a@b.test\nTo: {{email}}\nX-Logo: {{inline \"logo.png\"}}\n\nx\n",
                3,
            ),
            (
                "From: a@b.test\nTo: {{email}}\n\n--- text ---\n\n{{inline \"logo.png\"}}\n",
                6,
            ),
        ] {
            let e = MessageTemplate::parse(src, Path::new("t"), dir.path()).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!(
                    "t:{line}: {{{{inline}}}} shows an image in an HTML or Markdown body"
                )),
                "{e}"
            );
        }
    }
}
