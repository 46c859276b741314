//! PostgreSQL as the store a fleet shares (`--suppressions`/`--state postgres://…`), against a
//! real server of the test's own (`support::postgres`): shards and concurrent processes see
//! one suppression list and one sender memory, daily caps hold across processes, a missing or
//! vanishing database never lets a message out unscreened nor loses a result row, and a list
//! moves from SQLite to PostgreSQL through `suppress export`/`import`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::process::{Command, Output};
use std::sync::Arc;

use crate::support::postgres::Postgres;
use crate::support::*;
use mailmerge::sandbox::dns::{DnsServer, loopback};
use mailmerge::sandbox::receiver::{ReceiverConfig, Rule};
use mailmerge::sender::postgres::PgSenders;
use mailmerge::sender::{CapRule, Identity, SenderStore, StateError};
use mailmerge::store::{Location, PgUrl};
use mailmerge::suppress::postgres::PgSuppressions;
use mailmerge::suppress::{Entry, Reason, SuppressionStore};

const KEY: &str = "test key, 16+ bytes long";

/// `run` against the test servers with `--suppressions` and `--state` at `url`.
fn mailmerge(job: &Job, dns: &DnsServer, port: u16, url: &str) -> Command {
    mailmerge_with(job, dns, port, url, url)
}

/// `run` against the test servers with `--suppressions LIST` and `--state STATE`.
fn mailmerge_with(job: &Job, dns: &DnsServer, port: u16, list: &str, state: &str) -> Command {
    let mut c = job.binary();
    c.arg("run")
        .arg(&job.csv)
        .arg(&job.template)
        .args(["--dns", &dns.addr().to_string(), "--dns-timeout", "5s"])
        .args(["--smtp-port", &port.to_string(), "--helo", "sender.test"])
        .args(["--retry", "100ms", "--deadline", "20s", "--quiet"])
        .args(["--suppressions", list, "--state", state])
        .args(["--now", "2026-12-04T12:00:00Z"]);
    c
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run mailmerge"))
        .await
        .expect("join")
}

fn pg_url(pg: &Postgres) -> PgUrl {
    PgUrl::parse(&pg.url()).unwrap()
}

/// Six sites (`mx{k}.sites.test` on 127.0.0.(60+k)); per site four good addresses and one that
/// the receiver refuses with 550 5.1.1.
fn six_sites() -> (String, mailmerge::sandbox::dns::Zone, Vec<String>) {
    let mut z = zone();
    let mut csv = String::from("email,name\n");
    let mut refused = Vec::new();
    for k in 0..6u8 {
        let mx = format!("mx{k}.sites.test");
        z.mx(&format!("d{k}.test"), 10, &mx)
            .addr(&mx, loopback(60 + k));
        for i in 0..4 {
            writeln!(csv, "user{i}@d{k}.test,User {i}").unwrap();
        }
        let bad = format!("reject{k}@d{k}.test");
        writeln!(csv, "{bad},Rex").unwrap();
        refused.push(bad);
    }
    (csv, z, refused)
}

/// Every row of the shard results files of `job` for `n` shards.
fn shard_rows(job: &Job, n: usize) -> Vec<HashMap<String, String>> {
    (0..n)
        .flat_map(|i| read_results(&job.path(&format!("list.results.shard-{i}-of-{n}.csv"))))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_sharing_one_database_suppress_what_any_of_them_recorded() {
    let Some(pg) = Postgres::start() else { return };
    let (csv, z, refused) = six_sites();
    let dns = dns(z).await;
    let mxs = Mxs::start(
        (0..6)
            .map(|k| (60 + k, ReceiverConfig::default()))
            .collect(),
    )
    .await;
    let first = Job::new(&csv, TEMPLATE);
    let shards: Vec<_> = (0..3)
        .map(|i| {
            let mut c = mailmerge(&first, &dns, mxs.port, &pg.url());
            c.args(["--shard", &format!("{i}/3")]);
            tokio::spawn(output(c))
        })
        .collect();
    for s in shards {
        let out = s.await.unwrap();
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows = shard_rows(&first, 3);
    assert_eq!(rows.len(), csv.lines().count() - 1, "each row once");
    for r in &rows {
        let want = if refused.contains(&r["email"]) {
            "bounced"
        } else {
            "delivered"
        };
        assert_eq!(r["status"], want, "{r:?}");
    }
    let received = mxs.total_received();

    // The next campaign, cut into two shards (each site may now fall to another process):
    // every address any of the three recorded is suppressed, none is tried again.
    let second = Job::new(&csv, TEMPLATE);
    let shards: Vec<_> = (0..2)
        .map(|i| {
            let mut c = mailmerge(&second, &dns, mxs.port, &pg.url());
            c.args(["--shard", &format!("{i}/2")]);
            tokio::spawn(output(c))
        })
        .collect();
    for s in shards {
        let out = s.await.unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows = shard_rows(&second, 2);
    assert_eq!(rows.len(), csv.lines().count() - 1);
    for r in &rows {
        if refused.contains(&r["email"]) {
            assert_eq!(r["status"], "suppressed", "{r:?}");
            assert!(r["response"].contains("hard-bounce"), "{r:?}");
        } else {
            assert_eq!(r["status"], "delivered", "{r:?}");
        }
    }
    assert_eq!(mxs.total_received(), received + 24);
    let keys = pg.psql("SELECT string_agg(key, ',' ORDER BY key) FROM mailmerge_suppressions");
    let mut want = refused.clone();
    want.sort();
    assert_eq!(keys, want.join(","));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_recorded_by_the_bounces_command_is_honoured_by_the_next_run() {
    let Some(pg) = Postgres::start() else { return };
    let mut z = zone();
    z.mx("a.test", 10, "mx.a.test")
        .addr("mx.a.test", loopback(70));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(70, ReceiverConfig::default())]).await;
    let csv = "email,name\nann@a.test,Ann\nbob@a.test,Bob\n";
    let list = Location::parse(&pg.url()).unwrap();
    let job = Job::new(csv, TEMPLATE);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.suppress.store = Some(list.clone());
    cfg.state = Some(list.clone());
    let verp = mailmerge::verp::Verp::new("bounces+{token}@sender.test", KEY.as_bytes());
    cfg.message.verp = Some(verp.unwrap());
    let report = mailmerge::run(cfg).await.expect("run");
    assert!(report.summary.all_delivered(), "{}", report.summary);
    let ann = mxs
        .get(70)
        .received()
        .into_iter()
        .find(|m| m.rcpt_to == "ann@a.test")
        .unwrap();
    let rows = read_results(&job.results);
    let fixture = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bounces/postfix-dsn.eml"),
    )
    .unwrap()
    .replace("{{RCPT}}", "ann@a.test")
    .replace("{{RETURN_PATH}}", &ann.mail_from)
    .replace("{{MESSAGE_ID}}", &row(&rows, "ann@a.test")["message_id"]);
    let maildir = crate::bounces::maildir(job.dir.path());
    std::fs::write(maildir.join("new").join("1.dsn"), fixture).unwrap();
    let out = binary()
        .args(["bounces", "--verp-key", KEY])
        .arg(&maildir)
        .env("MAILMERGE_SUPPRESSIONS", pg.url())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The next campaign (another process, the same database) does not mail ann again.
    let next = Job::new(csv, TEMPLATE);
    let mut cfg = next.config(&dns, mxs.port);
    cfg.suppress.store = Some(list.clone());
    cfg.state = Some(list);
    mailmerge::run(cfg).await.expect("next run");
    let rows = read_results(&next.results);
    assert_eq!(row(&rows, "ann@a.test")["status"], "suppressed");
    assert_eq!(row(&rows, "bob@a.test")["status"], "delivered");
    assert_eq!(mxs.get(70).received().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_processes_never_send_more_than_the_daily_cap_together() {
    let Some(pg) = Postgres::start() else { return };
    let mut z = zone();
    z.mx("c.test", 10, "mx.c.test")
        .addr("mx.c.test", loopback(71));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(71, ReceiverConfig::default())]).await;
    let jobs: Vec<Job> = ["a", "b"]
        .iter()
        .map(|p| {
            let mut csv = String::from("email,name\n");
            for i in 0..12 {
                writeln!(csv, "{p}{i}@c.test,N").unwrap();
            }
            Job::new(&csv, TEMPLATE)
        })
        .collect();
    let runs: Vec<_> = jobs
        .iter()
        .map(|job| {
            let mut c = mailmerge(job, &dns, mxs.port, &pg.url());
            c.args(["--daily-cap", "15"]);
            tokio::spawn(output(c))
        })
        .collect();
    for r in runs {
        let out = r.await.unwrap();
        assert!(
            out.status.code().is_some_and(|c| c <= 1),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows: Vec<_> = jobs.iter().flat_map(|j| read_results(&j.results)).collect();
    let delivered = rows.iter().filter(|r| r["status"] == "delivered").count();
    assert_eq!(delivered, 15, "the cap, all of it, no more");
    assert_eq!(mxs.total_received(), 15);
    for r in rows.iter().filter(|r| r["status"] != "delivered") {
        assert_eq!(
            (r["status"].as_str(), r["step"].as_str()),
            ("deferred", "cap"),
            "{r:?}"
        );
    }
    assert_eq!(pg.psql("SELECT sum(sent) FROM mailmerge_sender_days"), "15");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_in_many_processes_never_share_a_slot() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg_url(&pg);
    // Six stores, each with its own pool, as six processes would have.
    let mut stores = Vec::new();
    for _ in 0..6 {
        stores.push(Arc::new(PgSenders::open(&url).await.unwrap()));
    }
    let rule = CapRule {
        daily: Some(25),
        ..CapRule::default()
    };
    let id = Identity::new("yahoo", None);
    let day = PINNED_NOW / 86_400;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (store, rule, id) = (stores[i % 6].clone(), rule.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            store.reserve(day, &rule, &[id], 1).await.unwrap()[0]
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += t.await.unwrap();
    }
    assert_eq!(granted, 25);
    let m = stores[0].recall(&[id], day, PINNED_NOW).await.unwrap();
    assert_eq!((m[0].today, m[0].first_day), (25, Some(day)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_stops_the_run_with_exit_2_before_anything_is_sent() {
    let mut z = zone();
    z.mx("u.test", 10, "mx.u.test")
        .addr("mx.u.test", loopback(72));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(72, ReceiverConfig::default())]).await;
    let job = Job::new("email,name\nann@u.test,Ann\n", TEMPLATE);
    // Nothing listens on this port.
    let port = mta::free_port("127.0.0.1".parse().unwrap());
    let url = format!("postgres://mailmerge@127.0.0.1:{port}/mail?sslmode=disable");
    let out = output(mailmerge(&job, &dns, mxs.port, &url)).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "suppression list postgres://mailmerge@127.0.0.1:{port}/mail"
        )),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    // Only the sender memory unreachable: stopped the same way.
    let list = job.path("list.sqlite");
    let c = mailmerge_with(&job, &dns, mxs.port, list.to_str().unwrap(), &url);
    let out = output(c).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sender state postgres://"), "{stderr}");
    assert_eq!(mxs.total_connections(), 0, "not one connection");
    assert!(!job.results.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_stopping_mid_run_loses_no_result_row() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let mut z = zone();
    z.mx("m.test", 10, "mx.m.test")
        .addr("mx.m.test", loopback(73));
    let dns = dns(z).await;
    // Each message is stored, then its final 250 waits: the run is mid-send while it does.
    let slow = ReceiverConfig {
        script: Arc::new(|rcpt: &str, _| {
            if rcpt.starts_with("reject") {
                Rule::Rcpt(550, "5.1.1 no such user here".into())
            } else {
                Rule::SlowDataEnd(std::time::Duration::from_millis(300))
            }
        }),
        ..ReceiverConfig::default()
    };
    let mxs = Mxs::start(vec![(73, slow)]).await;
    let mut csv = String::from("email,name\nreject@m.test,Rex\n");
    for i in 0..8 {
        writeln!(csv, "user{i}@m.test,U").unwrap();
    }
    let job = Job::new(&csv, TEMPLATE);
    let list = Location::parse(&pg.url()).unwrap();
    let mut cfg = job.config(&dns, mxs.port);
    cfg.suppress.store = Some(list.clone());
    cfg.state = Some(list);
    cfg.delivery.daily_cap = Some(100);
    let run = tokio::spawn(mailmerge::run(cfg));
    while mxs.get(73).received().is_empty() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::task::block_in_place(|| pg.stop());
    let err = run
        .await
        .unwrap()
        .expect_err("the list could not be written");
    let message = err.to_string();
    assert!(
        message.contains(&format!(
            "suppression list postgres://mailmerge@127.0.0.1:{}",
            pg.port
        )),
        "{message}"
    );
    // Every row has its result, once: what was sent is delivered, the refused one bounced.
    let rows = read_results(&job.results);
    assert_eq!(rows.len(), 9);
    let emails: HashSet<&String> = rows.iter().map(|r| &r["email"]).collect();
    assert_eq!(emails.len(), 9);
    for r in &rows {
        let want = if r["email"] == "reject@m.test" {
            "bounced"
        } else {
            "delivered"
        };
        assert_eq!(r["status"], want, "{r:?}");
    }
    assert_eq!(mxs.get(73).received().len(), 8);
    // The reservation made before sending (every row, the refused one too) stays counted, as
    // the settling after the run could not give back what was not used: a cap errs on the
    // safe side.
    pg.run();
    assert_eq!(pg.psql("SELECT sum(sent) FROM mailmerge_sender_days"), "9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_migrating_at_once_find_one_schema_and_a_newer_one_is_refused() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg_url(&pg);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let s = PgSuppressions::open(&url).await.map(drop);
            let t = PgSenders::open(&url).await.map(drop);
            (s.map_err(|e| e.to_string()), t.map_err(|e| e.to_string()))
        }));
    }
    for t in tasks {
        let (s, t) = t.await.unwrap();
        s.unwrap();
        t.unwrap();
    }
    assert_eq!(
        pg.psql("SELECT string_agg(component || '=' || version, ',' ORDER BY component) FROM mailmerge_schema"),
        "senders=1,suppressions=1"
    );
    pg.psql("UPDATE mailmerge_schema SET version = 9");
    match PgSenders::open(&url).await {
        Err(StateError::Newer { found, known, .. }) => assert_eq!((found, known), (9, 1)),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let e = PgSuppressions::open(&url).await.err().unwrap().to_string();
    assert!(e.contains("newer than this mailmerge knows"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_lookups_span_chunks_and_the_first_entry_of_a_key_wins() {
    let Some(pg) = Postgres::start() else { return };
    let store = PgSuppressions::open(&pg_url(&pg)).await.unwrap();
    let entries: Vec<Entry> = (0..25_000)
        .map(|i| Entry::new(format!("u{i}@big.test"), Reason::Unsubscribe, "", "c1"))
        .chain([Entry::new(
            "u7@big.test".into(),
            Reason::Complaint,
            "again",
            "c2",
        )])
        .collect();
    assert_eq!(store.add(&entries).await.unwrap(), 25_000);
    let keys: Vec<String> = (0..30_000)
        .step_by(3)
        .map(|i| format!("u{i}@big.test"))
        .collect();
    let found = store.find(&keys).await.unwrap();
    let want: HashSet<String> = keys
        .iter()
        .filter(|k| k[1..k.len() - 9].parse::<u32>().unwrap() < 25_000)
        .cloned()
        .collect();
    assert_eq!(found.keys().cloned().collect::<HashSet<_>>(), want);
    let u6 = &found["u6@big.test"];
    assert_eq!(
        (u6.reason, u6.campaign.as_str()),
        (Reason::Unsubscribe, "c1")
    );
    let again = store.find(&["u7@big.test".to_string()]).await.unwrap();
    assert_eq!(
        again["u7@big.test"].reason,
        Reason::Unsubscribe,
        "the first entry kept"
    );
    // A NUL (from a server's reply) never reaches the server's text: stored as U+FFFD.
    let odd = Entry::new("odd@big.test".into(), Reason::HardBounce, "550\0x", "");
    assert_eq!(store.add(&[odd]).await.unwrap(), 1);
    let got = store.find(&["odd@big.test".to_string()]).await.unwrap();
    assert_eq!(got["odd@big.test"].cause, "550\u{FFFD}x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_moves_from_sqlite_to_postgres_through_export_and_import() {
    let Some(pg) = Postgres::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("list.sqlite");
    let suppress = |args: &[&str], env: Option<&str>| {
        let mut c = binary();
        c.arg("suppress").args(args);
        match env {
            Some(url) => c.env("MAILMERGE_SUPPRESSIONS", url),
            None => c.arg("--suppressions").arg(&sqlite),
        };
        let out = c.output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    suppress(&["add", "Ann@A.test", "bob@b.test", "@spam.test"], None);
    suppress(
        &[
            "add",
            "--reason",
            "complaint",
            "--note",
            "=HYPERLINK(x)",
            "zoë@b.test",
        ],
        None,
    );
    let unsub = dir.path().join("unsub.csv");
    std::fs::write(&unsub, "address,created\ncat@c.test,2026-01-02T03:04:05Z\n").unwrap();
    suppress(&["import", unsub.to_str().unwrap()], None);
    let exported = dir.path().join("export.csv");
    suppress(&["export", exported.to_str().unwrap()], None);
    let out = suppress(&["import", exported.to_str().unwrap()], Some(&pg.url()));
    assert!(
        out.starts_with("5 added, 0 already suppressed, 0 skipped"),
        "{out}"
    );

    // Every entry arrives: the key, its kind, its reason and its date.
    let from_pg = suppress(&["list"], Some(&pg.url()));
    let from_sqlite = suppress(&["list"], None);
    let essentials = |csv: &str| -> Vec<String> {
        let mut r = csv::Reader::from_reader(csv.as_bytes());
        r.records()
            .map(|rec| {
                let rec = rec.unwrap();
                format!("{}|{}|{}|{}", &rec[0], &rec[1], &rec[4], &rec[5])
            })
            .collect()
    };
    assert_eq!(essentials(&from_pg), essentials(&from_sqlite));
    assert_eq!(essentials(&from_pg).len(), 5);
    assert!(from_pg.contains("2026-01-02T03:04:05Z"), "{from_pg}");
    // And `remove` and `senders` work against it.
    suppress(&["remove", "bob@b.test"], Some(&pg.url()));
    assert!(!suppress(&["list"], Some(&pg.url())).contains("bob@b.test"));
    let out = binary()
        .args(["senders", "--state", &pg.url()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "nothing remembered yet (postgres://mailmerge@127.0.0.1:{}/postgres)",
            pg.port
        )),
        "{stdout}"
    );
}

#[test]
fn a_url_scheme_that_is_not_a_store_is_refused_and_no_folder_is_made() {
    let dir = tempfile::tempdir().unwrap();
    type Case<'a> = (&'a [&'a str], Option<(&'a str, &'a str)>);
    let cases: [Case; 3] = [
        (
            &[
                "suppress",
                "list",
                "--suppressions",
                "mysql://db.example.com/mail",
            ],
            None,
        ),
        (
            &["suppress", "list"],
            Some(("MAILMERGE_SUPPRESSIONS", "redis://cache.example.com/0")),
        ),
        (&["senders", "--state", "sqlite:///var/lib/x.sqlite"], None),
    ];
    for (args, env) in cases {
        let mut c = binary();
        c.current_dir(dir.path()).args(args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("is not a store mailmerge speaks"),
            "{stderr}"
        );
    }
    // From the config file too, naming its line; a postgres:// URL there is no relative path.
    std::fs::write(
        dir.path().join("mailmerge.toml"),
        "\nsuppressions = \"mongodb://m/x\"\n",
    )
    .unwrap();
    let out = binary()
        .current_dir(dir.path())
        .args(["suppress", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("mongodb://"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing but the config"
    );
}

#[test]
fn kubernetes_shards_share_one_database_through_a_secret() {
    let mut sharing = 0;
    for (file, doc) in crate::scale::manifests() {
        let spec = match crate::scale::str_of(&doc["kind"]) {
            "Job" => &doc["spec"],
            "CronJob" => &doc["spec"]["jobTemplate"]["spec"],
            _ => continue,
        };
        for c in spec["template"]["spec"]["containers"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let env = c["env"].as_sequence().cloned().unwrap_or_default();
            let secret_of = |name: &str| {
                env.iter()
                    .find(|e| e["name"] == name)
                    .map(|e| e["valueFrom"]["secretKeyRef"].clone())
            };
            let Some(list) = secret_of("MAILMERGE_SUPPRESSIONS") else {
                continue;
            };
            // From a Secret, never a literal value; the same database for both stores.
            assert!(!list["name"].is_null() && !list["key"].is_null(), "{file}");
            assert_eq!(secret_of("MAILMERGE_STATE"), Some(list), "{file}");
            // Nothing on the command line overrides the variables.
            let args = c["args"].as_sequence().cloned().unwrap_or_default();
            for flag in ["--suppressions", "--state"] {
                assert!(!args.iter().any(|a| a == flag), "{file}: {flag}");
            }
            assert_eq!(spec["completionMode"], "Indexed", "{file}");
            sharing += 1;
        }
    }
    assert!(sharing >= 1, "no manifest shares a database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_verified_against_sslrootcert_and_never_falls_back_to_plain_text() {
    let ca = mailmerge::sandbox::tls::TestCa::new().unwrap();
    let server = ca.issue(&["127.0.0.1"]).unwrap();
    let Some(pg) = Postgres::start_tls(&server.cert_pem, &server.key_pem) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("ca.pem");
    std::fs::write(&root, ca.root_pem()).unwrap();
    let base = format!("postgres://mailmerge@127.0.0.1:{}/postgres", pg.port);
    let open = |query: String| {
        let url = PgUrl::parse(&format!("{base}{query}")).unwrap();
        async move {
            PgSuppressions::open(&url)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    };
    // The server's certificate is checked against sslrootcert: over TLS (the server takes
    // nothing else) the list opens and works.
    let query = format!("?sslmode=require&sslrootcert={}", root.display());
    open(query.clone()).await.unwrap();
    let store = PgSuppressions::open(&PgUrl::parse(&format!("{base}{query}")).unwrap())
        .await
        .unwrap();
    let entry = Entry::new("ann@a.test".into(), Reason::Manual, "", "");
    assert_eq!(store.add(&[entry]).await.unwrap(), 1);
    // Without the root, the certificate is not trusted, with `require` and with the default
    // `prefer` alike: no connection, never a fallback to plain text.
    for query in ["?sslmode=require", ""] {
        let e = open(query.to_string()).await.unwrap_err();
        assert!(e.contains("certificate"), "{query}: {e}");
    }
    // And `disable` does not use TLS (which this server refuses).
    let e = open("?sslmode=disable".into()).await.unwrap_err();
    assert!(e.contains("no encryption") || e.contains("pg_hba"), "{e}");
}
