"""`Engine`: libdynamo's local storage engines (RocksDB, SQLite, in-memory, buffered)
through the C API: keyspaces, gets and puts, atomic batches, ordered range scans."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Union

from ._convert import Bytes, to_bytes, to_text
from ._native import ffi, lib
from .client import take_string
from .errors import check, closed_error, last_error

PathLike = Union[str, "os.PathLike[str]"]


def _range(start: Bytes | None, end: Bytes | None, start_inclusive: bool, end_inclusive: bool) -> tuple[Any, list[bytes]]:
    """A `dynamo_range` for the bounds, and the buffers it points into (keep them)."""
    r = ffi.new("dynamo_range *")
    keep: list[bytes] = []
    if start is None:
        r.start_bound = lib.DYNAMO_BOUND_UNBOUNDED
    else:
        s = to_bytes(start, "start")
        keep.append(s)
        r.start = ffi.from_buffer(s)
        r.start_len = len(s)
        r.start_bound = lib.DYNAMO_BOUND_INCLUDED if start_inclusive else lib.DYNAMO_BOUND_EXCLUDED
    if end is None:
        r.end_bound = lib.DYNAMO_BOUND_UNBOUNDED
    else:
        e = to_bytes(end, "end")
        keep.append(e)
        r.end = ffi.from_buffer(e)
        r.end_len = len(e)
        r.end_bound = lib.DYNAMO_BOUND_INCLUDED if end_inclusive else lib.DYNAMO_BOUND_EXCLUDED
    return r, keep


class Batch:
    """Puts and deletes applied together by `Engine.write`: all or none. Used as a
    context manager from `Engine.batch()`, it is written when the block ends without an
    exception (and dropped otherwise)."""

    def __init__(self, engine: Engine | None = None) -> None:
        self._engine = engine
        self._handle: Any = None
        out = ffi.new("dynamo_batch **")
        check(lib.dynamo_batch_new(out))
        self._handle = out[0]

    def _h(self) -> Any:
        if self._handle is None:
            raise closed_error("batch")
        return self._handle

    def put(self, keyspace: str, key: Bytes, value: Bytes) -> Batch:
        """Adds a put of `value` under `key` in `keyspace`."""
        ks, k, v = to_text(keyspace, "keyspace"), to_bytes(key, "key"), to_bytes(value, "value")
        check(lib.dynamo_batch_put(self._h(), ks, k, len(k), v, len(v)))
        return self

    def delete(self, keyspace: str, key: Bytes) -> Batch:
        """Adds a delete of `key` in `keyspace`."""
        ks, k = to_text(keyspace, "keyspace"), to_bytes(key, "key")
        check(lib.dynamo_batch_delete(self._h(), ks, k, len(k)))
        return self

    def __len__(self) -> int:
        count = ffi.new("size_t *")
        check(lib.dynamo_batch_count(self._h(), count))
        return int(count[0])

    def clear(self) -> None:
        """Drops every operation added so far."""
        check(lib.dynamo_batch_clear(self._h()))

    def free(self) -> None:
        """Frees the batch (done by the context manager). Twice is a no-op."""
        h, self._handle = self._handle, None
        if h is not None:
            check(lib.dynamo_batch_free(h))

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            if kind is None and self._engine is not None:
                self._engine.write(self)
        finally:
            self.free()

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:
            pass


class Engine:
    """An open storage engine. Open with `Engine.open(spec, path)`; `spec` is
    `"rocksdb"`, `"sqlite"`, `"memory"`, `"buffered:rocksdb"`, `"buffered:sqlite"` or an
    engine registered from C. Data lives in keyspaces (create them with
    `ensure_keyspace`). Thread-safe. Close it with `close()` or a `with` block.
    """

    def __init__(self, handle: Any, spec: str, path: Path) -> None:
        self._handle = handle
        self._lock = threading.Lock()
        self.spec = spec
        self.path = path

    @classmethod
    def open(cls, spec: str, path: PathLike) -> Engine:
        """Opens engine `spec` with its files in directory `path` (created if missing)."""
        s = to_text(spec, "spec")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        out = ffi.new("dynamo_engine **")
        check(lib.dynamo_engine_open(s, os.fsencode(path), out))
        return cls(out[0], spec, Path(path))

    def _h(self) -> Any:
        h = self._handle
        if h is None:
            raise closed_error("engine")
        return h

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._handle is None

    def ensure_keyspace(self, keyspace: str) -> None:
        """Creates `keyspace` if it does not exist (1 to 64 ASCII letters, digits, `_`
        or `-`; not "default")."""
        check(lib.dynamo_engine_ensure_keyspace(self._h(), to_text(keyspace, "keyspace")))

    def keyspaces(self) -> list[str]:
        """The keyspaces that exist, sorted."""
        names = ffi.new("char **")
        count = ffi.new("size_t *")
        check(lib.dynamo_engine_keyspaces(self._h(), names, count))
        if names[0] == ffi.NULL:
            return []
        return sorted(n for n in take_string(names[0]).split("\n") if n)

    def get(self, keyspace: str, key: Bytes) -> bytes | None:
        """The value under `key`, or None."""
        ks, k = to_text(keyspace, "keyspace"), to_bytes(key, "key")
        value = ffi.new("uint8_t **")
        length = ffi.new("size_t *")
        found = ffi.new("bool *")
        check(lib.dynamo_engine_get(self._h(), ks, k, len(k), value, length, found))
        if not found[0]:
            return None
        try:
            return bytes(ffi.buffer(value[0], length[0])) if length[0] else b""
        finally:
            if value[0] != ffi.NULL:
                lib.dynamo_free(value[0])

    def put(self, keyspace: str, key: Bytes, value: Bytes) -> None:
        """Stores `value` under `key`, replacing any previous value."""
        ks, k, v = to_text(keyspace, "keyspace"), to_bytes(key, "key"), to_bytes(value, "value")
        check(lib.dynamo_engine_put(self._h(), ks, k, len(k), v, len(v)))

    def delete(self, keyspace: str, key: Bytes) -> None:
        """Removes `key` (absent is not an error)."""
        ks, k = to_text(keyspace, "keyspace"), to_bytes(key, "key")
        check(lib.dynamo_engine_delete(self._h(), ks, k, len(k)))

    def delete_range(
        self,
        keyspace: str,
        start: Bytes | None = None,
        end: Bytes | None = None,
        *,
        start_inclusive: bool = True,
        end_inclusive: bool = False,
    ) -> None:
        """Removes the keys from `start` to `end` (None: unbounded; by default `start`
        included, `end` excluded)."""
        ks = to_text(keyspace, "keyspace")
        r, _keep = _range(start, end, start_inclusive, end_inclusive)
        check(lib.dynamo_engine_delete_range(self._h(), ks, r))

    def batch(self) -> Batch:
        """A new batch; ``with engine.batch() as b: ...`` writes it when the block ends."""
        self._h()
        return Batch(self)

    def write(self, batch: Batch) -> None:
        """Applies `batch` atomically: all of it or, on error, none."""
        if not isinstance(batch, Batch):
            raise TypeError(f"batch must be a dynamo.Batch, not {type(batch).__name__}")
        check(lib.dynamo_engine_write(self._h(), batch._h()))

    def scan(
        self,
        keyspace: str,
        start: Bytes | None = None,
        end: Bytes | None = None,
        *,
        reverse: bool = False,
        start_inclusive: bool = True,
        end_inclusive: bool = False,
    ) -> ScanIterator:
        """The (key, value) pairs from `start` to `end` in key order (descending when
        `reverse`), as an iterator. It reads in chunks, so it is not a snapshot: writes
        made while it runs may or may not be seen. It keeps the engine open until it is
        exhausted or closed (``with engine.scan(...) as pairs:``)."""
        ks = to_text(keyspace, "keyspace")
        r, _keep = _range(start, end, start_inclusive, end_inclusive)
        out = ffi.new("dynamo_iter **")
        check(lib.dynamo_engine_scan(self._h(), ks, r, bool(reverse), out))
        return ScanIterator(out[0])

    def sync(self) -> None:
        """Makes every write that returned before it durable (fsync)."""
        check(lib.dynamo_engine_sync(self._h()))

    def approximate_size(self) -> int:
        """The approximate bytes the data uses (on disk, or in memory)."""
        size = ffi.new("uint64_t *")
        check(lib.dynamo_engine_approximate_size(self._h(), size))
        return int(size[0])

    def close(self) -> None:
        """Syncs and closes the engine. Closing twice is a no-op."""
        with self._lock:
            h, self._handle = self._handle, None
        if h is not None:
            check(lib.dynamo_engine_close(h))

    def __enter__(self) -> Engine:
        self._h()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<dynamo.Engine {self.spec} at {self.path}{' closed' if self.closed else ''}>"


class ScanIterator:
    """The (key, value) pairs of a scan, as a Python iterator. It holds a library
    iterator (which keeps the engine open) until it is exhausted, `close()`d or
    garbage-collected, whichever comes first; use it in a `with` block to free it at a
    known point."""

    def __init__(self, iterator: Any) -> None:
        # One thread at a time per library iterator, and the bytes of a pair are copied
        # before another call may replace or free them.
        self._lock = threading.Lock()
        self._it = iterator
        self._has = ffi.new("bool *")
        self._key = ffi.new("const uint8_t **")
        self._key_len = ffi.new("size_t *")
        self._value = ffi.new("const uint8_t **")
        self._value_len = ffi.new("size_t *")

    def __iter__(self) -> ScanIterator:
        return self

    def __next__(self) -> tuple[bytes, bytes]:
        with self._lock:
            if self._it is None:
                raise StopIteration
            status = lib.dynamo_iter_next(
                self._it, self._has, self._key, self._key_len, self._value, self._value_len
            )
            if status != lib.DYNAMO_OK:
                error = last_error(status)
                self._free()
                raise error
            if not self._has[0]:
                self._free()
                raise StopIteration
            k = bytes(ffi.buffer(self._key[0], self._key_len[0])) if self._key_len[0] else b""
            v = bytes(ffi.buffer(self._value[0], self._value_len[0])) if self._value_len[0] else b""
            return k, v

    def _free(self) -> None:
        it, self._it = self._it, None
        if it is not None and lib is not None:
            lib.dynamo_iter_free(it)

    def close(self) -> None:
        """Frees the library iterator (letting the engine close). Twice is a no-op."""
        with self._lock:
            self._free()

    def __enter__(self) -> ScanIterator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
