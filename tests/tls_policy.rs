//! Published TLS policies honored end to end: whole runs against real servers on
//! loopback — the sandbox DNS server or a DNSSEC-signed one, an HTTPS server serving MTA-STS
//! policies with certificates from a test CA, and SMTP receivers presenting certificates from
//! that CA, self-signed ones, or no STARTTLS at all.
//!
//! What is asserted is what a receiver that publishes a policy cares about: under `enforce` and
//! DANE nothing reaches a host in the clear or past a certificate the policy does not accept
//! (the receiver saw no MAIL command), and the row says why (`deferred`, category `tls`).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::support::*;
use hickory_proto::rr::RecordType;
use mailmerge::delivery::RetryPolicy;
use mailmerge::run;
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::dnssec::{SignedDnsServer, SignedZones};
use mailmerge::sandbox::https::{HttpsServer, Reply};
use mailmerge::sandbox::receiver::{ReceiverConfig, StartTls};
use mailmerge::sandbox::tls::{Identity, TestCa, self_signed};
use mailmerge::tls_policy::PolicyKind;
use mailmerge::tls_policy::dane::Tlsa;

/// A TXT record announcing an MTA-STS policy.
const STS_TXT: &str = "v=STSv1; id=20261129T000000;";

fn policy(mode: &str, mx: &[&str]) -> String {
    let mut text = format!("version: STSv1\r\nmode: {mode}\r\n");
    for m in mx {
        text.push_str(&format!("mx: {m}\r\n"));
    }
    text.push_str("max_age: 86400\r\n");
    text
}

async fn https() -> HttpsServer {
    let ca = Arc::new(TestCa::new().expect("test CA"));
    HttpsServer::start(SocketAddr::new(loopback(1), 0), ca)
        .await
        .expect("https server")
}

fn offering(identity: &Identity) -> ReceiverConfig {
    ReceiverConfig {
        starttls: Some(StartTls::Offer(identity.server_config().unwrap())),
        ..ReceiverConfig::default()
    }
}

/// Publishes `domain` → `mx` at 127.0.0.`octet`, and (with `policy`) its MTA-STS record and
/// policy host.
fn publish(
    z: &mut mailmerge::sandbox::dns::Zone,
    https: &HttpsServer,
    (domain, mx, octet): (&str, &str, u8),
    policy: Option<String>,
) {
    z.mx(domain, 10, mx).addr(mx, loopback(octet));
    if let Some(text) = policy {
        z.txt(&format!("_mta-sts.{domain}"), STS_TXT)
            .addr(&format!("mta-sts.{domain}"), loopback(1));
        https
            .serve(&format!("mta-sts.{domain}"), Reply::Policy(text))
            .unwrap();
    }
}

fn no_mail_reached(mxs: &Mxs, octet: u8) {
    let cmds = mxs.get(octet).commands();
    assert!(
        !cmds.iter().any(|c| c.starts_with("MAIL")),
        "127.0.0.{octet} must get nothing: {cmds:?}"
    );
}

fn deferred_for_tls(rows: &[std::collections::HashMap<String, String>], email: &str) {
    let r = row(rows, email);
    assert_eq!(
        (
            r["status"].as_str(),
            r["step"].as_str(),
            r["category"].as_str()
        ),
        ("deferred", "starttls", "tls"),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enforced_mta_sts_policy_means_verified_tls_to_a_listed_host_or_no_delivery() {
    let https = https().await;
    let ca = https.ca().clone();
    let mut z = zone();
    let enforce = |mx: &str| Some(policy("enforce", &[mx]));
    publish(
        &mut z,
        &https,
        ("good.test", "mx.good.test", 2),
        enforce("mx.good.test"),
    );
    publish(
        &mut z,
        &https,
        ("selfsigned.test", "mx.selfsigned.test", 3),
        enforce("*.selfsigned.test"),
    );
    publish(
        &mut z,
        &https,
        ("stripped.test", "mx.stripped.test", 4),
        enforce("mx.stripped.test"),
    );
    publish(
        &mut z,
        &https,
        ("unlisted.test", "mx.unlisted.test", 5),
        enforce("mx.elsewhere.test"),
    );
    publish(&mut z, &https, ("plain.test", "mx.plain.test", 6), None);
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![
        (2, offering(&ca.issue(&["mx.good.test"]).unwrap())),
        (3, offering(&self_signed(&["mx.selfsigned.test"]).unwrap())),
        // An attacker stripping STARTTLS from the EHLO reply looks exactly like this.
        (4, ReceiverConfig::default()),
        (5, offering(&ca.issue(&["mx.unlisted.test"]).unwrap())),
        (6, offering(&self_signed(&["mx.plain.test"]).unwrap())),
    ])
    .await;
    let job = Job::new(
        "email,name\na@good.test,A\nb@selfsigned.test,B\nc@stripped.test,C\n\
         d@unlisted.test,D\ne@plain.test,E\n",
        TEMPLATE,
    );
    let mut cfg = job.config(&dns, mxs.port);
    cfg.transport.mta_sts_port = https.port();
    cfg.tls_extra_roots = vec![ca.root()];
    cfg.delivery.retry = RetryPolicy::parse("none").unwrap();
    let report = run(cfg).await.expect("run");
    let rows = read_results(&job.results);

    let good = row(&rows, "a@good.test");
    assert_eq!(
        (
            good["status"].as_str(),
            good["tls"].as_str(),
            good["tls_policy"].as_str()
        ),
        ("delivered", "TLSv1.3", "mta-sts"),
        "{good:?}"
    );
    for email in ["b@selfsigned.test", "c@stripped.test", "d@unlisted.test"] {
        deferred_for_tls(&rows, email);
        assert_eq!(row(&rows, email)["tls_policy"], "mta-sts");
    }
    assert!(row(&rows, "b@selfsigned.test")["response"].contains("certificate"));
    assert!(row(&rows, "c@stripped.test")["response"].contains("MTA-STS policy requires TLS"));
    assert!(
        row(&rows, "d@unlisted.test")["response"].contains("not an MX host of the domain's policy")
    );
    for octet in [3, 4] {
        no_mail_reached(&mxs, octet);
    }
    assert_eq!(
        mxs.get(5).connections(),
        0,
        "an unlisted MX is never connected to"
    );
    let plain = row(&rows, "e@plain.test");
    assert_eq!(
        (plain["status"].as_str(), plain["tls_policy"].as_str()),
        ("delivered", "opportunistic"),
        "{plain:?}"
    );
    let counts = &report.summary.tls_policies;
    assert_eq!(counts.get(&PolicyKind::MtaSts), Some(&4), "{counts:?}");
    assert_eq!(
        counts.get(&PolicyKind::Opportunistic),
        Some(&1),
        "{counts:?}"
    );
    // The sandbox DNS server serves no DNSSEC: DANE is off, and the summary says so.
    assert!(
        report
            .summary
            .tls_notes
            .iter()
            .any(|n| n.contains("DANE not checked")),
        "{:?}",
        report.summary.tls_notes
    );
    for domain in [
        "good.test",
        "selfsigned.test",
        "stripped.test",
        "unlisted.test",
    ] {
        assert_eq!(
            https.requests(&format!("mta-sts.{domain}")),
            1,
            "one fetch per domain per run"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domains_split_by_their_policy_still_share_one_limit_on_their_mx() {
    use mailmerge::sandbox::receiver::{Gauge, Rule};
    let https = https().await;
    let mut z = zone();
    publish(
        &mut z,
        &https,
        ("strict.test", "mx.shared.test", 2),
        Some(policy("enforce", &["mx.shared.test"])),
    );
    z.mx("loose.test", 10, "mx.shared.test");
    let dns = dns(z).await;
    let gauge = Arc::new(Gauge::default());
    let identity = https.ca().issue(&["mx.shared.test"]).unwrap();
    let receiver = ReceiverConfig {
        // Slow enough that sessions would overlap if the two sites had a limit each.
        script: Arc::new(|_: &str, _| Rule::SlowDataEnd(std::time::Duration::from_millis(20))),
        gauge: gauge.clone(),
        ..offering(&identity)
    };
    let mxs = Mxs::start(vec![(2, receiver)]).await;
    let mut csv = String::from("email,name\n");
    for i in 0..10 {
        csv.push_str(&format!("s{i}@strict.test,S\nl{i}@loose.test,L\n"));
    }
    let job = Job::new(&csv, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.transport.mta_sts_port = https.port();
    cfg.tls_extra_roots = vec![https.ca().root()];
    cfg.delivery.connections_per_site = std::num::NonZeroUsize::new(1).unwrap();
    let report = run(cfg).await.expect("run");
    assert!(report.summary.all_delivered(), "{}", report.summary);
    let rows = read_results(&job.results);
    assert_eq!(row(&rows, "s0@strict.test")["tls_policy"], "mta-sts");
    assert_eq!(row(&rows, "l0@loose.test")["tls_policy"], "opportunistic");
    assert_eq!(
        gauge.peak(),
        1,
        "--connections-per-site is about the MX hosts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testing_policy_delivers_and_reports_what_enforce_would_have_refused() {
    let https = https().await;
    let ca = https.ca().clone();
    let mut z = zone();
    publish(
        &mut z,
        &https,
        ("valid.test", "mx.valid.test", 2),
        Some(policy("testing", &["mx.valid.test"])),
    );
    publish(
        &mut z,
        &https,
        ("badcert.test", "mx.badcert.test", 3),
        Some(policy("testing", &["mx.badcert.test"])),
    );
    publish(
        &mut z,
        &https,
        ("cleartext.test", "mx.cleartext.test", 4),
        Some(policy("testing", &["mx.cleartext.test"])),
    );
    publish(
        &mut z,
        &https,
        ("off.test", "mx.off.test", 5),
        Some(policy("none", &[])),
    );
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![
        (2, offering(&ca.issue(&["mx.valid.test"]).unwrap())),
        (3, offering(&self_signed(&["mx.badcert.test"]).unwrap())),
        (4, ReceiverConfig::default()),
        (5, offering(&self_signed(&["mx.off.test"]).unwrap())),
    ])
    .await;
    let job = Job::new(
        "email,name\na@valid.test,A\nb@badcert.test,B\nc@cleartext.test,C\nd@off.test,D\n",
        TEMPLATE,
    );
    let mut cfg = job.config(&dns, mxs.port);
    cfg.transport.mta_sts_port = https.port();
    cfg.tls_extra_roots = vec![ca.root()];
    let report = run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    for r in &rows {
        assert_eq!(
            r["status"], "delivered",
            "testing and none never hold mail back: {r:?}"
        );
    }
    let valid = row(&rows, "a@valid.test");
    assert_eq!(
        (
            valid["tls_policy"].as_str(),
            valid["tls_policy_note"].as_str()
        ),
        ("mta-sts-testing", "")
    );
    let bad = row(&rows, "b@badcert.test");
    assert_eq!(bad["tls_policy"], "mta-sts-testing");
    assert!(
        bad["tls_policy_note"].contains("enforce would have refused")
            && bad["tls_policy_note"].contains("certificate not valid for mx.badcert.test"),
        "{bad:?}"
    );
    let clear = row(&rows, "c@cleartext.test");
    assert_eq!(clear["tls"], "none");
    assert!(
        clear["tls_policy_note"].contains("offered no STARTTLS"),
        "{clear:?}"
    );
    assert_eq!(row(&rows, "d@off.test")["tls_policy"], "opportunistic");
    assert_eq!(report.summary.tls_would_fail, 2);
    assert!(
        report
            .summary
            .to_string()
            .contains("2 would fail under MTA-STS enforce")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_policy_opportunistic_looks_nothing_up_and_sends_as_before() {
    let https = https().await;
    let mut z = zone();
    publish(
        &mut z,
        &https,
        ("strict.test", "mx.strict.test", 2),
        Some(policy("enforce", &["mx.strict.test"])),
    );
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(
        2,
        offering(&self_signed(&["mx.strict.test"]).unwrap()),
    )])
    .await;
    let job = Job::new("email,name\na@strict.test,A\n", TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.transport.mta_sts_port = https.port();
    cfg.transport.tls_policy = mailmerge::tls_policy::PolicyMode::Opportunistic;
    run(cfg).await.expect("run");
    let r = &read_results(&job.results)[0];
    assert_eq!(
        (r["status"].as_str(), r["tls_policy"].as_str()),
        ("delivered", "opportunistic"),
        "{r:?}"
    );
    assert_eq!(https.total_requests(), 0);
    assert_eq!(dns.query_count("_mta-sts.strict.test", RecordType::TXT), 0);
}

/// A signed `dane.test` zone and an unsigned `plain.test` one under a private root, with one
/// domain per case; returns the server and the trust anchor file.
struct Dane {
    dns: SignedDnsServer,
    anchor: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn dane_dns(zones: &SignedZones) -> Dane {
    let dns = SignedDnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zones)
        .await
        .expect("signed dns");
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("root.key");
    dns.write_trust_anchor(&anchor).unwrap();
    Dane {
        dns,
        anchor,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_requires_a_certificate_matching_the_validated_tlsa_records() {
    let own = self_signed(&["mx.ok.dane.test"]).unwrap();
    let other = self_signed(&["someone.else.test"]).unwrap();
    let tlsa = |id: &Identity| Tlsa::from_certificate(3, 1, 1, &id.chain[0]).unwrap();
    let mut zones = SignedZones::new();
    zones.signed_zone("dane.test").unsigned_zone("plain.test");
    for (domain, mx, octet) in [
        ("ok.dane.test", "mx.ok.dane.test", 2),
        ("mismatch.dane.test", "mx.mismatch.dane.test", 3),
        ("bogus.dane.test", "mx.bogus.dane.test", 4),
        ("nostarttls.dane.test", "mx.nostarttls.dane.test", 5),
        ("plain.test", "mx.plain.test", 6),
    ] {
        zones.mx(domain, 10, mx).addr(mx, loopback(octet));
    }
    zones
        // DANE-EE with a self-signed certificate: what most DANE MX hosts publish.
        .tlsa("mx.ok.dane.test", 25, &tlsa(&own))
        .tlsa("mx.mismatch.dane.test", 25, &tlsa(&own))
        .tlsa("mx.bogus.dane.test", 25, &tlsa(&own))
        .corrupt_signature("_25._tcp.mx.bogus.dane.test", RecordType::TLSA)
        .tlsa("mx.nostarttls.dane.test", 25, &tlsa(&own))
        // In an unsigned zone a TLSA record proves nothing: opportunistic TLS.
        .tlsa("mx.plain.test", 25, &tlsa(&own));
    let dane = dane_dns(&zones).await;
    let mxs = Mxs::start(vec![
        (2, offering(&own)),
        (3, offering(&other)),
        (4, offering(&own)),
        (5, ReceiverConfig::default()),
        (6, offering(&other)),
    ])
    .await;
    let job = Job::new(
        "email,name\na@ok.dane.test,A\nb@mismatch.dane.test,B\nc@bogus.dane.test,C\n\
         d@nostarttls.dane.test,D\ne@plain.test,E\n",
        TEMPLATE,
    );
    let mut cfg = job.config(&dns(zone()).await, mxs.port);
    cfg.dns.server = Some(dane.dns.addr());
    cfg.transport.dnssec_trust_anchor = Some(dane.anchor.clone());
    cfg.delivery.retry = RetryPolicy::parse("none").unwrap();
    let report = run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    let ok = row(&rows, "a@ok.dane.test");
    assert_eq!(
        (
            ok["status"].as_str(),
            ok["tls"].as_str(),
            ok["tls_policy"].as_str()
        ),
        ("delivered", "TLSv1.3", "dane"),
        "{ok:?}"
    );
    for email in [
        "b@mismatch.dane.test",
        "c@bogus.dane.test",
        "d@nostarttls.dane.test",
    ] {
        deferred_for_tls(&rows, email);
        assert_eq!(row(&rows, email)["tls_policy"], "dane");
    }
    assert!(
        row(&rows, "b@mismatch.dane.test")["response"].contains("matches none of its TLSA records")
    );
    assert!(row(&rows, "c@bogus.dane.test")["response"].contains("bogus"));
    assert!(row(&rows, "d@nostarttls.dane.test")["response"].contains("DANE requires TLS"));
    for octet in [3, 5] {
        no_mail_reached(&mxs, octet);
    }
    assert_eq!(
        mxs.get(4).connections(),
        0,
        "a bogus TLSA answer: the host is not used"
    );
    let plain = row(&rows, "e@plain.test");
    assert_eq!(
        (plain["status"].as_str(), plain["tls_policy"].as_str()),
        ("delivered", "opportunistic"),
        "{plain:?}"
    );
    assert!(
        report.summary.tls_notes.is_empty(),
        "{:?}",
        report.summary.tls_notes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dane_wins_over_mta_sts_for_a_host_with_both() {
    let https = https().await;
    // Self-signed: MTA-STS alone would refuse it, its TLSA record accepts it.
    let own = self_signed(&["mx.both.dane.test"]).unwrap();
    let mut zones = SignedZones::new();
    zones
        .signed_zone("dane.test")
        .mx("both.dane.test", 10, "mx.both.dane.test")
        .addr("mx.both.dane.test", loopback(2))
        .tlsa(
            "mx.both.dane.test",
            25,
            &Tlsa::from_certificate(3, 0, 2, &own.chain[0]).unwrap(),
        )
        .txt("_mta-sts.both.dane.test", STS_TXT)
        .addr("mta-sts.both.dane.test", loopback(1));
    https
        .serve(
            "mta-sts.both.dane.test",
            Reply::Policy(policy("enforce", &["mx.both.dane.test"])),
        )
        .unwrap();
    let dane = dane_dns(&zones).await;
    let mxs = Mxs::start(vec![(2, offering(&own))]).await;
    let job = Job::new("email,name\na@both.dane.test,A\n", TEMPLATE);
    let mut cfg = job.config(&dns(zone()).await, mxs.port);
    cfg.dns.server = Some(dane.dns.addr());
    cfg.transport.dnssec_trust_anchor = Some(dane.anchor.clone());
    cfg.transport.mta_sts_port = https.port();
    cfg.tls_extra_roots = vec![https.ca().root()];
    run(cfg).await.expect("run");
    let r = &read_results(&job.results)[0];
    assert_eq!(
        (r["status"].as_str(), r["tls_policy"].as_str()),
        ("delivered", "dane"),
        "{r:?}"
    );
    assert_eq!(
        https.requests("mta-sts.both.dane.test"),
        1,
        "the policy was fetched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_shows_each_sites_policy_and_the_cache_saves_the_next_fetch() {
    let https = https().await;
    let mut z = zone();
    publish(
        &mut z,
        &https,
        ("strict.test", "mx.strict.test", 2),
        Some(policy("enforce", &["mx.strict.test"])),
    );
    publish(&mut z, &https, ("loose.test", "mx.strict.test", 2), None);
    let dns = dns(z).await;
    let job = Job::new("email,name\na@strict.test,A\nb@loose.test,B\n", TEMPLATE);
    let ca_file = job.path("ca.pem");
    std::fs::write(&ca_file, https.ca().root_pem()).unwrap();
    let cache = job.path("mta-sts.json");
    let check = |cache: &std::path::Path| {
        let mut cmd = binary();
        cmd.arg("check")
            .arg(&job.csv)
            .arg(&job.template)
            .args([
                "--dns",
                &dns.addr().to_string(),
                "--mta-sts-port",
                &https.port().to_string(),
            ])
            .arg("--tls-ca")
            .arg(&ca_file)
            .arg("--mta-sts-cache")
            .arg(cache);
        cmd
    };
    let out = tokio::task::spawn_blocking({
        let mut cmd = check(&cache);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("mx.strict.test [mta-sts enforce: mx.strict.test]: 1 message(s)")
            && stdout.contains("tls: mta-sts (mx: mx.strict.test)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("tls: no published policy"),
        "the other domain's site: {stdout}"
    );
    assert_eq!(https.requests("mta-sts.strict.test"), 1);
    let again = tokio::task::spawn_blocking({
        let mut cmd = check(&cache);
        move || cmd.output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(
        https.requests("mta-sts.strict.test"),
        1,
        "the cached policy (same id, unexpired) is not fetched again"
    );
}
