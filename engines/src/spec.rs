//! Choosing an engine at run time from a config string such as `rocksdb` or
//! `buffered:sqlite`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, OnceLock, RwLock};

#[cfg(feature = "buffered")]
use crate::buffered::BufferOptions;
use crate::engine::{Durability, Engine};
use crate::error::{EngineError, ErrorKind, Result};

/// A durable engine, that `buffered` can sit on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DurableKind {
    /// RocksDB.
    Rocksdb,
    /// SQLite.
    Sqlite,
}

impl DurableKind {
    fn name(self) -> &'static str {
        match self {
            DurableKind::Rocksdb => "rocksdb",
            DurableKind::Sqlite => "sqlite",
        }
    }

    fn compiled(self) -> bool {
        match self {
            DurableKind::Rocksdb => cfg!(feature = "rocksdb"),
            DurableKind::Sqlite => cfg!(feature = "sqlite"),
        }
    }
}

/// Which engine to open. Parsed from `rocksdb`, `sqlite`, `memory`, `buffered:rocksdb`,
/// `buffered:sqlite`, or `buffered` (over RocksDB); `Display` gives back the full form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineSpec {
    /// A durable engine on its own.
    Durable(DurableKind),
    /// In-memory, nothing persisted.
    Memory,
    /// The in-memory write buffer over a durable engine.
    Buffered(DurableKind),
    /// An engine registered at run time under this name with [`register_engine`] (for
    /// example one written in C and plugged in through libdynamo's C API).
    Registered(&'static str),
}

/// Opens a registered engine with its files in a directory.
pub type EngineOpener = Arc<dyn Fn(&Path, &EngineOptions) -> Result<Arc<dyn Engine>> + Send + Sync>;

/// Engines registered at run time, by name. Names are never removed, so a spec that
/// parsed stays openable for the life of the process.
fn registry() -> &'static RwLock<Vec<(&'static str, EngineOpener)>> {
    static REGISTRY: OnceLock<RwLock<Vec<(&'static str, EngineOpener)>>> = OnceLock::new();
    REGISTRY.get_or_init(RwLock::default)
}

const BUILT_IN_NAMES: &[&str] = &[
    "rocksdb",
    "sqlite",
    "memory",
    "buffered",
    "buffered:rocksdb",
    "buffered:sqlite",
    "auto",
];

/// Registers an engine under `name` (1 to 64 ASCII letters, digits, `_` or `-`, not a
/// built-in name), so that `name` parses as an [`EngineSpec`] and [`open_engine`] opens
/// it with `opener`. Registering a name again replaces its opener for later opens.
pub fn register_engine(name: &str, opener: EngineOpener) -> Result<EngineSpec> {
    let bad = |why: &str| {
        EngineError::new(name, ErrorKind::InvalidArgument, "register engine").with_cause(why)
    };
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad("names are 1 to 64 ASCII letters, digits, '_' or '-'"));
    }
    let lower = name.to_ascii_lowercase();
    if BUILT_IN_NAMES.contains(&lower.as_str()) {
        return Err(bad("that is the name of a built-in engine"));
    }
    let mut reg = registry().write().unwrap_or_else(|p| p.into_inner());
    if let Some(entry) = reg.iter_mut().find(|(n, _)| *n == lower) {
        entry.1 = opener;
        return Ok(EngineSpec::Registered(entry.0));
    }
    // Leaked once per distinct name: specs stay `Copy` and valid for the process.
    let stored: &'static str = Box::leak(lower.into_boxed_str());
    reg.push((stored, opener));
    Ok(EngineSpec::Registered(stored))
}

/// The names of the engines registered with [`register_engine`].
pub fn registered_engines() -> Vec<&'static str> {
    registry()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(n, _)| *n)
        .collect()
}

fn registered(name: &str) -> Option<(&'static str, EngineOpener)> {
    registry()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, o)| (*n, o.clone()))
}

impl EngineSpec {
    /// Every spec this build can open, in a stable order.
    pub fn available() -> Vec<EngineSpec> {
        let mut all = Vec::new();
        for kind in [DurableKind::Rocksdb, DurableKind::Sqlite] {
            if kind.compiled() {
                all.push(EngineSpec::Durable(kind));
            }
        }
        if cfg!(feature = "memory") {
            all.push(EngineSpec::Memory);
        }
        if cfg!(feature = "buffered") {
            for kind in [DurableKind::Rocksdb, DurableKind::Sqlite] {
                if kind.compiled() {
                    all.push(EngineSpec::Buffered(kind));
                }
            }
        }
        all.extend(registered_engines().into_iter().map(EngineSpec::Registered));
        all
    }

    /// Whether the engine keeps data across restarts.
    pub fn is_durable(self) -> bool {
        !matches!(self, EngineSpec::Memory)
    }

    /// Whether this is a built-in engine (not one registered at run time).
    pub fn is_built_in(self) -> bool {
        !matches!(self, EngineSpec::Registered(_))
    }

    fn compiled(self) -> bool {
        match self {
            EngineSpec::Durable(k) => k.compiled(),
            EngineSpec::Memory => cfg!(feature = "memory"),
            EngineSpec::Buffered(k) => cfg!(feature = "buffered") && k.compiled(),
            EngineSpec::Registered(_) => true,
        }
    }
}

impl fmt::Display for EngineSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineSpec::Durable(k) => f.write_str(k.name()),
            EngineSpec::Memory => f.write_str("memory"),
            EngineSpec::Buffered(k) => write!(f, "buffered:{}", k.name()),
            EngineSpec::Registered(name) => f.write_str(name),
        }
    }
}

fn names(specs: &[EngineSpec]) -> String {
    specs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for EngineSpec {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        let name = s.trim().to_ascii_lowercase();
        let spec = match name.as_str() {
            "rocksdb" => EngineSpec::Durable(DurableKind::Rocksdb),
            "sqlite" => EngineSpec::Durable(DurableKind::Sqlite),
            "memory" => EngineSpec::Memory,
            "buffered" | "buffered:rocksdb" => EngineSpec::Buffered(DurableKind::Rocksdb),
            "buffered:sqlite" => EngineSpec::Buffered(DurableKind::Sqlite),
            other => {
                if let Some((stored, _)) = registered(other) {
                    return Ok(EngineSpec::Registered(stored));
                }
                return Err(
                    EngineError::new(s, ErrorKind::UnknownEngine, "parse engine name").with_cause(
                        format!("expected one of: {}", names(&EngineSpec::available())),
                    ),
                );
            }
        };
        if !spec.compiled() {
            return Err(
                EngineError::new(s, ErrorKind::UnknownEngine, "parse engine name").with_cause(
                    format!(
                        "this build was compiled without it; available: {}",
                        names(&EngineSpec::available())
                    ),
                ),
            );
        }
        Ok(spec)
    }
}

/// Settings for opening an engine. Defaults: [`Durability::Os`], the paper's buffer of
/// 1000 objects flushed at least every 100 ms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// When durable engines fsync (for `buffered`, applies to its durable engine's flushes).
    pub durability: Durability,
    /// Buffer tuning, used by `buffered` only.
    #[cfg(feature = "buffered")]
    pub buffer: BufferOptions,
}

impl EngineOptions {
    /// Default options with the given durability.
    pub fn with_durability(durability: Durability) -> Self {
        // Without the `buffered` feature `durability` is the only field.
        #[allow(clippy::needless_update)]
        EngineOptions {
            durability,
            ..EngineOptions::default()
        }
    }
}

/// Opens the engine `spec` with its files in directory `dir` (ignored by `memory`).
pub fn open_engine(spec: EngineSpec, dir: &Path, opts: &EngineOptions) -> Result<Arc<dyn Engine>> {
    match spec {
        EngineSpec::Durable(kind) => open_durable(kind, dir, opts.durability),
        EngineSpec::Registered(name) => match registered(name) {
            Some((_, opener)) => opener(dir, opts),
            None => Err(EngineError::new(name, ErrorKind::UnknownEngine, "open")
                .with_cause("no engine is registered under this name")),
        },
        #[cfg(feature = "memory")]
        EngineSpec::Memory => Ok(Arc::new(crate::memory::MemoryEngine::new())),
        #[cfg(feature = "buffered")]
        EngineSpec::Buffered(kind) => {
            let durable = open_durable(kind, dir, opts.durability)?;
            Ok(Arc::new(crate::buffered::BufferedEngine::new(
                durable,
                opts.buffer.clone(),
            )?))
        }
        #[allow(unreachable_patterns)]
        other => Err(not_compiled(other)),
    }
}

fn not_compiled(spec: EngineSpec) -> EngineError {
    EngineError::new(spec.to_string(), ErrorKind::UnknownEngine, "open")
        .with_cause("this build was compiled without it")
}

fn open_durable(kind: DurableKind, dir: &Path, durability: Durability) -> Result<Arc<dyn Engine>> {
    // Unused when the build has no durable backend.
    let _ = (dir, durability);
    match kind {
        #[cfg(feature = "rocksdb")]
        DurableKind::Rocksdb => Ok(Arc::new(crate::rocks::RocksEngine::open(dir, durability)?)),
        #[cfg(feature = "sqlite")]
        DurableKind::Sqlite => Ok(Arc::new(crate::sqlite::SqliteEngine::open(
            dir, durability,
        )?)),
        #[allow(unreachable_patterns)]
        other => Err(not_compiled(EngineSpec::Durable(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for spec in EngineSpec::available() {
            assert_eq!(spec.to_string().parse::<EngineSpec>().unwrap(), spec);
        }
        #[cfg(all(feature = "buffered", feature = "rocksdb"))]
        assert_eq!(
            "buffered".parse::<EngineSpec>().unwrap(),
            EngineSpec::Buffered(DurableKind::Rocksdb)
        );
    }

    #[test]
    fn unknown_name_lists_the_choices() {
        let err = "bdb".parse::<EngineSpec>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownEngine);
        let msg = err.to_string();
        assert!(msg.starts_with("bdb engine"), "{msg}");
        assert!(msg.contains("memory"), "{msg}");
    }

    #[cfg(feature = "memory")]
    #[test]
    fn registered_engines_parse_and_open_by_name() {
        let opener: EngineOpener = Arc::new(|_: &Path, _: &EngineOptions| {
            Ok(Arc::new(crate::memory::MemoryEngine::new()) as Arc<dyn Engine>)
        });
        let spec = register_engine("My-Engine", opener.clone()).unwrap();
        assert_eq!(spec.to_string(), "my-engine");
        assert_eq!("my-engine".parse::<EngineSpec>().unwrap(), spec);
        assert!(!spec.is_built_in());
        assert!(EngineSpec::available().contains(&spec));
        let dir = tempfile::tempdir().unwrap();
        let e = open_engine(spec, dir.path(), &EngineOptions::default()).unwrap();
        e.ensure_keyspace("k").unwrap();
        for bad in ["rocksdb", "auto", "", "has space", "buffered:sqlite"] {
            let err = register_engine(bad, opener.clone()).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad}: {err}");
        }
    }
}
