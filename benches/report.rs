//! Report benchmark: `mailmerge report` on a big results CSV. Writes a results file of
//! `MAILMERGE_BENCH_N` rows (default 1,000,000) in the real column layout, shaped like a large
//! campaign (a long tail of 50,000 domains behind three big providers and many small sites,
//! replies that name their recipient, three hours of `finished_at`), then times
//! [`campaign_report::write_report`] on it and prints the time, the HTML file's size and the
//! process's peak RSS (the CSV is written as it is generated, so the peak is the report's).
//!
//! `cargo bench --bench report`; `MAILMERGE_BENCH_N=100000` for a quicker run.

use std::time::{Duration, Instant, SystemTime};

use mailmerge::campaign_report::{self, ReportOptions};
use mailmerge::outcome::format_time;
use mailmerge::report::COLUMNS;

/// Peak resident set size of this process (Linux), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// A small deterministic generator (no dependency, same file every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    /// 0..n, skewed towards 0 (a campaign's domains: a few big, a long tail).
    fn skewed(&mut self, n: u64) -> u64 {
        let a = self.next() % n;
        let b = self.next() % n;
        (a * b) / n
    }
}

/// One result row: (domain, status, code, enhanced, reply, mx, provider, category).
fn outcome(r: &mut Lcg, i: u64) -> [String; 8] {
    let d = r.skewed(50_000);
    let (domain, mx, provider) = match d {
        0..=2 => (
            "gmail.test".to_string(),
            "gmail-smtp-in.l.google.com",
            "google",
        ),
        3..=4 => (
            "outlook.test".to_string(),
            "outlook-com.olc.protection.outlook.com",
            "microsoft",
        ),
        5 => ("yahoo.test".to_string(), "mta5.am0.yahoodns.net", "yahoo"),
        _ => (format!("d{d}.example"), "", ""),
    };
    let mx = if mx.is_empty() {
        format!("mx{}.hosting{}.example", d % 7, d % 300)
    } else {
        mx.to_string()
    };
    let address = format!("user{i}@{domain}");
    let roll = r.next() % 1000;
    let (status, code, enhanced, reply, category) = match roll {
        0..=919 => (
            "delivered",
            "250",
            "2.0.0",
            format!("OK {} {i:x}si.{} - queued", 1_700_000_000 + i, i % 997),
            "",
        ),
        920..=949 => (
            "bounced",
            "550",
            "5.1.1",
            format!("<{address}>: Recipient address rejected: User unknown in virtual mailbox table"),
            "bad-mailbox",
        ),
        950..=969 => (
            "deferred",
            "421",
            "4.7.28",
            "Gmail has detected an unusual rate of unsolicited mail. To protect our users, mail has been temporarily rate limited".to_string(),
            "throttled",
        ),
        970..=979 => (
            "bounced",
            "554",
            "5.7.1",
            format!("Service unavailable; Client host [192.0.2.{}] blocked using zen.spamhaus.org", i % 250),
            "blocked",
        ),
        980..=989 => ("invalid", "", "", "no @ in address".to_string(), "invalid-input"),
        _ => ("suppressed", "", "", "hard bounce".to_string(), ""),
    };
    [
        domain,
        status.into(),
        code.into(),
        enhanced.into(),
        reply,
        mx,
        provider.into(),
        category.into(),
    ]
}

/// Writes the results CSV, row by row.
fn write_results(path: &std::path::Path, n: u64) {
    let mut w = csv::Writer::from_path(path).expect("results file");
    let mut header: Vec<&str> = COLUMNS.to_vec();
    header.extend(["name", "plan"]);
    w.write_record(&header).expect("header");
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_772_357_400);
    let mut r = Lcg(42);
    for i in 0..n {
        let [
            domain,
            status,
            code,
            enhanced,
            reply,
            mx,
            provider,
            category,
        ] = outcome(&mut r, i);
        let sent = matches!(status.as_str(), "delivered" | "bounced" | "deferred");
        let at = format_time(start + Duration::from_millis(i * 10_800_000 / n));
        let row = (i + 1).to_string();
        let email = format!("user{i}@{domain}");
        let (mx, tls, attempts) = if sent {
            (mx.as_str(), "TLSv1.3", "1")
        } else {
            ("", "none", "0")
        };
        let record = [
            &row,
            &email,
            &domain,
            &status,
            &code,
            &enhanced,
            &reply,
            mx,
            "192.0.2.1",
            "",
            attempts,
            "",
            tls,
            "rcpt",
            &category,
            &provider,
            "opportunistic",
            "",
            &at,
            "User",
            "Pro",
        ];
        w.write_record(record).expect("row");
    }
    w.flush().expect("flush");
}

fn main() {
    let n: u64 = std::env::var("MAILMERGE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("big.results.csv");
    write_results(&csv, n);
    let csv_mib = std::fs::metadata(&csv).map_or(0, |m| m.len()) as f64 / (1 << 20) as f64;
    let html = campaign_report::default_path(&csv);
    println!("mailmerge report on {n} result rows ({csv_mib:.0} MiB of CSV)");
    for run in 1..=3 {
        let t = Instant::now();
        let w = campaign_report::write_report(
            std::slice::from_ref(&csv),
            None,
            &html,
            &ReportOptions::default(),
        )
        .expect("report");
        println!(
            "run {run}: {:.2}s, {} rows, report {:.0} KiB, peak RSS {:.1} MiB",
            t.elapsed().as_secs_f64(),
            w.rows,
            w.bytes as f64 / 1024.0,
            peak_rss_mib()
        );
    }
}
