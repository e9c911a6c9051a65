//! `xtask install` into a temporary prefix, then a C program built exactly as docs/c-and-cpp.md
//! says (`cc app.c $(pkg-config --cflags --libs dynamo)`) builds and runs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn build_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

fn sh(script: &str, dir: &Path, pkg_config_path: &Path) -> (bool, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PKG_CONFIG_PATH", pkg_config_path)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `cargo test` builds no cdylib or staticlib for other crates' tests: build the
/// libraries with this test's profile and target directory (fast when up to date).
fn build_libdynamo(build: &Path) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "-p", "dynamo-ffi", "--target-dir"])
        .arg(build.parent().expect("target directory"));
    if build.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build -p dynamo-ffi");
    assert!(
        out.status.success(),
        "cargo build -p dynamo-ffi failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn installed_library_builds_and_runs_with_pkg_config() {
    let build = build_dir();
    build_libdynamo(&build);
    assert!(
        build.join("libdynamo.so").exists() && build.join("libdynamo.a").exists(),
        "no libdynamo.so/.a in {} after building them",
        build.display()
    );
    let prefix = tempfile::tempdir().expect("temp dir");
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["install", "--prefix"])
        .arg(prefix.path())
        .args(["--profile", "debug", "--no-build", "--lib-dir"])
        .arg(&build)
        .output()
        .expect("run xtask install");
    assert!(
        out.status.success(),
        "xtask install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "lib/libdynamo.so",
        "lib/libdynamo.a",
        "include/dynamo.h",
        "include/dynamo.hpp",
        "lib/pkgconfig/dynamo.pc",
    ] {
        assert!(prefix.path().join(f).exists(), "{f} was not installed");
    }
    let pc = prefix.path().join("lib/pkgconfig");
    let work = tempfile::tempdir().expect("temp dir");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    for name in ["version.c", "hello.c"] {
        std::fs::copy(examples.join(name), work.path().join(name)).expect("copy example");
    }
    let (ok, log) = sh(
        "cc version.c $(pkg-config --cflags --libs dynamo) -o version && ./version",
        work.path(),
        &pc,
    );
    assert!(ok, "version.c did not build and run: {log}");
    assert!(log.contains("libdynamo 0.1.0 (C API"), "{log}");
    let (ok, log) = sh(
        "cc hello.c $(pkg-config --cflags --libs dynamo) -o hello",
        work.path(),
        &pc,
    );
    assert!(ok, "the example of docs/c-and-cpp.md did not build: {log}");
    // Not linked against the build tree: the program finds the installed library.
    let (ok, log) = sh("ldd ./version", work.path(), &pc);
    assert!(
        ok && log.contains(&prefix.path().join("lib/libdynamo.so").display().to_string()),
        "{log}"
    );
}
