//! `dynamo bench engines` as a user runs it: real binary, JSON output, clear errors.

use std::process::Command;

use dynamo::bench::engines::EngineBenchReport;

fn dynamo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dynamo"))
}

#[test]
fn json_report_has_a_row_per_engine_size_and_durability() {
    let dir = tempfile::tempdir().unwrap();
    let out = dynamo()
        .args([
            "bench",
            "engines",
            "--json",
            "--engines",
            "memory,sqlite,buffered:sqlite",
        ])
        .args([
            "--sizes",
            "100,4KiB",
            "--put-ms",
            "30",
            "--get-ms",
            "30",
            "--max-ops",
            "300",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: EngineBenchReport = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not the JSON report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    // memory: 2 sizes; sqlite and buffered:sqlite: 2 sizes x {os, sync}.
    assert_eq!(report.rows.len(), 2 + 4 + 4, "{report:?}");
    for row in &report.rows {
        assert!(row.put.ops > 0 && row.get.ops > 0, "{row:?}");
        assert!(
            row.put.p50_us <= row.put.p99_us && row.put.p99_us <= row.put.p999_us,
            "{row:?}"
        );
    }
    let sizes: Vec<usize> = report.rows.iter().map(|r| r.value_size).collect();
    assert!(sizes.contains(&100) && sizes.contains(&4096));
    assert!(report
        .rows
        .iter()
        .any(|r| r.engine == "buffered:sqlite" && r.durability == "sync"));
    // Progress went to stderr, one line per configuration.
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with('[')).count(),
        10,
        "{stderr}"
    );
}

#[test]
fn table_output_is_readable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dynamo()
        .args([
            "bench",
            "engines",
            "--engines",
            "memory",
            "--sizes",
            "1MiB",
            "--put-ms",
            "20",
            "--get-ms",
            "20",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.lines().next().unwrap().contains("put/s"), "{table}");
    assert!(
        table.contains("memory") && table.contains("1 MiB"),
        "{table}"
    );
}

#[test]
fn user_files_in_the_scratch_dir_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    // Names the benchmark uses for its own scratch databases.
    for name in ["run-0", "paced-0", "baseline-engine-0"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("keep.txt"), b"mine").unwrap();
    }
    let out = dynamo()
        .args([
            "bench",
            "engines",
            "--engines",
            "memory",
            "--sizes",
            "100",
            "--put-ms",
            "10",
            "--get-ms",
            "10",
        ])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["run-0", "paced-0", "baseline-engine-0"] {
        assert_eq!(
            std::fs::read(dir.path().join(name).join("keep.txt")).unwrap(),
            b"mine"
        );
    }
    // The benchmark's own subdirectory is gone: only the user's three remain.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);

    let missing = dir.path().join("no-such-dir");
    let out = dynamo()
        .args(["bench", "engines", "--engines", "memory", "--dir"])
        .arg(&missing)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-dir"),
        "error names the directory: {err}"
    );
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let out = dynamo()
        .args(["bench", "engines", "--engines", "bdb"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bdb") && err.contains("rocksdb") && err.contains("sqlite"),
        "{err}"
    );

    let out = dynamo()
        .args(["bench", "engines", "--sizes", "12parsecs"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit"));

    let out = dynamo()
        .args(["bench", "engines", "--durability", "maybe"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"maybe\""));
}
