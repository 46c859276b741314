//! Issue 5, "getting delivered": DKIM signatures that verify, one-click unsubscribe headers,
//! sender identity, the sender-domain preflight and the config file — all over real DNS and
//! SMTP servers on loopback, with `mail-auth`'s verifier playing the receiving mailbox provider.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::support::*;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use mailmerge::dkim::Signer;
use mailmerge::preflight::{RecordState, SenderCheckOptions, check_sender};
use mailmerge::sandbox::dns::{DnsServer, loopback};
use mailmerge::sandbox::receiver::ReceiverConfig;
use mailmerge::{RunReport, run};

const ED25519_PEM: &str = include_str!("fixtures/dkim-ed25519.pem");
const RSA_PEM: &str = include_str!("fixtures/dkim-rsa2048.pem");

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A DKIM verifier that asks only the test DNS server.
pub(crate) fn verifier(dns: SocketAddr) -> MessageAuthenticator {
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = dns.port();
    let ns = NameServerConfig::new(dns.ip(), true, vec![udp, tcp]);
    MessageAuthenticator::new(
        ResolverConfig::from_name_servers(vec![ns]),
        ResolverOpts::default(),
    )
    .expect("verifier")
}

pub(crate) async fn dkim_results(auth: &MessageAuthenticator, message: &[u8]) -> Vec<DkimResult> {
    let parsed = AuthenticatedMessage::parse(message).expect("parse");
    auth.verify_dkim(&parsed)
        .await
        .iter()
        .map(|o| o.result().clone())
        .collect()
}

/// One signature, which did not verify (mail-auth reports a body-hash mismatch as neutral
/// with `FailedBodyHashMatch`, a bad header signature as fail).
fn rejected(r: &[DkimResult]) -> bool {
    matches!(r, [DkimResult::Fail(_) | DkimResult::Neutral(_)])
}

/// The unfolded value of header `name` in a message.
fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

const UNSUB_TEMPLATE: &str = "From: Sender <news@sender.test>\nTo: {{name}} <{{email}}>\n\
Subject: Hello {{name}}\n\
List-Unsubscribe: <https://sender.test/u/{{token}}>, <mailto:unsub@sender.test?subject={{token}}>\n\
List-Unsubscribe-Post: List-Unsubscribe=One-Click\n\nHi {{name}},\nbye\n";

/// Runs a two-row job signed with `pem`, the public key served at `s1._domainkey.sender.test`.
async fn signed_run(pem: &str) -> (DnsServer, Mxs, RunReport) {
    let signer = Signer::from_pem(pem.as_bytes(), "s1", None).unwrap();
    let mut z = zone();
    z.mx("example.com", 10, "mx.example.com")
        .addr("mx.example.com", loopback(2))
        .txt("s1._domainkey.sender.test", &signer.dns_record());
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new(
        "email,name,token\nann@example.com,Ann,tök-1\nbob@example.com,Bob,t2\n",
        UNSUB_TEMPLATE,
    );
    let mut cfg = job.config(&dns, mxs.port);
    cfg.message.dkim = Some(signer);
    let report = run(cfg).await.expect("run");
    (dns, mxs, report)
}

async fn assert_signed_and_verifiable(pem: &str, algorithm: &str) {
    let (dns, mxs, report) = signed_run(pem).await;
    assert!(report.summary.all_delivered(), "{}", report.summary);
    let auth = verifier(dns.addr());
    let got = mxs.get(2).received();
    assert_eq!(got.len(), 2);
    for m in &got {
        let text = String::from_utf8(m.data.clone()).unwrap();
        let sig = header(&text, "DKIM-Signature").expect("signed");
        let sig = sig.replace([' ', '\t'], "");
        assert!(sig.contains(&format!("a={algorithm}")), "{sig}");
        assert!(
            sig.contains("c=relaxed/relaxed") && sig.contains("d=sender.test"),
            "{sig}"
        );
        let h = sig
            .split(';')
            .find(|t| t.starts_with("h="))
            .unwrap()
            .to_ascii_lowercase();
        for signed in [
            "from",
            "to",
            "subject",
            "date",
            "message-id",
            "mime-version",
            "content-type",
            "list-unsubscribe",
            "list-unsubscribe-post",
        ] {
            assert!(
                h.split([':', '=']).any(|x| x == signed),
                "{signed} not in {h}"
            );
        }
        assert_eq!(
            dkim_results(&auth, &m.data).await,
            vec![DkimResult::Pass],
            "{text}"
        );
        // A changed body, or a changed List-Unsubscribe, no longer verifies.
        let tampered = text.replacen("\r\nbye", "\r\nBYE", 1);
        assert_ne!(tampered, text);
        let r = dkim_results(&auth, tampered.as_bytes()).await;
        assert!(rejected(&r), "{r:?}\n{tampered}");
        let tampered = text.replacen("sender.test/u/", "evil.test/u/", 1);
        assert_ne!(tampered, text);
        let r = dkim_results(&auth, tampered.as_bytes()).await;
        assert!(rejected(&r), "{r:?}\n{tampered}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_signed_messages_verify_against_the_key_in_dns_and_tampering_fails() {
    assert_signed_and_verifiable(RSA_PEM, "rsa-sha256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ed25519_signed_messages_verify_against_the_key_in_dns_and_tampering_fails() {
    assert_signed_and_verifiable(ED25519_PEM, "ed25519-sha256").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_unsubscribe_headers_are_templated_per_row_and_never_encoded() {
    let (_dns, mxs, _report) = signed_run(ED25519_PEM).await;
    let got = mxs.get(2).received();
    let ann = got.iter().find(|m| m.rcpt_to == "ann@example.com").unwrap();
    let text = String::from_utf8(ann.data.clone()).unwrap();
    assert_eq!(
        header(&text, "List-Unsubscribe").as_deref(),
        Some("<https://sender.test/u/t%C3%B6k-1>, <mailto:unsub@sender.test?subject=t%C3%B6k-1>"),
        "non-ASCII is percent-encoded, never RFC 2047-encoded:\n{text}"
    );
    assert_eq!(
        header(&text, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let bob = got.iter().find(|m| m.rcpt_to == "bob@example.com").unwrap();
    let text = String::from_utf8(bob.data.clone()).unwrap();
    assert!(
        header(&text, "List-Unsubscribe")
            .unwrap()
            .starts_with("<https://sender.test/u/t2>")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_click_post_without_an_https_uri_makes_the_row_invalid() {
    let mut z = zone();
    z.mx("example.com", 10, "mx.example.com")
        .addr("mx.example.com", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new(
        "email,name\nann@example.com,Ann\n",
        "From: news@sender.test\nTo: {{email}}\nList-Unsubscribe: <mailto:u@sender.test>\n\
         List-Unsubscribe-Post: List-Unsubscribe=One-Click\n\nHi\n",
    );
    let report = run(job.config(&dns, mxs.port)).await.expect("run");
    assert_eq!(report.summary.count(mailmerge::outcome::Status::Invalid), 1);
    let rows = read_results(&job.results);
    assert_eq!(rows[0]["status"], "invalid");
    assert!(rows[0]["response"].contains("https URI"), "{:?}", rows[0]);
    assert_eq!(mxs.total_received(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misaligned_sender_and_bad_helo_are_warned_and_message_id_is_on_the_from_domain() {
    let mut z = zone();
    z.mx("example.com", 10, "mx.example.com")
        .addr("mx.example.com", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new("email,name\na@example.com,A\nb@example.com,B\n", TEMPLATE);

    // Aligned (bounces on a subdomain of the From domain), FQDN HELO: no warning.
    let mut cfg = job.config(&dns, mxs.port);
    cfg.message.envelope_from =
        Some(mailmerge::address::Address::parse("bounce@mail.sender.test").unwrap());
    let report = run(cfg).await.expect("run");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);

    // Envelope on another domain, DKIM d= on another domain, HELO without a dot.
    let mut cfg = job.config(&dns, mxs.port);
    cfg.fresh = true; // the same list again: send again rather than resume
    cfg.delivery.helo = Some("localhost".into());
    cfg.message.envelope_from =
        Some(mailmerge::address::Address::parse("bounce@esp.test").unwrap());
    cfg.message.dkim =
        Some(Signer::from_pem(ED25519_PEM.as_bytes(), "s1", Some("esp.test")).unwrap());
    let report = run(cfg).await.expect("run");
    assert!(
        report.summary.all_delivered(),
        "{:?}",
        read_results(&job.results)
    );
    let w = &report.warnings;
    assert_eq!(w.len(), 3, "each warning once, not once per message: {w:?}");
    assert!(
        w.iter().any(|w| w.contains("EHLO name \"localhost\"")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("envelope sender domain esp.test")),
        "{w:?}"
    );
    assert!(
        w.iter().any(|w| w.contains("DKIM signing domain esp.test")),
        "{w:?}"
    );

    // Message-ID on the From domain, whatever the envelope sender.
    for m in mxs.get(2).received() {
        let text = String::from_utf8(m.data.clone()).unwrap();
        let id = header(&text, "Message-ID").unwrap();
        assert!(id.ends_with("@sender.test>"), "{id}");
    }
}

// ---- check-sender -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_sender_passes_a_complete_domain_and_lists_what_is_missing() {
    let rsa = Signer::from_pem(RSA_PEM.as_bytes(), "s1", None).unwrap();
    let ed = Signer::from_pem(ED25519_PEM.as_bytes(), "s1", None).unwrap();
    let mut z = zone();
    z.txt("good.test", "v=spf1 ip4:127.0.0.1 -all")
        .txt("good.test", "google-site-verification=x")
        .txt("s1._domainkey.good.test", &rsa.dns_record())
        .txt(
            "_dmarc.good.test",
            "v=DMARC1; p=none; rua=mailto:d@good.test",
        );
    z.exists("bare.test");
    z.txt("wrong.test", "v=spf1 a -all")
        .txt("wrong.test", "v=spf1 mx -all")
        .txt("s1._domainkey.wrong.test", &ed.dns_record())
        .txt("_dmarc.wrong.test", "v=DMARC1; rua=mailto:d@wrong.test");
    z.txt("_dmarc.parent.test", "v=DMARC1; p=reject");
    let dns = dns(z).await;
    let mut opts = SenderCheckOptions::default();
    opts.dns.server = Some(dns.addr());
    opts.dns.timeout = std::time::Duration::from_millis(500);
    opts.dns.attempts = 1;
    opts.dkim_selector = Some("s1".into());
    opts.dkim_key = Some(rsa.clone());

    let good = check_sender("good.test", &opts).await.unwrap();
    assert!(good.all_ok(), "{good}");

    let bare = check_sender("bare.test", &opts).await.unwrap();
    assert!(!bare.all_ok());
    for check in ["SPF", "DKIM", "DMARC"] {
        assert_eq!(
            bare.finding(check).unwrap().verdict,
            RecordState::Missing,
            "{bare}"
        );
    }
    let text = bare.to_string();
    assert!(
        text.contains("publish: bare.test. IN TXT \"v=spf1 "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "publish: s1._domainkey.bare.test. IN TXT \"{}",
            &rsa.dns_record()[..200]
        )),
        "the DKIM record to publish is the key's: {text}"
    );
    assert!(
        text.contains("publish: _dmarc.bare.test. IN TXT \"v=DMARC1; p=none"),
        "{text}"
    );

    let wrong = check_sender("wrong.test", &opts).await.unwrap();
    for check in ["SPF", "DKIM", "DMARC"] {
        assert_eq!(
            wrong.finding(check).unwrap().verdict,
            RecordState::Wrong,
            "{wrong}"
        );
    }
    assert!(
        wrong
            .finding("DKIM")
            .unwrap()
            .detail
            .contains("does not match")
    );

    // DMARC inherited from the parent domain; no selector → DKIM skipped, not failed.
    let mut no_dkim = opts.clone();
    no_dkim.dkim_selector = None;
    no_dkim.dkim_key = None;
    let sub = check_sender("news.parent.test", &no_dkim).await.unwrap();
    assert_eq!(
        sub.finding("DMARC").unwrap().verdict,
        RecordState::Ok,
        "{sub}"
    );
    assert_eq!(sub.finding("DKIM").unwrap().verdict, RecordState::Skipped);
}

// ---- the binary: flags, config file, precedence ---------------------------------------------

fn mailmerge(dir: &Path) -> Command {
    let mut c = crate::support::binary();
    c.current_dir(dir);
    c
}

async fn output(mut cmd: Command) -> (Option<i32>, String, String) {
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_sender_command_exits_1_when_missing_and_config_selector_yields_to_the_flag() {
    let ed = Signer::from_pem(ED25519_PEM.as_bytes(), "cfgsel", None).unwrap();
    let mut z = zone();
    z.txt("acme.test", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.acme.test", "v=DMARC1; p=none")
        .txt("cfgsel._domainkey.acme.test", &ed.dns_record());
    let dns = dns(z).await;
    let dir = tempfile::tempdir().unwrap();
    let dns_flag = dns.addr().to_string();

    // Default (no config, no selector): DKIM skipped, the rest present → exit 0.
    let mut c = mailmerge(dir.path());
    c.args(["check-sender", "acme.test", "--dns", &dns_flag]);
    let (code, out, err) = output(c).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("DKIM   skipped"), "{out}");

    // The config file in the working directory supplies dns, selector and key.
    std::fs::copy(fixture("dkim-ed25519.pem"), dir.path().join("k.pem")).unwrap();
    std::fs::write(
        dir.path().join("mailmerge.toml"),
        format!(
            "dns = \"{dns_flag}\"\ndkim-selector = \"cfgsel\"\ndkim-key = \"k.pem\"\n\
             deadline = \"1h\" # a run key: ignored by check-sender\n"
        ),
    )
    .unwrap();
    let mut c = mailmerge(dir.path());
    c.args(["check-sender", "acme.test"]);
    let (code, out, err) = output(c).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("cfgsel._domainkey.acme.test publishes"),
        "{out}"
    );

    // A flag beats the file: another selector, which is not published → exit 1.
    let mut c = mailmerge(dir.path());
    c.args(["check-sender", "acme.test", "--dkim-selector", "other"]);
    let (code, out, _) = output(c).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("no DKIM key record (with p=) at other._domainkey.acme.test"),
        "{out}"
    );
    assert!(
        out.contains("publish: other._domainkey.acme.test. IN TXT \"v=DKIM1; k=ed25519; p="),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_reads_the_config_file_and_flags_override_it() {
    let signer = Signer::from_pem(RSA_PEM.as_bytes(), "s1", None).unwrap();
    let mut z = zone();
    z.mx("example.com", 10, "mx.example.com")
        .addr("mx.example.com", loopback(2))
        .txt("s1._domainkey.sender.test", &signer.dns_record());
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new("email,name,token\nann@example.com,Ann,abc\n", TEMPLATE);
    let cfg_path = job.path("jobs.toml");
    std::fs::copy(fixture("dkim-rsa2048.pem"), job.path("key.pem")).unwrap();
    std::fs::write(
        &cfg_path,
        format!(
            "dns = \"{}\"\nsmtp-port = {}\nhelo = \"config.sender.test\"\nretry = \"100ms\"\n\
             deadline = \"10s\"\nquiet = true\ndkim-key = \"key.pem\"\ndkim-selector = \"s1\"\n\
             list-unsubscribe = [\"https://sender.test/u/{{{{token}}}}\", \"mailto:u@sender.test\"]\n",
            dns.addr(),
            mxs.port
        ),
    )
    .unwrap();
    let base = |extra: &[&str]| {
        let mut c = mailmerge(job.dir.path());
        c.arg("run").arg(&job.csv).arg(&job.template);
        c.arg("--config").arg(&cfg_path);
        c.args(extra);
        c
    };

    // Config only: its HELO, DKIM key and unsubscribe URIs are used.
    let (code, out, err) = output(base(&[])).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!err.contains("warning"), "{err}");
    // The flag wins over the file.
    let (code, out, err) = output(base(&["--helo", "flag.sender.test", "--fresh"])).await;
    assert_eq!(code, Some(0), "{out}{err}");

    let helos: Vec<String> = mxs
        .get(2)
        .commands()
        .into_iter()
        .filter(|c| c.to_ascii_uppercase().starts_with("EHLO"))
        .collect();
    assert_eq!(helos, ["EHLO config.sender.test", "EHLO flag.sender.test"]);
    let auth = verifier(dns.addr());
    let got = mxs.get(2).received();
    let text = String::from_utf8(got[0].data.clone()).unwrap();
    assert_eq!(
        header(&text, "List-Unsubscribe").as_deref(),
        Some("<https://sender.test/u/abc>, <mailto:u@sender.test>")
    );
    assert_eq!(
        header(&text, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert_eq!(
        dkim_results(&auth, &got[0].data).await,
        vec![DkimResult::Pass]
    );
}

#[test]
fn an_invalid_config_file_exits_2_naming_the_key() {
    let job = Job::new("email\na@example.com\n", TEMPLATE);
    std::fs::write(
        job.path("mailmerge.toml"),
        "smtp-port = 25\nconections-per-site = 3\n",
    )
    .unwrap();
    let out = mailmerge(job.dir.path())
        .arg("run")
        .arg(&job.csv)
        .arg(&job.template)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conections-per-site")
            && err.contains("mailmerge.toml")
            && err.contains("line 2"),
        "{err}"
    );
    // A well-typed value the option itself refuses: the error names the option and the file.
    std::fs::write(job.path("mailmerge.toml"), "deadline = \"5 fortnights\"\n").unwrap();
    let out = mailmerge(job.dir.path())
        .arg("run")
        .arg(&job.csv)
        .arg(&job.template)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("deadline")
            && err.contains("5 fortnights")
            && err.contains("mailmerge.toml")
            && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn dkim_and_unsubscribe_flags_are_validated_before_anything_is_sent() {
    let job = Job::new("email\na@example.com\n", TEMPLATE);
    let run = |extra: &[&str]| {
        let out = mailmerge(job.dir.path())
            .arg("run")
            .arg(&job.csv)
            .arg(&job.template)
            .args(["--dns", "127.0.0.1:9", "--quiet"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--dkim-key", &fixture("dkim-ed25519.pem")]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--dkim-key needs --dkim-selector"), "{err}");
    let (code, err) = run(&["--dkim-key", "/nonexistent.pem", "--dkim-selector", "s"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent.pem"), "{err}");
    let (code, err) = run(&["--list-unsubscribe", "ftp://x.example/u"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("https: or mailto:"), "{err}");
}

#[test]
fn a_helo_name_without_a_dot_is_warned_on_stderr() {
    let job = Job::new("email\na@example.com\n", TEMPLATE);
    let out = mailmerge(job.dir.path())
        .arg("run")
        .arg(&job.csv)
        .arg(&job.template)
        .args([
            "--dns",
            "127.0.0.1:9",
            "--dns-timeout",
            "200ms",
            "--dry-run",
            "--quiet",
        ])
        .args(["--helo", "nodot"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: EHLO name \"nodot\" is not a fully-qualified domain name"),
        "{err}"
    );
}
