//! Fuzz target: the SMTP client in a whole session with a server whose replies are the
//! fuzzer's bytes (see `checks::smtp_session`).
#![no_main]

#[path = "checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::smtp_session(data));
