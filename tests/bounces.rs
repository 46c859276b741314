//! Late bounces and complaints: a campaign sent with a VERP return path to a
//! loopback receiver, then bounce and complaint reports in a Maildir, read by the same code
//! as `mailmerge bounces`. The reports are fixtures in the formats of Postfix, Exim, qmail,
//! Exchange and ARF (tests/fixtures/bounces/), filled in with the campaign's real return
//! paths and Message-IDs.

use std::collections::HashMap;
use std::path::Path;

use crate::support::*;
use mailmerge::bounces::{Disposition, Kind, Matcher, read};
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::receiver::ReceiverConfig;
use mailmerge::suppress::{Reason, Store};
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
    cfg.suppress.store = Some(store_path.clone());
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

    let maildir = scratch.path().join("Maildir");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(d)).unwrap();
    }
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

    let mut matcher = Matcher::new(Store::open(&store_path).unwrap(), Some(KEY)).unwrap();
    let verdicts: Vec<Disposition> = read::messages(&maildir)
        .unwrap()
        .iter()
        .map(|m| matcher.apply(&m.bytes).unwrap())
        .collect();
    assert_eq!(matcher.finish().unwrap(), 1, "one results file written");
    let shown: Vec<String> = verdicts.iter().map(ToString::to_string).collect();
    for (i, who) in ["ann", "bob", "cat", "dan"].iter().enumerate() {
        assert!(
            matches!(&verdicts[i], Disposition::Matched { email, kind: Kind::Bounce, suppressed: true, .. } if email == &format!("{who}@a.test")),
            "{who}: {shown:#?}"
        );
    }
    assert!(
        matches!(
            &verdicts[4],
            Disposition::Matched {
                kind: Kind::Complaint,
                suppressed: true,
                ..
            }
        ),
        "{shown:#?}"
    );
    assert!(
        matches!(&verdicts[5], Disposition::Ignored(w) if w.starts_with("delay")),
        "{shown:#?}"
    );
    assert!(matches!(&verdicts[6], Disposition::Forged(_)), "{shown:#?}");
    assert!(
        matches!(&verdicts[7], Disposition::Unmatched(_)),
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

    let store = Store::open(&store_path).unwrap();
    let entries: HashMap<String, Reason> = store
        .list()
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
    cfg.suppress.store = Some(store_path.clone());
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

#[test]
fn reports_without_the_key_match_by_message_id_only_and_others_are_not_reports() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.sqlite")).unwrap();
    let mut m = Matcher::new(store, None).unwrap();
    let text = fixture(
        "postfix-dsn.eml",
        "ann@a.test",
        "bounces+0badc0de-1-0123456789abcdef@sender.test",
        "x@sender.test",
    );
    assert!(matches!(
        m.apply(text.as_bytes()).unwrap(),
        Disposition::Unmatched(_)
    ));
    let ordinary = b"From: ann@a.test\r\nSubject: hi\r\n\r\nThanks for the 5.1.1 newsletter\r\n";
    assert!(matches!(
        m.apply(ordinary).unwrap(),
        Disposition::Ignored(_)
    ));
    let r = mailmerge::bounces::parse::parse(text.as_bytes()).unwrap();
    assert_eq!(
        (r.format, r.code, r.recipients.clone()),
        ("rfc3464", Some(550), vec!["ann@a.test".to_string()])
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
    cfg.suppress.store = Some(store_path.clone());
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

    let maildir = scratch.path().join("Maildir");
    for d in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(d)).unwrap();
    }
    std::fs::write(maildir.join("new/1.postfix-real"), &dsn.data).unwrap();
    let mut matcher = Matcher::new(Store::open(&store_path).unwrap(), Some(KEY)).unwrap();
    let verdicts: Vec<Disposition> = read::messages(&maildir)
        .unwrap()
        .iter()
        .map(|m| matcher.apply(&m.bytes).unwrap())
        .collect();
    matcher.finish().unwrap();
    assert!(
        matches!(&verdicts[..], [Disposition::Matched { email, kind: Kind::Bounce, suppressed: true, .. }] if email == "gone@late.test"),
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
    let store = Store::open(&store_path).unwrap();
    assert!(
        store
            .list()
            .unwrap()
            .iter()
            .any(|e| e.key == "gone@late.test" && e.reason == Reason::HardBounce)
    );
}
