//! Plan: what `check` and `--dry-run` do instead of sending. Every message is rendered (which
//! catches per-row problems), optionally written out as `.eml`, and nothing connects anywhere.

use std::collections::HashSet;
use std::path::Path;

use super::ledger::Ledger;
use super::prepare::Campaign;
use super::route::Routed;
use super::send::Sent;
use super::{RunConfig, RunError};
use crate::delivery::MessageSource;
use crate::smtp;

/// Renders every routed row (and those DNS already decided: a missing value is a problem to
/// list all the same) in parallel and settles every row in the ledger as a real run would; returns the sites and messages
/// that would be sent.
pub(super) async fn plan(
    cfg: &RunConfig,
    job: &Campaign,
    eml_out: Option<&Path>,
    ledger: &mut Ledger,
    mut routes: Routed,
    source: MessageSource,
) -> Result<Sent, RunError> {
    if let Some(dir) = eml_out {
        std::fs::create_dir_all(dir).map_err(|source| RunError::Out {
            path: dir.into(),
            source,
        })?;
    }
    // (row, whether it would be sent): only those go to --out.
    let todo: Vec<(usize, bool)> = routes
        .work
        .iter()
        .flat_map(|w| w.rows.iter().map(|&r| (r, true)))
        .chain(routes.decided.iter().map(|(r, _)| (*r, false)))
        .collect();
    let out = eml_out.map(Path::to_path_buf);
    let list = job.list.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        use rayon::prelude::*;
        todo.par_iter()
            .map(|&(r, would_send)| match source(r) {
                Err(o) => (r, Some(*o), None),
                Ok(msg) => {
                    let written = out.as_ref().filter(|_| would_send).and_then(|dir| {
                        let row = list.row(r);
                        let path = dir.join(eml_name(row.row, &row.email));
                        let bytes = smtp::DataPayload::unstuff(msg.payload.as_bytes());
                        crate::files::write(&path, &bytes)
                            .and_then(|()| crate::preview::write_beside(&path, &bytes))
                            .err()
                            .map(|e| (path, e))
                    });
                    (r, None, written)
                }
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let decided: HashSet<usize> = routes.decided.iter().map(|(r, _)| *r).collect();
    let mut invalid = HashSet::new();
    for (r, failed, write_err) in rendered {
        if let Some((path, source)) = write_err {
            return Err(RunError::Out { path, source });
        }
        match failed {
            // A real run never renders a row DNS decided: it gets that outcome, and the
            // problem is only listed, to be fixed before the domain works.
            Some(o) if decided.contains(&r) => ledger.note_problem(r, o.response),
            Some(o) => {
                invalid.insert(r);
                ledger.settle(r, o);
            }
            None => {}
        }
    }
    for (i, o) in std::mem::take(&mut routes.decided) {
        ledger.settle(i, o);
    }
    for &r in routes.work.iter().flat_map(|w| &w.rows) {
        if !invalid.contains(&r) {
            // Would be sent: nothing was, so the results of a plan call it not attempted.
            ledger.settle(r, super::not_attempted());
        }
    }
    let failed = routes
        .work
        .iter()
        .flat_map(|w| &w.rows)
        .filter(|r| invalid.contains(r))
        .count();
    Ok(Sent {
        sites: routes.plan_sites(&invalid, &cfg.delivery),
        to_send: routes.to_send() - failed,
        ..Sent::default()
    })
}

/// File name for a `--out` message: row number and a filesystem-safe address.
fn eml_name(row: usize, email: &str) -> String {
    let safe: String = email
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "@.-_+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{row:06}-{safe}.eml")
}
