//! Bad and hostile input, end to end: broken CSV rows and files, template errors, missing
//! attachments, header/SMTP injection attempts from row data; and `mailmerge check` /
//! `--dry-run --out`, which must tell all of this before anything is sent.

use std::process::Command;

use crate::support::*;
use mailmerge::run;
use mailmerge::sandbox::dns::{DnsServer, loopback};
use mailmerge::sandbox::receiver::ReceiverConfig;

fn mailmerge() -> Command {
    crate::support::binary()
}

fn check_cmd(job: &Job, dns: &DnsServer, port: u16) -> Command {
    let mut c = mailmerge();
    c.arg("check")
        .arg(&job.csv)
        .arg(&job.template)
        .args(["--dns", &dns.addr().to_string()])
        .args(["--smtp-port", &port.to_string(), "--dns-timeout", "1s"])
        .args(["--connections-per-site", "2"]);
    c
}

const ATTACH_TEMPLATE: &str = "From: Sender <news@sender.test>\nTo: {{name}} <{{email}}>\nSubject: Your file {{file}}\nX-Ref: {{name}}\nAttachment: files/{{file}}\n\nHi {{name}}, your file is attached.\n";

fn two_site_zone() -> mailmerge::sandbox::dns::Zone {
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(2));
    z.mx("b.test", 10, "mx1.b.test")
        .mx("b.test", 20, "mx2.b.test")
        .addr("mx1.b.test", loopback(2))
        .addr("mx2.b.test", loopback(2));
    z.null_mx("nullmx.test");
    z
}

fn write_files(job: &Job, names: &[&str]) {
    let dir = job.path("files");
    std::fs::create_dir_all(&dir).unwrap();
    for n in names {
        std::fs::write(dir.join(n), format!("contents of {n}")).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_prints_the_plan_sends_nothing_and_exits_1_when_a_row_cannot_be_sent() {
    let dns = dns(two_site_zone()).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let csv = "email,name,file\n\
        a1@a.test,A1,one.txt\n\
        a2@a.test,A2,one.txt\n\
        a3@a.test,A3,missing.txt\n\
        b1@b.test,B1,two.txt\n\
        n@nullmx.test,N,one.txt\n\
        x@nxdomain.test,X,missing.txt\n\
        not-an-address,Y,one.txt\n\
        A1@a.test,Dup,one.txt\n\
        short@a.test\n";
    let job = Job::new(csv, ATTACH_TEMPLATE);
    write_files(&job, &["one.txt", "two.txt"]);
    let out = check_cmd(&job, &dns, mxs.port).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    for line in [
        "plan for 9 rows (nothing sent):",
        "      3  would be sent",
        // Lines 4, 8 and 10; line 7 also fails to render, but a run bounces it at DNS first
        // (counted there, its problem listed below): every row is counted once.
        "      3  invalid",
        "      1  duplicate (not sent)",
        "      1  null MX: would bounce",
        "      1  NXDOMAIN: would bounce",
        "sites: 2, estimated connections: 3",
        "mx.a.test: 2 message(s), 2 connection(s) via mx.a.test (pref 10)",
        "mx1.b.test,mx2.b.test: 1 message(s), 1 connection(s) via mx1.b.test (pref 10), mx2.b.test (pref 20)",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
    let counted: usize = stdout
        .lines()
        .take_while(|l| !l.starts_with("sites:"))
        .filter_map(|l| l.split_whitespace().next()?.parse::<usize>().ok())
        .sum();
    assert_eq!(counted, 9, "every row counted once:\n{stdout}");
    let csv_path = job.csv.display().to_string();
    for problem in [
        format!("{csv_path}:4: attachment "),
        // Rendered even though its domain fails in DNS: the missing file is reported too.
        format!("{csv_path}:7: attachment "),
        format!("{csv_path}:8: no @ in address"),
        format!("{csv_path}:10: 1 fields, the header has 3"),
    ] {
        assert!(
            stdout.contains(&problem),
            "missing {problem:?} in\n{stdout}"
        );
    }
    assert_eq!(mxs.total_connections(), 0, "check connects to no MX");
    assert!(!job.results.exists(), "check writes no results");
    assert!(!mailmerge::journal::path_for(&job.results).exists());

    // --dry-run --out: one .eml per message that would be sent.
    let out_dir = job.path("eml");
    let out = mailmerge()
        .arg("run")
        .arg(&job.csv)
        .arg(&job.template)
        .args(["--dns", &dns.addr().to_string(), "--dry-run", "--out"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    // Each message, and its preview beside it.
    assert_eq!(
        files,
        vec![
            "000001-a1@a.test.eml",
            "000001-a1@a.test.html",
            "000002-a2@a.test.eml",
            "000002-a2@a.test.html",
            "000004-b1@b.test.eml",
            "000004-b1@b.test.html"
        ]
    );
    let eml = std::fs::read_to_string(out_dir.join("000004-b1@b.test.eml")).unwrap();
    assert!(eml.contains("Subject: Your file two.txt\r\n"), "{eml}");
    assert!(eml.contains("multipart/mixed"), "{eml}");
    assert_eq!(mxs.total_connections(), 0);

    // A clean list passes.
    std::fs::write(&job.csv, "email,name,file\na1@a.test,A1,one.txt\n").unwrap();
    let out = check_cmd(&job, &dns, mxs.port).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn unusable_list_files_exit_2_naming_the_file_and_the_problem() {
    let cases: [(&[u8], &str); 4] = [
        (b"", "the file is empty"),
        (b"name,mail\nA,a@example.com\n", "no column named \"email\""),
        (
            b"na\xffme,email\nA,a@example.com\n",
            "line 1: bad header row",
        ),
        (b"\n\n", "the file is empty"),
    ];
    for (csv, expected) in cases {
        let job = Job::new("", TEMPLATE);
        std::fs::write(&job.csv, csv).unwrap();
        let out = mailmerge()
            .arg("check")
            .arg(&job.csv)
            .arg(&job.template)
            .args(["--dns", "127.0.0.1:9"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&job.csv.display().to_string()) && err.contains(expected),
            "{expected}: {err}"
        );
    }
}

#[test]
fn template_syntax_errors_exit_2_with_line_and_column_before_anything_is_sent() {
    let job = Job::new(
        "email,name\na@example.com,A\n",
        "From: s@example.com\nTo: {{email}}\nSubject: hi\n\nHello {{name}\n",
    );
    for sub in ["run", "check"] {
        let out = mailmerge()
            .arg(sub)
            .arg(&job.csv)
            .arg(&job.template)
            .args(["--dns", "127.0.0.1:9", "--quiet"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        let at = format!("{}:5:", job.template.display());
        assert!(err.contains(&at) && err.contains("syntax error"), "{err}");
        // line:column
        let rest = &err[err.find(&at).unwrap() + at.len()..];
        assert!(rest.starts_with(|c: char| c.is_ascii_digit()), "{err}");
        assert!(!job.results.exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rows_end_invalid_with_their_line_and_the_rest_is_delivered() {
    let dns = dns(two_site_zone()).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let mut csv = b"email,name,file\n".to_vec();
    csv.extend_from_slice(b"  spaced@a.test  ,Spaced,one.txt\n"); // line 2: trimmed, delivered
    csv.extend_from_slice(b"ragged@a.test,R\n"); // 3: ragged
    csv.extend_from_slice(b"too@a.test,T,one.txt,extra\n"); // 4: ragged
    csv.extend_from_slice(b"utf@a.test,\xff\xfe,one.txt\n"); // 5: invalid UTF-8
    csv.extend_from_slice(b"SPACED@A.TEST,Again,one.txt\n"); // 6: duplicate of row 1
    csv.extend_from_slice(b"a3@a.test,A3,missing.txt\n"); // 7: missing attachment
    csv.extend_from_slice(b"q@a.test,\"unclosed,one.txt\nz@a.test,Z,one.txt\n"); // 8: unclosed
    let job = Job::new("", ATTACH_TEMPLATE);
    std::fs::write(&job.csv, &csv).unwrap();
    write_files(&job, &["one.txt"]);
    run(job.config(&dns, mxs.port)).await.expect("run");
    let rows = read_results(&job.results);
    assert_eq!(rows.len(), 7, "one result row per input row");
    let expect = [
        ("spaced@a.test", "delivered", ""),
        (
            "ragged@a.test",
            "invalid",
            "line 3: 2 fields, the header has 3",
        ),
        (
            "too@a.test",
            "invalid",
            "line 4: 4 fields, the header has 3",
        ),
        (
            "utf@a.test",
            "invalid",
            "line 5: field \"name\" is not valid UTF-8",
        ),
        ("SPACED@A.TEST", "duplicate", "line 6: duplicate of row 1"),
        ("a3@a.test", "invalid", "line 7: attachment "),
        (
            "q@a.test",
            "invalid",
            "line 8: malformed CSV: a quoted field",
        ),
    ];
    for (r, (email, status, response)) in rows.iter().zip(expect) {
        assert_eq!((r["email"].as_str(), r["status"].as_str()), (email, status));
        assert!(r["response"].starts_with(response), "{r:?}");
    }
    let got = mxs.get(2).received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].rcpt_to, "spaced@a.test");
    let text = String::from_utf8_lossy(&got[0].data);
    assert!(text.contains("contents of one.txt") || text.contains("Y29udGVudHMgb2Ygb25lLnR4dA"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_rows_never_create_a_header_a_recipient_or_a_mime_part() {
    let dns = dns(two_site_zone()).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new(
        "",
        "From: Sender <news@sender.test>\nTo: {{name}} <{{email}}>\nSubject: Hi {{name}}\nX-Ref: {{ref}}\nAttachment: files/{{file}}\n\nHello {{name}}\n{{body}}\n",
    );
    write_files(&job, &["one.txt"]);
    let mut w = csv::Writer::from_path(&job.csv).unwrap();
    w.write_record(["email", "name", "ref", "file", "body"])
        .unwrap();
    let ok = |e: &str, n: &str, r: &str, f: &str, b: &str| [e, n, r, f, b].map(String::from);
    let rows = [
        // To display name / Subject: CRLF, bare LF, bare CR, NEL, other controls.
        ok(
            "crlf@a.test",
            "Eve\r\nBcc: victim@b.test",
            "r",
            "one.txt",
            "x",
        ),
        ok("lf@a.test", "Eve\nX-Injected: yes", "r", "one.txt", "x"),
        ok("cr@a.test", "Eve\rX-Injected: yes", "r", "one.txt", "x"),
        ok(
            "nel@a.test",
            "Eve\u{85}X-Injected: yes",
            "r",
            "one.txt",
            "x",
        ),
        ok("nul@a.test", "Eve\0", "r", "one.txt", "x"),
        // Custom header: a MIME part boundary.
        ok(
            "ref@a.test",
            "Rae",
            "x\r\nContent-Type: multipart/mixed; boundary=evil",
            "one.txt",
            "x",
        ),
        // Attachment path.
        ok(
            "att@a.test",
            "Al",
            "r",
            "one.txt\r\nContent-Type: text/html",
            "x",
        ),
        // The address column itself.
        ok(
            "victim@b.test\r\nRCPT TO:<x@b.test>",
            "V",
            "r",
            "one.txt",
            "x",
        ),
        ok("a@a.test>\r\nRCPT TO:<b@b.test", "V", "r", "one.txt", "x"),
        ok("x@a.test, y@b.test", "V", "r", "one.txt", "x"),
        ok("tab\t@a.test", "V", "r", "one.txt", "x"),
        // A display name that looks like more addresses: still one SMTP recipient.
        ok("mal@a.test", "Boss <boss@b.test>, x", "r", "one.txt", "x"),
        ok(
            "quote@a.test",
            "Boss <boss@b.test>, \"x",
            "r",
            "one.txt",
            "x",
        ),
        // SMTP smuggling through the body: dot lines and bare LF/CR variants.
        ok(
            "body@a.test",
            "Bo",
            "r",
            "one.txt",
            "a\r\n.\r\nMAIL FROM:<evil@b.test>\r\nRCPT TO:<victim@b.test>\r\nDATA\r\nevil\n.\r\nb\r.\rc",
        ),
        // Tabs are allowed in header values.
        ok("tab@a.test", "Tab\tName", "r", "one.txt", "x"),
    ];
    for r in &rows {
        w.write_record(r).unwrap();
    }
    w.flush().unwrap();
    drop(w);
    run(job.config(&dns, mxs.port)).await.expect("run");
    let results = read_results(&job.results);
    assert_eq!(results.len(), rows.len());
    let delivered: Vec<&str> = results
        .iter()
        .filter(|r| r["status"] == "delivered")
        .map(|r| r["email"].as_str())
        .collect();
    assert_eq!(
        delivered,
        vec!["mal@a.test", "quote@a.test", "body@a.test", "tab@a.test"]
    );
    for r in results.iter().filter(|r| r["status"] != "delivered") {
        assert_eq!(r["status"], "invalid", "{r:?}");
        assert!(r["response"].starts_with("line "), "{r:?}");
    }
    // SMTP level: exactly the delivered rows were recipients; nothing was smuggled.
    let commands = mxs.get(2).commands();
    let rcpts: Vec<&String> = commands.iter().filter(|c| c.starts_with("RCPT")).collect();
    assert_eq!(
        rcpts,
        vec![
            "RCPT TO:<mal@a.test>",
            "RCPT TO:<quote@a.test>",
            "RCPT TO:<body@a.test>",
            "RCPT TO:<tab@a.test>"
        ]
    );
    assert!(
        !commands.iter().any(|c| c.contains("evil@")),
        "{commands:?}"
    );
    let got = mxs.get(2).received();
    assert_eq!(got.len(), 4);
    // A display name that looks like more addresses stays one display name: the To header
    // names exactly the row's own address.
    for m in &got {
        let text = String::from_utf8(m.data.clone()).unwrap();
        let to = text
            .lines()
            .find(|l| l.starts_with("To: "))
            .unwrap()
            .to_string();
        let boxes = mailmerge::message::parse_mailboxes(&to["To: ".len()..]).unwrap();
        assert_eq!(boxes.len(), 1, "{to}");
        assert_eq!(boxes[0].address.to_string(), m.rcpt_to, "{to}");
    }
    let allowed = [
        "received",
        "from",
        "to",
        "subject",
        "x-ref",
        "message-id",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
    ];
    for m in &got {
        let text = String::from_utf8(m.data.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        for l in head.lines().filter(|l| !l.starts_with([' ', '\t'])) {
            let name = l.split(':').next().unwrap().to_ascii_lowercase();
            assert!(allowed.contains(&name.as_str()), "header {l:?} in {head}");
        }
        // Only our own trace header, once.
        assert_eq!(head.matches("Received:").count(), 1, "{head}");
        // One text part and one attachment, nothing more.
        assert_eq!(
            body.matches("Content-Type:").count(),
            2,
            "{} parts in {body}",
            body.matches("Content-Type:").count()
        );
        if m.rcpt_to == "body@a.test" {
            assert!(
                body.contains("\r\n.\r\nMAIL FROM:<evil@b.test>\r\n"),
                "{body}"
            );
        }
    }
}
