//! Builds the C and C++ test programs (`tests/c`, `tests/cpp`, `examples/`) against the
//! `libdynamo.so` of this build and runs them under valgrind's memcheck (no errors, no
//! definite or indirect leaks), against a real local cluster of node processes where
//! they need one. Set `DYNAMO_NO_VALGRIND=1` to run them bare (for debugging).

mod common;

use std::path::Path;
use std::process::Command;

use common::{build_dir, lib_dir, root};

use dynamo_core::cluster::{ClusterSpec, LocalCluster};
use dynamo_core::store::StoreConfig;

/// Compiles `sources` into `out` with warnings as errors, linked to libdynamo.so.
fn compile(sources: &[&str], out: &Path, cpp: bool) {
    let lib = lib_dir();
    let root = root();
    let mut cmd = Command::new(if cpp { "c++" } else { "cc" });
    cmd.arg(if cpp { "-std=c++17" } else { "-std=c11" })
        .args([
            "-Wall",
            "-Wextra",
            "-Werror",
            "-g",
            "-D_POSIX_C_SOURCE=200809L",
        ])
        .arg("-I")
        .arg(root.join("include"))
        .arg("-I")
        .arg(root.join("tests/c"));
    for s in sources {
        cmd.arg(root.join(s));
    }
    cmd.arg("-o")
        .arg(out)
        .arg("-L")
        .arg(&lib)
        .arg("-ldynamo")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-lpthread");
    let output = cmd.output().expect("run the C compiler");
    assert!(
        output.status.success(),
        "compiling {sources:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `program` with `args` under valgrind memcheck and asserts it succeeded with no
/// memory errors and no leaks.
fn run(program: &Path, args: &[String]) -> String {
    let bare = std::env::var_os("DYNAMO_NO_VALGRIND").is_some();
    let mut cmd = if bare {
        Command::new(program)
    } else {
        let found = Command::new("valgrind").arg("--version").output();
        assert!(
            found.is_ok_and(|o| o.status.success()),
            "valgrind is needed to run the C tests under memcheck: install it (bash .ci/install \
             does) or set DYNAMO_NO_VALGRIND=1 to run them bare"
        );
        let mut c = Command::new("valgrind");
        c.args([
            "--tool=memcheck",
            "--error-exitcode=97",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
            "--child-silent-after-fork=yes",
        ])
        .arg(program);
        c
    };
    let output = cmd.args(args).output().expect("run the test program");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}){}:\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        program.display(),
        output.status,
        if output.status.code() == Some(97) {
            " with memory errors or leaks"
        } else {
            ""
        }
    );
    stdout
}

/// Starts a three-node cluster of node processes (RocksDB); dropping it stops them.
fn start_cluster(dir: &Path) -> LocalCluster {
    let mut spec = ClusterSpec::new(3, dir);
    spec.stores = vec![StoreConfig {
        engine: "rocksdb".into(),
        ..StoreConfig::default()
    }];
    spec.partitions = 64;
    let exe = build_dir().join("dynamo");
    assert!(
        exe.exists(),
        "{} is missing: cargo build first",
        exe.display()
    );
    LocalCluster::start(&spec, &exe).expect("cluster starts")
}

/// The programs that need a cluster share one: the C client (both coordination modes,
/// futures from several threads, callbacks), the misuse cases, the C++ wrapper, and the
/// example of docs/c-and-cpp.md exactly as shown there.
#[test]
fn c_and_cpp_programs_against_a_local_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = start_cluster(&dir.path().join("cluster"));
    let nodes = cluster.addresses();
    let scratch = dir.path().display().to_string();

    let exe = dir.path().join("client_test");
    compile(&["tests/c/client_test.c"], &exe, false);
    let out = run(&exe, &nodes);
    assert!(out.contains("client_test: ok"), "{out}");

    let exe = dir.path().join("misuse_test");
    compile(&["tests/c/misuse_test.c"], &exe, false);
    let out = run(&exe, &[nodes[0].clone(), scratch.clone()]);
    assert!(out.contains("misuse_test: ok"), "{out}");

    let exe = dir.path().join("wrapper_test");
    compile(&["tests/cpp/wrapper_test.cpp"], &exe, true);
    let mut args = nodes.clone();
    args.push(scratch);
    let out = run(&exe, &args);
    assert!(out.contains("wrapper_test: ok"), "{out}");

    let exe = dir.path().join("hello");
    compile(&["examples/hello.c"], &exe, false);
    let out = run(&exe, &nodes[..1]);
    assert!(out.contains("sibling 0: 1 book"), "{out}");
    assert!(out.trim_end().ends_with("ok"), "{out}");

    cluster.stop_all();
}

#[test]
fn three_embedded_nodes_serve_a_c_client() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("embedded_test");
    compile(&["tests/c/embedded_test.c"], &exe, false);
    // Held until the program ends: nobody else takes these ports meanwhile.
    let ports = dynamo_core::local_ports::lease(3).expect("three free ports");
    let mut args: Vec<String> = ports.iter().map(|p| p.port().to_string()).collect();
    args.push(dir.path().display().to_string());
    let out = run(&exe, &args);
    assert!(out.contains("embedded_test: ok"), "{out}");
}

#[test]
fn local_engines_from_c() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("engine_test");
    compile(&["tests/c/engine_test.c"], &exe, false);
    let out = run(&exe, &[dir.path().display().to_string()]);
    assert!(out.contains("engine_test: ok"), "{out}");
}

#[test]
fn an_engine_written_in_c_passes_conformance_and_serves_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("cengine_test");
    compile(
        &["tests/c/cengine_test.c", "tests/c/cmem_engine.c"],
        &exe,
        false,
    );
    let port = dynamo_core::local_ports::lease(1).expect("a free port");
    let out = run(
        &exe,
        &[port[0].port().to_string(), dir.path().display().to_string()],
    );
    assert!(out.contains("cengine_test: ok"), "{out}");
}
