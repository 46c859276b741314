//! The sandbox: real servers on loopback that stand in for the Internet.
//!
//! `--sandbox` runs the normal pipeline (DNS → MX → SMTP) against these, and the integration
//! tests script them to fail in every way a real receiver does.

pub mod dns;
pub mod dnssec;
pub mod https;
pub mod receiver;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use dns::{DnsServer, Zone};
use receiver::{Receiver, ReceiverConfig, StartTls};

/// Host name every sandbox domain's MX points to.
pub const SANDBOX_MX: &str = "mx.sandbox.test";

/// The embedded DNS server and SMTP receiver used by `--sandbox`.
pub struct Sandbox {
    /// Answers MX for every domain with [`SANDBOX_MX`] (except the demo domains below).
    pub dns: DnsServer,
    /// Accepts mail for everyone, following the magic local parts of
    /// [`receiver::magic_script`], and stores each message under `mail_dir`.
    pub receiver: Receiver,
    /// Where received messages are written.
    pub mail_dir: PathBuf,
}

impl Sandbox {
    /// Starts both servers on 127.0.0.1 with free ports; messages go to `mail_dir`. The
    /// receiver offers STARTTLS with a self-signed certificate, as many real MX hosts do.
    ///
    /// Demo domains: `nullmx.test` publishes a null MX, `nxdomain.test` does not exist.
    pub async fn start(mail_dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(mail_dir)?;
        let starttls = tls::self_signed(&[SANDBOX_MX])
            .and_then(|id| id.server_config())
            .map(StartTls::Offer)
            .map_err(std::io::Error::other)?;
        let receiver = Receiver::start(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            ReceiverConfig {
                store_dir: Some(mail_dir.to_path_buf()),
                starttls: Some(starttls),
                ..ReceiverConfig::default()
            },
        )
        .await?;
        let mut zone = Zone::new();
        zone.catch_all_mx(SANDBOX_MX)
            .addr(SANDBOX_MX, dns::loopback(1))
            .null_mx("nullmx.test")
            .nxdomain("nxdomain.test");
        let dns = DnsServer::start(SocketAddr::from(([127, 0, 0, 1], 0)), zone).await?;
        Ok(Self {
            dns,
            receiver,
            mail_dir: mail_dir.to_path_buf(),
        })
    }
}
