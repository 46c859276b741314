//! Fuzz target: CSV rows → address, rendered template, built message (untrusted list data).
#![no_main]

#[path = "checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::csv_message(data);
});
