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
    /// Duration of each paced (fixed-rate) put run comparing buffered engines with synced
    /// RocksDB (zero skips the comparison).
    pub paced_time: Duration,
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
            paced_time: Duration::from_secs(1),
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
            paced_time: Duration::from_secs(5),
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

/// A buffered engine against synced RocksDB at the same fixed put rate (the paper's
/// Figure 5 compares latencies at the same load, not at saturation).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BufferedVsSync {
    /// The buffered engine spec (its durable engine syncs each flush).
    pub engine: String,
    /// Value size in bytes.
    pub value_size: usize,
    /// Offered put rate: half of synced RocksDB's closed-loop put throughput at this size.
    pub rate_ops_per_sec: f64,
    /// The buffered engine's paced puts; latency counts from each put's scheduled start.
    pub buffered: PhaseSummary,
    /// Synced `rocksdb`'s paced puts at the same rate.
    pub synced_rocksdb: PhaseSummary,
    /// How many times lower the buffered put p99.9 is.
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

/// Opens `spec` on a fresh scratch directory `name`, with the benchmark keyspace.
fn open_scratch(
    opts: &EngineBenchOptions,
    spec: EngineSpec,
    durability: Durability,
    name: &str,
) -> Result<(PathBuf, Arc<dyn Engine>), BenchError> {
    let dir = scratch(&opts.dir, name)?;
    let fail = |source| BenchError::Engine {
        engine: spec.to_string(),
        value_size: 0,
        source,
    };
    let engine =
        open_engine(spec, &dir, &EngineOptions::with_durability(durability)).map_err(fail)?;
    engine.ensure_keyspace(KEYSPACE).map_err(fail)?;
    Ok((dir, engine))
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
    let (dir, engine) = open_scratch(opts, spec, durability, &format!("run-{index}"))?;
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

/// The paced comparisons to run: for each value size with a synced `rocksdb` row, half its
/// closed-loop put throughput (between 10 and 5000 puts/s), so RocksDB is not saturated.
fn paced_plan(rows: &[EngineBenchRow]) -> Vec<(usize, f64)> {
    rows.iter()
        .filter(|r| r.engine == "rocksdb" && r.durability == "sync")
        .map(|r| (r.value_size, (r.put.ops_per_sec / 2.0).clamp(10.0, 5_000.0)))
        .collect()
}

/// Waits until `deadline`: sleeps only when it is far off, then spins, so a late wake-up
/// of the benchmark thread is rare.
fn wait_until(deadline: Instant) {
    const SPIN: Duration = Duration::from_millis(2);
    let now = Instant::now();
    if deadline > now + SPIN {
        std::thread::sleep(deadline - now - SPIN);
    }
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

/// Puts at a fixed `rate` for `duration` (open loop): put i is scheduled at `i / rate`. A
/// put queued behind a previous put that overran its slot is charged from its scheduled
/// start, so a stall also counts for every put it delayed (no coordinated omission); any
/// other put is charged from when it started, so the benchmark thread's own wake-up jitter
/// is not billed to the engine.
fn run_paced(
    opts: &EngineBenchOptions,
    spec: EngineSpec,
    value_size: usize,
    rate: f64,
    index: usize,
) -> Result<PhaseSummary, BenchError> {
    let fail = |source| BenchError::Engine {
        engine: spec.to_string(),
        value_size,
        source,
    };
    let (dir, engine) = open_scratch(opts, spec, Durability::Sync, &format!("paced-{index}"))?;
    let key_count = (opts.data_budget_bytes / value_size.max(1)).clamp(16, 1_000_000) as u64;
    let value = make_value(value_size, index as u64);
    let mut key = Vec::with_capacity(32);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut rec = LatencyRecorder::default();
    let start = Instant::now();
    let mut previous_end = start;
    let mut i = 0u64;
    loop {
        let offset = interval.mul_f64(i as f64);
        if offset >= opts.paced_time {
            break;
        }
        let scheduled = start + offset;
        let queued = previous_end > scheduled;
        wait_until(scheduled);
        write_key(&mut key, i % key_count);
        let began = Instant::now();
        engine.put(KEYSPACE, &key, &value).map_err(fail)?;
        previous_end = Instant::now();
        rec.record(previous_end - if queued { scheduled } else { began });
        i += 1;
    }
    let summary = rec.summary(start.elapsed());
    drop(engine);
    remove_scratch(&dir)?;
    Ok(summary)
}

/// Runs every paced comparison of `plan` for the buffered engines in the run.
fn compare_buffered(
    opts: &EngineBenchOptions,
    plan: &[(usize, f64)],
    progress: &mut impl FnMut(&str),
) -> Result<Vec<BufferedVsSync>, BenchError> {
    let buffered: Vec<EngineSpec> = opts
        .engines
        .iter()
        .copied()
        .filter(|e| matches!(e, EngineSpec::Buffered(_)))
        .collect();
    let mut out = Vec::new();
    if buffered.is_empty() || opts.paced_time.is_zero() {
        return Ok(out);
    }
    let rocksdb = EngineSpec::Durable(dynamo_engines::DurableKind::Rocksdb);
    for (n, &(size, rate)) in plan.iter().enumerate() {
        progress(&format!(
            "paced puts at {} ops/s, {}: buffered vs synced rocksdb",
            format_rate(rate),
            format_size(size)
        ));
        let synced = run_paced(opts, rocksdb, size, rate, n * 100)?;
        for (m, &spec) in buffered.iter().enumerate() {
            let b = run_paced(opts, spec, size, rate, n * 100 + m + 1)?;
            out.push(BufferedVsSync {
                engine: spec.to_string(),
                value_size: size,
                rate_ops_per_sec: rate,
                factor: synced.p999_us / b.p999_us.max(0.001),
                buffered: b,
                synced_rocksdb: synced.clone(),
            });
        }
    }
    Ok(out)
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
    let buffered_vs_sync = compare_buffered(opts, &paced_plan(&rows), &mut progress)?;
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
                "{} vs synced rocksdb, {} puts at {} ops/s: p99.9 {} vs {} ({:.1}x lower), p50 {} vs {}\n",
                c.engine,
                format_size(c.value_size),
                format_rate(c.rate_ops_per_sec),
                format_us(c.buffered.p999_us),
                format_us(c.synced_rocksdb.p999_us),
                c.factor,
                format_us(c.buffered.p50_us),
                format_us(c.synced_rocksdb.p50_us),
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
    fn paced_comparison_runs_at_half_of_synced_rocksdb() {
        let phase = |ops_per_sec| PhaseSummary {
            ops: 1,
            seconds: 1.0,
            ops_per_sec,
            p50_us: 1.0,
            p99_us: 1.0,
            p999_us: 1.0,
            max_us: 1.0,
        };
        let row = |engine: &str, d: &str, size, rate| EngineBenchRow {
            engine: engine.into(),
            value_size: size,
            durability: d.into(),
            put: phase(rate),
            get: phase(1.0),
        };
        let rows = vec![
            row("rocksdb", "os", 100, 300_000.0),
            row("rocksdb", "sync", 100, 5_000.0),
            row("rocksdb", "sync", 1 << 20, 8.0),
            row("buffered:rocksdb", "sync", 100, 900_000.0),
        ];
        assert_eq!(paced_plan(&rows), vec![(100, 2_500.0), (1 << 20, 10.0)]);
    }

    #[test]
    fn paced_run_issues_one_put_per_slot() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = EngineBenchOptions::quick(dir.path().to_owned());
        opts.paced_time = Duration::from_millis(100);
        // 200 puts/s for 100 ms: slots at 0, 5, ..., 95 ms.
        let s = run_paced(&opts, EngineSpec::Memory, 100, 200.0, 0).unwrap();
        assert_eq!(s.ops, 20);
        assert!(
            s.seconds >= 0.095,
            "the run lasts until its last slot: {s:?}"
        );
        let none = compare_buffered(&opts, &[(100, 200.0)], &mut |_| {}).unwrap();
        let only_memory = opts
            .engines
            .iter()
            .all(|e| !matches!(e, EngineSpec::Buffered(_)));
        assert_eq!(none.is_empty(), only_memory);
    }
}
