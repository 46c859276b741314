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

/// Sites in the sharding test: site k is `mx{k}.sites.test` on 127.0.0.(40+k).
const SITES: u8 = 6;

/// `run` (or `check`) against the test servers, with quick retries.
fn mailmerge(verb: &str, job: &Job, dns: &DnsServer, port: u16) -> Command {
    let mut c = binary();
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

#[test]
fn merge_results_exits_2_naming_missing_or_duplicated_rows() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.csv");
    std::fs::write(&list, "email\na@x.test\nb@y.test\nc@z.test\n").unwrap();
    let header = "row,email,status\n";
    let a = dir.path().join("a.csv");
    let b = dir.path().join("b.csv");
    std::fs::write(
        &a,
        format!("{header}1,a@x.test,delivered\n3,c@z.test,bounced\n"),
    )
    .unwrap();
    std::fs::write(&b, format!("{header}2,b@y.test,'=cmd\n")).unwrap();
    let out_path = dir.path().join("m.csv");

    let ok = merge(&list, &[&b, &a], &out_path);
    assert_eq!(ok.status.code(), Some(0));
    let merged = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(
        merged,
        format!("{header}1,a@x.test,delivered\n2,b@y.test,'=cmd\n3,c@z.test,bounced\n")
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
fn manifests() -> Vec<(String, serde_yaml::Value)> {
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

fn str_of(v: &serde_yaml::Value) -> &str {
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
