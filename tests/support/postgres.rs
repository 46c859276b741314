//! A throwaway PostgreSQL server as a test fixture: a cluster made with `initdb` in a temp
//! dir, started on a free loopback port (its unix socket in the temp dir too), with one
//! superuser `mailmerge` trusted without a password, and stopped when dropped.
//!
//! `.ci/run` installs Debian's `postgresql` package (the server binaries under
//! [`PG_ROOT`]) without starting its system-wide cluster. A test without them prints
//! "SKIPPED" and passes locally, but FAILS when `CI=true`. PostgreSQL refuses to run as root:
//! as root the cluster belongs to the `postgres` system user (else `nobody`), and the server
//! runs as that user.

use std::os::unix::fs::chown;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::mta::{find, free_port, is_root};

/// Where Debian puts each major version's server binaries (`<version>/bin`).
pub const PG_ROOT: &str = "/usr/lib/postgresql";

/// The `postgres` binaries installed, newest major version first.
fn installed() -> Vec<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(PG_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            Some((major, e.path().join("bin/postgres")))
        })
        .collect();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut paths: Vec<PathBuf> = found.into_iter().map(|(_, p)| p).collect();
    // Named in the SKIPPED message when there is none.
    paths.push(Path::new(PG_ROOT).join("VERSION/bin/postgres"));
    paths
}

/// A running PostgreSQL cluster of its own.
pub struct Postgres {
    /// The data directory, socket directory and log.
    dir: tempfile::TempDir,
    /// The server binaries' folder.
    bin: PathBuf,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    /// The user the server runs as (`None`: this process's).
    owner: Option<(u32, u32)>,
    /// The postmaster, while it runs.
    child: Option<Child>,
    /// Extra `-c NAME=VALUE` settings of the server.
    settings: Vec<String>,
}

/// The uid and gid of a system user.
fn ids_of(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

impl Postgres {
    /// Makes and starts a cluster, or says why it cannot ([`super::mta::skip`]).
    pub fn start() -> Option<Self> {
        let mut pg = Self::init()?;
        pg.run();
        Some(pg)
    }

    /// Makes and starts a cluster that takes TCP connections over TLS only (`hostssl`), with
    /// this certificate chain and key (PEM).
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Option<Self> {
        let mut pg = Self::init()?;
        let data = pg.data();
        for (name, text) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if let Some((uid, gid)) = pg.owner {
                chown(&path, Some(uid), Some(gid)).unwrap();
            }
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        pg.settings.extend(["ssl=on".to_string()]);
        pg.run();
        Some(pg)
    }

    /// Makes a cluster (not started).
    fn init() -> Option<Self> {
        let bin = find("the PostgreSQL server", &installed())?
            .parent()
            .unwrap()
            .to_path_buf();
        let owner = if is_root() {
            Some(ids_of("postgres").or_else(|| ids_of("nobody")).unwrap())
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("pg").tempdir().unwrap();
        if let Some((uid, gid)) = owner {
            chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let pg = Self {
            dir,
            bin,
            port: free_port("127.0.0.1".parse().unwrap()),
            owner,
            child: None,
            settings: Vec::new(),
        };
        let out = pg
            .command("initdb")
            .args(["-U", "mailmerge", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale=C", "-D"])
            .arg(pg.data())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(pg)
    }

    /// A program of the server's, as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env("LC_ALL", "C").current_dir(self.dir.path());
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn run(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("log")).unwrap();
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "max_connections=200"])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Waits for readiness, however long this machine takes (the loop ends when the server
        // answers or has exited).
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .unwrap();
            if ready.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("postgres exited ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Stops the server (fast shutdown: open sessions are ended) and waits until it is gone.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SIGINT is PostgreSQL's fast shutdown.
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }

    /// A URL of database `db` on this server.
    pub fn url_of(&self, db: &str) -> String {
        format!(
            "postgres://mailmerge@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    /// The URL of the default database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// Runs SQL through `psql` (as the superuser), returning its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url()])
            .args(["-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
