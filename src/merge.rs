//! Joining shard results (`mailmerge merge-results`): the results CSVs of `--shard
//! 0/N` … `N-1/N` become one results CSV in the list's order, as a single process would have
//! written it.
//!
//! Rows are matched by the `row` column and copied byte for byte: cells are opaque text (a
//! formula-defused `'=…` stays as it is; nothing is defused twice). The merge refuses, naming
//! the rows, unless every row of the list appears exactly once over all inputs and the inputs
//! share one header.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::files::{self, NewFile};

/// Why the shards' results cannot be merged.
#[derive(Debug, Error)]
pub enum MergeError {
    /// A results file cannot be read or is not a results CSV.
    #[error("{path}: {reason}")]
    Input {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The inputs do not cover the list exactly once.
    #[error("{0}")]
    Coverage(String),
    /// The merged file cannot be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// File.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Merges `inputs` into `output` for a list of `rows` rows; returns the rows written.
pub fn merge_results(inputs: &[PathBuf], rows: usize, output: &Path) -> Result<usize, MergeError> {
    let mut header: Option<csv::ByteRecord> = None;
    let mut slots: Vec<Option<csv::ByteRecord>> = vec![None; rows];
    let (mut duplicated, mut unknown) = (BTreeSet::new(), BTreeSet::new());
    for path in inputs {
        let bad = |reason: String| MergeError::Input {
            path: path.clone(),
            reason,
        };
        let mut rdr = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
        let h = rdr.byte_headers().map_err(|e| bad(e.to_string()))?.clone();
        let Some(row_col) = h.iter().position(|c| c == b"row") else {
            return Err(bad("no `row` column: not a mailmerge results CSV".into()));
        };
        match &header {
            Some(first) if *first != h => {
                return Err(bad(format!(
                    "its header differs from {}'s: merge results of one job only",
                    inputs[0].display()
                )));
            }
            _ => header = Some(h),
        }
        for rec in rdr.byte_records() {
            let rec = rec.map_err(|e| bad(e.to_string()))?;
            let n = std::str::from_utf8(rec.get(row_col).unwrap_or_default())
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok());
            match n.filter(|&n| (1..=rows).contains(&n)) {
                None => {
                    let shown = String::from_utf8_lossy(rec.get(row_col).unwrap_or_default());
                    unknown.insert(shown.into_owned());
                }
                Some(n) if slots[n - 1].is_some() => {
                    duplicated.insert(n);
                }
                Some(n) => slots[n - 1] = Some(rec),
            }
        }
    }
    let missing: Vec<usize> = (1..=rows).filter(|&n| slots[n - 1].is_none()).collect();
    if !(missing.is_empty() && duplicated.is_empty() && unknown.is_empty()) {
        return Err(MergeError::Coverage(coverage_problem(
            &missing,
            &duplicated,
            &unknown,
        )));
    }
    let header = header.unwrap_or_default();
    write(output, &header, slots.iter().flatten()).map_err(|source| MergeError::Output {
        path: output.into(),
        source,
    })?;
    Ok(rows)
}

/// Writes the merged CSV through a temporary file, renamed into place ([`crate::files`]).
fn write<'a>(
    path: &Path,
    header: &csv::ByteRecord,
    records: impl Iterator<Item = &'a csv::ByteRecord>,
) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(NewFile::create(path)?);
    w.write_byte_record(header)?;
    for r in records {
        w.write_byte_record(r)?;
    }
    files::commit_csv(w)
}

/// `rows missing: 3, 7; rows in more than one input: 5; rows not in the list: 99`.
fn coverage_problem(
    missing: &[usize],
    duplicated: &BTreeSet<usize>,
    unknown: &BTreeSet<String>,
) -> String {
    fn list<T: ToString>(items: impl ExactSizeIterator<Item = T>) -> String {
        let n = items.len();
        let mut shown: Vec<String> = items.take(20).map(|i| i.to_string()).collect();
        if n > 20 {
            shown.push(format!("… ({n} in all)"));
        }
        shown.join(", ")
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("rows missing: {}", list(missing.iter())));
    }
    if !duplicated.is_empty() {
        parts.push(format!(
            "rows in more than one input: {}",
            list(duplicated.iter())
        ));
    }
    if !unknown.is_empty() {
        parts.push(format!("rows not in the list: {}", list(unknown.iter())));
    }
    format!(
        "the results do not cover the list exactly once ({})",
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn merges_in_row_order_keeping_cells_as_they_are() {
        let d = tempfile::tempdir().unwrap();
        let a = file(d.path(), "a.csv", "row,status,name\n2,delivered,'=1+1\n");
        let b = file(d.path(), "b.csv", "row,status,name\n1,bounced,\"x,y\"\n");
        let out = d.path().join("m.csv");
        assert_eq!(merge_results(&[a, b], 2, &out).unwrap(), 2);
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(
            text,
            "row,status,name\n1,bounced,\"x,y\"\n2,delivered,'=1+1\n"
        );
    }

    #[test]
    fn names_missing_duplicated_and_unknown_rows() {
        let d = tempfile::tempdir().unwrap();
        let a = file(
            d.path(),
            "a.csv",
            "row,status\n1,delivered\n3,delivered\n9,x\n",
        );
        let b = file(d.path(), "b.csv", "row,status\n3,deferred\n");
        let err = merge_results(&[a, b], 4, &d.path().join("m.csv")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("rows missing: 2, 4"), "{text}");
        assert!(text.contains("more than one input: 3"), "{text}");
        assert!(text.contains("not in the list: 9"), "{text}");
        assert!(!d.path().join("m.csv").exists());
    }

    #[test]
    fn refuses_inputs_of_different_jobs() {
        let d = tempfile::tempdir().unwrap();
        let a = file(d.path(), "a.csv", "row,status\n1,delivered\n");
        let b = file(d.path(), "b.csv", "row,status,extra\n2,delivered,x\n");
        let err = merge_results(&[a, b], 2, &d.path().join("m.csv")).unwrap_err();
        assert!(matches!(err, MergeError::Input { .. }), "{err}");
    }
}
