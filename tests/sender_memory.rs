//! The sender's memory across runs and processes: suspensions, daily caps and learnt limits
//! outlive the process that learnt them, against the provider simulator on loopback. Runs are
//! pinned to a clock (`support::PINNED_NOW`, 12:00 UTC), so "the same day" and "two hours
//! later" are facts of the test, not of when it runs.

use std::sync::atomic::Ordering;

use crate::providers::{Spec, all_delivered_once, config, list, two_sources, world};
use crate::support::provider_sim::SimConfig;
use crate::support::*;
use mailmerge::clock::Clock;
use mailmerge::run;
use mailmerge::sender::sqlite::SqliteSenders;
use mailmerge::sender::{Identity, SenderStore};

const TSS04: &str = "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1";

fn steps(rows: &[std::collections::HashMap<String, String>]) -> Vec<(String, String)> {
    rows.iter()
        .map(|r| (r["status"].clone(), r["step"].clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_outlives_its_run_and_holds_back_the_next_campaign_until_it_ends() {
    let (dns, sims, port) = world(vec![Spec {
        octet: 20,
        mx: "mta7.am0.yahoodns.net",
        domains: &["yahoo.test"],
        sim: SimConfig {
            script: Some((1, TSS04.into())),
            ..SimConfig::new("yahoo")
        },
    }])
    .await;
    let state = tempfile::tempdir().unwrap();
    let store = state.path().join("senders.sqlite");
    let first = Job::new(&list(&["yahoo.test"], 30), TEMPLATE);
    let mut cfg = config(&first, &dns, port);
    cfg.state = Some(store.clone().into());
    let report = run(cfg).await.expect("first run");
    assert_eq!(sims[0].throttles(), 1);
    // Suspended for 2 h, far past the deadline: the rows end at once, saying so.
    for r in &read_results(&first.results) {
        assert_eq!(
            (r["status"].as_str(), r["step"].as_str()),
            ("deferred", "suspended"),
            "{r:?}"
        );
        assert!(
            r["response"].starts_with("suspended until 14:00 UTC by 421 4.7.0 [TSS04]"),
            "{r:?}"
        );
    }
    assert!(
        report
            .summary
            .to_string()
            .contains("suspended until 14:00 UTC by 421 4.7.0 [TSS04]"),
        "{}",
        report.summary
    );
    let sessions = sims[0].stats.sessions.load(Ordering::SeqCst);

    // Another campaign one second later: no connection during the suspension it chose.
    let second = Job::new(&list(&["yahoo.test"], 40), TEMPLATE);
    let mut cfg = config(&second, &dns, port);
    cfg.state = Some(store.clone().into());
    cfg.clock = Clock::starting_at_unix(PINNED_NOW + 1);
    let report = run(cfg.clone()).await.expect("second campaign");
    assert_eq!(
        sims[0].stats.sessions.load(Ordering::SeqCst),
        sessions,
        "not one connection"
    );
    let rows = read_results(&second.results);
    for r in &rows {
        assert_eq!(
            (
                r["status"].as_str(),
                r["step"].as_str(),
                r["category"].as_str()
            ),
            ("deferred", "suspended", "throttled"),
            "{r:?}"
        );
        assert!(
            r["response"].starts_with("suspended until 14:00 UTC by 421 4.7.0 [TSS04]"),
            "{r:?}"
        );
    }
    assert!(report.summary.sender_notes[0].starts_with("yahoo: suspended until 14:00 UTC"));

    // `check` says so too.
    let mut plan = cfg.clone();
    plan.mode = mailmerge::RunMode::Plan { eml_out: None };
    let planned = run(plan).await.expect("check");
    assert_eq!(planned.plan.suspended_receiver, 40);
    assert!(
        planned
            .plan
            .to_string()
            .contains("sender: yahoo: suspended until 14:00 UTC"),
        "{}",
        planned.plan
    );

    // When it has ended, the same campaign sends.
    cfg.clock = Clock::starting_at_unix(PINNED_NOW + 2 * 3600 + 60);
    run(cfg).await.expect("after the suspension");
    all_delivered_once(&read_results(&second.results));
    assert_eq!(sims[0].accepted(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_cap_is_the_sending_ips_across_campaigns_of_the_day() {
    let (dns, sims, port) = world(vec![Spec {
        octet: 21,
        mx: "mx01.emig.gmx.net",
        domains: &["gmx.test"],
        sim: SimConfig::new("gmx"),
    }])
    .await;
    let state = tempfile::tempdir().unwrap();
    let store = state.path().join("senders.sqlite");
    let campaign = |job: &Job, day: u64| {
        let mut cfg = config(job, &dns, port);
        cfg.state = Some(store.clone().into());
        cfg.delivery.daily_cap = Some(3);
        cfg.clock = Clock::starting_at_unix(PINNED_NOW + day * 86_400);
        cfg
    };
    let a = Job::new(&list(&["gmx.test"], 5), TEMPLATE);
    let b = Job::new(&list(&["gmx.test"], 5), TEMPLATE);
    run(campaign(&a, 0)).await.expect("campaign a");
    run(campaign(&b, 0)).await.expect("campaign b, same day");
    let deferred_cap = ("deferred".to_string(), "cap".to_string());
    assert_eq!(
        steps(&read_results(&a.results))[3..],
        [deferred_cap.clone(), deferred_cap.clone()]
    );
    assert!(
        steps(&read_results(&b.results))
            .iter()
            .all(|s| *s == deferred_cap)
    );
    assert_eq!(
        sims[0].accepted(),
        3,
        "3 a day for the IP, whatever the campaign"
    );
    // The next day, the rest of b.
    run(campaign(&b, 1)).await.expect("campaign b, next day");
    assert_eq!(sims[0].accepted(), 6);
    let s = SqliteSenders::open(&store).unwrap();
    let day = PINNED_NOW / 86_400;
    let gmx = Identity::new("gmx", None);
    let m = s.recall(&[gmx], day + 1, PINNED_NOW).await.unwrap();
    assert_eq!((m[0].today, m[0].first_day), (3, Some(day)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_source_ip_pool_each_address_has_its_own_daily_cap() {
    let (dns, sims, port) = world(vec![Spec {
        octet: 26,
        mx: "mx03.emig.gmx.net",
        domains: &["gmx3.test"],
        sim: SimConfig::new("gmx"),
    }])
    .await;
    let job = Job::new(&list(&["gmx3.test"], 10), TEMPLATE);
    let mut cfg = config(&job, &dns, port);
    cfg.delivery.source_ip = two_sources();
    cfg.delivery.daily_cap = Some(3);
    run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    let sent: Vec<&str> = rows
        .iter()
        .filter(|r| r["status"] == "delivered")
        .map(|r| r["source_ip"].as_str())
        .collect();
    assert_eq!(sent.len(), 6, "3 from each address: {rows:?}");
    for ip in ["127.0.0.10", "127.0.0.11"] {
        assert_eq!(
            sent.iter().filter(|s| **s == ip).count(),
            3,
            "{ip}: {sent:?}"
        );
    }
    assert!(
        rows[6..].iter().all(|r| r["step"] == "cap"),
        "the last rows wait"
    );
    assert_eq!(sims[0].accepted(), 6);
    let s = SqliteSenders::open(&job.path("senders.sqlite")).unwrap();
    let ids = ["127.0.0.10", "127.0.0.11"].map(|a| Identity::new("gmx", a.parse().ok()));
    let m = s
        .recall(&ids, PINNED_NOW / 86_400, PINNED_NOW)
        .await
        .unwrap();
    assert_eq!((m[0].today, m[1].today), (3, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_campaign_starts_at_the_limits_the_first_learnt() {
    let (dns, sims, port) = world(vec![Spec {
        octet: 22,
        mx: "tenant2-test.mail.protection.outlook.com",
        domains: &["tenant2.test"],
        sim: SimConfig {
            connections: 2,
            per_connection: 9,
            ..SimConfig::new("microsoft")
        },
    }])
    .await;
    let state = tempfile::tempdir().unwrap();
    let store = state.path().join("senders.sqlite");
    let mut refusals = Vec::new();
    for n in [120, 150] {
        let job = Job::new(&list(&["tenant2.test"], n), TEMPLATE);
        let mut cfg = config(&job, &dns, port);
        cfg.state = Some(store.clone().into());
        let before = (
            sims[0].stats.refused_greetings.load(Ordering::SeqCst),
            sims[0].stats.per_connection_refusals.load(Ordering::SeqCst),
        );
        run(cfg).await.expect("run");
        all_delivered_once(&read_results(&job.results));
        refusals.push((
            sims[0].stats.refused_greetings.load(Ordering::SeqCst) - before.0,
            sims[0].stats.per_connection_refusals.load(Ordering::SeqCst) - before.1,
        ));
    }
    assert!(
        refusals[0].0 >= 1 && refusals[0].1 >= 1,
        "the first run learns: {refusals:?}"
    );
    assert_eq!(refusals[1], (0, 0), "the second starts where it ended");
    let s = SqliteSenders::open(&store).unwrap();
    let m = &s
        .recall(
            &[Identity::new("microsoft", None)],
            PINNED_NOW / 86_400,
            PINNED_NOW,
        )
        .await
        .unwrap()[0];
    assert_eq!(m.limits.connections.map(|l| l.value), Some(2));
    assert_eq!(m.limits.per_connection.map(|l| l.value), Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_campaigns_share_one_cap_and_lose_no_lesson() {
    let (dns, sims, port) = world(vec![
        Spec {
            octet: 23,
            mx: "mx02.emig.gmx.net",
            domains: &["gmx2.test"],
            sim: SimConfig::new("gmx"),
        },
        Spec {
            octet: 24,
            mx: "mta8.am0.yahoodns.net",
            domains: &["yahoo2.test"],
            sim: SimConfig {
                per_connection: 5,
                ..SimConfig::new("yahoo")
            },
        },
        Spec {
            octet: 25,
            mx: "tenant3-test.mail.protection.outlook.com",
            domains: &["tenant3.test"],
            sim: SimConfig {
                rate: 2.0,
                burst: 2.0,
                ..SimConfig::new("microsoft")
            },
        },
    ])
    .await;
    let state = tempfile::tempdir().unwrap();
    let store = state.path().join("senders.sqlite");
    let campaign = |job: &Job| {
        let mut cfg = config(job, &dns, port);
        cfg.state = Some(store.clone().into());
        cfg.delivery.daily_cap = Some(7);
        cfg
    };
    // Both send to gmx under one cap (7 a day for every receiver); one also teaches yahoo's
    // messages per connection, the other the rate microsoft refuses.
    let a = Job::new(&list(&["gmx2.test", "yahoo2.test"], 40), TEMPLATE);
    let b = Job::new(&list(&["gmx2.test", "tenant3.test"], 40), TEMPLATE);
    let (ra, rb) = tokio::join!(run(campaign(&a)), run(campaign(&b)));
    ra.expect("a");
    rb.expect("b");
    assert_eq!(sims[0].accepted(), 7, "one cap for both");
    let s = SqliteSenders::open(&store).unwrap();
    let day = PINNED_NOW / 86_400;
    let ids = ["gmx", "yahoo", "microsoft"].map(|r| Identity::new(r, None));
    let m = s.recall(&ids, day, PINNED_NOW).await.unwrap();
    assert_eq!(m[0].today, 7);
    assert_eq!(
        m[1].limits.per_connection.map(|l| l.value),
        Some(5),
        "{:?}",
        m[1]
    );
    assert!(m[2].limits.rate_refused.is_some(), "{:?}", m[2]);
}

#[test]
fn a_damaged_store_stops_the_run_with_exit_2_and_is_left_as_it_was() {
    let job = Job::new("email,name\na@example.com,A\n", TEMPLATE);
    let damaged = job.path("senders.sqlite");
    let junk = b"not a database, and not to be reset".repeat(300);
    std::fs::write(&damaged, &junk).unwrap();
    for verb in ["run", "senders"] {
        let mut c = job.binary();
        c.arg(verb);
        if verb == "run" {
            c.arg(&job.csv)
                .arg(&job.template)
                .args(["--dns", "127.0.0.1:9", "--quiet"]);
        }
        let out = c.arg("--state").arg(&damaged).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{verb}: {err}");
        assert!(
            err.contains("sender state") && err.contains("senders.sqlite"),
            "{verb}: {err}"
        );
    }
    assert_eq!(std::fs::read(&damaged).unwrap(), junk);
    assert!(!job.results.exists(), "nothing sent, no results");
}
