//! SpamAssassin (Debian's `spamassassin` package, installed by `.ci/run`) as a test fixture:
//! scores one message the way a receiving filter's local rules would, and says which rules
//! fired with how many points each.
//!
//! Only what the message itself shows is judged, and nothing leaves the machine: every run is
//! `spamassassin -L` (local tests only) with DNS switched off in the configuration, inside a
//! network namespace of its own (`unshare --net`: no interface but a loopback that is down),
//! so not even a host-name lookup can reach a resolver. The configuration is private to the
//! run: the plugins Debian's package loads (`/etc/spamassassin/*.pre`), the rules its release
//! ships (`/usr/share/spamassassin`, never what `sa-update` may have fetched since, so the
//! result does not change under the test), a `local.cf` of our own, no Bayes, no learning, and
//! a scratch `HOME` (so no user preferences but an empty set).
//!
//! Without `spamassassin`, or where a network namespace cannot be made, a test prints SKIPPED
//! and passes, except under `CI=true`, where it fails.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::mta::{find, skip};

/// The rules of the installed release, as the package ships them.
const RULES: &str = "/usr/share/spamassassin";
/// Where the package's plugin-loading `.pre` files are.
const SITE: &str = "/etc/spamassassin";

/// Our `local.cf`: no network test, no learning, no state kept; the verdict in one header.
const LOCAL_CF: &str = "\
# Written by tests/support/spamassassin.rs for one run.
dns_available no
skip_rbl_checks 1
use_razor2 0
use_pyzor 0
use_bayes 0
bayes_auto_learn 0
report_safe 0
clear_headers
add_header all Result score=_SCORE_ required=_REQD_ tests=_TESTSSCORES(,)_
";

/// The installed SpamAssassin and the way to run it without a network.
pub struct SpamAssassin {
    /// The `spamassassin` program.
    bin: PathBuf,
    /// `unshare`, which gives each run a network namespace of its own.
    unshare: PathBuf,
    /// `spamassassin --version`'s first line, e.g. `SpamAssassin version 4.0.1`.
    pub version: String,
}

/// What SpamAssassin made of one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Release and rules date, from `X-Spam-Checker-Version` (`SpamAssassin 4.0.1 (2024-03-25)`).
    pub checker: String,
    /// The threshold the configuration sets (`required_score`; 5.0 by default).
    pub required: f64,
    /// Every rule that fired, with its points, in SpamAssassin's order.
    pub rules: Vec<(String, f64)>,
}

impl Verdict {
    /// The message's score: the sum of its rules' points, unrounded.
    pub fn score(&self) -> f64 {
        self.rules.iter().map(|(_, points)| points).sum()
    }

    /// The names of the rules that fired.
    pub fn names(&self) -> Vec<&str> {
        self.rules.iter().map(|(name, _)| name.as_str()).collect()
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: score {:.3} of {:.1}:",
            self.checker,
            self.score(),
            self.required
        )?;
        for (name, points) in &self.rules {
            write!(f, " {name}={points}")?;
        }
        Ok(())
    }
}

impl SpamAssassin {
    /// The installed SpamAssassin, or [`skip`].
    pub fn find() -> Option<Self> {
        let bin = find("spamassassin", &[PathBuf::from("/usr/bin/spamassassin")])?;
        let unshare = find("unshare", &[PathBuf::from("/usr/bin/unshare")])?;
        if !Path::new(RULES).join("50_scores.cf").exists() {
            return skip(&format!("SpamAssassin's rules are not in {RULES}"));
        }
        let isolated = Command::new(&unshare)
            .args(["--net", "--map-root-user", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !isolated {
            return skip("`unshare --net --map-root-user` is not permitted here");
        }
        let out = Command::new(&bin).arg("--version").output().unwrap();
        let version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        Some(Self {
            bin,
            unshare,
            version,
        })
    }

    /// Scores `message` (the bytes as a receiver got them).
    pub fn check(&self, message: &[u8]) -> Verdict {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        std::fs::create_dir(&site).unwrap();
        for entry in std::fs::read_dir(SITE).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "pre") {
                std::fs::copy(&path, site.join(path.file_name().unwrap())).unwrap();
            }
        }
        std::fs::write(site.join("local.cf"), LOCAL_CF).unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let mut child = Command::new(&self.unshare)
            .args(["--net", "--map-root-user", "--"])
            .arg(&self.bin)
            .args(["--local", "--nocreate-prefs", "--configpath", RULES])
            .arg("--siteconfigpath")
            .arg(&site)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &home)
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(message).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "spamassassin: {}\n{stderr}",
            out.status
        );
        assert!(stderr.is_empty(), "spamassassin complained:\n{stderr}");
        let scanned = String::from_utf8_lossy(&out.stdout);
        parse_result(&scanned).unwrap_or_else(|| panic!("no X-Spam-Result in\n{scanned}"))
    }
}

/// The verdict in the `X-Spam-Result` header our `local.cf` asks for:
/// `score=0.6 required=5.0 tests=HTML_MESSAGE=0.001,NO_RELAYS=-0.001` (`tests=none` when no
/// rule fired).
fn parse_result(scanned: &str) -> Option<Verdict> {
    let head = scanned.replace("\r\n", "\n");
    let head = head.split("\n\n").next()?;
    let unfolded = head.replace("\n ", " ").replace("\n\t", " ");
    let header = |name: &str| unfolded.lines().find_map(|l| l.strip_prefix(name));
    let checker = header("X-Spam-Checker-Version:")?.trim();
    let checker = checker.split(" on ").next()?.to_string();
    let value = header("X-Spam-Result:")?;
    let value: String = value.split_whitespace().collect::<Vec<_>>().join(" ");
    let field = |name: &str| {
        value
            .split(' ')
            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
    };
    let required = field("required")?.parse().ok()?;
    // Folding may have put a space after a comma of the list.
    let tests = value.split_once("tests=")?.1.replace(' ', "");
    let mut rules = Vec::new();
    for t in tests.split(',').filter(|t| !t.is_empty() && *t != "none") {
        let (name, points) = t.split_once('=')?;
        rules.push((name.to_string(), points.parse().ok()?));
    }
    Some(Verdict {
        checker,
        required,
        rules,
    })
}
