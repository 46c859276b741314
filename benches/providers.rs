//! Provider-shaping benchmark: a campaign against three simulated mailbox providers with
//! Google-, Microsoft- and Yahoo-like limits (`tests/support/provider_sim.rs`), delivered by
//! the real pipeline with default settings, twice in a row with one sender memory: the first
//! run finds the limits (slow start, nothing remembered), the second starts from them. Prints
//! each run's completion time against the ideal schedule (every provider sent at exactly its
//! rate from the first second, burst included) and its throttling replies per provider.
//!
//! `cargo bench --bench providers`; `MAILMERGE_BENCH_N` changes the number of rows (6,000).

// Shared with the tests, which use parts of it this benchmark does not.
#[allow(dead_code)]
#[path = "../tests/support/provider_sim.rs"]
mod provider_sim;

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mailmerge::sandbox::dns::{DnsServer, Zone, loopback};
use mailmerge::{RunConfig, run};
use provider_sim::{GOOGLE_RATE, ProviderSim, SimConfig};
use rand::seq::SliceRandom;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Microsoft's busy reply (not closing).
const MS_BUSY: &str = "451-4.7.500 Server busy. Please try again later from [127.0.0.1].\r\n451 4.7.500 (S77714) [AM0PR01MB1234.eurprd01.prod.exchangelabs.com]";
/// Yahoo's rate text.
const YAHOO_RATE: &str = "421-4.7.0 [TS01] Messages from 127.0.0.1 temporarily deferred due to\r\n421 4.7.0 unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes";

/// Google-like: 5 connections, 100 per connection, 150 msg/s.
fn google_like() -> SimConfig {
    SimConfig {
        connections: 5,
        per_connection: 100,
        rate: 150.0,
        burst: 75.0,
        rate_reply: GOOGLE_RATE.into(),
        ..SimConfig::new("google-like")
    }
}

/// Microsoft-like: 4 connections, 1000 per connection, 100 msg/s, 451 when busy.
fn microsoft_like() -> SimConfig {
    SimConfig {
        connections: 4,
        per_connection: 1000,
        rate: 100.0,
        burst: 50.0,
        rate_reply: MS_BUSY.into(),
        ..SimConfig::new("microsoft-like")
    }
}

/// Yahoo-like: 3 connections, 20 per connection, 75 msg/s.
fn yahoo_like() -> SimConfig {
    SimConfig {
        connections: 3,
        per_connection: 20,
        rate: 75.0,
        burst: 37.0,
        rate_reply: YAHOO_RATE.into(),
        ..SimConfig::new("yahoo-like")
    }
}

/// Unknown mailboxes per provider.
const UNKNOWN: usize = 10;

fn main() {
    let n: usize = std::env::var("MAILMERGE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6000);
    let rt = mailmerge::runtime().expect("runtime");
    rt.block_on(campaign(n));
}

async fn campaign(n: usize) {
    let providers = [
        ("gm.test", "gmail-smtp-in.l.google.com", 2, google_like()),
        (
            "contoso.test",
            "contoso-test.mail.protection.outlook.com",
            3,
            microsoft_like(),
        ),
        ("ymail.test", "mta5.am0.yahoodns.net", 4, yahoo_like()),
    ];
    let mut zone = Zone::new();
    let mut sims = Vec::new();
    let mut port = 0;
    let mut rows = Vec::new();
    let per = n / providers.len();
    for (domain, mx, octet, mut sim) in providers.clone() {
        zone.mx(domain, 10, mx).addr(mx, loopback(octet));
        sim.unknown = (0..UNKNOWN).map(|i| format!("nobody{i}")).collect();
        let s = ProviderSim::start(loopback(octet), port, sim)
            .await
            .expect("sim");
        port = s.addr.port();
        sims.push(s);
        for i in 0..per - UNKNOWN {
            rows.push(format!("user{i}@{domain}"));
        }
        for i in 0..UNKNOWN {
            rows.push(format!("nobody{i}@{domain}"));
        }
    }
    rows.shuffle(&mut rand::rng());
    let dns = DnsServer::start(([127, 0, 0, 1], 0).into(), zone)
        .await
        .expect("dns");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut csv = String::from("email,name\n");
    for (i, r) in rows.iter().enumerate() {
        writeln!(csv, "{r},Reader {i}").expect("write");
    }
    let list = dir.path().join("list.csv");
    let template = dir.path().join("t.hbs");
    std::fs::write(&list, csv).expect("list");
    std::fs::write(
        &template,
        "From: News <news@sender.test>\nTo: {{email}}\nSubject: Hello {{name}}\n\nHello {{name}}\n",
    )
    .expect("template");
    let mut cfg = RunConfig::new(list, template);
    cfg.dns.server = Some(dns.addr());
    cfg.delivery.smtp_port = port;
    cfg.delivery.helo = Some("sender.test".into());
    cfg.delivery.deadline = Duration::from_secs(300);
    cfg.progress = mailmerge::progress::Mode::Quiet;
    // The sender's memory, as the binary keeps one: the second campaign starts from what the
    // first learnt (nothing is remembered before the first).
    cfg.state = Some(dir.path().join("senders.sqlite").into());
    let configs = providers.map(|p| p.3);
    for (i, pass) in ["first run (nothing remembered)", "second run"]
        .iter()
        .enumerate()
    {
        cfg.results = dir.path().join(format!("results-{i}.csv"));
        let before: Vec<usize> = sims.iter().map(ProviderSim::throttles).collect();
        let accepted: Vec<usize> = sims.iter().map(ProviderSim::accepted).collect();
        let t0 = Instant::now();
        let report = run(cfg.clone()).await.expect("run");
        let took = t0.elapsed().as_secs_f64();
        println!("== {pass}");
        let since = Since { before, accepted };
        print_figures(&configs, &sims, (per, &since), took, &report);
    }
}

/// Each simulator's counts before a run: what the run added is reported.
struct Since {
    before: Vec<usize>,
    accepted: Vec<usize>,
}

fn print_figures(
    configs: &[SimConfig],
    sims: &[ProviderSim],
    (per, since): (usize, &Since),
    took: f64,
    report: &mailmerge::RunReport,
) {
    let ideal = configs
        .iter()
        .map(|c| (per as f64 - c.burst).max(0.0) / c.rate)
        .fold(0.0, f64::max);
    println!("rows {}, providers {}", per * configs.len(), configs.len());
    println!(
        "completed in {took:.2}s; ideal schedule {ideal:.2}s; ratio {:.2}",
        took / ideal
    );
    for (i, (c, s)) in configs.iter().zip(sims).enumerate() {
        let st = &s.stats;
        println!(
            "{:15} limits {} conns, {}/conn, {}/s: accepted {}, throttling replies this run {} \
             (all runs: greeting {}, per-connection {}), max concurrent {}",
            c.name,
            c.connections,
            c.per_connection,
            c.rate,
            s.accepted() - since.accepted[i],
            s.throttles() - since.before[i],
            st.refused_greetings.load(Ordering::SeqCst),
            st.per_connection_refusals.load(Ordering::SeqCst),
            st.max_concurrent.load(Ordering::SeqCst),
        );
        let replies = st.replies.lock().expect("replies");
        for r in replies.iter().skip(since.before[i]) {
            println!("    {r}");
        }
    }
    print!("{}", report.summary);
}
