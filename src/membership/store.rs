//! The membership history on disk: `DATA_DIR/membership.json`, which only ever grows.
//!
//! Format: `{"format": 1, "digest": "<hex MD5 of the history>", "changes": [...]}`, the
//! changes in replay order. The digest is checked on load, so a file cut short or
//! edited by hand is refused with the reason instead of silently giving another ring.
//!
//! Invariant: a change once saved is never lost. [`HistoryFile::save`] merges what it
//! is given into what the file holds (the history is a grow-only set, so the merge is
//! its union), writes the result to a temporary file, syncs it, renames it over the old
//! one and syncs the directory. A crash at any point leaves either the old file or the
//! new one, never a mix; a stale temporary file from such a crash is ignored.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::history::{Change, History, HistoryError};

/// The file name, in a node's data directory.
pub const FILE_NAME: &str = "membership.json";

/// The format version this code writes and reads.
const FORMAT: u32 = 1;

/// Why the history file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryFileError {
    /// An I/O error, with the path.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a membership history this version can use.
    #[error("{path} is not a usable membership history: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    digest: String,
    changes: Vec<Change>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A node's membership history file (see the module doc).
#[derive(Clone, Debug)]
pub struct HistoryFile {
    path: PathBuf,
}

impl HistoryFile {
    /// The history file of the data directory `data_dir` (not read yet).
    pub fn in_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(FILE_NAME),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, path: &Path) -> impl Fn(std::io::Error) -> HistoryFileError + '_ {
        let path = path.to_path_buf();
        move |source| HistoryFileError::Io {
            path: path.clone(),
            source,
        }
    }

    fn invalid(&self, reason: impl Into<String>) -> HistoryFileError {
        HistoryFileError::Invalid {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }

    /// The saved history, or `None` when the directory has none yet. A file that does
    /// not parse, has another format version, holds two different changes under one id
    /// or does not match its digest is an error naming the reason.
    pub fn load(&self) -> Result<Option<History>, HistoryFileError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&self.path)(e)),
        };
        let disk: OnDisk = serde_json::from_str(&text)
            .map_err(|e| self.invalid(format!("it does not parse: {e}")))?;
        if disk.format != FORMAT {
            return Err(self.invalid(format!(
                "format {} is not the format {FORMAT} this version reads",
                disk.format
            )));
        }
        let mut history = History::new();
        for change in disk.changes {
            history.insert(change).map_err(|e| match e {
                HistoryError::ConflictingChange { .. } => self.invalid(e.to_string()),
                other => self.invalid(other.to_string()),
            })?;
        }
        let digest = hex(&history.digest());
        if digest != disk.digest {
            return Err(self.invalid(format!(
                "its changes have digest {digest} but the file says {}: it was cut short \
                 or edited",
                disk.digest
            )));
        }
        Ok(Some(history))
    }

    /// Saves `history` merged with what the file already holds, atomically and durably
    /// (see the module doc), and returns the merged history that is now on disk.
    pub fn save(&self, history: &History) -> Result<History, HistoryFileError> {
        let mut merged = self.load()?.unwrap_or_default();
        let (_, conflicts) = merged.merge(history);
        if let Some(c) = conflicts.first() {
            return Err(self.invalid(format!("cannot save: {c}")));
        }
        self.write(&merged)?;
        Ok(merged)
    }

    /// Replaces the file with `history`, dropping what it held: only for a node that
    /// gives up a cluster of its own to join another (its old history must not leak
    /// into the new cluster). Atomic and durable like [`HistoryFile::save`].
    pub fn overwrite(&self, history: &History) -> Result<(), HistoryFileError> {
        self.write(history)
    }

    fn write(&self, merged: &History) -> Result<(), HistoryFileError> {
        let disk = OnDisk {
            format: FORMAT,
            digest: hex(&merged.digest()),
            changes: merged.changes().cloned().collect(),
        };
        let text = serde_json::to_string_pretty(&disk)
            .map_err(|e| self.invalid(format!("cannot encode: {e}")))?;
        crate::durable_file::replace(&self.path, text.as_bytes())
            .map_err(|(path, e)| self.io(&path)(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::ChangeKind;
    use crate::ring::Member;

    fn members(names: &[&str]) -> Vec<Member> {
        names.iter().map(|n| Member::new(*n)).collect()
    }

    #[test]
    fn a_directory_without_a_file_has_no_history() {
        let dir = tempfile::tempdir().unwrap();
        assert!(HistoryFile::in_dir(dir.path()).load().unwrap().is_none());
    }

    #[test]
    fn saved_histories_load_back_and_give_the_same_ring() {
        let dir = tempfile::tempdir().unwrap();
        let file = HistoryFile::in_dir(dir.path());
        let mut h = History::created(64, 3, members(&["a", "b", "c"]));
        h.issue(
            "node-a-id",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        let saved = file.save(&h).unwrap();
        assert_eq!(saved, h);
        let loaded = file.load().unwrap().unwrap();
        assert_eq!(loaded, h);
        assert_eq!(
            loaded.replay().unwrap().ring.to_json(),
            h.replay().unwrap().ring.to_json()
        );
    }

    #[test]
    fn saving_an_older_history_never_loses_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = HistoryFile::in_dir(dir.path());
        let base = History::created(64, 3, members(&["a", "b", "c"]));
        let mut newer = base.clone();
        newer.issue(
            "x",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        file.save(&newer).unwrap();
        // Another path of the node saves what it held before the join.
        let mut other = base.clone();
        other.issue(
            "y",
            ChangeKind::Join {
                member: Member::new("e"),
            },
        );
        let merged = file.save(&other).unwrap();
        assert_eq!(merged.len(), 3);
        let loaded = file.load().unwrap().unwrap();
        assert_eq!(loaded, merged);
        let names: Vec<String> = loaded
            .replay()
            .unwrap()
            .ring
            .members()
            .iter()
            .map(|m| m.name.clone())
            .collect();
        assert!(names.contains(&"d".to_owned()) && names.contains(&"e".to_owned()));
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = HistoryFile::in_dir(dir.path());
        let mut h = History::created(64, 3, members(&["a", "b", "c"]));
        h.issue("x", ChangeKind::Leave { name: "c".into() });
        file.save(&h).unwrap();
        let text = fs::read_to_string(file.path()).unwrap();

        // Cut short.
        fs::write(file.path(), &text[..text.len() / 2]).unwrap();
        let e = file.load().unwrap_err().to_string();
        assert!(e.contains("does not parse"), "{e}");

        // A change dropped by hand: the digest no longer matches.
        let mut disk: serde_json::Value = serde_json::from_str(&text).unwrap();
        disk["changes"].as_array_mut().unwrap().pop();
        fs::write(file.path(), disk.to_string()).unwrap();
        let e = file.load().unwrap_err().to_string();
        assert!(e.contains("digest"), "{e}");

        // Another format version.
        let mut disk: serde_json::Value = serde_json::from_str(&text).unwrap();
        disk["format"] = 99.into();
        fs::write(file.path(), disk.to_string()).unwrap();
        let e = file.load().unwrap_err().to_string();
        assert!(e.contains("format 99"), "{e}");

        // Two contents under one id.
        let mut disk: serde_json::Value = serde_json::from_str(&text).unwrap();
        let mut twin = disk["changes"][1].clone();
        twin["kind"]["name"] = "b".into();
        disk["changes"].as_array_mut().unwrap().push(twin);
        fs::write(file.path(), disk.to_string()).unwrap();
        let e = file.load().unwrap_err().to_string();
        assert!(e.contains("two different contents"), "{e}");
        // Saving over a damaged file is refused too: it would drop what it held.
        assert!(file.save(&h).is_err());
    }

    #[test]
    fn a_temporary_file_left_by_a_crash_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let file = HistoryFile::in_dir(dir.path());
        let h = History::created(64, 3, members(&["a", "b", "c"]));
        file.save(&h).unwrap();
        fs::write(file.path().with_extension("json.tmp"), "{ half a file").unwrap();
        assert_eq!(file.load().unwrap().unwrap(), h);
        let mut more = h.clone();
        more.issue(
            "x",
            ChangeKind::Join {
                member: Member::new("d"),
            },
        );
        assert_eq!(file.save(&more).unwrap(), more);
        assert_eq!(file.load().unwrap().unwrap(), more);
    }
}
