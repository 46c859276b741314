//! Late bounces and complaints: `mailmerge bounces PATH...` reads Maildir folders,
//! mbox files or `.eml` files ([`read`]), recognizes RFC 3464 delivery status notifications,
//! common plain-text bounces and RFC 5965 ARF complaint reports ([`parse`]), ties each to the
//! campaign row it is about and updates that campaign's results CSV and the suppression list
//! ([`apply`]).
//!
//! A report is tied to a row by its VERP token ([`crate::verp`]), checked against the key, or
//! else by the original Message-ID together with a recipient address that the row has. A
//! token that fails the check (a forgery) or a report tied to no row changes nothing.

pub mod apply;
pub mod parse;
pub mod read;

use thiserror::Error;

pub use apply::{Disposition, Matcher};
pub use parse::{Kind, Report};

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
}
