//! The message source: how the delivery engine (and the plan) turn a row number into a
//! message, on demand, so that only the messages in flight are ever in memory. When sending,
//! it also leaves each row's journal key behind for the journal's recorder ([`BuiltKeys`]),
//! so that the row is read once per message, not twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::prepare::Campaign;
use super::{RunConfig, Warnings};
use crate::delivery::MessageSource;
use crate::identity;
use crate::journal::RowKey;
use crate::message::{self, AttachmentDir, BuiltMessage, MessageOptions};
use crate::outcome::{Outcome, Status, Step};

/// The journal keys (and row numbers) of the rows whose messages were built and whose
/// outcomes are not recorded yet: the message source puts, the recorder takes. A row built
/// but never recorded (the run was cut off) stays until the run ends.
#[derive(Default)]
pub(super) struct BuiltKeys(Mutex<HashMap<usize, (RowKey, usize)>>);

impl BuiltKeys {
    fn put(&self, i: usize, key: (RowKey, usize)) {
        if let Ok(mut keys) = self.0.lock() {
            keys.insert(i, key);
        }
    }

    /// Row `i`'s key and row number, if its message was built.
    pub(super) fn take(&self, i: usize) -> Option<(RowKey, usize)> {
        self.0.lock().ok()?.remove(&i)
    }
}

/// Renders and builds row `i`'s message; a row that cannot be rendered is `invalid`. With
/// `keys`, each built row's journal key is left there.
pub(super) fn message_source(
    cfg: &RunConfig,
    job: &Campaign,
    warnings: &Warnings,
    keys: Option<Arc<BuiltKeys>>,
) -> MessageSource {
    let row_keys = job.keys.clone();
    let list = job.list.clone();
    let template = job.template.clone();
    let mut opts = cfg.message.clone();
    opts.message_id_prefix
        .get_or_insert_with(message::new_run_id);
    opts.attachments
        .get_or_insert_with(|| AttachmentDir::new(template.base_dir()));
    if let Some(verp) = opts.verp.as_mut() {
        verp.campaign = job.id(cfg);
    }
    opts.trace
        .get_or_insert_with(|| message::Trace::new(&cfg.recipients, cfg.delivery.helo()));
    let warnings = warnings.clone();
    Arc::new(move |i: usize| {
        let row = list.row(i);
        let invalid = |step, text: String| Box::new(Outcome::local(Status::Invalid, step, text));
        let addr = row
            .status
            .as_ref()
            .map_err(|e| invalid(Step::Input, e.to_string()))?;
        let rendered = template
            .render(&list.columns, &row.fields)
            .map_err(|e| invalid(Step::Render, format!("line {}: {e}", row.line)))?;
        let built = message::build_row(rendered, addr, &opts, Some(row.row))
            .map_err(|e| invalid(Step::Render, format!("line {}: {e}", row.line)))?;
        check_identity(&built, &opts, &warnings);
        if let Some(keys) = &keys {
            keys.put(i, (row_keys.key(&list, i, &row), row.row));
        }
        Ok(built)
    })
}

/// Warns once per distinct misalignment between From, envelope sender and DKIM `d=`.
fn check_identity(built: &BuiltMessage, opts: &MessageOptions, warnings: &Warnings) {
    let envelope_domain = built.envelope.from.rsplit_once('@').map_or("", |(_, d)| d);
    let dkim_domain = opts
        .dkim
        .as_ref()
        .map(|s| s.signing_domain(&built.from_domain));
    for w in identity::alignment_warnings(&built.from_domain, envelope_domain, dkim_domain) {
        warnings.add(w);
    }
}
