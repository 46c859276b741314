//! The integration tests, one binary (as ripgrep does): every file in `tests/` is a module of
//! this crate, so the suite links mailmerge once. `support` holds the shared harness: real DNS,
//! SMTP, HTTPS servers and MTAs on loopback.

// The fuzz targets' checks, shared with `fuzz/` (see `fuzz_props`).
#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;
mod support;

mod bounce_corpus;
mod bounce_forgery;
mod bounce_imap;
mod bounce_mta;
mod bounces;
mod cli;
mod dane;
mod deliverability;
mod e2e;
mod fuzz_props;
mod hostile;
mod input;
mod interop;
mod mta;
mod mta_sts;
mod postfix;
mod postgres;
mod protocol;
mod providers;
mod report;
mod resume;
mod scale;
mod sender_memory;
mod spamassassin;
mod suppress;
mod templates;
mod tls_policy;
