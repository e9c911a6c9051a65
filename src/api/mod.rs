//! The types the client, the node, the CLI and the FFI speak: answers of gets, puts and
//! deletes, key pages and node status. They are plain data with no transport in them:
//! `rpc/` converts them to and from the wire, and the client and node depend on this
//! module, never on each other.

pub mod deadline;
pub mod kv;
pub mod status;

pub use deadline::Deadline;
pub use kv::{
    GetRequest, GetResponse, KeyPage, PutRequest, PutResponse, Sibling, MAX_KEYS_PER_PAGE,
};
pub use status::{
    AdmissionStatus, AntiEntropyStatus, LoadStatus, MemberStatus, NodeStatus, PartitionTransfer,
    RebuildStatus, RefusedHint, RingInfo, StoreRebuildStatus, StoreSummary, TransferStatus,
};
