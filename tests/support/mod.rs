//! Shared test harness: real DNS and SMTP servers on loopback, and helpers to run mailmerge
//! against them and read its results.
//!
//! Every MX listens on the same port on its own 127.0.0.x address (mailmerge connects to one
//! `--smtp-port`); an address with no receiver is a host that refuses connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailmerge::RunConfig;
use mailmerge::sandbox::dns::{DnsServer, Zone, loopback};
use mailmerge::sandbox::receiver::{Receiver, ReceiverConfig};
use mailmerge::smtp::Timeouts;

/// A set of receivers sharing one port on different loopback addresses.
pub struct Mxs {
    pub port: u16,
    pub receivers: HashMap<IpAddr, Receiver>,
}

impl Mxs {
    /// Starts one receiver per (last octet, config). The first picks the port.
    pub async fn start(hosts: Vec<(u8, ReceiverConfig)>) -> Self {
        let mut receivers = HashMap::new();
        let mut port = 0;
        for (octet, config) in hosts {
            let ip = loopback(octet);
            let r = Receiver::start(SocketAddr::new(ip, port), config)
                .await
                .unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"));
            port = r.addr().port();
            receivers.insert(ip, r);
        }
        Self { port, receivers }
    }

    pub fn get(&self, octet: u8) -> &Receiver {
        &self.receivers[&loopback(octet)]
    }

    pub fn total_connections(&self) -> usize {
        self.receivers.values().map(Receiver::connections).sum()
    }

    pub fn total_received(&self) -> usize {
        self.receivers.values().map(|r| r.received().len()).sum()
    }
}

/// A scratch folder with a list and a template.
pub struct Job {
    pub dir: tempfile::TempDir,
    pub csv: PathBuf,
    pub template: PathBuf,
    pub results: PathBuf,
}

/// The instant library runs of the tests start at: 2026-12-04 12:00:00 UTC.
pub const PINNED_NOW: u64 = 1_796_385_600;

impl Job {
    pub fn new(csv: &str, template: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let csv_path = dir.path().join("list.csv");
        let tpl_path = dir.path().join("message.hbs");
        std::fs::write(&csv_path, csv).expect("write csv");
        std::fs::write(&tpl_path, template).expect("write template");
        let results = dir.path().join("list.results.csv");
        Self {
            dir,
            csv: csv_path,
            template: tpl_path,
            results,
        }
    }

    /// A run configuration pointed at the test servers, with short timeouts and retries.
    pub fn config(&self, dns: &DnsServer, smtp_port: u16) -> RunConfig {
        let mut cfg = RunConfig::new(self.csv.clone(), self.template.clone());
        cfg.results = self.results.clone();
        cfg.dns.server = Some(dns.addr());
        cfg.dns.timeout = Duration::from_millis(500);
        cfg.dns.attempts = 1;
        cfg.delivery.smtp_port = smtp_port;
        cfg.delivery.helo = Some("sender.test".into());
        cfg.delivery.timeouts = Timeouts::uniform(Duration::from_secs(5));
        cfg.delivery.retry = mailmerge::delivery::RetryPolicy::parse("100ms").expect("retry");
        cfg.delivery.deadline = Duration::from_secs(10);
        cfg.progress = mailmerge::progress::Mode::Quiet;
        // The sender's memory, as the binary keeps one: this job's own, on a pinned clock
        // (a run never straddles a day by accident).
        cfg.state = Some(self.path("senders.sqlite").into());
        cfg.clock = mailmerge::clock::Clock::starting_at_unix(PINNED_NOW);
        cfg
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The binary with this job's own homes: every run of the job shares one suppression list
    /// and MTA-STS cache, which no other test sees.
    pub fn binary(&self) -> std::process::Command {
        binary_in(&self.home())
    }

    /// The folder [`Job::binary`] uses as XDG_DATA_HOME.
    pub fn home(&self) -> PathBuf {
        self.path("home")
    }
}

/// The results CSV as maps from column name to value, in file order.
pub fn read_results(path: &Path) -> Vec<HashMap<String, String>> {
    let mut rdr = csv::Reader::from_path(path).expect("results csv");
    let headers = rdr.headers().expect("headers").clone();
    rdr.records()
        .map(|r| {
            let r = r.expect("record");
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The row whose `email` column equals `email`.
pub fn row<'a>(rows: &'a [HashMap<String, String>], email: &str) -> &'a HashMap<String, String> {
    rows.iter()
        .find(|r| r["email"] == email)
        .unwrap_or_else(|| panic!("no result row for {email}"))
}

/// A zone builder shortcut.
pub fn zone() -> Zone {
    Zone::new()
}

/// Starts a DNS server on 127.0.0.1.
pub async fn dns(zone: Zone) -> DnsServer {
    DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zone)
        .await
        .expect("dns server")
}

/// A plain template using `name` and `email`.
pub const TEMPLATE: &str = "From: Sender <news@sender.test>\nTo: {{name}} <{{email}}>\nSubject: Hello {{name}}\n\nHi {{name}},\n.leading dot line\n..two dots\nbye\n";

/// The binary with a home of its own: the suppression list's default home (XDG_DATA_HOME) and
/// the MTA-STS cache's (XDG_CACHE_HOME) in a fresh scratch folder, so a test never writes to
/// the user's real list or cache, and tests running side by side in this process never see
/// each other's lists. Runs that must share a list use [`Job::binary`] or [`binary_in`].
pub fn binary() -> std::process::Command {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    binary_in(&scratch_root().join(format!("home-{n}")))
}

/// The binary with its data and cache homes in `home`.
pub fn binary_in(home: &Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mailmerge"));
    for (var, value) in home_env(home) {
        c.env(var, value);
    }
    c
}

/// XDG_DATA_HOME and XDG_CACHE_HOME inside `home`.
pub fn home_env(home: &Path) -> [(&'static str, PathBuf); 2] {
    [
        ("XDG_DATA_HOME", home.to_path_buf()),
        ("XDG_CACHE_HOME", home.join("cache")),
    ]
}

/// This test process's scratch folder (removed at exit).
fn scratch_root() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}
/// The suppression list at `path` (SQLite), as the library's trait object.
pub fn open_list(
    path: &Path,
) -> Result<
    std::sync::Arc<dyn mailmerge::suppress::SuppressionStore>,
    mailmerge::suppress::StoreError,
> {
    let list = mailmerge::suppress::sqlite::SqliteSuppressions::open(path)?;
    Ok(std::sync::Arc::new(list))
}

pub mod browser;
pub mod campaign;
pub mod dovecot;
pub mod mta;
pub mod postgres;
pub mod provider_sim;
pub mod spamassassin;
