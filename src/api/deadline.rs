//! A request's deadline: the moment after which nobody waits for its answer any more.
//!
//! Clocks of different machines disagree, so a deadline travels as a *budget*, the
//! milliseconds left when the message was sent, and every hop turns it back into an
//! instant on its own clock when it receives it. Each hop sends a budget a margin
//! shorter than its own (see [`Deadline::budget_ms`]), which covers transit time: the
//! next hop stops before this one gives up. Invariants: a hop that finds the deadline
//! passed does no more work for the request (it drops queued engine calls and sends
//! nothing further), and by the time a caller gives up on a call, every hop after it
//! has stopped working on it, so a retry never runs beside the attempt it retries.

use std::time::{Duration, Instant};

/// When a request stops mattering, on this process's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    /// The longest budget a deadline keeps (an hour, like the longest configurable
    /// timeout): a larger one is cut to it, so no arithmetic on it overflows and no
    /// request can hold a slot for ever.
    pub const MAX_BUDGET: Duration = Duration::from_secs(3_600);

    /// The deadline `budget` from now (at most [`Deadline::MAX_BUDGET`]).
    pub fn after(budget: Duration) -> Self {
        Self(Instant::now() + budget.min(Self::MAX_BUDGET))
    }

    /// The deadline a received budget names (`budget_ms` of 0: the sender set none, and
    /// `default` applies).
    pub fn from_budget_ms(budget_ms: u32, default: Duration) -> Self {
        match budget_ms {
            0 => Self::after(default),
            ms => Self::after(Duration::from_millis(u64::from(ms))),
        }
    }

    /// The time left (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Has the deadline passed?
    pub fn passed(&self) -> bool {
        Instant::now() >= self.0
    }

    /// The budget to send to the next hop, in whole milliseconds: the time left less a
    /// margin (a tenth of it, from 1 ms to 250 ms), so that the next hop has stopped
    /// working on the request by the time this one gives up on it and perhaps retries
    /// it elsewhere: a retry never runs beside the attempt before it. At least 1 while
    /// any time is left, so that it never reads as "none"; 0 once passed.
    pub fn budget_ms(&self) -> u32 {
        let left = self.remaining();
        if left.is_zero() {
            return 0;
        }
        let margin = (left / 10).clamp(Duration::from_millis(1), Duration::from_millis(250));
        let sent = left.saturating_sub(margin);
        u32::try_from(sent.as_millis()).unwrap_or(u32::MAX).max(1)
    }

    /// The sooner of this deadline and `limit` from now: a single call's timeout never
    /// outlives the request's deadline.
    pub fn cap(&self, limit: Duration) -> Duration {
        self.remaining().min(limit)
    }

    /// The instant itself.
    pub fn instant(&self) -> Instant {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_round_trips_and_a_passed_deadline_sends_zero() {
        let d = Deadline::after(Duration::from_secs(2));
        let ms = d.budget_ms();
        assert!(ms > 1_700 && ms <= 1_800, "{ms}");
        let back = Deadline::from_budget_ms(ms, Duration::from_secs(9));
        assert!(back.remaining() <= Duration::from_secs(2));
        let gone = Deadline::after(Duration::ZERO);
        assert!(gone.passed());
        assert_eq!(gone.budget_ms(), 0);
        assert_eq!(gone.cap(Duration::from_secs(1)), Duration::ZERO);
    }

    #[test]
    fn the_budget_sent_ends_before_the_sender_gives_up() {
        let d = Deadline::after(Duration::from_secs(3));
        let ms = d.budget_ms();
        assert!(ms <= 2_750 && ms > 2_700, "{ms}");
        let short = Deadline::after(Duration::from_millis(100));
        assert!(short.budget_ms() <= 90, "{}", short.budget_ms());
    }

    #[test]
    fn no_budget_means_the_default_and_a_tiny_one_is_never_zero() {
        let d = Deadline::from_budget_ms(0, Duration::from_secs(3));
        assert!(d.remaining() > Duration::from_millis(2_900));
        let huge = Deadline::after(Duration::MAX);
        assert!(huge.remaining() <= Deadline::MAX_BUDGET);
        let tiny = Deadline::after(Duration::from_micros(500));
        assert!(tiny.budget_ms() <= 1);
        assert_eq!(
            Deadline::after(Duration::from_secs(1)).cap(Duration::from_millis(10)),
            Duration::from_millis(10)
        );
    }
}
