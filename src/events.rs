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
/// (minute, provider) cells of throttling replies kept for the timeline; later ones are only
/// counted.
pub const MAX_THROTTLE_CELLS: usize = 100_000;

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
    /// final) per minute since the Unix epoch and group ([`group_of`]).
    pub throttles: BTreeMap<(u64, String), u32>,
    /// Throttling replies beyond [`MAX_THROTTLE_CELLS`] cells, counted only.
    pub throttles_left_out: u64,
    /// The providers' state changes in the order they happened, at most [`MAX_CHANGES`].
    pub changes: Vec<Change>,
    /// State changes beyond [`MAX_CHANGES`], counted only.
    pub changes_left_out: usize,
    /// Lines of an events file that were not events of this schema version (skipped).
    pub skipped_lines: usize,
}

impl Timeline {
    fn throttled(&mut self, at: SystemTime, group: &str) {
        let minute = minute_of(at);
        let key = (minute, group.to_string());
        if let Some(n) = self.throttles.get_mut(&key) {
            *n += 1;
        } else if self.throttles.len() < MAX_THROTTLE_CELLS {
            self.throttles.insert(key, 1);
        } else {
            self.throttles_left_out += 1;
        }
    }

    fn changed(&mut self, change: Change) {
        if self.changes.len() < MAX_CHANGES {
            self.changes.push(change);
        } else {
            self.changes_left_out += 1;
        }
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

/// Minutes since the Unix epoch.
pub fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

/// Any line of the stream, for reading back: the fields the timeline uses.
#[derive(Deserialize)]
struct AnyLine {
    v: u32,
    #[serde(rename = "type")]
    kind: String,
    time: Option<String>,
    provider: Option<String>,
    mx_host: Option<String>,
    category: Option<String>,
    gate: Option<String>,
    change: Option<String>,
    rate: Option<f64>,
    limit: Option<usize>,
    until: Option<String>,
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
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    row: usize,
    address: &'a str,
    domain: &'a str,
    provider: Option<&'a str>,
    status: &'static str,
    #[serde(rename = "final")]
    last: bool,
    attempt: u32,
    step: &'static str,
    code: Option<u16>,
    enhanced_code: Option<String>,
    category: Option<&'static str>,
    response: &'a str,
    mx_host: Option<&'a str>,
    mx_ip: Option<IpAddr>,
    source_ip: Option<IpAddr>,
    tls: Option<&'a str>,
    tls_policy: &'static str,
    message_id: Option<&'a str>,
}

/// A `provider` line.
#[derive(Serialize)]
struct ProviderLine<'a> {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    provider: &'a str,
    gate: &'a str,
    known: bool,
    change: &'static str,
    rate: Option<f64>,
    limit: Option<usize>,
    until: Option<String>,
    reply: Option<&'a str>,
}

/// The `summary` line.
#[derive(Serialize)]
struct SummaryLine {
    v: u32,
    #[serde(rename = "type")]
    kind: &'static str,
    time: String,
    rows: usize,
    delivered: usize,
    bounced: usize,
    deferred: usize,
    invalid: usize,
    duplicate: usize,
    suppressed: usize,
    delivered_now: usize,
    connections: usize,
    elapsed_s: f64,
    all_delivered: bool,
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
    target: String,
    tx: SyncSender<Vec<u8>>,
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
    list: &'a RecipientList,
    provider_of: &'a HashMap<String, Arc<str>>,
    writer: Option<LineWriter>,
    /// The first write failure (the writer stops there; the run goes on).
    error: Option<EventsError>,
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
            Event::Final { row, outcome } => self.attempt(*row, outcome, true),
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
