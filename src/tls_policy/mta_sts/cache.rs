//! The on-disk policy cache: what makes MTA-STS "trust on first use" work across runs.
//!
//! RFC 8461 §5.1 has senders keep a fetched policy for its `max_age` and apply it even when the
//! TXT record or the policy host cannot be reached later — an attacker who blocks both must
//! not be able to strip the policy. A batch tool that forgot its policies between runs would
//! be open to exactly that, so the policies live in one JSON file (by default
//! `$XDG_CACHE_HOME/mailmerge/mta-sts.json`), read when a resolver is built and written back
//! (temporary file, then rename) when the run has looked up all its domains.
//!
//! The cache is an optimisation and a defence, never a reason to fail: a missing, unreadable
//! or corrupt file is an empty cache, and a malformed entry is skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::policy::{Mode, Policy};

/// The format written; a file of another version is ignored.
const FORMAT_VERSION: u32 = 1;

/// One cached policy, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Entry {
    id: String,
    mode: Mode,
    mx: Vec<String>,
    max_age: u64,
    /// When the policy was fetched (Unix seconds).
    fetched_at: u64,
    /// When it stops being valid: `fetched_at + max_age` (Unix seconds).
    expires_at: u64,
}

/// The file as a whole. Entries are kept as raw JSON until read one by one, so that one bad
/// entry does not lose the others.
#[derive(Serialize, Deserialize)]
struct File<E> {
    version: u32,
    policies: BTreeMap<String, E>,
}

/// A policy in memory with its timestamps.
#[derive(Clone, Debug)]
struct Cached {
    policy: Arc<Policy>,
    fetched_at: u64,
    expires_at: u64,
}

/// The policies known for each domain (lower-case A-label, no trailing dot).
#[derive(Debug, Default)]
pub(crate) struct Cache {
    path: Option<PathBuf>,
    entries: BTreeMap<String, Cached>,
    dirty: bool,
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Cache {
    /// Loads the cache from `path` (`None`: in memory only). Never fails: anything unreadable
    /// is an empty cache.
    pub(crate) fn load(path: Option<PathBuf>) -> Self {
        let entries = path.as_deref().map(read_entries).unwrap_or_default();
        Self {
            path,
            entries,
            dirty: false,
        }
    }

    /// The cache file, if any.
    pub(crate) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The policy cached for `domain` if it has not expired at `now`.
    pub(crate) fn valid(&self, domain: &str, now: u64) -> Option<Arc<Policy>> {
        self.entries
            .get(domain)
            .filter(|c| now < c.expires_at)
            .map(|c| c.policy.clone())
    }

    /// Records `policy` as fetched for `domain` at `now`, replacing any earlier one.
    pub(crate) fn store(&mut self, domain: &str, policy: Arc<Policy>, now: u64) {
        let expires_at = now.saturating_add(policy.max_age);
        self.entries.insert(
            domain.to_string(),
            Cached {
                policy,
                fetched_at: now,
                expires_at,
            },
        );
        self.dirty = true;
    }

    /// Writes the unexpired entries back, atomically, if anything changed since loading.
    pub(crate) fn save(&mut self, now: u64) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        let file = File {
            version: FORMAT_VERSION,
            policies: self
                .entries
                .iter()
                .filter(|(_, c)| now < c.expires_at)
                .map(|(domain, c)| {
                    let entry = Entry {
                        id: c.policy.id.clone(),
                        mode: c.policy.mode,
                        mx: c.policy.mx.clone(),
                        max_age: c.policy.max_age,
                        fetched_at: c.fetched_at,
                        expires_at: c.expires_at,
                    };
                    (domain.clone(), entry)
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        write_atomically(&path, &json)?;
        self.dirty = false;
        Ok(())
    }
}

fn read_entries(path: &Path) -> BTreeMap<String, Cached> {
    let Ok(bytes) = std::fs::read(path) else {
        return BTreeMap::new();
    };
    let Ok(file) = serde_json::from_slice::<File<serde_json::Value>>(&bytes) else {
        return BTreeMap::new();
    };
    if file.version != FORMAT_VERSION {
        return BTreeMap::new();
    }
    file.policies
        .into_iter()
        .filter_map(|(domain, value)| {
            let e: Entry = serde_json::from_value(value).ok()?;
            let policy = Policy {
                id: e.id,
                mode: e.mode,
                mx: e.mx,
                max_age: e.max_age,
            };
            Some((
                domain.trim_end_matches('.').to_ascii_lowercase(),
                Cached {
                    policy: Arc::new(policy),
                    fetched_at: e.fetched_at,
                    expires_at: e.expires_at,
                },
            ))
        })
        .collect()
}

/// Writes `bytes` over `path` through a temporary file renamed into place
/// ([`crate::files::write`]: never through a link), so that a reader (or a crash) never sees
/// half a file. Creates the parent folder if needed.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::files::write(path, bytes)
}

/// The default cache file: `$XDG_CACHE_HOME/mailmerge/mta-sts.json`, else
/// `$HOME/.cache/mailmerge/mta-sts.json`; `None` when neither variable is set (absolute).
pub fn default_cache_path() -> Option<PathBuf> {
    Some(crate::files::user_dir("XDG_CACHE_HOME", ".cache")?.join("mta-sts.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(id: &str, max_age: u64) -> Arc<Policy> {
        Arc::new(Policy {
            id: id.into(),
            mode: Mode::Enforce,
            mx: vec!["mx.example.com".into(), "*.example.net".into()],
            max_age,
        })
    }

    #[test]
    fn entries_are_valid_until_they_expire() {
        let mut c = Cache::load(None);
        c.store("example.com", policy("a", 100), 1_000);
        assert_eq!(c.valid("example.com", 1_099).unwrap().id, "a");
        assert!(c.valid("example.com", 1_100).is_none());
        assert!(c.valid("other.example", 1_000).is_none());
        // max_age 0: never valid from the cache.
        c.store("zero.example", policy("z", 0), 1_000);
        assert!(c.valid("zero.example", 1_000).is_none());
    }

    #[test]
    fn saved_entries_load_back_and_expired_ones_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/mta-sts.json");
        let mut c = Cache::load(Some(path.clone()));
        c.store("example.com", policy("a", 100), 1_000);
        c.store("old.example", policy("o", 10), 1_000);
        c.save(1_050).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["policies"]["example.com"]["mode"], "enforce");
        assert_eq!(json["policies"]["example.com"]["fetched_at"], 1_000);
        assert_eq!(json["policies"]["example.com"]["expires_at"], 1_100);
        assert!(json["policies"].get("old.example").is_none());
        // No temporary file left behind.
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );

        let c = Cache::load(Some(path));
        assert_eq!(*c.valid("example.com", 1_050).unwrap(), *policy("a", 100));
    }

    #[test]
    fn a_missing_corrupt_or_foreign_file_is_an_empty_cache_and_bad_entries_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mta-sts.json");
        assert!(Cache::load(Some(path.clone())).entries.is_empty());
        for junk in [
            "",
            "{",
            "[]",
            "{\"version\":2,\"policies\":{}}",
            "\u{0}\u{1}",
        ] {
            std::fs::write(&path, junk).unwrap();
            assert!(
                Cache::load(Some(path.clone())).entries.is_empty(),
                "{junk:?}"
            );
        }
        std::fs::write(
            &path,
            r#"{"version":1,"policies":{
                "bad.example":{"id":"x","mode":"sometimes"},
                "Good.Example.":{"id":"g","mode":"testing","mx":["m.good.example"],
                                 "max_age":60,"fetched_at":10,"expires_at":70}}}"#,
        )
        .unwrap();
        let c = Cache::load(Some(path));
        assert_eq!(c.entries.len(), 1);
        assert_eq!(c.valid("good.example", 20).unwrap().mode, Mode::Testing);
    }

    #[test]
    fn nothing_is_written_without_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mta-sts.json");
        let mut c = Cache::load(Some(path.clone()));
        c.save(0).unwrap();
        assert!(!path.exists());
    }
}
