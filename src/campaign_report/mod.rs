//! The campaign report (`mailmerge report RESULTS.csv`, `run --report`): one self-contained
//! HTML file that answers "how did it go?" without a spreadsheet: totals by status and what
//! the exit code means, results by provider and by domain, why the rest was not delivered
//! (categories, with the commonest replies quoted), a timeline of deliveries with throttling
//! replies and provider suspensions marked, TLS, and the files a sharded campaign was merged
//! from.
//!
//! It reads the results CSV(s) in one streaming pass ([`tally`]), so a list of millions of rows
//! reports in seconds; the run's event stream adds what the CSV cannot know (throttling
//! replies that were retried, provider state changes: [`crate::events::Timeline`]). The page
//! is a Handlebars template (`page.hbs`, HTML-escaping every value: replies and list values
//! are untrusted) with charts as inline SVG ([`charts`]); it loads nothing from anywhere (its
//! Content-Security-Policy allows only its own inline style and script, by hash), so it opens
//! offline from a mail attachment or an artifact store, on a phone or on paper.

pub mod charts;
pub mod tally;
mod view;

use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::events::Timeline;
pub use tally::Tally;

/// The report cannot be made.
#[derive(Debug, Error)]
pub enum ReportError {
    /// A results file cannot be read as CSV.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the CSV reader said.
        #[source]
        source: csv::Error,
    },
    /// A file is not a mailmerge results CSV.
    #[error("{path}: not a mailmerge results CSV ({reason})")]
    NotResults {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An events file cannot be read.
    #[error("events {path}: {source}")]
    Events {
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A chart cannot be drawn.
    #[error(transparent)]
    Chart(#[from] charts::ChartError),
    /// The page template failed (a bug: the template and its data are ours).
    #[error("report template: {0}")]
    Template(String),
    /// The report cannot be written.
    #[error("cannot write report {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How much the report lists.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Domains (and provider/site groups) in the full tables at most, the ones with the most
    /// rows; the rest are summed up in one line (the page stays usable for any list).
    pub max_domains: usize,
    /// Bars in the provider and domain charts.
    pub top: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            max_domains: 500,
            top: 10,
        }
    }
}

/// What was written.
#[derive(Clone, Debug)]
pub struct Written {
    /// The HTML file.
    pub path: PathBuf,
    /// Result rows reported.
    pub rows: u64,
    /// Size of the file.
    pub bytes: u64,
}

/// `list.results.csv` → `list.results.html` beside it.
pub fn default_path(results: &Path) -> PathBuf {
    results.with_extension("html")
}

/// Reads an events file written by `run --events` (for `report --events`).
pub fn read_events(path: &Path) -> Result<Timeline, ReportError> {
    let io = |source| ReportError::Events {
        path: path.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    Timeline::read(std::io::BufReader::new(file)).map_err(io)
}

/// Reads `inputs` (one results CSV, or the shards' of one campaign) and writes the report to
/// `output`, through a temporary file renamed into place. `timeline`: what the run's events
/// add (none: the results alone).
pub fn write_report(
    inputs: &[PathBuf],
    timeline: Option<&Timeline>,
    output: &Path,
    opts: &ReportOptions,
) -> Result<Written, ReportError> {
    let tally = Tally::read(inputs)?;
    let html = render(&tally, timeline, opts)?;
    let io = |source| ReportError::Write {
        path: output.into(),
        source,
    };
    let tmp = output.with_extension("html.tmp");
    std::fs::write(&tmp, &html).map_err(io)?;
    std::fs::rename(&tmp, output).map_err(io)?;
    Ok(Written {
        path: output.into(),
        rows: tally.total.rows,
        bytes: html.len() as u64,
    })
}

/// The page for what `tally` counted.
pub fn render(
    tally: &Tally,
    timeline: Option<&Timeline>,
    opts: &ReportOptions,
) -> Result<String, ReportError> {
    let page = view::page(tally, timeline, opts, crate::outcome::now())?;
    view::render(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "row,email,domain,status,code,enhanced_code,response,mx_host,\
                          attempts,tls,step,category,provider,tls_policy,finished_at\n";

    fn report(body: &str, opts: &ReportOptions) -> String {
        let d = tempfile::tempdir().unwrap();
        let csv = d.path().join("r.results.csv");
        std::fs::write(&csv, format!("{HEADER}{body}")).unwrap();
        let out = default_path(&csv);
        let w = write_report(&[csv], None, &out, opts).unwrap();
        assert_eq!(w.path.file_name().unwrap(), "r.results.html");
        std::fs::read_to_string(out).unwrap()
    }

    #[test]
    fn untrusted_text_is_escaped_and_only_our_script_is_on_the_page() {
        let html = report(
            "1,evil@e.test,e.test,bounced,550,5.7.1,\"'=HYPERLINK(\"\"http://x.test\"\")<script>alert(1)</script><img src=x onerror=alert(2)>\",mx.e.test,1,TLSv1.3,rcpt,blocked,,opportunistic,2026-03-01T09:30:00.000Z\n\
             2,x@<b>.test,<b onmouseover=alert(3)>.test,invalid,,,bad,,0,none,input,invalid-input,,none,2026-03-01T09:30:00.000Z\n",
            &ReportOptions::default(),
        );
        assert_eq!(html.matches("<script").count(), 1, "ours alone");
        assert!(!html.contains("<img"), "no markup from a reply");
        assert!(!html.contains("<b "), "no markup from a domain");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "the reply as text"
        );
        assert!(
            html.contains("&#x27;&#x3D;HYPERLINK("),
            "the defused formula as text"
        );
        assert!(
            html.contains("&lt;b onmouseover&#x3D;alert(3)&gt;.test"),
            "the domain as text"
        );
        assert!(html.contains("Content-Security-Policy"));
        assert!(html.contains("data-exit=\"1\""));
        for id in [
            "statuses",
            "groups",
            "domains",
            "categories",
            "timeline",
            "tls",
        ] {
            assert!(html.contains(&format!("data-chart=\"{id}\"")), "chart {id}");
        }
    }

    #[test]
    fn a_long_domain_list_is_capped_and_paginated() {
        let body: String = (1..=40)
            .map(|i| {
                format!(
                    "{i},u@d{i}.test,d{i}.test,delivered,250,2.0.0,ok,mx.test,1,TLSv1.3,data-end,,,opportunistic,2026-03-01T09:30:00.000Z\n"
                )
            })
            .collect();
        let opts = ReportOptions {
            max_domains: 30,
            top: 5,
        };
        let html = report(&body, &opts);
        assert!(
            html.contains(
                "The 30 domains with the most rows are listed; the other 10 hold 10 rows"
            )
        );
        assert!(html.contains("id=\"domain-table\" class=\"sortable\" data-page-rows=\"25\""));
        assert!(html.contains("data-exit=\"0\""), "all delivered: exit 0");
        assert_eq!(html.matches(".test</th>").count(), 30);
    }

    #[test]
    fn results_without_finished_at_say_there_is_no_timeline() {
        let d = tempfile::tempdir().unwrap();
        let csv = d.path().join("old.csv");
        std::fs::write(
            &csv,
            "row,email,domain,status,mx_host,attempts\n1,a@x.test,x.test,delivered,mx.x.test,1\n",
        )
        .unwrap();
        let out = d.path().join("old.html");
        write_report(&[csv], None, &out, &ReportOptions::default()).unwrap();
        let html = std::fs::read_to_string(out).unwrap();
        assert!(
            html.contains("no finished_at column"),
            "no timeline chart: {html}"
        );
        assert!(!html.contains("data-chart=\"timeline\""));
    }
}
