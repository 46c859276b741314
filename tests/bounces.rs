//! Late bounces and complaints: a campaign sent with a VERP return path to a
//! loopback receiver, then bounce and complaint reports in a Maildir, read by the same code
//! as `mailmerge bounces`. The reports are fixtures in the formats of Postfix, Exim, qmail,
//! Exchange and ARF (tests/fixtures/bounces/), filled in with the campaign's real return
//! paths and Message-IDs.

use std::collections::HashMap;
use std::path::Path;

use crate::support::*;
use mailmerge::bounces::{Disposition, Kind, Matcher, Reading, read};
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::receiver::ReceiverConfig;
use mailmerge::suppress::Reason;
use mailmerge::verp::Verp;

const KEY: &[u8] = b"test key, 16+ bytes long";

fn fixture(name: &str, rcpt: &str, return_path: &str, message_id: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bounces")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("{{RCPT}}", rcpt)
        .replace("{{RETURN_PATH}}", return_path)
        .replace("{{MESSAGE_ID}}", message_id)
}

/// Every message under `path` through the matcher: one verdict per recipient.
pub async fn apply_all(matcher: &mut Matcher, path: &Path) -> Vec<Reading> {
    let mut out = Vec::new();
    for m in read::messages(path, read::DEFAULT_CAP).unwrap() {
        out.extend(matcher.apply(&m.unwrap()).await.unwrap());
    }
    out
}

/// A Maildir with `new/`, `cur/` and `tmp/` under `dir`.
pub fn maildir(dir: &Path) -> std::path::PathBuf {
    let m = dir.join("Maildir");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(m.join(d)).unwrap();
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_bounces_and_complaints_update_their_rows_and_the_list_forgeries_change_nothing() {
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("s.sqlite");
    let people = ["ann", "bob", "cat", "dan", "eve", "fay"];
    let mut csv = String::from("email,name\n");
    for p in people {
        csv.push_str(&format!("{p}@a.test,{p}\n"));
    }
    let job = Job::new(&csv, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.suppress.store = Some(store_path.clone().into());
    cfg.message.verp = Some(Verp::new("bounces+{token}@sender.test", KEY).unwrap());
    let report = mailmerge::run(cfg).await.expect("run");
    assert!(report.summary.all_delivered(), "{}", report.summary);

    // Each message went out with its own signed return path.
    let mail_from: HashMap<String, String> = mxs
        .get(2)
        .received()
        .into_iter()
        .map(|r| (r.rcpt_to, r.mail_from))
        .collect();
    assert!(
        mail_from["ann@a.test"].starts_with("bounces+"),
        "{mail_from:?}"
    );
    assert_ne!(mail_from["ann@a.test"], mail_from["bob@a.test"]);
    let rows = read_results(&job.results);
    let delivered_at = row(&rows, "ann@a.test")["finished_at"].clone();
    assert!(
        mailmerge::outcome::parse_time(&delivered_at).is_some(),
        "{delivered_at:?}"
    );
    let id = |p: &str| row(&rows, &format!("{p}@a.test"))["message_id"].clone();
    let rp = |p: &str| mail_from[&format!("{p}@a.test")].clone();
    // fay's return path with the last digit of its signature changed.
    let genuine = rp("fay");
    let (head, domain) = genuine.rsplit_once('@').unwrap();
    let last = if head.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}@{domain}", &head[..head.len() - 1]);

    let maildir = maildir(scratch.path());
    let put = |n: &str, text: String| std::fs::write(maildir.join("new").join(n), text).unwrap();
    put(
        "1.postfix",
        fixture("postfix-dsn.eml", "ann@a.test", &rp("ann"), &id("ann")),
    );
    put(
        "2.exim",
        fixture(
            "exim-dsn-no-token.eml",
            "bob@a.test",
            "news@sender.test",
            &id("bob"),
        ),
    );
    put(
        "3.qmail",
        fixture("qmail.eml", "cat@a.test", &rp("cat"), &id("cat")),
    );
    put(
        "4.exchange",
        fixture("exchange-plain.eml", "dan@a.test", &rp("dan"), &id("dan")),
    );
    put(
        "5.arf",
        fixture("arf-complaint.eml", "eve@a.test", &rp("eve"), &id("eve")),
    );
    put(
        "6.delayed",
        fixture("postfix-delayed.eml", "fay@a.test", &rp("fay"), &id("fay")),
    );
    put(
        "7.forged",
        fixture("postfix-dsn.eml", "fay@a.test", &forged, &id("fay")),
    );
    put(
        "8.unmatched",
        fixture(
            "exim-dsn-no-token.eml",
            "zed@a.test",
            "x@sender.test",
            "nope@sender.test",
        ),
    );

    let mut matcher = Matcher::new(open_list(&store_path).unwrap(), Some(KEY))
        .await
        .unwrap();
    let all = apply_all(&mut matcher, &maildir).await;
    assert_eq!(matcher.finish().unwrap(), 1, "one results file written");
    let shown: Vec<String> = all.iter().map(ToString::to_string).collect();
    assert_eq!(all.len(), 8, "{shown:#?}");
    let verdicts: Vec<&Disposition> = all.iter().map(|v| &v.disposition).collect();
    for (i, who) in ["ann", "bob", "cat", "dan"].iter().enumerate() {
        assert!(
            matches!(verdicts[i], Disposition::Matched { email, suppressed: true, .. } if email == &format!("{who}@a.test")),
            "{who}: {shown:#?}"
        );
        assert!(all[i].kind.is_failure(), "{shown:#?}");
    }
    assert_eq!(all[4].kind, Kind::Complaint, "{shown:#?}");
    assert!(
        matches!(
            verdicts[4],
            Disposition::Matched {
                suppressed: true,
                ..
            }
        ),
        "{shown:#?}"
    );
    assert!(
        matches!(verdicts[5], Disposition::Ignored(w) if w.starts_with("delay")),
        "{shown:#?}"
    );
    assert!(matches!(verdicts[6], Disposition::Forged(_)), "{shown:#?}");
    assert!(
        matches!(verdicts[7], Disposition::Unmatched(_)),
        "{shown:#?}"
    );

    let rows = read_results(&job.results);
    let r = row(&rows, "ann@a.test");
    assert_eq!(
        (
            r["status"].as_str(),
            r["step"].as_str(),
            r["code"].as_str(),
            r["enhanced_code"].as_str()
        ),
        ("bounced", "late-bounce", "550", "5.1.1")
    );
    assert!(r["response"].contains("User unknown"), "{r:?}");
    assert_eq!(
        r["finished_at"], delivered_at,
        "the time of the delivery is kept"
    );
    assert_eq!(
        row(&rows, "bob@a.test")["enhanced_code"],
        "5.1.1",
        "Exim's 5.0.0 refined by its reply"
    );
    assert_eq!(row(&rows, "cat@a.test")["enhanced_code"], "5.1.1");
    assert_eq!(row(&rows, "dan@a.test")["enhanced_code"], "5.1.10");
    assert_eq!(
        row(&rows, "eve@a.test")["status"],
        "delivered",
        "a complaint is not a bounce"
    );
    assert_eq!(
        row(&rows, "fay@a.test")["status"],
        "delivered",
        "delay and forgery change nothing"
    );

    let store = open_list(&store_path).unwrap();
    let entries: HashMap<String, Reason> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.key, e.reason))
        .collect();
    assert_eq!(entries.len(), 5, "{entries:?}");
    assert_eq!(entries["eve@a.test"], Reason::Complaint);
    assert_eq!(entries["ann@a.test"], Reason::HardBounce);
    assert!(!entries.contains_key("fay@a.test"));
    assert!(!entries.contains_key("zed@a.test"));

    // The same job run again sends nothing and keeps the late bounces: they are in the
    // journal, not only in the results CSV the re-run rewrites.
    let received = mxs.get(2).received().len();
    let mut cfg = job.config(&dns, mxs.port);
    cfg.suppress.store = Some(store_path.clone().into());
    cfg.message.verp = Some(Verp::new("bounces+{token}@sender.test", KEY).unwrap());
    mailmerge::run(cfg).await.expect("re-run");
    assert_eq!(mxs.get(2).received().len(), received, "nothing sent again");
    let again = read_results(&job.results);
    let r = row(&again, "ann@a.test");
    assert_eq!(
        (
            r["status"].as_str(),
            r["step"].as_str(),
            r["enhanced_code"].as_str(),
            r["mx_host"].as_str()
        ),
        ("bounced", "late-bounce", "5.1.1", "mx.a.test"),
        "{r:?}"
    );
    assert_eq!(
        r["finished_at"], delivered_at,
        "and the journal kept it for the re-run"
    );
    assert_eq!(row(&again, "dan@a.test")["enhanced_code"], "5.1.10");
    assert_eq!(row(&again, "fay@a.test")["status"], "delivered");
}

#[tokio::test]
async fn reports_without_the_key_match_by_message_id_only_and_others_are_not_reports() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_list(&dir.path().join("s.sqlite")).unwrap();
    let mut m = Matcher::new(store, None).await.unwrap();
    let text = fixture(
        "postfix-dsn.eml",
        "ann@a.test",
        "bounces+0badc0de-1-0123456789abcdef@sender.test",
        "x@sender.test",
    );
    let raw = read::Raw {
        origin: "dsn".into(),
        bytes: text.clone().into_bytes(),
        truncated: false,
    };
    let v = m.apply(&raw).await.unwrap();
    assert!(
        matches!(
            &v[..],
            [Reading {
                disposition: Disposition::Unmatched(_),
                ..
            }]
        ),
        "{v:?}"
    );
    let ordinary = b"From: ann@a.test\r\nSubject: hi\r\n\r\nThanks for the 5.1.1 newsletter\r\n";
    let raw = read::Raw {
        origin: "ordinary".into(),
        bytes: ordinary.to_vec(),
        truncated: false,
    };
    let v = m.apply(&raw).await.unwrap();
    assert!(
        matches!(
            &v[..],
            [Reading {
                kind: Kind::Other,
                disposition: Disposition::Ignored(_),
                ..
            }]
        ),
        "{v:?}"
    );
    let r = mailmerge::bounces::parse::parse(text.as_bytes());
    let first = &r.recipients[0];
    assert_eq!(
        (r.format, first.code, first.address.as_deref()),
        ("rfc3464", Some(550), Some("ann@a.test"))
    );
    assert_eq!(r.message_id.as_deref(), Some("x@sender.test"));
}

/// A real MTA's late bounce, end to end: a private Postfix accepts the message (250), then
/// fails to deliver it (its delivery program exits EX_NOUSER, which pipe(8) reports as
/// 5.1.1), and its bounce daemon sends a real
/// RFC 3464 DSN to our VERP return path through a loopback relay, which stores it. That DSN,
/// put into a Maildir, updates the campaign's row and the suppression list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dsn_written_by_postfix_itself_is_matched_to_its_row() {
    use crate::support::mta::{Postfix, PostfixOptions};
    // The relay that receives Postfix's DSNs for sender.test.
    let relay = Mxs::start(vec![(3, ReceiverConfig::default())]).await;
    let main_cf = format!(
        "virtual_transport = gone\n\
         default_transport = smtp\n\
         relay_transport = smtp\n\
         relayhost = [127.0.0.3]:{}\n\
         smtp_tls_security_level = none\n\
         bounce_queue_lifetime = 0\n",
        relay.port
    );
    let Some(pf) = Postfix::start(
        83,
        PostfixOptions {
            domain: "late.test",
            tls: None,
            main_cf: &main_cf,
            master_cf: "gone unix - n n - - pipe flags=q user=nobody argv=/bin/sh -c { exit 67 }\n",
        },
    ) else {
        return;
    };
    let mut z = zone();
    z.mx("late.test", 10, "mx.late.test")
        .addr("mx.late.test", loopback(83));
    let dns = dns(z).await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("s.sqlite");
    let job = Job::new("email,name\ngone@late.test,Gone\n", TEMPLATE);
    let mut cfg = job.config(&dns, pf.addr.port());
    cfg.suppress.store = Some(store_path.clone().into());
    cfg.message.verp = Some(Verp::new("bounces+{token}@sender.test", KEY).unwrap());
    let report = mailmerge::run(cfg).await.expect("run");
    assert!(
        report.summary.all_delivered(),
        "Postfix accepts first: {}{:?}",
        report.summary,
        read_results(&job.results)
    );

    // Postfix bounces it and sends the DSN to the return path, via the relay.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let dsn = loop {
        if let Some(m) = relay.get(3).received().into_iter().next() {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no DSN from Postfix; its log:\n{}",
            pf.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(dsn.rcpt_to.starts_with("bounces+"), "{}", dsn.rcpt_to);
    let text = String::from_utf8_lossy(&dsn.data);
    assert!(
        text.contains("report-type=delivery-status"),
        "a real RFC 3464 report: {text}"
    );

    let maildir = maildir(scratch.path());
    std::fs::write(maildir.join("new/1.postfix-real"), &dsn.data).unwrap();
    let mut matcher = Matcher::new(open_list(&store_path).unwrap(), Some(KEY))
        .await
        .unwrap();
    let verdicts = apply_all(&mut matcher, &maildir).await;
    matcher.finish().unwrap();
    assert!(
        matches!(&verdicts[..], [Reading { kind: Kind::Dsn, disposition: Disposition::Matched { email, suppressed: true, .. }, .. }] if email == "gone@late.test"),
        "{verdicts:?}"
    );
    let rows = read_results(&job.results);
    let r = row(&rows, "gone@late.test");
    assert_eq!(
        (
            r["status"].as_str(),
            r["step"].as_str(),
            r["enhanced_code"].as_str()
        ),
        ("bounced", "late-bounce", "5.1.1")
    );
    assert_eq!(r["category"], "bad-mailbox", "{r:?}");
    let store = open_list(&store_path).unwrap();
    assert!(
        store
            .list()
            .await
            .unwrap()
            .iter()
            .any(|e| e.key == "gone@late.test" && e.reason == Reason::HardBounce)
    );
}

/// Issue 21, case 7: `bounces` held whole inputs in memory (a 60 MB message took 131 MB).
/// Now each message is kept only up to the cap: an mbox holding a bounce that returns a huge
/// message, then a message that is one endless line, then an ordinary bounce, is read with a
/// 64 KiB cap. What is kept of each stays within the cap, the reports at the tops of the huge
/// messages are still read, and the message after them is intact.
#[test]
fn huge_messages_are_read_only_up_to_the_cap_and_the_next_ones_still_are() {
    const CAP: usize = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("bounces.mbox");
    let qmail = fixture(
        "qmail.eml",
        "ann@a.test",
        "x@sender.test",
        "big.r1.0@sender.test",
    );
    let mut text = String::from("From MAILER-DAEMON Mon Nov  2 10:00:05 2026\n");
    text.push_str(&qmail);
    let line = "0123456789abcdef".repeat(4); // 64 characters
    for _ in 0..(8 << 20) / 65 {
        text.push_str(&line);
        text.push('\n');
    }
    text.push_str("\nFrom x Mon Nov  2 10:00:06 2026\nSubject: one line\n\n");
    text.push_str(&"y".repeat(3 << 20));
    text.push_str("\n\nFrom MAILER-DAEMON Mon Nov  2 10:00:07 2026\n");
    text.push_str(&fixture(
        "qmail.eml",
        "bob@a.test",
        "x@sender.test",
        "b.r2.0@sender.test",
    ));
    std::fs::write(&mbox, &text).unwrap();
    assert!(std::fs::metadata(&mbox).unwrap().len() > 11 << 20);

    let got: Vec<read::Raw> = read::messages(&mbox, CAP)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(got.len(), 3);
    for m in &got {
        assert!(
            m.bytes.len() <= CAP,
            "{}: kept {} bytes",
            m.origin,
            m.bytes.len()
        );
    }
    assert!(got[0].truncated && got[1].truncated && !got[2].truncated);
    let first = mailmerge::bounces::parse::parse(&got[0].bytes);
    assert_eq!(first.recipients[0].address.as_deref(), Some("ann@a.test"));
    assert_eq!(first.message_id.as_deref(), Some("big.r1.0@sender.test"));
    let last = mailmerge::bounces::parse::parse(&got[2].bytes);
    assert_eq!(last.recipients[0].address.as_deref(), Some("bob@a.test"));
    assert!(got[2].origin.ends_with("#3"), "{}", got[2].origin);

    // A single file over the cap is cut the same way.
    let eml = dir.path().join("big.eml");
    std::fs::write(&eml, &text[text.find('\n').unwrap() + 1..]).unwrap();
    let one: Vec<read::Raw> = read::messages(&eml, CAP)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        (one.len(), one[0].bytes.len(), one[0].truncated),
        (1, CAP, true)
    );
}

/// `bounces --dry-run --json` over a campaign's bounce mailbox: one JSON line per recipient
/// saying what a real run would do, and nothing written (results CSV, journal, list). The
/// same command without `--dry-run` then does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_says_what_a_run_would_do_and_changes_nothing() {
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("s.sqlite");
    let job = Job::new("email,name\nann@a.test,Ann\nbob@a.test,Bob\n", TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.suppress.store = Some(store_path.clone().into());
    cfg.message.verp = Some(Verp::new("bounces+{token}@sender.test", KEY).unwrap());
    mailmerge::run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    let id = |p: &str| row(&rows, &format!("{p}@a.test"))["message_id"].clone();
    let rp: HashMap<String, String> = mxs
        .get(2)
        .received()
        .into_iter()
        .map(|r| (r.rcpt_to, r.mail_from))
        .collect();
    let m = maildir(scratch.path());
    let put = |n: &str, t: String| std::fs::write(m.join("new").join(n), t).unwrap();
    put(
        "1",
        fixture(
            "postfix-dsn.eml",
            "ann@a.test",
            &rp["ann@a.test"],
            &id("ann"),
        ),
    );
    put(
        "2",
        fixture(
            "arf-complaint.eml",
            "bob@a.test",
            "news@sender.test",
            &id("bob"),
        ),
    );
    put(
        "3",
        fixture(
            "postfix-delayed.eml",
            "bob@a.test",
            &rp["bob@a.test"],
            &id("bob"),
        ),
    );
    put(
        "4",
        "From: ann@a.test\nSubject: Out of office\nAuto-Submitted: auto-replied\n\nAway.\n".into(),
    );
    let journal = mailmerge::journal::path_for(&job.results);
    let before = (
        std::fs::read(&job.results).unwrap(),
        std::fs::read(&journal).unwrap(),
        std::fs::read(&store_path).unwrap(),
    );
    let bounces = |extra: &[&str]| {
        let mut cmd = binary();
        cmd.args(["bounces", "--suppressions"])
            .arg(&store_path)
            .args(["--verp-key", std::str::from_utf8(KEY).unwrap()])
            .args(extra)
            .arg(&m);
        cmd.output().unwrap()
    };
    let out = bounces(&["--dry-run", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let l = &lines[0];
    assert!(l["source"].as_str().unwrap().ends_with("new/1"), "{l}");
    assert_eq!(
        (&l["kind"], &l["recipient"], &l["status"]),
        (&"dsn".into(), &"ann@a.test".into(), &"5.1.1".into())
    );
    assert_eq!(
        (&l["code"], &l["category"], &l["hard"]),
        (&550.into(), &"bad-mailbox".into(), &true.into())
    );
    assert_eq!(
        (&l["action"], &l["row"], &l["suppress"]),
        (&"matched".into(), &1.into(), &true.into())
    );
    assert!(
        l["diagnostic"].as_str().unwrap().contains("User unknown"),
        "{l}"
    );
    assert_eq!(
        (&lines[1]["kind"], &lines[1]["action"], &lines[1]["row"]),
        (&"complaint".into(), &"matched".into(), &2.into())
    );
    assert_eq!(
        (&lines[2]["kind"], &lines[2]["action"]),
        (&"delay".into(), &"ignored".into())
    );
    assert_eq!(
        (&lines[3]["kind"], &lines[3]["action"], &lines[3]["hard"]),
        (&"autoreply".into(), &"ignored".into(), &false.into())
    );
    let after = (
        std::fs::read(&job.results).unwrap(),
        std::fs::read(&journal).unwrap(),
        std::fs::read(&store_path).unwrap(),
    );
    assert!(before == after, "a dry run wrote something");
    assert!(
        open_list(&store_path)
            .unwrap()
            .list()
            .await
            .unwrap()
            .is_empty()
    );

    // The table, then the real thing.
    let table = bounces(&["--dry-run"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("KIND"), "{text}");
    assert!(
        text.contains("dsn       matched   yes  5.1.1   bad-mailbox"),
        "{text}"
    );
    assert!(text.contains("dry run: nothing changed"), "{text}");
    let real = bounces(&[]);
    assert_eq!(
        real.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&real.stdout)
    );
    let rows = read_results(&job.results);
    assert_eq!(row(&rows, "ann@a.test")["step"], "late-bounce");
    assert_eq!(
        open_list(&store_path).unwrap().list().await.unwrap().len(),
        2
    );
}

/// A bounce is untrusted input: a diagnostic that a spreadsheet would run as a formula is
/// written to the results CSV defused (with a leading apostrophe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounces_diagnostic_cannot_plant_a_formula_in_the_results() {
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("s.sqlite");
    let job = Job::new("email,name\nann@a.test,Ann\n", TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.suppress.store = Some(store_path.clone().into());
    cfg.message.verp = Some(Verp::new("bounces+{token}@sender.test", KEY).unwrap());
    mailmerge::run(cfg).await.expect("run");
    let rp = mxs.get(2).received()[0].mail_from.clone();
    let id = row(&read_results(&job.results), "ann@a.test")["message_id"].clone();
    let dsn = fixture("postfix-dsn.eml", "ann@a.test", &rp, &id).replace(
        "Diagnostic-Code: smtp; 550 5.1.1 <ann@a.test>: Recipient address rejected:",
        "Diagnostic-Code: smtp; =HYPERLINK(\"http://evil.example/\",\"5.1.1 user unknown\")",
    );
    let m = maildir(scratch.path());
    std::fs::write(m.join("new/1"), dsn).unwrap();
    let mut matcher = Matcher::new(open_list(&store_path).unwrap(), Some(KEY))
        .await
        .unwrap();
    let v = apply_all(&mut matcher, &m).await;
    matcher.finish().unwrap();
    assert!(
        matches!(v[0].disposition, Disposition::Matched { .. }),
        "{v:?}"
    );
    let r = row(&read_results(&job.results), "ann@a.test").clone();
    assert_eq!(r["step"], "late-bounce");
    assert!(r["response"].starts_with("'=HYPERLINK"), "{r:?}");
}
