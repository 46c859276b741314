//! End-to-end delivery benchmark of the `mailmerge` binary as a user runs it: N recipients
//! over D domains grouped into S sites, `mailmerge run list.csv t.hbs` with the binary's
//! defaults (the per-user suppression list, populated; the sender's memory; MTA-STS and DANE
//! lookups; the journal), against an in-process DNS server and SMTP receivers on loopback.
//! Only the flags that point it at them (`--dns`, `--smtp-port`) and the connection counts
//! are given. Prints messages/second end to end (process start to exit), the process's peak
//! RSS, SMTP connections, when the first SMTP connection came after the process started, and
//! the binary's own `--timings` line (each stage's duration).
//!
//! `cargo bench --bench delivery` runs 100,000 recipients over 1,000 domains in 20 sites
//! with a 100,000-entry suppression list. Environment overrides:
//! - `MAILMERGE_BENCH_N`, `MAILMERGE_BENCH_DOMAINS`, `MAILMERGE_BENCH_SITES`: the workload
//!   (`MAILMERGE_BENCH_N=1000000` is the scale run; not in CI);
//! - `MAILMERGE_BENCH_SUPPRESSED`: entries in the suppression list (default 100,000; one in
//!   a hundred is an address of the list, the rest are not);
//! - `MAILMERGE_BENCH_TARGET=IP:PORT`: deliver to an external receiver (e.g. Postfix's
//!   smtp-sink) instead; every MX resolves to IP;
//! - `MAILMERGE_BENCH_SESSIONS`: parallel SMTP sessions in total (default 5 per site);
//! - `MAILMERGE_BENCH_SIZE`: approximate message size in bytes (default 2000);
//! - `MAILMERGE_BENCH_LIMIT`: pass `--limit N` (with 1: the start-up cost of a canary);
//! - `MAILMERGE_BENCH_CHUNKING=1`: the in-process receivers offer CHUNKING, so messages go
//!   with `BDAT` instead of `DATA` (compare the two).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use mailmerge::sandbox::dns::{DnsServer, Zone, loopback};
use mailmerge::sandbox::receiver::{Receiver, ReceiverConfig};

/// The workload, from the environment.
struct Workload {
    n: usize,
    domains: usize,
    sites: usize,
    sessions: usize,
    size: usize,
    suppressed: usize,
    limit: Option<usize>,
    target: Option<SocketAddr>,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

impl Workload {
    fn from_env() -> Self {
        let sites = env("MAILMERGE_BENCH_SITES", 20).clamp(1, 200);
        Self {
            n: env("MAILMERGE_BENCH_N", 100_000),
            domains: env("MAILMERGE_BENCH_DOMAINS", 1_000).max(1),
            sites,
            sessions: env("MAILMERGE_BENCH_SESSIONS", sites * 5).max(1),
            size: env("MAILMERGE_BENCH_SIZE", 2000),
            suppressed: env("MAILMERGE_BENCH_SUPPRESSED", 100_000),
            limit: std::env::var("MAILMERGE_BENCH_LIMIT")
                .ok()
                .and_then(|v| v.parse().ok()),
            target: std::env::var("MAILMERGE_BENCH_TARGET")
                .ok()
                .and_then(|t| t.parse().ok()),
        }
    }

    /// The address of row `i`.
    fn address(&self, i: usize) -> String {
        format!("user{i}@d{}.test", i % self.domains)
    }
}

/// The recipients list and the template.
fn write_inputs(w: &Workload, dir: &Path) -> (PathBuf, PathBuf) {
    let csv_path = dir.join("list.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&csv_path).expect("csv"));
    writeln!(out, "email,name,account,amount").expect("write");
    for i in 0..w.n {
        let (amount, cents) = (i % 500, i % 100);
        writeln!(
            out,
            "{},User {i},AC-{i:08},{amount}.{cents:02}",
            w.address(i)
        )
        .expect("write");
    }
    out.flush().expect("flush");
    let line = "Your account {{account}} has a balance of {{amount}} EUR.\n";
    let mut body = String::new();
    while body.len() + 400 < w.size {
        body.push_str(line);
    }
    let mut tpl = String::new();
    writeln!(
        tpl,
        "From: Billing <billing@sender.test>\nTo: {{{{name}}}} <{{{{email}}}}>\n\
         Subject: Statement for {{{{account}}}}\n\nHello {{{{name}}}},\n\n{body}"
    )
    .expect("tpl");
    let tpl_path = dir.join("t.hbs");
    std::fs::write(&tpl_path, tpl).expect("tpl");
    (csv_path, tpl_path)
}

/// The binary, with a home of its own in `dir` (so its defaults are the per-user files
/// there) and no configuration from the caller's environment. `MAILMERGE_BENCH_BIN` names
/// another build (or a wrapper such as `strace`'s) to compare with.
fn mailmerge(dir: &Path) -> Command {
    let bin = std::env::var_os("MAILMERGE_BENCH_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_mailmerge").into());
    let mut c = Command::new(bin);
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CACHE_HOME", dir.join("cache"));
    c
}

/// Fills the default suppression list: every hundredth row's address, and addresses of
/// the same domains that are not in the list, `w.suppressed` in all. Returns how many of
/// the list's rows are suppressed.
fn populate_suppressions(w: &Workload, dir: &Path) -> usize {
    let path = dir.join("unsubscribed.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).expect("export"));
    writeln!(out, "address").expect("write");
    let in_list = (w.suppressed / 100).min(w.n.div_ceil(100));
    for k in 0..in_list {
        writeln!(out, "{}", w.address(k * 100)).expect("write");
    }
    for k in in_list..w.suppressed {
        writeln!(out, "gone{k}@d{}.test", k % w.domains).expect("write");
    }
    out.flush().expect("flush");
    let status = mailmerge(dir)
        .args(["suppress", "import"])
        .arg(&path)
        .stdout(Stdio::null())
        .status()
        .expect("suppress import");
    assert!(status.success(), "suppress import failed");
    in_list
}

/// Runs the child to its end; its wall time, peak RSS (MiB) and CPU time (user, system).
#[expect(
    clippy::zombie_processes,
    reason = "reaped by wait4, which also gives its rusage"
)]
fn run_measured(mut cmd: Command) -> (std::process::ExitStatus, Instant, f64, f64, (f64, f64)) {
    let start = Instant::now();
    let child = cmd.spawn().expect("spawn mailmerge");
    let pid = libc::pid_t::try_from(child.id()).expect("pid");
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own unreaped child; the pointers are to live locals.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let status = std::os::unix::process::ExitStatusExt::from_raw(status);
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (
        status,
        start,
        secs,
        usage.ru_maxrss as f64 / 1024.0,
        (cpu(usage.ru_utime), cpu(usage.ru_stime)),
    )
}

/// Delivered rows in the results CSV.
fn delivered(results: &Path) -> usize {
    let mut r = csv::Reader::from_path(results).expect("results");
    let status = r
        .headers()
        .expect("header")
        .iter()
        .position(|h| h == "status")
        .expect("status column");
    r.records()
        .filter(|rec| {
            rec.as_ref()
                .is_ok_and(|rec| rec.get(status) == Some("delivered"))
        })
        .count()
}

fn main() {
    let w = Workload::from_env();
    let rt = mailmerge::runtime().expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut receivers = Vec::new();
        let (port, site_ip): (u16, Box<dyn Fn(usize) -> IpAddr>) = match w.target {
            Some(t) => (t.port(), Box::new(move |_| t.ip())),
            None => {
                let mut port = 0;
                for s in 0..w.sites {
                    let ip = loopback(u8::try_from(10 + s).unwrap_or(250));
                    let config = ReceiverConfig {
                        keep_messages: false,
                        chunking: std::env::var_os("MAILMERGE_BENCH_CHUNKING").is_some(),
                        ..ReceiverConfig::default()
                    };
                    let r = Receiver::start(SocketAddr::new(ip, port), config)
                        .await
                        .expect("receiver");
                    port = r.addr().port();
                    receivers.push(r);
                }
                let ip = |s: usize| loopback(u8::try_from(10 + s).unwrap_or(250));
                (port, Box::new(ip))
            }
        };
        let mut zone = Zone::new();
        for d in 0..w.domains {
            zone.mx(
                &format!("d{d}.test"),
                10,
                &format!("mx{}.provider.test", d % w.sites),
            );
        }
        for s in 0..w.sites {
            zone.addr(&format!("mx{s}.provider.test"), site_ip(s));
        }
        let dns = DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zone)
            .await
            .expect("dns");
        let (csv_path, tpl_path) = write_inputs(&w, dir.path());
        let suppressed = populate_suppressions(&w, dir.path());

        let mut cmd = mailmerge(dir.path());
        let per_site = w.sessions.div_ceil(w.sites).to_string();
        cmd.arg("run")
            .arg(&csv_path)
            .arg(&tpl_path)
            .args([
                "--dns",
                &dns.addr().to_string(),
                "--smtp-port",
                &port.to_string(),
            ])
            .args(["--helo", "bench.sender.test", "--quiet", "--deadline", "1h"])
            .args(["--connections-per-site", &per_site])
            .args(["--max-connections", &w.sessions.to_string()])
            .args(["--messages-per-connection", &w.n.max(1).to_string()]);
        if let Some(l) = w.limit {
            cmd.args(["--limit", &l.to_string()]);
        }
        let stderr = dir.path().join("stderr.txt");
        cmd.arg("--timings")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("stderr"));
        // The process runs on its own threads; this runtime keeps serving DNS and SMTP.
        let (status, start, secs, rss, (user, sys)) = tokio::task::spawn_blocking(move || run_measured(cmd))
            .await
            .expect("join");
        let said = std::fs::read_to_string(&stderr).unwrap_or_default();
        assert!(
            status.code().is_some_and(|c| c <= 1),
            "mailmerge run: {status}\n{said}"
        );
        let delivered = delivered(&dir.path().join("list.results.csv"));
        let first_connection = receivers
            .iter()
            .filter_map(|r| r.accepted_at().first().copied())
            .min()
            .map(|t| {
                let ms = t.saturating_duration_since(start).as_secs_f64() * 1e3;
                format!("; first SMTP connection {ms:.1} ms after the process started")
            })
            .unwrap_or_default();
        let connections: usize = receivers.iter().map(Receiver::connections).sum();
        println!(
            "delivery (the binary): {} recipients ({suppressed} suppressed of a {}-entry list), \
             {} domains, {} sites, {} sessions, ~{} B messages -> {}: {delivered} delivered in \
             {secs:.2}s = {:.0} msg/s; CPU {user:.2}s user + {sys:.2}s system; peak RSS {rss:.1} MiB{}{first_connection}",
            w.n,
            w.suppressed,
            w.domains,
            w.sites,
            w.sessions,
            w.size,
            w.target
                .map_or("in-process receivers".to_string(), |t| t.to_string()),
            delivered as f64 / secs,
            if w.target.is_some() {
                String::new()
            } else {
                format!("; {connections} SMTP connections")
            },
        );
        if let Some(line) = said.lines().find(|l| l.starts_with("timings:")) {
            println!("  {line}");
        }
    });
}
