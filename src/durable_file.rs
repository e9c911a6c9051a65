//! Replacing a small file so that after a crash it holds either the old or the new
//! contents, never a mix, and the new contents survive once this returns.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `contents` to `path` through a temporary file next to it: written, synced,
/// renamed over `path`, then the directory synced (the rename is durable only once the
/// directory entry is). Creates the directory if needed. On failure, names the path
/// the failing step touched.
pub fn replace(path: &Path, contents: &[u8]) -> Result<(), (PathBuf, io::Error)> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fn at(p: &Path) -> impl FnOnce(io::Error) -> (PathBuf, io::Error) + '_ {
        move |e| (p.to_owned(), e)
    }
    fs::create_dir_all(dir).map_err(at(dir))?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut f = fs::File::create(&tmp).map_err(at(&tmp))?;
    f.write_all(contents).map_err(at(&tmp))?;
    f.sync_all().map_err(at(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(at(path))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_contents_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("f.json");
        super::replace(&path, b"one").unwrap();
        super::replace(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.json"]);
    }

    #[test]
    fn a_failure_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let (path, _) = super::replace(&blocker.join("f.json"), b"x").unwrap_err();
        assert_eq!(path, blocker);
    }
}
