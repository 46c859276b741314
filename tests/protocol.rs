//! Our SMTP dialect against servers that object to it, and against broken or hostile servers:
//! each test reproduces the server's behaviour first, then checks what a
//! real run (`mailmerge::run` against loopback DNS and SMTP) made of it. The rule every test
//! pins: a 500–504 reply or a reply out of step is our session's failure — the row is never
//! `bounced` for it — while Outlook's `550 5.5.0` at RCPT still is a bounce.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::support::*;
use mailmerge::sandbox::dns::{DnsServer, loopback};
use mailmerge::sandbox::receiver::{ReceiverConfig, Rule};
use mailmerge::{RunReport, run};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// `n` recipients at example.com.
fn list(n: usize) -> String {
    let mut csv = String::from("email,name\n");
    for i in 0..n {
        writeln!(csv, "user{i}@example.com,User {i}").unwrap();
    }
    csv
}

/// DNS with example.com's MX on 127.0.0.`octet`.
async fn dns_for(octet: u8) -> DnsServer {
    let mut z = zone();
    z.mx("example.com", 10, "mx.example.com")
        .addr("mx.example.com", loopback(octet));
    dns(z).await
}

/// Runs `n` rows against one sandbox receiver configured by `config`.
async fn run_against(
    octet: u8,
    n: usize,
    config: ReceiverConfig,
) -> (RunReport, Vec<HashMap<String, String>>, Mxs) {
    let dns = dns_for(octet).await;
    let mxs = Mxs::start(vec![(octet, config)]).await;
    let job = Job::new(&list(n), TEMPLATE);
    let report = run(job.config(&dns, mxs.port)).await.expect("run");
    (report, read_results(&job.results), mxs)
}

/// Asserts that no row bounced, and that every row was delivered at its first attempt.
fn all_delivered_at_once(rows: &[HashMap<String, String>]) {
    for r in rows {
        assert_eq!(r["status"], "delivered", "{r:?}");
        assert_eq!(
            r["attempts"], "1",
            "the protocol retry is not counted: {r:?}"
        );
    }
}

#[tokio::test]
async fn a_server_refusing_commands_behind_the_dot_gets_every_message_without_them() {
    let config = ReceiverConfig {
        refuse_after_dot: true,
        ..ReceiverConfig::default()
    };
    let (report, rows, mxs) = run_against(40, 12, config).await;
    // The behaviour was met: commands arrived behind a dot and were refused with 503.
    let rx = mxs.get(40);
    assert!(rx.commands_behind_content() >= 1);
    all_delivered_at_once(&rows);
    assert_eq!(rx.received().len(), 12);
    let summary = report.summary.to_string();
    assert_eq!(report.summary.dialect_fallbacks.len(), 1, "{summary}");
    assert!(
        summary.contains(
            "dialect: mx.example.com [127.0.0.40] fell back to pipelining-without-announcing \
             after \"503 5.5.1 Bad sequence of commands\""
        ),
        "{summary}"
    );
}

#[tokio::test]
async fn a_server_refusing_any_pipelining_gets_one_command_at_a_time() {
    let config = ReceiverConfig {
        refuse_pipelining: true,
        ..ReceiverConfig::default()
    };
    let (report, rows, mxs) = run_against(41, 6, config).await;
    all_delivered_at_once(&rows);
    assert_eq!(mxs.get(41).received().len(), 6);
    let fallbacks = &report.summary.dialect_fallbacks;
    assert_eq!(fallbacks.len(), 2, "{fallbacks:?}");
    assert!(
        fallbacks[1].contains("fell back to no-pipelining"),
        "{fallbacks:?}"
    );
}

#[tokio::test]
async fn a_503_to_rcpt_in_every_dialect_defers_the_row_as_protocol_never_bounces_it() {
    let config = ReceiverConfig {
        script: Arc::new(|rcpt: &str, _| {
            if rcpt.starts_with("user1@") {
                Rule::Rcpt(503, "5.5.1 Bad sequence of commands".into())
            } else {
                Rule::Accept
            }
        }),
        ..ReceiverConfig::default()
    };
    let (report, rows, _mxs) = run_against(42, 4, config).await;
    let r = row(&rows, "user1@example.com");
    assert_eq!(
        (
            r["status"].as_str(),
            r["category"].as_str(),
            r["code"].as_str()
        ),
        ("deferred", "protocol", "503"),
        "{r:?}"
    );
    for i in [0, 2, 3] {
        assert_eq!(
            row(&rows, &format!("user{i}@example.com"))["status"],
            "delivered"
        );
    }
    assert_eq!(report.summary.dialect_fallbacks.len(), 2);
}

#[tokio::test]
async fn outlooks_550_5_5_0_at_rcpt_is_still_a_bounce() {
    let config = ReceiverConfig {
        script: Arc::new(|rcpt: &str, _| {
            if rcpt.starts_with("user0@") {
                Rule::Rcpt(
                    550,
                    "5.5.0 Requested action not taken: mailbox unavailable".into(),
                )
            } else {
                Rule::Accept
            }
        }),
        ..ReceiverConfig::default()
    };
    let (report, rows, _mxs) = run_against(43, 2, config).await;
    let r = row(&rows, "user0@example.com");
    assert_eq!(
        (r["status"].as_str(), r["category"].as_str()),
        ("bounced", "bad-mailbox")
    );
    assert_eq!(row(&rows, "user1@example.com")["status"], "delivered");
    assert!(report.summary.dialect_fallbacks.is_empty());
}

#[tokio::test]
async fn a_session_limit_at_mail_opens_a_new_session_without_deferring_anything() {
    let config = ReceiverConfig {
        session_limit: Some(5),
        ..ReceiverConfig::default()
    };
    let (report, rows, mxs) = run_against(44, 23, config).await;
    all_delivered_at_once(&rows);
    let refused = mxs
        .get(44)
        .commands()
        .iter()
        .filter(|c| c.starts_with("MAIL"))
        .count()
        - 23;
    // Only the first session learns the limit the hard way (one refused MAIL, plus the
    // ones other workers' sessions met before they knew).
    assert!(refused <= 2, "{refused} MAIL commands refused");
    assert!(
        report.summary.connections >= 5,
        "{}",
        report.summary.connections
    );
}

#[tokio::test]
async fn chunking_sends_bdat_and_the_message_arrives_unstuffed() {
    let config = ReceiverConfig {
        chunking: true,
        ..ReceiverConfig::default()
    };
    let (_, rows, mxs) = run_against(45, 5, config).await;
    all_delivered_at_once(&rows);
    let rx = mxs.get(45);
    assert!(
        rx.commands()
            .iter()
            .any(|c| c.starts_with("BDAT ") && c.ends_with(" LAST"))
    );
    assert!(!rx.commands().iter().any(|c| c == "DATA"));
    for m in rx.received() {
        let text = String::from_utf8(m.data).unwrap();
        assert!(
            text.contains("\r\n.leading dot line\r\n..two dots\r\n"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn no_chunking_sends_data_where_chunking_is_offered() {
    let dns = dns_for(46).await;
    let config = ReceiverConfig {
        chunking: true,
        ..ReceiverConfig::default()
    };
    let mxs = Mxs::start(vec![(46, config)]).await;
    let job = Job::new(&list(3), TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.delivery.no_chunking = true;
    run(cfg).await.expect("run");
    all_delivered_at_once(&read_results(&job.results));
    let cmds = mxs.get(46).commands();
    assert!(!cmds.iter().any(|c| c.starts_with("BDAT")), "{cmds:?}");
    assert_eq!(cmds.iter().filter(|c| *c == "DATA").count(), 3, "{cmds:?}");
}

/// What a hostile scripted server does wrong, on its first connection only (later ones are
/// well-behaved, so every row can still be delivered).
#[derive(Clone, Copy, Debug)]
enum Quirk {
    /// A second reply right after the greeting.
    UnsolicitedAfterGreeting,
    /// Two replies to the end-of-data dot.
    TwoRepliesToTheDot,
    /// `354` to MAIL.
    Early354,
    /// Two replies to RCPT (the reply count no longer matches the commands).
    ExtraReplyToRcpt,
    /// A reply line of 10 000 octets to RCPT.
    EndlessLine,
    /// A 500-line reply to RCPT.
    EndlessReply,
    /// Offers PIPELINING, then hangs up on a pipelined MAIL.
    DropPipelinedGroup,
}

/// A lockstep-only SMTP server on 127.0.0.`octet` doing `quirk` on its first connection;
/// returns its port and the number of times the quirk was played.
async fn hostile(octet: u8, quirk: Quirk) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(SocketAddr::new(loopback(octet), 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let played = Arc::new(AtomicUsize::new(0));
    let count = played.clone();
    tokio::spawn(async move {
        let mut conn = 0;
        while let Ok((stream, _)) = listener.accept().await {
            let quirk = (conn == 0).then_some(quirk);
            conn += 1;
            tokio::spawn(scripted(stream, quirk, count.clone()));
        }
    });
    (port, played)
}

async fn scripted(stream: tokio::net::TcpStream, quirk: Option<Quirk>, played: Arc<AtomicUsize>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let play = |q: Quirk| {
        let hit =
            matches!(quirk, Some(x) if std::mem::discriminant(&x) == std::mem::discriminant(&q));
        if hit {
            played.fetch_add(1, Ordering::SeqCst);
        }
        hit
    };
    let mut greeting = String::from("220 mx ESMTP\r\n");
    if play(Quirk::UnsolicitedAfterGreeting) {
        greeting.push_str("250 surprise\r\n");
    }
    if w.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let grouped = !r.buffer().is_empty();
        let pipelining = matches!(quirk, Some(Quirk::DropPipelinedGroup));
        let answer = match verb.as_str() {
            "EHLO" if pipelining => "250-mx\r\n250 PIPELINING\r\n".to_string(),
            "EHLO" => "250-mx\r\n250 ENHANCEDSTATUSCODES\r\n".to_string(),
            "MAIL" if grouped && play(Quirk::DropPipelinedGroup) => return,
            "MAIL" if play(Quirk::Early354) => "354 go ahead\r\n".into(),
            "RCPT" if play(Quirk::ExtraReplyToRcpt) => "250 ok\r\n250 ok\r\n".into(),
            "RCPT" if play(Quirk::EndlessLine) => format!("250 {}\r\n", "x".repeat(10_000)),
            "RCPT" if play(Quirk::EndlessReply) => "250-x\r\n".repeat(500) + "250 x\r\n",
            "DATA" => {
                let _ = w.write_all(b"354 go ahead\r\n").await;
                loop {
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                if play(Quirk::TwoRepliesToTheDot) {
                    "250 2.0.0 queued\r\n250 2.0.0 queued again\r\n".into()
                } else {
                    "250 2.0.0 queued\r\n".into()
                }
            }
            "QUIT" => {
                let _ = w.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => "250 2.0.0 ok\r\n".into(),
        };
        if w.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Runs 3 rows against a hostile server: the quirk was played, no row bounced, all ended
/// delivered over later sessions.
async fn survives(octet: u8, quirk: Quirk) -> (RunReport, Vec<HashMap<String, String>>) {
    let (port, played) = hostile(octet, quirk).await;
    let dns = dns_for(octet).await;
    let job = Job::new(&list(3), TEMPLATE);
    let report = run(job.config(&dns, port)).await.expect("run");
    assert!(
        played.load(Ordering::SeqCst) >= 1,
        "{quirk:?} was never played"
    );
    let rows = read_results(&job.results);
    for r in &rows {
        assert_eq!(r["status"], "delivered", "{quirk:?}: {r:?}");
    }
    (report, rows)
}

#[tokio::test]
async fn a_drop_right_after_a_pipelined_group_falls_back_uncounted() {
    let (report, rows) = survives(56, Quirk::DropPipelinedGroup).await;
    all_delivered_at_once(&rows);
    let fallbacks = &report.summary.dialect_fallbacks;
    assert_eq!(fallbacks.len(), 1, "{fallbacks:?}");
    assert!(fallbacks[0].contains("connection lost right after a pipelined group"));
}

#[tokio::test]
async fn an_unsolicited_reply_after_the_greeting_ends_that_session() {
    survives(50, Quirk::UnsolicitedAfterGreeting).await;
}

#[tokio::test]
async fn two_replies_to_the_dot_end_the_session_and_the_message_goes_again() {
    survives(51, Quirk::TwoRepliesToTheDot).await;
}

#[tokio::test]
async fn a_354_to_mail_ends_the_session_before_any_content_is_sent() {
    survives(52, Quirk::Early354).await;
}

#[tokio::test]
async fn an_extra_reply_never_answers_the_next_command() {
    survives(53, Quirk::ExtraReplyToRcpt).await;
}

#[tokio::test]
async fn an_endless_reply_line_ends_the_session() {
    survives(54, Quirk::EndlessLine).await;
}

#[tokio::test]
async fn an_endless_multi_line_reply_ends_the_session() {
    survives(55, Quirk::EndlessReply).await;
}
