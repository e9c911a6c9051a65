//! `sqlite`: SQLite (bundled, WAL mode), one table per keyspace in a single database file.
//! Suits larger objects, like the paper's MySQL: values live in the table's rowid B-tree,
//! keys in a separate unique index, so scans over keys do not drag large values along.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock};

use rusqlite::{params_from_iter, Connection, ErrorCode, OpenFlags, OptionalExtension};

use crate::engine::{
    unknown_keyspace, validate_keyspace_name, BatchOp, Direction, Durability, Engine, KeyRange,
    KvPair, ScanIter, WriteBatch,
};
use crate::error::{EngineError, ErrorKind, Result};
use crate::scan::ChunkedScan;

const NAME: &str = "sqlite";
/// The database file inside the engine's directory.
pub const DB_FILE: &str = crate::SQLITE_DB_FILE;
const TABLE_PREFIX: &str = "kv_";
/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;
const SCAN_PAGE: usize = 256;
const BUSY_TIMEOUT_MS: u32 = 5_000;

/// SQLite engine. Invariant: all writes go through one connection (SQLite allows one
/// writer), reads use a pool of other connections that WAL mode lets run concurrently.
pub struct SqliteEngine {
    file: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    keyspaces: RwLock<HashSet<String>>,
}

impl std::fmt::Debug for SqliteEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteEngine")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

fn map_err(context: impl Into<String>, err: rusqlite::Error) -> EngineError {
    let kind = match &err {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            ErrorKind::Corrupt
        }
        _ => ErrorKind::Backend,
    };
    EngineError::new(NAME, kind, context).with_cause(err)
}

fn lock_err() -> EngineError {
    EngineError::new(NAME, ErrorKind::Unavailable, "lock")
        .with_cause("a thread panicked while holding a connection")
}

fn table(keyspace: &str) -> String {
    // Keyspace names are validated to [A-Za-z0-9_-], so quoting makes them safe identifiers.
    format!("\"{TABLE_PREFIX}{keyspace}\"")
}

/// `WHERE` conditions and parameters for `range` over column `k`.
fn range_sql(range: &KeyRange) -> (String, Vec<Vec<u8>>) {
    let mut conds = Vec::new();
    let mut params = Vec::new();
    match &range.start {
        Bound::Included(s) => {
            conds.push("k >= ?");
            params.push(s.clone());
        }
        Bound::Excluded(s) => {
            conds.push("k > ?");
            params.push(s.clone());
        }
        Bound::Unbounded => {}
    }
    match &range.end {
        Bound::Included(e) => {
            conds.push("k <= ?");
            params.push(e.clone());
        }
        Bound::Excluded(e) => {
            conds.push("k < ?");
            params.push(e.clone());
        }
        Bound::Unbounded => {}
    }
    let clause = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    (clause, params)
}

fn open_connection(file: &Path, context: &str) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(file, flags)
        .map_err(|e| EngineError::new(NAME, ErrorKind::Open, context.to_owned()).with_cause(e))?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS.into()))
        .map_err(|e| map_err(context, e))?;
    Ok(conn)
}

impl SqliteEngine {
    /// Opens (creating if needed) the database `dynamo.sqlite3` in directory `dir`, in WAL
    /// mode, with `synchronous=FULL` for [`Durability::Sync`] and `NORMAL` for
    /// [`Durability::Os`]. Fails with [`ErrorKind::Open`] when the directory cannot be used
    /// and [`ErrorKind::Corrupt`] when the file is not an SQLite database.
    pub fn open(dir: &Path, durability: Durability) -> Result<Self> {
        let context = format!("open {}", dir.display());
        std::fs::create_dir_all(dir)
            .map_err(|e| EngineError::new(NAME, ErrorKind::Open, context.clone()).with_cause(e))?;
        let file = dir.join(DB_FILE);
        let writer = open_connection(&file, &context)?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| map_err(context.clone(), e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(EngineError::new(NAME, ErrorKind::Open, context)
                .with_cause(format!("could not enable WAL mode (got {mode:?})")));
        }
        let sync = match durability {
            Durability::Sync => "FULL",
            Durability::Os => "NORMAL",
        };
        writer
            .execute_batch(&format!("PRAGMA synchronous={sync};"))
            .map_err(|e| map_err(context.clone(), e))?;
        let keyspaces = {
            let mut stmt = writer
                .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'kv\\_%' ESCAPE '\\'")
                .map_err(|e| map_err(context.clone(), e))?;
            let names = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| map_err(context.clone(), e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| map_err(context.clone(), e))?;
            names
                .into_iter()
                .filter_map(|n| n.strip_prefix(TABLE_PREFIX).map(str::to_owned))
                .collect()
        };
        Ok(SqliteEngine {
            file,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            keyspaces: RwLock::new(keyspaces),
        })
    }

    fn check_keyspace(&self, op: &str, keyspace: &str) -> Result<()> {
        let known = self.keyspaces.read().map_err(|_| lock_err())?;
        if known.contains(keyspace) {
            Ok(())
        } else {
            Err(unknown_keyspace(NAME, op, keyspace))
        }
    }

    fn writer(&self) -> Result<MutexGuard<'_, Connection>> {
        self.writer.lock().map_err(|_| lock_err())
    }

    /// Runs `f` on a pooled read connection.
    fn with_reader<T>(
        &self,
        context: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let pooled = self.readers.lock().map_err(|_| lock_err())?.pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_connection(&self.file, context)?,
        };
        let out = f(&conn).map_err(|e| map_err(context, e));
        let mut idle = self.readers.lock().map_err(|_| lock_err())?;
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        out
    }

    fn fetch_page(
        &self,
        keyspace: &str,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<KvPair>> {
        let (clause, mut params) = range_sql(range);
        let order = match direction {
            Direction::Forward => "ASC",
            Direction::Reverse => "DESC",
        };
        let sql = format!(
            "SELECT k, v FROM {}{clause} ORDER BY k {order} LIMIT {limit}",
            table(keyspace)
        );
        let context = format!("scan keyspace={keyspace:?}");
        self.with_reader(&context, |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(params.drain(..)), |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })?;
            rows.collect()
        })
    }
}

fn exec_put(conn: &Connection, keyspace: &str, key: &[u8], value: &[u8]) -> rusqlite::Result<()> {
    let sql = format!(
        "INSERT INTO {}(k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
        table(keyspace)
    );
    conn.prepare_cached(&sql)?.execute((key, value))?;
    Ok(())
}

fn exec_delete(conn: &Connection, keyspace: &str, key: &[u8]) -> rusqlite::Result<()> {
    let sql = format!("DELETE FROM {} WHERE k = ?1", table(keyspace));
    conn.prepare_cached(&sql)?.execute([key])?;
    Ok(())
}

impl Engine for SqliteEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn ensure_keyspace(&self, keyspace: &str) -> Result<()> {
        validate_keyspace_name(NAME, keyspace)?;
        if self.check_keyspace("ensure_keyspace", keyspace).is_ok() {
            return Ok(());
        }
        let conn = self.writer()?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (k BLOB NOT NULL UNIQUE, v BLOB NOT NULL)",
            table(keyspace)
        ))
        .map_err(|e| map_err(format!("create keyspace={keyspace:?}"), e))?;
        self.keyspaces
            .write()
            .map_err(|_| lock_err())?
            .insert(keyspace.to_owned());
        Ok(())
    }

    fn keyspaces(&self) -> Result<Vec<String>> {
        Ok(self
            .keyspaces
            .read()
            .map_err(|_| lock_err())?
            .iter()
            .cloned()
            .collect())
    }

    fn get(&self, keyspace: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.check_keyspace("get", keyspace)?;
        let sql = format!("SELECT v FROM {} WHERE k = ?1", table(keyspace));
        self.with_reader(&format!("get keyspace={keyspace:?}"), |conn| {
            conn.prepare_cached(&sql)?
                .query_row([key], |r| r.get::<_, Vec<u8>>(0))
                .optional()
        })
    }

    fn put(&self, keyspace: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.check_keyspace("put", keyspace)?;
        exec_put(&*self.writer()?, keyspace, key, value)
            .map_err(|e| map_err(format!("put keyspace={keyspace:?}"), e))
    }

    fn delete(&self, keyspace: &str, key: &[u8]) -> Result<()> {
        self.check_keyspace("delete", keyspace)?;
        exec_delete(&*self.writer()?, keyspace, key)
            .map_err(|e| map_err(format!("delete keyspace={keyspace:?}"), e))
    }

    fn write_batch(&self, batch: WriteBatch) -> Result<()> {
        for op in batch.ops() {
            self.check_keyspace("write_batch", op.keyspace())?;
        }
        let context = format!("write_batch of {} ops", batch.len());
        let mut conn = self.writer()?;
        let tx = conn.transaction().map_err(|e| map_err(&*context, e))?;
        for op in batch.ops() {
            match op {
                BatchOp::Put {
                    keyspace,
                    key,
                    value,
                } => exec_put(&tx, keyspace, key, value),
                BatchOp::Delete { keyspace, key } => exec_delete(&tx, keyspace, key),
            }
            .map_err(|e| map_err(&*context, e))?;
        }
        // Dropping an uncommitted transaction rolls it back, so an error above changes nothing.
        tx.commit().map_err(|e| map_err(context, e))
    }

    fn scan<'a>(
        &'a self,
        keyspace: &str,
        range: &KeyRange,
        direction: Direction,
    ) -> Result<ScanIter<'a>> {
        self.check_keyspace("scan", keyspace)?;
        let keyspace = keyspace.to_owned();
        Ok(Box::new(ChunkedScan::new(
            range.clone(),
            direction,
            SCAN_PAGE,
            move |r, d, n| self.fetch_page(&keyspace, r, d, n),
        )))
    }

    fn delete_range(&self, keyspace: &str, range: &KeyRange) -> Result<()> {
        self.check_keyspace("delete_range", keyspace)?;
        if range.is_empty() {
            return Ok(());
        }
        let (clause, params) = range_sql(range);
        let sql = format!("DELETE FROM {}{clause}", table(keyspace));
        self.writer()?
            .execute(&sql, params_from_iter(params))
            .map(|_| ())
            .map_err(|e| map_err(format!("delete_range keyspace={keyspace:?}"), e))
    }

    fn sync(&self) -> Result<()> {
        // A FULL checkpoint fsyncs the WAL (and the database file), whatever `synchronous` is.
        self.writer()?
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))
            .map_err(|e| map_err("sync", e))
    }

    fn approximate_size(&self) -> Result<u64> {
        let mut total = 0;
        let mut wal = self.file.clone().into_os_string();
        wal.push("-wal");
        for f in [self.file.clone(), PathBuf::from(wal)] {
            match std::fs::metadata(&f) {
                Ok(m) => total += m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(EngineError::new(
                        NAME,
                        ErrorKind::Backend,
                        format!("approximate_size {}", f.display()),
                    )
                    .with_cause(e))
                }
            }
        }
        Ok(total)
    }
}
