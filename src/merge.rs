//! Joining shard results (`mailmerge merge-results`): the results CSVs of `--shard
//! 0/N` … `N-1/N` become one results CSV in the list's order, as a single process would have
//! written it.
//!
//! The shards' files are untrusted input (anyone who can write them could otherwise change a
//! row's address or outcome), so each is checked against the list itself (docs/scaling.md,
//! "Merging"):
//! - the header is the one `run` writes for this list (our columns, then the list's);
//! - the `row` cell is written as `run` writes it: a decimal number without sign, spaces or
//!   leading zeros, from 1 to the list's length;
//! - the row's `email` cell and its list cells (the columns after ours) are those of the list's
//!   row of that number, as written or [`defuse`]d (`--raw-csv` or not);
//! - within one file, rows come in list order, as `run` writes them;
//! - every row of the list appears exactly once over all inputs.
//!
//! Anything else is refused (exit 2), naming the rows, and nothing is written. Rows are copied
//! byte for byte: cells are opaque text (a formula-defused `'=…` stays as it is; nothing is
//! defused twice). A check against the list's content is stronger than one against its
//! fingerprint: it also catches a shard file edited after the run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::files::{self, NewFile};
use crate::recipients::RecipientList;
use crate::report::{self, defuse};

/// Why the shards' results cannot be merged.
#[derive(Debug, Error)]
pub enum MergeError {
    /// A results file cannot be read or is not a results CSV of this list.
    #[error("{path}: {reason}")]
    Input {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The inputs do not cover the list exactly once, or their rows are not the list's.
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

/// Merges `inputs` into `output`, checking every row against `list`; returns the rows written.
pub fn merge_results(
    inputs: &[PathBuf],
    list: &RecipientList,
    output: &Path,
) -> Result<usize, MergeError> {
    let mut merged = Merged {
        header: None,
        slots: vec![None; list.len()],
        problems: Problems::default(),
    };
    for path in inputs {
        merged.read(path, list)?;
    }
    merged.problems.missing = (1..=list.len())
        .filter(|&n| merged.slots[n - 1].is_none())
        .collect();
    if !merged.problems.is_empty() {
        return Err(MergeError::Coverage(merged.problems.to_string()));
    }
    let header = merged.header.unwrap_or_default();
    write(output, &header, merged.slots.iter().flatten()).map_err(|source| MergeError::Output {
        path: output.into(),
        source,
    })?;
    Ok(list.len())
}

/// The rows read so far, by list position, and what is wrong with them.
struct Merged {
    /// The first input's header (every input must have the same).
    header: Option<csv::ByteRecord>,
    /// Row `n` of the list at index `n - 1`.
    slots: Vec<Option<csv::ByteRecord>>,
    /// What the inputs got wrong.
    problems: Problems,
}

impl Merged {
    /// Reads one shard's results into the slots.
    fn read(&mut self, path: &Path, list: &RecipientList) -> Result<(), MergeError> {
        let bad = |reason: String| MergeError::Input {
            path: path.into(),
            reason,
        };
        let mut rdr = csv::Reader::from_path(path).map_err(|e| bad(e.to_string()))?;
        let h = rdr.byte_headers().map_err(|e| bad(e.to_string()))?.clone();
        if !is_results_header(&h, list) {
            return Err(bad(
                "not the results header `run` writes for this list (another list, another \
                 --email-column, or not a mailmerge results CSV)"
                    .into(),
            ));
        }
        match &self.header {
            Some(first) if *first != h => {
                return Err(bad(
                    "its header is written differently from the first input's: merge results \
                     of one job only"
                        .into(),
                ));
            }
            _ => self.header = Some(h),
        }
        let mut last = 0;
        for rec in rdr.byte_records() {
            let rec = rec.map_err(|e| bad(e.to_string()))?;
            let Some(n) = row_number(rec.get(0).unwrap_or_default(), list.len()) else {
                let shown = String::from_utf8_lossy(rec.get(0).unwrap_or_default());
                self.problems.unknown.insert(format!("{shown:?}"));
                continue;
            };
            if n <= last {
                let shown = format!("{}: row {n} after row {last}", path.display());
                self.problems.out_of_order.push(shown);
            }
            last = last.max(n);
            if let Some(why) = differs(&rec, list, n) {
                self.problems.differ.entry(n).or_insert(why);
            }
            if self.slots[n - 1].is_some() {
                self.problems.duplicated.insert(n);
            } else {
                self.slots[n - 1] = Some(rec);
            }
        }
        Ok(())
    }
}

/// The row number in a `row` cell, only as `run` writes it: decimal digits without a leading
/// zero, sign or space, from 1 to `rows`.
fn row_number(cell: &[u8], rows: usize) -> Option<usize> {
    let canonical = cell.first().is_some_and(|&b| b != b'0') && cell.iter().all(u8::is_ascii_digit);
    let n: usize = std::str::from_utf8(cell).ok()?.parse().ok()?;
    (canonical && (1..=rows).contains(&n)).then_some(n)
}

/// A cell as `run` writes `want`: as is, or defused (the shard may have run with or without
/// `--raw-csv`).
fn same(got: &[u8], want: &str) -> bool {
    got == want.as_bytes() || got == defuse(want).as_bytes()
}

/// True when `h` is the header `run` writes for `list` (defused or not).
fn is_results_header(h: &csv::ByteRecord, list: &RecipientList) -> bool {
    let want = report::header(&list.columns);
    h.len() == want.len() && h.iter().zip(&want).all(|(got, w)| same(got, w))
}

/// Why results row `rec`, numbered `n`, is not row `n` of the list; `None` when it is.
fn differs(rec: &csv::ByteRecord, list: &RecipientList, n: usize) -> Option<String> {
    let row = list.row(n - 1);
    let email = rec.get(1).unwrap_or_default();
    if !same(email, &row.email) {
        return Some(format!(
            "the list has {:?}, the results {:?}",
            row.email,
            String::from_utf8_lossy(email)
        ));
    }
    let first = report::COLUMNS.len();
    let changed = report::input_cells(list, &row)
        .enumerate()
        .find(|(c, want)| !same(rec.get(first + c).unwrap_or_default(), want))?;
    Some(format!(
        "its {:?} is not the list's",
        list.columns.get(changed.0).map_or("", String::as_str)
    ))
}

/// What is wrong with the inputs, row by row.
#[derive(Default)]
struct Problems {
    /// Rows of the list in no input.
    missing: Vec<usize>,
    /// Rows in more than one input (or twice in one).
    duplicated: BTreeSet<usize>,
    /// `row` cells that are no row of the list (quoted as found).
    unknown: BTreeSet<String>,
    /// Rows whose address or list cells are not the list's row of that number: why.
    differ: BTreeMap<usize, String>,
    /// `file: row N after row M`.
    out_of_order: Vec<String>,
}

impl Problems {
    fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.duplicated.is_empty()
            && self.unknown.is_empty()
            && self.differ.is_empty()
            && self.out_of_order.is_empty()
    }
}

/// `the results do not match the list (rows missing: 3, 7; rows in more than one input: 5;
/// rows not in the list: "99"; …)`.
impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn list<T: ToString>(items: impl ExactSizeIterator<Item = T>) -> String {
            let n = items.len();
            let mut shown: Vec<String> = items.take(20).map(|i| i.to_string()).collect();
            if n > 20 {
                shown.push(format!("… ({n} in all)"));
            }
            shown.join(", ")
        }
        let differ = self.differ.iter().map(|(n, why)| format!("{n} ({why})"));
        let parts = [
            ("rows missing", list(self.missing.iter())),
            ("rows in more than one input", list(self.duplicated.iter())),
            ("rows not in the list", list(self.unknown.iter())),
            ("rows that differ from the list", list(differ)),
            ("rows out of list order", list(self.out_of_order.iter())),
        ];
        let parts: Vec<String> = parts
            .into_iter()
            .filter(|(_, items)| !items.is_empty())
            .map(|(what, items)| format!("{what}: {items}"))
            .collect();
        write!(
            f,
            "the results do not match the list ({})",
            parts.join("; ")
        )
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipients::ListOptions;

    fn file(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    /// A list `email,name` of these rows.
    fn list(rows: &[(&str, &str)]) -> RecipientList {
        let mut csv = String::from("email,name\n");
        for (e, n) in rows {
            csv.push_str(&format!("{e},{n}\n"));
        }
        RecipientList::from_reader(csv.as_bytes(), Path::new("l.csv"), &ListOptions::default())
            .unwrap()
    }

    /// A results file of `list` with these (row, email, name) lines; `raw`: not defused.
    fn results(
        dir: &Path,
        name: &str,
        list: &RecipientList,
        lines: &[(&str, &str, &str)],
    ) -> PathBuf {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(report::header(&list.columns)).unwrap();
        for (row, email, n) in lines {
            let mut cells = vec![""; report::COLUMNS.len()];
            cells[0] = row;
            cells[1] = email;
            cells.extend([*email, *n]);
            w.write_record(&cells).unwrap();
        }
        file(
            dir,
            name,
            &String::from_utf8(w.into_inner().unwrap()).unwrap(),
        )
    }

    #[test]
    fn merges_in_row_order_keeping_cells_as_they_are() {
        let d = tempfile::tempdir().unwrap();
        let l = list(&[("a@x.test", "\"x,y\""), ("b@x.test", "=1+1")]);
        let a = results(d.path(), "a.csv", &l, &[("2", "b@x.test", "'=1+1")]);
        let b = results(d.path(), "b.csv", &l, &[("1", "a@x.test", "x,y")]);
        let out = d.path().join("m.csv");
        assert_eq!(merge_results(&[a, b], &l, &out).unwrap(), 2);
        let text = std::fs::read_to_string(&out).unwrap();
        let pad = ",".repeat(report::COLUMNS.len() - 2);
        let rows: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            rows,
            [
                format!("1,a@x.test{pad},a@x.test,\"x,y\""),
                format!("2,b@x.test{pad},b@x.test,'=1+1")
            ]
        );
    }

    #[test]
    fn names_missing_duplicated_unknown_and_differing_rows() {
        let d = tempfile::tempdir().unwrap();
        let l = list(&[
            ("a@x.test", "A"),
            ("b@x.test", "B"),
            ("c@x.test", "C"),
            ("d@x.test", "D"),
        ]);
        let a = results(
            d.path(),
            "a.csv",
            &l,
            &[
                ("1", "a@x.test", "A"),
                ("3", "c@x.test", "C"),
                ("9", "x@x.test", "X"),
            ],
        );
        let b = results(
            d.path(),
            "b.csv",
            &l,
            &[("3", "c@x.test", "C"), ("4", "d@x.test", "Eve")],
        );
        let err = merge_results(&[a, b], &l, &d.path().join("m.csv")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("rows missing: 2;"), "{text}");
        assert!(text.contains("more than one input: 3;"), "{text}");
        assert!(text.contains("not in the list: \"9\""), "{text}");
        assert!(
            text.contains("differ from the list: 4 (its \"name\" is not the list's)"),
            "{text}"
        );
        assert!(!d.path().join("m.csv").exists());
    }

    #[test]
    fn only_canonical_row_numbers_are_rows() {
        for (cell, want) in [
            ("1", Some(1)),
            ("12", Some(12)),
            ("12", Some(12)),
            ("0", None),
            ("13", None),
            ("+3", None),
            ("04", None),
            (" 5 ", None),
            ("5 ", None),
            ("", None),
            ("٣", None),
            ("99999999999999999999999", None),
        ] {
            assert_eq!(row_number(cell.as_bytes(), 12), want, "{cell:?}");
        }
    }

    #[test]
    fn refuses_inputs_of_different_jobs() {
        let d = tempfile::tempdir().unwrap();
        let l = list(&[("a@x.test", "A"), ("b@x.test", "B")]);
        let a = results(d.path(), "a.csv", &l, &[("1", "a@x.test", "A")]);
        let b = file(d.path(), "b.csv", "row,status,extra\n2,delivered,x\n");
        let err = merge_results(&[a, b], &l, &d.path().join("m.csv")).unwrap_err();
        assert!(matches!(err, MergeError::Input { .. }), "{err}");
    }
}
