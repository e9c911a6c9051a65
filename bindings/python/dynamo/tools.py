"""Tools around a cluster: `load` and `export` (JSON Lines in and out) and `check`
(consistency of the listed keys). Each is a function here and a command of
`python -m dynamo`.

The JSON Lines format, one key per line::

    {"key": "cart:42", "siblings": [{"value": "1 book"}], "context": "..."}

A key or value that is not valid UTF-8 is written as `key_base64` / `value_base64`
instead; a tombstone sibling is `{"deleted": true}`. `load` also takes the short forms
`{"key": ..., "value": ...}` / `"value_base64"`. The context `export` writes belongs to
the cluster it came from; `load` ignores it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from dataclasses import dataclass, field
from typing import IO, Any, Awaitable, Callable, Iterable, Iterator, Sequence

from .aio import AsyncClient
from .client import GetResult
from .errors import DynamoError, QuorumError, TimeoutError, UnavailableError, UnknownStoreError

DEFAULT_CONCURRENCY = 64


def _progress(desc: str, unit: str, total: int | None = None) -> Any:
    """A progress bar on stderr when it is a terminal, else a no-op with the same API."""
    from tqdm import tqdm

    return tqdm(desc=desc, unit=unit, total=total, disable=None, file=sys.stderr, leave=False)


def encode_bytes(data: bytes, name: str) -> dict[str, str]:
    """`{name: text}` when `data` is UTF-8, else `{name + "_base64": ...}`."""
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode("ascii")}


def decode_bytes(obj: dict[str, Any], name: str, where: str) -> bytes | None:
    """The bytes under `name` (text) or `name_base64`, or None when neither is there."""
    if name in obj and obj[name] is not None:
        v = obj[name]
        if not isinstance(v, str):
            raise ValueError(f"{where}: {name!r} must be a string")
        return v.encode("utf-8")
    b = obj.get(f"{name}_base64")
    if b is None:
        return None
    if not isinstance(b, str):
        raise ValueError(f"{where}: {name + '_base64'!r} must be a string")
    try:
        return base64.b64decode(b, validate=True)
    except ValueError as e:
        raise ValueError(f"{where}: {name}_base64 is not valid base64: {e}") from None


def record_json(key: bytes, result: GetResult) -> dict[str, Any]:
    """The JSON Lines record of a key and what a get returned for it."""
    out: dict[str, Any] = encode_bytes(key, "key")
    siblings = []
    for s in result.siblings:
        if s.value is None:
            siblings.append({"deleted": True})
        else:
            siblings.append(encode_bytes(s.value, "value"))
    out["siblings"] = siblings
    out["context"] = result.context
    return out


@dataclass
class Record:
    """One key to load: its values (None for a tombstone)."""

    key: bytes
    values: list[bytes | None]


def _keyed_object(line: str, where: str) -> tuple[dict[str, Any], bytes]:
    """A JSON Lines record as an object with its non-empty key, checked."""
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise ValueError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object with \"key\"")
    key = decode_bytes(obj, "key", where)
    if not key:
        raise ValueError(f"{where}: no \"key\" (or \"key_base64\"), or it is empty")
    return obj, key


def parse_record(line: str, where: str) -> Record:
    """A JSON Lines record (see the module doc), checked; `where` names the line."""
    obj, key = _keyed_object(line, where)
    if "siblings" in obj:
        sibs = obj["siblings"]
        if not isinstance(sibs, list):
            raise ValueError(f"{where}: \"siblings\" must be a list")
        values: list[bytes | None] = []
        for i, s in enumerate(sibs):
            if not isinstance(s, dict):
                raise ValueError(f"{where}: sibling {i} must be an object")
            deleted = s.get("deleted", False)
            if not isinstance(deleted, bool):
                raise ValueError(f"{where}: sibling {i}: \"deleted\" must be true or false")
            if deleted:
                values.append(None)
                continue
            v = decode_bytes(s, "value", f"{where}, sibling {i}")
            if v is None:
                raise ValueError(f"{where}: sibling {i} has no \"value\" or \"value_base64\"")
            values.append(v)
        return Record(key, values)
    v = decode_bytes(obj, "value", where)
    if v is None:
        raise ValueError(f"{where}: no \"siblings\", \"value\" or \"value_base64\"")
    return Record(key, [v])


@dataclass
class LoadReport:
    """What `load` did."""

    keys: int = 0
    writes: int = 0
    errors: list[str] = field(default_factory=list)


def _check_concurrency(concurrency: object) -> int:
    """A number of requests in flight: an int of at least 1."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise TypeError(f"concurrency must be an int, not {type(concurrency).__name__}")
    if concurrency < 1:
        raise ValueError(f"concurrency={concurrency}: at least 1 request must be in flight")
    return concurrency


async def _bounded(jobs: Iterable[Any], concurrency: int, take: Callable[[Any], None]) -> None:
    """Runs the coroutines of `jobs` (consumed lazily) with at most `concurrency` at
    once, passing each one's result to `take` as it completes. The first exception
    (from a job, from `jobs` itself or from `take`) is raised once the jobs already
    started have finished, so nothing is left running behind the caller's back."""
    running: set[asyncio.Task[Any]] = set()
    it = iter(jobs)
    exhausted = False
    failure: BaseException | None = None
    try:
        while True:
            while failure is None and not exhausted and len(running) < concurrency:
                try:
                    running.add(asyncio.ensure_future(next(it)))
                except StopIteration:
                    exhausted = True
            if not running:
                break
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                e = t.exception()
                if e is not None:
                    failure = failure or e
                elif failure is None:
                    take(t.result())
    except BaseException as e:
        failure = failure or e
    if running:
        await asyncio.wait(running)
        for t in running:
            t.exception()  # retrieved: no "never retrieved" warning
    if failure is not None:
        raise failure


async def _load_one(client: AsyncClient, store: str, rec: Record, blind: bool) -> int:
    context = None
    if not blind:
        context = (await client.get(store, rec.key)).context
    writes = 0
    for i, v in enumerate(rec.values):
        # The first value supersedes what the store held; the others become its siblings.
        ctx = context if i == 0 else None
        if v is None:
            await client.delete(store, rec.key, ctx)
        else:
            await client.put(store, rec.key, v, ctx)
        writes += 1
    return writes


async def load_async(
    nodes: str | Sequence[str],
    store: str,
    lines: Iterable[str],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    blind: bool = False,
    stop_on_error: bool = True,
) -> LoadReport:
    """Writes every record of `lines` (JSON Lines) into `store`. By default each key's
    current value is read first so the loaded value supersedes it (its other siblings
    become siblings of it); `blind` skips that read (for a store known to be empty).
    Malformed lines raise `ValueError` before anything of that line is written; with
    `stop_on_error` a failed write stops the load (it raises), else it is reported."""
    _check_concurrency(concurrency)
    report = LoadReport()
    bar = _progress("load", "key")

    def take(outcome: int) -> None:
        report.keys += 1
        report.writes += outcome
        bar.update(1)

    # Lines for the same key are written one after another, in file order (asyncio's
    # locks are fair), so the last line's value supersedes the earlier ones.
    locks: dict[bytes, tuple[asyncio.Lock, int]] = {}

    async def job(number: int, rec: Record) -> int:
        lock, users = locks.get(rec.key, (asyncio.Lock(), 0))
        locks[rec.key] = (lock, users + 1)
        try:
            async with lock:
                return await _load_one(client, store, rec, blind)
        except DynamoError as e:
            message = f"line {number}: {type(e).__name__}: {e.message}"
            if stop_on_error:
                raise type(e)(message, e.status) from e
            report.errors.append(message)
            return 0
        finally:
            lock, users = locks[rec.key]
            if users == 1:
                del locks[rec.key]
            else:
                locks[rec.key] = (lock, users - 1)

    def jobs() -> Iterator[Any]:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            yield job(number, parse_record(line, f"line {number}"))

    async with AsyncClient(nodes) as client:
        try:
            await _bounded(jobs(), concurrency, take)
        finally:
            bar.close()
    return report


def load(nodes: str | Sequence[str], store: str, lines: Iterable[str], **kw: Any) -> LoadReport:
    """Blocking form of `load_async`."""
    return asyncio.run(load_async(nodes, store, lines, **kw))


async def _each_batch(
    client: AsyncClient,
    store: str,
    keys: Iterable[bytes] | None,
    run: Callable[[list[bytes]], Awaitable[None]],
    unanswered: set[str],
    size: int = 1000,
) -> None:
    """Calls `run` on batches of `keys`, or of every key of `store` listed page by page
    when `keys` is None (adding the owners that failed to answer the listing to
    `unanswered`): memory stays bounded by one batch."""
    if keys is None:
        cursor: str | None = None
        while True:
            page = await client.keys_page(store, cursor, page_size=size)
            unanswered.update(page.unanswered)
            if page.keys:
                await run(page.keys)
            if page.next is None:
                return
            cursor = page.next
    batch: list[bytes] = []
    for k in keys:
        batch.append(k)
        if len(batch) >= size:
            await run(batch)
            batch = []
    if batch:
        await run(batch)


async def _store_n(client: AsyncClient, store: str) -> int:
    """The N of `store`, from the cluster's status (UnknownStoreError if absent)."""
    stores = {s["name"]: s for s in (await client.status()).get("stores", [])}
    if store not in stores:
        raise UnknownStoreError(
            f"unknown store {store!r}; the cluster has: {', '.join(sorted(stores))}"
        )
    return int(stores[store]["n"])


@dataclass
class ExportReport:
    """What `export` did: keys written, keys skipped because they hold no value
    (deleted), and the owners that failed to answer the key listing (keys only they
    hold are missing from the export)."""

    keys: int = 0
    skipped: int = 0
    unanswered: list[str] = field(default_factory=list)
    unconfirmed: list[bytes] = field(default_factory=list)
    """Keys that read empty at the store's R and could not be read at R = N (a replica
    was down or slow): not exported, as they may hold a value that replica has."""

    @property
    def complete(self) -> bool:
        """Whether every listed key was read for sure and every owner answered."""
        return not self.unanswered and not self.unconfirmed


async def export_async(
    nodes: str | Sequence[str],
    store: str,
    out: IO[str],
    *,
    keys: Iterable[bytes] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> ExportReport:
    """Writes every key of `store` (or only `keys`) with its siblings and context to
    `out` as JSON Lines, streaming: pages of keys are listed and read concurrently.
    Each key is read at the store's R; one that reads empty is read again at R = N
    before it is skipped as deleted, so a slow replica cannot hide a value. A key that
    cannot be read raises (nothing is skipped silently)."""
    _check_concurrency(concurrency)
    report = ExportReport()
    unanswered: set[str] = set()
    bar = _progress("export", "key")
    async with AsyncClient(nodes) as client:
        n = await _store_n(client, store)

        async def one(k: bytes) -> tuple[bytes, GetResult | None]:
            result = await client.get(store, k)
            if not result.siblings:
                try:
                    result = await client.get(store, k, r=n)
                except (QuorumError, TimeoutError, UnavailableError):
                    return k, None  # empty at R, not confirmed at R = N
            return k, result

        def take(outcome: tuple[bytes, GetResult | None]) -> None:
            k, result = outcome
            if result is None:
                report.unconfirmed.append(k)
                return
            if not result.siblings:
                report.skipped += 1
                return
            out.write(json.dumps(record_json(k, result)) + "\n")
            report.keys += 1
            bar.update(1)

        try:
            await _each_batch(
                client,
                store,
                keys,
                lambda batch: _bounded([one(k) for k in batch], concurrency, take),
                unanswered,
            )
        finally:
            bar.close()
    out.flush()
    report.unanswered = sorted(unanswered)
    report.unconfirmed.sort()
    return report


def export(nodes: str | Sequence[str], store: str, out: IO[str], **kw: Any) -> ExportReport:
    """Blocking form of `export_async`."""
    return asyncio.run(export_async(nodes, store, out, **kw))


@dataclass
class KeyProblem:
    """A key `check` reports: its siblings, or the replicas that disagreed, or the
    error reading it."""

    key: bytes
    siblings: int = 0
    stale_replicas: list[str] = field(default_factory=list)
    error: str | None = None

    def json(self) -> dict[str, Any]:
        """As a JSON object."""
        out: dict[str, Any] = encode_bytes(self.key, "key")
        out["siblings"] = self.siblings
        out["stale_replicas"] = self.stale_replicas
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class CheckReport:
    """What `check` found: keys read, and the keys with siblings, disagreeing replicas
    or read errors."""

    keys: int = 0
    problems: list[KeyProblem] = field(default_factory=list)
    unanswered: list[str] = field(default_factory=list)
    """Owners that failed to answer the key listing: keys only they hold went unchecked."""

    @property
    def ok(self) -> bool:
        """Whether every key had one value, all replicas agreed, and every owner answered
        the listing."""
        return not self.problems and not self.unanswered

    def json(self) -> dict[str, Any]:
        """As a JSON object."""
        return {
            "keys": self.keys,
            "with_siblings": sum(1 for p in self.problems if p.siblings > 1),
            "with_stale_replicas": sum(1 for p in self.problems if p.stale_replicas),
            "errors": sum(1 for p in self.problems if p.error),
            "unanswered": self.unanswered,
            "problems": [p.json() for p in self.problems],
        }


async def check_async(
    nodes: str | Sequence[str],
    store: str,
    *,
    keys: Iterable[bytes] | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> CheckReport:
    """Reads each of `keys` (default: every key of the store) with R = N, client-driven,
    and reports the keys with more than one sibling, the keys whose replicas disagreed
    (the read repairs them; the client finishes those repairs before it closes), the
    keys that could not be read at R = N, and owners that did not answer the listing."""
    _check_concurrency(concurrency)
    report = CheckReport()
    bar = _progress("check", "key")
    unanswered: set[str] = set()
    async with AsyncClient(nodes, coordination="client") as client:
        n = await _store_n(client, store)

        async def one(k: bytes) -> KeyProblem | None:
            try:
                result = await client.get(store, k, r=n)
            except DynamoError as e:
                return KeyProblem(k, error=f"{type(e).__name__}: {e.message}")
            if len(result.siblings) > 1 or result.stale_replicas:
                return KeyProblem(k, len(result.siblings), sorted(result.stale_replicas))
            return None

        def take(outcome: KeyProblem | None) -> None:
            report.keys += 1
            bar.update(1)
            if outcome is not None:
                report.problems.append(outcome)

        try:
            await _each_batch(
                client,
                store,
                keys,
                lambda batch: _bounded([one(k) for k in batch], concurrency, take),
                unanswered,
            )
        finally:
            bar.close()
    report.unanswered = sorted(unanswered)
    report.problems.sort(key=lambda p: p.key)
    return report


def check(nodes: str | Sequence[str], store: str, **kw: Any) -> CheckReport:
    """Blocking form of `check_async`."""
    return asyncio.run(check_async(nodes, store, **kw))


def read_keys(stream: IO[str]) -> Iterator[bytes]:
    """Keys from a file: one per line, or JSON Lines records with "key"/"key_base64"
    (as `export` writes them)."""
    for number, line in enumerate(stream, 1):
        text = line.rstrip("\r\n")
        if not text.strip():
            continue
        if text.lstrip().startswith("{"):
            yield parse_record_key(text, f"line {number}")
        else:
            yield text.encode("utf-8")


def parse_record_key(line: str, where: str) -> bytes:
    """The key of a JSON Lines record."""
    return _keyed_object(line, where)[1]
