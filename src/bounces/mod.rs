//! Late bounces and complaints: `mailmerge bounces SOURCE...` reads Maildir folders, mbox
//! files, `.eml` files ([`read`]) or an IMAP mailbox ([`imap`]), one message at a time and
//! each only up to a cap; reads every report per recipient — RFC 3464 DSNs, ARF complaints and
//! the plain-text notices of the common MTAs and providers ([`parse`], with the formats in one
//! table, [`patterns`]); ties each recipient to the campaign row it is about, only with
//! evidence, and updates that campaign's results CSV and the suppression list ([`apply`]).
//!
//! A report is tied to a row by its VERP token ([`crate::verp`]), checked against the key, or
//! else by the row's full Message-ID, whose per-row tag no other row's message reveals,
//! together with the row's address. A token that fails the check (`forged`) or a report tied
//! to no row (`unmatched`) changes nothing.

pub mod apply;
pub mod imap;
pub mod parse;
pub mod patterns;
pub mod read;

use thiserror::Error;

pub use apply::{Disposition, Matcher, Reading};
pub use parse::{Kind, Recipient, Report};

/// `mailmerge bounces` cannot go on.
#[derive(Debug, Error)]
pub enum BounceError {
    /// A path cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// File or folder.
        path: std::path::PathBuf,
        /// OS error.
        #[source]
        source: std::io::Error,
    },
    /// A results CSV cannot be read or written.
    #[error("results {path}: {message}")]
    Results {
        /// File.
        path: std::path::PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The suppression list failed.
    #[error(transparent)]
    Store(#[from] crate::suppress::StoreError),
    /// The IMAP mailbox cannot be read.
    #[error(transparent)]
    Imap(#[from] imap::ImapError),
}
