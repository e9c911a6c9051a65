//! Runs the Python bindings' pytest suite (`bindings/python/tests`) the way a user
//! installs them: a fresh virtual environment, created here, gets `libdynamo[test]`
//! from `pip install bindings/python` (a wheel carrying libdynamo.so), then pytest runs
//! against the installed package.
//!
//! The wheel packs the libdynamo.so this test binary's profile and target directory
//! built (`DYNAMO_LIBRARY`), so RocksDB is never compiled a second time. The Python
//! interpreter is `python3` unless `DYNAMO_PYTHON` names another; pip needs PyPI (or a
//! configured mirror or cache) for cffi, tqdm, pytest and matplotlib.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn run(cmd: &mut Command, what: &str) -> Output {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn python_bindings_pass_their_pytest_suite_from_a_fresh_venv() {
    let library = common::lib_dir().join("libdynamo.so");
    let package = common::root().join("bindings/python");
    let venv = common::build_dir().join("python-test-venv");
    if venv.exists() {
        std::fs::remove_dir_all(&venv).expect("remove the previous test venv");
    }
    // setuptools keeps its build tree in the package directory; a stale one could
    // carry files the sources no longer have.
    let _ = std::fs::remove_dir_all(package.join("build"));
    let python = std::env::var("DYNAMO_PYTHON").unwrap_or_else(|_| "python3".into());
    run(
        Command::new(&python).arg("-m").arg("venv").arg(&venv),
        "creating a virtual environment (Debian: apt-get install python3-venv)",
    );
    let bin = venv.join("bin");
    run(
        Command::new(bin.join("pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("{}[test]", package.display()))
            .env("DYNAMO_LIBRARY", &library),
        "pip install bindings/python[test]",
    );
    let output = run(
        Command::new(bin.join("pytest"))
            .args([
                "-q",
                "-p",
                "no:cacheprovider",
                "-W",
                "error::pytest.PytestUnraisableExceptionWarning",
            ])
            .arg(package.join("tests"))
            .current_dir(venv_parent(&venv))
            .env_remove("DYNAMO_LIBRARY")
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        "the Python bindings' pytest suite",
    );
    let summary = String::from_utf8_lossy(&output.stdout);
    // A suite that collected nothing, or skipped its tests, must not pass as green.
    assert!(
        summary.contains(" passed")
            && !summary.contains("skipped")
            && !summary.contains("no tests ran"),
        "unexpected pytest summary:\n{summary}"
    );
}

/// A directory outside the package, so `import dynamo` finds the installed package,
/// not the source tree.
fn venv_parent(venv: &Path) -> &Path {
    venv.parent().expect("the venv has a parent directory")
}
