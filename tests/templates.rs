//! Templates people already write, through whole runs against the sandbox's DNS and SMTP
//! servers, the delivered messages read back with a real MIME parser (`mail-parser`):
//! Markdown bodies, inline images in `multipart/related`, a text part derived from an HTML
//! body, hostile list values, DKIM over the new structure, the `check --out` previews, and
//! templates that could recurse or grow without bound (bounded templates).

use std::path::Path;

use crate::deliverability::{dkim_results, verifier};
use crate::support::*;
use mail_auth::DkimResult;
use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use mailmerge::dkim::Signer;
use mailmerge::sandbox::dns::{DnsServer, loopback};
use mailmerge::sandbox::receiver::ReceiverConfig;
use mailmerge::{RunReport, run};

/// A 1×1 PNG (signature, IHDR, IDAT, IEND).
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0,
    1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0x1f, 0x15, 0xc4, 0x89, 0, 0, 0, 0x0d, 0x49, 0x44, 0x41, 0x54,
    0x78, 0x9c, 0x63, 0x60, 0, 0, 0, 2, 0, 1, 0xe5, 0x27, 0xde, 0xfc, 0, 0, 0, 0, 0x49, 0x45, 0x4e,
    0x44, 0xae, 0x42, 0x60, 0x82,
];

const MARKDOWN: &str = "From: Acme <news@sender.test>\nTo: {{name}} <{{email}}>\n\
Subject: Your plan, {{name}}\n\n\
--- markdown ---\n\
![Acme]({{inline \"img/logo.png\"}})\n\n\
# Hello {{name}}\n\n\
Your **{{plan}}** plan renews soon. Note: {{note}}\n\n\
| Plan | Seats | Price |\n\
|:-----|------:|------:|\n\
| {{plan}} | {{seats}} | 12 € |\n\n\
Questions? Write to help@sender.test or see https://sender.test/help.\n";

/// A value trying every way into the markup: a tag, a link, emphasis, a heading, a URL.
const HOSTILE_NAME: &str = "<script>alert(1)</script> **Bob** [x](javascript:alert(1))";
const HOSTILE_NOTE: &str = "https://evil.example/phish and [click](https://evil.example) # no";

/// The list: one ordinary row, one hostile one.
fn markdown_list() -> String {
    format!(
        "email,name,plan,seats,note\nann@example.com,Ann Lee,Pro,3,none\nbob@example.com,\"{HOSTILE_NAME}\",Team,12,{HOSTILE_NOTE}\n"
    )
}

/// A DNS zone with example.com's MX on 127.0.0.2, and a receiver there.
async fn servers(extra: impl FnOnce(&mut mailmerge::sandbox::dns::Zone)) -> (DnsServer, Mxs) {
    let mut z = zone();
    z.mx("example.com", 10, "mx.example.com")
        .addr("mx.example.com", loopback(2));
    extra(&mut z);
    (
        dns(z).await,
        Mxs::start(vec![(2, ReceiverConfig::default())]).await,
    )
}

/// A job with `template`, `csv` and `img/logo.png` in its folder.
fn job_with_logo(csv: &str, template: &str) -> Job {
    let job = Job::new(csv, template);
    std::fs::create_dir(job.path("img")).unwrap();
    std::fs::write(job.path("img/logo.png"), PNG).unwrap();
    job
}

/// The MIME tree under part `id`: `type[child,child]`.
fn tree(msg: &Message<'_>, id: u32) -> String {
    let part = &msg.parts[id as usize];
    let ct = part.content_type().expect("content type");
    let name = format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or(""));
    match &part.body {
        PartType::Multipart(children) => {
            let inner: Vec<String> = children.iter().map(|c| tree(msg, *c)).collect();
            format!("{name}[{}]", inner.join(","))
        }
        _ => name,
    }
}

/// The received message for `rcpt`, parsed.
fn received<'a>(got: &'a [mailmerge::sandbox::receiver::Received], rcpt: &str) -> Message<'a> {
    let m = got
        .iter()
        .find(|m| m.rcpt_to == rcpt)
        .unwrap_or_else(|| panic!("nothing received for {rcpt}"));
    MessageParser::default()
        .parse(&m.data)
        .expect("a MIME message")
}

/// The `href` values of every `<a>` in `html`.
fn hrefs(html: &str) -> Vec<&str> {
    html.split("<a ")
        .skip(1)
        .filter_map(|t| t.strip_prefix("href=\"")?.split('"').next())
        .collect()
}

/// Checks one delivered Markdown message: structure, the image and its Content-ID, and the
/// table in both parts. Returns the HTML and text parts.
fn assert_markdown_message(msg: &Message<'_>) -> (String, String) {
    assert_eq!(
        tree(msg, 0),
        "multipart/related[multipart/alternative[text/plain,text/html],image/png]"
    );
    let root = msg.root_part().content_type().unwrap();
    assert_eq!(root.attribute("type"), Some("multipart/alternative"));
    let PartType::Multipart(children) = &msg.root_part().body else {
        panic!("multipart")
    };
    let image = &msg.parts[children[1] as usize];
    assert_eq!(image.contents(), PNG);
    let disposition = image.content_disposition().unwrap();
    assert!(disposition.is_inline());
    assert_eq!(disposition.attribute("filename"), Some("logo.png"));
    let cid = image.content_id().expect("Content-ID");
    let html = msg.body_html(0).unwrap().into_owned();
    let text = msg.body_text(0).unwrap().into_owned();
    assert!(
        html.contains(&format!("<img src=\"cid:{cid}\" alt=\"Acme\" />")),
        "{cid}\n{html}"
    );
    assert!(
        html.contains("<th style=\"text-align: left\">Plan</th>"),
        "{html}"
    );
    assert!(
        html.contains("<td style=\"text-align: right\">12 €</td>"),
        "{html}"
    );
    assert!(!text.contains("cid:"), "{text}");
    assert!(
        text.contains("Questions? Write to help@sender.test or see https://sender.test/help."),
        "{text}"
    );
    (html, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_markdown_body_is_alternative_inside_related_with_the_image_and_values_stay_text() {
    let (dns, mxs) = servers(|_| {}).await;
    let job = job_with_logo(&markdown_list(), MARKDOWN);
    let report = run(job.config(&dns, mxs.port)).await.expect("run");
    assert!(report.summary.all_delivered(), "{}", report.summary);
    let got = mxs.get(2).received();
    assert_eq!(got.len(), 2);

    let ann = received(&got, "ann@example.com");
    let (html, text) = assert_markdown_message(&ann);
    assert!(html.contains("<h1>Hello Ann Lee</h1>"), "{html}");
    assert!(
        html.contains("Your <strong>Pro</strong> plan renews soon. Note: none"),
        "{html}"
    );
    assert_eq!(
        hrefs(&html),
        ["mailto:help@sender.test", "https://sender.test/help"]
    );
    // Plain text: none of the Markdown's marks.
    for mark in ["**", "#", "<", "|", "!["] {
        assert!(!text.contains(mark), "{mark:?} in the text part:\n{text}");
    }
    assert!(
        text.contains(
            "Hello Ann Lee\r\n=============\r\n\r\nYour Pro plan renews soon. Note: none\r\n\r\n\
             Plan  Seats  Price\r\n----  -----  -----\r\nPro       3   12 €\r\n"
        ),
        "{text}"
    );

    // The hostile row: its values are text in both parts, with no tag, no link, no emphasis.
    let bob = received(&got, "bob@example.com");
    let (html, text) = assert_markdown_message(&bob);
    assert!(
        html.contains(
            "<h1>Hello &lt;script&gt;alert(1)&lt;/script&gt; **Bob** [x](javascript:alert(1))</h1>"
        ),
        "{html}"
    );
    assert!(
        html.contains("Note: https://evil.example/phish and [click](https://evil.example) # no"),
        "{html}"
    );
    assert!(
        !html.contains("<script") && !html.contains("<strong>Bob"),
        "{html}"
    );
    assert_eq!(
        hrefs(&html),
        ["mailto:help@sender.test", "https://sender.test/help"],
        "only the template's own links"
    );
    assert!(
        text.contains(&format!("Hello {HOSTILE_NAME}\r\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("Note: {HOSTILE_NOTE}\r\n")),
        "{text}"
    );
    assert!(text.contains("Team     12   12 €"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_from_the_data_to_javascript_makes_the_row_invalid_and_the_rest_is_delivered() {
    let (dns, mxs) = servers(|_| {}).await;
    let template = "From: a@sender.test\nTo: {{email}}\nSubject: s\n\n--- markdown ---\n[Your page]({{url}})\n";
    let csv =
        "email,url\nann@example.com,https://sender.test/u/1\nbob@example.com,javascript:alert(1)\n";
    let job = Job::new(csv, template);
    run(job.config(&dns, mxs.port)).await.expect("run");
    let rows = read_results(&job.results);
    assert_eq!(row(&rows, "ann@example.com")["status"], "delivered");
    let bob = row(&rows, "bob@example.com");
    assert_eq!(
        (bob["status"].as_str(), bob["step"].as_str()),
        ("invalid", "render")
    );
    assert!(
        bob["response"].contains("would point to \"javascript:alert(1)\", from the CSV data"),
        "{bob:?}"
    );
    let got = mxs.get(2).received();
    assert_eq!(got.len(), 1);
    let html = received(&got, "ann@example.com")
        .body_html(0)
        .unwrap()
        .into_owned();
    assert_eq!(hrefs(&html), ["https://sender.test/u/1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_html_only_template_gets_a_text_part_derived_from_it() {
    let (dns, mxs) = servers(|_| {}).await;
    let template = "From: a@sender.test\nTo: {{name}} <{{email}}>\nSubject: s\n\n--- html ---\n\
<h1>Hello {{name}}</h1>\n<p>See <a href=\"https://sender.test/account\">your <b>account</b></a>.</p>\n\
<ul><li>one</li><li>{{name}}</li></ul>\n<img src=\"{{inline \"img/logo.png\"}}\" alt=\"Acme\">\n";
    let job = job_with_logo("email,name\nann@example.com,Ann & <Co>\n", template);
    let report = run(job.config(&dns, mxs.port)).await.expect("run");
    assert!(report.summary.all_delivered(), "{}", report.summary);
    let got = mxs.get(2).received();
    let msg = received(&got, "ann@example.com");
    assert_eq!(
        tree(&msg, 0),
        "multipart/related[multipart/alternative[text/plain,text/html],image/png]"
    );
    let html = msg.body_html(0).unwrap();
    assert!(
        html.contains("<h1>Hello Ann &amp; &lt;Co&gt;</h1>"),
        "{html}"
    );
    let text = msg.body_text(0).unwrap();
    assert_eq!(
        text,
        "Hello Ann & <Co>\r\n\r\nSee your account <https://sender.test/account>.\r\n- one\r\n- Ann & <Co>\r\n\r\nAcme\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_verifies_over_the_related_structure_and_a_changed_image_does_not() {
    let pem = include_str!("fixtures/dkim-ed25519.pem");
    let signer = Signer::from_pem(pem.as_bytes(), "s1", None).unwrap();
    let record = signer.dns_record();
    let (dns, mxs) = servers(|z| {
        z.txt("s1._domainkey.sender.test", &record);
    })
    .await;
    let job = job_with_logo(&markdown_list(), MARKDOWN);
    let mut cfg = job.config(&dns, mxs.port);
    cfg.message.dkim = Some(signer);
    let report: RunReport = run(cfg).await.expect("run");
    assert!(report.summary.all_delivered(), "{}", report.summary);
    let auth = verifier(dns.addr());
    let got = mxs.get(2).received();
    assert_eq!(got.len(), 2);
    for m in &got {
        assert_markdown_message(&MessageParser::default().parse(&m.data).unwrap());
        assert_eq!(dkim_results(&auth, &m.data).await, vec![DkimResult::Pass]);
        // The image's base64 changed by one character: the body hash no longer matches.
        let text = String::from_utf8(m.data.clone()).unwrap();
        let b64 = "iVBORw0KGgo";
        assert!(text.contains(b64), "{text}");
        let tampered = text.replacen(b64, "iVBORw0KGgp", 1);
        let r = dkim_results(&auth, tampered.as_bytes()).await;
        assert!(
            matches!(r[..], [DkimResult::Fail(_) | DkimResult::Neutral(_)]),
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_out_writes_an_html_preview_beside_each_eml() {
    let (dns, mxs) = servers(|_| {}).await;
    let job = job_with_logo(&markdown_list(), MARKDOWN);
    let out_dir = job.path("out");
    let out = binary()
        .arg("check")
        .arg(&job.csv)
        .arg(&job.template)
        .args(["--dns", &dns.addr().to_string(), "--smtp-port"])
        .arg(mxs.port.to_string())
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "000001-ann@example.com.eml",
            "000001-ann@example.com.html",
            "000002-bob@example.com.eml",
            "000002-bob@example.com.html"
        ]
    );
    use base64::Engine;
    let png64 = base64::engine::general_purpose::STANDARD.encode(PNG);
    for (eml, name) in [
        ("000001-ann@example.com", "Ann Lee"),
        (
            "000002-bob@example.com",
            "&lt;script&gt;alert(1)&lt;/script&gt; **Bob**",
        ),
    ] {
        let preview = std::fs::read_to_string(out_dir.join(format!("{eml}.html"))).unwrap();
        assert!(
            preview.starts_with("<!DOCTYPE html>\n<meta charset=\"utf-8\">\n<title>Your plan, "),
            "{preview}"
        );
        assert!(
            preview.contains(&format!("<img src=\"data:image/png;base64,{png64}")),
            "{preview}"
        );
        assert!(!preview.contains("cid:"), "{preview}");
        assert!(preview.contains(&format!("<h1>Hello {name}")), "{preview}");
        assert!(!preview.contains("<script"), "{preview}");
        assert!(preview.contains("<table>"), "{preview}");
        // The .eml is the message itself.
        let eml = std::fs::read(out_dir.join(format!("{eml}.eml"))).unwrap();
        assert_markdown_message(&MessageParser::default().parse(&eml).unwrap());
    }
    assert_eq!(mxs.total_connections(), 0, "check connects to no MX");
}

/// Runs `mailmerge SUB LIST TEMPLATE` against the test servers; (exit code, stdout, stderr).
fn command(sub: &str, job: &Job, dns: &DnsServer, port: u16) -> (Option<i32>, String, String) {
    let out = binary()
        .arg(sub)
        .arg(&job.csv)
        .arg(&job.template)
        .args(["--dns", &dns.addr().to_string(), "--smtp-port"])
        .arg(port.to_string())
        .args(["--retry", "100ms", "--quiet"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue: a recursive inline partial behind a column value aborted the process (stack
/// overflow) on the rows that set the column: no results file, and the rows delivered before
/// it were sent again by the next run. Such a template (and the others that could recurse or
/// nest without bound) is now refused when it is loaded: exit 2, file and line, nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn templates_that_could_recurse_or_nest_without_bound_are_refused_before_anything_is_sent() {
    let (dns, mxs) = servers(|_| {}).await;
    let head = "From: a@sender.test\nTo: {{email}}\nSubject: s\n\nHello\n";
    let cases = [
        (
            "{{#*inline \"p\"}}deeper {{> p}}{{/inline}}\n{{#if boom}}{{> p}}{{/if}}\n",
            ":6: partial \"p\" includes itself (p → p): a template may not recurse",
        ),
        (
            "{{#*inline \"a\"}}{{> b}}{{/inline}}{{#*inline \"b\"}}{{> a}}{{/inline}}\n{{#if boom}}{{> a}}{{/if}}\n",
            ":6: partial \"a\" includes itself (a → b → a)",
        ),
        (
            "{{#if boom}}{{#each this}}{{#each ../this}}\n{{#each ../../this}}{{this}}{{/each}}{{/each}}{{/each}}{{/if}}\n",
            ":7: {{#each}} nested more than 2 deep",
        ),
        (
            "{{> (lookup this \"boom\")}}\n",
            ":6: a partial is named in the template, not computed",
        ),
    ];
    let mut csv = String::from("email,boom\n");
    for i in 0..20 {
        let boom = if i % 5 == 3 { "yes" } else { "" };
        csv.push_str(&format!("u{i}@example.com,{boom}\n"));
    }
    for (body, expected) in cases {
        let job = Job::new(&csv, &format!("{head}{body}"));
        for sub in ["run", "check"] {
            let (code, stdout, stderr) = command(sub, &job, &dns, mxs.port);
            assert_eq!(code, Some(2), "{sub}: {stdout}{stderr}");
            let at = format!("{}{expected}", job.template.display());
            assert!(stderr.contains(&at), "{sub}: expected {at:?} in\n{stderr}");
            assert!(!job.results.exists());
        }
    }
    assert_eq!(mxs.total_connections(), 0);
}

/// Issue: nested `{{#each}}` over a row of 200 columns grew one message to 2.3 GB and the
/// process aborted on a 4 GB allocation. Every message is now rendered against a budget: the
/// rows that would exceed it are `invalid` with the reason, the run finishes, the others are
/// delivered once, a re-run sends nothing again, and `check` reports the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_whose_message_would_grow_past_the_limit_are_invalid_and_the_rest_delivered_once() {
    let (dns, mxs) = servers(|_| {}).await;
    let template = "From: a@sender.test\nTo: {{email}}\nSubject: s\n\nHello\n\
{{#if boom}}{{#each this}}{{#each ../this}}{{this}}{{/each}}{{/each}}{{/if}}\n";
    let columns: Vec<String> = (0..198).map(|i| format!("c{i}")).collect();
    let mut csv = format!("email,boom,{}\n", columns.join(","));
    let long = "v".repeat(1000);
    for i in 0..12 {
        // Rows 4 and 9: 200 × 200 values of 1,000 bytes, 40 MB, past the 25 MiB budget.
        let boom = matches!(i, 3 | 8);
        let value = if boom { long.as_str() } else { "x" };
        let cells = vec![value; columns.len()].join(",");
        csv.push_str(&format!(
            "u{i}@example.com,{},{cells}\n",
            if boom { "yes" } else { "" }
        ));
    }
    let job = Job::new(&csv, template);

    let (code, stdout, stderr) = command("check", &job, &dns, mxs.port);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("     10  would be sent"), "{stdout}");
    assert!(stdout.contains("      2  invalid"), "{stdout}");
    for line in [5, 10] {
        let problem = format!(
            "{}:{line}: the rendered message would be larger than 26214400 bytes (the limit per message)",
            job.csv.display()
        );
        assert!(stdout.contains(&problem), "{problem:?} not in\n{stdout}");
    }

    for attempt in 0..2 {
        run(job.config(&dns, mxs.port))
            .await
            .expect("the run finishes");
        let rows = read_results(&job.results);
        assert_eq!(rows.len(), 12, "one result row per input row");
        for (i, r) in rows.iter().enumerate() {
            let (status, step) = (r["status"].as_str(), r["step"].as_str());
            if matches!(i, 3 | 8) {
                assert_eq!((status, step), ("invalid", "render"), "{attempt}: {r:?}");
                assert!(
                    r["response"].contains("larger than 26214400 bytes"),
                    "{r:?}"
                );
            } else if attempt == 0 {
                assert_eq!(status, "delivered", "{r:?}");
            }
        }
        // Delivered once: the re-run sends nothing again.
        let got = mxs.get(2).received();
        assert_eq!(got.len(), 10, "after run {attempt}");
        let mut rcpts: Vec<&str> = got.iter().map(|m| m.rcpt_to.as_str()).collect();
        rcpts.sort_unstable();
        rcpts.dedup();
        assert_eq!(rcpts.len(), 10);
    }
}

/// The `text` code blocks of a Markdown file after the heading `section`, in order.
pub(crate) fn code_blocks(file: &str, section: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let start = doc
        .find(section)
        .unwrap_or_else(|| panic!("{section} in {file}"));
    doc[start..]
        .split("```text\n")
        .skip(1)
        .map(|b| b[..b.find("```").expect("closed")].to_string())
        .collect()
}

/// Renders `template` (images from `templates/`) for one row.
fn render_doc(template: &str, row: &[(&str, &str)]) -> mailmerge::template::Rendered {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let t = mailmerge::template::MessageTemplate::parse(template, Path::new("doc.hbs"), &dir)
        .expect("the documented template is valid");
    let columns: Vec<String> = row.iter().map(|(c, _)| c.to_string()).collect();
    let fields: Vec<String> = row.iter().map(|(_, v)| v.to_string()).collect();
    t.check_columns(&columns).unwrap();
    t.render(&columns, &fields).unwrap()
}

/// The examples in README.md and docs/templates.md render as they say, and
/// `templates/renewal.hbs` is the documented Markdown example.
#[test]
fn the_documented_templates_render_as_documented() {
    let ann = [
        ("email", "ann.lee@example.com"),
        ("name", "Ann Lee"),
        ("plan", "Pro"),
        ("renewal_date", "2026-12-01"),
        ("vip", "yes"),
    ];
    let readme = code_blocks("README.md", "## A first template");
    let r = render_doc(&readme[0], &ann);
    assert!(
        r.html
            .unwrap()
            .contains("<p>your <strong>Pro</strong> plan renews on 2026-12-01.\r\nAs a VIP")
    );
    assert_eq!(
        r.text.unwrap(),
        "Hello Ann Lee,\r\n\r\nyour Pro plan renews on 2026-12-01.\r\nAs a VIP customer you keep your 20% discount.\r\n"
    );

    let md = code_blocks("docs/templates.md", "## Markdown bodies");
    let file = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/renewal.hbs"),
    )
    .unwrap();
    assert_eq!(
        md[0], file,
        "templates/renewal.hbs is the documented example"
    );
    let r = render_doc(&md[0], &ann);
    assert_eq!(r.text.unwrap(), md[1].replace('\n', "\r\n"));
    assert_eq!(r.inline.len(), 1);
    assert_eq!(r.inline[0].content_type, "image/png");

    let html = code_blocks("docs/templates.md", "## A text part from the HTML");
    let r = render_doc(
        &html[0],
        &[
            ("email", "ann.lee@example.com"),
            ("name", "Ann Lee"),
            ("invoice", "2026-117"),
            ("amount", "120.00 €"),
            ("due", "2026-12-31"),
        ],
    );
    assert_eq!(r.text.unwrap(), html[1].replace('\n', "\r\n"));
}
