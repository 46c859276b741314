//! The config file, `mailmerge.toml`: run options kept in a file so scheduled jobs don't repeat
//! long command lines.
//!
//! Why a file of *flags*: every key is the long name of a command-line option (`smtp-port`,
//! `dkim-key`, …) and means exactly what the flag means. The file is read with serde (unknown
//! keys and wrong types are errors naming the key and line), then turned into the equivalent
//! flags and handed to the same parser as the command line, placed before the user's own
//! arguments and only for options the command line did not give: so flags override the file,
//! the file overrides defaults, and every check the flag has applies to the key too.
//!
//! Adding a key is one line: a field in [`FileConfig`] named after the flag. A key that the
//! running subcommand has no flag for is ignored (`mailmerge check-sender` uses only `dns`,
//! `dkim-*`). Relative paths are relative to the config file's folder.
//!
//! ```toml
//! from = "bounces@news.acme.example"
//! helo = "mail.acme.example"
//! dkim-key = "keys/2026.pem"
//! dkim-selector = "s2026"
//! list-unsubscribe = ["https://acme.example/unsub/{{token}}", "mailto:unsub@acme.example"]
//! connections-per-site = 5
//! deadline = "2h"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Name searched for in the working directory when `--config` is not given.
pub const DEFAULT_NAME: &str = "mailmerge.toml";

/// Every key a config file may hold: the long name of a `run` (or `check-sender`) flag.
#[derive(Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// `--from`: envelope sender.
    pub from: Option<String>,
    /// `--helo`: EHLO name.
    pub helo: Option<String>,
    /// `--dns`: DNS server `IP:PORT`.
    pub dns: Option<SocketAddr>,
    /// `--dns-timeout`.
    pub dns_timeout: Option<String>,
    /// `--smtp-port`.
    pub smtp_port: Option<u16>,
    /// `--connections-per-site`.
    pub connections_per_site: Option<usize>,
    /// `--max-connections`.
    pub max_connections: Option<usize>,
    /// `--messages-per-connection`.
    pub messages_per_connection: Option<usize>,
    /// `--email-column`.
    pub email_column: Option<String>,
    /// `--allow-duplicates`.
    pub allow_duplicates: Option<bool>,
    /// `--retry`: e.g. `"1m,5m,15m"` or `"none"`.
    pub retry: Option<String>,
    /// `--deadline`.
    pub deadline: Option<String>,
    /// `--smtp-timeout`.
    pub smtp_timeout: Option<String>,
    /// `--quiet`.
    pub quiet: Option<bool>,
    /// `--dkim-key`: PEM private key (relative to the config file).
    pub dkim_key: Option<PathBuf>,
    /// `--dkim-selector`.
    pub dkim_selector: Option<String>,
    /// `--dkim-domain`.
    pub dkim_domain: Option<String>,
    /// `--list-unsubscribe` (repeatable): URI templates.
    pub list_unsubscribe: Option<Vec<String>>,
    /// `--tls`: `opportunistic`, `required` or `disabled`.
    pub tls: Option<String>,
    /// `--rate-per-site`: e.g. `"100/min"`.
    pub rate_per_site: Option<String>,
    /// `--connect-timeout`.
    pub connect_timeout: Option<String>,
    /// `--timeout` (repeatable): `PHASE=DURATION`.
    pub timeout: Option<Vec<String>>,
}

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
    /// Not TOML, unknown key, or a value of the wrong type (the message names key and line).
    #[error("invalid config {path}: {message}")]
    Invalid {
        /// File.
        path: PathBuf,
        /// toml/serde's message, with the line and the key.
        message: String,
    },
}

/// One option from the file, as the flag it stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigOption {
    /// Key = long flag name.
    pub key: String,
    /// Values (several for a repeatable flag); empty for a switch that is on.
    pub values: Vec<String>,
}

impl ConfigOption {
    /// The command-line tokens: `--key=v` (per value; `=` so a value may start with `-`), or
    /// `--key` for a switch.
    pub fn to_args(&self) -> Vec<String> {
        if self.values.is_empty() {
            return vec![format!("--{}", self.key)];
        }
        self.values
            .iter()
            .map(|v| format!("--{}={v}", self.key))
            .collect()
    }
}

impl FileConfig {
    /// Parses TOML text; `path` is for messages and resolves relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: Self = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: path.into(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        if let Some(p) = &mut cfg.dkim_key
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
        Ok(cfg)
    }

    /// Reads a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// The config file to use: `explicit` (`--config`), else `mailmerge.toml` in `cwd` if it
    /// exists, else none.
    pub fn locate(explicit: Option<&Path>, cwd: &Path) -> Option<PathBuf> {
        match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => {
                let p = cwd.join(DEFAULT_NAME);
                p.is_file().then_some(p)
            }
        }
    }

    /// The options set in the file, in key order. Switches set to `false` are left out (a flag
    /// cannot be turned off from the file, only not turned on).
    pub fn options(&self) -> Vec<ConfigOption> {
        let Ok(serde_json::Value::Object(map)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        let scalar = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        let mut out = Vec::new();
        for (key, value) in map {
            let values = match &value {
                serde_json::Value::Null | serde_json::Value::Bool(false) => continue,
                serde_json::Value::Bool(true) => Vec::new(),
                serde_json::Value::Array(items) => items.iter().filter_map(scalar).collect(),
                v => scalar(v).into_iter().collect(),
            };
            out.push(ConfigOption { key, values });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_and_turns_them_into_flags() {
        let text = "from = \"b@acme.example\"\nsmtp-port = 2525\nallow-duplicates = true\n\
                    quiet = false\ndkim-key = \"keys/k.pem\"\n\
                    list-unsubscribe = [\"https://acme.example/u/{{token}}\", \"mailto:u@acme.example\"]\n";
        let cfg = FileConfig::parse(text, Path::new("/etc/mm/mailmerge.toml")).unwrap();
        assert_eq!(
            cfg.dkim_key.as_deref(),
            Some(Path::new("/etc/mm/keys/k.pem"))
        );
        let args: Vec<String> = cfg.options().iter().flat_map(|o| o.to_args()).collect();
        let joined = args.join(" ");
        assert!(joined.contains("--from=b@acme.example"), "{joined}");
        assert!(joined.contains("--smtp-port=2525"), "{joined}");
        let cfg = FileConfig::parse(
            "tls = \"required\"\nrate-per-site = \"100/min\"\ntimeout = [\"rcpt=1m\", \"data-end=5m\"]\n",
            Path::new("mailmerge.toml"),
        )
        .unwrap();
        let args: Vec<String> = cfg.options().iter().flat_map(|o| o.to_args()).collect();
        assert!(args.contains(&"--tls=required".to_string()), "{args:?}");
        assert!(
            args.contains(&"--rate-per-site=100/min".to_string()),
            "{args:?}"
        );
        assert!(args.contains(&"--timeout=rcpt=1m".to_string()), "{args:?}");
        assert!(joined.contains("--allow-duplicates"), "{joined}");
        assert!(!joined.contains("--quiet"), "{joined}");
        assert!(joined.contains("--dkim-key=/etc/mm/keys/k.pem"), "{joined}");
        assert!(
            joined.contains(
                "--list-unsubscribe=https://acme.example/u/{{token}} --list-unsubscribe=mailto:u@acme.example"
            ),
            "{joined}"
        );
    }

    #[test]
    fn errors_name_the_key() {
        let e = FileConfig::parse("smtp-prot = 25\n", Path::new("m.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("smtp-prot") && msg.contains("m.toml"), "{msg}");
        let e = FileConfig::parse("\nsmtp-port = \"x\"\n", Path::new("m.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("smtp-port") && msg.contains("line 2"), "{msg}");
        let e = FileConfig::parse("dns = \"nope\"\n", Path::new("m.toml")).unwrap_err();
        assert!(e.to_string().contains("dns"), "{e}");
    }

    #[test]
    fn locates_the_file_in_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(FileConfig::locate(None, dir.path()), None);
        std::fs::write(dir.path().join(DEFAULT_NAME), "").unwrap();
        assert_eq!(
            FileConfig::locate(None, dir.path()),
            Some(dir.path().join(DEFAULT_NAME))
        );
        assert_eq!(
            FileConfig::locate(Some(Path::new("x.toml")), dir.path()),
            Some(PathBuf::from("x.toml"))
        );
    }
}
