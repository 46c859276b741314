//! Inline images: `{{inline "logo.png"}}` in an HTML or Markdown body puts the file in the
//! message as a `multipart/related` part with a `Content-ID` and writes its `cid:` URL in place
//! (RFC 2387, RFC 2392), so a logo shows without fetching anything from outside (which mail
//! clients block by default and filters read as tracking).
//!
//! The name is a quoted string in the template, never a CSV value, so every image is known
//! when the template is loaded: each is read once per run from the template's folder, under
//! the same rules as attachments (no path outside the folder; see [`AttachmentDir`]), and a
//! missing or unreadable file stops the run before anything is sent. Its MIME type comes from
//! its content (magic numbers), not its name.

use std::collections::HashMap;
use std::sync::Arc;

use handlebars::template::{Parameter, TemplateElement};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, JsonValue, Output, RenderContext,
    Template,
};

use crate::folder::{AttachmentDir, FolderError};

/// The helper's name.
pub(super) const HELPER: &str = "inline";

/// Largest image a template may inline.
pub const MAX_IMAGE: usize = 10 * 1024 * 1024;

/// An image inlined in the HTML part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlineImage {
    /// The file name as written in the template.
    pub name: String,
    /// Content-ID, without angle brackets: derived from the content, so the same image keeps
    /// its ID across runs.
    pub content_id: String,
    /// MIME type, from the file's content (`image/png`, …).
    pub content_type: String,
    /// The file's bytes.
    pub bytes: Vec<u8>,
}

impl InlineImage {
    /// The `cid:` URL the HTML refers to it by (RFC 2392).
    pub fn url(&self) -> String {
        format!("cid:{}", self.content_id)
    }

    /// Reads image `name` from `dir`; refused when it is not a readable file inside the
    /// folder or not an image.
    pub(super) fn load(dir: &AttachmentDir, name: &str) -> Result<Self, String> {
        let bytes = dir.read(name, MAX_IMAGE).map_err(|e| match e {
            FolderError::Unavailable(_) => format!(
                "inline image not available: {name} (images are read from the template's folder)"
            ),
            FolderError::TooLarge { size, limit } => {
                format!("inline image {name} is {size} bytes, over the limit of {limit}")
            }
        })?;
        let kind = infer::get(&bytes)
            .filter(|k| k.matcher_type() == infer::MatcherType::Image)
            .ok_or_else(|| format!("inline image {name} is not an image format mailmerge recognizes (PNG, JPEG, GIF, WebP, …)"))?;
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let hex: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            name: name.to_string(),
            content_id: format!("{hex}.{}@inline.mailmerge.invalid", kind.extension()),
            content_type: kind.mime_type().to_string(),
            bytes,
        })
    }
}

/// Where `{{inline}}` is used in a compiled template: (file name, line in the compiled
/// source). Refuses a name that is not a quoted string.
pub(super) fn uses(tpl: &Template, out: &mut Vec<(String, usize)>) -> Result<(), (usize, String)> {
    for (i, el) in tpl.elements.iter().enumerate() {
        element_uses(el, tpl.mapping.get(i).map_or(1, |m| m.0), out)?;
    }
    Ok(())
}

/// [`uses`] for one element on `line`, its subexpressions and blocks included.
fn element_uses(
    el: &TemplateElement,
    line: usize,
    out: &mut Vec<(String, usize)>,
) -> Result<(), (usize, String)> {
    let (params, inner): (Vec<&Parameter>, Vec<&Template>) = match el {
        TemplateElement::Expression(h)
        | TemplateElement::HtmlExpression(h)
        | TemplateElement::HelperBlock(h) => {
            let named = match &h.name {
                Parameter::Name(n) => n == HELPER,
                Parameter::Path(handlebars::Path::Relative((_, raw))) => raw == HELPER,
                _ => false,
            };
            if named {
                match (h.params.as_slice(), h.block) {
                    ([Parameter::Literal(JsonValue::String(name))], false) => {
                        out.push((name.clone(), line));
                    }
                    _ => {
                        return Err((
                            line,
                            "{{inline}} takes one file name in quotes: {{inline \"logo.png\"}}"
                                .into(),
                        ));
                    }
                }
            }
            (
                h.params.iter().chain(h.hash.values()).collect(),
                [&h.template, &h.inverse].into_iter().flatten().collect(),
            )
        }
        TemplateElement::DecoratorBlock(d) | TemplateElement::PartialExpression(d) => (
            d.params.iter().chain(d.hash.values()).collect(),
            d.template.iter().collect(),
        ),
        _ => return Ok(()),
    };
    for p in params {
        if let Parameter::Subexpression(sub) = p {
            element_uses(sub.as_element(), line, out)?;
        }
    }
    for t in inner {
        uses(t, out)?;
    }
    Ok(())
}

/// The `{{inline "name"}}` helper: writes the image's `cid:` URL. Every name was checked and
/// loaded with the template, so an unknown one is an error, never a file read.
#[derive(Clone, Debug, Default)]
pub(super) struct InlineHelper {
    /// `cid:` URL by file name.
    pub urls: Arc<HashMap<String, String>>,
}

impl HelperDef for InlineHelper {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let name = h.param(0).and_then(|p| p.value().as_str()).unwrap_or("");
        let url = self.urls.get(name).ok_or_else(|| {
            handlebars::RenderErrorReason::Other(format!("inline image {name:?} was not loaded"))
        })?;
        // Written as is: a cid: URL made by mailmerge, never escaped into `\:` or `&#x3D;`.
        out.write(url)?;
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The smallest PNG: a 1×1 image (signature, IHDR, IDAT, IEND).
    pub(crate) const PNG: &[u8] = &[
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0,
        0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0x0d, 0x49, 0x44,
        0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0, 0, 0, 2, 0, 1, 0xe5, 0x27, 0xde, 0xfc, 0, 0, 0, 0,
        0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
    ];

    #[test]
    fn images_are_typed_by_content_and_confined_to_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("logo.bin"), PNG).unwrap();
        std::fs::write(dir.path().join("notes.png"), "not an image").unwrap();
        let folder = AttachmentDir::new(dir.path());
        let img = InlineImage::load(&folder, "logo.bin").unwrap();
        assert_eq!(img.content_type, "image/png");
        assert!(
            img.content_id.ends_with(".png@inline.mailmerge.invalid"),
            "{}",
            img.content_id
        );
        assert_eq!(img.url(), format!("cid:{}", img.content_id));
        assert_eq!(img.bytes, PNG);
        let e = InlineImage::load(&folder, "notes.png").unwrap_err();
        assert!(e.contains("not an image"), "{e}");
        for hostile in ["../logo.bin", "/etc/passwd", "missing.png"] {
            let e = InlineImage::load(&folder, hostile).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "inline image not available: {hostile} (images are read from the template's folder)"
                )
            );
        }
    }

    #[test]
    fn names_are_quoted_strings() {
        let mut found = Vec::new();
        let tpl = Template::compile(
            "<img src=\"{{inline \"a.png\"}}\">\n{{#if x}}{{inline \"b.gif\"}}{{/if}}",
        )
        .unwrap();
        uses(&tpl, &mut found).unwrap();
        assert_eq!(
            found,
            vec![("a.png".to_string(), 1), ("b.gif".to_string(), 2)]
        );
        for bad in [
            "{{inline logo}}",
            "{{inline}}",
            "{{inline \"a\" \"b\"}}",
            "{{#inline \"a\"}}x{{/inline}}",
        ] {
            let e = uses(&Template::compile(bad).unwrap(), &mut found).unwrap_err();
            assert!(e.1.contains("one file name in quotes"), "{bad}: {e:?}");
        }
    }
}
