//! The interop campaign: a list and a template with every line a server could take for the
//! end of data or mangle. tests/interop.rs sends it to each real MTA, and
//! benches/chasquid_vs_postfix.rs times it (the same list and template for both servers).

use std::fmt::Write as _;

/// Every line a server could take for the end of data or mangle: a lone ".", "..", lines
/// starting with dots (per row too, from the `note` column), a 900-octet header line (under
/// SMTP's 998), body lines past 998 (the message stage QP-encodes them: soft line breaks), one
/// whose QP continuation starts with a dot, trailing spaces, a final ".".
pub fn template() -> String {
    format!(
        "From: Sender <news@sender.test>\n\
         To: {{{{name}}}} <{{{{email}}}}>\n\
         Subject: Interop {{{{name}}}}\n\
         X-Long: {}\n\
         \n\
         Hi {{{{name}}}},\n\
         .\n\
         ..\n\
         .leading dot for {{{{name}}}}\n\
         {{{{note}}}}\n\
         {}\n\
         {}\n\
         {}.after a soft line break\n\
         trailing spaces   \n\
         bye\n\
         .\n",
        "h".repeat(892),
        "x".repeat(998),
        "word ".repeat(300).trim_end(),
        "y".repeat(75),
    )
}

/// `n` rows, `user{i}@{domain}`, with notes that start with dots.
pub fn list(n: usize, domain: &str) -> String {
    let mut csv = String::from("email,name,note\n");
    for i in 0..n {
        let note = match i % 4 {
            0 => format!(".row {i}"),
            1 => ".".to_string(),
            2 => format!("..{i}.."),
            _ => format!("plain {i}"),
        };
        writeln!(csv, "user{i}@{domain},User {i},{note}").unwrap();
    }
    csv
}
