//! The conformance suite, once per backend.

use std::path::Path;
use std::sync::Arc;

use dynamo_engines::conformance::run_all;
use dynamo_engines::{open_engine, Durability, Engine, EngineOptions, EngineSpec, Result};

fn opener(
    spec: &'static str,
    durability: Durability,
) -> impl Fn(&Path) -> Result<Arc<dyn Engine>> + Sync {
    move |dir: &Path| {
        let opts = EngineOptions::with_durability(durability);
        open_engine(spec.parse::<EngineSpec>()?, dir, &opts)
    }
}

#[test]
fn memory_conforms() {
    run_all(&(opener("memory", Durability::Os), false));
}

#[test]
fn rocksdb_conforms() {
    run_all(&(opener("rocksdb", Durability::Os), true));
}

#[test]
fn rocksdb_sync_conforms() {
    run_all(&(opener("rocksdb", Durability::Sync), true));
}

#[test]
fn sqlite_conforms() {
    run_all(&(opener("sqlite", Durability::Os), true));
}

#[test]
fn sqlite_sync_conforms() {
    run_all(&(opener("sqlite", Durability::Sync), true));
}

#[test]
fn buffered_rocksdb_conforms() {
    run_all(&(opener("buffered:rocksdb", Durability::Os), true));
}

#[test]
fn buffered_sqlite_conforms() {
    run_all(&(opener("buffered:sqlite", Durability::Os), true));
}
