//! Benchmarks behind `dynamo bench`. Timings live here and in their reports, never in test
//! assertions.

pub mod advise;
pub mod cpu;
pub mod engines;
pub mod join;
pub mod latency;
pub mod rebuild;
pub mod workload;
