//! A throwaway Dovecot IMAP server for the `bounces imaps://…` tests: its own configuration,
//! state, log and Maildirs under a temp dir, IMAP over TLS (a certificate for `localhost`
//! from a test CA) on a free port of 127.0.0.1, one user with a password from a
//! `passwd-file`. Started in the foreground (`dovecot -F -c CONF`) and stopped when dropped.
//!
//! `.ci/run` installs Debian's `dovecot-imapd` without starting its system service. Without
//! it the tests print SKIPPED locally and fail under `CI=true` ([`super::mta::skip`]). As
//! root, Dovecot's own unprivileged users (`dovecot`, `dovenull`, from the package) run its
//! processes and the mail belongs to `nobody`; as another user everything runs as that user.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use mailmerge::sandbox::tls::TestCa;

use super::mta::{
    chown, find, free_port, is_root, need_root_and_users, server_dir, tail, wait_listening,
};

/// The user the tests log in as, and its password.
pub const USER: &str = "bounce";
pub const PASSWORD: &str = "imap test password";

pub struct Dovecot {
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    /// The test CA's root (what `--tls-ca` needs), as a file.
    pub ca_pem: PathBuf,
    child: Child,
}

impl Dovecot {
    pub fn start() -> Option<Self> {
        let bin = find(
            "dovecot (Debian dovecot-imapd)",
            &[PathBuf::from("/usr/sbin/dovecot")],
        )?;
        find(
            "Dovecot's IMAP server",
            &[PathBuf::from("/usr/lib/dovecot/imap")],
        )?;
        let (internal, login, uid, gid) = if is_root() {
            need_root_and_users("Dovecot", &["dovecot", "dovenull", "nobody"])?;
            let (u, g) = (id(&["-u", "nobody"]), id(&["-g", "nobody"]));
            ("dovecot".to_string(), "dovenull".to_string(), u, g)
        } else {
            let me = id(&["-un"]);
            (me.clone(), me, id(&["-u"]), id(&["-g"]))
        };
        let dir = server_dir();
        let d = dir.path();
        for sub in ["run", "state", "mail"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let ca = TestCa::new().unwrap();
        let id = ca.issue(&["localhost"]).unwrap();
        std::fs::write(d.join("cert.pem"), &id.cert_pem).unwrap();
        std::fs::write(d.join("key.pem"), &id.key_pem).unwrap();
        let ca_pem = d.join("ca.pem");
        std::fs::write(&ca_pem, ca.root_pem()).unwrap();
        std::fs::write(
            d.join("passwd"),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::::\n"),
        )
        .unwrap();
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let addr = SocketAddr::new(ip, free_port(ip));
        std::fs::write(
            d.join("dovecot.conf"),
            config(d, addr.port(), &internal, &login, uid, gid),
        )
        .unwrap();
        chown(&d.join("mail"), &mail_owner());
        let log = std::fs::File::create(d.join("stderr.log")).unwrap();
        let child = Command::new(bin)
            .arg("-F")
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dovecot");
        let server = Self {
            addr,
            ca_pem,
            child,
            dir,
        };
        wait_listening(addr, "dovecot", || server.log());
        Some(server)
    }

    /// The user's Maildir folder `name` (`INBOX` is the Maildir's root).
    pub fn folder(&self, name: &str) -> PathBuf {
        let root = self.dir.path().join("mail").join(USER);
        if name == "INBOX" {
            root
        } else {
            root.join(format!(".{name}"))
        }
    }

    /// Delivers `message` into INBOX as a new message (a file in the Maildir's `new/`, owned
    /// by the mail user), as an MTA's local delivery would.
    pub fn deliver(&self, name: &str, message: &str) {
        let root = self.folder("INBOX");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        std::fs::write(
            root.join("new").join(format!("{name}.mailmerge-test")),
            message,
        )
        .unwrap();
        chown(&self.dir.path().join("mail"), &mail_owner());
    }

    /// Messages in folder `name`.
    pub fn count(&self, name: &str) -> usize {
        super::mta::maildir_count(&self.folder(name))
    }

    pub fn log(&self) -> String {
        format!(
            "{}\n{}",
            tail(&self.dir.path().join("dovecot.log"), 40),
            tail(&self.dir.path().join("stderr.log"), 20)
        )
    }
}

/// Who owns the mail: `nobody` as root, else the current user.
fn mail_owner() -> String {
    if is_root() {
        "nobody:nogroup".into()
    } else {
        id(&["-un"])
    }
}

/// `id ARGS…`'s answer.
fn id(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn config(d: &Path, port: u16, internal: &str, login: &str, uid: String, gid: String) -> String {
    let p = d.display();
    format!(
        "base_dir = {p}/run
state_dir = {p}/state
log_path = {p}/dovecot.log
info_log_path = {p}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{p}/cert.pem
ssl_key = <{p}/key.pem
ssl_min_protocol = TLSv1.2
auth_mechanisms = plain
default_internal_user = {internal}
default_internal_group = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{p}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {p}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={p}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"
    )
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM: the master stops its children (login, auth, imap) before it exits.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
