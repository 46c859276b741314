//! Delivery: per-site worker pools that keep SMTP connections open and send many messages over
//! each, trying MX hosts in order and retrying transient failures until the run's deadline.
//!
//! The engine does not know about CSV or templates: it is handed, per site, the row numbers to
//! deliver and a [`MessageSource`] that builds a row's message on demand (on the blocking pool,
//! so rendering never stalls the async runtime, and only the messages in flight are in memory).
//! Every row handed in produces exactly one [`Event::Final`], unless the deadline cuts the run
//! short, in which case the caller reports the remaining rows as deferred.
//!
//! Sessions use STARTTLS according to the [`TlsPolicy`]. A site that answers 421 or whose MX
//! hosts all fail is paused (no new connections) for the next retry delay, and an optional
//! [`Rate`] spaces messages to a site evenly.
//!
//! The parts, one file each: [`engine`] starts one `worker` task per connection slot of each
//! site; a worker takes batches from its site's `queue`, opens `session`s (through a
//! [`Connect`]or: TCP in production, in-memory pipes in tests) to the addresses that `hosts`
//! does not know to be failing, sends, and applies [`decide()`] on each attempt: a pure
//! function from what the server answered to what becomes of the row, the session, the rest of
//! the batch and the site.
//!
//! Sites are grouped into mailbox providers ([`crate::provider`]): every queue of a provider
//! shares one [`crate::delivery::Gate`] that limits connections, messages per connection
//! and the message rate for the provider as a whole, and adapts them to its throttling
//! replies (`shaping` holds the worker's side of that). With a `--source-ip` pool a provider
//! has one gate per source address instead (its limits and reputation are per sending IP): a
//! new session takes a slot of the least-used gate that gives one and leaves from that
//! gate's address, so a throttled or blocked address does not hold back the others. An
//! unknown site has a gate of its own with the per-site limits of the command line.

pub mod action;
pub mod connect;
mod ctx;
pub mod engine;
pub mod gate;
mod hosts;
pub mod limits;
pub mod options;
mod queue;
pub mod retry;
mod session;
mod shaping;
pub mod source_ip;
mod work;
mod worker;

#[cfg(test)]
mod sim;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::outcome::Outcome;
use crate::smtp::TlsPolicy;
pub use action::{Action, Attempt, Scope, SessionFacts, decide};
pub use connect::{Connect, TcpConnector};
pub use engine::{deliver, deliver_until, deliver_with};
pub use gate::{
    Gate, GateChange, GateLimits, GateMemory, ProviderBook, ProviderReport, RecalledHold,
};
pub use options::DeliveryOptions;
pub use retry::RetryPolicy;
pub use source_ip::{SourceIp, SourcePool};
pub use work::{Event, LearntDialect, MessageSource, SiteWork};

/// How to deliver: the user's [`DeliveryOptions`] and what the run derives from them.
#[derive(Clone, Debug)]
pub struct DeliveryConfig {
    /// What the user chose (connections, retries, timeouts, TLS mode, pace).
    pub options: DeliveryOptions,
    /// No new attempt starts after this instant (the run's start + `options.deadline`).
    pub deadline: Instant,
    /// In-flight transactions are cut this long after the deadline.
    pub grace: Duration,
    /// Messages rendered per batch by a worker.
    pub batch: usize,
    /// STARTTLS policy: `options.tls` with the trusted roots, built once.
    pub tls: TlsPolicy,
    /// Set by whoever records outcomes durably (the journal): the worker that settles a row
    /// records its outcome there, and has it written out before its session sends more
    /// content, so a crash can cost at most one accepted-but-unrecorded message per
    /// connection.
    pub recorded: Option<Arc<dyn OutcomeLog>>,
    /// The `--source-ip` pool new connections leave from, shared by all workers.
    pub sources: Arc<SourcePool>,
    /// Where the engine registers each provider's (and unknown site's) gate, so that
    /// progress and the summary can read what it learnt.
    pub book: ProviderBook,
    /// What each sending identity's gate starts from (remembered limits and holds, today's
    /// budget under a cap); an identity not in it starts afresh.
    pub memory: Arc<std::collections::HashMap<crate::sender::Identity, GateMemory>>,

    /// The run's wall clock (what a suspension's end is told in).
    pub clock: crate::clock::Clock,
    /// Dialects learnt by earlier runs (a sender state store's, not expired): sessions with
    /// those addresses start in them.
    pub dialects: Vec<LearntDialect>,
}

impl DeliveryConfig {
    /// A configuration starting now: the deadline is `options.deadline` from now, in-flight
    /// messages get a tenth of it (at most 30 s) past it.
    pub fn new(options: DeliveryOptions, tls: TlsPolicy) -> Self {
        let budget = options.deadline;
        Self {
            deadline: Instant::now() + budget,
            grace: Duration::from_secs(30).min(budget / 10 + Duration::from_secs(1)),
            batch: 16,
            tls,
            recorded: None,
            sources: SourcePool::new(&options.source_ip),
            options,
            book: ProviderBook::default(),
            memory: Arc::default(),

            dialects: Vec::new(),
            clock: crate::clock::Clock::default(),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self::new(DeliveryOptions::default(), TlsPolicy::default())
    }
}

/// Where final outcomes are made durable (the run's journal).
///
/// The worker that settles a row records its outcome itself, and before its session sends
/// another message's content it has every record made so far written out: the bound on
/// duplicates after a crash (one accepted but unrecorded message per connection), without a
/// thread to wake up for each message. Records that sessions make together go out in one
/// write (group commit).
pub trait OutcomeLog: Send + Sync + std::fmt::Debug {
    /// Adds `row`'s final outcome; returns where it will be, for [`Event::Final`]. `None`
    /// when it cannot be recorded: the log then cancels the run itself, since without the
    /// record a re-run could send the row again.
    fn record(&self, row: usize, outcome: &Outcome) -> Option<u64>;

    /// True when records wait to be written out.
    fn pending(&self) -> bool;

    /// Writes out every record added so far, at least as far as the OS (they survive the
    /// process being killed).
    fn write_out(&self);
}
