//! End-to-end delivery benchmark: N recipients over D domains grouped into S sites, delivered
//! by the real pipeline (CSV → template → MIME → DNS → SMTP) to in-process receivers on
//! loopback. Prints messages/second, peak RSS and connections opened.
//!
//! `cargo bench --bench delivery` runs 20,000 recipients over 500 domains;
//! `MAILMERGE_BENCH_N`, `MAILMERGE_BENCH_DOMAINS`, `MAILMERGE_BENCH_SITES` override.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mailmerge::sandbox::dns::{DnsServer, Zone, loopback};
use mailmerge::sandbox::receiver::{Receiver, ReceiverConfig};
use mailmerge::{RunConfig, run};

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
    let n = env("MAILMERGE_BENCH_N", 20_000);
    let domains = env("MAILMERGE_BENCH_DOMAINS", 500);
    let sites = env("MAILMERGE_BENCH_SITES", 20).clamp(1, 200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut receivers = Vec::new();
        let mut port = 0;
        for s in 0..sites {
            let ip = loopback(u8::try_from(10 + s).unwrap_or(250));
            let r = Receiver::start(SocketAddr::new(ip, port), ReceiverConfig::default()).await.expect("receiver");
            port = r.addr().port();
            receivers.push(r);
        }
        let mut zone = Zone::new();
        for d in 0..domains {
            let site = d % sites;
            zone.mx(&format!("d{d}.test"), 10, &format!("mx{site}.provider.test"));
        }
        for s in 0..sites {
            zone.addr(&format!("mx{s}.provider.test"), loopback(u8::try_from(10 + s).unwrap_or(250)));
        }
        let dns = DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zone).await.expect("dns");
        let mut csv = String::with_capacity(n * 60);
        csv.push_str("email,name,account,amount\n");
        for i in 0..n {
            writeln!(csv, "user{i}@d{}.test,User {i},AC-{i:08},{}.{:02}", i % domains, i % 500, i % 100).expect("write");
        }
        let csv_path = dir.path().join("list.csv");
        std::fs::write(&csv_path, csv).expect("csv");
        let body = "Your account {{account}} has a balance of {{amount}} EUR.\n".repeat(25);
        let tpl = format!("From: Billing <billing@sender.test>\nTo: {{{{name}}}} <{{{{email}}}}>\nSubject: Statement for {{{{account}}}}\n\nHello {{{{name}}}},\n\n{body}\n");
        let tpl_path = dir.path().join("t.hbs");
        std::fs::write(&tpl_path, tpl).expect("tpl");
        let mut cfg = RunConfig::new(csv_path, tpl_path);
        cfg.results = dir.path().join("results.csv");
        cfg.dns.server = Some(dns.addr());
        cfg.smtp_port = port;
        cfg.helo = "bench.sender.test".into();
        cfg.progress = mailmerge::progress::Mode::Quiet;
        cfg.connections_per_site = 5;
        cfg.deadline = Duration::from_secs(600);
        let start = Instant::now();
        let report = run(cfg).await.expect("run");
        let secs = start.elapsed().as_secs_f64();
        let delivered = report.summary.count(mailmerge::delivery::Status::Delivered);
        let received: usize = receivers.iter().map(|r| r.received().len()).sum();
        let conns: usize = receivers.iter().map(Receiver::connections).sum();
        println!(
            "delivery: {n} recipients, {domains} domains, {sites} sites: {delivered} delivered ({received} received) in {secs:.2}s = {:.0} msg/s; peak RSS {:.1} MiB; {conns} SMTP connections",
            delivered as f64 / secs,
            peak_rss_mib()
        );
    });
}
