//! Crash safety: a child process writes and is killed with SIGKILL mid-stream; reopening
//! must succeed and hold every write the child acknowledged as durable.
//!
//! The child is this same test binary, re-run on one test with `CRASH_CHILD_ENV` set: each
//! test plays the writer when the variable is set and the checker otherwise.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dynamo_engines::{
    open_engine, Direction, Durability, Engine, EngineOptions, EngineSpec, KeyRange,
};

const CRASH_CHILD_ENV: &str = "DYNAMO_ENGINES_CRASH_CHILD_DIR";
/// Bounds on the child, so a child that is never killed still ends.
const CHILD_MAX_WRITES: u64 = 1_000_000;
const CHILD_MAX_TIME: Duration = Duration::from_secs(120);

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:08}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}-").repeat(16).into_bytes()
}

fn open(spec: &str, dir: &Path) -> std::sync::Arc<dyn Engine> {
    let opts = EngineOptions::with_durability(Durability::Sync);
    open_engine(spec.parse::<EngineSpec>().unwrap(), dir, &opts)
        .unwrap_or_else(|e| panic!("open {spec} in {}: {e}", dir.display()))
}

/// The writer: prints `ACK i` once `put` of key i returned, and for the buffered engine
/// `FLUSHED i` once a `sync` covering keys up to i returned.
fn run_child(spec: &str, dir: &Path) -> ! {
    let engine = open(spec, dir);
    engine.ensure_keyspace("data").unwrap();
    let buffered = spec.starts_with("buffered");
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    for i in 0..CHILD_MAX_WRITES {
        engine.put("data", &key(i), &value(i)).unwrap();
        writeln!(out, "ACK {i}").unwrap();
        if buffered && i % 500 == 499 {
            engine.sync().unwrap();
            writeln!(out, "FLUSHED {i}").unwrap();
        }
        out.flush().unwrap();
        if started.elapsed() > CHILD_MAX_TIME {
            break;
        }
    }
    std::process::exit(0)
}

/// Runs the child on `test_name` until `enough(acked, flushed)`, kills it with SIGKILL, and
/// returns the last acknowledged and last flushed key numbers.
fn write_until_killed(
    test_name: &str,
    dir: &Path,
    enough: impl Fn(u64, Option<u64>) -> bool,
) -> (u64, Option<u64>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CRASH_CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn writer child");
    let stdout = child.stdout.take().unwrap();
    let mut acked = None;
    let mut flushed = None;
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            acked = Some(n.parse::<u64>().unwrap());
        } else if let Some(n) = line.strip_prefix("FLUSHED ") {
            flushed = Some(n.parse::<u64>().unwrap());
        }
        if !killed && acked.is_some_and(|a| enough(a, flushed)) {
            child.kill().expect("SIGKILL the writer");
            killed = true;
            // Keep reading: lines the child wrote before dying are still in the pipe.
        }
    }
    let status = child.wait().unwrap();
    assert!(
        killed,
        "the writer exited on its own ({status}) before it was killed"
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by SIGKILL"
    );
    (acked.expect("child acknowledged writes"), flushed)
}

/// Reopens and returns the numbers of the keys present, checking each value is intact.
fn surviving_keys(spec: &str, dir: &Path) -> Vec<u64> {
    let engine = open(spec, dir);
    let mut present = Vec::new();
    for item in engine
        .scan("data", &KeyRange::all(), Direction::Forward)
        .unwrap()
    {
        let (k, v) = item.unwrap();
        let i: u64 = std::str::from_utf8(&k)
            .unwrap()
            .strip_prefix("key-")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            v,
            value(i),
            "{spec}: value of key {i} is corrupt after the crash"
        );
        present.push(i);
    }
    // The engine is usable after recovery.
    engine.put("data", b"after-crash", b"ok").unwrap();
    engine.sync().unwrap();
    present
}

fn crash_test(test_name: &str, spec: &str) {
    if let Some(dir) = std::env::var_os(CRASH_CHILD_ENV) {
        run_child(spec, Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let buffered = spec.starts_with("buffered");
    let (acked, flushed) = write_until_killed(test_name, dir.path(), |acked, flushed| {
        if buffered {
            // Kill with unflushed writes in the buffer, after a few flushes.
            flushed.is_some_and(|f| f >= 1499 && acked > f + 100)
        } else {
            acked >= 300
        }
    });
    let present = surviving_keys(spec, dir.path());
    // Writes are sequential and each flush is one atomic batch, so what survives is a
    // prefix of the write stream: keys 0..=m with no gaps.
    let expected_prefix: Vec<u64> = (0..present.len() as u64).collect();
    assert_eq!(
        present, expected_prefix,
        "{spec}: surviving keys are not a prefix of the writes"
    );
    let last = present.last().copied();
    eprintln!(
        "{spec}: killed after ack {acked} (flushed {flushed:?}); recovered keys 0..={last:?}"
    );
    if buffered {
        let flushed = flushed.expect("flushes were reported");
        assert!(
            last >= Some(flushed),
            "{spec}: lost flushed writes: flushed through {flushed}, recovered through {last:?}"
        );
    } else {
        // Synced writes: everything acknowledged, plus at most the one in flight.
        assert!(
            last >= Some(acked),
            "{spec}: lost acknowledged writes: acked through {acked}, recovered through {last:?}"
        );
        assert!(
            last <= Some(acked + 1),
            "{spec}: recovered {last:?} but only {acked} were written"
        );
    }
}

#[test]
fn rocksdb_keeps_acknowledged_writes_after_sigkill() {
    crash_test("rocksdb_keeps_acknowledged_writes_after_sigkill", "rocksdb");
}

#[test]
fn sqlite_keeps_acknowledged_writes_after_sigkill() {
    crash_test("sqlite_keeps_acknowledged_writes_after_sigkill", "sqlite");
}

#[test]
fn buffered_rocksdb_keeps_flushed_writes_after_sigkill() {
    crash_test(
        "buffered_rocksdb_keeps_flushed_writes_after_sigkill",
        "buffered:rocksdb",
    );
}

#[test]
fn buffered_sqlite_keeps_flushed_writes_after_sigkill() {
    crash_test(
        "buffered_sqlite_keeps_flushed_writes_after_sigkill",
        "buffered:sqlite",
    );
}
