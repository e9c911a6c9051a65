//! `dynamo bench engines`: put and get throughput and latency of every storage engine for
//! the paper's range of object sizes, with and without per-write fsync, plus two
//! comparisons: the `rocksdb` engine against the rocksdb crate used directly, and the
//! `buffered` engine's tail latency against synced RocksDB (the paper's Figure 5).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamo_engines::{open_engine, Durability, Engine, EngineOptions, EngineSpec};
use rand::{Rng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};

use super::latency::{format_rate, format_us, LatencyRecorder, PhaseSummary};

const KEYSPACE: &str = "bench";

/// Errors of the engine benchmark.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An engine failed during the run.
    #[error("engine benchmark {engine} value_size={value_size}: {source}")]
    Engine {
        /// The engine spec under test.
        engine: String,
        /// The value size under test.
        value_size: usize,
        /// What the engine reported.
        #[source]
        source: dynamo_engines::EngineError,
    },
    /// The scratch directory could not be prepared or removed.
    #[error("engine benchmark scratch directory {path}: {source}")]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The direct-RocksDB baseline failed.
    #[error("rocksdb baseline: {0}")]
    Baseline(String),
    /// The options make no sense (nothing to run).
    #[error("engine benchmark: {0}")]
    Options(String),
}

/// What to run. Invariant: every phase is bounded both in time and in operations, and the
/// distinct data written per configuration is bounded by `data_budget_bytes`.
#[derive(Clone, Debug)]
pub struct EngineBenchOptions {
    /// Engines to measure.
    pub engines: Vec<EngineSpec>,
    /// Value sizes in bytes.
    pub value_sizes: Vec<usize>,
    /// Durability settings to measure durable engines with (`memory` runs once, unsynced).
    pub durabilities: Vec<Durability>,
    /// Wall-time budget of each put phase.
    pub put_time: Duration,
    /// Wall-time budget of each get phase.
    pub get_time: Duration,
    /// Operation cap of each phase.
    pub max_ops: u64,
    /// Distinct bytes written per configuration (keys are overwritten beyond it).
    pub data_budget_bytes: usize,
    /// Puts per round of the direct-RocksDB comparison (0 skips it).
    pub baseline_ops: u64,
    /// Alternating rounds of the direct-RocksDB comparison; the median is reported.
    pub baseline_rounds: usize,
    /// Where scratch databases go (a fresh subdirectory per configuration, removed after).
    pub dir: PathBuf,
}

impl EngineBenchOptions {
    /// The `--quick` profile: every engine, size and durability in well under a minute.
    pub fn quick(dir: PathBuf) -> Self {
        EngineBenchOptions {
            engines: EngineSpec::available(),
            value_sizes: vec![100, 4 << 10, 64 << 10, 1 << 20],
            durabilities: vec![Durability::Os, Durability::Sync],
            put_time: Duration::from_millis(400),
            get_time: Duration::from_millis(200),
            max_ops: 200_000,
            data_budget_bytes: 64 << 20,
            baseline_ops: 50_000,
            baseline_rounds: 3,
            dir,
        }
    }

    /// The default profile: longer phases for steadier figures (a few minutes).
    pub fn full(dir: PathBuf) -> Self {
        EngineBenchOptions {
            put_time: Duration::from_secs(3),
            get_time: Duration::from_secs(2),
            max_ops: 2_000_000,
            data_budget_bytes: 256 << 20,
            baseline_ops: 200_000,
            baseline_rounds: 5,
            ..Self::quick(dir)
        }
    }
}

/// One engine, value size and durability.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EngineBenchRow {
    /// Engine spec, e.g. `buffered:rocksdb`.
    pub engine: String,
    /// Value size in bytes.
    pub value_size: usize,
    /// `sync`, `os`, or `none` for the memory engine.
    pub durability: String,
    /// The put phase.
    pub put: PhaseSummary,
    /// The get phase (random keys among those written).
    pub get: PhaseSummary,
}

/// The `rocksdb` engine against the rocksdb crate used directly: same options, same keys,
/// same 100 B values, no sync; medians over alternating rounds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BaselineComparison {
    /// Value size in bytes.
    pub value_size: usize,
    /// Puts per round.
    pub ops_per_round: u64,
    /// Rounds of each.
    pub rounds: usize,
    /// Median put throughput through the engine trait.
    pub engine_put_ops_per_sec: f64,
    /// Median put throughput straight through the rocksdb crate.
    pub direct_put_ops_per_sec: f64,
    /// `engine / direct`.
    pub ratio: f64,
}

/// A buffered engine's put p99.9 against synced RocksDB at the same value size.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BufferedVsSync {
    /// The buffered engine spec.
    pub engine: String,
    /// Value size in bytes.
    pub value_size: usize,
    /// Buffered put p99.9 (its durable engine syncing each flush), microseconds.
    pub buffered_put_p999_us: f64,
    /// Synced `rocksdb` put p99.9, microseconds.
    pub synced_rocksdb_put_p999_us: f64,
    /// How many times lower the buffered p99.9 is.
    pub factor: f64,
}

/// Everything one run measured.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EngineBenchReport {
    /// One row per configuration, in run order.
    pub rows: Vec<EngineBenchRow>,
    /// The direct-RocksDB comparison, when run.
    pub baseline: Option<BaselineComparison>,
    /// Buffered against synced RocksDB, for each size where both ran.
    pub buffered_vs_sync: Vec<BufferedVsSync>,
    /// Wall time of the whole run.
    pub elapsed_seconds: f64,
}

/// Deterministic, incompressible-enough value bytes so compression does not flatter.
fn make_value(size: usize, seed: u64) -> Vec<u8> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; size];
    rng.fill_bytes(&mut v);
    v
}

fn write_key(buf: &mut Vec<u8>, i: u64) {
    use std::io::Write;
    buf.clear();
    // Writing into a Vec cannot fail.
    let _ = write!(buf, "bench-{i:012}");
}

fn scratch(dir: &Path, name: &str) -> Result<PathBuf, BenchError> {
    let path = dir.join(name);
    if path.exists() {
        std::fs::remove_dir_all(&path).map_err(|source| BenchError::Scratch {
            path: path.clone(),
            source,
        })?;
    }
    std::fs::create_dir_all(&path).map_err(|source| BenchError::Scratch {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

fn remove_scratch(path: &Path) -> Result<(), BenchError> {
    std::fs::remove_dir_all(path).map_err(|source| BenchError::Scratch {
        path: path.to_owned(),
        source,
    })
}

/// Runs one configuration: a put phase then a get phase on a fresh engine.
fn run_config(
    opts: &EngineBenchOptions,
    spec: EngineSpec,
    value_size: usize,
    durability: Durability,
    index: usize,
) -> Result<EngineBenchRow, BenchError> {
    let fail = |source| BenchError::Engine {
        engine: spec.to_string(),
        value_size,
        source,
    };
    let dir = scratch(&opts.dir, &format!("run-{index}"))?;
    let engine_opts = EngineOptions::with_durability(durability);
    let engine: Arc<dyn Engine> = open_engine(spec, &dir, &engine_opts).map_err(fail)?;
    engine.ensure_keyspace(KEYSPACE).map_err(fail)?;
    let key_count = (opts.data_budget_bytes / value_size.max(1)).clamp(16, 1_000_000) as u64;
    let value = make_value(value_size, index as u64);
    let mut key = Vec::with_capacity(32);

    let mut rec = LatencyRecorder::default();
    let start = Instant::now();
    let mut i = 0u64;
    while i < opts.max_ops && start.elapsed() < opts.put_time {
        write_key(&mut key, i % key_count);
        let t = Instant::now();
        engine.put(KEYSPACE, &key, &value).map_err(fail)?;
        rec.record(t.elapsed());
        i += 1;
    }
    let put = rec.summary(start.elapsed());
    let written = i.min(key_count).max(1);

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut rec = LatencyRecorder::default();
    let start = Instant::now();
    let mut n = 0u64;
    while n < opts.max_ops && start.elapsed() < opts.get_time {
        write_key(&mut key, rng.random_range(0..written));
        let t = Instant::now();
        let got = engine.get(KEYSPACE, &key).map_err(fail)?;
        rec.record(t.elapsed());
        if got.is_none() {
            return Err(fail(
                dynamo_engines::EngineError::new(
                    spec.to_string(),
                    dynamo_engines::ErrorKind::Corrupt,
                    format!("get {}", String::from_utf8_lossy(&key)),
                )
                .with_cause("a key the benchmark wrote is missing"),
            ));
        }
        n += 1;
    }
    let get = rec.summary(start.elapsed());
    drop(engine);
    remove_scratch(&dir)?;
    Ok(EngineBenchRow {
        engine: spec.to_string(),
        value_size,
        durability: if spec.is_durable() {
            durability.to_string()
        } else {
            "none".to_owned()
        },
        put,
        get,
    })
}

#[cfg(feature = "rocksdb")]
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

/// Puts `ops` 100 B values through the engine trait and through the crate directly, in
/// alternating rounds, and returns the median throughput of each.
#[cfg(feature = "rocksdb")]
fn rocksdb_baseline(opts: &EngineBenchOptions) -> Result<BaselineComparison, BenchError> {
    use dynamo_engines::rocks::{db_options, RocksEngine};
    const VALUE_SIZE: usize = 100;
    let value = make_value(VALUE_SIZE, 100);
    let ops = opts.baseline_ops;
    let mut key = Vec::with_capacity(32);
    let mut through_engine = Vec::new();
    let mut direct = Vec::new();
    let base_err =
        |what: &str, e: &dyn std::fmt::Display| BenchError::Baseline(format!("{what}: {e}"));
    for round in 0..opts.baseline_rounds {
        let dir = scratch(&opts.dir, &format!("baseline-engine-{round}"))?;
        {
            let engine =
                RocksEngine::open(&dir, Durability::Os).map_err(|e| base_err("open engine", &e))?;
            engine
                .ensure_keyspace(KEYSPACE)
                .map_err(|e| base_err("keyspace", &e))?;
            let start = Instant::now();
            for i in 0..ops {
                write_key(&mut key, i);
                engine
                    .put(KEYSPACE, &key, &value)
                    .map_err(|e| base_err("engine put", &e))?;
            }
            through_engine.push(ops as f64 / start.elapsed().as_secs_f64());
        }
        remove_scratch(&dir)?;

        let dir = scratch(&opts.dir, &format!("baseline-direct-{round}"))?;
        {
            let db_opts = db_options();
            let db = rocksdb::DB::open_cf(&db_opts, &dir, [KEYSPACE])
                .map_err(|e| base_err("open direct", &e))?;
            let cf = db
                .cf_handle(KEYSPACE)
                .ok_or_else(|| BenchError::Baseline("column family missing after open".into()))?;
            let write_opts = rocksdb::WriteOptions::default();
            let start = Instant::now();
            for i in 0..ops {
                write_key(&mut key, i);
                db.put_cf_opt(&cf, &key, &value, &write_opts)
                    .map_err(|e| base_err("direct put", &e))?;
            }
            direct.push(ops as f64 / start.elapsed().as_secs_f64());
        }
        remove_scratch(&dir)?;
    }
    let engine_put_ops_per_sec = median(through_engine);
    let direct_put_ops_per_sec = median(direct);
    Ok(BaselineComparison {
        value_size: VALUE_SIZE,
        ops_per_round: ops,
        rounds: opts.baseline_rounds,
        engine_put_ops_per_sec,
        direct_put_ops_per_sec,
        ratio: engine_put_ops_per_sec / direct_put_ops_per_sec,
    })
}

/// Pairs each buffered row with the synced `rocksdb` row of the same value size.
fn compare_buffered(rows: &[EngineBenchRow]) -> Vec<BufferedVsSync> {
    let synced = |size: usize| {
        rows.iter()
            .find(|r| r.engine == "rocksdb" && r.durability == "sync" && r.value_size == size)
    };
    rows.iter()
        .filter(|r| r.engine.starts_with("buffered") && r.durability == "sync")
        .filter_map(|b| {
            let s = synced(b.value_size)?;
            Some(BufferedVsSync {
                engine: b.engine.clone(),
                value_size: b.value_size,
                buffered_put_p999_us: b.put.p999_us,
                synced_rocksdb_put_p999_us: s.put.p999_us,
                factor: s.put.p999_us / b.put.p999_us.max(0.001),
            })
        })
        .collect()
}

/// Runs the benchmark, reporting progress through `progress` (one line per step).
pub fn run(
    opts: &EngineBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<EngineBenchReport, BenchError> {
    if opts.engines.is_empty() || opts.value_sizes.is_empty() || opts.durabilities.is_empty() {
        return Err(BenchError::Options(
            "nothing to run: give at least one engine, value size and durability".into(),
        ));
    }
    let started = Instant::now();
    std::fs::create_dir_all(&opts.dir).map_err(|source| BenchError::Scratch {
        path: opts.dir.clone(),
        source,
    })?;
    let mut plan = Vec::new();
    for &spec in &opts.engines {
        for &size in &opts.value_sizes {
            if spec.is_durable() {
                for &d in &opts.durabilities {
                    plan.push((spec, size, d));
                }
            } else {
                plan.push((spec, size, Durability::Os));
            }
        }
    }
    let mut rows = Vec::with_capacity(plan.len());
    for (index, &(spec, size, durability)) in plan.iter().enumerate() {
        let row = run_config(opts, spec, size, durability, index)?;
        progress(&format!(
            "[{}/{}] {} {} {}: put {} ops/s p99.9 {}, get {} ops/s p99.9 {}",
            index + 1,
            plan.len(),
            row.engine,
            format_size(size),
            row.durability,
            format_rate(row.put.ops_per_sec),
            format_us(row.put.p999_us),
            format_rate(row.get.ops_per_sec),
            format_us(row.get.p999_us),
        ));
        rows.push(row);
    }
    let baseline = run_baseline(opts, &mut progress)?;
    let buffered_vs_sync = compare_buffered(&rows);
    Ok(EngineBenchReport {
        rows,
        baseline,
        buffered_vs_sync,
        elapsed_seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(feature = "rocksdb")]
fn run_baseline(
    opts: &EngineBenchOptions,
    progress: &mut impl FnMut(&str),
) -> Result<Option<BaselineComparison>, BenchError> {
    let wanted = opts
        .engines
        .contains(&EngineSpec::Durable(dynamo_engines::DurableKind::Rocksdb));
    if !wanted || opts.baseline_ops == 0 || opts.baseline_rounds == 0 {
        return Ok(None);
    }
    progress("rocksdb engine vs rocksdb crate directly (100 B puts, no sync)");
    rocksdb_baseline(opts).map(Some)
}

#[cfg(not(feature = "rocksdb"))]
fn run_baseline(
    _opts: &EngineBenchOptions,
    _progress: &mut impl FnMut(&str),
) -> Result<Option<BaselineComparison>, BenchError> {
    Ok(None)
}

/// `100 B`, `4 KiB`, `1 MiB`.
pub fn format_size(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// Parses `100`, `100B`, `4KiB`, `64k`, `1MiB`, `1m` (binary units).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: usize = num
        .parse()
        .map_err(|_| format!("value size {s:?}: expected a number such as 100, 4KiB or 1MiB"))?;
    let mult = match unit.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        other => {
            return Err(format!(
                "value size {s:?}: unknown unit {other:?} (use B, KiB or MiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("value size {s:?}: must be between 1 B and the address space"))
}

impl EngineBenchReport {
    /// The report as a plain-text table with the comparisons below it.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<17} {:>7} {:>5} | {:>9} {:>8} {:>8} {:>8} | {:>9} {:>8} {:>8} {:>8}\n",
            "engine",
            "value",
            "sync",
            "put/s",
            "p50",
            "p99",
            "p99.9",
            "get/s",
            "p50",
            "p99",
            "p99.9"
        ));
        out.push_str(&"-".repeat(118));
        out.push('\n');
        for r in &self.rows {
            out.push_str(&format!(
                "{:<17} {:>7} {:>5} | {:>9} {:>8} {:>8} {:>8} | {:>9} {:>8} {:>8} {:>8}\n",
                r.engine,
                format_size(r.value_size),
                r.durability,
                format_rate(r.put.ops_per_sec),
                format_us(r.put.p50_us),
                format_us(r.put.p99_us),
                format_us(r.put.p999_us),
                format_rate(r.get.ops_per_sec),
                format_us(r.get.p50_us),
                format_us(r.get.p99_us),
                format_us(r.get.p999_us),
            ));
        }
        if let Some(b) = &self.baseline {
            out.push_str(&format!(
                "\nrocksdb engine vs rocksdb crate directly ({} B puts, no sync, median of {} rounds of {}): {} vs {} ops/s = {:.0}%\n",
                b.value_size,
                b.rounds,
                b.ops_per_round,
                format_rate(b.engine_put_ops_per_sec),
                format_rate(b.direct_put_ops_per_sec),
                b.ratio * 100.0
            ));
        }
        for c in &self.buffered_vs_sync {
            out.push_str(&format!(
                "{} put p99.9 {} vs synced rocksdb {} at {}: {:.1}x lower\n",
                c.engine,
                format_us(c.buffered_put_p999_us),
                format_us(c.synced_rocksdb_put_p999_us),
                format_size(c.value_size),
                c.factor
            ));
        }
        out.push_str(&format!("\nfinished in {:.1} s\n", self.elapsed_seconds));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_format() {
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("4KiB").unwrap(), 4096);
        assert_eq!(parse_size("64k").unwrap(), 65536);
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert!(parse_size("0").is_err());
        assert!(parse_size("12parsecs")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_size("big").is_err());
        assert_eq!(format_size(100), "100 B");
        assert_eq!(format_size(65536), "64 KiB");
        assert_eq!(format_size(1 << 20), "1 MiB");
    }

    #[test]
    fn memory_engine_run_measures_every_phase() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = EngineBenchOptions::quick(dir.path().to_owned());
        opts.engines = vec![EngineSpec::Memory];
        opts.value_sizes = vec![100, 4096];
        opts.put_time = Duration::from_millis(30);
        opts.get_time = Duration::from_millis(30);
        opts.max_ops = 500;
        let mut lines = Vec::new();
        let report = run(&opts, |l| lines.push(l.to_owned())).unwrap();
        assert_eq!(report.rows.len(), 2, "memory runs once per size, unsynced");
        assert_eq!(lines.len(), 2, "one progress line per configuration");
        for row in &report.rows {
            assert_eq!(row.durability, "none");
            assert!(row.put.ops > 0 && row.put.ops <= 500, "{row:?}");
            assert!(row.get.ops > 0 && row.get.ops <= 500, "{row:?}");
            assert!(row.put.p50_us <= row.put.p999_us);
        }
        assert!(
            report.baseline.is_none(),
            "no rocksdb in the run, so no baseline"
        );
        let table = report.render_table();
        assert!(
            table.contains("memory") && table.contains("4 KiB"),
            "{table}"
        );
        // Scratch databases are removed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn buffered_rows_are_compared_with_synced_rocksdb() {
        let phase = |p999| PhaseSummary {
            ops: 1,
            seconds: 1.0,
            ops_per_sec: 1.0,
            p50_us: 1.0,
            p99_us: 1.0,
            p999_us: p999,
            max_us: p999,
        };
        let row = |engine: &str, d: &str, p999| EngineBenchRow {
            engine: engine.into(),
            value_size: 100,
            durability: d.into(),
            put: phase(p999),
            get: phase(1.0),
        };
        let rows = vec![
            row("rocksdb", "os", 50.0),
            row("rocksdb", "sync", 4000.0),
            row("buffered:rocksdb", "sync", 40.0),
            row("buffered:rocksdb", "os", 30.0),
        ];
        let c = compare_buffered(&rows);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].factor, 100.0);
    }
}
