//! Interop with real Postfix servers on loopback: `smtp-sink` for volume and its fault switches,
//! and a real `smtpd` (a private Postfix instance) with STARTTLS as the MX.
//!
//! These tests need Debian's `postfix` package (`.ci/run` installs it). Without it they print
//! "SKIPPED" and pass locally, but FAIL when `CI=true`, so CI never skips them silently. The
//! Postfix instance must be started as root (as CI and the development machine run).

mod support;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailmerge::delivery::RetryPolicy;
use mailmerge::run;
use mailmerge::sandbox::dns::{Zone, loopback};
use mailmerge::smtp::Timeouts;
use support::*;

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Finds a Postfix program, or explains why the test cannot run: panics under CI=true.
fn need(program: &str) -> Option<PathBuf> {
    let found = ["/usr/sbin", "/usr/lib/postfix/sbin", "/usr/libexec/postfix"]
        .iter()
        .map(|d| Path::new(d).join(program))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            !in_ci(),
            "{program} not found: CI must install Debian's postfix package (.ci/run)"
        );
        eprintln!("SKIPPED: {program} not found (apt-get install postfix to run this test)");
    }
    found
}

/// A free TCP port on `ip` (released again for the server to take).
fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: SocketAddr, what: &str) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{what} did not listen on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

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
        wait_listening(addr, "smtp-sink");
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
async fn smtp_sink_soft_rejects_are_retried_and_hard_rejects_bounce_once() {
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
                    ("bounced", "500", "5.3.0", "1"),
                    "a 5xx is never retried: {r:?}"
                );
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

/// A private Postfix instance (own config and queue under a temp dir) whose `smtpd` listens on
/// one loopback address with STARTTLS and discards what it accepts. Stopped when dropped.
struct Postfix {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    bin: PathBuf,
}

impl Postfix {
    fn start(octet: u8, cert_pem: &str, key_pem: &str) -> Option<Self> {
        let postfix = need("postfix")?;
        need("smtpd")?;
        if !is_root() {
            assert!(!in_ci(), "the Postfix test must run as root in CI");
            eprintln!("SKIPPED: starting a Postfix instance needs root");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        // The postfix user must reach the queue inside the temp dir.
        run_ok(Command::new("chmod").arg("755").arg(&d));
        for sub in ["conf", "queue", "data"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        run_ok(Command::new("chown").arg("postfix").arg(d.join("data")));
        std::fs::write(d.join("conf/cert.pem"), cert_pem).unwrap();
        std::fs::write(d.join("conf/key.pem"), key_pem).unwrap();
        let ip = loopback(octet);
        let addr = SocketAddr::new(ip, free_port(ip));
        let p = d.display();
        std::fs::write(
            d.join("conf/main.cf"),
            format!(
                "compatibility_level = 3.6\n\
                 queue_directory = {p}/queue\n\
                 data_directory = {p}/data\n\
                 maillog_file = {p}/maillog\n\
                 maillog_file_prefixes = /tmp, /var, {p}\n\
                 mail_owner = postfix\n\
                 setgid_group = postdrop\n\
                 inet_interfaces = loopback-only\n\
                 inet_protocols = ipv4\n\
                 myhostname = mx.pf.test\n\
                 mydestination =\n\
                 mynetworks = 127.0.0.0/8\n\
                 relay_domains = pf.test\n\
                 default_transport = discard\n\
                 relay_transport = discard\n\
                 local_transport = discard\n\
                 alias_maps =\n\
                 alias_database =\n\
                 smtpd_relay_restrictions = permit_mynetworks, reject\n\
                 smtpd_tls_cert_file = {p}/conf/cert.pem\n\
                 smtpd_tls_key_file = {p}/conf/key.pem\n\
                 smtpd_tls_security_level = may\n\
                 smtpd_tls_loglevel = 1\n"
            ),
        )
        .unwrap();
        let services = [
            ("pickup", "unix  n - n 60 1", "pickup"),
            ("cleanup", "unix n - n - 0", "cleanup"),
            ("qmgr", "unix n - n 300 1", "qmgr"),
            ("tlsmgr", "unix - - n 1000? 1", "tlsmgr"),
            ("rewrite", "unix - - n - -", "trivial-rewrite"),
            ("bounce", "unix - - n - 0", "bounce"),
            ("defer", "unix - - n - 0", "bounce"),
            ("trace", "unix - - n - 0", "bounce"),
            ("verify", "unix - - n - 1", "verify"),
            ("flush", "unix n - n 1000? 0", "flush"),
            ("proxymap", "unix - - n - -", "proxymap"),
            ("showq", "unix n - n - -", "showq"),
            ("error", "unix - - n - -", "error"),
            ("retry", "unix - - n - -", "error"),
            ("discard", "unix - - n - -", "discard"),
            ("anvil", "unix - - n - 1", "anvil"),
            ("scache", "unix - - n - 1", "scache"),
            ("postlog", "unix-dgram n - n - 1", "postlogd"),
        ];
        let mut master = format!("{addr} inet n - n - - smtpd\n");
        for (name, spec, program) in services {
            writeln!(master, "{name} {spec} {program}").unwrap();
        }
        std::fs::write(d.join("conf/master.cf"), master).unwrap();
        let pf = Self {
            dir,
            addr,
            bin: postfix.clone(),
        };
        let status = Command::new(&postfix)
            .arg("-c")
            .arg(d.join("conf"))
            .arg("start")
            .status()
            .expect("run postfix");
        assert!(status.success(), "postfix start failed; log:\n{}", pf.log());
        wait_listening(addr, "postfix smtpd");
        Some(pf)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .arg("-c")
            .arg(self.dir.path().join("conf"))
            .arg("abort")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn run_ok(cmd: &mut Command) {
    let status = cmd.status().expect("spawn");
    assert!(status.success(), "{cmd:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postfix_smtpd_with_starttls_takes_a_tls_delivery() {
    // A self-signed certificate made at test time, as on most real MX hosts.
    let id = mailmerge::sandbox::tls::self_signed(&["mx.pf.test"]).unwrap();
    let Some(pf) = Postfix::start(70, &id.cert_pem, &id.key_pem) else {
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
        assert!(r["response"].starts_with("Ok: queued as "), "{r:?}");
    }
    // Postfix's own account: one TLS session, three messages handed to the discard transport.
    let start = Instant::now();
    loop {
        let log = pf.log();
        let sent = log.matches("status=sent").count();
        if sent == 3 {
            assert!(log.contains("TLS connection established"), "{log}");
            assert!(log.contains("starttls=1"), "{log}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "postfix did not process 3 messages:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
