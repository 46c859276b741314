//! Headless Chromium (Debian's `chromium`, installed by `.ci/run`) as a test fixture: loads a
//! local page and reports what a person's browser would have done with it: the DOM after its
//! script ran, every console message, and every request the page made for something that is
//! not a local file.
//!
//! Nothing leaves the machine: every host name resolves to nothing and every non-loopback
//! request goes to a proxy address on loopback where nothing listens. Requests are still seen
//! where Chromium decides to make them, in its net log: a page's own requests are the ones
//! its (file) origin initiated; Chromium's background requests (updates, time) have no page
//! behind them and are not counted.
//!
//! Without `chromium` a test prints SKIPPED and passes, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::mta::{free_port, skip};

/// What loading a page did.
#[derive(Debug)]
pub struct Loaded {
    /// The DOM once the page had loaded and its scripts had run (`--dump-dom`).
    pub dom: String,
    /// Every console message (errors, warnings, logs; Content-Security-Policy violations).
    pub console: Vec<String>,
    /// URLs the page itself requested that are not `file:` or `data:`.
    pub outside: Vec<String>,
}

/// The browser, or [`skip`].
pub fn chromium() -> Option<PathBuf> {
    let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser"];
    match candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        Some(p) => Some(p),
        None => skip("chromium not found (Debian's `chromium` package; .ci/run installs it)"),
    }
}

/// Loads `page` (a local file) in `browser`.
pub fn load(browser: &Path, page: &Path) -> Loaded {
    let scratch = tempfile::tempdir().expect("tempdir");
    let net_log = scratch.path().join("net.json");
    let dead_proxy = free_port("127.0.0.1".parse().expect("ip"));
    let out = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-default-apps",
            "--disable-extensions",
            "--disable-sync",
            "--disable-quic",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            &format!("--proxy-server=http://127.0.0.1:{dead_proxy}"),
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.path().join("profile").display()
        ))
        .arg(format!("--log-net-log={}", net_log.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("run chromium");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium failed: {stderr}");
    Loaded {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console: stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(str::to_string)
            .collect(),
        outside: page_requests(&net_log),
    }
}

/// The URLs of the requests the page's own (file) origin started, from Chromium's net log.
fn page_requests(net_log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(net_log).expect("net log");
    let log: serde_json::Value = serde_json::from_str(&text).expect("net log is JSON");
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let events = log["events"].as_array().cloned().unwrap_or_default();
    events
        .iter()
        .filter(|e| e["type"] == start)
        .filter_map(|e| {
            let p = &e["params"];
            let url = p["url"].as_str()?;
            let initiator = p["initiator"].as_str().unwrap_or_default();
            let by_page = initiator == "null" || initiator.starts_with("file:");
            let local = url.starts_with("file:") || url.starts_with("data:");
            (by_page && !local).then(|| url.to_string())
        })
        .collect()
}
