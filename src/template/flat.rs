//! Column substitution without the template engine, for the parts that need nothing more.
//!
//! Most parts of a mail-merge template (the headers, and often the whole body) are literal
//! text with column values dropped in. Handlebars renders those through its general machinery
//! (a JSON context per row, a path lookup and a helper check per value, an output object per
//! part): in the delivery benchmark that was a fifth of the CPU the binary spends per
//! message. A part made only of text, comments and name-only values of top-level columns
//! (`{{name}}`, `{{{name}}}`) is compiled here into its pieces once and rendered by joining
//! them, escaped with the part's own registry's escape function, so the output is byte for
//! byte what Handlebars writes. Anything else (blocks, helpers, partials, paths, `this`)
//! stays with Handlebars, and so does a row whose data the pieces cannot answer (a column
//! the row has no field for), so that its error is the engine's.

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Path, PathSeg, Template};

use super::{HELPERS, RenderError, bounds::Budget};

/// One piece of a flat part.
#[derive(Debug)]
enum Piece {
    /// Literal text, written as is.
    Text(String),
    /// A column's value: the index into [`Flat::names`], and whether it is escaped
    /// (`{{name}}`) or written raw (`{{{name}}}`).
    Value { name: usize, escape: bool },
}

/// A template part that is only text and column values.
#[derive(Debug)]
pub(super) struct Flat {
    /// The pieces in order.
    pieces: Vec<Piece>,
    /// The distinct column names the values use.
    names: Vec<String>,
    /// Bytes of literal text.
    text_len: usize,
}

/// How a part's `{{name}}` values are escaped.
pub(super) enum Escape<'a> {
    /// Written as they are (the registry's escape function is `no_escape`).
    None,
    /// Through the registry's escape function.
    With(&'a dyn Fn(&str) -> String),
}

impl Flat {
    /// The part as pieces, or `None` when it uses anything but text, comments and name-only
    /// column values.
    pub fn of(tpl: &Template) -> Option<Self> {
        let mut flat = Self {
            pieces: Vec::with_capacity(tpl.elements.len()),
            names: Vec::new(),
            text_len: 0,
        };
        for el in &tpl.elements {
            let (h, escape) = match el {
                TemplateElement::RawString(s) => {
                    flat.text_len += s.len();
                    flat.pieces.push(Piece::Text(s.clone()));
                    continue;
                }
                TemplateElement::Comment(_) => continue,
                TemplateElement::Expression(h) => (h, true),
                TemplateElement::HtmlExpression(h) => (h, false),
                _ => return None,
            };
            let simple = !h.block
                && h.params.is_empty()
                && h.hash.is_empty()
                && h.block_param.is_none()
                && h.template.is_none()
                && h.inverse.is_none();
            let column = column_name(&h.name).filter(|_| simple)?;
            let name = match flat.names.iter().position(|n| n == column) {
                Some(i) => i,
                None => {
                    flat.names.push(column.to_string());
                    flat.names.len() - 1
                }
            };
            flat.pieces.push(Piece::Value { name, escape });
        }
        Some(flat)
    }

    /// Renders the part for one row, charging `budget`; `None` when a value it uses has no
    /// field in this row (the engine then renders it, and reports the error).
    pub fn render(
        &self,
        columns: &[String],
        fields: &[String],
        escape: &Escape<'_>,
        budget: &mut Budget,
    ) -> Option<Result<String, RenderError>> {
        // As in the engine's data: every column with a field, a repeated name the last one.
        let known = columns.len().min(fields.len());
        let values: Vec<&str> = self
            .names
            .iter()
            .map(|n| {
                columns[..known]
                    .iter()
                    .rposition(|c| c == n)
                    .map(|i| fields[i].as_str())
            })
            .collect::<Option<_>>()?;
        let mut out =
            String::with_capacity(self.text_len + values.iter().map(|v| v.len()).sum::<usize>());
        for piece in &self.pieces {
            match (piece, escape) {
                (Piece::Text(s), _) => out.push_str(s),
                (Piece::Value { name, escape: true }, Escape::With(f)) => {
                    out.push_str(&f(values[*name]));
                }
                (Piece::Value { name, .. }, _) => out.push_str(values[*name]),
            }
        }
        Some(budget.charge(out.len()).map(|()| out))
    }
}

/// The column a value expression names: one plain path segment that is not a helper.
fn column_name(p: &Parameter) -> Option<&str> {
    let Parameter::Path(Path::Relative((segs, raw))) = p else {
        return None;
    };
    let [PathSeg::Named(name)] = segs.as_slice() else {
        return None;
    };
    // Names Handlebars resolves as helpers before values (ours, and its `raw`) are left to it.
    let helper = |n: &str| HELPERS.contains(&n) || n == "raw";
    let plain = !name.starts_with('@') && !helper(name) && !helper(raw);
    plain.then_some(name.as_str())
}

#[cfg(test)]
mod tests {
    use handlebars::{Context, Handlebars};

    use super::*;
    use crate::template::{address_escape, markdown};

    /// The engine's output and the flat one, for one source and row, with `reg`'s escaping.
    fn both(reg: &mut Handlebars<'static>, src: &str, row: &[(&str, &str)]) -> (String, String) {
        let columns: Vec<String> = row.iter().map(|(c, _)| c.to_string()).collect();
        let fields: Vec<String> = row.iter().map(|(_, f)| f.to_string()).collect();
        let tpl = Template::compile(src).expect("compiles");
        let flat = Flat::of(&tpl).unwrap_or_else(|| panic!("{src:?} is not flat"));
        reg.register_template("t", tpl);
        let ctx = Context::from(crate::template::MessageTemplate::data(&columns, &fields));
        let engine = Budget::new()
            .render(reg, "t", &ctx)
            .expect("engine renders");
        let ours = flat
            .render(
                &columns,
                &fields,
                &Escape::With(reg.get_escape_fn()),
                &mut Budget::new(),
            )
            .expect("every value has a field")
            .expect("within budget");
        (engine, ours)
    }

    #[test]
    fn flat_parts_render_byte_for_byte_as_the_engine_does_under_every_escaping() {
        let sources = [
            "Hello {{name}}, your balance is {{amount}} EUR.\r\nBye {{name}}",
            "{{{name}}} & {{name}} <{{email}}>",
            "  {{~name~}}  \r\n{{! a comment }}\r\n  {{!-- another --}}  \r\nend {{amount}}",
            "{{[first name]}}: {{./amount}}",
            "no values at all & <b>",
            "",
        ];
        let values = [
            "Ann",
            "Bob <x@evil.example>, \"Q\" & 'S' `=` *_[]()#\\",
            "line\r\nbreak\rand\nmore. ",
            "",
            "Zoë 東京 🚀",
        ];
        let mut html = Handlebars::new();
        let mut plain = Handlebars::new();
        plain.register_escape_fn(handlebars::no_escape);
        let mut addr = Handlebars::new();
        addr.register_escape_fn(address_escape);
        let mut md = Handlebars::new();
        md.register_escape_fn(markdown::escape);
        for reg in [&mut html, &mut plain, &mut addr, &mut md] {
            reg.set_strict_mode(true);
            for src in sources {
                for v in values {
                    let row = [
                        ("name", v),
                        ("email", "a@example.com"),
                        ("amount", "12.50"),
                        ("first name", v),
                    ];
                    let (engine, ours) = both(reg, src, &row);
                    assert_eq!(engine, ours, "{src:?} with {v:?}");
                }
            }
        }
    }

    #[test]
    fn a_repeated_column_name_takes_the_last_field_as_the_engine_does() {
        let mut reg = Handlebars::new();
        reg.set_strict_mode(true);
        let (engine, ours) = both(&mut reg, "{{x}}", &[("x", "first"), ("x", "last")]);
        assert_eq!(engine, "last");
        assert_eq!(ours, engine);
    }

    #[test]
    fn blocks_helpers_paths_and_partials_stay_with_the_engine() {
        for src in [
            "{{#if name}}x{{/if}}",
            "{{len name}}",
            "{{inline \"logo.png\"}}",
            "{{lookup this \"name\"}}",
            "{{this}}",
            "{{user.name}}",
            "{{../name}}",
            "{{@index}}",
            "{{> part}}",
            "{{#*inline \"p\"}}x{{/inline}}",
            "{{len}}",
        ] {
            let tpl = Template::compile(src).expect("compiles");
            assert!(Flat::of(&tpl).is_none(), "{src:?} was taken as flat");
        }
    }

    #[test]
    fn a_row_without_the_field_goes_to_the_engine_and_the_budget_still_binds() {
        let flat = Flat::of(&Template::compile("{{a}} {{b}}").expect("compiles")).expect("flat");
        let columns = vec!["a".to_string(), "b".to_string()];
        let esc = Escape::None;
        let short = vec!["1".to_string()];
        assert!(
            flat.render(&columns, &short, &esc, &mut Budget::new())
                .is_none()
        );
        let big = "x".repeat(crate::template::MAX_RENDERED / 2 + 1);
        let fields = vec![big.clone(), big];
        let r = flat.render(&columns, &fields, &esc, &mut Budget::new());
        assert!(
            matches!(r, Some(Err(RenderError::TooLarge { .. }))),
            "{r:?}"
        );
    }
}
