//! Admission control for background work (paper section 6.5): anti-entropy exchanges
//! and repairs, tree rebuilds, rebuilding a wiped node, hint delivery, transfers and
//! reaping all draw from one budget of *work units per second* (a unit is one key read,
//! written or compared remotely), and a feedback loop sets the budget from foreground
//! latency.
//!
//! The loop: every client request's latency at this node is recorded; once a second
//! the p99 of the last second is compared with `[admission] target_p99_ms`. Above it,
//! the budget halves (down to `min_units_per_s`); at or below it, the budget grows by
//! half (up to `max_units_per_s`). Multiplicative decrease backs off at once when the
//! foreground suffers; the floor keeps background work (a rebuild, hint delivery)
//! moving, so it always finishes. A second with too few requests to measure counts as
//! idle: the budget grows.
//!
//! The budget is a token bucket holding at most one second of units; a background task
//! asks for its units before each step and waits (off the event loop's critical path:
//! it is a timer) until they are there.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::AdmissionConfig;

pub use crate::api::status::AdmissionStatus;

/// Fewest requests in a second for its p99 to count.
const MIN_SAMPLES: usize = 20;
/// Most latencies kept per second (a sample of them past this).
const MAX_SAMPLES: usize = 20_000;

struct State {
    samples: Vec<u32>,
    seen: usize,
    budget: f64,
    tokens: f64,
    refilled: Instant,
    last_adjust: Instant,
    status: AdmissionStatus,
}

/// The budget and its feedback loop. Thread-safe.
pub struct Admission {
    config: AdmissionConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("status", &self.status())
            .finish()
    }
}

impl Admission {
    /// A controller starting at the largest budget (an idle node).
    pub fn new(config: AdmissionConfig) -> Self {
        let now = Instant::now();
        let budget = config.max_units_per_s as f64;
        Self {
            state: Mutex::new(State {
                samples: Vec::new(),
                seen: 0,
                budget,
                tokens: budget,
                refilled: now,
                last_adjust: now,
                status: AdmissionStatus {
                    budget_units_per_s: config.max_units_per_s,
                    target_p99_ms: config.target_p99_ms,
                    ..AdmissionStatus::default()
                },
            }),
            config,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one foreground request's latency.
    pub fn record(&self, latency: Duration) {
        let us = latency.as_micros().min(u128::from(u32::MAX)) as u32;
        let mut s = self.lock();
        s.seen += 1;
        if s.samples.len() < MAX_SAMPLES {
            s.samples.push(us);
        } else {
            // Reservoir sampling keeps the sample uniform over the second.
            let i = rand::random_range(0..s.seen);
            if i < MAX_SAMPLES {
                s.samples[i] = us;
            }
        }
    }

    /// Runs the feedback step if a second has passed: measures the p99 of the
    /// requests recorded since, and moves the budget.
    pub fn adjust(&self) {
        let mut s = self.lock();
        if s.last_adjust.elapsed() < Duration::from_secs(1) {
            return;
        }
        s.last_adjust = Instant::now();
        let mut samples = std::mem::take(&mut s.samples);
        let seen = std::mem::take(&mut s.seen);
        let (min, max) = (
            self.config.min_units_per_s as f64,
            self.config.max_units_per_s as f64,
        );
        let p99_us = if samples.len() >= MIN_SAMPLES {
            samples.sort_unstable();
            let i = ((samples.len() as f64) * 0.99).ceil() as usize;
            u64::from(samples[i.clamp(1, samples.len()) - 1])
        } else {
            0
        };
        if p99_us > self.config.target_p99_ms.saturating_mul(1000) {
            s.budget = (s.budget / 2.0).max(min);
            s.status.cuts += 1;
        } else {
            s.budget = (s.budget * 1.5).min(max);
        }
        s.tokens = s.tokens.min(s.budget);
        s.status.foreground_p99_us = p99_us;
        s.status.foreground_requests = seen as u64;
        s.status.budget_units_per_s = s.budget as u64;
    }

    /// Waits until `units` of background work are allowed, then takes them. A request
    /// larger than a second's budget waits for a full bucket and then goes (so it is
    /// never refused for ever).
    pub async fn acquire(&self, units: u64) {
        loop {
            let wait = {
                let mut s = self.lock();
                let now = Instant::now();
                let dt = now.duration_since(s.refilled).as_secs_f64();
                s.refilled = now;
                s.tokens = (s.tokens + dt * s.budget).min(s.budget);
                let want = (units as f64).min(s.budget);
                if s.tokens >= want {
                    s.tokens -= want;
                    s.status.units_granted += units;
                    return;
                }
                Duration::from_secs_f64(((want - s.tokens) / s.budget).clamp(0.001, 1.0))
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The controller's state now.
    pub fn status(&self) -> AdmissionStatus {
        self.lock().status.clone()
    }
}

/// Runs the feedback step once a second, forever.
pub async fn feedback_loop(admission: std::sync::Arc<super::NodeCore>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        admission.admission.adjust();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn controller() -> Admission {
        Admission::new(AdmissionConfig {
            target_p99_ms: 10,
            min_units_per_s: 100,
            max_units_per_s: 10_000,
        })
    }

    fn second(a: &Admission, latency_ms: u64) {
        for _ in 0..100 {
            a.record(Duration::from_millis(latency_ms));
        }
        a.lock().last_adjust -= Duration::from_secs(2);
        a.adjust();
    }

    #[test]
    fn the_budget_shrinks_above_the_target_and_grows_below_it() {
        let a = controller();
        assert_eq!(a.status().budget_units_per_s, 10_000);
        second(&a, 50);
        assert_eq!(a.status().budget_units_per_s, 5_000);
        assert!(a.status().foreground_p99_us >= 50_000);
        for _ in 0..20 {
            second(&a, 50);
        }
        assert_eq!(a.status().budget_units_per_s, 100, "never below the floor");
        second(&a, 1);
        assert_eq!(a.status().budget_units_per_s, 150);
        for _ in 0..20 {
            second(&a, 1);
        }
        assert_eq!(a.status().budget_units_per_s, 10_000, "never above the cap");
        // An idle second (too few requests to measure) lets it grow.
        second(&a, 50);
        a.lock().last_adjust -= Duration::from_secs(2);
        a.adjust();
        assert_eq!(a.status().budget_units_per_s, 7_500);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn acquiring_past_the_budget_waits_for_the_bucket_to_refill() {
        let a = controller();
        second(&a, 50); // 5,000 units/s
        a.acquire(5_000).await; // the whole bucket
        let start = Instant::now();
        a.acquire(500).await; // a tenth of a second's refill
                              // A lower bound only: the wait is the behaviour, not a timing.
        assert!(
            start.elapsed() >= Duration::from_millis(50),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(a.status().units_granted, 5_500);
    }
}
