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
        cfg
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
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

/// The binary, with the suppression list's default home (XDG_DATA_HOME) and the MTA-STS
/// cache's (XDG_CACHE_HOME) in a scratch folder of this test process: a test never writes to
/// the user's real list or cache.
pub fn binary() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_mailmerge"));
    c.env("XDG_DATA_HOME", scratch_data_home());
    c.env("XDG_CACHE_HOME", scratch_data_home().join("cache"));
    c
}

pub fn scratch_data_home() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}
pub mod browser;
pub mod mta;
pub mod provider_sim;
