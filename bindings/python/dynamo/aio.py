"""`AsyncClient`: the client's calls as asyncio coroutines, completed through the C
API's futures. Each call starts a C future and registers one shared completion
callback; when the library's thread completes it, the callback hands the future to the
event loop (`call_soon_threadsafe`), which reads the outcome and resolves the awaiting
coroutine. No thread is started per request.

Cancelling an awaiting task does not stop the operation: a put or delete already sent
may still be applied (as after a timeout). Close the client inside the loop that used
it: calls still completing when their loop has closed are dropped.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, AsyncIterator, Callable, Sequence

from ._convert import Bytes, quorum, to_bytes, to_text
from ._native import ffi, lib
from .client import (
    GetResult,
    KeyPage,
    open_client,
    page_limit,
    read_get_result,
    read_key_page,
    read_put_result,
    take_string,
    write_args,
)
from .errors import DynamoError, check, closed_error, last_error


class _Pending:
    """One call in flight: its loop, the asyncio future to resolve and how to read the
    C outcome. Kept alive in `_PENDING` until the loop has taken it."""

    __slots__ = ("loop", "future", "read", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, read: Callable[[Any], Any]) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.read = read
        self.handle: Any = None


_PENDING: set[_Pending] = set()
_PENDING_LOCK = threading.Lock()


def _finish(pending: _Pending, c_future: Any) -> None:
    """On the event loop: reads the outcome, frees the C future, resolves the waiter."""
    with _PENDING_LOCK:
        _PENDING.discard(pending)
    try:
        if pending.future.cancelled():
            # Still read the outcome so its result object is freed.
            try:
                pending.read(c_future)
            except DynamoError:
                pass
            return
        try:
            pending.future.set_result(pending.read(c_future))
        except BaseException as e:  # the outcome's error, raised in the awaiting task
            pending.future.set_exception(e)
    finally:
        lib.dynamo_future_free(c_future)


@ffi.callback("void(struct dynamo_future *, void *)")
def _on_ready(c_future: Any, user: Any) -> None:
    # A library thread: hand over to the loop and return at once. Never raise here.
    pending: _Pending | None = None
    try:
        pending = ffi.from_handle(user)
        pending.loop.call_soon_threadsafe(_finish, pending, c_future)
    except Exception:
        # The loop is closed: nobody awaits the result any more. Forget the call and
        # free the future (its outcome is released with it).
        if pending is not None:
            with _PENDING_LOCK:
                _PENDING.discard(pending)
        lib.dynamo_future_free(c_future)


def _read_get(f: Any) -> GetResult:
    out = ffi.new("dynamo_get_result **")
    status = lib.dynamo_future_get_result(f, out)
    if status != lib.DYNAMO_OK:
        raise last_error(status)
    return read_get_result(out[0])


def _read_put(f: Any) -> str:
    out = ffi.new("dynamo_put_result **")
    status = lib.dynamo_future_put_result(f, out)
    if status != lib.DYNAMO_OK:
        raise last_error(status)
    return read_put_result(out[0])


def _read_json(f: Any) -> dict[str, Any]:
    out = ffi.new("char **")
    status = lib.dynamo_future_json_result(f, out)
    if status != lib.DYNAMO_OK:
        raise last_error(status)
    parsed: dict[str, Any] = json.loads(take_string(out[0]))
    return parsed


def _read_keys(f: Any) -> KeyPage:
    out = ffi.new("dynamo_key_page **")
    status = lib.dynamo_future_key_page_result(f, out)
    if status != lib.DYNAMO_OK:
        raise last_error(status)
    return read_key_page(out[0])


def _close(handle: Any) -> None:
    check(lib.dynamo_client_close(handle))


class AsyncClient:
    """The asyncio form of `dynamo.Client`, with the same arguments and calls as
    coroutines: ``await client.get(store, key)``, ``await client.put(...)``, ... Any
    number of calls may be in flight at once, from any number of tasks; create and use
    it inside a running event loop. Use ``async with`` or ``await client.close()``.
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

    def _start(self, call: Callable[[Any], int], read: Callable[[Any], Any]) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        pending = _Pending(loop, read)
        out = ffi.new("dynamo_future **")
        check(call(out))
        c_future = out[0]
        pending.handle = ffi.new_handle(pending)
        with _PENDING_LOCK:
            _PENDING.add(pending)
        status = lib.dynamo_future_set_callback(c_future, _on_ready, pending.handle)
        if status != lib.DYNAMO_OK:
            error = last_error(status)
            with _PENDING_LOCK:
                _PENDING.discard(pending)
            lib.dynamo_future_free(c_future)
            raise error
        return pending.future

    async def get(self, store: str, key: Bytes, r: int | None = None) -> GetResult:
        """As `Client.get`."""
        s, k, rr = to_text(store, "store"), to_bytes(key, "key"), quorum(r, "r")
        h = self._h()
        result: GetResult = await self._start(
            lambda out: lib.dynamo_client_get_async(h, s, k, len(k), rr, out), _read_get
        )
        return result

    async def put(
        self,
        store: str,
        key: Bytes,
        value: Bytes,
        context: str | None = None,
        w: int | None = None,
    ) -> str:
        """As `Client.put`: returns the new context."""
        if value is None:
            raise TypeError("value must be bytes or str, not NoneType (use delete to remove)")
        s, k, v, c, ww = write_args(store, key, value, context, w)
        h = self._h()
        context_out: str = await self._start(
            lambda out: lib.dynamo_client_put_async(h, s, k, len(k), v, len(v), c, ww, out),
            _read_put,
        )
        return context_out

    async def delete(
        self,
        store: str,
        key: Bytes,
        context: str | None = None,
        w: int | None = None,
    ) -> str:
        """As `Client.delete`: returns the new context."""
        s, k, _, c, ww = write_args(store, key, None, context, w)
        h = self._h()
        context_out: str = await self._start(
            lambda out: lib.dynamo_client_delete_async(h, s, k, len(k), c, ww, out),
            _read_put,
        )
        return context_out

    async def status(self, address: str | None = None) -> dict[str, Any]:
        """As `Client.status`."""
        a = to_text(address, "address") if address is not None else ffi.NULL
        h = self._h()
        status: dict[str, Any] = await self._start(
            lambda out: lib.dynamo_client_status_async(h, a, out), _read_json
        )
        return status

    async def keys_page(
        self, store: str, cursor: str | None = None, *, page_size: int = 1000
    ) -> KeyPage:
        """As `Client.keys_page`."""
        s, n = to_text(store, "store"), page_limit(page_size)
        c = to_text(cursor, "cursor") if cursor is not None else ffi.NULL
        h = self._h()
        page: KeyPage = await self._start(
            lambda out: lib.dynamo_client_list_keys_async(h, s, c, n, out), _read_keys
        )
        return page

    async def keys(self, store: str, *, page_size: int = 1000) -> AsyncIterator[bytes]:
        """As `Client.keys`, as an async iterator."""
        cursor: str | None = None
        while True:
            page = await self.keys_page(store, cursor, page_size=page_size)
            for k in page.keys:
                yield k
            if page.next is None:
                return
            cursor = page.next

    async def close(self) -> None:
        """Closes the client; calls in flight still complete (the loop keeps running
        while they do). Closing twice is a no-op."""
        h, self._handle = self._handle, None
        if h is not None:
            await asyncio.get_running_loop().run_in_executor(None, _close, h)

    async def __aenter__(self) -> AsyncClient:
        self._h()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    def __del__(self) -> None:
        h, self._handle = self._handle, None
        if h is not None:
            lib.dynamo_client_close(h)

    def __repr__(self) -> str:
        return f"<dynamo.AsyncClient {'closed' if self.closed else 'open'}>"
