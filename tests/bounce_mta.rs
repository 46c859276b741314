//! Real bounces from the real MTAs the suite runs (tests/support/mta.rs): Exim and OpenSMTPD
//! each accept a campaign's message (250), then fail to deliver it and send their own bounce
//! to the VERP return path through a loopback relay. Each bounce, exactly as the MTA wrote it,
//! is read by `bounces` and tied to its row: `bounced`, `late-bounce`, and suppressed when the
//! MTA says the mailbox does not exist. (Postfix's is in tests/bounces.rs.)

use std::time::{Duration, Instant};

use crate::support::mta::{Exim, OpenSmtpd};
use crate::support::*;
use mailmerge::bounces::{Disposition, Matcher, Reading};
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::receiver::{Received, ReceiverConfig};
use mailmerge::verp::Verp;

const KEY: &[u8] = b"mta bounce test key, 16+ bytes";

/// Sends one message to `rcpt` at the MTA on `octet`:`port`, waits for the MTA's bounce at
/// the relay, then reads it as `bounces` does; returns the bounce and its verdicts.
async fn send_and_read_bounce(
    octet: u8,
    port: u16,
    rcpt: &str,
    relay: &Mxs,
    log: impl Fn() -> String,
) -> (Received, Vec<Reading>, Job) {
    let domain = rcpt.split('@').nth(1).unwrap();
    let mut z = zone();
    z.mx(domain, 10, &format!("mx.{domain}"))
        .addr(&format!("mx.{domain}"), loopback(octet));
    let dns = dns(z).await;
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("s.sqlite");
    let job = Job::new(&format!("email,name\n{rcpt},Gone\n"), TEMPLATE);
    let mut cfg = job.config(&dns, port);
    cfg.suppress.store = Some(store.clone().into());
    cfg.message.verp = Some(Verp::new("bounces+{token}@sender.test", KEY).unwrap());
    let report = mailmerge::run(cfg).await.expect("run");
    assert!(
        report.summary.all_delivered(),
        "the MTA accepts first: {}{:?}\n{}",
        report.summary,
        read_results(&job.results),
        log()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let bounce = loop {
        if let Some(m) = relay.get(3).received().into_iter().next() {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no bounce; the MTA's log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(bounce.rcpt_to.starts_with("bounces+"), "{}", bounce.rcpt_to);
    let maildir = crate::bounces::maildir(scratch.path());
    std::fs::write(maildir.join("new/1.real"), &bounce.data).unwrap();
    let mut matcher = Matcher::new(open_list(&store).unwrap(), Some(KEY))
        .await
        .unwrap();
    let verdicts: Vec<Reading> = crate::bounces::apply_all(&mut matcher, &maildir).await;
    matcher.finish().unwrap();
    (bounce, verdicts, job)
}

fn assert_matched_and_bounced(verdicts: &[Reading], rcpt: &str, job: &Job, text: &str) {
    assert!(
        matches!(verdicts, [Reading { disposition: Disposition::Matched { email, .. }, .. }] if email == rcpt),
        "{verdicts:#?}\n{text}"
    );
    let rows = read_results(&job.results);
    let r = row(&rows, rcpt);
    assert_eq!(
        (r["status"].as_str(), r["step"].as_str()),
        ("bounced", "late-bounce"),
        "{r:?}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exim_bounce_is_matched_to_its_row_and_suppresses_an_unknown_user() {
    let relay = Mxs::start(vec![(3, ReceiverConfig::default())]).await;
    let routers = "gone:\n  driver = redirect\n  domains = +local_domains\n  \
                   local_parts = gone\n  data = :fail: Unknown user\n  allow_fail\n\
                   outbound:\n  driver = manualroute\n  domains = ! +local_domains\n  \
                   transport = relay_smtp\n  route_list = * 127.0.0.3\n  self = send\n";
    let transports = format!(
        "relay_smtp:\n  driver = smtp\n  port = {}\n  hosts_avoid_tls = *\n  allow_localhost\n",
        relay.port
    );
    let Some(ex) = Exim::start_with(85, "exb.test", "", routers, &transports) else {
        return;
    };
    use crate::support::mta::Mta;
    let (bounce, verdicts, job) =
        send_and_read_bounce(85, ex.addr.port(), "gone@exb.test", &relay, || {
            ex.log_tail(40)
        })
        .await;
    let text = String::from_utf8_lossy(&bounce.data).into_owned();
    assert!(
        text.contains("This message was created automatically by mail delivery software"),
        "{text}"
    );
    assert_matched_and_bounced(&verdicts, "gone@exb.test", &job, &text);
    let r = verdicts[0].recipient.as_ref().unwrap();
    assert!(
        r.hard,
        "Exim's unknown user (5.0.0 + \"Unknown user\") is hard: {r:?}\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opensmtpd_bounce_is_matched_to_its_row() {
    let relay = Mxs::start(vec![(3, ReceiverConfig::default())]).await;
    let extra = format!(
        "table gone {{ \"gone@osb.test\" = \"nobody\" }}\n\
         action \"gone\" mda \"/bin/sh -c 'exit 67'\" virtual <gone>\n\
         action \"relay\" relay host smtp://127.0.0.3:{}\n\
         match from any for rcpt-to \"gone@osb.test\" action \"gone\"\n\
         match from local for any action \"relay\"\n",
        relay.port
    );
    let Some(os) = OpenSmtpd::start(86, "osb.test", &extra) else {
        return;
    };
    let (bounce, verdicts, job) =
        send_and_read_bounce(86, os.addr.port(), "gone@osb.test", &relay, || os.log()).await;
    let text = String::from_utf8_lossy(&bounce.data).into_owned();
    assert_matched_and_bounced(&verdicts, "gone@osb.test", &job, &text);
    // Its delivery agent "exited abnormally" (5.3.0, a mail-system status): a bounce, but
    // nothing that says the address does not exist, so not suppressed.
    let r = verdicts[0].recipient.as_ref().unwrap();
    assert_eq!(
        r.status.map(|s| s.to_string()).as_deref(),
        Some("5.3.0"),
        "{text}"
    );
    assert!(!r.hard, "{r:?}");
}
