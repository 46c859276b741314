//! Recipients: the CSV list read into rows, each either a deliverable address or the reason it
//! is not.
//!
//! A broken row never stops the batch: it is kept, with its line number and what is wrong, and
//! ends as an `invalid` (or `duplicate`) result row. Only problems with the file as a whole
//! (unreadable, empty, a bad header row, no address column) are fatal.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::address::{Address, AddressError};

/// One data row of the list.
#[derive(Clone, Debug)]
pub struct Row {
    /// 1-based data row number (the header is row 0); the results CSV's `row` column.
    pub row: usize,
    /// Line in the file where the record starts (for messages a human reads).
    pub line: u64,
    /// The row's fields (invalid UTF-8 replaced), kept for rendering and for the report.
    pub fields: Vec<String>,
    /// The address as written in the file (trimmed).
    pub email: String,
    /// The parsed address, or why this row cannot be sent.
    pub status: Result<Address, RowError>,
}

/// Why one row is not sent.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum RowError {
    /// The CSV reader could not parse the record.
    #[error("line {line}: malformed CSV: {reason}")]
    Malformed {
        /// Line number.
        line: u64,
        /// Parser message.
        reason: String,
    },
    /// Not as many fields as the header has.
    #[error("line {line}: {found} fields, the header has {expected}")]
    FieldCount {
        /// Line number.
        line: u64,
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A field over `--max-field-size`.
    #[error(
        "line {line}: field {column:?} is {size} bytes, over the limit of {limit} (--max-field-size)"
    )]
    FieldTooLarge {
        /// Line number.
        line: u64,
        /// Column name.
        column: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Bytes that are not UTF-8.
    #[error("line {line}: field {column:?} is not valid UTF-8")]
    InvalidUtf8 {
        /// Line number.
        line: u64,
        /// Column name.
        column: String,
    },
    /// The address column does not hold a usable address.
    #[error("line {line}: {source}")]
    Address {
        /// Line number.
        line: u64,
        /// What is wrong.
        source: AddressError,
    },
    /// Same address as an earlier row (sent once, by default).
    #[error("line {line}: duplicate of row {first_row} (same address)")]
    Duplicate {
        /// Line number.
        line: u64,
        /// The row that will be sent.
        first_row: usize,
    },
}

impl RowError {
    /// The results CSV status for this error.
    pub fn status(&self) -> &'static str {
        match self {
            RowError::Duplicate { .. } => "duplicate",
            _ => "invalid",
        }
    }
}

/// Problems with the file as a whole: nothing can be sent.
#[derive(Debug, Error)]
pub enum ListError {
    /// The file cannot be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// No header row.
    #[error("{0}: the file is empty (a header row naming the columns is required)")]
    Empty(PathBuf),
    /// The header could not be parsed.
    #[error("{path}: line 1: bad header row: {reason}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The address column is not in the header.
    #[error("{path}: no column named {column:?} (columns: {available}); use --email-column")]
    NoEmailColumn {
        /// The file.
        path: PathBuf,
        /// Column looked for.
        column: String,
        /// Columns present.
        available: String,
    },
}

/// The whole list: column names and every row, in input order.
///
/// Built for lists of millions of rows: the file's bytes are kept once, with a small record
/// per row (where it starts, its line, whether it is sendable), and a row's fields are parsed
/// again when they are needed ([`RecipientList::row`]). Errors are kept only for the rows
/// that have one.
#[derive(Clone, Debug)]
pub struct RecipientList {
    /// Column names from the header row.
    pub columns: Vec<String>,
    /// Index of the address column.
    pub email_column: usize,
    data: Vec<u8>,
    rows: Vec<RowMeta>,
    errors: HashMap<usize, RowError>,
}

/// Where one row is: 16 bytes per row.
#[derive(Clone, Copy, Debug)]
struct RowMeta {
    /// Byte offset of the record in `data`.
    start: u64,
    /// Line where the record starts.
    line: u64,
}

/// How to read the list.
#[derive(Clone, Debug)]
pub struct ListOptions {
    /// Name of the address column.
    pub email_column: String,
    /// Send to repeated addresses instead of marking them `duplicate`.
    pub allow_duplicates: bool,
    /// Largest field accepted, in bytes: a longer one makes its row `invalid` (a hostile
    /// list cannot make messages of any size).
    pub max_field_size: usize,
}

/// Default `--max-field-size`: far above any real value (1 MiB).
pub const DEFAULT_MAX_FIELD_SIZE: usize = 1024 * 1024;

impl Default for ListOptions {
    fn default() -> Self {
        Self {
            email_column: "email".into(),
            allow_duplicates: false,
            max_field_size: DEFAULT_MAX_FIELD_SIZE,
        }
    }
}

impl RecipientList {
    /// Reads a CSV file.
    pub fn from_path(path: &Path, opts: &ListOptions) -> Result<Self, ListError> {
        // One allocation of the file's exact size (a growing buffer would briefly need
        // twice the list's size).
        let data = std::fs::read(path).map_err(|source| ListError::Io {
            path: path.into(),
            source,
        })?;
        Self::from_bytes(data, path, opts)
    }

    /// Reads CSV from any reader; `path` is only used in messages.
    pub fn from_reader<R: Read>(
        mut reader: R,
        path: &Path,
        opts: &ListOptions,
    ) -> Result<Self, ListError> {
        // Held in memory (the rows are anyway) so a record's raw bytes can be checked.
        let mut data = Vec::new();
        reader
            .read_to_end(&mut data)
            .map_err(|source| ListError::Io {
                path: path.into(),
                source,
            })?;
        data.shrink_to_fit();
        Self::from_bytes(data, path, opts)
    }

    /// Reads CSV held in memory; `path` is only used in messages.
    ///
    /// One pass: the header row gives the columns, then each record is checked and indexed
    /// (its fields are parsed again when [`RecipientList::row`] asks for them).
    pub fn from_bytes(data: Vec<u8>, path: &Path, opts: &ListOptions) -> Result<Self, ListError> {
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .has_headers(true)
            .from_reader(&data[..]);
        let columns = read_columns(&mut rdr, path)?;
        let email_column = find_email_column(&columns, &opts.email_column, path)?;
        let mut index = RowIndex::new(&data, &columns, email_column, opts);
        let mut record = csv::ByteRecord::new();
        loop {
            let line_before = rdr.position().line();
            let byte_before = rdr.position().byte();
            match rdr.read_byte_record(&mut record) {
                Ok(false) => break,
                Ok(true) => index.push_record(&record, line_before, rdr.position()),
                Err(e) => index.push_malformed(&e, line_before, byte_before, path)?,
            }
        }
        let (rows, errors) = index.finish();
        Ok(Self {
            columns,
            email_column,
            data,
            rows,
            errors,
        })
    }

    /// Number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the list has no data rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Row `i` (0-based), parsed from the kept bytes.
    pub fn row(&self, i: usize) -> Row {
        let meta = self.rows[i];
        let fields = parse_record(&self.data, meta.start);
        let email = fields
            .get(self.email_column)
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let status = self.status(i, &email);
        Row {
            row: i + 1,
            line: meta.line,
            fields,
            email,
            status,
        }
    }

    /// Row `i`'s address, or why it cannot be sent: [`RecipientList::row`]'s `status`,
    /// without decoding the row's other cells.
    pub fn address(&self, i: usize) -> Result<Address, RowError> {
        let email = parse_field(&self.data, self.rows[i].start, self.email_column);
        self.status(i, email.trim())
    }

    fn status(&self, i: usize, email: &str) -> Result<Address, RowError> {
        if let Some(e) = self.errors.get(&i) {
            return Err(e.clone());
        }
        Address::parse(email).map_err(|source| RowError::Address {
            line: self.rows[i].line,
            source,
        })
    }

    /// Iterates over the rows, parsing each.
    pub fn iter(&self) -> impl Iterator<Item = Row> + '_ {
        (0..self.rows.len()).map(|i| self.row(i))
    }

    /// True when row `i` has a usable address (no error of its own).
    pub fn is_sendable(&self, i: usize) -> bool {
        !self.errors.contains_key(&i)
    }
}

/// The column names from the header row (trimmed, a leading BOM removed). A header that is
/// missing, unparsable or not UTF-8 is fatal: no row could be read against it.
fn read_columns(rdr: &mut csv::Reader<&[u8]>, path: &Path) -> Result<Vec<String>, ListError> {
    let header = rdr.byte_headers().map_err(|e| match e.kind() {
        csv::ErrorKind::Io(_) => io_error(path, &e),
        _ => ListError::BadHeader {
            path: path.into(),
            reason: e.to_string(),
        },
    })?;
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(ListError::Empty(path.into()));
    }
    let mut columns = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let mut name = std::str::from_utf8(raw)
            .map_err(|_| ListError::BadHeader {
                path: path.into(),
                reason: format!("column {} is not valid UTF-8", i + 1),
            })?
            .trim();
        if i == 0 {
            name = name.trim_start_matches('\u{feff}');
        }
        columns.push(name.to_string());
    }
    Ok(columns)
}

/// Index of the address column `name` (case-insensitive); without one nothing can be sent.
fn find_email_column(columns: &[String], name: &str, path: &Path) -> Result<usize, ListError> {
    columns
        .iter()
        .position(|c| c.eq_ignore_ascii_case(name))
        .ok_or_else(|| ListError::NoEmailColumn {
            path: path.into(),
            column: name.to_string(),
            available: columns.join(", "),
        })
}

/// A read error from the CSV reader as the fatal [`ListError::Io`].
fn io_error(path: &Path, e: &csv::Error) -> ListError {
    ListError::Io {
        path: path.into(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// What the one pass over the records builds: a [`RowMeta`] per row, the errors of the rows
/// that have one, and what is needed to spot repeated addresses. Kept small per row, for
/// lists of millions of rows.
struct RowIndex<'a> {
    /// The whole file (earlier rows are re-read from it to confirm a duplicate).
    data: &'a [u8],
    /// Column names, for field counts and error messages.
    columns: &'a [String],
    email_column: usize,
    allow_duplicates: bool,
    max_field_size: usize,
    rows: Vec<RowMeta>,
    /// Keyed by 0-based row index.
    errors: HashMap<usize, RowError>,
    /// Duplicate detection by a 64-bit hash of the normalized address (16 bytes per row
    /// instead of the address) to the first row with it; a hash match is confirmed on the
    /// addresses themselves.
    seen: HashMap<u64, usize>,
    /// Addresses whose hash an earlier, different address already has: tracked exactly.
    collided: HashMap<String, usize>,
}

impl<'a> RowIndex<'a> {
    /// An empty index over `data`, whose header gave `columns`.
    fn new(data: &'a [u8], columns: &'a [String], email_column: usize, opts: &ListOptions) -> Self {
        Self {
            data,
            columns,
            email_column,
            allow_duplicates: opts.allow_duplicates,
            max_field_size: opts.max_field_size,
            rows: Vec::new(),
            errors: HashMap::new(),
            seen: HashMap::new(),
            collided: HashMap::new(),
        }
    }

    /// Adds a record the CSV reader parsed: where it starts and, if it cannot be sent, why.
    /// `after` is the reader's position once past the record.
    fn push_record(&mut self, record: &csv::ByteRecord, line_before: u64, after: &csv::Position) {
        let row = self.rows.len() + 1;
        let line = record.position().map_or(line_before, |p| p.line());
        let start = record.position().map_or(0, |p| p.byte()) as usize;
        if let Err(e) = self.check_record(record, row, line, start, after) {
            self.errors.insert(row - 1, e);
        }
        self.rows.push(RowMeta {
            start: start as u64,
            line,
        });
    }

    /// Adds a record the CSV reader could not parse: an `invalid` row, not a fatal error,
    /// unless reading itself failed.
    fn push_malformed(
        &mut self,
        e: &csv::Error,
        line_before: u64,
        byte_before: u64,
        path: &Path,
    ) -> Result<(), ListError> {
        if let csv::ErrorKind::Io(_) = e.kind() {
            return Err(io_error(path, e));
        }
        let line = e.position().map_or(line_before, |p| p.line());
        let start = e.position().map_or(byte_before, |p| p.byte());
        self.errors.insert(
            self.rows.len(),
            RowError::Malformed {
                line,
                reason: e.to_string(),
            },
        );
        self.rows.push(RowMeta { start, line });
        Ok(())
    }

    /// Why data row `row` (1-based, starting at byte `start` and file line `line`) cannot be
    /// sent, checking in this order: an unclosed quote, the field count, UTF-8, the address,
    /// an earlier row with the same address. A sendable address is remembered for the
    /// duplicate check of later rows.
    fn check_record(
        &mut self,
        record: &csv::ByteRecord,
        row: usize,
        line: u64,
        start: usize,
        after: &csv::Position,
    ) -> Result<(), RowError> {
        // Blank lines are skipped by the reader; a row of one empty field is a stray blank.
        // Only the address is decoded here; the row's cells are decoded when it is read.
        let bad_utf8 = record.iter().position(|f| std::str::from_utf8(f).is_err());
        let email = String::from_utf8_lossy(record.get(self.email_column).unwrap_or_default());
        let email = email.trim();
        if let Some(e) = unclosed_quote(self.data, record, start, line, after) {
            return Err(e);
        }
        if record.len() != self.columns.len() {
            return Err(RowError::FieldCount {
                line,
                expected: self.columns.len(),
                found: record.len(),
            });
        }
        if let Some((i, field)) = record
            .iter()
            .enumerate()
            .find(|(_, f)| f.len() > self.max_field_size)
        {
            return Err(RowError::FieldTooLarge {
                line,
                column: self.columns[i].clone(),
                size: field.len(),
                limit: self.max_field_size,
            });
        }
        if let Some(i) = bad_utf8 {
            return Err(RowError::InvalidUtf8 {
                line,
                column: self.columns[i].clone(),
            });
        }
        let addr = Address::parse(email).map_err(|source| RowError::Address { line, source })?;
        match self.first_row_with(normalized(&addr), row) {
            Some(first_row) if !self.allow_duplicates => {
                Err(RowError::Duplicate { line, first_row })
            }
            _ => Ok(()),
        }
    }

    /// The earlier row (1-based) with the normalized address `key`; when there is none,
    /// `row` is recorded as the first with it.
    fn first_row_with(&mut self, key: String, row: usize) -> Option<usize> {
        let h = hash_str(&key);
        let first = match self.seen.get(&h) {
            None => None,
            Some(&first)
                if first_address(self.data, &self.rows, first, self.email_column) == key =>
            {
                Some(first)
            }
            // Same hash, other address: track this one exactly.
            Some(_) => self.collided.get(&key).copied(),
        };
        if first.is_none() {
            match self.seen.entry(h) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    self.collided.insert(key, row);
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(row);
                }
            }
        }
        first
    }

    /// The row records and errors, for the [`RecipientList`].
    fn finish(self) -> (Vec<RowMeta>, HashMap<usize, RowError>) {
        let mut rows = self.rows;
        rows.shrink_to_fit();
        (rows, self.errors)
    }
}

/// The CSV reader ends an unclosed quoted field at the end of the file, silently swallowing
/// every following line: this is the error for the last record (one that spans lines) when
/// an odd number of quotes is left in the file from its `start`.
fn unclosed_quote(
    data: &[u8],
    record: &csv::ByteRecord,
    start: usize,
    line: u64,
    after: &csv::Position,
) -> Option<RowError> {
    let unclosed = after.byte() as usize >= data.len()
        && record.iter().any(|f| f.contains(&b'\n'))
        && data
            .get(start..)
            .is_some_and(|rest| rest.iter().filter(|&&b| b == b'"').count() % 2 == 1);
    unclosed.then(|| RowError::Malformed {
        line,
        reason: format!(
            "a quoted field opened here is never closed (lines {line}-{} were read as one value)",
            after.line().saturating_sub(1).max(line)
        ),
    })
}

/// `local@domain` with the local part lower-cased: the address identity used for duplicates.
pub fn normalized(addr: &Address) -> String {
    let mut key = String::with_capacity(addr.local().len() + 1 + addr.domain().len());
    match addr.local().is_ascii() {
        true => key.extend(addr.local().chars().map(|c| c.to_ascii_lowercase())),
        false => key.push_str(&addr.local().to_lowercase()),
    }
    key.push('@');
    key.push_str(addr.domain());
    key
}

/// FNV-1a 64: stable across runs and platforms.
fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The normalized address of an earlier (valid) row, re-read from the bytes.
fn first_address(data: &[u8], rows: &[RowMeta], row: usize, email_column: usize) -> String {
    rows.get(row.wrapping_sub(1))
        .map(|m| parse_record(data, m.start))
        .and_then(|f| f.get(email_column).and_then(|e| Address::parse(e).ok()))
        .map(|a| normalized(&a))
        .unwrap_or_default()
}

/// Parses the single record that starts at `start` (invalid UTF-8 replaced).
///
/// Uses `csv_core` directly with one reader and its buffers per thread: building a reader
/// (its state machine) costs far more than parsing one short record, and a row is parsed
/// again at every stage that needs it.
fn parse_record(data: &[u8], start: u64) -> Vec<String> {
    read_record(data, start, |out, ends| {
        let mut prev = 0;
        ends.iter()
            .map(|&end| {
                let field = String::from_utf8_lossy(&out[prev..end]).into_owned();
                prev = end;
                field
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Field `column` of the record at byte `start` (empty when the row is shorter).
fn parse_field(data: &[u8], start: u64, column: usize) -> String {
    read_record(data, start, |out, ends| {
        let from = match column {
            0 => 0,
            c => ends.get(c - 1).copied().unwrap_or(out.len()),
        };
        let to = ends.get(column).copied().unwrap_or(from);
        String::from_utf8_lossy(&out[from..to]).into_owned()
    })
    .unwrap_or_default()
}

/// Reads the record at byte `start` and gives `cells` its unescaped bytes and the end of each
/// field in them; `None` past the end of the data.
fn read_record<T>(data: &[u8], start: u64, cells: impl FnOnce(&[u8], &[usize]) -> T) -> Option<T> {
    use csv_core::ReadRecordResult;
    /// A reader with its output and field-end buffers.
    struct Core {
        rdr: csv_core::Reader,
        out: Vec<u8>,
        ends: Vec<usize>,
    }
    thread_local! {
        static CORE: std::cell::RefCell<Core> = std::cell::RefCell::new(Core {
            rdr: csv_core::Reader::new(),
            out: vec![0u8; 256],
            ends: vec![0usize; 16],
        });
    }
    let mut input = usize::try_from(start).ok().and_then(|s| data.get(s..))?;
    CORE.with_borrow_mut(|Core { rdr, out, ends }| {
        rdr.reset();
        let (mut outlen, mut endlen) = (0, 0);
        loop {
            let (res, nin, nout, nend) =
                rdr.read_record(input, &mut out[outlen..], &mut ends[endlen..]);
            input = &input[nin..];
            outlen += nout;
            endlen += nend;
            match res {
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::OutputFull => out.resize(out.len() * 2, 0),
                ReadRecordResult::OutputEndsFull => ends.resize(ends.len() * 2, 0),
                ReadRecordResult::Record => break,
                ReadRecordResult::End => return None,
            }
        }
        let cells = cells(&out[..outlen], &ends[..endlen]);
        // A huge row does not leave its buffer with the thread.
        if out.len() > 1 << 16 {
            *out = vec![0u8; 256];
        }
        if ends.len() > 1 << 12 {
            *ends = vec![0usize; 16];
        }
        Some(cells)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(csv: &[u8]) -> Result<RecipientList, ListError> {
        RecipientList::from_reader(csv, Path::new("list.csv"), &ListOptions::default())
    }

    #[test]
    fn the_address_alone_is_what_the_whole_row_says() {
        let csv = "name,email,note\n\
                   Ann,ann@example.com,x\n\
                   \"Lee, Bo\",\" bo@example.com \",\"two\nlines\"\n\
                   Short\n\
                   Cy,not-an-address,z\n\
                   Ann again,ANN@example.com,dup\n\
                   Di,,empty\n\
                   Ed,\"ed\"\"q@example.com\",quoted quote\n\
                   Fa,fa@example.com,";
        let mut bytes = csv.as_bytes().to_vec();
        bytes.extend_from_slice(b"\xff\n");
        let list = read(&bytes).unwrap();
        assert_eq!(list.len(), 8);
        for i in 0..list.len() {
            let row = list.row(i);
            assert_eq!(
                format!("{:?}", list.address(i)),
                format!("{:?}", row.status),
                "row {i}: {row:?}"
            );
        }
        assert!(list.address(0).is_ok() && list.address(1).is_ok());
        assert!(list.address(2).is_err() && list.address(4).is_err());
    }

    #[test]
    fn reads_bom_quotes_and_bad_rows_without_stopping() {
        let csv = "\u{feff}name,Email\n\"Lee, Ann\",ann@example.com\nBob,not-an-address\nCy\n\"D\"\"q\",  dee@Example.COM \nEve,ann@EXAMPLE.com\n";
        let list = read(csv.as_bytes()).unwrap();
        assert_eq!(list.columns, vec!["name", "Email"]);
        assert_eq!(list.len(), 5);
        assert_eq!(list.row(0).fields[0], "Lee, Ann");
        assert!(list.row(0).status.is_ok());
        let e = list.row(1).status.clone().unwrap_err();
        assert_eq!(e.to_string(), "line 3: no @ in address \"not-an-address\"");
        let e = list.row(2).status.clone().unwrap_err();
        assert_eq!(e.to_string(), "line 4: 1 fields, the header has 2");
        assert_eq!(
            list.row(3).status.clone().unwrap().to_string(),
            "dee@example.com"
        );
        let e = list.row(4).status.clone().unwrap_err();
        assert_eq!(e.status(), "duplicate");
        assert!(e.to_string().contains("duplicate of row 1"));
    }

    #[test]
    fn invalid_utf8_is_a_row_error() {
        let mut csv = b"email,name\na@example.com,ok\nb@example.com,".to_vec();
        csv.extend_from_slice(&[0xff, 0xfe, b'\n']);
        let list = read(&csv).unwrap();
        assert!(list.row(0).status.is_ok());
        assert_eq!(
            list.row(1).status.clone().unwrap_err().to_string(),
            "line 3: field \"name\" is not valid UTF-8"
        );
    }

    #[test]
    fn an_unclosed_quote_names_its_line_instead_of_swallowing_the_rest() {
        let list = read(b"email,name\na@example.com,\"Ann\nb@example.com,Bob\nc@example.com,Cy\n")
            .unwrap();
        assert_eq!(list.len(), 1);
        let e = list.row(0).status.clone().unwrap_err().to_string();
        assert_eq!(
            e,
            "line 2: malformed CSV: a quoted field opened here is never closed (lines 2-4 were read as one value)"
        );
        // Quoted line breaks and a literal quote in an unquoted last field are fine.
        let list =
            read(b"email,name\na@example.com,\"Ann\nLee\"\nb@example.com,5\" tall\n").unwrap();
        assert!(
            list.iter().all(|r| r.status.is_ok()),
            "{:?}",
            list.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn very_long_fields_and_addresses() {
        let long_name = "N".repeat(1 << 20);
        let long_local = "l".repeat(65);
        let csv = format!(
            "email,name\n{long_local}@example.com,x\nok@example.com,{long_name}\n{}@{}.example,x\n",
            "a",
            "d".repeat(250)
        );
        let list = read(csv.as_bytes()).unwrap();
        assert!(
            list.row(0)
                .status
                .clone()
                .unwrap_err()
                .to_string()
                .contains("64 octets"),
            "{:?}",
            list.row(0).status
        );
        assert_eq!(list.row(1).fields[1].len(), 1 << 20);
        assert!(list.row(1).status.is_ok());
        assert!(list.row(2).status.is_err());
    }

    #[test]
    fn whole_file_problems_are_fatal() {
        assert!(matches!(read(b""), Err(ListError::Empty(_))));
        let err = read(b"name,mail\nx,y\n").unwrap_err();
        assert!(
            err.to_string()
                .contains("no column named \"email\" (columns: name, mail)")
        );
    }
}
