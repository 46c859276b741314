//! Render benchmark: template rendering plus MIME building per message, on one thread and on
//! all. The same message written three ways (text and HTML by hand, one Markdown body, HTML
//! only with the text part derived), then the hand-written one DKIM-signed (Ed25519 and
//! RSA-2048). Prints rows/s and per-message costs, so what a Markdown body or DKIM signing
//! costs is a number, not a guess.
//!
//! `cargo bench --bench render` renders 20,000 rows per variant; `MAILMERGE_BENCH_N` overrides.

use std::path::Path;
use std::time::Instant;

use mailmerge::dkim::Signer;
use mailmerge::message::{self, MessageOptions};
use mailmerge::recipients::{ListOptions, RecipientList};
use mailmerge::template::MessageTemplate;
use rayon::prelude::*;

const HEADERS: &str = "From: Acme News <news@acme.example>\nTo: {{name}} <{{email}}>\n\
Subject: {{name}}, your {{plan}} plan renews soon\n\
List-Unsubscribe: <https://acme.example/u/{{token}}>, <mailto:unsub@acme.example?subject={{token}}>\n\
List-Unsubscribe-Post: List-Unsubscribe=One-Click\n\n";

/// Text and HTML written by hand (the template of earlier figures).
const HAND: &str = "--- text ---\nHello {{name}},\n\nYour {{plan}} plan renews on {{date}}. Nothing to do.\n\
{{#if vip}}Thanks for being with us since the start.\n{{/if}}\nAcme\n\
--- html ---\n<p>Hello {{name}},</p><p>Your <b>{{plan}}</b> plan renews on {{date}}.</p>\n";

/// The same message as one Markdown body.
const MARKDOWN: &str = "--- markdown ---\nHello {{name}},\n\nYour **{{plan}}** plan renews on {{date}}. Nothing to do.\n\
{{#if vip}}Thanks for being with us since the start.{{/if}}\n\nAcme\n";

/// The same message as HTML only: the text part is derived from it.
const HTML_ONLY: &str = "--- html ---\n<p>Hello {{name}},</p><p>Your <b>{{plan}}</b> plan renews on {{date}}. Nothing to do.</p>\n\
{{#if vip}}<p>Thanks for being with us since the start.</p>{{/if}}<p>Acme</p>\n";

/// A benchmark variant: its name, the compiled template and the message options.
type Variant = (&'static str, MessageTemplate, MessageOptions);

/// `n` rows as CSV bytes, read by the real reader: rendering starts from a CSV row.
fn list(n: usize) -> RecipientList {
    let mut csv = String::from("email,name,plan,date,token,vip\n");
    for i in 0..n {
        let vip = if i % 3 == 0 { "y" } else { "" };
        csv.push_str(&format!(
            "user{i}@d{}.example,User {i},Pro,2026-12-01,tok{i:08x},{vip}\n",
            i % 500
        ));
    }
    RecipientList::from_bytes(
        csv.into_bytes(),
        Path::new("bench.csv"),
        &ListOptions::default(),
    )
    .expect("list")
}

/// The variants, compiled and checked against the list's columns; the first is the one the
/// others are compared with.
fn variants(columns: &[String]) -> Vec<Variant> {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let key = |file: &str| {
        let pem = std::fs::read(format!("{fixtures}{file}")).expect("fixture key");
        Some(Signer::from_pem(&pem, "bench", None).expect("key"))
    };
    [
        ("text + html", HAND, None),
        ("markdown", MARKDOWN, None),
        ("html, text derived", HTML_ONLY, None),
        ("text + html, Ed25519", HAND, key("dkim-ed25519.pem")),
        ("text + html, RSA-2048", HAND, key("dkim-rsa2048.pem")),
    ]
    .into_iter()
    .map(|(name, body, dkim)| {
        let template = MessageTemplate::parse(
            &format!("{HEADERS}{body}"),
            Path::new("bench.hbs"),
            Path::new("."),
        )
        .expect("template");
        template.check_columns(columns).expect("columns");
        let opts = MessageOptions {
            dkim,
            ..MessageOptions::default()
        };
        (name, template, opts)
    })
    .collect()
}

fn main() {
    let n: usize = std::env::var("MAILMERGE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let list = list(n);
    let compiled = variants(&list.columns);
    let threads = rayon::current_num_threads();
    let one = |template: &MessageTemplate, opts: &MessageOptions, i: usize| -> usize {
        let row = list.row(i);
        let addr = row.status.as_ref().expect("valid row");
        let r = template.render(&list.columns, &row.fields).expect("render");
        message::build(r, addr, opts)
            .expect("build")
            .payload
            .as_bytes()
            .len()
    };
    // One thread: the variants take turns, a round of rows each, so that a busy machine slows
    // them alike; each variant's figure is the median of its rounds.
    let rounds = 20.min(n);
    let per_round = n / rounds;
    let mut costs: Vec<Vec<f64>> = vec![Vec::new(); compiled.len()];
    let mut bytes = vec![0usize; compiled.len()];
    for r in 0..rounds {
        for (v, (_, template, opts)) in compiled.iter().enumerate() {
            let start = Instant::now();
            for i in r * per_round..(r + 1) * per_round {
                bytes[v] += one(template, opts, i);
            }
            costs[v].push(start.elapsed().as_secs_f64() / per_round as f64 * 1e6);
        }
    }
    println!(
        "CSV row → template → MIME bytes (→ DKIM), {n} rows; 1 thread (median of {rounds} interleaved rounds) and {threads} threads"
    );
    for (v, (name, template, opts)) in compiled.iter().enumerate() {
        let per = median(&costs[v]);
        let start = Instant::now();
        let _: usize = (0..n).into_par_iter().map(|i| one(template, opts, i)).sum();
        let par_secs = start.elapsed().as_secs_f64();
        let vs = if v == 0 {
            String::new()
        } else {
            let ratios: Vec<f64> = costs[v].iter().zip(&costs[0]).map(|(c, b)| c / b).collect();
            format!(", {:.2}× text + html (median per round)", median(&ratios))
        };
        println!(
            "  {name:<22} 1 thread {:>9.0} rows/s ({per:>6.1} µs/msg)   {threads} threads {:>9.0} rows/s   avg {} B{vs}",
            1e6 / per,
            n as f64 / par_secs,
            bytes[v] / (rounds * per_round)
        );
    }
}

/// The median of `xs` (not empty).
fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
