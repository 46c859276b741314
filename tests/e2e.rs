//! End-to-end runs of the whole pipeline against real DNS and SMTP servers on loopback.

use std::fmt::Write as _;

use crate::support::*;
use hickory_proto::rr::RecordType;
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::receiver::{ReceiverConfig, Rule};
use mailmerge::{RunError, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_many_domains_with_every_kind_of_outcome() {
    // 40 domains hosted by one provider (one site), plus special cases.
    let mut z = zone();
    for i in 0..40 {
        z.mx(&format!("d{i}.test"), 10, "mx.provider.test");
    }
    z.addr("mx.provider.test", loopback(2));
    z.mx("fallback.test", 10, "mx1.fallback.test")
        .mx("fallback.test", 20, "mx2.fallback.test")
        .addr("mx1.fallback.test", loopback(3)) // nothing listens there: refused
        .addr("mx2.fallback.test", loopback(4));
    z.addr("implicit.test", loopback(4)); // no MX: implicit MX
    z.null_mx("nullmx.test");
    z.servfail("servfail.test");
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![
        (2, ReceiverConfig::default()),
        (4, ReceiverConfig::default()),
    ])
    .await;

    let mut csv = String::from("email,name\n");
    for i in 0..200 {
        writeln!(csv, "user{i}@d{}.test,User {i}", i % 40).unwrap();
    }
    csv.push_str("ann@fallback.test,Ann\n");
    csv.push_str("imp@implicit.test,Imp\n");
    csv.push_str("gus@nullmx.test,Gus\n");
    csv.push_str("hana@nxdomain.test,Hana\n");
    csv.push_str("sam@servfail.test,Sam\n");
    csv.push_str("reject-rex@d1.test,Rex\n");
    csv.push_str("defer-dee@d2.test,Dee\n");
    csv.push_str("spam-sue@d3.test,Sue\n");
    csv.push_str("no-at-sign,Ned\n");
    csv.push_str("\"evil@d4.test\",\"Eve\r\nBcc: victim@d5.test\"\n");
    let job = Job::new(&csv, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.delivery.connections_per_site = std::num::NonZeroUsize::new(3).expect("non-zero");
    cfg.delivery.deadline = std::time::Duration::from_secs(2);
    let report = run(cfg).await.expect("run");

    let rows = read_results(&job.results);
    assert_eq!(rows.len(), 210, "one result row per input row");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["row"], (i + 1).to_string(), "input order");
    }
    for i in 0..200 {
        let r = row(&rows, &format!("user{i}@d{}.test", i % 40));
        assert_eq!(r["status"], "delivered", "{r:?}");
        assert_eq!(r["code"], "250");
        assert_eq!(r["enhanced_code"], "2.0.0");
        assert_eq!(r["mx_host"], "mx.provider.test");
        assert_eq!(r["mx_ip"], "127.0.0.2");
        assert_eq!(r["name"], format!("User {i}"), "input columns are kept");
    }
    let r = row(&rows, "ann@fallback.test");
    assert_eq!(
        (
            r["status"].as_str(),
            r["mx_host"].as_str(),
            r["mx_ip"].as_str()
        ),
        ("delivered", "mx2.fallback.test", "127.0.0.4")
    );
    let r = row(&rows, "imp@implicit.test");
    assert_eq!(
        (r["status"].as_str(), r["mx_host"].as_str()),
        ("delivered", "implicit.test")
    );
    let r = row(&rows, "gus@nullmx.test");
    assert_eq!(
        (
            r["status"].as_str(),
            r["code"].as_str(),
            r["enhanced_code"].as_str(),
            r["attempts"].as_str()
        ),
        ("bounced", "556", "5.1.10", "0")
    );
    let r = row(&rows, "hana@nxdomain.test");
    assert_eq!(
        (
            r["status"].as_str(),
            r["enhanced_code"].as_str(),
            r["step"].as_str()
        ),
        ("bounced", "5.1.2", "dns")
    );
    let r = row(&rows, "sam@servfail.test");
    assert_eq!(
        (r["status"].as_str(), r["enhanced_code"].as_str()),
        ("deferred", "4.4.3")
    );
    let r = row(&rows, "reject-rex@d1.test");
    assert_eq!(
        (
            r["status"].as_str(),
            r["code"].as_str(),
            r["enhanced_code"].as_str(),
            r["step"].as_str()
        ),
        ("bounced", "550", "5.1.1", "rcpt")
    );
    assert_eq!(r["response"], "no such user here");
    let r = row(&rows, "defer-dee@d2.test");
    assert_eq!(
        (r["status"].as_str(), r["code"].as_str(), r["step"].as_str()),
        ("deferred", "450", "rcpt")
    );
    assert!(
        r["attempts"].parse::<u32>().unwrap() >= 3,
        "retried until the deadline: {r:?}"
    );
    let r = row(&rows, "spam-sue@d3.test");
    assert_eq!(
        (r["status"].as_str(), r["code"].as_str(), r["step"].as_str()),
        ("bounced", "554", "data-end")
    );
    let r = row(&rows, "no-at-sign");
    assert_eq!(r["status"], "invalid");
    assert!(r["response"].contains("line 210"), "{r:?}");
    let r = row(&rows, "evil@d4.test");
    assert_eq!(r["status"], "invalid");
    assert!(r["response"].contains("line break"), "{r:?}");

    // Every row that was not delivered says why, by the documented rule table.
    let categories = [
        ("user1@d1.test", ""),
        ("gus@nullmx.test", "bad-domain"),
        ("hana@nxdomain.test", "bad-domain"),
        ("sam@servfail.test", "dns"),
        ("reject-rex@d1.test", "bad-mailbox"),
        ("defer-dee@d2.test", "other"),
        ("spam-sue@d3.test", "content-rejected"),
        ("no-at-sign", "invalid-input"),
        ("evil@d4.test", "invalid-input"),
    ];
    for (email, category) in categories {
        assert_eq!(row(&rows, email)["category"], category, "{email}");
    }

    // What the receivers got.
    let provider = mxs.get(2).received();
    assert_eq!(provider.len(), 200);
    for m in &provider {
        let text = String::from_utf8(m.data.clone()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            !head
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
            "no injected header: {head}"
        );
        assert_eq!(m.mail_from, "news@sender.test");
        assert!(
            head.contains("To: \"User ") || head.contains("To: User"),
            "{head}"
        );
        assert!(head.contains("Message-ID: <") && head.contains("@sender.test>"));
        assert!(
            body.contains("\r\n.leading dot line\r\n..two dots\r\n"),
            "dot-stuffing undone exactly: {body}"
        );
    }
    assert!(
        !mxs.get(2)
            .received()
            .iter()
            .any(|m| m.rcpt_to.starts_with("evil"))
    );
    // Connections were reused: 3 per site at most, plus reconnects after the 4xx/5xx ones.
    assert!(
        mxs.get(2).connections() <= 6,
        "connections: {}",
        mxs.get(2).connections()
    );
    assert!(report.summary.connections >= 3);
    // One MX lookup per domain, whatever the number of recipients.
    for i in 0..40 {
        assert_eq!(dns.query_count(&format!("d{i}.test"), RecordType::MX), 1);
    }
    assert_eq!(
        report
            .plan
            .sites
            .iter()
            .filter(|site| site.name == "mx.provider.test")
            .count(),
        1,
        "40 domains, one site"
    );
}

#[tokio::test]
async fn template_using_a_missing_column_is_refused_before_anything_is_sent() {
    let mut z = zone();
    z.mx("d.test", 10, "mx.d.test")
        .addr("mx.d.test", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new(
        "email,name\na@d.test,A\n",
        "From: s@sender.test\nTo: {{email}}\nSubject: x\n\nHello {{first_name}}\n",
    );
    let err = run(job.config(&dns, mxs.port)).await.unwrap_err();
    assert!(matches!(err, RunError::Template(_)));
    let msg = err.to_string();
    assert!(
        msg.contains("{{first_name}}") && msg.contains("message.hbs:5"),
        "{msg}"
    );
    assert_eq!(mxs.total_connections(), 0);
    assert!(!job.results.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greylisting_and_a_dropped_data_phase_are_retried_and_reported_once() {
    let mut z = zone();
    z.mx("d.test", 10, "mx.d.test")
        .addr("mx.d.test", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new(
        "email,name\ngreylist-g@d.test,G\ndrop-d@d.test,D\nok@d.test,O\n",
        TEMPLATE,
    );
    run(job.config(&dns, mxs.port)).await.expect("run");
    let rows = read_results(&job.results);
    for email in ["greylist-g@d.test", "drop-d@d.test"] {
        let r = row(&rows, email);
        assert_eq!(
            (r["status"].as_str(), r["attempts"].as_str()),
            ("delivered", "2"),
            "{r:?}"
        );
    }
    assert_eq!(row(&rows, "ok@d.test")["attempts"], "1");
    let got = mxs.get(2).received();
    for email in ["greylist-g@d.test", "drop-d@d.test", "ok@d.test"] {
        assert_eq!(
            got.iter().filter(|m| m.rcpt_to == email).count(),
            1,
            "{email} received exactly once"
        );
        // A row keeps its Message-ID over all attempts of a run
        // (`<run>.r<row>.<tag>@<From domain>`), so a copy left by a lost connection can be
        // recognised by the receiver.
        let r = row(&rows, email);
        assert!(
            r["message_id"].contains(&format!(".r{}.", r["row"]))
                && r["message_id"].ends_with("@sender.test")
                && mailmerge::message::has_row_tag(&r["message_id"]),
            "{r:?}"
        );
        let m = got.iter().find(|m| m.rcpt_to == email).unwrap();
        let text = String::from_utf8_lossy(&m.data);
        assert!(text.contains(&format!("Message-ID: <{}>", r["message_id"])));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closing_with_421_mid_batch_costs_a_reconnect_not_a_message() {
    let mut z = zone();
    z.mx("d.test", 10, "mx.d.test")
        .addr("mx.d.test", loopback(2));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(
        2,
        ReceiverConfig {
            max_messages_per_connection: Some(5),
            ..ReceiverConfig::default()
        },
    )])
    .await;
    let mut csv = String::from("email,name\n");
    for i in 0..30 {
        writeln!(csv, "u{i}@d.test,U{i}").unwrap();
    }
    let job = Job::new(&csv, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.delivery.connections_per_site = std::num::NonZeroUsize::new(1).expect("non-zero");
    let report = run(cfg).await.expect("run");
    assert_eq!(
        report.summary.count(mailmerge::outcome::Status::Delivered),
        30
    );
    assert_eq!(mxs.get(2).received().len(), 30);
    assert!(mxs.get(2).connections() >= 6, "reconnected after each 421");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_server_times_out_and_the_next_mx_is_used() {
    let mut z = zone();
    z.mx("d.test", 10, "mx1.d.test")
        .addr("mx1.d.test", loopback(2));
    z.mx("d.test", 20, "mx2.d.test")
        .addr("mx2.d.test", loopback(3));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![
        (
            2,
            ReceiverConfig {
                greeting_reject: Some("421 4.3.2 too busy, try later".into()),
                ..ReceiverConfig::default()
            },
        ),
        (
            3,
            ReceiverConfig {
                script: std::sync::Arc::new(|rcpt: &str, _| {
                    if rcpt.starts_with("slow") {
                        Rule::SlowRcpt(std::time::Duration::from_secs(3))
                    } else {
                        Rule::Accept
                    }
                }),
                ..ReceiverConfig::default()
            },
        ),
    ])
    .await;
    let job = Job::new("email,name\na@d.test,A\nslow@d.test,S\n", TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.delivery.connections_per_site = std::num::NonZeroUsize::new(1).expect("non-zero");
    cfg.delivery.timeouts =
        mailmerge::smtp::Timeouts::uniform(std::time::Duration::from_millis(500));
    cfg.delivery.retry = mailmerge::delivery::RetryPolicy::parse("none").unwrap();
    run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    let a = row(&rows, "a@d.test");
    assert_eq!(
        (a["status"].as_str(), a["mx_host"].as_str()),
        ("delivered", "mx2.d.test"),
        "421 greeting → next MX"
    );
    let s = row(&rows, "slow@d.test");
    assert_eq!(
        (s["status"].as_str(), s["step"].as_str()),
        ("deferred", "rcpt"),
        "{s:?}"
    );
    assert!(s["response"].contains("timed out"), "{s:?}");
}

fn slow_receiver(gauge: std::sync::Arc<mailmerge::sandbox::receiver::Gauge>) -> ReceiverConfig {
    ReceiverConfig {
        script: std::sync::Arc::new(|_: &str, _| {
            Rule::SlowDataEnd(std::time::Duration::from_millis(40))
        }),
        gauge,
        ..ReceiverConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_site_and_max_connections_cap_simultaneous_sessions() {
    use mailmerge::sandbox::receiver::Gauge;
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(2));
    z.mx("b.test", 10, "mx.b.test")
        .addr("mx.b.test", loopback(3));
    let dns = dns(z).await;
    let (ga, gb, both) = (
        std::sync::Arc::new(Gauge::default()),
        std::sync::Arc::new(Gauge::default()),
        std::sync::Arc::new(Gauge::default()),
    );
    let mxs = Mxs::start(vec![
        (2, slow_receiver(ga.clone())),
        (3, slow_receiver(gb.clone())),
    ])
    .await;
    let mut csv = String::from("email,name\n");
    for i in 0..24 {
        writeln!(csv, "u{i}@a.test,U{i}").unwrap();
    }
    // Per site: at most 2 sessions at once, and 2 are used.
    let job = Job::new(&csv, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.delivery.connections_per_site = std::num::NonZeroUsize::new(2).expect("non-zero");
    cfg.delivery.max_connections = std::num::NonZeroUsize::new(10).expect("non-zero");
    run(cfg).await.expect("run");
    assert_eq!(ga.peak(), 2, "connections per site");

    // Over all sites: at most 3 at once although each site may have 5.
    let mxs = Mxs::start(vec![
        (2, slow_receiver(both.clone())),
        (3, slow_receiver(both.clone())),
    ])
    .await;
    for i in 0..24 {
        writeln!(csv, "v{i}@b.test,V{i}").unwrap();
    }
    let job = Job::new(&csv, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.delivery.connections_per_site = std::num::NonZeroUsize::new(5).expect("non-zero");
    cfg.delivery.max_connections = std::num::NonZeroUsize::new(3).expect("non-zero");
    let report = run(cfg).await.expect("run");
    assert_eq!(
        report.summary.count(mailmerge::outcome::Status::Delivered),
        48
    );
    assert_eq!(both.peak(), 3, "max connections over all sites");
    assert_eq!(gb.peak(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_of_a_host_is_tried_before_the_next_host() {
    let mut z = zone();
    z.mx("d.test", 10, "mx.d.test")
        .addr("mx.d.test", loopback(3)) // refuses
        .addr("mx.d.test", loopback(4))
        .mx("d.test", 20, "backup.d.test")
        .addr("backup.d.test", loopback(5));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![
        (4, ReceiverConfig::default()),
        (5, ReceiverConfig::default()),
    ])
    .await;
    let job = Job::new("email,name\na@d.test,A\n", TEMPLATE);
    run(job.config(&dns, mxs.port)).await.expect("run");
    let rows = read_results(&job.results);
    let r = row(&rows, "a@d.test");
    assert_eq!(
        (
            r["status"].as_str(),
            r["mx_host"].as_str(),
            r["mx_ip"].as_str()
        ),
        ("delivered", "mx.d.test", "127.0.0.4")
    );
    assert_eq!(mxs.get(5).connections(), 0, "the backup MX was not needed");
}

#[tokio::test]
async fn the_address_column_can_be_named_and_a_silent_dns_server_defers() {
    let mut z = zone();
    z.mx("d.test", 10, "mx.d.test")
        .addr("mx.d.test", loopback(2));
    z.silent("slow.test");
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(2, ReceiverConfig::default())]).await;
    let job = Job::new(
        "Name,Mail\nAnn,ann@d.test\nSid,sid@slow.test\n",
        "From: s@sender.test\nTo: {{Name}} <{{Mail}}>\n\nHi {{Name}}\n",
    );
    let mut cfg = job.config(&dns, mxs.port);
    cfg.list.email_column = "mail".into(); // matched case-insensitively
    run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    assert_eq!(rows[0]["email"], "ann@d.test");
    assert_eq!(rows[0]["status"], "delivered");
    assert_eq!(
        (
            rows[1]["status"].as_str(),
            rows[1]["enhanced_code"].as_str(),
            rows[1]["step"].as_str()
        ),
        ("deferred", "4.4.3", "dns"),
        "{:?}",
        rows[1]
    );
    assert!(rows[1]["response"].contains("timed out"), "{:?}", rows[1]);
}
