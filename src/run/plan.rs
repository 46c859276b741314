//! Plan: what `check` and `--dry-run` do instead of sending. Every message is rendered (which
//! catches per-row problems), optionally written out as `.eml`, and nothing connects anywhere.

use std::collections::HashSet;
use std::path::Path;

use super::prepare::Campaign;
use super::route::Routes;
use super::triage::Rows;
use super::{RunConfig, RunError, problem};
use crate::delivery::MessageSource;
use crate::smtp;

/// Renders every routed row (and those DNS already decided: a missing value is a problem of
/// its own) in parallel; fills in the plan and settles every row's outcome.
pub(super) async fn plan(
    cfg: &RunConfig,
    job: &Campaign,
    eml_out: Option<&Path>,
    rows: &mut Rows,
    routes: Routes,
    source: MessageSource,
) -> Result<(), RunError> {
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
                        std::fs::write(&path, &bytes)
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
    let mut invalid = HashSet::new();
    for (r, failed, write_err) in rendered {
        if let Some((path, source)) = write_err {
            return Err(RunError::Out { path, source });
        }
        if let Some(o) = failed {
            rows.plan
                .problems
                .push(problem(&cfg.recipients, &o.response));
            rows.plan.invalid += 1;
            invalid.insert(r);
            rows.outcomes.set_local(r, o);
        }
    }
    for (i, o) in routes.decided.iter() {
        if !invalid.contains(i) {
            rows.outcomes.set_local(*i, o.clone());
        }
    }
    let prefix = format!("{}:", cfg.recipients.display());
    // Keep problems in file order: the line number follows the path.
    rows.plan.problems.sort_by_key(|p| {
        p.strip_prefix(&prefix)
            .and_then(|rest| rest.split(':').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    });
    rows.plan.sites = routes.plan_sites(&invalid, &cfg.delivery);
    rows.plan.to_send = routes.to_send()
        - routes
            .work
            .iter()
            .flat_map(|w| &w.rows)
            .filter(|r| invalid.contains(r))
            .count();
    Ok(())
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
