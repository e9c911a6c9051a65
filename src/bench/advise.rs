//! `dynamo bench engines --advise`: measures RocksDB and SQLite on this machine across
//! value sizes and says which engine `engine = "auto"` should pick for each object-size
//! profile, with the figures behind it, next to the rule built into libdynamo
//! ([`crate::store::auto_engine`]).

use serde::{Deserialize, Serialize};

use super::engines::{format_size, EngineBenchReport};
use super::latency::format_rate;
use crate::store::AUTO_SQLITE_FROM;

/// The sizes `--advise` measures unless `--sizes` says otherwise.
pub const ADVISE_SIZES: &[usize] = &[1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20];

/// One value size: each engine's throughput on a 50/50 put/get mix.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AdviceRow {
    /// Value size in bytes.
    pub value_size: usize,
    /// RocksDB's mixed throughput, ops/s: 1 / (0.5 / put + 0.5 / get).
    pub rocksdb_ops_per_sec: f64,
    /// SQLite's mixed throughput, ops/s.
    pub sqlite_ops_per_sec: f64,
    /// `rocksdb` or `sqlite`.
    pub faster: String,
}

/// The rule this machine's figures support.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Advice {
    /// Figures per size, ascending.
    pub rows: Vec<AdviceRow>,
    /// SQLite for expected value sizes from this many bytes on (`None`: RocksDB for every
    /// size measured). The geometric midpoint between the largest size RocksDB won and
    /// the smallest from which SQLite won every larger size too.
    pub sqlite_from: Option<u64>,
    /// The threshold built into `engine = "auto"`.
    pub built_in_sqlite_from: u64,
}

/// Throughput of an even mix of puts and gets, from the two closed-loop rates.
fn mixed(put: f64, get: f64) -> f64 {
    if put <= 0.0 || get <= 0.0 {
        0.0
    } else {
        1.0 / (0.5 / put + 0.5 / get)
    }
}

/// The advice from a report holding `rocksdb` and `sqlite` rows (durability `os`) for
/// the same sizes. Sizes where either engine is missing are skipped.
pub fn advise(report: &EngineBenchReport) -> Advice {
    let rate = |engine: &str, size: usize| {
        report
            .rows
            .iter()
            .find(|r| r.engine == engine && r.value_size == size && r.durability == "os")
            .map(|r| mixed(r.put.ops_per_sec, r.get.ops_per_sec))
    };
    let mut sizes: Vec<usize> = report.rows.iter().map(|r| r.value_size).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let rows: Vec<AdviceRow> = sizes
        .into_iter()
        .filter_map(|size| {
            let (r, s) = (rate("rocksdb", size)?, rate("sqlite", size)?);
            Some(AdviceRow {
                value_size: size,
                rocksdb_ops_per_sec: r,
                sqlite_ops_per_sec: s,
                faster: if s > r { "sqlite" } else { "rocksdb" }.to_owned(),
            })
        })
        .collect();
    // The smallest index from which SQLite wins at every larger size.
    let from = (0..rows.len())
        .rev()
        .take_while(|&i| rows[i].faster == "sqlite")
        .last();
    let sqlite_from = from.map(|i| {
        if i == 0 {
            rows[0].value_size as u64
        } else {
            let (a, b) = (rows[i - 1].value_size as f64, rows[i].value_size as f64);
            ((a * b).sqrt().round() as u64).max(1)
        }
    });
    Advice {
        rows,
        sqlite_from,
        built_in_sqlite_from: AUTO_SQLITE_FROM,
    }
}

impl Advice {
    /// The figures and the rule, as text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "engine = \"auto\" advice (50/50 put/get mix, durability os, ops/s on this machine)\n\
             value size |   rocksdb |    sqlite | faster\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "{:>10} | {:>9} | {:>9} | {}\n",
                format_size(r.value_size),
                format_rate(r.rocksdb_ops_per_sec),
                format_rate(r.sqlite_ops_per_sec),
                r.faster
            ));
        }
        match self.sqlite_from {
            Some(t) => out.push_str(&format!(
                "rule for this machine: rocksdb below {}, sqlite from {} on\n",
                format_size(t as usize),
                format_size(t as usize)
            )),
            None => out.push_str("rule for this machine: rocksdb at every size measured\n"),
        }
        out.push_str(&format!(
            "built-in rule (engine = \"auto\"): rocksdb below {}, sqlite from {} on\n",
            format_size(self.built_in_sqlite_from as usize),
            format_size(self.built_in_sqlite_from as usize)
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::engines::EngineBenchRow;
    use crate::bench::latency::PhaseSummary;

    fn phase(ops_per_sec: f64) -> PhaseSummary {
        PhaseSummary {
            ops: 1,
            seconds: 1.0,
            ops_per_sec,
            p50_us: 1.0,
            p99_us: 1.0,
            p999_us: 1.0,
            max_us: 1.0,
        }
    }

    fn row(engine: &str, size: usize, put: f64, get: f64) -> EngineBenchRow {
        EngineBenchRow {
            engine: engine.into(),
            value_size: size,
            durability: "os".into(),
            put: phase(put),
            get: phase(get),
        }
    }

    fn report(rows: Vec<EngineBenchRow>) -> EngineBenchReport {
        EngineBenchReport {
            rows,
            baseline: None,
            buffered_vs_sync: Vec::new(),
            elapsed_seconds: 1.0,
        }
    }

    #[test]
    fn crossover_is_the_midpoint_after_the_last_rocksdb_win() {
        let a = advise(&report(vec![
            row("rocksdb", 1024, 100.0, 100.0),
            row("sqlite", 1024, 50.0, 50.0),
            row("rocksdb", 4096, 100.0, 100.0),
            row("sqlite", 4096, 90.0, 90.0),
            row("rocksdb", 16384, 10.0, 100.0),
            row("sqlite", 16384, 90.0, 90.0),
            row("rocksdb", 65536, 10.0, 10.0),
            row("sqlite", 65536, 90.0, 90.0),
        ]));
        assert_eq!(a.rows.len(), 4);
        assert_eq!(a.rows[2].faster, "sqlite");
        assert_eq!(a.sqlite_from, Some(8192)); // sqrt(4096 * 16384)
        assert!(
            a.render().contains("sqlite from 8 KiB on"),
            "{}",
            a.render()
        );
    }

    #[test]
    fn a_sqlite_win_followed_by_a_rocksdb_win_is_not_a_crossover() {
        let a = advise(&report(vec![
            row("rocksdb", 1024, 10.0, 10.0),
            row("sqlite", 1024, 90.0, 90.0),
            row("rocksdb", 4096, 100.0, 100.0),
            row("sqlite", 4096, 90.0, 90.0),
        ]));
        assert_eq!(a.sqlite_from, None);
        assert!(a.render().contains("rocksdb at every size"));
    }
}
