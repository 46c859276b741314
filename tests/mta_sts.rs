//! MTA-STS lookups against real servers on loopback: the sandbox DNS server publishing
//! `_mta-sts` TXT records and `mta-sts.<domain>` addresses, and the sandbox HTTPS server
//! serving policy files with certificates from a test CA (RFC 8461 §3, §5.1).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mailmerge::mx::DnsOptions;
use mailmerge::sandbox::dns::{DnsServer, Zone, loopback};
use mailmerge::sandbox::https::{HttpsServer, Reply};
use mailmerge::sandbox::tls::{TestCa, self_signed};
use mailmerge::tls_policy::mta_sts::{
    Lookup, MAX_POLICY_SIZE, Mode, StsOptions, StsResolver, load_pem_certs,
};

const ENFORCE: &str = "version: STSv1\r\nmode: enforce\r\nmx: mx1.enforce.test\r\n\
                       mx: *.mx.enforce.test\r\nmax_age: 86400\r\n";

fn policy_text(mode: &str, mx: &str, max_age: u64) -> String {
    format!("version: STSv1\nmode: {mode}\nmx: {mx}\nmax_age: {max_age}\n")
}

/// The policy host of `domain`.
fn sts_host(domain: &str) -> String {
    format!("mta-sts.{domain}")
}

/// A zone publishing `record` at `_mta-sts.<domain>` and `mta-sts.<domain>` → 127.0.0.1 for
/// each (domain, record).
fn zone(domains: &[(&str, &str)]) -> Zone {
    let mut z = Zone::new();
    for (domain, record) in domains {
        z.txt(&format!("_mta-sts.{domain}"), record)
            .addr(&sts_host(domain), loopback(1));
    }
    z
}

async fn dns(zone: Zone) -> DnsServer {
    DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zone)
        .await
        .expect("dns server")
}

async fn https() -> HttpsServer {
    let ca = Arc::new(TestCa::new().expect("test CA"));
    HttpsServer::start(SocketAddr::new(loopback(1), 0), ca)
        .await
        .expect("https server")
}

fn options(dns: &DnsServer, https: &HttpsServer, cache: Option<PathBuf>) -> StsOptions {
    StsOptions {
        dns: DnsOptions {
            server: Some(dns.addr()),
            timeout: Duration::from_millis(500),
            attempts: 1,
            ..DnsOptions::default()
        },
        https_port: https.port(),
        timeout: Duration::from_secs(10),
        extra_roots: vec![https.ca().root()],
        cache,
    }
}

fn resolver(dns: &DnsServer, https: &HttpsServer, cache: Option<PathBuf>) -> StsResolver {
    StsResolver::new(options(dns, https, cache)).expect("resolver")
}

/// The policy of a lookup that must have one, and whether it came from the cache.
fn expect_policy(lookup: &Lookup) -> (&mailmerge::tls_policy::mta_sts::Policy, bool) {
    match lookup {
        Lookup::Policy { policy, from_cache } => (policy, *from_cache),
        other => panic!("expected a policy, got {other:?}"),
    }
}

fn expect_unavailable(lookup: &Lookup, needle: &str) {
    match lookup {
        Lookup::Unavailable(reason) => assert!(
            reason.contains(needle),
            "reason {reason:?} does not mention {needle:?}"
        ),
        other => panic!("expected Unavailable({needle}…), got {other:?}"),
    }
}

#[tokio::test]
async fn an_enforce_policy_is_fetched_over_https_and_matches_its_mx_hosts() {
    let https = https().await;
    https
        .serve(&sts_host("enforce.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();
    let dns = dns(zone(&[("enforce.test", "v=STSv1; id=20240101T0000;")])).await;
    let sts = resolver(&dns, &https, None);

    let lookup = sts.lookup("Enforce.Test.").await;
    let (policy, from_cache) = expect_policy(&lookup);
    assert!(!from_cache);
    assert!(lookup.enforced());
    assert_eq!(policy.id, "20240101T0000");
    assert_eq!(policy.mode, Mode::Enforce);
    assert_eq!(policy.mx, ["mx1.enforce.test", "*.mx.enforce.test"]);
    assert_eq!(policy.max_age, 86_400);
    assert!(policy.allows_mx("mx1.enforce.test"));
    assert!(policy.allows_mx("b.mx.enforce.test."));
    assert!(!policy.allows_mx("mx2.enforce.test"));
    assert!(!policy.allows_mx("a.b.mx.enforce.test"));
    assert_eq!(https.requests(&sts_host("enforce.test")), 1);
}

#[tokio::test]
async fn testing_and_none_policies_are_returned_as_published() {
    let https = https().await;
    https
        .serve(
            &sts_host("testing.test"),
            Reply::Policy(policy_text("testing", "mx.testing.test", 3600)),
        )
        .unwrap();
    https
        .serve(
            &sts_host("none.test"),
            Reply::Policy("version: STSv1\nmode: none\nmax_age: 60\n".into()),
        )
        .unwrap();
    let dns = dns(zone(&[
        ("testing.test", "v=STSv1; id=t1"),
        ("none.test", "v=STSv1; id=n1;"),
    ]))
    .await;
    let sts = resolver(&dns, &https, None);

    let testing = sts.lookup("testing.test").await;
    let (policy, _) = expect_policy(&testing);
    assert_eq!((policy.mode, policy.max_age), (Mode::Testing, 3600));
    assert!(!testing.enforced());
    let none = sts.lookup("none.test").await;
    let (policy, _) = expect_policy(&none);
    assert_eq!(policy.mode, Mode::None);
    assert!(policy.mx.is_empty());
}

#[tokio::test]
async fn a_domain_without_a_usable_txt_record_has_no_policy_and_nothing_is_fetched() {
    let https = https().await;
    for domain in ["plain.test", "two.test", "broken.test", "spf.test"] {
        https
            .serve(&sts_host(domain), Reply::Policy(ENFORCE.into()))
            .unwrap();
    }
    let mut z = zone(&[
        ("two.test", "v=STSv1; id=1;"),
        ("broken.test", "v=STSv1; id=not valid;"),
        ("spf.test", "v=spf1 -all"),
    ]);
    z.txt("_mta-sts.two.test", "v=STSv1; id=2;")
        .addr(&sts_host("plain.test"), loopback(1));
    let dns = dns(z).await;
    let sts = resolver(&dns, &https, None);

    for domain in [
        "plain.test",
        "two.test",
        "broken.test",
        "spf.test",
        "nxdomain.test",
    ] {
        assert_eq!(sts.lookup(domain).await, Lookup::NoPolicy, "{domain}");
    }
    assert_eq!(https.total_requests(), 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let https = https().await;
    https
        .serve(
            &sts_host("moved.test"),
            Reply::Redirect("https://mta-sts.elsewhere.test/.well-known/mta-sts.txt".into()),
        )
        .unwrap();
    https
        .serve(&sts_host("elsewhere.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();
    let dns = dns(zone(&[
        ("moved.test", "v=STSv1; id=1;"),
        ("elsewhere.test", "v=STSv1; id=1;"),
    ]))
    .await;
    let sts = resolver(&dns, &https, None);

    let lookup = sts.lookup("moved.test").await;
    expect_unavailable(&lookup, "301 redirect");
    expect_unavailable(&lookup, "mta-sts.elsewhere.test");
    assert_eq!(https.requests(&sts_host("moved.test")), 1);
    assert_eq!(https.requests(&sts_host("elsewhere.test")), 0);
}

#[tokio::test]
async fn error_statuses_other_media_types_and_invalid_policies_leave_no_policy() {
    let https = https().await;
    let content = |status: u16, content_type: &str, body: &str| Reply::Content {
        status,
        content_type: content_type.into(),
        body: body.as_bytes().to_vec(),
    };
    let cases = [
        (
            "notfound.test",
            content(404, "text/plain", "gone"),
            "HTTP status 404",
        ),
        (
            "error.test",
            content(503, "text/plain", ENFORCE),
            "HTTP status 503",
        ),
        ("html.test", content(200, "text/html", ENFORCE), "text/html"),
        (
            "untyped.test",
            content(200, "", ENFORCE),
            "is not text/plain",
        ),
        (
            "invalid.test",
            content(
                200,
                "text/plain; charset=utf-8",
                "version: STSv1\nmode: enforce\n",
            ),
            "invalid policy",
        ),
        (
            "binary.test",
            content(200, "text/plain", "version: STSv1\n\u{0}"),
            "invalid policy",
        ),
    ];
    let mut records = Vec::new();
    for (domain, reply, _) in &cases {
        https.serve(&sts_host(domain), reply.clone()).unwrap();
        records.push((*domain, "v=STSv1; id=1;"));
    }
    let dns = dns(zone(&records)).await;
    let sts = resolver(&dns, &https, None);

    for (domain, _, reason) in &cases {
        expect_unavailable(&sts.lookup(domain).await, reason);
        assert_eq!(https.requests(&sts_host(domain)), 1, "{domain}");
    }
    // A policy whose body is not UTF-8.
    https
        .serve(
            &sts_host("latin1.test"),
            Reply::Content {
                status: 200,
                content_type: "text/plain".into(),
                body: b"version: STSv1\nmode: enforce\nmx: caf\xe9.test\nmax_age: 1\n".to_vec(),
            },
        )
        .unwrap();
    let dns = self::dns(zone(&[("latin1.test", "v=STSv1; id=1;")])).await;
    let sts = resolver(&dns, &https, None);
    expect_unavailable(&sts.lookup("latin1.test").await, "not UTF-8");
}

#[tokio::test]
async fn an_oversize_policy_is_refused_whether_announced_or_streamed() {
    let https = https().await;
    https
        .serve(
            &sts_host("streamed.test"),
            Reply::Oversize(MAX_POLICY_SIZE + 1),
        )
        .unwrap();
    https
        .serve(
            &sts_host("announced.test"),
            Reply::Content {
                status: 200,
                content_type: "text/plain".into(),
                body: vec![b'#'; MAX_POLICY_SIZE + 1],
            },
        )
        .unwrap();
    // Exactly the cap is fine.
    let mut at_cap = ENFORCE.to_string();
    while at_cap.len() < MAX_POLICY_SIZE {
        at_cap.push('\n');
    }
    https
        .serve(&sts_host("atcap.test"), Reply::Policy(at_cap))
        .unwrap();
    let dns = dns(zone(&[
        ("streamed.test", "v=STSv1; id=1;"),
        ("announced.test", "v=STSv1; id=1;"),
        ("atcap.test", "v=STSv1; id=1;"),
    ]))
    .await;
    let sts = resolver(&dns, &https, None);

    expect_unavailable(&sts.lookup("streamed.test").await, "larger than 65536");
    expect_unavailable(&sts.lookup("announced.test").await, "larger than 65536");
    expect_policy(&sts.lookup("atcap.test").await);
}

#[tokio::test]
async fn a_certificate_for_another_name_or_from_an_untrusted_issuer_is_refused() {
    let https = https().await;
    for domain in ["wrongname.test", "selfsigned.test", "otherca.test"] {
        https
            .serve(&sts_host(domain), Reply::Policy(ENFORCE.into()))
            .unwrap();
    }
    https
        .present_cert_for(&sts_host("wrongname.test"), &["mta-sts.other.test"])
        .unwrap();
    https
        .present_identity(
            &sts_host("selfsigned.test"),
            &self_signed(&["mta-sts.selfsigned.test"]).unwrap(),
        )
        .unwrap();
    let other_ca = TestCa::new().unwrap();
    https
        .present_identity(
            &sts_host("otherca.test"),
            &other_ca.issue(&["mta-sts.otherca.test"]).unwrap(),
        )
        .unwrap();
    let dns = dns(zone(&[
        ("wrongname.test", "v=STSv1; id=1;"),
        ("selfsigned.test", "v=STSv1; id=1;"),
        ("otherca.test", "v=STSv1; id=1;"),
    ]))
    .await;
    let sts = resolver(&dns, &https, None);

    for domain in ["wrongname.test", "selfsigned.test", "otherca.test"] {
        let lookup = sts.lookup(domain).await;
        expect_unavailable(&lookup, "TLS with mta-sts.");
        expect_unavailable(&lookup, "certificate");
        assert_eq!(https.handshakes(&sts_host(domain)), 1, "{domain}");
        assert_eq!(https.requests(&sts_host(domain)), 0, "{domain}");
    }

    // The same server's own certificates are refused without the test CA among the roots.
    https
        .serve(&sts_host("good.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();
    let dns = self::dns(zone(&[("good.test", "v=STSv1; id=1;")])).await;
    let mut opts = options(&dns, &https, None);
    opts.extra_roots.clear();
    let sts = StsResolver::new(opts).unwrap();
    expect_unavailable(&sts.lookup("good.test").await, "UnknownIssuer");
}

#[tokio::test(start_paused = true)]
async fn a_policy_host_that_never_answers_times_out() {
    let https = https().await;
    https.serve(&sts_host("slow.test"), Reply::Hang).unwrap();
    let dns = dns(zone(&[("slow.test", "v=STSv1; id=1;")])).await;
    let sts = resolver(&dns, &https, None);

    // Paused time: the clock only jumps when every task waits, so reaching 10 s means the
    // lookup waited for its own timeout, not for a slow machine.
    let virtual_start = tokio::time::Instant::now();
    let lookup = sts.lookup("slow.test").await;
    expect_unavailable(&lookup, "no policy within 10s");
    assert!(virtual_start.elapsed() >= Duration::from_secs(10));
    assert_eq!(https.requests(&sts_host("slow.test")), 1);
}

#[tokio::test]
async fn a_policy_host_without_an_address_or_a_listener_leaves_no_policy() {
    let https = https().await;
    let mut z = Zone::new();
    z.txt("_mta-sts.noaddr.test", "v=STSv1; id=1;")
        .txt("_mta-sts.refused.test", "v=STSv1; id=1;")
        // Nothing listens on 127.0.0.9.
        .addr("mta-sts.refused.test", loopback(9))
        .txt("_mta-sts.dnsfail.test", "v=STSv1; id=1;")
        .servfail("mta-sts.dnsfail.test");
    let dns = dns(z).await;
    let sts = resolver(&dns, &https, None);

    expect_unavailable(&sts.lookup("noaddr.test").await, "has no address");
    expect_unavailable(
        &sts.lookup("refused.test").await,
        "cannot connect to 127.0.0.9",
    );
    expect_unavailable(&sts.lookup("dnsfail.test").await, "address lookup");
}

#[tokio::test]
async fn a_txt_lookup_failure_is_unavailable_without_a_cache_and_uses_the_cache_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("mta-sts.json");
    let https = https().await;
    https
        .serve(&sts_host("flaky.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();

    let mut failing = Zone::new();
    failing.servfail("_mta-sts.flaky.test");
    let failing = dns(failing).await;
    let sts = resolver(&failing, &https, Some(cache.clone()));
    expect_unavailable(
        &sts.lookup("flaky.test").await,
        "TXT lookup for _mta-sts.flaky.test",
    );

    // A run that fetched the policy…
    let working = dns(zone(&[("flaky.test", "v=STSv1; id=1;")])).await;
    let sts = resolver(&working, &https, Some(cache.clone()));
    expect_policy(&sts.lookup("flaky.test").await);
    sts.save().unwrap();
    // …protects the next one from a failing TXT lookup.
    let sts = resolver(&failing, &https, Some(cache));
    let lookup = sts.lookup("flaky.test").await;
    let (policy, from_cache) = expect_policy(&lookup);
    assert!(from_cache);
    assert_eq!(policy.mode, Mode::Enforce);
    assert_eq!(https.requests(&sts_host("flaky.test")), 1);
}

/// Two runs' worth of setup: one HTTPS server and a cache file.
struct Runs {
    https: HttpsServer,
    _dir: tempfile::TempDir,
    cache: PathBuf,
}

impl Runs {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache").join("mta-sts.json");
        Self {
            https: https().await,
            _dir: dir,
            cache,
        }
    }

    /// One run: a resolver over `dns` with the shared cache; looks `domain` up and saves.
    async fn run(&self, dns: &DnsServer, domain: &str) -> Lookup {
        let sts = resolver(dns, &self.https, Some(self.cache.clone()));
        let lookup = sts.lookup(domain).await;
        sts.save().unwrap();
        lookup
    }

    fn requests(&self, domain: &str) -> usize {
        self.https.requests(&sts_host(domain))
    }
}

fn edit_cache(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(path, serde_json::to_vec(&json).unwrap()).unwrap();
}

#[tokio::test]
async fn a_second_run_with_the_same_id_uses_the_cache_without_https() {
    let runs = Runs::new().await;
    runs.https
        .serve(&sts_host("cached.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();
    let dns = dns(zone(&[("cached.test", "v=STSv1; id=abc;")])).await;

    let first = runs.run(&dns, "cached.test").await;
    assert!(!expect_policy(&first).1);
    assert!(runs.cache.exists());
    let second = runs.run(&dns, "cached.test").await;
    let (policy, from_cache) = expect_policy(&second);
    assert!(from_cache);
    assert_eq!(policy, expect_policy(&first).0);
    assert_eq!(runs.requests("cached.test"), 1);
    assert_eq!(runs.https.handshakes(&sts_host("cached.test")), 1);

    // The file says what was fetched, and when it expires.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&runs.cache).unwrap()).unwrap();
    let entry = &json["policies"]["cached.test"];
    assert_eq!(entry["id"], "abc");
    assert_eq!(entry["mode"], "enforce");
    assert_eq!(
        entry["expires_at"].as_u64().unwrap() - entry["fetched_at"].as_u64().unwrap(),
        86_400
    );
}

#[tokio::test]
async fn a_changed_id_refetches_and_replaces_the_cached_policy() {
    let runs = Runs::new().await;
    runs.https
        .serve(&sts_host("changed.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();
    let old = dns(zone(&[("changed.test", "v=STSv1; id=old;")])).await;
    runs.run(&old, "changed.test").await;

    runs.https
        .serve(
            &sts_host("changed.test"),
            Reply::Policy(policy_text("testing", "new.changed.test", 600)),
        )
        .unwrap();
    let new = dns(zone(&[("changed.test", "v=STSv1; id=new;")])).await;
    let lookup = runs.run(&new, "changed.test").await;
    let (policy, from_cache) = expect_policy(&lookup);
    assert!(!from_cache);
    assert_eq!((policy.id.as_str(), policy.mode), ("new", Mode::Testing));
    assert_eq!(runs.requests("changed.test"), 2);
    // The replacement is what the next run finds.
    let again = runs.run(&new, "changed.test").await;
    assert_eq!(expect_policy(&again), (policy, true));
    assert_eq!(runs.requests("changed.test"), 2);
}

#[tokio::test]
async fn a_changed_id_whose_fetch_fails_keeps_the_cached_policy() {
    let runs = Runs::new().await;
    runs.https
        .serve(&sts_host("keep.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();
    let old = dns(zone(&[("keep.test", "v=STSv1; id=old;")])).await;
    runs.run(&old, "keep.test").await;

    runs.https
        .serve(
            &sts_host("keep.test"),
            Reply::Content {
                status: 404,
                content_type: "text/plain".into(),
                body: Vec::new(),
            },
        )
        .unwrap();
    let new = dns(zone(&[("keep.test", "v=STSv1; id=new;")])).await;
    let lookup = runs.run(&new, "keep.test").await;
    let (policy, from_cache) = expect_policy(&lookup);
    assert!(from_cache);
    assert_eq!((policy.id.as_str(), policy.mode), ("old", Mode::Enforce));
    assert_eq!(runs.requests("keep.test"), 2);
}

#[tokio::test]
async fn an_expired_cache_entry_is_refetched_and_not_used_when_the_fetch_fails() {
    let runs = Runs::new().await;
    runs.https
        .serve(&sts_host("expired.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();
    let dns = dns(zone(&[("expired.test", "v=STSv1; id=same;")])).await;
    runs.run(&dns, "expired.test").await;
    let expire = |json: &mut serde_json::Value| {
        json["policies"]["expired.test"]["fetched_at"] = 1_000.into();
        json["policies"]["expired.test"]["expires_at"] = 2_000.into();
    };

    edit_cache(&runs.cache, expire);
    let lookup = runs.run(&dns, "expired.test").await;
    assert!(!expect_policy(&lookup).1);
    assert_eq!(runs.requests("expired.test"), 2);

    // Expired and unreachable: no policy any more (RFC 8461 §5.1 forbids expired ones).
    edit_cache(&runs.cache, expire);
    runs.https
        .serve(
            &sts_host("expired.test"),
            Reply::Redirect("https://example.com/".into()),
        )
        .unwrap();
    expect_unavailable(&runs.run(&dns, "expired.test").await, "redirect");
}

#[tokio::test]
async fn a_vanished_txt_record_does_not_remove_a_cached_policy() {
    let runs = Runs::new().await;
    runs.https
        .serve(&sts_host("vanished.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();
    let with = dns(zone(&[("vanished.test", "v=STSv1; id=1;")])).await;
    runs.run(&with, "vanished.test").await;

    let without = dns(Zone::new()).await;
    let lookup = runs.run(&without, "vanished.test").await;
    let (policy, from_cache) = expect_policy(&lookup);
    assert!(from_cache);
    assert_eq!(policy.mode, Mode::Enforce);
    assert_eq!(runs.requests("vanished.test"), 1);
}

#[tokio::test]
async fn a_policy_with_max_age_zero_is_not_reused() {
    let runs = Runs::new().await;
    runs.https
        .serve(
            &sts_host("zero.test"),
            Reply::Policy(policy_text("enforce", "mx.zero.test", 0)),
        )
        .unwrap();
    let dns = dns(zone(&[("zero.test", "v=STSv1; id=1;")])).await;
    assert!(!expect_policy(&runs.run(&dns, "zero.test").await).1);
    assert!(!expect_policy(&runs.run(&dns, "zero.test").await).1);
    assert_eq!(runs.requests("zero.test"), 2);
}

#[tokio::test]
async fn a_corrupt_cache_file_is_ignored_and_replaced() {
    let runs = Runs::new().await;
    std::fs::create_dir_all(runs.cache.parent().unwrap()).unwrap();
    std::fs::write(&runs.cache, b"{\"version\": 1, \"policies\": [not json").unwrap();
    runs.https
        .serve(&sts_host("corrupt.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();
    let dns = dns(zone(&[("corrupt.test", "v=STSv1; id=1;")])).await;

    assert!(!expect_policy(&runs.run(&dns, "corrupt.test").await).1);
    assert!(expect_policy(&runs.run(&dns, "corrupt.test").await).1);
    assert_eq!(runs.requests("corrupt.test"), 1);
}

#[tokio::test]
async fn tls_ca_files_are_read_as_pem_roots() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new().unwrap();
    let leaf = ca.issue(&["mta-sts.pem.test"]).unwrap();
    let bundle = dir.path().join("bundle.pem");
    // A bundle with a key in it too: keys are skipped.
    std::fs::write(
        &bundle,
        format!("{}{}{}", ca.root_pem(), leaf.key_pem, leaf.cert_pem),
    )
    .unwrap();
    let certs = load_pem_certs(&bundle).unwrap();
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0], ca.root());

    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "nothing here\n").unwrap();
    let e = load_pem_certs(&empty).unwrap_err().to_string();
    assert!(e.contains("no PEM certificate"), "{e}");
    let e = load_pem_certs(&dir.path().join("missing.pem"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing.pem"), "{e}");

    // The loaded root is what makes the sandbox's certificates trusted.
    let https = HttpsServer::start(SocketAddr::new(loopback(1), 0), Arc::new(ca))
        .await
        .unwrap();
    https
        .serve(&sts_host("pem.test"), Reply::Policy(ENFORCE.into()))
        .unwrap();
    let dns = dns(zone(&[("pem.test", "v=STSv1; id=1;")])).await;
    let mut opts = options(&dns, &https, None);
    opts.extra_roots = load_pem_certs(&bundle).unwrap();
    let sts = StsResolver::new(opts).unwrap();
    expect_policy(&sts.lookup("pem.test").await);
}
