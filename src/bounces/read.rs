//! Where reports come from: a Maildir folder (its `new/` and `cur/`), a folder of `.eml`
//! files, an mbox file (starts with `From `), or one message file — read one message at a
//! time, each only up to a cap.
//!
//! A bounce mailbox is untrusted input: one message may be 60 MB (a returned message with its
//! attachments) or a single line without an end. Everything a report says is at its top (the
//! notice, the delivery-status part, the returned message's headers), so each message is kept
//! only up to [`DEFAULT_CAP`] bytes (`--max-report-size`); the rest is read past and dropped.
//! An mbox is read line by line, each line kept only up to the same cap, so memory stays
//! bounded by about twice the cap whatever the input.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use super::BounceError;

/// Bytes of each message kept by default: far more than any notice and the headers of the
/// message it returns.
pub const DEFAULT_CAP: usize = 1 << 20;

/// One message read: where it came from (`file` or `mbox#N`) and its first bytes.
#[derive(Clone, Debug)]
pub struct Raw {
    /// Shown in the output: the file, `mbox#N` for the Nth message of an mbox, or
    /// `imaps://…/INBOX;UID=N`.
    pub origin: String,
    /// The message, at most the cap.
    pub bytes: Vec<u8>,
    /// The message was longer than the cap: `bytes` holds its beginning only.
    pub truncated: bool,
}

/// Every message under `path`, in a stable order, read one at a time (each at most `cap`
/// bytes).
pub fn messages(path: &Path, cap: usize) -> Result<Messages, BounceError> {
    let err = |source| BounceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let cap = cap.max(1);
    if path.is_dir() {
        return Ok(Messages::Files {
            files: folder_files(path).map_err(err)?,
            cap,
        });
    }
    let mut file = BufReader::new(File::open(path).map_err(err)?);
    let is_mbox = file.fill_buf().map_err(err)?.starts_with(b"From ");
    if is_mbox {
        return Ok(Messages::Mbox(Mbox {
            reader: file,
            path: path.to_path_buf(),
            cap,
            count: 0,
            line: Vec::new(),
            pending_separator: false,
            done: false,
        }));
    }
    Ok(Messages::Files {
        files: VecDeque::from([path.to_path_buf()]),
        cap,
    })
}

/// The message files of a folder: a Maildir's `new/` then `cur/`, else the folder itself;
/// dot files skipped, sorted by name.
fn folder_files(path: &Path) -> std::io::Result<VecDeque<PathBuf>> {
    let maildir = path.join("cur").is_dir() || path.join("new").is_dir();
    let dirs: Vec<PathBuf> = if maildir {
        vec![path.join("new"), path.join("cur")]
    } else {
        vec![path.to_path_buf()]
    };
    let mut files = Vec::new();
    for d in dirs.iter().filter(|d| d.is_dir()) {
        let mut here = Vec::new();
        for e in std::fs::read_dir(d)? {
            let p = e?.path();
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if p.is_file() && !hidden {
                here.push(p);
            }
        }
        here.sort();
        files.extend(here);
    }
    Ok(files.into())
}

/// The messages of one path, one at a time.
pub enum Messages {
    /// Message files still to read.
    Files {
        /// In order.
        files: VecDeque<PathBuf>,
        /// Bytes kept per message.
        cap: usize,
    },
    /// An mbox file being read.
    Mbox(Mbox),
}

impl Iterator for Messages {
    type Item = Result<Raw, BounceError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Messages::Files { files, cap } => {
                let f = files.pop_front()?;
                Some(read_capped(&f, *cap).map(|(bytes, truncated)| Raw {
                    origin: f.display().to_string(),
                    bytes,
                    truncated,
                }))
            }
            Messages::Mbox(m) => m.next_message().transpose(),
        }
    }
}

/// The first `cap` bytes of a file, and whether there was more.
fn read_capped(path: &Path, cap: usize) -> Result<(Vec<u8>, bool), BounceError> {
    let err = |source| BounceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(err)?;
    let mut bytes = Vec::new();
    // One byte more than the cap tells whether the file goes on.
    file.take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    let truncated = bytes.len() > cap;
    bytes.truncate(cap);
    Ok((bytes, truncated))
}

/// An mbox read incrementally: messages start at a `From ` line at the top of the file or
/// after an empty line; `>From ` lines (mboxrd/mboxo quoting) lose one `>`.
pub struct Mbox {
    reader: BufReader<File>,
    path: PathBuf,
    cap: usize,
    count: usize,
    /// The current line (at most `cap` bytes of it).
    line: Vec<u8>,
    /// The `From ` line starting the next message was read already.
    pending_separator: bool,
    done: bool,
}

impl Mbox {
    fn next_message(&mut self) -> Result<Option<Raw>, BounceError> {
        if self.done {
            return Ok(None);
        }
        if !self.pending_separator {
            // The first message: its `From ` line.
            if !self.read_line()? {
                self.done = true;
                return Ok(None);
            }
        }
        self.pending_separator = false;
        let mut bytes: Vec<u8> = Vec::new();
        let mut truncated = false;
        let mut blank_before = true;
        loop {
            if !self.read_line()? {
                self.done = true;
                break;
            }
            if blank_before && self.line.starts_with(b"From ") {
                self.pending_separator = true;
                break;
            }
            blank_before = self.line == b"\n" || self.line == b"\r\n";
            let quoted = self.line.starts_with(b">")
                && self
                    .line
                    .iter()
                    .position(|&b| b != b'>')
                    .is_some_and(|i| self.line[i..].starts_with(b"From "));
            let line = if quoted {
                &self.line[1..]
            } else {
                &self.line[..]
            };
            let room = self.cap.saturating_sub(bytes.len());
            if line.len() > room {
                truncated = true;
            }
            bytes.extend_from_slice(&line[..line.len().min(room)]);
        }
        // The empty line before the next `From ` belongs to the mbox, not the message.
        if self.pending_separator && bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        self.count += 1;
        Ok(Some(Raw {
            origin: format!("{}#{}", self.path.display(), self.count),
            bytes,
            truncated,
        }))
    }

    /// Reads the next line into `self.line`, keeping at most `cap` bytes of it (the rest is
    /// consumed and dropped). False at the end of the file.
    fn read_line(&mut self) -> Result<bool, BounceError> {
        self.line.clear();
        let mut any = false;
        loop {
            let buf = self.reader.fill_buf().map_err(|source| BounceError::Read {
                path: self.path.clone(),
                source,
            })?;
            if buf.is_empty() {
                return Ok(any);
            }
            any = true;
            let (chunk, end) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            let room = self.cap.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = chunk.len();
            self.reader.consume(used);
            if end {
                return Ok(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mbox_is_split_unquoted_and_each_message_capped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let big = "x".repeat(5000);
        let text = format!(
            "From a@b Mon Nov  2 10:00:00 2026\nSubject: one\n\n>From here\nbody\n\n\
             From c@d Mon Nov  2 10:00:01 2026\nSubject: two\n\n{big}\n{big}\n\n\
             From e@f Mon Nov  2 10:00:02 2026\nSubject: three\n\nend\n"
        );
        std::fs::write(&path, text).unwrap();
        let got: Vec<Raw> = messages(&path, 1000)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].bytes, b"Subject: one\n\nFrom here\nbody\n");
        assert!(!got[0].truncated);
        assert!(got[1].truncated);
        assert_eq!(got[1].bytes.len(), 1000);
        assert!(got[1].bytes.starts_with(b"Subject: two\n\nxxx"));
        assert_eq!(got[2].bytes, b"Subject: three\n\nend\n");
        assert!(got[2].origin.ends_with("box#3"), "{}", got[2].origin);
    }
}
