//! Real MTAs as test fixtures: a private Postfix instance, an Exim daemon, an OpenSMTPD daemon
//! and a chasquid daemon, each on its own 127.0.0.x address and a free port, with its own
//! configuration, spool and log in a temp dir, delivering what it accepts into a Maildir
//! there. Each is stopped when dropped.
//!
//! `.ci/run` installs Debian's `postfix` package and unpacks `exim4-daemon-light`,
//! `opensmtpd` and `chasquid` under [`MTA_ROOT`] (Debian's MTA packages exclude each other). A test whose
//! server is missing prints "SKIPPED" and passes locally, but FAILS when `CI=true`, so CI never
//! skips silently. The servers start as root and drop privileges themselves.

use std::fmt::Write as _;
use std::fs::File;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailmerge::sandbox::dns::loopback;

/// Where `.ci/run` unpacks the Exim, OpenSMTPD and chasquid packages.
pub const MTA_ROOT: &str = "/opt/mailmerge-mta";

pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Says why a test cannot run: panics under CI=true, else prints SKIPPED.
pub fn skip<T>(why: &str) -> Option<T> {
    assert!(!in_ci(), "{why}: CI must provide it (.ci/run)");
    eprintln!("SKIPPED: {why}");
    None
}

/// The first of `candidates` that exists, or [`skip`].
pub fn find(what: &str, candidates: &[PathBuf]) -> Option<PathBuf> {
    match candidates.iter().find(|p| p.exists()) {
        Some(p) => Some(p.clone()),
        None => skip(&format!(
            "{what} not found (looked for {candidates:?}; `.ci/run servers` installs it)"
        )),
    }
}

/// Finds a Postfix program in Debian's places.
pub fn need(program: &str) -> Option<PathBuf> {
    let dirs = ["/usr/sbin", "/usr/lib/postfix/sbin", "/usr/libexec/postfix"];
    find(program, &dirs.map(|d| Path::new(d).join(program)))
}

/// Root, and the system users a server's binary has compiled in, or [`skip`].
pub fn need_root_and_users(server: &str, users: &[&str]) -> Option<()> {
    if !is_root() {
        return skip(&format!("starting {server} needs root"));
    }
    for u in users {
        let known = Command::new("id")
            .arg(u)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !known {
            return skip(&format!("{server} needs the system user {u}"));
        }
    }
    Some(())
}

/// A free TCP port on `ip` (released again for the server to take).
pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something accepts connections on `addr`; `log` explains a failure.
pub fn wait_listening(addr: SocketAddr, what: &str, log: impl Fn() -> String) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{what} did not listen on {addr}; log:\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run_ok(cmd: &mut Command) {
    let status = cmd.status().expect("spawn");
    assert!(status.success(), "{cmd:?} failed");
}

pub fn chown(path: &Path, owner: &str) {
    run_ok(Command::new("chown").arg("-R").arg(owner).arg(path));
}

/// A scratch folder the servers' unprivileged users can reach (temp dirs are 0700), on tmpfs
/// when there is one: the servers fsync every message they accept, which on a busy disk costs
/// more than the whole SMTP dialogue.
pub fn server_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    run_ok(Command::new("chmod").arg("755").arg(dir.path()));
    dir
}

/// The last `n` lines of a file (empty if unreadable).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// First line of a command's output (stdout, else stderr), for version strings.
fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            let out = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&out)
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// The Debian package a program came from: `dpkg -S` for installed packages, else the VERSION
/// file `.ci/run` writes beside an unpacked one.
fn package_version(program: &Path) -> String {
    let mut dir = program.parent();
    while let Some(d) = dir {
        if let Ok(v) = std::fs::read_to_string(d.join("VERSION")) {
            return v
                .replace("Package: ", "")
                .replace("\nVersion: ", " ")
                .trim()
                .to_string();
        }
        dir = d.parent();
    }
    let owner = first_line(Command::new("dpkg").arg("-S").arg(program));
    let pkg = owner.split(':').next().unwrap_or("").to_string();
    let v = first_line(Command::new("dpkg-query").args(["-W", "-f", "${Version}", &pkg]));
    format!("{pkg} {v}")
}

/// Sends `signal` (e.g. "TERM") to a process and waits for it, killing it after 5 s.
fn stop(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .stderr(Stdio::null())
        .status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The messages in a Maildir (new/ and cur/), in no particular order.
pub fn maildir_messages(maildir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for sub in ["new", "cur"] {
        let Ok(entries) = std::fs::read_dir(maildir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(bytes) = std::fs::read(e.path()) {
                out.push(bytes);
            }
        }
    }
    out
}

/// Number of messages in a Maildir.
pub fn maildir_count(maildir: &Path) -> usize {
    ["new", "cur"]
        .iter()
        .filter_map(|s| std::fs::read_dir(maildir.join(s)).ok())
        .map(|d| d.count())
        .sum()
}

/// A receiving MTA under test.
pub trait Mta {
    /// Which implementation, with its version and Debian package.
    fn describe(&self) -> String;
    /// Where it listens.
    fn addr(&self) -> SocketAddr;
    /// The Maildir it delivers every accepted message into.
    fn maildir(&self) -> PathBuf;
    /// The end of its log, to explain a failure.
    fn log_tail(&self, lines: usize) -> String;
    /// Messages it has finished storing in [`Mta::maildir`].
    fn stored(&self) -> usize {
        maildir_count(&self.maildir())
    }
}

/// `main.cf` lines of a hardened Postfix (≥ 3.7.6/3.7.9; 3.9's defaults): disconnect on
/// commands sent ahead where RFC 2920 forbids it, refuse bare LF (also from "trusted"
/// networks), plus the classic strictness knobs.
pub const HARDENED_MAIN_CF: &str = "smtpd_forbid_unauth_pipelining = yes\n\
                                    smtpd_forbid_bare_newline = yes\n\
                                    smtpd_forbid_bare_newline_exclusions =\n\
                                    smtpd_helo_required = yes\n\
                                    strict_rfc821_envelopes = yes\n\
                                    smtpd_data_restrictions = reject_unauth_pipelining\n";

/// Options of a private Postfix instance.
#[derive(Default)]
pub struct PostfixOptions<'a> {
    /// The domain it is the MX for (any local part is accepted).
    pub domain: &'a str,
    /// Offer STARTTLS with this certificate and key (PEM).
    pub tls: Option<(&'a str, &'a str)>,
    /// More `main.cf` lines (later lines win).
    pub main_cf: &'a str,
    /// More `master.cf` service lines.
    pub master_cf: &'a str,
}

/// A private Postfix instance (own config, queue and log under a temp dir) whose `smtpd`
/// listens on one loopback address as an MX for one domain and delivers every message into
/// one Maildir through the `virtual` delivery agent (as `nobody`). Stopped when dropped.
pub struct Postfix {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    bin: PathBuf,
}

impl Postfix {
    pub fn start(octet: u8, opts: PostfixOptions<'_>) -> Option<Self> {
        let postfix = need("postfix")?;
        need("smtpd")?;
        need_root_and_users("Postfix", &["postfix", "nobody"])?;
        let dir = server_dir();
        let d = dir.path().to_path_buf();
        for sub in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        chown(&d.join("data"), "postfix");
        chown(&d.join("mail"), "nobody:nogroup");
        let ip = loopback(octet);
        let addr = SocketAddr::new(ip, free_port(ip));
        let p = d.display();
        let domain = opts.domain;
        let mut main = format!(
            "compatibility_level = 3.6\n\
             queue_directory = {p}/queue\n\
             data_directory = {p}/data\n\
             maillog_file = {p}/maillog\n\
             maillog_file_prefixes = /tmp, /var, {p}\n\
             mail_owner = postfix\n\
             setgid_group = postdrop\n\
             inet_interfaces = loopback-only\n\
             inet_protocols = ipv4\n\
             myhostname = mx.{domain}\n\
             mydestination =\n\
             mynetworks = 192.0.2.1/32\n\
             alias_maps =\n\
             alias_database =\n\
             smtpd_relay_restrictions = reject_unauth_destination\n\
             virtual_mailbox_domains = {domain}\n\
             virtual_mailbox_base = {p}/mail\n\
             virtual_mailbox_maps = static:Maildir/\n\
             virtual_uid_maps = static:65534\n\
             virtual_gid_maps = static:65534\n\
             virtual_transport = virtual\n\
             default_transport = error:no relaying\n\
             relay_transport = error:no relaying\n"
        );
        if let Some((cert, key)) = opts.tls {
            std::fs::write(d.join("conf/cert.pem"), cert).unwrap();
            std::fs::write(d.join("conf/key.pem"), key).unwrap();
            write!(
                main,
                "smtpd_tls_cert_file = {p}/conf/cert.pem\n\
                 smtpd_tls_key_file = {p}/conf/key.pem\n\
                 smtpd_tls_security_level = may\n\
                 smtpd_tls_loglevel = 1\n"
            )
            .unwrap();
        }
        main.push_str(opts.main_cf);
        std::fs::write(d.join("conf/main.cf"), main).unwrap();
        let services = [
            ("pickup", "unix  n - n 60 1", "pickup"),
            ("cleanup", "unix n - n - 0", "cleanup"),
            ("qmgr", "unix n - n 300 1", "qmgr"),
            ("tlsmgr", "unix - - n 1000? 1", "tlsmgr"),
            ("rewrite", "unix - - n - -", "trivial-rewrite"),
            ("bounce", "unix - - n - 0", "bounce"),
            ("defer", "unix - - n - 0", "bounce"),
            ("trace", "unix - - n - 0", "bounce"),
            ("verify", "unix - - n - 1", "verify"),
            ("flush", "unix n - n 1000? 0", "flush"),
            ("proxymap", "unix - - n - -", "proxymap"),
            ("showq", "unix n - n - -", "showq"),
            ("error", "unix - - n - -", "error"),
            ("smtp", "unix - - n - -", "smtp"),
            ("retry", "unix - - n - -", "error"),
            ("discard", "unix - - n - -", "discard"),
            ("virtual", "unix - n n - - ", "virtual"),
            ("anvil", "unix - - n - 1", "anvil"),
            ("scache", "unix - - n - 1", "scache"),
            ("postlog", "unix-dgram n - n - 1", "postlogd"),
        ];
        let mut master = format!("{addr} inet n - n - - smtpd\n");
        for (name, spec, program) in services {
            writeln!(master, "{name} {spec} {program}").unwrap();
        }
        master.push_str(opts.master_cf);
        std::fs::write(d.join("conf/master.cf"), master).unwrap();
        let pf = Self {
            dir,
            addr,
            bin: postfix.clone(),
        };
        let status = bounded(
            Command::new(&postfix)
                .arg("-c")
                .arg(d.join("conf"))
                .arg("start"),
            Duration::from_secs(60),
        );
        assert!(
            status.is_some_and(|s| s.success()),
            "postfix start failed or hung ({status:?}); log:\n{}",
            pf.log()
        );
        wait_listening(addr, "postfix smtpd", || pf.log());
        Some(pf)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Mta for Postfix {
    fn describe(&self) -> String {
        let v = first_line(Command::new("/usr/sbin/postconf").args(["-d", "-h", "mail_version"]));
        format!("Postfix {v} ({})", package_version(&self.bin))
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail/Maildir")
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("maillog"), lines)
    }
}

/// Runs `cmd` to its end, or kills it after `limit` (`None`): Postfix's control commands have
/// been seen to hang now and then, and a test must fail or go on, never wait forever.
pub fn bounded(cmd: &mut Command, limit: Duration) -> Option<std::process::ExitStatus> {
    let mut child = cmd.spawn().ok()?;
    let until = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

impl Drop for Postfix {
    /// `postfix abort`, bounded: its helper commands (`master -t`, `postlog`) have been seen
    /// to hang now and then, and a test must never wait for them. Whatever is left of the
    /// instance's master is then killed by its pid file.
    fn drop(&mut self) {
        let _ = bounded(
            Command::new(&self.bin)
                .arg("-c")
                .arg(self.dir.path().join("conf"))
                .arg("abort")
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
            Duration::from_secs(10),
        );
        let pid_file = self.dir.path().join("queue/pid/master.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// An Exim daemon (`exim4 -bdf`, foreground) with its own configuration (`-C`), spool and logs
/// under a temp dir, an MX for one domain, delivering every message into one Maildir as the
/// Exim user. Stopped when dropped.
pub struct Exim {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    bin: PathBuf,
    child: Child,
}

impl Exim {
    /// Debian's binary: installed, or unpacked by `.ci/run`.
    pub fn binary() -> Option<PathBuf> {
        find(
            "exim4 (Debian's exim4-daemon-light)",
            &[
                PathBuf::from("/usr/sbin/exim4"),
                Path::new(MTA_ROOT).join("exim4/usr/sbin/exim4"),
            ],
        )
    }

    /// Starts Exim as the MX for `domain`; `main` holds main-section options added after the
    /// defaults (later settings win).
    pub fn start(octet: u8, domain: &str, main: &str) -> Option<Self> {
        Self::start_with(octet, domain, main, "", "")
    }

    /// [`Exim::start`] with more routers (tried before the one delivering into the Maildir)
    /// and transports.
    pub fn start_with(
        octet: u8,
        domain: &str,
        main: &str,
        routers: &str,
        transports: &str,
    ) -> Option<Self> {
        let bin = Self::binary()?;
        need_root_and_users("Exim", &["Debian-exim"])?;
        let dir = server_dir();
        let d = dir.path().to_path_buf();
        for sub in ["spool", "log", "mail"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        chown(&d.join("spool"), "Debian-exim:Debian-exim");
        chown(&d.join("log"), "Debian-exim:Debian-exim");
        chown(&d.join("mail"), "Debian-exim:Debian-exim");
        let ip = loopback(octet);
        let port = free_port(ip);
        let addr = SocketAddr::new(ip, port);
        let p = d.display();
        let exim = bin.display();
        let config = format!(
            "primary_hostname = mx.{domain}\n\
             domainlist local_domains = {domain}\n\
             exim_path = {exim}\n\
             spool_directory = {p}/spool\n\
             log_file_path = {p}/log/%slog\n\
             log_selector = +pipelining +smtp_protocol_error +smtp_syntax_error \
                            +smtp_no_mail +received_recipients +connection_reject\n\
             daemon_smtp_ports = {port}\n\
             local_interfaces = {ip}\n\
             keep_environment =\n\
             host_lookup = :\n\
             rfc1413_hosts = :\n\
             tls_advertise_hosts = :\n\
             # Deliver as soon as received, in the receiving process's own privilege.\n\
             deliver_drop_privilege = true\n\
             smtp_accept_queue_per_connection = 0\n\
             # The strict settings (Exim's defaults, spelled out): refuse commands sent ahead\n\
             # of a reply where RFC 2920 does not allow it (SMTP synchronization), offer\n\
             # PIPELINING and CHUNKING to everyone.\n\
             smtp_enforce_sync = true\n\
             pipelining_advertise_hosts = *\n\
             chunking_advertise_hosts = *\n\
             acl_smtp_rcpt = acl_rcpt\n\
             acl_smtp_data = acl_data\n\
             {main}\n\
             begin acl\n\
             acl_rcpt:\n  \
               accept domains = +local_domains\n  \
               deny message = relay not permitted\n\
             acl_data:\n  \
               deny !verify = header_syntax\n    \
                    message = header syntax: $acl_verify_message\n  \
               deny !verify = header_names_ascii\n    \
                    message = header names: $acl_verify_message\n  \
               accept\n\
             begin routers\n\
             {routers}\n\
             maildir:\n  \
               driver = accept\n  \
               domains = +local_domains\n  \
               transport = maildir\n\
             begin transports\n\
             maildir:\n  \
               driver = appendfile\n  \
               directory = {p}/mail/Maildir\n  \
               maildir_format\n  \
               create_directory\n  \
               user = Debian-exim\n  \
               mode = 0640\n\
             {transports}\n\
             begin retry\n\
             * * F,1h,1m\n"
        );
        std::fs::write(d.join("exim.conf"), config).unwrap();
        let child = Command::new(&bin)
            .arg("-C")
            .arg(d.join("exim.conf"))
            .arg("-bdf")
            .arg("-oP")
            .arg(d.join("exim.pid"))
            .stdin(Stdio::null())
            .stdout(File::create(d.join("stdout.log")).unwrap())
            .stderr(File::create(d.join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn exim");
        let ex = Self {
            dir,
            addr,
            bin,
            child,
        };
        wait_listening(addr, "exim", || ex.log_tail(30));
        Some(ex)
    }
}

impl Mta for Exim {
    fn describe(&self) -> String {
        let v = first_line(Command::new(&self.bin).args(["-C", "/dev/null", "-bV"]));
        format!("{v} ({})", package_version(&self.bin))
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail/Maildir")
    }

    fn log_tail(&self, lines: usize) -> String {
        let d = self.dir.path();
        let mut out = tail(&d.join("log/mainlog"), lines);
        for f in ["log/paniclog", "stderr.log"] {
            let t = tail(&d.join(f), lines);
            if !t.is_empty() {
                write!(out, "\n--- {f}\n{t}").unwrap();
            }
        }
        out
    }
}

impl Drop for Exim {
    fn drop(&mut self) {
        stop(&mut self.child, "TERM");
    }
}

/// An OpenSMTPD daemon (`smtpd -d`, foreground, logging to a file) with its own configuration,
/// an MX for one domain, delivering every message into one Maildir (its `maildir` action) as
/// `nobody`. Its spool (`/var/spool/smtpd`), control socket (`/var/run/smtpd.sock`) and
/// delivery agents (`/usr/libexec/opensmtpd`) are compiled in, so it runs in a private mount
/// namespace (`unshare -m`) with temp dirs (and an unpacked package's agents) mounted over
/// them: instances never share state with each other or with a system OpenSMTPD. Its chroot
/// (`/var/lib/opensmtpd/empty`) is the real one. Stopped when dropped.
pub struct OpenSmtpd {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    bin: PathBuf,
    child: Child,
}

impl OpenSmtpd {
    /// Debian's binary: installed, or unpacked by `.ci/run`.
    pub fn binary() -> Option<PathBuf> {
        find(
            "smtpd (Debian's opensmtpd)",
            &[
                Path::new(MTA_ROOT).join("opensmtpd/usr/sbin/smtpd"),
                PathBuf::from("/usr/sbin/smtpd"),
            ],
        )
    }

    /// Starts OpenSMTPD as the MX for `domain`; `extra` holds more smtpd.conf lines, placed
    /// before the listener.
    pub fn start(octet: u8, domain: &str, extra: &str) -> Option<Self> {
        let bin = Self::binary()?;
        need_root_and_users("OpenSMTPD", &["opensmtpd", "opensmtpq", "nobody"])?;
        let mount_points = [
            "/var/spool/smtpd",
            "/var/lib/opensmtpd/empty",
            "/usr/libexec/opensmtpd",
        ];
        for mount_point in mount_points {
            if !Path::new(mount_point).is_dir() {
                return skip(&format!("OpenSMTPD needs the directory {mount_point}"));
            }
        }
        let unshare = find("unshare", &[PathBuf::from("/usr/bin/unshare")])?;
        // Its delivery agents (mail.maildir, mail.mda, …) are looked up in the compiled-in
        // /usr/libexec/opensmtpd: an unpacked package's own are mounted there.
        let libexec = bin
            .parent()
            .and_then(Path::parent)
            .map(|usr| usr.join("libexec/opensmtpd"))
            .filter(|p| p.join("mail.maildir").exists());
        let Some(libexec) = libexec else {
            return skip("OpenSMTPD's libexec/opensmtpd/mail.maildir not found beside smtpd");
        };
        let dir = server_dir();
        let d = dir.path().to_path_buf();
        for sub in ["spool", "run", "mail"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        run_ok(Command::new("chmod").arg("711").arg(d.join("spool")));
        chown(&d.join("mail"), "nobody:nogroup");
        let ip = loopback(octet);
        let port = free_port(ip);
        let addr = SocketAddr::new(ip, port);
        let p = d.display();
        let config = format!(
            "{extra}\n\
             table domains {{ \"{domain}\" }}\n\
             table vusers {{ \"@{domain}\" = \"nobody\" }}\n\
             listen on {ip} port {port} hostname mx.{domain}\n\
             action \"maildir\" maildir \"{p}/mail/Maildir\" virtual <vusers> user nobody\n\
             match from any for domain <domains> action \"maildir\"\n"
        );
        std::fs::write(d.join("smtpd.conf"), config).unwrap();
        let script = "set -e\n\
                      mount --bind \"$1/spool\" /var/spool/smtpd\n\
                      mount --bind \"$1/run\" /run\n\
                      if [ \"$3\" != /usr/libexec/opensmtpd ]; then\n\
                          mount --bind \"$3\" /usr/libexec/opensmtpd\n\
                      fi\n\
                      exec \"$2\" -d -f \"$1/smtpd.conf\"";
        let child = Command::new(unshare)
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(script)
            .arg("sh")
            .arg(&d)
            .arg(&bin)
            .arg(&libexec)
            .stdin(Stdio::null())
            .stdout(File::create(d.join("stdout.log")).unwrap())
            .stderr(File::create(d.join("smtpd.log")).unwrap())
            .spawn()
            .expect("spawn opensmtpd");
        let os = Self {
            dir,
            addr,
            bin,
            child,
        };
        wait_listening(addr, "opensmtpd", || os.log_tail(30));
        Some(os)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("smtpd.log")).unwrap_or_default()
    }
}

impl Mta for OpenSmtpd {
    fn describe(&self) -> String {
        let v = first_line(Command::new(&self.bin).arg("-h"));
        format!("{v} ({})", package_version(&self.bin))
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail/Maildir")
    }

    fn log_tail(&self, lines: usize) -> String {
        tail(&self.dir.path().join("smtpd.log"), lines)
    }
}

impl Drop for OpenSmtpd {
    fn drop(&mut self) {
        stop(&mut self.child, "TERM");
    }
}

/// A chasquid daemon (Debian's `chasquid`, a Go MTA) with its own configuration folder, data
/// folder and log, an MX for one domain on loopback with the given users, each delivered by
/// `cp` (its mail delivery agent, one process per message: the cheapest there is) into one
/// Maildir's `new/`; a message counts as stored once chasquid's mail log says it was sent
/// there ([`Mta::stored`]). It checks the sender's SPF at
/// MAIL with the system resolver, so it runs in a private mount namespace (`unshare -m`) whose
/// `/etc/resolv.conf` names only a test DNS server on loopback; and as `nobody`. Its one
/// listener that matters is SMTP (the submission ones are given free ports too, as it cannot
/// run without them outside systemd). STARTTLS with a self-signed certificate, as the real
/// one offers. Stopped when dropped.
pub struct Chasquid {
    /// Its configuration, data, log and Maildir.
    pub dir: tempfile::TempDir,
    /// Its SMTP listener.
    pub addr: SocketAddr,
    /// The chasquid binary.
    bin: PathBuf,
    /// The process (chasquid itself, after `unshare`, `sh` and `setpriv` exec'd it).
    child: Child,
}

impl Chasquid {
    /// Debian's binary: unpacked by `.ci/run`, or installed.
    pub fn binary() -> Option<PathBuf> {
        find(
            "chasquid (Debian's chasquid)",
            &[
                Path::new(MTA_ROOT).join("chasquid/usr/bin/chasquid"),
                PathBuf::from("/usr/bin/chasquid"),
            ],
        )
    }

    /// Starts chasquid as the MX for `domain` on 127.0.0.`octet`, asking only the DNS server
    /// at `dns` (port 53: resolv.conf names no port) for its SPF checks.
    pub fn start(octet: u8, domain: &str, dns: IpAddr, users: &[String]) -> Option<Self> {
        Self::start_logging(octet, domain, dns, users, 1)
    }

    /// [`Chasquid::start`] with the debug log at `verbosity` (`-v`): 1 logs every command and
    /// reply of every session (what [`Chasquid::log`] reads), 0 only what a deployed chasquid
    /// logs by default.
    pub fn start_logging(
        octet: u8,
        domain: &str,
        dns: IpAddr,
        users: &[String],
        verbosity: u8,
    ) -> Option<Self> {
        let bin = Self::binary()?;
        need_root_and_users("chasquid", &["nobody"])?;
        let unshare = find("unshare", &[PathBuf::from("/usr/bin/unshare")])?;
        let setpriv = find("setpriv", &[PathBuf::from("/usr/bin/setpriv")])?;
        let dir = server_dir();
        let d = dir.path().to_path_buf();
        let ip = loopback(octet);
        let addr = SocketAddr::new(ip, free_port(ip));
        Self::configure(&d, domain, addr, dns, users);
        let script = "set -e\n\
                      mount --bind \"$1/resolv.conf\" /etc/resolv.conf\n\
                      exec \"$2\" --reuid=nobody --regid=nogroup --clear-groups \"$3\" \
                      -config_dir=\"$1/conf\" -logfile=\"$1/log/chasquid.log\" -v=\"$4\"";
        let child = Command::new(unshare)
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(script)
            .arg("sh")
            .arg(&d)
            .arg(setpriv)
            .arg(&bin)
            .arg(verbosity.to_string())
            .stdin(Stdio::null())
            .stdout(File::create(d.join("stdout.log")).unwrap())
            .stderr(File::create(d.join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn chasquid");
        let cq = Self {
            dir,
            addr,
            bin,
            child,
        };
        wait_listening(addr, "chasquid", || cq.log_tail(30));
        Some(cq)
    }

    /// Writes the configuration under `d`: chasquid.conf, the domain and its users, the
    /// certificate, the resolv.conf, and the folders `nobody` writes to (data, log, mail).
    fn configure(d: &Path, domain: &str, addr: SocketAddr, dns: IpAddr, users: &[String]) {
        let host = format!("mx.{domain}");
        let certs = d.join("conf/certs").join(&host);
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::create_dir_all(d.join("conf/domains").join(domain)).unwrap();
        for sub in [
            "data",
            "log",
            "mail/Maildir/tmp",
            "mail/Maildir/new",
            "mail/Maildir/cur",
        ] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        for sub in ["data", "log", "mail"] {
            chown(&d.join(sub), "nobody:nogroup");
        }
        let id = mailmerge::sandbox::tls::self_signed(&[&host]).unwrap();
        std::fs::write(certs.join("fullchain.pem"), &id.cert_pem).unwrap();
        std::fs::write(certs.join("privkey.pem"), &id.key_pem).unwrap();
        let p = d.display();
        let users: String = users
            .iter()
            .map(|u| {
                format!("users: {{ key: \"{u}\" value: {{ plain: {{ password: \"-\" }} }} }}\n")
            })
            .collect();
        std::fs::write(d.join("conf/domains").join(domain).join("users"), users).unwrap();
        let ip = addr.ip();
        let (sub, sub_tls) = (free_port(ip), free_port(ip));
        let conf = format!(
            "hostname: \"{host}\"\n\
             smtp_address: \"{addr}\"\n\
             submission_address: \"{ip}:{sub}\"\n\
             submission_over_tls_address: \"{ip}:{sub_tls}\"\n\
             data_dir: \"{p}/data\"\n\
             mail_log_path: \"{p}/log/mail.log\"\n\
             mail_delivery_agent_bin: \"/bin/cp\"\n\
             mail_delivery_agent_args: \"/dev/stdin\"\n\
             mail_delivery_agent_args: \"{p}/mail/Maildir/new/%to%\"\n"
        );
        std::fs::write(d.join("conf/chasquid.conf"), conf).unwrap();
        std::fs::write(d.join("resolv.conf"), format!("nameserver {dns}\n")).unwrap();
    }

    /// CPU time chasquid has used so far: its own, and that of its delivery processes (one
    /// per message) once it has waited for them (`/proc/PID/stat`: utime, stime, cutime,
    /// cstime, in clock ticks of 1/100 s).
    pub fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()));
        let stat = stat.unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map_or(vec![], |(_, f)| f.split(' ').collect());
        // Fields 14 to 17 of stat(5); `fields` starts at field 3.
        let ticks: u64 = (14..=17)
            .filter_map(|i| fields.get(i - 3).and_then(|t| t.parse::<u64>().ok()))
            .sum();
        Duration::from_millis(ticks * 10)
    }

    /// Its debug log (every command, reply and error of every session).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/chasquid.log")).unwrap_or_default()
    }
}

impl Mta for Chasquid {
    fn describe(&self) -> String {
        let v = first_line(Command::new(&self.bin).arg("-version"));
        format!("{v} ({})", package_version(&self.bin))
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("mail/Maildir")
    }

    /// Its delivery agent writes into `new/` directly: a message is whole once the mail log
    /// says it was sent.
    fn stored(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("log/mail.log"));
        log.map_or(0, |l| l.lines().filter(|l| l.ends_with(" sent")).count())
    }

    fn log_tail(&self, lines: usize) -> String {
        let d = self.dir.path();
        let mut out = tail(&d.join("log/chasquid.log"), lines);
        let err = tail(&d.join("stderr.log"), lines);
        if !err.is_empty() {
            write!(out, "\n--- stderr\n{err}").unwrap();
        }
        out
    }
}

impl Drop for Chasquid {
    fn drop(&mut self) {
        stop(&mut self.child, "TERM");
    }
}
