//! Latency recording and its summary, shared by every benchmark.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Records operation latencies in nanoseconds (1 ns to 10 minutes, 3 significant digits).
/// Invariant: values above the range are clamped to its top rather than dropped, so counts
/// always equal the number of operations recorded.
pub struct LatencyRecorder {
    hist: Histogram<u64>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            // The bounds are constants that hdrhistogram accepts; this cannot fail.
            hist: Histogram::new_with_bounds(1, 600_000_000_000, 3)
                .expect("valid histogram bounds"),
        }
    }
}

impl LatencyRecorder {
    /// Records one operation's latency.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.hist.saturating_record(ns);
    }

    /// Operations recorded so far.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// Summarises the run: `ops` operations over `elapsed` wall time.
    pub fn summary(&self, elapsed: Duration) -> PhaseSummary {
        let us = |q: f64| self.hist.value_at_quantile(q) as f64 / 1_000.0;
        let ops = self.hist.len();
        let secs = elapsed.as_secs_f64();
        PhaseSummary {
            ops,
            seconds: secs,
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            p50_us: us(0.50),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: self.hist.max() as f64 / 1_000.0,
        }
    }
}

/// Throughput and latency percentiles of one benchmark phase.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct PhaseSummary {
    /// Operations completed.
    pub ops: u64,
    /// Wall time of the phase.
    pub seconds: f64,
    /// `ops / seconds`.
    pub ops_per_sec: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile latency, microseconds.
    pub p999_us: f64,
    /// Slowest operation, microseconds.
    pub max_us: f64,
}

/// Formats microseconds compactly for tables: `850us`, `12.3ms`, `1.20s`.
pub fn format_us(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.1}ms", us / 1_000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

/// Formats an operation rate: `950`, `12.3k`, `1.20M`.
pub fn format_rate(ops_per_sec: f64) -> String {
    if ops_per_sec < 1_000.0 {
        format!("{ops_per_sec:.0}")
    } else if ops_per_sec < 1_000_000.0 {
        format!("{:.1}k", ops_per_sec / 1_000.0)
    } else {
        format!("{:.2}M", ops_per_sec / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_follow_the_recorded_latencies() {
        let mut rec = LatencyRecorder::default();
        for us in 1..=1000u64 {
            rec.record(Duration::from_micros(us));
        }
        let s = rec.summary(Duration::from_secs(2));
        assert_eq!(s.ops, 1000);
        assert_eq!(s.ops_per_sec, 500.0);
        assert!((s.p50_us - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 2.0, "{s:?}");
        assert!((s.p999_us - 999.0).abs() < 2.0, "{s:?}");
        rec.record(Duration::from_secs(3600));
        assert_eq!(
            rec.count(),
            1001,
            "out-of-range latencies are clamped, not dropped"
        );
    }

    #[test]
    fn formatting_picks_units() {
        assert_eq!(format_us(850.0), "850us");
        assert_eq!(format_us(12_345.0), "12.3ms");
        assert_eq!(format_us(1_200_000.0), "1.20s");
        assert_eq!(format_rate(950.0), "950");
        assert_eq!(format_rate(12_345.0), "12.3k");
    }
}
