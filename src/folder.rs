//! The one folder a job's files are read from: attachments (`Attachment:`, per row) and inline
//! images (`{{inline "logo.png"}}`, per template). Names come from the template and, for
//! attachments, from CSV values, which are untrusted: nothing they say may read a file outside
//! the folder.

use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// Why a file named relative to the folder cannot be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FolderError {
    /// No readable regular file of that name inside the folder. One neutral message for every
    /// cause (absent, outside the folder, a symlink out, not a file), naming the value as
    /// given: never the resolved path or the OS error, which would tell a list's author what
    /// exists on this machine.
    #[error("{0}")]
    Unavailable(String),
    /// The file is larger than the caller's limit.
    #[error("file is {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The file's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// The one folder attachments and inline images are read from (the template's, or
/// `--attachments-dir` for attachments). CSV values decide which file a row attaches, so they
/// must never reach outside it.
#[derive(Clone, Debug)]
pub struct AttachmentDir {
    /// Canonical path of the folder.
    root: PathBuf,
}

impl AttachmentDir {
    /// The folder `dir` (resolved once: symlinks in the folder's own path are fine).
    pub fn new(dir: &Path) -> Self {
        Self {
            root: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        }
    }

    /// Reads the file `value` names, relative to the folder, at most `limit` bytes. Refused:
    /// absolute paths, any `..`, a path whose canonical form (symlinks resolved) leaves the
    /// folder, anything but a regular file.
    pub fn read(&self, value: &str, limit: usize) -> Result<Vec<u8>, FolderError> {
        let refuse = || FolderError::Unavailable(value.to_string());
        let rel = Path::new(value);
        if value.is_empty()
            || !rel
                .components()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(refuse());
        }
        let path = std::fs::canonicalize(self.root.join(rel)).map_err(|_| refuse())?;
        let meta = std::fs::metadata(&path).map_err(|_| refuse())?;
        if !path.starts_with(&self.root) || !meta.is_file() {
            return Err(refuse());
        }
        if meta.len() > limit as u64 {
            return Err(FolderError::TooLarge {
                size: usize::try_from(meta.len()).unwrap_or(usize::MAX),
                limit,
            });
        }
        std::fs::read(&path).map_err(|_| refuse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_stay_inside_their_folder() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        std::fs::write(dir.path().join("files/ok.txt"), "fine").unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("secret.txt"),
            dir.path().join("files/link.txt"),
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path().join("files/ok.txt"), dir.path().join("in.txt"))
            .unwrap();
        let att = AttachmentDir::new(dir.path());
        assert_eq!(att.read("files/ok.txt", 100).unwrap(), b"fine");
        assert_eq!(
            att.read("./in.txt", 100).unwrap(),
            b"fine",
            "a symlink inside is fine"
        );
        let secret = outside.path().join("secret.txt");
        for hostile in [
            "../../../../etc/passwd",
            "files/../../secret.txt",
            "/etc/shadow",
            "/proc/self/environ",
            secret.to_str().unwrap(),
            "files/link.txt",
            "files",
            "files/missing.pdf",
            "",
        ] {
            let e = att.read(hostile, 100).unwrap_err();
            assert_eq!(e, FolderError::Unavailable(hostile.into()));
        }
        assert_eq!(
            att.read("files/ok.txt", 3),
            Err(FolderError::TooLarge { size: 4, limit: 3 })
        );
    }
}
