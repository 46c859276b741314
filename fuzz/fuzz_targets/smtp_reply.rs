//! Fuzz target: the SMTP reply parser (bytes from an untrusted server).
#![no_main]

#[path = "checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::smtp_reply(data));
