//! The campaign report and the event stream of real runs on loopback, the report loaded in a
//! real browser (headless Chromium): it loads offline with no console message and no request
//! for anything outside the file, its totals are the results CSV's, every chart is there, its
//! scripts ran (sortable, paginated tables), and hostile replies and list values are text.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::support::browser::{self, Loaded};
use crate::support::provider_sim::{ProviderSim, SimConfig};
use crate::support::*;
use mailmerge::campaign_report::{self, ReportOptions};
use mailmerge::events::Target;
use mailmerge::provider::rules::parse_rule;
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::receiver::{ReceiverConfig, Rule, magic_script};

/// A reply that is markup, a script and a spreadsheet formula at once.
const HOSTILE: &str = "=HYPERLINK(\"http://x.test/\",\"y\") <script>alert(1)</script> \
                       <img src=x onerror=alert(2)>";

/// Accepts like the sandbox, but refuses `evil@` with [`HOSTILE`].
fn hostile_mx() -> ReceiverConfig {
    let magic = magic_script();
    ReceiverConfig {
        script: Arc::new(move |rcpt: &str, seen| {
            if rcpt.starts_with("evil@") {
                Rule::Rcpt(550, HOSTILE.into())
            } else {
                magic(rcpt, seen)
            }
        }),
        ..ReceiverConfig::default()
    }
}

/// 30 domains on one MX (more rows than a page of the domain table), a hostile MX, Apple's
/// MX simulated with a throttling reply its backoff rule suspends it for, and an invalid row
/// whose "domain" is markup.
fn list() -> String {
    let mut csv = String::from("email,name\n");
    for i in 0..30 {
        csv.push_str(&format!("user{i}@d{i}.test,User {i}\n"));
    }
    csv.push_str("reject-a@d0.test,A\ngreylist-b@d1.test,B\nevil@evil.test,=cmd|' /C calc'!A0\n");
    for i in 0..4 {
        csv.push_str(&format!("fan{i}@icloud.test,Fan {i}\n"));
    }
    csv.push_str("x@<b onmouseover=alert(3)>.test,X\n");
    csv
}

/// Runs the campaign with `--events` into the job's folder; returns the job and the report
/// written as `run --report` writes it.
async fn campaign() -> (Job, std::path::PathBuf) {
    let mut z = zone();
    for i in 0..30 {
        z.mx(&format!("d{i}.test"), 10, "mx.example.test");
    }
    z.addr("mx.example.test", loopback(2))
        .mx("evil.test", 10, "mx.evil.test")
        .addr("mx.evil.test", loopback(3))
        .mx("icloud.test", 10, "mx01.mail.icloud.com")
        .addr("mx01.mail.icloud.com", loopback(8));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default()), (3, hostile_mx())]).await;
    let apple = SimConfig {
        script: Some((
            1,
            "421 4.7.0 [HCM1] Message rejected due to unexpected volume".into(),
        )),
        ..SimConfig::new("apple")
    };
    let _sim = ProviderSim::start(loopback(8), mxs.port, apple)
        .await
        .expect("simulator");
    let job = Job::new(&list(), TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.delivery.deadline = Duration::from_secs(20);
    cfg.delivery.backoff = vec![
        parse_rule(r#"pattern = "[HCM1]", provider = "apple", suspend = true, duration = "1s""#)
            .expect("rule"),
    ];
    cfg.events = Some(Target::File(job.path("events.jsonl")));
    let report = mailmerge::run(cfg).await.expect("run");
    let html = campaign_report::default_path(&job.results);
    campaign_report::write_report(
        std::slice::from_ref(&job.results),
        Some(&report.timeline),
        &html,
        &ReportOptions::default(),
    )
    .expect("report");
    (job, html)
}

fn load(browser: std::path::PathBuf, page: &Path) -> impl std::future::Future<Output = Loaded> {
    let page = page.to_path_buf();
    async move {
        tokio::task::spawn_blocking(move || browser::load(&browser, &page))
            .await
            .expect("browser")
    }
}

/// Rows per status in a results CSV.
fn counts(rows: &[HashMap<String, String>]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for r in rows {
        *n.entry(r["status"].clone()).or_default() += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_of_a_real_run_loads_offline_and_shows_the_csv_with_every_chart() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let (job, html) = campaign().await;
    let page = load(chromium, &html).await;
    assert!(page.console.is_empty(), "console: {:#?}", page.console);
    assert!(
        page.outside.is_empty(),
        "outside requests: {:?}",
        page.outside
    );
    let dom = &page.dom;

    let rows = read_results(&job.results);
    let n = counts(&rows);
    for status in [
        "delivered",
        "bounced",
        "deferred",
        "invalid",
        "duplicate",
        "suppressed",
    ] {
        let expected = n.get(status).copied().unwrap_or(0);
        assert!(
            dom.contains(&format!("data-total=\"{status}\">{expected}<")),
            "{status}: {expected} in the CSV"
        );
    }
    assert!(dom.contains(&format!("data-total=\"rows\">{}<", rows.len())));
    assert_eq!(n["delivered"], 30 + 1 + 4, "{n:?}");
    assert!(dom.contains("data-exit=\"1\""));

    for id in [
        "statuses",
        "groups",
        "domains",
        "categories",
        "timeline",
        "tls",
    ] {
        let at = dom
            .find(&format!("data-chart=\"{id}\""))
            .unwrap_or_else(|| panic!("chart {id} missing"));
        let svg = &dom[at..at + dom[at..].find("</svg>").expect("svg closed")];
        assert!(svg.contains("<rect"), "chart {id} draws nothing");
    }

    // Hostile text is text: one script element (ours), no markup from a reply or the list.
    assert_eq!(dom.matches("<script").count(), 1);
    assert!(
        !dom.contains("<img") && !dom.contains("<b "),
        "markup leaked"
    );
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(
        dom.contains("'=HYPERLINK(\"http://x.test/\""),
        "the defused formula"
    );
    assert!(
        dom.contains("&lt;b onmouseover=alert(3)&gt;.test"),
        "the list's domain"
    );
    // No element points anywhere but into the page.
    for tag in tags(dom) {
        for attr in [" src=", " srcset=", " action=", " poster=", " xlink:href="] {
            assert!(!tag.contains(attr), "{tag}");
        }
        if let Some(at) = tag.find(" href=\"") {
            assert!(tag[at + 7..].starts_with('#'), "a link out: {tag}");
        }
    }

    // The script ran: the 31 domains are paginated, 25 rows shown.
    assert!(dom.contains(
        "<nav class=\"pager\" data-for=\"domain-table\" aria-label=\"Pages of the table\"><button"
    ));
    assert!(dom.contains("page 1 of 2"));
    let table = &dom[dom.find("id=\"domain-table\"").unwrap()..];
    let table = &table[..table.find("</table>").unwrap()];
    assert_eq!(
        table.matches("<tr hidden=\"\">").count(),
        rows_in(table) - 25
    );

    // The timeline knows what the results cannot: the provider's suspension, from the events.
    assert!(dom.contains("mx01.mail.icloud.com") || dom.contains("apple"));
    assert!(dom.contains("suspended until"), "the change table");
}

/// The start tags of serialized HTML (`<a href="#x">` → `a href="#x"`): text never holds a
/// raw `<`, so every `<` followed by a letter opens a tag.
fn tags(dom: &str) -> Vec<&str> {
    dom.split('<')
        .skip(1)
        .filter(|t| t.starts_with(|c: char| c.is_ascii_alphabetic()))
        .map(|t| &t[..t.find('>').unwrap_or(t.len())])
        .collect()
}

/// Body rows of a table's HTML.
fn rows_in(table: &str) -> usize {
    let body = &table[table.find("<tbody>").unwrap()..];
    body.matches("<tr").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_has_every_attempt_each_state_change_and_a_summary_matching_the_csv() {
    let (job, _) = campaign().await;
    let text = std::fs::read_to_string(job.path("events.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(lines.iter().all(|l| l["v"] == 1 && l["time"].is_string()));
    let rows = read_results(&job.results);
    // One final attempt event per row that went to an MX, with the CSV's outcome.
    let finals: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["type"] == "attempt" && l["final"] == true)
        .collect();
    let attempted: Vec<_> = rows.iter().filter(|r| r["attempts"] != "0").collect();
    assert_eq!(finals.len(), attempted.len());
    for r in attempted {
        let row: u64 = r["row"].parse().unwrap();
        let e = finals.iter().find(|e| e["row"] == row).expect("event");
        assert_eq!(e["address"], r["email"].as_str());
        assert_eq!(e["status"], r["status"].as_str());
        assert_eq!(e["code"].to_string(), r["code"], "row {row}");
        assert_eq!(e["time"], r["finished_at"].as_str(), "row {row}");
        assert_eq!(e["category"].as_str().unwrap_or_default(), r["category"]);
    }
    // The greylisted row's first try, retried, and Apple's throttling reply.
    let retried: Vec<_> = lines
        .iter()
        .filter(|l| l["type"] == "attempt" && l["final"] == false)
        .collect();
    assert!(retried.iter().any(|l| l["address"] == "greylist-b@d1.test"));
    assert!(
        retried
            .iter()
            .any(|l| l["provider"] == "apple" && l["category"] == "throttled")
    );
    // Apple's gate: suspended by the rule, then resumed.
    let changes: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "provider" && l["provider"] == "apple")
        .map(|l| l["change"].as_str().unwrap())
        .collect();
    assert_eq!(changes, ["suspended", "resumed"]);
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "summary");
    let n = counts(&rows);
    for status in ["delivered", "bounced", "invalid"] {
        assert_eq!(last[status], n[status] as u64, "{status}");
    }
    assert_eq!(last["rows"], rows.len() as u64);
}

#[test]
fn the_browser_check_itself_sees_console_errors_and_outside_requests() {
    let Some(chromium) = browser::chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("bad.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><p>x</p><img src=\"http://example.com/x.png\">\
         <script>console.error(\"boom\"); missing();</script>",
    )
    .unwrap();
    let loaded = browser::load(&chromium, &page);
    assert!(
        loaded.console.iter().any(|l| l.contains("boom"))
            && loaded.console.iter().any(|l| l.contains("missing")),
        "{:#?}",
        loaded.console
    );
    assert_eq!(loaded.outside, ["http://example.com/x.png"]);
}
