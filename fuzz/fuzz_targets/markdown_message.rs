//! Fuzz target: CSV rows rendered through a Markdown template (untrusted list data must never
//! become markup or links).
#![no_main]

#[path = "checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::markdown_message(data);
});
