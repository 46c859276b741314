//! The message template: a header block, a blank line, then the body, all Handlebars.
//!
//! Parsed and compiled once, rendered per recipient. Header values and the text body are
//! rendered without HTML escaping (a subject must never read `&amp;`); the HTML body is escaped.
//! Before anything is sent, every variable the template uses is checked against the CSV
//! columns, so a typo stops the run with the template line instead of producing blank messages.
//!
//! Format (see README "Template format"):
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
//! <p>Hello {{name}}, ...</p>
//! ```
//!
//! Without section markers the whole body is the text part.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Handlebars, JsonValue, Template};
use thiserror::Error;

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
    "or", "not", "len", "else", "this",
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
}

/// Where a variable is used.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VarUse {
    name: String,
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
    name: String,
    key: String,
    /// Compiled in the `addr` registry (an address-list header).
    address: bool,
}

/// A compiled template, shared by all rendering threads.
#[derive(Debug)]
pub struct MessageTemplate {
    plain: Handlebars<'static>,
    html: Handlebars<'static>,
    /// Address headers: values quoted when they hold address syntax.
    addr: Handlebars<'static>,
    headers: Vec<HeaderTemplate>,
    attachments: Vec<String>,
    has_text: bool,
    has_html: bool,
    vars: Vec<VarUse>,
    base_dir: PathBuf,
    path: PathBuf,
    /// The template text as read (for the journal's fingerprint of the message).
    source: String,
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
        Ok(template)
    }

    /// A template with nothing compiled yet: the three registries (text, HTML-escaped,
    /// address-quoting) are filled by [`MessageTemplate::parse`]'s steps.
    fn empty(src: &str, path: &Path, base_dir: &Path) -> Self {
        let mut addr = registry(false);
        addr.register_escape_fn(address_escape);
        Self {
            plain: registry(false),
            html: registry(true),
            addr,
            headers: Vec::new(),
            attachments: Vec::new(),
            has_text: false,
            has_html: false,
            vars: Vec::new(),
            base_dir: base_dir.to_path_buf(),
            path: path.to_path_buf(),
            source: src.to_string(),
        }
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
        let key = format!("h{}", self.headers.len() + self.attachments.len());
        let address = ADDRESS_HEADERS.contains(&name.to_ascii_lowercase().as_str());
        let reg = if address {
            &mut self.addr
        } else {
            &mut self.plain
        };
        compile_into(reg, &key, value.trim(), &self.path, line, &mut self.vars)?;
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

    /// Compiles one body section into the text or HTML registry; each kind may appear once.
    fn compile_section(&mut self, section: Section) -> Result<(), TemplateError> {
        let (seen, reg) = if section.kind == "text" {
            (&mut self.has_text, &mut self.plain)
        } else {
            (&mut self.has_html, &mut self.html)
        };
        if *seen {
            return Err(format_error(
                &self.path,
                section.first_line - 1,
                format!("second --- {} --- section", section.kind),
            ));
        }
        *seen = true;
        let body = section.lines.join("\r\n");
        compile_into(
            reg,
            section.kind,
            &body,
            &self.path,
            section.first_line,
            &mut self.vars,
        )
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
        let key = format!("x{}", self.headers.len() + self.attachments.len());
        compile_into(
            &mut self.plain,
            &key,
            value,
            &origin_path,
            1,
            &mut self.vars,
        )?;
        self.headers.push(HeaderTemplate {
            name: name.to_string(),
            key,
            address: false,
        });
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

    /// Renders one recipient's message.
    pub fn render(&self, columns: &[String], fields: &[String]) -> Result<Rendered, RenderError> {
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
        let data = Self::data(columns, fields);
        let render = |reg: &Handlebars<'static>, key: &str| {
            reg.render(key, &data)
                .map_err(|e| RenderError::Render(e.to_string()))
        };
        let mut headers = Vec::with_capacity(self.headers.len());
        for h in &self.headers {
            let value = render(if h.address { &self.addr } else { &self.plain }, &h.key)?;
            if value.chars().any(|c| c.is_control() && c != '\t') {
                return Err(RenderError::HeaderInjection {
                    header: h.name.clone(),
                });
            }
            headers.push((h.name.clone(), value.trim().to_string()));
        }
        let mut attachments = Vec::with_capacity(self.attachments.len());
        for key in &self.attachments {
            let value = render(&self.plain, key)?;
            if value.chars().any(char::is_control) {
                return Err(RenderError::HeaderInjection {
                    header: ATTACHMENT_HEADER.into(),
                });
            }
            // Resolved inside the attachments folder when the message is built.
            attachments.push(PathBuf::from(value.trim()));
        }
        let text = if self.has_text {
            Some(render(&self.plain, "text")?)
        } else {
            None
        };
        let html = if self.has_html {
            Some(render(&self.html, "html")?)
        } else {
            None
        };
        Ok(Rendered {
            headers,
            text,
            html,
            attachments,
        })
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

/// One part of the body, between section markers.
struct Section<'a> {
    /// `"text"` or `"html"`: also the part's template name in its registry.
    kind: &'static str,
    /// File line of the section's first line.
    first_line: usize,
    lines: Vec<&'a str>,
}

/// Splits the body (`lines` from index `body_start`) at its `--- text ---` / `--- html ---`
/// markers. Without markers the whole body is one text section; blank lines before the first
/// marker are not a section of their own.
fn body_sections<'a>(lines: &[&'a str], body_start: usize) -> Vec<Section<'a>> {
    let section = |kind, first_line| Section {
        kind,
        first_line,
        lines: Vec::new(),
    };
    let mut sections = Vec::new();
    let mut current = section("text", body_start + 1);
    let mut explicit = false;
    for (i, l) in lines.iter().enumerate().skip(body_start) {
        let marker = match l.trim() {
            "--- text ---" => Some("text"),
            "--- html ---" => Some("html"),
            _ => None,
        };
        if let Some(kind) = marker {
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

/// Compiles `src` as template `key`, mapping error lines to file lines (`first_line` is the
/// file line of the source's first line), and records the variables used.
fn compile_into(
    reg: &mut Handlebars<'static>,
    key: &str,
    src: &str,
    path: &Path,
    first_line: usize,
    vars: &mut Vec<VarUse>,
) -> Result<(), TemplateError> {
    let tpl = Template::compile(src).map_err(|e| TemplateError::Syntax {
        path: path.into(),
        line: e.pos().map_or(first_line, |(l, _)| l + first_line - 1),
        column: e.pos().map_or(0, |(_, c)| c),
        reason: e.reason().to_string(),
    })?;
    let before = vars.len();
    collect_vars(&tpl, first_line, false, vars);
    for v in &mut vars[before..] {
        v.origin = Some(path.to_path_buf());
    }
    reg.register_template(key, tpl);
    Ok(())
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
}
