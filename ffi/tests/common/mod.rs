//! What the tests of the C API and of the Python bindings share: where the workspace
//! and this build's artifacts are, and building libdynamo once per test binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The directory of this build's artifacts (`target/debug`): this test runs from its
/// `deps/` subdirectory.
pub fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

/// Builds `libdynamo.so`/`.a` and the `dynamo` binary of this workspace with the
/// profile and target directory of this test, once per test binary. `cargo test` does
/// not produce a cdylib for the integration tests of its own crate, so without this a
/// cold `cargo test --workspace` would have none, and a warm one might test a stale one.
pub fn lib_dir() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let dir = build_dir();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let target = dir.parent().expect("target directory").to_path_buf();
        let mut cmd = Command::new(cargo);
        cmd.current_dir(root())
            .args(["build", "-p", "dynamo-ffi", "-p", "dynamo", "--target-dir"])
            .arg(&target);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        match cmd.output() {
            Ok(o) if o.status.success() => Ok(()),
            Ok(o) => Err(String::from_utf8_lossy(&o.stderr).into_owned()),
            Err(e) => Err(e.to_string()),
        }
    });
    if let Err(e) = built {
        panic!("building libdynamo for the tests failed:\n{e}");
    }
    assert!(
        dir.join("libdynamo.so").exists(),
        "{} has no libdynamo.so after building it",
        dir.display()
    );
    dir
}
