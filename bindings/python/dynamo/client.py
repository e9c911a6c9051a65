"""The blocking client: `Client`, its results `GetResult` and `Sibling`, and the
helpers the asyncio client shares."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from ._convert import Bytes, context_arg, quorum, to_bytes, to_text
from ._native import ffi, lib
from .errors import BadRequestError, check, closed_error

COORDINATIONS = {"client": lib.DYNAMO_COORDINATION_CLIENT, "server": lib.DYNAMO_COORDINATION_SERVER}


@dataclass(frozen=True)
class Sibling:
    """One concurrent version of a key: its value, or None for a tombstone (a delete
    concurrent with a write), in which case `deleted` is True."""

    value: bytes | None
    deleted: bool


@dataclass(frozen=True)
class GetResult:
    """What a get returned: every sibling and the context covering them. A key that
    does not exist has no siblings. Pass `context` to the put or delete that follows,
    so it supersedes what was read."""

    siblings: list[Sibling]
    context: str
    stale_replicas: list[str] = field(default_factory=list)
    """Replicas whose answer lacked some of these siblings (read repair updates them).
    Known for client-driven reads; with ``r`` = N every owner is compared."""

    @property
    def values(self) -> list[bytes]:
        """The values of the siblings that are not tombstones."""
        return [s.value for s in self.siblings if s.value is not None]

    @property
    def found(self) -> bool:
        """Whether the key has at least one value (not only tombstones)."""
        return any(not s.deleted for s in self.siblings)

    @property
    def value(self) -> bytes | None:
        """The single value, or None when the key has none. Raises `ValueError` when
        there are siblings: read `values` and resolve them."""
        values = self.values
        if len(values) > 1:
            raise ValueError(
                f"the key has {len(values)} sibling values: read .values and write back "
                "the resolved one with .context"
            )
        return values[0] if values else None


def node_list(nodes: str | Sequence[str]) -> list[str]:
    """`host:port` addresses from one string (comma-separated) or a sequence."""
    if isinstance(nodes, str):
        items = [n.strip() for n in nodes.split(",")]
    elif isinstance(nodes, (list, tuple)):
        items = list(nodes)
    else:
        raise TypeError(f"nodes must be a str or a list of str, not {type(nodes).__name__}")
    for n in items:
        if not isinstance(n, str):
            raise TypeError(f"each node must be a str 'host:port', not {type(n).__name__}")
    items = [n for n in items if n]
    if not items:
        raise BadRequestError("no nodes given: pass at least one 'host:port'", lib.DYNAMO_ERR_BAD_REQUEST)
    return items


def open_client(
    nodes: str | Sequence[str],
    coordination: str,
    timeout: float,
    retries: int,
    ring_refresh: float,
) -> Any:
    """Opens a C client handle with these settings (checked first)."""
    addresses = node_list(nodes)
    if coordination not in COORDINATIONS:
        raise BadRequestError(
            f"coordination={coordination!r}: use 'client' or 'server'", lib.DYNAMO_ERR_BAD_REQUEST
        )
    for name, v in (("timeout", timeout), ("ring_refresh", ring_refresh)):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"{name} must be a number of seconds, not {type(v).__name__}")
        if not 0 < v <= 4_000_000:
            raise BadRequestError(f"{name}={v} s is out of range", lib.DYNAMO_ERR_BAD_REQUEST)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise TypeError("retries must be an int >= 0")
    options = ffi.new("dynamo_client_options *")
    check(lib.dynamo_client_options_init(options))
    options.coordination = COORDINATIONS[coordination]
    options.timeout_ms = max(1, int(timeout * 1000))
    options.retries = retries
    options.ring_refresh_ms = max(1, int(ring_refresh * 1000))
    c_strings = [ffi.new("char[]", to_text(a, "node")) for a in addresses]
    array = ffi.new("const char *[]", c_strings)
    out = ffi.new("dynamo_client **")
    check(lib.dynamo_client_open(array, len(c_strings), options, out))
    return out[0]


def read_get_result(result: Any) -> GetResult:
    """Copies a `dynamo_get_result` into a `GetResult` and frees it."""
    try:
        count = ffi.new("size_t *")
        check(lib.dynamo_get_result_count(result, count))
        value = ffi.new("const uint8_t **")
        length = ffi.new("size_t *")
        deleted = ffi.new("bool *")
        siblings = []
        for i in range(count[0]):
            check(lib.dynamo_get_result_sibling(result, i, value, length, deleted))
            if deleted[0]:
                siblings.append(Sibling(None, True))
            else:
                siblings.append(Sibling(bytes(ffi.buffer(value[0], length[0])), False))
        context = ffi.new("const char **")
        check(lib.dynamo_get_result_context(result, context))
        names = ffi.new("const char **")
        check(lib.dynamo_get_result_stale_replicas(result, names, count))
        stale = [n for n in ffi.string(names[0]).decode().split("\n") if n]
        return GetResult(siblings, ffi.string(context[0]).decode(), stale)
    finally:
        lib.dynamo_get_result_free(result)


def read_put_result(result: Any) -> str:
    """The context of a `dynamo_put_result`, which it frees."""
    try:
        context = ffi.new("const char **")
        check(lib.dynamo_put_result_context(result, context))
        return ffi.string(context[0]).decode()
    finally:
        lib.dynamo_put_result_free(result)


@dataclass(frozen=True)
class KeyPage:
    """One page of a store's keys: the keys, the cursor of the next page (None on the
    last), and the owners that failed to answer for the partitions it covers (keys only
    they hold are missing; empty when all answered)."""

    keys: list[bytes]
    next: str | None
    unanswered: list[str] = field(default_factory=list)


def read_key_page(page: Any) -> KeyPage:
    """A `dynamo_key_page` as a `KeyPage`; frees it."""
    try:
        count = ffi.new("size_t *")
        check(lib.dynamo_key_page_count(page, count))
        key = ffi.new("const uint8_t **")
        length = ffi.new("size_t *")
        keys = []
        for i in range(count[0]):
            check(lib.dynamo_key_page_key(page, i, key, length))
            keys.append(bytes(ffi.buffer(key[0], length[0])))
        cursor = ffi.new("const char **")
        check(lib.dynamo_key_page_next(page, cursor))
        names = ffi.new("const char **")
        check(lib.dynamo_key_page_unanswered(page, names, count))
        unanswered = [n for n in ffi.string(names[0]).decode().split("\n") if n]
        nxt = ffi.string(cursor[0]).decode() if cursor[0] != ffi.NULL else None
        return KeyPage(keys, nxt, unanswered)
    finally:
        lib.dynamo_key_page_free(page)


def write_args(
    store: object, key: object, value: object, context: object, w: object
) -> tuple[bytes, bytes, Any, Any, int]:
    """The C arguments of a put (`value` given) or delete (`value` None): store, key,
    value (or NULL), context (or NULL) and W (0: the store's), each checked."""
    v = ffi.NULL if value is None else to_bytes(value, "value")
    c = context_arg(context)
    return (
        to_text(store, "store"),
        to_bytes(key, "key"),
        v,
        ffi.NULL if c is None else c,
        quorum(w, "w"),
    )


def take_string(raw: Any) -> str:
    """A library-allocated C string as `str`, freed with `dynamo_free`."""
    try:
        return ffi.string(raw).decode("utf-8", "replace")
    finally:
        lib.dynamo_free(raw)


def page_limit(page_size: int) -> int:
    """A key-listing page size, checked."""
    if isinstance(page_size, bool) or not isinstance(page_size, int):
        raise TypeError("page_size must be an int")
    if not 1 <= page_size <= 10_000:
        raise BadRequestError(
            f"page_size={page_size} is out of range: 1 to 10000", lib.DYNAMO_ERR_BAD_REQUEST
        )
    return page_size


class Client:
    """A connection to a libdynamo cluster, reachable at any of `nodes` ("host:port",
    a list or a comma-separated string). Thread-safe: share one client between threads.

    `coordination="client"` (the default) reads replicas directly and sends writes to a
    node that owns the key; `"server"` lets the nodes coordinate. `timeout` is each
    call's limit in seconds, `retries` the extra rounds over the nodes when all of them
    failed as unreachable or timed out (a retried write is applied once).
    `ring_refresh` is how often, in seconds, the client refreshes the ring.

    Use it as a context manager, or call `close()`. Errors raise subclasses of
    `dynamo.DynamoError`; wrong argument types raise `TypeError`.
    """

    def __init__(
        self,
        nodes: str | Sequence[str],
        *,
        coordination: str = "client",
        timeout: float = 3.0,
        retries: int = 0,
        ring_refresh: float = 10.0,
    ) -> None:
        self._lock = threading.Lock()
        self._handle: Any = None
        self._handle = open_client(nodes, coordination, timeout, retries, ring_refresh)

    def _h(self) -> Any:
        h = self._handle
        if h is None:
            raise closed_error("client")
        return h

    @property
    def closed(self) -> bool:
        """Whether `close()` was called."""
        return self._handle is None

    def get(self, store: str, key: Bytes, r: int | None = None) -> GetResult:
        """Reads `key` from `store` with the store's R, or `r` replicas."""
        s, k, rr = to_text(store, "store"), to_bytes(key, "key"), quorum(r, "r")
        out = ffi.new("dynamo_get_result **")
        check(lib.dynamo_client_get(self._h(), s, k, len(k), rr, out))
        return read_get_result(out[0])

    def put(
        self,
        store: str,
        key: Bytes,
        value: Bytes,
        context: str | None = None,
        w: int | None = None,
    ) -> str:
        """Writes `value` under `key`, superseding what `context` (from an earlier get
        or put) covers; without a context the write becomes a sibling of what is there.
        Waits for the store's W, or `w`, replicas. Returns the new context."""
        if value is None:
            raise TypeError("value must be bytes or str, not NoneType (use delete to remove)")
        s, k, v, c, ww = write_args(store, key, value, context, w)
        out = ffi.new("dynamo_put_result **")
        check(lib.dynamo_client_put(self._h(), s, k, len(k), v, len(v), c, ww, out))
        return read_put_result(out[0])

    def delete(
        self,
        store: str,
        key: Bytes,
        context: str | None = None,
        w: int | None = None,
    ) -> str:
        """Deletes `key`: a tombstone superseding what `context` covers (without one it
        becomes a sibling of what is there). Returns the new context."""
        s, k, _, c, ww = write_args(store, key, None, context, w)
        out = ffi.new("dynamo_put_result **")
        check(lib.dynamo_client_delete(self._h(), s, k, len(k), c, ww, out))
        return read_put_result(out[0])

    def status(self, address: str | None = None) -> dict[str, Any]:
        """The status of the node at `address` (default: the first that answers): name,
        members and their health, hints owed, stores."""
        a = to_text(address, "address") if address is not None else ffi.NULL
        out = ffi.new("char **")
        check(lib.dynamo_client_status(self._h(), a, out))
        parsed: dict[str, Any] = json.loads(take_string(out[0]))
        return parsed

    def keys_page(
        self, store: str, cursor: str | None = None, *, page_size: int = 1000
    ) -> KeyPage:
        """One page of the keys of `store` (from the start, or from a previous page's
        `next`). Each partition's keys are gathered from all its N owners; owners that
        failed are named in `unanswered`."""
        s, n = to_text(store, "store"), page_limit(page_size)
        c = to_text(cursor, "cursor") if cursor is not None else ffi.NULL
        out = ffi.new("dynamo_key_page **")
        check(lib.dynamo_client_list_keys(self._h(), s, c, n, out))
        return read_key_page(out[0])

    def keys(self, store: str, *, page_size: int = 1000) -> Iterator[bytes]:
        """Every key of `store`, page by page (in partition order, not byte order). Keys
        written meanwhile may or may not appear."""
        cursor: str | None = None
        while True:
            page = self.keys_page(store, cursor, page_size=page_size)
            yield from page.keys
            if page.next is None:
                return
            cursor = page.next

    def close(self) -> None:
        """Closes the client: calls in progress finish first. Closing twice is a no-op."""
        with self._lock:
            h, self._handle = self._handle, None
        if h is not None:
            check(lib.dynamo_client_close(h))

    def __enter__(self) -> Client:
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
        return f"<dynamo.Client {'closed' if self.closed else 'open'}>"
