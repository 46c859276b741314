//! The `mailmerge` command: flags (and the config file) → one validated `RunConfig` → the
//! library → exit code. Everything lives in [`cli`]; this file only dispatches.
//!
//! Exit codes: 0 every recipient delivered, 1 some were not (see the results CSV),
//! 2 nothing could be done (unreadable input, template error, bad flag), 130/143 interrupted
//! by SIGINT/SIGTERM (the results CSV and the journal are written first).

// mimalloc: rendering and MIME building allocate a lot of small strings; measured ≈8 % more
// messages/s than the system allocator on the delivery benchmark.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

use std::process::ExitCode;

use cli::args::Command;

fn main() -> ExitCode {
    let parsed = match cli::parse(std::env::args_os().collect()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mailmerge: {e}");
            return ExitCode::from(2);
        }
    };
    // One process-wide rustls crypto provider, before anything builds a TLS configuration.
    mailmerge::smtp::tls::install_crypto_provider();
    let rt = match mailmerge::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailmerge: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match parsed.cli.command {
        Command::Run(args) => rt.block_on(cli::commands::run(args, false)),
        Command::Check(args) => rt.block_on(cli::commands::run(args, true)),
        Command::CheckSender(args) => rt.block_on(cli::commands::check_sender_command(args)),
        Command::Suppress(args) => rt.block_on(cli::hygiene::suppress(args)),
        Command::Bounces(args) => rt.block_on(cli::bounces::bounces(args)),
        Command::Senders(args) => rt.block_on(cli::senders::senders(args)),
        Command::MergeResults(args) => cli::commands::merge_results(args),
        Command::Report(args) => cli::commands::report(args),
        Command::Generate(g) => cli::commands::generate(g.what),
    };
    result.unwrap_or_else(|e| {
        eprintln!("mailmerge: {e:#}");
        if let Some(note) = parsed.config_note {
            eprintln!("mailmerge: ({note})");
        }
        ExitCode::from(2)
    })
}
