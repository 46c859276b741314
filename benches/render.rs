//! Render benchmark: template rendering plus MIME building per message, without DKIM and with
//! DKIM signing (Ed25519 and RSA-2048), on one thread. Prints rows/s and the per-message cost of
//! signing, so DKIM's share of the CPU budget is a number, not a guess.
//!
//! `cargo bench --bench render` renders 20,000 rows per variant; `MAILMERGE_BENCH_N` overrides.
//! (Other render measurements may be added here as further rows.)

use std::path::Path;
use std::time::Instant;

use mailmerge::address::Address;
use mailmerge::dkim::Signer;
use mailmerge::message::{self, MessageOptions};
use mailmerge::template::MessageTemplate;

const TEMPLATE: &str = "From: Acme News <news@acme.example>\nTo: {{name}} <{{email}}>\n\
Subject: {{name}}, your {{plan}} plan renews soon\n\
List-Unsubscribe: <https://acme.example/u/{{token}}>, <mailto:unsub@acme.example?subject={{token}}>\n\
List-Unsubscribe-Post: List-Unsubscribe=One-Click\n\n\
--- text ---\nHello {{name}},\n\nYour {{plan}} plan renews on {{date}}. Nothing to do.\n\
{{#if vip}}Thanks for being with us since the start.\n{{/if}}\nAcme\n\
--- html ---\n<p>Hello {{name}},</p><p>Your <b>{{plan}}</b> plan renews on {{date}}.</p>\n";

fn main() {
    let n: usize = std::env::var("MAILMERGE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let template =
        MessageTemplate::parse(TEMPLATE, Path::new("bench.hbs"), Path::new(".")).expect("template");
    let columns: Vec<String> = ["email", "name", "plan", "date", "token", "vip"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let rows: Vec<(Address, Vec<String>)> = (0..n)
        .map(|i| {
            let email = format!("user{i}@d{}.example", i % 500);
            let fields = vec![
                email.clone(),
                format!("User {i}"),
                "Pro".into(),
                "2026-12-01".into(),
                format!("tok{i:08x}"),
                if i % 3 == 0 {
                    "y".into()
                } else {
                    String::new()
                },
            ];
            (Address::parse(&email).expect("address"), fields)
        })
        .collect();
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
    let key = |file: &str| {
        let pem = std::fs::read(format!("{fixtures}{file}")).expect("fixture key");
        Some(Signer::from_pem(&pem, "bench", None).expect("key"))
    };
    let variants = [
        ("no DKIM", None),
        ("DKIM Ed25519-SHA256", key("dkim-ed25519.pem")),
        ("DKIM RSA-2048-SHA256", key("dkim-rsa2048.pem")),
    ];
    println!("render + build, {n} rows, 1 thread");
    let mut base = None;
    for (name, dkim) in variants {
        let opts = MessageOptions {
            dkim,
            ..MessageOptions::default()
        };
        let start = Instant::now();
        let mut bytes = 0usize;
        for (addr, fields) in &rows {
            let r = template.render(&columns, fields).expect("render");
            let m = message::build(r, addr, &opts).expect("build");
            bytes += m.payload.as_bytes().len();
        }
        let secs = start.elapsed().as_secs_f64();
        let per = secs / n as f64 * 1e6;
        let extra = base.map_or(String::new(), |b: f64| {
            format!(", signing ≈{:.1} µs/msg", per - b)
        });
        base.get_or_insert(per);
        println!(
            "  {name:<22} {:>9.0} rows/s  {per:>7.1} µs/msg  avg {} B{extra}",
            n as f64 / secs,
            bytes / n
        );
    }
}
