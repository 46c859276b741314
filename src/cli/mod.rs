//! The command line: flags ([`args`]) plus the config file's defaults ([`config_file`]) →
//! one validated [`mailmerge::RunConfig`] ([`settings`]) → the library ([`commands`]).

pub mod args;
pub mod bounces;
pub mod commands;
pub mod config_file;
pub mod hygiene;
pub mod senders;
pub mod settings;
pub mod signals;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches};

use args::Cli;
use config_file::{ConfigError, ConfigFile};

/// The parsed command line and, when a config file supplied options, a note naming the file
/// and its keys (printed with any later option error).
pub struct Parsed {
    /// Flags and arguments, the config file's values filling in what the command line left.
    pub cli: Cli,
    /// `options k1, k2 came from config PATH`.
    pub config_note: Option<String>,
}

/// Parses `argv`: flags > config file > `--sandbox` defaults > built-in defaults. Exits on
/// `--help`, `--version` and flag errors, as clap does.
pub fn parse(argv: Vec<OsString>) -> Result<Parsed, ConfigError> {
    let all = Cli::command();
    let first = all.clone().get_matches_from(argv.clone());
    let Some((name, sub_m)) = first.subcommand() else {
        return Ok(Parsed {
            cli: Cli::from_arg_matches(&first).unwrap_or_else(|e| e.exit()),
            config_note: None,
        });
    };
    let Some(mut sub) = all.find_subcommand(name).cloned() else {
        unreachable!("clap matched subcommand {name}");
    };
    if sub_m.try_get_one::<bool>("sandbox").ok().flatten() == Some(&true) {
        // The sandbox is a demo on loopback: a quick retry, and a HELO name that is no host's.
        sub = sub
            .mut_arg("retry", |a| a.default_value("1s"))
            .mut_arg("helo", |a| a.default_value("mailmerge.sandbox.test"));
    }
    if name == "bounces" {
        bounces::refuse_password_on_command_line(sub_m);
    }
    let explicit = sub_m.try_get_one::<PathBuf>("config").ok().flatten();
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut config_note = None;
    if let Some(path) = ConfigFile::locate(explicit.map(PathBuf::as_path), &cwd) {
        let (with_file, used) = ConfigFile::load(&path)?.apply(&all, sub)?;
        sub = with_file;
        if !used.is_empty() {
            config_note = Some(format!(
                "options {} came from config {}",
                used.join(", "),
                path.display()
            ));
        }
    }
    let full = all.mut_subcommand(name, |_| sub);
    let cli = full
        .try_get_matches_from(argv)
        .and_then(|m| Cli::from_arg_matches(&m))
        .unwrap_or_else(|e| e.exit());
    Ok(Parsed { cli, config_note })
}
