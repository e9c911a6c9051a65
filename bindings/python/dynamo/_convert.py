"""Argument checks and conversions shared by the client, the node and the engine."""

from __future__ import annotations

from typing import Union

Bytes = Union[bytes, bytearray, memoryview, str]
"""What keys and values may be: bytes-like, or `str` (encoded as UTF-8)."""


def to_bytes(value: object, what: str) -> bytes:
    """`value` as bytes: bytes-like as is, `str` as UTF-8; anything else is a TypeError
    naming `what`."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def to_text(value: object, what: str) -> bytes:
    """A `str` argument as NUL-free UTF-8 for the C API."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    return value.encode("utf-8")


def quorum(value: object, what: str) -> int:
    """An R or W override: None (the store's own) or an int from 1 to 255."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int or None, not {type(value).__name__}")
    if not 1 <= value <= 255:
        from .errors import BadRequestError

        raise BadRequestError(f"{what}={value} is out of range: it must be from 1 to 255 (or None)")
    return value


def context_arg(value: object) -> bytes | None:
    """A context token: None or the `str` a get or put returned."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return to_text(value, "context")
