//! The real binary, as README tells a newcomer to run it.

use std::process::Command;

fn mailmerge() -> Command {
    crate::support::binary()
}

/// `mailmerge COMMAND` on the shipped example with `--sandbox --quiet`, its results and
/// sandbox folder in `dir`: the caller adds its own flags.
fn sandbox_example(command: &str, dir: &std::path::Path) -> Command {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut c = mailmerge();
    c.args([
        command,
        &format!("{root}/examples/recipients.csv"),
        &format!("{root}/templates/welcome.hbs"),
        "--sandbox",
        "--quiet",
    ])
    .arg("--results")
    .arg(dir.join(format!("{command}.results.csv")))
    .arg("--sandbox-dir")
    .arg(dir.join("mail"));
    c
}

#[test]
fn sandbox_run_of_the_shipped_example_delivers_and_reports_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.csv");
    let mail = dir.path().join("mail");
    let root = env!("CARGO_MANIFEST_DIR");
    let out = mailmerge()
        .args([
            "run",
            &format!("{root}/examples/recipients.csv"),
            &format!("{root}/templates/welcome.hbs"),
            "--sandbox",
            "--quiet",
        ])
        .arg("--results")
        .arg(&results)
        .arg("--sandbox-dir")
        .arg(&mail)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Some rows of the example are meant to bounce or be invalid: exit 1.
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("10 rows: delivered 5 bounced 3 deferred 0 invalid 2"),
        "{stdout}"
    );
    let rows = crate::support::read_results(&results);
    assert_eq!(rows.len(), 10);
    let delivered: Vec<_> = rows.iter().filter(|r| r["status"] == "delivered").collect();
    let stored = std::fs::read_dir(&mail).unwrap().count();
    assert_eq!(
        stored,
        delivered.len(),
        "every delivered message is stored by the sandbox"
    );
    let r = crate::support::row(&rows, "greylisted-erin@example.com");
    assert_eq!(
        (r["status"].as_str(), r["attempts"].as_str()),
        ("delivered", "2")
    );
    // The sandbox writes the report and says where; nothing in the summary reads as a fault
    // (the sandbox's DNS is unsigned, so DANE is not checked: expected, and said so).
    let html = dir.path().join("results.html");
    assert!(
        stdout.contains(&format!(
            "report: {} (open it in a browser)",
            html.display()
        )),
        "{stdout}"
    );
    assert!(
        std::fs::read_to_string(&html)
            .unwrap()
            .contains("data-total=\"rows\">10<")
    );
    assert!(
        stdout.contains("DANE not checked: the sandbox's DNS server does not sign its zones"),
        "{stdout}"
    );
    for alarming in ["fail", "error", "cannot"] {
        assert!(
            !stdout.to_lowercase().contains(alarming),
            "{alarming}: {stdout}"
        );
    }
}

#[test]
fn events_on_standard_output_are_json_lines_alone_and_the_summary_goes_to_standard_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = sandbox_example("run", dir.path())
        .args(["--events", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("10 rows: delivered 5 bounced 3"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let of = |status: &str, last: bool| {
        lines
            .iter()
            .filter(|l| l["type"] == "attempt" && l["status"] == status && l["final"] == last)
            .count()
    };
    // 5 delivered, 1 refused at RCPT, 1 whose message could not be rendered (the engine
    // settled it without a try); the greylisted row's first try was deferred and retried.
    assert_eq!(
        [
            of("delivered", true),
            of("bounced", true),
            of("invalid", true)
        ],
        [5, 1, 1]
    );
    assert_eq!(of("deferred", false), 1);
    assert_eq!(lines.iter().filter(|l| l["type"] == "attempt").count(), 8);
    let summary = lines.last().unwrap();
    assert_eq!(
        (&summary["type"], &summary["rows"], &summary["delivered"]),
        (&"summary".into(), &10.into(), &5.into())
    );
}

#[test]
fn template_errors_exit_2_naming_the_variable_and_line() {
    let job = crate::support::Job::new(
        "email,name\na@example.com,A\n",
        "From: s@example.com\nTo: {{email}}\n\nHi {{nmae}}\n",
    );
    let out = mailmerge()
        .arg("run")
        .arg(&job.csv)
        .arg(&job.template)
        .args(["--dns", "127.0.0.1:9", "--quiet"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("{{nmae}}") && err.contains("message.hbs:4"),
        "{err}"
    );
}

#[test]
fn help_lists_every_contract_option() {
    let out = mailmerge().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--results",
        "--dns",
        "--smtp-port",
        "--helo",
        "--from",
        "--connections-per-site",
        "--max-connections",
        "--email-column",
        "--dry-run",
        "--sandbox",
        "--quiet",
        "--retry",
        "--deadline",
        "--fresh",
        "--limit",
        "--out",
    ] {
        assert!(help.contains(opt), "missing {opt}");
    }
    let out = mailmerge().args(["check", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in ["--dns", "--email-column", "--out", "--allow-duplicates"] {
        assert!(help.contains(opt), "check: missing {opt}");
    }
}

#[test]
fn without_a_terminal_progress_is_plain_lines_on_stderr_and_quiet_silences_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let run = |quiet: bool, name: &str| {
        let mut c = mailmerge();
        c.args([
            "run",
            &format!("{root}/examples/recipients.csv"),
            &format!("{root}/templates/welcome.hbs"),
            "--sandbox",
        ])
        .arg("--results")
        .arg(dir.path().join(format!("{name}.csv")))
        .arg("--sandbox-dir")
        .arg(dir.path().join(name));
        if quiet {
            c.arg("--quiet");
        }
        c.output().unwrap()
    };
    let out = run(false, "loud");
    let err = String::from_utf8_lossy(&out.stderr);
    // The progress line counts rows, as the summary does: all 10 (7 go to an MX; 1 input
    // row is invalid, 2 domains fail in DNS, 1 row is found invalid when rendered).
    assert!(
        err.contains("progress: 10/10 rows done")
            && err.contains("delivered 5 bounced 3 deferred 0 invalid 2"),
        "{err}"
    );
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("10 rows: delivered 5 bounced 3 deferred 0 invalid 2"),
        "the summary counts the same rows: {summary}"
    );
    let out = run(true, "quiet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("progress:"), "{err}");
}

#[test]
fn checked_in_man_pages_and_completions_are_current() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let dir = tempfile::tempdir().unwrap();
    let out = mailmerge()
        .args(["generate", "man"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut pages: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    pages.sort();
    assert!(pages.len() >= 4, "{pages:?}");
    let stale = "stale: regenerate with `mailmerge generate man docs/man` and \
                 `mailmerge generate completions SHELL > docs/completions/mailmerge.SHELL`";
    for page in pages {
        let fresh = std::fs::read(dir.path().join(&page)).unwrap();
        let kept = std::fs::read(docs.join("man").join(&page)).unwrap_or_default();
        assert!(fresh == kept, "docs/man/{page:?} {stale}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = mailmerge()
            .args(["generate", "completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let kept = std::fs::read(docs.join("completions").join(format!("mailmerge.{shell}")))
            .unwrap_or_default();
        assert!(
            out.stdout == kept,
            "docs/completions/mailmerge.{shell} {stale}"
        );
    }
}

#[test]
fn timings_name_every_stage_in_order_and_the_first_session_only_when_sending() {
    let dir = tempfile::tempdir().unwrap();
    let timings = |command: &str| {
        let out = sandbox_example(command, dir.path())
            .arg("--timings")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let line = stderr
            .lines()
            .find(|l| l.starts_with("timings: "))
            .map(str::to_string);
        line.unwrap_or_else(|| panic!("no timings line: {stderr}"))
    };
    let sent = timings("run");
    let stages = [
        "prepare",
        "open stores",
        "triage",
        "route (DNS)",
        "recall",
        "send",
        "results",
    ];
    let names: Vec<&str> = sent["timings: ".len()..]
        .split("; ")
        .next()
        .unwrap()
        .split(", ")
        .map(|s| s.rsplitn(3, ' ').nth(2).unwrap())
        .collect();
    assert_eq!(names, stages, "{sent}");
    assert!(sent.contains("; first SMTP session "), "{sent}");
    let planned = timings("check");
    assert!(planned.contains(", plan "), "{planned}");
    assert!(!planned.contains("SMTP session"), "{planned}");
}

#[test]
fn a_sandbox_run_keeps_its_own_stores_when_the_environment_names_the_fleets() {
    let dir = tempfile::tempdir().unwrap();
    let (fleet_list, fleet_state) = (
        dir.path().join("fleet.sqlite"),
        dir.path().join("fleet-state.sqlite"),
    );
    let out = sandbox_example("run", dir.path())
        .env("MAILMERGE_SUPPRESSIONS", &fleet_list)
        .env("MAILMERGE_STATE", &fleet_state)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The example's hard bounces went to the sandbox's list, not the fleet's.
    assert!(!fleet_list.exists() && !fleet_state.exists());
    assert!(dir.path().join("mail.suppressions.sqlite").exists());
    assert!(dir.path().join("mail.senders.sqlite").exists());
}
