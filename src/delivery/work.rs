//! What goes into the delivery engine and what comes out of it: per site, the rows to deliver
//! ([`SiteWork`]); per row, a way to build its message ([`MessageSource`]); and the
//! [`Event`]s the engine reports as it goes. Plain data that every part of the engine and its
//! caller share, so none of them has to reach into another for it.

use std::sync::Arc;

pub use super::hosts::LearntDialect;
use crate::message::BuiltMessage;
use crate::mx::MxHost;
use crate::outcome::Outcome;
use crate::provider::ProviderSpec;
use crate::tls_policy::SiteTls;

/// Builds the message for a row, or says why the row cannot be sent.
pub type MessageSource = Arc<dyn Fn(usize) -> Result<BuiltMessage, Box<Outcome>> + Send + Sync>;

/// What the engine reports while it runs.
#[derive(Clone, Debug)]
pub enum Event {
    /// A transient failure; the row will be tried again.
    Retrying {
        /// Row index (as handed in).
        row: usize,
        /// What happened on this attempt.
        outcome: Outcome,
    },
    /// The row's final outcome.
    Final {
        /// Row index.
        row: usize,
        /// Outcome.
        outcome: Outcome,
        /// Where the [`super::OutcomeLog`] recorded it (`None` without one, or when it
        /// failed).
        at: Option<u64>,
    },
    /// A new SMTP session was opened.
    Connected {
        /// Site name.
        site: Arc<str>,
    },
    /// An MX address objected to our pipelining: its sessions speak a more conservative
    /// dialect from now on (listed in the run summary: [`LearntDialect::summary_line`]; kept
    /// for later runs by whoever keeps sender state).
    DialectFallback {
        /// The address, its host name, the dialect it gets now, and when.
        learnt: LearntDialect,
        /// What the server did, in words (`does not answer commands pipelined behind the
        /// final dot`).
        reason: String,
    },
    /// A provider's (or unknown site's) gate changed how it lets messages through: slowed,
    /// suspended, a limit lowered, resumed.
    Gate {
        /// The gate's label: the provider (or site) name, `name@source-ip` for one source
        /// address's gate.
        gate: String,
        /// The provider (or site) name alone.
        provider: Arc<str>,
        /// A known provider (else an unknown site, named by its MX hosts).
        known: bool,
        /// What changed.
        change: crate::delivery::gate::GateChange,
        /// The reply that caused it (none for a resumption).
        reply: Option<String>,
        /// When.
        at: std::time::SystemTime,
    },
}

/// One site's work: its hosts and the rows to deliver there.
#[derive(Clone, Debug)]
pub struct SiteWork {
    /// Site name (for progress and logs).
    pub name: Arc<str>,
    /// MX hosts in try order.
    pub hosts: Arc<[MxHost]>,
    /// Rows to deliver.
    pub rows: Vec<usize>,
    /// The mailbox provider behind the site, if known: its limits apply to all its sites
    /// together. `None`: the site keeps per-site limits (`--connections-per-site`, …).
    pub provider: Option<Arc<ProviderSpec>>,
    /// What the site's MX hosts require of TLS (MTA-STS, DANE); the default: nothing
    /// published, the `--tls` mode applies.
    pub tls: Arc<SiteTls>,
}
