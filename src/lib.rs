//! libdynamo: Amazon's Dynamo (DeCandia et al., SOSP 2007) as a library.
//!
//! The core model, deterministic and network-free:
//! - [`ring`]: MD5 consistent hashing over Q equal partitions, the claim algorithm,
//!   preference lists;
//! - [`dot`], [`vclock`], [`context`]: causality with dotted version vectors;
//! - [`version`]: versions and sibling sets, merge and supersession;
//! - [`store`]: one replica's versioned store over a pluggable engine ([`engines`]).
//!
//! The distributed system on top:
//! - [`api`]: the answers and status the client, the node, the CLI and the FFI speak
//!   (plain data; neither the client nor the node depends on the other);
//! - [`rpc`]: the Cap'n Proto schema (`src/rpc/dynamo.capnp`) and its conversions;
//! - [`node`]: a node process: quorum coordinator, sloppy quorum, hinted handoff, read
//!   repair, local failure detection, clean shutdown;
//! - [`client`]: the client library, client- or server-driven coordination;
//! - [`config`]: a node's TOML config; [`cluster`]: local clusters of node processes;
//! - [`error`]: the error every request can end in.
//!
//! Plus [`sim`] (the paper's partitioning experiment) and [`bench`] (engine and
//! cluster benchmarks). See `DESIGN.md` in the project's shared folder.

#![warn(missing_docs)]

pub mod admin;
pub mod api;
pub mod bench;
pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod context;
pub mod dot;
pub mod durable_file;
pub mod error;
pub mod local_ports;
pub mod membership;
pub mod node;
pub mod quorum;
pub mod ring;
pub mod rpc;
pub mod sim;
pub mod store;
pub mod vclock;
pub mod version;

/// The pluggable local storage engines (re-export of `dynamo-engines`).
pub use dynamo_engines as engines;
