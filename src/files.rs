//! Files mailmerge writes, created so that no one else's file is ever written through a
//! symbolic link. A results folder may be shared (a campaign folder several people or jobs
//! write to), and a link planted there at a name we write would otherwise make us overwrite,
//! truncate or create its target.
//!
//! The rule, for every writer (docs/results.md, "Files mailmerge writes"):
//! - links in the *folders* of a path are followed: they are part of the path that was given
//!   (`--results /srv/campaigns/june/list.results.csv` with `june` a link works);
//! - a whole file we write (results CSV, merged results, rewritten results, suppression
//!   export, `--out` messages, the daily-cap state, the MTA-STS cache) is written by
//!   [`NewFile`]: a new temporary file with a random name in the destination's folder, created
//!   exclusively (`O_CREAT|O_EXCL`, which never follows a link), then renamed over the
//!   destination. A link at the destination is replaced by the file; its target is not
//!   written. A reader never sees half a file;
//! - a file we change in place (the journal, appended to) is opened by [`open_no_link`]
//!   with `O_NOFOLLOW`: a link at its name is refused ([`OpenError::Link`]).

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// A file being written: a temporary file beside its destination until [`NewFile::commit`]
/// renames it into place. Dropped without a commit, the temporary file is removed and the
/// destination is as it was.
#[derive(Debug)]
pub struct NewFile {
    /// The temporary file: `.<name>.<random>.tmp` in the destination's folder.
    tmp: NamedTempFile,
    /// The destination.
    path: PathBuf,
}

impl NewFile {
    /// Creates the temporary file for `path` (whose folder must exist). Its permissions are
    /// those of a file created the ordinary way (0666 less the umask), not a temporary
    /// file's 0600.
    pub fn create(path: &Path) -> io::Result<Self> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} does not name a file", path.display()),
            )
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut prefix = OsString::from(".");
        prefix.push(name);
        prefix.push(".");
        let tmp = tempfile::Builder::new()
            .prefix(&prefix)
            .suffix(".tmp")
            .permissions(Permissions::from_mode(0o666))
            .tempfile_in(dir)?;
        Ok(Self {
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the data to disk and renames the file over the destination (a link there is
    /// replaced, not followed).
    pub fn commit(mut self) -> io::Result<()> {
        self.tmp.flush()?;
        self.tmp.as_file().sync_data()?;
        self.tmp.persist(&self.path).map(drop).map_err(|e| e.error)
    }
}

impl Write for NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tmp.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.tmp.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tmp.flush()
    }
}

/// mailmerge's folder under an XDG base directory: `$<var>/mailmerge`, else
/// `$HOME/<under_home>/mailmerge` (`None`: neither is an absolute path).
pub fn user_dir(var: &str, under_home: &str) -> Option<PathBuf> {
    let base = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|p| p.is_absolute())
                .map(|h| h.join(under_home))
        })?;
    Some(base.join("mailmerge"))
}

/// Writes `bytes` as the whole content of `path` through a [`NewFile`].
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = NewFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Flushes a CSV written to a [`NewFile`] and renames it into place.
pub fn commit_csv(w: csv::Writer<NewFile>) -> io::Result<()> {
    w.into_inner().map_err(|e| e.into_error())?.commit()
}

/// Why [`open_no_link`] failed.
#[derive(Debug)]
pub enum OpenError {
    /// The path is a symbolic link (to this target): refused.
    Link(PathBuf),
    /// Any other error.
    Io(io::Error),
}

/// Opens `path` with `opts` (reading, appending, creating...) unless its last component is a
/// symbolic link (`O_NOFOLLOW`): a link there, dangling or not, is [`OpenError::Link`], and
/// nothing is opened, truncated or created through it.
pub fn open_no_link(path: &Path, opts: &mut OpenOptions) -> Result<File, OpenError> {
    opts.custom_flags(libc::O_NOFOLLOW);
    opts.open(path).map_err(|e| match std::fs::read_link(path) {
        // Linux says ELOOP, some systems EMLINK: whatever the errno, a link is a link.
        Ok(target) => OpenError::Link(target),
        Err(_) => OpenError::Io(e),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_replaces_a_link_and_leaves_its_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "mine").unwrap();
        let out = dir.path().join("out.csv");
        std::os::unix::fs::symlink(&target, &out).unwrap();
        write(&out, b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
        assert!(std::fs::symlink_metadata(&out).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
    }

    #[test]
    fn an_uncommitted_file_leaves_the_destination_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.csv");
        std::fs::write(&out, "old").unwrap();
        let mut f = NewFile::create(&out).unwrap();
        f.write_all(b"half").unwrap();
        let tmp_name = f
            .tmp
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            tmp_name.starts_with(".out.csv.") && tmp_name.ends_with(".tmp"),
            "{tmp_name}"
        );
        drop(f);
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn temporary_names_are_unpredictable_and_permissions_ordinary() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r.csv");
        let a = NewFile::create(&out).unwrap();
        let b = NewFile::create(&out).unwrap();
        assert_ne!(a.tmp.path(), b.tmp.path());
        let mode = |f: &File| f.metadata().unwrap().permissions().mode();
        let ordinary = File::create(dir.path().join("ordinary")).unwrap();
        assert_eq!(
            mode(a.tmp.as_file()),
            mode(&ordinary),
            "as File::create makes it"
        );
    }

    #[test]
    fn open_no_link_refuses_links_even_dangling_ones() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "mine").unwrap();
        let at = dir.path().join("j");
        std::os::unix::fs::symlink(&target, &at).unwrap();
        let mut opts = OpenOptions::new();
        opts.create(true).append(true);
        assert!(matches!(open_no_link(&at, &mut opts), Err(OpenError::Link(t)) if t == target));
        let dangling = dir.path().join("d");
        let absent = dir.path().join("absent");
        std::os::unix::fs::symlink(&absent, &dangling).unwrap();
        assert!(matches!(
            open_no_link(&dangling, &mut opts),
            Err(OpenError::Link(_))
        ));
        assert!(!absent.exists());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "mine");
        let plain = dir.path().join("plain");
        assert!(open_no_link(&plain, &mut opts).is_ok());
        assert!(matches!(
            open_no_link(&dir.path().join("no/such"), &mut opts),
            Err(OpenError::Io(_))
        ));
    }
}
