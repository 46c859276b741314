//! Bounds on what rendering one row may cost, so that no template and no row can take the
//! process down: a recursive partial overflowed the stack (an abort, not an error: no results
//! file, and rows sent before it were sent again by the next run), and nested `{{#each}}` over
//! a wide row grew a message to gigabytes.
//!
//! handlebars 6 has no recursion or size limit of its own, and its partials are expanded by
//! the engine with no hook to count them. So the shape of every compiled template is checked
//! once, when the template is loaded, and refused (exit 2, nothing sent) when it could recurse
//! or nest without bound:
//!
//! - partials are only inline partials the same template defines (`{{#*inline "name"}}`), named
//!   by a quoted string, never computed from data, never reaching one of mailmerge's own
//!   templates, and never including themselves directly or through others;
//! - nesting (blocks, partial calls, subexpressions) is at most [`MAX_DEPTH`] deep, `{{#each}}`
//!   at most [`MAX_EACH_NESTING`] deep (each level multiplies the work by a row's width);
//! - the template with every partial call expanded has at most [`MAX_EXPANDED`] elements.
//!
//! What still depends on the data, the size of the output, is bounded while rendering: every
//! part of one message is written into [`Budget`], which stops the render past
//! [`MAX_RENDERED`] bytes and makes that row `invalid`.

use std::collections::HashMap;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{Context, Handlebars, Output, RenderContext, Renderable, Template};

use super::RenderError;

/// Deepest nesting of blocks, partial calls and subexpressions a template may have.
pub const MAX_DEPTH: usize = 32;

/// Deepest nesting of `{{#each}}` blocks (through partials too).
pub const MAX_EACH_NESTING: usize = 2;

/// Most template elements one render may visit with every partial call expanded (loops
/// counted once).
pub const MAX_EXPANDED: usize = 100_000;

/// Most bytes the template may produce for one message (headers and every body part
/// together): the default `--max-message-size`, 25 MiB.
pub const MAX_RENDERED: usize = 25 * 1024 * 1024;

/// Prefix of the names mailmerge registers its own templates under; no partial may use it,
/// so a partial can only ever be one the template defines.
pub(super) const RESERVED: &str = "mailmerge:";

/// Why a template is refused: the line (within the compiled source) and the reason.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Unbounded {
    /// Line in the compiled source, 1-based.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Checks a compiled template's shape (see the module documentation).
pub(super) fn check(tpl: &Template) -> Result<(), Unbounded> {
    let mut walk = Walk {
        defs: HashMap::new(),
        calls: Vec::new(),
        visited: 0,
    };
    walk.collect_defs(tpl, 0, 1)?;
    walk.walk(tpl, 0, 0, 1)
}

/// The elements of `tpl` with the line each starts on (`fallback` when there is no mapping).
fn lines(tpl: &Template, fallback: usize) -> impl Iterator<Item = (&TemplateElement, usize)> {
    tpl.elements
        .iter()
        .enumerate()
        .map(move |(i, el)| (el, tpl.mapping.get(i).map_or(fallback, |m| m.0)))
}

/// A name written in the template: a bare name, a path or a quoted string. `None` when it is
/// computed (a subexpression) or not a string.
fn static_name(p: &Parameter) -> Option<&str> {
    match p {
        Parameter::Name(n) => Some(n),
        Parameter::Path(handlebars::Path::Relative((_, raw)))
        | Parameter::Path(handlebars::Path::Local((_, _, raw))) => Some(raw),
        Parameter::Literal(handlebars::JsonValue::String(s)) => Some(s),
        _ => None,
    }
}

/// An error at `line`.
fn refuse<T>(line: usize, reason: impl Into<String>) -> Result<T, Unbounded> {
    Err(Unbounded {
        line,
        reason: reason.into(),
    })
}

/// The walk over one template: its inline partials, the partial calls being expanded and how
/// many elements were visited.
struct Walk<'t> {
    /// Inline partials by name (every definition of a name: which one is in scope depends on
    /// the render, so all count).
    defs: HashMap<&'t str, Vec<&'t Template>>,
    /// The partial calls being expanded, outermost first.
    calls: Vec<&'t str>,
    /// Elements visited so far, partial calls expanded.
    visited: usize,
}

impl<'t> Walk<'t> {
    /// Records every `{{#*inline "name"}}` definition (nested ones too) and refuses the
    /// constructs whose partials cannot be known before rendering.
    fn collect_defs(
        &mut self,
        tpl: &'t Template,
        level: usize,
        at: usize,
    ) -> Result<(), Unbounded> {
        if level > MAX_DEPTH {
            return refuse(at, too_deep());
        }
        for (el, line) in lines(tpl, at) {
            match el {
                TemplateElement::DecoratorBlock(d) | TemplateElement::DecoratorExpression(d) => {
                    if static_name(&d.name) != Some("inline") {
                        return refuse(
                            line,
                            "unknown decorator: only {{#*inline \"name\"}}…{{/inline}} is supported",
                        );
                    }
                    let name = match d.params.first() {
                        Some(Parameter::Literal(handlebars::JsonValue::String(s))) => s.as_str(),
                        _ => {
                            return refuse(
                                line,
                                "an inline partial is named by a quoted string: {{#*inline \"name\"}}",
                            );
                        }
                    };
                    if name.starts_with(RESERVED) {
                        return refuse(
                            line,
                            format!("partial names starting with {RESERVED:?} are reserved"),
                        );
                    }
                    let Some(body) = &d.template else {
                        return refuse(
                            line,
                            "{{*inline}} needs a block: {{#*inline \"name\"}}…{{/inline}}",
                        );
                    };
                    self.defs.entry(name).or_default().push(body);
                    self.collect_defs(body, level + 1, line)?;
                }
                TemplateElement::HelperBlock(h) => {
                    for inner in [&h.template, &h.inverse].into_iter().flatten() {
                        self.collect_defs(inner, level + 1, line)?;
                    }
                }
                TemplateElement::PartialBlock(_) => {
                    return refuse(
                        line,
                        "partial blocks ({{#> name}}…{{/name}}) are not supported: use {{> name}} with an inline partial",
                    );
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Visits `tpl` as rendering would, partial calls expanded, at nesting `level` inside
    /// `each` `{{#each}}` blocks; refuses what exceeds a bound.
    fn walk(
        &mut self,
        tpl: &'t Template,
        level: usize,
        each: usize,
        at: usize,
    ) -> Result<(), Unbounded> {
        for (el, line) in lines(tpl, at) {
            self.visited += 1;
            if self.visited > MAX_EXPANDED {
                return refuse(
                    line,
                    format!(
                        "the template is too large with its partials expanded (over {MAX_EXPANDED} elements)"
                    ),
                );
            }
            match el {
                TemplateElement::Expression(h) | TemplateElement::HtmlExpression(h) => {
                    self.helper_name(&h.name, line)?;
                    for p in h.params.iter().chain(h.hash.values()) {
                        self.param(p, level + 1, line)?;
                    }
                }
                TemplateElement::HelperBlock(h) => {
                    let name = self.helper_name(&h.name, line)?;
                    for p in h.params.iter().chain(h.hash.values()) {
                        self.param(p, level + 1, line)?;
                    }
                    let each = each + usize::from(name == "each");
                    if each > MAX_EACH_NESTING {
                        return refuse(
                            line,
                            format!(
                                "{{{{#each}}}} nested more than {MAX_EACH_NESTING} deep (each level multiplies the work by the row's width)"
                            ),
                        );
                    }
                    for inner in [&h.template, &h.inverse].into_iter().flatten() {
                        self.nested(inner, level + 1, each, line)?;
                    }
                }
                TemplateElement::PartialExpression(d) => {
                    for p in d.params.iter().chain(d.hash.values()) {
                        self.param(p, level + 1, line)?;
                    }
                    self.call(static_name(&d.name), level, each, line)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// [`Walk::walk`] one level deeper, refused past [`MAX_DEPTH`].
    fn nested(
        &mut self,
        tpl: &'t Template,
        level: usize,
        each: usize,
        line: usize,
    ) -> Result<(), Unbounded> {
        if level > MAX_DEPTH {
            return refuse(line, too_deep());
        }
        self.walk(tpl, level, each, line)
    }

    /// Expands the partial call `{{> name}}`: only an inline partial defined here, and not one
    /// being expanded already (that would recurse forever).
    fn call(
        &mut self,
        name: Option<&'t str>,
        level: usize,
        each: usize,
        line: usize,
    ) -> Result<(), Unbounded> {
        let Some(name) = name else {
            return refuse(
                line,
                "a partial is named in the template, not computed: {{> name}}",
            );
        };
        let Some(bodies) = self.defs.get(name).cloned() else {
            return refuse(
                line,
                format!(
                    "partial {name:?} is not defined here (define it with {{{{#*inline \"{name}\"}}}}…{{{{/inline}}}} in the same part of the template)"
                ),
            );
        };
        if self.calls.contains(&name) {
            let mut chain: Vec<&str> = self
                .calls
                .iter()
                .skip_while(|c| **c != name)
                .copied()
                .collect();
            chain.push(name);
            return refuse(
                line,
                format!(
                    "partial {name:?} includes itself ({}): a template may not recurse",
                    chain.join(" → ")
                ),
            );
        }
        self.calls.push(name);
        for body in bodies {
            self.nested(body, level + 1, each, line)?;
        }
        self.calls.pop();
        Ok(())
    }

    /// A helper's or variable's name must be written in the template: a name computed from
    /// data could pick any helper (`each` included).
    fn helper_name(&self, name: &'t Parameter, line: usize) -> Result<&'t str, Unbounded> {
        match name {
            Parameter::Subexpression(_) => refuse(
                line,
                "a helper's name is written in the template, not computed",
            ),
            other => Ok(static_name(other).unwrap_or("")),
        }
    }

    /// Checks a parameter's subexpressions, each one level deeper.
    fn param(&mut self, p: &'t Parameter, level: usize, line: usize) -> Result<(), Unbounded> {
        let Parameter::Subexpression(sub) = p else {
            return Ok(());
        };
        if level > MAX_DEPTH {
            return refuse(line, too_deep());
        }
        self.visited += 1;
        if let TemplateElement::Expression(h) = sub.as_element() {
            self.helper_name(&h.name, line)?;
            for inner in h.params.iter().chain(h.hash.values()) {
                self.param(inner, level + 1, line)?;
            }
        }
        Ok(())
    }
}

/// The reason for a template nested too deeply.
fn too_deep() -> String {
    format!("the template nests blocks, partials and subexpressions more than {MAX_DEPTH} deep")
}

/// The bytes one message may still take: every part of the message is rendered through it.
#[derive(Debug)]
pub(super) struct Budget {
    /// Bytes left.
    left: usize,
}

impl Budget {
    /// A budget of [`MAX_RENDERED`] bytes.
    pub fn new() -> Self {
        Self { left: MAX_RENDERED }
    }

    /// Renders the registered template `key` with `ctx`, charging its output; past the
    /// budget the render stops and the row is refused.
    pub fn render(
        &mut self,
        reg: &Handlebars<'static>,
        key: &str,
        ctx: &Context,
    ) -> Result<String, RenderError> {
        let tpl = reg
            .get_template(key)
            .ok_or_else(|| RenderError::Render(format!("template {key} is not registered")))?;
        let mut rc = RenderContext::new(None);
        let mut out = Bounded {
            out: String::new(),
            left: &mut self.left,
            over: false,
        };
        match tpl.render(reg, ctx, &mut rc, &mut out) {
            Ok(()) => Ok(out.out),
            Err(_) if out.over => Err(too_large()),
            Err(e) => Err(RenderError::Render(e.to_string())),
        }
    }

    /// Charges `n` bytes made from the rendered output (the HTML and text made from a
    /// Markdown body).
    pub fn charge(&mut self, n: usize) -> Result<(), RenderError> {
        self.left = self.left.checked_sub(n).ok_or_else(too_large)?;
        Ok(())
    }
}

/// The error for a message over [`MAX_RENDERED`].
fn too_large() -> RenderError {
    RenderError::TooLarge {
        limit: MAX_RENDERED,
    }
}

/// A handlebars output that refuses to grow past the budget it draws on.
struct Bounded<'b> {
    /// What was rendered so far.
    out: String,
    /// The message's budget.
    left: &'b mut usize,
    /// Set when a write was refused.
    over: bool,
}

impl Output for Bounded<'_> {
    fn write(&mut self, seg: &str) -> Result<(), std::io::Error> {
        if seg.len() > *self.left {
            self.over = true;
            return Err(std::io::Error::other("message too large"));
        }
        *self.left -= seg.len();
        self.out.push_str(seg);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(src: &str) -> Result<(), Unbounded> {
        check(&Template::compile(src).unwrap())
    }

    fn reason(src: &str) -> String {
        shape(src).unwrap_err().reason
    }

    #[test]
    fn recursion_is_refused_directly_and_through_other_partials_even_behind_a_condition() {
        let e = shape("a\n{{#*inline \"p\"}}x{{> p}}{{/inline}}\n{{#if boom}}{{> p}}{{/if}}")
            .unwrap_err();
        assert_eq!(e.line, 2, "{e:?}");
        assert!(e.reason.contains("\"p\" includes itself (p → p)"), "{e:?}");
        let r = reason(
            "{{#*inline \"a\"}}{{> b}}{{/inline}}{{#*inline \"b\"}}{{#each this}}{{> a}}{{/each}}{{/inline}}{{> a}}",
        );
        assert!(r.contains("(a → b → a)"), "{r}");
        // A partial used twice in a row is fine.
        shape("{{#*inline \"p\"}}<b>{{name}}</b>{{/inline}}{{> p}} and {{> p}}").unwrap();
    }

    #[test]
    fn partials_are_only_inline_partials_named_in_the_template() {
        assert!(reason("{{> (lookup this \"col\")}}").contains("not computed"));
        assert!(reason("{{> text}}").contains("partial \"text\" is not defined here"));
        assert!(reason("{{> mailmerge:h0}}").contains("not defined here"));
        assert!(reason("{{#*inline \"mailmerge:h0\"}}x{{/inline}}").contains("reserved"));
        assert!(reason("{{#*inline name}}x{{/inline}}").contains("quoted string"));
        assert!(reason("{{#> p}}fallback{{/p}}").contains("partial blocks"));
        assert!(reason("{{*foo}}").contains("unknown decorator"));
        assert!(reason("{{(lookup this \"h\")}}").contains("not computed"));
    }

    #[test]
    fn nesting_and_size_are_bounded() {
        let ok = format!(
            "{}x{}",
            "{{#if a}}".repeat(MAX_DEPTH),
            "{{/if}}".repeat(MAX_DEPTH)
        );
        shape(&ok).unwrap();
        let deep = format!(
            "{}x{}",
            "{{#if a}}".repeat(MAX_DEPTH + 1),
            "{{/if}}".repeat(MAX_DEPTH + 1)
        );
        assert!(reason(&deep).contains("more than 32 deep"));
        shape("{{#each this}}{{#each ../this}}{{@key}}{{/each}}{{/each}}").unwrap();
        let e = shape(
            "{{#each this}}{{#each ../this}}\n{{#each ../../this}}x{{/each}}{{/each}}{{/each}}",
        )
        .unwrap_err();
        assert!(
            e.reason.contains("{{#each}} nested more than 2 deep"),
            "{e:?}"
        );
        assert_eq!(e.line, 2);
        // Through a partial too.
        let r = reason(
            "{{#*inline \"p\"}}{{#each this}}x{{/each}}{{/inline}}{{#each this}}{{#each this}}{{> p}}{{/each}}{{/each}}",
        );
        assert!(r.contains("nested more than 2"), "{r}");
        // 2^20 expansions of an empty partial: refused, and the check itself stops early.
        let mut bomb = String::from("{{#*inline \"p0\"}}{{/inline}}");
        for i in 1..=20 {
            bomb.push_str(&format!(
                "{{{{#*inline \"p{i}\"}}}}{{{{> p{0}}}}}{{{{> p{0}}}}}{{{{/inline}}}}",
                i - 1
            ));
        }
        bomb.push_str("{{> p20}}");
        assert!(reason(&bomb).contains("too large with its partials expanded"));
    }

    #[test]
    fn the_budget_stops_a_render_that_grows_past_it() {
        let mut reg = Handlebars::new();
        reg.register_template(
            "t",
            Template::compile("{{#each this}}{{#each ../this}}{{this}}{{/each}}{{/each}}").unwrap(),
        );
        let row: serde_json::Map<String, serde_json::Value> = (0..200)
            .map(|i| (format!("c{i}"), serde_json::Value::String("v".repeat(1000))))
            .collect();
        let ctx = Context::from(serde_json::Value::Object(row));
        let mut budget = Budget::new();
        // 200 × 200 × 1000 bytes = 40 MB: stopped at 25 MiB.
        assert_eq!(
            budget.render(&reg, "t", &ctx),
            Err(RenderError::TooLarge {
                limit: MAX_RENDERED
            })
        );
        let mut budget = Budget { left: 10 };
        reg.register_template("small", Template::compile("{{c0}}").unwrap());
        assert_eq!(
            budget.render(&reg, "small", &ctx),
            Err(RenderError::TooLarge {
                limit: MAX_RENDERED
            })
        );
        let mut budget = Budget::new();
        assert_eq!(budget.render(&reg, "small", &ctx).unwrap().len(), 1000);
        assert_eq!(budget.left, MAX_RENDERED - 1000);
        assert!(budget.charge(MAX_RENDERED).is_err());
    }
}
