//! Interop with real Postfix servers on loopback: `smtp-sink` for volume and its fault switches,
//! and a real `smtpd` (a private Postfix instance, tests/support/mta.rs) with STARTTLS as the MX.
//!
//! These tests need Debian's `postfix` package (`.ci/run` installs it). Without it they print
//! "SKIPPED" and pass locally, but FAIL when `CI=true`, so CI never skips them silently. The
//! Postfix instance must be started as root (as CI and the development machine run).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::mta::{Postfix, PostfixOptions, free_port, is_root, need, wait_listening};
use crate::support::*;
use mailmerge::delivery::RetryPolicy;
use mailmerge::run;
use mailmerge::sandbox::dns::{Zone, loopback};
use mailmerge::smtp::Timeouts;

/// A running `smtp-sink`; killed when dropped.
struct Sink {
    child: Child,
    addr: SocketAddr,
}

impl Sink {
    fn start(octet: u8, flags: &[&str]) -> Option<Self> {
        let bin = need("smtp-sink")?;
        let ip = loopback(octet);
        let addr = SocketAddr::new(ip, free_port(ip));
        let mut cmd = Command::new(bin);
        if is_root() {
            cmd.args(["-u", "postfix"]);
        }
        let child = cmd
            .args(flags)
            .arg(addr.to_string())
            .arg("256")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn smtp-sink");
        wait_listening(addr, "smtp-sink", String::new);
        Some(Self { child, addr })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn zone_to(domain: &str, mx: &str, octet: u8) -> Zone {
    let mut z = zone();
    z.mx(domain, 10, mx).addr(mx, loopback(octet));
    z
}

fn list(n: usize, domains: &[&str]) -> String {
    let mut csv = String::from("email,name\n");
    for i in 0..n {
        writeln!(csv, "user{i}@{},User {i}", domains[i % domains.len()]).unwrap();
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sink_takes_a_volume_batch_over_reused_pipelined_connections() {
    let Some(sink) = Sink::start(61, &[]) else {
        return;
    };
    let mut z = zone();
    let domains: Vec<String> = (0..20).map(|i| format!("v{i}.test")).collect();
    for d in &domains {
        z.mx(d, 10, "mx.sink.test");
    }
    z.addr("mx.sink.test", loopback(61));
    let dns = dns(z).await;
    let names: Vec<&str> = domains.iter().map(String::as_str).collect();
    let job = Job::new(&list(1000, &names), TEMPLATE);
    let mut cfg = job.config(&dns, sink.addr.port());
    cfg.delivery.connections_per_site = std::num::NonZeroUsize::new(4).expect("non-zero");
    let report = run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    assert_eq!(rows.len(), 1000);
    for r in &rows {
        assert_eq!(
            (
                r["status"].as_str(),
                r["code"].as_str(),
                r["enhanced_code"].as_str()
            ),
            ("delivered", "250", "2.0.0"),
            "{r:?}"
        );
    }
    assert!(
        report.summary.connections <= 4,
        "one site, connections reused: {}",
        report.summary.connections
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sink_soft_rejects_are_retried_and_its_500_hard_rejects_are_never_bounces() {
    let (Some(soft), Some(hard)) = (
        Sink::start(62, &["-r", "rcpt"]),
        Sink::start(63, &["-f", "rcpt"]),
    ) else {
        return;
    };
    // Each sink has its own port and mailmerge has one --smtp-port: one run per sink.
    for (sink, domain, octet) in [(&soft, "soft.test", 62), (&hard, "hard.test", 63)] {
        let dns = dns(zone_to(domain, &format!("mx.{domain}"), octet)).await;
        let job = Job::new(&list(3, &[domain]), TEMPLATE);
        let mut cfg = job.config(&dns, sink.addr.port());
        cfg.delivery.retry = RetryPolicy::parse("100ms").unwrap();
        cfg.delivery.deadline = Duration::from_millis(800);
        run(cfg).await.expect("run");
        for r in read_results(&job.results) {
            if domain == "soft.test" {
                assert_eq!(
                    (r["status"].as_str(), r["code"].as_str(), r["step"].as_str()),
                    ("deferred", "450", "rcpt"),
                    "{r:?}"
                );
                assert!(r["attempts"].parse::<u32>().unwrap() >= 3, "{r:?}");
            } else {
                assert_eq!(
                    (
                        r["status"].as_str(),
                        r["code"].as_str(),
                        r["enhanced_code"].as_str(),
                        r["attempts"].as_str()
                    ),
                    ("deferred", "500", "5.3.0", "1"),
                    "a 500 is about our protocol, never a bounce: {r:?}"
                );
                assert_eq!(r["category"], "protocol", "{r:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sink_421_and_silent_disconnects_are_deferred_not_lost() {
    for (flags, octet, expect) in [(["-Q", "data"], 64, "421"), (["-q", "data"], 65, "closed")] {
        let Some(sink) = Sink::start(octet, &flags) else {
            return;
        };
        let dns = dns(zone_to("d.test", "mx.d.test", octet)).await;
        let job = Job::new(&list(4, &["d.test"]), TEMPLATE);
        let mut cfg = job.config(&dns, sink.addr.port());
        cfg.delivery.retry = RetryPolicy::parse("100ms").unwrap();
        cfg.delivery.deadline = Duration::from_millis(700);
        run(cfg).await.expect("run");
        let rows = read_results(&job.results);
        assert_eq!(rows.len(), 4);
        for r in rows {
            assert_eq!(r["status"], "deferred", "{r:?}");
            assert!(
                r["code"] == expect || r["response"].contains(expect),
                "{flags:?}: {r:?}"
            );
            // Every row got its turn (none starved behind a failing one).
            assert!(r["attempts"].parse::<u32>().unwrap() >= 1, "{r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sink_without_pipelining_or_enhanced_codes_still_delivers() {
    // smtp-sink -E stops advertising ENHANCEDSTATUSCODES but its replies still carry codes;
    // what matters is that the dialogue works without either extension.
    let Some(sink) = Sink::start(66, &["-p", "-E"]) else {
        return;
    };
    let dns = dns(zone_to("d.test", "mx.d.test", 66)).await;
    let job = Job::new(&list(5, &["d.test"]), TEMPLATE);
    let mut cfg = job.config(&dns, sink.addr.port());
    cfg.delivery.connections_per_site = std::num::NonZeroUsize::new(1).expect("non-zero");
    run(cfg).await.expect("run");
    for r in read_results(&job.results) {
        assert_eq!(
            (
                r["status"].as_str(),
                r["code"].as_str(),
                r["enhanced_code"].as_str()
            ),
            ("delivered", "250", "2.0.0"),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_sink_delays_are_tolerated_within_the_timeouts_and_deferred_past_them() {
    let Some(sink) = Sink::start(67, &["-w", "1"]) else {
        return;
    };
    let dns = dns(zone_to("d.test", "mx.d.test", 67)).await;
    for (limit, want) in [
        (Duration::from_millis(300), "deferred"),
        (Duration::from_secs(5), "delivered"),
    ] {
        let job = Job::new(&list(1, &["d.test"]), TEMPLATE);
        let mut cfg = job.config(&dns, sink.addr.port());
        cfg.delivery.timeouts = Timeouts::uniform(limit);
        cfg.delivery.retry = RetryPolicy::parse("none").unwrap();
        run(cfg).await.expect("run");
        let r = &read_results(&job.results)[0];
        assert_eq!(r["status"], want, "timeout {limit:?}: {r:?}");
        if want == "deferred" {
            assert!(r["response"].contains("timed out"), "{r:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_smtpd_with_starttls_takes_a_tls_delivery() {
    // A self-signed certificate made at test time, as on most real MX hosts.
    let id = mailmerge::sandbox::tls::self_signed(&["mx.pf.test"]).unwrap();
    let Some(pf) = Postfix::start(
        70,
        PostfixOptions {
            domain: "pf.test",
            tls: Some((&id.cert_pem, &id.key_pem)),
            master_cf: "",
            main_cf: "",
        },
    ) else {
        return;
    };
    let dns = dns(zone_to("pf.test", "mx.pf.test", 70)).await;
    let job = Job::new(&list(3, &["pf.test"]), TEMPLATE);
    let mut cfg = job.config(&dns, pf.addr.port());
    cfg.delivery.connections_per_site = std::num::NonZeroUsize::new(1).expect("non-zero");
    run(cfg).await.expect("run");
    for r in read_results(&job.results) {
        assert_eq!(
            (
                r["status"].as_str(),
                r["tls"].as_str(),
                r["enhanced_code"].as_str()
            ),
            ("delivered", "TLSv1.3", "2.0.0"),
            "{r:?}\nlog:\n{}",
            pf.log()
        );
        // "Ok: queued as X" after DATA, "Ok: 450 bytes queued as X" after BDAT (CHUNKING).
        assert!(
            r["response"].starts_with("Ok: ") && r["response"].contains("queued as "),
            "{r:?}"
        );
    }
    // Postfix's own account: one TLS session, three messages delivered to its Maildir.
    let start = Instant::now();
    loop {
        let log = pf.log();
        let sent = log.matches("status=sent").count();
        // smtpd logs "starttls=1" in its disconnect line, which may come after the deliveries.
        if sent == 3 && log.contains("starttls=1") {
            assert!(log.contains("TLS connection established"), "{log}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "postfix did not process 3 messages in one STARTTLS session:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
