//! The event stream, `run --events PATH` (`-`: standard output): one JSON object per line, for
//! log pipelines (a log shipper, `kubectl logs`) while a run goes on. One `attempt` event per
//! delivery attempt's outcome, one `provider` event per change of a provider's sending state
//! (reported by the engine's gates), and a last `summary` event; every line carries the schema
//! version `v` (docs/results.md, "The event stream").
//!
//! Lines are serialized on the run's event loop and written by a thread of their own, which
//! flushes whenever it has caught up: nothing waits in a buffer while the run is idle, and a
//! slow reader of standard output holds the run back only once [`QUEUE_LINES`] lines wait.
//! The stream also keeps, in bounded memory, what the HTML report's timeline needs beyond the
//! results CSV ([`Timeline`]): throttling replies per minute and the providers' state changes.
//! [`Timeline::read`] gets the same from an events file, for `mailmerge report --events`.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::classify::Category;
use crate::delivery::{Event, GateChange};
use crate::outcome::{Outcome, Status, format_time, parse_time};
use crate::recipients::RecipientList;
use crate::report::{Summary, category_of, row_domain};

/// The `v` of every line; raised when a field changes meaning or goes away (new fields may
/// appear without a new version).
pub const SCHEMA_VERSION: u32 = 1;
/// Lines serialized but not yet written, at most: beyond, the run waits for the writer.
pub const QUEUE_LINES: usize = 4096;
/// State changes kept for the report's timeline; later ones are only counted.
pub const MAX_CHANGES: usize = 10_000;
/// (time, group) cells a [`TimeCounts`] keeps at most before it coarsens its resolution.
pub const MAX_CELLS: usize = 100_000;
/// The resolutions a [`TimeCounts`] goes through: a second, a minute, an hour, a day.
const RESOLUTIONS: [u64; 4] = [1, 60, 3600, 86_400];

/// Where the events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Standard output (`--events -`).
    Stdout,
    /// A file, created or emptied.
    File(PathBuf),
}

impl From<PathBuf> for Target {
    /// `-` is standard output; anything else a file.
    fn from(p: PathBuf) -> Self {
        if p.as_os_str() == "-" {
            Target::Stdout
        } else {
            Target::File(p)
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Stdout => f.write_str("standard output"),
            Target::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The events cannot be written or read.
#[derive(Debug, Error)]
pub enum EventsError {
    /// An OS error on the stream.
    #[error("events to {target}: {source}")]
    Io {
        /// The file, or standard output.
        target: String,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The group a row is counted in on the timeline and in the report's provider table: its
/// provider, else (another site) the MX host that answered, else empty (no MX reached).
pub fn group_of<'a>(provider: &'a str, mx_host: &'a str) -> &'a str {
    if provider.is_empty() {
        mx_host
    } else {
        provider
    }
}

/// Counts per time bucket and group (deliveries, throttling replies) for the timeline, to the
/// second while that takes at most [`MAX_CELLS`] cells, else to the minute, hour or day: memory
/// stays bounded however long the run (groups are kept once each, as the report's provider
/// table keeps them).
#[derive(Clone, Debug, Default)]
pub struct TimeCounts {
    /// Seconds per cell (1, 60, 3600 or 86400; 0 before the first count).
    resolution: u64,
    /// Group names, each once: cells refer to them by index.
    groups: Vec<String>,
    /// Index of each name in `groups`.
    index: HashMap<String, u32>,
    /// (cell start in seconds since the Unix epoch, group index) → count.
    cells: BTreeMap<(u64, u32), u32>,
}

impl PartialEq for TimeCounts {
    /// The same counts, whatever order the groups were first seen in.
    fn eq(&self, other: &Self) -> bool {
        fn sorted(t: &TimeCounts) -> Vec<(u64, &str, u32)> {
            let mut v: Vec<(u64, &str, u32)> = t.iter().collect();
            v.sort_unstable();
            v
        }
        self.resolution() == other.resolution() && sorted(self) == sorted(other)
    }
}

impl TimeCounts {
    /// Adds `n` at time `at` for `group`.
    pub fn add(&mut self, at: SystemTime, group: &str, n: u32) {
        let secs = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.add_secs(secs, group, n);
    }

    fn group(&mut self, name: &str) -> u32 {
        if let Some(i) = self.index.get(name) {
            return *i;
        }
        let i = self.groups.len() as u32;
        self.groups.push(name.to_string());
        self.index.insert(name.to_string(), i);
        i
    }

    fn add_secs(&mut self, secs: u64, group: &str, n: u32) {
        let g = self.group(group);
        self.add_cell(secs, g, n);
    }

    fn add_cell(&mut self, secs: u64, g: u32, n: u32) {
        self.resolution = self.resolution.max(1);
        let cell = self
            .cells
            .entry((secs - secs % self.resolution, g))
            .or_default();
        *cell = cell.saturating_add(n);
        if self.cells.len() > MAX_CELLS {
            self.coarsen();
        }
    }

    /// Moves to the next resolution (the day is the last: a run of 270 years would need more).
    fn coarsen(&mut self) {
        let Some(&next) = RESOLUTIONS.iter().find(|r| **r > self.resolution) else {
            return;
        };
        self.resolution = next;
        for ((secs, g), n) in std::mem::take(&mut self.cells) {
            self.add_cell(secs, g, n);
        }
    }

    /// Seconds per cell (1 when empty).
    pub fn resolution(&self) -> u64 {
        self.resolution.max(1)
    }

    /// Every cell: start (seconds since the Unix epoch), group, count; in time order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &str, u32)> + '_ {
        self.cells.iter().map(|((t, g), n)| {
            let name = self.groups.get(*g as usize).map_or("", String::as_str);
            (*t, name, *n)
        })
    }

    /// All counts added.
    pub fn total(&self) -> u64 {
        self.cells.values().map(|n| u64::from(*n)).sum()
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &TimeCounts) {
        for (t, g, n) in other.iter() {
            self.add_secs(t, g, n);
        }
    }
}

/// One state change of a provider's gate, as the timeline shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// When it happened.
    pub at: SystemTime,
    /// The provider (or site) name.
    pub provider: String,
    /// The gate's label (`provider@source-ip` for one source address's gate).
    pub gate: String,
    /// What changed.
    pub change: GateChange,
    /// The reply that caused it.
    pub reply: Option<String>,
}

/// What the events add to the results CSV for the report's timeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// Throttling replies (attempts whose reply is in the `throttled` category, retried or
    /// final) per time and group ([`group_of`]).
    pub throttles: TimeCounts,
    /// The providers' state changes in the order they happened, at most [`MAX_CHANGES`].
    pub changes: Vec<Change>,
    /// State changes beyond [`MAX_CHANGES`], counted only.
    pub changes_left_out: usize,
    /// Lines of an events file that were not events of this schema version (skipped).
    pub skipped_lines: usize,
}

impl Timeline {
    fn throttled(&mut self, at: SystemTime, group: &str) {
        self.throttles.add(at, group, 1);
    }

    fn changed(&mut self, change: Change) {
        if self.changes.len() < MAX_CHANGES {
            self.changes.push(change);
        } else {
            self.changes_left_out += 1;
        }
    }

    /// Adds `other` (another shard's events): throttles summed, changes in time order.
    pub fn merge(&mut self, other: Timeline) {
        self.throttles.merge(&other.throttles);
        self.changes_left_out += other.changes_left_out;
        self.skipped_lines += other.skipped_lines;
        for c in other.changes {
            self.changed(c);
        }
        self.changes.sort_by_key(|c| c.at);
    }

    /// The timeline of an events file (as `run --events` writes it). Lines that are not events
    /// of [`SCHEMA_VERSION`] (other log output mixed in, another version) are skipped and
    /// counted; memory stays bounded however long the file is.
    pub fn read(reader: impl BufRead) -> std::io::Result<Self> {
        let mut t = Timeline::default();
        for line in reader.split(b'\n') {
            let line = line?;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<AnyLine>(&line) {
                Ok(l) if l.v == SCHEMA_VERSION => t.add_line(l),
                _ => t.skipped_lines += 1,
            }
        }
        Ok(t)
    }

    fn add_line(&mut self, l: AnyLine) {
        let Some(at) = l.time.as_deref().and_then(parse_time) else {
            self.skipped_lines += 1;
            return;
        };
        match l.kind.as_str() {
            "attempt" if l.category.as_deref() == Some(Category::Throttled.as_str()) => {
                let provider = l.provider.unwrap_or_default();
                let mx = l.mx_host.unwrap_or_default();
                self.throttled(at, group_of(&provider, &mx));
            }
            "provider" => match change_of(&l) {
                Some(change) => self.changed(Change {
                    at,
                    provider: l.provider.unwrap_or_default(),
                    gate: l.gate.unwrap_or_default(),
                    change,
                    reply: l.reply,
                }),
                None => self.skipped_lines += 1,
            },
            _ => {}
        }
    }
}

/// Any line of the stream, for reading back: the fields the timeline uses.
#[derive(Deserialize)]
struct AnyLine {
    /// Schema version.
    v: u32,
    /// `attempt`, `provider` or `summary`.
    #[serde(rename = "type")]
    kind: String,
    /// When (RFC 3339).
    time: Option<String>,
    /// The provider (attempt, provider lines).
    provider: Option<String>,
    /// The MX host (attempt lines).
    mx_host: Option<String>,
    /// The reply's category (attempt lines).
    category: Option<String>,
    /// The gate's label (provider lines).
    gate: Option<String>,
    /// What changed (provider lines).
    change: Option<String>,
    /// With `slowed`: messages per second.
    rate: Option<f64>,
    /// With a lowered limit: the new one.
    limit: Option<usize>,
    /// With `suspended`: its end.
    until: Option<String>,
    /// The reply that caused a change.
    reply: Option<String>,
}

/// The [`GateChange`] a `provider` line describes.
fn change_of(l: &AnyLine) -> Option<GateChange> {
    Some(match l.change.as_deref()? {
        "slowed" => GateChange::Slowed { rate: l.rate? },
        "suspended" => GateChange::Suspended {
            until: parse_time(l.until.as_deref()?)?,
        },
        "connections-lowered" => GateChange::ConnectionsLowered { to: l.limit? },
        "messages-per-connection-lowered" => GateChange::PerConnectionLowered { to: l.limit? },
        "resumed" => GateChange::Resumed,
        _ => return None,
    })
}

/// An `attempt` line.
#[derive(Serialize)]
struct AttemptLine<'a> {
    /// [`SCHEMA_VERSION`].
    v: u32,
    /// `attempt`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// When the outcome was decided.
    time: String,
    /// Row number (1-based, as in the results CSV).
    row: usize,
    /// The address as written in the list.
    address: &'a str,
    /// Its domain (A-label form).
    domain: &'a str,
    /// The mailbox provider; `null` for other sites.
    provider: Option<&'a str>,
    /// `delivered`, `bounced`, `deferred` or `invalid`.
    status: &'static str,
    /// The row's final outcome (`final` in JSON), else it is tried again.
    #[serde(rename = "final")]
    last: bool,
    /// Attempts charged to the row so far.
    attempt: u32,
    /// The step that decided it.
    step: &'static str,
    /// SMTP reply code.
    code: Option<u16>,
    /// RFC 3463 enhanced status code.
    enhanced_code: Option<String>,
    /// Why not delivered.
    category: Option<&'static str>,
    /// The reply text, or our reason.
    response: &'a str,
    /// The MX host that answered.
    mx_host: Option<&'a str>,
    /// Its address.
    mx_ip: Option<IpAddr>,
    /// The local address the session left from.
    source_ip: Option<IpAddr>,
    /// TLS version of the session.
    tls: Option<&'a str>,
    /// The TLS policy the attempt ran under.
    tls_policy: &'static str,
    /// Message-ID of the message sent.
    message_id: Option<&'a str>,
}

/// A `provider` line.
#[derive(Serialize)]
struct ProviderLine<'a> {
    /// [`SCHEMA_VERSION`].
    v: u32,
    /// `provider`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// When the gate changed.
    time: String,
    /// The provider (or site) name.
    provider: &'a str,
    /// The gate's label (`provider@source-ip` for one address's gate).
    gate: &'a str,
    /// A known provider (else a site).
    known: bool,
    /// What changed: see [`describe`].
    change: &'static str,
    /// With `slowed`: messages per second now.
    rate: Option<f64>,
    /// With a lowered limit: the new one.
    limit: Option<usize>,
    /// With `suspended`: when it ends.
    until: Option<String>,
    /// The reply that caused it.
    reply: Option<&'a str>,
}

/// The `summary` line.
#[derive(Serialize)]
struct SummaryLine {
    /// [`SCHEMA_VERSION`].
    v: u32,
    /// `summary`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// When the run ended.
    time: String,
    /// Rows in the results.
    rows: usize,
    /// Rows delivered.
    delivered: usize,
    /// Rows bounced.
    bounced: usize,
    /// Rows deferred.
    deferred: usize,
    /// Rows invalid.
    invalid: usize,
    /// Rows duplicate.
    duplicate: usize,
    /// Rows suppressed.
    suppressed: usize,
    /// Delivered by this run (not an earlier one).
    delivered_now: usize,
    /// SMTP sessions opened.
    connections: usize,
    /// Wall-clock seconds of the run.
    elapsed_s: f64,
    /// Every row to deliver was delivered (exit 0 unless interrupted).
    all_delivered: bool,
    /// Stopped by a signal (or a journal failure).
    interrupted: bool,
}

/// The `change` field's name for a [`GateChange`], and its number fields.
fn describe(c: &GateChange) -> (&'static str, Option<f64>, Option<usize>, Option<SystemTime>) {
    match c {
        GateChange::Slowed { rate } => ("slowed", Some(*rate), None, None),
        GateChange::Suspended { until } => ("suspended", None, None, Some(*until)),
        GateChange::ConnectionsLowered { to } => ("connections-lowered", None, Some(*to), None),
        GateChange::PerConnectionLowered { to } => {
            ("messages-per-connection-lowered", None, Some(*to), None)
        }
        GateChange::Resumed => ("resumed", None, None, None),
    }
}

/// The writing thread and the queue to it.
struct LineWriter {
    /// What is written to, for messages.
    target: String,
    /// Lines to write, bounded.
    tx: SyncSender<Vec<u8>>,
    /// The writing thread; its result is the first write error.
    thread: JoinHandle<std::io::Result<()>>,
}

impl LineWriter {
    fn start(target: &Target) -> Result<Self, EventsError> {
        let io = |source| EventsError::Io {
            target: target.to_string(),
            source,
        };
        let out: Box<dyn Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(p) => Box::new(std::fs::File::create(p).map_err(io)?),
        };
        let (tx, rx) = sync_channel::<Vec<u8>>(QUEUE_LINES);
        let thread = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || write_lines(out, &rx))
            .map_err(io)?;
        Ok(Self {
            target: target.to_string(),
            tx,
            thread,
        })
    }

    /// Queues a line; `false` once the writer has stopped (a write failed).
    fn send(&self, line: Vec<u8>) -> bool {
        self.tx.send(line).is_ok()
    }

    /// Waits until everything queued is written.
    fn finish(self) -> Result<(), EventsError> {
        drop(self.tx);
        let result = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the events writer panicked")));
        result.map_err(|source| EventsError::Io {
            target: self.target,
            source,
        })
    }
}

/// The writer thread: writes lines as they come, flushing whenever the queue is empty.
fn write_lines(out: Box<dyn Write + Send>, rx: &Receiver<Vec<u8>>) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = rx.recv() {
        out.write_all(&line)?;
        while let Ok(line) = rx.try_recv() {
            out.write_all(&line)?;
        }
        out.flush()?;
    }
    out.flush()
}

/// A run's event stream: serializes the engine's events (when `--events` is given) and keeps
/// the [`Timeline`] (always: `--report` needs it).
pub struct EventStream<'a> {
    /// The rows, for row numbers and addresses.
    list: &'a RecipientList,
    /// Domain → provider.
    provider_of: &'a HashMap<String, Arc<str>>,
    /// `--events`: where lines go; none when not asked for (or after a failure).
    writer: Option<LineWriter>,
    /// The first write failure (the writer stops there; the run goes on).
    error: Option<EventsError>,
    /// What the report's timeline gets.
    timeline: Timeline,
}

impl<'a> EventStream<'a> {
    /// A stream to `target` (none: only the timeline is kept) about the rows of `list`, whose
    /// domains' providers are `provider_of`.
    pub fn open(
        target: Option<&Target>,
        list: &'a RecipientList,
        provider_of: &'a HashMap<String, Arc<str>>,
    ) -> Result<Self, EventsError> {
        Ok(Self {
            list,
            provider_of,
            writer: target.map(LineWriter::start).transpose()?,
            error: None,
            timeline: Timeline::default(),
        })
    }

    /// One engine event: an attempt's outcome (retried or final) or a gate's state change.
    pub fn event(&mut self, ev: &Event) {
        match ev {
            Event::Retrying { row, outcome } => self.attempt(*row, outcome, false),
            Event::Final { row, outcome, .. } => self.attempt(*row, outcome, true),
            Event::Gate {
                gate,
                provider,
                known,
                change,
                reply,
                at,
            } => {
                let (name, rate, limit, until) = describe(change);
                self.write(&ProviderLine {
                    v: SCHEMA_VERSION,
                    kind: "provider",
                    time: format_time(*at),
                    provider,
                    gate,
                    known: *known,
                    change: name,
                    rate,
                    limit,
                    until: until.map(format_time),
                    reply: reply.as_deref(),
                });
                self.timeline.changed(Change {
                    at: *at,
                    provider: provider.to_string(),
                    gate: gate.clone(),
                    change: change.clone(),
                    reply: reply.clone(),
                });
            }
            Event::Connected { .. } | Event::DialectFallback { .. } => {}
        }
    }

    fn attempt(&mut self, i: usize, o: &Outcome, last: bool) {
        let category = category_of(o);
        let throttled = category == Some(Category::Throttled);
        if self.writer.is_none() && !throttled {
            return;
        }
        let row = self.list.row(i);
        let domain = row_domain(&row);
        let provider = self.provider_of.get(&domain).map(|p| &**p);
        let at = o.finished_at.unwrap_or_else(crate::outcome::now);
        if throttled {
            let mx = o.mx_host.as_deref().unwrap_or_default();
            self.timeline
                .throttled(at, group_of(provider.unwrap_or_default(), mx));
        }
        self.write(&AttemptLine {
            v: SCHEMA_VERSION,
            kind: "attempt",
            time: format_time(at),
            row: row.row,
            address: &row.email,
            domain: &domain,
            provider,
            status: o.status.as_str(),
            last,
            attempt: o.attempts,
            step: o.step.as_str(),
            code: o.code,
            enhanced_code: o.enhanced.map(|e| e.to_string()),
            category: category.map(Category::as_str),
            response: &o.response,
            mx_host: o.mx_host.as_deref(),
            mx_ip: o.mx_ip,
            source_ip: o.source_ip,
            tls: o.tls.as_deref(),
            tls_policy: o.tls_policy.as_str(),
            message_id: o.message_id.as_deref(),
        });
    }

    /// Serializes one line and queues it for the writer.
    fn write(&mut self, line: &impl Serialize) {
        let Some(w) = &self.writer else { return };
        let mut bytes = Vec::with_capacity(512);
        // Plain strings and numbers: serializing into a Vec cannot fail.
        if serde_json::to_writer(&mut bytes, line).is_err() {
            return;
        }
        bytes.push(b'\n');
        if !w.send(bytes) {
            self.stop();
        }
    }

    /// The writer failed: keep its error, write nothing more.
    fn stop(&mut self) {
        if let Some(w) = self.writer.take()
            && let Err(e) = w.finish()
        {
            self.error.get_or_insert(e);
        }
    }

    /// Writes the `summary` line and waits until every line is written; returns the timeline,
    /// and the first write error (the run itself is not affected by one).
    pub fn finish(
        mut self,
        summary: &Summary,
        interrupted: bool,
    ) -> (Timeline, Option<EventsError>) {
        let count = |s| summary.count(s);
        self.write(&SummaryLine {
            v: SCHEMA_VERSION,
            kind: "summary",
            time: format_time(crate::outcome::now()),
            rows: summary.counts.values().sum(),
            delivered: count(Status::Delivered),
            bounced: count(Status::Bounced),
            deferred: count(Status::Deferred),
            invalid: count(Status::Invalid),
            duplicate: count(Status::Duplicate),
            suppressed: count(Status::Suppressed),
            delivered_now: summary.delivered_now,
            connections: summary.connections,
            elapsed_s: summary.elapsed.as_secs_f64(),
            all_delivered: summary.all_delivered(),
            interrupted,
        });
        if let Some(w) = self.writer.take()
            && let Err(e) = w.finish()
        {
            self.error.get_or_insert(e);
        }
        (self.timeline, self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Step;
    use crate::recipients::ListOptions;
    use crate::smtp::{EnhancedCode, Phase};
    use std::path::Path;
    use std::time::Duration;

    fn list() -> RecipientList {
        RecipientList::from_reader(
            "email,name\nann@g.test,Ann\n<b>@x.test,B\n".as_bytes(),
            Path::new("l.csv"),
            &ListOptions::default(),
        )
        .unwrap()
    }

    fn throttle(at: SystemTime) -> Outcome {
        let mut o = Outcome::local(Status::Deferred, Step::Smtp(Phase::MailFrom), "");
        o.code = Some(421);
        o.enhanced = Some(EnhancedCode::new(4, 7, 0));
        o.response = "[TSS04] Messages temporarily deferred due to unexpected volume".into();
        o.mx_host = Some("mx.g.test".into());
        o.finished_at = Some(at);
        o
    }

    #[test]
    fn every_line_is_versioned_json_and_the_file_reads_back_as_the_same_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let list = list();
        let providers: HashMap<String, Arc<str>> = [("g.test".to_string(), "yahoo".into())].into();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_357_400);
        let mut stream =
            EventStream::open(Some(&Target::File(path.clone())), &list, &providers).unwrap();
        stream.event(&Event::Retrying {
            row: 0,
            outcome: throttle(t0),
        });
        stream.event(&Event::Gate {
            gate: "yahoo".into(),
            provider: "yahoo".into(),
            known: true,
            change: GateChange::Suspended {
                until: t0 + Duration::from_secs(7200),
            },
            reply: Some("421 4.7.0 [TSS04] Messages temporarily deferred".into()),
            at: t0,
        });
        let mut delivered = Outcome::local(Status::Delivered, Step::Smtp(Phase::DataEnd), "ok");
        delivered.finished_at = Some(t0 + Duration::from_secs(7201));
        delivered.attempts = 1;
        stream.event(&Event::Final {
            row: 0,
            outcome: delivered,
            at: None,
        });
        let mut summary = Summary::default();
        summary.counts.insert(Status::Delivered, 1);
        summary.counts.insert(Status::Invalid, 1);
        let (timeline, error) = stream.finish(&summary, false);
        assert!(error.is_none());
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["attempt", "provider", "attempt", "summary"]);
        assert!(lines.iter().all(|l| l["v"] == SCHEMA_VERSION));
        let first = &lines[0];
        assert_eq!(first["row"], 1);
        assert_eq!(first["address"], "ann@g.test");
        assert_eq!(first["provider"], "yahoo");
        assert_eq!(first["category"], "throttled");
        assert_eq!(first["final"], false);
        assert_eq!(first["time"], "2026-03-01T09:30:00.000Z");
        assert_eq!(lines[1]["change"], "suspended");
        assert_eq!(lines[1]["until"], "2026-03-01T11:30:00.000Z");
        assert_eq!(
            (lines[2]["status"].as_str(), lines[2]["final"].as_bool()),
            (Some("delivered"), Some(true))
        );
        assert_eq!(
            (lines[3]["delivered"].as_u64(), lines[3]["invalid"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(timeline.throttles.total(), 1);
        assert_eq!(timeline.changes.len(), 1);
        let read = Timeline::read(text.as_bytes()).unwrap();
        assert_eq!(
            read, timeline,
            "the file tells the report what the run knew"
        );
        // Other output mixed in (a log collector's capture) is skipped, not fatal.
        let mixed = format!("progress: 1/2 rows\n{text}not json\n");
        let read = Timeline::read(mixed.as_bytes()).unwrap();
        assert_eq!((read.skipped_lines, read.changes.len()), (2, 1));
    }

    #[test]
    fn without_a_target_only_the_timeline_is_kept() {
        let list = list();
        let providers = HashMap::new();
        let mut stream = EventStream::open(None, &list, &providers).unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(60);
        stream.event(&Event::Retrying {
            row: 1,
            outcome: throttle(t0),
        });
        let (timeline, error) = stream.finish(&Summary::default(), false);
        assert!(error.is_none());
        let cells: Vec<_> = timeline.throttles.iter().collect();
        assert_eq!(
            cells,
            [(60, "mx.g.test", 1)],
            "a site is named by its MX host"
        );
    }

    #[test]
    fn time_counts_coarsen_instead_of_growing_without_bound() {
        let mut c = TimeCounts::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(3600);
        for s in 0..(MAX_CELLS as u64 + 10) {
            c.add(t0 + Duration::from_secs(s), "g", 1);
        }
        assert_eq!(c.resolution(), 60, "one cell per second would be too many");
        assert_eq!(c.total(), MAX_CELLS as u64 + 10, "nothing is lost");
        assert!(c.iter().count() <= MAX_CELLS);
        let mut d = TimeCounts::default();
        d.add(t0, "h", 2);
        d.merge(&c);
        assert_eq!(d.total(), c.total() + 2);
    }

    #[test]
    fn a_write_failure_is_reported_and_the_run_goes_on() {
        let list = list();
        let providers = HashMap::new();
        // /dev/full: every write fails with ENOSPC.
        let target = Target::File("/dev/full".into());
        let mut stream = EventStream::open(Some(&target), &list, &providers).unwrap();
        for _ in 0..3 {
            stream.event(&Event::Final {
                row: 0,
                outcome: throttle(SystemTime::UNIX_EPOCH),
                at: None,
            });
        }
        let (timeline, error) = stream.finish(&Summary::default(), false);
        assert!(matches!(error, Some(EventsError::Io { .. })), "{error:?}");
        assert_eq!(timeline.throttles.total(), 3, "the timeline is still kept");
    }
}
