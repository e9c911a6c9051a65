//! Simulations of the paper's experiments.
