//! Simulations of the paper's experiments, run by `dynamo sim`.

pub mod partitioning;
