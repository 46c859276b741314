//! Crash-safe, idempotent re-runs: the real `mailmerge run` binary killed (SIGKILL) or
//! interrupted (SIGINT) mid-batch against loopback servers this test starts, then re-run; and
//! the journal's row identity (edited, re-sorted lists), deferred-only retries, `--limit`
//! and `--fresh` through the library.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;
use mailmerge::run;
use mailmerge::sandbox::dns::{DnsServer, loopback};
use mailmerge::sandbox::receiver::{Receiver, ReceiverConfig, Rule};

fn one_site_zone(domains: &[&str]) -> mailmerge::sandbox::dns::Zone {
    let mut z = zone();
    for d in domains {
        z.mx(d, 10, "mx.provider.test");
    }
    z.addr("mx.provider.test", loopback(2));
    z
}

/// The binary with flags pointing at the test servers.
fn command(job: &Job, dns: &DnsServer, port: u16, extra: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_mailmerge"));
    c.envs(crate::support::home_env(&job.home()));
    c.arg("run")
        .arg(&job.csv)
        .arg(&job.template)
        .arg("--results")
        .arg(&job.results)
        .args(["--dns", &dns.addr().to_string()])
        .args(["--smtp-port", &port.to_string()])
        .args([
            "--helo",
            "sender.test",
            "--quiet",
            "--retry",
            "100ms",
            "--deadline",
            "30s",
            "--smtp-timeout",
            "5s",
            "--dns-timeout",
            "1s",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

fn copies(r: &Receiver) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for msg in r.received() {
        *m.entry(msg.rcpt_to).or_default() += 1;
    }
    m
}

/// Waits until the receiver holds at least `n` messages or `child` exits; true if it exited.
async fn wait_for(r: &Receiver, n: usize, child: &mut tokio::process::Child) -> bool {
    let start = Instant::now();
    while r.received().len() < n {
        if child.try_wait().expect("try_wait").is_some() {
            return true;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no progress");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

fn signal(child: &tokio::process::Child, sig: &str) {
    let pid = child.id().expect("pid").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_batch_then_rerun_sends_everyone_once_within_the_documented_bound() {
    const N: usize = 60;
    const CONNECTIONS: usize = 3;
    let dns = dns(one_site_zone(&["a.test", "b.test", "c.test"])).await;
    // Replies are slow so that each kill lands mid-batch; half the recipients are slow at RCPT
    // (not yet delivered when killed), half after the message is stored (delivered, but the
    // sender may die before it hears the 250: the duplicate window).
    let script: mailmerge::sandbox::receiver::Script = Arc::new(|rcpt: &str, _| {
        let n: usize = rcpt
            .trim_start_matches('u')
            .split('@')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if n.is_multiple_of(2) {
            Rule::SlowDataEnd(Duration::from_millis(25))
        } else {
            Rule::SlowRcpt(Duration::from_millis(25))
        }
    });
    let mxs = Mxs::start(vec![(
        2,
        ReceiverConfig {
            script,
            ..ReceiverConfig::default()
        },
    )])
    .await;
    let rx = mxs.get(2);
    let mut csv = String::from("email,name\n");
    for i in 0..N {
        writeln!(csv, "u{i}@{}.test,User {i}", ["a", "b", "c"][i % 3]).unwrap();
    }
    let job = Job::new(&csv, TEMPLATE);
    let conns = CONNECTIONS.to_string();
    let extra = ["--connections-per-site", conns.as_str()];

    let mut kills = 0;
    for round in 1..=4 {
        let mut child = command(&job, &dns, mxs.port, &extra)
            .spawn()
            .expect("spawn");
        // Kill after ~8 more messages arrived in this round.
        let target = rx.received().len() + 8;
        if wait_for(rx, target, &mut child).await {
            break;
        }
        child.start_kill().expect("SIGKILL");
        let status = child.wait().await.expect("wait");
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "round {round} was killed"
        );
        kills += 1;
    }
    assert!(kills >= 3, "the batch outlived the kills: {kills}");
    let before_final = rx.received().len();
    assert!(before_final < N + kills * CONNECTIONS, "still mid-batch");

    let out = command(&job, &dns, mxs.port, &extra)
        .output()
        .await
        .expect("final run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_results(&job.results);
    assert_eq!(rows.len(), N, "one result row per input row");
    assert!(rows.iter().all(|r| r["status"] == "delivered"), "{rows:?}");

    let got = copies(rx);
    let mut duplicates = 0;
    for i in 0..N {
        let email = format!("u{i}@{}.test", ["a", "b", "c"][i % 3]);
        let n = got.get(&email).copied().unwrap_or(0);
        assert!(n >= 1, "{email} never received");
        assert!(n <= 1 + kills, "{email} received {n} times");
        duplicates += n - 1;
    }
    // README "Re-running safely": at most one duplicate per open connection per kill.
    assert!(
        duplicates <= kills * CONNECTIONS,
        "{duplicates} duplicates after {kills} kills"
    );
    println!(
        "crash test: {kills} SIGKILLs, {N} recipients, {} messages received, {duplicates} duplicates (bound {})",
        rx.received().len(),
        kills * CONNECTIONS
    );
    // No per-recipient promise beyond that bound: a kill that lands between the server's 250
    // to the final "." and the journal write duplicates whichever message it was.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_finishes_in_flight_messages_writes_the_report_and_exits_130() {
    const N: usize = 30;
    let dns = dns(one_site_zone(&["a.test"])).await;
    let mxs = Mxs::start(vec![(
        2,
        ReceiverConfig {
            script: Arc::new(|_: &str, _| Rule::SlowDataEnd(Duration::from_millis(150))),
            ..ReceiverConfig::default()
        },
    )])
    .await;
    let rx = mxs.get(2);
    let mut csv = String::from("email,name\n");
    for i in 0..N {
        writeln!(csv, "u{i}@a.test,User {i}").unwrap();
    }
    let job = Job::new(&csv, TEMPLATE);
    let extra = ["--connections-per-site", "2"];
    let mut child = command(&job, &dns, mxs.port, &extra)
        .spawn()
        .expect("spawn");
    assert!(!wait_for(rx, 3, &mut child).await);
    signal(&child, "-INT");
    let out = child.wait_with_output().await.expect("wait");
    assert_eq!(out.status.code(), Some(130), "SIGINT → 130");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("interrupted"), "{stderr}");

    let rows = read_results(&job.results);
    assert_eq!(rows.len(), N, "report written with one row per input row");
    let delivered: Vec<&str> = rows
        .iter()
        .filter(|r| r["status"] == "delivered")
        .map(|r| r["email"].as_str())
        .collect();
    let got = copies(rx);
    // Every message the receiver stored was finished and reported: nothing in limbo.
    assert_eq!(delivered.len(), got.len(), "{delivered:?} vs {got:?}");
    assert!(delivered.len() < N);
    for r in rows.iter().filter(|r| r["status"] != "delivered") {
        assert_eq!(
            (r["status"].as_str(), r["step"].as_str()),
            ("deferred", "interrupted"),
            "{r:?}"
        );
    }

    // The same command again sends the rest, each once.
    let out = command(&job, &dns, mxs.port, &extra)
        .output()
        .await
        .expect("rerun");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("{} row(s) already delivered", delivered.len()))
    );
    let got = copies(rx);
    assert_eq!(got.len(), N);
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    assert_eq!(read_results(&job.results).len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_exits_at_once() {
    let dns = dns(one_site_zone(&["a.test"])).await;
    let mxs = Mxs::start(vec![(
        2,
        ReceiverConfig {
            // In flight far longer than the test waits below: only an exit that does not wait
            // for it can pass.
            script: Arc::new(|_: &str, _| Rule::SlowDataEnd(Duration::from_secs(3600))),
            ..ReceiverConfig::default()
        },
    )])
    .await;
    let job = Job::new("email,name\nu1@a.test,U\nu2@a.test,V\n", TEMPLATE);
    let mut child = command(&job, &dns, mxs.port, &[]).spawn().expect("spawn");
    assert!(!wait_for(mxs.get(2), 1, &mut child).await);
    signal(&child, "-INT");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(child.try_wait().unwrap().is_none(), "waits for in-flight");
    signal(&child, "-INT");
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("exits without waiting for the message in flight")
        .expect("wait");
    assert_eq!(status.code(), Some(130));
    assert!(
        mailmerge::journal::path_for(&job.results).exists(),
        "journal kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_143_with_the_report() {
    let dns = dns(one_site_zone(&["a.test"])).await;
    let mxs = Mxs::start(vec![(
        2,
        ReceiverConfig {
            script: Arc::new(|_: &str, _| Rule::SlowDataEnd(Duration::from_millis(100))),
            ..ReceiverConfig::default()
        },
    )])
    .await;
    let mut csv = String::from("email,name\n");
    for i in 0..20 {
        writeln!(csv, "u{i}@a.test,User {i}").unwrap();
    }
    let job = Job::new(&csv, TEMPLATE);
    let mut child = command(&job, &dns, mxs.port, &["--connections-per-site", "1"])
        .spawn()
        .expect("spawn");
    assert!(!wait_for(mxs.get(2), 2, &mut child).await);
    signal(&child, "-TERM");
    let status = child.wait().await.expect("wait");
    assert_eq!(status.code(), Some(143));
    assert_eq!(read_results(&job.results).len(), 20);
}

/// A receiver that defers everyone while `defer` is set.
fn switchable(defer: Arc<AtomicBool>) -> ReceiverConfig {
    ReceiverConfig {
        script: Arc::new(move |rcpt: &str, seen| {
            if defer.load(Ordering::SeqCst) && rcpt.starts_with("late") {
                Rule::Rcpt(451, "4.7.1 try again later".into())
            } else {
                mailmerge::sandbox::receiver::magic_script()(rcpt, seen)
            }
        }),
        ..ReceiverConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_after_a_finished_run_retries_only_deferred_rows() {
    let dns = dns(one_site_zone(&["a.test"])).await;
    let defer = Arc::new(AtomicBool::new(true));
    let mxs = Mxs::start(vec![(2, switchable(defer.clone()))]).await;
    let job = Job::new(
        "email,name\nok@a.test,O\nlate@a.test,L\nreject-r@a.test,R\n",
        TEMPLATE,
    );
    let mut cfg = job.config(&dns, mxs.port);
    cfg.delivery.retry = mailmerge::delivery::RetryPolicy::parse("none").unwrap();
    let first = run(cfg.clone()).await.expect("run 1");
    assert_eq!(first.plan.already_done, 0);
    let rows = read_results(&job.results);
    assert_eq!(row(&rows, "late@a.test")["status"], "deferred");
    assert_eq!(row(&rows, "reject-r@a.test")["status"], "bounced");

    defer.store(false, Ordering::SeqCst);
    let rcpts_before = mxs.get(2).commands().len();
    let second = run(cfg).await.expect("run 2");
    assert_eq!(second.plan.already_done, 2, "delivered + bounced reused");
    let rows = read_results(&job.results);
    assert_eq!(rows.len(), 3);
    assert_eq!(row(&rows, "late@a.test")["status"], "delivered");
    let ok = row(&rows, "ok@a.test");
    assert_eq!(
        (ok["status"].as_str(), ok["code"].as_str()),
        ("delivered", "250")
    );
    let r = row(&rows, "reject-r@a.test");
    assert_eq!(
        (r["status"].as_str(), r["enhanced_code"].as_str()),
        ("bounced", "5.1.1")
    );
    let rcpts: Vec<String> = mxs.get(2).commands()[rcpts_before..]
        .iter()
        .filter(|c| c.starts_with("RCPT"))
        .cloned()
        .collect();
    assert_eq!(
        rcpts,
        vec!["RCPT TO:<late@a.test>"],
        "only the deferred row is retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_and_resorted_list_neither_resends_nor_skips_the_wrong_people() {
    let dns = dns(one_site_zone(&["a.test"])).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new("email,name\nann@a.test,Ann\nbob@a.test,Bob\n", TEMPLATE);
    let cfg = job.config(&dns, mxs.port);
    run(cfg.clone()).await.expect("run 1");
    // Re-sorted, a column moved, Ann's name corrected, addresses re-spelled, one row added,
    // and a new row that takes Bob's old position.
    std::fs::write(
        &job.csv,
        "name,email\nCyd,cyd@a.test\nBob, BOB@a.test \nAnn Lee,ann@a.test\n",
    )
    .unwrap();
    let report = run(cfg).await.expect("run 2");
    assert_eq!(report.plan.already_done, 2);
    let got = copies(mxs.get(2));
    assert_eq!(got.len(), 3);
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    let rows = read_results(&job.results);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["email"], "cyd@a.test");
    assert!(rows.iter().all(|r| r["status"] == "delivered"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allow_duplicates_rows_are_told_apart_by_content() {
    let dns = dns(one_site_zone(&["a.test"])).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new("email,name\nann@a.test,Invoice 1\n", TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.list.allow_duplicates = true;
    run(cfg.clone()).await.expect("run 1");
    std::fs::write(
        &job.csv,
        "email,name\nann@a.test,Invoice 2\nann@a.test,Invoice 1\n",
    )
    .unwrap();
    let report = run(cfg).await.expect("run 2");
    assert_eq!(report.plan.already_done, 1);
    let names: Vec<String> = mxs
        .get(2)
        .received()
        .iter()
        .map(|m| {
            let t = String::from_utf8_lossy(&m.data).into_owned();
            t.lines()
                .find(|l| l.starts_with("Subject:"))
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(
        names,
        vec!["Subject: Hello Invoice 1", "Subject: Hello Invoice 2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_sends_a_canary_and_the_next_run_continues_and_fresh_starts_over() {
    let dns = dns(one_site_zone(&["a.test"])).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let mut csv = String::from("email,name\nbad-address,X\n");
    for i in 0..10 {
        writeln!(csv, "u{i}@a.test,U{i}").unwrap();
    }
    let job = Job::new(&csv, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.limit = Some(3);
    run(cfg.clone()).await.expect("canary");
    let rows = read_results(&job.results);
    assert_eq!(rows.len(), 11);
    let delivered: Vec<&str> = rows
        .iter()
        .filter(|r| r["status"] == "delivered")
        .map(|r| r["email"].as_str())
        .collect();
    assert_eq!(delivered, vec!["u0@a.test", "u1@a.test", "u2@a.test"]);
    let r = row(&rows, "u3@a.test");
    assert_eq!(
        (r["status"].as_str(), r["step"].as_str()),
        ("deferred", "limit")
    );
    assert_eq!(mxs.get(2).received().len(), 3);
    // The same command again: the next three.
    run(cfg.clone()).await.expect("second canary");
    assert_eq!(mxs.get(2).received().len(), 6);
    // Without the limit: the rest.
    cfg.limit = None;
    let report = run(cfg.clone()).await.expect("rest");
    assert_eq!(report.plan.already_done, 6);
    assert_eq!(mxs.get(2).received().len(), 10);
    assert!(copies(mxs.get(2)).values().all(|&n| n == 1));
    // --fresh forgets the journal.
    cfg.fresh = true;
    let report = run(cfg).await.expect("fresh");
    assert_eq!(report.plan.already_done, 0);
    assert_eq!(mxs.get(2).received().len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_looks_up_only_the_domains_of_the_rows_it_sends() {
    // The MX lookups start while triage reads the list: only for the rows that will be sent,
    // each domain once.
    use hickory_proto::rr::RecordType;
    let dns = dns(one_site_zone(&["a.test", "b.test", "c.test"])).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let csv = "email,name\nu0@a.test,A\nu1@a.test,B\nu2@b.test,C\nu3@c.test,D\n";
    let job = Job::new(csv, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.limit = Some(2);
    run(cfg.clone()).await.expect("canary");
    assert_eq!(mxs.get(2).received().len(), 2);
    assert_eq!(dns.query_count("a.test", RecordType::MX), 1);
    assert_eq!(dns.query_count("b.test", RecordType::MX), 0);
    assert_eq!(dns.query_count("c.test", RecordType::MX), 0);
    cfg.limit = None;
    run(cfg).await.expect("the rest");
    assert_eq!(mxs.get(2).received().len(), 4);
    assert_eq!(
        dns.query_count("a.test", RecordType::MX),
        1,
        "a.test: no row left"
    );
    assert_eq!(dns.query_count("b.test", RecordType::MX), 1);
    assert_eq!(dns.query_count("c.test", RecordType::MX), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mta_sts_is_looked_up_once_per_domain_with_mx_hosts_and_never_for_one_without() {
    // Each domain's MTA-STS lookup follows its MX answer while triage reads the list: a domain
    // with MX hosts is asked for its `_mta-sts` record once, however many rows it has; a
    // domain that takes no mail (null MX, NXDOMAIN) is not asked at all.
    use hickory_proto::rr::RecordType;
    let mut zone = one_site_zone(&["a.test", "b.test"]);
    zone.null_mx("gone.test").nxdomain("nowhere.test");
    let dns = dns(zone).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let csv =
        "email,name\nu0@a.test,A\nu1@a.test,B\nu2@b.test,C\nu3@gone.test,D\nu4@nowhere.test,E\n";
    let job = Job::new(csv, TEMPLATE);
    let report = run(job.config(&dns, mxs.port)).await.expect("run");
    assert_eq!(mxs.get(2).received().len(), 3, "{:?}", report.summary);
    let sts = |d: &str| dns.query_count(&format!("_mta-sts.{d}"), RecordType::TXT);
    assert_eq!((sts("a.test"), sts("b.test")), (1, 1));
    assert_eq!((sts("gone.test"), sts("nowhere.test")), (0, 0));
    assert_eq!(dns.query_count("gone.test", RecordType::MX), 1);
    assert_eq!(dns.query_count("nowhere.test", RecordType::MX), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unwritable_journal_stops_the_run_before_anything_is_sent() {
    let dns = dns(one_site_zone(&["a.test"])).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new("email,name\nann@a.test,Ann\n", TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.results = job.path("no-such-folder").join("results.csv");
    let err = run(cfg).await.unwrap_err();
    assert!(matches!(err, mailmerge::RunError::Journal(_)), "{err}");
    assert!(err.to_string().contains("results.csv.journal"), "{err}");
    assert_eq!(mxs.total_connections(), 0, "no record, no sending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_template_on_the_same_list_is_refused_rather_than_silently_skipped() {
    let dns = dns(one_site_zone(&["a.test"])).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new("email,name\nann@a.test,Ann\nbob@a.test,Bob\n", TEMPLATE);
    run(job.config(&dns, mxs.port))
        .await
        .expect("first campaign");
    assert_eq!(mxs.get(2).received().len(), 2);

    // Next month's message, same list, same results file.
    std::fs::write(
        &job.template,
        "From: news@sender.test\nTo: {{email}}\nSubject: December\n\nHi {{name}}\n",
    )
    .unwrap();
    let err = run(job.config(&dns, mxs.port)).await.unwrap_err();
    assert!(
        matches!(
            err,
            mailmerge::RunError::Journal(mailmerge::journal::JournalError::OtherTemplate { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--fresh"), "{err}");
    assert_eq!(
        mxs.get(2).received().len(),
        2,
        "nothing sent, nothing skipped silently"
    );

    // A fix during the same campaign: go on, nobody gets it twice.
    let mut cfg = job.config(&dns, mxs.port);
    cfg.template_changed = true;
    let report = run(cfg).await.expect("same campaign");
    assert_eq!(report.plan.already_done, 2);
    assert_eq!(mxs.get(2).received().len(), 2);

    // A new campaign: --fresh sends to everyone.
    let mut cfg = job.config(&dns, mxs.port);
    cfg.fresh = true;
    run(cfg).await.expect("new campaign");
    let got = mxs.get(2).received();
    assert_eq!(got.len(), 4);
    assert!(String::from_utf8_lossy(&got[3].data).contains("Subject: December"));
}
