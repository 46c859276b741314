//! Prepare: read the list and the template, check that they fit, and load what earlier runs
//! of this job recorded (docs/results.md, "Re-running safely"). Everything that can stop a run before
//! any row is looked at happens here.

use std::path::PathBuf;
use std::sync::Arc;

use super::{RunConfig, RunError, Warnings};
use crate::identity;
use crate::journal::{self, Replay, RowKeys};
use crate::recipients::RecipientList;
use crate::template::MessageTemplate;

/// The campaign as read from disk: list, template and the journal of earlier runs.
pub(super) struct Campaign {
    /// The list (bytes kept once; rows parsed on demand).
    pub list: Arc<RecipientList>,
    /// The template, with the header options added.
    pub template: Arc<MessageTemplate>,
    /// Row identities for the journal.
    pub keys: Arc<RowKeys>,
    /// Outcomes recorded by earlier runs.
    pub replay: Replay,
    /// Which message this run sends (template and header options).
    pub fingerprint: String,
    /// Where the journal lives (beside the results).
    pub journal_path: PathBuf,
}

impl Campaign {
    /// The campaign's id, as the suppression list and VERP tokens know it
    /// ([`crate::verp::campaign_id`]).
    pub(super) fn id(&self, cfg: &RunConfig) -> String {
        crate::verp::campaign_id(&cfg.results, &self.fingerprint)
    }
}

/// Reads and checks the inputs; refuses a journal written for another message.
pub(super) fn prepare(cfg: &RunConfig, warnings: &Warnings) -> Result<Campaign, RunError> {
    if let Some(w) = identity::helo_warning(cfg.delivery.helo()) {
        warnings.add(w);
    }
    let list = Arc::new(RecipientList::from_path(&cfg.recipients, &cfg.list)?);
    let mut template = MessageTemplate::from_path(&cfg.template)?;
    for (name, value) in &cfg.message.extra_headers {
        template.add_header(name, value, "the --list-unsubscribe option")?;
    }
    template.check_columns(&list.columns)?;
    let journal_path = journal::path_for(&cfg.results);
    let replay = if cfg.fresh {
        Replay::default()
    } else {
        journal::load(&journal_path, cfg.journal_repair)?
    };
    if replay.torn_tail {
        warnings.add(format!(
            "journal {}: its last record was cut short (a crash while writing it); ignored",
            journal_path.display()
        ));
    }
    if replay.damaged > 0 {
        warnings.add(format!(
            "journal {}: skipped {} damaged record(s) (--journal-repair); their rows are sent again",
            journal_path.display(),
            replay.damaged
        ));
    }
    // The same list with another template is a new campaign, not a re-run.
    let fingerprint = journal::fingerprint(
        std::iter::once(template.source().as_bytes()).chain(
            cfg.message
                .extra_headers
                .iter()
                .flat_map(|(n, v)| [n.as_bytes(), v.as_bytes()]),
        ),
    );
    if let Some(recorded) = &replay.template
        && *recorded != fingerprint
        && !cfg.template_changed
    {
        return Err(journal::JournalError::OtherTemplate { path: journal_path }.into());
    }
    Ok(Campaign {
        keys: Arc::new(RowKeys::new(&list, cfg.list.allow_duplicates)),
        list,
        template: Arc::new(template),
        replay,
        fingerprint,
        journal_path,
    })
}
