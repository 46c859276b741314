//! Where reports come from: a Maildir folder (its `new/` and `cur/`), a folder of `.eml`
//! files, an mbox file (starts with `From `), or one message file.

use std::path::{Path, PathBuf};

use mail_parser::mailbox::mbox::MessageIterator;

use super::BounceError;

/// One message read: where it came from (`file` or `mbox#N`) and its bytes.
pub struct Raw {
    /// Shown in the output.
    pub origin: String,
    /// The message.
    pub bytes: Vec<u8>,
}

/// Every message under `path`, in a stable order.
pub fn messages(path: &Path) -> Result<Vec<Raw>, BounceError> {
    let err = |source| BounceError::Read {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        let maildir = path.join("cur").is_dir() || path.join("new").is_dir();
        let dirs: Vec<PathBuf> = if maildir {
            vec![path.join("new"), path.join("cur")]
        } else {
            vec![path.to_path_buf()]
        };
        let mut files = Vec::new();
        for d in dirs.iter().filter(|d| d.is_dir()) {
            for e in std::fs::read_dir(d).map_err(err)? {
                let p = e.map_err(err)?.path();
                if p.is_file()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                {
                    files.push(p);
                }
            }
        }
        files.sort();
        return files
            .into_iter()
            .map(|f| {
                let bytes = std::fs::read(&f).map_err(|source| BounceError::Read {
                    path: f.clone(),
                    source,
                })?;
                Ok(Raw {
                    origin: f.display().to_string(),
                    bytes,
                })
            })
            .collect();
    }
    let bytes = std::fs::read(path).map_err(err)?;
    if !bytes.starts_with(b"From ") {
        return Ok(vec![Raw {
            origin: path.display().to_string(),
            bytes,
        }]);
    }
    Ok(MessageIterator::new(bytes.as_slice())
        .enumerate()
        .filter_map(|(i, m)| {
            let m = m.ok()?;
            Some(Raw {
                origin: format!("{}#{}", path.display(), i + 1),
                bytes: m.unwrap_contents(),
            })
        })
        .collect())
}
