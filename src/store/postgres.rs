//! PostgreSQL connections for the shared stores: the URL, a small pool of connections over
//! verified TLS, and the versioned schema every store migrates itself to when it opens.
//!
//! - **The URL** is libpq's (`postgres://USER[:PASSWORD]@HOST[:PORT][,HOST2…]/DBNAME?…`),
//!   parsed by tokio-postgres, plus `sslrootcert=FILE` (extra trusted roots, PEM) and the
//!   `sslmode` values `verify-ca`/`verify-full` (read as `require`). Without a password in the
//!   URL, `PGPASSWORD` is used (libpq's variable), so the URL itself may sit in a config file.
//!   Messages show the URL without its password or parameters ([`PgUrl::place`]).
//! - **TLS** (tokio-postgres-rustls, ring) always verifies the server's certificate and name
//!   against the Mozilla roots plus `sslrootcert`, as libpq's `verify-full` does; `sslmode`
//!   only says whether TLS is tried (`prefer`, the default), required, or not used (`disable`).
//! - **Connections** come from a pool of [`POOL_SIZE`]; the first is opened (and the schema
//!   checked) when the store opens, so an unreachable or refusing server stops a run before
//!   anything is sent. A connection attempt gives up after [`CONNECT_TIMEOUT`] unless the URL
//!   says otherwise (`connect_timeout`).
//! - **The schema** is versioned per store in `mailmerge_schema` ([`migrate`]); migrations run
//!   in one transaction under a transaction-level advisory lock, so processes starting at
//!   once wait for each other and each finds the schema ready.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;

/// Connections per store and process: a run uses one at a time; `bounces` and the commands
/// a few.
pub const POOL_SIZE: usize = 4;

/// How long a connection attempt waits when the URL gives no `connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long sent data may stay unacknowledged before the connection is given up (a server
/// that vanished mid-query is noticed instead of waited on for the kernel's 15 minutes), when
/// the URL gives no `tcp_user_timeout`.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// The advisory lock class of mailmerge's schema migrations (`pg_advisory_xact_lock(class, 0)`).
const MIGRATION_LOCK: i32 = 0x6d6d_0000;

/// A PostgreSQL URL, checked. Its `Debug` and [`PgUrl::place`] never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// The URL as given (may hold a password).
    url: String,
    /// The URL for messages.
    place: String,
}

/// What a URL says, ready to connect.
struct Settings {
    /// tokio-postgres' configuration.
    config: tokio_postgres::Config,
    /// `sslrootcert`: extra trusted roots.
    root_cert: Option<PathBuf>,
}

impl PgUrl {
    /// Checks a `postgres://` URL (no connection is made).
    pub fn parse(url: &str) -> Result<Self, String> {
        // Schemes are case-insensitive (RFC 3986 §3.1); tokio-postgres knows them in lower case.
        let url = &match url.split_once("://") {
            Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
            None => url.to_string(),
        };
        let probe = Self {
            url: url.to_string(),
            place: String::new(),
        };
        let settings = probe.settings()?;
        let c = &settings.config;
        if c.get_hosts().is_empty() && c.get_hostaddrs().is_empty() {
            return Err("the URL names no host (postgres://USER@HOST/DBNAME)".into());
        }
        Ok(Self {
            place: place_of(url, c),
            url: url.to_string(),
        })
    }

    /// The URL for messages: `postgres://user@host:port/dbname`, no password, no parameters.
    pub fn place(&self) -> &str {
        &self.place
    }

    /// Parses the URL: `sslrootcert` and the `verify-*` modes are ours, the rest tokio-postgres'.
    fn settings(&self) -> Result<Settings, String> {
        let (base, query) = match self.url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (self.url.as_str(), None),
        };
        let mut kept = Vec::new();
        let mut root_cert = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some(("sslrootcert", v)) => root_cert = Some(PathBuf::from(percent_decode(v)?)),
                Some(("sslmode", "verify-ca" | "verify-full")) => kept.push("sslmode=require"),
                _ if pair.is_empty() => {}
                _ => kept.push(pair),
            }
        }
        let text = match kept.is_empty() {
            true => base.to_string(),
            false => format!("{base}?{}", kept.join("&")),
        };
        let config: tokio_postgres::Config = text.parse().map_err(|e| {
            // The message names the bad option; the URL (and its password) is not repeated.
            format!("not a usable PostgreSQL URL: {}", describe(&e))
        })?;
        Ok(Settings { config, root_cert })
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.place)
    }
}

/// `postgres://user@host:port,host2:port/dbname` from the parsed URL.
fn place_of(url: &str, c: &tokio_postgres::Config) -> String {
    let scheme = url.split_once("://").map_or("postgres", |(s, _)| s);
    let user = c.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let ports = c.get_ports();
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let name = match h {
                Host::Tcp(name) if name.contains(':') => format!("[{name}]"),
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{name}:{port}")
        })
        .collect();
    let db = c.get_dbname().unwrap_or_default();
    format!("{scheme}://{user}{}/{db}", hosts.join(","))
}

/// `%XX` escapes of a URL parameter decoded.
fn percent_decode(v: &str) -> Result<String, String> {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = v.get(i + 1..i + 3).ok_or("a bad %-escape in sslrootcert")?;
            let b = u8::from_str_radix(hex, 16).map_err(|_| "a bad %-escape in sslrootcert")?;
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "sslrootcert is not UTF-8".into())
}

/// A database error as a sentence: the server's own message for a server error, else the
/// client's with its causes (`error connecting to server: Connection refused (os error 111)`).
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!("{}: {}", db.severity(), db.message());
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

/// A pool error as a sentence.
pub fn describe_pool(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => describe(e),
        other => other.to_string(),
    }
}

/// How a store opens its database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read and write; the schema is created or migrated.
    ReadWrite,
    /// Every transaction read-only (`default_transaction_read_only`); nothing is created.
    ReadOnly,
}

/// Builds the pool for `url` and opens its first connection (an unreachable server, a refused
/// login or an untrusted certificate is an error here, before anything else happens).
pub async fn connect(url: &PgUrl, access: Access) -> Result<Pool, String> {
    let Settings {
        mut config,
        root_cert,
    } = url.settings()?;
    if config.get_password().is_none()
        && let Some(pw) = std::env::var_os("PGPASSWORD")
    {
        config.password(pw.as_encoded_bytes());
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("mailmerge");
    }
    if access == Access::ReadOnly {
        config.options("-c default_transaction_read_only=on");
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(root_cert)?);
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| e.to_string())?;
    drop(pool.get().await.map_err(|e| describe_pool(&e))?);
    Ok(pool)
}

/// rustls with ring: the Mozilla roots plus the `sslrootcert` file's certificates.
fn tls_config(root_cert: Option<PathBuf>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = root_cert {
        let certs = crate::tls_policy::mta_sts::load_pem_certs(&path)
            .map_err(|e| format!("sslrootcert: {e}"))?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Why a schema cannot be used.
#[derive(Debug)]
pub enum SchemaError {
    /// The database failed.
    Db(String),
    /// A newer mailmerge wrote it: refused rather than misread.
    Newer {
        /// Version found.
        found: i32,
        /// Version this build writes.
        known: i32,
    },
}

impl From<tokio_postgres::Error> for SchemaError {
    fn from(e: tokio_postgres::Error) -> Self {
        SchemaError::Db(describe(&e))
    }
}

/// Brings `component`'s tables to the last of `steps` (step `i` takes version `i` to
/// `i + 1`): in one transaction, under the migration advisory lock, so two processes starting
/// at once never run a step twice or see half a schema. A schema written by a newer version is
/// refused. Returns the version found before.
pub async fn migrate(
    client: &mut tokio_postgres::Client,
    component: &str,
    steps: &[&str],
) -> Result<i32, SchemaError> {
    let known = steps.len() as i32;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1, 0)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS mailmerge_schema (
            component TEXT PRIMARY KEY,
            version   INTEGER NOT NULL,
            updated   TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let found: i32 = tx
        .query_opt(
            "SELECT version FROM mailmerge_schema WHERE component = $1",
            &[&component],
        )
        .await?
        .map_or(0, |r| r.get(0));
    if found > known {
        return Err(SchemaError::Newer { found, known });
    }
    for step in &steps[found.max(0) as usize..] {
        tx.batch_execute(step).await?;
    }
    if found < known {
        tx.execute(
            "INSERT INTO mailmerge_schema (component, version) VALUES ($1, $2) \
             ON CONFLICT (component) DO UPDATE SET version = $2, updated = now()",
            &[&component, &known],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(found)
}

/// Connects for reading and writing and brings `component`'s tables to the last of `steps`
/// ([`migrate`]): what a store does when it opens.
pub async fn open_migrated(
    url: &PgUrl,
    component: &str,
    steps: &[&str],
) -> Result<Pool, SchemaError> {
    let pool = connect(url, Access::ReadWrite)
        .await
        .map_err(SchemaError::Db)?;
    let mut client = pool
        .get()
        .await
        .map_err(|e| SchemaError::Db(describe_pool(&e)))?;
    migrate(&mut client, component, steps).await?;
    Ok(pool)
}

/// The version of `component`'s tables without changing anything (`None`: never created),
/// for a read-only opening.
pub async fn version(
    client: &tokio_postgres::Client,
    component: &str,
) -> Result<Option<i32>, SchemaError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('mailmerge_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(client
        .query_opt(
            "SELECT version FROM mailmerge_schema WHERE component = $1",
            &[&component],
        )
        .await?
        .map(|r| r.get(0)))
}

/// A text value as PostgreSQL stores it: `text` cannot hold NUL, which a server's reply or an
/// imported cell might carry; it becomes U+FFFD.
pub fn text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    }
}

/// A stable 32-bit key for an advisory lock on `name` (the first bytes of its SHA-256).
pub fn lock_key(name: &str) -> i32 {
    let d = ring::digest::digest(&ring::digest::SHA256, name.as_bytes());
    let b = d.as_ref();
    i32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::config::SslMode;

    #[test]
    fn the_place_never_shows_the_password_or_the_parameters() {
        let u = PgUrl::parse(
            "postgresql://mm:s3cr%40t@db1.example.com:5433,db2.example.com/mail?sslmode=verify-full\
             &sslrootcert=%2Fetc%2Fca.pem&password=other&application_name=x",
        )
        .unwrap();
        assert_eq!(
            u.place(),
            "postgresql://mm@db1.example.com:5433,db2.example.com:5432/mail"
        );
        let s = u.settings().unwrap();
        assert_eq!(s.root_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(s.config.get_ssl_mode(), SslMode::Require);
        assert!(!format!("{u:?}").contains("s3cr"));
    }

    #[test]
    fn a_bad_url_is_refused_without_repeating_it() {
        let e = PgUrl::parse("postgres://mm:pw@db.example.com/mail?sslmode=sometimes").unwrap_err();
        assert!(e.contains("sslmode") && !e.contains("pw@"), "{e}");
        let e = PgUrl::parse("postgres://mm:pw@db.example.com/mail?colour=blue").unwrap_err();
        assert!(e.contains("colour"), "{e}");
        assert!(PgUrl::parse("postgres:///mail").is_err());
        assert!(PgUrl::parse("postgres://db/x?sslrootcert=%zz").is_err());
    }

    #[test]
    fn nul_never_reaches_the_server_and_lock_keys_are_stable() {
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        assert_eq!(lock_key("yahoo"), lock_key("yahoo"));
        assert_ne!(lock_key("yahoo"), lock_key("google"));
    }
}
