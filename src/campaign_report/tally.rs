//! One pass over the results CSV(s): every count the report shows, in memory that grows with
//! the number of distinct domains, providers and minutes, never with the number of rows
//! (replies are counted per category up to [`MAX_REPLIES`] distinct texts).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::ReportError;
use crate::events::{TimeCounts, group_of};
use crate::outcome::{Status, parse_time};

/// Distinct reply texts counted per category; later new texts are counted as "other replies".
pub const MAX_REPLIES: usize = 1000;
/// Longest reply text kept (characters); longer ones are cut with `…`.
pub const REPLY_CHARS: usize = 300;

/// Rows of one group (all rows, a provider, a domain) by status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Rows.
    pub rows: u64,
    /// Rows with at least one delivery attempt at an MX.
    pub sent: u64,
    /// Rows per status, in [`Status::ALL`] order.
    pub status: [u64; 6],
}

impl Counts {
    fn add(&mut self, status: Status, attempted: bool) {
        self.rows += 1;
        self.sent += u64::from(attempted);
        self.status[status_index(status)] += 1;
    }

    /// Rows with this status.
    pub fn get(&self, status: Status) -> u64 {
        self.status[status_index(status)]
    }

    /// Rows that were to be delivered: delivered, bounced or deferred (not invalid,
    /// duplicate or suppressed), the denominator of the rates.
    pub fn to_deliver(&self) -> u64 {
        self.get(Status::Delivered) + self.get(Status::Bounced) + self.get(Status::Deferred)
    }
}

fn status_index(s: Status) -> usize {
    Status::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

/// The replies of one category, most common first when shown.
#[derive(Clone, Debug, Default)]
pub struct Replies {
    /// Rows in the category.
    pub rows: u64,
    /// Rows per distinct reply (at most [`MAX_REPLIES`] texts).
    pub texts: HashMap<String, u64>,
    /// Rows whose reply came after the cap was reached and was not one of the kept texts.
    pub other: u64,
}

/// One results file read.
#[derive(Clone, Debug)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// Rows in it.
    pub rows: u64,
    /// `(I, N)` when its name says it is shard I of N (`….shard-I-of-N.csv`).
    pub shard: Option<(u32, u32)>,
}

/// Everything counted.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// The files, in the order given.
    pub sources: Vec<Source>,
    /// All rows.
    pub total: Counts,
    /// Per group ([`group_of`]: provider, else MX host, else empty): counts, and whether
    /// the group is a known provider.
    pub groups: HashMap<String, (Counts, bool)>,
    /// Per destination domain.
    pub domains: HashMap<String, Counts>,
    /// Per category (rows not delivered).
    pub categories: HashMap<String, Replies>,
    /// Delivered rows per time and group.
    pub delivered: TimeCounts,
    /// Rows whose final outcome was a throttling reply, per time and group.
    pub throttled: TimeCounts,
    /// Earliest and latest `finished_at` of a row that reached an MX.
    pub span: Option<(SystemTime, SystemTime)>,
    /// Whether every file has a `finished_at` column (results of mailmerge before it have
    /// none).
    pub has_times: bool,
    /// SMTP sessions' TLS versions (`TLSv1.3`, `none`, …) of the rows that reached an MX.
    pub tls: HashMap<String, u64>,
    /// Rows per TLS policy their last attempt ran under (rows never attempted left out).
    pub policies: HashMap<String, u64>,
    /// Rows whose step is `interrupted`: the run was stopped by a signal.
    pub interrupted: u64,
    /// Row numbers that appear more than once over the inputs (shards overlapping, or a file
    /// given twice).
    pub repeated_rows: u64,
}

/// The columns the report reads, by position in one file.
struct Columns {
    /// `row`.
    row: Option<usize>,
    /// `email`.
    email: Option<usize>,
    /// `domain`.
    domain: Option<usize>,
    /// `status` (required).
    status: usize,
    /// `code`.
    code: Option<usize>,
    /// `enhanced_code`.
    enhanced: Option<usize>,
    /// `response`.
    response: Option<usize>,
    /// `mx_host`.
    mx_host: Option<usize>,
    /// `attempts`.
    attempts: Option<usize>,
    /// `tls`.
    tls: Option<usize>,
    /// `step`.
    step: Option<usize>,
    /// `category`.
    category: Option<usize>,
    /// `provider`.
    provider: Option<usize>,
    /// `tls_policy`.
    policy: Option<usize>,
    /// `finished_at` (none in results of older versions).
    finished_at: Option<usize>,
}

impl Columns {
    fn of(header: &csv::ByteRecord, path: &Path) -> Result<Self, ReportError> {
        let find = |name: &str| header.iter().position(|c| c == name.as_bytes());
        let status = find("status").ok_or_else(|| ReportError::NotResults {
            path: path.into(),
            reason: "no `status` column".into(),
        })?;
        Ok(Self {
            row: find("row"),
            email: find("email"),
            domain: find("domain"),
            status,
            code: find("code"),
            enhanced: find("enhanced_code"),
            response: find("response"),
            mx_host: find("mx_host"),
            attempts: find("attempts"),
            tls: find("tls"),
            step: find("step"),
            category: find("category"),
            provider: find("provider"),
            policy: find("tls_policy"),
            finished_at: find("finished_at"),
        })
    }
}

/// A row's cell as text (empty when the column is missing or not UTF-8).
fn cell(rec: &csv::ByteRecord, col: Option<usize>) -> &str {
    col.and_then(|c| rec.get(c))
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or_default()
}

/// `….shard-I-of-N.csv` → `(I, N)`.
fn shard_of(path: &Path) -> Option<(u32, u32)> {
    let name = path.file_name()?.to_str()?;
    let rest = &name[name.rfind(".shard-")? + ".shard-".len()..];
    let (i, rest) = rest.split_once("-of-")?;
    let n = rest.split('.').next()?;
    Some((i.parse().ok()?, n.parse().ok()?))
}

impl Tally {
    /// Reads every file in `inputs`.
    pub fn read(inputs: &[PathBuf]) -> Result<Self, ReportError> {
        let mut t = Tally {
            has_times: true,
            ..Tally::default()
        };
        let mut seen = RowSet::default();
        for path in inputs {
            t.read_file(path, &mut seen)?;
        }
        t.repeated_rows = seen.repeated;
        Ok(t)
    }

    fn read_file(&mut self, path: &Path, seen: &mut RowSet) -> Result<(), ReportError> {
        let bad = |e: csv::Error| ReportError::Read {
            path: path.into(),
            source: e,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(true)
            .from_path(path)
            .map_err(bad)?;
        let cols = Columns::of(rdr.byte_headers().map_err(bad)?, path)?;
        self.has_times &= cols.finished_at.is_some();
        let mut rows = 0;
        let mut rec = csv::ByteRecord::new();
        while rdr.read_byte_record(&mut rec).map_err(bad)? {
            let Some(status) = Status::parse(cell(&rec, Some(cols.status))) else {
                return Err(ReportError::NotResults {
                    path: path.into(),
                    reason: format!(
                        "line {}: unknown status {:?}",
                        rec.position().map_or(0, csv::Position::line),
                        cell(&rec, Some(cols.status))
                    ),
                });
            };
            if let Ok(n) = cell(&rec, cols.row).parse::<u64>() {
                seen.insert(n);
            }
            self.add(&rec, &cols, status);
            rows += 1;
        }
        self.sources.push(Source {
            path: path.into(),
            rows,
            shard: shard_of(path),
        });
        Ok(())
    }

    /// Counts one row.
    fn add(&mut self, rec: &csv::ByteRecord, cols: &Columns, status: Status) {
        let attempted = cell(rec, cols.attempts).parse::<u32>().unwrap_or(0) > 0;
        self.total.add(status, attempted);
        let provider = cell(rec, cols.provider);
        let mx = cell(rec, cols.mx_host);
        let group = group_of(provider, mx);
        let (counts, known) = slot(&mut self.groups, group);
        counts.add(status, attempted);
        *known = !provider.is_empty();
        slot(&mut self.domains, cell(rec, cols.domain)).add(status, attempted);
        let step = cell(rec, cols.step);
        self.interrupted += u64::from(step == "interrupted");
        let policy = cell(rec, cols.policy);
        if !policy.is_empty() && policy != "none" {
            *slot(&mut self.policies, policy) += 1;
        }
        if !mx.is_empty() {
            let tls = match cell(rec, cols.tls) {
                "" => "none",
                v => v,
            };
            *slot(&mut self.tls, tls) += 1;
        }
        let category = cell(rec, cols.category);
        if status != Status::Delivered && !category.is_empty() {
            let key = reply_key(rec, cols);
            let replies = slot(&mut self.categories, category);
            replies.rows += 1;
            if let Some(n) = replies.texts.get_mut(&key) {
                *n += 1;
            } else if replies.texts.len() < MAX_REPLIES {
                replies.texts.insert(key, 1);
            } else {
                replies.other += 1;
            }
        }
        let at = parse_time(cell(rec, cols.finished_at));
        if let (Some(at), false) = (at, mx.is_empty()) {
            self.span = Some(match self.span {
                Some((a, b)) => (a.min(at), b.max(at)),
                None => (at, at),
            });
            if status == Status::Delivered {
                self.delivered.add(at, group, 1);
            } else if category == "throttled" {
                self.throttled.add(at, group, 1);
            }
        }
    }
}

/// The entry for `key`, allocating the key only when it is new (most rows add to a group
/// that exists).
fn slot<'m, V: Default>(map: &'m mut HashMap<String, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(key.to_string(), V::default());
    }
    map.get_mut(key).expect("inserted above")
}

/// The reply as the report groups it: `550 5.1.1 text`, the row's own address in it replaced
/// by `<recipient>` (so one reply to many recipients counts as one), cut to [`REPLY_CHARS`].
fn reply_key(rec: &csv::ByteRecord, cols: &Columns) -> String {
    let text = cell(rec, cols.response);
    let email = cell(rec, cols.email).trim().to_ascii_lowercase();
    // ASCII lower-casing keeps byte offsets, so a match's range is the original text's.
    let lower = text.to_ascii_lowercase();
    let mut shown = String::with_capacity(text.len());
    let mut from = 0;
    if email.len() > 2 {
        for (at, _) in lower.match_indices(&email) {
            shown.push_str(&text[from..at]);
            shown.push_str("<recipient>");
            from = at + email.len();
        }
    }
    shown.push_str(&text[from..]);
    let text = shown;
    let mut key = [cell(rec, cols.code), cell(rec, cols.enhanced)]
        .iter()
        .filter(|s| !s.is_empty())
        .fold(String::new(), |mut k, s| {
            k.push_str(s);
            k.push(' ');
            k
        });
    key.push_str(text.trim());
    if key.chars().count() > REPLY_CHARS {
        key = key.chars().take(REPLY_CHARS).collect::<String>() + "…";
    }
    key
}

/// Row numbers seen, as a bit set (a million rows: 125 KB).
#[derive(Default)]
struct RowSet {
    /// Bit n: row n was seen.
    bits: Vec<u64>,
    /// Rows seen again.
    repeated: u64,
}

impl RowSet {
    /// Largest row number tracked (beyond: not checked for repeats).
    const MAX_ROW: u64 = 1 << 32;

    fn insert(&mut self, n: u64) {
        if n >= Self::MAX_ROW {
            return;
        }
        let (word, bit) = ((n / 64) as usize, n % 64);
        if self.bits.len() <= word {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & (1 << bit) != 0 {
            self.repeated += 1;
        }
        self.bits[word] |= 1 << bit;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    const HEADER: &str = "row,email,domain,status,code,enhanced_code,response,mx_host,\
                          attempts,tls,step,category,provider,tls_policy,finished_at\n";

    #[test]
    fn counts_groups_domains_replies_and_times() {
        let d = tempfile::tempdir().unwrap();
        let body = format!(
            "{HEADER}\
             1,a@g.test,g.test,delivered,250,2.0.0,ok,gmail-smtp-in.l.google.com,1,TLSv1.3,data-end,,google,opportunistic,2026-03-01T09:30:10.000Z\n\
             2,B@g.test,g.test,bounced,550,5.1.1,<b@g.test>: no such user,gmail-smtp-in.l.google.com,1,TLSv1.3,rcpt,bad-mailbox,google,opportunistic,2026-03-01T09:31:00.000Z\n\
             3,c@g.test,g.test,bounced,550,5.1.1,<C@G.TEST>: no such user,gmail-smtp-in.l.google.com,1,TLSv1.3,rcpt,bad-mailbox,google,opportunistic,2026-03-01T09:31:01.000Z\n\
             4,d@o.test,o.test,deferred,421,4.7.0,Try again later,mx.o.test,3,none,mail,throttled,,opportunistic,2026-03-01T09:32:00.000Z\n\
             5,bad,,invalid,,,no @,,0,none,input,invalid-input,,none,2026-03-01T09:29:00.000Z\n"
        );
        let t = Tally::read(&[write(d.path(), "r.csv", &body)]).unwrap();
        assert_eq!(t.total.rows, 5);
        assert_eq!(t.total.sent, 4);
        assert_eq!(t.total.get(Status::Bounced), 2);
        let (google, known) = t.groups["google"];
        assert!(known);
        assert_eq!((google.rows, google.get(Status::Delivered)), (3, 1));
        assert!(!t.groups["mx.o.test"].1, "a site, not a provider");
        assert_eq!(t.groups[""].0.get(Status::Invalid), 1);
        assert_eq!(t.domains["g.test"].rows, 3);
        let bad = &t.categories["bad-mailbox"];
        assert_eq!(
            bad.texts.get("550 5.1.1 <<recipient>>: no such user"),
            Some(&2),
            "the recipient's own address, in any case, does not split one reply in two: {bad:?}"
        );
        let secs = |s| {
            parse_time(s)
                .unwrap()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        };
        let delivered: Vec<_> = t.delivered.iter().collect();
        assert_eq!(delivered, [(secs("2026-03-01T09:30:10Z"), "google", 1)]);
        let throttled: Vec<_> = t.throttled.iter().collect();
        assert_eq!(throttled, [(secs("2026-03-01T09:32:00Z"), "mx.o.test", 1)]);
        assert_eq!(t.tls["TLSv1.3"], 3);
        assert_eq!(t.tls["none"], 1);
        assert_eq!(t.policies["opportunistic"], 4);
        let (first, last) = t.span.unwrap();
        assert_eq!(
            (first, last),
            (
                parse_time("2026-03-01T09:30:10Z").unwrap(),
                parse_time("2026-03-01T09:32:00Z").unwrap()
            ),
            "rows that reached no MX are not on the timeline"
        );
        assert!(t.has_times);
    }

    #[test]
    fn shards_are_named_and_repeated_rows_counted() {
        let d = tempfile::tempdir().unwrap();
        let a = write(
            d.path(),
            "l.results.shard-0-of-2.csv",
            "row,status\n1,delivered\n3,delivered\n",
        );
        let b = write(
            d.path(),
            "l.results.shard-1-of-2.csv",
            "row,status\n2,deferred\n3,bounced\n",
        );
        let t = Tally::read(&[a, b]).unwrap();
        assert_eq!(t.total.rows, 4);
        assert_eq!(t.repeated_rows, 1);
        assert_eq!(t.sources[1].shard, Some((1, 2)));
        assert!(!t.has_times, "results without finished_at");
    }

    #[test]
    fn a_file_that_is_not_results_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "x.csv", "email,name\na@x.test,A\n");
        assert!(matches!(
            Tally::read(&[p]),
            Err(ReportError::NotResults { .. })
        ));
        let p = write(d.path(), "y.csv", "row,status\n1,sent\n");
        assert!(matches!(
            Tally::read(&[p]),
            Err(ReportError::NotResults { .. })
        ));
    }
}
