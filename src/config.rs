//! A node's configuration file (TOML), as read by `dynamo node --config FILE`.
//!
//! Every field has a default, so an empty file is a valid single-node configuration
//! (name `node-1`, listening on 127.0.0.1:7400, data in `./data`, one store `default`
//! on RocksDB (or the best engine built in) with N=3, R=2, W=2). Invariant: a [`NodeConfig`] returned by
//! [`NodeConfig::parse`] or [`NodeConfig::load`] has passed [`NodeConfig::validate`],
//! and every error names the field it is about (`stores[1].w`,
//! `cluster.members[0].address`, ...).
//!
//! ```toml
//! [node]
//! name = "node-a"
//! listen = "127.0.0.1:7400"
//! data_dir = "/var/lib/dynamo/node-a"
//! zone = "rack-1"                 # optional
//! request_timeout_ms = 500
//! ping_interval_ms = 1000         # how often a peer marked down is probed
//! gossip_interval_ms = 1000       # how often membership is gossiped with a peer
//! membership_grace_ms = 30000     # after a ring switch: writes still reach dropped
//!                                 # replicas this long, then they drop the data
//! rpc_threads = 0                 # RPC event loops (0: one per core)
//! engine_threads = 0              # threads running engine calls (0: one per core)
//! engine_queue = 4096             # request engine calls that may wait; then `overloaded`
//! max_in_flight = 4096            # requests served at once; then `overloaded`
//! max_in_flight_per_connection = 1024
//! default_deadline_ms = 3000      # for requests that carry no deadline
//! max_connections = 4096          # accepted connections open at once
//! idle_timeout_ms = 300000        # an accepted connection silent this long is closed
//!
//! [cluster]
//! partitions = 256                # Q, a power of two, fixed at cluster creation
//! members = [                     # the members that create the cluster, or
//!   { name = "node-a", address = "127.0.0.1:7400", zone = "rack-1" },
//!   { name = "node-b", address = "127.0.0.1:7401" },
//! ]
//! # seeds = ["10.0.0.1:7400"]     # instead: nodes to learn the membership from
//!
//! [[stores]]
//! name = "carts"
//! engine = "rocksdb"              # rocksdb | sqlite | memory | buffered:rocksdb | buffered:sqlite | auto
//! object_size = "small"           # for engine = "auto": small | large | bytes
//! n = 3
//! r = 2
//! w = 2
//! policy = "siblings"             # or "lww"
//! max_key_size = 4096
//! max_value_size = 1048576
//! prune_threshold = 10
//! durability = "os"               # or "sync": on disk before acknowledged (group commit)
//!
//! [anti_entropy]                  # see docs/anti-entropy.md
//! enabled = true
//! interval_ms = 1000              # one exchange with the next peer per interval
//! confirm_delay_ms = 200          # a difference must persist this long to count
//! max_keys_per_exchange = 1000    # repairs per exchange
//! reap_delay_ms = 3600000         # a tombstone is reaped no sooner than this
//! reaped_retention_ms = 864000000 # reaped keys are remembered this long (10 days)
//!
//! [admission]                     # the budget of background work (paper 6.5)
//! target_p99_ms = 50              # foreground p99 above this shrinks the budget
//! min_units_per_s = 2000
//! max_units_per_s = 100000
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ring::{valid_name, validate_partition_count, Member, DEFAULT_PARTITIONS};
use crate::store::{StoreConfig, StoreError};

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, or a field of the wrong type or an unknown field.
    #[error("config {origin}: {message}")]
    Parse {
        /// The file (or "<string>").
        origin: String,
        /// The parser's message, which names the field and the line.
        message: String,
    },
    /// A field holds a value that cannot be used.
    #[error("config {origin}: field {field}: {reason}")]
    Invalid {
        /// The file (or "<string>").
        origin: String,
        /// The field's path, e.g. `stores[0].r`.
        field: String,
        /// The rule it breaks.
        reason: String,
    },
}

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node.
    pub node: NodeSection,
    /// The cluster it belongs to.
    pub cluster: ClusterSection,
    /// The stores it hosts (`[[stores]]`; see [`StoreConfig`] for the fields).
    pub stores: Vec<StoreConfig>,
    /// Anti-entropy and tombstone reaping (`[anti_entropy]`).
    pub anti_entropy: AntiEntropyConfig,
    /// The budget of background work (`[admission]`).
    pub admission: AdmissionConfig,
    /// Test-only fault injection (`[faults]`); absent in production configs.
    #[serde(skip_serializing_if = "Faults::is_none")]
    pub faults: Faults,
}

/// `[anti_entropy]`: how replicas compare and repair their partitions, and when
/// tombstones are reaped (see `docs/anti-entropy.md`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntiEntropyConfig {
    /// Run exchanges, rebuilds of trees and reaping at all (off: replicas converge only
    /// by read repair and hinted handoff, and tombstones are never reaped).
    pub enabled: bool,
    /// One exchange (every partition shared with the next peer in rotation, per store)
    /// per interval, in milliseconds.
    pub interval_ms: u64,
    /// A difference found by a comparison is acted on only if a second comparison this
    /// much later still finds it (writes in flight are not repair work), ms.
    pub confirm_delay_ms: u64,
    /// Most keys repaired in one exchange.
    pub max_keys_per_exchange: usize,
    /// A tombstone is reaped no sooner than this after it was written, ms.
    pub reap_delay_ms: u64,
    /// How long a reaped key's dots are remembered, ms: within it no replica restored
    /// from an older copy can bring the key back.
    pub reaped_retention_ms: u64,
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 1000,
            confirm_delay_ms: 200,
            max_keys_per_exchange: 1000,
            reap_delay_ms: 3_600_000,
            reaped_retention_ms: 10 * DAY_MS,
        }
    }
}

/// `[admission]`: the budget of background work and the foreground latency it
/// follows (see [`crate::node::admission`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Foreground p99 (ms) above which the budget shrinks.
    pub target_p99_ms: u64,
    /// The smallest budget, in work units (keys) per second: background work always
    /// moves at least this fast.
    pub min_units_per_s: u64,
    /// The largest budget, in work units per second.
    pub max_units_per_s: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            target_p99_ms: 50,
            min_units_per_s: 2_000,
            max_units_per_s: 100_000,
        }
    }
}

/// `[faults]`: deliberate misbehaviour for fault tests. Every field defaults to off;
/// never set these in production.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// After coordinating a put or delete, wait this long before replying (a reply
    /// lost or late after the write was applied).
    pub delay_write_reply_ms: u64,
    /// An engine call for this key (UTF-8) panics on this node.
    pub panic_on_key: Option<String>,
    /// Internode reads and writes of this key (UTF-8) answer `slow_ms` late here.
    pub slow_key: Option<String>,
    /// See `slow_key`.
    pub slow_ms: u64,
    /// `slow_key`'s delay is spent inside the engine call instead (on an engine
    /// thread: a busy engine whose queue fills up behind it), for every engine call of
    /// the key on this node.
    pub slow_engine: bool,
    /// Never forward a request to a key's owners: coordinate it here even when this
    /// node is outside the key's top N (as when forwarding fails).
    pub never_forward: bool,
}

impl Faults {
    /// True when no fault is set.
    pub fn is_none(&self) -> bool {
        *self == Faults::default()
    }
}

/// `[node]`: who this node is and where it keeps its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Unique member name.
    pub name: String,
    /// Address to listen on, `host:port`.
    pub listen: String,
    /// Data directory (identity, ring, engines).
    pub data_dir: PathBuf,
    /// Failure zone, if any.
    pub zone: Option<String>,
    /// Timeout of every call to another node, in milliseconds.
    pub request_timeout_ms: u64,
    /// How often a peer marked down is probed (local failure detection), in
    /// milliseconds.
    pub ping_interval_ms: u64,
    /// How often this node gossips its membership history with one peer, in
    /// milliseconds.
    pub gossip_interval_ms: u64,
    /// After the ring switched (a membership change's transfers finished): how long
    /// writes still also go to the replicas that were dropped, and after which those
    /// may drop the partitions they no longer hold, in milliseconds.
    pub membership_grace_ms: u64,
    /// Delete the data of partitions this node no longer holds a replica of, once no
    /// transfer is pending and the grace period after a switch is over (on by default:
    /// a served ring is never taken back, see `crate::membership::sequence`). Off keeps
    /// every copy, for an operator who wants to delete by hand.
    pub drop_moved_partitions: bool,
    /// RPC event loops (0: one per core); accepted connections are spread over them.
    pub rpc_threads: usize,
    /// Threads running engine calls (0: one per core).
    pub engine_threads: usize,
    /// Engine calls of client requests that may wait for a thread; past it a request is
    /// refused at once as `overloaded` (background work is not counted).
    pub engine_queue: usize,
    /// Client requests (gets, puts, deletes, forwards among them) this node serves at
    /// once; past it a request is refused at once as `overloaded`.
    pub max_in_flight: usize,
    /// The same limit for one connection (a peer's forwards share its connection).
    pub max_in_flight_per_connection: usize,
    /// The deadline of a request that came without one (an older client), in
    /// milliseconds from its arrival.
    pub default_deadline_ms: u64,
    /// Accepted connections open at once; one more is closed as soon as it is
    /// accepted.
    pub max_connections: usize,
    /// An accepted connection that sends nothing for this long is closed, in
    /// milliseconds (clients and peers reconnect when they need to).
    pub idle_timeout_ms: u64,
}

/// An hour, in milliseconds: the most a node's timeouts and intervals may be.
const HOUR_MS: u64 = 3_600_000;
/// A day, in milliseconds: the longest membership grace period.
const DAY_MS: u64 = 86_400_000;

impl Default for NodeSection {
    fn default() -> Self {
        Self {
            name: "node-1".into(),
            listen: "127.0.0.1:7400".into(),
            data_dir: PathBuf::from("data"),
            zone: None,
            request_timeout_ms: 500,
            ping_interval_ms: 1000,
            gossip_interval_ms: 1000,
            membership_grace_ms: 30_000,
            drop_moved_partitions: true,
            rpc_threads: 0,
            engine_threads: 0,
            engine_queue: 4096,
            max_in_flight: 4096,
            max_in_flight_per_connection: 1024,
            default_deadline_ms: 3000,
            max_connections: 4096,
            idle_timeout_ms: 300_000,
        }
    }
}

/// `[cluster]`: how this node finds its cluster, and the ring's size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Q, a power of two, fixed when the cluster is created.
    pub partitions: u32,
    /// The members that create the cluster, this node included (every node listing
    /// the same members, Q and N starts from the same history). Empty with no seeds
    /// means a cluster of this node alone. A list changed later is applied at this
    /// node as joins and leaves.
    pub members: Vec<MemberConfig>,
    /// Addresses of nodes to learn the membership from (`host:port`). A node with
    /// seeds and no members joins the seeds' cluster on its first start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<String>,
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            partitions: DEFAULT_PARTITIONS,
            members: Vec::new(),
            seeds: Vec::new(),
        }
    }
}

/// One entry of `cluster.members`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// Its name.
    pub name: String,
    /// Its RPC address, `host:port`.
    pub address: String,
    /// Its zone, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

impl NodeConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let mut cfg: NodeConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if cfg.stores.is_empty() {
            cfg.stores.push(StoreConfig::default());
        }
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// The file's TOML form (what `dynamo cluster up` writes).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot serialise: {e}\n"))
    }

    /// This node as a ring member: its name, zone and the address it listens on (as
    /// `cluster.members` lists it, if it does).
    pub fn this_member(&self) -> Member {
        let listed = self
            .cluster
            .members
            .iter()
            .find(|m| m.name == self.node.name);
        let mut m = Member::new(&self.node.name)
            .at(listed.map_or_else(|| self.node.listen.clone(), |m| m.address.clone()));
        m.zone = listed.map_or_else(|| self.node.zone.clone(), |m| m.zone.clone());
        m
    }

    /// The members the config creates the cluster with, addresses included: the
    /// listed ones, or this node alone when neither members nor seeds are given.
    /// `None` for a node that learns its cluster from seeds.
    pub fn members(&self) -> Option<Vec<Member>> {
        if self.cluster.members.is_empty() {
            return self
                .cluster
                .seeds
                .is_empty()
                .then(|| vec![self.this_member()]);
        }
        Some(
            self.cluster
                .members
                .iter()
                .map(|m| {
                    let mut member = Member::new(&m.name).at(&m.address);
                    member.zone = m.zone.clone();
                    member
                })
                .collect(),
        )
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |field: String, reason: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            field,
            reason,
        };
        let name_rule = "use 1 to 64 ASCII letters, digits, '.', '_' or '-'".to_string();
        if !valid_name(&self.node.name) {
            return Err(bad("node.name".into(), name_rule));
        }
        if let Some(z) = &self.node.zone {
            if !valid_name(z) {
                return Err(bad("node.zone".into(), name_rule));
            }
        }
        parse_addr(&self.node.listen).map_err(|r| bad("node.listen".into(), r))?;
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(bad("node.data_dir".into(), "must not be empty".into()));
        }
        // An hour at most: a larger interval would stall membership, and timer
        // arithmetic on it must not overflow.
        for (field, value) in [
            ("node.request_timeout_ms", self.node.request_timeout_ms),
            ("node.ping_interval_ms", self.node.ping_interval_ms),
            ("node.gossip_interval_ms", self.node.gossip_interval_ms),
            ("node.default_deadline_ms", self.node.default_deadline_ms),
            ("node.idle_timeout_ms", self.node.idle_timeout_ms),
        ] {
            if value == 0 || value > HOUR_MS {
                return Err(bad(
                    field.into(),
                    format!("must be between 1 and {HOUR_MS} (an hour)"),
                ));
            }
        }
        for (field, value, most) in [
            ("node.engine_threads", self.node.engine_threads.max(1), 1024),
            ("node.rpc_threads", self.node.rpc_threads.max(1), 1024),
            ("node.engine_queue", self.node.engine_queue, 1 << 20),
            ("node.max_connections", self.node.max_connections, 1 << 20),
            ("node.max_in_flight", self.node.max_in_flight, 1 << 20),
            (
                "node.max_in_flight_per_connection",
                self.node.max_in_flight_per_connection,
                1 << 20,
            ),
        ] {
            if value == 0 || value > most {
                return Err(bad(field.into(), format!("must be between 1 and {most}")));
            }
        }
        let ae = &self.anti_entropy;
        for (field, value) in [
            ("anti_entropy.interval_ms", ae.interval_ms),
            ("anti_entropy.confirm_delay_ms", ae.confirm_delay_ms.max(1)),
        ] {
            if value == 0 || value > HOUR_MS {
                return Err(bad(
                    field.into(),
                    format!("must be between 1 and {HOUR_MS} (an hour)"),
                ));
            }
        }
        if ae.max_keys_per_exchange == 0 || ae.max_keys_per_exchange > 100_000 {
            return Err(bad(
                "anti_entropy.max_keys_per_exchange".into(),
                "must be between 1 and 100000".into(),
            ));
        }
        // A year at most (timer and clock arithmetic stays far from overflow).
        const YEAR_MS: u64 = 365 * DAY_MS;
        for (field, value) in [
            ("anti_entropy.reap_delay_ms", ae.reap_delay_ms),
            ("anti_entropy.reaped_retention_ms", ae.reaped_retention_ms),
        ] {
            if value > YEAR_MS {
                return Err(bad(
                    field.into(),
                    format!("must be at most {YEAR_MS} (a year)"),
                ));
            }
        }
        if ae.reaped_retention_ms < ae.reap_delay_ms {
            return Err(bad(
                "anti_entropy.reaped_retention_ms".into(),
                "must be at least anti_entropy.reap_delay_ms".into(),
            ));
        }
        let ad = &self.admission;
        if ad.target_p99_ms == 0 || ad.target_p99_ms > HOUR_MS {
            return Err(bad(
                "admission.target_p99_ms".into(),
                format!("must be between 1 and {HOUR_MS}"),
            ));
        }
        if ad.min_units_per_s == 0 || ad.min_units_per_s > ad.max_units_per_s {
            return Err(bad(
                "admission.min_units_per_s".into(),
                "must be at least 1 and at most admission.max_units_per_s".into(),
            ));
        }
        if ad.max_units_per_s > 100_000_000 {
            return Err(bad(
                "admission.max_units_per_s".into(),
                "must be at most 100000000".into(),
            ));
        }
        if self.node.membership_grace_ms > DAY_MS {
            return Err(bad(
                "node.membership_grace_ms".into(),
                format!(
                    "must be at most {DAY_MS} (a day): during it every write also needs W of \
                     the previous replicas, and moved partitions are kept"
                ),
            ));
        }
        for (i, seed) in self.cluster.seeds.iter().enumerate() {
            check_host_port(seed).map_err(|r| bad(format!("cluster.seeds[{i}]"), r))?;
        }
        validate_partition_count(self.cluster.partitions)
            .map_err(|r| bad("cluster.partitions".into(), r))?;
        let mut names = BTreeSet::new();
        for (i, m) in self.cluster.members.iter().enumerate() {
            let field = |f: &str| format!("cluster.members[{i}].{f}");
            if !valid_name(&m.name) {
                return Err(bad(field("name"), name_rule));
            }
            if !names.insert(m.name.as_str()) {
                return Err(bad(field("name"), format!("{:?} is listed twice", m.name)));
            }
            parse_addr(&m.address).map_err(|r| bad(field("address"), r))?;
            if let Some(z) = &m.zone {
                if !valid_name(z) {
                    return Err(bad(field("zone"), name_rule));
                }
            }
        }
        if !self.cluster.members.is_empty() && !names.contains(self.node.name.as_str()) {
            return Err(bad(
                "cluster.members".into(),
                format!(
                    "this node ({:?}, node.name) must be one of the members",
                    self.node.name
                ),
            ));
        }
        let mut stores = BTreeSet::new();
        for (i, s) in self.stores.iter().enumerate() {
            if !stores.insert(s.name.as_str()) {
                return Err(bad(
                    format!("stores[{i}].name"),
                    format!("{:?} is listed twice", s.name),
                ));
            }
            s.validate().map_err(|e| match e {
                StoreError::InvalidConfig { field, reason, .. } => {
                    bad(format!("stores[{i}].{field}"), reason)
                }
                other => bad(format!("stores[{i}]"), other.to_string()),
            })?;
        }
        Ok(())
    }
}

/// `host:port` with a port from 1 to 65535 (the host is resolved when it is used).
fn check_host_port(s: &str) -> Result<(), String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("{s:?} is not an address of the form host:port")),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|e| format!("{s:?} is not an address of the form ip:port ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid_field(text: &str) -> String {
        match NodeConfig::parse(text, "test.toml") {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_file_is_a_single_node_with_one_default_store() {
        let c = NodeConfig::parse("", "empty.toml").unwrap();
        assert_eq!(c.node.name, "node-1");
        assert_eq!(c.cluster.partitions, 256);
        assert_eq!(c.stores.len(), 1);
        assert_eq!(c.stores[0], StoreConfig::default());
        assert_eq!(c.members().unwrap().len(), 1);
        let again = NodeConfig::parse(&c.to_toml(), "round-trip").unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n")
            .replace(
                "engine = \"rocksdb\"",
                &format!("engine = {:?}", crate::store::default_engine()),
            );
        let c = NodeConfig::parse(&example, "example").unwrap();
        assert_eq!(c.members().unwrap().len(), 2);
        assert_eq!(c.stores[0].name, "carts");
        assert_eq!(c.node.zone.as_deref(), Some("rack-1"));
    }

    #[test]
    fn timeouts_intervals_and_the_grace_period_are_bounded() {
        for (text, field) in [
            ("[node]\ngossip_interval_ms = 0", "node.gossip_interval_ms"),
            (
                "[node]\ngossip_interval_ms = 9223372036854775807",
                "node.gossip_interval_ms",
            ),
            (
                "[node]\nrequest_timeout_ms = 3600001",
                "node.request_timeout_ms",
            ),
            ("[node]\nping_interval_ms = 0", "node.ping_interval_ms"),
            (
                "[node]\nmembership_grace_ms = 86400001",
                "node.membership_grace_ms",
            ),
        ] {
            assert_eq!(invalid_field(text), field, "{text}");
        }
        let c = NodeConfig::parse("[node]\nmembership_grace_ms = 0", "t").unwrap();
        assert_eq!(c.node.membership_grace_ms, 0);
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            invalid_field("[[stores]]\nname = \"s\"\nr = 4"),
            "stores[0].r"
        );
        assert_eq!(
            invalid_field("[[stores]]\nname = \"s\"\nengine = \"leveldb\""),
            "stores[0].engine"
        );
        assert_eq!(
            invalid_field("[[stores]]\nname = \"a\"\n[[stores]]\nname = \"a\""),
            "stores[1].name"
        );
        assert_eq!(
            invalid_field("[cluster]\npartitions = 100"),
            "cluster.partitions"
        );
        assert_eq!(
            invalid_field("[node]\nlisten = \"localhost\""),
            "node.listen"
        );
        assert_eq!(
            invalid_field(
                "[cluster]\nmembers = [{ name = \"node-1\", address = \"127.0.0.1:1\" }, { name = \"b\", address = \"nope\" }]"
            ),
            "cluster.members[1].address"
        );
        assert_eq!(
            invalid_field("[cluster]\nmembers = [{ name = \"other\", address = \"127.0.0.1:1\" }]"),
            "cluster.members"
        );
        match NodeConfig::parse("[node]\nnmae = \"x\"", "typo.toml") {
            Err(e @ ConfigError::Parse { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("typo.toml") && msg.contains("nmae"), "{msg}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        match NodeConfig::parse("[[stores]]\nn = \"three\"", "types.toml") {
            Err(e @ ConfigError::Parse { .. }) => {
                let msg = e.to_string();
                // The parser shows the line and the offending field.
                assert!(
                    msg.contains("line 2") && msg.contains("n = \"three\""),
                    "{msg}"
                );
                assert!(msg.contains("invalid type"), "{msg}");
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
    }
}
