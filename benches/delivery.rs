//! End-to-end delivery benchmark: N recipients over D domains grouped into S sites, delivered
//! by the real pipeline (CSV → template → MIME → DNS → SMTP) to receivers on loopback. Prints
//! messages/second, peak RSS and connections opened.
//!
//! `cargo bench --bench delivery` runs 100,000 recipients over 1,000 domains in 20 sites to
//! in-process receivers. Environment overrides:
//! - `MAILMERGE_BENCH_N`, `MAILMERGE_BENCH_DOMAINS`, `MAILMERGE_BENCH_SITES`: the workload
//!   (`MAILMERGE_BENCH_N=1000000` is the scale run; not in CI);
//! - `MAILMERGE_BENCH_TARGET=IP:PORT`: deliver to an external receiver (e.g. Postfix's
//!   smtp-sink) instead; every MX resolves to IP;
//! - `MAILMERGE_BENCH_SESSIONS`: parallel SMTP sessions in total (default 5 per site);
//! - `MAILMERGE_BENCH_SIZE`: approximate message size in bytes (default 2000);
//! - `MAILMERGE_BENCH_CHUNKING=1`: the in-process receivers offer CHUNKING, so messages go
//!   with `BDAT` instead of `DATA` (compare the two).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mailmerge::sandbox::dns::{DnsServer, Zone, loopback};
use mailmerge::sandbox::receiver::{Receiver, ReceiverConfig};
use mailmerge::{RunConfig, run};

// The same allocator as the `mailmerge` binary, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Peak resident set size of this process (Linux), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let n = env("MAILMERGE_BENCH_N", 100_000);
    let domains = env("MAILMERGE_BENCH_DOMAINS", 1_000).max(1);
    let sites = env("MAILMERGE_BENCH_SITES", 20).clamp(1, 200);
    let sessions = env("MAILMERGE_BENCH_SESSIONS", sites * 5).max(1);
    let size = env("MAILMERGE_BENCH_SIZE", 2000);
    let target: Option<SocketAddr> = std::env::var("MAILMERGE_BENCH_TARGET")
        .ok()
        .and_then(|t| t.parse().ok());
    let rt = mailmerge::runtime().expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut receivers = Vec::new();
        let (port, site_ip): (u16, Box<dyn Fn(usize) -> IpAddr>) = match target {
            Some(t) => (t.port(), Box::new(move |_| t.ip())),
            None => {
                let mut port = 0;
                for s in 0..sites {
                    let ip = loopback(u8::try_from(10 + s).unwrap_or(250));
                    let config = ReceiverConfig {
                        keep_messages: false,
                        chunking: std::env::var_os("MAILMERGE_BENCH_CHUNKING").is_some(),
                        ..ReceiverConfig::default()
                    };
                    let r = Receiver::start(SocketAddr::new(ip, port), config).await.expect("receiver");
                    port = r.addr().port();
                    receivers.push(r);
                }
                (port, Box::new(|s| loopback(u8::try_from(10 + s).unwrap_or(250))))
            }
        };
        let mut zone = Zone::new();
        for d in 0..domains {
            zone.mx(&format!("d{d}.test"), 10, &format!("mx{}.provider.test", d % sites));
        }
        for s in 0..sites {
            zone.addr(&format!("mx{s}.provider.test"), site_ip(s));
        }
        let dns = DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zone).await.expect("dns");

        let setup = Instant::now();
        let csv_path = dir.path().join("list.csv");
        {
            use std::io::Write;
            let mut w = std::io::BufWriter::new(std::fs::File::create(&csv_path).expect("csv"));
            writeln!(w, "email,name,account,amount").expect("write");
            for i in 0..n {
                writeln!(w, "user{i}@d{}.test,User {i},AC-{i:08},{}.{:02}", i % domains, i % 500, i % 100).expect("write");
            }
        }
        let line = "Your account {{account}} has a balance of {{amount}} EUR.\n";
        let mut body = String::new();
        while body.len() + 400 < size {
            body.push_str(line);
        }
        let mut tpl = String::new();
        writeln!(tpl, "From: Billing <billing@sender.test>\nTo: {{{{name}}}} <{{{{email}}}}>\nSubject: Statement for {{{{account}}}}\n\nHello {{{{name}}}},\n\n{body}").expect("tpl");
        let tpl_path = dir.path().join("t.hbs");
        std::fs::write(&tpl_path, tpl).expect("tpl");
        let mut cfg = RunConfig::new(csv_path, tpl_path);
        cfg.results = dir.path().join("results.csv");
        cfg.dns.server = Some(dns.addr());
        cfg.delivery.smtp_port = port;
        cfg.delivery.helo = Some("bench.sender.test".into());
        cfg.progress = mailmerge::progress::Mode::Quiet;
        cfg.delivery.connections_per_site = std::num::NonZeroUsize::new(sessions.div_ceil(sites)).expect("non-zero");
        cfg.delivery.max_connections = std::num::NonZeroUsize::new(sessions).expect("non-zero");
        cfg.delivery.messages_per_connection = std::num::NonZeroUsize::MAX;
        cfg.delivery.deadline = Duration::from_secs(3600);
        let _ = setup;
        let start = Instant::now();
        let report = run(cfg).await.expect("run");
        let secs = start.elapsed().as_secs_f64();
        let delivered = report.summary.count(mailmerge::outcome::Status::Delivered);
        let received: usize = receivers.iter().map(Receiver::accepted).sum();
        let first_connection = receivers
            .iter()
            .filter_map(|r| r.accepted_at().first().copied())
            .min()
            .map(|t| format!("; first SMTP connection {:.1} ms after start", t.duration_since(start).as_secs_f64() * 1e3))
            .unwrap_or_default();
        println!(
            "delivery: {n} recipients, {domains} domains, {sites} sites, {sessions} sessions, ~{size} B messages -> {}: \
             {delivered} delivered ({}) in {secs:.2}s = {:.0} msg/s; peak RSS {:.1} MiB; {} SMTP connections{first_connection}",
            target.map_or("in-process receivers".to_string(), |t| t.to_string()),
            if target.is_some() { "external receiver".to_string() } else { format!("{received} received") },
            delivered as f64 / secs,
            peak_rss_mib(),
            report.summary.connections,
        );
    });
}
