//! Interop with real, hardened SMTP servers ("never bounce a recipient for our own
//! protocol mistake"): Postfix, Exim, OpenSMTPD and chasquid, each a private instance on
//! loopback with its strict settings on, as the MX of a `.test` domain, taking a batch of thousands of messages
//! over reused connections. Every message must be delivered (none bounced), and every stored
//! message must be byte for byte what mailmerge rendered, below the headers the server adds.
//!
//! The servers come from Debian's packages (`.ci/run servers`; see tests/support/mta.rs). A test
//! whose server is missing prints "SKIPPED" and passes locally, but FAILS when `CI=true`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use crate::support::campaign::{list, template};
use crate::support::mta::{
    Chasquid, Exim, HARDENED_MAIN_CF, Mta, OpenSmtpd, Postfix, PostfixOptions, is_root,
    maildir_messages,
};
use crate::support::*;
use mailmerge::delivery::RetryPolicy;
use mailmerge::sandbox::dns::{DnsServer, loopback};
use mailmerge::smtp::Timeouts;
use mailmerge::{RunMode, run};

/// Messages per batch.
const N: usize = 2000;

/// What the interop run saw, for the report.
struct Seen {
    elapsed: Duration,
    stored_after: Duration,
    connections: usize,
    /// Rows that needed more than one attempt.
    retried: usize,
    /// The summary's dialect lines (addresses that objected to our pipelining).
    fallbacks: Vec<String>,
}

/// Headers a receiving MTA may add above the message it received.
const SERVER_HEADERS: &[&str] = &[
    "return-path",
    "delivered-to",
    "received",
    "received-spf",
    "authentication-results",
    "x-original-to",
    "envelope-to",
    "delivery-date",
];

/// Our trace header's first two lines, as written for `list.csv` and HELO `sender.test`.
const OUR_RECEIVED: &str = "Received: from list.csv\n\tby sender.test (mailmerge) id ";

/// Replaces the values that depend on the clock (Date, our Received's date) with `*`.
fn mask_clock(message: &str) -> String {
    let split = message.find("\n\n").map_or(message.len(), |i| i + 1);
    let (head, body) = message.split_at(split);
    let mut out = String::with_capacity(message.len());
    let mut date_next = false;
    for line in head.split_inclusive('\n') {
        if line.starts_with("Date:") {
            out.push_str("Date: *\n");
        } else if date_next && line.starts_with('\t') {
            out.push_str("\t*\n");
            date_next = false;
        } else {
            date_next = line.starts_with("\tby sender.test (mailmerge) id ");
            out.push_str(line);
        }
    }
    out + body
}

/// The Message-ID header value of a stored message (angle brackets removed).
fn message_id(message: &str) -> Option<String> {
    let head = &message[..message.find("\n\n").unwrap_or(message.len())];
    head.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .map(|l| l[11..].trim().trim_matches(['<', '>']).to_string())
}

/// Checks one stored message against what mailmerge rendered: above our part, only header
/// fields a server adds (at least its own Received); then exactly our bytes (LF line ends, as
/// Maildirs store them; the clock-dependent values masked); our Received exactly once.
fn check_stored(stored: &str, rendered: &str) -> Result<(), String> {
    let at = stored
        .find(OUR_RECEIVED)
        .ok_or("our Received header is missing")?;
    let (server, ours) = stored.split_at(at);
    let mut server_fields = 0;
    for line in server.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        if !SERVER_HEADERS.contains(&name.as_str()) {
            return Err(format!("unexpected header above ours: {line:?}"));
        }
        server_fields += 1;
    }
    if !server.contains("Received: ") || server_fields == 0 {
        return Err("the server added no Received header".into());
    }
    if stored.matches("(mailmerge)").count() != 1 {
        return Err("our Received header is not there exactly once".into());
    }
    let want = mask_clock(&rendered.replace("\r\n", "\n"));
    let got = mask_clock(ours);
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        return Err(format!(
            "content differs from line {}: got {:?}, want {:?}",
            line + 1,
            got.lines().nth(line),
            want.lines().nth(line)
        ));
    }
    Ok(())
}

/// Rows grouped by what happened to them, for a failure message: the replies the server gave.
fn outcome_summary(rows: &[HashMap<String, String>]) -> String {
    let mut groups: BTreeMap<(String, String, String, String), (usize, String)> = BTreeMap::new();
    for r in rows {
        let key = (
            r["status"].clone(),
            r["step"].clone(),
            r["code"].clone(),
            r["response"].clone(),
        );
        let e = groups.entry(key).or_insert((0, r["email"].clone()));
        e.0 += 1;
    }
    let mut out = String::new();
    for ((status, step, code, response), (count, first)) in groups.iter().take(12) {
        writeln!(
            out,
            "  {count:>5} × {status} step={step} code={code} response={response:?} (first: {first})"
        )
        .unwrap();
    }
    out
}

/// Runs a batch of `n` messages to `domain`, whose MX is `mta` on 127.0.0.`octet`, over at most
/// `connections` connections at a time; asserts that every message was delivered (none bounced)
/// and stored exactly as rendered, and returns what it saw.
async fn batch(mta: &dyn Mta, domain: &str, octet: u8, n: usize, connections: usize) -> Seen {
    batch_with(mta, (domain, octet), (n, connections), None).await
}

/// [`batch`], with the sender's memory in `state` (a store another run reads after it).
async fn batch_with(
    mta: &dyn Mta,
    (domain, octet): (&str, u8),
    (n, connections): (usize, usize),
    state: Option<&std::path::Path>,
) -> Seen {
    let what = mta.describe();
    let mut z = zone();
    let mx = format!("mx.{domain}");
    z.mx(domain, 10, &mx).addr(&mx, loopback(octet));
    let dns = dns(z).await;
    let csv = list(n, domain);
    let tpl = template();
    let run_id = mailmerge::message::new_run_id();
    // One run id and one Message-ID secret for both runs, so both give the same Message-IDs.
    let secret = mailmerge::message::IdSecret::random();

    // What mailmerge renders for each row: the same list, template and run id, planned only.
    let planned = Job::new(&csv, &tpl);
    let eml = planned.path("eml");
    let mut cfg = planned.config(&dns, mta.addr().port());
    cfg.mode = RunMode::Plan {
        eml_out: Some(eml.clone()),
    };
    cfg.message.message_id_prefix = Some(run_id.clone());
    cfg.message.message_id_secret = secret.clone();
    run(cfg).await.expect("plan run");

    let job = Job::new(&csv, &tpl);
    let mut cfg = job.config(&dns, mta.addr().port());
    cfg.message.message_id_prefix = Some(run_id);
    cfg.message.message_id_secret = secret;
    cfg.delivery.connections_per_site = NonZeroUsize::new(connections).unwrap();
    // Generous for a shared 2-core machine: a slow server must not turn into a deferral.
    cfg.delivery.timeouts = Timeouts::uniform(Duration::from_secs(30));
    cfg.delivery.retry = RetryPolicy::parse("200ms").unwrap();
    // Only a bound on a stalled run, never reached by a slow one: with every interop test,
    // builds and other runs sharing 2 cores, chasquid alone (≈5 ms of CPU per message) has
    // needed more than 40 s for the batch.
    cfg.delivery.deadline = Duration::from_secs(600);
    if let Some(state) = state {
        cfg.state = Some(state.to_path_buf().into());
    }
    let started = Instant::now();
    let report = run(cfg).await.expect("run");
    let elapsed = started.elapsed();
    let rows = read_results(&job.results);
    assert_eq!(rows.len(), n);
    let delivered = rows.iter().filter(|r| r["status"] == "delivered").count();
    let bounced = rows.iter().filter(|r| r["status"] == "bounced").count();
    assert!(
        delivered == n && bounced == 0,
        "{what}: {delivered} of {n} delivered, {bounced} bounced, {} connections; \
         outcomes:\n{}server log:\n{}",
        report.summary.connections,
        outcome_summary(&rows),
        mta.log_tail(40)
    );
    assert!(
        rows.iter().all(|r| r["code"] == "250"),
        "{what}: {}",
        outcome_summary(&rows)
    );

    stored_as_rendered(mta, &eml, n).await;
    let stored_after = started.elapsed();

    let seen = Seen {
        elapsed,
        stored_after,
        connections: report.summary.connections,
        retried: rows.iter().filter(|r| r["attempts"] != "1").count(),
        fallbacks: report.summary.dialect_fallbacks.clone(),
    };
    eprintln!(
        "interop: {what}: {n} delivered in {:.1?} over {} connections ({} rows needed a \
         retry); all stored after {:.1?} and identical to what was rendered",
        seen.elapsed, seen.connections, seen.retried, seen.stored_after
    );
    seen
}

/// Waits until `mta` has stored `n` messages, then checks that they are exactly the messages
/// rendered into `eml`, byte for byte, each once.
async fn stored_as_rendered(mta: &dyn Mta, eml: &std::path::Path, n: usize) {
    let what = mta.describe();
    // The server stores every message it accepted: wait for its delivery agent.
    let maildir = mta.maildir();
    let deadline = Instant::now() + Duration::from_secs(600);
    while mta.stored() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stored = maildir_messages(&maildir);
    assert_eq!(
        stored.len(),
        n,
        "{what}: stored {} of {n}; log:\n{}",
        stored.len(),
        mta.log_tail(40)
    );

    // Byte for byte what mailmerge rendered, for every message.
    let mut by_id = HashMap::new();
    for bytes in stored {
        let text = String::from_utf8(bytes).expect("7-bit messages");
        let id = message_id(&text).unwrap_or_else(|| panic!("{what}: no Message-ID in {text}"));
        assert!(
            by_id.insert(id.clone(), text).is_none(),
            "{what}: {id} stored twice"
        );
    }
    let mut checked = 0;
    for entry in std::fs::read_dir(eml).unwrap() {
        let path = entry.unwrap().path();
        // Beside each .eml, --out writes an .html preview.
        if path.extension().is_none_or(|e| e != "eml") {
            continue;
        }
        let rendered = std::fs::read_to_string(path).unwrap();
        let id = message_id(&rendered.replace("\r\n", "\n")).expect("rendered Message-ID");
        let stored = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("{what}: {id} was rendered but is not stored"));
        if let Err(e) = check_stored(stored, &rendered) {
            panic!("{what}: message {id}: {e}\nstored:\n{stored}");
        }
        checked += 1;
    }
    assert_eq!(checked, n, "{what}: rendered messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_with_smuggling_protection_takes_a_batch_over_reused_connections() {
    // STARTTLS with a self-signed certificate, as chasquid's run has: the two runs' times are
    // compared (docs/performance.md).
    let id = mailmerge::sandbox::tls::self_signed(&["mx.pf.test"]).unwrap();
    let Some(pf) = Postfix::start(
        81,
        PostfixOptions {
            domain: "pf.test",
            tls: Some((&id.cert_pem, &id.key_pem)),
            master_cf: "",
            main_cf: HARDENED_MAIN_CF,
        },
    ) else {
        return;
    };
    let seen = batch(&pf, "pf.test", 81, N, 3).await;
    // Well under mailmerge's 1,000 messages per connection: one connection per slot.
    assert!(
        seen.connections <= 6,
        "connections reused: {}",
        seen.connections
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exim_with_sync_enforcement_takes_a_batch_over_reused_connections() {
    let Some(ex) = Exim::start(82, "ex.test", "") else {
        return;
    };
    let seen = batch(&ex, "ex.test", 82, N, 3).await;
    // Exim takes 1,000 messages per connection (smtp_accept_max_per_connection).
    assert!(
        seen.connections <= 6,
        "connections reused: {}",
        seen.connections
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensmtpd_without_pipelining_takes_a_batch_over_reused_connections() {
    let Some(os) = OpenSmtpd::start(83, "os.test", "") else {
        return;
    };
    let seen = batch(&os, "os.test", 83, N, 3).await;
    // OpenSMTPD takes 100 messages per session (`smtp limit max-mails`), then answers MAIL
    // with 452 4.5.3: at least N/100 sessions, and reuse up to that limit.
    let least = N.div_ceil(100);
    assert!(
        (least..=least + 6).contains(&seen.connections),
        "connections: {}",
        seen.connections
    );
    // Each worker's first session meets the limit once; that costs no attempt.
    assert_eq!(seen.retried, 0, "rows needing a second attempt");
}

/// OpenSMTPD's per-session limit: once it answers MAIL with "452 4.5.3 ... Too many messages
/// sent", this session takes no more mail and a new one must be opened: mailmerge closes it,
/// sends the message over a new one without counting an attempt, and from then on retires
/// sessions with this server before the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensmtpd_session_limit_ends_the_session_instead_of_deferring_its_queue() {
    let Some(os) = OpenSmtpd::start(84, "os2.test", "smtp limit max-mails 20") else {
        return;
    };
    let n = 100;
    let seen = batch(&os, "os2.test", 84, n, 1).await;
    let refused = os.log().matches("Too many messages sent").count();
    assert!(
        refused <= seen.connections && seen.retried <= seen.connections,
        "{refused} MAIL commands refused with 452 and {} rows deferred over {} sessions; \
         log:\n{}",
        seen.retried,
        seen.connections,
        os.log_tail(12)
    );
}

/// chasquid answers a message's final dot with 250 and never the commands pipelined behind it
/// (it reads past the dot and drops what follows). Until the address has answered such
/// commands, only one session pipelines behind the dot; it delivers one message and then hears
/// nothing, while the others send one transaction per round trip. mailmerge notices within
/// `BEHIND_DOT_WAIT` of the dot's reply, not at chasquid's one-minute timeout: that one
/// session ends, its row goes again at once uncounted, and the address gets one transaction
/// per round trip. Every message is delivered once and stored as rendered; every session
/// chasquid saw was ended by mailmerge, exactly one by a close after the silence and the others
/// with QUIT, none by chasquid's timeout. chasquid's SPF lookups of the sender went to the
/// test's DNS server on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chasquid_swallowing_commands_behind_the_dot_takes_a_batch_without_waiting_for_its_timeout()
{
    let octet = 85;
    // chasquid's resolver: a DNS server on port 53 of its own address (resolv.conf names no
    // port) publishing the sender's SPF record.
    let spf = match is_root() {
        true => Some(SpfDns::start(loopback(octet))),
        false => None,
    };
    let users: Vec<String> = (0..N).map(|i| format!("user{i}")).collect();
    let Some(cq) = Chasquid::start(octet, "cq.test", loopback(octet), &users) else {
        return;
    };
    let memory = tempfile::tempdir().unwrap();
    let state = memory.path().join("senders.sqlite");
    let cpu = cq.cpu();
    let seen = batch_with(&cq, ("cq.test", octet), (N, 3), Some(&state)).await;
    // For the record: chasquid's own cost (benches/chasquid_vs_postfix.rs compares it).
    eprintln!("interop: chasquid used {:.1?} of CPU", cq.cpu() - cpu);
    assert_eq!(
        seen.fallbacks,
        vec![
            "mx.cq.test [127.0.0.85]: does not answer commands pipelined behind the final \
             dot; sent one transaction per round trip from then on"
        ]
    );
    assert_eq!(seen.retried, 0, "rows needing a second attempt");
    let spf_lookups = spf.map_or(0, SpfDns::lookups);
    assert!(
        spf_lookups >= 1,
        "chasquid's SPF lookups stayed on loopback"
    );
    // Every session it saw (its log names each by the client's port; the one that did not
    // say EHLO is the harness's check that it listens) ended on our side: QUIT, or a close.
    // Only the one session that pipelined behind the dot before the address had proven it
    // lost its group and was closed; every other one ended with QUIT.
    let sessions = |log: &str| -> HashMap<String, &'static str> {
        let mut seen = HashMap::new();
        for line in log.lines() {
            let Some((peer, what)) = line
                .split_once("SMTP.Conn ")
                .and_then(|(_, rest)| rest.split_once(": "))
            else {
                continue;
            };
            if what.starts_with("-> EHLO") {
                seen.entry(peer.to_string()).or_insert("open");
            } else if what == "-> QUIT " {
                seen.entry(peer.to_string()).and_modify(|e| *e = "quit");
            } else if what == "client closed the connection" {
                seen.entry(peer.to_string())
                    .and_modify(|e| *e = if *e == "quit" { "quit" } else { "closed" });
            }
        }
        seen
    };
    let until = Instant::now() + Duration::from_secs(120);
    while sessions(&cq.log()).values().any(|e| *e == "open") && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = cq.log();
    let sessions = sessions(&log);
    assert_eq!(sessions.len(), seen.connections, "{sessions:?}");
    let closed = sessions.values().filter(|e| **e == "closed").count();
    let quit = sessions.values().filter(|e| **e == "quit").count();
    assert_eq!(
        (closed, quit),
        (1, seen.connections - 1),
        "sessions closed after losing a group, and QUIT: {sessions:?}"
    );
    assert_eq!(log.matches("i/o timeout").count(), 0, "{}", cq.log_tail(20));

    // The next campaign starts in the learnt dialect: nothing to notice, nothing to wait for.
    let mut z = zone();
    z.mx("cq.test", 10, "mx.cq.test")
        .addr("mx.cq.test", loopback(octet));
    let dns = dns(z).await;
    let next = Job::new(&list(200, "cq.test"), &template());
    let mut cfg = next.config(&dns, cq.addr().port());
    cfg.state = Some(state.clone().into());
    cfg.delivery.connections_per_site = NonZeroUsize::new(3).unwrap();
    cfg.delivery.timeouts = Timeouts::uniform(Duration::from_secs(30));
    cfg.delivery.deadline = Duration::from_secs(600);
    let report = run(cfg).await.expect("next campaign");
    assert_eq!(
        report.summary.count(mailmerge::outcome::Status::Delivered),
        200
    );
    assert!(
        report.summary.dialect_fallbacks.is_empty(),
        "started in the learnt dialect: {:?}",
        report.summary.dialect_fallbacks
    );
}

/// The DNS server chasquid asks: port 53 on a loopback address, the sender's SPF record
/// (`v=spf1 ip4:127.0.0.0/8 -all`), served from a thread and runtime of its own so that its
/// answers never wait behind the run's busy runtime (chasquid asks at every MAIL).
struct SpfDns {
    /// Sending (or dropping) it stops the server.
    stop: tokio::sync::oneshot::Sender<()>,
    /// The server's thread; gives the SPF lookups it answered.
    thread: std::thread::JoinHandle<usize>,
}

impl SpfDns {
    fn start(ip: std::net::IpAddr) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, up) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut z = zone();
                z.txt("sender.test", "v=spf1 ip4:127.0.0.0/8 -all");
                let dns = DnsServer::start(std::net::SocketAddr::new(ip, 53), z).await;
                let dns = dns.expect("a DNS server on port 53 for chasquid");
                ready.send(()).unwrap();
                let _ = stopped.await;
                dns.query_count("sender.test", hickory_proto::rr::RecordType::TXT)
            })
        });
        up.recv().expect("DNS server thread");
        Self { stop, thread }
    }

    /// Stops the server; the SPF lookups it answered.
    fn lookups(self) -> usize {
        let _ = self.stop.send(());
        self.thread.join().unwrap()
    }
}
