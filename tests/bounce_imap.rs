//! `mailmerge bounces imaps://…` against a real Dovecot on loopback (tests/support/dovecot.rs):
//! the reports of a campaign delivered into the bounce mailbox are read over IMAP with the
//! certificate verified against a test CA, matched, and not read again by the next run (the
//! UID watermark in the suppression store), or moved to a folder; a dry run leaves the
//! watermark alone; an untrusted certificate and a password on the command line are refused.

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use crate::support::dovecot::{self, Dovecot};
use crate::support::*;
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::receiver::ReceiverConfig;
use mailmerge::verp::Verp;

const KEY: &str = "imap test key, 16+ bytes";

fn fixture(name: &str, rcpt: &str, return_path: &str, message_id: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bounces")
        .join(name);
    std::fs::read_to_string(path)
        .unwrap()
        .replace("{{RCPT}}", rcpt)
        .replace("{{RETURN_PATH}}", return_path)
        .replace("{{MESSAGE_ID}}", message_id)
}

/// A campaign of three rows sent with VERP; returns the job, the store, and per address its
/// return path and Message-ID.
async fn campaign(scratch: &Path) -> (Job, std::path::PathBuf, HashMap<String, (String, String)>) {
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let store = scratch.join("s.sqlite");
    let job = Job::new(
        "email,name\nann@a.test,Ann\nbob@a.test,Bob\ncat@a.test,Cat\n",
        TEMPLATE,
    );
    let mut cfg = job.config(&dns, mxs.port);
    cfg.suppress.store = Some(store.clone().into());
    cfg.message.verp = Some(Verp::new("bounces+{token}@sender.test", KEY.as_bytes()).unwrap());
    mailmerge::run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    let sent = mxs
        .get(2)
        .received()
        .into_iter()
        .map(|r| {
            let id = row(&rows, &r.rcpt_to)["message_id"].clone();
            (r.rcpt_to, (r.mail_from, id))
        })
        .collect();
    (job, store, sent)
}

/// `mailmerge bounces --json … URL` with the password in the environment.
fn bounces(server: &Dovecot, store: &Path, extra: &[&str]) -> Output {
    let url = format!(
        "imaps://{}@localhost:{}/INBOX",
        dovecot::USER,
        server.addr.port()
    );
    binary()
        .env("MAILMERGE_IMAP_PASSWORD", dovecot::PASSWORD)
        .args(["bounces", "--json", "--verp-key", KEY, "--suppressions"])
        .arg(store)
        .arg("--tls-ca")
        .arg(&server.ca_pem)
        .args(extra)
        .arg(url)
        .output()
        .unwrap()
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn explain(out: &Output, server: &Dovecot) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}\ndovecot: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.log()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bounce_mailbox_is_read_over_imap_once_and_only_new_messages_after() {
    let Some(server) = Dovecot::start() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let (job, store, sent) = campaign(scratch.path()).await;
    let report = |name: &str, who: &str| {
        let (rp, id) = &sent[who];
        fixture(name, who, rp, id)
    };
    server.deliver("1", &report("postfix-dsn.eml", "ann@a.test"));
    server.deliver("2", &report("qmail.eml", "bob@a.test"));

    // A dry run reads both, changes nothing, and leaves the watermark alone.
    let dry = bounces(&server, &store, &["--dry-run"]);
    assert_eq!(json_lines(&dry).len(), 2, "{}", explain(&dry, &server));
    assert!(open_list(&store).unwrap().list().await.unwrap().is_empty());

    let first = bounces(&server, &store, &[]);
    let lines = json_lines(&first);
    assert_eq!(first.status.code(), Some(0), "{}", explain(&first, &server));
    assert_eq!(lines.len(), 2, "{}", explain(&first, &server));
    for (l, who) in lines.iter().zip(["ann@a.test", "bob@a.test"]) {
        assert_eq!(
            (&l["action"], &l["email"]),
            (&"matched".into(), &who.into()),
            "{l}"
        );
        assert!(l["source"].as_str().unwrap().contains(";UID="), "{l}");
    }
    assert_eq!(
        row(&read_results(&job.results), "bob@a.test")["step"],
        "late-bounce"
    );
    assert_eq!(server.count("INBOX"), 2, "the messages stay in the mailbox");

    // The second run reads nothing again; the password now comes from the config file.
    let config = scratch.path().join("mailmerge.toml");
    std::fs::write(
        &config,
        format!("imap-password = \"{}\"\n", dovecot::PASSWORD),
    )
    .unwrap();
    let url = format!(
        "imaps://{}@localhost:{}/INBOX",
        dovecot::USER,
        server.addr.port()
    );
    let again = binary()
        .env_remove("MAILMERGE_IMAP_PASSWORD")
        .args(["bounces", "--json", "--verp-key", KEY, "--config"])
        .arg(&config)
        .arg("--suppressions")
        .arg(&store)
        .arg("--tls-ca")
        .arg(&server.ca_pem)
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", explain(&again, &server));
    assert!(
        json_lines(&again).is_empty(),
        "{}",
        explain(&again, &server)
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("0 matched"));

    // A new message arrives: only it is read.
    server.deliver("3", &report("arf-complaint.eml", "cat@a.test"));
    let third = bounces(&server, &store, &[]);
    let lines = json_lines(&third);
    assert_eq!(lines.len(), 1, "{}", explain(&third, &server));
    assert_eq!(
        (&lines[0]["kind"], &lines[0]["email"]),
        (&"complaint".into(), &"cat@a.test".into())
    );
    assert_eq!(open_list(&store).unwrap().list().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processed_messages_can_be_moved_to_a_folder_instead() {
    let Some(server) = Dovecot::start() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let (_job, store, sent) = campaign(scratch.path()).await;
    let (rp, id) = &sent["ann@a.test"];
    server.deliver("1", &fixture("postfix-dsn.eml", "ann@a.test", rp, id));
    server.deliver(
        "2",
        "From: ann@a.test\nSubject: Out of office\nAuto-Submitted: auto-replied\n\nAway\n",
    );
    let out = bounces(&server, &store, &["--imap-move-to", "Processed"]);
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{}", explain(&out, &server));
    assert_eq!(lines[1]["kind"], "autoreply");
    assert_eq!(server.count("INBOX"), 0, "{}", explain(&out, &server));
    assert_eq!(server.count("Processed"), 2, "{}", explain(&out, &server));
    let again = bounces(&server, &store, &["--imap-move-to", "Processed"]);
    assert!(
        json_lines(&again).is_empty(),
        "{}",
        explain(&again, &server)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_and_a_password_on_the_command_line_are_refused() {
    let Some(server) = Dovecot::start() else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("s.sqlite");
    let url = format!(
        "imaps://{}@localhost:{}/INBOX",
        dovecot::USER,
        server.addr.port()
    );
    // Without --tls-ca the test CA is not trusted.
    let out = binary()
        .env("MAILMERGE_IMAP_PASSWORD", dovecot::PASSWORD)
        .args(["bounces", "--suppressions"])
        .arg(&store)
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", explain(&out, &server));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS") && err.contains("certificate"), "{err}");
    // A password on the command line.
    let out = binary()
        .args(["bounces", "--imap-password", "x", "--suppressions"])
        .arg(&store)
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("never taken from the command line"), "{err}");
    // A wrong password is the server's refusal.
    let out = binary()
        .env("MAILMERGE_IMAP_PASSWORD", "wrong")
        .args(["bounces", "--suppressions"])
        .arg(&store)
        .arg("--tls-ca")
        .arg(&server.ca_pem)
        .arg(&url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("LOGIN"),
        "{}",
        explain(&out, &server)
    );
}
