//! Backoff rules: a provider's reply text → what to do to the provider (slow it to a rate,
//! cap its connections or messages per connection, suspend it), for a while.
//!
//! The built-in set ([`builtin_rules`]) is KumoMTA's published one (REFERENCE, "Receivers in
//! the wild"); `[[backoff]]` tables in `mailmerge.toml` (the hidden `--backoff` flag) add
//! rules, and a user rule with the same pattern and provider as a built-in one replaces it.
//! Matching is a case-insensitive substring; the first matching rule wins, user rules first.
//! A reply that no rule matches is still acted on by the engine, by its [`Signal`]: the
//! smallest change that answers it (one connection fewer, fewer messages per connection, half
//! the rate).

use std::time::Duration;

use serde::Deserialize;

use super::ProviderError;
use crate::units::Rate;
use crate::units::parse_duration;

/// What a rule does to the provider, for `duration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleAction {
    /// Slow the provider to this rate.
    pub rate: Option<Rate>,
    /// At most this many connections.
    pub connections: Option<usize>,
    /// At most this many messages per connection.
    pub messages_per_connection: Option<usize>,
    /// No message at all.
    pub suspend: bool,
    /// How long the rule's limits hold (then the provider ramps back up).
    pub duration: Duration,
}

/// One backoff rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackoffRule {
    /// Lower-case substring of the reply text (code and text as one string).
    pub pattern: String,
    /// Only for this provider (`None`: any).
    pub provider: Option<String>,
    /// The rule acts at the `times`-th match within an hour (1: at once).
    pub times: u32,
    /// What it does.
    pub action: RuleAction,
}

impl BackoffRule {
    /// Whether the rule is about `reply` (code and text) from `provider`.
    pub fn matches(&self, provider: Option<&str>, reply_lower: &str) -> bool {
        self.provider.as_deref().is_none_or(|p| Some(p) == provider)
            && reply_lower.contains(&self.pattern)
    }

    /// The rule as one line (docs, summary).
    pub fn describe(&self) -> String {
        let a = &self.action;
        let mut what = Vec::new();
        if a.suspend {
            what.push("suspend".to_string());
        }
        if let Some(r) = a.rate {
            what.push(format!(
                "slow to {}",
                show_rate(r.count as f64 / r.per.as_secs_f64())
            ));
        }
        if let Some(n) = a.connections {
            what.push(format!("{n} connection(s)"));
        }
        if let Some(n) = a.messages_per_connection {
            what.push(format!("{n} message(s) per connection"));
        }
        let times = match self.times {
            1 => String::new(),
            n => format!(" (at the {n}th time within an hour)"),
        };
        format!(
            "{:?}{} → {} for {}{times}",
            self.pattern,
            self.provider
                .as_deref()
                .map(|p| format!(" from {p}"))
                .unwrap_or_default(),
            what.join(", "),
            humantime::format_duration(a.duration)
        )
    }
}

/// A rate for people: `10/min`, `1.5/s`.
pub fn show_rate(per_second: f64) -> String {
    if per_second >= 1.0 {
        format!("{:.0}/s", per_second)
    } else if per_second * 60.0 >= 1.0 {
        format!("{:.0}/min", per_second * 60.0)
    } else {
        format!("{:.0}/h", per_second * 3600.0)
    }
}

/// What a throttling reply is about when no rule says more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Too many simultaneous connections: one fewer.
    Connections,
    /// Too many messages over one connection: reconnect, fewer per connection.
    MessagesPerConnection,
    /// Too fast, or a reputation throttle: halve the rate.
    Rate,
}

/// The signal of a throttling reply (`lower`: its code and text in lower case).
pub fn signal(lower: &str) -> Signal {
    const CONNECTIONS: [&str; 5] = [
        "too many connections",
        "too many concurrent",
        "concurrent connections",
        "concurrent server connections",
        "maximum number of connections",
    ];
    const PER_CONNECTION: [&str; 3] = [
        "too many messages on this connection",
        "messages per connection",
        "too many messages in this session",
    ];
    if CONNECTIONS.iter().any(|w| lower.contains(w)) {
        Signal::Connections
    } else if PER_CONNECTION.iter().any(|w| lower.contains(w)) {
        Signal::MessagesPerConnection
    } else {
        Signal::Rate
    }
}

/// What the user wrote for one rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleInput {
    pattern: String,
    provider: Option<String>,
    times: Option<u32>,
    rate: Option<String>,
    connections: Option<usize>,
    messages_per_connection: Option<usize>,
    suspend: Option<bool>,
    duration: Option<String>,
}

/// Parses a `--backoff` value: the inside of a TOML inline table, e.g.
/// `pattern = "[TS03]", provider = "yahoo", rate = "10/min", duration = "30m"`.
pub fn parse_rule(s: &str) -> Result<BackoffRule, ProviderError> {
    #[derive(Deserialize)]
    struct W {
        r: RuleInput,
    }
    let bad = |m: &str| ProviderError::Syntax(format!("backoff rule {s:?}: {m}"));
    let w: W = toml::from_str(&format!("r = {{ {s} }}")).map_err(|e| bad(e.message()))?;
    let r = w.r;
    let rate = match &r.rate {
        Some(x) => Some(x.parse::<Rate>().map_err(|e| bad(&e.to_string()))?),
        None => None,
    };
    let duration = match &r.duration {
        Some(d) => parse_duration(d).map_err(|e| bad(&e.to_string()))?,
        None => Duration::from_secs(30 * 60),
    };
    let suspend = r.suspend.unwrap_or(false);
    if r.pattern.trim().is_empty() {
        return Err(bad("empty pattern"));
    }
    if !suspend && rate.is_none() && r.connections.is_none() && r.messages_per_connection.is_none()
    {
        return Err(bad(
            "needs rate, connections, messages_per_connection or suspend",
        ));
    }
    Ok(BackoffRule {
        pattern: r.pattern.to_ascii_lowercase(),
        provider: r.provider,
        times: r.times.unwrap_or(1).max(1),
        action: RuleAction {
            rate,
            connections: r.connections.map(|n| n.max(1)),
            messages_per_connection: r.messages_per_connection.map(|n| n.max(1)),
            suspend,
            duration,
        },
    })
}

/// KumoMTA's published backoff rules (REFERENCE). Deviation: the three generic rules for any
/// provider act at the third match within an hour, not the first, because the engine's own
/// rate halving answers a single throttle (KumoMTA's own defaults have no AIMD).
pub fn builtin_rules() -> Vec<BackoffRule> {
    let min = |m: u64| Duration::from_secs(m * 60);
    let rule = |pattern: &str, provider: Option<&str>, times, action| BackoffRule {
        pattern: pattern.to_ascii_lowercase(),
        provider: provider.map(String::from),
        times,
        action,
    };
    let act = |rate: Option<&str>, connections, per_connection, suspend, duration| RuleAction {
        rate: rate.and_then(|r| r.parse().ok()),
        connections,
        messages_per_connection: per_connection,
        suspend,
        duration,
    };
    let slow = |rate, d| act(Some(rate), None, None, false, d);
    let suspend = |d| act(None, None, None, true, d);
    let crawl = || act(Some("1/min"), Some(1), None, false, min(90));
    vec![
        rule("[ts02]", Some("yahoo"), 1, slow("1/min", min(30))),
        rule("[ts03]", Some("yahoo"), 1, slow("10/min", min(30))),
        rule("[tss04]", Some("yahoo"), 1, suspend(min(120))),
        rule("[tss05]", Some("yahoo"), 1, suspend(min(240))),
        rule("unusual rate", Some("google"), 2, slow("10/min", min(30))),
        rule(
            "temporarily rate limited",
            Some("microsoft"),
            3,
            suspend(min(30)),
        ),
        rule(
            "exceeded the maximum number of connections",
            Some("microsoft"),
            1,
            act(None, Some(1), None, false, min(30)),
        ),
        rule(
            "maximum number of messages per connection",
            Some("microsoft"),
            1,
            act(None, None, Some(2), false, min(30)),
        ),
        rule("[hcm1]", Some("apple"), 1, suspend(min(15))),
        rule("[bs02]", Some("apple"), 1, suspend(min(15))),
        rule("temporarily deferred", None, 3, crawl()),
        rule("rate limited due to ip reputation", None, 3, crawl()),
        rule("server busy", None, 3, crawl()),
    ]
}

/// The rules in force: the user's first, then the built-in ones they do not replace.
pub fn rules_in_force(user: &[BackoffRule]) -> Vec<BackoffRule> {
    let mut all = user.to_vec();
    all.extend(builtin_rules().into_iter().filter(|b| {
        !user
            .iter()
            .any(|u| u.pattern == b.pattern && u.provider == b.provider)
    }));
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_read_from_the_words() {
        assert_eq!(
            signal(
                "421 4.3.2 the maximum number of concurrent server connections has exceeded a limit"
            ),
            Signal::Connections
        );
        assert_eq!(
            signal("421 4.7.0 too many messages on this connection"),
            Signal::MessagesPerConnection
        );
        assert_eq!(signal("451 4.7.650 temporarily rate limited"), Signal::Rate);
    }

    #[test]
    fn user_rules_parse_and_replace_built_in_ones() {
        let r = parse_rule(
            r#"pattern = "[TS03]", provider = "yahoo", rate = "20/min", duration = "10m""#,
        )
        .unwrap();
        assert!(r.matches(
            Some("yahoo"),
            "421 4.7.0 [ts03] all messages from x will be deferred"
        ));
        assert!(!r.matches(Some("google"), "[ts03]"));
        let all = rules_in_force(std::slice::from_ref(&r));
        assert_eq!(all.iter().filter(|b| b.pattern == "[ts03]").count(), 1);
        assert_eq!(all[0].action.rate, "20/min".parse().ok());
        assert_eq!(all.len(), builtin_rules().len());
        assert!(parse_rule(r#"pattern = "x""#).is_err(), "no action");
        assert!(parse_rule(r#"pattern = "x", suspend = true, duration = "soon""#).is_err());
    }

    #[test]
    fn built_in_rules_read_as_documented() {
        let lines: Vec<String> = builtin_rules().iter().map(BackoffRule::describe).collect();
        assert!(lines[0].contains("slow to 1/min for 30m"), "{}", lines[0]);
        assert!(lines[2].contains("suspend for 2h"), "{}", lines[2]);
    }
}
