//! CSV in and out of the suppression list: `suppress export` writes every entry, its cells
//! defused as in the results CSV ([`crate::report::defuse`]); `suppress import` reads an
//! unsubscribe export of another tool (or one of ours), taking the addresses from one column
//! chosen by name (`--column "Email Address"`).
//!
//! An imported file is untrusted (docs/list-hygiene.md, "Importing"):
//! - a whole domain is suppressed only when its row says so, in a `kind` column (`domain`);
//!   a bare `@domain` cell without it is skipped, never taken as the whole domain;
//! - only the address, `kind`, `reason` and `created` cells are read (read back through
//!   [`crate::report::undefuse`], so an export imports as it was); `created` must be an
//!   RFC 3339 date-time (or a full date) no later than tomorrow, stored in UTC; any other value
//!   (a formula, `9999-99-99`) is replaced by the import's time, and said: the address itself
//!   is kept, as an unsubscribe must not be lost over its date;
//! - a line that cannot be used (an address or `kind` cell that is not UTF-8, not an address,
//!   an unknown `kind`) is reported with its line number and skipped; only an unreadable file
//!   or a header without the column is fatal.

use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Entry, Reason, StoreError, normalize};
use crate::report::{undefuse, write_row};

/// Columns of an export (and of an import that kept them).
pub const COLUMNS: [&str; 6] = ["address", "reason", "cause", "campaign", "created", "kind"];

/// Writes `entries` as CSV with a header row, every cell defused (a domain entry is its
/// domain with `kind` `domain`).
pub fn export_csv(entries: &[Entry], out: impl Write, name: &str) -> Result<(), StoreError> {
    let err = |e: csv::Error| StoreError::Csv {
        path: name.to_string(),
        message: e.to_string(),
    };
    let mut w = csv::Writer::from_writer(out);
    write_row(&mut w, COLUMNS.into_iter(), false).map_err(err)?;
    for e in entries {
        let (address, kind) = match e.key.strip_prefix('@') {
            Some(domain) => (domain, "domain"),
            None => (e.key.as_str(), "address"),
        };
        let cells = [
            address,
            e.reason.as_str(),
            &e.cause,
            &e.campaign,
            &e.created,
            kind,
        ];
        write_row(&mut w, cells.into_iter(), false).map_err(err)?;
    }
    w.flush().map_err(|e| err(e.into()))
}

/// What an import read: the entries, the lines it skipped and the lines it changed.
#[derive(Debug, Default)]
pub struct Imported {
    /// One entry per usable line.
    pub entries: Vec<Entry>,
    /// Lines not imported: `line N: why`.
    pub skipped: Vec<String>,
    /// Lines imported with a value replaced: `line N: created "…" is not …`.
    pub notes: Vec<String>,
}

/// Reads entries from CSV: addresses from `column` (matched without regard to case), the
/// reason from a `reason` column when there is one (else `reason`), the kind of entry from a
/// `kind` column, the date from a `created` column.
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
    let headers = r.byte_headers().map_err(|e| err(e.to_string()))?.clone();
    let cols = Columns::find(&headers, column).map_err(err)?;
    let now = SystemTime::now();
    let mut out = Imported::default();
    let mut rec = csv::ByteRecord::new();
    // Read as bytes, never failing on a line: flexible byte records fail only on I/O.
    while r
        .read_byte_record(&mut rec)
        .map_err(|e| err(e.to_string()))?
    {
        let line = rec.position().map_or(0, |p| p.line());
        match cols.entry(&rec, reason, name, now) {
            Ok((entry, note)) => {
                out.entries.push(entry);
                out.notes.extend(note.map(|n| format!("line {line}: {n}")));
            }
            Err(why) => out.skipped.push(format!("line {line}: {why}")),
        }
    }
    Ok(out)
}

/// Where the cells an import reads are.
struct Columns {
    /// Header names (for messages).
    names: Vec<String>,
    /// The addresses.
    address: usize,
    /// `address` or `domain`.
    kind: Option<usize>,
    /// A [`Reason`] name.
    reason: Option<usize>,
    /// When the entry was made (RFC 3339).
    created: Option<usize>,
}

/// What a row's `kind` cell says.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Nothing (no column, or an empty cell): an address.
    Unsaid,
    /// `address`.
    Address,
    /// `domain`: the whole domain.
    Domain,
}

impl Columns {
    /// Finds the columns by name (without regard to case, spaces or a byte-order mark).
    fn find(headers: &csv::ByteRecord, column: &str) -> Result<Self, String> {
        let names: Vec<String> = headers
            .iter()
            .map(|h| {
                String::from_utf8_lossy(h)
                    .trim()
                    .trim_start_matches('\u{feff}')
                    .to_string()
            })
            .collect();
        let find = |want: &str| names.iter().position(|h| h.eq_ignore_ascii_case(want));
        let Some(address) = find(column) else {
            return Err(format!(
                "no column {column:?} (columns: {})",
                names.join(", ")
            ));
        };
        Ok(Self {
            address,
            kind: find("kind"),
            reason: find("reason"),
            created: find("created"),
            names,
        })
    }

    /// Cell `i` of `rec` as text, undefused and trimmed ("" when absent).
    fn cell<'a>(&self, rec: &'a csv::ByteRecord, i: Option<usize>) -> Result<&'a str, String> {
        let Some(i) = i else { return Ok("") };
        let bytes = rec.get(i).unwrap_or_default();
        let text = std::str::from_utf8(bytes)
            .map_err(|_| format!("not UTF-8 (column {:?})", self.names[i]))?;
        Ok(undefuse(text.trim()).trim())
    }

    /// The entry of one row, and a note when a value was replaced; `Err`: why the row is
    /// skipped.
    fn entry(
        &self,
        rec: &csv::ByteRecord,
        default: Reason,
        name: &str,
        now: SystemTime,
    ) -> Result<(Entry, Option<String>), String> {
        let value = self.cell(rec, Some(self.address))?;
        let kind = match self.cell(rec, self.kind)?.to_ascii_lowercase().as_str() {
            "" => Kind::Unsaid,
            "address" => Kind::Address,
            "domain" => Kind::Domain,
            _ => {
                let shown = shown(self.cell(rec, self.kind)?);
                return Err(format!("kind {shown}: use address or domain"));
            }
        };
        let key = key(value, kind)?;
        // The reason and the date never cost the entry: unusable, they give way to defaults.
        let reason = self.cell(rec, self.reason).ok().and_then(Reason::parse);
        let mut e = Entry::new(
            key,
            reason.unwrap_or(default),
            format!("imported from {name}"),
            "",
        );
        let date = match self.cell(rec, self.created) {
            Ok("") => Ok(None),
            Ok(given) => created(given, now)
                .map(Some)
                .map_err(|why| format!("created {} {why}", shown(given))),
            Err(why) => Err(format!("created {why}")),
        };
        let note = match date {
            Ok(at) => {
                e.created = at.unwrap_or(e.created);
                None
            }
            Err(why) => Some(format!("{why}: dated at this import instead")),
        };
        Ok((e, note))
    }
}

/// The key of a row's address cell: a whole domain (`@domain`) only when its kind says so.
fn key(value: &str, kind: Kind) -> Result<String, String> {
    let refuse = |e: StoreError| match e {
        StoreError::Key { reason, .. } => format!("{} is not usable: {reason}", shown(value)),
        other => other.to_string(),
    };
    if kind == Kind::Domain {
        let domain = value.trim_start_matches('@');
        return normalize(&format!("@{domain}")).map_err(refuse);
    }
    let key = normalize(value).map_err(refuse)?;
    if key.starts_with('@') {
        return Err(match kind {
            Kind::Address => format!(
                "{} is a whole domain, but its kind says address",
                shown(value)
            ),
            _ => format!(
                "{} is a whole domain: a domain entry needs a `kind` column saying `domain` \
                 (docs/list-hygiene.md)",
                shown(value)
            ),
        });
    }
    Ok(key)
}

/// A `created` value as we store it (RFC 3339, UTC, seconds), or why it is refused: it must
/// be an RFC 3339 date-time (any offset) or a full date (`2026-11-02`, midnight UTC), from 1970
/// on and no later than a day after `now` (clocks differ; a later date is made up).
fn created(value: &str, now: SystemTime) -> Result<String, &'static str> {
    let full;
    let text = if value.len() == "2026-11-02".len() {
        full = format!("{value}T00:00:00Z");
        &full
    } else {
        value
    };
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| "is not an RFC 3339 date")?;
    let secs = u64::try_from(t.unix_timestamp()).map_err(|_| "is before 1970")?;
    let at = UNIX_EPOCH + Duration::from_secs(secs);
    if at > now + Duration::from_secs(86_400) {
        return Err("is in the future");
    }
    Ok(humantime::format_rfc3339_seconds(at).to_string())
}

/// A value from the file as shown in a message: quoted, escaped, at most 60 characters.
fn shown(value: &str) -> String {
    match value.char_indices().nth(60) {
        Some((cut, _)) => format!("{:?}…", &value[..cut]),
        None => format!("{value:?}"),
    }
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
        assert!(back.notes.is_empty() && back.skipped.is_empty());
        assert!(import_csv(text.as_bytes(), "u.csv", "mail", Reason::Manual).is_err());
    }

    #[test]
    fn created_dates_are_rfc3339_in_utc_and_not_made_up() {
        // A fixed "now": 2026-11-02T10:00:00Z.
        let now = UNIX_EPOCH + Duration::from_secs(1_793_613_600);
        let ok = |v: &str| created(v, now).unwrap();
        assert_eq!(ok("2026-11-02T10:00:00Z"), "2026-11-02T10:00:00Z");
        assert_eq!(ok("2026-11-02t12:00:00.999+02:00"), "2026-11-02T10:00:00Z");
        assert_eq!(ok("2026-11-02 10:00:00-01:00"), "2026-11-02T11:00:00Z");
        assert_eq!(ok("2026-11-03"), "2026-11-03T00:00:00Z", "clocks differ");
        for bad in [
            "=HYPERLINK(\"x\")",
            "9999-99-99",
            "2026-02-30",
            "2026-11-02T10:00:00",
            "yesterday",
            "2026-11-04",
            "9999-12-31T00:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert!(created(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn unusable_reason_and_date_cells_never_cost_the_entry() {
        let mut text = b"address,reason,created,kind\n".to_vec();
        text.extend_from_slice(b"a@x.test,compl\xe4int,2026-01-0\xff,\n");
        text.extend_from_slice(b"b@x.test,manual,,dom\xe4in\n");
        let got = import_csv(text.as_slice(), "f", "address", Reason::Unsubscribe).unwrap();
        assert_eq!(got.entries.len(), 1);
        assert_eq!(got.entries[0].key, "a@x.test");
        assert_eq!(got.entries[0].reason, Reason::Unsubscribe);
        assert_eq!(
            got.notes,
            ["line 2: created not UTF-8 (column \"created\"): dated at this import instead"]
        );
        assert_eq!(got.skipped, ["line 3: not UTF-8 (column \"kind\")"]);
    }

    #[test]
    fn a_long_value_is_shown_short() {
        let long = "x".repeat(10_000);
        assert!(shown(&long).chars().count() < 70);
        assert_eq!(shown("a\u{1b}b"), "\"a\\u{1b}b\"");
    }
}
