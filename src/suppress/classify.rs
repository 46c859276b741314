//! Which failures mean "this recipient cannot receive mail" — the only ones suppressed
//! automatically. The single place that decides it; it agrees with the shared failure
//! classifier (the results' `category` column) and is stricter than it.

use crate::classify::Category;
use crate::outcome::{Outcome, Status, Step};
use crate::smtp::{EnhancedCode, Phase};

/// True when `o` is a permanent failure for a recipient reason.
///
/// The rule: the row `bounced` and the enhanced status code (RFC 3463) is `5.1.x`, the
/// *addressing status* subject: bad mailbox (5.1.1), bad domain / NXDOMAIN (5.1.2), bad
/// mailbox syntax (5.1.3), mailbox moved (5.1.6), null MX (5.1.10, RFC 7505), other address
/// status (5.1.0). Never suppressed:
/// - 5.1.7 and 5.1.8: those are about *our* sender address, as is anything refused at MAIL FROM;
/// - protocol errors (5.5.x), policy, authentication and spam refusals (5.7.x), mailbox full
///   or disabled (5.2.x), and every other subject: the next campaign may well get through;
/// - transient failures (4xx, 421) and anything not `bounced`;
/// - a bare 550 without an enhanced code: too ambiguous to drop someone for good.
///
/// It must also agree with the results' `category` ([`crate::classify`]): only
/// `bad-mailbox` and `bad-domain` are about the address itself.
pub fn is_recipient_failure(o: &Outcome) -> bool {
    if o.status != Status::Bounced || o.step == Step::Smtp(Phase::MailFrom) {
        return false;
    }
    o.enhanced.is_some_and(is_recipient_code)
        && crate::report::category_of(o).is_some_and(Category::is_about_the_address)
}

/// The enhanced-code half of [`is_recipient_failure`].
pub fn is_recipient_code(e: EnhancedCode) -> bool {
    e.class == 5 && e.subject == 1 && !matches!(e.detail, 7 | 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtp::Reply;

    fn bounced(step: Step, code: u16, e: (u8, u16, u16)) -> Outcome {
        let r = Reply::local(code, EnhancedCode::new(e.0, e.1, e.2), "x");
        Outcome::from_reply(Status::Bounced, step, &r)
    }

    #[test]
    fn only_addressing_failures_of_the_recipient_are_suppressed() {
        let rcpt = Step::Smtp(Phase::RcptTo);
        assert!(is_recipient_failure(&bounced(rcpt, 550, (5, 1, 1))));
        assert!(is_recipient_failure(&bounced(Step::Dns, 556, (5, 1, 10))));
        assert!(is_recipient_failure(&bounced(Step::Dns, 550, (5, 1, 2))));
        assert!(is_recipient_failure(&bounced(
            Step::LateBounce,
            550,
            (5, 1, 1)
        )));
        assert!(!is_recipient_failure(&bounced(rcpt, 503, (5, 5, 1))));
        assert!(!is_recipient_failure(&bounced(rcpt, 550, (5, 7, 1))));
        assert!(!is_recipient_failure(&bounced(rcpt, 552, (5, 2, 2))));
        assert!(!is_recipient_failure(&bounced(rcpt, 553, (5, 1, 8))));
        assert!(!is_recipient_failure(&bounced(
            Step::Smtp(Phase::MailFrom),
            550,
            (5, 1, 1)
        )));
        let mut deferred = bounced(rcpt, 450, (4, 1, 1));
        deferred.status = Status::Deferred;
        assert!(!is_recipient_failure(&deferred));
        let bare = Outcome::local(Status::Bounced, rcpt, "550 no");
        assert!(!is_recipient_failure(&bare));
    }
}
