//! What a node keeps in its data directory besides the engines: its identity
//! (`identity.json`), and how it starts its membership history (`membership.json`,
//! see [`crate::membership::store`]) from its config (`config-members.json`).
//!
//! The identity's `node_id` is created with the data directory, so a node whose data
//! was wiped comes back as a new incarnation (the stores keep their own per-incarnation
//! actor ids inside their engines, so dots are never reused either way).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::membership::{ChangeKind, History, HistoryFile};
use crate::ring::Member;

const IDENTITY_FORMAT: u32 = 1;

/// Errors reading or writing the data directory.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's contents are not what this node wrote.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// The node's persistent identity. Invariant: `node_id` never changes for the life
/// of the data directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// File format.
    pub format: u32,
    /// The member name this data directory belongs to.
    pub name: String,
    /// Random id of this data directory's incarnation, hex.
    pub node_id: String,
    /// When the directory was created, ms since the epoch.
    pub created_ms: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `contents` to `path` atomically (temp file, fsync, rename).
fn write_atomic(path: &Path, contents: &str) -> Result<(), IdentityError> {
    crate::durable_file::replace(path, contents.as_bytes()).map_err(|(p, e)| io(&p)(e))
}

impl Identity {
    /// Loads `data_dir/identity.json`, or creates a new identity for `name` when the
    /// directory has none. Refuses a directory that belongs to another member.
    pub fn load_or_create(data_dir: &Path, name: &str) -> Result<(Self, bool), IdentityError> {
        fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let path = data_dir.join("identity.json");
        match fs::read_to_string(&path) {
            Ok(text) => {
                let id: Identity =
                    serde_json::from_str(&text).map_err(|e| IdentityError::Invalid {
                        path: path.clone(),
                        reason: format!("not a node identity: {e}"),
                    })?;
                if id.format != IDENTITY_FORMAT {
                    return Err(IdentityError::Invalid {
                        path,
                        reason: format!(
                            "format {} is not {IDENTITY_FORMAT}; written by another version",
                            id.format
                        ),
                    });
                }
                if id.name != name {
                    return Err(IdentityError::Invalid {
                        path,
                        reason: format!(
                            "this data directory belongs to node {:?}, but the config names this node {name:?}; \
                             point node.data_dir at the right directory",
                            id.name
                        ),
                    });
                }
                Ok((id, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = Identity {
                    format: IDENTITY_FORMAT,
                    name: name.to_owned(),
                    node_id: format!("{:016x}", rand::random::<u64>()),
                    created_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                };
                let text =
                    serde_json::to_string_pretty(&id).map_err(|e| IdentityError::Invalid {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                write_atomic(&path, &text)?;
                Ok((id, true))
            }
            Err(e) => Err(io(&path)(e)),
        }
    }
}

/// The file recording the member list of the config this node last started with.
const CONFIG_MEMBERS: &str = "config-members.json";

/// The membership history a node starts with, saved before it is returned:
/// - the one saved in its data directory (`membership.json`) merged with the one
///   `learned` from the other members and seeds at this start; when neither has one,
///   the cluster's creation from the config's member list (the same for every node
///   configured alike; empty for a node started from seeds alone, which learns it
///   later);
/// - with the edits of the config's member list since the last start (recorded in
///   `config-members.json`) applied as joins and leaves issued by this node;
/// - and with this node's address, when it listens somewhere else than the history
///   says, recorded as a `SetAddress` change.
pub fn startup_history(
    config: &NodeConfig,
    identity: &Identity,
    file: &HistoryFile,
    target_n: usize,
    learned: Option<History>,
) -> Result<History, IdentityError> {
    let data_dir = &config.node.data_dir;
    let invalid = |path: &Path, reason: String| IdentityError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let mut history = file
        .load()
        .map_err(|e| invalid(file.path(), e.to_string()))?
        .unwrap_or_default();
    let first_start = history.is_empty();
    if let Some(learned) = learned {
        let (_, conflicts) = history.merge(&learned);
        for c in conflicts {
            eprintln!("{}: membership from peers left out: {c}", config.node.name);
        }
    }
    let origin = identity.node_id.as_str();
    if let Some(members) = config.members() {
        let applied_path = data_dir.join(CONFIG_MEMBERS);
        let previous: Option<Vec<Member>> = match fs::read_to_string(&applied_path) {
            Ok(text) => Some(serde_json::from_str(&text).map_err(|e| {
                invalid(
                    &applied_path,
                    format!("not a member list ({e}); delete it to re-record the config's"),
                )
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&applied_path)(e)),
        };
        if history.is_empty() {
            history = History::created(config.cluster.partitions, target_n, members.clone());
        } else if let (false, Some(previous)) = (first_start, previous) {
            let named = |list: &[Member], name: &str| list.iter().any(|m| m.name == name);
            for m in members.iter().filter(|m| !named(&previous, &m.name)) {
                history.issue(origin, ChangeKind::Join { member: m.clone() });
            }
            for m in previous.iter().filter(|m| !named(&members, &m.name)) {
                history.issue(
                    origin,
                    ChangeKind::Leave {
                        name: m.name.clone(),
                    },
                );
            }
        }
        let text = serde_json::to_string_pretty(&members)
            .map_err(|e| invalid(&applied_path, e.to_string()))?;
        write_atomic(&applied_path, &text)?;
    }
    if let Ok(view) = crate::node::Topology::replay(history.clone(), &[]) {
        let me = config.this_member();
        if let (true, Some(now)) = (view.is_member(&me.name), me.address) {
            if view.address(&me.name) != Some(now.as_str()) {
                history.issue(
                    origin,
                    ChangeKind::SetAddress {
                        name: me.name.clone(),
                        address: now,
                    },
                );
            }
        }
    }
    if !history.is_empty() {
        history = file
            .save(&history)
            .map_err(|e| invalid(file.path(), e.to_string()))?;
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_created_once_and_checked_against_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = Identity::load_or_create(dir.path(), "node-a").unwrap();
        assert!(created);
        let (b, created) = Identity::load_or_create(dir.path(), "node-a").unwrap();
        assert!(!created);
        assert_eq!(a, b);
        let err = Identity::load_or_create(dir.path(), "node-b").unwrap_err();
        assert!(
            err.to_string().contains("belongs to node \"node-a\""),
            "{err}"
        );
        let other = tempfile::tempdir().unwrap();
        let (c, _) = Identity::load_or_create(other.path(), "node-a").unwrap();
        assert_ne!(
            a.node_id, c.node_id,
            "a new data directory is a new incarnation"
        );
    }

    fn config(dir: &Path, members: &[(&str, &str)]) -> NodeConfig {
        let mut c = NodeConfig::default();
        c.node.name = members[0].0.into();
        c.node.listen = members[0].1.into();
        c.node.data_dir = dir.to_owned();
        c.cluster.partitions = 64;
        c.cluster.members = members
            .iter()
            .map(|(n, a)| crate::config::MemberConfig {
                name: (*n).into(),
                address: (*a).into(),
                zone: None,
            })
            .collect();
        c
    }

    fn start(c: &NodeConfig) -> History {
        let (id, _) = Identity::load_or_create(&c.node.data_dir, &c.node.name).unwrap();
        startup_history(c, &id, &HistoryFile::in_dir(&c.node.data_dir), 3, None).unwrap()
    }

    #[test]
    fn nodes_configured_alike_start_from_the_same_history_and_ring() {
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ms = [
            ("a", "127.0.0.1:1"),
            ("b", "127.0.0.1:2"),
            ("c", "127.0.0.1:3"),
        ];
        let mut other = ms;
        other.swap(0, 1);
        let h1 = start(&config(d1.path(), &ms));
        let h2 = start(&config(d2.path(), &other));
        assert_eq!(h1, h2);
        let ring = h1.replay().unwrap().ring;
        assert_eq!(
            ring.member("b").unwrap().address.as_deref(),
            Some("127.0.0.1:2")
        );
        // A restart changes nothing.
        assert_eq!(start(&config(d1.path(), &ms)), h1);
    }

    #[test]
    fn an_edited_member_list_becomes_joins_and_leaves_issued_here() {
        let dir = tempfile::tempdir().unwrap();
        let ms = [
            ("a", "127.0.0.1:1"),
            ("b", "127.0.0.1:2"),
            ("c", "127.0.0.1:3"),
        ];
        let first = start(&config(dir.path(), &ms));
        let grown = [ms[0], ms[1], ms[2], ("d", "127.0.0.1:4")];
        let h = start(&config(dir.path(), &grown));
        assert_eq!(h.len(), first.len() + 1);
        assert!(h.replay().unwrap().ring.member("d").is_some());
        let shrunk = [ms[0], ms[1], ("d", "127.0.0.1:4")];
        let h = start(&config(dir.path(), &shrunk));
        let ring = h.replay().unwrap().ring;
        assert!(ring.member("c").is_none());
        assert_eq!(ring.members().len(), 3);
        // The same list again: nothing new.
        assert_eq!(start(&config(dir.path(), &shrunk)), h);
    }

    #[test]
    fn a_node_listening_elsewhere_records_its_new_address() {
        let dir = tempfile::tempdir().unwrap();
        let ms = [("a", "127.0.0.1:1"), ("b", "127.0.0.1:2")];
        start(&config(dir.path(), &ms));
        let moved = [("a", "127.0.0.1:9"), ("b", "127.0.0.1:2")];
        let h = start(&config(dir.path(), &moved));
        let t = crate::node::Topology::replay(h, &[3]).unwrap();
        assert_eq!(t.address("a"), Some("127.0.0.1:9"));
    }

    #[test]
    fn a_node_started_from_seeds_alone_has_no_history_yet() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), &[("d", "127.0.0.1:4")]);
        c.cluster.members.clear();
        c.cluster.seeds = vec!["127.0.0.1:1".into()];
        assert!(start(&c).is_empty());
        assert!(!dir.path().join("membership.json").exists());
    }
}
