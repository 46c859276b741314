//! Tying each recipient of a report to the campaign row it is about, and acting on it: the
//! row of the campaign's results CSV becomes `bounced` (step `late-bounce`, the report's codes,
//! diagnostic and category) and the address goes on the suppression list when the failure is
//! hard ([`super::parse`]) or the report is a complaint.
//!
//! **Evidence for every late verdict.** A report changes a row only with proof that the row's
//! own copy produced it, because anyone can send us a bounce:
//! - a VERP token ([`crate::verp`]) whose HMAC checks out under the key; a token that does not
//!   is `forged`. The row's address must then be the report's recipient;
//! - without a token (or without the key): the report must quote the row's full recorded
//!   Message-ID, and name the row's address. A row's Message-ID carries an 80-bit tag keyed by
//!   a secret of the run ([`crate::message::row_message_id`]), so it cannot be derived from
//!   another row's message; a recorded Message-ID without that tag (written by an older
//!   version, `<run>.r<row>@domain`) is no evidence.
//!
//! Everything else is `unmatched` and changes nothing. In a dry run ([`Matcher::dry_run`])
//! nothing is written at all: the verdicts say what a real run would do.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::hmac;

use super::BounceError;
use super::parse::{self, Kind, Recipient, Report};
use super::read::Raw;
use crate::files::{self, NewFile};
use crate::outcome::{Outcome, Status, Step};
use crate::suppress::{self, Entry, Reason, SuppressionStore};
use crate::verp;

/// What became of one recipient of a report (or of a message that names none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Tied to a row (and, unless a dry run, acted on).
    Matched {
        /// Campaign id.
        campaign: String,
        /// Row number in the results CSV.
        row: usize,
        /// The row's address.
        email: String,
        /// The address was added to the suppression list (a dry run: would be added).
        suppressed: bool,
    },
    /// Calls for nothing: a delay, an auto-reply, not a report.
    Ignored(String),
    /// A VERP token whose signature is wrong: nothing changed.
    Forged(String),
    /// No row found with evidence: nothing changed.
    Unmatched(String),
}

impl Disposition {
    /// `matched`, `ignored`, `forged` or `unmatched`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Disposition::Matched { .. } => "matched",
            Disposition::Ignored(_) => "ignored",
            Disposition::Forged(_) => "forged",
            Disposition::Unmatched(_) => "unmatched",
        }
    }

    /// Why (empty for a match).
    pub fn why(&self) -> &str {
        match self {
            Disposition::Matched { .. } => "",
            Disposition::Ignored(w) | Disposition::Forged(w) | Disposition::Unmatched(w) => w,
        }
    }
}

/// One recipient of one message and what became of it: one output line.
#[derive(Clone, Debug)]
pub struct Reading {
    /// Where the message came from ([`Raw::origin`]).
    pub source: String,
    /// What the recipient's part of the report is (the message's kind when it names none).
    pub kind: Kind,
    /// The report's format ([`Report::format`]).
    pub format: &'static str,
    /// The recipient, as the report gives it; `None` when it names none.
    pub recipient: Option<Recipient>,
    /// The original message's Message-ID the report quotes.
    pub message_id: Option<String>,
    /// What a run does (did) with it.
    pub disposition: Disposition,
}

impl Reading {
    /// The JSON object of `bounces --json` (one per line).
    pub fn to_json(&self) -> serde_json::Value {
        let r = self.recipient.as_ref();
        let (campaign, row, email, suppressed) = match &self.disposition {
            Disposition::Matched {
                campaign,
                row,
                email,
                suppressed,
            } => (
                Some(campaign.clone()),
                Some(*row),
                Some(email.clone()),
                *suppressed,
            ),
            _ => (None, None, None, false),
        };
        serde_json::json!({
            "source": self.source,
            "kind": self.kind.as_str(),
            "format": self.format,
            "recipient": r.and_then(|r| r.address.clone()),
            "status": r.and_then(|r| r.status).map(|s| s.to_string()),
            "code": r.and_then(|r| r.code),
            "diagnostic": r.map(|r| r.diagnostic.clone()),
            "category": r.and_then(|r| r.category).map(|c| c.as_str()),
            "hard": r.is_some_and(|r| r.hard),
            "message_id": self.message_id,
            "action": self.disposition.as_str(),
            "campaign": campaign,
            "row": row,
            "email": email,
            "suppress": suppressed,
            "why": Some(self.disposition.why()).filter(|w| !w.is_empty()),
        })
    }
}

impl fmt::Display for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self
            .recipient
            .as_ref()
            .and_then(|r| r.address.as_deref())
            .unwrap_or("-");
        write!(f, "{}: {} {who}: ", self.source, self.kind.as_str())?;
        match &self.disposition {
            Disposition::Matched {
                campaign,
                row,
                suppressed,
                ..
            } => {
                let detail = self.recipient.as_ref().map(detail).unwrap_or_default();
                let s = if *suppressed { ", suppressed" } else { "" };
                write!(f, "matched campaign {campaign} row {row}: {detail}{s}")
            }
            d => write!(f, "{}: {}", d.as_str(), d.why()),
        }
    }
}

/// `550 5.1.1 text`.
fn detail(r: &Recipient) -> String {
    let mut code = r.code.map(|c| c.to_string()).unwrap_or_default();
    let mut status = r.status.map(|s| s.to_string()).unwrap_or_default();
    // The diagnostic usually starts with them already (`550 5.1.1 …`).
    if r.diagnostic.starts_with(&format!("{code} {status}")) {
        (code, status) = (String::new(), String::new());
    }
    [code.as_str(), status.as_str(), r.diagnostic.as_str()]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// A campaign's results CSV, loaded once and written back if changed.
struct Results {
    headers: csv::StringRecord,
    rows: Vec<csv::StringRecord>,
    changed: bool,
}

impl Results {
    fn col(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }

    fn get(&self, i: usize, name: &str) -> &str {
        self.col(name)
            .and_then(|c| self.rows[i].get(c))
            .unwrap_or_default()
    }

    fn set(&mut self, i: usize, values: &[(&str, String)]) {
        let mut rec: Vec<String> = self.rows[i].iter().map(str::to_string).collect();
        for (name, v) in values {
            if let Some(c) = self.col(name).filter(|&c| c < rec.len()) {
                rec[c] = v.clone();
            }
        }
        self.rows[i] = csv::StringRecord::from(rec);
        self.changed = true;
    }
}

/// The late bounce as an outcome (for the journal).
fn late_outcome(r: &Recipient) -> Outcome {
    Outcome {
        code: r.code,
        enhanced: r.status,
        ..Outcome::local(Status::Bounced, Step::LateBounce, r.diagnostic.clone())
    }
}

/// Row `i` of the results CSV at `path` becomes `bounced` (step `late-bounce`, the report's
/// codes, diagnostic and category), and the campaign's journal records it so that a re-run
/// keeps it.
fn mark_bounced(
    file: &mut Results,
    i: usize,
    r: &Recipient,
    path: &Path,
) -> Result<(), BounceError> {
    let category = r.category.map_or("other", |c| c.as_str());
    file.set(
        i,
        &[
            ("status", Status::Bounced.as_str().to_string()),
            ("step", Step::LateBounce.as_str().to_string()),
            ("code", r.code.map(|c| c.to_string()).unwrap_or_default()),
            (
                "enhanced_code",
                r.status.map(|s| s.to_string()).unwrap_or_default(),
            ),
            // From an untrusted report: never a formula in a spreadsheet.
            (
                "response",
                crate::report::defuse(&r.diagnostic).into_owned(),
            ),
            ("category", category.to_string()),
        ],
    );
    let message_id = file.get(i, "message_id");
    if !message_id.is_empty() {
        crate::journal::record_late_bounce(
            &crate::journal::path_for(path),
            message_id,
            &late_outcome(r),
        )
        .map_err(|e| BounceError::Results {
            path: path.to_path_buf(),
            message: format!("journal: {e}"),
        })?;
    }
    Ok(())
}

/// A row found: campaign id, its results CSV, index of the row in the file.
type Hit = (String, PathBuf, usize);

/// Matches reports against the campaigns the suppression list knows.
pub struct Matcher {
    key: Option<hmac::Key>,
    /// `None` in a dry run over a list that does not exist yet.
    store: Option<Arc<dyn SuppressionStore>>,
    campaigns: Vec<(String, PathBuf)>,
    files: HashMap<PathBuf, Results>,
    dry_run: bool,
}

impl Matcher {
    /// `key`: the VERP key (without it, only Message-ID matching is possible).
    pub async fn new(
        store: Arc<dyn SuppressionStore>,
        key: Option<&[u8]>,
    ) -> Result<Self, BounceError> {
        Ok(Self {
            key: key.map(verp::key),
            campaigns: store.campaigns().await?,
            store: Some(store),
            files: HashMap::new(),
            dry_run: false,
        })
    }

    /// A matcher that writes nothing: no results CSV, no journal, no suppression. `store`:
    /// the list opened read-only, `None` when there is none yet (every report is unmatched).
    pub async fn dry_run(
        store: Option<Arc<dyn SuppressionStore>>,
        key: Option<&[u8]>,
    ) -> Result<Self, BounceError> {
        let campaigns = match &store {
            Some(s) => s.campaigns().await?,
            None => Vec::new(),
        };
        Ok(Self {
            key: key.map(verp::key),
            store,
            campaigns,
            files: HashMap::new(),
            dry_run: true,
        })
    }

    /// Reads one message and acts on each recipient it names.
    pub async fn apply(&mut self, raw: &Raw) -> Result<Vec<Reading>, BounceError> {
        let report = parse::parse(&raw.bytes);
        let verdict = |kind, recipient, disposition| Reading {
            source: raw.origin.clone(),
            kind,
            format: report.format,
            recipient,
            message_id: report.message_id.clone(),
            disposition,
        };
        let why = match report.kind {
            Kind::Other => Some("not a bounce or complaint report"),
            Kind::AutoReply => Some("automatic reply (RFC 3834), never a bounce"),
            _ if report.recipients.is_empty() => Some("the report names no recipient"),
            _ => None,
        };
        if let Some(why) = why {
            return Ok(vec![verdict(
                report.kind,
                None,
                Disposition::Ignored(why.into()),
            )]);
        }
        let mut out = Vec::new();
        for r in &report.recipients {
            let d = self.one(&report, r).await?;
            out.push(verdict(r.kind, Some(r.clone()), d));
        }
        Ok(out)
    }

    /// One recipient: its row (with evidence), then the action.
    async fn one(&mut self, report: &Report, r: &Recipient) -> Result<Disposition, BounceError> {
        if r.kind == Kind::Delay {
            return Ok(Disposition::Ignored(format!(
                "delay, not final: {}",
                r.diagnostic
            )));
        }
        let found = match self.by_token(report, r)? {
            Err(d) => return Ok(d),
            Ok(Some(hit)) => Ok(hit),
            Ok(None) => self.by_message_id(report, r)?,
        };
        match found {
            Ok((campaign, path, i)) => self.act(r, campaign, &path, i).await,
            Err(d) => Ok(d),
        }
    }

    /// By VERP token: `Ok(None)` when there is no token (or no key), `Err` when tokens are
    /// there but none is ours (forged) or the row is not the report's recipient.
    fn by_token(
        &mut self,
        report: &Report,
        r: &Recipient,
    ) -> Result<Result<Option<Hit>, Disposition>, BounceError> {
        let (Some(key), false) = (&self.key, report.tokens.is_empty()) else {
            return Ok(Ok(None));
        };
        let Some(t) = report.tokens.iter().find(|t| t.verify(key)) else {
            return Ok(Err(Disposition::Forged(format!(
                "token {} has a bad signature",
                report.tokens[0].text
            ))));
        };
        let Some(path) = self.results_of(&t.campaign) else {
            return Ok(Err(Disposition::Unmatched(format!(
                "campaign {} is unknown here",
                t.campaign
            ))));
        };
        let file = self.load(&path)?;
        let row = t.row.to_string();
        let Some(i) = (0..file.rows.len()).find(|&i| file.get(i, "row") == row) else {
            return Ok(Err(Disposition::Unmatched(format!(
                "campaign {} has no row {}",
                t.campaign, t.row
            ))));
        };
        let email = suppress::normalize(file.get(i, "email")).unwrap_or_default();
        if r.address.is_some() && !names(r, &email) {
            return Ok(Err(Disposition::Unmatched(format!(
                "the token is row {} of campaign {} ({email}), the report is about {}",
                t.row,
                t.campaign,
                r.address.as_deref().unwrap_or_default()
            ))));
        }
        Ok(Ok(Some((t.campaign.clone(), path, i))))
    }

    /// By the row's full recorded Message-ID (with its per-row tag) plus its address.
    fn by_message_id(
        &mut self,
        report: &Report,
        r: &Recipient,
    ) -> Result<Result<Hit, Disposition>, BounceError> {
        let unmatched = |why: String| Ok(Err(Disposition::Unmatched(why)));
        let Some(id) = &report.message_id else {
            return unmatched("no valid VERP token and no Message-ID of the original".into());
        };
        if r.address.is_none() {
            return unmatched(format!("names no recipient (Message-ID {id})"));
        }
        for (campaign, path) in self.campaigns.clone() {
            if !path.is_file() {
                continue;
            }
            let file = self.load(&path)?;
            let hit = (0..file.rows.len()).find(|&i| {
                file.get(i, "message_id") == id
                    && suppress::normalize(file.get(i, "email")).is_ok_and(|e| names(r, &e))
            });
            if let Some(i) = hit {
                if !crate::message::has_row_tag(id) {
                    return unmatched(format!(
                        "Message-ID {id} has no per-row tag (sent by an older version): \
                         it can be derived from another row's, so it is no evidence"
                    ));
                }
                return Ok(Ok((campaign, path, i)));
            }
        }
        unmatched(format!(
            "no campaign row has Message-ID {id} and address {}",
            r.address.as_deref().unwrap_or_default()
        ))
    }

    fn results_of(&self, campaign: &str) -> Option<PathBuf> {
        self.campaigns
            .iter()
            .find(|(c, _)| c == campaign)
            .map(|(_, p)| p.clone())
    }

    fn load(&mut self, path: &Path) -> Result<&mut Results, BounceError> {
        if !self.files.contains_key(path) {
            let err = |e: csv::Error| BounceError::Results {
                path: path.to_path_buf(),
                message: e.to_string(),
            };
            let mut rdr = csv::Reader::from_path(path).map_err(err)?;
            let headers = rdr.headers().map_err(err)?.clone();
            let rows = rdr.records().collect::<Result<_, _>>().map_err(err)?;
            let loaded = Results {
                headers,
                rows,
                changed: false,
            };
            self.files.insert(path.to_path_buf(), loaded);
        }
        self.files
            .get_mut(path)
            .ok_or_else(|| BounceError::Results {
                path: path.to_path_buf(),
                message: "not loaded".into(),
            })
    }

    /// Updates the row and the suppression list (a dry run: says what it would do).
    async fn act(
        &mut self,
        r: &Recipient,
        campaign: String,
        path: &Path,
        i: usize,
    ) -> Result<Disposition, BounceError> {
        let dry_run = self.dry_run;
        let file = self.load(path)?;
        let email = file.get(i, "email").to_string();
        let row = file.get(i, "row").parse().unwrap_or(0);
        if r.kind.is_failure() && !dry_run {
            mark_bounced(file, i, r, path)?;
        }
        let reason = match r.kind {
            Kind::Complaint => Reason::Complaint,
            _ => Reason::HardBounce,
        };
        let cause = match r.kind {
            Kind::Complaint => r.diagnostic.clone(),
            _ => format!("late bounce: {}", detail(r)),
        };
        let mut suppressed = false;
        if let (true, Ok(key)) = (r.hard, suppress::normalize(&email)) {
            suppressed = match (&self.store, dry_run) {
                (Some(store), false) => {
                    store
                        .add(&[Entry::new(key, reason, cause, &campaign)])
                        .await?
                        > 0
                }
                (Some(store), true) => suppress::lookup_key(&**store, &key).await?.is_none(),
                (None, _) => true,
            };
        }
        Ok(Disposition::Matched {
            campaign,
            row,
            email,
            suppressed,
        })
    }

    /// Writes back every results CSV that changed (temporary file, then rename:
    /// [`crate::files`]); nothing in a dry run.
    pub fn finish(self) -> Result<usize, BounceError> {
        if self.dry_run {
            return Ok(0);
        }
        let mut written = 0;
        for (path, file) in self.files.into_iter().filter(|(_, f)| f.changed) {
            write_results(&path, &file)?;
            written += 1;
        }
        Ok(written)
    }
}

/// The report names `email` (as its recipient or one of its aliases).
fn names(r: &Recipient, email: &str) -> bool {
    r.address.as_deref() == Some(email) || r.aliases.iter().any(|a| a == email)
}

/// Writes a results CSV through a temporary file in its folder, then renames it into place.
fn write_results(path: &Path, file: &Results) -> Result<(), BounceError> {
    let err = |message: String| BounceError::Results {
        path: path.to_path_buf(),
        message,
    };
    let tmp = NewFile::create(path).map_err(|e| err(e.to_string()))?;
    let mut w = csv::Writer::from_writer(tmp);
    w.write_record(&file.headers)
        .map_err(|e| err(e.to_string()))?;
    for rec in &file.rows {
        w.write_record(rec).map_err(|e| err(e.to_string()))?;
    }
    files::commit_csv(w).map_err(|e| err(e.to_string()))
}
