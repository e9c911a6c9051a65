"""Exceptions: one class per C status code, all under `DynamoError`.

Each carries the C library's message (which names the store, key, nodes and numbers
involved), the status code and its name. Classes that mean "the arguments are wrong"
also derive from `ValueError`, and `TimeoutError` from the built-in `TimeoutError`, so
generic handlers catch them too.
"""

from __future__ import annotations

import builtins
from ._native import ffi, lib


class DynamoError(Exception):
    """A call into libdynamo failed. `status` is the C status code, `code` its name
    (e.g. ``"DYNAMO_ERR_QUORUM"``), `message` the library's explanation."""

    status: int = lib.DYNAMO_ERR_INTERNAL

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    @property
    def code(self) -> str:
        """The status code's name, as in the C header (e.g. ``"DYNAMO_ERR_QUORUM"``)."""
        return _CODE_NAMES.get(self.status, f"status {self.status}")

    @property
    def description(self) -> str:
        """The library's short description of the status code (e.g. "quorum not reached")."""
        return ffi.string(lib.dynamo_status_name(self.status)).decode()


class QuorumError(DynamoError):
    """Fewer than R (get) or W (put) replicas answered; the message names who did not."""

    status = lib.DYNAMO_ERR_QUORUM


class UnavailableError(DynamoError):
    """No node could take the request (unreachable, shutting down, not started)."""

    status = lib.DYNAMO_ERR_UNAVAILABLE


class TimeoutError(DynamoError, builtins.TimeoutError):
    """A node did not answer in time; a write may have been applied (retrying is safe)."""

    status = lib.DYNAMO_ERR_TIMEOUT


class BadRequestError(DynamoError, ValueError):
    """The call itself is wrong (bad argument, oversize key or value, bad R/W, closed
    handle); retrying will not help."""

    status = lib.DYNAMO_ERR_BAD_REQUEST


class UnknownStoreError(DynamoError):
    """The store is not hosted by the cluster."""

    status = lib.DYNAMO_ERR_UNKNOWN_STORE


class BadContextError(DynamoError, ValueError):
    """The context token is malformed or belongs to another key."""

    status = lib.DYNAMO_ERR_BAD_CONTEXT


class TooLargeError(DynamoError):
    """The key's record with its siblings would grow past the store's limit: read the
    key and write back with its context."""

    status = lib.DYNAMO_ERR_TOO_LARGE


class OverloadedError(DynamoError):
    """Every node tried was too busy to start the request before its deadline and refused
    it untouched (nothing was written): back off briefly and retry, or shed load. The
    cluster is not down."""

    status = lib.DYNAMO_ERR_OVERLOADED


class InternalError(DynamoError):
    """A bug, an engine failure, a protocol error or a caught panic in libdynamo."""

    status = lib.DYNAMO_ERR_INTERNAL


_BY_STATUS: dict[int, type[DynamoError]] = {
    cls.status: cls
    for cls in (
        QuorumError,
        UnavailableError,
        TimeoutError,
        BadRequestError,
        UnknownStoreError,
        BadContextError,
        TooLargeError,
        InternalError,
        OverloadedError,
    )
}


_CODE_NAMES: dict[int, str] = {
    getattr(lib, name): name
    for name in (
        "DYNAMO_OK",
        "DYNAMO_ERR_QUORUM",
        "DYNAMO_ERR_UNAVAILABLE",
        "DYNAMO_ERR_TIMEOUT",
        "DYNAMO_ERR_BAD_REQUEST",
        "DYNAMO_ERR_UNKNOWN_STORE",
        "DYNAMO_ERR_BAD_CONTEXT",
        "DYNAMO_ERR_TOO_LARGE",
        "DYNAMO_ERR_INTERNAL",
        "DYNAMO_ERR_OVERLOADED",
    )
}


def error_for(status: int, message: str) -> DynamoError:
    """The exception for C status `status` with `message`."""
    cls = _BY_STATUS.get(status, DynamoError)
    return cls(message, status)


def last_error(status: int) -> DynamoError:
    """The exception for `status`, with this thread's last C error message. Call it right
    after the failing call, on the same thread."""
    raw = lib.dynamo_last_error_message()
    message = ffi.string(raw).decode("utf-8", "replace") if raw != ffi.NULL else ""
    return error_for(status, message or f"libdynamo call failed with status {status}")


def check(status: int) -> None:
    """Raises the exception for `status` unless it is `DYNAMO_OK`."""
    if status != lib.DYNAMO_OK:
        raise last_error(status)


def closed_error(what: str) -> BadRequestError:
    """The error a call on a closed handle raises."""
    return BadRequestError(f"the {what} is closed", lib.DYNAMO_ERR_BAD_REQUEST)
