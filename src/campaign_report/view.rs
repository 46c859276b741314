//! From counts to the page: the values the template shows (sorted, capped, formatted, rates
//! worked out), the charts drawn, and the template rendered with HTML escaping on.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use handlebars::Handlebars;
use serde::Serialize;

use super::charts::{self, Bar, PALETTE, TimelineData};
use super::tally::{Counts, Tally};
use super::{ReportError, ReportOptions};
use crate::delivery::GateChange;
use crate::events::{Change, TimeCounts, Timeline};
use crate::outcome::Status;

const TEMPLATE: &str = include_str!("page.hbs");
const GROUP_TABLE: &str = include_str!("group_table.hbs");
const STYLE: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");
/// Rows per page of the paginated tables (with scripts on; without, all are shown).
const PAGE_ROWS: usize = 25;
/// Groups drawn as their own series on the timeline; the rest are "other".
const TIMELINE_GROUPS: usize = 5;
/// At most this many time buckets: the bucket grows (1, 5, 15, 60 minutes, …) to fit.
const MAX_BUCKETS: u64 = 240;
/// State changes listed in the timeline's table (all are drawn).
const CHANGES_LISTED: usize = 200;

/// A number and how it is shown; `v` sorts the column.
#[derive(Serialize)]
pub(super) struct Cell {
    /// The value (sorting; -1 for none).
    v: f64,
    /// As shown.
    t: String,
}

fn count(n: u64) -> Cell {
    Cell {
        v: n as f64,
        t: charts::thousands(n as f64),
    }
}

/// `1 row`, `2 rows`: a count with its noun.
fn counted(n: u64, one: &str, many: &str) -> Cell {
    let noun = if n == 1 { one } else { many };
    Cell {
        v: n as f64,
        t: format!("{} {noun}", charts::thousands(n as f64)),
    }
}

/// `part / whole` as a percentage cell (`—` when `whole` is 0).
fn rate(part: u64, whole: u64) -> Cell {
    if whole == 0 {
        return Cell {
            v: -1.0,
            t: "—".into(),
        };
    }
    let p = part as f64 * 100.0 / whole as f64;
    Cell {
        v: p,
        t: format!("{p:.1}\u{a0}%"),
    }
}

/// The whole page.
#[derive(Serialize)]
pub(super) struct Page {
    /// The page's title.
    title: String,
    /// When the report was made.
    generated: String,
    /// The Content-Security-Policy.
    csp: String,
    /// The style sheet.
    style: &'static str,
    /// The script (sorting, pagination).
    script: &'static str,
    /// Result rows.
    total: Cell,
    /// The exit code a run with these results ends with.
    exit_code: &'static str,
    /// What it means.
    exit_meaning: String,
    /// The totals table.
    statuses: Vec<StatusRow>,
    /// The charts but the timeline.
    charts: Charts,
    /// The provider and site table.
    groups: Table,
    /// The domain table.
    domains: Table,
    /// Rows not delivered.
    not_delivered: Cell,
    /// Why, per category.
    categories: Vec<CategoryRow>,
    /// The timeline section.
    timeline: TimelineView,
    /// The TLS section.
    tls: TlsView,
    /// The results files read.
    sources: Vec<SourceRow>,
    /// More than one file.
    merged: bool,
    /// Warnings about the files (a missing shard, overlaps).
    source_notes: Vec<String>,
}

/// Every chart's SVG.
#[derive(Serialize)]
struct Charts {
    /// Rows by status.
    statuses: String,
    /// The largest providers and sites.
    groups: String,
    /// The largest domains.
    domains: String,
    /// Rows not delivered by category.
    categories: String,
    /// Rows that reached an MX by TLS version.
    tls: String,
}

#[derive(Serialize)]
struct StatusRow {
    /// The status.
    name: &'static str,
    /// Its rows.
    count: Cell,
    /// Of all rows.
    share: Cell,
    /// What it means.
    meaning: &'static str,
}

/// A sortable table of groups or domains.
#[derive(Serialize)]
struct Table {
    /// Its rows, largest first.
    rows: Vec<GroupRow>,
    /// Paged by the script.
    paginated: bool,
    /// Rows per page.
    page_rows: usize,
    /// What was left out.
    note: Option<String>,
}

#[derive(Serialize)]
struct GroupRow {
    /// Provider, site or domain.
    name: String,
    /// `provider`, `site` or empty.
    kind: &'static str,
    /// The numeric columns, in the table's order.
    cells: Vec<Cell>,
}

#[derive(Serialize)]
struct CategoryRow {
    /// The category.
    name: String,
    /// What it means.
    meaning: &'static str,
    /// Its rows.
    count: Cell,
    /// Of the rows not delivered.
    share: Cell,
    /// Its commonest replies.
    replies: Vec<ReplyRow>,
    /// The rest, counted.
    more: Option<String>,
}

#[derive(Serialize)]
struct ReplyRow {
    /// The reply.
    text: String,
    /// Rows that got it.
    count: Cell,
}

#[derive(Serialize)]
struct TimelineView {
    /// The chart, when the results have times.
    chart: Option<String>,
    /// First to last time.
    range: String,
    /// The y axis.
    unit: String,
    /// Where the marks come from.
    source: String,
    /// Throttling replies.
    throttles: Cell,
    /// Provider state changes listed.
    changes: Vec<ChangeRow>,
    /// Those not listed, counted.
    changes_more: Option<String>,
    /// Why there is no chart.
    missing: Option<String>,
}

#[derive(Serialize)]
struct ChangeRow {
    /// When.
    time: String,
    /// Which gate.
    gate: String,
    /// What changed.
    what: String,
    /// The reply that caused it.
    reply: String,
}

#[derive(Serialize)]
struct TlsView {
    /// Rows that reached an MX.
    sessions: Cell,
    /// Share of them over TLS.
    encrypted: Cell,
    /// Per TLS version.
    versions: Vec<Share>,
    /// Per TLS policy.
    policies: Vec<Share>,
}

/// A name, its rows and their share.
#[derive(Serialize)]
struct Share {
    /// What is counted.
    name: String,
    /// Rows.
    count: Cell,
    /// Of the whole.
    share: Cell,
}

#[derive(Serialize)]
struct SourceRow {
    /// The file.
    file: String,
    /// Its rows.
    rows: Cell,
}

const STATUS_MEANING: [(Status, &str); 6] = [
    (Status::Delivered, "an MX accepted the message"),
    (
        Status::Bounced,
        "refused for good (5yz, null MX, no such domain): never retried",
    ),
    (
        Status::Deferred,
        "not delivered yet (4yz, timeouts, the deadline, --limit): the next run of the same command sends it",
    ),
    (
        Status::Invalid,
        "cannot be sent: bad row or address, missing value or attachment",
    ),
    (
        Status::Duplicate,
        "an address already in an earlier row: sent once",
    ),
    (Status::Suppressed, "on the suppression list: not sent"),
];

fn status_color(s: Status) -> plotters::style::RGBColor {
    match s {
        Status::Delivered => charts::GREEN,
        Status::Bounced => charts::VERMILLION,
        Status::Deferred => charts::ORANGE,
        Status::Suppressed => charts::SKY,
        Status::Invalid | Status::Duplicate => charts::GREY,
    }
}

/// Builds the page's values.
pub(super) fn page(
    t: &Tally,
    timeline: Option<&Timeline>,
    opts: &ReportOptions,
    now: SystemTime,
) -> Result<Page, ReportError> {
    let (exit_code, exit_meaning) = exit(t);
    let (groups, domains) = (group_rows(t, opts), domain_rows(t, opts));
    Ok(Page {
        title: title(t),
        generated: clock(now, Clock::Full),
        csp: csp(),
        style: STYLE,
        script: SCRIPT,
        total: count(t.total.rows),
        exit_code,
        exit_meaning,
        statuses: status_rows(&t.total),
        charts: Charts {
            statuses: status_chart(&t.total)?,
            groups: stacked_chart("groups", "Rows by provider", &groups.rows, opts.top)?,
            domains: stacked_chart("domains", "Rows by domain", &domains.rows, opts.top)?,
            categories: category_chart(t)?,
            tls: tls_chart(t)?,
        },
        groups,
        domains,
        not_delivered: counted(not_delivered(t), "row was", "rows were"),
        categories: category_rows(t),
        timeline: timeline_view(t, timeline)?,
        tls: tls_view(t),
        merged: t.sources.len() > 1,
        sources: t
            .sources
            .iter()
            .map(|s| SourceRow {
                file: s.path.display().to_string(),
                rows: count(s.rows),
            })
            .collect(),
        source_notes: source_notes(t),
    })
}

fn title(t: &Tally) -> String {
    match &t.sources[..] {
        [one] => format!(
            "mailmerge report: {}",
            one.path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ),
        more => format!("mailmerge report: {} results files", more.len()),
    }
}

/// The exit code a run with these results ends with, and what it means.
fn exit(t: &Tally) -> (&'static str, String) {
    if t.interrupted > 0 {
        return (
            "130",
            "the run was interrupted (130 on SIGINT, 143 on SIGTERM) after writing these \
             results: its unsent rows are deferred, and running the same command again sends \
             them"
                .into(),
        );
    }
    let c = &t.total;
    let open = c.get(Status::Bounced) + c.get(Status::Deferred) + c.get(Status::Invalid);
    if open == 0 {
        return ("0", "every recipient was delivered".into());
    }
    let deferred = c.get(Status::Deferred);
    let again = if deferred > 0 {
        format!(
            "running the same command again sends the {} deferred row(s); ",
            charts::thousands(deferred as f64)
        )
    } else {
        String::new()
    };
    (
        "1",
        format!(
            "{} row(s) were not delivered (see below): {again}bounced and invalid rows are not \
             sent again (fix an invalid row and it is)",
            charts::thousands(open as f64),
        ),
    )
}

fn status_rows(c: &Counts) -> Vec<StatusRow> {
    STATUS_MEANING
        .iter()
        .map(|(s, meaning)| StatusRow {
            name: s.as_str(),
            count: count(c.get(*s)),
            share: rate(c.get(*s), c.rows),
            meaning,
        })
        .collect()
}

fn status_chart(c: &Counts) -> Result<String, ReportError> {
    let bars: Vec<Bar> = Status::ALL
        .iter()
        .map(|s| Bar {
            label: s.as_str().into(),
            parts: vec![(c.get(*s) as f64, status_color(*s))],
        })
        .collect();
    Ok(charts::bars("statuses", "Rows by status", &bars, &[])?)
}

/// The columns of the provider and domain tables, in order.
fn group_cells(c: &Counts) -> Vec<Cell> {
    let other = c.get(Status::Invalid) + c.get(Status::Duplicate);
    vec![
        count(c.rows),
        count(c.sent),
        count(c.get(Status::Delivered)),
        count(c.get(Status::Bounced)),
        count(c.get(Status::Deferred)),
        count(c.get(Status::Suppressed)),
        count(other),
        rate(c.get(Status::Delivered), c.to_deliver()),
        rate(c.get(Status::Bounced), c.to_deliver()),
        rate(c.get(Status::Deferred), c.to_deliver()),
    ]
}

/// The largest `max` of `items` by rows (then name), and a note on the rest.
fn capped<'a>(
    items: impl Iterator<Item = (&'a String, &'a Counts, &'static str)>,
    max: usize,
    (what, unnamed): (&str, &str),
) -> Table {
    let mut all: Vec<_> = items.collect();
    all.sort_by(|a, b| b.1.rows.cmp(&a.1.rows).then_with(|| a.0.cmp(b.0)));
    let rest: u64 = all.iter().skip(max).map(|x| x.1.rows).sum();
    let note = (all.len() > max).then(|| {
        format!(
            "The {max} {what} with the most rows are listed; the other {} hold {} rows (all \
             are in the results CSV).",
            charts::thousands((all.len() - max) as f64),
            charts::thousands(rest as f64)
        )
    });
    let rows: Vec<GroupRow> = all
        .into_iter()
        .take(max)
        .map(|(name, c, kind)| GroupRow {
            name: if name.is_empty() {
                unnamed.into()
            } else {
                name.clone()
            },
            kind,
            cells: group_cells(c),
        })
        .collect();
    Table {
        paginated: rows.len() > PAGE_ROWS,
        page_rows: PAGE_ROWS,
        rows,
        note,
    }
}

fn group_rows(t: &Tally, opts: &ReportOptions) -> Table {
    let items = t.groups.iter().map(|(name, (c, known))| {
        let kind = match (known, name.is_empty()) {
            (true, _) => "provider",
            (false, false) => "site",
            (false, true) => "",
        };
        (name, c, kind)
    });
    capped(
        items,
        opts.max_domains,
        ("providers and sites", "(no MX reached)"),
    )
}

fn domain_rows(t: &Tally, opts: &ReportOptions) -> Table {
    let items = t.domains.iter().map(|(name, c)| (name, c, ""));
    capped(items, opts.max_domains, ("domains", "(no domain)"))
}

/// Stacked bars of the first `top` rows of a table (already sorted by rows).
fn stacked_chart(
    id: &'static str,
    name: &str,
    rows: &[GroupRow],
    top: usize,
) -> Result<String, ReportError> {
    let parts = [
        ("delivered", charts::GREEN, 2),
        ("bounced", charts::VERMILLION, 3),
        ("deferred", charts::ORANGE, 4),
        ("suppressed", charts::SKY, 5),
        ("invalid, dup.", charts::GREY, 6),
    ];
    let bars: Vec<Bar> = rows
        .iter()
        .take(top)
        .map(|r| Bar {
            label: r.name.clone(),
            parts: parts.iter().map(|(_, c, i)| (r.cells[*i].v, *c)).collect(),
        })
        .collect();
    let legend: Vec<(&str, _)> = parts.iter().map(|(n, c, _)| (*n, *c)).collect();
    Ok(charts::bars(id, name, &bars, &legend)?)
}

fn not_delivered(t: &Tally) -> u64 {
    t.categories.values().map(|r| r.rows).sum()
}

fn category_meaning(name: &str) -> &'static str {
    match name {
        "bad-mailbox" => "the address does not exist or is disabled",
        "bad-domain" => "the domain does not exist, accepts no mail (null MX) or has no address",
        "mailbox-full" => "the mailbox is over its quota",
        "content-rejected" => "the message was refused as spam, for its content or a virus",
        "auth-failed" => "SPF, DKIM or DMARC did not pass: fix the sender domain",
        "blocked" => "the sending IP or domain is blocked (blocklist, reputation, policy)",
        "throttled" => "the provider asked to slow down: sent later or deferred",
        "tls" => "no TLS session could be made as the policy requires",
        "protocol" => "the SMTP conversation went wrong (not the recipient's fault)",
        "dns" => "the domain's DNS failed temporarily",
        "invalid-input" => "the row itself: bad address, missing value or attachment",
        _ => "a lost connection, a deadline, a server error",
    }
}

fn category_rows(t: &Tally) -> Vec<CategoryRow> {
    let total = not_delivered(t);
    let mut cats: Vec<_> = t.categories.iter().collect();
    cats.sort_by(|a, b| b.1.rows.cmp(&a.1.rows).then_with(|| a.0.cmp(b.0)));
    cats.into_iter()
        .map(|(name, r)| {
            let mut texts: Vec<_> = r.texts.iter().collect();
            texts.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
            let shown: u64 = texts.iter().take(3).map(|x| *x.1).sum();
            let more = (r.rows > shown).then(|| {
                format!(
                    "{} more row(s) with {} other repl{}",
                    charts::thousands((r.rows - shown) as f64),
                    charts::thousands((texts.len().saturating_sub(3)) as f64),
                    if texts.len() == 4 { "y" } else { "ies" }
                )
            });
            CategoryRow {
                name: name.clone(),
                meaning: category_meaning(name),
                count: counted(r.rows, "row", "rows"),
                share: rate(r.rows, total),
                replies: texts
                    .into_iter()
                    .take(3)
                    .map(|(text, n)| ReplyRow {
                        text: text.clone(),
                        count: count(*n),
                    })
                    .collect(),
                more,
            }
        })
        .collect()
}

fn category_chart(t: &Tally) -> Result<String, ReportError> {
    let mut cats: Vec<_> = t.categories.iter().collect();
    cats.sort_by(|a, b| b.1.rows.cmp(&a.1.rows).then_with(|| a.0.cmp(b.0)));
    let bars: Vec<Bar> = cats
        .iter()
        .map(|(name, r)| Bar {
            label: (*name).clone(),
            parts: vec![(r.rows as f64, charts::VERMILLION)],
        })
        .collect();
    Ok(charts::bars(
        "categories",
        "Rows not delivered, by category",
        &bars,
        &[],
    )?)
}

fn tls_view(t: &Tally) -> TlsView {
    let sessions: u64 = t.tls.values().sum();
    let encrypted = sessions - t.tls.get("none").copied().unwrap_or(0);
    let sorted = |m: &HashMap<String, u64>, whole: u64| {
        let mut v: Vec<_> = m.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        v.into_iter()
            .map(|(k, n)| Share {
                name: k.clone(),
                count: count(*n),
                share: rate(*n, whole),
            })
            .collect()
    };
    let attempted: u64 = t.policies.values().sum();
    TlsView {
        sessions: count(sessions),
        encrypted: rate(encrypted, sessions),
        versions: sorted(&t.tls, sessions),
        policies: sorted(&t.policies, attempted),
    }
}

fn tls_chart(t: &Tally) -> Result<String, ReportError> {
    let mut versions: Vec<_> = t.tls.iter().collect();
    versions.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let bars: Vec<Bar> = versions
        .into_iter()
        .map(|(v, n)| Bar {
            label: v.clone(),
            parts: vec![(
                *n as f64,
                if v == "none" {
                    charts::VERMILLION
                } else {
                    charts::GREEN
                },
            )],
        })
        .collect();
    Ok(charts::bars(
        "tls",
        "Rows that reached an MX, by TLS version",
        &bars,
        &[],
    )?)
}

fn source_notes(t: &Tally) -> Vec<String> {
    let mut notes = Vec::new();
    if t.repeated_rows > 0 {
        notes.push(format!(
            "{} row number(s) appear in more than one file: the files overlap (the same shard \
             twice?), and those rows are counted more than once.",
            charts::thousands(t.repeated_rows as f64)
        ));
    }
    let shards: Vec<(u32, u32)> = t.sources.iter().filter_map(|s| s.shard).collect();
    if let Some(&(_, n)) = shards.first() {
        let missing: Vec<String> = (0..n)
            .filter(|i| !shards.contains(&(*i, n)))
            .map(|i| i.to_string())
            .collect();
        if !missing.is_empty() {
            notes.push(format!(
                "Shard(s) {} of {n} are missing: this report covers only part of the campaign.",
                missing.join(", ")
            ));
        }
    }
    notes
}

/// A time as the page shows it, in UTC: `2026-03-01 09:30 UTC` ([`Clock::Full`]), `09:30`,
/// `09:30:05` or `2026-03-01`.
#[derive(Clone, Copy, PartialEq)]
enum Clock {
    Full,
    Minutes,
    Seconds,
    Date,
}

fn clock(t: SystemTime, how: Clock) -> String {
    let s = humantime::format_rfc3339_seconds(t).to_string();
    let part = |r: std::ops::Range<usize>| s.get(r).unwrap_or_default().to_string();
    match how {
        Clock::Full => format!("{} {} UTC", part(0..10), part(11..16)),
        Clock::Minutes => part(11..16),
        Clock::Seconds => part(11..19),
        Clock::Date => part(0..10),
    }
}

fn secs_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn at_secs(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(s)
}

/// Seconds per bucket: the smallest of the usual steps, no finer than the counts'
/// `resolution`, that needs at most [`MAX_BUCKETS`] buckets for `span` seconds.
fn bucket_secs(span: u64, resolution: u64) -> u64 {
    const STEPS: [u64; 12] = [
        1, 5, 15, 60, 300, 900, 3600, 10_800, 21_600, 43_200, 86_400, 604_800,
    ];
    STEPS
        .into_iter()
        .filter(|s| *s >= resolution)
        .find(|s| span.div_ceil(*s) <= MAX_BUCKETS)
        .unwrap_or(604_800 * span.div_ceil(604_800 * MAX_BUCKETS).max(1))
}

/// `deliveries per minute`, `… per 5 seconds`, `… per 6 hours`.
fn per(size: u64) -> String {
    let (n, unit) = match size {
        s if s % 86_400 == 0 => (s / 86_400, "day"),
        s if s % 3600 == 0 => (s / 3600, "hour"),
        s if s % 60 == 0 => (s / 60, "minute"),
        s => (s, "second"),
    };
    if n == 1 {
        format!("deliveries per {unit}")
    } else {
        format!("deliveries per {n} {unit}s")
    }
}

/// Where the timeline's marks come from: the run's events, or the results alone (and what
/// that leaves out).
fn source_note(from_events: bool) -> String {
    if from_events {
        "Throttling replies and provider state changes are from the run's event stream: every \
         throttling reply, including those whose row was delivered later."
            .into()
    } else {
        "Made from the results alone: throttling replies are marked only where they were a \
         row's final outcome (replies that were retried and provider suspensions are in the \
         run's event stream: `run --report`, or `report --events FILE` with the file of `run \
         --events FILE`)."
            .into()
    }
}

/// The timeline section: the chart when the results have times, and where its marks come
/// from.
fn timeline_view(t: &Tally, events: Option<&Timeline>) -> Result<TimelineView, ReportError> {
    let throttles = events.map_or(&t.throttled, |e| &e.throttles);
    let changes = events.map_or(&[][..], |e| &e.changes[..]);
    let mut view = TimelineView {
        chart: None,
        range: String::new(),
        unit: String::new(),
        source: source_note(events.is_some()),
        throttles: counted(throttles.total(), "throttling reply", "throttling replies"),
        changes: changes
            .iter()
            .take(CHANGES_LISTED)
            .map(change_row)
            .collect(),
        changes_more: (changes.len() > CHANGES_LISTED).then(|| {
            format!(
                "{} more state changes are in the event stream.",
                charts::thousands((changes.len() - CHANGES_LISTED) as f64)
            )
        }),
        missing: None,
    };
    let Some((first, last)) = t.span else {
        view.missing = Some(if t.has_times {
            "No row reached an MX: there is nothing to put on a timeline.".into()
        } else {
            "These results have no finished_at column (written by a mailmerge before it \
             existed): there is no timeline."
                .into()
        });
        return Ok(view);
    };
    let data = timeline_data(t, throttles, events, (secs_of(first), secs_of(last)));
    view.range = if secs_of(first) / 86_400 == secs_of(last) / 86_400 {
        let (day, from, to) = (
            clock(first, Clock::Date),
            clock(first, Clock::Seconds),
            clock(last, Clock::Seconds),
        );
        format!("{day} {from} – {to} UTC")
    } else {
        format!(
            "{} – {}",
            clock(first, Clock::Full),
            clock(last, Clock::Full)
        )
    };
    view.unit.clone_from(&data.unit);
    view.chart = Some(charts::timeline("Deliveries over time", &data)?);
    Ok(view)
}

fn change_row(c: &Change) -> ChangeRow {
    let what = match &c.change {
        GateChange::Slowed { rate } => {
            format!("slowed to {}", crate::provider::rules::show_rate(*rate))
        }
        GateChange::Suspended { until } => {
            format!("suspended until {}", clock(*until, Clock::Seconds))
        }
        GateChange::ConnectionsLowered { to } => format!("connections lowered to {to}"),
        GateChange::PerConnectionLowered { to } => {
            format!("messages per connection lowered to {to}")
        }
        GateChange::Resumed => "resumed".into(),
    };
    ChangeRow {
        time: humantime::format_rfc3339_seconds(c.at).to_string(),
        gate: c.gate.clone(),
        what,
        reply: c.reply.clone().unwrap_or_default(),
    }
}

/// The chart's values: buckets from the first to the last second, deliveries per bucket for
/// the busiest groups (the rest as "other"), throttles and state changes placed in buckets.
fn timeline_data(
    t: &Tally,
    throttled: &TimeCounts,
    events: Option<&Timeline>,
    (s0, s1): (u64, u64),
) -> TimelineData {
    let resolution = t.delivered.resolution().max(throttled.resolution());
    let size = bucket_secs(s1 - s0 + 1, resolution);
    let start = s0 - s0 % size;
    let n = ((s1 - start) / size + 1) as usize;
    let bucket = |s: u64| (s.saturating_sub(start) / size) as usize;
    let mut per_group: HashMap<&str, u64> = HashMap::new();
    for (_, g, v) in t.delivered.iter() {
        *per_group.entry(g).or_default() += u64::from(v);
    }
    let mut busiest: Vec<(&str, u64)> = per_group.into_iter().collect();
    busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let named: Vec<&str> = busiest.iter().take(TIMELINE_GROUPS).map(|g| g.0).collect();
    let mut series: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for (s, g, v) in t.delivered.iter() {
        let i = named.iter().position(|x| *x == g).unwrap_or(named.len());
        let values = series.entry(i).or_insert_with(|| vec![0; n]);
        if let Some(slot) = values.get_mut(bucket(s)) {
            *slot += v;
        }
    }
    let mut throttles = vec![0u32; n];
    for (s, _, v) in throttled.iter() {
        if let Some(slot) = throttles.get_mut(bucket(s)) {
            *slot += v;
        }
    }
    let (suspensions, changes) = change_marks(events, start, size, n);
    let label = match size {
        s if s < 60 => Clock::Seconds,
        s if s >= 86_400 => Clock::Date,
        _ if s1 - s0 >= 86_400 => Clock::Full,
        _ => Clock::Minutes,
    };
    TimelineData {
        buckets: (0..n as u64)
            .map(|i| clock(at_secs(start + i * size), label))
            .collect(),
        series: series
            .into_iter()
            .map(|(i, values)| {
                let name = named.get(i).map_or("other", |g| g);
                let name = if name.is_empty() { "(no MX)" } else { name };
                (name.to_string(), PALETTE[i.min(PALETTE.len() - 1)], values)
            })
            .collect(),
        throttles,
        suspensions,
        changes,
        unit: per(size),
    }
}

/// Suspensions (from, to) and other state changes, in bucket units from `start` (seconds).
fn change_marks(
    events: Option<&Timeline>,
    start: u64,
    size: u64,
    n: usize,
) -> (Vec<(f64, f64)>, Vec<f64>) {
    let origin = at_secs(start);
    let place = |t: SystemTime| {
        let secs = t.duration_since(origin).map_or(0.0, |d| d.as_secs_f64());
        (secs / size as f64).min(n as f64)
    };
    let (mut spans, mut points) = (Vec::new(), Vec::new());
    for c in events.map_or(&[][..], |e| &e.changes[..]) {
        match c.change {
            GateChange::Suspended { until } => spans.push((place(c.at), place(until))),
            GateChange::Resumed => {}
            _ => points.push(place(c.at)),
        }
    }
    (spans, points)
}

/// The page's Content-Security-Policy: nothing may load from anywhere; only our own style
/// sheet and script run, by hash (so an injected `<script>` or `onerror=` could not run even
/// if escaping failed).
fn csp() -> String {
    let hash = |s: &str| {
        let d = ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(d.as_ref())
    };
    format!(
        "default-src 'none'; style-src 'sha256-{}'; script-src 'sha256-{}'; base-uri 'none'; \
         form-action 'none'",
        hash(STYLE),
        hash(SCRIPT)
    )
}

/// The registry with the page template, built once. Strict: a value the template names that
/// the page lacks is an error, not an empty string.
fn registry() -> Result<&'static Handlebars<'static>, ReportError> {
    static REGISTRY: OnceLock<Result<Handlebars<'static>, String>> = OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let mut h = Handlebars::new();
            h.set_strict_mode(true);
            h.register_template_string("page", TEMPLATE)
                .map_err(|e| e.to_string())?;
            h.register_partial("group_table", GROUP_TABLE)
                .map_err(|e| e.to_string())?;
            Ok(h)
        })
        .as_ref()
        .map_err(|e| ReportError::Template(e.clone()))
}

/// The page as HTML.
pub(super) fn render(page: &Page) -> Result<String, ReportError> {
    registry()?
        .render("page", page)
        .map_err(|e| ReportError::Template(e.to_string()))
}
