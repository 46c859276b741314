//! Tying a report to its row and acting on it: the row of the campaign's results CSV becomes
//! `bounced` (step `late-bounce`, the DSN's code, status and diagnostic) and the address goes
//! on the suppression list when the failure is the recipient's
//! ([`crate::suppress::is_recipient_failure`]) or the report is a complaint.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ring::hmac;

use super::BounceError;
use super::parse::{self, Kind, Report};
use crate::files::{self, NewFile};
use crate::outcome::{Outcome, Status, Step};
use crate::smtp::Reply;
use crate::suppress::{self, Entry, Reason, Store};
use crate::verp;

/// What became of one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Tied to a row and acted on.
    Matched {
        /// Campaign id.
        campaign: String,
        /// Row number in the results CSV.
        row: usize,
        /// The row's address.
        email: String,
        /// What the report said.
        kind: Kind,
        /// Status code and diagnostic.
        detail: String,
        /// The address was added to the suppression list (false: already there or not a
        /// recipient reason).
        suppressed: bool,
    },
    /// A report that calls for nothing (a delay), or not a report at all.
    Ignored(String),
    /// A VERP token whose signature is wrong: nothing changed.
    Forged(String),
    /// No row found: nothing changed.
    Unmatched(String),
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Disposition::Matched {
                campaign,
                row,
                email,
                kind,
                detail,
                suppressed,
            } => {
                let what = match kind {
                    Kind::Complaint => "complaint",
                    _ => "bounced",
                };
                let s = if *suppressed { ", suppressed" } else { "" };
                write!(
                    f,
                    "matched: campaign {campaign} row {row} {email}: {what} {detail}{s}"
                )
            }
            Disposition::Ignored(why) => write!(f, "ignored: {why}"),
            Disposition::Forged(why) => write!(f, "forged: {why}"),
            Disposition::Unmatched(why) => write!(f, "unmatched: {why}"),
        }
    }
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

/// Row `i` of the results CSV at `path` becomes `bounced` (step `late-bounce`, the report's
/// codes and diagnostic, its category), and the campaign's journal records it so that a re-run
/// keeps it. Returns the bounce as an outcome (`None` when the report has no status code).
fn mark_bounced(
    file: &mut Results,
    i: usize,
    r: &Report,
    path: &Path,
) -> Result<Option<Outcome>, BounceError> {
    let outcome = r.status.map(|e| {
        let reply = Reply::local(r.code.unwrap_or(550), e, r.diagnostic.clone());
        Outcome::from_reply(Status::Bounced, Step::LateBounce, &reply)
    });
    let category = outcome
        .as_ref()
        .and_then(crate::report::category_of)
        .map_or("other", |c| c.as_str());
    let code = r.code.map(|c| c.to_string()).unwrap_or_default();
    let status = r.status.map(|s| s.to_string()).unwrap_or_default();
    file.set(
        i,
        &[
            ("status", Status::Bounced.as_str().to_string()),
            ("step", Step::LateBounce.as_str().to_string()),
            ("code", code),
            ("enhanced_code", status),
            ("response", r.diagnostic.clone()),
            ("category", category.to_string()),
        ],
    );
    let message_id = file.get(i, "message_id");
    if let Some(o) = &outcome
        && !message_id.is_empty()
    {
        crate::journal::record_late_bounce(&crate::journal::path_for(path), message_id, o)
            .map_err(|e| BounceError::Results {
                path: path.to_path_buf(),
                message: format!("journal: {e}"),
            })?;
    }
    Ok(outcome)
}

/// A row found: campaign id, its results CSV, index of the row in the file.
type Hit = (String, PathBuf, usize);

/// Matches reports against the campaigns the suppression list knows.
pub struct Matcher {
    key: Option<hmac::Key>,
    store: Store,
    campaigns: Vec<(String, PathBuf)>,
    files: HashMap<PathBuf, Results>,
}

impl Matcher {
    /// `key`: the VERP key (without it, only Message-ID matching is possible).
    pub fn new(store: Store, key: Option<&[u8]>) -> Result<Self, BounceError> {
        Ok(Self {
            key: key.map(verp::key),
            campaigns: store.campaigns()?,
            store,
            files: HashMap::new(),
        })
    }

    /// Reads one message and acts on it.
    pub fn apply(&mut self, raw: &[u8]) -> Result<Disposition, BounceError> {
        let Some(report) = parse::parse(raw) else {
            return Ok(Disposition::Ignored(
                "not a bounce or complaint report".into(),
            ));
        };
        if report.kind == Kind::Delay {
            return Ok(Disposition::Ignored(format!(
                "delay, not final: {}",
                report.diagnostic
            )));
        }
        let found = match self.by_token(&report)? {
            Err(v) => return Ok(v),
            Ok(Some(hit)) => Some(hit),
            Ok(None) => self.by_message_id(&report)?,
        };
        let Some((campaign, path, i)) = found else {
            let id = report.message_id.as_deref().unwrap_or("none");
            return Ok(Disposition::Unmatched(format!(
                "{} report for {} (Message-ID {id}): no campaign row has it",
                report.format,
                report.recipients.join(", ")
            )));
        };
        self.act(&report, campaign, &path, i)
    }

    /// By VERP token: `Err` when tokens are there but none is ours (forged) or the row
    /// disagrees with the report's recipient.
    fn by_token(&mut self, r: &Report) -> Result<Result<Option<Hit>, Disposition>, BounceError> {
        let Some(key) = &self.key else {
            return Ok(Ok(None));
        };
        if r.tokens.is_empty() {
            return Ok(Ok(None));
        }
        let Some(t) = r.tokens.iter().find(|t| t.verify(key)) else {
            return Ok(Err(Disposition::Forged(format!(
                "token {} has a bad signature",
                r.tokens[0].text
            ))));
        };
        let Some(path) = self.results_of(&t.campaign) else {
            return Ok(Err(Disposition::Unmatched(format!(
                "campaign {} is unknown here",
                t.campaign
            ))));
        };
        let file = self.load(&path)?;
        let Some(i) = (0..file.rows.len()).find(|&i| file.get(i, "row") == t.row.to_string())
        else {
            return Ok(Err(Disposition::Unmatched(format!(
                "campaign {} has no row {}",
                t.campaign, t.row
            ))));
        };
        let email = suppress::normalize(file.get(i, "email")).unwrap_or_default();
        if !r.recipients.is_empty() && !r.recipients.contains(&email) {
            return Ok(Err(Disposition::Unmatched(format!(
                "row {} of campaign {} is {email}, the report is about {}",
                t.row,
                t.campaign,
                r.recipients.join(", ")
            ))));
        }
        Ok(Ok(Some((t.campaign.clone(), path, i))))
    }

    /// By the original Message-ID plus a recipient the row has.
    fn by_message_id(&mut self, r: &Report) -> Result<Option<Hit>, BounceError> {
        let Some(id) = &r.message_id else {
            return Ok(None);
        };
        for (campaign, path) in self.campaigns.clone() {
            if !path.is_file() {
                continue;
            }
            let file = self.load(&path)?;
            let hit = (0..file.rows.len()).find(|&i| {
                file.get(i, "message_id") == id
                    && suppress::normalize(file.get(i, "email"))
                        .is_ok_and(|e| r.recipients.contains(&e))
            });
            if let Some(i) = hit {
                return Ok(Some((campaign, path, i)));
            }
        }
        Ok(None)
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

    /// Updates the row and the suppression list.
    fn act(
        &mut self,
        r: &Report,
        campaign: String,
        path: &Path,
        i: usize,
    ) -> Result<Disposition, BounceError> {
        let file = self.load(path)?;
        let email = file.get(i, "email").to_string();
        let row = file.get(i, "row").parse().unwrap_or(0);
        let status = r.status.map(|s| s.to_string()).unwrap_or_default();
        let code = r.code.map(|c| c.to_string()).unwrap_or_default();
        let detail = [code.as_str(), status.as_str(), r.diagnostic.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let entry = match r.kind {
            Kind::Complaint => Some((Reason::Complaint, r.diagnostic.clone())),
            _ => {
                let outcome = mark_bounced(file, i, r, path)?;
                let recipient = outcome.as_ref().is_some_and(suppress::is_recipient_failure);
                recipient.then(|| (Reason::HardBounce, format!("late bounce: {detail}")))
            }
        };
        let mut suppressed = false;
        if let (Some((reason, cause)), Ok(key)) = (entry, suppress::normalize(&email)) {
            suppressed = self
                .store
                .add(&[Entry::new(key, reason, cause, &campaign)])?
                > 0;
        }
        Ok(Disposition::Matched {
            campaign,
            row,
            email,
            kind: r.kind,
            detail,
            suppressed,
        })
    }

    /// Writes back every results CSV that changed (temporary file, then rename: [`crate::files`]).
    pub fn finish(self) -> Result<usize, BounceError> {
        let mut written = 0;
        for (path, file) in self.files.into_iter().filter(|(_, f)| f.changed) {
            let err = |message: String| BounceError::Results {
                path: path.clone(),
                message,
            };
            let tmp = NewFile::create(&path).map_err(|e| err(e.to_string()))?;
            let mut w = csv::Writer::from_writer(tmp);
            w.write_record(&file.headers)
                .map_err(|e| err(e.to_string()))?;
            for rec in &file.rows {
                w.write_record(rec).map_err(|e| err(e.to_string()))?;
            }
            files::commit_csv(w).map_err(|e| err(e.to_string()))?;
            written += 1;
        }
        Ok(written)
    }
}
