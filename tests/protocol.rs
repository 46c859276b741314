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
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
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
            "dialect: mx.example.com [127.0.0.40]: refused commands pipelined behind the final \
             dot with \"503 5.5.1 Bad sequence of commands\"; sent one transaction per round \
             trip from then on"
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
    let said = "refused pipelined commands with \"503 5.5.1 Bad sequence of commands\"";
    assert!(
        fallbacks[0].ends_with(&format!(
            "{said}; sent one transaction per round trip from then on"
        )),
        "{fallbacks:?}"
    );
    assert!(
        fallbacks[1].ends_with(&format!(
            "{said}; sent one command per round trip from then on"
        )),
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
    assert!(
        fallbacks[0].contains("closed the connection on a pipelined group of commands"),
        "{fallbacks:?}"
    );
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

// ---------------------------------------------------------------------------------------------
// Replies out of step: a scripted server whose every reply is given by the test.

/// What a scripted server sends after it heard `what` on connection `conn` (0-based):
/// `Some(bytes)` replaces its usual answer (any number of replies, or none; a `|` splits the
/// bytes into separate writes, the server's task yielding in between). `what` is the verb (`EHLO`, `MAIL`, `RCPT`, `DATA`, `BDAT`,
/// `RSET`, `NOOP`, `QUIT`), `.` for a message's end of data, or `content` for the first line
/// of a message (usually nothing is sent then).
type Answers = Arc<dyn Fn(usize, &str) -> Option<String> + Send + Sync>;

/// A server on loopback that speaks SMTP (PIPELINING, and CHUNKING when asked) as the test
/// scripts it, and counts what it accepted: a message counts when the first reply it sent to
/// the end of the message (the final dot, or `BDAT … LAST`) is 2yz.
struct Wire {
    /// Its port on its 127.0.0.x address.
    port: u16,
    /// Recipients of the messages the server accepted, in order.
    accepted: Arc<std::sync::Mutex<Vec<String>>>,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
}

impl Wire {
    async fn start(octet: u8, chunking: bool, answers: Answers) -> Self {
        let listener = TcpListener::bind(SocketAddr::new(loopback(octet), 0))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (acc, count) = (accepted.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // Each reply leaves at once (no Nagle delay): what the script sends together
                // reaches the client together.
                let _ = stream.set_nodelay(true);
                let conn = count.fetch_add(1, Ordering::SeqCst);
                let wire = WireSession {
                    conn,
                    chunking,
                    answers: answers.clone(),
                    accepted: acc.clone(),
                    rcpt: String::new(),
                };
                tokio::spawn(wire.serve(stream));
            }
        });
        Self {
            port,
            accepted,
            connections,
        }
    }

    fn accepted(&self) -> Vec<String> {
        self.accepted.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// One connection of a [`Wire`] server.
struct WireSession {
    /// Connection number, from 0.
    conn: usize,
    /// CHUNKING is advertised.
    chunking: bool,
    /// The script.
    answers: Answers,
    /// The server's accepted messages (shared with [`Wire`]).
    accepted: Arc<std::sync::Mutex<Vec<String>>>,
    /// The recipient of the transaction in progress.
    rcpt: String,
}

impl WireSession {
    /// The scripted answer to `what`, or `usual`.
    fn answer(&self, what: &str, usual: &str) -> String {
        (self.answers)(self.conn, what).unwrap_or_else(|| usual.to_string())
    }

    /// Writes `bytes`; each `|` starts a new write after the server's task yielded once,
    /// so that the client reads what came before it on its own first.
    async fn send(w: &mut tokio::net::tcp::OwnedWriteHalf, bytes: &str) -> bool {
        for (i, part) in bytes.split('|').enumerate() {
            if i > 0 {
                tokio::task::yield_now().await;
            }
            if !part.is_empty() && w.write_all(part.as_bytes()).await.is_err() {
                return false;
            }
        }
        true
    }

    async fn serve(mut self, stream: tokio::net::TcpStream) {
        let (r, mut w) = stream.into_split();
        let mut r = BufReader::new(r);
        if !Self::send(&mut w, "220 mx.example.com ESMTP\r\n").await {
            return;
        }
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let verb = line.split([' ', ':', '\r', '\n']).next().unwrap_or("");
            let verb = verb.to_ascii_uppercase();
            let answer = match verb.as_str() {
                "DATA" => {
                    let go = self.answer("DATA", "354 go ahead\r\n");
                    if !Self::send(&mut w, &go).await {
                        return;
                    }
                    if !go.starts_with("354") {
                        continue;
                    }
                    line.clear();
                    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let during = self.answer("content", "");
                    if !Self::send(&mut w, &during).await {
                        return;
                    }
                    if line != ".\r\n" && !read_to_dot(&mut r).await {
                        return;
                    }
                    self.end_of_message()
                }
                "BDAT" => {
                    let mut words = line.split_ascii_whitespace().skip(1);
                    let size: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                    let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                    let mut chunk = vec![0; size];
                    if r.read_exact(&mut chunk).await.is_err() {
                        return;
                    }
                    match last {
                        true => self.end_of_message(),
                        false => self.answer("BDAT", "250 2.0.0 chunk ok\r\n"),
                    }
                }
                "QUIT" => {
                    let bye = self.answer("QUIT", "221 2.0.0 bye\r\n");
                    Self::send(&mut w, &bye).await;
                    return;
                }
                _ => {
                    let usual = self.usual(&verb, &line);
                    self.answer(&verb, usual)
                }
            };
            if !Self::send(&mut w, &answer).await {
                return;
            }
        }
    }

    /// The usual answer to a command other than DATA, BDAT and QUIT.
    fn usual(&mut self, verb: &str, line: &str) -> &'static str {
        match verb {
            "EHLO" if self.chunking => {
                "250-mx.example.com\r\n250-PIPELINING\r\n250-CHUNKING\r\n\
                 250 ENHANCEDSTATUSCODES\r\n"
            }
            "EHLO" => "250-mx.example.com\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n",
            "MAIL" => "250 2.1.0 ok\r\n",
            "RCPT" => {
                self.rcpt = line.split(['<', '>']).nth(1).unwrap_or("").to_string();
                "250 2.1.5 ok\r\n"
            }
            "RSET" | "NOOP" => "250 2.0.0 ok\r\n",
            _ => "502 5.5.2 not implemented\r\n",
        }
    }

    /// The answer to the end of a message, recorded as accepted when it is 2yz.
    fn end_of_message(&self) -> String {
        let end = self.answer(".", "250 2.0.0 queued\r\n");
        if end.starts_with('2') {
            self.accepted.lock().unwrap().push(self.rcpt.clone());
        }
        end
    }
}

/// Reads message lines up to the final dot; false when the client is gone.
async fn read_to_dot(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return false;
        }
        if line == ".\r\n" {
            return true;
        }
    }
}

/// Runs `n` rows against a [`Wire`] server on 127.0.0.`octet` (with a suppression list) and
/// checks what no server can change: no row bounced, nothing suppressed, and every row
/// `delivered` exactly when the server accepted its message, which it did at most once.
async fn against_wire(
    octet: u8,
    n: usize,
    chunking: bool,
    answers: Answers,
) -> (Vec<HashMap<String, String>>, RunReport, Wire, Job) {
    let wire = Wire::start(octet, chunking, answers).await;
    let dns = dns_for(octet).await;
    let job = Job::new(&list(n), TEMPLATE);
    let report = run(wire_config(&job, &dns, &wire)).await.expect("run");
    let rows = read_results(&job.results);
    check_truth(&rows, &report, &wire);
    (rows, report, wire, job)
}

fn wire_config(job: &Job, dns: &DnsServer, wire: &Wire) -> mailmerge::RunConfig {
    let mut cfg = job.config(dns, wire.port);
    cfg.suppress.store = Some(job.path("suppressions.db").into());
    cfg
}

/// The rows agree with what the server accepted; nothing bounced or suppressed.
fn check_truth(rows: &[HashMap<String, String>], report: &RunReport, wire: &Wire) {
    let accepted = wire.accepted();
    for r in rows {
        assert_ne!(r["status"], "bounced", "{r:?}");
        let copies = accepted.iter().filter(|a| **a == r["email"]).count();
        assert!(copies <= 1, "{} accepted {copies} times", r["email"]);
        assert_eq!(
            r["status"] == "delivered",
            copies == 1,
            "the row says {} but the server accepted {copies} copies: {r:?}",
            r["status"]
        );
    }
    assert_eq!(report.newly_suppressed, 0);
}

/// Counts the times a script played its quirk.
#[derive(Clone, Default)]
struct Played(
    /// Times played.
    Arc<AtomicUsize>,
);

impl Played {
    /// `answer`, counted.
    fn play(&self, answer: &str) -> Option<String> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Some(answer.to_string())
    }

    fn times(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Every row ended `deferred`, category `protocol`, at its first attempt: never taken for
/// delivered or bounced on the strength of a reply out of step.
fn all_deferred_as_protocol(rows: &[HashMap<String, String>]) {
    for r in rows {
        assert_eq!(
            (
                r["status"].as_str(),
                r["category"].as_str(),
                r["attempts"].as_str()
            ),
            ("deferred", "protocol", "1"),
            "{r:?}"
        );
    }
}

/// Issue 21, case 2: a server that sends `250` right behind the `354` (in a write of its own)
/// and `550 5.7.1` after the final dot. The 250 reached us before the message went out: it is
/// early, never the verdict.
/// The session ends before the message is sent; every dialect meets it; the rows end
/// deferred, and the server accepted nothing.
#[tokio::test]
async fn a_250_sent_with_the_354_is_early_and_never_a_delivery() {
    let played = Played::default();
    let p = played.clone();
    let script: Answers = Arc::new(move |_, heard| match heard {
        "DATA" => p.play("354 go ahead\r\n|250 2.0.0 queued early\r\n"),
        "." => Some("550 5.7.1 message refused\r\n".into()),
        _ => None,
    });
    let (rows, report, wire, _job) = against_wire(60, 3, false, script).await;
    assert!(played.times() >= 3, "played {} times", played.times());
    all_deferred_as_protocol(&rows);
    assert!(wire.accepted().is_empty());
    assert!(
        rows[0]["response"].contains("unsolicited reply 250 2.0.0 queued early"),
        "{:?}",
        rows[0]
    );
    // Full, then one transaction per round trip, then one command per round trip: a session
    // each at least.
    assert_eq!(report.summary.dialect_fallbacks.len(), 2);
    assert!(wire.connections() >= 3, "{}", wire.connections());
}

/// Case 2 with a long message: a `250` that arrives while the message is still being
/// written (the server's verdict after the dot would have been `550 5.7.1`) is early too; the
/// session ends before the dot is sent, and the message goes again over a new session.
#[tokio::test]
async fn an_early_reply_during_a_long_message_stops_it_before_its_dot() {
    let played = Played::default();
    let p = played.clone();
    let script: Answers = Arc::new(move |conn, heard| match heard {
        "content" if conn == 0 => p.play("250 2.0.0 queued early\r\n"),
        "." if conn == 0 => Some("550 5.7.1 message refused\r\n".into()),
        _ => None,
    });
    let wire = Wire::start(66, false, script).await;
    let dns = dns_for(66).await;
    let long = format!("{TEMPLATE}{}\n", "0123456789 abcdefghij\n".repeat(20_000));
    let job = Job::new(&list(2), &long);
    let report = run(wire_config(&job, &dns, &wire)).await.expect("run");
    let rows = read_results(&job.results);
    check_truth(&rows, &report, &wire);
    assert_eq!(played.times(), 1);
    // The first session ended early, uncounted; a new one delivered both.
    all_delivered_at_once(&rows);
    assert_eq!(wire.accepted().len(), 2);
    assert_eq!(report.summary.dialect_fallbacks.len(), 1);
}

/// Issue 21, case 3: an extra `550 5.1.1` from a server out of step, wherever it lands in a
/// pipelined group (MAIL, RCPT or DATA, with DATA or BDAT), is never taken for the reply to
/// RCPT, DATA or the message: nothing bounces, nothing is suppressed, every row is sent
/// again uncounted and delivered by a later session. `|` sends the extra reply in a write of
/// its own.
#[tokio::test]
async fn a_surplus_550_from_a_server_out_of_step_never_bounces_a_row() {
    let cases: [(u8, bool, &'static str, &'static str); 6] = [
        (70, false, "MAIL", "250 2.1.0 ok\r\n|550 5.1.1 extra\r\n"),
        (71, false, "RCPT", "550 5.1.1 extra\r\n|250 2.1.5 ok\r\n"),
        (72, false, "RCPT", "250 2.1.5 ok\r\n|550 5.1.1 extra\r\n"),
        (73, false, "DATA", "550 5.1.1 extra\r\n|354 go ahead\r\n"),
        (74, true, "RCPT", "250 2.1.5 ok\r\n|550 5.1.1 extra\r\n"),
        (75, true, "MAIL", "550 5.1.1 extra\r\n|250 2.1.0 ok\r\n"),
    ];
    for (octet, chunking, what, answer) in cases {
        let played = Played::default();
        let p = played.clone();
        let script: Answers =
            Arc::new(move |conn, heard| (conn == 0 && heard == what).then(|| p.play(answer))?);
        let (rows, report, _wire, _job) = against_wire(octet, 3, chunking, script).await;
        let case = format!("{what} answered {answer:?} (chunking: {chunking})");
        assert_eq!(played.times(), 1, "{case}");
        for r in &rows {
            assert_eq!(
                (r["status"].as_str(), r["attempts"].as_str()),
                ("delivered", "1"),
                "{case}: {r:?}"
            );
        }
        assert_eq!(report.summary.dialect_fallbacks.len(), 1, "{case}");
    }
}

/// Case 3 on every session, in every dialect down to one command at a time: the rows end
/// deferred (`protocol`), never bounced, and the server accepted nothing.
#[tokio::test]
async fn a_server_always_out_of_step_defers_every_row_as_protocol() {
    let script: Answers = Arc::new(|_, heard| {
        (heard == "RCPT").then(|| "250 2.1.5 ok\r\n|550 5.1.1 extra\r\n".to_string())
    });
    let (rows, report, wire, _job) = against_wire(76, 3, false, script).await;
    all_deferred_as_protocol(&rows);
    assert!(wire.accepted().is_empty());
    assert_eq!(report.summary.dialect_fallbacks.len(), 2);
}

/// Issue 21, case 4: a stray reply after the `250` to the end of data. The 250 came in its
/// turn: every row is delivered, each message accepted exactly once, and a re-run of the
/// same command sends nothing again.
#[tokio::test]
async fn a_stray_reply_after_the_250_to_the_data_leaves_the_row_delivered_and_never_resent() {
    for (octet, chunking) in [(77, false), (78, true)] {
        let script: Answers = Arc::new(|_, heard| {
            (heard == ".").then(|| "250 2.0.0 queued\r\n250 2.0.0 stray\r\n".to_string())
        });
        let (rows, report, wire, job) = against_wire(octet, 5, chunking, script).await;
        for r in &rows {
            assert_eq!(r["status"], "delivered", "{r:?}");
            assert_eq!(r["response"], "queued", "{r:?}");
        }
        assert_eq!(wire.accepted().len(), 5);
        assert!(!report.summary.dialect_fallbacks.is_empty());
        let dns = dns_for(octet).await;
        let again = run(wire_config(&job, &dns, &wire)).await.expect("re-run");
        let rows = read_results(&job.results);
        check_truth(&rows, &again, &wire);
        assert_eq!(wire.accepted().len(), 5, "nothing sent again");
        assert!(rows.iter().all(|r| r["status"] == "delivered"));
    }
}

// ---------------------------------------------------------------------------------------------
// Addresses never connected to.

/// Issue 21, case 7: an MX that resolves to `0.0.0.0` (which Linux takes for "this host": a
/// connection there reaches a listener on 127.0.0.1) is never connected to. A domain whose
/// only MX address is unusable bounces at once as having no usable address (`550 5.4.4`,
/// step `dns`, never suppressed); a domain with a usable MX besides goes there.
#[tokio::test]
async fn an_mx_at_0_0_0_0_is_never_connected_to_and_the_row_says_why() {
    let mxs = Mxs::start(vec![
        (1, ReceiverConfig::default()),
        (85, ReceiverConfig::default()),
    ])
    .await;
    let mut z = zone();
    z.mx("zero.test", 10, "mx.zero.test")
        .addr("mx.zero.test", "0.0.0.0".parse().unwrap())
        .mx("multicast.test", 10, "mx.multicast.test")
        .addr("mx.multicast.test", "224.0.0.25".parse().unwrap())
        .mx("mixed.test", 10, "mx1.mixed.test")
        .addr("mx1.mixed.test", "0.0.0.0".parse().unwrap())
        .mx("mixed.test", 20, "mx2.mixed.test")
        .addr("mx2.mixed.test", loopback(85));
    let dns = dns(z).await;
    let csv = "email,name\na@zero.test,A\nb@multicast.test,B\nc@mixed.test,C\n";
    let job = Job::new(csv, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.suppress.store = Some(job.path("suppressions.db").into());
    let report = run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    let a = row(&rows, "a@zero.test");
    assert_eq!(
        (
            a["status"].as_str(),
            a["step"].as_str(),
            a["code"].as_str(),
            a["enhanced_code"].as_str(),
            a["category"].as_str()
        ),
        ("bounced", "dns", "550", "5.4.4", "bad-domain"),
        "{a:?}"
    );
    assert_eq!(
        a["response"],
        "no usable address for any MX host of zero.test: mx.zero.test 0.0.0.0 is a \"this \
         network\" address (0.0.0.0/8) (never connected to)"
    );
    let b = row(&rows, "b@multicast.test");
    assert_eq!(b["status"], "bounced");
    assert!(
        b["response"].contains("224.0.0.25 is a multicast address"),
        "{b:?}"
    );
    assert_eq!(row(&rows, "c@mixed.test")["status"], "delivered");
    assert_eq!(
        mxs.get(1).connections(),
        0,
        "nothing reached 0.0.0.0 (127.0.0.1)"
    );
    assert_eq!(mxs.get(85).connections(), 1);
    assert_eq!(report.newly_suppressed, 0);
}

/// `--no-private-mx`: a domain under a public name whose MX is on a private (here loopback)
/// address bounces without a connection; under a special-use name (`.test`) the same address
/// is used. Without the flag, loopback is usable (every test here depends on it).
#[tokio::test]
async fn no_private_mx_refuses_private_addresses_for_public_names_only() {
    let mxs = Mxs::start(vec![(86, ReceiverConfig::default())]).await;
    let mut z = zone();
    z.mx("example.com", 10, "mx.example.com")
        .addr("mx.example.com", loopback(86))
        .mx("lan.test", 10, "mx.lan.test")
        .addr("mx.lan.test", loopback(86));
    let dns = dns(z).await;
    let job = Job::new("email,name\na@example.com,A\nb@lan.test,B\n", TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.dns.no_private_mx = true;
    run(cfg).await.expect("run");
    let rows = read_results(&job.results);
    let a = row(&rows, "a@example.com");
    assert_eq!(
        (a["status"].as_str(), a["enhanced_code"].as_str()),
        ("bounced", "5.4.4")
    );
    assert!(
        a["response"].contains("mx.example.com 127.0.0.86 is a loopback address"),
        "{a:?}"
    );
    assert_eq!(row(&rows, "b@lan.test")["status"], "delivered");
    let got: Vec<String> = mxs
        .get(86)
        .received()
        .into_iter()
        .map(|m| m.rcpt_to)
        .collect();
    assert_eq!(got, vec!["b@lan.test"]);
}
