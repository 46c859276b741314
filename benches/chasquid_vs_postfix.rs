//! chasquid against Postfix: the interop campaign (tests/support/campaign.rs: 2,000 rows, the
//! template with every dot-line trap) sent by the release `mailmerge` binary as a user runs
//! it (default settings: 10 connections, opportunistic STARTTLS, the sender's memory in its
//! own file) to a private Postfix and a private chasquid on loopback, started the way
//! tests/interop.rs starts them (tests/support/mta.rs), each with a self-signed certificate.
//! chasquid swallows commands pipelined behind the final dot, so its first run learns that
//! (docs/delivery.md, "Silence behind the dot"); a second run with the same sender's memory
//! starts in the learnt dialect.
//!
//! The floor: Postfix's load generator `smtp-source` sends the same number of copies of one
//! rendered message, over as many sessions, to each server (plain text, one command per round
//! trip: it has neither STARTTLS nor PIPELINING), so chasquid's own cost per message shows
//! apart from any client's. It sends as `news@floor.test` (an SPF record of its own): chasquid
//! remembers per sender domain that mail came over TLS and would refuse `sender.test` in
//! plain text afterwards. chasquid holds at most 200 accepted messages not yet delivered and
//! refuses more with `451 4.3.0 ... Queue size too big`: `smtp-source` goes on past such
//! refusals (`-A`), and a run in which some were refused counts at the rate it had (its time
//! scaled to all messages; the line says so). mailmerge retries them, within its run.
//!
//! Kinds of run alternate, `MAILMERGE_BENCH_RUNS` rounds (default 5); each line gives the load
//! average seen before it (the machine may be shared), then the medians. A run's time is the
//! client's wall-clock time; before the next one starts, the server has stored every message
//! (chasquid delivers each with a process of its own after answering). chasquid's CPU time
//! (its own and its delivery processes') is printed per run.
//!
//! Needs root and Debian's servers (`.ci/run servers`); prints SKIPPED otherwise.
//! `MAILMERGE_BENCH_N` (rows, default 2,000) and `MAILMERGE_BENCH_CONNECTIONS` (default:
//! mailmerge's own, 10) change the workload; `MAILMERGE_BENCH_CHASQUID_V=1` turns on
//! chasquid's debug log of every command, as the interop test has it (default 0, as deployed). Run it with benches/chasquid-vs-postfix.sh.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/campaign.rs"]
mod campaign;
#[allow(dead_code)]
#[path = "../tests/support/mta.rs"]
mod mta;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailmerge::sandbox::dns::{DnsServer, Zone, loopback};
use mta::{Chasquid, HARDENED_MAIN_CF, Mta, Postfix, PostfixOptions};

/// Loopback addresses of the two servers (not the interop tests' 81 and 85, so that the
/// bench can run beside them).
const POSTFIX: u8 = 91;
const CHASQUID: u8 = 95;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The 1-minute load average.
fn load() -> String {
    let l = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    l.split(' ').next().unwrap_or("?").to_string()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// What the bench sends and to whom.
struct Bench {
    /// Its scratch folder (lists, results, sender's memories).
    dir: tempfile::TempDir,
    /// The DNS server mailmerge asks.
    dns: SocketAddr,
    /// Rows per run.
    n: usize,
    /// `--connections-per-site`, when not mailmerge's default.
    connections: Option<usize>,
    /// Parallel sessions of `smtp-source` (mailmerge's connections).
    sessions: usize,
    /// Runs so far (each has a folder of its own).
    runs: usize,
}

impl Bench {
    /// `mailmerge <command> list.csv message.hbs --quiet --dns …` in folder `job`, which gets
    /// the campaign's list (`n` rows to `domain`) and template, and a home of its own.
    fn job(&self, job: &Path, command: &str, n: usize, domain: &str) -> Command {
        std::fs::create_dir_all(job).unwrap();
        std::fs::write(job.join("list.csv"), campaign::list(n, domain)).unwrap();
        std::fs::write(job.join("message.hbs"), campaign::template()).unwrap();
        let mut cmd = Command::new(binary());
        cmd.current_dir(job)
            .env("XDG_DATA_HOME", job.join("home"))
            .env("XDG_CACHE_HOME", job.join("cache"))
            .args([command, "list.csv", "message.hbs", "--quiet", "--dns"])
            .arg(self.dns.to_string());
        cmd
    }

    /// One `mailmerge run` of the campaign to `domain`'s MX at `port`, with the sender's
    /// memory `state`; its wall-clock seconds. Panics unless every row was delivered.
    fn mailmerge(&mut self, domain: &str, port: u16, state: &Path) -> f64 {
        self.runs += 1;
        let job = self.dir.path().join(format!("run{}", self.runs));
        let mut cmd = self.job(&job, "run", self.n, domain);
        cmd.args(["--helo", "sender.test"])
            .arg("--smtp-port")
            .arg(port.to_string())
            .arg("--state")
            .arg(state);
        if let Some(c) = self.connections {
            cmd.arg("--connections-per-site").arg(c.to_string());
        }
        let started = Instant::now();
        let out = cmd.output().expect("mailmerge");
        let secs = started.elapsed().as_secs_f64();
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        let statuses = statuses(&job.join("list.results.csv"));
        assert!(
            out.status.success() && statuses.get("delivered") == Some(&self.n),
            "{domain}: {statuses:?}\n{said}"
        );
        for line in said.lines().filter(|l| l.contains("behind the final dot")) {
            println!("    {}", line.trim());
        }
        secs
    }

    /// `smtp-source` sending `eml` `n` times over as many sessions as mailmerge uses, from
    /// `news@floor.test` to `to` at `server`; its wall-clock seconds.
    fn smtp_source(&self, source: &Path, eml: &Path, to: &str, server: SocketAddr) -> f64 {
        let started = Instant::now();
        let status = Command::new(source)
            // -A: go on past a refusal (chasquid's "451 4.3.0 ... Queue size too big": it
            // holds at most 200 messages not yet delivered); the caller counts what was taken.
            .args([
                "-A",
                "-d",
                "-M",
                "floor.test",
                "-f",
                "news@floor.test",
                "-t",
                to,
            ])
            .arg("-s")
            .arg(self.sessions.to_string())
            .arg("-m")
            .arg(self.n.to_string())
            .arg("-F")
            .arg(eml)
            .arg(server.to_string())
            .stdout(Stdio::null())
            .status()
            .expect("smtp-source");
        assert!(status.success(), "smtp-source to {server}");
        started.elapsed().as_secs_f64()
    }

    /// One message of the campaign as rendered (`mailmerge check --out`), with bare LF line
    /// ends (`smtp-source -F` adds CRLF), for `smtp-source`.
    fn rendered(&self) -> PathBuf {
        let d = self.dir.path().join("rendered");
        let status = self
            .job(&d, "check", 1, "cq.test")
            .args(["--out", "eml"])
            .stdout(Stdio::null())
            .status()
            .expect("mailmerge check");
        assert!(status.success(), "mailmerge check --out");
        let eml = std::fs::read_dir(d.join("eml"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "eml"))
            .expect("a rendered .eml");
        let text = std::fs::read_to_string(eml).unwrap().replace("\r\n", "\n");
        let plain = d.join("message.txt");
        std::fs::write(&plain, text).unwrap();
        plain
    }
}

/// The binary to run: `MAILMERGE_BIN` (the script's `cargo build --release`: `cargo bench`
/// builds one with the dev-dependencies' features), else the one cargo built for the bench.
fn binary() -> PathBuf {
    std::env::var_os("MAILMERGE_BIN")
        .map_or_else(|| env!("CARGO_BIN_EXE_mailmerge").into(), PathBuf::from)
}

/// Rows of a results CSV per status.
fn statuses(results: &Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    let Ok(mut r) = csv::Reader::from_path(results) else {
        return counts;
    };
    let col = r
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "status")
        .unwrap();
    for row in r.records().flatten() {
        *counts.entry(row[col].to_string()).or_default() += 1;
    }
    counts
}

/// Messages chasquid has queued (accepted) and delivered so far, from its mail log.
fn chasquid_counts(cq: &Chasquid) -> (usize, usize) {
    let log = std::fs::read_to_string(cq.dir.path().join("log/mail.log")).unwrap_or_default();
    let queued = log.lines().filter(|l| l.contains(" queued ip=")).count();
    (queued, cq.stored())
}

/// Waits until `mta` has stored `n` messages in all (at most two minutes), so that its
/// delivery work does not overlap the next run.
fn drained(mta: &dyn Mta, n: usize) {
    let until = Instant::now() + Duration::from_secs(120);
    while mta.stored() < n && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        mta.stored() >= n,
        "{}: {} of {n} stored",
        mta.describe(),
        mta.stored()
    );
}

/// A DNS server on `bind` serving `zone`, on a thread and runtime of its own (it answers
/// while the bench waits for a run).
fn dns_server(bind: SocketAddr, zone: Zone) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let dns = DnsServer::start(bind, zone).await.expect("DNS server");
            tx.send(dns.addr()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn main() {
    let n = env("MAILMERGE_BENCH_N", 2000);
    let connections = std::env::var("MAILMERGE_BENCH_CONNECTIONS")
        .ok()
        .and_then(|c| c.parse().ok());
    let rounds = env("MAILMERGE_BENCH_RUNS", 5);
    // chasquid's debug log: 0 as deployed (the interop test needs 1: every command).
    let verbosity = u8::try_from(env("MAILMERGE_BENCH_CHASQUID_V", 0)).unwrap_or(0);
    let Some(source) = mta::find("smtp-source", &[PathBuf::from("/usr/sbin/smtp-source")]) else {
        return;
    };
    // chasquid's resolver (port 53 of its own address: resolv.conf names no port) publishes the
    // senders' SPF records; mailmerge asks another one.
    let mut spf = Zone::new();
    spf.txt("sender.test", "v=spf1 ip4:127.0.0.0/8 -all")
        .txt("floor.test", "v=spf1 ip4:127.0.0.0/8 -all");
    dns_server(SocketAddr::new(loopback(CHASQUID), 53), spf);
    let mut zone = Zone::new();
    zone.mx("pf.test", 10, "mx.pf.test")
        .addr("mx.pf.test", loopback(POSTFIX))
        .mx("cq.test", 10, "mx.cq.test")
        .addr("mx.cq.test", loopback(CHASQUID));
    let dns = dns_server(SocketAddr::from(([127, 0, 0, 1], 0)), zone);

    let id = mailmerge::sandbox::tls::self_signed(&["mx.pf.test"]).unwrap();
    let Some(pf) = Postfix::start(
        POSTFIX,
        PostfixOptions {
            domain: "pf.test",
            tls: Some((&id.cert_pem, &id.key_pem)),
            master_cf: "",
            main_cf: HARDENED_MAIN_CF,
        },
    ) else {
        return;
    };
    let users: Vec<String> = (0..n).map(|i| format!("user{i}")).collect();
    let Some(cq) =
        Chasquid::start_logging(CHASQUID, "cq.test", loopback(CHASQUID), &users, verbosity)
    else {
        return;
    };
    println!(
        "{} at {}\n{} at {}",
        pf.describe(),
        pf.addr(),
        cq.describe(),
        cq.addr()
    );
    let mut b = Bench {
        dir: tempfile::tempdir().unwrap(),
        dns,
        n,
        connections,
        sessions: connections.unwrap_or(10),
        runs: 0,
    };
    let eml = b.rendered();
    let kinds = [
        "mailmerge -> Postfix",
        "mailmerge -> chasquid, first run",
        "mailmerge -> chasquid, dialect remembered",
        "smtp-source -> Postfix",
        "smtp-source -> chasquid",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); kinds.len()];
    let (mut pf_stored, mut cq_stored) = (pf.stored(), cq.stored());
    for round in 1..=rounds {
        for (k, kind) in kinds.iter().enumerate() {
            let load = load();
            let cpu = cq.cpu();
            let state = b.dir.path().join(format!("senders-{round}.sqlite"));
            let queued = chasquid_counts(&cq).0;
            let mut secs = match k {
                0 => b.mailmerge("pf.test", pf.addr().port(), &state),
                1 | 2 => b.mailmerge("cq.test", cq.addr().port(), &state),
                3 => b.smtp_source(&source, &eml, "user0@pf.test", pf.addr()),
                _ => b.smtp_source(&source, &eml, "user0@cq.test", cq.addr()),
            };
            let to_chasquid = matches!(k, 1 | 2 | 4);
            let mut taken = String::new();
            if to_chasquid {
                let accepted = chasquid_counts(&cq).0 - queued;
                if accepted < n {
                    // smtp-source only: the time for `n` at the rate it had.
                    taken = format!("; {accepted} of {n} taken, the rest refused 451: scaled");
                    secs *= n as f64 / accepted.max(1) as f64;
                }
                cq_stored += accepted;
                drained(&cq, cq_stored);
            } else {
                pf_stored += n;
                drained(&pf, pf_stored);
            }
            let cpu = if to_chasquid {
                format!("; chasquid CPU {:.1} s", (cq.cpu() - cpu).as_secs_f64())
            } else {
                String::new()
            };
            println!("round {round} {kind:<42} {secs:6.2} s  (load {load}{cpu}{taken})");
            times[k].push(secs);
        }
    }
    let m: Vec<f64> = times.iter().map(|t| median(t)).collect();
    println!(
        "medians over {rounds} rounds, {n} messages, {} sessions:",
        b.sessions
    );
    for (kind, secs) in kinds.iter().zip(&m) {
        println!("  {kind:<42} {secs:6.2} s");
    }
    println!(
        "chasquid / Postfix: mailmerge first run {:.2}x, dialect remembered {:.2}x; \
         floor (smtp-source) {:.2}x",
        m[1] / m[0],
        m[2] / m[0],
        m[4] / m[3]
    );
}
