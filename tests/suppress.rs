//! The suppression list across campaigns: real DNS and SMTP servers on loopback,
//! two runs in a row over the same recipients, and two runs at once sharing one store.

use std::sync::Arc;

use crate::support::*;
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::receiver::{ReceiverConfig, Rule};
use mailmerge::suppress::{Reason, Store};
use mailmerge::{RunConfig, run};

/// Recipients failing in every way that matters: only `gone` and the NXDOMAIN one are the
/// recipient's fault.
fn script() -> mailmerge::sandbox::receiver::Script {
    Arc::new(|rcpt: &str, _seen: usize| {
        let local = rcpt.split('@').next().unwrap_or("").to_ascii_lowercase();
        match local.as_str() {
            l if l.starts_with("gone") => Rule::Rcpt(550, "5.1.1 no such user here".into()),
            "proto" => Rule::Rcpt(503, "5.5.1 bad sequence of commands".into()),
            "policy" => Rule::Rcpt(550, "5.7.1 relaying denied by policy".into()),
            "slow" => Rule::Rcpt(450, "4.2.1 try later".into()),
            "busy" => Rule::Rcpt(421, "4.7.0 too many connections, closing".into()),
            "spam" => Rule::DataEnd(554, "5.7.1 rejected as spam".into()),
            _ => Rule::Accept,
        }
    })
}

const CSV: &str = "email,name\nann@a.test,Ann\ngone@a.test,Gone\nGONE2@A.test,Gone2\nproto@a.test,P\n\
policy@a.test,Po\nslow@a.test,S\nbusy@a.test,B\nspam@a.test,Sp\nhana@nxdomain.test,H\n";

async fn servers() -> (mailmerge::sandbox::dns::DnsServer, Mxs) {
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(2));
    z.nxdomain("nxdomain.test");
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(
        2,
        ReceiverConfig {
            script: script(),
            ..ReceiverConfig::default()
        },
    )])
    .await;
    (dns, mxs)
}

fn config(
    job: &Job,
    dns: &mailmerge::sandbox::dns::DnsServer,
    port: u16,
    store: &std::path::Path,
) -> RunConfig {
    let mut cfg = job.config(dns, port);
    cfg.delivery.retry = mailmerge::delivery::RetryPolicy::parse("none").expect("retry");
    cfg.delivery.deadline = std::time::Duration::from_secs(5);
    cfg.suppress.store = Some(store.to_path_buf());
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_campaign_skips_the_first_ones_hard_bounces_and_nothing_else() {
    let (dns, mxs) = servers().await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("s.sqlite");

    let first = Job::new(CSV, TEMPLATE);
    let report = run(config(&first, &dns, mxs.port, &store_path))
        .await
        .expect("run 1");
    assert_eq!(
        report.newly_suppressed, 3,
        "gone, GONE2 and the NXDOMAIN address"
    );
    let store = Store::open(&store_path).unwrap();
    let mut keys: Vec<String> = store.list().unwrap().into_iter().map(|e| e.key).collect();
    keys.sort();
    assert_eq!(keys, ["gone2@a.test", "gone@a.test", "hana@nxdomain.test"]);
    let e = store.list().unwrap().remove(0);
    assert_eq!(e.reason, Reason::HardBounce);
    assert!(e.cause.contains("5.1.1"), "{e:?}");
    let received_first = mxs
        .get(2)
        .commands()
        .iter()
        .filter(|c| c.starts_with("RCPT"))
        .count();

    // The second campaign: another template (another campaign), the same people.
    let second = Job::new(CSV, &TEMPLATE.replace("Hello", "Hello again"));
    let report = run(config(&second, &dns, mxs.port, &store_path))
        .await
        .expect("run 2");
    assert_eq!(report.newly_suppressed, 0);
    assert_eq!(report.plan.suppressed, 3);
    assert_eq!(
        report.summary.count(mailmerge::outcome::Status::Suppressed),
        3
    );
    let rcpts: Vec<String> = mxs
        .get(2)
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("RCPT"))
        .collect();
    let second_rcpts = &rcpts[received_first..];
    assert!(
        !second_rcpts
            .iter()
            .any(|c| c.to_ascii_lowercase().contains("gone")),
        "suppressed addresses are never sent to: {second_rcpts:?}"
    );
    let rows = read_results(&second.results);
    for email in ["gone@a.test", "GONE2@A.test", "hana@nxdomain.test"] {
        let r = row(&rows, email);
        assert_eq!(
            (r["status"].as_str(), r["step"].as_str()),
            ("suppressed", "suppressed"),
            "{r:?}"
        );
        assert!(r["response"].contains("hard-bounce since 20"), "{r:?}");
        assert!(
            r["response"].contains("5.1.1") || r["response"].contains("5.1.2"),
            "{r:?}"
        );
    }
    // Protocol, policy, content and throttling failures are tried again.
    for email in [
        "proto@a.test",
        "policy@a.test",
        "slow@a.test",
        "busy@a.test",
        "spam@a.test",
    ] {
        assert_ne!(row(&rows, email)["status"], "suppressed", "{email}");
        assert!(
            second_rcpts.iter().any(|c| c.contains(email)),
            "{email} was tried again"
        );
    }
    assert_eq!(row(&rows, "ann@a.test")["status"], "delivered");

    // --ignore-suppressions (transactional mail) sends to everyone.
    let third = Job::new(CSV, TEMPLATE);
    let mut cfg = config(&third, &dns, mxs.port, &store_path);
    cfg.suppress.ignore = true;
    let report = run(cfg).await.expect("run 3");
    assert_eq!(report.plan.suppressed, 0);
    assert_eq!(
        row(&read_results(&third.results), "gone@a.test")["status"],
        "bounced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_suppressed_rows_in_the_plan() {
    let (dns, mxs) = servers().await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("s.sqlite");
    let mut store = Store::open(&store_path).unwrap();
    store
        .add(&[mailmerge::suppress::Entry::new(
            "@a.test".into(),
            Reason::Manual,
            "whole domain",
            "",
        )])
        .unwrap();
    let job = Job::new(CSV, TEMPLATE);
    let mut cfg = config(&job, &dns, mxs.port, &store_path);
    cfg.mode = mailmerge::RunMode::Plan { eml_out: None };
    let report = run(cfg).await.expect("check");
    assert_eq!(report.plan.suppressed, 8, "{}", report.plan);
    assert_eq!(report.plan.to_send, 0);
    assert!(
        report
            .plan
            .to_string()
            .contains("suppressed (suppression list)")
    );
    assert_eq!(mxs.total_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_sharing_one_store_lose_no_entry() {
    let (dns, mxs) = servers().await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("shared.sqlite");
    let list = |tag: &str| {
        let mut csv = String::from("email,name\n");
        for i in 0..60 {
            csv.push_str(&format!("gone-{tag}{i}@a.test,G\nok-{tag}{i}@a.test,O\n"));
        }
        csv
    };
    let a = Job::new(&list("a"), TEMPLATE);
    let b = Job::new(&list("b"), TEMPLATE);
    let (ra, rb) = tokio::join!(
        run(config(&a, &dns, mxs.port, &store_path)),
        run(config(&b, &dns, mxs.port, &store_path))
    );
    assert_eq!(ra.expect("a").newly_suppressed, 60);
    assert_eq!(rb.expect("b").newly_suppressed, 60);
    let store = Store::open(&store_path).unwrap();
    assert_eq!(store.list().unwrap().len(), 120);
    assert_eq!(store.campaigns().unwrap().len(), 2);
}
