//! libdynamo: Amazon's Dynamo (DeCandia et al., SOSP 2007) as a library.
//!
//! This crate is the core: today the benchmarks over the pluggable storage engines
//! ([`engines`], the `dynamo-engines` crate); the ring, versions, coordinator and node
//! follow (see `DESIGN.md` in the project's shared folder for the map).

#![warn(missing_docs)]

pub mod bench;

/// The pluggable local storage engines (re-export of `dynamo-engines`).
pub use dynamo_engines as engines;
