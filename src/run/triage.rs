//! Triage: one pass over the rows that settles every row that will not be sent (input errors,
//! duplicates, rows an earlier run finished, addresses on the suppression list, rows beyond
//! `--limit`) and collects the destination domains of the rest. It knows nothing of shards:
//! the shard stage places every row afterwards.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

use super::ledger::Ledger;
use super::prepare::Campaign;
use super::{RunConfig, RunError};
use crate::address::Address;
use crate::outcome::{Outcome, Status, Step};
use crate::suppress::{self, Entry, StoreError, SuppressionStore};

/// The rows after triage: the ledger with every row settled that will not be sent, and the
/// destination domains of the rest (still pending).
pub(super) struct Triaged {
    /// Every row; the ones to send still pending.
    pub ledger: Ledger,
    /// Destination domains of the pending rows, each once.
    pub domains: Domains,
}

/// The destination domains of the rows to send, and each such row's, so that routing places
/// the rows without reading them again (4 bytes a row).
#[derive(Default)]
pub(super) struct Domains {
    /// Each domain once, in the order found.
    pub names: Vec<String>,
    index: HashMap<String, u32>,
    /// Each row's domain (an index into `names`), `u32::MAX` for a row not to send.
    of_row: Vec<u32>,
}

impl Domains {
    fn new(rows: usize) -> Self {
        Self {
            of_row: vec![u32::MAX; rows],
            ..Self::default()
        }
    }

    /// Row `i` goes to `domain`; true when the domain is new.
    fn add(&mut self, i: usize, domain: &str) -> bool {
        let (d, new) = match self.index.get(domain) {
            Some(&d) => (d, false),
            None => {
                let d = u32::try_from(self.names.len()).unwrap_or(u32::MAX - 1);
                self.names.push(domain.to_string());
                self.index.insert(domain.to_string(), d);
                (d, true)
            }
        };
        if let Some(slot) = self.of_row.get_mut(i) {
            *slot = d;
        }
        new
    }

    /// Row `i`'s destination domain, if triage left it to send.
    pub fn of_row(&self, i: usize) -> Option<&str> {
        let d = *self.of_row.get(i)?;
        self.names.get(d as usize).map(String::as_str)
    }
}

/// Rows screened against the suppression list at once: one bulk lookup per this many rows.
const SCREEN_CHUNK: usize = 2048;

/// Settles what can be settled without the network, looking the addresses to send up in the
/// suppression list in bulk. Each chunk's lookup runs on another task while the next chunk is
/// read, and chunks are settled in list order (so `--limit` takes the first rows). Each
/// destination domain is also named to `found` as soon as a row of it is known to be sent, so
/// that its DNS lookups can start while triage goes on.
pub(super) async fn triage(
    cfg: &RunConfig,
    campaign: &Campaign,
    screen: &Screen,
    found: UnboundedSender<String>,
) -> Result<Triaged, RunError> {
    let list = &campaign.list;
    let per_address = !cfg.list.allow_duplicates;
    let mut out = Sorting {
        cfg,
        triaged: Triaged {
            ledger: Ledger::new(list.len()),
            domains: Domains::new(list.len()),
        },
        budget: cfg.limit.unwrap_or(usize::MAX),
        found,
    };
    let mut candidates: Vec<(usize, Address)> = Vec::with_capacity(SCREEN_CHUNK);
    let mut pending: Option<Lookup> = None;
    for i in 0..list.len() {
        let ledger = &mut out.triaged.ledger;
        // Only the address cell is decoded, unless the journal of earlier runs needs the key.
        let addr = match list.address(i) {
            Ok(addr) => addr,
            Err(e) => {
                let status = if e.status() == "duplicate" {
                    Status::Duplicate
                } else {
                    Status::Invalid
                };
                ledger.settle(i, Outcome::local(status, Step::Input, e.to_string()));
                continue;
            }
        };
        let done = (!campaign.replay.is_empty())
            .then(|| {
                let key = campaign.keys.key(list, i, &list.row(i));
                campaign.replay.done_at(&key, per_address)
            })
            .flatten();
        match done {
            Some(at) => ledger.settle_earlier(i, at),
            None => candidates.push((i, addr)),
        }
        if candidates.len() == SCREEN_CHUNK {
            let chunk = std::mem::replace(&mut candidates, Vec::with_capacity(SCREEN_CHUNK));
            if let Some(earlier) = pending.replace(screen.start(chunk)) {
                out.screen(earlier).await?;
            }
        }
    }
    if let Some(earlier) = pending.take() {
        out.screen(earlier).await?;
    }
    out.screen(screen.start(candidates)).await?;
    Ok(out.triaged)
}

/// Triage under way: what is settled so far and what `--limit` leaves.
struct Sorting<'a> {
    cfg: &'a RunConfig,
    triaged: Triaged,
    /// Rows `--limit` still lets through.
    budget: usize,
    /// Told each destination domain once, when it is first collected.
    found: UnboundedSender<String>,
}

impl Sorting<'_> {
    /// Settles the suppressed candidates of a lookup (once it is answered) and those beyond
    /// `--limit`, in list order; the rest stay pending, their domains collected.
    async fn screen(&mut self, lookup: Lookup) -> Result<(), RunError> {
        let found = match lookup.found.await {
            Ok(found) => found?,
            Err(e) => match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => {
                    return Err(StoreError::Db {
                        place: "lookup".into(),
                        message: "cancelled: the run is shutting down".into(),
                    }
                    .into());
                }
            },
        };
        for (i, addr) in lookup.candidates {
            let ledger = &mut self.triaged.ledger;
            let hit = found
                .get(&suppress::key_of(&addr))
                .or_else(|| found.get(&format!("@{}", addr.domain())));
            if let Some(entry) = hit {
                let why = entry.describe();
                ledger.settle(i, Outcome::local(Status::Suppressed, Step::Suppressed, why));
            } else if self.budget == 0 {
                let limit = self.cfg.limit.unwrap_or_default();
                let text = format!("not sent: beyond --limit {limit}; a later run sends it");
                ledger.settle(i, Outcome::local(Status::Deferred, Step::Limit, text));
            } else {
                self.budget -= 1;
                if self.triaged.domains.add(i, addr.domain()) {
                    // The receiver only goes away when the run is failing anyway.
                    let _ = self.found.send(addr.domain().to_string());
                }
            }
        }
        Ok(())
    }
}

/// The suppression list as triage reads it; empty when the run has none or ignores it.
pub(super) struct Screen {
    store: Option<Arc<dyn SuppressionStore>>,
}

impl Screen {
    /// Screens against `store` (none: nothing is suppressed), unless the run ignores the list
    /// (`--ignore-suppressions`).
    pub(super) fn new(cfg: &RunConfig, store: Option<&Arc<dyn SuppressionStore>>) -> Self {
        Self {
            store: store.filter(|_| !cfg.suppress.ignore).cloned(),
        }
    }

    /// Starts looking up the entries suppressing any of `candidates` (by address key or
    /// `@domain`) on a task of its own.
    fn start(&self, candidates: Vec<(usize, Address)>) -> Lookup {
        let store = self.store.clone().filter(|_| !candidates.is_empty());
        let mut keys: Vec<String> = Vec::new();
        if store.is_some() {
            keys.reserve(candidates.len() * 2);
            let mut domains = HashSet::new();
            for (_, a) in &candidates {
                keys.push(suppress::key_of(a));
                if domains.insert(a.domain()) {
                    keys.push(format!("@{}", a.domain()));
                }
            }
        }
        let found = tokio::spawn(async move {
            match store {
                Some(store) => store.find(&keys).await,
                None => Ok(HashMap::new()),
            }
        });
        Lookup { candidates, found }
    }
}

/// Rows whose suppression lookup is under way.
struct Lookup {
    /// The rows (index, address), in list order.
    candidates: Vec<(usize, Address)>,
    /// The entries found for them.
    found: tokio::task::JoinHandle<Result<HashMap<String, Entry>, StoreError>>,
}
