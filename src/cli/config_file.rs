//! The config file, `mailmerge.toml`: options kept in a file so scheduled jobs don't repeat
//! long command lines.
//!
//! Every key is the long name of a flag (`smtp-port`, `dkim-key`, …) and means exactly what
//! the flag means: the file's values become the defaults of those same flags, checked by the
//! same value parsers, so flags override the file and the file overrides built-in defaults.
//! A key that no subcommand has is an error naming the file and line; a key that only another
//! subcommand has is ignored (`check-sender` uses only `dns` and `dkim-*`). Relative paths are
//! relative to the file's folder.
//!
//! ```toml
//! from = "bounces@news.acme.example"
//! helo = "mail.acme.example"
//! dkim-key = "keys/2026.pem"
//! list-unsubscribe = ["https://acme.example/unsub/{{token}}", "mailto:unsub@acme.example"]
//! connections-per-site = 5
//! deadline = "2h"
//! daily-cap = 20000
//!
//! [provider.acme]                  # a provider of your own, or a built-in one changed
//! mx_suffixes = ["mx.acme.example"]
//! connections = 2
//! messages_per_connection = 50
//! rate = "100/s"
//!
//! [[backoff]]                      # a backoff rule (see docs/providers.md)
//! pattern = "[TS03]"
//! provider = "yahoo"
//! rate = "10/min"
//! duration = "30m"
//!
//! [warmup]                         # day of sending → cap per provider
//! 1 = 500
//! 2 = 1000
//! 7 = 5000
//! ```
//!
//! The three tables are values of hidden flags (`--provider`, `--backoff`, `--warmup`), so
//! they follow the same rule: each `[provider.NAME]` and `[[backoff]]` table becomes one
//! value (its keys as a TOML inline table's inside), `[warmup]` becomes `1=500,2=1000,…`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Arg, ArgAction, Command, ValueHint};
use thiserror::Error;
use toml::Spanned;

/// Name searched for in the working directory when `--config` is not given.
pub const DEFAULT_NAME: &str = "mailmerge.toml";

/// The config file is unusable (exit 2).
#[derive(Debug, Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML.
    #[error("invalid config {path}: {message}")]
    Syntax {
        /// File.
        path: PathBuf,
        /// The TOML parser's message, with the line.
        message: String,
    },
    /// A key no subcommand has, or a value its flag refuses.
    #[error("invalid config {path}, line {line}: {key}: {message}")]
    Key {
        /// File.
        path: PathBuf,
        /// 1-based line of the key.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A config file, read.
pub struct ConfigFile {
    path: PathBuf,
    text: String,
    entries: BTreeMap<Spanned<String>, toml::Value>,
}

impl ConfigFile {
    /// The file to use: `explicit` (`--config`), else `mailmerge.toml` in `cwd` if present.
    pub fn locate(explicit: Option<&Path>, cwd: &Path) -> Option<PathBuf> {
        match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => Some(cwd.join(DEFAULT_NAME)).filter(|p| p.is_file()),
        }
    }

    /// Reads and parses the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(text, path)
    }

    /// Parses TOML text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: String, path: &Path) -> Result<Self, ConfigError> {
        let syntax = |e: toml::de::Error| ConfigError::Syntax {
            path: path.into(),
            message: e.to_string().trim_end().to_string(),
        };
        // Keys with their spans (for error lines), values from a plain parse: toml 0.8 cannot
        // deserialize a `Spanned<Value>` holding a dotted table header (`[provider.acme]`).
        let spans: BTreeMap<Spanned<String>, serde::de::IgnoredAny> =
            toml::from_str(&text).map_err(syntax)?;
        let mut plain: toml::Table = toml::from_str(&text).map_err(syntax)?;
        let entries = spans
            .into_keys()
            .filter_map(|k| plain.remove(k.get_ref()).map(|v| (k, v)))
            .collect();
        Ok(Self {
            path: path.into(),
            text,
            entries,
        })
    }

    fn error(&self, key: &Spanned<String>, message: String) -> ConfigError {
        let line = self.text[..key.span().start.min(self.text.len())]
            .matches('\n')
            .count()
            + 1;
        ConfigError::Key {
            path: self.path.clone(),
            line,
            key: key.get_ref().clone(),
            message,
        }
    }

    /// Makes the file's values the defaults of `sub`'s flags. `all` is the whole command, to
    /// tell a key of another subcommand from an unknown one. Returns the subcommand and the
    /// keys it took.
    pub fn apply(
        &self,
        all: &Command,
        mut sub: Command,
    ) -> Result<(Command, Vec<String>), ConfigError> {
        let mut used = Vec::new();
        for (key, value) in &self.entries {
            let find = |c: &Command| {
                c.get_arguments()
                    .find(|a| a.get_long() == Some(key.get_ref()))
                    .cloned()
            };
            let Some(arg) = find(&sub) else {
                if !all.get_subcommands().any(|c| find(c).is_some()) {
                    return Err(self.error(key, "no such option".into()));
                }
                continue;
            };
            let values = self.values(key, value, &arg)?;
            if values.is_empty() {
                continue; // a switch set to false: not turned on
            }
            if !matches!(arg.get_action(), ArgAction::SetTrue) {
                check_values(&arg, &values).map_err(|e| self.error(key, clap_message(&e)))?;
            }
            sub = sub.mut_arg(arg.get_id().clone(), |a| a.default_values(values));
            used.push(key.get_ref().clone());
        }
        Ok((sub, used))
    }

    /// A TOML value as the flag's values (several for a repeatable flag).
    fn values(
        &self,
        key: &Spanned<String>,
        value: &toml::Value,
        arg: &Arg,
    ) -> Result<Vec<String>, ConfigError> {
        if let Some(values) = self.table_values(key, value) {
            return values;
        }
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let is_path = matches!(
            arg.get_value_hint(),
            ValueHint::FilePath | ValueHint::DirPath | ValueHint::AnyPath
        );
        let scalar = |v: &toml::Value| match v {
            // A URL (`postgres://…` for a store) is no relative path.
            toml::Value::String(s)
                if is_path
                    && Path::new(s).is_relative()
                    && mailmerge::store::url_scheme(s).is_none() =>
            {
                Ok(self
                    .path
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(s)
                    .display()
                    .to_string())
            }
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(n) => Ok(n.to_string()),
            other => Err(self.error(
                key,
                format!("expected a string or number, found {}", other.type_str()),
            )),
        };
        match value {
            toml::Value::Boolean(on) if switch => {
                Ok(if *on { vec!["true".into()] } else { Vec::new() })
            }
            _ if switch => Err(self.error(key, "expected true or false".into())),
            toml::Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
                items.iter().map(scalar).collect()
            }
            v => Ok(vec![scalar(v)?]),
        }
    }
}

impl ConfigFile {
    /// The values of a table-valued key (`[provider.NAME]`, `[[backoff]]`, `[warmup]`);
    /// `None` for any other key.
    fn table_values(
        &self,
        key: &Spanned<String>,
        value: &toml::Value,
    ) -> Option<Result<Vec<String>, ConfigError>> {
        let expected = |what: &str| Some(Err(self.error(key, format!("expected {what}"))));
        match (key.get_ref().as_str(), value) {
            ("provider", toml::Value::Table(t)) => {
                let mut out = Vec::new();
                for (name, spec) in t {
                    let toml::Value::Table(spec) = spec else {
                        return expected("[provider.NAME] tables");
                    };
                    let name = toml::Value::String(name.clone());
                    out.push(format!("name = {name}, {}", inline(spec)));
                }
                Some(Ok(out))
            }
            ("provider", _) => expected("[provider.NAME] tables"),
            ("backoff", toml::Value::Array(rules)) => {
                let mut out = Vec::new();
                for r in rules {
                    let toml::Value::Table(r) = r else {
                        return expected("[[backoff]] tables");
                    };
                    out.push(inline(r));
                }
                Some(Ok(out))
            }
            ("backoff", _) => expected("[[backoff]] tables"),
            ("warmup", toml::Value::Table(t)) => {
                let mut steps = Vec::new();
                for (day, cap) in t {
                    let toml::Value::Integer(cap) = cap else {
                        return expected("day = cap (a number)");
                    };
                    steps.push(format!("{day}={cap}"));
                }
                Some(Ok(vec![steps.join(",")]))
            }
            _ => None,
        }
    }
}

/// A table's keys as a TOML inline table's inside: `a = 1, b = "x"`.
fn inline(t: &toml::map::Map<String, toml::Value>) -> String {
    t.iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses `values` with `arg`'s own value parser, alone in a command of its own.
fn check_values(arg: &Arg, values: &[String]) -> Result<(), clap::Error> {
    let long = arg.get_long().unwrap_or_default();
    Command::new("config")
        .no_binary_name(true)
        .arg(arg.clone().required(false))
        .try_get_matches_from(values.iter().map(|v| format!("--{long}={v}")))
        .map(drop)
}

/// clap's message for a refused value, without its "error: " prefix and usage lines.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.trim_start_matches("error: ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run_cmd() -> (Command, Command) {
        let all = super::super::args::Cli::command();
        let run = all.find_subcommand("run").cloned().expect("run");
        (all, run)
    }

    fn defaults(text: &str, path: &str) -> Result<clap::ArgMatches, ConfigError> {
        let (all, run) = run_cmd();
        let file = ConfigFile::parse(text.into(), Path::new(path))?;
        let (run, _) = file.apply(&all, run)?;
        Ok(run.get_matches_from(["run", "l.csv", "t.hbs"]))
    }

    #[test]
    fn values_become_the_flags_defaults_typed_by_the_same_parsers() {
        let m = defaults(
            "from = \"b@acme.example\"\nsmtp-port = 2525\nallow-duplicates = true\nquiet = false\n\
             dkim-key = \"keys/k.pem\"\ntimeout = [\"rcpt=1m\", \"data-end=5m\"]\n\
             list-unsubscribe = [\"https://acme.example/u/{{token}}\", \"mailto:u@acme.example\"]\n",
            "/etc/mm/mailmerge.toml",
        )
        .unwrap();
        assert_eq!(m.get_one::<u16>("smtp_port"), Some(&2525));
        assert!(m.get_flag("allow_duplicates"));
        assert!(!m.get_flag("quiet"));
        assert_eq!(
            m.get_one::<PathBuf>("dkim_key"),
            Some(&PathBuf::from("/etc/mm/keys/k.pem"))
        );
        assert_eq!(
            m.get_many::<(String, std::time::Duration)>("timeout")
                .map(Iterator::count),
            Some(2)
        );
        assert_eq!(
            m.get_many::<String>("list_unsubscribe")
                .map(Iterator::count),
            Some(2)
        );
    }

    #[test]
    fn provider_backoff_and_warmup_tables_become_the_hidden_flags_values() {
        use mailmerge::provider::caps::Warmup;
        use mailmerge::provider::{BackoffRule, ProviderOverride};
        let m = defaults(
            "daily-cap = 100\n[provider.acme]\nmx_suffixes = [\"mx.acme.example\"]\nconnections = 2\n\
             rate = \"10/s\"\n[provider.google]\nconnections = 3\n\
             [[backoff]]\npattern = \"[TS03]\"\nprovider = \"yahoo\"\nrate = \"20/min\"\n\
             duration = \"10m\"\n[warmup]\n1 = 500\n7 = 5000\n",
            "m.toml",
        )
        .unwrap();
        assert_eq!(
            m.get_many::<ProviderOverride>("provider")
                .map(Iterator::count),
            Some(2)
        );
        let rules: Vec<&BackoffRule> = m.get_many("backoff").unwrap().collect();
        assert_eq!(rules[0].pattern, "[ts03]");
        assert_eq!(
            m.get_one::<Warmup>("warmup"),
            Some(&Warmup(vec![(1, 500), (7, 5000)]))
        );
        assert_eq!(m.get_one::<usize>("daily_cap"), Some(&100));
        let e = defaults("[provider.x]\nrate = \"fast\"\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("provider"), "{e}");
    }

    #[test]
    fn errors_name_the_file_the_line_and_the_key() {
        let e = defaults("smtp-port = 25\nsmtp-prot = 25\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("smtp-prot") && e.contains("m.toml") && e.contains("line 2"),
            "{e}"
        );
        let e = defaults("\nsmtp-port = \"x\"\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("smtp-port") && e.contains("line 2"), "{e}");
        let e = defaults("deadline = \"5 fortnights\"\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("deadline") && e.contains("line 1") && e.contains("5 fortnights"),
            "{e}"
        );
        let e = defaults("dns = \"nope\"\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dns"), "{e}");
        let e = defaults("tls = \"sometimes\"\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls") && e.contains("sometimes"), "{e}");
    }

    #[test]
    fn the_tls_policy_keys_are_config_keys() {
        use mailmerge::tls_policy::PolicyMode;
        let m = defaults(
            "tls-policy = \"opportunistic\"\ntls-ca = [\"ca/private.pem\"]\n\
             dnssec-trust-anchor = \"root.key\"\nmta-sts-cache = \"/var/cache/mm/sts.json\"\n",
            "/etc/mm/mailmerge.toml",
        )
        .unwrap();
        assert_eq!(
            m.get_one::<PolicyMode>("tls_policy"),
            Some(&PolicyMode::Opportunistic)
        );
        let ca: Vec<&PathBuf> = m.get_many("tls_ca").unwrap().collect();
        assert_eq!(ca, [&PathBuf::from("/etc/mm/ca/private.pem")]);
        assert_eq!(
            m.get_one::<PathBuf>("dnssec_trust_anchor"),
            Some(&PathBuf::from("/etc/mm/root.key"))
        );
        let e = defaults("tls-policy = \"strict\"\n", "m.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls-policy") && e.contains("strict"), "{e}");
    }

    #[test]
    fn a_key_of_another_subcommand_is_ignored() {
        let (all, sender) = {
            let all = super::super::args::Cli::command();
            let s = all
                .find_subcommand("check-sender")
                .cloned()
                .expect("check-sender");
            (all, s)
        };
        let file = ConfigFile::parse(
            "deadline = \"1h\"\ndkim-selector = \"s\"\n".into(),
            Path::new("m.toml"),
        )
        .unwrap();
        let (_, used) = file.apply(&all, sender).unwrap();
        assert_eq!(used, ["dkim-selector"]);
    }

    #[test]
    fn locates_the_file_in_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ConfigFile::locate(None, dir.path()), None);
        std::fs::write(dir.path().join(DEFAULT_NAME), "").unwrap();
        assert_eq!(
            ConfigFile::locate(None, dir.path()),
            Some(dir.path().join(DEFAULT_NAME))
        );
        assert_eq!(
            ConfigFile::locate(Some(Path::new("x.toml")), dir.path()),
            Some(PathBuf::from("x.toml"))
        );
    }
}
