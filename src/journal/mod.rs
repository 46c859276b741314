//! Journal: every final outcome, appended to a file beside the results CSV as it happens, so a
//! run killed at any moment (SIGKILL, power loss, a full disk) can be re-run without sending
//! anyone a second copy and without forgetting anyone.
//!
//! The file (`<results>.journal`) is JSON lines: a header line, then one record per final
//! outcome. Each record is written to the OS by the delivery worker that settled the row
//! (through the [`Recorder`], the engine's outcome log), before that worker's session sends
//! anything more and before the row is counted as done; `fsync` is requested at most
//! [`SYNC_INTERVAL`] later (or every [`SYNC_RECORDS`] records), done on a thread of its own so a
//! slow disk never stalls delivery, and done once more, waited for, before the results CSV is
//! written.
//!
//! Row identity is by content, never by position, so a re-sorted or edited list maps to the right
//! records (docs/results.md, "Re-running safely"):
//! - by default (one message per address), a row is the normalized address (`local@domain`,
//!   local part lower-cased, domain in A-label form): an address already delivered or bounced is
//!   not sent again, whatever else changed in its row or where the row moved;
//! - with `--allow-duplicates` (several messages per address), a row is the normalized address,
//!   a hash of the row's other fields (by column name, so column order does not matter) and its
//!   occurrence among identical rows.
//!
//! The journal is changed in place, so it is opened without following a link at its name
//! ([`crate::files::open_no_link`]): a journal that is a symbolic link is refused
//! ([`JournalError::Link`]) rather than read, truncated (`--fresh`), appended to or created
//! through. Its name is derived from the results path, never typed by the user, so no link
//! there is one the user named; links in its folders are followed.
//!
//! Only `delivered` and `bounced` records end a row for good. `deferred` rows are tried again;
//! `invalid` and `duplicate` rows are re-checked from the list (no network), so fixing a row
//! or adding a missing attachment lets it go out on the next run.

mod recorder;
pub use recorder::Recorder;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::files;
use crate::outcome::{Outcome, Status, Step};
use crate::recipients::{RecipientList, Row};
use crate::smtp::EnhancedCode;
use crate::tls_policy::PolicyKind;

/// Longest time a written record waits for `fsync`.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Records written before an `fsync` is forced regardless of time.
pub const SYNC_RECORDS: usize = 256;

/// Format version in the header line.
const VERSION: u32 = 1;

/// The journal cannot be read or written.
#[derive(Debug, Error)]
pub enum JournalError {
    /// An OS error on the journal file.
    #[error("journal {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// The journal was written for another message (template or header options changed).
    #[error(
        "journal {path} was written for another message (the template or --list-unsubscribe \
         changed): rows it records as delivered would be skipped. For a new message to this \
         list use --fresh (or another --results); to go on with the same campaign after \
         fixing the template, use --template-changed"
    )]
    OtherTemplate {
        /// The file.
        path: PathBuf,
    },
    /// A record before the last line cannot be read: the file was damaged after it was
    /// written. Going on would silently send that row again.
    #[error(
        "journal {path}, line {line}: {reason}; the file was damaged after it was written. \
         Rerun with --journal-repair to skip damaged records (their rows are sent again), or \
         --fresh to start over"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The journal's name is a symbolic link: refused, so that nothing is read, truncated
    /// (`--fresh`), appended or created through it (docs/results.md, "Files mailmerge
    /// writes").
    #[error(
        "journal {path} is a symbolic link (to {target}): refused, mailmerge never writes \
         through a link at a file name it derives. Remove the link, or give --results in \
         the folder where the journal should be (links in folders are followed)"
    )]
    Link {
        /// The journal's path (the link).
        path: PathBuf,
        /// Where the link points.
        target: PathBuf,
    },
    /// The file is not a mailmerge journal (or a newer format).
    #[error("journal {path}: {reason} (use --fresh to start over, or another --results)")]
    Foreign {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The fingerprint of a message: FNV-1a 64 of its parts, in hex.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        h = fnv1a(p.iter().copied(), h);
        h = fnv1a([0x1e], h);
    }
    format!("{h:016x}")
}

/// A row's identity, independent of its position in the list.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RowKey {
    /// Normalized address (`local@domain`, local part lower-cased).
    pub addr: String,
    /// FNV-1a hash of the row's other fields, by column name.
    pub hash: u64,
    /// How many earlier rows have the same address and hash.
    pub occurrence: u32,
}

/// FNV-1a, 64 bits: stable across Rust versions and platforms (unlike `DefaultHasher`).
fn fnv1a(bytes: impl IntoIterator<Item = u8>, mut h: u64) -> u64 {
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Computes row identities on demand (a list of millions of rows keeps no key per row).
#[derive(Debug)]
pub struct RowKeys {
    /// Non-address columns, sorted by name.
    order: Vec<usize>,
    /// Occurrence of each row among identical rows; empty when one message per address.
    occurrence: Vec<u32>,
}

impl RowKeys {
    /// Prepares identities for `list`; `count_occurrences` (with `--allow-duplicates`) tells
    /// identical rows apart by their position among themselves.
    pub fn new(list: &RecipientList, count_occurrences: bool) -> Self {
        let mut order: Vec<usize> = (0..list.columns.len())
            .filter(|&i| i != list.email_column)
            .collect();
        order.sort_by(|&a, &b| list.columns[a].cmp(&list.columns[b]));
        let mut keys = Self {
            order,
            occurrence: Vec::new(),
        };
        if count_occurrences {
            let mut seen: HashMap<(u64, u64), u32> = HashMap::new();
            keys.occurrence = list
                .iter()
                .map(|row| {
                    let (addr, hash) = keys.parts(list, &row);
                    let n = seen
                        .entry((fnv1a(addr.bytes(), 0xcbf2_9ce4_8422_2325), hash))
                        .or_default();
                    let occurrence = *n;
                    *n += 1;
                    occurrence
                })
                .collect();
        }
        keys
    }

    fn parts(&self, list: &RecipientList, row: &Row) -> (String, u64) {
        let addr = match &row.status {
            Ok(a) => crate::recipients::normalized(a),
            Err(_) => row.email.trim().to_lowercase(),
        };
        let mut h = 0xcbf2_9ce4_8422_2325;
        for &i in &self.order {
            h = fnv1a(list.columns[i].bytes(), h);
            h = fnv1a([0x1f], h);
            h = fnv1a(
                row.fields
                    .get(i)
                    .map_or(&[][..], |f| f.as_bytes())
                    .iter()
                    .copied(),
                h,
            );
            h = fnv1a([0x1e], h);
        }
        (addr, h)
    }

    /// The identity of row `i` (0-based), given the row itself.
    pub fn key(&self, list: &RecipientList, i: usize, row: &Row) -> RowKey {
        let (addr, hash) = self.parts(list, row);
        RowKey {
            addr,
            hash,
            occurrence: self.occurrence.get(i).copied().unwrap_or(0),
        }
    }
}

/// The identity of every row of the list, in list order (identical rows told apart).
pub fn row_keys(list: &RecipientList) -> Vec<RowKey> {
    let keys = RowKeys::new(list, true);
    list.iter()
        .enumerate()
        .map(|(i, row)| keys.key(list, i, &row))
        .collect()
}

fn key_hash(key: &RowKey) -> u64 {
    let h = fnv1a(key.addr.bytes(), 0xcbf2_9ce4_8422_2325);
    let h = fnv1a(key.hash.to_le_bytes(), h);
    fnv1a(key.occurrence.to_le_bytes(), h)
}

fn addr_hash(addr: &str) -> u64 {
    fnv1a(addr.bytes(), 0xcbf2_9ce4_8422_2325)
}

/// One line of the journal. Its text borrows: from the outcome when written, from the line
/// read when read back without escapes.
#[derive(Debug, Serialize, Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    addr: Cow<'a, str>,
    #[serde(borrow)]
    hash: Cow<'a, str>,
    n: u32,
    /// Row number when written (informational: rows may move between runs).
    row: usize,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    step: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    enhanced: Option<Cow<'a, str>>,
    #[serde(borrow)]
    response: Cow<'a, str>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    mx_host: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    mx_ip: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    source_ip: Option<Cow<'a, str>>,
    attempts: u32,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    message_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    tls: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    tls_policy: Option<Cow<'a, str>>,
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    tls_note: Option<Cow<'a, str>>,
    /// When the outcome was decided (RFC 3339, UTC, milliseconds). Added without a format
    /// change: journals written before it have none (their rows report an empty
    /// `finished_at`), and older versions of mailmerge ignore it.
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    finished_at: Option<Cow<'a, str>>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    mailmerge_journal: u32,
    list: String,
    /// Fingerprint of the message (template and header options) the journal's outcomes are
    /// for; absent in journals of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    template: Option<String>,
}

fn parse_enhanced(s: &str) -> Option<EnhancedCode> {
    let mut p = s.split('.');
    let e = EnhancedCode::new(
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
        p.next()?.parse().ok()?,
    );
    p.next().is_none().then_some(e)
}

impl<'a> Record<'a> {
    fn new(key: &'a RowKey, row: usize, o: &'a Outcome) -> Self {
        let text = |s: &'a Option<String>| s.as_deref().map(Cow::Borrowed);
        Self {
            addr: Cow::Borrowed(&key.addr),
            hash: Cow::Owned(format!("{:016x}", key.hash)),
            n: key.occurrence,
            row,
            status: Cow::Borrowed(o.status.as_str()),
            step: Cow::Borrowed(o.step.as_str()),
            code: o.code,
            enhanced: o.enhanced.map(|e| Cow::Owned(e.to_string())),
            response: Cow::Borrowed(&o.response),
            mx_host: text(&o.mx_host),
            mx_ip: o.mx_ip.map(|i| Cow::Owned(i.to_string())),
            source_ip: o.source_ip.map(|i| Cow::Owned(i.to_string())),
            attempts: o.attempts,
            message_id: text(&o.message_id),
            tls: text(&o.tls),
            tls_policy: (o.tls_policy != PolicyKind::None)
                .then(|| Cow::Borrowed(o.tls_policy.as_str())),
            tls_note: text(&o.tls_note),
            finished_at: o
                .finished_at
                .map(|t| Cow::Owned(crate::outcome::format_time(t))),
        }
    }

    fn key(&self) -> Option<RowKey> {
        Some(RowKey {
            addr: self.addr.to_string(),
            hash: u64::from_str_radix(&self.hash, 16).ok()?,
            occurrence: self.n,
        })
    }

    fn outcome(self) -> Option<Outcome> {
        Some(Outcome {
            status: Status::parse(&self.status)?,
            step: Step::parse(&self.step)?,
            code: self.code,
            enhanced: match &self.enhanced {
                Some(e) => Some(parse_enhanced(e)?),
                None => None,
            },
            response: self.response.into_owned(),
            mx_host: self.mx_host.map(Cow::into_owned),
            mx_ip: match &self.mx_ip {
                Some(ip) => Some(ip.parse().ok()?),
                None => None,
            },
            source_ip: match &self.source_ip {
                Some(ip) => Some(ip.parse().ok()?),
                None => None,
            },
            attempts: self.attempts,
            message_id: self.message_id.map(Cow::into_owned),
            tls: self.tls.map(Cow::into_owned),
            tls_policy: match &self.tls_policy {
                Some(p) => PolicyKind::parse(p)?,
                None => PolicyKind::None,
            },
            tls_note: self.tls_note.map(Cow::into_owned),
            finished_at: match &self.finished_at {
                Some(t) => Some(crate::outcome::parse_time(t)?),
                None => None,
            },
        })
    }
}

/// Writes row `row`'s journal line (with its newline) into `line`, which is cleared first.
/// Serializing plain strings and numbers into a `Vec` cannot fail; if it did, `line` is left
/// empty and nothing is recorded.
pub fn encode(key: &RowKey, row: usize, outcome: &Outcome, line: &mut Vec<u8>) {
    line.clear();
    encode_onto(key, row, outcome, line);
}

/// Appends row `row`'s journal line to `buf`; false (and `buf` as it was) if it could not be
/// serialized.
fn encode_onto(key: &RowKey, row: usize, outcome: &Outcome, buf: &mut Vec<u8>) -> bool {
    let before = buf.len();
    let written = serde_json::to_writer(&mut *buf, &Record::new(key, row, outcome)).is_ok();
    match written {
        true => buf.push(b'\n'),
        false => buf.truncate(before),
    }
    written
}

/// Opens the journal at `path` with `opts`, never through a link ([`files::open_no_link`]).
fn open_file(path: &Path, opts: &mut OpenOptions) -> Result<File, JournalError> {
    files::open_no_link(path, opts).map_err(|e| match e {
        files::OpenError::Link(target) => JournalError::Link {
            path: path.into(),
            target,
        },
        files::OpenError::Io(source) => JournalError::Io {
            path: path.into(),
            source,
        },
    })
}

/// Opens the journal at `path` for reading; `None` when there is none.
fn open_existing(path: &Path) -> Result<Option<File>, JournalError> {
    match open_file(path, OpenOptions::new().read(true)) {
        Ok(f) => Ok(Some(f)),
        Err(JournalError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Reads records back from a journal file by offset.
#[derive(Debug)]
pub struct JournalReader {
    file: File,
}

impl JournalReader {
    /// Opens `path` for reading.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        let file = open_file(path, OpenOptions::new().read(true))?;
        Ok(Self { file })
    }

    /// The record line at `offset`, without its newline.
    fn line_at(&self, offset: u64) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut line = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        let mut pos = offset;
        loop {
            let n = self.file.read_at(&mut chunk, pos).ok()?;
            if n == 0 {
                break;
            }
            if let Some(nl) = chunk[..n].iter().position(|&b| b == b'\n') {
                line.extend_from_slice(&chunk[..nl]);
                break;
            }
            line.extend_from_slice(&chunk[..n]);
            pos += n as u64;
            if line.len() > MAX_RECORD_LEN {
                return None;
            }
        }
        Some(line)
    }

    /// The outcome recorded at `offset` (as returned by [`Journal::append`]).
    pub fn outcome_at(&self, offset: u64) -> Option<Outcome> {
        let line = self.line_at(offset)?;
        serde_json::from_slice::<Record>(&line).ok()?.outcome()
    }
}

/// What an earlier run of the same job recorded: the rows that are done for good.
///
/// Kept compact for big lists: 64-bit hashes of identities map to record offsets in the
/// journal, and a hit is confirmed by reading the record back.
#[derive(Debug, Default)]
pub struct Replay {
    by_key: HashMap<u64, u64>,
    by_addr: HashMap<u64, u64>,
    reader: Option<JournalReader>,
    /// Records read.
    pub records: usize,
    /// The last line was cut short (a crash while writing it): ignored, as that row's outcome
    /// never reached the journal.
    pub torn_tail: bool,
    /// Damaged records skipped under `--journal-repair`.
    pub damaged: usize,
    /// The message fingerprint the journal was started for (see [`Journal::open_for`]).
    pub template: Option<String>,
}

impl Replay {
    /// Where the recorded final outcome of this row is, if it was delivered or bounced before.
    /// `per_address`: one message per address (the default), so any record for the address
    /// counts; otherwise the row's full identity must match.
    pub fn done_at(&self, key: &RowKey, per_address: bool) -> Option<u64> {
        let reader = self.reader.as_ref()?;
        let offset = if per_address {
            *self.by_addr.get(&addr_hash(&key.addr))?
        } else {
            *self.by_key.get(&key_hash(key))?
        };
        let line = reader.line_at(offset)?;
        let stored = serde_json::from_slice::<Record>(&line).ok()?.key()?;
        let same = if per_address {
            stored.addr == key.addr
        } else {
            &stored == key
        };
        same.then_some(offset)
    }

    /// The recorded final outcome of this row, if it was delivered or bounced before.
    pub fn done(&self, key: &RowKey, per_address: bool) -> Option<Outcome> {
        let offset = self.done_at(key, per_address)?;
        self.reader.as_ref()?.outcome_at(offset)
    }

    /// Number of rows (identities) recorded as done.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// True when nothing is recorded as done.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

/// `list.results.csv` → `list.results.csv.journal`.
pub fn path_for(results: &Path) -> PathBuf {
    let mut s = results.as_os_str().to_owned();
    s.push(".journal");
    PathBuf::from(s)
}

/// Longest journal line read: a record holds one reply (at most 64 KiB) and a row's identity.
/// A longer line is damage, and is never held in memory whole.
pub const MAX_RECORD_LEN: usize = 1 << 20;

/// Reads a journal; a missing file is an empty replay. A torn last line (a crash while it was
/// written) is ignored; a damaged record elsewhere is an error naming its line, unless
/// `repair`, which skips and counts it.
pub fn load(path: &Path, repair: bool) -> Result<Replay, JournalError> {
    let io = |source| JournalError::Io {
        path: path.into(),
        source,
    };
    let Some(file) = open_existing(path)? else {
        return Ok(Replay::default());
    };
    let mut replay = Replay {
        reader: Some(JournalReader {
            file: file.try_clone().map_err(io)?,
        }),
        ..Replay::default()
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut offset: u64 = 0;
    for number in 1.. {
        let read = read_line_capped(&mut reader, &mut line, MAX_RECORD_LEN).map_err(io)?;
        let at = offset;
        offset += read.consumed;
        if read.consumed == 0 {
            break;
        }
        if !read.too_long && line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if number == 1 {
            replay.template = header(path, &line)?;
            continue;
        }
        let parsed = (!read.too_long)
            .then(|| serde_json::from_slice::<Record>(&line).ok())
            .flatten()
            .and_then(|r| Some((r.key()?, r.outcome()?)));
        let Some((key, outcome)) = parsed else {
            if !read.terminated {
                replay.torn_tail = true;
            } else if repair {
                replay.damaged += 1;
            } else {
                let reason = if read.too_long {
                    format!("a line longer than {MAX_RECORD_LEN} bytes")
                } else {
                    "not a readable record".to_string()
                };
                return Err(JournalError::Damaged {
                    path: path.into(),
                    line: number,
                    reason,
                });
            }
            continue;
        };
        replay.records += 1;
        if outcome.step == Step::LateBounce {
            // `mailmerge bounces` learnt later that the delivered message bounced: this record
            // supersedes the delivery.
            replay.by_addr.insert(addr_hash(&key.addr), at);
            replay.by_key.insert(key_hash(&key), at);
        } else if matches!(outcome.status, Status::Delivered | Status::Bounced) {
            replay.by_addr.entry(addr_hash(&key.addr)).or_insert(at);
            replay.by_key.entry(key_hash(&key)).or_insert(at);
        }
    }
    Ok(replay)
}

/// The header line: our format, and the message fingerprint the journal was started for.
fn header(path: &Path, line: &[u8]) -> Result<Option<String>, JournalError> {
    let reason = match serde_json::from_slice::<Header>(line) {
        Ok(h) if h.mailmerge_journal == VERSION => return Ok(h.template),
        Ok(h) => format!("journal format {} is not supported", h.mailmerge_journal),
        Err(_) => "not a mailmerge journal".into(),
    };
    Err(JournalError::Foreign {
        path: path.into(),
        reason,
    })
}

/// What [`read_line_capped`] read.
struct LineRead {
    /// Bytes consumed, newline included (0 at the end of the file).
    consumed: u64,
    /// The line was longer than the cap: the buffer holds nothing of it.
    too_long: bool,
    /// The line ended with a newline (else it is the file's torn last line).
    terminated: bool,
}

/// Reads one line into `buf` (without the newline), keeping at most `cap` bytes in memory.
fn read_line_capped(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    cap: usize,
) -> std::io::Result<LineRead> {
    buf.clear();
    let mut read = LineRead {
        consumed: 0,
        too_long: false,
        terminated: false,
    };
    loop {
        let avail = r.fill_buf()?;
        if avail.is_empty() {
            return Ok(read);
        }
        let newline = avail.iter().position(|&b| b == b'\n');
        let chunk = &avail[..newline.unwrap_or(avail.len())];
        if !read.too_long {
            if buf.len() + chunk.len() > cap {
                read.too_long = true;
                *buf = Vec::new();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let used = newline.map_or(avail.len(), |i| i + 1);
        read.consumed += used as u64;
        r.consume(used);
        if newline.is_some() {
            read.terminated = true;
            return Ok(read);
        }
    }
}

/// The length of `file` up to and including its last newline (`len` bytes long).
fn complete_len(file: &File, len: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let part = &mut chunk[..(end - start) as usize];
        file.read_exact_at(part, start)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Records a late bounce (`mailmerge bounces`) of the message `message_id` in the journal at
/// `path`: a record for the row that sent it, with the delivery's MX details and the bounce's
/// status, step, codes and text, which supersedes the delivery when the job is re-run (so the
/// re-run's results keep the bounce). Returns `false`, changing nothing, when no record has
/// that Message-ID (or there is no journal). A torn last line is dropped first, as
/// [`Journal::open`] does.
pub fn record_late_bounce(
    path: &Path,
    message_id: &str,
    bounce: &Outcome,
) -> Result<bool, JournalError> {
    let io = |source| JournalError::Io {
        path: path.into(),
        source,
    };
    let Some(file) = open_existing(path)? else {
        return Ok(false);
    };
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut found = None;
    loop {
        let read = read_line_capped(&mut reader, &mut line, MAX_RECORD_LEN).map_err(io)?;
        if read.consumed == 0 {
            break;
        }
        let Some(rec) = serde_json::from_slice::<Record>(&line).ok() else {
            continue;
        };
        if rec.message_id.as_deref() == Some(message_id) {
            found = Some((rec.key(), rec.row, rec.outcome()));
        }
    }
    let Some((Some(key), row, Some(delivery))) = found else {
        return Ok(false);
    };
    let outcome = Outcome {
        status: bounce.status,
        step: bounce.step,
        code: bounce.code,
        enhanced: bounce.enhanced,
        response: bounce.response.clone(),
        ..delivery
    };
    let mut bytes = Vec::new();
    encode(&key, row, &outcome, &mut bytes);
    if bytes.is_empty() {
        return Err(io(std::io::Error::other(
            "the record could not be serialized",
        )));
    }
    let mut file = open_file(path, OpenOptions::new().append(true).read(true))?;
    let len = file.seek(std::io::SeekFrom::End(0)).map_err(io)?;
    let keep = complete_len(&file, len).map_err(io)?;
    if keep < len {
        file.set_len(keep).map_err(io)?;
    }
    file.write_all(&bytes).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(true)
}

/// An open journal, appending.
pub struct Journal {
    path: PathBuf,
    file: File,
    /// Bytes in the file plus `buf`: the offset of the next record.
    end: u64,
    buf: Vec<u8>,
    unsynced: usize,
    last_sync: Instant,
    /// Periodic `fsync`s run on their own thread: a disk flush takes milliseconds, and the
    /// collector that writes the journal must keep up with delivery meanwhile.
    syncer: Option<Syncer>,
}

/// A thread that `fsync`s the journal when asked (requests coalesce).
struct Syncer {
    tx: std::sync::mpsc::SyncSender<()>,
    failed: std::sync::Arc<std::sync::Mutex<Option<std::io::Error>>>,
}

impl Syncer {
    fn start(file: &File) -> Option<Self> {
        let file = file.try_clone().ok()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let failed = std::sync::Arc::new(std::sync::Mutex::new(None));
        let f = failed.clone();
        std::thread::Builder::new()
            .name("journal-fsync".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    if let Err(e) = file.sync_data()
                        && let Ok(mut slot) = f.lock()
                    {
                        slot.get_or_insert(e);
                    }
                }
            })
            .ok()?;
        Some(Self { tx, failed })
    }

    /// Asks for an `fsync` (a request already waiting covers this one too).
    fn request(&self) {
        let _ = self.tx.try_send(());
    }

    fn take_error(&self) -> Option<std::io::Error> {
        self.failed.lock().ok().and_then(|mut e| e.take())
    }
}

impl Journal {
    /// Opens (or creates) the journal for appending; `fresh` empties it first.
    pub fn open(path: &Path, list: &Path, fresh: bool) -> Result<Self, JournalError> {
        Self::open_for(path, list, None, fresh)
    }

    /// [`Journal::open`], recording in a new journal which message (a fingerprint of the
    /// template and header options) its outcomes are for, so that a later run with another
    /// message is not mistaken for a re-run.
    pub fn open_for(
        path: &Path,
        list: &Path,
        template: Option<&str>,
        fresh: bool,
    ) -> Result<Self, JournalError> {
        let io = |source| JournalError::Io {
            path: path.into(),
            source,
        };
        let mut file = open_file(
            path,
            OpenOptions::new().create(true).append(true).read(true),
        )?;
        if fresh {
            file.set_len(0).map_err(io)?;
        }
        let len = file.seek(std::io::SeekFrom::End(0)).map_err(io)?;
        // A crash may have torn the last line: drop it (its row's outcome never reached the
        // journal), so that damage can only ever be at the end of the file.
        let keep = complete_len(&file, len).map_err(io)?;
        if keep < len {
            file.set_len(keep).map_err(io)?;
        }
        let mut j = Self {
            path: path.into(),
            file,
            end: keep,
            buf: Vec::new(),
            unsynced: 0,
            last_sync: Instant::now(),
            syncer: None,
        };
        j.syncer = Syncer::start(&j.file);
        if keep == 0 {
            let header = Header {
                mailmerge_journal: VERSION,
                list: list.display().to_string(),
                template: template.map(str::to_string),
            };
            serde_json::to_writer(&mut j.buf, &header).map_err(|e| io(e.into()))?;
            j.buf.push(b'\n');
            j.sync()?;
        }
        Ok(j)
    }

    fn io(&self, source: std::io::Error) -> JournalError {
        JournalError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Adds a record to the pending batch (written by [`Journal::flush`]); returns the offset
    /// it will have in the file, for [`JournalReader::outcome_at`].
    pub fn append(&mut self, key: &RowKey, row: usize, outcome: &Outcome) -> u64 {
        let offset = self.end + self.buf.len() as u64;
        if encode_onto(key, row, outcome, &mut self.buf) {
            self.unsynced += 1;
        }
        offset
    }

    /// Adds a record [`encode`] made (so that the encoding can happen before a lock is taken);
    /// returns its offset, as [`Journal::append`] does. An empty `line` adds nothing.
    pub fn append_encoded(&mut self, line: &[u8]) -> u64 {
        let offset = self.end + self.buf.len() as u64;
        if !line.is_empty() {
            self.buf.extend_from_slice(line);
            self.unsynced += 1;
        }
        offset
    }

    /// A reader for the records this journal holds.
    pub fn reader(&self) -> Result<JournalReader, JournalError> {
        JournalReader::open(&self.path)
    }

    /// Writes the pending batch to the OS (one `write`; it survives SIGKILL from here on) and
    /// `fsync`s when the last sync is older than [`SYNC_INTERVAL`] or enough records wait.
    pub fn flush(&mut self) -> Result<(), JournalError> {
        self.write_buf()?;
        if let Some(e) = self.syncer.as_ref().and_then(Syncer::take_error) {
            return Err(self.io(e));
        }
        if self.unsynced >= SYNC_RECORDS
            || (self.unsynced > 0 && self.last_sync.elapsed() >= SYNC_INTERVAL)
        {
            match &self.syncer {
                Some(syncer) => {
                    syncer.request();
                    self.unsynced = 0;
                    self.last_sync = Instant::now();
                }
                None => self.sync()?,
            }
        }
        Ok(())
    }

    /// Writes the pending batch to the OS, in one `write`. The batch is gone either way (a
    /// failed write is not retried: the run stops); its buffer is kept for the next one.
    fn write_buf(&mut self) -> Result<(), JournalError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.buf);
        let len = self.buf.len();
        self.buf.clear();
        written.map_err(|e| self.io(e))?;
        self.end += len as u64;
        Ok(())
    }

    /// Where the records written to the OS end: a record at an offset below it is in the
    /// file.
    pub fn written_end(&self) -> u64 {
        self.end
    }

    /// True when records wait to be written to the OS ([`Journal::flush`]).
    pub fn unwritten(&self) -> bool {
        !self.buf.is_empty()
    }

    /// True when written records wait for `fsync`.
    pub fn sync_pending(&self) -> bool {
        self.unsynced > 0 || !self.buf.is_empty()
    }

    /// Writes everything pending and `fsync`s.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        self.write_buf()?;
        self.file.sync_data().map_err(|e| self.io(e))?;
        self.unsynced = 0;
        self.last_sync = Instant::now();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipients::ListOptions;

    fn list(csv: &str) -> RecipientList {
        RecipientList::from_reader(
            csv.as_bytes(),
            Path::new("l.csv"),
            &ListOptions {
                allow_duplicates: true,
                ..ListOptions::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn identity_ignores_position_column_order_and_address_spelling() {
        let a = row_keys(&list(
            "email,name,plan\nAnn@Example.com,Ann,gold\nb@x.test,B,s\n",
        ));
        let b = row_keys(&list(
            "plan,name,email\ns,B,b@x.test\ngold,Ann,  ann@EXAMPLE.com \n",
        ));
        assert_eq!(a[0], b[1]);
        assert_eq!(a[1], b[0]);
        assert_eq!(a[0].addr, "ann@example.com");
        let edited = row_keys(&list("email,name,plan\nann@example.com,Ann,silver\n"));
        assert_eq!(edited[0].addr, a[0].addr);
        assert_ne!(
            edited[0].hash, a[0].hash,
            "content change = another message"
        );
        let twice = row_keys(&list("email,name\nx@x.test,X\nx@x.test,X\n"));
        assert_eq!((twice[0].occurrence, twice[1].occurrence), (0, 1));
    }

    #[test]
    fn outcomes_read_back_by_offset_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.csv.journal");
        let keys = row_keys(&list("email,name\na@x.test,A\n"));
        let mut j = Journal::open(&path, Path::new("l.csv"), false).unwrap();
        // Many records, one of them longer than a read.
        let texts: Vec<String> = (0..3000)
            .map(|i| match i {
                1500 => "x".repeat(3 * 512 + 100),
                _ => format!("reply {i}"),
            })
            .collect();
        let offsets: Vec<u64> = texts
            .iter()
            .map(|t| {
                j.append(
                    &keys[0],
                    1,
                    &Outcome::local(Status::Deferred, Step::Deadline, t),
                )
            })
            .collect();
        j.flush().unwrap();
        drop(j);
        let reader = JournalReader::open(&path).unwrap();
        let forward = (0..texts.len()).collect::<Vec<_>>();
        let backward = forward.iter().rev().copied().collect::<Vec<_>>();
        let jumping = forward
            .iter()
            .map(|i| (i * 7919) % texts.len())
            .collect::<Vec<_>>();
        for order in [forward, backward, jumping] {
            for i in order {
                let o = reader
                    .outcome_at(offsets[i])
                    .expect("a record at its offset");
                assert_eq!(o.response, texts[i], "record {i}");
            }
        }
        assert!(
            reader.outcome_at(offsets[2999] + 3).is_none(),
            "not a record start"
        );
    }

    #[test]
    fn records_round_trip_and_a_torn_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv.journal");
        let keys = row_keys(&list("email,name\na@x.test,A\nb@x.test,B\nc@x.test,C\n"));
        let mut o = Outcome::local(
            Status::Delivered,
            Step::Smtp(crate::smtp::Phase::DataEnd),
            "ok",
        );
        o.code = Some(250);
        o.enhanced = Some(EnhancedCode::new(2, 0, 0));
        o.mx_ip = Some("127.0.0.2".parse().unwrap());
        o.attempts = 2;
        o.message_id = Some("id@x.test".into());
        let mut j = Journal::open(&path, Path::new("l.csv"), false).unwrap();
        j.append(&keys[0], 1, &o);
        j.append(
            &keys[1],
            2,
            &Outcome::local(Status::Deferred, Step::Deadline, "later"),
        );
        j.flush().unwrap();
        drop(j);
        // A crash in the middle of a line: tolerated when reading, dropped when reopening.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"addr\":\"c@x.te").unwrap();
        drop(f);
        let torn = load(&path, false).unwrap();
        assert!(torn.torn_tail);
        assert_eq!(torn.records, 2);
        let mut j = Journal::open(&path, Path::new("l.csv"), false).unwrap();
        let mut bounced = Outcome::local(Status::Bounced, Step::Dns, "nx");
        bounced.code = Some(550);
        j.append(&keys[2], 3, &bounced);
        j.sync().unwrap();
        let r = load(&path, false).unwrap();
        assert_eq!(
            (r.records, r.torn_tail, r.damaged, r.len()),
            (3, false, 0, 2)
        );
        assert_eq!(r.done(&keys[0], false), Some(o.clone()));
        assert_eq!(r.done(&keys[1], true), None, "deferred is not done");
        assert_eq!(r.done(&keys[2], true), Some(bounced.clone()));
        // Offsets returned by append read the same records back.
        let mut j = Journal::open(&path, Path::new("l.csv"), false).unwrap();
        let at = j.append(&keys[0], 1, &bounced);
        j.flush().unwrap();
        assert_eq!(j.reader().unwrap().outcome_at(at), Some(bounced));
        // --fresh empties it.
        drop(Journal::open(&path, Path::new("l.csv"), true).unwrap());
        assert!(load(&path, false).unwrap().is_empty());
    }

    #[test]
    fn a_journal_that_is_a_link_is_never_read_or_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let (real, lines) = three_records(dir.path());
        let before = std::fs::read(&real).unwrap();
        let path = dir.path().join("r.csv.journal");
        std::os::unix::fs::symlink(&real, &path).unwrap();
        let is_link = |r: Result<_, JournalError>| matches!(r, Err(JournalError::Link { target, .. }) if target == real);
        assert!(is_link(load(&path, false).map(drop)));
        assert!(is_link(JournalReader::open(&path).map(drop)));
        assert!(is_link(
            Journal::open(&path, Path::new("l.csv"), true).map(drop)
        ));
        let id = serde_json::from_str::<Record>(&lines[1])
            .unwrap()
            .message_id;
        let bounce = Outcome::local(Status::Bounced, Step::LateBounce, "550 5.1.1");
        let late = record_late_bounce(&path, id.as_deref().unwrap_or("x"), &bounce);
        assert!(is_link(late.map(drop)));
        assert_eq!(
            std::fs::read(&real).unwrap(),
            before,
            "the target is untouched"
        );
    }

    #[test]
    fn records_keep_their_finished_at_and_older_records_without_one_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv.journal");
        let keys = row_keys(&list("email\na@x.test\nb@x.test\n"));
        // A line as version 1 journals wrote it before `finished_at` existed.
        let old = format!(
            "{{\"mailmerge_journal\":1,\"list\":\"l.csv\"}}\n\
             {{\"addr\":\"a@x.test\",\"hash\":\"{:016x}\",\"n\":0,\"row\":1,\
             \"status\":\"delivered\",\"step\":\"data-end\",\"code\":250,\
             \"response\":\"ok\",\"attempts\":1}}\n",
            keys[0].hash
        );
        std::fs::write(&path, old).unwrap();
        let r = load(&path, false).unwrap();
        let o = r.done(&keys[0], true).expect("the old record is read");
        assert_eq!((o.status, o.finished_at), (Status::Delivered, None));
        // Appending to it: the new record carries its time, in RFC 3339.
        let mut bounced = Outcome::local(Status::Bounced, Step::Dns, "nx");
        let at = bounced.finished_at.unwrap();
        bounced.code = Some(550);
        let mut j = Journal::open(&path, Path::new("l.csv"), false).unwrap();
        j.append(&keys[1], 2, &bounced);
        j.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let line = text.lines().last().unwrap();
        let stamp = crate::outcome::format_time(at);
        assert!(
            line.contains(&format!("\"finished_at\":\"{stamp}\"")),
            "{line}"
        );
        let r = load(&path, false).unwrap();
        assert_eq!(r.done(&keys[1], true).unwrap().finished_at, Some(at));
        // A time that is not RFC 3339 is damage, like any unreadable field.
        let bad = text.replace(&stamp, "soon");
        std::fs::write(&path, bad).unwrap();
        assert!(matches!(
            load(&path, false),
            Err(JournalError::Damaged { line: 3, .. })
        ));
    }

    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.journal");
        std::fs::write(&path, "row,email\n1,a@x.test\n").unwrap();
        assert!(matches!(
            load(&path, false),
            Err(JournalError::Foreign { .. })
        ));
    }

    /// Writes a journal with three records and returns its path and lines.
    fn three_records(dir: &Path) -> (PathBuf, Vec<String>) {
        let path = dir.join("x.journal");
        let keys = row_keys(&list("email\na@x.test\nb@x.test\nc@x.test\n"));
        let mut j = Journal::open(&path, Path::new("l.csv"), false).unwrap();
        for (i, k) in keys.iter().enumerate() {
            j.append(
                k,
                i + 1,
                &Outcome::local(
                    Status::Delivered,
                    Step::Smtp(crate::smtp::Phase::DataEnd),
                    "250 ok",
                ),
            );
        }
        j.sync().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        (path, text.lines().map(str::to_string).collect())
    }

    #[test]
    fn a_damaged_record_in_the_middle_stops_the_run_unless_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let (path, mut lines) = three_records(dir.path());
        lines[2] = lines[2].replace("\"addr\"", "\"adr");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        match load(&path, false) {
            Err(JournalError::Damaged { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected Damaged at line 3, got {other:?}"),
        }
        let r = load(&path, true).unwrap();
        assert_eq!((r.records, r.damaged, r.torn_tail), (2, 1, false));
    }

    #[test]
    fn a_huge_line_is_never_held_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (path, lines) = three_records(dir.path());
        let mut text = lines.join("\n") + "\n";
        // 3 MB of garbage without a newline: a torn tail, read in bounded memory.
        text.push_str(&"x".repeat(3 * MAX_RECORD_LEN));
        std::fs::write(&path, &text).unwrap();
        let r = load(&path, false).unwrap();
        assert_eq!((r.records, r.torn_tail), (3, true));
        // The same line with a newline and a record after it: damage.
        text.push('\n');
        text.push_str(&lines[1]);
        text.push('\n');
        std::fs::write(&path, &text).unwrap();
        assert!(matches!(
            load(&path, false),
            Err(JournalError::Damaged { line: 5, .. })
        ));
        // Reopening for appending keeps every complete line.
        drop(Journal::open(&path, Path::new("l.csv"), false).unwrap());
        assert_eq!(load(&path, true).unwrap().records, 4);
    }
}
