//! The bounce mailbox over IMAP (RFC 3501): `mailmerge bounces imaps://user@host/INBOX`.
//!
//! Return paths usually land in a mailbox at a mail provider, not in a local Maildir. This
//! reads it over implicit TLS (port 993; the certificate verified against the Mozilla roots
//! plus any `--tls-ca`), logs in with a password that never comes from the command line, and
//! fetches only what is new: every message above the mailbox's UID watermark, kept in the
//! suppression store and reset when the mailbox's UIDVALIDITY changes. Or, with
//! `--imap-move-to FOLDER`, every message in the mailbox, each moved to FOLDER once processed.
//!
//! Each message is fetched with `BODY.PEEK[]<0.cap>` (a partial fetch: the server sends at
//! most the cap; `\Seen` is not set), so a huge message costs no more than the cap. The client
//! is `async-imap` on tokio, over our own `tokio-rustls` stream (ring), so no second TLS stack
//! is built.

use std::sync::Arc;

use async_imap::Session;
use futures_util::StreamExt;
use rustls::pki_types::{CertificateDer, ServerName};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::read::Raw;
use crate::suppress::Watermark;

/// The IMAP mailbox cannot be used.
#[derive(Debug, Error)]
pub enum ImapError {
    /// The URL is not `imaps://user@host[:port]/MAILBOX`.
    #[error("{url:?}: {reason} (use imaps://USER@HOST[:PORT]/MAILBOX)")]
    Url {
        /// As given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// No connection (DNS, TCP, TLS handshake, certificate).
    #[error("imaps://{host}:{port}: {message}")]
    Connect {
        /// Server.
        host: String,
        /// Port.
        port: u16,
        /// What failed.
        message: String,
    },
    /// The server refused a command (login, select, fetch, move).
    #[error("IMAP {what}: {message}")]
    Command {
        /// The command.
        what: &'static str,
        /// The server's or the library's message.
        message: String,
    },
}

/// `imaps://user@host[:port]/MAILBOX`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImapUrl {
    /// Login name (percent-decoded: `bounces%40acme.example` is `bounces@acme.example`).
    pub user: String,
    /// Server name (also the name its certificate must carry).
    pub host: String,
    /// Port (993 when not given).
    pub port: u16,
    /// Mailbox to read (`INBOX` when the path is empty).
    pub mailbox: String,
}

impl ImapUrl {
    /// True when `s` names an IMAP mailbox rather than a file.
    pub fn is_imap(s: &str) -> bool {
        let l = s.to_ascii_lowercase();
        l.starts_with("imaps://") || l.starts_with("imap://")
    }

    /// Parses the URL (RFC 5092 in its simple form: user, host, port, mailbox).
    pub fn parse(url: &str) -> Result<Self, ImapError> {
        let bad = |reason: &str| ImapError::Url {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let Some(rest) = url
            .get(..8)
            .filter(|s| s.eq_ignore_ascii_case("imaps://"))
            .map(|_| &url[8..])
        else {
            return Err(bad("only imaps:// (IMAP over TLS) is supported"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (user, hostport) = authority
            .rsplit_once('@')
            .ok_or_else(|| bad("no user name"))?;
        if user.contains(':') {
            return Err(bad(
                "a password in the URL is refused: use MAILMERGE_IMAP_PASSWORD or the config file",
            ));
        }
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport, 993),
        };
        let mailbox = percent_decode(path);
        Ok(Self {
            user: percent_decode(user),
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            mailbox: if mailbox.is_empty() {
                "INBOX".into()
            } else {
                mailbox
            },
        })
    }

    /// The key of this mailbox's watermark: `imaps://user@host:port/MAILBOX`.
    pub fn key(&self) -> String {
        format!(
            "imaps://{}@{}:{}/{}",
            self.user, self.host, self.port, self.mailbox
        )
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b.get(i + 1..i + 3).and_then(|h| {
            std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        });
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How to read the mailbox.
#[derive(Clone, Debug, Default)]
pub struct ImapOptions {
    /// The login password (from the environment or the config file).
    pub password: String,
    /// Roots trusted besides the Mozilla roots (`--tls-ca`).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Move each processed message here instead of keeping a watermark.
    pub move_to: Option<String>,
    /// Bytes fetched per message.
    pub cap: usize,
}

/// A logged-in session with the mailbox selected.
pub struct Mailbox {
    session: Session<TlsStream<TcpStream>>,
    url: ImapUrl,
    /// The mailbox's UIDVALIDITY.
    pub uidvalidity: u32,
    cap: usize,
}

fn command(what: &'static str) -> impl Fn(async_imap::error::Error) -> ImapError {
    move |e| ImapError::Command {
        what,
        message: e.to_string(),
    }
}

impl Mailbox {
    /// Connects (TLS verified), logs in and selects the mailbox.
    pub async fn open(url: &ImapUrl, opts: &ImapOptions) -> Result<Self, ImapError> {
        let tls = connect(url, &opts.extra_roots).await?;
        let mut client = async_imap::Client::new(tls);
        let connect_err = |message: String| ImapError::Connect {
            host: url.host.clone(),
            port: url.port,
            message,
        };
        // The server's greeting comes first.
        client
            .read_response()
            .await
            .map_err(|e| connect_err(e.to_string()))?
            .ok_or_else(|| connect_err("closed before its greeting".into()))?;
        let mut session = client
            .login(&url.user, &opts.password)
            .await
            .map_err(|(e, _)| command("LOGIN")(e))?;
        let selected = session
            .select(&url.mailbox)
            .await
            .map_err(command("SELECT"))?;
        Ok(Self {
            session,
            url: url.clone(),
            uidvalidity: selected.uid_validity.unwrap_or(0),
            cap: opts.cap.max(1),
        })
    }

    /// The UIDs to read, ascending: all of them (`since` = `None`, or another UIDVALIDITY),
    /// else those above the watermark.
    pub async fn uids(&mut self, since: Option<Watermark>) -> Result<Vec<u32>, ImapError> {
        let last = since
            .filter(|w| w.uidvalidity == self.uidvalidity)
            .map_or(0, |w| w.last_uid);
        // `N:*` always includes the highest UID even when it is below N (RFC 3501 §6.4.8).
        let found = self
            .session
            .uid_search(format!("UID {}:*", u64::from(last) + 1))
            .await
            .map_err(command("UID SEARCH"))?;
        let mut uids: Vec<u32> = found.into_iter().filter(|&u| u > last).collect();
        uids.sort_unstable();
        Ok(uids)
    }

    /// Message `uid`'s first `cap` bytes (`BODY.PEEK[]<0.cap>`: not marked seen).
    pub async fn fetch(&mut self, uid: u32) -> Result<Raw, ImapError> {
        let query = format!("(UID BODY.PEEK[]<0.{}>)", self.cap + 1);
        let mut bytes = Vec::new();
        {
            let mut stream = self
                .session
                .uid_fetch(uid.to_string(), query)
                .await
                .map_err(command("UID FETCH"))?;
            while let Some(item) = stream.next().await {
                let fetch = item.map_err(command("UID FETCH"))?;
                if fetch.uid == Some(uid)
                    && let Some(body) = fetch.body()
                {
                    bytes = body.to_vec();
                }
            }
        }
        let truncated = bytes.len() > self.cap;
        bytes.truncate(self.cap);
        Ok(Raw {
            origin: format!("{};UID={uid}", self.url.key()),
            bytes,
            truncated,
        })
    }

    /// Moves the messages to `folder` (created if missing): `UID MOVE` (RFC 6851), or COPY,
    /// `\Deleted` and EXPUNGE where the server has no MOVE.
    pub async fn move_to(&mut self, uids: &[u32], folder: &str) -> Result<(), ImapError> {
        if uids.is_empty() {
            return Ok(());
        }
        // An existing folder makes CREATE fail: that is fine.
        let _ = self.session.create(folder).await;
        let set = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let caps = self
            .session
            .capabilities()
            .await
            .map_err(command("CAPABILITY"))?;
        if caps.has_str("MOVE") {
            return self
                .session
                .uid_mv(&set, folder)
                .await
                .map_err(command("UID MOVE"));
        }
        self.session
            .uid_copy(&set, folder)
            .await
            .map_err(command("UID COPY"))?;
        {
            let s = self
                .session
                .uid_store(&set, "+FLAGS.SILENT (\\Deleted)")
                .await
                .map_err(command("UID STORE"))?;
            let mut s = std::pin::pin!(s);
            while s.next().await.is_some() {}
        }
        let s = self.session.expunge().await.map_err(command("EXPUNGE"))?;
        let mut s = std::pin::pin!(s);
        while s.next().await.is_some() {}
        Ok(())
    }

    /// Logs out (errors ignored: everything was done).
    pub async fn close(mut self) {
        let _ = self.session.logout().await;
    }
}

/// TCP to each address of the host in turn, then TLS with the certificate checked for the
/// host name.
async fn connect(
    url: &ImapUrl,
    extra_roots: &[CertificateDer<'static>],
) -> Result<TlsStream<TcpStream>, ImapError> {
    let err = |message: String| ImapError::Connect {
        host: url.host.clone(),
        port: url.port,
        message,
    };
    let policy = crate::smtp::TlsPolicy::new(crate::smtp::TlsMode::Required, extra_roots)
        .map_err(|e| err(e.to_string()))?;
    let name = ServerName::try_from(url.host.clone()).map_err(|e| err(e.to_string()))?;
    let addrs = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                let connector = TlsConnector::from(Arc::clone(&policy.verified()));
                return connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| err(format!("TLS: {e}")));
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(err(last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_user_host_port_and_mailbox_and_refuse_passwords_and_plain_imap() {
        let u = ImapUrl::parse("imaps://bounces%40acme.example@imap.acme.example/Bounces%20In")
            .unwrap();
        assert_eq!(u.user, "bounces@acme.example");
        assert_eq!((u.host.as_str(), u.port), ("imap.acme.example", 993));
        assert_eq!(u.mailbox, "Bounces In");
        assert_eq!(
            u.key(),
            "imaps://bounces@acme.example@imap.acme.example:993/Bounces In"
        );
        let d = ImapUrl::parse("IMAPS://u@localhost:1993").unwrap();
        assert_eq!((d.port, d.mailbox.as_str()), (1993, "INBOX"));
        assert!(ImapUrl::parse("imap://u@h/INBOX").is_err(), "no plain IMAP");
        let e = ImapUrl::parse("imaps://u:secret@h/INBOX").unwrap_err();
        assert!(e.to_string().contains("password"), "{e}");
        assert!(ImapUrl::parse("imaps://h/INBOX").is_err());
        assert!(ImapUrl::is_imap("imaps://u@h") && !ImapUrl::is_imap("/var/mail/x"));
    }
}
