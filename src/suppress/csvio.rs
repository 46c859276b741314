//! CSV in and out of the suppression list: `suppress export` writes every entry, `suppress
//! import` reads an unsubscribe export of another tool, taking the addresses from one column
//! chosen by name (`--column "Email Address"`).

use std::io::{Read, Write};

use super::{Entry, Reason, StoreError, normalize};

/// Columns of an export (and of an import that kept them).
pub const COLUMNS: [&str; 5] = ["address", "reason", "cause", "campaign", "created"];

/// Writes `entries` as CSV with a header row.
pub fn export_csv(entries: &[Entry], out: impl Write, name: &str) -> Result<(), StoreError> {
    let err = |e: csv::Error| StoreError::Csv {
        path: name.to_string(),
        message: e.to_string(),
    };
    let mut w = csv::Writer::from_writer(out);
    w.write_record(COLUMNS).map_err(err)?;
    for e in entries {
        w.write_record([
            e.key.as_str(),
            e.reason.as_str(),
            &e.cause,
            &e.campaign,
            &e.created,
        ])
        .map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))
}

/// What an import read: the entries, and the rows it skipped (`line N: why`).
#[derive(Debug, Default)]
pub struct Imported {
    /// One entry per usable row.
    pub entries: Vec<Entry>,
    /// Rows with no usable address.
    pub skipped: Vec<String>,
}

/// Reads entries from CSV: addresses from `column` (matched without regard to case), the
/// reason from a `reason` column when there is one, else `reason`.
pub fn import_csv(
    input: impl Read,
    name: &str,
    column: &str,
    reason: Reason,
) -> Result<Imported, StoreError> {
    let err = |message: String| StoreError::Csv {
        path: name.to_string(),
        message,
    };
    let mut r = csv::ReaderBuilder::new().flexible(true).from_reader(input);
    let headers = r.headers().map_err(|e| err(e.to_string()))?.clone();
    let find = |want: &str| {
        headers.iter().position(|h| {
            h.trim()
                .trim_start_matches('\u{feff}')
                .eq_ignore_ascii_case(want)
        })
    };
    let Some(at) = find(column) else {
        let have: Vec<&str> = headers.iter().collect();
        return Err(err(format!(
            "no column {column:?} (columns: {})",
            have.join(", ")
        )));
    };
    let reason_at = find("reason");
    let mut out = Imported::default();
    for (i, rec) in r.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| err(e.to_string()))?;
        let value = rec.get(at).unwrap_or_default();
        match normalize(value) {
            Ok(key) => {
                let why = reason_at
                    .and_then(|c| rec.get(c))
                    .and_then(Reason::parse)
                    .unwrap_or(reason);
                let mut e = Entry::new(key, why, format!("imported from {name}"), "");
                if let Some(c) = find("created").and_then(|c| rec.get(c))
                    && !c.trim().is_empty()
                {
                    e.created = c.trim().to_string();
                }
                out.entries.push(e);
            }
            Err(e) => out.skipped.push(format!("line {line}: {e}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_by_column_name_and_round_trips_an_export() {
        let text = "Name,Email Address,Date\nAnn,ANN@example.com,x\nBob,not-an-address,y\n";
        let got = import_csv(
            text.as_bytes(),
            "u.csv",
            "email address",
            Reason::Unsubscribe,
        )
        .unwrap();
        assert_eq!(got.entries.len(), 1);
        assert_eq!(got.entries[0].key, "ann@example.com");
        assert_eq!(got.entries[0].reason, Reason::Unsubscribe);
        assert_eq!(got.skipped.len(), 1);
        assert!(got.skipped[0].starts_with("line 3"));
        let mut out = Vec::new();
        export_csv(&got.entries, &mut out, "-").unwrap();
        let back = import_csv(out.as_slice(), "-", "address", Reason::Manual).unwrap();
        assert_eq!(back.entries[0].reason, Reason::Unsubscribe);
        assert_eq!(back.entries[0].created, got.entries[0].created);
        assert!(import_csv(text.as_bytes(), "u.csv", "mail", Reason::Manual).is_err());
    }
}
