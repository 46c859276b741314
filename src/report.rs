//! Report: the results CSV (one row per input row, in input order) and the run summary.
//!
//! The CSV is written to a temporary file and renamed into place ([`crate::files`]), so a
//! reader never sees half a report and no link planted beside it is written through. The input's own columns follow ours so that users can join results back to their
//! list; an input column whose name clashes with ours is prefixed `input_`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::{Category, classify};
use crate::delivery::ProviderReport;
use crate::files::NewFile;
use crate::outcome::{Outcome, Status, Step};
use crate::recipients::RecipientList;
use crate::smtp::Phase;
use crate::tls_policy::PolicyKind;

/// Our columns, in order (a contract: other tools read them by name).
pub const COLUMNS: &[&str] = &[
    "row",
    "email",
    "domain",
    "status",
    "code",
    "enhanced_code",
    "response",
    "mx_host",
    "mx_ip",
    "source_ip",
    "attempts",
    "message_id",
    "tls",
    "step",
    "category",
    "provider",
    "tls_policy",
    "tls_policy_note",
    "finished_at",
];

/// Writes the results CSV to `path` (when given) and tallies the summary, from `blocks`: the
/// rows in input order, a block at a time, as [`result_rows`] formats them (on any thread).
/// Unless `raw`, every cell is [`defuse`]d: list values and server replies are untrusted, and
/// the file is opened in spreadsheets.
pub fn write_results(
    path: Option<&Path>,
    raw: bool,
    list: &RecipientList,
    blocks: impl Iterator<Item = ResultRows>,
    elapsed: Duration,
    connections: usize,
) -> std::io::Result<Summary> {
    let mut summary = Summary {
        elapsed,
        connections,
        ..Default::default()
    };
    let mut file = match path {
        Some(p) => Some(NewFile::create(p)?),
        None => None,
    };
    if let Some(f) = file.as_mut() {
        let mut w = csv::Writer::from_writer(Vec::new());
        write_row(
            &mut w,
            header(&list.columns).iter().map(String::as_str),
            raw,
        )?;
        f.write_all(&w.into_inner().map_err(|e| e.into_error())?)?;
    }
    for block in blocks {
        summary.absorb(block.tally);
        if let Some(f) = file.as_mut() {
            f.write_all(&block.bytes)?;
        }
    }
    if let Some(f) = file {
        f.commit()?;
    }
    Ok(summary)
}

/// Some rows of the results CSV, formatted, and what they add to the summary.
#[derive(Debug, Default)]
pub struct ResultRows {
    /// The rows' CSV lines (nothing when no file is written).
    pub bytes: Vec<u8>,
    /// Their counts.
    pub tally: Summary,
}

/// The results rows of `rows` (in input order); `outcome(i)` gives row `i`'s final outcome,
/// `None` for a row another shard reports (`--shard`: left out of the file and the summary).
/// With `csv: false`, only the counts.
pub fn result_rows(
    list: &RecipientList,
    rows: std::ops::Range<usize>,
    outcome: &mut dyn FnMut(usize) -> Option<Outcome>,
    (csv, raw): (bool, bool),
    provider_of: &HashMap<String, Arc<str>>,
) -> std::io::Result<ResultRows> {
    let mut tally = Summary::default();
    let mut w = csv.then(|| csv::Writer::from_writer(Vec::with_capacity(rows.len() * 512)));
    for i in rows {
        let Some(o) = outcome(i) else { continue };
        let row = list.row(i);
        tally.add(&row, &o);
        let Some(w) = w.as_mut() else { continue };
        let domain = row_domain(&row);
        let code = o.code.map(|c| c.to_string()).unwrap_or_default();
        let enhanced = o.enhanced.map(|e| e.to_string()).unwrap_or_default();
        let ip = o.mx_ip.map(|i| i.to_string()).unwrap_or_default();
        let source_ip = o.source_ip.map(|i| i.to_string()).unwrap_or_default();
        let row_no = row.row.to_string();
        let attempts = o.attempts.to_string();
        let category = category_of(&o).map_or("", Category::as_str);
        let provider = provider_of.get(&domain).map_or("", |p| &**p);
        let finished_at = o
            .finished_at
            .map(crate::outcome::format_time)
            .unwrap_or_default();
        let fixed: [&str; 19] = [
            &row_no,
            &row.email,
            &domain,
            o.status.as_str(),
            &code,
            &enhanced,
            &o.response,
            o.mx_host.as_deref().unwrap_or_default(),
            &ip,
            &source_ip,
            &attempts,
            o.message_id.as_deref().unwrap_or_default(),
            o.tls.as_deref().unwrap_or("none"),
            o.step.as_str(),
            category,
            provider,
            o.tls_policy.as_str(),
            o.tls_note.as_deref().unwrap_or_default(),
            &finished_at,
        ];
        write_row(w, fixed.into_iter().chain(input_cells(list, &row)), raw)?;
    }
    let bytes = match w {
        Some(w) => w.into_inner().map_err(|e| e.into_error())?,
        None => Vec::new(),
    };
    Ok(ResultRows { bytes, tally })
}

/// The results CSV's header for a list with these columns: ours, then the list's (a name that
/// clashes with ours prefixed `input_`).
pub fn header(columns: &[String]) -> Vec<String> {
    let mut header: Vec<String> = COLUMNS.iter().map(|s| s.to_string()).collect();
    for c in columns {
        if COLUMNS.contains(&c.as_str()) {
            header.push(format!("input_{c}"));
        } else {
            header.push(c.clone());
        }
    }
    header
}

/// The cells of a results row after ours: the row's value in every list column (empty where
/// a short row has none). With `row.email` in the `email` column, these are the cells of a
/// results row that come from the list (what `merge-results` checks against it).
pub fn input_cells<'a>(
    list: &RecipientList,
    row: &'a crate::recipients::Row,
) -> impl Iterator<Item = &'a str> + use<'a> {
    (0..list.columns.len()).map(|c| row.fields.get(c).map_or("", String::as_str))
}

/// The `domain` column of a row: its address's domain (A-label form); for a row without a
/// valid address, the text after its last `@`, lower-cased.
pub fn row_domain(row: &crate::recipients::Row) -> String {
    match &row.status {
        Ok(a) => a.domain().to_string(),
        Err(_) => row
            .email
            .rsplit_once('@')
            .map(|(_, d)| d.to_lowercase())
            .unwrap_or_default(),
    }
}

/// Why a row was not delivered (the `category` column; see [`crate::classify`]): empty for
/// delivered and duplicate rows.
pub fn category_of(o: &Outcome) -> Option<Category> {
    let dns_verdict = |e: Option<crate::smtp::EnhancedCode>| match e {
        Some(e) if e.class == 5 && matches!((e.subject, e.detail), (1, 2 | 10) | (4, 4)) => {
            Category::BadDomain
        }
        _ => Category::Dns,
    };
    Some(match (o.status, o.step, o.code) {
        (Status::Delivered | Status::Duplicate | Status::Suppressed, _, _) => return None,
        (Status::Invalid, _, _) | (_, Step::Input | Step::Render, _) => Category::InvalidInput,
        (_, Step::Dns, _) => dns_verdict(o.enhanced),
        // A suspension is the receiver's answer to our volume, remembered.
        (_, Step::Suspended, _) => Category::Throttled,
        (_, Step::Smtp(Phase::StartTls), None) => Category::Tls,
        (_, Step::Smtp(phase), Some(code)) => {
            classify(Some(phase), code, o.enhanced, &o.response).category
        }
        (_, _, Some(code)) => classify(None, code, o.enhanced, &o.response).category,
        // RFC 3463 X.5.X: the session broke on our protocol (a reply out of step, garbage).
        (_, Step::Smtp(_), None) if o.enhanced.is_some_and(|e| e.subject == 5) => {
            Category::Protocol
        }
        (_, _, None) => Category::Other,
    })
}

/// Writes one record, each cell [`defuse`]d unless `raw`.
pub fn write_row<'a, W: std::io::Write>(
    w: &mut csv::Writer<W>,
    cells: impl Iterator<Item = &'a str>,
    raw: bool,
) -> csv::Result<()> {
    for cell in cells {
        if raw {
            w.write_field(cell)?;
        } else {
            w.write_field(defuse(cell).as_ref())?;
        }
    }
    w.write_record(None::<&[u8]>)
}

/// A cell a spreadsheet would evaluate as a formula (`=`, `+`, `-`, `@`, tab or CR first) gets
/// a leading apostrophe, as OWASP's CSV-injection guidance says; every other cell is as is.
pub fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    if is_formula(cell) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// The cell [`defuse`] was given: reading back a file we wrote (an apostrophe before a
/// formula character is removed; every other cell is as is).
pub fn undefuse(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if is_formula(rest) => rest,
        _ => cell,
    }
}

/// True when a spreadsheet would evaluate `cell` as a formula.
fn is_formula(cell: &str) -> bool {
    matches!(
        cell.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// Counts for the end-of-run summary.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Rows per status.
    pub counts: BTreeMap<Status, usize>,
    /// Per destination domain: (total, delivered).
    pub domains: HashMap<String, (usize, usize)>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// SMTP sessions opened.
    pub connections: usize,
    /// Messages delivered by this run (not counting outcomes reused from the journal).
    pub delivered_now: usize,
    /// MX addresses that objected to our pipelining during the run, one line each:
    /// `mx.example.test [192.0.2.1] fell back to no-pipelining after "503 5.5.1 ..."`.
    pub dialect_fallbacks: Vec<String>,
    /// Per mailbox provider (and any unknown site that throttled): what it accepted, its
    /// throttling replies and the limits it ended with.
    pub providers: Vec<ProviderReport>,
    /// When the run ended (Unix seconds, the run's clock): suspensions say until when.
    pub ended_at: u64,
    /// Rows per TLS policy their last attempt ran under (rows never attempted left out).
    pub tls_policies: BTreeMap<PolicyKind, usize>,
    /// Rows sent under an MTA-STS `testing` policy that `enforce` would have refused.
    pub tls_would_fail: usize,
    /// What the published-policy lookups found worth saying (DANE off, unfetchable policies).
    pub tls_notes: Vec<String>,
    /// What the sender's memory held back (`yahoo: suspended until 14:05 UTC by …`).
    pub sender_notes: Vec<String>,
}

impl Summary {
    /// Counts one row.
    fn add(&mut self, row: &crate::recipients::Row, o: &Outcome) {
        *self.counts.entry(o.status).or_default() += 1;
        if o.tls_policy != PolicyKind::None {
            *self.tls_policies.entry(o.tls_policy).or_default() += 1;
        }
        if o.tls_note.is_some() {
            self.tls_would_fail += 1;
        }
        if let Ok(a) = &row.status {
            let delivered = usize::from(o.status == Status::Delivered);
            self.add_domain(a.domain(), (1, delivered));
        }
    }

    fn add_domain(&mut self, domain: &str, (total, delivered): (usize, usize)) {
        let e = match self.domains.get_mut(domain) {
            Some(e) => e,
            None => self.domains.entry(domain.to_string()).or_default(),
        };
        e.0 += total;
        e.1 += delivered;
    }

    /// Adds the row counts of `part` (rows [`result_rows`] counted): by status, by domain, by
    /// TLS policy.
    fn absorb(&mut self, part: Summary) {
        for (status, n) in part.counts {
            *self.counts.entry(status).or_default() += n;
        }
        for (policy, n) in part.tls_policies {
            *self.tls_policies.entry(policy).or_default() += n;
        }
        self.tls_would_fail += part.tls_would_fail;
        for (domain, counts) in part.domains {
            self.add_domain(&domain, counts);
        }
    }

    /// Rows with this status.
    pub fn count(&self, status: Status) -> usize {
        self.counts.get(&status).copied().unwrap_or(0)
    }

    /// Messages this run delivered per second of wall-clock time.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.delivered_now as f64 / secs
        } else {
            0.0
        }
    }

    /// True when every row that should have been sent was delivered (duplicates don't count).
    pub fn all_delivered(&self) -> bool {
        Status::ALL
            .iter()
            .filter(|s| {
                !matches!(
                    s,
                    Status::Delivered | Status::Duplicate | Status::Suppressed
                )
            })
            .all(|s| self.count(*s) == 0)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: usize = self.counts.values().sum();
        write!(f, "{total} rows:")?;
        for s in Status::ALL {
            write!(f, " {} {}", s.as_str(), self.count(s))?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "elapsed {:.2}s, {:.0} msg/s delivered, {} SMTP connections",
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.connections
        )?;
        let mut top: Vec<(&String, &(usize, usize))> = self.domains.iter().collect();
        top.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
        if !top.is_empty() {
            write!(f, "top domains:")?;
            for (d, (n, ok)) in top.iter().take(5) {
                write!(f, " {d} {ok}/{n}")?;
            }
            writeln!(f)?;
        }
        if !self.tls_policies.is_empty() {
            write!(f, "tls policies:")?;
            for (i, (k, n)) in self.tls_policies.iter().rev().enumerate() {
                write!(f, "{} {} {n}", if i == 0 { "" } else { "," }, k.as_str())?;
            }
            if self.tls_would_fail > 0 {
                write!(
                    f,
                    " ({} would fail under MTA-STS enforce: see tls_policy_note)",
                    self.tls_would_fail
                )?;
            }
            writeln!(f)?;
        }
        for line in &self.tls_notes {
            writeln!(f, "tls: {line}")?;
        }
        for line in &self.sender_notes {
            writeln!(f, "sender: {line}")?;
        }
        for line in &self.dialect_fallbacks {
            writeln!(f, "dialect: {line}")?;
        }
        for p in self
            .providers
            .iter()
            .filter(|p| p.delivered + p.throttles > 0)
        {
            writeln!(f, "{}", provider_line(p, self.ended_at))?;
            for (reply, n) in &p.replies {
                writeln!(f, "  {n}× {reply}")?;
            }
        }
        Ok(())
    }
}

/// `google: 1200 delivered, 2 throttling replies, ended at 5 conns, 50/conn, 140/s`.
fn provider_line(p: &ProviderReport, now: u64) -> String {
    let rate = p
        .rate
        .map_or("unpaced".into(), crate::provider::rules::show_rate);
    let suspended = match &p.suspension {
        Some((left, cause)) => {
            let until =
                crate::clock::hh_mm(now + left.as_secs() + u64::from(left.subsec_nanos() > 0));
            format!(", suspended until {until} by {cause}")
        }
        None => String::new(),
    };
    format!(
        "provider {}: {} delivered, {} throttling replies, ended at {} conns, {}/conn, \
         {rate}{suspended}",
        p.name, p.delivered, p.throttles, p.connections, p.messages_per_connection
    )
}

/// One destination site in the preflight plan.
#[derive(Clone, Debug, Default)]
pub struct PlanSite {
    /// Site name (the MX host set).
    pub name: String,
    /// MX hosts in try order, with preference.
    pub hosts: Vec<String>,
    /// Messages that would go there.
    pub messages: usize,
    /// Connections the run would open there (at least one per worker, plus reopenings after
    /// `--messages-per-connection`).
    pub connections: usize,
    /// The TLS policy published for it (MTA-STS, DANE), or "no published policy".
    pub tls_policy: String,
}

/// What a run would do, row by row, without sending: `mailmerge check` / `--dry-run`.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Rows in the list.
    pub rows: usize,
    /// Messages that would be sent.
    pub to_send: usize,
    /// Rows delivered or bounced by an earlier run of this job (journal): skipped.
    pub already_done: usize,
    /// Rows left for a later run by `--limit`.
    pub beyond_limit: usize,
    /// Rows left for a later day by `--daily-cap` or the warm-up schedule.
    pub beyond_cap: usize,
    /// Rows whose receiver is suspended past the run's deadline.
    pub suspended_receiver: usize,
    /// Rows that cannot be sent (bad row, bad address, missing value, missing attachment).
    pub invalid: usize,
    /// Repeated addresses, not sent.
    pub duplicate: usize,
    /// Addresses on the suppression list, not sent.
    pub suppressed: usize,
    /// Rows whose domain publishes a null MX (RFC 7505).
    pub null_mx: usize,
    /// Rows whose domain does not exist.
    pub nxdomain: usize,
    /// Rows whose domain's MX hosts have no address.
    pub no_address: usize,
    /// Rows whose domain's lookup failed temporarily (SERVFAIL, timeout): deferred.
    pub dns_tempfail: usize,
    /// Destination sites.
    pub sites: Vec<PlanSite>,
    /// `file:line: problem` for every row that would be invalid.
    pub problems: Vec<String>,
    /// What the published-policy lookups found worth saying (DANE off, unfetchable policies).
    pub tls_notes: Vec<String>,
    /// What the sender's memory holds back (suspensions in force).
    pub sender_notes: Vec<String>,
}

/// The plan's count a row falls in once its outcome is known, before or instead of sending:
/// the one place where an outcome is sorted into the plan's counts (the run's ledger counts
/// every row it settles with [`PlanCount::of`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanCount {
    /// Delivered or bounced by an earlier run of this job (journal): skipped.
    AlreadyDone,
    /// Left for a later run by `--limit`.
    BeyondLimit,
    /// Left for a later day by `--daily-cap` or the warm-up.
    BeyondCap,
    /// Its receiver is suspended past the run's deadline.
    Suspended,
    /// Cannot be sent (bad row, bad address, missing value, missing attachment).
    Invalid,
    /// A repeated address.
    Duplicate,
    /// On the suppression list.
    Suppressed,
    /// Its domain publishes a null MX (RFC 7505).
    NullMx,
    /// Its domain does not exist.
    NxDomain,
    /// Its domain's MX hosts have no address.
    NoAddress,
    /// Its domain's lookup failed temporarily.
    DnsTempfail,
}

impl PlanCount {
    /// Every count, in the order the plan lists them.
    pub const ALL: [PlanCount; 11] = [
        PlanCount::AlreadyDone,
        PlanCount::BeyondLimit,
        PlanCount::BeyondCap,
        PlanCount::Suspended,
        PlanCount::Invalid,
        PlanCount::Duplicate,
        PlanCount::Suppressed,
        PlanCount::NullMx,
        PlanCount::NxDomain,
        PlanCount::NoAddress,
        PlanCount::DnsTempfail,
    ];

    /// The count an outcome falls in; `None` for what a delivery attempt decided (those are
    /// the summary's, not the plan's). A row finished by an earlier run is counted as
    /// [`PlanCount::AlreadyDone`] without reading its outcome back.
    pub fn of(o: &Outcome) -> Option<Self> {
        Some(match (o.status, o.step) {
            (Status::Invalid, _) => PlanCount::Invalid,
            (Status::Duplicate, _) => PlanCount::Duplicate,
            (Status::Suppressed, _) => PlanCount::Suppressed,
            (_, Step::Limit) => PlanCount::BeyondLimit,
            (_, Step::Cap) => PlanCount::BeyondCap,
            (_, Step::Suspended) => PlanCount::Suspended,
            (Status::Bounced, Step::Dns) if o.code == Some(556) => PlanCount::NullMx,
            (Status::Bounced, Step::Dns)
                if o.enhanced.is_some_and(|e| (e.subject, e.detail) == (1, 2)) =>
            {
                PlanCount::NxDomain
            }
            (Status::Bounced, Step::Dns) => PlanCount::NoAddress,
            (_, Step::Dns) => PlanCount::DnsTempfail,
            _ => return None,
        })
    }
}

impl Plan {
    /// Adds `n` rows to `count`.
    pub fn add(&mut self, count: PlanCount, n: usize) {
        *match count {
            PlanCount::AlreadyDone => &mut self.already_done,
            PlanCount::BeyondLimit => &mut self.beyond_limit,
            PlanCount::BeyondCap => &mut self.beyond_cap,
            PlanCount::Suspended => &mut self.suspended_receiver,
            PlanCount::Invalid => &mut self.invalid,
            PlanCount::Duplicate => &mut self.duplicate,
            PlanCount::Suppressed => &mut self.suppressed,
            PlanCount::NullMx => &mut self.null_mx,
            PlanCount::NxDomain => &mut self.nxdomain,
            PlanCount::NoAddress => &mut self.no_address,
            PlanCount::DnsTempfail => &mut self.dns_tempfail,
        } += n;
    }

    /// Total connections the run would open.
    pub fn connections(&self) -> usize {
        self.sites.iter().map(|s| s.connections).sum()
    }

    /// True when every row would be sent (duplicates and rows already done do not count).
    pub fn all_sendable(&self) -> bool {
        self.invalid + self.null_mx + self.nxdomain + self.no_address + self.dns_tempfail == 0
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "plan for {} rows (nothing sent):", self.rows)?;
        for (n, what) in [
            (self.to_send, "would be sent"),
            (
                self.already_done,
                "already delivered or bounced (journal): skipped",
            ),
            (self.beyond_limit, "beyond --limit: left for a later run"),
            (self.beyond_cap, "beyond today's cap: left for a later day"),
            (
                self.suspended_receiver,
                "receiver suspended past the deadline: left for a later run",
            ),
            (self.invalid, "invalid"),
            (self.duplicate, "duplicate (not sent)"),
            (self.suppressed, "suppressed (suppression list): not sent"),
            (self.null_mx, "null MX: would bounce"),
            (self.nxdomain, "NXDOMAIN: would bounce"),
            (self.no_address, "MX without address: would bounce"),
            (
                self.dns_tempfail,
                "DNS temporary failure: would be deferred",
            ),
        ] {
            writeln!(f, "  {n:>7}  {what}")?;
        }
        writeln!(
            f,
            "sites: {}, estimated connections: {}",
            self.sites.len(),
            self.connections()
        )?;
        for s in &self.sites {
            writeln!(
                f,
                "  {}: {} message(s), {} connection(s) via {}; tls: {}",
                s.name,
                s.messages,
                s.connections,
                s.hosts.join(", "),
                s.tls_policy
            )?;
        }
        for line in &self.tls_notes {
            writeln!(f, "tls: {line}")?;
        }
        for line in &self.sender_notes {
            writeln!(f, "sender: {line}")?;
        }
        if !self.problems.is_empty() {
            writeln!(f, "problems:")?;
            for p in &self.problems {
                writeln!(f, "  {p}")?;
            }
        }
        Ok(())
    }
}
