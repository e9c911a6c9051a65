"""`Node`: a libdynamo node running inside this process (the C API's embedded node)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Union

from . import _toml
from ._native import ffi, lib
from .client import Client, take_string
from .errors import check, closed_error

Config = Union[str, Mapping[str, Any], "os.PathLike[str]"]
"""A node config: TOML text (`str`), a path to a TOML file (`pathlib.Path`), or a dict
with the same sections (`node`, `cluster`, `stores`, ...)."""


def _names_a_file(text: str) -> bool:
    """Whether a `str` config is a path to an existing file rather than TOML text (TOML
    for a node has a line break or a `=`; a path to a config has neither)."""
    return "\n" not in text and "=" not in text and os.path.isfile(text)


class Node:
    """Starts a node in this process from `config` (the format of `dynamo node
    --config`: TOML text, a path to a file (`pathlib.Path`, or a `str` naming an existing
    file), or a dict). It opens its data and
    binds its address before returning, so startup errors (bad config: `BadRequestError`;
    port taken, unreadable data: `UnavailableError`) raise here. `listen` with port 0
    takes a free port; `address` tells which. Stop it with `stop()` or use it as a
    context manager. The node installs no signal handlers.
    """

    def __init__(self, config: Config) -> None:
        self._lock = threading.Lock()
        self._handle: Any = None
        self._address = ""
        out = ffi.new("dynamo_node **")
        if isinstance(config, os.PathLike):
            path = os.fsencode(Path(config))
            check(lib.dynamo_node_start_file(path, out))
        elif isinstance(config, str) and _names_a_file(config):
            check(lib.dynamo_node_start_file(os.fsencode(config), out))
        elif isinstance(config, str):
            check(lib.dynamo_node_start(config.encode("utf-8"), out))
        elif isinstance(config, Mapping):
            check(lib.dynamo_node_start(_toml.dumps(config).encode("utf-8"), out))
        else:
            raise TypeError(
                "config must be TOML text (str), a pathlib.Path or a dict, not "
                f"{type(config).__name__}"
            )
        self._handle = out[0]
        address = ffi.new("const char **")
        check(lib.dynamo_node_address(self._handle, address))
        self._address = ffi.string(address[0]).decode()

    def _h(self) -> Any:
        h = self._handle
        if h is None:
            raise closed_error("node")
        return h

    @property
    def address(self) -> str:
        """The `host:port` the node listens on (the real port when the config said 0)."""
        return self._address

    @property
    def running(self) -> bool:
        """Whether the node has not been stopped."""
        return self._handle is not None

    def status(self) -> dict[str, Any]:
        """The node's status (as `dynamo status --json`: name, members and their health,
        hints owed, stores, in-flight requests, `unhealthy`)."""
        out = ffi.new("char **")
        check(lib.dynamo_node_status(self._h(), out))
        parsed: dict[str, Any] = json.loads(take_string(out[0]))
        return parsed

    def client(self, **options: Any) -> Client:
        """A `Client` for this node (options as for `Client`)."""
        self._h()
        return Client([self._address], **options)

    def stop(self) -> None:
        """Stops the node cleanly: in-flight requests finish (up to 10 s), engines are
        flushed, the port is freed. Stopping twice is a no-op."""
        with self._lock:
            h, self._handle = self._handle, None
        if h is not None:
            check(lib.dynamo_node_stop(h))

    def __enter__(self) -> Node:
        self._h()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<dynamo.Node {self._address if self._handle is not None else ''} {state}>"
