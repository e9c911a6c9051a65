//! What a node keeps in its data directory besides the engines: its identity
//! (`identity.json`) and its view of the ring (`ring.json`).
//!
//! The identity's `node_id` is created with the data directory, so a node whose data
//! was wiped comes back as a new incarnation (the stores keep their own per-incarnation
//! actor ids inside their engines, so dots are never reused either way).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ring::{Member, Ring};

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
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
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

/// Loads the ring from `data_dir/ring.json`, or creates it from the configured members.
/// A persisted ring whose members differ from the config is brought in line by leaves
/// and joins (in name order, so every node computes the same ring), then saved.
pub fn load_or_create_ring(
    data_dir: &Path,
    partitions: u32,
    target_n: usize,
    members: &[Member],
) -> Result<Ring, IdentityError> {
    let path = data_dir.join("ring.json");
    let invalid = |reason: String| IdentityError::Invalid {
        path: path.clone(),
        reason,
    };
    let ring = match fs::read_to_string(&path) {
        Ok(text) => {
            let mut ring = Ring::from_json(&text).map_err(|e| invalid(e.to_string()))?;
            if ring.partition_count() != partitions {
                return Err(invalid(format!(
                    "the ring has {} partitions but cluster.partitions is {partitions}; \
                     Q is fixed when a cluster is created",
                    ring.partition_count()
                )));
            }
            let mut gone: Vec<String> = ring
                .members()
                .iter()
                .filter(|m| !members.iter().any(|c| c.name == m.name))
                .map(|m| m.name.clone())
                .collect();
            gone.sort();
            let mut new: Vec<Member> = members
                .iter()
                .filter(|c| ring.member(&c.name).is_none())
                .cloned()
                .collect();
            new.sort_by(|a, b| a.name.cmp(&b.name));
            for m in new {
                ring.join(m).map_err(|e| invalid(e.to_string()))?;
            }
            for name in gone {
                ring.leave(&name).map_err(|e| invalid(e.to_string()))?;
            }
            ring
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ring::new(partitions, target_n, members.to_vec()).map_err(|e| invalid(e.to_string()))?
        }
        Err(e) => return Err(io(&path)(e)),
    };
    write_atomic(&path, &ring.to_json())?;
    Ok(ring)
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

    #[test]
    fn ring_is_persisted_and_follows_the_member_list() {
        let dir = tempfile::tempdir().unwrap();
        let ms: Vec<Member> = ["a", "b", "c"].iter().map(|n| Member::new(*n)).collect();
        let r1 = load_or_create_ring(dir.path(), 64, 3, &ms).unwrap();
        let r2 = load_or_create_ring(dir.path(), 64, 3, &ms).unwrap();
        assert_eq!(r1.to_json(), r2.to_json());
        let mut more = ms.clone();
        more.push(Member::new("d"));
        let r3 = load_or_create_ring(dir.path(), 64, 3, &more).unwrap();
        assert_eq!(r3.members().len(), 4);
        assert!(r3.version() > r1.version());
        let err = load_or_create_ring(dir.path(), 128, 3, &more).unwrap_err();
        assert!(err.to_string().contains("Q is fixed"), "{err}");
    }
}
