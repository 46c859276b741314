//! Forged late reports (issue 21, case 1): someone who received one message of a campaign
//! forges a bounce or complaint for another row. Each test first reproduces the attack as it
//! was found — the attacker reads the Message-ID of their own copy, derives the victim row's
//! from it (`<run>.r<N>…` with the row number changed) and sends a report naming the victim
//! and that Message-ID — then checks that it changes nothing: the report is `forged` or
//! `unmatched`, the victim's row stays `delivered`, nobody is suppressed. The genuine report
//! (made from the victim's real copy) is matched, so each test would see a working attack.

use std::path::Path;

use crate::bounces::{apply_all, maildir};
use crate::support::*;
use mailmerge::bounces::{Disposition, Matcher, Reading};
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::receiver::ReceiverConfig;
use mailmerge::verp::Verp;

const KEY: &[u8] = b"forgery test key, 16+ bytes";

/// A campaign to attacker@a.test (row 1) and victim@a.test (row 2), sent to a loopback MX;
/// with or without a VERP return path.
struct Campaign {
    job: Job,
    store: std::path::PathBuf,
    /// What each recipient received: (rcpt, MAIL FROM, message text).
    received: Vec<(String, String, String)>,
    scratch: tempfile::TempDir,
    _mxs: Mxs,
}

async fn campaign(verp: bool) -> Campaign {
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("s.sqlite");
    let job = Job::new(
        "email,name\nattacker@a.test,Mallory\nvictim@a.test,Victor\n",
        TEMPLATE,
    );
    let mut cfg = job.config(&dns, mxs.port);
    cfg.suppress.store = Some(store.clone().into());
    if verp {
        cfg.message.verp = Some(Verp::new("bounces+{token}@sender.test", KEY).unwrap());
    }
    let report = mailmerge::run(cfg).await.expect("run");
    assert!(report.summary.all_delivered(), "{}", report.summary);
    let received = mxs
        .get(2)
        .received()
        .into_iter()
        .map(|r| {
            let text = String::from_utf8_lossy(&r.data).replace("\r\n", "\n");
            (r.rcpt_to, r.mail_from, text)
        })
        .collect();
    Campaign {
        job,
        store,
        received,
        scratch,
        _mxs: mxs,
    }
}

impl Campaign {
    /// The copy `who` received: (MAIL FROM, Message-ID).
    fn copy_of(&self, who: &str) -> (String, String) {
        let (_, from, text) = self
            .received
            .iter()
            .find(|(rcpt, _, _)| rcpt == who)
            .unwrap_or_else(|| panic!("{who} received nothing"));
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("Message-ID: <"))
            .and_then(|l| l.strip_suffix('>'))
            .expect("a Message-ID header")
            .to_string();
        (from.clone(), id)
    }

    /// The attack as reported: the victim's Message-ID derived from the attacker's own by
    /// changing the row number (`<run>.r1…` → `<run>.r2…`).
    fn derived_victim_id(&self) -> String {
        let (_, own) = self.copy_of("attacker@a.test");
        assert!(own.contains(".r1"), "{own}");
        own.replacen(".r1", ".r2", 1)
    }

    /// Reads `report` as `bounces` does (with the VERP key when `verp`), returns the verdicts.
    async fn read(&self, name: &str, report: &str, verp: bool) -> Vec<Reading> {
        let dir = self.scratch.path().join(name);
        let m = maildir(&dir);
        std::fs::write(m.join("new").join("1.eml"), report).unwrap();
        let key = verp.then_some(KEY);
        let mut matcher = Matcher::new(open_list(&self.store).unwrap(), key)
            .await
            .unwrap();
        let v = apply_all(&mut matcher, &m).await;
        matcher.finish().unwrap();
        v
    }

    /// Nothing changed: the victim is `delivered` and nobody is suppressed.
    async fn assert_untouched(&self, verdicts: &[Reading]) {
        assert!(!verdicts.is_empty());
        for v in verdicts {
            assert!(
                matches!(
                    v.disposition,
                    Disposition::Forged(_) | Disposition::Unmatched(_)
                ),
                "the forgery was acted on: {v}"
            );
        }
        let rows = read_results(&self.job.results);
        let victim = row(&rows, "victim@a.test");
        assert_eq!(victim["status"], "delivered", "{victim:?}");
        assert_ne!(victim["step"], "late-bounce", "{victim:?}");
        let listed = open_list(&self.store).unwrap().list().await.unwrap();
        assert!(listed.is_empty(), "suppressed by a forgery: {listed:?}");
    }

    /// The genuine report, made from the victim's own copy, is matched (the control: the
    /// test would see a working attack).
    async fn assert_genuine_matches(&self, report: &str, verp: bool) {
        let v = self.read("genuine", report, verp).await;
        assert!(
            matches!(&v[..], [Reading { disposition: Disposition::Matched { email, .. }, .. }] if email == "victim@a.test"),
            "{v:?}"
        );
    }
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bounces")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fill(template: &str, rcpt: &str, return_path: &str, message_id: &str) -> String {
    template
        .replace("{{RCPT}}", rcpt)
        .replace("{{RETURN_PATH}}", return_path)
        .replace("{{MESSAGE_ID}}", message_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_rfc3464_dsn_naming_another_rows_message_id_changes_nothing() {
    let c = campaign(true).await;
    let derived = c.derived_victim_id();
    let (attacker_rp, _) = c.copy_of("attacker@a.test");
    // Without a token (the victim's is unknown to the attacker) …
    let dsn = fill(
        &fixture("postfix-dsn.eml"),
        "victim@a.test",
        "news@sender.test",
        &derived,
    );
    let v = c.read("forged-dsn", &dsn, true).await;
    c.assert_untouched(&v).await;
    // … or with the attacker's own valid token next to the victim's address.
    let dsn = fill(
        &fixture("postfix-dsn.eml"),
        "victim@a.test",
        &attacker_rp,
        &derived,
    );
    let v = c.read("forged-dsn-own-token", &dsn, true).await;
    c.assert_untouched(&v).await;
    let (victim_rp, victim_id) = c.copy_of("victim@a.test");
    assert_ne!(
        victim_id, derived,
        "the victim's Message-ID cannot be derived"
    );
    c.assert_genuine_matches(
        &fill(
            &fixture("postfix-dsn.eml"),
            "victim@a.test",
            &victim_rp,
            &victim_id,
        ),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_qmail_plain_text_bounce_changes_nothing() {
    let c = campaign(true).await;
    let derived = c.derived_victim_id();
    let qmail = fill(
        &fixture("qmail.eml"),
        "victim@a.test",
        "news@sender.test",
        &derived,
    );
    let v = c.read("forged-qmail", &qmail, true).await;
    c.assert_untouched(&v).await;
    let (victim_rp, victim_id) = c.copy_of("victim@a.test");
    c.assert_genuine_matches(
        &fill(
            &fixture("qmail.eml"),
            "victim@a.test",
            &victim_rp,
            &victim_id,
        ),
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_arf_complaint_naming_another_rows_message_id_changes_nothing() {
    // No VERP at all: the Message-ID's tag comes from the run's random secret.
    let c = campaign(false).await;
    let derived = c.derived_victim_id();
    let arf = fill(
        &fixture("arf-complaint.eml"),
        "victim@a.test",
        "news@sender.test",
        &derived,
    );
    let v = c.read("forged-arf", &arf, false).await;
    c.assert_untouched(&v).await;
    // The same complaint without recipient fields (the address only in the returned To:).
    let bare = arf.replace("Original-Rcpt-To: <victim@a.test>\n", "");
    let v = c.read("forged-arf-bare", &bare, false).await;
    c.assert_untouched(&v).await;
    let (_, victim_id) = c.copy_of("victim@a.test");
    c.assert_genuine_matches(
        &fill(
            &fixture("arf-complaint.eml"),
            "victim@a.test",
            "news@sender.test",
            &victim_id,
        ),
        false,
    )
    .await;
}

/// A results CSV written before Message-IDs had a per-row tag (`<run>.r<N>@domain`): a
/// report quoting such an ID is no evidence, even when it is the row's real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_without_a_per_row_tag_is_no_evidence() {
    let c = campaign(false).await;
    let (_, real) = c.copy_of("victim@a.test");
    let (head, domain) = real.rsplit_once('@').unwrap();
    let untagged = format!("{}@{domain}", &head[..head.rfind('.').unwrap()]);
    let text = std::fs::read_to_string(&c.job.results)
        .unwrap()
        .replace(&real, &untagged);
    std::fs::write(&c.job.results, text).unwrap();
    let dsn = fill(
        &fixture("postfix-dsn.eml"),
        "victim@a.test",
        "news@sender.test",
        &untagged,
    );
    let v = c.read("untagged", &dsn, false).await;
    assert!(
        matches!(&v[..], [Reading { disposition: Disposition::Unmatched(why), .. }] if why.contains("per-row tag")),
        "{v:?}"
    );
    c.assert_untouched(&v).await;
}
