//! The suppression list across campaigns: real DNS and SMTP servers on loopback,
//! two runs in a row over the same recipients, and two runs at once sharing one store.

use std::sync::Arc;

use crate::support::*;
use mailmerge::sandbox::dns::loopback;
use mailmerge::sandbox::receiver::{ReceiverConfig, Rule};
use mailmerge::suppress::Reason;
use mailmerge::{RunConfig, run};

/// Recipients failing in every way that matters: only `gone` and the NXDOMAIN one are the
/// recipient's fault.
fn script() -> mailmerge::sandbox::receiver::Script {
    Arc::new(|rcpt: &str, _seen: usize| {
        let local = rcpt.split('@').next().unwrap_or("").to_ascii_lowercase();
        match local.as_str() {
            l if l.starts_with("gone") => Rule::Rcpt(550, "5.1.1 no such user here".into()),
            "proto" => Rule::Rcpt(503, "5.5.1 bad sequence of commands".into()),
            "policy" => Rule::Rcpt(550, "5.7.1 relaying denied by policy".into()),
            "slow" => Rule::Rcpt(450, "4.2.1 try later".into()),
            "busy" => Rule::Rcpt(421, "4.7.0 too many connections, closing".into()),
            "spam" => Rule::DataEnd(554, "5.7.1 rejected as spam".into()),
            _ => Rule::Accept,
        }
    })
}

const CSV: &str = "email,name\nann@a.test,Ann\ngone@a.test,Gone\nGONE2@A.test,Gone2\nproto@a.test,P\n\
policy@a.test,Po\nslow@a.test,S\nbusy@a.test,B\nspam@a.test,Sp\nhana@nxdomain.test,H\n";

async fn servers() -> (mailmerge::sandbox::dns::DnsServer, Mxs) {
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(2));
    z.nxdomain("nxdomain.test");
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(
        2,
        ReceiverConfig {
            script: script(),
            ..ReceiverConfig::default()
        },
    )])
    .await;
    (dns, mxs)
}

/// The keys on the list, sorted.
async fn suppressed_keys(
    store: &std::sync::Arc<dyn mailmerge::suppress::SuppressionStore>,
) -> Vec<String> {
    let mut keys: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect();
    keys.sort();
    keys
}

fn config(
    job: &Job,
    dns: &mailmerge::sandbox::dns::DnsServer,
    port: u16,
    store: &std::path::Path,
) -> RunConfig {
    let mut cfg = job.config(dns, port);
    cfg.delivery.retry = mailmerge::delivery::RetryPolicy::parse("none").expect("retry");
    cfg.delivery.deadline = std::time::Duration::from_secs(5);
    cfg.suppress.store = Some(store.to_path_buf().into());
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_campaign_skips_the_first_ones_hard_bounces_and_nothing_else() {
    let (dns, mxs) = servers().await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("s.sqlite");

    let first = Job::new(CSV, TEMPLATE);
    let report = run(config(&first, &dns, mxs.port, &store_path))
        .await
        .expect("run 1");
    assert_eq!(
        report.newly_suppressed, 3,
        "gone, GONE2 and the NXDOMAIN address"
    );
    let store = open_list(&store_path).unwrap();
    let keys = suppressed_keys(&store).await;
    assert_eq!(keys, ["gone2@a.test", "gone@a.test", "hana@nxdomain.test"]);
    let e = store.list().await.unwrap().remove(0);
    assert_eq!(e.reason, Reason::HardBounce);
    assert!(e.cause.contains("5.1.1"), "{e:?}");
    let received_first = mxs
        .get(2)
        .commands()
        .iter()
        .filter(|c| c.starts_with("RCPT"))
        .count();

    // The second campaign: another template (another campaign), the same people.
    let second = Job::new(CSV, &TEMPLATE.replace("Hello", "Hello again"));
    let report = run(config(&second, &dns, mxs.port, &store_path))
        .await
        .expect("run 2");
    assert_eq!(report.newly_suppressed, 0);
    assert_eq!(report.plan.suppressed, 3);
    assert_eq!(
        report.summary.count(mailmerge::outcome::Status::Suppressed),
        3
    );
    let rcpts: Vec<String> = mxs
        .get(2)
        .commands()
        .into_iter()
        .filter(|c| c.starts_with("RCPT"))
        .collect();
    let second_rcpts = &rcpts[received_first..];
    assert!(
        !second_rcpts
            .iter()
            .any(|c| c.to_ascii_lowercase().contains("gone")),
        "suppressed addresses are never sent to: {second_rcpts:?}"
    );
    let rows = read_results(&second.results);
    for email in ["gone@a.test", "GONE2@A.test", "hana@nxdomain.test"] {
        let r = row(&rows, email);
        assert_eq!(
            (r["status"].as_str(), r["step"].as_str()),
            ("suppressed", "suppressed"),
            "{r:?}"
        );
        assert!(r["response"].contains("hard-bounce since 20"), "{r:?}");
        assert!(
            r["response"].contains("5.1.1") || r["response"].contains("5.1.2"),
            "{r:?}"
        );
    }
    // Protocol, policy, content and throttling failures are tried again.
    for email in [
        "proto@a.test",
        "policy@a.test",
        "slow@a.test",
        "busy@a.test",
        "spam@a.test",
    ] {
        assert_ne!(row(&rows, email)["status"], "suppressed", "{email}");
        assert!(
            second_rcpts.iter().any(|c| c.contains(email)),
            "{email} was tried again"
        );
    }
    assert_eq!(row(&rows, "ann@a.test")["status"], "delivered");

    // --ignore-suppressions (transactional mail) sends to everyone.
    let third = Job::new(CSV, TEMPLATE);
    let mut cfg = config(&third, &dns, mxs.port, &store_path);
    cfg.suppress.ignore = true;
    let report = run(cfg).await.expect("run 3");
    assert_eq!(report.plan.suppressed, 0);
    assert_eq!(
        row(&read_results(&third.results), "gone@a.test")["status"],
        "bounced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_suppressed_rows_in_the_plan() {
    let (dns, mxs) = servers().await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("s.sqlite");
    let store = open_list(&store_path).unwrap();
    store
        .add(&[mailmerge::suppress::Entry::new(
            "@a.test".into(),
            Reason::Manual,
            "whole domain",
            "",
        )])
        .await
        .unwrap();
    let job = Job::new(CSV, TEMPLATE);
    let mut cfg = config(&job, &dns, mxs.port, &store_path);
    cfg.mode = mailmerge::RunMode::Plan { eml_out: None };
    let report = run(cfg).await.expect("check");
    assert_eq!(report.plan.suppressed, 8, "{}", report.plan);
    assert_eq!(report.plan.to_send, 0);
    assert!(
        report
            .plan
            .to_string()
            .contains("suppressed (suppression list)")
    );
    assert_eq!(mxs.total_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_sharing_one_store_lose_no_entry() {
    let (dns, mxs) = servers().await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("shared.sqlite");
    let list = |tag: &str| {
        let mut csv = String::from("email,name\n");
        for i in 0..60 {
            csv.push_str(&format!("gone-{tag}{i}@a.test,G\nok-{tag}{i}@a.test,O\n"));
        }
        csv
    };
    let a = Job::new(&list("a"), TEMPLATE);
    let b = Job::new(&list("b"), TEMPLATE);
    let (ra, rb) = tokio::join!(
        run(config(&a, &dns, mxs.port, &store_path)),
        run(config(&b, &dns, mxs.port, &store_path))
    );
    assert_eq!(ra.expect("a").newly_suppressed, 60);
    assert_eq!(rb.expect("b").newly_suppressed, 60);
    let store = open_list(&store_path).unwrap();
    assert_eq!(store.list().await.unwrap().len(), 120);
    assert_eq!(store.campaigns().await.unwrap().len(), 2);
}

/// The results stage reads back and formats blocks of 1,024 rows on two threads and writes
/// them in list order: a list of three blocks comes back whole, in order, each row with its own
/// outcome, and every hard bounce of every block reaches the suppression list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_several_result_blocks_comes_back_in_order_with_every_bounce() {
    let (dns, mxs) = servers().await;
    let scratch = tempfile::tempdir().unwrap();
    let store_path = scratch.path().join("s.sqlite");
    const ROWS: usize = 2_600;
    let mut csv = String::from("email,name\n");
    let mut gone = Vec::new();
    for i in 0..ROWS {
        match i % 97 {
            13 => csv.push_str(&format!("not-an-address-{i},N{i}\n")),
            50 => {
                gone.push(format!("gone{i}@a.test"));
                csv.push_str(&format!("gone{i}@a.test,G{i}\n"));
            }
            _ => csv.push_str(&format!("u{i}@a.test,U{i}\n")),
        }
    }
    let job = Job::new(&csv, TEMPLATE);
    let mut cfg = config(&job, &dns, mxs.port, &store_path);
    cfg.delivery.deadline = std::time::Duration::from_secs(60);
    let report = run(cfg).await.expect("run");

    let rows = read_results(&job.results);
    assert_eq!(rows.len(), ROWS, "one result row per input row");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["row"], (i + 1).to_string(), "input order");
        assert_eq!(
            r["name"][1..],
            i.to_string(),
            "row {i} carries its own cells"
        );
        let want = match i % 97 {
            13 => "invalid",
            50 => "bounced",
            _ => "delivered",
        };
        assert_eq!(r["status"], want, "row {i}: {r:?}");
    }
    let invalid = (0..ROWS).filter(|i| i % 97 == 13).count();
    assert_eq!(
        report.summary.count(mailmerge::outcome::Status::Bounced),
        gone.len()
    );
    assert_eq!(
        report.summary.count(mailmerge::outcome::Status::Invalid),
        invalid
    );
    assert_eq!(
        report.summary.count(mailmerge::outcome::Status::Delivered),
        ROWS - gone.len() - invalid
    );
    assert_eq!(report.summary.domains["a.test"].0, ROWS - invalid);
    assert_eq!(report.newly_suppressed, gone.len());
    let store = open_list(&store_path).unwrap();
    let keys = suppressed_keys(&store).await;
    gone.sort();
    assert_eq!(keys, gone);
}

// `suppress import` and `export` treat their files as hostile (issue 21, case 7): a domain
// entry only when the file says so, dates checked, formulas defused on the way out, and a bad
// line skipped with its number instead of failing the import.

/// `mailmerge suppress ARGS… --suppressions STORE`.
fn suppress_cmd(store: &std::path::Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    binary()
        .arg("suppress")
        .args(args)
        .arg("--suppressions")
        .arg(store)
        .output()
        .expect("mailmerge suppress")
}

fn import(store: &std::path::Path, file: &std::path::Path, column: &str) -> std::process::Output {
    suppress_cmd(
        store,
        &[
            "import".as_ref(),
            file.as_os_str(),
            "--column".as_ref(),
            column.as_ref(),
        ],
    )
}

/// Runs `f` to its end (these tests are not async themselves).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn suppressed(store: &std::path::Path, email: &str) -> Option<mailmerge::suppress::Entry> {
    let a = mailmerge::address::Address::parse(email).unwrap();
    let list = open_list(store).unwrap();
    block_on(mailmerge::suppress::lookup(&*list, &a)).unwrap()
}

/// Every entry of the list at `store`.
fn entries(store: &std::path::Path) -> Vec<mailmerge::suppress::Entry> {
    block_on(open_list(store).unwrap().list()).unwrap()
}

#[test]
fn import_takes_a_domain_only_when_the_file_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.sqlite");
    // An unsubscribe export of another tool: one cell holds a bare `@d1.test`.
    let plain = dir.path().join("unsubscribes.csv");
    std::fs::write(&plain, "Email Address,Name\nann@d1.test,Ann\n@d1.test,?\n").unwrap();
    let out = import(&store, &plain, "Email Address");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 3: \"@d1.test\" is a whole domain") && err.contains("kind"),
        "{err}"
    );
    assert!(suppressed(&store, "ann@d1.test").is_some());
    assert_eq!(
        suppressed(&store, "bob@d1.test"),
        None,
        "the domain was not suppressed"
    );

    // The explicit form: a `kind` column saying `domain`.
    let explicit = dir.path().join("domains.csv");
    std::fs::write(
        &explicit,
        "address,kind\n@d2.test,domain\nd3.test,Domain\n@d4.test,address\ncat@d5.test,\nx@d6.test,planet\n",
    )
    .unwrap();
    let out = import(&store, &explicit, "address");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(suppressed(&store, "bob@d2.test").unwrap().key, "@d2.test");
    assert_eq!(suppressed(&store, "bob@d3.test").unwrap().key, "@d3.test");
    assert_eq!(suppressed(&store, "bob@d4.test"), None);
    assert!(err.contains("line 4:"), "{err}");
    assert!(suppressed(&store, "cat@d5.test").is_some());
    assert_eq!(suppressed(&store, "x@d6.test"), None);
    assert!(err.contains("line 6: kind \"planet\""), "{err}");
}

#[test]
fn import_keeps_valid_dates_only_and_never_stores_a_formula() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.sqlite");
    let file = dir.path().join("in.csv");
    std::fs::write(
        &file,
        "address,reason,created\n\
         a@x.test,unsubscribe,\"=HYPERLINK(\"\"http://evil.test\"\",\"\"x\"\")\"\n\
         b@x.test,unsubscribe,9999-99-99\n\
         c@x.test,unsubscribe,2025-03-04T05:06:07+02:00\n\
         d@x.test,complaint,2025-03-04\n\
         e@x.test,unsubscribe,2025-03-04T05:06:07.250Z\n\
         f@x.test,unsubscribe,9999-12-31T00:00:00Z\n\
         '=g@x.test,unsubscribe,\n",
    )
    .unwrap();
    let out = import(&store, &file, "address");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let created = |e: &str| suppressed(&store, e).unwrap().created;
    assert_eq!(
        created("c@x.test"),
        "2025-03-04T03:06:07Z",
        "converted to UTC"
    );
    assert_eq!(created("d@x.test"), "2025-03-04T00:00:00Z");
    assert_eq!(
        suppressed(&store, "d@x.test").unwrap().reason,
        Reason::Complaint
    );
    assert_eq!(created("e@x.test"), "2025-03-04T05:06:07Z");
    // Unusable dates: the entry is kept (an unsubscribe must not be lost over its date) and
    // dated at the import, which is said on stderr with the line.
    for (line, e, given) in [
        (2, "a@x.test", "=HYPERLINK"),
        (3, "b@x.test", "9999-99-99"),
        (7, "f@x.test", "9999-12-31T00:00:00Z"),
    ] {
        let c = created(e);
        assert!(!c.contains(given), "{e}: {c}");
        assert!(humantime::parse_rfc3339(&c).is_ok(), "{e}: {c}");
        assert!(err.contains(&format!("line {line}: created")), "{e}: {err}");
    }
    // A defused cell (as an export writes it) is read back as the address it defuses.
    assert_eq!(suppressed(&store, "=g@x.test").unwrap().key, "=g@x.test");
    for e in entries(&store) {
        assert!(!e.created.starts_with('='), "{e:?}");
    }
}

#[test]
fn export_defuses_formula_cells_and_import_reads_its_export_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.sqlite");
    let s = open_list(&store).unwrap();
    let given = [
        mailmerge::suppress::Entry::new(
            "=1+1@x.test".into(),
            Reason::HardBounce,
            "=HYPERLINK(\"http://evil.test\",\"click\")",
            "@camp",
        ),
        mailmerge::suppress::Entry::new("-minus@x.test".into(), Reason::Manual, "+1", ""),
        mailmerge::suppress::Entry::new("@whole.test".into(), Reason::Manual, "", ""),
        mailmerge::suppress::Entry::new("plain@x.test".into(), Reason::Complaint, "ok", ""),
    ];
    block_on(s.add(&given)).unwrap();
    let file = dir.path().join("export.csv");
    let out = suppress_cmd(&store, &["export".as_ref(), file.as_os_str()]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut rdr = csv::Reader::from_path(&file).unwrap();
    let header = rdr.headers().unwrap().clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>(),
        ["address", "reason", "cause", "campaign", "created", "kind"]
    );
    let cells: Vec<String> = rdr
        .records()
        .flat_map(|r| r.unwrap().iter().map(str::to_string).collect::<Vec<_>>())
        .collect();
    for c in &cells {
        assert!(
            !c.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "a formula cell reached the export: {c:?}"
        );
    }
    assert!(cells.contains(&"'=1+1@x.test".to_string()), "{cells:?}");
    assert!(cells.contains(&"'=HYPERLINK(\"http://evil.test\",\"click\")".to_string()));
    // `suppress list` prints the same, defused.
    let list = suppress_cmd(&store, &["list".as_ref()]);
    assert_eq!(std::fs::read(&file).unwrap(), list.stdout);

    // The export imported into a new list gives the same entries.
    let copy = dir.path().join("copy.sqlite");
    let out = import(&copy, &file, "address");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keys = |p: &std::path::Path| -> Vec<(String, Reason, String)> {
        entries(p)
            .into_iter()
            .map(|e| (e.key, e.reason, e.created))
            .collect()
    };
    assert_eq!(keys(&copy), keys(&store));
}

#[test]
fn a_line_that_is_not_utf8_is_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("s.sqlite");
    let file = dir.path().join("latin1.csv");
    let mut bytes = b"address,name\nann@x.test,Ann\n".to_vec();
    bytes.extend_from_slice(b"j\xf6rg@x.test,J\xf6rg\n");
    bytes.extend_from_slice(b"bob@x.test,Bj\xf6rn\n");
    bytes.extend_from_slice(b"cat@x.test,Cat\n");
    std::fs::write(&file, bytes).unwrap();
    let out = import(&store, &file, "address");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 3: not UTF-8"), "{err}");
    // Only the cells an import reads must be UTF-8: Björn's name does not lose his entry.
    for e in ["ann@x.test", "bob@x.test", "cat@x.test"] {
        assert!(suppressed(&store, e).is_some(), "{e}: {err}");
    }
    assert_eq!(entries(&store).len(), 3);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("3 added, 0 already suppressed, 1 skipped"),
        "{stdout}"
    );
}
