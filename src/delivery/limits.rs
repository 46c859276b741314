//! Per-site politeness as pure values: the slot arithmetic that spaces messages out at a
//! [`Rate`], testable without a clock or a server.

use std::time::Duration;

use tokio::time::Instant;

/// When the next message may start, given the earliest free slot (`next_free`, if any
/// message was sent before) and the time now; returns the slot to use and the next free one.
pub fn take_slot(
    next_free: Option<Instant>,
    now: Instant,
    interval: Duration,
) -> (Instant, Instant) {
    let slot = next_free.map_or(now, |n| n.max(now));
    (slot, slot + interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_spaced_by_the_interval_and_never_in_the_past() {
        let t0 = Instant::now();
        let i = Duration::from_millis(600);
        let (s1, n1) = take_slot(None, t0, i);
        assert_eq!((s1, n1), (t0, t0 + i));
        // A second message right away waits for the next slot.
        let (s2, n2) = take_slot(Some(n1), t0, i);
        assert_eq!((s2, n2), (t0 + i, t0 + 2 * i));
        // After a long pause no credit is saved up: the slot is now.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(take_slot(Some(n2), later, i).0, later);
    }
}
