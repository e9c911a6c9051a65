"""libdynamo for Python: a thin layer over libdynamo's C API.

- `Client` (blocking, thread-safe) and `AsyncClient` (asyncio) talk to a cluster;
- `Node` runs a node inside this process; `Engine` opens a local storage engine;
- `dynamo.cluster.LocalCluster` starts node processes, `dynamo.testing.local_cluster`
  is its pytest fixture; `dynamo.tools` has load, export and check; `dynamo.plot`
  charts `dynamo bench` reports. `python -m dynamo --help` lists the commands.

Every failure of the library raises a subclass of `DynamoError` carrying its message.
"""

from __future__ import annotations

from ._native import ffi as _ffi
from ._native import lib as _lib
from .aio import AsyncClient
from .client import Client, GetResult, KeyPage, Sibling
from .engine import Batch, Engine
from .errors import (
    BadContextError,
    BadRequestError,
    DynamoError,
    InternalError,
    OverloadedError,
    QuorumError,
    TimeoutError,
    TooLargeError,
    UnavailableError,
    UnknownStoreError,
)
from .node import Node

__version__ = _ffi.string(_lib.dynamo_version()).decode()
"""The version of the libdynamo library loaded."""

API_VERSION: int = _lib.DYNAMO_API_VERSION
"""The C API version the bindings were built against."""

__all__ = [
    "API_VERSION",
    "AsyncClient",
    "BadContextError",
    "BadRequestError",
    "Batch",
    "Client",
    "DynamoError",
    "Engine",
    "GetResult",
    "InternalError",
    "OverloadedError",
    "KeyPage",
    "Node",
    "QuorumError",
    "Sibling",
    "TimeoutError",
    "TooLargeError",
    "UnavailableError",
    "UnknownStoreError",
]
