//! Past one machine and one IP: shards run as concurrent processes and merged back,
//! source-IP pools seen from the receiving side, and the Kubernetes manifests the binary is
//! deployed with.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::*;
use mailmerge::sandbox::dns::{DnsServer, loopback};
use mailmerge::sandbox::receiver::ReceiverConfig;
use mailmerge::sender::SenderStore;
use mailmerge::sender::sqlite::SqliteSenders;

/// Sites in the sharding test: site k is `mx{k}.sites.test` on 127.0.0.(40+k).
const SITES: u8 = 6;

/// `run` (or `check`) against the test servers, with quick retries.
fn mailmerge(verb: &str, job: &Job, dns: &DnsServer, port: u16) -> Command {
    let mut c = job.binary();
    c.arg(verb)
        .arg(&job.csv)
        .arg(&job.template)
        .args(["--dns", &dns.addr().to_string(), "--dns-timeout", "5s"])
        .args(["--smtp-port", &port.to_string(), "--helo", "sender.test"])
        .args(["--retry", "100ms", "--deadline", "20s", "--quiet"]);
    c
}

async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run mailmerge"))
        .await
        .expect("join")
}

/// Six sites of two domains each, plus rows that never reach a site: invalid, duplicate, null
/// MX, NXDOMAIN, a refused recipient and a formula-like name.
fn sites_list() -> (String, DnsZoneHosts) {
    let mut z = zone();
    for k in 0..SITES {
        let mx = format!("mx{k}.sites.test");
        z.mx(&format!("a{k}.test"), 10, &mx)
            .mx(&format!("b{k}.test"), 10, &mx)
            .addr(&mx, loopback(40 + k));
    }
    z.null_mx("nullmx.test");
    let mut csv = String::from("email,name\n");
    for i in 0..48 {
        let k = i % SITES as usize;
        let d = if i % 2 == 0 { 'a' } else { 'b' };
        writeln!(csv, "user{i}@{d}{k}.test,User {i}").unwrap();
    }
    csv.push_str("no-at-sign,Ned\n");
    csv.push_str("user0@a0.test,Again\n");
    csv.push_str("gus@nullmx.test,Gus\n");
    csv.push_str("hana@nxdomain.test,Hana\n");
    csv.push_str("reject-rex@a1.test,Rex\n");
    csv.push_str("fred@b2.test,=1+1\n");
    (csv, z)
}

type DnsZoneHosts = mailmerge::sandbox::dns::Zone;

fn statuses(rows: &[HashMap<String, String>]) -> Vec<(String, String, String, String)> {
    rows.iter()
        .map(|r| {
            let get = |c: &str| r[c].clone();
            (get("row"), get("email"), get("status"), get("name"))
        })
        .collect()
}

fn merge(list: &Path, inputs: &[&PathBuf], out: &Path) -> Output {
    binary()
        .arg("merge-results")
        .args(inputs)
        .arg("--list")
        .arg(list)
        .arg("-o")
        .arg(out)
        .output()
        .expect("merge-results")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_concurrent_shards_cover_the_list_once_and_merge_to_a_single_run() {
    let (csv, z) = sites_list();
    let dns = dns(z).await;
    let mxs = Mxs::start(
        (0..SITES)
            .map(|k| (40 + k, ReceiverConfig::default()))
            .collect(),
    )
    .await;
    let job = Job::new(&csv, TEMPLATE);
    let rows_in_list = csv.lines().count() - 1;

    let shards: Vec<_> = (0..3)
        .map(|i| {
            let mut c = mailmerge("run", &job, &dns, mxs.port);
            c.args(["--shard", &format!("{i}/3")]);
            tokio::spawn(output(c))
        })
        .collect();
    let mut paths = Vec::new();
    for (i, s) in shards.into_iter().enumerate() {
        let out = s.await.expect("join");
        assert!(out.status.code().is_some(), "shard {i} crashed");
        let path = job.path(&format!("list.results.shard-{i}-of-3.csv"));
        assert!(
            path.exists(),
            "shard {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        paths.push(path);
    }

    // The union of the shards is the list, each row once; each site is in one shard.
    let per_shard: Vec<_> = paths.iter().map(|p| read_results(p)).collect();
    let mut seen = HashSet::new();
    let mut site_shard: HashMap<String, usize> = HashMap::new();
    for (i, rows) in per_shard.iter().enumerate() {
        assert!(!rows.is_empty(), "shard {i} got no rows: pick other names");
        for r in rows {
            assert!(
                seen.insert(r["row"].clone()),
                "row {} in two shards",
                r["row"]
            );
            if !r["mx_host"].is_empty() {
                let first = *site_shard.entry(r["mx_host"].clone()).or_insert(i);
                assert_eq!(first, i, "site {} split over shards", r["mx_host"]);
            }
        }
    }
    assert_eq!(seen.len(), rows_in_list);

    // No address received two copies.
    let received: Vec<String> = mxs
        .receivers
        .values()
        .flat_map(|r| r.received().into_iter().map(|m| m.rcpt_to))
        .collect();
    let distinct: HashSet<&String> = received.iter().collect();
    assert_eq!(distinct.len(), received.len(), "an address got two copies");
    let delivered = per_shard
        .iter()
        .flatten()
        .filter(|r| r["status"] == "delivered")
        .count();
    assert_eq!(received.len(), delivered);

    // `check --shard` plans that shard's rows only.
    let mut check = mailmerge("check", &job, &dns, mxs.port);
    check.args(["--shard", "1/3"]);
    let plan = output(check).await;
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.contains(&format!("plan for {} rows", per_shard[1].len())),
        "{plan}"
    );

    // Merged shards = one process's run, row by row (formula cells included).
    let merged = job.path("merged.csv");
    let out = merge(&job.csv, &paths.iter().collect::<Vec<_>>(), &merged);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let single = job.path("single.csv");
    let mut one = mailmerge("run", &job, &dns, mxs.port);
    one.arg("--results").arg(&single);
    // Its own suppression list: the shards' hard bounces are on the shared one.
    one.env("XDG_DATA_HOME", job.path("single-data"));
    let _ = output(one).await;
    let merged_rows = read_results(&merged);
    assert_eq!(statuses(&merged_rows), statuses(&read_results(&single)));
    // Each row keeps the time its shard decided it.
    let shard_times: HashMap<String, String> = per_shard
        .iter()
        .flatten()
        .map(|r| (r["row"].clone(), r["finished_at"].clone()))
        .collect();
    for r in &merged_rows {
        assert!(
            mailmerge::outcome::parse_time(&r["finished_at"]).is_some(),
            "{r:?}"
        );
        assert_eq!(r["finished_at"], shard_times[&r["row"]]);
    }
    assert!(merged_rows.iter().any(|r| r["name"] == "'=1+1"));
    let merged_text = std::fs::read_to_string(&merged).unwrap();
    let shard_text: String = paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(merged_text.contains("'=1+1") && shard_text.contains("'=1+1"));

    // One report over the shards' results, and a warning when one is left out.
    let html = job.path("campaign.html");
    let report = |inputs: &[PathBuf]| {
        crate::support::binary()
            .arg("report")
            .args(inputs)
            .arg("-o")
            .arg(&html)
            .output()
            .expect("report")
    };
    let out = report(&paths);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.starts_with(&format!("{rows_in_list} rows reported")),
        "{said}"
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("3 results files") && !page.contains("are missing"));
    assert!(page.contains(&format!("data-total=\"rows\">{rows_in_list}<")));
    report(&paths[..2]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("Shard(s) 2 of 3 are missing"),
        "a partial campaign says so"
    );
}

/// Runs `--shard I/2` for both shards at once with `args`; returns each shard's results path.
async fn two_shards(job: &Job, dns: &DnsServer, port: u16, args: &[&str]) -> Vec<PathBuf> {
    let shards: Vec<_> = (0..2)
        .map(|i| {
            let mut c = mailmerge("run", job, dns, port);
            c.args(["--shard", &format!("{i}/2")]).args(args);
            tokio::spawn(output(c))
        })
        .collect();
    let mut paths = Vec::new();
    for (i, s) in shards.into_iter().enumerate() {
        let out = s.await.expect("join");
        let path = job.path(&format!("list.results.shard-{i}-of-2.csv"));
        assert!(
            path.exists(),
            "shard {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        paths.push(path);
    }
    paths
}

/// Regression: daily caps were admitted before shard selection, so each shard counted the
/// other shard's sites too and held back rows the owning shard sent: the same row appeared in
/// both shards' results and merge-results refused them. Both shards now share one sender
/// memory (as on a cluster) and reserve their own sites only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharded_runs_with_a_daily_cap_count_and_hold_back_their_own_sites_only() {
    let (csv, z) = sites_list();
    let dns = dns(z).await;
    let mxs = Mxs::start(
        (0..SITES)
            .map(|k| (40 + k, ReceiverConfig::default()))
            .collect(),
    )
    .await;
    let job = Job::new(&csv, TEMPLATE);
    let rows_in_list = csv.lines().count() - 1;
    for pass in ["first run", "second run, same day"] {
        let paths = two_shards(&job, &dns, mxs.port, &["--daily-cap", "3"]).await;
        let per_shard: Vec<_> = paths.iter().map(|p| read_results(p)).collect();
        let mut seen = HashSet::new();
        for rows in &per_shard {
            for r in rows {
                assert!(
                    seen.insert(r["row"].clone()),
                    "{pass}: row {} in two shards",
                    r["row"]
                );
            }
        }
        assert_eq!(seen.len(), rows_in_list, "{pass}: every row in one shard");
        let merged = job.path("merged.csv");
        let out = merge(&job.csv, &paths.iter().collect::<Vec<_>>(), &merged);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{pass}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One sender memory for both shards (the job's home): each site's day count is what
        // the one shard that sends to it sent, never more than the cap.
        let store = SqliteSenders::open(&job.home().join("mailmerge/senders.sqlite")).unwrap();
        let day = mailmerge::clock::Clock::default().day();
        let counted = store.list(day, 0).await.unwrap();
        assert_eq!(counted.len(), SITES as usize, "{pass}: {counted:?}");
        for (id, m) in &counted {
            let senders = per_shard
                .iter()
                .filter(|rows| rows.iter().any(|r| r["mx_host"] == id.receiver))
                .count();
            assert_eq!(senders, 1, "{pass}: {id} sent to by one shard");
            assert!(m.today <= 3, "{pass}: {id} {m:?}");
        }
    }
    // Three per site and day: 6 sites, 18 messages in all, each once.
    let got = (0..SITES)
        .map(|k| mxs.get(40 + k).accepted())
        .sum::<usize>();
    assert_eq!(got, 18);
}

/// The header `run` writes for a list `email,name`.
fn results_header() -> String {
    mailmerge::report::COLUMNS.join(",") + ",input_email,name\n"
}

/// A results line as `run` writes it for a list `email,name` (the cells the merge checks
/// against the list: `row`, `email`, `input_email`, `name`).
fn result_line(row: &str, email: &str, status: &str, name: &str) -> String {
    let mut cells = vec![""; mailmerge::report::COLUMNS.len()];
    cells[0] = row;
    cells[1] = email;
    cells[3] = status;
    cells.extend([email, name]);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&cells).unwrap();
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

/// Writes a shard's results file `name` with these lines.
fn shard(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, results_header() + &lines.concat()).unwrap();
    path
}

#[test]
fn merge_results_exits_2_naming_missing_or_duplicated_rows() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.csv");
    std::fs::write(&list, "email,name\na@x.test,A\nb@y.test,=cmd\nc@z.test,C\n").unwrap();
    let a = shard(
        dir.path(),
        "a.csv",
        &[
            result_line("1", "a@x.test", "delivered", "A"),
            result_line("3", "c@z.test", "bounced", "C"),
        ],
    );
    let b = shard(
        dir.path(),
        "b.csv",
        &[result_line("2", "b@y.test", "delivered", "'=cmd")],
    );
    let out_path = dir.path().join("m.csv");

    let ok = merge(&list, &[&b, &a], &out_path);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    let merged = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(
        merged,
        results_header()
            + &result_line("1", "a@x.test", "delivered", "A")
            + &result_line("2", "b@y.test", "delivered", "'=cmd")
            + &result_line("3", "c@z.test", "bounced", "C")
    );

    let missing = merge(&list, &[&a], &dir.path().join("m2.csv"));
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("rows missing: 2"));
    let twice = merge(&list, &[&a, &b, &a], &dir.path().join("m3.csv"));
    assert_eq!(twice.status.code(), Some(2));
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(err.contains("more than one input: 1, 3"), "{err}");
    assert!(!dir.path().join("m3.csv").exists());
}

/// Shards' results are untrusted input (issue 21, case 7): a row is merged only when its
/// number is written as `run` writes it and its address and list cells are the list's row of
/// that number, in list order.
#[test]
fn merge_results_refuses_rows_that_do_not_match_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.csv");
    std::fs::write(
        &list,
        "email,name\na@x.test,A\nb@y.test,B\nc@z.test,C\nd@z.test,D\ne@z.test,E\n",
    )
    .unwrap();
    let line =
        |n: usize, email: &str, name: &str| result_line(&n.to_string(), email, "delivered", name);
    let good = |n: usize| {
        let (e, name) = [
            ("a@x.test", "A"),
            ("b@y.test", "B"),
            ("c@z.test", "C"),
            ("d@z.test", "D"),
            ("e@z.test", "E"),
        ][n - 1];
        line(n, e, name)
    };
    let out = dir.path().join("m.csv");
    let refused = |files: &[&PathBuf], what: &str| {
        let got = merge(&list, files, &out);
        let err = String::from_utf8_lossy(&got.stderr).into_owned();
        assert_eq!(got.status.code(), Some(2), "{what}: {err}");
        assert!(!out.exists(), "{what}: nothing written");
        err
    };
    let rest = shard(
        dir.path(),
        "rest.csv",
        &[good(1), good(3), good(4), good(5)],
    );

    // Row 2 rewritten to another address (and its list cell with it).
    let forged = shard(
        dir.path(),
        "forged.csv",
        &[line(2, "evil@attacker.test", "B")],
    );
    let err = refused(&[&rest, &forged], "another address");
    assert!(err.contains("rows that differ from the list: 2"), "{err}");
    assert!(
        err.contains("evil@attacker.test") && err.contains("b@y.test"),
        "{err}"
    );
    // Row 2's address kept, a list cell changed.
    let edited = shard(dir.path(), "edited.csv", &[line(2, "b@y.test", "Mallory")]);
    let err = refused(&[&rest, &edited], "another name");
    assert!(err.contains("rows that differ from the list: 2"), "{err}");

    // Row numbers written otherwise than `run` writes them.
    for bad in ["+2", "02", " 2 ", "2.0", "0x2", ""] {
        let odd = shard(
            dir.path(),
            "odd.csv",
            &[result_line(bad, "b@y.test", "delivered", "B")],
        );
        let err = refused(&[&rest, &odd], bad);
        assert!(
            err.contains(&format!("rows not in the list: {bad:?}")),
            "{bad:?}: {err}"
        );
        assert!(err.contains("rows missing: 2"), "{err}");
    }

    // Rows out of list order within one shard.
    let b = shard(dir.path(), "b.csv", &[good(2)]);
    let swapped = shard(
        dir.path(),
        "swapped.csv",
        &[good(3), good(1), good(4), good(5)],
    );
    let err = refused(&[&swapped, &b], "out of order");
    assert!(
        err.contains("out of list order") && err.contains("row 1 after row 3"),
        "{err}"
    );

    // The same shards, as written: merged.
    let ok = merge(&list, &[&b, &rest], &out);
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(read_results(&out).len(), 5);
    std::fs::remove_file(&out).unwrap();

    // A results file of another list (its columns differ).
    let other = dir.path().join("other.csv");
    std::fs::write(&other, "row,email,status\n2,b@y.test,delivered\n").unwrap();
    let err = refused(&[&rest, &other], "another list's header");
    assert!(err.contains("not the results header"), "{err}");
}

/// One site on 127.0.0.50; eight rows, two per connection, so several connections open.
async fn one_site() -> (DnsServer, Mxs, Job) {
    let mut z = zone();
    z.mx("pool.test", 10, "mx.pool.test")
        .addr("mx.pool.test", loopback(50));
    let dns = dns(z).await;
    let mxs = Mxs::start(vec![(50, ReceiverConfig::default())]).await;
    let mut csv = String::from("email,name\n");
    for i in 0..8 {
        writeln!(csv, "u{i}@pool.test,U{i}").unwrap();
    }
    (dns, mxs, Job::new(&csv, TEMPLATE))
}

fn pool_run(job: &Job, dns: &DnsServer, port: u16, sources: &[&str]) -> Command {
    let mut c = mailmerge("run", job, dns, port);
    c.args([
        "--connections-per-site",
        "2",
        "--messages-per-connection",
        "2",
    ]);
    for s in sources {
        c.args(["--source-ip", s]);
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_source_ip_connects_with_its_own_ehlo_name() {
    let (dns, mxs, job) = one_site().await;
    let sources = ["127.0.0.10=a.sender.test", "127.0.0.11=b.sender.test"];
    let out = output(pool_run(&job, &dns, mxs.port, &sources)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let peers: HashSet<(IpAddr, Option<String>)> = mxs.get(50).peers().into_iter().collect();
    let want: HashSet<(IpAddr, Option<String>)> = [
        (loopback(10), Some("a.sender.test".to_string())),
        (loopback(11), Some("b.sender.test".to_string())),
    ]
    .into();
    assert_eq!(peers, want);
    let rows = read_results(&job.results);
    let used: HashSet<&str> = rows.iter().map(|r| r["source_ip"].as_str()).collect();
    assert_eq!(used, HashSet::from(["127.0.0.10", "127.0.0.11"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_ip_that_cannot_be_bound_is_skipped_and_the_others_deliver() {
    let (dns, mxs, job) = one_site().await;
    // 192.0.2.1 (TEST-NET-1) and 2001:db8::1 are not this host's: bind fails locally and
    // nothing is ever sent to them.
    let sources = [
        "192.0.2.1=bad.sender.test",
        "2001:db8::1",
        "127.0.0.12=c.sender.test",
    ];
    let out = output(pool_run(&job, &dns, mxs.port, &sources)).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers = mxs.get(50).peers();
    assert!(!peers.is_empty());
    for p in peers {
        assert_eq!(p, (loopback(12), Some("c.sender.test".to_string())));
    }
    for r in read_results(&job.results) {
        assert_eq!(
            (r["status"].as_str(), r["source_ip"].as_str()),
            ("delivered", "127.0.0.12")
        );
    }
}

/// The manifests' YAML documents, with the file each came from.
pub(crate) fn manifests() -> Vec<(String, serde_yaml::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut docs = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                docs.push((f.display().to_string(), v));
            }
        }
    }
    docs
}

use serde::Deserialize as _;

pub(crate) fn str_of(v: &serde_yaml::Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Checks one Indexed Job spec (a Job's, or a CronJob's jobTemplate's) against what the binary
/// relies on.
fn check_indexed_job(file: &str, spec: &serde_yaml::Value) {
    assert_eq!(str_of(&spec["completionMode"]), "Indexed", "{file}");
    let n = spec["completions"].as_u64().expect("completions");
    assert_eq!(spec["parallelism"].as_u64(), Some(n), "{file}: parallelism");
    let pod = &spec["template"]["spec"];
    let containers = pod["containers"].as_sequence().expect("containers");
    let main = containers
        .iter()
        .find(|c| {
            c["args"]
                .as_sequence()
                .is_some_and(|a| a.iter().any(|x| str_of(x) == "--shard"))
        })
        .unwrap_or_else(|| panic!("{file}: no container runs with --shard"));
    let args: Vec<&str> = main["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
    assert_eq!(
        after("--shard"),
        Some(format!("auto/{n}").as_str()),
        "{file}"
    );
    for c in containers {
        for e in c["env"].as_sequence().into_iter().flatten() {
            assert_ne!(
                str_of(&e["name"]),
                "JOB_COMPLETION_INDEX",
                "{file}: overridden"
            );
        }
    }
    // Results (and the journal beside them) live on a mounted volume, one subPath per index.
    let results = after("--results").unwrap_or_else(|| panic!("{file}: no --results"));
    let mounts = main["volumeMounts"].as_sequence().expect("volumeMounts");
    let mount = mounts
        .iter()
        .find(|m| results.starts_with(&format!("{}/", str_of(&m["mountPath"]))))
        .unwrap_or_else(|| panic!("{file}: {results} is not on a mounted volume"));
    assert!(
        str_of(&mount["subPathExpr"]).contains("$(SHARD_INDEX)"),
        "{file}"
    );
    let index_env = main["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"] == "SHARD_INDEX");
    let field = index_env.map(|e| str_of(&e["valueFrom"]["fieldRef"]["fieldPath"]));
    assert!(
        field.is_some_and(|f| f.contains("job-completion-index")),
        "{file}"
    );
    let volume = str_of(&mount["name"]);
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| str_of(&v["name"]) == volume && !v["persistentVolumeClaim"].is_null()),
        "{file}: the results volume is not a PersistentVolumeClaim"
    );
}

#[test]
fn kubernetes_manifests_parse_and_run_one_shard_per_index() {
    let mut indexed = 0;
    let mut kinds = HashSet::new();
    for (file, doc) in manifests() {
        let kind = str_of(&doc["kind"]).to_string();
        let spec = match kind.as_str() {
            "Job" => &doc["spec"],
            "CronJob" => &doc["spec"]["jobTemplate"]["spec"],
            _ => {
                kinds.insert(kind);
                continue;
            }
        };
        kinds.insert(kind.clone());
        if !spec["completionMode"].is_null() {
            check_indexed_job(&file, spec);
            indexed += 1;
        }
    }
    assert!(indexed >= 2, "an Indexed Job and a CronJob wrapping one");
    for k in ["Job", "CronJob", "PersistentVolumeClaim"] {
        assert!(kinds.contains(k), "no {k} manifest");
    }
}
